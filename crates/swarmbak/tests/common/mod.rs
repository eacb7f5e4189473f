//! Helpers for tests that drive the real `swarmbak` binary.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_swarmbak");

pub mod procs;

/// One HTTP/1.1 exchange on a fresh connection: (status, body); `None` when the
/// connection failed or broke.
pub fn try_http(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .ok()?;
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_owned()))
}

/// Runs `swarmbak --home HOME args...` and returns its output (whatever the status).
pub fn run(home: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.arg("--home").arg(home).args(args);
    c.output().expect("the swarmbak binary runs")
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs and asserts success, returning stdout.
pub fn ok(home: &Path, args: &[&str]) -> String {
    let o = run(home, args);
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "swarmbak {args:?} failed ({:?})\nstdout:\n{out}\nstderr:\n{err}",
        o.status
    );
    out
}

/// Runs and asserts failure, returning stderr.
pub fn fails(home: &Path, args: &[&str]) -> String {
    let o = run(home, args);
    let (out, err) = text(&o);
    assert!(
        !o.status.success(),
        "swarmbak {args:?} should have failed\nstdout:\n{out}\nstderr:\n{err}"
    );
    err
}

/// A machine home with an organisation recovery key; returns (home, recovery key file).
pub struct Machine {
    pub home: PathBuf,
    pub recovery: PathBuf,
}

pub fn machine(dir: &Path) -> Machine {
    let rec = swarmbak_format::Identity::generate();
    let recovery = dir.join("recovery.txt");
    fs::write(&recovery, rec.to_identity_file()).unwrap();
    let home = dir.join("home");
    let pk = rec.to_public().to_string();
    ok(
        &home,
        &[
            "init",
            "--name",
            "test-machine",
            "--recovery-recipient",
            &pk,
        ],
    );
    Machine { home, recovery }
}

/// `seed --until published`; returns the infohash (first stdout line).
pub fn seed(home: &Path, paths: &[&Path]) -> String {
    let mut args: Vec<String> = vec!["seed".into()];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    args.push("--until".into());
    args.push("published".into());
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let out = ok(home, &a);
    let ih = out.lines().next().unwrap_or("").to_string();
    assert_eq!(ih.len(), 40, "first line is the infohash: {out}");
    assert!(ih
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    ih
}

/// Restores `ih` into `to` with the recovery key only.
pub fn fetch_recovery(m: &Machine, ih: &str, to: &Path) -> String {
    ok(
        &m.home,
        &[
            "fetch",
            ih,
            "--to",
            to.to_str().unwrap(),
            "--identity",
            m.recovery.to_str().unwrap(),
        ],
    )
}

/// Asserts that `restored` equals `orig` byte for byte and by metadata.
pub fn assert_same(orig: &Path, restored: &Path) {
    let d = swarmbak::treecmp::diff(orig, restored, true).unwrap();
    assert!(
        d.is_empty(),
        "{} differences, first: {:#?}",
        d.len(),
        &d[..d.len().min(10)]
    );
}

pub fn store_dir(home: &Path, ih: &str) -> PathBuf {
    home.join("store/snapshots").join(ih)
}

pub fn inspect_json(home: &Path, ih: &str) -> serde_json::Value {
    let out = ok(home, &["--json", "inspect", ih]);
    serde_json::from_str(out.lines().next().unwrap()).unwrap()
}

/// Total bytes of the files under `dir`.
pub fn du(dir: &Path) -> u64 {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        n += if md.is_dir() { du(&e.path()) } else { md.len() };
    }
    n
}
