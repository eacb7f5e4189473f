//! Golden tests: the examples and test vectors of `protocol-spec/format-v1.md` checked
//! against the implementation (house rule: protocol-spec/ is normative; its examples are
//! golden tests).
//!
//! The spec's text is copied into the constants below and each test takes its expected
//! values from them; `every_quote_appears_verbatim_in_the_spec` checks that each constant
//! still appears in format-v1.md (whitespace runs compared as one space, so reflowing a
//! paragraph is not drift but changing a value is).
//!
//! Covered: §4 (chunking constants), §9.1 (layout examples), §9.2 (k = 1), §17 (the
//! worked example: the torrent, payload layout, manifest, restore with a missing and a
//! damaged shard, the incremental snapshot), §18.1 (Gear table), §18.2 (chunk boundaries
//! and names), §18.3 (Reed-Solomon), §19 (defaults and constants).
//!
//! What cannot be pinned: §17's age files are randomised (file keys, ephemeral X25519
//! keys, a grease stanza of random length), and so is the snapshot `id`; therefore the
//! example's infohash (68ac32af…), its piece hashes other than the all-zero data shards,
//! and the exact pack and manifest age-file lengths (355, 764, 375) cannot be reproduced.
//! The tests rebuild everything else byte for byte from the printed values (the torrent
//! around its elided `pieces`, the 916-byte manifest and its 476-byte zstd frame), and
//! run the example's steps through the real pipeline, checking its structure.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;

use sha1::{Digest, Sha1};
use swarmbak_core::placement::DEFAULT_COPIES;
use swarmbak_core::spec;
use swarmbak_format::backup::{NoProgress, Progress, CODEC_NONE, PACK_MAGIC, PACK_TARGET};
use swarmbak_format::chunker::{self, Chunker, AVG_SIZE, MASK_L, MASK_S, MAX_SIZE, MIN_SIZE};
use swarmbak_format::erasure::{self, Layout, MAX_SHARD, MIN_SHARD};
use swarmbak_format::manifest::{self, ChunkRef, Entry, Kind, Manifest, PackRef};
use swarmbak_format::restore::{LocalSource, SnapshotMeta, SnapshotReader};
use swarmbak_format::{
    backup, crypto, restore, BackupOptions, Home, InfoHash, RestoreOptions, FORMAT_VERSION,
    MANIFEST_FORMAT,
};
use swarmbak_format::{DEFAULT_K, DEFAULT_M};
use swarmbak_metainfo::{build_swarmbak_torrent, Metainfo, SwarmbakParams, SwarmbakTorrent};

// ---------------------------------------------------------------------------------------
// Quotes from protocol-spec/format-v1.md
// ---------------------------------------------------------------------------------------

/// §4, the constants table.
const S4_ROWS: &str = r#"| `MIN_SIZE` | 262 144 (256 KiB) |
| `AVG_SIZE` | 1 048 576 (1 MiB) |
| `MAX_SIZE` | 4 194 304 (4 MiB) |
| `MASK_S` | `0xFFFF_FC00_0000_0000` (the top 22 bits of a u64 set) |
| `MASK_L` | `0xFFFF_C000_0000_0000` (the top 18 bits of a u64 set) |"#;

/// §4, the Gear table's derivation.
const S4_GEAR_MESSAGE: &str = r#"message `"swarmbak gear v1" ‖ [i]`"#;

/// §9.1, the writer's choice of shard size.
const S9_1_EXAMPLE: &str = "Example: `L` = 12 000 000, `k` = 8: 1 MiB shards would
need 2 stripes and pad 4.8 MB; 512 KiB shards need 3 stripes and pad 0.58 MB, so
`S` = 524 288.";

/// §9.1, more layouts (the values are written out in `s9_1_layout_examples`).
const S9_1_EXAMPLES: &str =
    "Examples (k = 8): L = 0, 1 or 131 072 → S = 16 KiB, 1 stripe; L = 131 073 → S = 32 KiB;
L = 8 MiB → S = 1 MiB, 1 stripe; L = 8 MiB + 1 → S = 128 KiB, 9 stripes (larger shards would
pad more than L / 8); L = 256 MiB → 32 stripes.";

/// §9.2, the degenerate code.
const S9_2_K1: &str = "With `k = 1`
every parity shard equals the data shard.";

/// §17.1, the summary `seed` prints.
const S17_1_SEED: &str = "snapshot of 1 files, 3 dirs, 1 symlinks (5 B): 5 B new in 1 of 1 chunks; payload 1.09 KiB, shards 192.00 KiB";

/// §17.1, `inspect`.
const S17_1_INSPECT: &str = r#"infohash:     68ac32af83d7a57e48047a9878d542fb59435fc3
name:         swarmbak-154b7610418b9335.shards
piece length: 16384
pieces:       12
total length: 196608
private:      yes
announce:     -
files:        1
  swarmbak-154b7610418b9335.shards (196608 bytes)
swarmbak:     format 1, stripes of 8+4 shards, 1 stripes, payload 1119 bytes, manifest at 355+764"#;

/// §17.2, the torrent's first bytes and size.
const S17_2_PREFIX: &str =
    "`d10:created by14:swarmbak 0.1.013:creation datei1795451623e4:infod6:lengthi196608e…`";
const S17_2_SIZE: &str = "(550 bytes)";

/// §17.2, the torrent decoded.
const S17_2_TORRENT: &str = r#"{
  'created by': 'swarmbak 0.1.0'
  'creation date': 1795451623              ← the snapshot's time (Unix s)
  'info':                                  ← SHA-1 of these bytes = 68ac32af…
    {
      'length': 196608                     ← 12 pieces × 16384
      'name': 'swarmbak-154b7610418b9335.shards'   ← "swarmbak-" ‖ hex(id[0..8]) ‖ ".shards"
      'piece length': 16384                ← payload 1119 B: ceil(1119/8) = 140 → 16 KiB minimum
      'pieces': <240 bytes: 12 SHA-1 hashes, elided>
      'private': 1
      'swarmbak':
        {
          'format': 1
          'id': hex:154b7610418b9335ba4a357b1b4f55e2
          'k': 8
          'm': 4
          'manifest length': 764
          'manifest offset': 355           ← 355 + 764 = 1119: the manifest ends the payload
          'payload length': 1119
          'stripes': 1                     ← ceil(1119 / (8 × 16384))
        }
    }
}"#;

/// §17.2, the padding and the all-zero data shards.
const S17_2_PADDING: &str = "Piece 0 holds the whole payload (1119 bytes) and 15 265 zero bytes";
const S17_2_ZERO_SHARD: &str =
    "SHA-1(16 384 zero bytes) = `897256b6709e1a4da9daba92b6bde39ccfccd8c1`";

/// §17.3, the payload's layout.
const S17_3_LAYOUT: &str = r#"payload[0 .. 355)     pack 0, an age file
payload[355 .. 1119)  the manifest, an age file"#;

/// §17.3, the first 32 bytes of the pack's age file (its header).
const S17_3_AGE_HEADER: &str = r#"00000000: 6167 652d 656e 6372 7970 7469 6f6e 2e6f  age-encryption.o
00000010: 7267 2f76 310a 2d3e 2058 3235 3531 3920  rg/v1.-> X25519"#;

/// §17.3, the decrypted pack and the start of the decrypted manifest.
const S17_3_PACK_PLAIN: &str = "00000000: 5357 4250 4143 4b31 6865 6c6c 6f         SWBPACK1hello";
const S17_3_MANIFEST_PLAIN: &str =
    "00000000: 5357 424d 414e 4931 28b5 2ffd …          SWBMANI1 then a zstd frame (28 b5 2f fd)";
const S17_3_SIZES: &str =
    "Decompressing the 476 bytes after `SWBMANI1` (`zstd -d`) gives exactly the 916-byte
plaintext manifest";

