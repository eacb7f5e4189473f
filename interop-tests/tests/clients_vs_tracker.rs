//! Standard clients announce to and scrape the swarmbak tracker (issue 4, item 4).
//!
//! The tracker is private, as an organisation runs it: a swarmbak snapshot is published
//! the normal way (an enrolled machine: `tracker enroll` + `init --enroll`, seed --until
//! published), and each standard client is enrolled as a client (`swarmbak tracker enroll
//! --client --name NAME`, which prints its announce URL `http://HOST:PORT/<passkey>/announce`)
//! and gets the snapshot's .torrent with that URL as announce (`swarmbak export IH FILE
//! --announce URL`). transmission-cli, aria2c and libtorrent (python) each add their
//! torrent with nothing on disk: each must show up in the tracker's full scrape as a
//! leecher, libtorrent's announce reply must name the other two as peers and its own
//! scrape (`/<passkey>/scrape`, derived as BEP 48 says) must count all three. Then each
//! client must show the tracker's `failure reason` for an announce without a passkey
//! (`this tracker is private: …`) and, with its passkey, for a torrent nobody published
//! (mktorrent -p).
//!
//! What makes each client behave on loopback, and how each shows a tracker failure
//! (transmission 3.00, aria2 1.36.0, libtorrent 2.0.8, checked here):
//! - libtorrent (py/lt_tracker_probe.py): `listen_interfaces` 127.0.0.1:0, uTP, DHT, LSD,
//!   UPnP and NAT-PMP off. `ssrf_mitigation` must be off: with it on (the default) any
//!   tracker request to a loopback address whose path does not start with `/announce` is
//!   refused ("blocked by SSRF mitigation"): the passkey announce `/<passkey>/announce`
//!   and every scrape. A
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
//! - The swarmbak tracker answers a full scrape (`GET /<passkey>/scrape`, the test's own
//!   client passkey) with every published torrent's counts: that is how the test sees
//!   transmission's and aria2's announces.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use swarmbak_interop_tests::bt::{hex, http_get, py_script, require_libtorrent, Ben, Proc};
use swarmbak_interop_tests::clients::{client_announce_url, enrol_machine, export_for};
use swarmbak_interop_tests::{require_tool, swarmbak_bin, Cmd};

const UNKNOWN: &str = "unknown torrent: not published to this tracker";
/// The start of the failure reason for an announce without a passkey.
const PRIVATE: &str = "this tracker is private: announce to /<passkey>/announce";
const WAIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The private `swarmbak tracker` on 127.0.0.1 (data in DIR/tracker), and its `host:port`.
fn start_tracker(dir: &Path) -> (Proc, String) {
    let recovery = swarmbak_format::Identity::generate()
        .to_public()
        .to_string();
    let mut cmd = Command::new(swarmbak_bin());
    cmd.args([
        "tracker",
        "--listen",
        "127.0.0.1:0",
        "--interval",
        "5",
        "--recovery-recipient",
        &recovery,
        "--data",
    ])
    .arg(dir.join("tracker"));
    let mut p = Proc::spawn("swarmbak tracker", cmd);
    let addr = p.wait_for("`listening HOST:PORT`", WAIT, |l| {
        l.strip_prefix("listening ").map(|a| a.trim().to_string())
    });
    (p, addr)
}

/// A standard client `name` enrolled at the tracker: the snapshot's .torrent with its own
/// passkey URL as announce.
fn torrent_for(dir: &Path, ih: &str, name: &str) -> PathBuf {
    let url = client_announce_url(&dir.join("tracker"), name);
    let file = dir.join(format!("snapshot-{name}.torrent"));
    export_for(&dir.join("home"), ih, &file, &url);
    file
}

/// The scrape path of a passkey URL `http://HOST:PORT/<passkey>/announce` (BEP 48).
fn scrape_path(announce: &str) -> String {
    let path = &announce[announce["http://".len()..].find('/').unwrap() + "http://".len()..];
    path.replace("/announce", "/scrape")
}

/// Publishes a small snapshot from an enrolled machine; its info-hash. The owner's own
/// export carries the tracker's bare announce URL, never its passkey.
fn publish(dir: &Path, addr: &str) -> String {
    let home = dir.join("home");
    enrol_machine(&home, &dir.join("tracker"), "publisher");
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
    ih
}

/// (complete, incomplete) for `ih` in the tracker's full scrape (at `scrape`, a passkey's
/// scrape path), None if it is absent.
fn full_scrape(addr: &str, scrape: &str, ih: &str) -> Option<(i64, i64)> {
    let (status, body) = http_get(addr, scrape);
    assert_eq!(
        status,
        200,
        "GET {scrape}: {}",
        String::from_utf8_lossy(&body)
    );
    let v = Ben::decode(&body).unwrap_or_else(|e| panic!("scrape reply is not bencode ({e})"));
    let Some(Ben::Dict(files)) = v.get(b"files") else {
        panic!(
            "scrape reply has no `files` dictionary: {v:?} ({})",
            String::from_utf8_lossy(&body)
        )
    };
    files.iter().find(|(k, _)| hex(k) == ih).map(|(_, f)| {
        (
            f.get(b"complete").and_then(Ben::int).unwrap(),
            f.get(b"incomplete").and_then(Ben::int).unwrap(),
        )
    })
}

