//! The command line contract (MISSION.md): what the commands accept and print.

mod common;

use std::fs;
use std::path::PathBuf;

use common::*;

#[test]
fn init_twice_keeps_keys_and_changes_only_what_is_given() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("h");
    let a = ok(&home, &["--json", "init", "--name", "one"]);
    let a: serde_json::Value = serde_json::from_str(a.trim()).unwrap();
    assert_eq!(a["created"], true);
    // The home is its user's alone.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&home).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let id = fs::read(home.join("identity.txt")).unwrap();
    // --home after the command works too.
    let o = std::process::Command::new(BIN)
        .args(["init", "--copies", "3", "--json", "--home"])
        .arg(&home)
        .output()
        .unwrap();
    assert!(o.status.success());
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b["created"], false);
    assert_eq!(b["name"], "one");
    assert_eq!(b["copies"], 3);
    assert_eq!(b["public_key"], a["public_key"]);
    assert_eq!(fs::read(home.join("identity.txt")).unwrap(), id);
    let err = fails(&home, &["init", "--recovery-recipient", "age1notakey"]);
    assert!(err.contains("recipient"), "{err}");
}

#[test]
fn seed_without_a_tracker_needs_until_published() {
    let t = tempfile::tempdir().unwrap();
    let m = machine(t.path());
    let tree = t.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("f"), b"data").unwrap();
    let err = fails(&m.home, &["seed", tree.to_str().unwrap()]);
    assert!(err.contains("--until published"), "{err}");
    let list = ok(&m.home, &["--json", "snapshots"]);
    assert!(list.trim().is_empty(), "nothing was made: {list}");
    // With --json, every line is JSON and the first holds the infohash.
    let out = ok(
        &m.home,
        &[
            "seed",
            tree.to_str().unwrap(),
            "--until",
            "published",
            "--json",
        ],
    );
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["infohash"].as_str().unwrap().len(), 40);
    let list = ok(&m.home, &["snapshots"]);
    assert!(list.contains(lines[0]["infohash"].as_str().unwrap()));
}

#[test]
fn not_initialised_and_missing_paths_say_what_to_do() {
    let t = tempfile::tempdir().unwrap();
    let err = fails(
        &t.path().join("none"),
        &["seed", "/tmp", "--until", "published"],
    );
    assert!(err.contains("swarmbak init"), "{err}");
    let m = machine(t.path());
    let err = fails(
        &m.home,
        &["seed", "/definitely/not/here", "--until", "published"],
    );
    assert!(err.contains("/definitely/not/here"), "{err}");
    let err = fails(
        &m.home,
        &[
            "fetch",
            "0123456789abcdef0123456789abcdef01234567",
            "--to",
            "/tmp/x-none",
        ],
    );
    assert!(err.contains("not in the local store"), "{err}");
}

#[test]
fn inspect_refuses_garbage_with_a_clear_error_and_exits_zero_on_metainfo() {
    let t = tempfile::tempdir().unwrap();
    let m = machine(t.path());
    for (name, bytes) in [
        ("empty.torrent", &b""[..]),
        ("junk.torrent", b"this is not bencode"),
        ("truncated.torrent", b"d8:announce3:abc4:infod6:lengthi5e"),
        (
            "nopieces.torrent",
            b"d4:infod6:lengthi5e4:name1:a12:piece lengthi16384eee",
        ),
    ] {
        let p = t.path().join(name);
        fs::write(&p, bytes).unwrap();
        let err = fails(&m.home, &["inspect", p.to_str().unwrap()]);
        assert!(err.contains("not valid metainfo"), "{name}: {err}");
    }
    let tree = t.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("f"), b"data").unwrap();
    let ih = seed(&m.home, &[&tree]);
    let out = ok(&m.home, &["inspect", &ih]);
    for want in [
        "infohash:",
        "piece length:",
        "private:      yes",
        "stripes of",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
}

#[test]
fn fetch_with_the_wrong_key_says_which_key_to_use() {
    let t = tempfile::tempdir().unwrap();
    let m = machine(t.path());
    let tree = t.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("f"), b"data").unwrap();
    let ih = seed(&m.home, &[&tree]);
    let other = t.path().join("other.txt");
    fs::write(
        &other,
        swarmbak_format::Identity::generate().to_identity_file(),
    )
    .unwrap();
    let err = fails(
        &m.home,
        &[
            "fetch",
            &ih,
            "--to",
            t.path().join("o").to_str().unwrap(),
            "--identity",
            other.to_str().unwrap(),
        ],
    );
    assert!(err.contains("recovery key"), "{err}");
}

