//! The restore pipeline: verify shards (SHA-1, and the Merkle root for format 2), rebuild stripes from any k shards,
//! decrypt, decompress, verify chunks (keyed BLAKE3) and rebuild the tree, never writing
//! outside the target directory: every entry is reached through directory handles that
//! follow no symlink (`dirfd.rs`).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use rustix::fs::FileType;
use sha1::{Digest, Sha1};

use crate::backup::{Progress, CODEC_NONE, CODEC_ZSTD, PACK_MAGIC};
use crate::chunker::MAX_SIZE;
use crate::crypto::{self, Identities};
use crate::dirfd::{self, Access, Dirs, Fail, Meta, Target};
use crate::erasure::{self, Layout};
use crate::manifest::{self, Entry, Kind, Manifest};
use crate::store::Store;
use crate::{FormatError, InfoHash, FORMAT_VERSION};

/// Where shards come from: the local store, or (later) peers.
pub trait ShardSource: Sync {
    /// The bytes this source has for a piece, or `None`. They are verified by the caller.
    fn shard(&self, ih: &InfoHash, piece: usize) -> Result<Option<Vec<u8>>, FormatError>;
    /// Called with a rebuilt shard the source lacked or held damaged.
    fn repaired(&self, _ih: &InfoHash, _piece: usize, _data: &[u8]) -> Result<(), FormatError> {
        Ok(())
    }
    /// The snapshot's metainfo (canonical .torrent bytes).
    fn torrent(&self, ih: &InfoHash) -> Result<Vec<u8>, FormatError>;
}

/// The machine's own store as a shard source; rebuilt shards are written back (repair).
pub struct LocalSource<'a> {
    pub store: &'a Store,
    pub repair: bool,
}

impl ShardSource for LocalSource<'_> {
    fn shard(&self, ih: &InfoHash, piece: usize) -> Result<Option<Vec<u8>>, FormatError> {
        self.store.read_shard(ih, piece)
    }
    fn repaired(&self, ih: &InfoHash, piece: usize, data: &[u8]) -> Result<(), FormatError> {
        if self.repair {
            self.store.write_shard(ih, piece, data)?;
        }
        Ok(())
    }
    fn torrent(&self, ih: &InfoHash) -> Result<Vec<u8>, FormatError> {
        self.store.torrent_bytes(ih)
    }
}

pub struct RestoreOptions {
    pub target: PathBuf,
    /// Subpaths (relative to the snapshot's root) to restore; empty = everything.
    pub paths: Vec<String>,
    pub identities: Identities,
}

#[derive(Clone, Debug, Default)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub resumed: bool,
    /// Shards that were missing or damaged and were rebuilt from the others.
    pub repaired: Vec<String>,
}

/// A snapshot's swarmbak parameters and piece hashes, read from its metainfo.
pub struct SnapshotMeta {
    pub infohash: InfoHash,
    pub layout: Layout,
    pub hashes: Vec<[u8; 20]>,
    /// The Merkle root of each piece (format 2, format-v2.md); `None` for format 1.
    pub roots: Option<Vec<[u8; 32]>>,
    pub manifest_offset: u64,
    pub manifest_length: u64,
}

/// What a shard's bytes are worth against a snapshot's metainfo ([`SnapshotMeta::check_shard`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardCheck {
    /// The right size, its SHA-1 and (format 2) its Merkle root match.
    Good,
    /// Wrong size, wrong SHA-1, or a piece the snapshot does not have: damaged or
    /// substituted bytes (repairable from the other shards).
    Bad,
    /// Its SHA-1 matches but its Merkle root does not: the torrent itself is wrong (the
    /// owner wrote bad roots). The snapshot is dropped: [`FormatError::Inconsistent`].
    Inconsistent,
}

impl SnapshotMeta {
    pub fn parse(expect: &InfoHash, torrent: &[u8]) -> Result<SnapshotMeta, FormatError> {
        let mi = swarmbak_metainfo::Metainfo::from_bytes(torrent)
            .map_err(|e| FormatError::Metainfo(format!("snapshot {expect}: {e}")))?;
        Self::from_metainfo(expect, &mi)
    }

