//! Compares two trees byte for byte and by metadata (names, kinds, permission bits,
//! mtimes, symlink targets). Used by `swarmbak demo` and the tests.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, PartialEq, Eq)]
enum Node {
    File {
        mode: u32,
        mtime: (i64, i64),
        len: u64,
    },
    Dir {
        mode: u32,
        mtime: (i64, i64),
    },
    Link {
        target: Vec<u8>,
        mtime: (i64, i64),
    },
}

fn scan(root: &Path) -> io::Result<BTreeMap<Vec<u8>, Node>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(Vec::new(), root.to_path_buf())];
    while let Some((rel, p)) = stack.pop() {
        let md = fs::symlink_metadata(&p)?;
        let ft = md.file_type();
        let mtime = (md.mtime(), md.mtime_nsec());
        let node = if ft.is_symlink() {
            Node::Link {
                target: fs::read_link(&p)?.as_os_str().as_bytes().to_vec(),
                mtime,
            }
        } else if ft.is_dir() {
            for e in fs::read_dir(&p)? {
                let e = e?;
                let mut r = rel.clone();
                if !r.is_empty() {
                    r.push(b'/');
                }
                r.extend_from_slice(e.file_name().as_bytes());
                stack.push((r, e.path()));
            }
            Node::Dir {
                mode: md.mode() & 0o7777,
                mtime,
            }
        } else {
            Node::File {
                mode: md.mode() & 0o7777,
                mtime,
                len: md.len(),
            }
        };
        out.insert(rel, node);
    }
    Ok(out)
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Every difference between the trees at `a` and `b` (empty when they are equal),
/// comparing directory mtimes too unless `dir_mtimes` is false.
pub fn diff(a: &Path, b: &Path, dir_mtimes: bool) -> io::Result<Vec<String>> {
    let (ta, tb) = (scan(a)?, scan(b)?);
    let mut out = Vec::new();
    for (k, na) in &ta {
        let shown = String::from_utf8_lossy(k);
        match tb.get(k) {
            None => out.push(format!("{shown:?}: missing from {}", b.display())),
            Some(nb) => {
                let equal = match (na, nb) {
                    (
                        Node::Dir {
                            mode: ma,
                            mtime: ta,
                        },
                        Node::Dir {
                            mode: mb,
                            mtime: tb,
                        },
                    ) => ma == mb && (!dir_mtimes || k.is_empty() || ta == tb),
                    _ => na == nb,
                };
                if !equal {
                    out.push(format!("{shown:?}: {na:?} != {nb:?}"));
                } else if let Node::File { .. } = na {
                    let pa = a.join(std::ffi::OsStr::from_bytes(k));
                    let pb = b.join(std::ffi::OsStr::from_bytes(k));
                    if !same_content(&pa, &pb)? {
                        out.push(format!("{shown:?}: contents differ"));
                    }
                }
            }
        }
    }
    for k in tb.keys() {
        if !ta.contains_key(k) {
            out.push(format!(
                "{:?}: only in {}",
                String::from_utf8_lossy(k),
                b.display()
            ));
        }
    }
    Ok(out)
}
