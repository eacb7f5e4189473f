//! The backup pipeline: walk, chunk, dedup, compress, pack, encrypt, stripe, publish.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use sha1::{Digest, Sha1};

use crate::chunker::Chunker;
use crate::crypto::{self, Recipient};
use crate::erasure::{self, Layout};
use crate::exclude::Excludes;
use crate::home::Home;
use crate::manifest::{self, ChunkId, ChunkRef, Entry, Kind, Manifest, PackRef};
use crate::store::{write_atomic, SnapshotInfo};
use crate::walk::{self, WalkEntry, Walker};
use crate::{FormatError, InfoHash, FORMAT_VERSION, MANIFEST_FORMAT};

/// Packs are closed once their plaintext reaches this size.
pub const PACK_TARGET: usize = 16 << 20;
/// First bytes of every pack's plaintext.
pub const PACK_MAGIC: &[u8; 8] = b"SWBPACK1";
/// Chunk codecs (the `codec` field of a chunk reference).
pub const CODEC_NONE: u8 = 0;
pub const CODEC_ZSTD: u8 = 1;

#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    /// zstd level for chunk compression.
    pub zstd_level: i32,
    /// Tracker announce URL written into the torrent, if any.
    pub announce: Option<String>,
    /// Data and parity shards per stripe (format-v1.md §9; durability.md for the defaults).
    pub k: usize,
    pub m: usize,
    /// The organisation's recovery recipients; the machine's own key is always a recipient.
    pub recovery: Vec<crate::Recipient>,
    /// The machine's name, recorded in the manifest (a label; machines are known by key).
    pub machine_name: String,
    /// What the walk leaves out below the PATHs (`exclude` module: the patterns' meaning).
    pub exclude: Excludes,
    /// What changed since an earlier snapshot of the same PATHs: when given (and that
    /// snapshot's manifest is in the store, of the same PATHs), only those paths are
    /// looked at on disk and everything else is taken from it ([`ChangedSince`]).
    pub changed: Option<ChangedSince>,
    /// Write no snapshot when nothing changed since the parent: the report is then the
    /// parent's, with [`BackupReport::unchanged`] set.
    pub skip_unchanged: bool,
}

/// The paths that may differ from what the walk of snapshot `parent` saw (an inotify
/// watcher's list since that backup started); nothing else did.
///
/// `paths` are absolute filesystem paths of files, symlinks or directories, some perhaps
/// gone. Each one below a backed-up PATH is lstat'ed again, with every directory above it
/// up to the PATH; a directory among them is listed again (children gone are dropped
/// with what was below them; new ones are lstat'ed, new directories walked whole); a path
/// that is gone is dropped with what was below it. Everything else is taken from
/// `parent`'s manifest as it was. A changed path must be listed for every change: a file
/// written, created, deleted or renamed (both names), a directory whose entries or
/// permissions changed. The entries come out as a full walk would list them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangedSince {
    pub parent: InfoHash,
    pub paths: Vec<PathBuf>,
}

/// Default number of data shards per stripe (protocol-spec/durability.md).
pub const DEFAULT_K: u16 = 8;
/// Default number of parity shards per stripe.
pub const DEFAULT_M: u16 = 4;

impl BackupOptions {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        BackupOptions {
            paths,
            zstd_level: 3,
            announce: None,
            k: DEFAULT_K as usize,
            m: DEFAULT_M as usize,
            recovery: Vec::new(),
            machine_name: String::new(),
            exclude: Excludes::none(),
            changed: None,
            skip_unchanged: false,
        }
    }
}

/// Where the pipeline reports what it is doing (a progress bar, JSON lines, nothing).
pub trait Progress: Sync {
    /// The walk finished: how much file data will be read (changed files only).
    fn scanned(&self, _files: u64, _bytes_to_read: u64, _unchanged_files: u64) {}
    /// `n` more bytes of file data were chunked.
    fn advance(&self, _n: u64) {}
    /// Moving to another stage ("erasure coding", "publishing").
    fn stage(&self, _name: &str) {}
    /// Something was skipped (an unreadable file); the backup goes on.
    fn warn(&self, _msg: &str) {}
    /// Whoever asked for the backup is gone (its `seed` was interrupted): the backup
    /// stops as soon as it can and commits nothing.
    fn cancelled(&self) -> bool {
        false
    }
}

fn check_cancelled(progress: &dyn Progress) -> Result<(), FormatError> {
    if progress.cancelled() {
        return Err(FormatError::Invalid(
            "the backup was cancelled: nothing was committed".into(),
        ));
    }
    Ok(())
}

/// A progress sink that reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

