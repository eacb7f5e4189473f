//! The snapshot manifest (format v1): the tree, its metadata, and where every chunk lives.
//!
//! Encoded as canonical bencode, compressed with zstd and prefixed with [`MANIFEST_MAGIC`]
//! ("sealed"), then encrypted as one age file placed at the end of the payload.
//! Field by field description: `protocol-spec/format-v1.md`, "Manifest".

use std::collections::HashSet;
use std::io::Read;

use swarmbak_bencode::{decode_with, Dict, Encoder, Limits, Value};

use crate::chunker::MAX_SIZE;
use crate::{FormatError, InfoHash, MANIFEST_FORMAT};

/// A chunk's name: keyed BLAKE3 of its plaintext, under the machine's chunk key.
pub type ChunkId = [u8; 32];

/// First bytes of a sealed manifest (before encryption).
pub const MANIFEST_MAGIC: &[u8; 8] = b"SWBMANI1";
/// Largest decompressed manifest a reader accepts.
pub const MAX_MANIFEST: u64 = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path below the snapshot's root, components joined by `/` (first component: the
    /// base name of a backed-up PATH).
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub mtime: i64,
    pub mtime_ns: u32,
    /// Files only: length in bytes (the sum of its chunks' raw lengths).
    pub size: u64,
    /// Files only: indices into [`Manifest::chunks`], in file order.
    pub chunks: Vec<u32>,
    /// Symlinks only: the target, verbatim.
    pub target: Vec<u8>,
    /// Change detection for the owner's next backup (not used by restore).
    pub ino: u64,
    pub ctime: i64,
    pub ctime_ns: u32,
}

/// A pack: an age file at `offset..offset+len` of the payload of snapshot `snapshot`
/// (0 = this snapshot, i >= 1 = `Manifest::snapshots[i - 1]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackRef {
    pub snapshot: u32,
    pub offset: u64,
    pub len: u64,
}

/// A chunk: `stored_len` bytes at `offset` of the decrypted pack `pack`, which decode
/// with `codec` to `raw_len` bytes whose keyed BLAKE3 is `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub pack: u32,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub codec: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    pub time: i64,
    pub time_ns: u32,
    pub machine_name: String,
    /// The owner's age public key (its identity in the organisation).
    pub machine_key: String,
    /// The paths that were backed up, as the owner named them.
    pub source_paths: Vec<Vec<u8>>,
    /// The snapshot this one was taken against (its unchanged files were reused).
    pub parents: Vec<InfoHash>,
    /// Earlier snapshots whose packs this one refers to.
    pub snapshots: Vec<InfoHash>,
    pub chunk_key: [u8; 32],
    pub packs: Vec<PackRef>,
    pub chunks: Vec<ChunkRef>,
    /// Every entry after its parent directory.
    pub entries: Vec<Entry>,
}

fn bad(msg: impl Into<String>) -> FormatError {
    FormatError::Manifest(msg.into())
}

/// Checks a snapshot-relative path: `/`-separated components, none empty, `.` or `..`,
/// none holding NUL; not absolute.
pub fn check_path(p: &[u8]) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.len() > 65536 {
        return Err("path longer than 64 KiB".into());
    }
    for c in p.split(|&b| b == b'/') {
        if c.is_empty() {
            return Err(format!(
                "{:?} is absolute or has an empty component",
                String::from_utf8_lossy(p)
            ));
        }
        if c == b"." || c == b".." {
            return Err(format!(
                "{:?} has a `.` or `..` component",
                String::from_utf8_lossy(p)
            ));
        }
        if c.contains(&0) {
            return Err(format!("{:?} holds a NUL byte", String::from_utf8_lossy(p)));
        }
    }
    Ok(())
}

