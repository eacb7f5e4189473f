//! Golden tests for `protocol-spec/format-v2.md`: the Merkle vectors (§2), the size limit's
//! numbers (§5), the worked example (§8) rebuilt byte for byte from its printed values and
//! run through the real pipeline, and the reader rules of §3, §4 and §7 on real snapshots
//! (an inconsistent one, a format 1 parent under a format 2 child).
//!
//! As in `spec_vectors.rs`, each quoted constant must still appear in the document
//! (`every_quote_appears_verbatim_in_the_spec`) and each test takes its values from them.

use std::fs;
use std::path::Path;

use sha1::{Digest, Sha1};
use swarmbak_core::{merkle, spec};
use swarmbak_format::backup::{check_info_size, NoProgress, MAX_INFO_SIZE};
use swarmbak_format::erasure::{Layout, MAX_SHARD};
use swarmbak_format::restore::{LocalSource, ShardCheck, SnapshotMeta, SnapshotReader};
use swarmbak_format::{
    backup, restore, BackupOptions, BackupReport, FormatError, Home, InfoHash, RestoreOptions,
    DEFAULT_K, DEFAULT_M, FORMAT_VERSION, MANIFEST_FORMAT,
};
use swarmbak_metainfo::{build_swarmbak_torrent, Metainfo, SwarmbakParams, SwarmbakTorrent};

const DOC: &str = "format-v2.md";

/// §2, the vectors.
const S2_VECTORS: &str = r#"16 KiB of zero bytes (1 block)     root = 4fe7b59af6de3b665b67788cc2f99892ab827efae3a467342b3bb4e3bc8e5bfe
                                        (= SHA-256 of the block: pieces 1–7 of §8)
