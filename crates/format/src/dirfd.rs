//! Directory handles for restore (format-v1.md §11.8): a restore cannot be redirected.
//!
//! The target directory is opened once ([`Target::open`]); everything below it is reached
//! one component at a time with `openat(O_DIRECTORY | O_NOFOLLOW)` from that handle
//! ([`Dirs`]), and is created (`mkdirat`, `openat(O_CREAT | O_NOFOLLOW)`, `symlinkat`),
//! checked (`fstatat(AT_SYMLINK_NOFOLLOW)`, `fstat`) and given its mode and times
//! (`fchmod`, `futimens`, `utimensat(AT_SYMLINK_NOFOLLOW)`) through the handle of its
//! directory or its own descriptor, never by path. A symlink planted, or swapped in while
//! the restore runs, anywhere below the target is therefore never followed: the call that
//! meets it fails and the entry is refused ([`Fail::Found`]).
//!
//! The target's own path is the user's to choose and may pass through symlinks above it;
//! only its last component must be a directory, not a symlink.
//!
//! No `unsafe` here: the system calls are rustix's.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::FormatError;

/// Why an operation on an entry below the target failed.
#[derive(Debug)]
pub(crate) enum Fail {
    Io(io::Error),
    /// Something else than what the snapshot has is at the entry's place (a symlink, a
    /// file where a directory belongs, ...). It is neither followed nor replaced.
    Found {
        found: &'static str,
        want: &'static str,
    },
    /// A directory a new (not resumed) restore is about to make already exists: someone
    /// else is writing in the target.
    Appeared,
}

impl From<Errno> for Fail {
    fn from(e: Errno) -> Self {
        Fail::Io(e.into())
    }
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Io(e)
    }
}

/// What kind of thing a file type is, for messages.
fn describe(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice | FileType::BlockDevice => "a device",
        _ => "of an unknown type",
    }
}

fn file_type(st: &rfs::Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Turns the error of an `openat` that refused to follow or to open something of the
/// wrong type (`ELOOP`, `ENOTDIR`, `EISDIR`, `ENXIO`) into [`Fail::Found`], naming what is there.
fn refused(dir: BorrowedFd<'_>, name: &OsStr, want: &'static str, e: Errno) -> Fail {
    if matches!(e, Errno::LOOP | Errno::NOTDIR | Errno::ISDIR | Errno::NXIO) {
        if let Ok(st) = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            let found = describe(file_type(&st));
            if found != want {
                return Fail::Found { found, want };
            }
        }
    }
    Fail::Io(e.into())
}

/// Checks an opened descriptor is of the kind wanted.
fn check(fd: &OwnedFd, want: FileType) -> Result<(), Fail> {
    let t = file_type(&rfs::fstat(fd)?);
    if t == want {
        Ok(())
    } else {
        Err(Fail::Found {
            found: describe(t),
            want: describe(want),
        })
    }
}

/// Splits a snapshot-relative path into its directory ("" for the top) and last name.
pub(crate) fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

