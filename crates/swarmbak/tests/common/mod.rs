//! Helpers for tests that drive the real `swarmbak` binary.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_swarmbak");

pub mod browser;
pub mod fleet;
pub mod procs;

/// An HTTP answer: status, headers (names lowercased, in order) and body (a chunked
/// body decoded).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header named `name` (any case), e.g. each `Set-Cookie`.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 exchange on a fresh connection (`Connection: close`), the whole answer;
/// `None` when the connection failed or broke before the answer's head, or the answer
/// is not HTTP/1.x. The body ends where its `Content-Length` or last chunk says
/// (chromedriver keeps the connection open after answering `Connection: close`), else
/// at the end of the stream; a body cut short is returned as far as it came.
pub fn http_exchange(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Option<Response> {
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
    let mut buf = [0u8; 16 * 1024];
    let mut read_more = |out: &mut Vec<u8>| -> Option<bool> {
        let n = s.read(&mut buf).ok()?;
        out.extend_from_slice(&buf[..n]);
        Some(n > 0)
    };
    let split = loop {
        if let Some(p) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if !read_more(&mut out)? {
            return None;
        }
    };
    let head = std::str::from_utf8(&out[..split]).ok()?.to_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()?
        .strip_prefix("HTTP/1.")?
        .get(2..5)?
        .parse()
        .ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let value = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let start = split + 4;
    let no_body = method == "HEAD" || status == 204 || status == 304;
    let body = if no_body {
        Vec::new()
    } else if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            if let Some(b) = dechunk(&out[start..]) {
                break b;
            }
            // Closed before the last chunk: what came, as it came.
            if !read_more(&mut out)? {
                break out[start..].to_vec();
            }
        }
    } else if let Some(len) = value("content-length") {
        let len: usize = len.parse().ok()?;
        // Closed before the whole body: what came (the status was sent).
        while out.len() < start + len && read_more(&mut out)? {}
        out[start..out.len().min(start + len)].to_vec()
    } else {
        while read_more(&mut out)? {}
        out[start..].to_vec()
    };
    Some(Response {
        status,
        headers,
        body,
    })
}

/// A chunked body's data (`None` until it is whole, or when it is malformed).
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            // The trailer section ends with an empty line.
            return b.windows(2).any(|w| w == b"\r\n").then_some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// One HTTP/1.1 exchange on a fresh connection: (status, body); `None` when the
/// connection failed or broke.
pub fn try_http(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Option<(u16, String)> {
    http_exchange(addr, method, target, headers, body).map(|r| (r.status, r.text()))
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

/// Incompressible bytes from a small generator (xorshift; no dependency).
pub fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

/// Shard files the store of `home` holds of snapshot `ih`.
pub fn shards(home: &Path, ih: &str) -> usize {
    fs::read_dir(store_dir(home, ih).join("shards"))
        .map(|d| d.count())
        .unwrap_or(0)
}
