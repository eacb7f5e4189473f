//! Deterministic synthetic file trees for swarmbak's tests, `swarmbak demo` and benchmarks.
//!
//! Every generator takes a seed; the same seed and parameters always give a byte-identical
//! tree (paths, contents, permission bits and symlink targets), on every machine and with
//! every version of this crate that keeps the same major version. Only the standard library
//! is used, and the random numbers come from [`Rng`], a fixed xoshiro256** generator seeded
//! with splitmix64, so no dependency upgrade can change the output.
//!
//! Profiles:
//! - [`office`]: an office desktop: incompressible media, compressible documents, a deep
//!   tree of small source files, exact duplicates and near-duplicate edited versions.
//! - [`edge`]: names and shapes that break naive backup tools.
//! - [`small_files`]: many small text files (the "unchanged rescan" benchmark).
//! - [`mutate`]: a day's edits to an existing tree, in place.
//!
//! Permission bits that a generator does not set explicitly (everything except the
//! executable, read-only and source files) follow the process umask, as with any program
//! creating files. [`digest`] hashes a tree for comparisons in tests.
//!
//! This is a Rust port of the *kind* of tree `make-dataset.py` makes; it is not
//! byte-identical with the python.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[cfg(unix)]
use std::os::unix::ffi::OsStrExt;
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// The vocabulary of generated text (the same words `make-dataset.py` uses).
pub const WORDS: &[&str] = &[
    "backup",
    "swarm",
    "piece",
    "shard",
    "tracker",
    "peer",
    "seed",
    "budget",
    "report",
    "meeting",
    "invoice",
    "contract",
    "draft",
    "review",
    "quarterly",
    "figure",
    "summary",
    "project",
    "plan",
    "schedule",
    "customer",
    "product",
    "release",
    "network",
    "storage",
    "office",
    "travel",
    "photo",
    "video",
    "music",
    "invoice",
    "salary",
    "policy",
    "security",
    "audit",
    "minutes",
];

// ---------------------------------------------------------------------------------------
// PRNG
// ---------------------------------------------------------------------------------------

/// A small, fixed pseudo-random generator: xoshiro256** seeded with splitmix64.
///
/// Its output sequence for a given seed is part of this crate's contract (the trees depend
/// on it), so it never changes. It is not cryptographic.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose state is four successive splitmix64 outputs from `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut sm = seed;
        let mut next = || {
            sm = sm.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform integer in `0..n` (`n` must be > 0), without modulo bias.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        // Lemire's multiply-shift with rejection.
        let mut m = (self.next_u64() as u128) * (n as u128);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = (self.next_u64() as u128) * (n as u128);
            }
        }
        (m >> 64) as u64
    }

    /// A uniform integer in `lo..=hi` (`lo <= hi`).
    #[inline]
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "Rng::range({lo}, {hi})");
        if hi - lo == u64::MAX {
            return self.next_u64();
        }
        lo + self.below(hi - lo + 1)
    }

    /// One element of a non-empty slice.
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Fills `buf` with random bytes, eight at a time (little-endian words; a trailing
    /// partial word takes the low bytes of one more word).
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let w = self.next_u64().to_le_bytes();
            let n = rest.len();
            rest.copy_from_slice(&w[..n]);
        }
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

// ---------------------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------------------

/// What a generated tree holds, counted by walking it after generation.
///
/// `dirs` does not count the root itself; `bytes` is the sum of regular files' logical
/// lengths (a sparse file counts its full length); symlinks are not followed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Regular files.
    pub files: u64,
    /// Directories below the root.
    pub dirs: u64,
    /// Symbolic links (dangling or not).
    pub symlinks: u64,
    /// Total length of the regular files.
    pub bytes: u64,
}

impl TreeStats {
    /// The stats as one JSON object (no trailing newline).
    pub fn to_json(&self) -> String {
        format!(
            "{{\"files\":{},\"dirs\":{},\"symlinks\":{},\"bytes\":{}}}",
            self.files, self.dirs, self.symlinks, self.bytes
        )
    }
}

impl fmt::Display for TreeStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

/// What [`mutate`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MutateStats {
    /// Regular files found in the tree before the edits.
    pub scanned: u64,
    /// Files chosen for an edit (`appended + inserted + overwritten + deleted + renamed`).
    pub chosen: u64,
    /// Files with random bytes appended.
    pub appended: u64,
    /// Files with random bytes inserted at a random offset.
    pub inserted: u64,
    /// Files replaced by new random content.
    pub overwritten: u64,
    /// Files deleted.
    pub deleted: u64,
    /// Files renamed to `NAME.renamed` (contents unchanged).
    pub renamed: u64,
    /// New files created under `New/`.
    pub created: u64,
    /// Bytes written (appends, inserts, overwrites and new files).
    pub bytes_written: u64,
}

