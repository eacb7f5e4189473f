use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use swarmbak_gentree::{digest, edge_with_big_file, mutate, office, small_files, stats, Rng};

/// A directory under the system temp dir, removed on drop (made writable first).
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "gentree-test-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        Tmp(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn sub(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const SMALL: u64 = 2 << 20;

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn rng_is_fixed() {
    // The sequence is part of the contract: these values must never change.
    let mut r = Rng::new(1);
    let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
    let mut r2 = Rng::new(1);
    assert_eq!(first, (0..3).map(|_| r2.next_u64()).collect::<Vec<_>>());
    assert_ne!(Rng::new(2).next_u64(), first[0]);
    let mut r = Rng::new(7);
    for _ in 0..1000 {
        let v = r.range(3, 9);
        assert!((3..=9).contains(&v));
    }
    // fill matches word order regardless of length
    let mut a = Rng::new(5);
    let mut b = Rng::new(5);
    let x = a.bytes(21);
    let mut y = Vec::new();
    for _ in 0..3 {
        y.extend_from_slice(&b.next_u64().to_le_bytes());
    }
    assert_eq!(x, y[..21]);
}

#[test]
fn rng_golden_values() {
    // splitmix64(0) first output is the well-known 0xe220a8397b1dcdaf.
    let mut r = Rng::new(0);
    let v = r.next_u64();
    // Golden value recorded from this implementation: changing it changes every tree.
    assert_eq!(v, GOLDEN_SEED0_FIRST, "Rng output changed: {v:#x}");
}

const GOLDEN_SEED0_FIRST: u64 = 0x99ec5f36cb75f2b4;

#[test]
fn office_is_deterministic_and_seed_dependent() {
    let t = Tmp::new("det");
    let a = office(&t.sub("a"), SMALL, 1).unwrap();
    let b = office(&t.sub("b"), SMALL, 1).unwrap();
    office(&t.sub("c"), SMALL, 2).unwrap();
    assert_eq!(a, b);
    let (da, db, dc) = (
        digest(&t.sub("a")).unwrap(),
        digest(&t.sub("b")).unwrap(),
        digest(&t.sub("c")).unwrap(),
    );
    assert_eq!(da, db, "same seed, same tree");
    assert_ne!(da, dc, "different seed, different tree");
    assert_eq!(stats(&t.sub("a")).unwrap(), a);
    // about the requested size (may overshoot by a few files)
    assert!(
        a.bytes >= SMALL * 9 / 10 && a.bytes <= SMALL * 3 / 2,
        "{a:?}"
    );
}

#[test]
fn office_refuses_non_empty_out() {
    let t = Tmp::new("refuse");
    fs::create_dir_all(t.path()).unwrap();
    fs::write(t.sub("keep.txt"), b"mine").unwrap();
    let e = office(t.path(), SMALL, 1).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
    assert!(e.to_string().contains("not empty"), "{e}");
    assert_eq!(fs::read(t.sub("keep.txt")).unwrap(), b"mine");
    // an existing empty directory is fine
    fs::create_dir_all(t.sub("empty")).unwrap();
    office(&t.sub("empty"), 256 << 10, 1).unwrap();
}

/// Bytes of `b` covered by 64-byte blocks that also occur (at 64-byte alignment) in `a`.
fn shared_bytes(a: &[u8], b: &[u8]) -> usize {
    const W: usize = 64;
    let blocks: HashSet<&[u8]> = a.chunks_exact(W).collect();
    let mut i = 0;
    let mut shared = 0;
    while i + W <= b.len() {
        if blocks.contains(&b[i..i + W]) {
            shared += W;
            i += W;
        } else {
            i += 1;
        }
    }
    shared
}

