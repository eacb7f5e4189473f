//! The embedded database on a really full filesystem: a 2 MiB tmpfs, mounted by the test.
//! It needs root (or CAP_SYS_ADMIN), as the project's machines and CI run; without it the
//! test fails, saying so.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use swarmbak_tracker::sqlite::Sqlite;
use swarmbak_tracker::storage::{Published, Storage, StorageError};

mod common;
use common::torrents::{row_of, torrent};

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
        assert!(
            out.status.success(),
            "this test mounts a {size} tmpfs to fill a real filesystem, and needs root \
             (CAP_SYS_ADMIN) for that: `mount -t tmpfs` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a file still open (a failed assertion) does not keep it mounted.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes `path` until the filesystem has no byte left.
fn fill(path: &Path) -> PathBuf {
    let mut f = File::create(path).unwrap();
    for chunk in [64 * 1024, 4096, 1] {
        let buf = vec![0xa5u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    let _ = f.sync_all();
    path.to_owned()
}

#[test]
fn a_full_filesystem_writes_nothing_and_recovers() {
    let fs_ = Tmpfs::mount("2m");
    let data = fs_.path().join("data");
    let (mut db, _) = Sqlite::open(&data).unwrap();
    let small = torrent(1, 1);
    let r_small = row_of(&small, "k", "n", 1);
    db.publish(&r_small, &small).unwrap();

    let filler = fill(&fs_.path().join("filler"));
    // ~60 KB of metainfo: more than any space the WAL file already has.
    let big = torrent(2, 1000);
    let r_big = row_of(&big, "k", "n", 2);
    match db.publish(&r_big, &big) {
        Err(StorageError::Full) => {}
        other => panic!("publish on a full disk: {other:?}"),
    }
    match db.set_setting("a", &"x".repeat(100_000)) {
        Err(StorageError::Full) => {}
        other => panic!("set_setting on a full disk: {other:?}"),
    }
    assert_eq!(db.snapshots().unwrap(), vec![r_small.clone()]);
    assert_eq!(db.metainfo(&r_big.infohash).unwrap(), None);
    assert_eq!(db.metainfo(&r_small.infohash).unwrap(), Some(small.clone()));

    // Space is back: the same handle publishes.
    fs::remove_file(filler).unwrap();
    assert_eq!(
        db.publish(&r_big, &big).unwrap(),
        Published::New(r_big.clone())
    );
    drop(db);
    let (mut db, _) = Sqlite::open(&data).unwrap();
    assert_eq!(db.snapshots().unwrap(), vec![r_small, r_big.clone()]);
    assert_eq!(db.metainfo(&r_big.infohash).unwrap(), Some(big));
    assert_eq!(db.setting("a").unwrap(), None);
}
