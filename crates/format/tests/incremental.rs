//! Excludes, backups from a list of changed paths, and backups that write nothing when
//! nothing changed (`BackupOptions::exclude`, `changed`, `skip_unchanged`).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use swarmbak_format::backup::{self, NoProgress, Progress};
use swarmbak_format::manifest::{ChunkId, Kind};
use swarmbak_format::{
    BackupOptions, BackupReport, ChangedSince, Excludes, Home, InfoHash, Manifest,
};

fn home(dir: &Path) -> Home {
    Home::create(&dir.join("home")).unwrap().0
}

fn run(home: &Home, o: &BackupOptions) -> BackupReport {
    backup::backup(home, o, &NoProgress).unwrap()
}

/// Paths and file chunk names of a snapshot's entries, and everything else they record.
type Seen = (
    Vec<u8>,
    Kind,
    u32,
    i64,
    u32,
    u64,
    u64,
    i64,
    u32,
    Vec<u8>,
    Vec<ChunkId>,
);

fn entries(home: &Home, ih: &InfoHash) -> Vec<Seen> {
    let m = Manifest::decode(&home.store().manifest_cache(ih).unwrap().unwrap()).unwrap();
    m.entries
        .iter()
        .map(|e| {
            let ids = e.chunks.iter().map(|&i| m.chunks[i as usize].id).collect();
            (
                e.path.clone(),
                e.kind,
                e.mode,
                e.mtime,
                e.mtime_ns,
                e.size,
                e.ino,
                e.ctime,
                e.ctime_ns,
                e.target.clone(),
                ids,
            )
        })
        .collect()
}

fn paths(home: &Home, ih: &InfoHash) -> Vec<String> {
    entries(home, ih)
        .into_iter()
        .map(|e| String::from_utf8(e.0).unwrap())
        .collect()
}

#[derive(Default)]
struct Warnings(Mutex<Vec<String>>);
impl Progress for Warnings {
    fn warn(&self, msg: &str) {
        self.0.lock().unwrap().push(msg.to_string());
    }
}

#[test]
fn excludes_leave_out_what_they_match() {
    let tmp = tempfile::tempdir().unwrap();
    let h = home(tmp.path());
    let t = tmp.path().join("tree");
    for d in [
        "a/b/c/.cache/deep",
        "home/u/Downloads/x",
        "home/u/docs",
        "home/u/other/Downloads",
        "src/build/out",
        "src/sub",
    ] {
        fs::create_dir_all(t.join(d)).unwrap();
    }
    for f in [
        "a/b/c/.cache/deep/f",
        "a/b/c/keep",
        "a/b/c/scratch.tmp",
        "home/u/Downloads/x/big",
        "home/u/docs/cv",
        "home/u/other/Downloads/kept",
        "src/build/out/o",
        "src/sub/build",
        "top.tmp",
    ] {
        fs::write(t.join(f), f).unwrap();
    }
    let abs = fs::canonicalize(&t).unwrap();
    let mut o = BackupOptions::new(vec![t.clone()]);
    o.exclude = Excludes::new(&[
        ".cache".into(),
        "*.tmp".into(),
        format!("{}/home/*/Downloads", abs.display()),
        "build/".into(),
    ])
    .unwrap();
    let r = run(&h, &o);
    assert_eq!(r.excluded, 5);
    assert!(r.full_walk && !r.unchanged);
    let got = paths(&h, &r.infohash);
    let want = [
        "tree",
        "tree/a",
        "tree/a/b",
        "tree/a/b/c",
        "tree/a/b/c/keep",
        "tree/home",
        "tree/home/u",
        "tree/home/u/docs",
        "tree/home/u/docs/cv",
        "tree/home/u/other",
        "tree/home/u/other/Downloads",
        "tree/home/u/other/Downloads/kept",
        "tree/src",
        "tree/src/sub",
        // A file named like a directories-only pattern.
        "tree/src/sub/build",
    ];
    assert_eq!(got, want);

    // A PATH is backed up even when a pattern matches it.
    let mut o = BackupOptions::new(vec![t.join("top.tmp"), t.join("home/u/Downloads")]);
    o.exclude = Excludes::new(&[
        "*.tmp".into(),
        format!("{}/home/*/Downloads", abs.display()),
        format!("{}/home/u/Downloads/x", abs.display()),
    ])
    .unwrap();
    let r = run(&h, &o);
    assert_eq!(paths(&h, &r.infohash), ["top.tmp", "Downloads"]);
    assert_eq!(r.excluded, 1);
}

