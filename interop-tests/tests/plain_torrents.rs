//! Issue 4, item 2: swarmbak downloads torrents made by mktorrent and libtorrent
//! (single-file and multi-file, hybrid v1+v2 ones with BEP 47 padding files, piece sizes
//! from 16 KiB to 16 MiB) from a libtorrent seeder and saves the files byte-identical; the
//! same from a magnet link (metadata over BEP 9 from libtorrent, the torrent not being
//! private); and a torrent whose paths would escape the target is refused, nothing written.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use swarmbak_interop_tests::{require_tool, swarmbak_bin};

const PY: &str = "/usr/bin/python3";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py/lt_seed.py")
}

fn libtorrent_version() {
    let o = Command::new(PY)
        .args(["-c", "import libtorrent; print(libtorrent.__version__)"])
        .output()
        .expect("/usr/bin/python3 runs");
    assert!(
        o.status.success(),
        "python3-libtorrent is missing: install it with apt-get install python3-libtorrent (see README)\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!(
        "tool libtorrent (python): {}",
        String::from_utf8_lossy(&o.stdout).trim()
    );
}

/// A libtorrent seeder of `torrent` over the data in `save`; stopped on drop.
struct Seeder {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    port: u16,
}

impl Seeder {
    fn start(torrent: &Path, save: &Path) -> Seeder {
        let mut child = Command::new(PY)
            .arg(script())
            .arg(torrent)
            .arg(save)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the libtorrent seeder starts");
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port: u16 = lines
            .next()
            .and_then(|l| l.ok())
            .and_then(|l| l.strip_prefix("port ").and_then(|p| p.trim().parse().ok()))
            .expect("the seeder prints its port");
        let ready = lines.next().and_then(|l| l.ok()).unwrap_or_default();
        assert_eq!(ready, "seeding", "libtorrent did not start seeding");
        Seeder { child, stdin, port }
    }
}