/// §17.4, the manifest decoded.
const S17_4_MANIFEST: &str = r#"{
  'chunk key': hex:2c356a3844e79d689be5234cd05d0c3e224530e3fbc377e5315e24c986980dd8
  'chunks':
    [
      [hex:f0f3448b33144ce85c1ed1ea7fbe7a1832a33589a0235231f689b926d619674a, 0, 8, 5, 5, 0]
    ]      ↑ id = BLAKE3-keyed(chunk key, "hello")   ↑ pack 0, offset 8, stored 5, raw 5, codec 0
  'entries':
    [
      { 'cn': 249061409, 'ct': 1795451623, 'i': 10045633, 'm': 493,
        'mn': 249061409, 'mt': 1795451623, 'p': 'TREE', 't': 'd' }            ← m 493 = 0o755
      { 'cn': 249061409, 'ct': 1795451623, 'i': 10045649, 'm': 493,
        'mn': 249061409, 'mt': 1795451623, 'p': 'TREE/docs', 't': 'd' }
      { 'cn': 241061409, 'ct': 1795451623, 'i': 10045650, 'm': 493,
        'mn': 241061409, 'mt': 1795451623, 'p': 'TREE/docs/empty', 't': 'd' }
      { 'c': [0], 'cn': 249061409, 'ct': 1795451623, 'i': 10045651, 'm': 420,
        'mn': 500000000, 'mt': 1704164645, 'p': 'TREE/docs/hello', 's': 5, 't': 'f' }
                                         ← m 420 = 0o644; mtime 2024-01-02T03:04:05.5Z
      { 'cn': 249061409, 'ct': 1795451623, 'i': 10045652, 'l': 'docs/hello', 'm': 511,
        'mn': 249061409, 'mt': 1795451623, 'p': 'TREE/link', 't': 'l' }       ← m 511 = 0o777
    ]
  'format': 1
  'machine': { 'key': 'age1f9rkuknekgpwezuxlv3r8jerhgcefur9dzwqxvuwmqdwjtqlafnqvzkmc0',
               'name': 'example-laptop' }
  'packs': [ [0, 0, 355] ]               ← this snapshot (0), payload offset 0, 355 bytes
  'parents': []
  'snapshots': []
  'source paths': ['/tmp/ex/TREE']
  'time': 1795451623
  'time ns': 255372523
}"#;

/// §17.4, the check of the chunk name.
const S17_4_CHECK: &str = r#"`BLAKE3-keyed(key = 2c356a38…0dd8, "hello") = f0f3448b…674a`"#;

/// §17.5, restoring with shard 0 deleted and shard 3 damaged (the `fetch` output).
const S17_5_FETCH: &str = r#"$ swarmbak --home H fetch 68ac32af… --to OUT
swarmbak: warning: snapshot 68ac32af… piece 3 (stripe 0, shard 3) failed its SHA-1 check; rebuilt from 8 others
restored 1 files, 3 dirs, 1 symlinks (5 B) into OUT in 0.1s
2 shards were missing or damaged and were rebuilt from the others and rewritten"#;
const S17_5_QUIET_MISSING: &str =
    "snapshot 68ac32af… piece 0 (stripe 0, shard 0) is missing; rebuilt from 8 others";
const S17_5_PARTIAL: &str = "`fetch … --to OUT2 --path TREE/docs/hello` restores only `TREE`,
`TREE/docs` and the file.";

/// §17.5, the incremental snapshot's manifest.
const S17_5_INCREMENTAL: &str = r#"'chunks': [ [hex:f0f3448b…674a, 0, 8, 5, 5, 0],      ← "hello": pack 0 of this manifest
            [hex:5cdd4848…003a, 1, 8, 6, 6, 0] ]     ← "world!": pack 1
'packs':  [ [1, 0, 355],                             ← in snapshots[0] = 68ac32af…, bytes 0..355
            [0, 0, 375] ]                            ← in this snapshot's own payload
'parents':   [hex:68ac32af83d7a57e48047a9878d542fb59435fc3]
'snapshots': [hex:68ac32af83d7a57e48047a9878d542fb59435fc3]"#;

/// §18.1.
const S18_1_GEAR: &str = r#"GEAR[0]   = 0x8efaa23241116452
GEAR[1]   = 0x66487032bf99a6de
GEAR[2]   = 0x950cfbf94a6ea20f
GEAR[255] = 0x49a4a4c989c5102a
BLAKE3(GEAR[0] ‖ GEAR[1] ‖ … ‖ GEAR[255], each as 8 little-endian bytes; 2048 bytes)
          = e0b12eade5a80a97d0bc8978b3179d38d8fb3076cf5535e6881529b987189edb"#;

/// §18.2, the input, the lengths and the names.
const S18_2_INPUT: &str = r#"Input: the first 16 777 216 bytes of the BLAKE3 extendable output (XOF) of the
28-byte message `"swarmbak chunker test vector"` (unkeyed)."#;
const S18_2_LENGTHS: &str = r#"1174369, 1199615, 1064289, 1092342, 1233223, 1162592, 1298354, 1110492,
1542435,  674030, 1198449, 1505756, 1134079, 1133120,  254071"#;
const S18_2_COUNT: &str = "(15 chunks; they sum to 16 777 216.)";
const S18_2_KEY: &str = "With the chunk key = 32 bytes of `0x42`";
const S18_2_NAMES: &str = r#"b74a1de22e3bb1e8327354a8ecc72202b8f8041c120d46482c8e4c80f8a68475
a295ec0106b4b3e2fa96d027720b399352fb337e07a377a77c6f349bf8e2c242"#;

/// §18.3.
const S18_3_INPUT: &str =
    "k = 2, m = 2, shard size 16 384; the stripe's 32 768 data bytes are `byte[i] = i mod 251`";
const S18_3_OUTPUT: &str = r#"data shard 0   SHA-1 68f3b81a11de1e1629e81555b4e70aed955d1140
data shard 1   SHA-1 de9ee0222cd528efc5e01227e4bf16cf6ac6836a
parity shard 0 first 16 bytes be23bc65ca57c861b62bb4bc138e11b8
               SHA-1 04eabe0c63dbf1c1414864318efcafcef8b34722
parity shard 1 first 16 bytes fb64f92e8718852af36cf1e74ed14ce3
               SHA-1 6c4eae8a16c1a1b54fb2cbebc9fc3e09802c6859"#;
const S18_3_K1: &str = "With k = 1, m = 1 the parity shard equals the data shard.";