impl MutateStats {
    /// The stats as one JSON object (no trailing newline).
    pub fn to_json(&self) -> String {
        format!(
            "{{\"scanned\":{},\"chosen\":{},\"appended\":{},\"inserted\":{},\"overwritten\":{},\
             \"deleted\":{},\"renamed\":{},\"created\":{},\"bytes_written\":{}}}",
            self.scanned,
            self.chosen,
            self.appended,
            self.inserted,
            self.overwritten,
            self.deleted,
            self.renamed,
            self.created,
            self.bytes_written
        )
    }
}

impl fmt::Display for MutateStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

// ---------------------------------------------------------------------------------------
// Writing helpers
// ---------------------------------------------------------------------------------------

/// Creates `out` (and parents) if missing; refuses an existing non-empty directory or a
/// non-directory.
fn prepare_out(out: &Path) -> io::Result<()> {
    match fs::symlink_metadata(out) {
        Ok(md) if md.is_dir() => {
            if fs::read_dir(out)?.next().is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not empty; gentree only writes into a new or empty directory",
                        out.display()
                    ),
                ));
            }
            Ok(())
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", out.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(out),
        Err(e) => Err(e),
    }
}

/// Writes files under a root, remembering which directories exist.
struct Writer {
    root: PathBuf,
    dirs: HashSet<PathBuf>,
    buf: Vec<u8>,
}

impl Writer {
    fn new(root: &Path) -> Writer {
        Writer {
            root: root.to_path_buf(),
            dirs: HashSet::new(),
            buf: vec![0u8; MIB as usize],
        }
    }

    fn ensure_parent(&mut self, path: &Path) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            if !self.dirs.contains(parent) {
                fs::create_dir_all(parent)?;
                self.dirs.insert(parent.to_path_buf());
            }
        }
        Ok(())
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn write(&mut self, rel: &str, data: &[u8]) -> io::Result<PathBuf> {
        let p = self.path(rel);
        self.ensure_parent(&p)?;
        fs::write(&p, data)?;
        Ok(p)
    }

    /// Writes `n` random bytes, streamed through a 1 MiB buffer (the bytes are the same as
    /// `rng.bytes(n)`, since the buffer is a whole number of words).
    fn write_random(&mut self, rel: &str, n: u64, rng: &mut Rng) -> io::Result<PathBuf> {
        let p = self.path(rel);
        self.ensure_parent(&p)?;
        let mut f = File::create(&p)?;
        let mut left = n;
        while left > 0 {
            let k = left.min(self.buf.len() as u64) as usize;
            rng.fill(&mut self.buf[..k]);
            f.write_all(&self.buf[..k])?;
            left -= k as u64;
        }
        Ok(p)
    }
}

