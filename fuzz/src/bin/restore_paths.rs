//! The restore's path checks (`format::manifest::check_path`, `Manifest::validate`'s
//! tree rules, `restore`'s target join and `--path` selection) on arbitrary paths.
//!
//! Input: lines (the whole input is also checked as one path). Each line is `<kind><path>` with kind `d`, `f` or `l` (a
//! directory, a file, a symlink to `../../etc`); a line starting with `?` is a `--path`
//! selection instead.
//!
//! Invariants: a path `check_path` accepts is relative, has no empty, `.` or `..`
//! component and no NUL, and joined onto the target it stays below the target with only
//! normal components; in a manifest that validates, no entry lies below a symlink or a
//! file (every ancestor is a directory entry that comes before it); a selection only
//! keeps entries and never fails on a valid manifest for a path it then reports found.

use std::path::{Component, Path};

use swarmbak_format::manifest::{check_path, Entry, Kind, Manifest};
use swarmbak_format::restore::fuzzing::{select, target_path};
use swarmbak_format::InfoHash;

fn entry(path: &[u8], kind: Kind) -> Entry {
    Entry {
        path: path.to_vec(),
        kind,
        mode: 0o755,
        mtime: 0,
        mtime_ns: 0,
        size: 0,
        chunks: Vec::new(),
        target: if kind == Kind::Symlink {
            b"../../etc".to_vec()
        } else {
            Vec::new()
        },
        ino: 0,
        ctime: 0,
        ctime_ns: 0,
    }
}

fn check_one(p: &[u8]) {
    if check_path(p).is_err() {
        return;
    }
    assert!(!p.is_empty() && p[0] != b'/');
    for c in p.split(|&b| b == b'/') {
        assert!(!c.is_empty() && c != b"." && c != b".." && !c.contains(&0));
    }
    let target = Path::new("/restore/target");
    let joined = target_path(target, p);
    assert!(joined.starts_with(target), "{joined:?} escapes the target");
    let below = joined.strip_prefix(target).expect("checked above");
    assert!(below
        .components()
        .all(|c| matches!(c, Component::Normal(_))));
    assert!(below.components().count() >= 1);
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        check_one(data);
        let mut entries = Vec::new();
        let mut selection = Vec::new();
        for line in data.split(|&b| b == b'\n') {
            let Some((&k, path)) = line.split_first() else {
                continue;
            };
            check_one(path);
            match k {
                b'd' => entries.push(entry(path, Kind::Dir)),
                b'f' => entries.push(entry(path, Kind::File)),
                b'l' => entries.push(entry(path, Kind::Symlink)),
                b'?' => selection.push(String::from_utf8_lossy(path).into_owned()),
                _ => {}
            }
        }
        let m = Manifest {
            format: swarmbak_format::MANIFEST_FORMAT,
            time: 0,
            time_ns: 0,
            machine_name: "fuzz".into(),
            machine_key: "age1fuzz".into(),
            source_paths: Vec::new(),
            parents: Vec::<InfoHash>::new(),
            snapshots: Vec::new(),
            chunk_key: [0; 32],
            packs: Vec::new(),
            chunks: Vec::new(),
            entries,
        };
        if m.validate().is_err() {
            return;
        }
        for (i, e) in m.entries.iter().enumerate() {
            let mut prefix = e.path.as_slice();
            while let Some(cut) = prefix.iter().rposition(|&b| b == b'/') {
                prefix = &prefix[..cut];
                let parent = m.entries[..i].iter().find(|x| x.path == prefix);
                assert!(
                    matches!(parent, Some(x) if x.kind == Kind::Dir),
                    "an entry lies below something that is not a directory before it"
                );
            }
        }
        if let Ok(keep) = select(&m, &selection) {
            assert_eq!(keep.len(), m.entries.len());
            if !selection.is_empty() && !m.entries.is_empty() {
                assert!(
                    keep.iter().any(|k| *k),
                    "a selection that matched keeps nothing"
                );
            }
        }
    });
}
