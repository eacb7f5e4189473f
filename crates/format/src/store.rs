//! The machine's local store.
//!
//! ```text
//! store/snapshots/<infohash>/torrent        the snapshot's metainfo (canonical bencode)
//! store/snapshots/<infohash>/shards/<piece> one file per shard (= piece), exactly piece-length bytes
//! store/snapshots/<infohash>/local.json     only for this machine's own snapshots: time, paths, stats
//! store/snapshots/<infohash>/manifest       only for own snapshots: the sealed (compressed, not
//!                                           encrypted) manifest (mode 0600),
//!                                           kept for fast rescans and dedup; never leaves the machine
//! store/snapshots/<infohash>/unpublished    only for own snapshots the tracker has not acknowledged
//!                                           yet: written at commit, removed once published
//! store/snapshots/<infohash>/retired        a retirement (trust.md §12) of the snapshot: for an own
//!                                           snapshot, the one this machine signed (`forget`); for a
//!                                           held one, the owner's, with when it was first seen
//!                                           (swarm.md §16)
//! store/snapshots/<infohash>/retired.sent   an own snapshot's retirement as the tracker took it
//! store/snapshots/<infohash>/dropped        the stripes whose shards were let go (swarm.md §16.3):
//!                                           written before they are deleted
//! store/tmp/                                snapshots being built; removed at the next start
//! store/repair/<infohash>/<piece>           helper shards a repair fetched (swarm.md §18): never
//!                                           had, stated or served; removed when the repair ends
//!                                           and at the agent's next start
//! ```
//!
//! A snapshot becomes visible in one step: it is built under `tmp/`, synced, and renamed
//! into `snapshots/`. A backup killed at any moment therefore leaves either nothing or a
//! complete snapshot; leftovers in `tmp/` are removed by the next writer.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{FormatError, InfoHash};

/// What this machine remembers of one of its own snapshots.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub infohash: String,
    /// Unix time (seconds) the snapshot was taken.
    pub time: i64,
    /// Its nanoseconds (snapshots taken within one second are told apart by them; 0 in
    /// snapshots made before this field).
    #[serde(default)]
    pub time_ns: u32,
    pub machine: String,
    pub paths: Vec<String>,
    pub parents: Vec<String>,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of file data the snapshot describes.
    pub bytes: u64,
    /// Bytes of file data that were new (not found in earlier snapshots).
    pub new_bytes: u64,
    /// Encrypted payload bytes this snapshot's torrent carries (before erasure coding).
    pub payload_bytes: u64,
    /// Bytes of shards this snapshot's torrent carries (payload + padding + parity).
    pub shard_bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    #[serde(default)]
    pub skipped: Vec<String>,
    /// Everyone the snapshot's packs are encrypted to. A later snapshot reuses these packs
    /// only when its own recipients are exactly the same.
    #[serde(default)]
    pub recipients: Vec<String>,
}

/// The marker of an own snapshot the tracker has not acknowledged yet.
pub(crate) const UNPUBLISHED: &str = "unpublished";
const RETIRED: &str = "retired";
const RETIRED_SENT: &str = "retired.sent";
const DROPPED: &str = "dropped";

/// Removes a file; one that does not exist is fine.
fn remove_optional(p: &Path) -> Result<(), FormatError> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FormatError::io(p, e)),
    }
}

/// A file's bytes, or `None` when it does not exist.
fn read_optional(p: &Path) -> Result<Option<Vec<u8>>, FormatError> {
    match fs::read(p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FormatError::io(p, e)),
    }
}
/// What the marker says to whoever looks (its content is never read).
pub(crate) const UNPUBLISHED_TEXT: &[u8] =
    b"the tracker has not acknowledged this snapshot's publish yet\n";

#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32, sync: bool) -> io::Result<()> {
    write_atomic_parts(path, &[data], mode, sync)
}