/// §19, the rows this crate implements (copies T, the zstd level and the rest are
/// checked in `s19_defaults_and_constants`).
const S19_ROWS: &str = r#"| k (data shards per stripe) | 8 | `config.json` `k`, `DEFAULT_K` | per snapshot, in the torrent |
| m (parity shards per stripe) | 4 | `config.json` `m`, `DEFAULT_M` | per snapshot, in the torrent |
| copies T | 2 | `config.json` `copies`, `--copies` | no (placement) |
| shard size = piece length | 16 KiB ..= 1 MiB, power of two, from payload length (§9.1) | `MIN_SHARD`, `MAX_SHARD` | yes |
| pack target | 16 MiB | `PACK_TARGET` | no (writer's choice; readers must not depend on it) |
| chunk sizes | min 256 KiB, average 1 MiB, max 4 MiB | `MIN_SIZE`, `AVG_SIZE`, `MAX_SIZE` | yes (dedup); `MAX_SIZE` bounds `raw_len` |
| zstd level (chunks, manifest) | 3 | `BackupOptions::zstd_level`, `seal` | no |
| manifest size limit | 1 GiB decompressed | `MAX_MANIFEST` | yes (readers refuse more) |
| magics | `SWBPACK1`, `SWBMANI1` | `PACK_MAGIC`, `MANIFEST_MAGIC` | yes |
| snapshot format version | 1 (writers now write 2: [format-v2.md](format-v2.md)) | `FORMAT_VERSION`, `SWARMBAK_FORMAT` (both 2) | yes |
| manifest format version | 1 | `MANIFEST_FORMAT` | yes |"#;

const ALL_QUOTES: &[&str] = &[
    S4_ROWS,
    S4_GEAR_MESSAGE,
    S9_1_EXAMPLE,
    S9_1_EXAMPLES,
    S9_2_K1,
    S17_1_SEED,
    S17_1_INSPECT,
    S17_2_PREFIX,
    S17_2_SIZE,
    S17_2_TORRENT,
    S17_2_PADDING,
    S17_2_ZERO_SHARD,
    S17_3_LAYOUT,
    S17_3_AGE_HEADER,
    S17_3_PACK_PLAIN,
    S17_3_MANIFEST_PLAIN,
    S17_3_SIZES,
    S17_4_MANIFEST,
    S17_4_CHECK,
    S17_5_FETCH,
    S17_5_PARTIAL,
    S17_5_INCREMENTAL,
    S18_1_GEAR,
    S18_2_INPUT,
    S18_2_LENGTHS,
    S18_2_COUNT,
    S18_2_KEY,
    S18_2_NAMES,
    S18_3_INPUT,
    S18_3_OUTPUT,
    S18_3_K1,
    S19_ROWS,
];

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

#[test]
fn every_quote_appears_verbatim_in_the_spec() {
    spec::assert_quoted("format-v1.md", ALL_QUOTES);
    // The §17.5 note on the missing shard is prose around a quoted message.
    spec::assert_quoted("format-v1.md", &[S17_5_QUIET_MISSING]);
}

/// The integers in `s` written with spaces between digit groups ("16 777 216"), in order.
fn spaced_ints(s: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_digit() {
            cur.push(c);
        } else if c == ' '
            && !cur.is_empty()
            && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())
            && chars.get(i + 4).is_none_or(|d| !d.is_ascii_digit())
            && chars[i + 1..].iter().take(3).all(|d| d.is_ascii_digit())
        {
            // a thousands separator: exactly three digits follow
        } else if !cur.is_empty() {
            out.push(cur.parse().unwrap());
            cur.clear();
        }
    }
    if !cur.is_empty() {
        out.push(cur.parse().unwrap());
    }
    out
}

/// The bytes of an `xxd` line's hex columns (up to a `…`).
fn xxd_bytes(line: &str) -> Vec<u8> {
    let cols = line.split_once(": ").unwrap().1;
    let cols = cols.split("  ").next().unwrap();
    let hex: String = cols
        .split('…')
        .next()
        .unwrap()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    hex::decode(hex).unwrap()
}

fn word_after<'a>(s: &'a str, marker: &str) -> &'a str {
    let rest = &s[s
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {s:?}"))
        + marker.len()..];
    rest.split_whitespace().next().unwrap()
}

/// The spec's dumps (§17.2, §17.4): `{ 'key': value … }`, `[a, b]`, `'text'`, `hex:…`,
/// integers, `<elided …>`; `←` and `↑` start comments.
#[derive(Clone, Debug, PartialEq)]
enum Dump {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Dump>),
    Dict(BTreeMap<String, Dump>),
    Elided(String),
}

impl Dump {
    fn parse(text: &str) -> Dump {
        let clean: String = text
            .lines()
            .map(|l| l.split(['←', '↑']).next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let chars: Vec<char> = clean.chars().collect();
        let mut pos = 0;
        let v = Self::value(&chars, &mut pos);
        Self::skip(&chars, &mut pos);
        assert_eq!(pos, chars.len(), "trailing text in the dump");
        v
    }
    fn skip(c: &[char], p: &mut usize) {
        while *p < c.len() && (c[*p].is_whitespace() || c[*p] == ',') {
            *p += 1;
        }
    }
    fn until(c: &[char], p: &mut usize, end: char) -> String {
        let start = *p;
        while c[*p] != end {
            *p += 1;
        }
        *p += 1;
        c[start..*p - 1].iter().collect()
    }
    fn value(c: &[char], p: &mut usize) -> Dump {
        Self::skip(c, p);
        match c[*p] {
            '{' => {
                *p += 1;
                let mut d = BTreeMap::new();
                loop {
                    Self::skip(c, p);
                    if c[*p] == '}' {
                        *p += 1;
                        return Dump::Dict(d);
                    }
                    assert_eq!(c[*p], '\'');
                    *p += 1;
                    let k = Self::until(c, p, '\'');
                    assert_eq!(c[*p], ':');
                    *p += 1;
                    let v = Self::value(c, p);
                    assert!(d.insert(k, v).is_none());
                }
            }
            '[' => {
                *p += 1;
                let mut l = Vec::new();
                loop {
                    Self::skip(c, p);
                    if c[*p] == ']' {
                        *p += 1;
                        return Dump::List(l);
                    }
                    l.push(Self::value(c, p));
                }
            }
            '\'' => {
                *p += 1;
                Dump::Bytes(Self::until(c, p, '\'').into_bytes())
            }
            '<' => {
                *p += 1;
                Dump::Elided(Self::until(c, p, '>'))
            }
            'h' => {
                let s: String = c[*p..*p + 4].iter().collect();
                assert_eq!(s, "hex:");
                *p += 4;
                let start = *p;
                while *p < c.len() && c[*p].is_ascii_hexdigit() {
                    *p += 1;
                }
                Dump::Bytes(hex::decode(c[start..*p].iter().collect::<String>()).unwrap())
            }
            _ => {
                let start = *p;
                while *p < c.len() && (c[*p].is_ascii_digit() || c[*p] == '-') {
                    *p += 1;
                }
                let s: String = c[start..*p].iter().collect();
                Dump::Int(s.parse().unwrap_or_else(|_| panic!("not a value at {s:?}")))
            }
        }
    }
    fn get(&self, k: &str) -> &Dump {
        match self {
            Dump::Dict(d) => d.get(k).unwrap_or_else(|| panic!("no {k:?}")),
            _ => panic!("not a dict"),
        }
    }
    fn opt(&self, k: &str) -> Option<&Dump> {
        match self {
            Dump::Dict(d) => d.get(k),
            _ => panic!("not a dict"),
        }
    }
    fn int(&self) -> i64 {
        match self {
            Dump::Int(n) => *n,
            _ => panic!("not an int: {self:?}"),
        }
    }
    fn bytes(&self) -> &[u8] {
        match self {
            Dump::Bytes(b) => b,
            _ => panic!("not a string: {self:?}"),
        }
    }
    fn text(&self) -> String {
        String::from_utf8(self.bytes().to_vec()).unwrap()
    }
    fn list(&self) -> &[Dump] {
        match self {
            Dump::List(l) => l,
            _ => panic!("not a list: {self:?}"),
        }
    }
    fn ints(&self) -> Vec<i64> {
        self.list().iter().map(Dump::int).collect()
    }
}

fn manifest_from_dump(d: &Dump) -> Manifest {
    let ih = |b: &Dump| InfoHash(b.bytes().try_into().unwrap());
    Manifest {
        format: d.get("format").int() as u32,
        time: d.get("time").int(),
        time_ns: d.get("time ns").int() as u32,
        machine_name: d.get("machine").get("name").text(),
        machine_key: d.get("machine").get("key").text(),
        source_paths: d
            .get("source paths")
            .list()
            .iter()
            .map(|p| p.bytes().to_vec())
            .collect(),
        parents: d.get("parents").list().iter().map(ih).collect(),
        snapshots: d.get("snapshots").list().iter().map(ih).collect(),
        chunk_key: d.get("chunk key").bytes().try_into().unwrap(),
        packs: d
            .get("packs")
            .list()
            .iter()
            .map(|p| {
                let v = p.ints();
                assert_eq!(v.len(), 3);
                PackRef {
                    snapshot: v[0] as u32,
                    offset: v[1] as u64,
                    len: v[2] as u64,
                }
            })
            .collect(),
        chunks: d
            .get("chunks")
            .list()
            .iter()
            .map(|c| {
                let l = c.list();
                assert_eq!(l.len(), 6);
                ChunkRef {
                    id: l[0].bytes().try_into().unwrap(),
                    pack: l[1].int() as u32,
                    offset: l[2].int() as u64,
                    stored_len: l[3].int() as u32,
                    raw_len: l[4].int() as u32,
                    codec: l[5].int() as u8,
                }
            })
            .collect(),
        entries: d
            .get("entries")
            .list()
            .iter()
            .map(|e| Entry {
                path: e.get("p").bytes().to_vec(),
                kind: match e.get("t").bytes() {
                    b"f" => Kind::File,
                    b"d" => Kind::Dir,
                    b"l" => Kind::Symlink,
                    t => panic!("type {t:?}"),
                },
                mode: e.get("m").int() as u32,
                mtime: e.get("mt").int(),
                mtime_ns: e.get("mn").int() as u32,
                size: e.opt("s").map_or(0, |s| s.int() as u64),
                chunks: e
                    .opt("c")
                    .map_or(vec![], |c| c.ints().iter().map(|&i| i as u32).collect()),
                target: e.opt("l").map_or(vec![], |l| l.bytes().to_vec()),
                ino: e.opt("i").map_or(0, |i| i.int() as u64),
                ctime: e.opt("ct").map_or(0, Dump::int),
                ctime_ns: e.opt("cn").map_or(0, |n| n.int() as u32),
            })
            .collect(),
    }
}

fn keyed(key: &[u8; 32], data: &[u8]) -> String {
    blake3::keyed_hash(key, data).to_hex().to_string()
}

fn sha1_hex(b: &[u8]) -> String {
    hex::encode(Sha1::digest(b))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// ---------------------------------------------------------------------------------------
// §4, §18.1: the Gear table
// ---------------------------------------------------------------------------------------

#[test]
fn s4_chunking_constants() {
    let rows: Vec<(&str, &str)> = S4_ROWS
        .lines()
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`'), cells[2])
        })
        .collect();
    let num = |cell: &str| spaced_ints(cell.split('(').next().unwrap())[0];
    let mask = |cell: &str| {
        let h = cell.split('`').nth(1).unwrap().trim_start_matches("0x");
        u64::from_str_radix(&h.replace('_', ""), 16).unwrap()
    };
    let found: BTreeMap<&str, u64> = rows
        .iter()
        .map(|(name, cell)| {
            let v = if name.starts_with("MASK") {
                mask(cell)
            } else {
                num(cell)
            };
            (*name, v)
        })
        .collect();
    assert_eq!(found["MIN_SIZE"], MIN_SIZE as u64);
    assert_eq!(found["AVG_SIZE"], AVG_SIZE as u64);
    assert_eq!(found["MAX_SIZE"], MAX_SIZE as u64);
    assert_eq!(found["MASK_S"], MASK_S);
    assert_eq!(found["MASK_L"], MASK_L);
    assert_eq!(MASK_S.count_ones(), 22);
    assert_eq!(MASK_S.leading_ones(), 22);
    assert_eq!(MASK_L.count_ones(), 18);
    assert_eq!(MASK_L.leading_ones(), 18);
}

#[test]
fn s18_1_gear_table() {
    // The derivation, done independently of the crate: BLAKE3("swarmbak gear v1" ‖ [i]).
    let prefix = S4_GEAR_MESSAGE.split('"').nth(1).unwrap();
    assert_eq!(prefix.len(), 16);
    let derived: Vec<u64> = (0..=255u8)
        .map(|i| {
            let mut h = blake3::Hasher::new();
            h.update(prefix.as_bytes());
            h.update(&[i]);
            u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap())
        })
        .collect();
    let table = chunker::gear();
    assert_eq!(
        &derived[..],
        &table[..],
        "chunker::gear() differs from §4's derivation"
    );

