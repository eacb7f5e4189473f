//! Helpers for the BitTorrent interop tests: libtorrent's python bindings, long-running
//! processes killed on drop, a bare HTTP GET, a small bencode reader.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The interpreter that has `import libtorrent` (Debian's python3-libtorrent). The
/// `python3` first on PATH may be another one without it.
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// A script of `interop-tests/py/`.
pub fn py_script(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("py").join(name);
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

/// Checks that `/usr/bin/python3 -c 'import libtorrent'` works and prints libtorrent's
/// version. Panics with how to install it otherwise (never a skip).
pub fn require_libtorrent() -> PathBuf {
    let py = PathBuf::from(SYSTEM_PYTHON);
    let hint = "install it with apt-get install python3-libtorrent (see README)";
    if !py.is_file() {
        panic!("{SYSTEM_PYTHON} is missing: {hint}");
    }
    let out = Command::new(&py)
        .args(["-c", "import libtorrent as lt; print(lt.__version__)"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {SYSTEM_PYTHON}: {e}"));
    if !out.status.success() {
        panic!(
            "python libtorrent is missing ({SYSTEM_PYTHON} -c 'import libtorrent' failed: {}): {hint}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    eprintln!(
        "tool libtorrent (python3-libtorrent via {SYSTEM_PYTHON}): {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    py
}

/// A long-running child process: stdout and stderr are read by threads into one log
/// (each line prefixed `out: ` or `err: `), stdout lines are also sent to a channel.
/// Killed (SIGKILL, by its own pid) and reaped on drop.
pub struct Proc {
    name: String,
    child: Child,
    lines: Receiver<String>,
    log: Arc<Mutex<String>>,
}

impl Proc {
    /// Starts `cmd` (its stdio is replaced).
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line).into_owned();
                l.lock().unwrap().push_str(&format!("out: {line}\n"));
                let _ = tx.send(line);
            }
        });
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line);
                l.lock().unwrap().push_str(&format!("err: {line}\n"));
            }
        });
        Proc {
            name: name.to_string(),
            child,
            lines: rx,
            log,
        }
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for a stdout line for which `f` returns `Some`; panics with the log when
    /// `timeout` passes or the process closes stdout first.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(v) = f(&line) {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no {what} within {timeout:?}; its output:\n{}",
                    self.name,
                    self.log()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    std::thread::sleep(Duration::from_millis(100));
                    panic!(
                        "{}: exited ({status:?}) before {what}; its output:\n{}",
                        self.name,
                        self.log()
                    )
                }
            }
        }
    }

    /// Waits until the log (stdout and stderr) contains `needle`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            if Instant::now() > deadline {
                panic!(
                    "{}: {needle:?} did not appear within {timeout:?}; its output:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Has it exited? (Reaps it if so.)
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for it to exit by itself, up to `timeout`, then panics with the log.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                std::thread::sleep(Duration::from_millis(100)); // let the readers finish
                return s;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: still running after {timeout:?}; its output:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET path` over plain HTTP/1.1 on `addr` (`host:port`); the status code and body.
pub fn http_get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"));
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "GET {path}: no HTTP header end in {:?}",
                String::from_utf8_lossy(&buf)
            )
        });
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: bad status line in {head:?}"));
    let mut body = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
        // A chunk that claims more than is there ends the body (tests read whole replies).
        let Some(chunk) = b.get(nl + 2..nl + 2 + size) else {
            break;
        };
        if size == 0 {
            break;
        }
        out.extend_from_slice(chunk);
        b = b.get(nl + 2 + size + 2..).unwrap_or(&[]);
    }
    out
}

/// A decoded bencode value (for tracker replies in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ben {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Ben>),
    Dict(BTreeMap<Vec<u8>, Ben>),
}

impl Ben {
    /// Decodes one value (trailing bytes are an error).
    pub fn decode(b: &[u8]) -> Result<Ben, String> {
        let (v, used) = Self::prefix(b, 0)?;
        if used != b.len() {
            return Err(format!("{} trailing bytes", b.len() - used));
        }
        Ok(v)
    }

    fn prefix(b: &[u8], depth: usize) -> Result<(Ben, usize), String> {
        if depth > 64 {
            return Err("too deep".into());
        }
        match b.first() {
            Some(b'i') => {
                let e = b
                    .iter()
                    .position(|c| *c == b'e')
                    .ok_or("unterminated integer")?;
                let n = std::str::from_utf8(&b[1..e])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or("bad integer")?;
                Ok((Ben::Int(n), e + 1))
            }
            Some(b'l') | Some(b'd') => {
                let dict = b[0] == b'd';
                let mut i = 1;
                let mut list = Vec::new();
                while b.get(i) != Some(&b'e') {
                    if i >= b.len() {
                        return Err("unterminated container".into());
                    }
                    let (v, n) = Self::prefix(&b[i..], depth + 1)?;
                    list.push(v);
                    i += n;
                }
                if dict {
                    if list.len() % 2 != 0 {
                        return Err("odd dictionary".into());
                    }
                    let mut m = BTreeMap::new();
                    let mut it = list.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        let Ben::Bytes(k) = k else {
                            return Err("non-string key".into());
                        };
                        m.entry(k).or_insert(v);
                    }
                    Ok((Ben::Dict(m), i + 1))
                } else {
                    Ok((Ben::List(list), i + 1))
                }
            }
            Some(c) if c.is_ascii_digit() => {
                let colon = b.iter().position(|c| *c == b':').ok_or("no colon")?;
                let len: usize = std::str::from_utf8(&b[..colon])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or("bad length")?;
                let end = colon + 1 + len;
                if end > b.len() {
                    return Err("string runs past the end".into());
                }
                Ok((Ben::Bytes(b[colon + 1..end].to_vec()), end))
            }
            _ => Err("not bencode".into()),
        }
    }

    /// `self[key]` for a dictionary.
    pub fn get(&self, key: &[u8]) -> Option<&Ben> {
        match self {
            Ben::Dict(m) => m.get(key),
            _ => None,
        }
    }

    /// The integer, if it is one.
    pub fn int(&self) -> Option<i64> {
        match self {
            Ben::Int(n) => Some(*n),
            _ => None,
        }
    }
}

/// Lower-case hex of a byte string.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bencode_reader() {
        let v = Ben::decode(b"d5:filesd3:abcd8:completei2eeee").unwrap();
        let f = v.get(b"files").unwrap().get(b"abc").unwrap();
        assert_eq!(f.get(b"complete").unwrap().int(), Some(2));
        assert!(Ben::decode(b"i1ex").is_err());
        assert_eq!(hex(&[0, 255]), "00ff");
    }
}