    /// [`SnapshotMeta::parse`] of metainfo already parsed.
    pub fn from_metainfo(
        expect: &InfoHash,
        mi: &swarmbak_metainfo::Metainfo,
    ) -> Result<SnapshotMeta, FormatError> {
        if mi.info_hash() != expect.0 {
            return Err(FormatError::Damaged(format!(
                "the metainfo stored for {expect} has infohash {}: the store is damaged",
                hex::encode(mi.info_hash())
            )));
        }
        if !mi.is_private() {
            return Err(FormatError::Metainfo(format!(
                "{expect} is not marked private; swarmbak snapshots always are (BEP 27)"
            )));
        }
        let p = mi.swarmbak().cloned().ok_or_else(|| {
            FormatError::Metainfo(format!(
                "{expect} is a plain torrent, not a swarmbak snapshot"
            ))
        })?;
        if p.format == 0 || p.format > FORMAT_VERSION {
            return Err(FormatError::Metainfo(format!(
                "snapshot {expect} uses format {}, this swarmbak reads formats 1 to {FORMAT_VERSION}; upgrade swarmbak",
                p.format
            )));
        }
        let (k, m) = (p.k as usize, p.m as usize);
        let layout = Layout::with_shard_size(p.payload_length, k, m, mi.piece_length() as usize)?;
        if layout.stripes as u64 != p.stripes || mi.pieces().len() != layout.pieces() {
            return Err(FormatError::Metainfo(format!(
                "snapshot {expect}: piece length {} and {} stripes do not match format v1's layout for {} payload bytes",
                mi.piece_length(), p.stripes, p.payload_length
            )));
        }
        if p.manifest_offset.checked_add(p.manifest_length) != Some(p.payload_length) {
            return Err(FormatError::Metainfo(format!(
                "snapshot {expect}: the manifest does not end the payload"
            )));
        }
        Ok(SnapshotMeta {
            infohash: *expect,
            layout,
            hashes: mi.pieces().to_vec(),
            roots: p.roots,
            manifest_offset: p.manifest_offset,
            manifest_length: p.manifest_length,
        })
    }

    /// Checks a shard's bytes: exactly `shard_size` bytes, SHA-1 equal to the piece hash
    /// and, when the snapshot has roots (format 2), Merkle root equal to the piece's root
    /// (format-v1.md §13.1, format-v2.md §4). Never panics (a piece out of range is bad).
    pub fn check_shard(&self, piece: u32, bytes: &[u8]) -> ShardCheck {
        let p = piece as usize;
        let Some(hash) = self.hashes.get(p) else {
            return ShardCheck::Bad;
        };
        if bytes.len() != self.layout.shard_size || Sha1::digest(bytes)[..] != hash[..] {
            return ShardCheck::Bad;
        }
        match &self.roots {
            None => ShardCheck::Good,
            Some(roots) => match roots.get(p) {
                Some(r) if swarmbak_core::merkle::root(bytes) == *r => ShardCheck::Good,
                _ => ShardCheck::Inconsistent,
            },
        }
    }

    /// Rebuilds shard `piece` from k good shards of its stripe, read through `read` (a
    /// piece index; `None`: not here), the others only: Reed-Solomon over the ciphertext,
    /// no key. The result must pass [`SnapshotMeta::check_shard`] like any shard.
    /// `Ok(None)`: fewer than k good shards, or a rebuilt shard that does not match (the
    /// snapshot is inconsistent); nothing is to be written then.
    pub fn rebuild_shard(
        &self,
        piece: u32,
        mut read: impl FnMut(usize) -> Result<Option<Vec<u8>>, FormatError>,
    ) -> Result<Option<Vec<u8>>, FormatError> {
        let l = self.layout;
        let (stripe, index) = l.locate(piece as usize);
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; l.n()];
        let mut good = 0;
        for (i, slot) in shards.iter_mut().enumerate() {
            if good == l.k {
                break;
            }
            let q = l.piece(stripe, i);
            if i == index {
                continue;
            }
            if let Some(b) = read(q)? {
                if self.check_shard(q as u32, &b) == ShardCheck::Good {
                    *slot = Some(b);
                    good += 1;
                }
            }
        }
        if good < l.k || erasure::reconstruct(stripe, l.k, l.m, &mut shards).is_err() {
            return Ok(None);
        }
        Ok(shards[index]
            .take()
            .filter(|b| self.check_shard(piece, b) == ShardCheck::Good))
    }

    /// Whether a shard's bytes are good: [`SnapshotMeta::check_shard`] is [`ShardCheck::Good`].
    pub fn shard_ok(&self, piece: u32, bytes: &[u8]) -> bool {
        self.check_shard(piece, bytes) == ShardCheck::Good
    }

    /// [`SnapshotMeta::check_shard`] as the readers use it: `Ok(true)` good, `Ok(false)`
    /// bad (damaged, repairable), an error when the snapshot is inconsistent.
    fn accept(&self, piece: usize, bytes: &[u8]) -> Result<bool, FormatError> {
        match self.check_shard(piece as u32, bytes) {
            ShardCheck::Good => Ok(true),
            ShardCheck::Bad => Ok(false),
            ShardCheck::Inconsistent => Err(FormatError::Inconsistent {
                snapshot: self.infohash,
                piece: piece as u32,
            }),
        }
    }

    /// A shard rebuilt from k good ones must be good too (format-v1.md §14): when it is
    /// not, the parity or the hashes in the torrent are wrong, and nothing is written.
    fn check_rebuilt(&self, piece: usize, bytes: &[u8]) -> Result<(), FormatError> {
        if self.accept(piece, bytes)? {
            return Ok(());
        }
        Err(FormatError::Damaged(format!(
            "snapshot {} is inconsistent: shard {piece}, rebuilt from good shards of its stripe, does not match its piece hash; the snapshot was made wrongly; re-run the backup",
            self.infohash
        )))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads byte ranges of one snapshot's payload, rebuilding stripes as needed.
pub struct SnapshotReader<'a> {
    src: &'a dyn ShardSource,
    pub meta: SnapshotMeta,
    slots: Vec<Mutex<Option<Arc<Vec<u8>>>>>,
    uses: Vec<AtomicUsize>,
    repaired: Mutex<Vec<String>>,
    progress: &'a dyn Progress,
}

