//! Hostile manifests never make restore write outside the target directory: each is
//! refused with a clear error before anything is written.

mod common;

use std::fs;

use common::*;
use swarmbak_format::backup::NoProgress;
use swarmbak_format::manifest::{Entry, Kind, Manifest};
use swarmbak_format::restore::{LocalSource, SnapshotReader};
use swarmbak_format::{Home, InfoHash};

fn entry(path: &[u8], kind: Kind) -> Entry {
    Entry {
        path: path.to_vec(),
        kind,
        mode: 0o644,
        mtime: 0,
        mtime_ns: 0,
        size: 0,
        chunks: vec![],
        target: vec![],
        ino: 0,
        ctime: 0,
        ctime_ns: 0,
    }
}

/// Publishes variants of a real snapshot's manifest and checks each is refused.
#[test]
fn hostile_manifests_are_refused_and_nothing_outside_is_touched() {
    let t = tempfile::tempdir().unwrap();
    let m = machine(t.path());
    let tree = t.path().join("tree");
    fs::create_dir_all(tree.join("d")).unwrap();
    fs::write(tree.join("d/f.txt"), b"hello hostile world").unwrap();
    let ih = seed(&m.home, &[&tree]);
    let home = Home::open(&m.home).unwrap();
    // Hostile snapshots are encrypted as the machine encrypts its own (recovery key too).
    let opts = swarmbak_node::NodeConfig::load(&m.home)
        .unwrap()
        .backup_options(Vec::new(), &m.home)
        .unwrap();
    let store = home.store();
    let ihb = InfoHash::from_hex(&ih).unwrap();
    let base = Manifest::decode(&store.manifest_cache(&ihb).unwrap().unwrap()).unwrap();
    let src = LocalSource {
        store: &store,
        repair: false,
    };
    let r = SnapshotReader::open(&src, &ihb, &NoProgress).unwrap();
    let packs = r.read(0, r.meta.manifest_offset).unwrap();
    let file = base
        .entries
        .iter()
        .find(|e| e.kind == Kind::File)
        .unwrap()
        .clone();

    let victim = t.path().join("victim");
    let outside = t.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let mut cases: Vec<(&str, Manifest)> = Vec::new();
    let with = |f: &dyn Fn(&mut Manifest)| {
        let mut x = base.clone();
        f(&mut x);
        x
    };
    cases.push((
        "dot-dot",
        with(&|x| {
            let mut e = file.clone();
            e.path = b"tree/../../victim".to_vec();
            x.entries.push(e);
        }),
    ));
    cases.push((
        "absolute",
        with(&|x| {
            let mut e = file.clone();
            e.path = victim.to_str().unwrap().as_bytes().to_vec();
            x.entries.push(e);
        }),
    ));
    cases.push((
        "symlinked parent",
        with(&|x| {
            let mut l = entry(b"tree/link", Kind::Symlink);
            l.target = outside.to_str().unwrap().as_bytes().to_vec();
            x.entries.push(l);
            let mut e = file.clone();
            e.path = b"tree/link/planted".to_vec();
            x.entries.push(e);
        }),
    ));
    cases.push((
        "nul",
        with(&|x| {
            let mut e = file.clone();
            e.path = b"tree/a\0b".to_vec();
            x.entries.push(e);
        }),
    ));
    cases.push((
        "empty component",
        with(&|x| {
            let mut e = file.clone();
            e.path = b"tree//x".to_vec();
            x.entries.push(e);
        }),
    ));
    cases.push((
        "duplicate",
        with(&|x| {
            x.entries.push(file.clone());
        }),
    ));
    cases.push((
        "orphan",
        with(&|x| {
            let mut e = file.clone();
            e.path = b"nowhere/x".to_vec();
            x.entries.push(e);
        }),
    ));
    cases.push((
        "chunk out of range",
        with(&|x| {
            let mut e = file.clone();
            e.path = b"tree/more".to_vec();
            e.chunks = vec![999];
            x.entries.push(e);
        }),
    ));
    cases.push((
        "size lies",
        with(&|x| {
            let mut e = file.clone();
            e.path = b"tree/more".to_vec();
            e.size += 1;
            x.entries.push(e);
        }),
    ));
    cases.push((
        "mode",
        with(&|x| {
            let mut e = file.clone();
            e.path = b"tree/more".to_vec();
            e.mode = 0o170777;
            x.entries.push(e);
        }),
    ));
    cases.push(("unknown version", with(&|x| x.format = 2)));

    for (name, hostile) in cases {
        let hih = swarmbak_format::testing::publish_raw(
            &home,
            &swarmbak_format::BackupOptions::new(Vec::new()),
            &packs,
            &hostile,
        )
        .unwrap();
        let to = t.path().join(format!("to-{}", name.replace(' ', "-")));
        let err = fails(
            &m.home,
            &[
                "fetch",
                &hih.to_hex(),
                "--to",
                to.to_str().unwrap(),
                "--identity",
                m.recovery.to_str().unwrap(),
            ],
        );
        assert!(err.contains("manifest"), "{name}: {err}");
        assert!(!victim.exists(), "{name}: wrote outside the target");
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "{name}: wrote through a symlink"
        );
        let written = if to.exists() {
            fs::read_dir(&to).unwrap().count()
        } else {
            0
        };
        assert_eq!(written, 0, "{name}: wrote something before refusing");
    }

    // The untouched manifest still restores (the cases above fail for their own reason).
    let to = t.path().join("good");
    let good = swarmbak_format::testing::publish_raw(&home, &opts, &packs, &base).unwrap();
    fetch_recovery(&m, &good.to_hex(), &to);
    assert_eq!(
        fs::read(to.join("tree/d/f.txt")).unwrap(),
        b"hello hostile world"
    );
}

/// A target prepared with a planted symlink (and a forged resume marker) is not followed.
#[test]
fn planted_symlink_in_a_resumed_target_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let m = machine(t.path());
    let tree = t.path().join("tree");
    fs::create_dir_all(tree.join("d")).unwrap();
    fs::write(tree.join("d/f.txt"), b"x").unwrap();
    let ih = seed(&m.home, &[&tree]);
    let to = t.path().join("to");
    let outside = t.path().join("outside");
    fs::create_dir_all(&to).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(
        to.join(".swarmbak-restore"),
        format!("swarmbak restore {ih} \n"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, to.join("tree")).unwrap();
    let err = fails(&m.home, &["fetch", &ih, "--to", to.to_str().unwrap()]);
    assert!(err.contains("not a directory"), "{err}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}