impl Manifest {
    /// Refuses anything a restore must not act on.
    pub fn validate(&self) -> Result<(), FormatError> {
        if self.format != MANIFEST_FORMAT {
            return Err(bad(format!(
                "manifest format {} is not one this swarmbak knows ({MANIFEST_FORMAT}); upgrade swarmbak",
                self.format
            )));
        }
        if self.time_ns >= 1_000_000_000 {
            return Err(bad("`time ns` is a second or more"));
        }
        for (i, p) in self.packs.iter().enumerate() {
            if p.snapshot as usize > self.snapshots.len() {
                return Err(bad(format!(
                    "pack {i} refers to snapshot {} of {}",
                    p.snapshot,
                    self.snapshots.len()
                )));
            }
            if p.offset.checked_add(p.len).is_none() || p.len == 0 {
                return Err(bad(format!("pack {i} has an impossible range")));
            }
        }
        for (i, c) in self.chunks.iter().enumerate() {
            if c.pack as usize >= self.packs.len() {
                return Err(bad(format!(
                    "chunk {i} refers to pack {} of {}",
                    c.pack,
                    self.packs.len()
                )));
            }
            if c.raw_len == 0 || c.raw_len as usize > MAX_SIZE || c.stored_len == 0 {
                return Err(bad(format!("chunk {i} has an impossible length")));
            }
            match c.codec {
                0 if c.stored_len == c.raw_len => {}
                1 => {}
                _ => {
                    return Err(bad(format!(
                        "chunk {i} has codec {} with lengths {}/{}",
                        c.codec, c.stored_len, c.raw_len
                    )))
                }
            }
        }
        let mut seen: HashSet<&[u8]> = HashSet::with_capacity(self.entries.len());
        let mut dirs: HashSet<&[u8]> = HashSet::new();
        for e in &self.entries {
            check_path(&e.path).map_err(bad)?;
            let shown = String::from_utf8_lossy(&e.path);
            if let Some(i) = e.path.iter().rposition(|&b| b == b'/') {
                if !dirs.contains(&e.path[..i]) {
                    return Err(bad(format!(
                        "{shown:?} does not follow a directory entry for its parent"
                    )));
                }
            }
            if !seen.insert(&e.path) {
                return Err(bad(format!("{shown:?} appears twice")));
            }
            if e.mtime_ns >= 1_000_000_000 || e.ctime_ns >= 1_000_000_000 {
                return Err(bad(format!(
                    "{shown:?} has a nanosecond field of a second or more"
                )));
            }
            if e.mode > 0o7777 {
                return Err(bad(format!("{shown:?} has mode {:o}", e.mode)));
            }
            match e.kind {
                Kind::Dir => {
                    dirs.insert(&e.path);
                }
                Kind::File => {
                    let mut sum = 0u64;
                    for &ci in &e.chunks {
                        let c = self.chunks.get(ci as usize).ok_or_else(|| {
                            bad(format!(
                                "{shown:?} refers to chunk {ci} of {}",
                                self.chunks.len()
                            ))
                        })?;
                        sum += c.raw_len as u64;
                    }
                    if sum != e.size {
                        return Err(bad(format!(
                            "{shown:?} is {} bytes but its chunks hold {sum}",
                            e.size
                        )));
                    }
                }
                Kind::Symlink => {
                    if e.target.is_empty() || e.target.contains(&0) {
                        return Err(bad(format!(
                            "{shown:?} is a symlink with an empty target or a NUL byte"
                        )));
                    }
                }
            }
            if e.kind != Kind::File && (!e.chunks.is_empty() || e.size != 0) {
                return Err(bad(format!("{shown:?} is not a file but has contents")));
            }
            if e.kind != Kind::Symlink && !e.target.is_empty() {
                return Err(bad(format!("{shown:?} is not a symlink but has a target")));
            }
        }
        Ok(())
    }