    let mut printed = 0;
    for line in S18_1_GEAR.lines().filter(|l| l.starts_with("GEAR[")) {
        let i: usize = line[5..line.find(']').unwrap()].parse().unwrap();
        let v = u64::from_str_radix(word_after(line, "= 0x"), 16).unwrap();
        assert_eq!(table[i], v, "GEAR[{i}]");
        printed += 1;
    }
    assert_eq!(printed, 4);

    let all: Vec<u8> = table.iter().flat_map(|g| g.to_le_bytes()).collect();
    assert_eq!(all.len(), 2048);
    let want = S18_1_GEAR
        .lines()
        .last()
        .unwrap()
        .trim_start()
        .trim_start_matches("= ");
    assert_eq!(blake3::hash(&all).to_hex().as_str(), want);
}

// ---------------------------------------------------------------------------------------
// §18.2: chunk boundaries and names
// ---------------------------------------------------------------------------------------

fn test_message() -> Vec<u8> {
    let n = spaced_ints(S18_2_INPUT)[0] as usize;
    let msg = S18_2_INPUT.split('"').nth(1).unwrap();
    assert_eq!((n, msg.len()), (16 << 20, 28));
    let mut out = vec![0u8; n];
    let mut h = blake3::Hasher::new();
    h.update(msg.as_bytes());
    h.finalize_xof().fill(&mut out);
    out
}

fn spec_lengths() -> Vec<usize> {
    S18_2_LENGTHS
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect()
}

fn spec_key() -> [u8; 32] {
    let b = word_after(S18_2_KEY, "of `0x").trim_end_matches('`');
    [u8::from_str_radix(b, 16).unwrap(); 32]
}

#[test]
fn s18_2_chunk_boundaries_and_names() {
    let data = test_message();
    let want = spec_lengths();
    let count = spaced_ints(S18_2_COUNT);
    assert_eq!(want.len() as u64, count[0]);
    assert_eq!(want.iter().sum::<usize>() as u64, count[1]);

    assert_eq!(chunker::chunk_lengths(&data), want);
    // The streaming chunker (what a backup uses) cuts at the same places.
    let mut c = Chunker::new(&data[..]);
    let mut streamed = Vec::new();
    while let Some(ch) = c.next_chunk().unwrap() {
        streamed.push(ch.len());
    }
    assert_eq!(streamed, want);

    let key = spec_key();
    assert_eq!(key, [0x42; 32]);
    let names: Vec<&str> = S18_2_NAMES.lines().collect();
    let mut off = 0;
    for (i, name) in names.iter().enumerate() {
        assert_eq!(keyed(&key, &data[off..off + want[i]]), *name, "chunk {i}");
        off += want[i];
    }
}

/// §18.2 through the real pipeline: a backup of the test message as one file, with the
/// vector's chunk key, lists exactly those chunks with exactly those names.
#[test]
fn s18_2_through_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (home, name) = new_home(&dir.path().join("H"), "vector", &spec_key());
    let tree = dir.path().join("v");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("message"), test_message()).unwrap();
    let r = backup(&home, &opts(vec![tree], &name), &NoProgress).unwrap();
    let m = cached_manifest(&home, &r.infohash);
    let file = m.entries.iter().find(|e| e.kind == Kind::File).unwrap();
    let lens: Vec<usize> = file
        .chunks
        .iter()
        .map(|&c| m.chunks[c as usize].raw_len as usize)
        .collect();
    assert_eq!(lens, spec_lengths());
    for (i, name) in S18_2_NAMES.lines().enumerate() {
        assert_eq!(hex::encode(m.chunks[file.chunks[i] as usize].id), name);
    }
}

// ---------------------------------------------------------------------------------------
// §18.3, §9.2: Reed-Solomon
// ---------------------------------------------------------------------------------------

