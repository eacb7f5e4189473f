//! Standard clients announce to and scrape the swarmbak tracker (issue 4, item 4).
//!
//! A swarmbak snapshot is published to a `swarmbak tracker` the normal way (init, seed
//! --until published, export). transmission-cli, aria2c and libtorrent (python) each add
//! the exported torrent with nothing on disk: each must show up in the tracker's full
//! scrape as a leecher, libtorrent's announce reply must name the other two as peers and
//! its own scrape must count all three. Then a torrent nobody published (mktorrent -p)
//! must be refused with the tracker's `failure reason`, and each client must show it.
//!
//! What makes each client behave on loopback, and how each shows a tracker failure
//! (transmission 3.00, aria2 1.36.0, libtorrent 2.0.8, checked here):
//! - libtorrent (py/lt_tracker_probe.py): `listen_interfaces` 127.0.0.1:0, uTP, DHT, LSD,
//!   UPnP and NAT-PMP off. `ssrf_mitigation` must be off: with it on (the default) any
//!   tracker request to a loopback address whose path is not `/announce` is refused, so
//!   `scrape_tracker()` ends in scrape_failed_alert "blocked by SSRF mitigation". A
//!   refused announce arrives as tracker_error_alert: `failure_reason()` is the
//!   tracker's text, `error.message()` "tracker sent a failure message".
//! - transmission-cli: a config dir (`-g`) with a settings.json binding 127.0.0.1, DHT,
//!   LPD, PEX, uTP and port mapping off, its own peer port (the default 51413 collides
//!   between tests). It buffers stdout when it is a pipe (`stdbuf -o0` fixes that), but
//!   tracker errors go to stderr as `Tracker gave an error:: <failure reason>`, once per
//!   status refresh. It has no exit-on-error: it is killed.
//! - aria2c: `--enable-dht=false --enable-dht6=false --bt-enable-lpd=false
//!   --enable-peer-exchange=false --interface=127.0.0.1 --listen-port=N
//!   --allow-overwrite=true --seed-time=0`, `--bt-stop-timeout` as a backstop. A refused
//!   announce is logged at ERROR (console and `--log=-`) as `Tracker returned failure
//!   reason: <failure reason>`; with nothing else to do it exits 7 after
//!   `--bt-stop-timeout`.
//! - The swarmbak tracker answers a full scrape (`GET /scrape`) with every published
//!   torrent's counts: that is how the test sees transmission's and aria2's announces.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use swarmbak_interop_tests::bt::{hex, http_get, py_script, require_libtorrent, Ben, Proc};
use swarmbak_interop_tests::{require_tool, swarmbak_bin, Cmd};

const UNKNOWN: &str = "unknown torrent: not published to this tracker";
const WAIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `swarmbak tracker` on 127.0.0.1, and its `host:port`.
fn start_tracker(dir: &Path) -> (Proc, String) {
    let mut cmd = Command::new(swarmbak_bin());
    cmd.args([
        "tracker",
        "--open",
        "--listen",
        "127.0.0.1:0",
        "--interval",
        "5",
        "--data",
    ])
    .arg(dir.join("tracker"));
    let mut p = Proc::spawn("swarmbak tracker", cmd);
    let addr = p.wait_for("`listening HOST:PORT`", WAIT, |l| {
        l.strip_prefix("listening ").map(|a| a.trim().to_string())
    });
    (p, addr)
}

/// Publishes a small snapshot to the tracker; its info-hash and exported .torrent.
fn publish(dir: &Path, addr: &str) -> (String, std::path::PathBuf) {
    let home = dir.join("home");
    Cmd::swarmbak(&home)
        .args(["init", "--tracker", &format!("http://{addr}")])
        .run();
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), b"hello, standard clients\n").unwrap();
    let data: Vec<u8> = (0..150_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(tree.join("sub/b.bin"), data).unwrap();
    let out = Cmd::swarmbak(&home)
        .arg("seed")
        .arg(&tree)
        .args(["--until", "published"])
        .run();
    let ih = out.first_line();
    assert_eq!(ih.len(), 40, "seed's first line is the info-hash: {ih:?}");
    let torrent = dir.join("snapshot.torrent");
    Cmd::swarmbak(&home)
        .arg("export")
        .arg(&ih)
        .arg(&torrent)
        .run();
    let info = Cmd::new(swarmbak_bin())
        .arg("inspect")
        .arg(&torrent)
        .arg("--json")
        .run();
    let j: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(j["infohash"], ih.as_str());
    assert_eq!(j["announce"], format!("http://{addr}/announce").as_str());
    (ih, torrent)
}