#[test]
fn demo_runs_end_to_end() {
    let t = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(BIN)
        .args(["demo", "--size", "6M"])
        .env("TMPDIR", t.path())
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("OK: the restored tree is byte-for-byte identical"),
        "{out}"
    );
    // The organisation runs a private tracker and enrols every machine, and says so.
    assert!(out.contains("private tracker listening on"), "{out}");
    for m in ["demo-laptop", "desk-anna", "desk-dev", "new-laptop"] {
        assert!(out.contains(&format!("enrolled {m}")), "{m}: {out}");
    }
    assert!(out.contains("revokes demo-laptop"), "{out}");
    // desk-anna's agent backs up its set by itself.
    assert!(
        out.lines()
            .any(|l| l.contains("desk-anna backed itself up (first backup")),
        "{out}"
    );
    // The administrator's view: every machine's backup status from the admin API.
    assert!(out.contains("the administrator's view"), "{out}");
    assert!(
        out.lines().any(|l| l.contains("demo-laptop")
            && l.contains("revoked")
            && l.contains("1 snapshot")),
        "{out}"
    );
    assert_eq!(
        fs::read_dir(t.path()).unwrap().count(),
        0,
        "the demo cleans up"
    );
}

/// An unset variable in the unit's EnvironmentFile gives `--public-url ""`: refused at
/// start, not at the first `init --enroll` (the tracker would otherwise write an empty
/// URL into every token).
#[test]
fn tracker_refuses_an_empty_public_url() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    for bad in ["", "tracker.example.com"] {
        let err = fails(
            t.path(),
            &[
                "tracker",
                "--listen",
                "127.0.0.1:0",
                "--data",
                data.to_str().unwrap(),
                "--public-url",
                bad,
            ],
        );
        assert!(err.contains("--public-url"), "{bad:?}: {err}");
    }
}

/// A private tracker and a machine "laptop" enrolled with it, a small tree to back up,
/// and the organisation's recovery recipient.
/// The recovery identity is in `dir/recovery.txt`.
fn laptop(dir: &std::path::Path) -> (procs::Tracker, PathBuf, PathBuf, String) {
    let id = swarmbak_format::Identity::generate();
    fs::write(dir.join("recovery.txt"), id.to_identity_file()).unwrap();
    let rec = id.to_public().to_string();
    let tr = procs::tracker(dir, &rec);
    let home = dir.join("laptop");
    procs::init(&home, "laptop", &tr, &rec);
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("f"), b"data").unwrap();
    (tr, home, tree, rec)
}

type Lines = std::io::BufReader<std::process::ChildStdout>;

/// Starts `swarmbak --home HOME args` (fast settings) with stdout and stderr piped.
fn start(home: &std::path::Path, args: &[&str]) -> std::process::Child {
    std::process::Command::new(BIN)
        .arg("--home")
        .arg(home)
        .args(args)
        .envs(procs::FAST.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Starts `swarmbak --home HOME args` with stdout and stderr piped; returns it with its
/// first line of stdout (trimmed) and the rest of stdout.
fn spawn(home: &std::path::Path, args: &[&str]) -> (std::process::Child, String, Lines) {
    use std::io::BufRead;
    let mut c = start(home, args);
    let mut r = std::io::BufReader::new(c.stdout.take().unwrap());
    let mut first = String::new();
    r.read_line(&mut first).unwrap();
    (c, first.trim().to_string(), r)
}

/// Waits for `c` to exit (at most `secs`); returns its status and stderr.
fn wait_for(c: &mut std::process::Child, secs: u64) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            panic!("swarmbak did not finish within {secs}s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    if let Some(mut e) = c.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status, err)
}

/// `id=$(swarmbak seed DIR | head -1)`: the reader is gone after the infohash. The
/// backup still completes, is published (here once the tracker, down when `seed`
/// started, is back) and `seed` exits 0 without a panic.
#[test]
fn a_closed_stdout_never_stops_the_backup_or_its_publish() {
    let t = tempfile::tempdir().unwrap();
    let (mut tr, home, tree, rec) = laptop(t.path());
    let addr = tr.addr.clone();
    tr.kill();
    let (mut c, ih, r) = spawn(
        &home,
        &["seed", tree.to_str().unwrap(), "--until", "published"],
    );
    assert_eq!(ih.len(), 40, "{ih:?}");
    drop(r);
    let _tr = procs::tracker_with(t.path(), &rec, &["--listen", &addr]);
    let (status, err) = wait_for(&mut c, 60);
    assert!(status.success(), "{status:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let list = ok(&home, &["snapshots", "--machine", "laptop"]);
    assert!(list.contains(&ih), "the tracker has {ih}: {list}");
}

/// The TCP addresses process `pid` listens on (its sockets' inodes, looked up in
/// /proc/net/tcp and tcp6), as `(hex address, port)` as the kernel writes them.
fn listening_sockets(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address st ... inode; 0A is LISTEN.
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                out.push(f[1].to_string());
            }
        }
    }
    out
}

