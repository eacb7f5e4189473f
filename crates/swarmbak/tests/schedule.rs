//! Scheduled backups (issue 12; swarm.md §15): a real private tracker, machines enrolled
//! with `init --enroll`, their backup set given with `init --backup --every`, and real
//! agents that back up by themselves. What they did is read where a user reads it:
//! `swarmbak status --json`, `swarmbak snapshots --json`, and the tracker's SQLite file.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::procs;

fn status(home: &Path) -> serde_json::Value {
    let out = common::ok(home, &["--json", "status"]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// This machine's snapshots as `snapshots --json` lists them, oldest first.
fn snapshot_list(home: &Path) -> Vec<serde_json::Value> {
    let out = common::ok(home, &["--json", "snapshots"]);
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect()
}

/// This machine's snapshots (infohashes), oldest first.
fn snapshots(home: &Path) -> Vec<String> {
    snapshot_list(home)
        .iter()
        .filter_map(|v| v["infohash"].as_str().map(str::to_owned))
        .collect()
}

/// Waits up to `secs` for `cond`, polling every 100 ms; panics with `what` and the
/// last status.
fn wait(home: &Path, secs: u64, what: &str, mut cond: impl FnMut(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = status(home);
        if cond(&st) {
            return;
        }
        if Instant::now() > deadline {
            panic!("waited {secs} s for {what}; status: {st:#}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tree(dir: &Path) -> PathBuf {
    let t = dir.join("documents");
    std::fs::create_dir_all(t.join("letters/2026")).unwrap();
    std::fs::create_dir_all(t.join(".cache/thumbs")).unwrap();
    for i in 0..50 {
        std::fs::write(
            t.join(format!("letters/2026/letter-{i}.txt")),
            format!("Dear {i},\n").repeat(100),
        )
        .unwrap();
    }
    std::fs::write(t.join(".cache/thumbs/big.bin"), vec![7u8; 100_000]).unwrap();
    std::fs::write(t.join("notes.txt"), b"first notes\n").unwrap();
    t
}

/// A private tracker and an enrolled machine "desk" with a tree to back up.
struct Desk {
    t: tempfile::TempDir,
    tracker: procs::Tracker,
    home: PathBuf,
    docs: PathBuf,
}

fn desk() -> Desk {
    let t = tempfile::tempdir().unwrap();
    let recovery = procs::recovery_key(t.path());
    let tracker = procs::tracker(t.path(), &recovery);
    let home = t.path().join("desk");
    procs::init(&home, "desk", &tracker, &recovery);
    let docs = tree(t.path());
    Desk {
        t,
        tracker,
        home,
        docs,
    }
}

/// The agent makes a snapshot by itself when due, none while nothing changes (it knows
/// from watching, without a scan), a new one after an edit that read only the edited
/// file, and the tracker has every attempt.
#[test]
fn the_agent_backs_up_when_due_and_not_while_nothing_changes() {
    let Desk {
        t,
        tracker,
        home,
        docs,
    } = desk();
    let out = common::ok(
        &home,
        &["init", "--backup", docs.to_str().unwrap(), "--every", "2s"],
    );
    assert!(out.contains("backed up by the agent every 2s"), "{out}");
    assert!(
        out.contains(".cache/"),
        "the default excludes are said: {out}"
    );
    let agent = procs::agent(&home, "desk");
    // The first backup: at once.
    wait(&home, 30, "the first backup", |s| {
        s["backup"]["last_success"]["infohash"].is_string()
    });
    let first = snapshots(&home);
    assert_eq!(first.len(), 1, "{first:?}");
    // Caches are left out: 50 letters and the notes.
    assert_eq!(snapshot_list(&home)[0]["files"], 51);
    // Three intervals with nothing changed: attempts, no snapshot, no scan.
    let st = status(&home);
    let since = st["backup"]["last"]["start"].as_i64().unwrap();
    wait(&home, 20, "two more attempts", |s| {
        s["backup"]["last"]["start"].as_i64().unwrap() >= since + 4
    });
    let st = status(&home);
    let last = &st["backup"]["last"];
    assert_eq!(last["ok"], true, "{st:#}");
    assert_eq!(last["unchanged"], true, "{st:#}");
    assert!(
        last["how"].as_str().unwrap().starts_with("watched"),
        "nothing changed is known from watching: {st:#}"
    );
    assert_eq!(snapshots(&home), first, "no snapshot while nothing changes");
    // An edit: the next backup makes a snapshot that read only it.
    std::fs::write(
        docs.join("letters/2026/letter-7.txt"),
        b"Dear seven, again\n",
    )
    .unwrap();
    wait(&home, 20, "a backup of the edit", |s| {
        s["backup"]["last_success"]["unchanged"] == false
            && s["backup"]["last_success"]["infohash"].as_str() != Some(first[0].as_str())
    });
    let st = status(&home);
    let made = &st["backup"]["last_success"];
    assert!(
        made["how"].as_str().unwrap().starts_with("watched"),
        "{st:#}"
    );
    assert_eq!(
        made["files_read"], 1,
        "only the edited file was read: {st:#}"
    );
    assert_eq!(
        made["bytes_read"], 18,
        "only the edited file was read: {st:#}"
    );
    let all = snapshots(&home);
    assert_eq!(all.len(), 2, "{all:?}");
    let second = made["infohash"].as_str().unwrap().to_owned();
    assert_eq!(all[1], second);
    // The tracker has every attempt, each a success naming the snapshot then current.
    std::thread::sleep(Duration::from_secs(1));
    let reports = procs::reports_of(&tracker.data, "desk");
    assert!(reports.len() >= 4, "{reports:?}");
    assert!(reports.iter().all(|r| r.outcome.is_ok()), "{reports:?}");
    for ih in [&first[0], &second] {
        assert!(
            reports
                .iter()
                .any(|r| r.outcome.as_ref().map(hex::encode).as_deref() == Ok(ih.as_str())),
            "{ih} reported: {reports:?}"
        );
    }
    // Both published.
    assert!(
        snapshot_list(&home).iter().all(|s| s["published"] == true),
        "{:?}",
        snapshot_list(&home)
    );
    // And the edit is in the snapshot: restored with the recovery key's machine gone,
    // from this machine's store once its agent stopped.
    drop(agent);
    let to = t.path().join("restored");
    common::ok(
        &home,
        &[
            "fetch",
            &second,
            "--to",
            to.to_str().unwrap(),
            "--path",
            "documents/letters/2026/letter-7.txt",
        ],
    );
    assert_eq!(
        std::fs::read(to.join("documents/letters/2026/letter-7.txt")).unwrap(),
        b"Dear seven, again\n"
    );
}

/// An agent started long after the last backup (three intervals) backs up at once, as
/// an overdue machine; a backup the agent could not report while the tracker was down
/// waits in the outbox and reaches the tracker when it is back.
#[test]
fn an_overdue_machine_backs_up_at_once_and_reports_reach_a_tracker_that_was_down() {
    let t = tempfile::tempdir().unwrap();
    let recovery = procs::recovery_key(t.path());
    let mut tracker = procs::tracker(t.path(), &recovery);
    let home = t.path().join("laptop");
    procs::init(&home, "laptop", &tracker, &recovery);
    let docs = tree(t.path());
    common::ok(
        &home,
        &["init", "--backup", docs.to_str().unwrap(), "--every", "3s"],
    );
    // Backed up by hand; then the machine is away (no agent) for three intervals, and
    // the tracker goes down.
    let by_hand = common::seed(&home, &[&docs]);
    std::fs::write(docs.join("notes.txt"), b"written while away\n").unwrap();
    std::thread::sleep(Duration::from_secs(9));
    let addr = tracker.addr.clone();
    tracker.kill();
    let started = Instant::now();
    let _agent = procs::agent(&home, "laptop");
    wait(&home, 30, "the overdue backup", |s| {
        s["backup"]["last_success"]["infohash"]
            .as_str()
            .is_some_and(|ih| ih != by_hand)
    });
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "at once, not after an interval: {:?}",
        started.elapsed()
    );
    let st = status(&home);
    assert!(
        st["backup"]["last_success"]["why"]
            .as_str()
            .unwrap()
            .starts_with("overdue"),
        "{st:#}"
    );
    let made = st["backup"]["last_success"]["infohash"]
        .as_str()
        .unwrap()
        .to_owned();
    // The tracker is down: the report waits in the outbox.
    wait(&home, 20, "the tracker seen down", |s| {
        s["tracker"]["reachable"] == false
    });
    let outbox = |home: &Path| {
        std::fs::read_dir(home.join("outbox"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "report"))
                    .count()
            })
            .unwrap_or(0)
    };
    assert!(outbox(&home) >= 1, "the attempt is kept for the tracker");
    // Back on the same address: the reports go out.
    let _tracker = procs::Proc::start(
        "tracker",
        &[
            "tracker",
            "--listen",
            &addr,
            "--interval",
            "1",
            "--data",
            tracker.data.to_str().unwrap(),
            "--recovery-recipient",
            &recovery,
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while outbox(&home) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        outbox(&home),
        0,
        "the outbox empties once the tracker is back"
    );
    let reports = procs::reports_of(&tracker.data, "laptop");
    assert!(
        reports
            .iter()
            .any(|r| r.outcome.as_ref().map(hex::encode).as_deref() == Ok(made.as_str())),
        "{reports:?}"
    );
}

/// The administrator's interval reaches the agent and wins when the machine may not
/// override it, and an administrator's "back up now" (`swarmbak tracker schedule
/// --machine NAME --now`) makes the agent back up at once, well before it is due.
#[test]
fn the_tracker_sets_the_interval_and_asks_for_a_backup() {
    // `_t`: the directory lives as long as the test.
    let Desk {
        t: _t,
        tracker,
        home,
        docs,
    } = desk();
    // The machine's own wish: every 2 s.
    common::ok(
        &home,
        &["init", "--backup", docs.to_str().unwrap(), "--every", "2s"],
    );
    common::seed(&home, &[&docs]);
    let data = tracker.data.to_str().unwrap().to_owned();
    let admin = |args: &[&str]| {
        let mut a = vec!["tracker", "schedule", "--data", data.as_str()];
        a.extend_from_slice(args);
        common::ok(&tracker.data, &a)
    };
    // The administrator's: every hour, and the machine may not override it.
    admin(&[
        "--machine",
        "desk",
        "--every",
        "1h",
        "--machine-may-override",
        "no",
    ]);
    let _agent = procs::agent(&home, "desk");
    wait(&home, 20, "the administrator's interval", |s| {
        s["backup"]["every"] == 3600 && s["backup"]["every_from"] == "the administrator"
    });
    // Backed up by hand just now: nothing is due for an hour (its own 2 s would have
    // made three attempts by now).
    std::thread::sleep(Duration::from_secs(6));
    let st = status(&home);
    assert!(st["backup"]["last"].is_null(), "{st:#}");
    // "Back up now".
    admin(&["--machine", "desk", "--now"]);
    wait(&home, 20, "the backup the administrator asked for", |s| {
        s["backup"]["last"]["why"]
            .as_str()
            .is_some_and(|w| w.starts_with("the tracker asked"))
    });
    // Once reported, the tracker stops asking: one backup per request.
    std::thread::sleep(Duration::from_secs(1));
    let after = status(&home)["backup"]["last"]["start"].as_i64().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        status(&home)["backup"]["last"]["start"].as_i64().unwrap(),
        after,
        "one backup per request"
    );
}

/// The agent applies the machine's retention policy after each backup that made a
/// snapshot (`init --keep-last 2`): a third snapshot retires the first (in the store,
/// out of `snapshots`); `forget` by hand goes through the running agent, which holds
/// the store, and its dry run changes nothing.
#[test]
fn the_agent_forgets_by_the_machine_s_policy_after_each_backup() {
    let Desk {
        t: _t,
        tracker: _tracker,
        home,
        docs,
    } = desk();
    let out = common::ok(
        &home,
        &[
            "init",
            "--backup",
            docs.to_str().unwrap(),
            "--every",
            "1s",
            "--keep-last",
            "2",
            "--keep-hourly",
            "0",
            "--keep-daily",
            "0",
            "--keep-weekly",
            "0",
            "--keep-monthly",
            "0",
            "--keep-yearly",
            "0",
        ],
    );
    assert!(
        out.contains("snapshots kept: 2 last\n") || out.ends_with("snapshots kept: 2 last"),
        "{out}"
    );
    let _agent = procs::agent(&home, "desk");
    wait(&home, 30, "the first backup", |s| {
        s["backup"]["last_success"]["infohash"].is_string()
    });
    let mut made = snapshots(&home);
    for i in 0..2 {
        std::fs::write(docs.join("notes.txt"), format!("edit {i}\n")).unwrap();
        let before = made.last().cloned();
        wait(&home, 30, "a snapshot of the edit", |s| {
            s["backup"]["last_success"]["infohash"].as_str() != before.as_deref()
                && s["backup"]["last_success"]["unchanged"] == false
        });
        let ih = status(&home)["backup"]["last_success"]["infohash"]
            .as_str()
            .unwrap()
            .to_owned();
        made.push(ih);
    }
    assert_eq!(made.len(), 3, "{made:?}");
    // The policy ran after the third: the first is retired, the two newest listed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while snapshots(&home).len() > 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(snapshots(&home), made[1..].to_vec());
    assert!(common::store_dir(&home, &made[0]).join("retired").exists());
    // By hand, through the agent: a dry run of --keep-last 1 would forget the second and
    // changes nothing; then it does.
    let dry = common::ok(
        &home,
        &["--json", "forget", "--keep-last", "1", "--dry-run"],
    );
    let dry: serde_json::Value = serde_json::from_str(dry.trim()).unwrap();
    assert_eq!(dry["retired"][0]["infohash"], made[1].as_str(), "{dry}");
    assert_eq!(snapshots(&home), made[1..].to_vec());
    let done = common::ok(&home, &["forget", "--keep-last", "1"]);
    assert!(done.contains("1 snapshot(s) were forgotten"), "{done}");
    assert_eq!(snapshots(&home), made[2..].to_vec());
    // A setting changed while the agent runs: init says it takes a restart.
    let out = common::ok(&home, &["init", "--keep-last", "5"]);
    assert!(out.contains("uses these settings once restarted"), "{out}");
    drop(_agent);
    let out = common::ok(&home, &["init", "--keep-last", "5"]);
    assert!(!out.contains("once restarted"), "{out}");
}