/// (complete, incomplete) for `ih` in the tracker's full scrape, None if it is absent.
fn full_scrape(addr: &str, ih: &str) -> Option<(i64, i64)> {
    let (status, body) = http_get(addr, "/scrape");
    assert_eq!(
        status,
        200,
        "GET /scrape: {}",
        String::from_utf8_lossy(&body)
    );
    let v = Ben::decode(&body).unwrap_or_else(|e| panic!("scrape reply is not bencode ({e})"));
    let Some(Ben::Dict(files)) = v.get(b"files") else {
        panic!("scrape reply has no `files` dictionary: {v:?}")
    };
    files.iter().find(|(k, _)| hex(k) == ih).map(|(_, f)| {
        (
            f.get(b"complete").and_then(Ben::int).unwrap(),
            f.get(b"incomplete").and_then(Ben::int).unwrap(),
        )
    })
}

/// Polls the full scrape until `want` holds; panics with the clients' logs if not.
fn wait_scrape(addr: &str, ih: &str, want: (i64, i64), clients: &[&Proc], what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = full_scrape(addr, ih);
        if got == Some(want) {
            return;
        }
        if Instant::now() > deadline {
            let logs: String = clients
                .iter()
                .map(|c| format!("--- pid {} ---\n{}\n", c.id(), tail(&c.log())))
                .collect();
            panic!(
                "{what}: the tracker's scrape shows {got:?}, not {want:?} after {WAIT:?}\n{logs}"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn tail(s: &str) -> String {
    let s = s.replace('\r', "\n");
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// transmission-cli with its own config dir: loopback only, no DHT/LPD/PEX/uTP.
fn transmission(t: &Tools, dir: &Path, name: &str, torrent: &Path) -> Proc {
    let cfg = dir.join(format!("{name}-config"));
    let dl = dir.join(format!("{name}-download"));
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::create_dir_all(&dl).unwrap();
    let settings = serde_json::json!({
        "bind-address-ipv4": "127.0.0.1",
        "bind-address-ipv6": "::1",
        "dht-enabled": false,
        "lpd-enabled": false,
        "pex-enabled": false,
        "utp-enabled": false,
        "port-forwarding-enabled": false,
        "peer-port": free_port(),
        "peer-port-random-on-start": false,
        "encryption": 1,
        "blocklist-enabled": false,
        "message-level": 2,
    });
    std::fs::write(cfg.join("settings.json"), settings.to_string()).unwrap();
    let mut cmd = Command::new("stdbuf");
    cmd.args(["-o0", "-e0"])
        .arg(&t.transmission)
        .arg("-g")
        .arg(&cfg)
        .arg("-w")
        .arg(&dl)
        .arg("-M")
        .arg(torrent);
    Proc::spawn(&format!("transmission-cli ({name})"), cmd)
}

/// aria2c on loopback without DHT/LPD/PEX, logging to stdout.
fn aria2(t: &Tools, dir: &Path, name: &str, torrent: &Path) -> Proc {
    let dl = dir.join(format!("{name}-download"));
    std::fs::create_dir_all(&dl).unwrap();
    let mut cmd = Command::new(&t.aria2);
    cmd.arg(format!("--dir={}", dl.display()))
        .args([
            "--seed-time=0",
            "--bt-stop-timeout=120",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--interface=127.0.0.1",
            "--allow-overwrite=true",
            "--summary-interval=0",
            "--console-log-level=warn",
            "--log=-",
            "--log-level=info",
        ])
        .arg(format!("--listen-port={}", free_port()))
        .arg(torrent);
    Proc::spawn(&format!("aria2c ({name})"), cmd)
}

/// Runs py/lt_tracker_probe.py; its JSON events.
fn libtorrent_probe(py: &Path, dir: &Path, torrent: &Path) -> Vec<Value> {
    let save = dir.join("lt-save");
    std::fs::create_dir_all(&save).unwrap();
    let mut cmd = Command::new(py);
    cmd.arg(py_script("lt_tracker_probe.py"))
        .arg(torrent)
        .arg(&save)
        .arg("45");
    let mut p = Proc::spawn("libtorrent (lt_tracker_probe.py)", cmd);
    let status = p.wait_exit(WAIT + Duration::from_secs(10));
    let log = p.log();
    let events: Vec<Value> = log
        .lines()
        .filter_map(|l| l.strip_prefix("out: "))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        status.success(),
        "libtorrent probe failed ({status}):\n{log}"
    );
    events
}

fn event<'a>(events: &'a [Value], name: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == name)
        .unwrap_or_else(|| panic!("libtorrent reported no {name:?}: {events:#?}"))
}

struct Tools {
    py: PathBuf,
    transmission: PathBuf,
    aria2: PathBuf,
    mktorrent: PathBuf,
}

/// Finds every client (a missing one fails the test) and prints its version once.
fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        require_tool("stdbuf");
        Tools {
            transmission: require_tool("transmission-cli"),
            aria2: require_tool("aria2c"),
            mktorrent: require_tool("mktorrent"),
            py: require_libtorrent(),
        }
    })
}