#[derive(Clone, Debug)]
pub struct BackupReport {
    /// The snapshot made, or the parent when [`BackupReport::unchanged`].
    pub infohash: InfoHash,
    pub info: SnapshotInfo,
    /// Nothing changed since the parent and [`BackupOptions::skip_unchanged`] was set: no
    /// snapshot was written; `infohash` and `info` are the parent's.
    pub unchanged: bool,
    /// Everything below the PATHs was walked: no [`BackupOptions::changed`], or its parent
    /// could not be used (said through [`Progress::warn`]).
    pub full_walk: bool,
    /// Entries lstat'ed this time (the PATHs, and everything below them in a full walk).
    pub stat_calls: u64,
    /// Entries an exclude pattern left out (what was below an excluded directory is not
    /// counted; an incremental walk counts only what it looked at, and the parent's
    /// entries a new pattern leaves out).
    pub excluded: u64,
}

/// Where an already-stored chunk lives.
#[derive(Clone, Copy, Debug)]
struct OldLoc {
    snapshot: InfoHash,
    pack_offset: u64,
    pack_len: u64,
    offset: u64,
    stored_len: u32,
    raw_len: u32,
    codec: u8,
}

#[derive(Clone, Copy, Debug)]
enum Known {
    Old(OldLoc),
    Pending,
    New {
        pack: u32,
        offset: u64,
        stored_len: u32,
        raw_len: u32,
        codec: u8,
    },
}

/// A file's chunk names in order, and the bytes read.
type FileChunks = (Vec<ChunkId>, u64);

fn now() -> (i64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.subsec_nanos())
}

/// The name a backed-up PATH gets at the snapshot's root.
pub fn root_name(path: &Path) -> Result<Vec<u8>, FormatError> {
    let name = match path.file_name() {
        Some(n) => n.to_os_string(),
        None => {
            let c = fs::canonicalize(path).map_err(|e| FormatError::io(path, e))?;
            match c.file_name() {
                Some(n) => n.to_os_string(),
                None => std::ffi::OsString::from("root"),
            }
        }
    };
    Ok(name.as_bytes().to_vec())
}

thread_local! {
    static ZSTD: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

fn compress(level: i32, data: &[u8]) -> Option<Vec<u8>> {
    ZSTD.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
        }
        let (_, z) = c.as_mut()?;
        z.compress(data).ok()
    })
}

struct PackState {
    cur: Vec<u8>,
    cur_idx: u32,
    next_idx: u32,
}

struct PayloadOut {
    file: fs::File,
    len: u64,
    /// Per pack index: (payload offset, encrypted length).
    packs: Vec<Option<(u64, u64)>>,
}

struct Packer<'a> {
    level: i32,
    recipients: &'a [Recipient],
    known: Mutex<HashMap<ChunkId, Known>>,
    state: Mutex<PackState>,
    out: Mutex<PayloadOut>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<'a> Packer<'a> {
    /// Stores one chunk unless it is already known; returns whether it was new.
    fn add(&self, id: ChunkId, data: &[u8]) -> Result<bool, FormatError> {
        {
            let mut k = lock(&self.known);
            if k.contains_key(&id) {
                return Ok(false);
            }
            k.insert(id, Known::Pending);
        }
        let (codec, blob) = match compress(self.level, data) {
            Some(c) if c.len() < data.len() => (CODEC_ZSTD, c),
            _ => (CODEC_NONE, data.to_vec()),
        };
        let (pack, offset, full) = {
            let mut s = lock(&self.state);
            if s.cur.is_empty() {
                s.cur.reserve(PACK_TARGET + blob.len() + 8);
                s.cur.extend_from_slice(PACK_MAGIC);
            }
            let offset = s.cur.len() as u64;
            s.cur.extend_from_slice(&blob);
            let pack = s.cur_idx;
            let full = if s.cur.len() >= PACK_TARGET {
                s.cur_idx = s.next_idx;
                s.next_idx += 1;
                Some((pack, std::mem::take(&mut s.cur)))
            } else {
                None
            };
            (pack, offset, full)
        };
        lock(&self.known).insert(
            id,
            Known::New {
                pack,
                offset,
                stored_len: blob.len() as u32,
                raw_len: data.len() as u32,
                codec,
            },
        );
        if let Some((idx, plain)) = full {
            self.write_pack(idx, &plain)?;
        }
        Ok(true)
    }

    fn write_pack(&self, idx: u32, plain: &[u8]) -> Result<(), FormatError> {
        let ct = crypto::encrypt(self.recipients, plain)?;
        let mut o = lock(&self.out);
        let off = o.len;
        o.file
            .write_all_at(&ct, off)
            .map_err(|e| FormatError::io(Path::new("payload"), e))?;
        o.len += ct.len() as u64;
        let i = idx as usize;
        if o.packs.len() <= i {
            o.packs.resize(i + 1, None);
        }
        o.packs[i] = Some((off, ct.len() as u64));
        Ok(())
    }

    fn finish(&self) -> Result<(), FormatError> {
        let last = {
            let mut s = lock(&self.state);
            if s.cur.is_empty() {
                None
            } else {
                Some((s.cur_idx, std::mem::take(&mut s.cur)))
            }
        };
        if let Some((idx, plain)) = last {
            self.write_pack(idx, &plain)?;
        }
        Ok(())
    }
}

