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
        let mut c = Command::new(BIN);
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::inherit());
        for (k, v) in FAST {
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

pub fn tracker(dir: &Path) -> Proc {
    let data = dir.join("tracker-data");
    Proc::start(
        "tracker",
        &[
            "tracker",
            // The swarm's tests predate enrolment; tests/private_tracker.rs runs the
            // private tracker. (To be converted to enrolment: issue 9.)
            "--open",
            "--listen",
            "127.0.0.1:0",
            "--data",
            data.to_str().unwrap(),
            "--interval",
            "1",
        ],
    )
}

/// Inits a machine home pointed at the tracker (with a recovery recipient).
pub fn init(home: &Path, name: &str, tracker: &str, recovery_pub: &str) {
    super::ok(
        home,
        &[
            "init",
            "--name",
            name,
            "--tracker",
            &format!("http://{tracker}"),
            "--recovery-recipient",
            recovery_pub,
        ],
    );
}

pub fn agent(home: &Path, name: &str) -> Proc {
    Proc::start(
        name,
        &[
            "--home",
            home.to_str().unwrap(),
            "agent",
            "--listen",
            "127.0.0.1:0",
        ],
    )
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
