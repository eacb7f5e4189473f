//! The demo's sample data: a small office-like tree (documents that compress, photos
//! that do not, a deep folder, repeated files that deduplicate) and an edge-case tree
//! (empty files and directories, symlinks, odd names and modes). Deterministic for a
//! given seed; the test-tree generator (tools/gentree) stays a test tool.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

/// What was made.
#[derive(Debug, Default, Clone, Copy)]
pub struct Made {
    pub files: u64,
    pub bytes: u64,
    pub symlinks: u64,
}

/// xorshift64*: enough for sample bytes, not for secrets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

const WORDS: &[&str] = &[
    "budget", "meeting", "quarter", "invoice", "draft", "review", "client", "project", "report",
    "minutes", "schedule", "proposal", "contract", "summary", "agenda", "notes",
];

fn write(path: &Path, data: &[u8], m: &mut Made) -> std::io::Result<()> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p)?;
    }
    fs::File::create(path)?.write_all(data)?;
    m.files += 1;
    m.bytes += data.len() as u64;
    Ok(())
}

/// About `total` bytes of office files under `out`.
pub fn office(out: &Path, total: u64, seed: u64) -> std::io::Result<Made> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut m = Made::default();
    let dirs = [
        "Documents/2024",
        "Documents/2025/Q1",
        "Pictures/holiday",
        "Projects/alpha/src",
        "Desktop",
    ];
    let mut i = 0u64;
    while m.bytes < total {
        let dir = dirs[(rng.next() % dirs.len() as u64) as usize];
        let picture = dir.starts_with("Pictures");
        let size = if picture {
            (512 << 10) + rng.next() % (3 << 20)
        } else {
            4096 + rng.next() % (256 << 10)
        }
        .min(total - m.bytes)
        .max(1);
        let mut data = vec![0u8; size as usize];
        if picture {
            rng.fill(&mut data);
        } else {
            let mut text = Vec::with_capacity(size as usize);
            while (text.len() as u64) < size {
                text.extend_from_slice(
                    WORDS[(rng.next() % WORDS.len() as u64) as usize].as_bytes(),
                );
                text.push(if rng.next().is_multiple_of(12) {
                    b'\n'
                } else {
                    b' '
                });
            }
            text.truncate(size as usize);
            data = text;
        }
        let ext = if picture { "jpg" } else { "txt" };
        write(
            &out.join(dir).join(format!("file-{i:05}.{ext}")),
            &data,
            &mut m,
        )?;
        // Now and then the same document saved twice: deduplicated.
        if !picture && i % 7 == 3 {
            write(
                &out.join("Desktop")
                    .join(format!("copy of file-{i:05}.{ext}")),
                &data,
                &mut m,
            )?;
        }
        i += 1;
    }
    Ok(m)
}

/// The cases a restore must get exactly right.
pub fn edge(out: &Path, seed: u64) -> std::io::Result<Made> {
    let mut rng = Rng(seed | 1);
    let mut m = Made::default();
    write(&out.join("empty.txt"), b"", &mut m)?;
    fs::create_dir_all(out.join("empty dir"))?;
    write(
        &out.join("sp ace/ünïcödé ✓.txt"),
        "grüße\n".as_bytes(),
        &mut m,
    )?;
    write(&out.join("a/b/c/d/e/f/deep.txt"), b"deep\n", &mut m)?;
    let mut block = vec![0u8; 16 << 10];
    rng.fill(&mut block);
    write(&out.join("block-16k.bin"), &block, &mut m)?;
    write(
        &out.join("block-16k-plus-1.bin"),
        &[&block[..], b"x"].concat(),
        &mut m,
    )?;
    let script = out.join("run.sh");
    write(&script, b"#!/bin/sh\necho hello\n", &mut m)?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    let secret = out.join("private.txt");
    write(&secret, b"only me\n", &mut m)?;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600))?;
    for (link, target) in [
        ("link-to-file", "empty.txt"),
        ("link-to-dir", "a/b"),
        ("dangling", "does/not/exist"),
        ("absolute", "/etc/hostname"),
        ("up-and-out", "../../outside"),
    ] {
        symlink(target, out.join(link))?;
        m.symlinks += 1;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_are_deterministic_and_about_the_size_asked() {
        let t = tempfile::tempdir().unwrap();
        let a = office(&t.path().join("a"), 3 << 20, 1).unwrap();
        let b = office(&t.path().join("b"), 3 << 20, 1).unwrap();
        assert_eq!((a.files, a.bytes), (b.files, b.bytes));
        assert!(
            a.bytes >= 3 << 20 && a.bytes < (3 << 20) + (256 << 10) + 4096,
            "{a:?}"
        );
        let e = edge(&t.path().join("e"), 1).unwrap();
        assert_eq!(e.symlinks, 5);
        assert_eq!(
            fs::read_link(t.path().join("e/up-and-out")).unwrap(),
            Path::new("../../outside")
        );
    }
}