/// What a rescan may reuse from the parent snapshot.
struct Parent {
    manifest: Manifest,
    infohash: InfoHash,
    info: SnapshotInfo,
}

/// The recipients as recorded with a snapshot (sorted, so order does not matter).
fn recipient_set(r: &[Recipient]) -> Vec<String> {
    let mut v: Vec<String> = r.iter().map(|r| r.to_string()).collect();
    v.sort();
    v.dedup();
    v
}

/// Up to two earlier snapshots whose manifests are in the store, encrypted to
/// `recipients`: `prefer` if it is one of the same root names, else the latest of the
/// same root names; then the latest of all.
fn load_parent(
    home: &Home,
    roots: &[Vec<u8>],
    recipients: &[String],
    prefer: Option<&InfoHash>,
) -> Result<Vec<Parent>, FormatError> {
    let store = home.store();
    // Packs encrypted to another set of recipients are never reused: a recovery key added
    // since could not decrypt them.
    let mut own: Vec<SnapshotInfo> = store
        .own_snapshots()?
        .into_iter()
        .filter(|s| s.recipients == recipients)
        .collect();
    // Oldest first by time and nanoseconds; snapshots made before `time_ns` was kept
    // (0) and taken in the same second: the one that is the other's parent is the older.
    let parents_of_others: std::collections::HashSet<String> =
        own.iter().flat_map(|s| s.parents.iter().cloned()).collect();
    own.sort_by_key(|s| (s.time, s.time_ns, !parents_of_others.contains(&s.infohash)));
    let mut picks: Vec<&SnapshotInfo> = Vec::new();
    // The latest snapshot of the same set of paths (or `prefer`, if it is one), then the
    // latest of all.
    let mut want: Vec<String> = roots
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    want.sort();
    let same_paths = |s: &&SnapshotInfo| {
        let mut names: Vec<String> = s
            .paths
            .iter()
            .map(|p| {
                Path::new(p)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        names.sort();
        names == want
    };
    let preferred = prefer.and_then(|p| {
        let hex = p.to_hex();
        own.iter().find(|s| s.infohash == hex)
    });
    if let Some(s) = preferred
        .filter(same_paths)
        .or_else(|| own.iter().rev().find(same_paths))
    {
        picks.push(s);
    }
    if let Some(last) = own.last() {
        if picks
            .first()
            .map(|p| p.infohash != last.infohash)
            .unwrap_or(true)
        {
            picks.push(last);
        }
    }
    let mut out = Vec::new();
    for s in picks {
        let ih = InfoHash::from_hex(&s.infohash)?;
        if let Some(bytes) = store.manifest_cache(&ih)? {
            out.push(Parent {
                manifest: Manifest::decode(&bytes)?,
                infohash: ih,
                info: s.clone(),
            });
        }
    }
    Ok(out)
}

fn old_loc(m: &Manifest, self_ih: InfoHash, c: &ChunkRef) -> Option<OldLoc> {
    let p = m.packs.get(c.pack as usize)?;
    let snapshot = if p.snapshot == 0 {
        self_ih
    } else {
        *m.snapshots.get(p.snapshot as usize - 1)?
    };
    Some(OldLoc {
        snapshot,
        pack_offset: p.offset,
        pack_len: p.len,
        offset: c.offset,
        stored_len: c.stored_len,
        raw_len: c.raw_len,
        codec: c.codec,
    })
}

/// Whether the walked entries are `parent`'s: the same paths, kinds, modes, times,
/// sizes, inodes, targets, and for files the same chunks (`reuse`: the parent's chunk
/// names of the files whose metadata match it).
fn same_entries(entries: &[WalkEntry], reuse: &[Option<Vec<ChunkId>>], parent: &Manifest) -> bool {
    entries.len() == parent.entries.len()
        && entries
            .iter()
            .zip(reuse)
            .zip(&parent.entries)
            .all(|((w, r), p)| {
                let e = &w.entry;
                e.path == p.path
                    && e.kind == p.kind
                    && e.mode == p.mode
                    && (e.mtime, e.mtime_ns) == (p.mtime, p.mtime_ns)
                    && (e.ctime, e.ctime_ns) == (p.ctime, p.ctime_ns)
                    && e.ino == p.ino
                    && e.size == p.size
                    && e.target == p.target
                    && (e.kind != Kind::File
                        || r.as_ref().is_some_and(|ids| {
                            ids.len() == p.chunks.len()
                                && ids.iter().zip(&p.chunks).all(|(id, &i)| {
                                    parent.chunks.get(i as usize).map(|c| &c.id) == Some(id)
                                })
                        }))
            })
}

fn keyed_id(key: &[u8; 32], data: &[u8]) -> ChunkId {
    *blake3::keyed_hash(key, data).as_bytes()
}

/// Backs up `opts.paths` as a new snapshot in the home's store. Takes the store lock.
pub fn backup(
    home: &Home,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport, FormatError> {
    let _lock = home.lock()?;
    backup_locked(home, opts, progress)
}

/// [`backup`] for a caller that already holds the store lock (the agent).
pub fn backup_locked(
    home: &Home,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport, FormatError> {
    let store = home.store();
    store.clean_tmp()?;
    let (k, m) = (opts.k, opts.m);
    erasure::check_params(k, m)?;
    let recipients = home.recipients(&opts.recovery)?;
    let chunk_key = home.chunk_key()?;
    let (time, time_ns) = now();

    if opts.paths.is_empty() {
        return Err(FormatError::Invalid(
            "nothing to back up: give at least one PATH".into(),
        ));
    }
    let walk_roots = walk::roots(&opts.paths)?;
    let roots: Vec<Vec<u8>> = walk_roots.iter().map(|r| r.name.clone()).collect();
    let sources: Vec<Vec<u8>> = walk_roots.iter().map(|r| r.source.clone()).collect();

    // The parent (for unchanged files) and the dedup index.
    let prefer = opts.changed.as_ref().map(|c| c.parent);
    let parents = load_parent(home, &roots, &recipient_set(&recipients), prefer.as_ref())?;
    let mut known: HashMap<ChunkId, Known> = HashMap::new();
    let mut prev_files: HashMap<&[u8], &Entry> = HashMap::new();
    for (i, p) in parents.iter().enumerate() {
        for c in &p.manifest.chunks {
            if let Some(l) = old_loc(&p.manifest, p.infohash, c) {
                known.entry(c.id).or_insert(Known::Old(l));
            }
        }
        if i == 0 {
            for e in &p.manifest.entries {
                if e.kind == Kind::File {
                    prev_files.insert(&e.path, e);
                }
            }
        }
    }

    // The walk: everything, or the parent's entries and what changed since.
    let mut walker = Walker::new(progress, &opts.exclude);
    let mut entries: Option<Vec<WalkEntry>> = None;
    if let Some(c) = &opts.changed {
        // Its manifest: loaded above when it is one of ours, to the same recipients.
        let loaded;
        let m = match parents.iter().find(|p| p.infohash == c.parent) {
            Some(p) => Some(&p.manifest),
            None => {
                loaded = match store.manifest_cache(&c.parent) {
                    Ok(Some(b)) => Manifest::decode(&b).ok(),
                    Ok(None) | Err(_) => None,
                };
                loaded.as_ref()
            }
        };
        let why = match m {
            None => format!(
                "the manifest of snapshot {} is not in the store",
                c.parent.to_hex()
            ),
            Some(m) => match walker.walk_changed(&walk_roots, m, &c.paths)? {
                Ok(v) => {
                    entries = Some(v);
                    String::new()
                }
                Err(why) => why,
            },
        };
        if entries.is_none() {
            progress.warn(&format!(
                "walking every path instead of only those changed since {}: {why}",
                c.parent.to_hex()
            ));
        }
    }
    let full_walk = entries.is_none();
    let mut entries = match entries {
        Some(v) => v,
        None => walker.walk(&walk_roots)?,
    };
    let Walker {
        mut skipped,
        excluded,
        stat_calls,
        ..
    } = walker;

    // Files whose size, mtime, ctime and inode match the parent keep its chunks.
    let mut reuse: Vec<Option<Vec<ChunkId>>> = Vec::with_capacity(entries.len());
    let (mut to_read, mut bytes_to_read, mut unchanged_files) = (0u64, 0u64, 0u64);
    for w in &entries {
        let e = &w.entry;
        let mut r = None;
        if e.kind == Kind::File {
            if let (Some(pe), Some(p)) = (prev_files.get(e.path.as_slice()), parents.first()) {
                if pe.size == e.size
                    && pe.mtime == e.mtime
                    && pe.mtime_ns == e.mtime_ns
                    && pe.ctime == e.ctime
                    && pe.ctime_ns == e.ctime_ns
                    && pe.ino == e.ino
                {
                    let ids: Option<Vec<ChunkId>> = pe
                        .chunks
                        .iter()
                        .map(|&i| p.manifest.chunks.get(i as usize).map(|c| c.id))
                        .collect();
                    r = ids.filter(|ids| ids.iter().all(|id| known.contains_key(id)));
                }
            }
            if r.is_some() {
                unchanged_files += 1;
            } else {
                to_read += 1;
                bytes_to_read += e.size;
            }
        }
        reuse.push(r);
    }
    progress.scanned(to_read, bytes_to_read, unchanged_files);

    // Nothing to write when the entries are the parent's (decided before reading a file).
    if opts.skip_unchanged {
        if let Some(p) = parents.first() {
            if p.manifest.source_paths == sources && same_entries(&entries, &reuse, &p.manifest) {
                progress.stage("unchanged");
                return Ok(BackupReport {
                    infohash: p.infohash,
                    info: p.info.clone(),
                    unchanged: true,
                    full_walk,
                    stat_calls,
                    excluded,
                });
            }
        }
    }

    // The snapshot is built in a fresh directory under tmp/.
    let build = store
        .tmp_dir()
        .join(format!("build-{}", hex::encode(rand::random::<[u8; 8]>())));
    fs::create_dir_all(&build).map_err(|e| FormatError::io(&build, e))?;
    let payload_path = build.join("payload");
    let payload_file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&payload_path)
        .map_err(|e| FormatError::io(&payload_path, e))?;

    let packer = Packer {
        level: opts.zstd_level,
        recipients: &recipients,
        known: Mutex::new(known),
        state: Mutex::new(PackState {
            cur: Vec::new(),
            cur_idx: 0,
            next_idx: 1,
        }),
        out: Mutex::new(PayloadOut {
            file: payload_file,
            len: 0,
            packs: Vec::new(),
        }),
    };

    // Chunk every changed file, in parallel across files.
    let new_bytes = std::sync::atomic::AtomicU64::new(0);
    let new_chunks = std::sync::atomic::AtomicU64::new(0);
    let results: Vec<Result<Option<FileChunks>, FormatError>> = entries
        .par_iter()
        .zip(reuse.into_par_iter())
        .map(|(w, r)| {
            if w.entry.kind != Kind::File {
                return Ok(None);
            }
            if let Some(ids) = r {
                return Ok(Some((ids, w.entry.size)));
            }
            let f = match fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&w.fs_path)
            {
                Ok(f) => f,
                Err(e) => {
                    return Err(FormatError::io(&w.fs_path, e));
                }
            };
            let mut ch = Chunker::with_size_hint(f, w.entry.size);
            let mut ids = Vec::new();
            let mut size = 0u64;
            loop {
                let c = match ch.next_chunk() {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => return Err(FormatError::io(&w.fs_path, e)),
                };
                let id = keyed_id(&chunk_key, c);
                size += c.len() as u64;
                progress.advance(c.len() as u64);
                check_cancelled(progress)?;
                if packer.add(id, c)? {
                    new_bytes.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    new_chunks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                ids.push(id);
            }
            Ok(Some((ids, size)))
        })
        .collect();
    packer.finish()?;

    // Unreadable files are reported and left out; anything else stops the backup.
    let mut kept = Vec::with_capacity(entries.len());
    for (w, r) in entries.drain(..).zip(results) {
        match r {
            Ok(Some((ids, size))) => kept.push((w, ids, size)),
            Ok(None) => kept.push((w, Vec::new(), 0)),
            Err(FormatError::Io { path, source })
                if matches!(
                    source.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound
                ) || source.raw_os_error() == Some(libc::ELOOP) =>
            {
                let msg = format!("{}: {source}; skipped", path.display());
                progress.warn(&msg);
                skipped.push(msg);
            }
            Err(e) => return Err(e),
        }
    }

    progress.stage("writing manifest");
    check_cancelled(progress)?;
    let known = packer.known.into_inner().unwrap_or_else(|p| p.into_inner());
    let out = packer.out.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut snapshots: Vec<InfoHash> = Vec::new();
    let mut snap_idx: HashMap<InfoHash, u32> = HashMap::new();
    let mut packs: Vec<PackRef> = Vec::new();
    let mut pack_idx: HashMap<(u32, u64), u32> = HashMap::new();
    let mut chunks: Vec<ChunkRef> = Vec::new();
    let mut chunk_idx: HashMap<ChunkId, u32> = HashMap::new();
    let mut m_entries = Vec::with_capacity(kept.len());
    let (mut files, mut dirs, mut symlinks, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    for (w, ids, size) in kept {
        let mut e = w.entry;
        match e.kind {
            Kind::File => {
                files += 1;
                e.size = size;
                bytes += size;
            }
            Kind::Dir => dirs += 1,
            Kind::Symlink => symlinks += 1,
        }
        for id in ids {
            let ci = match chunk_idx.get(&id) {
                Some(&ci) => ci,
                None => {
                    let known = known.get(&id).copied().ok_or_else(|| {
                        FormatError::Invalid("internal: a chunk has no location".into())
                    })?;
                    let (sref, poff, plen, off, stored, raw, codec) = match known {
                        Known::Old(l) => {
                            let n = snapshots.len() as u32 + 1;
                            let s = *snap_idx.entry(l.snapshot).or_insert_with(|| {
                                snapshots.push(l.snapshot);
                                n
                            });
                            (
                                s,
                                l.pack_offset,
                                l.pack_len,
                                l.offset,
                                l.stored_len,
                                l.raw_len,
                                l.codec,
                            )
                        }
                        Known::New {
                            pack,
                            offset,
                            stored_len,
                            raw_len,
                            codec,
                        } => {
                            let (po, pl) =
                                out.packs.get(pack as usize).copied().flatten().ok_or_else(
                                    || FormatError::Invalid("internal: pack not written".into()),
                                )?;
                            (0, po, pl, offset, stored_len, raw_len, codec)
                        }
                        Known::Pending => {
                            return Err(FormatError::Invalid(
                                "internal: chunk still pending".into(),
                            ))
                        }
                    };
                    let np = packs.len() as u32;
                    let pi = *pack_idx.entry((sref, poff)).or_insert_with(|| {
                        packs.push(PackRef {
                            snapshot: sref,
                            offset: poff,
                            len: plen,
                        });
                        np
                    });
                    let ci = chunks.len() as u32;
                    chunks.push(ChunkRef {
                        id,
                        pack: pi,
                        offset: off,
                        stored_len: stored,
                        raw_len: raw,
                        codec,
                    });
                    chunk_idx.insert(id, ci);
                    ci
                }
            };
            e.chunks.push(ci);
        }
        m_entries.push(e);
    }

    let parent_ihs: Vec<InfoHash> = parents
        .first()
        .map(|p| vec![p.infohash])
        .unwrap_or_default();
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        time,
        time_ns,
        machine_name: opts.machine_name.clone(),
        // The machine itself is the first recipient (`Home::recipients`).
        machine_key: recipients[0].to_string(),
        source_paths: sources,
        parents: parent_ihs.clone(),
        snapshots,
        chunk_key,
        packs,
        chunks,
        entries: m_entries,
    };
    manifest.validate()?;
    let plain_manifest = manifest.encode();
    let sealed = manifest::seal(&plain_manifest)?;
    let manifest_ct = crypto::encrypt(&recipients, &sealed)?;
    let manifest_offset = out.len;
    out.file
        .write_all_at(&manifest_ct, manifest_offset)
        .map_err(|e| FormatError::io(&payload_path, e))?;
    let payload_len = manifest_offset + manifest_ct.len() as u64;

    progress.stage("erasure coding");
    check_cancelled(progress)?;
    let built = match build_torrent(
        &out.file,
        &build,
        payload_len,
        manifest_offset,
        (k, m),
        opts.announce.clone(),
        time,
    ) {
        Ok(b) => b,
        Err(e) => {
            // Nothing reaches the store's snapshots; the payload is not kept either.
            drop(out);
            let _ = fs::remove_dir_all(&build);
            return Err(e);
        }
    };
    drop(out);
    fs::remove_file(&payload_path).map_err(|e| FormatError::io(&payload_path, e))?;
    progress.stage("publishing");
    let (torrent, infohash, layout) = (built.torrent, built.infohash, built.layout);
    let s = layout.shard_size;

    let info = SnapshotInfo {
        infohash: infohash.to_hex(),
        time,
        time_ns,
        machine: opts.machine_name.clone(),
        paths: opts
            .paths
            .iter()
            .map(|p| {
                fs::canonicalize(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string()
            })
            .collect(),
        parents: parent_ihs.iter().map(|p| p.to_hex()).collect(),
        files,
        dirs,
        symlinks,
        bytes,
        new_bytes: new_bytes.into_inner(),
        payload_bytes: payload_len,
        shard_bytes: (layout.pieces() * s) as u64,
        chunks: manifest.chunks.len() as u64,
        new_chunks: new_chunks.into_inner(),
        skipped,
        recipients: recipient_set(&recipients),
    };
    progress.stage("syncing to disk");
    check_cancelled(progress)?;
    commit(&store, &build, &infohash, &torrent, Some((&sealed, &info)))?;
    progress.stage("published");
    Ok(BackupReport {
        infohash,
        info,
        unchanged: false,
        full_walk,
        stat_calls,
        excluded,
    })
}

pub(crate) struct Built {
    pub torrent: Vec<u8>,
    pub infohash: InfoHash,
    pub layout: Layout,
}

/// The largest info dictionary a snapshot may have: BEP 9's metadata limit as the wire
/// crate enforces it (`swarmbak_wire::MAX_METADATA_SIZE`, `crates/wire/src/metadata.rs`,
/// 8 MiB; this crate does not depend on `swarmbak-wire`, so the number is repeated here).
/// A peer that lacks the torrent gets the info dictionary through BEP 9, so a larger one
/// could never be fetched from the swarm (format-v2.md §5).
pub const MAX_INFO_SIZE: u64 = 8 << 20;

/// Bytes each piece adds to a format 2 info dictionary: a SHA-1 (20) and a root (32).
const PER_PIECE: u64 = 52;

/// What goes into a snapshot's torrent besides the shards' hashes.
struct TorrentParams {
    layout: Layout,
    manifest_offset: u64,
    id: [u8; 16],
    announce: Option<String>,
    time: i64,
}

fn swarmbak_torrent(
    t: &TorrentParams,
    piece_hashes: Vec<[u8; 20]>,
    roots: Vec<[u8; 32]>,
) -> swarmbak_metainfo::SwarmbakTorrent {
    let l = &t.layout;
    swarmbak_metainfo::SwarmbakTorrent {
        announce: t.announce.clone(),
        name: format!("swarmbak-{}.shards", hex::encode(&t.id[..8])),
        piece_length: l.shard_size as u64,
        piece_hashes,
        creation_date: t.time,
        params: swarmbak_metainfo::SwarmbakParams {
            format: FORMAT_VERSION,
            k: l.k as u16,
            m: l.m as u16,
            stripes: l.stripes as u64,
            payload_length: l.payload_len,
            manifest_offset: t.manifest_offset,
            manifest_length: l.payload_len.saturating_sub(t.manifest_offset),
            id: t.id,
            roots: Some(roots),
        },
    }
}

/// The size of the info dictionary of a snapshot with this layout and manifest offset
/// (exact: the hashes do not change it); an error saying what to do when it is over
/// [`MAX_INFO_SIZE`]. Called before any shard is written.
pub fn check_info_size(layout: &Layout, manifest_offset: u64) -> Result<u64, FormatError> {
    let pieces = layout.pieces() as u64;
    let n = layout.n() as u64;
    let too_large = |size: String, overhead: u64| {
        let max_stripes = MAX_INFO_SIZE.saturating_sub(overhead) / PER_PIECE / n;
        FormatError::Invalid(format!(
            "this backup is too large for one snapshot: its torrent's info dictionary would be {size} bytes ({pieces} pieces of {} KiB), over the {MAX_INFO_SIZE} bytes (8 MiB) that peers exchange torrents in (BEP 9). With k={}, m={} a snapshot holds at most {} pieces, about {} GiB of compressed, encrypted payload. Back up fewer files per snapshot (split the PATHs into several backups, each its own chain of snapshots), or raise `k` against `m` in config.json (fewer parity pieces per payload byte); nothing was written to the store",
            layout.shard_size >> 10,
            layout.k,
            layout.m,
            max_stripes * n,
            (max_stripes * layout.k as u64 * crate::erasure::MAX_SHARD as u64) >> 30,
        ))
    };
    // Far over the limit: no need to build anything to know.
    if pieces.saturating_mul(PER_PIECE) > MAX_INFO_SIZE {
        return Err(too_large(
            format!("over {}", pieces.saturating_mul(PER_PIECE)),
            512,
        ));
    }
    let t = TorrentParams {
        layout: *layout,
        manifest_offset,
        id: [0; 16],
        announce: None,
        time: 0,
    };
    let n_pieces = layout.pieces();
    let bytes = swarmbak_metainfo::build_swarmbak_torrent(&swarmbak_torrent(
        &t,
        vec![[0; 20]; n_pieces],
        vec![[0; 32]; n_pieces],
    ))
    .map_err(|e| FormatError::Metainfo(format!("internal: cannot build the torrent: {e}")))?;
    let mi = swarmbak_metainfo::Metainfo::from_bytes(&bytes).map_err(|e| {
        FormatError::Metainfo(format!("internal: built an unreadable torrent: {e}"))
    })?;
    let size = mi.raw_info().len() as u64;
    if size > MAX_INFO_SIZE {
        return Err(too_large(size.to_string(), size - pieces * PER_PIECE));
    }
    Ok(size)
}

/// Cuts the payload in `payload` into stripes, computes parity, the SHA-1 and the Merkle
/// root of every shard (in parallel over stripes, one pass while each stripe is in memory),
/// writes the shards under `build/shards/`, and builds the snapshot's torrent (format 2).
/// Refuses, before writing any shard, a snapshot whose info dictionary would be over
/// [`MAX_INFO_SIZE`].
pub(crate) fn build_torrent(
    payload: &fs::File,
    build: &Path,
    payload_len: u64,
    manifest_offset: u64,
    (k, m): (usize, usize),
    announce: Option<String>,
    time: i64,
) -> Result<Built, FormatError> {
    let layout = Layout::for_payload(payload_len, k, m)?;
    check_info_size(&layout, manifest_offset)?;
    let s = layout.shard_size;
    let shards_dir = build.join("shards");
    fs::create_dir_all(&shards_dir).map_err(|e| FormatError::io(&shards_dir, e))?;
    type Hashes = (Vec<[u8; 20]>, Vec<[u8; 32]>);
    let hashes: Vec<Result<Hashes, FormatError>> = (0..layout.stripes)
        .into_par_iter()
        .map(|stripe| {
            let mut data = vec![0u8; layout.stripe_data_len()];
            let start = stripe as u64 * layout.stripe_data_len() as u64;
            let avail = payload_len.saturating_sub(start).min(data.len() as u64) as usize;
            payload
                .read_exact_at(&mut data[..avail], start)
                .map_err(|e| FormatError::io(build, e))?;
            let parity = erasure::encode(k, m, &data)?;
            let mut hs = Vec::with_capacity(k + m);
            let mut rs = Vec::with_capacity(k + m);
            for (i, shard) in data
                .chunks(s)
                .chain(parity.iter().map(|p| p.as_slice()))
                .enumerate()
            {
                hs.push(Sha1::digest(shard).into());
                rs.push(swarmbak_core::merkle::root(shard));
                let p = shards_dir.join(layout.piece(stripe, i).to_string());
                fs::write(&p, shard).map_err(|e| FormatError::io(&p, e))?;
            }
            Ok((hs, rs))
        })
        .collect();
    let mut pieces = Vec::with_capacity(layout.pieces());
    let mut roots = Vec::with_capacity(layout.pieces());
    for h in hashes {
        let (hs, rs) = h?;
        pieces.extend(hs);
        roots.extend(rs);
    }
    let t = TorrentParams {
        layout,
        manifest_offset,
        id: rand::random(),
        announce,
        time,
    };
    let torrent = swarmbak_metainfo::build_swarmbak_torrent(&swarmbak_torrent(&t, pieces, roots))
        .map_err(|e| {
        FormatError::Metainfo(format!("internal: cannot build the torrent: {e}"))
    })?;
    let mi = swarmbak_metainfo::Metainfo::from_bytes(&torrent).map_err(|e| {
        FormatError::Metainfo(format!("internal: built an unreadable torrent: {e}"))
    })?;
    Ok(Built {
        torrent,
        infohash: InfoHash(mi.info_hash()),
        layout,
    })
}

/// Makes a snapshot built under `build` visible in the store in one step (the commit
/// point): its files reach the disk first, then the directory is renamed into place.
pub(crate) fn commit(
    store: &crate::store::Store,
    build: &Path,
    infohash: &InfoHash,
    torrent: &[u8],
    own: Option<(&[u8], &SnapshotInfo)>,
) -> Result<(), FormatError> {
    write_atomic(&build.join("torrent"), torrent, 0o644, false)
        .map_err(|e| FormatError::io(build, e))?;
    if let Some((sealed_manifest, info)) = own {
        write_atomic(&build.join("manifest"), sealed_manifest, 0o600, false)
            .map_err(|e| FormatError::io(build, e))?;
        let json = serde_json::to_vec_pretty(info)
            .map_err(|e| FormatError::Invalid(format!("cannot encode snapshot info: {e}")))?;
        write_atomic(&build.join("local.json"), &json, 0o644, false)
            .map_err(|e| FormatError::io(build, e))?;
        // Not published until the tracker says so (format-v1.md §15.2): a publish that
        // fails or is interrupted leaves the marker for the next seed or the agent.
        write_atomic(
            &build.join(crate::store::UNPUBLISHED),
            crate::store::UNPUBLISHED_TEXT,
            0o644,
            false,
        )
        .map_err(|e| FormatError::io(build, e))?;
    }
    sync_fs(build)?;
    let dest = store.snapshot_dir(infohash);

    if dest.exists() {
        fs::remove_dir_all(build).map_err(|e| FormatError::io(build, e))?;
        return Ok(());
    }
    fs::rename(build, &dest).map_err(|e| FormatError::io(&dest, e))?;
    sync_fs(&store.snapshots_dir())?;
    Ok(())
}

/// Flushes the file system holding `dir` (one syncfs call instead of an fsync per shard).
pub(crate) fn sync_fs(dir: &Path) -> Result<(), FormatError> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(dir).map_err(|e| FormatError::io(dir, e))?;
    // SAFETY: syncfs takes a valid open file descriptor and has no other preconditions.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc != 0 {
        return Err(FormatError::io(dir, io::Error::last_os_error()));
    }
    f.sync_all().map_err(|e| FormatError::io(dir, e))?;
    Ok(())
}