    /// Canonical bencode.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::with_capacity(64 + self.entries.len() * 96 + self.chunks.len() * 64);
        e.begin_dict();
        e.key(b"chunk key").bytes(&self.chunk_key);
        e.key(b"chunks").begin_list();
        for c in &self.chunks {
            e.begin_list()
                .bytes(&c.id)
                .int(c.pack as i64)
                .int(c.offset as i64)
                .int(c.stored_len as i64)
                .int(c.raw_len as i64)
                .int(c.codec as i64)
                .end();
        }
        e.end();
        e.key(b"entries").begin_list();
        for x in &self.entries {
            e.begin_dict();
            if x.kind == Kind::File {
                e.key(b"c").begin_list();
                for &c in &x.chunks {
                    e.int(c as i64);
                }
                e.end();
            }
            e.key(b"cn").int(x.ctime_ns as i64);
            e.key(b"ct").int(x.ctime);
            e.key(b"i").int(x.ino as i64);
            if x.kind == Kind::Symlink {
                e.key(b"l").bytes(&x.target);
            }
            e.key(b"m").int(x.mode as i64);
            e.key(b"mn").int(x.mtime_ns as i64);
            e.key(b"mt").int(x.mtime);
            e.key(b"p").bytes(&x.path);
            if x.kind == Kind::File {
                e.key(b"s").int(x.size as i64);
            }
            e.key(b"t").bytes(match x.kind {
                Kind::File => b"f",
                Kind::Dir => b"d",
                Kind::Symlink => b"l",
            });
            e.end();
        }
        e.end();
        e.key(b"format").int(self.format as i64);
        e.key(b"machine")
            .begin_dict()
            .key(b"key")
            .str(&self.machine_key)
            .key(b"name")
            .str(&self.machine_name)
            .end();
        e.key(b"packs").begin_list();
        for p in &self.packs {
            e.begin_list()
                .int(p.snapshot as i64)
                .int(p.offset as i64)
                .int(p.len as i64)
                .end();
        }
        e.end();
        e.key(b"parents").begin_list();
        for p in &self.parents {
            e.bytes(&p.0);
        }
        e.end();
        e.key(b"snapshots").begin_list();
        for p in &self.snapshots {
            e.bytes(&p.0);
        }
        e.end();
        e.key(b"source paths").begin_list();
        for p in &self.source_paths {
            e.bytes(p);
        }
        e.end();
        e.key(b"time").int(self.time);
        e.key(b"time ns").int(self.time_ns as i64);
        e.end();
        // Keys above are written in sorted order by construction.
        e.finish().unwrap_or_default()
    }

    /// Decodes (but does not validate: call [`Manifest::validate`]).
    pub fn decode(b: &[u8]) -> Result<Manifest, FormatError> {
        let v = decode_with(
            b,
            Limits {
                max_depth: 8,
                max_items: 400_000_000,
            },
        )
        .map_err(|e| bad(format!("not bencode: {e}")))?;
        let d = v.as_dict().ok_or_else(|| bad("not a dictionary"))?;
        let format: u32 = narrow(uint(d, "format")?)?;
        if format != MANIFEST_FORMAT {
            return Err(bad(format!(
                "manifest format {format} is not one this swarmbak knows ({MANIFEST_FORMAT}); upgrade swarmbak"
            )));
        }
        let ck = bytes(d, "chunk key")?;
        let chunk_key: [u8; 32] = ck
            .try_into()
            .map_err(|_| bad("`chunk key` is not 32 bytes"))?;
        let machine = d
            .get(b"machine")
            .and_then(|m| m.as_dict())
            .ok_or_else(|| bad("`machine` is missing"))?;
        let mut chunks = Vec::new();
        for c in list(d, "chunks")? {
            let l = c.as_list().ok_or_else(|| bad("a chunk is not a list"))?;
            let f = |i: usize| -> Result<u64, FormatError> {
                l.get(i)
                    .and_then(|v| v.as_int())
                    .and_then(|v| u64::try_from(v).ok())
                    .ok_or_else(|| bad("a chunk has a missing or negative field"))
            };
            let id: ChunkId = l
                .get(0)
                .and_then(|v| v.as_bytes())
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| bad("a chunk id is not 32 bytes"))?;
            chunks.push(ChunkRef {
                id,
                pack: narrow(f(1)?)?,
                offset: f(2)?,
                stored_len: narrow(f(3)?)?,
                raw_len: narrow(f(4)?)?,
                codec: u8::try_from(f(5)?).map_err(|_| bad("bad codec"))?,
            });
        }
        let mut packs = Vec::new();
        for p in list(d, "packs")? {
            let l = p.as_list().ok_or_else(|| bad("a pack is not a list"))?;
            let f = |i: usize| -> Result<u64, FormatError> {
                l.get(i)
                    .and_then(|v| v.as_int())
                    .and_then(|v| u64::try_from(v).ok())
                    .ok_or_else(|| bad("a pack has a missing or negative field"))
            };
            packs.push(PackRef {
                snapshot: narrow(f(0)?)?,
                offset: f(1)?,
                len: f(2)?,
            });
        }
        let mut entries = Vec::new();
        for x in list(d, "entries")? {
            let x = x
                .as_dict()
                .ok_or_else(|| bad("an entry is not a dictionary"))?;
            let kind = match bytes(x, "t")? {
                b"f" => Kind::File,
                b"d" => Kind::Dir,
                b"l" => Kind::Symlink,
                other => {
                    return Err(bad(format!(
                        "unknown entry type {:?}",
                        String::from_utf8_lossy(other)
                    )))
                }
            };
            let mut ch = Vec::new();
            if kind == Kind::File {
                for c in list(x, "c")? {
                    let c = c
                        .as_int()
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or_else(|| bad("a chunk index is not a small non-negative integer"))?;
                    ch.push(c);
                }
            }
            entries.push(Entry {
                path: bytes(x, "p")?.to_vec(),
                kind,
                mode: narrow(uint(x, "m")?)?,
                mtime: int(x, "mt")?,
                mtime_ns: narrow(uint(x, "mn")?)?,
                size: if kind == Kind::File { uint(x, "s")? } else { 0 },
                chunks: ch,
                target: if kind == Kind::Symlink {
                    bytes(x, "l")?.to_vec()
                } else {
                    Vec::new()
                },
                ino: uint(x, "i")?,
                ctime: int(x, "ct")?,
                ctime_ns: narrow(uint(x, "cn")?)?,
            });
        }
        let hashes = |key: &str| -> Result<Vec<InfoHash>, FormatError> {
            list(d, key)?
                .iter()
                .map(|v| {
                    v.as_bytes()
                        .and_then(|b| <[u8; 20]>::try_from(b).ok())
                        .map(InfoHash)
                        .ok_or_else(|| bad(format!("an item of `{key}` is not a 20-byte infohash")))
                })
                .collect()
        };
        Ok(Manifest {
            format,
            time: int(d, "time")?,
            time_ns: narrow(uint(d, "time ns")?)?,
            machine_name: String::from_utf8_lossy(bytes(machine, "name")?).into_owned(),
            machine_key: String::from_utf8_lossy(bytes(machine, "key")?).into_owned(),
            source_paths: list(d, "source paths")?
                .iter()
                .map(|v| {
                    v.as_bytes()
                        .map(|b| b.to_vec())
                        .ok_or_else(|| bad("a source path is not a string"))
                })
                .collect::<Result<_, _>>()?,
            parents: hashes("parents")?,
            snapshots: hashes("snapshots")?,
            chunk_key,
            packs,
            chunks,
            entries,
        })
    }
}