#[cfg(unix)]
fn set_mode(p: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(p: &Path, mode: u32) -> io::Result<()> {
    let mut perm = fs::metadata(p)?.permissions();
    perm.set_readonly(mode & 0o222 == 0);
    fs::set_permissions(p, perm)
}

#[cfg(unix)]
fn symlink(target: &str, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn symlink(target: &str, link: &Path) -> io::Result<()> {
    std::os::windows::fs::symlink_file(target, link)
}

/// Compressible text of exactly `n` bytes: lines of 5 to 14 words from [`WORDS`].
pub fn text(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 128);
    while out.len() < n {
        let words = rng.range(5, 14);
        for w in 0..words {
            if w > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(rng.choose(WORDS).as_bytes());
        }
        out.push(b'\n');
    }
    out.truncate(n);
    out
}

// ---------------------------------------------------------------------------------------
// office
// ---------------------------------------------------------------------------------------

/// An office desktop of about `total_bytes` (the result may exceed it by at most a
/// few files), deterministic in `(total_bytes, seed)`.
///
/// Shares of the total, by top-level place:
/// - 40% `Pictures/YEAR/IMG_nnnnn.jpg`: incompressible random bytes, up to 16 MiB each
///   (the cap is `total/16`, at least 64 KiB, so small totals still give several files);
/// - 25% `Documents/{Finance,HR,Projects,Letters}/WORD-nnnn.txt`: compressible text from
///   [`WORDS`], 4 KiB to 512 KiB (capped at `total/32`, at least 16 KiB);
/// - 15% `src/...`: a tree 1 to 6 directories deep of small source-like text files
///   (200 B to 24 KiB, mode 0644, 1 to 30 to a directory);
/// - 10% `Desktop/copies/copy-nnnn-NAME`: exact duplicates of earlier files;
/// - 10% `Documents/Versions/report-nnn-vN.docx`: 2 to 5 versions of a random base
///   document (256 KiB to 2 MiB, capped at `total/16`), each with 1 to 4 random inserts of
///   16 B to 4 KiB, so content-defined chunking finds most of each version in the others.
///
/// `office(dir, 2 << 20, seed)` takes milliseconds and has every category. `out` must be
/// missing or an empty directory.
pub fn office(out: &Path, total_bytes: u64, seed: u64) -> io::Result<TreeStats> {
    prepare_out(out)?;
    let mut rng = Rng::new(seed);
    let mut w = Writer::new(out);
    let total = total_bytes;
    let share = |pct: u64| (total as u128 * pct as u128 / 100) as u64;
    let mut made: Vec<PathBuf> = Vec::new();

    // Media: incompressible.
    let cap = (total / 16).clamp(64 * KIB, 16 * MIB);
    let mut left = share(40);
    let mut i = 0u64;
    while left > 0 {
        let n = left.min(rng.range(cap / 16, cap));
        let rel = format!("Pictures/{}/IMG_{:05}.jpg", 2019 + i % 7, i);
        made.push(w.write_random(&rel, n, &mut rng)?);
        left -= n;
        i += 1;
    }

    // Documents: compressible text.
    let hi = (total / 32).clamp(16 * KIB, 512 * KIB);
    let lo = (4 * KIB).min(hi / 4);
    let mut left = share(25);
    let mut i = 0u64;
    while left > 0 {
        let n = left.min(rng.range(lo, hi));
        let folder = *rng.choose(&["Finance", "HR", "Projects", "Letters"]);
        let word = *rng.choose(WORDS);
        let rel = format!("Documents/{folder}/{word}-{i:04}.txt");
        let data = text(&mut rng, n as usize);
        made.push(w.write(&rel, &data)?);
        left -= n;
        i += 1;
    }

    // Source tree: many small files, deep. Files come in runs of 1 to 30 per directory,
    // like a real source tree, rather than one directory chain per file.
    let mut left = share(15);
    let mut i = 0u64;
    let mut dir = String::new();
    let mut run = 0u64;
    while left > 0 {
        if run == 0 {
            run = rng.range(1, 30);
            let depth = rng.range(1, 6);
            dir = String::from("src");
            for _ in 0..depth {
                let word = *rng.choose(WORDS);
                let digit = rng.below(10);
                dir.push('/');
                dir.push_str(word);
                dir.push_str(&digit.to_string());
            }
        }
        run -= 1;
        let n = left.min(rng.range(200, 24 * KIB));
        let rel = format!("{dir}/mod_{i:05}.rs");
        let data = text(&mut rng, n as usize);
        let p = w.write(&rel, &data)?;
        set_mode(&p, 0o644)?;
        made.push(p);
        left -= n;
        i += 1;
    }

    // Exact duplicates of earlier files, elsewhere.
    let mut left = share(10);
    let mut i = 0u64;
    while left > 0 && !made.is_empty() {
        let src = rng.choose(&made).clone();
        let data = fs::read(&src)?;
        let name = src.file_name().unwrap_or_default().to_string_lossy();
        let rel = format!("Desktop/copies/copy-{i:04}-{name}");
        w.write(&rel, &data)?;
        left = left.saturating_sub((data.len() as u64).max(1));
        i += 1;
    }

    // Near-duplicate versions of base documents.
    let hi = (total / 16).clamp(32 * KIB, 2 * MIB);
    let lo = hi / 8;
    let mut left = share(10);
    let mut i = 0u64;
    while left > 0 {
        let n = rng.range(lo, hi) as usize;
        let base = rng.bytes(n);
        let versions = rng.range(2, 5);
        for v in 0..versions {
            if v >= 2 && left == 0 {
                break;
            }
            let mut b = base.clone();
            for _ in 0..rng.range(1, 4) {
                let at = rng.below(b.len() as u64) as usize;
                let n = rng.range(16, 4 * KIB) as usize;
                let ins = rng.bytes(n);
                b.splice(at..at, ins);
            }
            let rel = format!("Documents/Versions/report-{i:03}-v{v}.docx");
            w.write(&rel, &b)?;
            left = left.saturating_sub(b.len() as u64);
        }
        i += 1;
    }

    stats(out)
}

// ---------------------------------------------------------------------------------------
// edge
// ---------------------------------------------------------------------------------------

/// Size of the sparse-ish file in [`edge`]: 8 MiB.
pub const EDGE_BIG_FILE: u64 = 8 * MIB;

/// The edge-case tree, with an 8 MiB sparse-ish file ([`EDGE_BIG_FILE`]).
/// See [`edge_with_big_file`].
pub fn edge(out: &Path, seed: u64) -> io::Result<TreeStats> {
    edge_with_big_file(out, seed, EDGE_BIG_FILE)
}

/// Names and shapes that break naive backup tools, deterministic in `(seed, big_file)`:
///
/// - `empty.txt` (0 bytes) and `empty-dir/` (an empty directory);
/// - `spaces in name/a file with spaces.txt`;
/// - `unicodé/naïve-文件-файл-🙂.txt`;
/// - `long/xxx…x.txt`, a 200-byte file name;
/// - `deep/d0/…/d39/bottom.txt`, 40 directories deep;
/// - `bin/run.sh`, an executable script (0755);
/// - `readonly.txt`, read-only (0444);
/// - `..dotdot../..looks-like-parent` (names that look like path tricks but are not);
/// - `.hidden/.config`, hidden files;
/// - `big-sparse.img`: `big_file` bytes, zeros except 4 KiB of random data in the middle
///   (written with a hole before and after the data, so it is sparse where the file
///   system supports it);
/// - `link-to-empty` → `empty.txt`, a symlink to a file;
/// - `dangling-link` → `../nowhere`, a dangling symlink pointing out of the tree;
/// - `newline\nin-name.txt`, a name containing a newline;
/// - `random.bin`, 64 KiB of random data (so different seeds give different trees).
///
/// `out` must be missing or an empty directory.
pub fn edge_with_big_file(out: &Path, seed: u64, big_file: u64) -> io::Result<TreeStats> {
    prepare_out(out)?;
    let mut rng = Rng::new(seed);
    let mut w = Writer::new(out);
    w.write("empty.txt", b"")?;
    fs::create_dir_all(out.join("empty-dir"))?;
    w.write("spaces in name/a file with spaces.txt", b"spaces\n")?;
    w.write("unicodé/naïve-文件-файл-🙂.txt", "unicode\n".as_bytes())?;
    w.write(&format!("long/{}.txt", "x".repeat(196)), b"long name\n")?;
    let mut deep = String::from("deep");
    for i in 0..40 {
        deep.push_str(&format!("/d{i}"));
    }
    deep.push_str("/bottom.txt");
    w.write(&deep, b"deep\n")?;
    let p = w.write("bin/run.sh", b"#!/bin/sh\necho hi\n")?;
    set_mode(&p, 0o755)?;
    let p = w.write("readonly.txt", b"ro\n")?;
    set_mode(&p, 0o444)?;
    w.write("..dotdot../..looks-like-parent", b"not a traversal\n")?;
    w.write(".hidden/.config", b"hidden\n")?;

    let big = out.join("big-sparse.img");
    let mut f = File::create(&big)?;
    f.set_len(big_file)?;
    let data = rng.bytes(4096.min(big_file) as usize);
    f.seek(SeekFrom::Start((big_file - data.len() as u64) / 2))?;
    f.write_all(&data)?;
    drop(f);

    w.write_random("random.bin", 64 * KIB, &mut rng)?;
    symlink("empty.txt", &out.join("link-to-empty"))?;
    symlink("../nowhere", &out.join("dangling-link"))?;
    w.write("newline\nin-name.txt", b"newline in name\n")?;
    stats(out)
}

// ---------------------------------------------------------------------------------------
// small files
// ---------------------------------------------------------------------------------------

/// `count` small text files (100 B to 4 KiB), 100 to a directory:
/// `gNNN/dNNNNN/fNNNNNNN.txt` (file `i` is in `d{i/100}`, which is in `g{i/10000}`, so no
/// directory holds more than 100 entries). Deterministic in `(count, seed)`.
///
/// `out` must be missing or an empty directory.
pub fn small_files(out: &Path, count: u64, seed: u64) -> io::Result<TreeStats> {
    prepare_out(out)?;
    let mut rng = Rng::new(seed);
    let mut w = Writer::new(out);
    for i in 0..count {
        let n = rng.range(100, 4 * KIB) as usize;
        let data = text(&mut rng, n);
        let rel = format!("g{:03}/d{:05}/f{:07}.txt", i / 10_000, i / 100, i);
        w.write(&rel, &data)?;
    }
    stats(out)
}

// ---------------------------------------------------------------------------------------
// mutate
// ---------------------------------------------------------------------------------------

/// How far [`mutate`] moves the modification time of the files and directories it
/// changes: one day forward from their previous mtime.
pub const MUTATE_MTIME_STEP: Duration = Duration::from_secs(86_400);

/// A day's edits to the tree at `root`, in place, deterministic in the tree and `seed`.
///
/// The regular files under `root` (symlinks are not followed; sorted by path bytes) are
/// listed and `max(1, files * percent / 100)` of them chosen at random. Each chosen file
/// gets one edit, picked uniformly: append 1 B to 64 KiB, insert 1 B to 8 KiB at a random
/// offset, overwrite with 1 B to 256 KiB of new content, delete, or rename to
/// `NAME.renamed`. Then `max(1, chosen / 4)` new files (1 B to 1 MiB) are written under
/// `New/`.
///
/// Every edited file, and the directory of every deleted, renamed or created file, gets a
/// modification time [`MUTATE_MTIME_STEP`] (one day) after its previous one, set
/// explicitly, so a backup tool that compares mtimes sees the change even if the tree was
/// generated and edited within the same second. Read-only files are made writable for the
/// edit and get their mode back afterwards.
pub fn mutate(root: &Path, seed: u64, percent: u32) -> io::Result<MutateStats> {
    let md = fs::metadata(root)?;
    if !md.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", root.display()),
        ));
    }
    let mut rng = Rng::new(seed);
    let mut files: Vec<PathBuf> = walk(root)?
        .into_iter()
        .filter(|(_, kind)| *kind == Kind::File)
        .map(|(p, _)| p)
        .collect();
    sort_paths(&mut files);
    let mut st = MutateStats {
        scanned: files.len() as u64,
        ..MutateStats::default()
    };
    let k = ((files.len() as u64 * percent as u64) / 100).max(1);
    let k = k.min(files.len() as u64) as usize;
    // Partial Fisher-Yates: the first k entries become the sample.
    for i in 0..k {
        let j = i + rng.below((files.len() - i) as u64) as usize;
        files.swap(i, j);
    }
    let mut touched_dirs: Vec<PathBuf> = Vec::new();
    for p in &files[..k] {
        st.chosen += 1;
        match rng.below(5) {
            0 => {
                let n = rng.range(1, 64 * KIB) as usize;
                let data = rng.bytes(n);
                edit_file(p, |p| {
                    OpenOptions::new().append(true).open(p)?.write_all(&data)
                })?;
                st.appended += 1;
                st.bytes_written += n as u64;
            }
            1 => {
                let mut b = Vec::new();
                File::open(p)?.read_to_end(&mut b)?;
                let at = rng.below(b.len() as u64 + 1) as usize;
                let n = rng.range(1, 8 * KIB) as usize;
                b.splice(at..at, rng.bytes(n));
                edit_file(p, |p| fs::write(p, &b))?;
                st.inserted += 1;
                st.bytes_written += n as u64;
            }
            2 => {
                let n = rng.range(1, 256 * KIB) as usize;
                let data = rng.bytes(n);
                edit_file(p, |p| fs::write(p, &data))?;
                st.overwritten += 1;
                st.bytes_written += n as u64;
            }
            3 => {
                fs::remove_file(p)?;
                touched_dirs.push(parent_of(p));
                st.deleted += 1;
            }
            _ => {
                let mut to = OsString::from(p.as_os_str());
                to.push(".renamed");
                fs::rename(p, &to)?;
                touched_dirs.push(parent_of(p));
                st.renamed += 1;
            }
        }
    }
    let new_dir = root.join("New");
    fs::create_dir_all(&new_dir)?;
    for i in 0..(k / 4).max(1) {
        let tag = rng.next_u64() as u32;
        let n = rng.range(1, MIB);
        let p = new_dir.join(format!("new-{tag:08x}-{i:04}.bin"));
        fs::write(&p, rng.bytes(n as usize))?;
        st.created += 1;
        st.bytes_written += n;
    }
    touched_dirs.push(new_dir);
    touched_dirs.sort();
    touched_dirs.dedup();
    for d in &touched_dirs {
        bump_mtime(d)?;
    }
    Ok(st)
}