/// Access and modification time, both `sec` + `ns`.
pub(crate) fn times(sec: i64, ns: u32) -> Timestamps {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: ns.into(),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// The restore's target directory, opened once.
pub(crate) struct Target {
    fd: OwnedFd,
    path: PathBuf,
}

impl Target {
    /// Opens the directory `path` (`O_DIRECTORY | O_NOFOLLOW`: refused if it is a symlink).
    pub(crate) fn open(path: &Path) -> Result<Target, FormatError> {
        let fd = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => FormatError::Invalid(format!(
                "{} exists and is not a directory; give a new or empty directory",
                path.display()
            )),
            e => FormatError::io(path, e.into()),
        })?;
        Ok(Target {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The path of `rel` below the target, for messages.
    pub(crate) fn display(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.path.clone()
        } else {
            self.path.join(OsStr::from_bytes(rel))
        }
    }

    /// Whether the target holds no entry.
    pub(crate) fn is_empty(&self) -> Result<bool, FormatError> {
        let io = |e: Errno| FormatError::io(&self.path, e.into());
        for entry in rfs::Dir::read_from(&self.fd).map_err(io)? {
            let name = entry.map_err(io)?;
            if !matches!(name.file_name().to_bytes(), b"." | b"..") {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The error for `fail` on the entry `rel`, saying what to do next.
    pub(crate) fn error(&self, rel: &[u8], fail: Fail) -> FormatError {
        let p = self.display(rel);
        match fail {
            Fail::Io(e) => FormatError::io(&p, e),
            Fail::Found { found, want } => FormatError::Unsafe(format!(
                "{} exists and is {found}, not {want}; restore neither follows nor replaces it. \
                 Move it away, or if something else is changing {} while you restore, restore \
                 into a new directory only you can write",
                p.display(),
                self.path.display()
            )),
            Fail::Appeared => FormatError::Unsafe(format!(
                "{} appeared while restoring into {}: something else is writing there; \
                 restore into a new directory only you can write",
                p.display(),
                self.path.display()
            )),
        }
    }

    /// A cache of directory handles for walking below the target.
    pub(crate) fn dirs(&self) -> Dirs<'_> {
        Dirs {
            target: self,
            path: Vec::new(),
            levels: Vec::new(),
        }
    }
}

/// How many directory handles a [`Dirs`] holds open at most.
const KEEP: usize = 16;

struct Level {
    /// Where this component ends in `Dirs::path`.
    end: usize,
    fd: Option<OwnedFd>,
}

/// The handles of the directories on the way to the one last asked for. Entries come in
/// manifest order (a directory's entries together), so an entry costs no walk at all and
/// moving to the next directory costs an `openat` per component that differs. At most
/// [`KEEP`] handles are held (the deepest ones): going back up above them walks again
/// from the target.
pub(crate) struct Dirs<'t> {
    target: &'t Target,
    path: Vec<u8>,
    /// One per component of `path`; the levels holding a handle are contiguous, and every
    /// level below the deepest held one is opened again when needed.
    levels: Vec<Level>,
}

impl Dirs<'_> {
    /// The handle of the directory `rel` below the target ("" is the target itself),
    /// every component opened with `O_DIRECTORY | O_NOFOLLOW` from the one above.
    pub(crate) fn get(&mut self, rel: &[u8]) -> Result<BorrowedFd<'_>, FormatError> {
        let path = &self.path;
        let shared = self
            .levels
            .iter()
            .take_while(|l| {
                rel.get(..l.end) == path.get(..l.end) && matches!(rel.get(l.end), None | Some(b'/'))
            })
            .count();
        self.levels.truncate(shared);
        self.path.clear();
        self.path.extend_from_slice(rel);
        let mut start = self.levels.last().map_or(0, |l| l.end + 1);
        while start < rel.len() {
            let end = rel[start..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(rel.len(), |i| start + i);
            self.levels.push(Level { end, fd: None });
            start = end + 1;
        }
        let first = self
            .levels
            .iter()
            .rposition(|l| l.fd.is_some())
            .map_or(0, |i| i + 1);
        for i in first..self.levels.len() {
            let start = i.checked_sub(1).map_or(0, |p| self.levels[p].end + 1);
            let end = self.levels[i].end;
            let opened = {
                let parent = match i.checked_sub(1) {
                    None => Some(self.target.fd.as_fd()),
                    Some(p) => self.levels[p].fd.as_ref().map(|f| f.as_fd()),
                };
                match parent {
                    Some(parent) => open_dir(parent, &rel[start..end]),
                    None => Err(Fail::Io(io::Error::other(
                        "no handle for the directory above",
                    ))),
                }
            };
            let fd = match opened {
                Ok(fd) => fd,
                Err(f) => {
                    self.levels.truncate(i);
                    return Err(self.target.error(&rel[..end], f));
                }
            };
            if self.levels.iter().filter(|l| l.fd.is_some()).count() >= KEEP {
                if let Some(l) = self.levels.iter_mut().find(|l| l.fd.is_some()) {
                    l.fd = None;
                }
            }
            self.levels[i].fd = Some(fd);
        }
        match self.levels.last() {
            None => Ok(self.target.fd.as_fd()),
            Some(l) => l.fd.as_ref().map(|f| f.as_fd()).ok_or_else(|| {
                self.target
                    .error(rel, Fail::Io(io::Error::other("directory handle not open")))
            }),
        }
    }
}

/// Opens the directory `name` in `dir` without following a symlink.
fn open_dir(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Fail> {
    let name = OsStr::from_bytes(name);
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| refused(dir, name, "a directory", e))
}

/// Makes the directory `name` in `dir` (mode 0700). Returns whether it was made now; a
/// directory already there is accepted, anything else is refused.
pub(crate) fn mkdir(dir: BorrowedFd<'_>, name: &[u8]) -> Result<bool, Fail> {
    let name = OsStr::from_bytes(name);
    match rfs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => {
            let t = file_type(&rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?);
            if t == FileType::Directory {
                Ok(false)
            } else {
                Err(Fail::Found {
                    found: describe(t),
                    want: "a directory",
                })
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// What is at `name` in `dir` (not following a symlink), if anything: its type and size.
pub(crate) fn stat(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Option<(FileType, u64)>, Fail> {
    match rfs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some((file_type(&st), st.st_size as u64))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// How a regular file is opened.
#[derive(Clone, Copy)]
pub(crate) enum Access {
    Read,
    /// Write, created (mode 0600) if missing.
    Write,
    /// Append, created (mode 0600) if missing.
    Append,
}

/// Opens the regular file `name` in `dir` without following a symlink (and without
/// blocking or taking a terminal, should a FIFO or a device have been put there).
pub(crate) fn open_file(dir: BorrowedFd<'_>, name: &[u8], access: Access) -> Result<File, Fail> {
    let name = OsStr::from_bytes(name);
    let flags = OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    let flags = flags
        | match access {
            Access::Read => OFlags::RDONLY,
            Access::Write => OFlags::WRONLY | OFlags::CREATE,
            Access::Append => OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND,
        };
    let fd = rfs::openat(dir, name, flags, Mode::from_raw_mode(0o600))
        .map_err(|e| refused(dir, name, "a regular file", e))?;
    check(&fd, FileType::RegularFile)?;
    Ok(File::from(fd))
}

/// Sets the mode and times of a regular file opened with [`open_file`].
pub(crate) fn set_file_meta(f: &File, mode: u32, t: &Timestamps) -> io::Result<()> {
    rfs::fchmod(f, Mode::from_raw_mode(mode))?;
    Ok(rfs::futimens(f, t)?)
}

/// An existing directory or regular file below the target, held open to change its mode
/// and times. When its mode does not let its owner read it (an interrupted restore
/// already gave it its final mode), it is held as an `O_PATH` handle and changed through
/// `/proc/self/fd`, which names exactly that file and follows nothing else.
pub(crate) struct Meta {
    fd: OwnedFd,
    by_proc: bool,
}

impl Meta {
    /// Opens `name` in `dir`, which must be of type `want` (directory or regular file).
    pub(crate) fn open(dir: BorrowedFd<'_>, name: &[u8], want: FileType) -> Result<Meta, Fail> {
        let name = OsStr::from_bytes(name);
        let mut flags = OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if want == FileType::Directory {
            flags |= OFlags::DIRECTORY;
        } else {
            flags |= OFlags::NONBLOCK | OFlags::NOCTTY;
        }
        let (fd, by_proc) = match rfs::openat(dir, name, flags | OFlags::RDONLY, Mode::empty()) {
            Ok(fd) => (fd, false),
            // O_PATH opens a symlink itself rather than failing: `check` refuses it below.
            Err(Errno::ACCESS) => (
                rfs::openat(dir, name, flags | OFlags::PATH, Mode::empty())
                    .map_err(|e| refused(dir, name, describe(want), e))?,
                true,
            ),
            Err(e) => return Err(refused(dir, name, describe(want), e)),
        };
        check(&fd, want)?;
        Ok(Meta { fd, by_proc })
    }

    fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }

    pub(crate) fn chmod(&self, mode: u32) -> io::Result<()> {
        let mode = Mode::from_raw_mode(mode);
        if self.by_proc {
            Ok(rfs::chmodat(
                rfs::CWD,
                self.proc_path(),
                mode,
                AtFlags::empty(),
            )?)
        } else {
            Ok(rfs::fchmod(&self.fd, mode)?)
        }
    }

    /// Mode, then times.
    pub(crate) fn set(&self, mode: u32, t: &Timestamps) -> io::Result<()> {
        self.chmod(mode)?;
        self.set_times(t)
    }

    fn set_times(&self, t: &Timestamps) -> io::Result<()> {
        if self.by_proc {
            Ok(rfs::utimensat(
                rfs::CWD,
                self.proc_path(),
                t,
                AtFlags::empty(),
            )?)
        } else {
            Ok(rfs::futimens(&self.fd, t)?)
        }
    }
}

/// Makes the symlink `name` in `dir` pointing to `target` (verbatim), replacing a symlink
/// already there (left by an interrupted restore) and refusing anything else; then sets
/// its times without following it.
pub(crate) fn symlink(
    dir: BorrowedFd<'_>,
    name: &[u8],
    target: &[u8],
    t: &Timestamps,
) -> Result<(), Fail> {
    let name = OsStr::from_bytes(name);
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if file_type(&st) == FileType::Symlink => {
            rfs::unlinkat(dir, name, AtFlags::empty())?
        }
        Ok(st) => {
            return Err(Fail::Found {
                found: describe(file_type(&st)),
                want: "a symlink",
            })
        }
        Err(Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    rfs::symlinkat(OsStr::from_bytes(target), dir, name)?;
    Ok(rfs::utimensat(dir, name, t, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Removes the regular file `name` from `dir`.
pub(crate) fn remove_file(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    Ok(rfs::unlinkat(
        dir,
        OsStr::from_bytes(name),
        AtFlags::empty(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Walking up, down and sideways through a tree deeper than [`KEEP`] always hands out
    /// the handle of the directory asked for, and never holds more than `KEEP` open.
    #[test]
    fn dirs_reach_the_directory_asked_for_holding_at_most_keep_handles() {
        let t = tempfile::tempdir().unwrap();
        let deep: Vec<String> = (0..40).map(|i| format!("d{i}")).collect();
        let deep = deep.join("/");
        std::fs::create_dir_all(t.path().join(&deep)).unwrap();
        for i in [0usize, 3, 17, 30] {
            let above: Vec<&str> = deep.split('/').take(i).collect();
            let side = [above.join("/"), "side/x".into()].join("/");
            std::fs::create_dir_all(t.path().join(side.trim_start_matches('/'))).unwrap();
        }
        let target = Target::open(t.path()).unwrap();
        let mut dirs = target.dirs();
        let prefix = |n: usize| deep.split('/').take(n).collect::<Vec<_>>().join("/");
        let walk = [
            prefix(40),
            prefix(40),
            "side/x".into(),
            format!("{}/side/x", prefix(30)),
            prefix(2),
            format!("{}/side", prefix(17)),
            prefix(39),
            String::new(),
            format!("{}/side/x", prefix(3)),
            prefix(25),
        ];
        for rel in &walk {
            let ino = rfs::fstat(dirs.get(rel.as_bytes()).unwrap())
                .unwrap()
                .st_ino;
            let want = std::fs::metadata(t.path().join(rel)).unwrap().ino();
            assert_eq!(ino, want, "{rel}");
            let held = dirs.levels.iter().filter(|l| l.fd.is_some()).count();
            assert!(held <= KEEP, "{rel}: {held} handles held");
        }
        // A component that is a symlink is refused, naming it.
        std::os::unix::fs::symlink(t.path(), t.path().join("d0/link")).unwrap();
        let err = dirs.get(b"d0/link/d1").unwrap_err().to_string();
        assert!(
            err.contains("d0/link exists and is a symlink, not a directory"),
            "{err}"
        );
        assert!(dirs.get(b"d0/d1").is_ok());
    }

    /// The `O_PATH` fallback (an entry its owner may not read) changes exactly the entry
    /// held, through `/proc/self/fd`; a symlink is refused, not followed. (Tests run as
    /// root here, so the `EACCES` that selects the fallback is forced by hand.)
    #[test]
    fn meta_changes_the_entry_held_and_refuses_symlinks() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("f"), b"x").unwrap();
        std::fs::write(t.path().join("outside"), b"x").unwrap();
        std::os::unix::fs::symlink(t.path().join("outside"), t.path().join("link")).unwrap();
        let before = std::fs::metadata(t.path().join("outside")).unwrap();
        let target = Target::open(t.path()).unwrap();
        let ts = times(1_700_000_000, 5);
        for (name, want, mode) in [
            ("d", FileType::Directory, 0o751),
            ("f", FileType::RegularFile, 0o000),
        ] {
            let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = rfs::openat(target.fd(), name, flags, Mode::empty()).unwrap();
            check(&fd, want).unwrap();
            Meta { fd, by_proc: true }.set(mode, &ts).unwrap();
            let md = std::fs::symlink_metadata(t.path().join(name)).unwrap();
            assert_eq!(
                (md.mode() & 0o7777, md.mtime(), md.mtime_nsec()),
                (mode, 1_700_000_000, 5)
            );
        }
        for want in [FileType::RegularFile, FileType::Directory] {
            match Meta::open(target.fd(), b"link", want) {
                Err(Fail::Found {
                    found: "a symlink", ..
                }) => {}
                other => panic!("{want:?}: {:?}", other.map(|_| ())),
            }
        }
        let after = std::fs::metadata(t.path().join("outside")).unwrap();
        assert_eq!(
            after.mode(),
            before.mode(),
            "the symlink's target kept its mode"
        );
    }
}