impl<'a> SnapshotReader<'a> {
    pub fn open(
        src: &'a dyn ShardSource,
        ih: &InfoHash,
        progress: &'a dyn Progress,
    ) -> Result<Self, FormatError> {
        let meta = SnapshotMeta::parse(ih, &src.torrent(ih)?)?;
        let n = meta.layout.stripes;
        Ok(SnapshotReader {
            src,
            meta,
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
            uses: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            repaired: Mutex::new(Vec::new()),
            progress,
        })
    }

    /// Announces a future `read` of this range, so its stripes stay cached until then.
    pub fn plan(&self, off: u64, len: u64) {
        for s in self.meta.layout.stripes_for(off, len) {
            if let Some(u) = self.uses.get(s) {
                u.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn check_range(&self, off: u64, len: u64) -> Result<(), FormatError> {
        match off.checked_add(len) {
            Some(end) if end <= self.meta.layout.payload_len => Ok(()),
            _ => Err(FormatError::Manifest(format!(
                "range {off}+{len} lies outside snapshot {}'s payload of {} bytes",
                self.meta.infohash, self.meta.layout.payload_len
            ))),
        }
    }

    /// Payload bytes `[off, off + len)`.
    pub fn read(&self, off: u64, len: u64) -> Result<Vec<u8>, FormatError> {
        self.check_range(off, len)?;
        let sd = self.meta.layout.stripe_data_len() as u64;
        let mut out = Vec::with_capacity(len as usize);
        for s in self.meta.layout.stripes_for(off, len) {
            let data = {
                let mut slot = lock(&self.slots[s]);
                match &*slot {
                    Some(d) => d.clone(),
                    None => {
                        let d = Arc::new(self.load_stripe(s)?);
                        *slot = Some(d.clone());
                        d
                    }
                }
            };
            let base = s as u64 * sd;
            let a = off.max(base) - base;
            let b = (off + len).min(base + sd) - base;
            out.extend_from_slice(&data[a as usize..b as usize]);
            let prev = self.uses[s].load(Ordering::Relaxed);
            if prev <= 1 {
                self.uses[s].store(0, Ordering::Relaxed);
                *lock(&self.slots[s]) = None;
            } else {
                self.uses[s].fetch_sub(1, Ordering::Relaxed);
            }
        }
        Ok(out)
    }

    /// One stripe's data bytes, from any k verified shards.
    fn load_stripe(&self, stripe: usize) -> Result<Vec<u8>, FormatError> {
        let l = self.meta.layout;
        let (k, n) = (l.k, l.n());
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; n];
        let mut bad: Vec<(usize, &'static str)> = Vec::new();
        let mut have = 0;
        // Data shards first (no decoding needed when all are good), then parity.
        #[allow(clippy::needless_range_loop)]
        for i in 0..n {
            if have == k {
                break;
            }
            let piece = l.piece(stripe, i);
            match self.src.shard(&self.meta.infohash, piece)? {
                Some(b) if self.meta.accept(piece, &b)? => {
                    shards[i] = Some(b);
                    have += 1;
                }
                Some(_) => bad.push((i, "failed its SHA-1 check")),
                None => bad.push((i, "is missing")),
            }
        }
        if have < k {
            return Err(FormatError::Damaged(format!(
                "snapshot {}: only {have} of the {k} shards needed for stripe {stripe} are available ({} missing or damaged); the snapshot cannot be restored from here",
                self.meta.infohash,
                bad.len()
            )));
        }
        if !bad.is_empty() {
            erasure::reconstruct(stripe, k, l.m, &mut shards)?;
            for (i, why) in &bad {
                let piece = l.piece(stripe, *i);
                let msg = format!(
                    "snapshot {} piece {piece} (stripe {stripe}, shard {i}) {why}; rebuilt from {k} others",
                    self.meta.infohash
                );
                if let Some(data) = &shards[*i] {
                    self.meta.check_rebuilt(piece, data)?;
                    self.src.repaired(&self.meta.infohash, piece, data)?;
                }
                // Damage is worth a warning; a shard this source never held is not
                // (a machine that fetched from the swarm holds only k of each stripe).
                if *why != "is missing" {
                    self.progress.warn(&msg);
                }
                lock(&self.repaired).push(msg);
            }
        }
        let mut out = Vec::with_capacity(l.stripe_data_len());
        for s in shards.into_iter().take(k) {
            out.extend_from_slice(&s.unwrap_or_default());
        }
        Ok(out)
    }

    /// Verifies every shard of every stripe (SHA-1, and Merkle root for format 2); with `repair`, rebuilds each missing
    /// or damaged shard from any k good ones of its stripe and hands it to the source.
    /// Needs no decryption key. Returns the good shards per stripe before repair.
    pub fn scrub(&self, repair: bool) -> Result<Scrub, FormatError> {
        let l = self.meta.layout;
        let per_stripe: Vec<Result<(usize, Vec<String>), FormatError>> = (0..l.stripes)
            .into_par_iter()
            .map(|stripe| {
                let mut shards: Vec<Option<Vec<u8>>> = vec![None; l.n()];
                let mut bad = Vec::new();
                for (i, slot) in shards.iter_mut().enumerate() {
                    let piece = l.piece(stripe, i);
                    match self.src.shard(&self.meta.infohash, piece)? {
                        Some(b) if self.meta.accept(piece, &b)? => *slot = Some(b),
                        Some(_) => bad.push((i, "failed its SHA-1 check")),
                        None => bad.push((i, "is missing")),
                    }
                }
                let good = l.n() - bad.len();
                let mut msgs = Vec::new();
                if repair && !bad.is_empty() && good >= l.k {
                    erasure::reconstruct(stripe, l.k, l.m, &mut shards)?;
                    for (i, why) in &bad {
                        let piece = l.piece(stripe, *i);
                        if let Some(d) = &shards[*i] {
                            self.meta.check_rebuilt(piece, d)?;
                            self.src.repaired(&self.meta.infohash, piece, d)?;
                        }
                        msgs.push(format!(
                            "snapshot {} piece {piece} (stripe {stripe}, shard {i}) {why}; rebuilt from {} others",
                            self.meta.infohash, l.k
                        ));
                    }
                } else {
                    for (i, why) in &bad {
                        msgs.push(format!(
                            "snapshot {} piece {} (stripe {stripe}, shard {i}) {why}",
                            self.meta.infohash,
                            l.piece(stripe, *i)
                        ));
                    }
                }
                Ok((good, msgs))
            })
            .collect();
        let mut out = Scrub::default();
        for r in per_stripe {
            let (good, msgs) = r?;
            out.good_per_stripe.push(good);
            out.problems.extend(msgs);
        }
        out.recoverable = out.good_per_stripe.iter().all(|&g| g >= l.k);
        Ok(out)
    }

    /// Decrypts and decodes this snapshot's manifest.
    pub fn manifest(&self, ids: &Identities) -> Result<Manifest, FormatError> {
        let ct = self.read(self.meta.manifest_offset, self.meta.manifest_length)?;
        let sealed = crypto::decrypt(ids, &ct).map_err(|e| match e {
            crypto::CryptoError::NoMatchingKey => FormatError::Crypto(crypto::CryptoError::Decrypt(format!(
                "snapshot {}'s manifest is not encrypted to this identity; use --identity with the owner's key or the organisation's recovery key",
                self.meta.infohash
            ))),
            e => FormatError::Crypto(e),
        })?;
        let plain = manifest::unseal(&sealed)?;
        let m = Manifest::decode(&plain)?;
        m.validate()?;
        Ok(m)
    }
}

/// What [`SnapshotReader::scrub`] found.
#[derive(Clone, Debug, Default)]
pub struct Scrub {
    pub recoverable: bool,
    /// Shards that passed their SHA-1 check, per stripe (before any repair).
    pub good_per_stripe: Vec<usize>,
    /// One line per missing or damaged shard (and whether it was rebuilt).
    pub problems: Vec<String>,
}

/// A pack, and for each chunk needed from it: (chunk index, entry index, file offset).
type PackWork = (u32, Vec<(usize, usize, u64)>);

const MARKER: &str = ".swarmbak-restore";

fn parent_of(p: &[u8]) -> Option<&[u8]> {
    p.iter().rposition(|&b| b == b'/').map(|i| &p[..i])
}

/// The restore's path handling, for `fuzz/` (not an API).
#[doc(hidden)]
pub mod fuzzing {
    use std::path::{Path, PathBuf};

    use crate::{FormatError, Manifest};

    /// Where an entry's (validated) path lands under `target`: the path the restore
    /// names it by (it reaches it component by component, `dirfd::Dirs`).
    pub fn target_path(target: &Path, rel: &[u8]) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let (dir, name) = crate::dirfd::split(rel);
        let mut p = target.to_path_buf();
        for c in dir.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            p.push(std::ffi::OsStr::from_bytes(c));
        }
        p.join(std::ffi::OsStr::from_bytes(name))
    }

    /// Which entries a `--path` selection keeps.
    pub fn select(m: &Manifest, paths: &[String]) -> Result<Vec<bool>, FormatError> {
        super::select(m, paths)
    }
}

/// Which entries a `--path` selection keeps: the entries at or under each subpath, and
/// the directories above them.
fn select(m: &Manifest, paths: &[String]) -> Result<Vec<bool>, FormatError> {
    if paths.is_empty() {
        return Ok(vec![true; m.entries.len()]);
    }
    let mut want: Vec<Vec<u8>> = Vec::new();
    for p in paths {
        let t = p.trim_matches('/');
        manifest::check_path(t.as_bytes())
            .map_err(|e| FormatError::Invalid(format!("--path {p:?}: {e}")))?;
        want.push(t.as_bytes().to_vec());
    }
    let mut keep = vec![false; m.entries.len()];
    let mut ancestors: HashSet<Vec<u8>> = HashSet::new();
    let mut matched = vec![false; want.len()];
    for (i, e) in m.entries.iter().enumerate() {
        for (j, w) in want.iter().enumerate() {
            let under = e.path == *w
                || (e.path.len() > w.len() && e.path.starts_with(w) && e.path[w.len()] == b'/');
            if under {
                keep[i] = true;
                matched[j] = true;
                let mut p = parent_of(&e.path);
                while let Some(a) = p {
                    ancestors.insert(a.to_vec());
                    p = parent_of(a);
                }
            }
        }
    }
    if let Some(j) = matched.iter().position(|m| !m) {
        let tops: Vec<String> = m
            .entries
            .iter()
            .filter(|e| !e.path.contains(&b'/'))
            .map(|e| String::from_utf8_lossy(&e.path).into_owned())
            .collect();
        return Err(FormatError::NotFound(format!(
            "--path {:?} is not in this snapshot; paths start with one of: {}",
            paths[j],
            tops.join(", ")
        )));
    }
    for (i, e) in m.entries.iter().enumerate() {
        if ancestors.contains(&e.path) {
            keep[i] = true;
        }
    }
    Ok(keep)
}

struct Marker {
    file: Mutex<fs::File>,
    done: HashSet<(u32, u64)>,
}

impl Marker {
    /// Records a finished pack. The record is a hint, not a promise: a resumed restore
    /// re-reads every chunk a recorded pack wrote and checks it against its BLAKE3 name
    /// before skipping the pack, so a power cut that lost data (or a file changed since)
    /// only means that pack is written again. No flush of the file system is needed.
    fn done_with(&self, target: &Path, snapshot: u32, offset: u64) -> Result<(), FormatError> {
        let mut g = lock(&self.file);
        writeln!(g, "{snapshot} {offset}").map_err(|e| FormatError::io(target, e))
    }
}

/// Prepares the target directory: new, empty, or an unfinished restore of the same
/// snapshot (then its record of finished packs is returned). The target is opened here,
/// once (§11.8): everything below it is reached from this handle.
fn prepare_target(
    target: &Path,
    ih: &InfoHash,
    sel_key: &str,
) -> Result<(Target, Marker, bool), FormatError> {
    let header = format!("swarmbak restore {ih} {sel_key}");
    let mut resumed = false;
    let mut done = HashSet::new();
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(target).map_err(|e| FormatError::io(target, e))?;
        }
        Err(e) => return Err(FormatError::io(target, e)),
        Ok(md) if !md.is_dir() => {
            return Err(FormatError::Invalid(format!(
                "{} exists and is not a directory; give a new or empty directory",
                target.display()
            )))
        }
        Ok(_) => {}
    }
    let dir = Target::open(target)?;
    let marker = dir.display(MARKER.as_bytes());
    if !dir.is_empty()? {
        let mut text = String::new();
        if let Ok(mut f) = dirfd::open_file(dir.fd(), MARKER.as_bytes(), Access::Read) {
            // Unreadable or not text: no header, refused below.
            let _ = f.read_to_string(&mut text);
        }
        let mut lines = text.lines();
        if lines.next() != Some(header.as_str()) {
            return Err(FormatError::Invalid(format!(
                "{} is not empty and holds no unfinished restore of this snapshot; give a new or empty directory",
                target.display()
            )));
        }
        for l in lines {
            let mut it = l.split_whitespace();
            if let (Some(a), Some(b)) = (it.next(), it.next()) {
                if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                    done.insert((a, b));
                }
            }
        }
        resumed = true;
    }
    let mut f = dirfd::open_file(dir.fd(), MARKER.as_bytes(), Access::Append)
        .map_err(|f| dir.error(MARKER.as_bytes(), f))?;
    if !resumed {
        writeln!(f, "{header}").map_err(|e| FormatError::io(&marker, e))?;
    }
    Ok((
        dir,
        Marker {
            file: Mutex::new(f),
            done,
        },
        resumed,
    ))
}