#[test]
fn s18_3_reed_solomon() {
    let nums = spaced_ints(S18_3_INPUT);
    let (k, m, s, total, modulus) = (
        nums[0] as usize,
        nums[1] as usize,
        nums[2] as usize,
        nums[3] as usize,
        nums[4] as usize,
    );
    assert_eq!((k, m, s, total, modulus), (2, 2, 16384, 32768, 251));
    let data: Vec<u8> = (0..total).map(|i| (i % modulus) as u8).collect();
    let parity = erasure::encode(k, m, &data).unwrap();
    assert_eq!(parity.len(), m);
    let mut checked = 0;
    let mut current: Option<&[u8]> = None;
    for line in S18_3_OUTPUT.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("data shard ") {
            let i: usize = rest[..1].parse().unwrap();
            current = Some(&data[i * s..(i + 1) * s]);
        } else if let Some(rest) = t.strip_prefix("parity shard ") {
            let i: usize = rest[..1].parse().unwrap();
            current = Some(&parity[i]);
        }
        let shard = current.unwrap();
        assert_eq!(shard.len(), s);
        if line.contains("first 16 bytes") {
            assert_eq!(
                hex::encode(&shard[..16]),
                word_after(line, "first 16 bytes"),
                "{line}"
            );
            checked += 1;
        }
        if line.contains("SHA-1") {
            assert_eq!(sha1_hex(shard), word_after(line, "SHA-1"), "{line}");
            checked += 1;
        }
    }
    assert_eq!(checked, 6);

    // Any k of them rebuild the stripe: here from the two parity shards alone.
    let mut shards = vec![None, None, Some(parity[0].clone()), Some(parity[1].clone())];
    erasure::reconstruct(0, k, m, &mut shards).unwrap();
    assert_eq!(shards[0].as_deref(), Some(&data[..s]));
    assert_eq!(shards[1].as_deref(), Some(&data[s..]));
}