#[test]
fn office_has_every_category() {
    let t = Tmp::new("cats");
    let root = t.path();
    office(root, SMALL, 3).unwrap();
    let files = files_under(root);
    let under = |p: &str| -> Vec<&PathBuf> {
        files
            .iter()
            .filter(|f| f.strip_prefix(root).unwrap().starts_with(p))
            .collect()
    };
    let media = under("Pictures");
    let docs: Vec<_> = under("Documents")
        .into_iter()
        .filter(|f| !f.starts_with(root.join("Documents/Versions")))
        .collect();
    let src = under("src");
    let copies = under("Desktop/copies");
    let versions = under("Documents/Versions");
    for (name, v) in [
        ("media", &media),
        ("docs", &docs),
        ("src", &src),
        ("copies", &copies),
        ("versions", &versions),
    ] {
        assert!(v.len() >= 2, "{name}: {} files", v.len());
    }
    // deep source tree
    let max_depth = src
        .iter()
        .map(|f| f.strip_prefix(root).unwrap().components().count())
        .max()
        .unwrap();
    assert!(max_depth >= 5, "src depth {max_depth}");
    // documents are text
    let d = fs::read(docs[0]).unwrap();
    assert!(d
        .iter()
        .all(|&c| c == b' ' || c == b'\n' || c.is_ascii_lowercase()));
    // every copy is byte-identical to some non-copy file
    let originals: HashSet<Vec<u8>> = files
        .iter()
        .filter(|f| !f.starts_with(root.join("Desktop")))
        .map(|f| fs::read(f).unwrap())
        .collect();
    for c in &copies {
        assert!(
            originals.contains(&fs::read(c).unwrap()),
            "{c:?} is not a copy"
        );
    }
    // versions of the same report share most of their bytes
    let v0 = fs::read(root.join("Documents/Versions/report-000-v0.docx")).unwrap();
    let v1 = fs::read(root.join("Documents/Versions/report-000-v1.docx")).unwrap();
    assert_ne!(v0, v1);
    let s = shared_bytes(&v0, &v1);
    assert!(s * 10 >= v1.len() * 8, "only {s} of {} shared", v1.len());
    // media is incompressible-looking: all byte values occur
    let m = fs::read(media[0]).unwrap();
    let distinct: HashSet<u8> = m.iter().copied().collect();
    assert!(distinct.len() > 250);
}

#[cfg(unix)]
#[test]
fn edge_tree_has_every_shape() {
    use std::os::unix::fs::PermissionsExt;
    let t = Tmp::new("edge");
    let root = t.path();
    let st = edge_with_big_file(root, 1, 1 << 20).unwrap();
    assert_eq!(st.symlinks, 2);
    assert_eq!(fs::metadata(root.join("empty.txt")).unwrap().len(), 0);
    assert!(fs::read_dir(root.join("empty-dir"))
        .unwrap()
        .next()
        .is_none());
    assert!(root.join("spaces in name/a file with spaces.txt").is_file());
    assert!(root.join("unicodé/naïve-文件-файл-🙂.txt").is_file());
    let long: Vec<_> = fs::read_dir(root.join("long")).unwrap().collect();
    assert_eq!(long[0].as_ref().unwrap().file_name().len(), 200);
    let mut deep = root.join("deep");
    for i in 0..40 {
        deep.push(format!("d{i}"));
    }
    assert!(deep.join("bottom.txt").is_file());
    let mode = |p: &str| fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("bin/run.sh"), 0o755);
    assert_eq!(mode("readonly.txt"), 0o444);
    assert!(root.join("..dotdot../..looks-like-parent").is_file());
    assert!(root.join(".hidden/.config").is_file());
    let big = fs::read(root.join("big-sparse.img")).unwrap();
    assert_eq!(big.len(), 1 << 20);
    let nonzero = big.iter().filter(|&&b| b != 0).count();
    assert!(nonzero > 4000 && nonzero <= 4096, "{nonzero}");
    assert!(big[..(1 << 19) - 2048].iter().all(|&b| b == 0));
    assert_eq!(
        fs::read_link(root.join("link-to-empty")).unwrap(),
        Path::new("empty.txt")
    );
    assert_eq!(
        fs::read_link(root.join("dangling-link")).unwrap(),
        Path::new("../nowhere")
    );
    assert!(fs::metadata(root.join("dangling-link")).is_err());
    assert!(root.join("newline\nin-name.txt").is_file());
    // deterministic, seed-dependent
    let t2 = Tmp::new("edge2");
    let t3 = Tmp::new("edge3");
    edge_with_big_file(t2.path(), 1, 1 << 20).unwrap();
    edge_with_big_file(t3.path(), 2, 1 << 20).unwrap();
    assert_eq!(digest(root).unwrap(), digest(t2.path()).unwrap());
    assert_ne!(digest(root).unwrap(), digest(t3.path()).unwrap());
}

#[test]
fn small_files_layout() {
    let t = Tmp::new("small");
    let st = small_files(t.path(), 250, 9).unwrap();
    assert_eq!(st.files, 250);
    // g000 + d00000..d00002
    assert_eq!(st.dirs, 4);
    for f in files_under(t.path()) {
        let n = fs::metadata(&f).unwrap().len();
        assert!((100..=4096).contains(&n), "{f:?}: {n}");
    }
    let per_dir = fs::read_dir(t.path().join("g000/d00001")).unwrap().count();
    assert_eq!(per_dir, 100);
    let t2 = Tmp::new("small2");
    small_files(t2.path(), 250, 9).unwrap();
    assert_eq!(digest(t.path()).unwrap(), digest(t2.path()).unwrap());
}