fn decode_chunk(m: &Manifest, plain: &[u8], ci: usize) -> Result<Vec<u8>, FormatError> {
    let c = &m.chunks[ci];
    let start = c.offset as usize;
    let end = start
        .checked_add(c.stored_len as usize)
        .filter(|&e| e <= plain.len() && start >= PACK_MAGIC.len())
        .ok_or_else(|| FormatError::Manifest(format!("chunk {ci} lies outside its pack")))?;
    let stored = &plain[start..end];
    let raw = match c.codec {
        CODEC_NONE => stored.to_vec(),
        CODEC_ZSTD => {
            let cap = (c.raw_len as usize).min(MAX_SIZE);
            let v = zstd::bulk::decompress(stored, cap).map_err(|e| {
                FormatError::Damaged(format!("chunk {ci} does not decompress: {e}"))
            })?;
            v
        }
        other => {
            return Err(FormatError::Manifest(format!(
                "chunk {ci} has unknown codec {other}"
            )))
        }
    };
    if raw.len() != c.raw_len as usize || *blake3::keyed_hash(&m.chunk_key, &raw).as_bytes() != c.id
    {
        return Err(FormatError::Damaged(format!(
            "chunk {ci} ({}) failed its BLAKE3 check",
            hex::encode(&c.id[..8])
        )));
    }
    Ok(raw)
}