#[test]
fn s9_2_and_s18_3_k_equals_1() {
    assert!(S18_3_K1.contains("k = 1, m = 1") && S9_2_K1.contains("`k = 1`"));
    let data: Vec<u8> = (0..MIN_SHARD).map(|i| (i * 7 % 256) as u8).collect();
    for m in [1, 3] {
        let parity = erasure::encode(1, m, &data).unwrap();
        assert_eq!(parity.len(), m);
        for p in &parity {
            assert_eq!(p, &data, "k = 1, m = {m}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// §9.1: layout examples
// ---------------------------------------------------------------------------------------

#[test]
fn s9_1_layout_examples() {
    const MIB: u64 = 1 << 20;
    let n = spaced_ints(S9_1_EXAMPLE);
    let (len, k, s) = (n[0], n[1] as usize, *n.last().unwrap() as usize);
    assert_eq!((len, k, s), (12_000_000, 8, 524_288));
    let l = Layout::for_payload(len, k, 4).unwrap();
    assert_eq!((l.shard_size, l.stripes), (s, 3));
    // "1 MiB shards would need 2 stripes and pad 4.8 MB; 512 KiB shards need 3 stripes
    // and pad 0.58 MB", against the limit L / 8 = 1.5 MB.
    let big = Layout::with_shard_size(len, k, 4, MAX_SHARD).unwrap();
    assert_eq!((big.stripes, big.padding()), (2, 4_777_216));
    assert_eq!((l.stripes, l.padding()), (3, 582_912));
    assert!(big.padding() > len / 8 && l.padding() <= len / 8);

    // S9_1_EXAMPLES, written out: (L, S, stripes).
    for (len, shard, stripes) in [
        (0, 16 << 10, 1),
        (1, 16 << 10, 1),
        (131_072, 16 << 10, 1),
        (131_073, 32 << 10, 1),
        (8 * MIB, MAX_SHARD, 1),
        (8 * MIB + 1, 128 << 10, 9),
        (256 * MIB, MAX_SHARD, 32),
    ] {
        let l = Layout::for_payload(len, 8, 4).unwrap();
        assert_eq!((l.shard_size, l.stripes), (shard, stripes), "L = {len}");
        assert_eq!(l.pieces(), stripes * 12);
        assert_eq!(l.padding(), (stripes * 8 * shard) as u64 - len);
    }
    // "(larger shards would pad more than L / 8)"
    for bigger in [256 << 10, 512 << 10, MAX_SHARD] {
        let l = Layout::with_shard_size(8 * MIB + 1, 8, 4, bigger).unwrap();
        assert!(l.padding() > (8 * MIB + 1) / 8, "{bigger}");
    }
}

// ---------------------------------------------------------------------------------------
// §17: the worked example, from its printed values
// ---------------------------------------------------------------------------------------

#[test]
fn s17_2_torrent_from_the_printed_values() {
    let d = Dump::parse(S17_2_TORRENT);
    let info = d.get("info");
    let sb = info.get("swarmbak");
    let piece_length = info.get("piece length").int() as usize;
    let payload = sb.get("payload length").int() as u64;
    let (k, m) = (sb.get("k").int() as usize, sb.get("m").int() as usize);
    let elided = match info.get("pieces") {
        Dump::Elided(e) => e.clone(),
        p => panic!("{p:?}"),
    };
    let (pieces_bytes, pieces) = (spaced_ints(&elided)[0], spaced_ints(&elided)[1] as usize);
    assert_eq!(pieces_bytes, 20 * pieces as u64);

    // The layout the writer chooses for this payload (§9.1).
    let layout = Layout::for_payload(payload, k, m).unwrap();
    assert_eq!(layout.shard_size, piece_length);
    assert_eq!(layout.stripes as i64, sb.get("stripes").int());
    assert_eq!(layout.pieces(), pieces);
    assert_eq!(
        (layout.pieces() * piece_length) as i64,
        info.get("length").int()
    );
    let padding = spaced_ints(S17_2_PADDING);
    // Piece 0 is the payload and zeros; pieces 1..k are all padding.
    assert_eq!(padding[0], 0);
    assert_eq!(
        (payload, piece_length as u64 - payload),
        (padding[1], padding[2])
    );
    assert_eq!(
        layout.padding(),
        padding[2] + ((k - 1) * piece_length) as u64
    );
    assert_eq!(
        sb.get("manifest offset").int() + sb.get("manifest length").int(),
        payload as i64
    );

    // The all-zero data shards 1..k have a stable hash.
    let zero = vec![0u8; piece_length];
    let zero_hash = S17_2_ZERO_SHARD.split('`').nth(1).unwrap();
    assert_eq!(spaced_ints(S17_2_ZERO_SHARD)[1] as usize, zero.len());
    assert_eq!(sha1_hex(&zero), zero_hash);

    // Rebuild the torrent from the dump; only `pieces` is not printed, so its hashes
    // (other than the zero shards') are stand-ins.
    let id: [u8; 16] = sb.get("id").bytes().try_into().unwrap();
    let mut hashes = vec![[0xAB; 20]; pieces];
    for h in &mut hashes[1..k] {
        *h = Sha1::digest(&zero).into();
    }
    let t = SwarmbakTorrent {
        announce: None,
        creation_date: d.get("creation date").int(),
        name: info.get("name").text(),
        piece_length: piece_length as u64,
        piece_hashes: hashes,
        params: SwarmbakParams {
            format: sb.get("format").int() as u32,
            k: k as u16,
            m: m as u16,
            stripes: sb.get("stripes").int() as u64,
            payload_length: payload,
            manifest_offset: sb.get("manifest offset").int() as u64,
            manifest_length: sb.get("manifest length").int() as u64,
            id,
            roots: None,
        },
    };
    assert_eq!(t.name, format!("swarmbak-{}.shards", hex::encode(&id[..8])));
    let bytes = build_swarmbak_torrent(&t).unwrap();
    let prefix = S17_2_PREFIX.trim_matches('`').trim_end_matches('…');
    assert!(
        bytes.starts_with(prefix.as_bytes()),
        "{}",
        String::from_utf8_lossy(&bytes[..prefix.len()])
    );
    assert_eq!(bytes.len() as u64, spaced_ints(S17_2_SIZE)[0]);
    // §10.1's key order, and every value printed in the dump, around the elided hashes.
    let mut tail = b"7:privatei1e8:swarmbakd6:formati1e2:id16:".to_vec();
    tail.extend_from_slice(&id);
    tail.extend_from_slice(
        format!(
            "1:ki{k}e1:mi{m}e15:manifest lengthi{}e15:manifest offseti{}e\
             14:payload lengthi{payload}e7:stripesi{}eeee",
            t.params.manifest_length, t.params.manifest_offset, t.params.stripes
        )
        .as_bytes(),
    );
    assert!(bytes.ends_with(&tail), "§10.1's key order");
    assert_eq!(d.get("created by").text(), "swarmbak 0.1.0");
    assert_eq!(
        d.get("created by").text(),
        format!("swarmbak {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(info.get("private").int(), 1);
    assert!(d.opt("announce").is_none());

    // A reader accepts it (§10.3) with these parameters.
    let mi = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(mi.as_bytes(), &bytes[..]);
    let ih = InfoHash(mi.info_hash());
    let meta = SnapshotMeta::parse(&ih, &bytes).unwrap();
    assert_eq!(meta.layout, layout);
    assert_eq!(
        (meta.manifest_offset, meta.manifest_length),
        (t.params.manifest_offset, t.params.manifest_length)
    );

    // `inspect` (§17.1) shows the same numbers.
    let field = |name: &str| {
        S17_1_INSPECT
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(field("name:"), t.name);
    assert_eq!(field("piece length:"), piece_length.to_string());
    assert_eq!(field("pieces:"), pieces.to_string());
    assert_eq!(field("total length:"), mi.total_length().to_string());
    assert_eq!(field("private:"), "yes");
    assert_eq!(field("announce:"), "-");
    assert_eq!(
        field("swarmbak:"),
        format!(
            "format 1, stripes of {k}+{m} shards, {} stripes, payload {payload} bytes, manifest at {}+{}",
            layout.stripes, t.params.manifest_offset, t.params.manifest_length
        )
    );
    // §17.3's layout of the payload: the pack, then the manifest up to the end.
    let l: Vec<u64> = S17_3_LAYOUT
        .lines()
        .flat_map(|line| spaced_ints(&line[line.find('[').unwrap()..line.find(')').unwrap()]))
        .collect();
    assert_eq!(l, vec![0, 355, 355, 1119]);
    assert_eq!((l[1], l[3]), (t.params.manifest_offset, payload));
}

#[test]
fn s17_4_manifest_from_the_printed_values() {
    let m = manifest_from_dump(&Dump::parse(S17_4_MANIFEST));
    m.validate().unwrap();
    let encoded = m.encode();
    let sizes = spaced_ints(S17_3_SIZES);
    assert_eq!(
        encoded.len() as u64,
        sizes[2],
        "the plaintext manifest's length"
    );
    assert_eq!(Manifest::decode(&encoded).unwrap(), m);
    let sealed = manifest::seal(&encoded).unwrap();
    assert_eq!(
        (sealed.len() - 8) as u64,
        sizes[0],
        "the zstd frame's length"
    );
    assert!(sealed.starts_with(&xxd_bytes(S17_3_MANIFEST_PLAIN)));
    assert_eq!(manifest::unseal(&sealed).unwrap(), encoded);

    // The chunk: named by keyed BLAKE3 of "hello", the first blob of pack 0, stored.
    let c = m.chunks[0];
    assert_eq!(keyed(&m.chunk_key, b"hello"), hex::encode(c.id));
    assert_eq!(c.offset, PACK_MAGIC.len() as u64);
    assert_eq!((c.stored_len, c.raw_len, c.codec), (5, 5, CODEC_NONE));
    assert!(zstd::bulk::compress(b"hello", 3).unwrap().len() >= 5);
    // The pack: SWBPACK1 then "hello" (§17.3), and the pack tuple covers 0..355.
    let pack = xxd_bytes(S17_3_PACK_PLAIN);
    assert_eq!(&pack[..8], PACK_MAGIC);
    assert_eq!(&pack[8..], b"hello");
    assert_eq!(
        m.packs,
        vec![PackRef {
            snapshot: 0,
            offset: 0,
            len: 355
        }]
    );

    // The annotations: modes, and the mtime of `touch -d '2024-01-02 03:04:05.5 UTC'`.
    let modes: Vec<u32> = m.entries.iter().map(|e| e.mode).collect();
    assert_eq!(modes, vec![0o755, 0o755, 0o755, 0o644, 0o777]);
    let hello = &m.entries[3];
    let t = days_from_civil(2024, 1, 2) * 86_400 + 3 * 3600 + 4 * 60 + 5;
    assert_eq!((hello.mtime, hello.mtime_ns), (t, 500_000_000));
    assert_eq!(hello.size, 5);
}

#[test]
fn s17_5_incremental_names_from_the_printed_values() {
    let key: [u8; 32] = Dump::parse(S17_4_MANIFEST)
        .get("chunk key")
        .bytes()
        .try_into()
        .unwrap();
    // "BLAKE3-keyed(key = 2c356a38…0dd8, "hello") = f0f3448b…674a"
    let (k_head, k_tail) = word_after(S17_4_CHECK, "key = ")
        .trim_end_matches(',')
        .split_once('…')
        .unwrap();
    let hk = hex::encode(key);
    assert!(hk.starts_with(k_head) && hk.ends_with(k_tail));
    let (n_head, n_tail) = word_after(S17_4_CHECK, ") = ")
        .trim_end_matches('`')
        .split_once('…')
        .unwrap();
    let id = keyed(&key, b"hello");
    assert!(id.starts_with(n_head) && id.ends_with(n_tail), "{id}");

    let lines: Vec<&str> = S17_5_INCREMENTAL.lines().collect();
    for (line, content) in [(lines[0], &b"hello"[..]), (lines[1], &b"world!"[..])] {
        let abbrev = word_after(line, "[hex:").trim_end_matches(',');
        let (head, tail) = abbrev.split_once('…').unwrap();
        let id = keyed(&key, content);
        assert!(
            id.starts_with(head) && id.ends_with(tail),
            "{id} vs {abbrev}"
        );
        let nums: Vec<u64> =
            spaced_ints(line.split('←').next().unwrap().split_once(',').unwrap().1);
        assert_eq!(
            &nums[1..],
            &[8, content.len() as u64, content.len() as u64, 0]
        );
    }
}

// ---------------------------------------------------------------------------------------
// §17: the worked example, through the real pipeline
// ---------------------------------------------------------------------------------------

/// A home with the spec's chunk key, and how it backs up (the machine's name is the one
/// the manifest records).
fn new_home(root: &Path, name: &str, chunk_key: &[u8; 32]) -> (Home, String) {
    let (_, created) = Home::create(root).unwrap();
    assert!(created);
    // The home's chunk key (§15.1: HOME/chunk-key, hex), replaced before the first
    // snapshot so that chunk names are the spec's.
    fs::write(root.join("chunk-key"), hex::encode(chunk_key)).unwrap();
    (Home::open(root).unwrap(), name.to_string())
}

fn opts(paths: Vec<std::path::PathBuf>, name: &str) -> BackupOptions {
    let mut o = BackupOptions::new(paths);
    o.machine_name = name.to_string();
    o
}

fn cached_manifest(home: &Home, ih: &InfoHash) -> Manifest {
    let plain = home.store().manifest_cache(ih).unwrap().unwrap();
    let m = Manifest::decode(&plain).unwrap();
    m.validate().unwrap();
    m
}

#[derive(Default)]
struct Warnings(Mutex<Vec<String>>);
impl Progress for Warnings {
    fn warn(&self, msg: &str) {
        self.0.lock().unwrap().push(msg.to_string());
    }
}

/// §17.1's tree.
fn make_tree(tree: &Path) {
    fs::create_dir_all(tree.join("docs/empty")).unwrap();
    fs::write(tree.join("docs/hello"), "hello").unwrap();
    std::os::unix::fs::symlink("docs/hello", tree.join("link")).unwrap();
    for d in ["", "docs", "docs/empty"] {
        fs::set_permissions(tree.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(tree.join("docs/hello"), fs::Permissions::from_mode(0o644)).unwrap();
    let t = days_from_civil(2024, 1, 2) * 86_400 + 3 * 3600 + 4 * 60 + 5;
    filetime::set_file_mtime(
        tree.join("docs/hello"),
        filetime::FileTime::from_unix_time(t, 500_000_000),
    )
    .unwrap();
}

#[test]
fn s17_worked_example_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let spec_m = manifest_from_dump(&Dump::parse(S17_4_MANIFEST));
    let (home, name) = new_home(
        &dir.path().join("H"),
        &spec_m.machine_name,
        &spec_m.chunk_key,
    );
    let tree = dir.path().join("TREE");
    make_tree(&tree);

    // §17.1: seed.
    let r = backup(&home, &opts(vec![tree.clone()], &name), &NoProgress).unwrap();
    let ih = r.infohash;
    let i = &r.info;
    let n = spaced_ints(S17_1_SEED.split("; payload").next().unwrap());
    assert_eq!(
        n,
        vec![
            i.files,
            i.dirs,
            i.symlinks,
            i.bytes,
            i.new_bytes,
            i.new_chunks,
            i.chunks
        ]
    );
    // "shards 192.00 KiB"; the payload ("1.09 KiB") varies with age's random grease.
    assert_eq!(
        i.shard_bytes as f64 / 1024.0,
        word_after(S17_1_SEED, "shards ").parse::<f64>().unwrap()
    );

    // §17.2: the torrent.
    let store = home.store();
    let torrent = store.torrent_bytes(&ih).unwrap();
    let mi = Metainfo::from_bytes(&torrent).unwrap();
    let sb = mi.swarmbak().unwrap().clone();
    let printed = Dump::parse(S17_2_TORRENT);
    let pinfo = printed.get("info");
    assert!(mi.announce().is_none());
    assert_eq!(
        mi.created_by(),
        Some(printed.get("created by").text().as_str())
    );
    assert_eq!(mi.piece_length() as i64, pinfo.get("piece length").int());
    assert_eq!(mi.total_length() as i64, pinfo.get("length").int());
    assert!(mi.is_private());
    assert_eq!(
        String::from_utf8_lossy(mi.name()),
        format!("swarmbak-{}.shards", hex::encode(&sb.id[..8]))
    );
    // The writer now makes format 2 snapshots: format-v2.md §8 regenerates this example
    // (crates/format/tests/spec_v2_vectors.rs); everything else here is as in format 1.
    assert_eq!(
        (sb.format, pinfo.get("swarmbak").get("format").int()),
        (2, 1)
    );
    assert_eq!(sb.roots.as_ref().map(Vec::len), Some(mi.pieces().len()));
    for key in ["k", "m", "stripes"] {
        let got = match key {
            "k" => sb.k as i64,
            "m" => sb.m as i64,
            _ => sb.stripes as i64,
        };
        assert_eq!(got, pinfo.get("swarmbak").get(key).int(), "{key}");
    }
    assert_eq!(sb.manifest_offset + sb.manifest_length, sb.payload_length);
    let zero_hash = S17_2_ZERO_SHARD.split('`').nth(1).unwrap();
    for p in 1..8 {
        assert_eq!(hex::encode(mi.pieces()[p]), zero_hash, "piece {p}");
    }
    // The creation date is the manifest's time; the torrent's start is §17.2's, up to it.
    let prefix = S17_2_PREFIX.trim_matches('`').trim_end_matches('…');
    let (before, after) = prefix.split_once("1795451623").unwrap();
    let with_time = format!("{before}{}{after}", mi.creation_date().unwrap());
    assert!(torrent.starts_with(with_time.as_bytes()));

    // §17.3: the payload.
    let ids = home.identities().unwrap();
    let src = LocalSource {
        store: &store,
        repair: false,
    };
    let reader = SnapshotReader::open(&src, &ih, &NoProgress).unwrap();
    let m = reader.manifest(&ids).unwrap();
    assert_eq!(m.packs.len(), 1);
    let pack = m.packs[0];
    assert_eq!(
        (pack.snapshot, pack.offset, pack.offset + pack.len),
        (0, 0, sb.manifest_offset)
    );
    let pack_ct = reader.read(pack.offset, pack.len).unwrap();
    let header: Vec<u8> = S17_3_AGE_HEADER.lines().flat_map(xxd_bytes).collect();
    assert_eq!(header.len(), 32);
    assert!(
        pack_ct.starts_with(&header),
        "{}",
        String::from_utf8_lossy(&pack_ct[..32])
    );
    // One X25519 stanza (one recipient), then whatever grease age adds, then the MAC line.
    let head = &pack_ct[..pack_ct.windows(5).position(|w| w == b"\n--- ").unwrap()];
    assert_eq!(head.windows(10).filter(|w| w == b"-> X25519 ").count(), 1);
    assert_eq!(
        crypto::decrypt(&ids, &pack_ct).unwrap(),
        xxd_bytes(S17_3_PACK_PLAIN)
    );
    let man_ct = reader.read(sb.manifest_offset, sb.manifest_length).unwrap();
    let sealed = crypto::decrypt(&ids, &man_ct).unwrap();
    assert!(sealed.starts_with(&xxd_bytes(S17_3_MANIFEST_PLAIN)));
    // The owner's cache is the same sealed manifest (§12 step 10, §15.2).
    let cache = fs::read(store.snapshot_dir(&ih).join("manifest")).unwrap();
    assert_eq!(cache, sealed);
    assert_eq!(cached_manifest(&home, &ih), m);

    // §17.4: the manifest, field by field where the example is not machine-specific.
    assert_eq!(m.format, spec_m.format);
    assert_eq!(m.chunk_key, spec_m.chunk_key);
    assert_eq!(
        m.chunks, spec_m.chunks,
        "chunk name, pack, offset, lengths, codec"
    );
    assert_eq!(m.machine_name, spec_m.machine_name);
    assert_eq!(m.machine_key, home.recipient().unwrap().to_string());
    assert_eq!(m.parents, spec_m.parents);
    assert_eq!(m.snapshots, spec_m.snapshots);
    assert_eq!(
        m.source_paths,
        vec![fs::canonicalize(&tree)
            .unwrap()
            .as_os_str()
            .as_encoded_bytes()
            .to_vec()]
    );
    assert_eq!(m.time, mi.creation_date().unwrap());
    assert_eq!(m.entries.len(), spec_m.entries.len());
    for (got, want) in m.entries.iter().zip(&spec_m.entries) {
        let shown = String::from_utf8_lossy(&want.path);
        assert_eq!(got.path, want.path);
        assert_eq!(got.kind, want.kind, "{shown}");
        assert_eq!(got.mode, want.mode, "{shown}");
        assert_eq!(
            (got.size, &got.chunks, &got.target),
            (want.size, &want.chunks, &want.target),
            "{shown}"
        );
        if got.kind == Kind::File {
            assert_eq!(
                (got.mtime, got.mtime_ns),
                (want.mtime, want.mtime_ns),
                "{shown}"
            );
        }
    }

    // §17.5: shard 0 deleted, one byte of shard 3 flipped, then a restore.
    fs::remove_file(store.shard_path(&ih, 0)).unwrap();
    let p3 = store.shard_path(&ih, 3);
    let mut b = fs::read(&p3).unwrap();
    b[100] ^= 1;
    fs::write(&p3, b).unwrap();
    let warnings = Warnings::default();
    let out = dir.path().join("OUT");
    let rep = restore(
        &LocalSource {
            store: &store,
            repair: true,
        },
        &ih,
        &RestoreOptions {
            target: out.clone(),
            paths: vec![],
            identities: home.identities().unwrap(),
        },
        &warnings,
    )
    .unwrap();
    let fetch: Vec<&str> = S17_5_FETCH.lines().collect();
    let damaged = fetch[1].strip_prefix("swarmbak: warning: ").unwrap();
    assert_eq!(
        *warnings.0.lock().unwrap(),
        vec![damaged.replace("68ac32af…", &ih.to_hex())],
        "only damage is warned about"
    );
    let mut repaired = rep.repaired.clone();
    repaired.sort();
    assert_eq!(
        repaired,
        vec![
            S17_5_QUIET_MISSING.replace("68ac32af…", &ih.to_hex()),
            damaged.replace("68ac32af…", &ih.to_hex()),
        ]
    );
    let counts = spaced_ints(fetch[2].split(" into").next().unwrap());
    assert_eq!(counts, vec![rep.files, rep.dirs, rep.symlinks, rep.bytes]);
    assert_eq!(spaced_ints(fetch[3])[0], rep.repaired.len() as u64);
    assert_eq!(fs::read(out.join("TREE/docs/hello")).unwrap(), b"hello");
    let md = fs::metadata(out.join("TREE/docs/hello")).unwrap();
    let mt = filetime::FileTime::from_last_modification_time(&md);
    assert_eq!(
        (mt.unix_seconds(), mt.nanoseconds()),
        (spec_m.entries[3].mtime, 500_000_000)
    );
    assert_eq!(
        fs::read_link(out.join("TREE/link")).unwrap(),
        Path::new("docs/hello")
    );
    assert!(out.join("TREE/docs/empty").is_dir());
    // The rewritten shards hash as before: every shard is good again.
    let reader = SnapshotReader::open(&src, &ih, &NoProgress).unwrap();
    let scrub = reader.scrub(false).unwrap();
    assert!(
        scrub.recoverable && scrub.problems.is_empty(),
        "{:?}",
        scrub.problems
    );
    assert_eq!(scrub.good_per_stripe, vec![12]);

    // `--path TREE/docs/hello` restores only TREE, TREE/docs and the file.
    let out2 = dir.path().join("OUT2");
    let rep2 = restore(
        &src,
        &ih,
        &RestoreOptions {
            target: out2.clone(),
            paths: vec!["TREE/docs/hello".into()],
            identities: home.identities().unwrap(),
        },
        &NoProgress,
    )
    .unwrap();
    assert!(S17_5_PARTIAL.contains("`TREE`") && S17_5_PARTIAL.contains("`TREE/docs`"));
    assert_eq!((rep2.files, rep2.dirs, rep2.symlinks), (1, 2, 0));
    assert!(out2.join("TREE/docs/hello").is_file());
    assert!(!out2.join("TREE/docs/empty").exists() && !out2.join("TREE/link").exists());

    // §17.5: a 6-byte file more and a second snapshot, which carries only the new pack.
    fs::write(tree.join("docs/world"), "world!").unwrap();
    let r2 = backup(&home, &opts(vec![tree.clone()], &name), &NoProgress).unwrap();
    let m2 = cached_manifest(&home, &r2.infohash);
    let inc = S17_5_INCREMENTAL.replace("68ac32af83d7a57e48047a9878d542fb59435fc3", &ih.to_hex());
    let lines: Vec<&str> = inc.lines().collect();
    assert_eq!(m2.chunks.len(), 2);
    for (i, line) in lines[..2].iter().enumerate() {
        let abbrev = word_after(line, "[hex:").trim_end_matches(',');
        let (head, tail) = abbrev.split_once('…').unwrap();
        let id = hex::encode(m2.chunks[i].id);
        assert!(
            id.starts_with(head) && id.ends_with(tail),
            "{id} vs {abbrev}"
        );
        let n = spaced_ints(line.split('←').next().unwrap().split_once(',').unwrap().1);
        let c = m2.chunks[i];
        assert_eq!(
            n,
            vec![
                c.pack as u64,
                c.offset,
                c.stored_len as u64,
                c.raw_len as u64,
                c.codec as u64
            ]
        );
    }
    // Pack 1 of the old snapshot's payload is reused in place, byte range and all; the
    // new pack's length varies with age's grease.
    assert_eq!(
        m2.packs[0],
        PackRef {
            snapshot: 1,
            offset: 0,
            len: pack.len
        }
    );
    assert_eq!((m2.packs[1].snapshot, m2.packs[1].offset), (0, 0));
    assert_eq!(m2.parents, vec![ih]);
    assert_eq!(m2.snapshots, vec![ih]);
    // The spec's own numbers agree: the reused pack is §17.4's, the parent is §17.1's.
    let spec_lines: Vec<&str> = S17_5_INCREMENTAL.lines().collect();
    let reused = spaced_ints(spec_lines[2].split('←').next().unwrap());
    assert_eq!(reused, vec![1, 0, spec_m.packs[0].len]);
    let first = word_after(S17_1_INSPECT, "infohash:");
    for l in &spec_lines[4..] {
        assert_eq!(word_after(l, "[hex:").trim_end_matches(']'), first);
    }
    let sb2 = Metainfo::from_bytes(&store.torrent_bytes(&r2.infohash).unwrap())
        .unwrap()
        .swarmbak()
        .unwrap()
        .clone();
    assert_eq!(
        sb2.manifest_offset, m2.packs[1].len,
        "the torrent carries only the new pack"
    );
}

// ---------------------------------------------------------------------------------------
// §19: defaults and constants
// ---------------------------------------------------------------------------------------

#[test]
fn s19_defaults_and_constants() {
    let row = |name: &str| -> Vec<String> {
        let l = S19_ROWS
            .lines()
            .find(|l| l.starts_with(&format!("| {name}")))
            .unwrap_or_else(|| panic!("{name}"));
        l.split('|').map(|c| c.trim().to_string()).collect()
    };
    let int = |name: &str| row(name)[2].parse::<u64>().unwrap();
    assert_eq!(int("k (data"), DEFAULT_K as u64);
    assert_eq!(int("m (parity"), DEFAULT_M as u64);
    assert_eq!(int("copies T"), DEFAULT_COPIES as u64);
    assert_eq!(
        row("shard size")[2],
        "16 KiB ..= 1 MiB, power of two, from payload length (§9.1)"
    );
    assert_eq!((MIN_SHARD, MAX_SHARD), (16 << 10, 1 << 20));
    assert_eq!(row("pack target")[2], "16 MiB");
    assert_eq!(PACK_TARGET, 16 << 20);
    assert_eq!(
        row("chunk sizes")[2],
        "min 256 KiB, average 1 MiB, max 4 MiB"
    );
    assert_eq!(
        (MIN_SIZE, AVG_SIZE, MAX_SIZE),
        (256 << 10, 1 << 20, 4 << 20)
    );
    let level = int("zstd level") as i32;
    assert_eq!(BackupOptions::new(vec![]).zstd_level, level);
    let sample = Manifest::decode(&manifest_from_dump(&Dump::parse(S17_4_MANIFEST)).encode())
        .unwrap()
        .encode();
    assert_eq!(
        manifest::seal(&sample).unwrap()[8..],
        zstd::bulk::compress(&sample, level).unwrap()[..],
        "seal compresses at level {level}"
    );
    assert_eq!(row("manifest size limit")[2], "1 GiB decompressed");
    assert_eq!(manifest::MAX_MANIFEST, 1 << 30);
    assert_eq!(row("magics")[2], "`SWBPACK1`, `SWBMANI1`");
    assert_eq!(
        (PACK_MAGIC, manifest::MANIFEST_MAGIC),
        (b"SWBPACK1", b"SWBMANI1")
    );
    assert_eq!(
        row("snapshot format version")[2],
        "1 (writers now write 2: [format-v2.md](format-v2.md))"
    );
    assert_eq!(FORMAT_VERSION, 2);
    assert_eq!(swarmbak_metainfo::SWARMBAK_FORMAT, FORMAT_VERSION);
    assert_eq!(int("manifest format version"), MANIFEST_FORMAT as u64);
    assert_eq!(MANIFEST_FORMAT, 1);

    // New backups use the defaults (a fresh config.json's are checked in crates/node).
    let o = BackupOptions::new(vec![]);
    assert_eq!((o.k, o.m), (DEFAULT_K as usize, DEFAULT_M as usize));
}
