//! Real processes on loopback: a tracker and agents, killed when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::BIN;

/// Settings that make the swarm react in tests within a second, not half a minute.
pub const FAST: &[(&str, &str)] = &[
    ("SWARMBAK_POLL_SECS", "0.3"),
    ("SWARMBAK_ANNOUNCE_SECS", "0.5"),
    ("SWARMBAK_HEALTH_SECS", "1.5"),
    ("SWARMBAK_FETCH_TIMEOUT_SECS", "60"),
    ("SWARMBAK_TAKEOVER_SECS", "1"),
    // The agent's change detection (the default; said so the tests do not depend on it).
    ("SWARMBAK_WATCH", "1"),
];

pub struct Proc {
    pub child: Child,
    pub addr: String,
    pub name: String,
}

impl Proc {
    /// Starts `swarmbak args` and waits for its `listening HOST:PORT` line.
    pub fn start(name: &str, args: &[&str]) -> Proc {
        Proc::start_lines(name, args, 1).0
    }

    /// Starts `swarmbak args` and reads its first `n` lines of stdout (a tracker with
    /// `--listen` and `--tls-listen` prints `listening` and `listening-tls`).
    pub fn start_lines(name: &str, args: &[&str], n: usize) -> (Proc, Vec<String>) {
        Proc::start_env(name, args, n, &[])
    }

    /// [`Proc::start_lines`] with more environment (after [`FAST`]).
    pub fn start_env(
        name: &str,
        args: &[&str],
        n: usize,
        env: &[(&str, &str)],
    ) -> (Proc, Vec<String>) {
        let mut c = Command::new(BIN);
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::inherit());
        for (k, v) in FAST.iter().chain(env) {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("swarmbak starts");
        let out = child.stdout.take().expect("stdout");
        let mut r = BufReader::new(out);
        let mut lines = Vec::new();
        for _ in 0..n {
            let mut line = String::new();
            r.read_line(&mut line).expect("reads a line");
            lines.push(line.trim().to_string());
        }
        let addr = lines[0]
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("{name}: first line was {:?}", lines[0]))
            .to_string();
        (
            Proc {
                child,
                addr,
                name: name.to_string(),
            },
            lines,
        )
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `swarmbak tracker` and its data directory (where `swarmbak tracker enroll`
/// makes tokens for it). Private unless made with [`open_tracker`].
pub struct Tracker {
    pub proc: Proc,
    pub addr: String,
    pub data: PathBuf,
    pub open: bool,
}

impl Tracker {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// `swarmbak tracker enroll --data DATA --name NAME EXTRA...`: the one-time token.
    pub fn token(&self, name: &str, extra: &[&str]) -> String {
        assert!(!self.open, "an --open tracker enrols nobody");
        let mut args = vec![
            "tracker",
            "enroll",
            "--data",
            self.data.to_str().unwrap(),
            "--name",
            name,
        ];
        args.extend_from_slice(extra);
        let out = super::ok(&self.data, &args);
        let token = out.lines().next().unwrap_or("").to_string();
        assert!(token.starts_with("swarmbak-enroll-1."), "{out}");
        token
    }

    /// `swarmbak tracker enroll --client --name NAME`: a standard client's announce URL,
    /// `http://HOST:PORT/<passkey>/announce`.
    pub fn client_announce(&self, name: &str) -> String {
        let out = super::ok(
            &self.data,
            &[
                "tracker",
                "enroll",
                "--data",
                self.data.to_str().unwrap(),
                "--client",
                "--name",
                name,
            ],
        );
        let url = out.lines().next().unwrap_or("").to_string();
        let pk = url
            .strip_prefix(&format!("{}/", self.url()))
            .and_then(|r| r.strip_suffix("/announce"))
            .unwrap_or_else(|| panic!("not BASE/<passkey>/announce: {out}"));
        assert!(
            pk.len() == 32 && pk.bytes().all(|b| b.is_ascii_hexdigit()),
            "{url}"
        );
        url
    }
}

fn start_tracker(dir: &Path, extra: &[&str]) -> Tracker {
    let data = dir.join("tracker-data");
    let mut args = vec!["tracker", "--data", data.to_str().unwrap()];
    // Any loopback port unless the test chose the address (a tracker started again where
    // it was).
    if !extra.contains(&"--listen") {
        args.extend_from_slice(&["--listen", "127.0.0.1:0"]);
    }
    // A one-second announce interval unless the test chose its own.
    if !extra.contains(&"--interval") {
        args.extend_from_slice(&["--interval", "1"]);
    }
    args.extend_from_slice(extra);
    let proc = Proc::start("tracker", &args);
    Tracker {
        addr: proc.addr.clone(),
        proc,
        data,
        open: extra.contains(&"--open"),
    }
}

/// The company tracker as an organisation runs it: private (machines enrol), with the
/// organisation's recovery key `recovery_pub` handed to every machine it enrols. Started
/// again on the same `dir`, it keeps its machines and snapshots.
pub fn tracker(dir: &Path, recovery_pub: &str) -> Tracker {
    tracker_with(dir, recovery_pub, &[])
}

/// [`tracker`] with more arguments, e.g. `--interval 60` (a machine that announced stays
/// online for twice the interval) or `--overdue-warn 7`.
pub fn tracker_with(dir: &Path, recovery_pub: &str, extra: &[&str]) -> Tracker {
    let mut args = vec!["--recovery-recipient", recovery_pub];
    args.extend_from_slice(extra);
    start_tracker(dir, &args)
}

/// The old open tracker (`--open`: no passkeys, unsigned publishes under any name), for
/// the tests that are about it.
pub fn open_tracker(dir: &Path) -> Tracker {
    start_tracker(dir, &["--open"])
}

/// A machine home that uses `tracker`. On a private tracker the administrator enrols it
/// (`tracker enroll`; `--name NAME` plus `extra`, e.g. `--vip`) and the machine redeems
/// the token (`init --enroll`): it must come out enrolled as `name` at this tracker, with
/// `recovery_pub` among the recovery recipients the tracker handed it. On an `--open`
/// tracker: `init --name --tracker --recovery-recipient`, as before enrolment.
pub fn init(home: &Path, name: &str, tracker: &Tracker, recovery_pub: &str) {
    init_with(home, name, tracker, recovery_pub, &[]);
}

pub fn init_with(home: &Path, name: &str, tracker: &Tracker, recovery_pub: &str, extra: &[&str]) {
    if tracker.open {
        super::ok(
            home,
            &[
                "init",
                "--name",
                name,
                "--tracker",
                &tracker.url(),
                "--recovery-recipient",
                recovery_pub,
            ],
        );
        return;
    }
    let token = tracker.token(name, extra);
    super::ok(home, &["init", "--enroll", &token]);
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("config.json")).unwrap()).unwrap();
    assert_eq!(c["name"], name, "{c}");
    assert_eq!(c["tracker"], tracker.url(), "{c}");
    assert!(c["enrolment"]["passkey"].is_string(), "not enrolled: {c}");
    assert!(
        c["recovery_recipients"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r == recovery_pub)),
        "the tracker did not hand over the recovery recipient {recovery_pub}: {c}"
    );
}