fn narrow<T: TryFrom<u64>>(v: u64) -> Result<T, FormatError> {
    T::try_from(v).map_err(|_| bad(format!("{v} is out of range")))
}
fn int(d: &Dict<'_>, k: &str) -> Result<i64, FormatError> {
    d.get(k.as_bytes())
        .and_then(|v| v.as_int())
        .ok_or_else(|| bad(format!("`{k}` is missing or not an integer")))
}
fn uint(d: &Dict<'_>, k: &str) -> Result<u64, FormatError> {
    u64::try_from(int(d, k)?).map_err(|_| bad(format!("`{k}` is negative")))
}
fn bytes<'a>(d: &Dict<'a>, k: &str) -> Result<&'a [u8], FormatError> {
    d.get(k.as_bytes())
        .and_then(|v| v.as_bytes())
        .ok_or_else(|| bad(format!("`{k}` is missing or not a string")))
}
fn list<'a, 'b>(d: &'b Dict<'a>, k: &str) -> Result<&'b [Value<'a>], FormatError> {
    d.get(k.as_bytes())
        .and_then(|v| v.as_list())
        .map(|l| l.items())
        .ok_or_else(|| bad(format!("`{k}` is missing or not a list")))
}

/// Magic + zstd of the encoded manifest: what gets encrypted.
pub fn seal(encoded: &[u8]) -> Result<Vec<u8>, FormatError> {
    let mut out = MANIFEST_MAGIC.to_vec();
    let z = zstd::bulk::compress(encoded, 3).map_err(|e| bad(format!("cannot compress: {e}")))?;
    out.extend_from_slice(&z);
    Ok(out)
}

/// Checks the magic and decompresses, refusing more than [`MAX_MANIFEST`] bytes.
pub fn unseal(sealed: &[u8]) -> Result<Vec<u8>, FormatError> {
    let body = sealed
        .strip_prefix(MANIFEST_MAGIC)
        .ok_or_else(|| bad("no manifest header (not a swarmbak v1 manifest)"))?;
    let dec = zstd::stream::read::Decoder::new(body)
        .map_err(|e| bad(format!("cannot decompress: {e}")))?;
    let mut out = Vec::new();
    dec.take(MAX_MANIFEST + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(format!("cannot decompress: {e}")))?;
    if out.len() as u64 > MAX_MANIFEST {
        return Err(bad("manifest larger than 1 GiB"));
    }
    Ok(out)
}