fn parent_of(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Runs `edit` on `p` (made writable for the duration if it was read-only), then moves its
/// mtime one step forward from the previous one.
fn edit_file(p: &Path, edit: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let md = fs::metadata(p)?;
    let old = md.modified()?;
    let perms = md.permissions();
    let readonly = perms.readonly();
    if readonly {
        #[cfg(unix)]
        set_mode(p, perms.mode() | 0o200)?;
        #[cfg(not(unix))]
        set_mode(p, 0o644)?;
    }
    let r = edit(p);
    if readonly {
        fs::set_permissions(p, perms)?;
    }
    r?;
    set_mtime(p, old + MUTATE_MTIME_STEP)
}

fn bump_mtime(p: &Path) -> io::Result<()> {
    let old = fs::metadata(p)?.modified()?;
    set_mtime(p, old + MUTATE_MTIME_STEP)
}

fn set_mtime(p: &Path, t: SystemTime) -> io::Result<()> {
    // futimens on a read-only descriptor is allowed for the owner, so this works for
    // read-only files and for directories.
    File::open(p)?.set_times(FileTimes::new().set_modified(t))
}

// ---------------------------------------------------------------------------------------
// Walking, stats and digest
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// Every entry below `root` (not `root` itself), unsorted; symlinks are not followed.
fn walk(root: &Path) -> io::Result<Vec<(PathBuf, Kind)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            let kind = if ft.is_symlink() {
                Kind::Symlink
            } else if ft.is_dir() {
                Kind::Dir
            } else if ft.is_file() {
                Kind::File
            } else {
                Kind::Other
            };
            let p = entry.path();
            if kind == Kind::Dir {
                stack.push(p.clone());
            }
            out.push((p, kind));
        }
    }
    Ok(out)
}

