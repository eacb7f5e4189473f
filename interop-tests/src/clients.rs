//! Helpers for the BitTorrent-client interop tests: background processes killed on drop
//! (swarmbak trackers and agents, libtorrent, transmission, aria2, opentracker), bounded
//! waits, piece verification, tree comparison, swarmbak's wire log, and the results file
//! that `protocol-spec/interop.md`'s table is generated from.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{require_tool, swarmbak_bin, target_profile_dir, Cmd};

/// Settings that make swarmbak react within a second in tests.
pub const FAST: &[(&str, &str)] = &[
    ("SWARMBAK_POLL_SECS", "0.3"),
    ("SWARMBAK_ANNOUNCE_SECS", "0.5"),
    ("SWARMBAK_HEALTH_SECS", "1.5"),
    ("SWARMBAK_TAKEOVER_SECS", "1"),
    ("SWARMBAK_FETCH_TIMEOUT_SECS", "60"),
    ("SWARMBAK_WIRE_LOG", "1"),
];

/// The interpreter with Debian's python3-libtorrent (the `python3` first on PATH may be
/// another one without it).
pub const LT_PYTHON: &str = "/usr/bin/python3";

/// The workspace root (where `protocol-spec/` and `target/` live).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("interop-tests has a parent")
        .to_path_buf()
}

/// A python helper of `interop-tests/py/`.
pub fn py(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("py")
        .join(script)
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Checks that `/usr/bin/python3` imports libtorrent and prints its version.
pub fn require_libtorrent() -> String {
    if !Path::new(LT_PYTHON).is_file() {
        panic!("{LT_PYTHON} is missing: apt-get install python3 python3-libtorrent");
    }
    let out = Cmd::new(LT_PYTHON)
        .args(["-c", "import libtorrent as lt; print(lt.__version__)"])
        .run_unchecked();
    if !out.status.success() {
        panic!(
            "python3-libtorrent is missing: apt-get install python3-libtorrent (import it with \
             {LT_PYTHON})\n{}",
            out.stderr_str()
        );
    }
    let v = out.first_line();
    eprintln!("tool libtorrent (python3-libtorrent, {LT_PYTHON}): {v}");
    v
}

/// The first line a tool prints for `--version` (or `args`), also printed to stderr.
pub fn tool_version(name: &str, args: &[&str]) -> String {
    let path = require_tool(name);
    let out = Cmd::new(&path).args(args).run_unchecked();
    let mut s = out.stdout_str();
    if s.trim().is_empty() {
        s = out.stderr_str();
    }
    s.lines().next().unwrap_or("").trim().to_string()
}

type Lines = Arc<Mutex<Vec<String>>>;

fn pump(r: impl Read + Send + 'static, lines: Lines) {
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            lines.lock().unwrap().push(l);
        }
    });
}

/// A background process in its own process group, stdout and stderr collected line by
/// line; the whole group is killed when dropped.
pub struct Bg {
    pub name: String,
    child: Mutex<Child>,
    out: Lines,
    err: Lines,
}

impl Bg {
    pub fn spawn(name: &str, mut c: Command) -> Bg {
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {c:?}: {e}"));
        let out: Lines = Arc::default();
        let err: Lines = Arc::default();
        pump(child.stdout.take().unwrap(), out.clone());
        pump(child.stderr.take().unwrap(), err.clone());
        Bg {
            name: name.to_string(),
            child: Mutex::new(child),
            out,
            err,
        }
    }

    /// `swarmbak [--home HOME] ARGS` with the fast settings and the wire log on.
    pub fn swarmbak(name: &str, home: Option<&Path>, args: &[&str]) -> Bg {
        let mut c = Command::new(swarmbak_bin());
        if let Some(h) = home {
            c.arg("--home").arg(h);
        }
        c.args(args);
        for (k, v) in FAST {
            c.env(k, v);
        }
        Bg::spawn(name, c)
    }