pub fn agent(home: &Path, name: &str) -> Proc {
    agent_env(home, name, &[])
}

/// [`agent`] with more environment, e.g. `SWARMBAK_RETIRE_GRACE_SECS`.
pub fn agent_env(home: &Path, name: &str, env: &[(&str, &str)]) -> Proc {
    let args = [
        "--home",
        home.to_str().unwrap(),
        "agent",
        "--listen",
        "127.0.0.1:0",
    ];
    Proc::start_env(name, &args, 1, env).0
}

/// `swarmbak args` with the fast settings; returns the output.
pub fn run_fast(home: &Path, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.arg("--home").arg(home).args(args);
    for (k, v) in FAST {
        c.env(k, v);
    }
    c.output().expect("swarmbak runs")
}

/// The pieces an agent's store holds of a snapshot.
pub fn held(home: &Path, ih: &str) -> Vec<usize> {
    let d: PathBuf = home.join("store/snapshots").join(ih).join("shards");
    let mut v: Vec<usize> = std::fs::read_dir(d)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The organisation's recovery recipient, from a home made for it under `dir`.
pub fn recovery_key(dir: &Path) -> String {
    let rec = dir.join("recovery");
    super::ok(&rec, &["init", "--name", "recovery"]);
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rec.join("config.json")).unwrap()).unwrap();
    c["public_key"].as_str().unwrap().to_owned()
}

/// The backup reports the tracker of `data` keeps of machine `name` (its SQLite file).
pub fn reports_of(data: &Path, name: &str) -> Vec<swarmbak_tracker::storage::ReportRow> {
    use swarmbak_tracker::storage::Storage;
    let (mut db, _) = swarmbak_tracker::sqlite::Sqlite::open(data).unwrap();
    let id = db
        .machines()
        .unwrap()
        .into_iter()
        .find(|m| m.name == name)
        .unwrap()
        .id;
    db.reports(id, 1000).unwrap()
}