fn snapshot(root: &Path) -> HashMap<PathBuf, (SystemTime, Vec<u8>)> {
    files_under(root)
        .into_iter()
        .map(|f| {
            let md = fs::metadata(&f).unwrap();
            let rel = f.strip_prefix(root).unwrap().to_path_buf();
            (rel, (md.modified().unwrap(), fs::read(&f).unwrap()))
        })
        .collect()
}

#[test]
fn mutate_changes_the_requested_share_with_new_mtimes() {
    let t = Tmp::new("mutate");
    let root = t.path();
    office(root, 4 << 20, 1).unwrap();
    let before = snapshot(root);
    let n = before.len() as u64;
    let ms = mutate(root, 2, 10).unwrap();
    assert_eq!(ms.scanned, n);
    assert_eq!(ms.chosen, (n * 10 / 100).max(1));
    assert_eq!(
        ms.chosen,
        ms.appended + ms.inserted + ms.overwritten + ms.deleted + ms.renamed
    );
    assert_eq!(ms.created, (ms.chosen / 4).max(1));
    let after = snapshot(root);
    let mut changed = 0;
    let mut gone = 0;
    for (p, (mtime, data)) in &before {
        match after.get(p) {
            Some((m2, d2)) => {
                if d2 != data {
                    changed += 1;
                    assert_ne!(m2, mtime, "{p:?} changed but kept its mtime");
                    assert!(*m2 > *mtime);
                } else {
                    assert_eq!(m2, mtime, "{p:?} unchanged but mtime moved");
                }
            }
            None => gone += 1,
        }
    }
    assert_eq!(changed, ms.appended + ms.inserted + ms.overwritten);
    assert_eq!(gone, ms.deleted + ms.renamed);
    let renamed = after
        .keys()
        .filter(|p| p.to_string_lossy().ends_with(".renamed"))
        .count() as u64;
    assert_eq!(renamed, ms.renamed);
    let new = after.keys().filter(|p| p.starts_with("New")).count() as u64;
    assert_eq!(new, ms.created);
    // roughly the requested share of files touched
    let share = (changed + gone) as f64 / n as f64;
    assert!((0.08..=0.12).contains(&share), "{share}");

    // mutate is deterministic given the same tree and seed
    let t2 = Tmp::new("mutate2");
    office(t2.path(), 4 << 20, 1).unwrap();
    mutate(t2.path(), 2, 10).unwrap();
    assert_eq!(digest(root).unwrap(), digest(t2.path()).unwrap());
}

#[cfg(unix)]
#[test]
fn mutate_handles_the_edge_tree() {
    use std::os::unix::fs::PermissionsExt;
    let t = Tmp::new("mutate-edge");
    edge_with_big_file(t.path(), 1, 1 << 20).unwrap();
    let ms = mutate(t.path(), 4, 100).unwrap();
    assert_eq!(ms.chosen, ms.scanned);
    // symlinks are left alone
    assert!(fs::symlink_metadata(t.path().join("dangling-link"))
        .unwrap()
        .file_type()
        .is_symlink());
    // the read-only file, if still there, is still read-only
    for p in ["readonly.txt", "readonly.txt.renamed"] {
        if let Ok(md) = fs::metadata(t.path().join(p)) {
            assert_eq!(md.permissions().mode() & 0o777, 0o444);
        }
    }
}

#[test]
fn parse_sizes() {
    use swarmbak_gentree::parse_size;
    assert_eq!(parse_size("256M"), Some(256 << 20));
    assert_eq!(parse_size("64k"), Some(64 << 10));
    assert_eq!(parse_size("1G"), Some(1 << 30));
    assert_eq!(parse_size("1.5M"), Some(3 << 19));
    assert_eq!(parse_size("1000"), Some(1000));
    assert_eq!(parse_size("8MiB"), Some(8 << 20));
    assert_eq!(parse_size("x"), None);
    assert_eq!(parse_size(""), None);
}

/// `cargo test -p swarmbak-gentree --release -- --ignored`: 64 MiB of office tree in a few
/// seconds (it is I/O bound; about 0.3 s on a laptop SSD with a warm page cache).
#[test]
#[ignore = "large; run in release"]
fn office_64m_is_fast() {
    let t = Tmp::new("speed");
    let start = std::time::Instant::now();
    let st = office(t.path(), 64 << 20, 1).unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(st.bytes >= 64 << 20);
    assert!(secs < 10.0, "office(64 MiB) took {secs:.1} s");
}