#[cfg(unix)]
fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

#[cfg(not(unix))]
fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_encoded_bytes()
}

fn sort_paths(v: &mut [PathBuf]) {
    v.sort_by(|a, b| path_bytes(a).cmp(path_bytes(b)));
}

/// Counts what is below `root` (see [`TreeStats`]).
pub fn stats(root: &Path) -> io::Result<TreeStats> {
    let mut st = TreeStats::default();
    for (p, kind) in walk(root)? {
        match kind {
            Kind::File => {
                st.files += 1;
                st.bytes += fs::symlink_metadata(&p)?.len();
            }
            Kind::Dir => st.dirs += 1,
            Kind::Symlink => st.symlinks += 1,
            Kind::Other => {}
        }
    }
    Ok(st)
}

/// A 64-bit FNV-1a hash, fed in pieces.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, data: &[u8]) {
        let mut h = self.0;
        for &b in data {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
    fn frame(&mut self, data: &[u8]) {
        self.update(&(data.len() as u64).to_le_bytes());
        self.update(data);
    }
}

/// A hash of everything below `root` that a backup must restore: every path (relative,
/// sorted), its kind, its permission bits (unix), file contents and symlink targets.
/// Modification times are not included. Not cryptographic: for comparing trees in tests.
pub fn digest(root: &Path) -> io::Result<u64> {
    let mut entries = walk(root)?;
    entries.sort_by(|a, b| path_bytes(&a.0).cmp(path_bytes(&b.0)));
    let mut h = Fnv::new();
    let mut buf = vec![0u8; MIB as usize];
    for (p, kind) in entries {
        let rel = p.strip_prefix(root).unwrap_or(&p);
        h.frame(path_bytes(rel));
        let md = fs::symlink_metadata(&p)?;
        #[cfg(unix)]
        let mode = md.permissions().mode() & 0o7777;
        #[cfg(not(unix))]
        let mode = md.permissions().readonly() as u32;
        match kind {
            Kind::File => {
                h.update(b"f");
                h.update(&mode.to_le_bytes());
                h.update(&md.len().to_le_bytes());
                let mut f = File::open(&p)?;
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            }
            Kind::Dir => {
                h.update(b"d");
                h.update(&mode.to_le_bytes());
            }
            Kind::Symlink => {
                h.update(b"l");
                h.frame(path_bytes(&fs::read_link(&p)?));
            }
            Kind::Other => h.update(b"o"),
        }
    }
    Ok(h.0)
}

pub use swarmbak_core::parse_size;