/// [`write_atomic`] of data given in parts.
fn write_atomic_parts<B: AsRef<[u8]>>(
    path: &Path,
    parts: &[B],
    mode: u32,
    sync: bool,
) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        let mut slices: Vec<io::IoSlice<'_>> =
            parts.iter().map(|p| io::IoSlice::new(p.as_ref())).collect();
        let mut rest: &mut [io::IoSlice<'_>] = &mut slices;
        while !rest.is_empty() {
            match f.write_vectored(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => io::IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if sync {
            f.sync_data()?;
        }
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        // A full disk must not leave partial files behind (they would fill it further).
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Removes a file; one that is not there is fine.
fn remove_if_there(p: &Path) -> Result<(), FormatError> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(FormatError::io(p, e)),
        _ => Ok(()),
    }
}

impl Store {
    pub fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn create(&self) -> Result<(), FormatError> {
        for d in [self.snapshots_dir(), self.tmp_dir()] {
            fs::create_dir_all(&d).map_err(|e| FormatError::io(&d, e))?;
        }
        Ok(())
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }
    pub fn snapshot_dir(&self, ih: &InfoHash) -> PathBuf {
        self.snapshots_dir().join(ih.to_hex())
    }

    /// Removes what an interrupted writer left behind. Call with the store lock held.
    pub fn clean_tmp(&self) -> Result<usize, FormatError> {
        let t = self.tmp_dir();
        let mut n = 0;
        match fs::read_dir(&t) {
            Ok(rd) => {
                for e in rd.flatten() {
                    let p = e.path();
                    let r = if p.is_dir() {
                        fs::remove_dir_all(&p)
                    } else {
                        fs::remove_file(&p)
                    };
                    r.map_err(|e| FormatError::io(&p, e))?;
                    n += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(FormatError::io(&t, e)),
        }
        fs::create_dir_all(&t).map_err(|e| FormatError::io(&t, e))?;
        Ok(n)
    }

    pub fn has(&self, ih: &InfoHash) -> bool {
        self.snapshot_dir(ih).join("torrent").is_file()
    }

    /// Every snapshot in the store (own and held), by infohash.
    pub fn list(&self) -> Result<Vec<InfoHash>, FormatError> {
        let d = self.snapshots_dir();
        let mut v = Vec::new();
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(v),
            Err(e) => return Err(FormatError::io(&d, e)),
        };
        for e in rd.flatten() {
            if let Some(ih) = e
                .file_name()
                .to_str()
                .and_then(|s| InfoHash::from_hex(s).ok())
            {
                v.push(ih);
            }
        }
        v.sort();
        Ok(v)
    }

    /// This machine's own snapshots that it has not forgotten (retired), oldest first:
    /// what backups build on and retention counts as kept.
    pub fn own_snapshots(&self) -> Result<Vec<SnapshotInfo>, FormatError> {
        let mut v = self.all_own_snapshots()?;
        v.retain(|s| InfoHash::from_hex(&s.infohash).map_or(true, |ih| !self.is_retired(&ih)));
        Ok(v)
    }

    /// This machine's own snapshots it has forgotten (`forget`), oldest first: still
    /// seeded (kept snapshots may read some of their stripes) and published.
    pub fn retired_snapshots(&self) -> Result<Vec<SnapshotInfo>, FormatError> {
        let mut v = self.all_own_snapshots()?;
        v.retain(|s| InfoHash::from_hex(&s.infohash).is_ok_and(|ih| self.is_retired(&ih)));
        Ok(v)
    }

    /// Every own snapshot, forgotten or not, oldest first.
    pub fn all_own_snapshots(&self) -> Result<Vec<SnapshotInfo>, FormatError> {
        let mut v = Vec::new();
        for ih in self.list()? {
            let p = self.snapshot_dir(&ih).join("local.json");
            match fs::read(&p) {
                Ok(b) => {
                    let info: SnapshotInfo = serde_json::from_slice(&b).map_err(|e| {
                        FormatError::Invalid(format!("{} is damaged: {e}", p.display()))
                    })?;
                    v.push(info);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(FormatError::io(&p, e)),
            }
        }
        v.sort_by(|a, b| {
            (a.time, a.time_ns)
                .cmp(&(b.time, b.time_ns))
                .then(a.infohash.cmp(&b.infohash))
        });
        Ok(v)
    }

    /// Whether one of this machine's snapshots still waits for the tracker to acknowledge
    /// its publish (format-v1.md §15.2: the `unpublished` marker, written at commit).
    /// Snapshots made before the marker existed count as published.
    pub fn is_published(&self, ih: &InfoHash) -> bool {
        !self.snapshot_dir(ih).join(UNPUBLISHED).exists()
    }

    /// Marks one of this machine's snapshots as not yet acknowledged by the tracker.
    pub fn mark_unpublished(&self, ih: &InfoHash) -> Result<(), FormatError> {
        let p = self.snapshot_dir(ih).join(UNPUBLISHED);
        write_atomic(&p, UNPUBLISHED_TEXT, 0o644, true).map_err(|e| FormatError::io(&p, e))
    }

    /// The tracker acknowledged the publish (or keeps no snapshots): removes the marker.
    pub fn mark_published(&self, ih: &InfoHash) -> Result<(), FormatError> {
        remove_optional(&self.snapshot_dir(ih).join(UNPUBLISHED))
    }

    /// This machine's snapshots not published yet, oldest first (parents before children),
    /// forgotten ones too (kept snapshots may read their stripes).
    pub fn unpublished(&self) -> Result<Vec<InfoHash>, FormatError> {
        Ok(self
            .all_own_snapshots()?
            .into_iter()
            .filter_map(|s| InfoHash::from_hex(&s.infohash).ok())
            .filter(|ih| !self.is_published(ih))
            .collect())
    }

    /// The earlier snapshots one of this machine's snapshots needs for a restore (its
    /// manifest's `parents` and `snapshots`: format-v1.md §11), read from the manifest
    /// cache; `None` when the store keeps no manifest of it (not this machine's).
    pub fn referenced(&self, ih: &InfoHash) -> Result<Option<Vec<InfoHash>>, FormatError> {
        let Some(plain) = self.manifest_cache(ih)? else {
            return Ok(None);
        };
        let m = crate::manifest::Manifest::decode(&plain)?;
        let mut v: Vec<InfoHash> = m.parents.iter().chain(&m.snapshots).copied().collect();
        v.sort();
        v.dedup();
        v.retain(|p| p != ih);
        Ok(Some(v))
    }

    /// Finds a snapshot by full infohash or by a unique prefix of at least 6 hex digits.
    pub fn resolve(&self, s: &str) -> Result<InfoHash, FormatError> {
        let s = s.trim().to_ascii_lowercase();
        if let Ok(ih) = InfoHash::from_hex(&s) {
            return Ok(ih);
        }
        if s.len() < 6 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FormatError::Invalid(format!(
                "{s:?} is not an infohash (40 hex digits)"
            )));
        }
        let hits: Vec<InfoHash> = self
            .list()?
            .into_iter()
            .filter(|ih| ih.to_hex().starts_with(&s))
            .collect();
        match hits.len() {
            1 => Ok(hits[0]),
            0 => Err(FormatError::NotFound(format!(
                "no snapshot in the local store starts with {s}; `swarmbak snapshots` lists them"
            ))),
            n => Err(FormatError::Invalid(format!(
                "{s} matches {n} snapshots; give more digits"
            ))),
        }
    }

    /// Starts holding a snapshot of another machine (or one being fetched): its metainfo,
    /// and an empty shard directory for the shards that arrive. Idempotent.
    pub fn add_torrent(&self, ih: &InfoHash, torrent: &[u8]) -> Result<(), FormatError> {
        let d = self.snapshot_dir(ih);
        let shards = d.join("shards");
        fs::create_dir_all(&shards).map_err(|e| FormatError::io(&shards, e))?;
        let p = d.join("torrent");
        if !p.is_file() {
            write_atomic(&p, torrent, 0o644, true).map_err(|e| FormatError::io(&p, e))?;
        }
        Ok(())
    }

    /// Records the owner machine's key of a held snapshot (from the tracker), so an agent
    /// that restarts still knows whose snapshot it is.
    pub fn set_owner(&self, ih: &InfoHash, key: &[u8]) -> Result<(), FormatError> {
        let p = self.snapshot_dir(ih).join("owner");
        write_atomic(&p, key, 0o644, false).map_err(|e| FormatError::io(&p, e))
    }

    /// The owner machine's key recorded with [`Store::set_owner`].
    pub fn owner(&self, ih: &InfoHash) -> Option<Vec<u8>> {
        fs::read(self.snapshot_dir(ih).join("owner")).ok()
    }

    /// Keeps a snapshot's signed publish record and its owner's certificate (trust.md
    /// §4), from which an enrolled machine learns the owner again at its next start
    /// (checking them again: they are only as good as their signatures).
    pub fn set_owner_record(
        &self,
        ih: &InfoHash,
        record: &[u8],
        certificate: &[u8],
    ) -> Result<(), FormatError> {
        for (name, b) in [("certificate", certificate), ("record", record)] {
            let p = self.snapshot_dir(ih).join(name);
            write_atomic(&p, b, 0o644, false).map_err(|e| FormatError::io(&p, e))?;
        }
        Ok(())
    }

    /// Keeps this machine's latest held statement of `ih` (swarm.md §14), synced: its
    /// sequence number must never go back.
    pub fn set_held(&self, ih: &InfoHash, statement: &[u8]) -> Result<(), FormatError> {
        let p = self.snapshot_dir(ih).join("held");
        write_atomic(&p, statement, 0o644, true).map_err(|e| FormatError::io(&p, e))
    }

    /// The statement kept with [`Store::set_held`], unchecked.
    pub fn held(&self, ih: &InfoHash) -> Option<Vec<u8>> {
        std::fs::read(self.snapshot_dir(ih).join("held")).ok()
    }

    /// The record and certificate kept with [`Store::set_owner_record`], unchecked.
    pub fn owner_record(&self, ih: &InfoHash) -> Option<(Vec<u8>, Vec<u8>)> {
        let d = self.snapshot_dir(ih);
        Some((
            fs::read(d.join("record")).ok()?,
            fs::read(d.join("certificate")).ok()?,
        ))
    }

    pub fn torrent_bytes(&self, ih: &InfoHash) -> Result<Vec<u8>, FormatError> {
        let p = self.snapshot_dir(ih).join("torrent");
        fs::read(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                FormatError::NotFound(format!(
                    "snapshot {} is not in the local store ({})",
                    ih.to_hex(),
                    self.dir.display()
                ))
            } else {
                FormatError::io(&p, e)
            }
        })
    }

    pub fn shard_path(&self, ih: &InfoHash, piece: usize) -> PathBuf {
        self.snapshot_dir(ih).join("shards").join(piece.to_string())
    }

    /// Whether this store holds any shard of the snapshot (a file in its `shards/`;
    /// whether it is intact shows when the snapshot is opened).
    pub fn holds_shards(&self, ih: &InfoHash) -> bool {
        fs::read_dir(self.snapshot_dir(ih).join("shards")).is_ok_and(|mut d| {
            d.any(|e| {
                e.is_ok_and(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.parse::<u64>().is_ok())
                })
            })
        })
    }

    /// A shard's bytes, or `None` when this store does not hold it.
    pub fn read_shard(&self, ih: &InfoHash, piece: usize) -> Result<Option<Vec<u8>>, FormatError> {
        let p = self.shard_path(ih, piece);
        match fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FormatError::io(&p, e)),
        }
    }

    /// Replaces a shard atomically and durably (used by repair).
    pub fn write_shard(&self, ih: &InfoHash, piece: usize, data: &[u8]) -> Result<(), FormatError> {
        let p = self.shard_path(ih, piece);
        write_atomic(&p, data, 0o644, true).map_err(|e| FormatError::io(&p, e))
    }

    /// Writes a shard atomically without waiting for the disk (shards arriving from peers:
    /// every shard is checked by SHA-1 when a store is opened, so one lost in a crash is
    /// only missing, never wrong; [`Store::sync`] makes them durable in one go). The shard
    /// is given in parts (the blocks it arrived in) and written in one vectored write.
    pub fn write_shard_parts<B: AsRef<[u8]>>(
        &self,
        ih: &InfoHash,
        piece: usize,
        parts: &[B],
    ) -> Result<(), FormatError> {
        let p = self.shard_path(ih, piece);
        write_atomic_parts(&p, parts, 0o644, false).map_err(|e| FormatError::io(&p, e))
    }

    /// Removes shard `piece` of `ih` from the disk (given up: found damaged); absent is
    /// fine.
    pub fn remove_shard(&self, ih: &InfoHash, piece: usize) -> Result<(), FormatError> {
        remove_if_there(&self.shard_path(ih, piece))
    }

    /// Where a repair keeps helper shard `piece` of `ih` (swarm.md §18).
    pub fn repair_path(&self, ih: &InfoHash, piece: usize) -> PathBuf {
        self.dir
            .join("repair")
            .join(ih.to_hex())
            .join(piece.to_string())
    }

    /// Keeps a helper shard a repair fetched (checked by the caller); not synced: a crash
    /// only means fetching it again.
    pub fn write_repair(
        &self,
        ih: &InfoHash,
        piece: usize,
        data: &[u8],
    ) -> Result<(), FormatError> {
        let p = self.repair_path(ih, piece);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).map_err(|e| FormatError::io(d, e))?;
        }
        write_atomic(&p, data, 0o600, false).map_err(|e| FormatError::io(&p, e))
    }

    /// A helper shard kept by [`Store::write_repair`], if it is there.
    pub fn read_repair(&self, ih: &InfoHash, piece: usize) -> Result<Option<Vec<u8>>, FormatError> {
        let p = self.repair_path(ih, piece);
        match fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FormatError::io(&p, e)),
        }
    }

    /// Removes helper shard `piece` of `ih`; absent is fine.
    pub fn remove_repair(&self, ih: &InfoHash, piece: usize) -> Result<(), FormatError> {
        remove_if_there(&self.repair_path(ih, piece))
    }

    /// Removes helper shards: those of `ih`, or every snapshot's (`None`, at the agent's
    /// start). Absent is fine.
    pub fn clean_repair(&self, ih: Option<&InfoHash>) -> Result<(), FormatError> {
        let mut p = self.dir.join("repair");
        if let Some(ih) = ih {
            p = p.join(ih.to_hex());
        }
        match fs::remove_dir_all(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(FormatError::io(&p, e)),
            _ => Ok(()),
        }
    }

    /// Flushes the file system holding the store.
    pub fn sync(&self) -> Result<(), FormatError> {
        crate::backup::sync_fs(&self.dir)
    }

    /// Whether the snapshot is one of this machine's own (forgotten or not): it has
    /// `local.json`.
    pub fn is_own(&self, ih: &InfoHash) -> bool {
        self.snapshot_dir(ih).join("local.json").exists()
    }

    /// Whether a retirement of the snapshot is kept here.
    pub fn is_retired(&self, ih: &InfoHash) -> bool {
        self.snapshot_dir(ih).join(RETIRED).exists()
    }

    /// The retirement kept for the snapshot (the caller's format: for an own snapshot the
    /// signed record), if any.
    pub fn retirement(&self, ih: &InfoHash) -> Result<Option<Vec<u8>>, FormatError> {
        read_optional(&self.snapshot_dir(ih).join(RETIRED))
    }

    /// Keeps a retirement of the snapshot, durably (written whole and synced before it
    /// replaces an earlier one).
    pub fn set_retirement(&self, ih: &InfoHash, bytes: &[u8]) -> Result<(), FormatError> {
        let p = self.snapshot_dir(ih).join(RETIRED);
        write_atomic(&p, bytes, 0o644, true).map_err(|e| FormatError::io(&p, e))
    }

    /// Whether the tracker took the retirement kept for the snapshot (the very record:
    /// one signed again since is not).
    pub fn retirement_sent(&self, ih: &InfoHash) -> Result<bool, FormatError> {
        let Some(r) = self.retirement(ih)? else {
            return Ok(true);
        };
        Ok(read_optional(&self.snapshot_dir(ih).join(RETIRED_SENT))?.as_deref() == Some(&r[..]))
    }

    /// The tracker took `record` (a copy is kept beside it).
    pub fn mark_retirement_sent(&self, ih: &InfoHash, record: &[u8]) -> Result<(), FormatError> {
        let p = self.snapshot_dir(ih).join(RETIRED_SENT);
        write_atomic(&p, record, 0o644, true).map_err(|e| FormatError::io(&p, e))
    }

    /// Removes a retirement (cancelled before its shards were let go).
    pub fn clear_retirement(&self, ih: &InfoHash) -> Result<(), FormatError> {
        remove_optional(&self.snapshot_dir(ih).join(RETIRED))
    }

    /// The stripes let go of the snapshot (`dropped`), as written by
    /// [`Store::drop_stripes`]: `None` when none were.
    pub fn dropped_stripes(&self, ih: &InfoHash) -> Result<Option<Vec<u32>>, FormatError> {
        let p = self.snapshot_dir(ih).join(DROPPED);
        let Some(b) = read_optional(&p)? else {
            return Ok(None);
        };
        serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| FormatError::Invalid(format!("{} is damaged: {e}", p.display())))
    }

    /// Lets go of the shards of the snapshot's stripes `drop` (each has `n` shards: pieces
    /// `stripe * n ..`): the list is written and synced first (with the stripes let go
    /// before, which stay gone), then the shard files are removed, so that a run killed
    /// half-way is finished by the next and never touches another stripe. Returns the
    /// bytes of shard files removed.
    pub fn drop_stripes(
        &self,
        ih: &InfoHash,
        n: usize,
        drop: &std::collections::BTreeSet<u32>,
    ) -> Result<u64, FormatError> {
        let mut all: std::collections::BTreeSet<u32> = self
            .dropped_stripes(ih)?
            .unwrap_or_default()
            .into_iter()
            .collect();
        all.extend(drop.iter().copied());
        let list: Vec<u32> = all.iter().copied().collect();
        let p = self.snapshot_dir(ih).join(DROPPED);
        let text = serde_json::to_vec(&list).map_err(|e| FormatError::Invalid(e.to_string()))?;
        write_atomic(&p, &text, 0o644, true).map_err(|e| FormatError::io(&p, e))?;
        let mut freed = 0;
        for s in &all {
            for piece in (*s as usize * n)..((*s as usize + 1) * n) {
                let sp = self.shard_path(ih, piece);
                match fs::symlink_metadata(&sp) {
                    Ok(md) => {
                        fs::remove_file(&sp).map_err(|e| FormatError::io(&sp, e))?;
                        freed += md.len();
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(FormatError::io(&sp, e)),
                }
            }
        }
        Ok(freed)
    }

    /// Removes a snapshot from the store altogether (every stripe let go).
    pub fn remove_snapshot(&self, ih: &InfoHash) -> Result<(), FormatError> {
        let d = self.snapshot_dir(ih);
        // Out of `snapshots/` in one step, then deleted: a kill leaves it in `tmp/`.
        let gone = self.tmp_dir().join(format!("gone-{}", ih.to_hex()));
        match fs::rename(&d, &gone) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(FormatError::io(&d, e)),
        }
        fs::remove_dir_all(&gone).map_err(|e| FormatError::io(&gone, e))
    }

    /// The plaintext manifest this machine kept of one of its own snapshots (stored
    /// sealed: magic + zstd, unencrypted, mode 0600).
    pub fn manifest_cache(&self, ih: &InfoHash) -> Result<Option<Vec<u8>>, FormatError> {
        let p = self.snapshot_dir(ih).join("manifest");
        match fs::read(&p) {
            Ok(b) => Ok(Some(crate::manifest::unseal(&b)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FormatError::io(&p, e)),
        }
    }
}