/// Whether every chunk of `uses` is already in place in the target (for resume).
fn written(m: &Manifest, dirs: &mut Dirs, uses: &[(usize, usize, u64)]) -> bool {
    uses.iter().all(|(ci, entry, off)| {
        let c = &m.chunks[*ci];
        let (parent, name) = dirfd::split(&m.entries[*entry].path);
        let Ok(dir) = dirs.get(parent) else {
            return false;
        };
        let Ok(f) = dirfd::open_file(dir, name, Access::Read) else {
            return false;
        };
        let mut buf = vec![0u8; c.raw_len as usize];
        f.read_exact_at(&mut buf, *off).is_ok()
            && *blake3::keyed_hash(&m.chunk_key, &buf).as_bytes() == c.id
    })
}

/// Gives a fully written file its length, mode and mtime, on its descriptor.
fn finish_file(f: &fs::File, e: &Entry, dir: &Target) -> Result<(), FormatError> {
    f.set_len(e.size)
        .and_then(|()| dirfd::set_file_meta(f, e.mode, &dirfd::times(e.mtime, e.mtime_ns)))
        .map_err(|err| FormatError::io(&dir.display(&e.path), err))
}

/// Restores snapshot `ih` from `src` into `opts.target`.
pub fn restore(
    src: &dyn ShardSource,
    ih: &InfoHash,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport, FormatError> {
    let main = SnapshotReader::open(src, ih, progress)?;
    let m = main.manifest(&opts.identities)?;
    let keep = select(&m, &opts.paths)?;
    if m.entries
        .iter()
        .zip(&keep)
        .any(|(e, k)| *k && e.path == MARKER.as_bytes())
    {
        return Err(FormatError::Unsafe(format!(
            "the snapshot has a top-level entry named {MARKER}, which restore uses for its own bookkeeping; restore the other paths with --path"
        )));
    }
    // Readers for the earlier snapshots whose packs the selected files need (only those:
    // a partial restore does not need every earlier snapshot).
    let mut needed = vec![false; m.snapshots.len()];
    for (i, e) in m.entries.iter().enumerate() {
        if keep[i] {
            for &ci in &e.chunks {
                let sref = m.packs[m.chunks[ci as usize].pack as usize].snapshot as usize;
                if sref > 0 {
                    needed[sref - 1] = true;
                }
            }
        }
    }
    let mut readers: Vec<Option<SnapshotReader>> = Vec::with_capacity(m.snapshots.len());
    for (p, need) in m.snapshots.iter().zip(&needed) {
        if !need {
            readers.push(None);
            continue;
        }
        readers.push(Some(SnapshotReader::open(src, p, progress).map_err(
            |e| match e {
                FormatError::NotFound(_) => FormatError::NotFound(format!(
                "snapshot {ih} reuses data of earlier snapshot {p}, which is not available: {e}"
            )),
                e => e,
            },
        )?));
    }
    let reader_for = |sref: u32| -> Result<&SnapshotReader, FormatError> {
        if sref == 0 {
            Ok(&main)
        } else {
            readers
                .get(sref as usize - 1)
                .and_then(|r| r.as_ref())
                .ok_or_else(|| {
                    FormatError::Manifest(format!("snapshot reference {sref} was not opened"))
                })
        }
    };
    let mut sel: Vec<String> = opts
        .paths
        .iter()
        .map(|p| p.trim_matches('/').to_string())
        .collect();
    sel.sort();
    let (dir, marker, resumed) = prepare_target(&opts.target, ih, &hex::encode(sel.join("\0")))?;
    let dir = &dir;

    // Every entry below the target is reached through directory handles opened without
    // following symlinks (§11.8, dirfd.rs); nothing below the target is touched by path.
    // Directories first (owner-writable until their real modes are set at the end). Files
    // are created by the first write of their data and finished (length, mode, mtime) by
    // the last, so a file costs one open per chunk and no more.
    let mut report = RestoreReport {
        resumed,
        ..Default::default()
    };
    let mut dirs = dir.dirs();
    for (i, e) in m.entries.iter().enumerate() {
        if !keep[i] {
            continue;
        }
        match e.kind {
            Kind::Dir => {
                let (parent, name) = dirfd::split(&e.path);
                let at = dirs.get(parent)?;
                match dirfd::mkdir(at, name) {
                    Ok(true) => Ok(()),
                    // A new restore makes every directory itself.
                    Ok(false) if !resumed => Err(Fail::Appeared),
                    Ok(false) => {
                        Meta::open(at, name, FileType::Directory).and_then(|d| Ok(d.chmod(0o700)?))
                    }
                    Err(f) => Err(f),
                }
                .map_err(|f| dir.error(&e.path, f))?;
                report.dirs += 1;
            }
            Kind::File => {
                report.files += 1;
                report.bytes += e.size;
            }
            Kind::Symlink => report.symlinks += 1,
        }
    }

    // Where each chunk goes: (entry, offset in file), grouped by pack.
    let mut by_pack: HashMap<u32, Vec<(usize, usize, u64)>> = HashMap::new();
    for (i, e) in m.entries.iter().enumerate() {
        if !keep[i] || e.kind != Kind::File {
            continue;
        }
        let mut off = 0u64;
        for &ci in &e.chunks {
            let c = &m.chunks[ci as usize];
            by_pack
                .entry(c.pack)
                .or_default()
                .push((ci as usize, i, off));
            off += c.raw_len as u64;
        }
    }
    // Packs an interrupted run recorded as finished are skipped only if every chunk they
    // wrote reads back with the right BLAKE3 name.
    let mut work: Vec<PackWork> = by_pack
        .into_par_iter()
        .map_init(
            || dir.dirs(),
            |dirs, (p, uses)| {
                let pr = &m.packs[p as usize];
                let done =
                    marker.done.contains(&(pr.snapshot, pr.offset)) && written(&m, dirs, &uses);
                (!done).then_some((p, uses))
            },
        )
        .flatten()
        .collect();
    work.sort_by_key(|(p, _)| {
        let pr = &m.packs[*p as usize];
        (pr.snapshot, pr.offset)
    });
    let total: u64 = work
        .iter()
        .flat_map(|(_, v)| v.iter())
        .map(|(ci, _, _)| m.chunks[*ci].raw_len as u64)
        .sum();
    progress.scanned(report.files, total, 0);
    // Chunk writes each file still needs in this run; the last one finishes the file.
    let remaining: Vec<AtomicUsize> = (0..m.entries.len()).map(|_| AtomicUsize::new(0)).collect();
    for (_, uses) in &work {
        for (_, entry, _) in uses {
            remaining[*entry].fetch_add(1, Ordering::Relaxed);
        }
    }
    let untouched: Vec<bool> = remaining
        .iter()
        .map(|r| r.load(Ordering::Relaxed) == 0)
        .collect();
    for (p, _) in &work {
        let pr = &m.packs[*p as usize];
        reader_for(pr.snapshot)?.plan(pr.offset, pr.len);
    }

    work.par_iter().try_for_each_init(
        || dir.dirs(),
        |dirs, (p, uses)| -> Result<(), FormatError> {
            let pr = &m.packs[*p as usize];
            let r = reader_for(pr.snapshot)?;
            let ct = r.read(pr.offset, pr.len)?;
            let plain = crypto::decrypt(&opts.identities, &ct)?;
            if !plain.starts_with(PACK_MAGIC) {
                return Err(FormatError::Damaged(format!(
                    "pack at {} of {} has no pack header",
                    pr.offset, r.meta.infohash
                )));
            }
            let mut decoded: HashMap<usize, Vec<u8>> = HashMap::new();
            for (ci, entry, off) in uses {
                if !decoded.contains_key(ci) {
                    decoded.insert(*ci, decode_chunk(&m, &plain, *ci)?);
                }
                let data = &decoded[ci];
                let e = &m.entries[*entry];
                let (parent, name) = dirfd::split(&e.path);
                let f = dirfd::open_file(dirs.get(parent)?, name, Access::Write)
                    .map_err(|f| dir.error(&e.path, f))?;
                f.write_all_at(data, *off)
                    .map_err(|err| FormatError::io(&dir.display(&e.path), err))?;
                if remaining[*entry].fetch_sub(1, Ordering::AcqRel) == 1 {
                    finish_file(&f, e, dir)?;
                }
                progress.advance(data.len() as u64);
            }
            marker.done_with(&opts.target, pr.snapshot, pr.offset)
        },
    )?;

    // Symlinks, then metadata: files and links, then directories deepest first.
    progress.stage("setting metadata");
    let mut dirs = dir.dirs();
    for (i, e) in m.entries.iter().enumerate() {
        let untouched_file = e.kind == Kind::File && untouched[i];
        if !keep[i] || !(e.kind == Kind::Symlink || untouched_file) {
            continue;
        }
        let (parent, name) = dirfd::split(&e.path);
        let at = dirs.get(parent)?;
        let t = dirfd::times(e.mtime, e.mtime_ns);
        if e.kind == Kind::Symlink {
            dirfd::symlink(at, name, &e.target, &t).map_err(|f| dir.error(&e.path, f))?;
            continue;
        }
        // Empty files, and files whose data an earlier (resumed) run wrote.
        match dirfd::stat(at, name) {
            Ok(Some((FileType::RegularFile, size))) if size == e.size => {
                Meta::open(at, name, FileType::RegularFile)
                    .and_then(|f| Ok(f.set(e.mode, &t)?))
                    .map_err(|f| dir.error(&e.path, f))?;
            }
            _ => {
                let f =
                    dirfd::open_file(at, name, Access::Write).map_err(|f| dir.error(&e.path, f))?;
                finish_file(&f, e, dir)?;
            }
        }
    }
    for (i, e) in m.entries.iter().enumerate().rev() {
        if !keep[i] || e.kind != Kind::Dir {
            continue;
        }
        let (parent, name) = dirfd::split(&e.path);
        let at = dirs.get(parent)?;
        let t = dirfd::times(e.mtime, e.mtime_ns);
        Meta::open(at, name, FileType::Directory)
            .and_then(|d| Ok(d.set(e.mode, &t)?))
            .map_err(|f| dir.error(&e.path, f))?;
    }
    drop(dirs);
    drop(marker);
    dirfd::remove_file(dir.fd(), MARKER.as_bytes())
        .map_err(|e| FormatError::io(&dir.display(MARKER.as_bytes()), e))?;
    report.repaired = lock(&main.repaired).clone();
    for r in readers.iter().flatten() {
        report.repaired.extend(lock(&r.repaired).iter().cloned());
    }
    Ok(report)
}

/// The entries a manifest would restore, for listing (`inspect`, tests).
pub fn entries(m: &Manifest) -> &[Entry] {
    &m.entries
}