#[test]
fn standard_clients_announce_and_scrape() {
    let started = Instant::now();
    let t = tools();
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, addr) = start_tracker(dir.path());
    let (ih, torrent) = publish(dir.path(), &addr);
    // The publisher has left (seed --until published): nobody is in the swarm.
    wait_scrape(&addr, &ih, (0, 0), &[], "after publishing");

    let tr = transmission(t, dir.path(), "tr", &torrent);
    wait_scrape(&addr, &ih, (0, 1), &[&tr], "transmission's announce");
    let a2 = aria2(t, dir.path(), "a2", &torrent);
    wait_scrape(&addr, &ih, (0, 2), &[&tr, &a2], "aria2's announce");

    let events = libtorrent_probe(&t.py, dir.path(), &torrent);
    let reply = event(&events, "reply");
    assert_eq!(
        reply["num_peers"], 2,
        "libtorrent's announce reply names transmission and aria2: {events:#?}"
    );
    let scrape = event(&events, "scrape");
    assert_eq!(
        (scrape["complete"].as_i64(), scrape["incomplete"].as_i64()),
        (Some(0), Some(3)),
        "libtorrent's scrape counts the three leechers: {events:#?}"
    );
    // libtorrent removed its torrent: its `stopped` announce takes it out of the swarm.
    wait_scrape(
        &addr,
        &ih,
        (0, 2),
        &[&tr, &a2],
        "libtorrent's stopped announce",
    );
    drop(a2);
    drop(tr);
    eprintln!(
        "standard_clients_announce_and_scrape: {:?}",
        started.elapsed()
    );
}

#[test]
fn standard_clients_show_a_refused_announce() {
    let started = Instant::now();
    let t = tools();
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, addr) = start_tracker(dir.path());
    // A private torrent the tracker never saw.
    let file = dir.path().join("never-published.txt");
    std::fs::write(&file, b"nobody published this\n").unwrap();
    let refused = dir.path().join("refused.torrent");
    Cmd::new(&t.mktorrent)
        .args(["-p", "-a", &format!("http://{addr}/announce"), "-o"])
        .arg(&refused)
        .arg(&file)
        .run();

    let events = libtorrent_probe(&t.py, dir.path(), &refused);
    let err = event(&events, "error");
    assert_eq!(
        err["failure_reason"], UNKNOWN,
        "libtorrent's tracker_error_alert carries the failure reason: {events:#?}"
    );
    assert!(err["message"].as_str().unwrap().contains(UNKNOWN));

    let mut tr = transmission(t, dir.path(), "tr", &refused);
    tr.wait_log(&format!("Tracker gave an error:: {UNKNOWN}"), WAIT);
    drop(tr);

    let mut a2 = aria2(t, dir.path(), "a2", &refused);
    a2.wait_log(&format!("Tracker returned failure reason: {UNKNOWN}"), WAIT);
    drop(a2);
    eprintln!(
        "standard_clients_show_a_refused_announce: {:?}",
        started.elapsed()
    );
}