    /// Starts `swarmbak ARGS` and waits for its `listening HOST:PORT` line; returns the
    /// process and the address.
    pub fn swarmbak_listening(name: &str, home: Option<&Path>, args: &[&str]) -> (Bg, String) {
        let bg = Bg::swarmbak(name, home, args);
        let line = bg.wait_line(|l| l.starts_with("listening "), Duration::from_secs(20));
        let addr = line["listening ".len()..].trim().to_string();
        (bg, addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.err.lock().unwrap().clone()
    }

    /// The last lines of both streams, for failure messages.
    pub fn tail(&self) -> String {
        let t = |v: Vec<String>| {
            let n = v.len().saturating_sub(25);
            v[n..]
                .iter()
                .map(|l| {
                    let mut l = l.clone();
                    if l.len() > 600 {
                        let mut cut = 600;
                        while !l.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        l.truncate(cut);
                        l.push_str("...");
                    }
                    l
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        format!(
            "--- {} stdout (tail) ---\n{}\n--- {} stderr (tail) ---\n{}",
            self.name,
            t(self.stdout_lines()),
            self.name,
            t(self.stderr_lines())
        )
    }

    /// Waits (bounded) for a stdout line matching `pred`; panics with the output tail.
    pub fn wait_line(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        loop {
            {
                let v = self.out.lock().unwrap();
                if let Some(l) = v[seen..].iter().find(|l| pred(l)) {
                    return l.clone();
                }
                seen = v.len();
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: no expected output line within {timeout:?}\n{}",
                    self.name,
                    self.tail()
                );
            }
            if let Ok(Some(st)) = self.try_status() {
                // Give the reader thread a moment to drain the pipe.
                std::thread::sleep(Duration::from_millis(200));
                if let Some(l) = self.out.lock().unwrap().iter().find(|l| pred(l)) {
                    return l.clone();
                }
                panic!(
                    "{}: exited ({st}) before the expected line\n{}",
                    self.name,
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_status(&self) -> std::io::Result<Option<ExitStatus>> {
        self.child.lock().unwrap().try_wait()
    }

    /// Waits (bounded) for the process to exit; panics with the tail on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status().expect("try_wait") {
                std::thread::sleep(Duration::from_millis(100));
                return st;
            }
            if Instant::now() > deadline {
                let tail = self.tail();
                self.kill();
                panic!("{}: still running after {timeout:?}\n{tail}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process group (SIGKILL) and reaps the process.
    pub fn kill(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Ok(None) = child.try_wait() {
            // The whole group: a client's helper processes go too.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// Sends a signal (e.g. "HUP") to the process itself.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status();
    }

    /// swarmbak's wire log lines (`SWARMBAK_WIRE_LOG`) from stderr.
    pub fn wire_log(&self) -> Vec<WireEvent> {
        self.stderr_lines()
            .iter()
            .filter_map(|l| WireEvent::parse(l))
            .collect()
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.tail());
        }
        self.kill();
    }
}

/// Polls `f` until it returns Some, at most `timeout`; panics with `what` otherwise.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One line of swarmbak's wire log (`swarmbak-wire {json}`), kept as its raw JSON with
/// a few fields pulled out (the interop helpers have no JSON dependency).
#[derive(Debug, Clone)]
pub struct WireEvent {
    pub event: String,
    pub peer: String,
    pub json: String,
}

impl WireEvent {
    pub fn parse(line: &str) -> Option<WireEvent> {
        let json = line.strip_prefix("swarmbak-wire ")?.to_string();
        Some(WireEvent {
            event: json_str(&json, "event")?,
            peer: json_str(&json, "peer").unwrap_or_default(),
            json,
        })
    }
    pub fn str(&self, key: &str) -> Option<String> {
        json_str(&self.json, key)
    }
    pub fn bool(&self, key: &str) -> Option<bool> {
        let i = self.json.find(&format!("\"{key}\":"))? + key.len() + 3;
        let rest = &self.json[i..];
        if rest.starts_with("true") {
            Some(true)
        } else if rest.starts_with("false") {
            Some(false)
        } else {
            None
        }
    }
    /// The raw JSON value of `key` (an object, number, ...), up to its matching end.
    pub fn raw(&self, key: &str) -> Option<String> {
        let i = self.json.find(&format!("\"{key}\":"))? + key.len() + 3;
        let rest = &self.json[i..];
        let mut depth = 0i32;
        let mut in_str = false;
        let mut esc = false;
        for (j, c) in rest.char_indices() {
            if in_str {
                match (esc, c) {
                    (true, _) => esc = false,
                    (false, '\\') => esc = true,
                    (false, '"') => in_str = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => in_str = true,
                '{' | '[' => depth += 1,
                '}' | ']' if depth == 0 => return Some(rest[..j].to_string()),
                '}' | ']' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(rest[..=j].to_string());
                    }
                }
                ',' if depth == 0 => return Some(rest[..j].to_string()),
                _ => {}
            }
        }
        Some(rest.to_string())
    }
    /// Message count `name` in the `sent` or `received` object of an `end` event.
    pub fn count(&self, dir: &str, name: &str) -> u64 {
        self.raw(dir)
            .and_then(|o| {
                let i = o.find(&format!("\"{name}\":"))? + name.len() + 3;
                o[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect::<String>()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }
}

fn json_str(json: &str, key: &str) -> Option<String> {
    let i = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut out = String::new();
    let mut esc = false;
    for c in json[i..].chars() {
        match (esc, c) {
            (true, c) => {
                out.push(c);
                esc = false
            }
            (false, '\\') => esc = true,
            (false, '"') => return Some(out),
            (false, c) => out.push(c),
        }
    }
    None
}

/// What swarmbak's wire log says one foreign client negotiated: the client's name (its
/// BEP 10 `v`), its reserved bits, the extensions it offered, and the messages each way.
#[derive(Debug, Clone, Default)]
pub struct Negotiated {
    pub client: Option<String>,
    pub their_reserved: Vec<String>,
    pub their_fast: bool,
    pub their_ext: bool,
    pub fast: bool,
    pub ext: bool,
    pub extensions: Vec<String>,
    pub sent: BTreeMap<String, u64>,
    pub received: BTreeMap<String, u64>,
    pub connections: usize,
}

/// Summarises the wire log of swarmbak processes for the connections to peers that are
/// not swarmbak (their extension handshake `v` does not start with "swarmbak", or they sent
/// none). `peers_of_interest` limits it to these remote addresses when non-empty.
pub fn negotiated(events: &[WireEvent]) -> Negotiated {
    let swarmbak_peers: std::collections::HashSet<String> = events
        .iter()
        .filter(|e| e.event == "extension_handshake")
        .filter(|e| e.str("client").is_some_and(|c| c.starts_with("swarmbak")))
        .map(|e| e.peer.clone())
        .collect();
    let mut n = Negotiated::default();
    let mut firsts = (
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    );
    for e in events {
        if swarmbak_peers.contains(&e.peer) {
            continue;
        }
        match e.event.as_str() {
            "start" => {
                n.connections += 1;
                if let Some(r) = e.str("their_reserved") {
                    if !n.their_reserved.contains(&r) {
                        n.their_reserved.push(r);
                    }
                }
                n.their_fast |= e.bool("their_fast").unwrap_or(false);
                n.their_ext |= e.bool("their_extension_protocol").unwrap_or(false);
                n.fast |= e.bool("fast").unwrap_or(false);
                n.ext |= e.bool("extension_protocol").unwrap_or(false);
            }
            "extension_handshake" => {
                if n.client.is_none() {
                    n.client = e.str("client");
                }
                if let Some(m) = e.raw("m") {
                    for name in m
                        .trim_matches(|c| c == '{' || c == '}')
                        .split(',')
                        .filter_map(|kv| kv.split(':').next())
                        .map(|k| k.trim_matches('"').to_string())
                        .filter(|k| !k.is_empty())
                    {
                        if !n.extensions.contains(&name) {
                            n.extensions.push(name);
                        }
                    }
                }
            }
            "end" => {
                for (dir, map) in [("sent", &mut n.sent), ("received", &mut n.received)] {
                    if let Some(o) = e.raw(dir) {
                        for kv in o.trim_matches(|c| c == '{' || c == '}').split(',') {
                            let mut it = kv.split(':');
                            if let (Some(k), Some(v)) = (it.next(), it.next()) {
                                if let Ok(v) = v.parse::<u64>() {
                                    *map.entry(k.trim_matches('"').to_string()).or_default() += v;
                                }
                            }
                        }
                    }
                }
            }
            "first" => {
                let k = e.str("kind").unwrap_or_default();
                let map = if e.str("dir").as_deref() == Some("sent") {
                    &mut firsts.0
                } else {
                    &mut firsts.1
                };
                map.insert(k);
            }
            _ => {}
        }
    }
    // A process that exits at once (a fetch) may log no `end`: its `first` events count.
    for k in firsts.0 {
        n.sent.entry(k).or_insert(1);
    }
    for k in firsts.1 {
        n.received.entry(k).or_insert(1);
    }
    n
}

/// `interop-tests/py/lt_client.py verify`: every piece of `file` against `torrent`'s SHA-1
/// hashes (libtorrent reads the torrent). Panics naming the bad pieces.
pub fn verify_pieces(torrent: &Path, file: &Path) {
    let out = Cmd::new(LT_PYTHON)
        .arg(py("lt_client.py"))
        .arg("verify")
        .arg(torrent)
        .arg(file)
        .run_unchecked();
    if !out.status.success() {
        panic!(
            "pieces of {} do not match {}: {}{}",
            file.display(),
            torrent.display(),
            out.stdout_str(),
            out.stderr_str()
        );
    }
}

/// Two trees are identical: `diff -r --no-dereference` finds nothing.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let out = Cmd::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(a)
        .arg(b)
        .run_unchecked();
    assert!(
        out.status.success(),
        "{} and {} differ:\n{}{}",
        a.display(),
        b.display(),
        out.stdout_str(),
        out.stderr_str()
    );
}

/// The results file the tests append to (JSON lines) and `py/table.py` reads.
pub fn results_file() -> PathBuf {
    target_profile_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(target_profile_dir)
        .join("interop-results.jsonl")
}

fn json_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Records one cell of the client × feature table: `ok` is the verdict, `detail` what
/// was seen (shown in the cell). Appends a JSON line to [`results_file`].
pub fn record(client: &str, version: &str, feature: &str, ok: bool, detail: &str) {
    use std::io::Write;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let line = format!(
        "{{\"client\":{},\"version\":{},\"feature\":{},\"ok\":{},\"detail\":{},\"time\":{}}}\n",
        json_escape(client),
        json_escape(version),
        json_escape(feature),
        ok,
        json_escape(detail),
        secs
    );
    eprintln!("interop result: {}", line.trim());
    let path = results_file();
    if let Some(d) = path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(line.as_bytes()).expect("write results");
}

/// Regenerates the table in `protocol-spec/interop.md` from the results file.
pub fn regenerate_table() {
    let md = workspace_root().join("protocol-spec/interop.md");
    Cmd::new(LT_PYTHON)
        .arg(py("table.py"))
        .arg(results_file())
        .arg(&md)
        .run();
}

/// The company tracker on 127.0.0.1 as an organisation runs it: private (only enrolled
/// machines and clients announce or publish), handing the organisation's recovery key
/// `recovery_pub` to every machine it enrols (killed on drop). Enrol with
/// [`enrol_machine`] and [`client_announce_url`] on the same `data`.
pub fn swarmbak_tracker(data: &Path, recovery_pub: &str) -> (Bg, String) {
    let d = data.to_str().expect("utf-8 path");
    Bg::swarmbak_listening(
        "swarmbak tracker",
        None,
        &[
            "tracker",
            "--listen",
            "127.0.0.1:0",
            "--data",
            d,
            "--interval",
            "2",
            "--recovery-recipient",
            recovery_pub,
        ],
    )
}

/// The administrator enrols `name` at the tracker on `tracker_data` (`swarmbak tracker
/// enroll`) and the machine redeems the one-time token (`swarmbak --home HOME init
/// --enroll TOKEN`): keys, certificate, passkey, tracker URL and recovery recipients.
/// Checks that `home` came out enrolled under `name`.
pub fn enrol_machine(home: &Path, tracker_data: &Path, name: &str) {
    let out = Cmd::swarmbak(home)
        .args(["tracker", "enroll", "--data"])
        .arg(tracker_data)
        .args(["--name", name])
        .run();
    let token = out.first_line();
    assert!(
        token.starts_with("swarmbak-enroll-1."),
        "tracker enroll: {}",
        out.stdout_str()
    );
    Cmd::swarmbak(home).args(["init", "--enroll", &token]).run();
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("config.json")).expect("config.json"))
            .expect("config.json is JSON");
    assert_eq!(c["name"], name, "{c}");
    assert!(c["enrolment"]["passkey"].is_string(), "not enrolled: {c}");
}

/// A standard BitTorrent client enrolled at the tracker on `tracker_data` (`swarmbak
/// tracker enroll --client --name NAME`): its own announce URL, with its passkey in the
/// BEP 48 form `http://HOST:PORT/<passkey>/announce`.
pub fn client_announce_url(tracker_data: &Path, name: &str) -> String {
    let out = Cmd::new(crate::swarmbak_bin())
        .args(["tracker", "enroll", "--data"])
        .arg(tracker_data)
        .args(["--client", "--name", name])
        .run();
    let url = out.first_line();
    let pk = url
        .strip_suffix("/announce")
        .and_then(|u| u.rsplit_once('/'))
        .map(|(_, pk)| pk)
        .unwrap_or("");
    assert!(
        url.starts_with("http://") && pk.len() == 32 && pk.bytes().all(|b| b.is_ascii_hexdigit()),
        "tracker enroll --client: not http://HOST:PORT/<passkey>/announce: {url:?}"
    );
    url
}

/// `swarmbak --home HOME export IH FILE --announce URL`: the snapshot's .torrent for a
/// standard client, announcing to that client's own passkey URL. Checks that the file
/// says so and that the info-hash is the snapshot's.
pub fn export_for(home: &Path, ih: &str, file: &Path, announce_url: &str) {
    Cmd::swarmbak(home)
        .args(["export", ih])
        .arg(file)
        .args(["--announce", announce_url])
        .run();
    let out = Cmd::swarmbak(home)
        .args(["--json", "inspect"])
        .arg(file)
        .run();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect --json");
    assert_eq!(v["infohash"], ih, "{v}");
    assert_eq!(v["announce"], announce_url, "{v}");
}

/// The passkey an enrolled home announces with (from its config.json).
pub fn passkey_of(home: &Path) -> String {
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("config.json")).expect("config.json"))
            .expect("config.json is JSON");
    c["enrolment"]["passkey"]
        .as_str()
        .unwrap_or_else(|| panic!("{} is not enrolled: {c}", home.display()))
        .to_string()
}

/// `swarmbak --home HOME init --name NAME --tracker URL --recovery-recipient KEY`: a
/// machine that does not enrol (for trackers other than swarmbak's: opentracker).
pub fn init_machine(home: &Path, name: &str, tracker_url: &str, recovery_pub: &str) {
    Cmd::swarmbak(home)
        .args(["init", "--name", name, "--tracker", tracker_url])
        .args(["--recovery-recipient", recovery_pub])
        .run();
}

/// The agent of a home (killed on drop).
pub fn agent(name: &str, home: &Path) -> (Bg, String) {
    Bg::swarmbak_listening(name, Some(home), &["agent", "--listen", "127.0.0.1:0"])
}

/// A `Cmd` for swarmbak with the fast settings.
pub fn swarmbak_fast(home: &Path) -> Cmd {
    let mut c = Cmd::swarmbak(home);
    for (k, v) in FAST {
        c = c.env(k, v);
    }
    c
}

/// libtorrent seeding `torrent` over `save` (until dropped); waits until every piece
/// checks and it re-announced.
pub fn libtorrent_seed(torrent: &Path, save: &Path) -> Bg {
    let mut c = Command::new(LT_PYTHON);
    c.arg(py("lt_client.py")).arg("seed").arg(torrent).arg(save);
    let bg = Bg::spawn("libtorrent seed", c);
    bg.wait_line(
        |l| l.contains("\"event\": \"seeding\""),
        Duration::from_secs(60),
    );
    bg
}

/// transmission-daemon with its own config dir, only on 127.0.0.1 (no DHT, LPD, PEX, uTP,
/// port mapping; encryption not preferred), driven over RPC by transmission-remote.
pub struct Transmission {
    pub daemon: Bg,
    pub rpc: String,
    pub peer_port: u16,
}

impl Transmission {
    pub fn start(config: &Path, download: &Path) -> Transmission {
        require_tool("transmission-daemon");
        require_tool("transmission-remote");
        std::fs::create_dir_all(config).unwrap();
        std::fs::create_dir_all(download).unwrap();
        let rpc_port = free_port();
        let peer_port = free_port();
        let settings = format!(
            r#"{{
  "bind-address-ipv4": "127.0.0.1",
  "bind-address-ipv6": "::1",
  "dht-enabled": false,
  "lpd-enabled": false,
  "pex-enabled": false,
  "utp-enabled": false,
  "port-forwarding-enabled": false,
  "peer-port": {peer_port},
  "peer-port-random-on-start": false,
  "rpc-enabled": true,
  "rpc-bind-address": "127.0.0.1",
  "rpc-port": {rpc_port},
  "rpc-authentication-required": false,
  "rpc-whitelist-enabled": false,
  "rpc-host-whitelist-enabled": false,
  "download-dir": {dl},
  "incomplete-dir-enabled": false,
  "encryption": 0,
  "ratio-limit-enabled": false,
  "idle-seeding-limit-enabled": false,
  "start-added-torrents": true,
  "blocklist-enabled": false,
  "message-level": 2
}}
"#,
            dl = json_escape(download.to_str().unwrap())
        );
        std::fs::write(config.join("settings.json"), settings).unwrap();
        let mut c = Command::new("transmission-daemon");
        c.arg("-f").arg("-g").arg(config);
        let daemon = Bg::spawn("transmission-daemon", c);
        let rpc = format!("127.0.0.1:{rpc_port}");
        let t = Transmission {
            daemon,
            rpc,
            peer_port,
        };
        wait_for("transmission-daemon's RPC", Duration::from_secs(20), || {
            t.remote(&["-l"]).status.success().then_some(())
        });
        t
    }

    pub fn remote(&self, args: &[&str]) -> crate::Output {
        Cmd::new("transmission-remote")
            .arg(&self.rpc)
            .args(args)
            .run_unchecked()
    }

    /// `transmission-remote -t all -i`.
    pub fn info(&self) -> String {
        self.remote(&["-t", "all", "-i"]).stdout_str()
    }

    /// Percent done is 100% and every byte it has is verified.
    pub fn complete(&self) -> bool {
        let i = self.info();
        let have = i
            .lines()
            .find(|l| l.trim_start().starts_with("Have:"))
            .unwrap_or("");
        i.contains("Percent Done: 100%")
            && have.contains("verified")
            && !have.contains("None")
            && i.lines().any(|l| {
                let l = l.trim();
                l == "State: Seeding" || l == "State: Idle" || l == "State: Up & Down"
            })
    }
}

/// aria2c arguments that keep it on 127.0.0.1 with no DHT, LPD or PEX.
pub fn aria2_args(dir: &Path, port: u16) -> Vec<String> {
    vec![
        format!("--dir={}", dir.display()),
        "--enable-dht=false".into(),
        "--enable-dht6=false".into(),
        "--bt-enable-lpd=false".into(),
        "--enable-peer-exchange=false".into(),
        format!("--listen-port={port}"),
        "--interface=127.0.0.1".into(),
        "--disable-ipv6=true".into(),
        "--summary-interval=1".into(),
        "--console-log-level=notice".into(),
        "--file-allocation=none".into(),
        "--follow-torrent=false".into(),
        "--bt-tracker-connect-timeout=5".into(),
        "--bt-tracker-timeout=5".into(),
        "--bt-tracker-interval=2".into(),
        "--check-certificate=false".into(),
        "--auto-save-interval=0".into(),
    ]
}

/// Debian's opentracker (whitelist-only build) on 127.0.0.1, killed on drop. Its
/// whitelist lives in a directory of its own that the user `nobody` (which opentracker
/// drops to) can read, given by absolute path; [`OpenTracker::allow`] adds an infohash
/// and reloads the list with SIGHUP.
pub struct OpenTracker {
    pub proc: Bg,
    pub port: u16,
    pub dir: PathBuf,
    whitelist: PathBuf,
}

impl OpenTracker {
    pub fn start() -> OpenTracker {
        use std::os::unix::fs::PermissionsExt;
        require_tool("opentracker");
        let port = free_port();
        let udp = free_port();
        let dir = std::env::temp_dir().join(format!(
            "swarmbak-opentracker-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let whitelist = dir.join("whitelist");
        std::fs::write(&whitelist, "").unwrap();
        std::fs::set_permissions(&whitelist, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut c = Command::new("opentracker");
        c.args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-P",
            &udp.to_string(),
        ])
        .arg("-w")
        .arg(&whitelist)
        .current_dir(&dir);
        let proc = Bg::spawn("opentracker", c);
        wait_for("opentracker to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        OpenTracker {
            proc,
            port,
            dir,
            whitelist,
        }
    }

    /// `http://127.0.0.1:PORT` (swarmbak's `--tracker` form).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whitelists an infohash (hex) and reloads the list (SIGHUP).
    pub fn allow(&self, ih_hex: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.whitelist)
            .unwrap();
        writeln!(f, "{ih_hex}").unwrap();
        drop(f);
        self.proc.signal("HUP");
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl Drop for OpenTracker {
    fn drop(&mut self) {
        self.proc.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