/// Polls the full scrape until `want` holds; panics with the clients' logs if not.
fn wait_scrape(
    (addr, scrape): (&str, &str),
    ih: &str,
    want: (i64, i64),
    clients: &[&Proc],
    what: &str,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = full_scrape(addr, scrape, ih);
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
    let ih = publish(dir.path(), &addr);
    // The test reads the full scrape with a passkey of its own; without one: refused.
    let (_, body) = http_get(&addr, "/scrape");
    assert!(
        String::from_utf8_lossy(&body).contains(PRIVATE),
        "a scrape without a passkey: {}",
        String::from_utf8_lossy(&body)
    );
    let observer = client_announce_url(&dir.path().join("tracker"), "observer");
    let scrape = scrape_path(&observer);
    let at = (addr.as_str(), scrape.as_str());
    // The publisher has left (seed --until published): nobody is in the swarm.
    wait_scrape(at, &ih, (0, 0), &[], "after publishing");

    let tr = transmission(
        t,
        dir.path(),
        "tr",
        &torrent_for(dir.path(), &ih, "transmission"),
    );
    wait_scrape(at, &ih, (0, 1), &[&tr], "transmission's announce");
    let a2 = aria2(t, dir.path(), "a2", &torrent_for(dir.path(), &ih, "aria2"));
    wait_scrape(at, &ih, (0, 2), &[&tr, &a2], "aria2's announce");

    let events = libtorrent_probe(
        &t.py,
        dir.path(),
        &torrent_for(dir.path(), &ih, "libtorrent"),
    );
    let reply = event(&events, "reply");
    assert!(
        reply["url"].as_str().unwrap_or("").ends_with("/announce")
            && !reply["url"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("{addr}/announce")),
        "libtorrent announced to its passkey URL: {events:#?}"
    );
    assert_eq!(
        reply["num_peers"], 2,
        "libtorrent's announce reply names transmission and aria2: {events:#?}"
    );
    let scrape_ev = event(&events, "scrape");
    assert_eq!(
        (
            scrape_ev["complete"].as_i64(),
            scrape_ev["incomplete"].as_i64()
        ),
        (Some(0), Some(3)),
        "libtorrent's scrape counts the three leechers: {events:#?}"
    );
    // libtorrent removed its torrent: its `stopped` announce takes it out of the swarm.
    wait_scrape(
        at,
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

/// Each client shows the tracker's failure reason: for an announce without a passkey, and
/// (with its passkey) for a torrent nobody published.
#[test]
fn standard_clients_show_a_refused_announce() {
    let started = Instant::now();
    let t = tools();
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, addr) = start_tracker(dir.path());
    let file = dir.path().join("never-published.txt");
    std::fs::write(&file, b"nobody published this\n").unwrap();
    // A private torrent the tracker never saw, announcing to `url`.
    let make = |name: &str, url: &str| {
        let out = dir.path().join(format!("{name}.torrent"));
        Cmd::new(&t.mktorrent)
            .args(["-p", "-a", url, "-o"])
            .arg(&out)
            .arg(&file)
            .run();
        out
    };
    let bare = make("no-passkey", &format!("http://{addr}/announce"));
    let data = dir.path().join("tracker");

    let events = libtorrent_probe(&t.py, dir.path(), &bare);
    let err = event(&events, "error");
    assert!(
        err["failure_reason"]
            .as_str()
            .unwrap_or("")
            .starts_with(PRIVATE),
        "libtorrent's tracker_error_alert carries the failure reason: {events:#?}"
    );
    let events = libtorrent_probe(
        &t.py,
        dir.path(),
        &make("lt", &client_announce_url(&data, "libtorrent")),
    );
    let err = event(&events, "error");
    assert_eq!(
        err["failure_reason"], UNKNOWN,
        "libtorrent's tracker_error_alert carries the failure reason: {events:#?}"
    );
    assert!(err["message"].as_str().unwrap().contains(UNKNOWN));

    let mut tr = transmission(t, dir.path(), "tr0", &bare);
    tr.wait_log(&format!("Tracker gave an error:: {PRIVATE}"), WAIT);
    drop(tr);
    let url = client_announce_url(&data, "transmission");
    let mut tr = transmission(t, dir.path(), "tr", &make("tr", &url));
    tr.wait_log(&format!("Tracker gave an error:: {UNKNOWN}"), WAIT);
    drop(tr);

    let mut a2 = aria2(t, dir.path(), "a20", &bare);
    a2.wait_log(&format!("Tracker returned failure reason: {PRIVATE}"), WAIT);
    drop(a2);
    let url = client_announce_url(&data, "aria2");
    let mut a2 = aria2(t, dir.path(), "a2", &make("a2", &url));
    a2.wait_log(&format!("Tracker returned failure reason: {UNKNOWN}"), WAIT);
    drop(a2);
    eprintln!(
        "standard_clients_show_a_refused_announce: {:?}",
        started.elapsed()
    );
}