#[test]
fn skip_unchanged_writes_no_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let h = home(tmp.path());
    let t = tmp.path().join("tree");
    fs::create_dir_all(t.join("d")).unwrap();
    fs::write(t.join("d/f"), b"one").unwrap();
    fs::write(t.join("g"), b"two").unwrap();
    std::os::unix::fs::symlink("d/f", t.join("l")).unwrap();
    let mut o = BackupOptions::new(vec![t.clone()]);
    let first = run(&h, &o);
    assert!(!first.unchanged);

    o.skip_unchanged = true;
    let again = run(&h, &o);
    assert!(again.unchanged);
    assert_eq!(again.infohash, first.infohash);
    assert_eq!(again.info.infohash, first.info.infohash);
    assert_eq!(h.store().list().unwrap().len(), 1);

    // Without the option, a snapshot is written as before.
    o.skip_unchanged = false;
    let written = run(&h, &o);
    assert!(!written.unchanged);
    assert_ne!(written.infohash, first.infohash);
    assert_eq!(h.store().list().unwrap().len(), 2);

    // New content: a new snapshot.
    o.skip_unchanged = true;
    fs::write(t.join("d/f"), b"three").unwrap();
    let changed = run(&h, &o);
    assert!(!changed.unchanged);
    assert_eq!(h.store().list().unwrap().len(), 3);
    assert!(run(&h, &o).unchanged);

    // Only a mode changed: a new snapshot too.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(t.join("g"), fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!run(&h, &o).unchanged);
    assert_eq!(h.store().list().unwrap().len(), 4);

    // Other recipients: not the same snapshot.
    let rec = swarmbak_format::Identity::generate().to_public();
    o.recovery = vec![rec];
    let r = run(&h, &o);
    assert!(!r.unchanged);
    assert!(run(&h, &o).unchanged);
}

/// Applies some edits; returns the changed paths.
fn edit(t: &Path) -> Vec<PathBuf> {
    fs::write(t.join("d1/f1"), b"edited").unwrap();
    fs::write(t.join("d2/new"), b"created").unwrap();
    fs::remove_file(t.join("d3/f0")).unwrap();
    fs::remove_dir_all(t.join("d4")).unwrap();
    fs::create_dir_all(t.join("d5/sub/deeper")).unwrap();
    fs::write(t.join("d5/sub/deeper/z"), b"z").unwrap();
    fs::rename(t.join("d6/f2"), t.join("d0/moved")).unwrap();
    vec![
        t.join("d1/f1"),
        t.join("d2/new"),
        t.join("d3/f0"),
        t.join("d4"),
        t.join("d5/sub"),
        t.join("d6/f2"),
        t.join("d0/moved"),
        PathBuf::from("/somewhere/else"),
    ]
}

fn small_tree(t: &Path, dirs: usize, files: usize) {
    for d in 0..dirs {
        let dir = t.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..files {
            fs::write(dir.join(format!("f{f}")), format!("{d}/{f}")).unwrap();
        }
    }
}