impl Drop for Seeder {
    fn drop(&mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(b"");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fill(path: &Path, len: usize, seed: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    std::fs::write(path, v).unwrap();
}

fn same_tree(a: &Path, b: &Path) {
    let o = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{} and {} differ:\n{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&o.stdout)
    );
}

fn swarmbak_fetch(home: &Path, what: &str, to: &Path, port: u16) {
    let o = Command::new(swarmbak_bin())
        .arg("--home")
        .arg(home)
        .args(["fetch", what, "--to"])
        .arg(to)
        .args(["--peer", &format!("127.0.0.1:{port}")])
        .env("SWARMBAK_FETCH_TIMEOUT_SECS", "60")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "swarmbak fetch {what} failed\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

struct Case {
    name: &'static str,
    maker: &'static str,
    multi: bool,
    piece: usize,
    hybrid: bool,
    sizes: &'static [usize],
}

#[test]
fn torrents_from_mktorrent_and_libtorrent_download_byte_identical() {
    libtorrent_version();
    require_tool("mktorrent");
    let cases = [
        Case {
            name: "lt-single-16k",
            maker: "lt",
            multi: false,
            piece: 16 << 10,
            hybrid: false,
            sizes: &[1_000_003],
        },
        Case {
            name: "lt-multi-256k",
            maker: "lt",
            multi: true,
            piece: 256 << 10,
            hybrid: false,
            sizes: &[1, 300_000, 0, 2_000_001],
        },
        Case {
            name: "lt-hybrid-pad-64k",
            maker: "lt",
            multi: true,
            piece: 64 << 10,
            hybrid: true,
            sizes: &[70_000, 5, 200_000, 131_072],
        },
        Case {
            name: "lt-multi-16m",
            maker: "lt",
            multi: true,
            piece: 16 << 20,
            hybrid: false,
            sizes: &[10_000_000, 9_000_000],
        },
        Case {
            name: "mk-single-32k",
            maker: "mk",
            multi: false,
            piece: 32 << 10,
            hybrid: false,
            sizes: &[500_000],
        },
        Case {
            name: "mk-multi-4m",
            maker: "mk",
            multi: true,
            piece: 4 << 20,
            hybrid: false,
            sizes: &[5_000_000, 123, 3_000_000],
        },
    ];
    for c in cases {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let payload = src.join(c.name);
        if c.multi {
            for (i, n) in c.sizes.iter().enumerate() {
                fill(
                    &payload.join(format!("d{}/f{i}.bin", i % 2)),
                    *n,
                    i as u64 + 7,
                );
            }
        } else {
            fill(&payload, c.sizes[0], 3);
        }
        let torrent = t.path().join(format!("{}.torrent", c.name));
        let st = if c.maker == "lt" {
            let mut cmd = Command::new(PY);
            cmd.arg(script())
                .arg("--make")
                .arg(&torrent)
                .arg(&payload)
                .arg(c.piece.to_string());
            if c.hybrid {
                cmd.arg("--hybrid");
            }
            cmd.status().unwrap()
        } else {
            let log2 = c.piece.trailing_zeros().to_string();
            Command::new("mktorrent")
                .args(["-l", &log2, "-o"])
                .arg(&torrent)
                .arg(&payload)
                .stdout(Stdio::null())
                .status()
                .unwrap()
        };
        assert!(st.success(), "{}: making the torrent failed", c.name);
        let info = Command::new(swarmbak_bin())
            .arg("inspect")
            .arg(&torrent)
            .arg("--json")
            .output()
            .unwrap();
        assert!(
            info.status.success(),
            "{}: inspect refused it: {}",
            c.name,
            String::from_utf8_lossy(&info.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        if c.hybrid {
            let pads = j["files"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["padding"] == true)
                .count();
            assert!(
                pads > 0,
                "{}: a hybrid torrent from libtorrent has BEP 47 padding files: {j}",
                c.name
            );
        }
        let seeder = Seeder::start(&torrent, &src);
        let home = t.path().join("home");
        let out = t.path().join("out");
        swarmbak_fetch(&home, torrent.to_str().unwrap(), &out, seeder.port);
        same_tree(&payload, &out.join(c.name));
        eprintln!(
            "{}: {} pieces of {} bytes, identical",
            c.name, j["pieces"], j["piece_length"]
        );
    }
}

#[test]
fn a_magnet_link_gets_the_metadata_from_libtorrent() {
    libtorrent_version();
    // One BEP 9 metadata piece, and an info dict of several 16 KiB pieces (400 files).
    for files in [2usize, 400] {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let payload = src.join("magnetic");
        for i in 0..files {
            fill(
                &payload.join(format!("d{}/file-with-a-longish-name-{i:04}.bin", i % 3)),
                100 + i * 37,
                i as u64,
            );
        }
        let torrent = t.path().join("m.torrent");
        assert!(Command::new(PY)
            .arg(script())
            .arg("--make")
            .arg(&torrent)
            .arg(&payload)
            .arg("65536")
            .status()
            .unwrap()
            .success());
        let info = Command::new(swarmbak_bin())
            .arg("inspect")
            .arg(&torrent)
            .arg("--json")
            .output()
            .unwrap();
        let j: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        let ih = j["infohash"].as_str().unwrap().to_string();
        let seeder = Seeder::start(&torrent, &src);
        let out = t.path().join("out");
        swarmbak_fetch(
            &t.path().join("home"),
            &format!("magnet:?xt=urn:btih:{ih}"),
            &out,
            seeder.port,
        );
        same_tree(&payload, &out.join("magnetic"));
        eprintln!(
            "magnet with {files} files: metadata over BEP 9 from libtorrent, files identical"
        );
    }
}

#[test]
fn a_torrent_whose_paths_escape_is_refused_and_nothing_is_written() {
    let t = tempfile::tempdir().unwrap();
    // Hand-made: a multi-file torrent with a `..` component (libtorrent would accept it
    // and rewrite the path; swarmbak parses it, flags it, and never writes it).
    let name = b"evil";
    let mut info = Vec::new();
    info.extend_from_slice(b"d5:filesld6:lengthi3e4:pathl2:..6:escapeeee4:name");
    info.extend_from_slice(format!("{}:", name.len()).as_bytes());
    info.extend_from_slice(name);
    info.extend_from_slice(b"12:piece lengthi16384e6:pieces20:");
    info.extend_from_slice(&[7u8; 20]);
    info.push(b'e');
    let mut tor = b"d4:info".to_vec();
    tor.extend_from_slice(&info);
    tor.push(b'e');
    let f = t.path().join("evil.torrent");
    std::fs::write(&f, &tor).unwrap();
    let i = Command::new(swarmbak_bin())
        .arg("inspect")
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        i.status.success(),
        "inspect parses it: {}",
        String::from_utf8_lossy(&i.stderr)
    );
    assert!(
        String::from_utf8_lossy(&i.stdout).contains("UNSAFE PATH"),
        "inspect flags it"
    );
    let out = t.path().join("out");
    let o = Command::new(swarmbak_bin())
        .arg("--home")
        .arg(t.path().join("home"))
        .args([
            "fetch",
            f.to_str().unwrap(),
            "--to",
            out.to_str().unwrap(),
            "--peer",
            "127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refused") && err.contains(".."), "{err}");
    assert!(!t.path().join("escape").exists());
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().count() == 0);
}