/// `init --listen 127.0.0.1:0` keeps the machine's peer port on loopback: the agent binds
/// it, and `seed` (and fetch and health) its host; `--listen` on a command overrides it.
#[test]
fn the_listen_address_is_configurable_and_loopback_is_a_choice() {
    let t = tempfile::tempdir().unwrap();
    let (_tr, home, tree, _) = laptop(t.path());
    let err = fails(&home, &["init", "--listen", "nowhere"]);
    assert!(err.contains("HOST:PORT"), "{err}");
    let out = ok(&home, &["--json", "init", "--listen", "127.0.0.1:0"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["listen"], "127.0.0.1:0", "{v}");
    // The agent, without --listen, binds the configured address.
    let a = procs::Proc::start("agent", &["--home", home.to_str().unwrap(), "agent"]);
    assert!(a.addr.starts_with("127.0.0.1:"), "{}", a.addr);
    drop(a);
    let loopback = |port_hex: &str| port_hex.starts_with("0100007F:");
    for (extra, want_loopback) in [(None, true), (Some("0.0.0.0:0"), false)] {
        let mut args = vec!["seed", tree.to_str().unwrap(), "--until", "forever"];
        if let Some(l) = extra {
            args.extend(["--listen", l]);
        }
        let (mut c, _ih, _r) = spawn(&home, &args);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let socks = loop {
            let s = listening_sockets(c.id());
            if !s.is_empty() || std::time::Instant::now() > deadline {
                break s;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let _ = c.kill();
        let _ = c.wait();
        assert!(!socks.is_empty(), "seed {extra:?} listens for peers");
        assert_eq!(
            socks.iter().all(|s| loopback(s)),
            want_loopback,
            "seed --listen {extra:?}: {socks:?}"
        );
    }
}

/// A TCP forwarder from 127.0.0.1:`port` to `to`, listening from now on.
fn forward(port: u16, to: String) {
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for down in l.incoming().flatten() {
            let Ok(up) = std::net::TcpStream::connect(&to) else {
                continue;
            };
            for (mut from, mut into) in [
                (down.try_clone().unwrap(), up.try_clone().unwrap()),
                (up, down),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
}

/// The whitelist case: `fetch` starts before the snapshot is published (here the
/// laptop's way to the tracker opens 3 s later), waits saying what for, and restores it
/// once the tracker knows it.
#[test]
fn fetch_waits_for_a_snapshot_published_after_it_started() {
    let t = tempfile::tempdir().unwrap();
    let (tr, home, tree, rec) = laptop(t.path());
    let desk = t.path().join("desk");
    procs::init(&desk, "desk", &tr, &rec);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = home.join("config.json");
    let mut c: serde_json::Value = serde_json::from_slice(&fs::read(&cfg).unwrap()).unwrap();
    c["tracker"] = format!("http://127.0.0.1:{port}").into();
    fs::write(&cfg, serde_json::to_vec(&c).unwrap()).unwrap();
    let (seed, ih, _out) = spawn(
        &home,
        &["seed", tree.to_str().unwrap(), "--until", "forever"],
    );
    // Killed when the test ends, however it ends.
    let _seed = procs::Proc {
        child: seed,
        addr: String::new(),
        name: "seed".into(),
    };
    assert_eq!(ih.len(), 40, "{ih}");
    let to = t.path().join("restored");
    let mut f = start(
        &desk,
        &[
            "fetch",
            &ih,
            "--to",
            to.to_str().unwrap(),
            "--identity",
            t.path().join("recovery.txt").to_str().unwrap(),
            "--timeout",
            "60s",
        ],
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    if f.try_wait().unwrap().is_some() {
        let (status, err) = wait_for(&mut f, 1);
        panic!("fetch gave up before the snapshot was published ({status:?}): {err}");
    }
    forward(port, tr.addr.clone());
    let (status, err) = wait_for(&mut f, 90);
    assert!(status.success(), "{status:?}: {err}");
    assert!(err.contains("waiting for the tracker"), "{err}");
    assert_same(&tree, &to.join("tree"));
}

/// `health` with the tracker down says the tracker is unreachable, not "0 machines
/// online"; with a tracker that lists nobody (just restarted), it says that.
#[test]
fn health_tells_an_unreachable_or_empty_tracker_from_no_machines() {
    let t = tempfile::tempdir().unwrap();
    let (mut tr, home, tree, _) = laptop(t.path());
    let ih = seed(&home, &[&tree]);
    let o = procs::run_fast(&home, &["health", &ih]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}{err}");
    assert!(out.contains("the tracker lists no peer for it"), "{out}");
    assert!(!out.contains("0 machines online"), "{out}");
    tr.kill();
    let o = procs::run_fast(&home, &["health", &ih]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}{err}");
    assert!(
        err.contains("is unreachable") && err.contains("run health again"),
        "{err}"
    );
    assert!(!out.contains("0 machines online"), "{out}");
}

/// `seed --until published --timeout 3` with the tracker down: exit 3, the snapshot
/// made; returns its infohash.
fn seed_while_the_tracker_is_down(home: &std::path::Path, tree: &std::path::Path) -> String {
    let o = procs::run_fast(
        home,
        &[
            "seed",
            tree.to_str().unwrap(),
            "--until",
            "published",
            "--timeout",
            "3",
        ],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}{err}");
    let ih = out.lines().next().unwrap_or("").to_string();
    assert_eq!(ih.len(), 40, "{out}");
    ih
}

/// Whether the tracker lists `ih` among `laptop`'s snapshots.
fn tracker_lists(home: &std::path::Path, ih: &str) -> bool {
    let o = run(home, &["snapshots", "--machine", "laptop"]);
    o.status.success() && text(&o).0.contains(ih)
}

/// `snapshots` (text and --json) says whether each snapshot is published.
fn says_not_published(home: &std::path::Path, ih: &str) -> bool {
    let out = ok(home, &["snapshots"]);
    let line = out.lines().find(|l| l.starts_with(ih)).unwrap_or("");
    let text_says = line.contains("not published");
    let json = ok(home, &["snapshots", "--json"]);
    let v: serde_json::Value = json
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["infohash"] == ih)
        .unwrap_or_else(|| panic!("{ih} not in {json}"));
    assert_eq!(
        text_says,
        v["published"] == false,
        "text and JSON disagree: {line} / {v}"
    );
    text_says
}

/// Issue 11: a snapshot made while the tracker is down is marked "not published" and the
/// running agent publishes it once the tracker is back (it used to stay unknown to every
/// other machine for good).
#[test]
fn the_agent_publishes_a_snapshot_the_tracker_never_acknowledged() {
    let t = tempfile::tempdir().unwrap();
    let (mut tr, home, tree, rec) = laptop(t.path());
    let addr = tr.addr.clone();
    tr.kill();
    let ih = seed_while_the_tracker_is_down(&home, &tree);
    assert!(says_not_published(&home, &ih));
    let _agent = procs::agent(&home, "laptop agent");
    let _tr = procs::tracker_with(t.path(), &rec, &["--listen", &addr]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !tracker_lists(&home, &ih) {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent did not publish {ih} within 15 s of the tracker coming back"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert!(!says_not_published(&home, &ih));
}

/// Without an agent, the next `seed` publishes the earlier snapshot first (its parent),
/// then its own; `snapshots` says "not published" in between.
#[test]
fn the_next_seed_publishes_the_earlier_snapshot_first() {
    let t = tempfile::tempdir().unwrap();
    let (mut tr, home, tree, rec) = laptop(t.path());
    let addr = tr.addr.clone();
    tr.kill();
    let first = seed_while_the_tracker_is_down(&home, &tree);
    assert!(says_not_published(&home, &first));
    let _tr = procs::tracker_with(t.path(), &rec, &["--listen", &addr]);
    fs::write(tree.join("g"), b"more data").unwrap();
    let o = procs::run_fast(
        &home,
        &[
            "seed",
            tree.to_str().unwrap(),
            "--until",
            "published",
            "--json",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let second = events[0]["infohash"].as_str().unwrap().to_string();
    let published: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "published")
        .filter_map(|e| e["infohash"].as_str())
        .collect();
    assert_eq!(published, [first.as_str(), second.as_str()], "{out}");
    assert!(tracker_lists(&home, &first) && tracker_lists(&home, &second));
    assert!(!says_not_published(&home, &first));
    assert!(!says_not_published(&home, &second));
}

/// Issue 11: with the tracker down, `seed` says what it waits for every few seconds (it
/// used to print its summary and then nothing until it gave up).
#[test]
fn seed_says_it_waits_for_the_tracker() {
    let t = tempfile::tempdir().unwrap();
    let (mut tr, home, tree, _) = laptop(t.path());
    let url = tr.url();
    tr.kill();
    let o = procs::run_fast(
        &home,
        &[
            "seed",
            tree.to_str().unwrap(),
            "--json",
            "--until",
            "published",
            "--timeout",
            "8",
        ],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}{err}");
    let waiting: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "waiting")
        .collect();
    assert!(!waiting.is_empty(), "no waiting event: {out}");
    assert!(
        waiting
            .iter()
            .all(|v| v["for"].as_str().is_some_and(|w| w.contains(&url))),
        "{waiting:?}"
    );
    // Without --json, the same on stderr.
    let o = procs::run_fast(
        &home,
        &[
            "seed",
            tree.to_str().unwrap(),
            "--until",
            "published",
            "--timeout",
            "6",
        ],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}{err}");
    assert!(
        err.contains(&format!("waiting for the tracker at {url}")),
        "{err}"
    );
}

/// The snapshot directories in a home's store.
fn store_listing(home: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(home.join("store/snapshots"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Issue 11: Ctrl-C on a `seed` that handed its backup to the agent cancels that backup
/// (the agent used to finish it and leave it unpublished); the agent goes on working.
#[test]
fn ctrl_c_on_seed_cancels_the_backup_the_agent_makes_for_it() {
    use std::io::Read;
    let t = tempfile::tempdir().unwrap();
    let (_tr, home, small, _) = laptop(t.path());
    let big = t.path().join("big");
    fs::create_dir_all(&big).unwrap();
    // Incompressible data, enough for the backup to take a few seconds.
    let mut rng = std::fs::File::open("/dev/urandom").unwrap();
    let mut buf = vec![0u8; 8 << 20];
    for i in 0..48 {
        rng.read_exact(&mut buf).unwrap();
        fs::write(big.join(format!("f{i}")), &buf).unwrap();
    }
    let _agent = procs::agent(&home, "laptop agent");
    let before = store_listing(&home);
    let mut c = {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("--home")
            .arg(&home)
            .args(["seed", big.to_str().unwrap(), "--until", "published"])
            .envs(procs::FAST.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        // A terminal's Ctrl-C: SIGINT at its default action, even when this test runs
        // where it is ignored (a background job of a shell without job control passes
        // SIGINT ignored to everything it starts).
        // SAFETY: signal() is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        cmd.spawn().unwrap()
    };
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert!(
        c.try_wait().unwrap().is_none(),
        "the backup ended too soon to be interrupted"
    );
    // SAFETY: kill with a valid pid (our own child) and signal number.
    unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
    let (status, _) = wait_for(&mut c, 10);
    assert!(!status.success());
    let mut first = String::new();
    c.stdout.take().unwrap().read_to_string(&mut first).unwrap();
    assert!(
        first.trim().is_empty(),
        "the snapshot was made before the interrupt: {first}"
    );
    std::thread::sleep(std::time::Duration::from_secs(8));
    assert_eq!(
        store_listing(&home),
        before,
        "the agent committed the backup of an interrupted seed"
    );
    // The agent still makes backups.
    let ih = seed(&home, &[&small]);
    assert!(store_listing(&home).contains(&ih));
}