#[test]
fn changed_since_gives_the_entries_of_a_full_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let h = home(tmp.path());
    let t = tmp.path().join("tree");
    small_tree(&t, 8, 5);
    let mut o = BackupOptions::new(vec![t.clone()]);
    let first = run(&h, &o);
    let changed = edit(&t);

    o.changed = Some(ChangedSince {
        parent: first.infohash,
        paths: changed,
    });
    let part = run(&h, &o);
    assert!(!part.full_walk && !part.unchanged);
    // The root, 6 directories above changed paths, the 7 paths, d5/sub/deeper and z.
    assert!(part.stat_calls <= 16, "{}", part.stat_calls);
    assert_eq!(part.info.parents, [first.infohash.to_hex()]);

    o.changed = None;
    let whole = run(&h, &o);
    assert!(whole.full_walk);
    assert_eq!(whole.stat_calls, 1 + 8 + 40 - 2 - 5 + 1 + 3);
    assert_eq!(entries(&h, &part.infohash), entries(&h, &whole.infohash));

    // Nothing changed since: nothing lstat'ed, nothing written.
    o.changed = Some(ChangedSince {
        parent: whole.infohash,
        paths: Vec::new(),
    });
    o.skip_unchanged = true;
    let none = run(&h, &o);
    assert!(none.unchanged && !none.full_walk);
    assert_eq!(none.stat_calls, 0);
    assert_eq!(none.infohash, whole.infohash);
    assert_eq!(h.store().list().unwrap().len(), 3);
}

#[test]
fn changed_since_falls_back_to_a_full_walk() {
    let tmp = tempfile::tempdir().unwrap();
    let h = home(tmp.path());
    let t = tmp.path().join("tree");
    small_tree(&t, 2, 2);
    let other = tmp.path().join("other");
    small_tree(&other, 1, 1);
    let first = run(&h, &BackupOptions::new(vec![other.clone()]));

    let mut o = BackupOptions::new(vec![t.clone()]);
    // A parent of other paths.
    o.changed = Some(ChangedSince {
        parent: first.infohash,
        paths: vec![t.join("d0/f0")],
    });
    let w = Warnings::default();
    let r = backup::backup(&h, &o, &w).unwrap();
    assert!(r.full_walk);
    assert_eq!(r.stat_calls, 7);
    let warned = w.0.lock().unwrap().join("\n");
    assert!(warned.contains("other paths"), "{warned}");

    // A parent the store does not have.
    o.changed = Some(ChangedSince {
        parent: InfoHash([7; 20]),
        paths: Vec::new(),
    });
    let w = Warnings::default();
    let r = backup::backup(&h, &o, &w).unwrap();
    assert!(r.full_walk);
    let warned = w.0.lock().unwrap().join("\n");
    assert!(warned.contains("not in the store"), "{warned}");
}

/// `cargo test --release -p swarmbak-format --test incremental -- --ignored --nocapture
/// measure_changed_since_on_100k_files`
#[test]
#[ignore]
fn measure_changed_since_on_100k_files() {
    let tmp = tempfile::tempdir().unwrap();
    let h = home(tmp.path());
    let t = tmp.path().join("tree");
    let start = Instant::now();
    small_tree(&t, 1000, 100);
    eprintln!("tree of 100,000 files made in {:.1?}", start.elapsed());
    let mut o = BackupOptions::new(vec![t.clone()]);
    let start = Instant::now();
    let first = run(&h, &o);
    eprintln!("first backup: {:.1?}", start.elapsed());

    o.skip_unchanged = true;
    let start = Instant::now();
    let r = run(&h, &o);
    let rescan = start.elapsed();
    assert!(r.unchanged && r.full_walk);
    eprintln!(
        "full rescan, nothing changed (skip_unchanged): {rescan:.1?}, {} lstat calls",
        r.stat_calls
    );

    let mut changed = Vec::new();
    for i in 0..10 {
        let p = t.join(format!("d{}/f{}", i * 97, i * 7));
        fs::write(&p, format!("edited {i}")).unwrap();
        changed.push(p);
    }
    o.skip_unchanged = false;
    o.changed = Some(ChangedSince {
        parent: first.infohash,
        paths: changed,
    });
    let start = Instant::now();
    let r = run(&h, &o);
    let part = start.elapsed();
    assert!(!r.full_walk && !r.unchanged);
    eprintln!(
        "ChangedSince backup, 10 files edited: {part:.1?}, {} lstat calls",
        r.stat_calls
    );
    o.changed = None;
    let start = Instant::now();
    let full = run(&h, &o);
    eprintln!(
        "full backup of the same tree (a new snapshot): {:.1?}, {} lstat calls",
        start.elapsed(),
        full.stat_calls
    );
    assert_eq!(entries(&h, &r.infohash), entries(&h, &full.infohash));
}