1 MiB of zero bytes (64 blocks)    root = 515ea9181744b817744ded9d2e8e9dc6a8450c0b0c52e24b5077f302ffbd9008
48 KiB of zero bytes (3 blocks,    root = 1cb5a249f6e721060aae623d21d3eca23056bda8c19e4e89f9a086151553713d"#;

/// §5, the limit and the largest snapshot at the defaults.
const S5_LIMIT: &str = "swarmbak's peers refuse one over **8 MiB** (8 388 608 bytes;";
const S5_LARGEST: &str =
    "With the defaults (k = 8, m = 4, 1 MiB shards) the largest snapshot that fits has
13 442 stripes, that is 161 304 pieces and at most 112 759 668 736 bytes (105.02 GiB) of
payload (compressed, encrypted new data); its info dictionary is at most 8 388 108 bytes. One
stripe more (161 316 pieces) is refused. (Format 1, at 20 bytes per piece, allowed
419 412 pieces, about 273 GiB.)";

/// §8, `inspect`'s line and the torrent's size.
const S8_INSPECT: &str = "`swarmbak:     format 2, stripes of 8+4 shards, 1 stripes, payload 1130
bytes, manifest at 347+783`";
const S8_SIZE: &str = "The torrent (945 bytes: §17.2's 550 plus `5:roots384:` and
the 384 bytes of roots)";

/// §8, the torrent decoded.
const S8_TORRENT: &str = r#"{
  'created by': 'swarmbak 0.1.0'
  'creation date': 1796158171
  'info':                                  ← SHA-1 of these bytes = 6f478b7f994f4a16e9b84f64a34f9f894bb60917
    {
      'length': 196608
      'name': 'swarmbak-ac78cba6692d098f.shards'
      'piece length': 16384
      'pieces': hex:39e85189235e16dbdb19ca96df7e3db3520ec2e3
                    897256b6709e1a4da9daba92b6bde39ccfccd8c1
                    897256b6709e1a4da9daba92b6bde39ccfccd8c1
                    897256b6709e1a4da9daba92b6bde39ccfccd8c1
                    897256b6709e1a4da9daba92b6bde39ccfccd8c1
                    897256b6709e1a4da9daba92b6bde39ccfccd8c1
                    897256b6709e1a4da9daba92b6bde39ccfccd8c1
                    897256b6709e1a4da9daba92b6bde39ccfccd8c1
                    f2efb929d7ff21f77906cd15d4418bbd49962d1e
                    c4b92d4dfc863dbdb61bac1d7c3e6381d4cf9d6d
                    03805401473f2827e0d6c7be41f815b3b79ea237
                    de2dc39cdb9f2082633a27f7750e80f7654df1cd
      'private': 1
      'swarmbak':
        {
          'format': 2
          'id': hex:ac78cba6692d098ffc154e6f4e671ebe
          'k': 8
          'm': 4
          'manifest length': 783
          'manifest offset': 347
          'payload length': 1130
          'roots': hex:961c50294120a4764a69ea86e4d87865146f82381a6bca491d7d764b7f16c4d1
                       4fe7b59af6de3b665b67788cc2f99892ab827efae3a467342b3bb4e3bc8e5bfe
                       4fe7b59af6de3b665b67788cc2f99892ab827efae3a467342b3bb4e3bc8e5bfe
                       4fe7b59af6de3b665b67788cc2f99892ab827efae3a467342b3bb4e3bc8e5bfe
                       4fe7b59af6de3b665b67788cc2f99892ab827efae3a467342b3bb4e3bc8e5bfe
                       4fe7b59af6de3b665b67788cc2f99892ab827efae3a467342b3bb4e3bc8e5bfe
                       4fe7b59af6de3b665b67788cc2f99892ab827efae3a467342b3bb4e3bc8e5bfe
                       4fe7b59af6de3b665b67788cc2f99892ab827efae3a467342b3bb4e3bc8e5bfe
                       6b904c264a7439c398d7279ef9e926414693f589b180d6008abf0aca7ead58dd
                       0722c8da1970bb202ad0677dcfc28eb21529533da579e08227d1357f71756211
                       a4f7191eb0bee4f6ff069ccc525049d6fe0d7ce9b8e06a811a42fc4e0f9e2d10
                       eb1607751f7897364e4284cafe5c7b715e9c168c054476789c59f069bdbf5d3f
          'stripes': 1
        }
    }
}"#;

/// §4, the message of an inconsistent snapshot.
const S4_INCONSISTENT: &str =
    "\"snapshot X is inconsistent: shard N matches its SHA-1 but not its Merkle root; the
  snapshot was made wrongly; re-run the backup\"";

/// §9, the version rows.
const S9_ROWS: &str = r#"| snapshot format version | 2 (reads 1 and 2) | `FORMAT_VERSION`, `SWARMBAK_FORMAT` | yes |
| manifest format version | 1 | `MANIFEST_FORMAT` | yes |
| Merkle block | 16 384 bytes | `merkle::BLOCK` | yes |
| info dictionary limit | 8 388 608 bytes (8 MiB) | `MAX_INFO_SIZE` (= wire's `MAX_METADATA_SIZE`) | yes (writers must not exceed it) |"#;

#[test]
fn every_quote_appears_verbatim_in_the_spec() {
    spec::assert_quoted(
        DOC,
        &[
            S2_VECTORS,
            S5_LIMIT,
            S5_LARGEST,
            S8_INSPECT,
            S8_SIZE,
            S8_TORRENT,
            S4_INCONSISTENT,
            S9_ROWS,
        ],
    );
}

/// The integers in `s`, digit groups separated by single spaces joined ("8 388 608").
fn ints(s: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let c: Vec<char> = s.chars().collect();
    for (i, &ch) in c.iter().enumerate() {
        let sep = ch == ' '
            && !cur.is_empty()
            && c.get(i + 1..i + 4)
                .is_some_and(|d| d.iter().all(char::is_ascii_digit))
            && c.get(i + 4).is_none_or(|d| !d.is_ascii_digit());
        if ch.is_ascii_digit() {
            cur.push(ch);
        } else if !sep && !cur.is_empty() {
            out.push(cur.parse().unwrap());
            cur.clear();
        }
    }
    if !cur.is_empty() {
        out.push(cur.parse().unwrap());
    }
    out
}

fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// A value of the §8 dump: the text after `'key': ` up to the comment, with the hex
/// continuation lines of `pieces` and `roots` appended.
fn field(key: &str) -> String {
    let lines: Vec<&str> = S8_TORRENT.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with(&format!("'{key}':")))
        .unwrap_or_else(|| panic!("{key}"));
    let first = lines[at].split('←').next().unwrap();
    let mut v = first.split_once(": ").unwrap().1.trim().to_string();
    if let Some(h) = v.strip_prefix("hex:") {
        v = h.to_string();
        for l in &lines[at + 1..] {
            let t = l.trim();
            if t.is_empty() || !t.chars().all(|c| c.is_ascii_hexdigit()) {
                break;
            }
            v.push_str(t);
        }
    }
    v.trim_matches('\'').to_string()
}

fn int(key: &str) -> u64 {
    field(key).parse().unwrap()
}

#[test]
fn s2_merkle_vectors() {
    let lines: Vec<&str> = S2_VECTORS.lines().collect();
    for (line, size) in [
        (lines[0], 16 << 10),
        (lines[2], 1 << 20),
        (lines[3], 48 << 10),
    ] {
        assert_eq!(ints(line)[0] << if size >= 1 << 20 { 20 } else { 10 }, size);
        let want = hex32(word_after(line, "root = "));
        assert_eq!(merkle::root(&vec![0; size as usize]), want, "{line}");
    }
    assert_eq!(
        merkle::root(&[0; merkle::BLOCK]),
        merkle::leaf(&[0; merkle::BLOCK])
    );
}

fn word_after<'a>(s: &'a str, marker: &str) -> &'a str {
    s[s.find(marker).unwrap() + marker.len()..]
        .split_whitespace()
        .next()
        .unwrap()
}

#[test]
fn s5_size_limit() {
    assert_eq!(ints(S5_LIMIT)[1], MAX_INFO_SIZE);
    // swarmbak_wire::MAX_METADATA_SIZE (crates/wire/src/metadata.rs); format does not
    // depend on wire, so the number is checked against the document instead.
    assert_eq!(MAX_INFO_SIZE, 8 * 1024 * 1024);
    let n = ints(S5_LARGEST);
    let (k, m) = (n[0] as usize, n[1] as usize);
    assert_eq!((k, m), (DEFAULT_K as usize, DEFAULT_M as usize));
    assert_eq!(n[2] << 20, MAX_SHARD as u64);
    let (stripes, pieces, payload) = (n[3], n[4], n[5]);
    assert_eq!(pieces, stripes * (k + m) as u64);
    assert_eq!(payload, stripes * (k as u64) * MAX_SHARD as u64);
    assert!(S5_LARGEST.contains(&format!(
        "({:.2} GiB)",
        payload as f64 / (1u64 << 30) as f64
    )));
    let layout = Layout::for_payload(payload, k, m).unwrap();
    assert_eq!(
        (
            layout.stripes as u64,
            layout.pieces() as u64,
            layout.shard_size
        ),
        (stripes, pieces, MAX_SHARD)
    );
    // The largest info dictionary of that layout: manifest offset and length of 11 and 12
    // digits (they add up to the 12-digit payload length, so they cannot both have 12).
    let worst = check_info_size(&layout, 12_759_668_736).unwrap();
    assert_eq!(worst, n[8]);
    assert!(check_info_size(&layout, 0).unwrap() <= worst);
    assert!(check_info_size(&layout, payload - 1).unwrap() <= worst);
    // One stripe more is refused, whatever the manifest, with what to do.
    let over = Layout::for_payload(payload + 1, k, m).unwrap();
    assert_eq!(over.pieces() as u64, n[9]);
    for off in [0, payload / 2, payload] {
        let e = check_info_size(&over, off).unwrap_err().to_string();
        assert!(
            e.contains("too large for one snapshot")
                && e.contains("over the 8388608 bytes")
                && e.contains(&format!("at most {pieces} pieces, about 105 GiB"))
                && e.contains("split the PATHs into several backups")
                && e.contains("config.json")
                && e.contains("nothing was written"),
            "{e}"
        );
    }
    // Far over: refused without building anything.
    let huge = Layout::for_payload(1 << 50, k, m).unwrap();
    assert!(check_info_size(&huge, 0).is_err());
    // Format 1's figure: 20 bytes per piece.
    assert_eq!((n[10], n[11], n[12], n[13]), (1, 20, 419_412, 273));
    assert_eq!(n[12] % (k + m) as u64, 0);
    assert!(n[12] * 20 < MAX_INFO_SIZE && (n[12] + 12) * 20 + 200 > MAX_INFO_SIZE);
}

fn printed_torrent() -> SwarmbakTorrent {
    let pieces = hex::decode(field("pieces")).unwrap();
    let roots = hex::decode(field("roots")).unwrap();
    SwarmbakTorrent {
        announce: None,
        creation_date: int("creation date") as i64,
        name: field("name"),
        piece_length: int("piece length"),
        piece_hashes: pieces.chunks(20).map(|c| c.try_into().unwrap()).collect(),
        params: SwarmbakParams {
            format: int("format") as u32,
            k: int("k") as u16,
            m: int("m") as u16,
            stripes: int("stripes"),
            payload_length: int("payload length"),
            manifest_offset: int("manifest offset"),
            manifest_length: int("manifest length"),
            id: hex::decode(field("id")).unwrap().try_into().unwrap(),
            roots: Some(roots.chunks(32).map(|c| c.try_into().unwrap()).collect()),
        },
    }
}

#[test]
fn s8_torrent_from_the_printed_values() {
    let t = printed_torrent();
    let bytes = build_swarmbak_torrent(&t).unwrap();
    assert_eq!(bytes.len() as u64, ints(S8_SIZE)[0]);
    assert_eq!(
        bytes.len() as u64 - ints(S8_SIZE)[3],
        (t.params.roots.as_ref().unwrap().len() * 32 + "5:roots384:".len()) as u64
    );
    let mi = Metainfo::from_bytes(&bytes).unwrap();
    let ih = word_after(S8_TORRENT, "SHA-1 of these bytes = ");
    assert_eq!(hex::encode(mi.info_hash()), ih, "the printed infohash");
    assert_eq!(mi.total_length(), int("length"));
    assert_eq!(mi.swarmbak(), Some(&t.params));
    assert_eq!(t.params.format, FORMAT_VERSION);
    // Pieces 1–7: the all-zero shard's SHA-1 and root (§2's first vector).
    let zero = vec![0u8; t.piece_length as usize];
    let zero_root = hex32(word_after(S2_VECTORS, "root = "));
    let roots = t.params.roots.as_ref().unwrap();
    for (p, root) in roots.iter().enumerate().take(8).skip(1) {
        assert_eq!(t.piece_hashes[p], <[u8; 20]>::from(Sha1::digest(&zero)));
        assert_eq!(*root, zero_root);
    }
    // `inspect`'s numbers.
    let n = ints(S8_INSPECT);
    assert_eq!(
        n,
        vec![
            2,
            8,
            4,
            t.params.stripes,
            t.params.payload_length,
            t.params.manifest_offset,
            t.params.manifest_length
        ]
    );
    let meta = SnapshotMeta::parse(&InfoHash(mi.info_hash()), &bytes).unwrap();
    assert_eq!(meta.roots.as_deref(), Some(&roots[..]));
    assert!(meta.shard_ok(1, &zero));
    assert!(!meta.shard_ok(12, &zero), "a piece out of range");
}

#[test]
fn s9_constants() {
    let row = |name: &str| -> Vec<String> {
        S9_ROWS
            .lines()
            .find(|l| l.starts_with(&format!("| {name}")))
            .unwrap()
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    assert_eq!(row("snapshot format")[2], "2 (reads 1 and 2)");
    assert_eq!((FORMAT_VERSION, swarmbak_metainfo::SWARMBAK_FORMAT), (2, 2));
    assert_eq!(row("manifest format")[2], MANIFEST_FORMAT.to_string());
    assert_eq!(ints(&row("Merkle block")[2])[0], merkle::BLOCK as u64);
    assert_eq!(ints(&row("info dictionary")[2])[0], MAX_INFO_SIZE);
}

// ---------------------------------------------------------------------------------------
// Through the real pipeline
// ---------------------------------------------------------------------------------------

/// format-v1.md §17.1's tree.
fn make_tree(tree: &Path) {
    fs::create_dir_all(tree.join("docs/empty")).unwrap();
    fs::write(tree.join("docs/hello"), "hello").unwrap();
    std::os::unix::fs::symlink("docs/hello", tree.join("link")).unwrap();
}

fn opts(tree: &Path) -> BackupOptions {
    let mut o = BackupOptions::new(vec![tree.to_path_buf()]);
    o.machine_name = "example-laptop".into();
    o
}

fn restore_to(
    home: &Home,
    ih: &InfoHash,
    out: &Path,
) -> Result<restore::RestoreReport, FormatError> {
    restore::restore(
        &LocalSource {
            store: &home.store(),
            repair: false,
        },
        ih,
        &RestoreOptions {
            target: out.to_path_buf(),
            paths: vec![],
            identities: home.identities().unwrap(),
        },
        &NoProgress,
    )
}

/// A home holding one snapshot of format-v1.md §17.1's tree (made by this writer).
fn first_snapshot() -> (tempfile::TempDir, Home, std::path::PathBuf, BackupReport) {
    let dir = tempfile::tempdir().unwrap();
    let (home, _) = Home::create(&dir.path().join("H")).unwrap();
    let tree = dir.path().join("TREE");
    make_tree(&tree);
    let r = backup(&home, &opts(&tree), &NoProgress).unwrap();
    (dir, home, tree, r)
}

#[test]
fn s8_worked_example_end_to_end() {
    let (dir, home, _, r) = first_snapshot();
    let store = home.store();
    let torrent = store.torrent_bytes(&r.infohash).unwrap();
    // The printed size, give or take the digits of the numbers age's random grease moves.
    let mi = Metainfo::from_bytes(&torrent).unwrap();
    let sb = mi.swarmbak().unwrap();
    let digits = |n: u64| n.to_string().len() as i64;
    let printed: i64 = [
        "payload length",
        "manifest offset",
        "manifest length",
        "creation date",
    ]
    .iter()
    .map(|k| digits(int(k)))
    .sum();
    let got = digits(sb.payload_length)
        + digits(sb.manifest_offset)
        + digits(sb.manifest_length)
        + digits(mi.creation_date().unwrap() as u64);
    assert_eq!(
        torrent.len() as i64,
        ints(S8_SIZE)[0] as i64 + got - printed
    );
    assert_eq!((sb.format, sb.k, sb.m, sb.stripes), (2, 8, 4, 1));
    let roots = sb.roots.as_ref().unwrap();
    let zero_root = hex32(word_after(S2_VECTORS, "root = "));
    let meta = SnapshotMeta::parse(&r.infohash, &torrent).unwrap();
    for (p, root) in roots.iter().enumerate() {
        let shard = fs::read(store.shard_path(&r.infohash, p)).unwrap();
        assert_eq!(*root, merkle::root(&shard), "piece {p}");
        assert_eq!(meta.check_shard(p as u32, &shard), ShardCheck::Good);
        if (1..8).contains(&p) {
            assert_eq!(*root, zero_root);
        }
        let mut bad = shard.clone();
        bad[0] ^= 1;
        assert_eq!(meta.check_shard(p as u32, &bad), ShardCheck::Bad);
        assert_eq!(meta.check_shard(p as u32, &shard[1..]), ShardCheck::Bad);
    }
    let out = dir.path().join("OUT");
    restore_to(&home, &r.infohash, &out).unwrap();
    assert_eq!(fs::read(out.join("TREE/docs/hello")).unwrap(), b"hello");
}

/// Writes `torrent` as a new snapshot of `home` holding the shards of `from` (§4's
/// inconsistent snapshot, §7's format 1 parent); returns its infohash.
fn copy_snapshot(home: &Home, from: &InfoHash, torrent: &[u8]) -> InfoHash {
    let store = home.store();
    let ih = InfoHash(Metainfo::from_bytes(torrent).unwrap().info_hash());
    store.add_torrent(&ih, torrent).unwrap();
    for p in 0..12 {
        let b = fs::read(store.shard_path(from, p)).unwrap();
        store.write_shard(&ih, p, &b).unwrap();
    }
    ih
}

fn rebuilt(torrent: &[u8], f: impl FnOnce(&mut SwarmbakParams)) -> Vec<u8> {
    let mi = Metainfo::from_bytes(torrent).unwrap();
    let mut parts = SwarmbakTorrent::of(&mi).unwrap();
    f(&mut parts.params);
    build_swarmbak_torrent(&parts).unwrap()
}

#[test]
fn s4_sha1_right_root_wrong_is_an_inconsistent_snapshot() {
    let (dir, home, _, r) = first_snapshot();
    let store = home.store();
    let torrent = store.torrent_bytes(&r.infohash).unwrap();
    // The owner wrote a wrong root for piece 0 (the data shard the restore needs first).
    let bad = rebuilt(&torrent, |p| p.roots.as_mut().unwrap()[0][5] ^= 1);
    let ih = copy_snapshot(&home, &r.infohash, &bad);
    let meta = SnapshotMeta::parse(&ih, &bad).unwrap();
    let shard0 = fs::read(store.shard_path(&ih, 0)).unwrap();
    assert_eq!(meta.check_shard(0, &shard0), ShardCheck::Inconsistent);
    assert!(!meta.shard_ok(0, &shard0));
    let e = restore_to(&home, &ih, &dir.path().join("OUT")).unwrap_err();
    assert!(
        matches!(e, FormatError::Inconsistent { piece: 0, .. }),
        "{e:?}"
    );
    let msg = S4_INCONSISTENT
        .trim_matches('"')
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("snapshot X", &format!("snapshot {ih}"))
        .replace("shard N", "shard 0");
    assert_eq!(e.to_string(), msg);
    assert!(!dir.path().join("OUT/TREE").exists(), "nothing restored");
    // A scrub (health) reports it too, and repairs nothing.
    let src = LocalSource {
        store: &store,
        repair: true,
    };
    let reader = SnapshotReader::open(&src, &ih, &NoProgress).unwrap();
    assert!(matches!(
        reader.scrub(true),
        Err(FormatError::Inconsistent { piece: 0, .. })
    ));
    assert_eq!(fs::read(store.shard_path(&ih, 0)).unwrap(), shard0);
}

#[test]
fn s7_format_1_parent_format_2_child() {
    let (dir, home, tree, r) = first_snapshot();
    let store = home.store();
    // Turn the first snapshot into the format 1 snapshot an older swarmbak made: same
    // shards, a torrent without roots (another infohash), local.json naming it.
    let v1 = rebuilt(&store.torrent_bytes(&r.infohash).unwrap(), |p| {
        p.format = 1;
        p.roots = None;
    });
    let old = copy_snapshot(&home, &r.infohash, &v1);
    let (from, to) = (store.snapshot_dir(&r.infohash), store.snapshot_dir(&old));
    for f in ["manifest", "local.json"] {
        fs::copy(from.join(f), to.join(f)).unwrap();
    }
    let mut info: serde_json::Value =
        serde_json::from_slice(&fs::read(to.join("local.json")).unwrap()).unwrap();
    info["infohash"] = old.to_hex().into();
    fs::write(to.join("local.json"), serde_json::to_vec(&info).unwrap()).unwrap();
    fs::remove_dir_all(&from).unwrap();
    let meta = SnapshotMeta::parse(&old, &v1).unwrap();
    assert_eq!(meta.roots, None);
    assert!(meta.shard_ok(0, &fs::read(store.shard_path(&old, 0)).unwrap()));

    // A second snapshot reuses the first one's pack: a format 2 child of a format 1 parent.
    fs::write(tree.join("docs/world"), "world!").unwrap();
    let r2 = backup(&home, &opts(&tree), &NoProgress).unwrap();
    let mi2 = Metainfo::from_bytes(&store.torrent_bytes(&r2.infohash).unwrap()).unwrap();
    assert_eq!(mi2.swarmbak().unwrap().format, 2);
    assert_eq!(r2.info.parents, vec![old.to_hex()]);
    let out = dir.path().join("OUT");
    restore_to(&home, &r2.infohash, &out).unwrap();
    assert_eq!(fs::read(out.join("TREE/docs/hello")).unwrap(), b"hello");
    assert_eq!(fs::read(out.join("TREE/docs/world")).unwrap(), b"world!");
}
