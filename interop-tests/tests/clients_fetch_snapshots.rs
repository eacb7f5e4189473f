//! Standard BitTorrent clients and swarmbak snapshots (issue 4, items 1 and 7).
//!
//! For libtorrent, transmission and aria2: an enrolled swarmbak owner machine seeds a
//! snapshot to the private swarmbak tracker; the client, enrolled as a standard client
//! (`swarmbak tracker enroll --client`), gets the snapshot's .torrent with its OWN passkey
//! URL as announce (`swarmbak export IH FILE --announce URL`: never the owner's passkey)
//! and downloads the whole torrent (every shard piece) from the swarmbak peers it finds
//! through the tracker; every piece is checked (SHA-1 in the test, and the client's own
//! verdict). Then every swarmbak peer stops, the client seeds alone (the torrent re-added
//! over the downloaded data, announcing with its passkey), and a new swarmbak machine,
//! enrolled in turn, restores the snapshot with the recovery key from the owner's plain
//! .torrent file, the client its only seeder; the tree must be byte-identical.
//!
//! Along the way swarmbak's wire log (`SWARMBAK_WIRE_LOG`) says what each client
//! negotiated (fast extension, extension protocol), both while it downloads from the
//! swarmbak agent and while it seeds to swarmbak's fetch. A last test is a peer with every
//! reserved bit zero: it still downloads, and the agent sends it no BEP 6 or BEP 10 message.
//!
//! Results go to `target/interop-results.jsonl`; `protocol-spec/interop.md`'s table is
//! regenerated from them at the end of each test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use swarmbak_interop_tests::clients::{
    agent, aria2_args, assert_same_tree, client_announce_url, enrol_machine, export_for, free_port,
    libtorrent_seed, negotiated, passkey_of, py, record, regenerate_table, require_libtorrent,
    swarmbak_fast, swarmbak_tracker, tool_version, verify_pieces, Bg, Negotiated, Transmission,
    WireEvent, LT_PYTHON,
};
use swarmbak_interop_tests::{age_public_key, require_tool, Cmd};

/// One client at a time: two cores are shared, and timings stay meaningful.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A swarmbak tracker and an owner machine (agent running) that seeded a snapshot.
struct Owner {
    dir: PathBuf,
    tracker: Bg,
    tracker_url: String,
    tracker_data: PathBuf,
    agent: Option<Bg>,
    recovery: PathBuf,
    src: PathBuf,
    ih: String,
    torrent: PathBuf,
    pieces: u64,
    piece_length: u64,
}

fn owner(dir: &Path) -> Owner {
    require_tool("age-keygen");
    let recovery = dir.join("recovery.txt");
    Cmd::new("age-keygen").arg("-o").arg(&recovery).run();
    let tracker_data = dir.join("tracker");
    let (tracker, addr) = swarmbak_tracker(&tracker_data, &age_public_key(&recovery));
    let tracker_url = format!("http://{addr}");
    let home = dir.join("owner");
    enrol_machine(&home, &tracker_data, "owner");
    let (agent, _) = agent("owner agent", &home);

    // A small office tree plus an incompressible file: several stripes of shards.
    let src = dir.join("src");
    swarmbak_gentree::office(&src.join("office"), 2 << 20, 7).unwrap();
    std::fs::write(
        src.join("camera.raw"),
        swarmbak_gentree::Rng::new(7).bytes(3 << 20),
    )
    .unwrap();
    let out = swarmbak_fast(&home)
        .arg("seed")
        .arg(&src)
        .args(["--until", "published"])
        .run();
    let ih = out.first_line();
    assert_eq!(
        ih.len(),
        40,
        "seed prints the infohash first: {}",
        out.stdout_str()
    );
    let torrent = dir.join("snapshot.torrent");
    Cmd::swarmbak(&home)
        .args(["export", &ih])
        .arg(&torrent)
        .run();
    let meta = Cmd::swarmbak(&home)
        .args(["--json", "inspect"])
        .arg(&torrent)
        .run();
    let v: serde_json::Value = serde_json::from_slice(&meta.stdout).unwrap();
    let pieces = v["pieces"].as_u64().expect("inspect: pieces");
    let piece_length = v["piece_length"].as_u64().expect("inspect: piece_length");
    assert_eq!(v["private"], serde_json::json!(true), "{v}");
    // As the node wrote it: the tracker's bare announce URL, no passkey.
    assert_eq!(v["announce"], format!("{tracker_url}/announce"), "{v}");
    Owner {
        dir: dir.to_path_buf(),
        tracker,
        tracker_url,
        tracker_data,
        agent: Some(agent),
        recovery,
        src,
        ih,
        torrent,
        pieces,
        piece_length,
    }
}

impl Owner {
    /// The single file of the torrent inside a client's download directory.
    fn payload_in(&self, dir: &Path) -> PathBuf {
        let out = Cmd::swarmbak(self.dir.join("owner"))
            .args(["--json", "inspect"])
            .arg(&self.torrent)
            .run();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        dir.join(v["name"].as_str().expect("inspect: name"))
    }

    /// The snapshot's .torrent for the standard client `client`: enrolled at the tracker
    /// as a client, its own passkey URL as announce (never the owner's passkey).
    fn torrent_for(&self, client: &str) -> PathBuf {
        let url = client_announce_url(&self.tracker_data, client);
        let file = self.dir.join(format!("snapshot-{client}.torrent"));
        let owner = self.dir.join("owner");
        export_for(&owner, &self.ih, &file, &url);
        let bytes = std::fs::read(&file).unwrap();
        let owners = passkey_of(&owner);
        assert!(
            !bytes.windows(owners.len()).any(|w| w == owners.as_bytes()),
            "{client}'s torrent carries the owner's passkey"
        );
        // The owner cannot hand out its own passkey by mistake.
        let own = Cmd::swarmbak(&owner)
            .args(["export", &self.ih])
            .arg(self.dir.join("wrong.torrent"))
            .args([
                "--announce",
                &format!("{}/{owners}/announce", self.tracker_url),
            ])
            .run_fail();
        assert!(
            own.stderr_str().contains("own passkey"),
            "{}",
            own.stderr_str()
        );
        file
    }

    /// Stops every swarmbak peer (the owner's agent); returns its wire log.
    fn stop_swarmbak_peers(&mut self) -> Vec<WireEvent> {
        let mut a = self.agent.take().expect("agent running");
        let log = a.wire_log();
        a.kill();
        log
    }

    /// A new machine restores the snapshot from the .torrent with the recovery key; the
    /// tree must equal the source. Returns the fetch's wire log and how long it took.
    fn restore_on_new_machine(&self, tag: &str) -> (Vec<WireEvent>, Duration) {
        let home = self.dir.join(format!("new-{tag}"));
        enrol_machine(&home, &self.tracker_data, &format!("new-{tag}"));
        let to = self.dir.join(format!("restored-{tag}"));
        let t0 = Instant::now();
        let out = swarmbak_fast(&home)
            .arg("fetch")
            .arg(&self.torrent)
            .arg("--to")
            .arg(&to)
            .arg("--identity")
            .arg(&self.recovery)
            .run();
        let took = t0.elapsed();
        let name = self.src.file_name().unwrap();
        assert_same_tree(&self.src, &to.join(name));
        let log = out
            .stderr_str()
            .lines()
            .filter_map(WireEvent::parse)
            .collect();
        (log, took)
    }
}

/// Asserts and records what a client negotiated with swarmbak (from swarmbak's wire log).
fn check_negotiation(client: &str, version: &str, serving: &Negotiated, fetching: &Negotiated) {
    eprintln!("{client} with the swarmbak agent (client downloads): {serving:#?}");
    eprintln!("{client} with swarmbak fetch (client seeds): {fetching:#?}");
    for (what, n) in [("agent", serving), ("fetch", fetching)] {
        assert!(
            n.connections > 0,
            "{client}: no connection in the {what}'s wire log"
        );
        assert!(
            n.their_fast && n.fast,
            "{client} did not negotiate the fast extension with swarmbak's {what}: {n:#?}"
        );
        assert!(
            n.their_ext && n.ext && n.client.is_some(),
            "{client} did not negotiate the extension protocol with swarmbak's {what}: {n:#?}"
        );
    }
    // The agent seeds: it opens with have_all (BEP 6), never a bitfield.
    assert!(
        serving.sent.get("have_all").copied().unwrap_or(0) > 0,
        "{serving:#?}"
    );
    assert_eq!(serving.sent.get("bitfield"), None, "{serving:#?}");
    // The fetch starts empty: have_none.
    assert!(
        fetching.sent.get("have_none").copied().unwrap_or(0) > 0,
        "{fetching:#?}"
    );
    let fast_msgs = |m: &std::collections::BTreeMap<String, u64>| {
        ["have_all", "have_none", "allowed_fast", "reject", "suggest"]
            .iter()
            .filter(|k| m.contains_key(**k))
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    record(
        client,
        version,
        "fast extension (BEP 6)",
        true,
        &format!(
            "both sides set the bit; {client} sent {}; swarmbak sent {}",
            fast_msgs(&merge(&serving.received, &fetching.received)),
            fast_msgs(&merge(&serving.sent, &fetching.sent))
        ),
    );
    record(
        client,
        version,
        "extension protocol (BEP 10)",
        true,
        &format!(
            "v={:?}, m={{{}}}{}",
            serving.client.as_deref().unwrap_or("?"),
            serving.extensions.join(", "),
            if serving.extensions.iter().any(|e| e == "ut_metadata") {
                " (offers ut_metadata even for this private torrent)"
            } else {
                " (no ut_metadata: private torrent)"
            }
        ),
    );
}

fn merge(
    a: &std::collections::BTreeMap<String, u64>,
    b: &std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    let mut m = a.clone();
    for (k, v) in b {
        *m.entry(k.clone()).or_default() += v;
    }
    m
}

fn size_note(o: &Owner) -> String {
    format!("{} shard pieces of {} KiB", o.pieces, o.piece_length / 1024)
}

/// Records that `client` downloaded the snapshot from the swarmbak agent in `took`, and
/// how its pieces were verified.
fn record_download(client: &str, version: &str, o: &Owner, took: Duration, verified: &str) {
    record(
        client,
        version,
        "download snapshot",
        true,
        &format!(
            "{} from the swarmbak agent in {:.1}s",
            size_note(o),
            took.as_secs_f64()
        ),
    );
    record(client, version, "pieces verified", true, verified);
}

/// Checks that the new machine's fetch (`fetch_log`) got pieces from `client` seeding
/// alone, records it, and checks what was negotiated both ways.
fn record_restore(
    client: &str,
    version: &str,
    serving: &Negotiated,
    fetch_log: &[WireEvent],
    took: Duration,
) {
    let fetching = negotiated(fetch_log);
    assert!(
        fetching.received.get("piece").copied().unwrap_or(0) > 0,
        "fetch got no piece from {client}: {fetching:#?}"
    );
    record(
        client,
        version,
        "seed alone, swarmbak restores",
        true,
        &format!(
            "restored byte-identical from {client} alone in {:.1}s",
            took.as_secs_f64()
        ),
    );
    check_negotiation(client, version, serving, &fetching);
}

#[test]
fn libtorrent_fetches_and_seeds_a_snapshot() {
    let _g = serial();
    let version = require_libtorrent();
    let tmp = tempfile::tempdir().unwrap();
    let mut o = owner(tmp.path());
    let torrent = o.torrent_for("libtorrent");
    let dl = tmp.path().join("lt-download");
    std::fs::create_dir_all(&dl).unwrap();

    // 1. libtorrent downloads every shard piece from the swarmbak agent.
    let t0 = Instant::now();
    let out = Cmd::new(LT_PYTHON)
        .arg(py("lt_client.py"))
        .arg("download")
        .arg(&torrent)
        .arg(&dl)
        .arg("90")
        .run_unchecked();
    let took = t0.elapsed();
    let last = out.stdout_str().lines().last().unwrap_or("").to_string();
    let res: serde_json::Value = serde_json::from_str(&last).unwrap_or_else(|e| {
        panic!(
            "lt_client download: {e}\n{}{}",
            out.stdout_str(),
            out.stderr_str()
        )
    });
    assert!(
        out.status.success() && res["complete"] == true,
        "libtorrent did not finish: {res}\n{}",
        out.stderr_str()
    );
    assert_eq!(res["num_pieces"].as_u64(), Some(o.pieces));
    verify_pieces(&o.torrent, &o.payload_in(&dl));
    record_download(
        "libtorrent",
        &version,
        &o,
        took,
        "libtorrent: every piece passed; test: SHA-1 of every piece",
    );

    // libtorrent's own view of the swarmbak peers.
    let peers = res["peers"].as_array().cloned().unwrap_or_default();
    eprintln!(
        "libtorrent peer_info: {peers:#?}\nlibtorrent peer log: {:#}",
        res["peer_log"]
    );
    // The peer list is sampled while the download runs; a fast transfer between two
    // seeds-to-be may end (and the seeds disconnect) between samples. The peer log is
    // every alert: the extension handshake libtorrent received names the client.
    let log = res["peer_log"].to_string();
    assert!(
        peers.iter().any(
            |p| p["client"].as_str().unwrap_or("").starts_with("swarmbak")
                && p["supports_extensions"] == true
        ) || log.contains("'v': 'swarmbak "),
        "libtorrent saw no swarmbak peer that supports extensions: {peers:#?} {log}"
    );
    assert!(
        log.contains("FAST"),
        "libtorrent's log shows no fast extension bit from swarmbak: {log}"
    );
    assert!(
        log.contains("sb_machine"),
        "libtorrent's log shows no swarmbak extension handshake: {log}"
    );

    // 2. Every swarmbak peer stops; libtorrent seeds alone; a new machine restores.
    let serving = negotiated(&o.stop_swarmbak_peers());
    let seeder = libtorrent_seed(&torrent, &dl);
    let (fetch_log, took) = o.restore_on_new_machine("lt");
    drop(seeder);
    record_restore("libtorrent", &version, &serving, &fetch_log, took);
    drop(o.tracker);
    regenerate_table();
}

#[test]
fn transmission_fetches_and_seeds_a_snapshot() {
    let _g = serial();
    require_libtorrent(); // the piece checker
    let version = tool_version("transmission-daemon", &["--version"]);
    eprintln!(
        "transmission-remote: {}",
        tool_version("transmission-remote", &["--version"])
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut o = owner(tmp.path());
    let torrent = o.torrent_for("transmission");
    let dl = tmp.path().join("tr-download");

    // 1. transmission downloads every shard piece from the swarmbak agent.
    let t0 = Instant::now();
    let tr = Transmission::start(&tmp.path().join("tr-config"), &dl);
    let add = tr.remote(&["-a", torrent.to_str().unwrap()]);
    assert!(
        add.status.success(),
        "transmission-remote -a: {}{}",
        add.stdout_str(),
        add.stderr_str()
    );
    // transmission decides whom it is interested in every 10 s: allow for a few rounds.
    let done = wait_for_or_none(Duration::from_secs(90), || tr.complete());
    assert!(
        done,
        "transmission did not finish:\n{}\n{}\n{}",
        tr.info(),
        tr.remote(&["-t", "all", "-pi"]).stdout_str(),
        tr.daemon.tail()
    );
    let took = t0.elapsed();
    verify_pieces(&o.torrent, &o.payload_in(&dl));
    let info = tr.info();
    let have = info
        .lines()
        .find(|l| l.trim_start().starts_with("Have:"))
        .unwrap_or("")
        .trim()
        .to_string();
    record_download(
        "transmission",
        &version,
        &o,
        took,
        &format!("transmission: {have}; test: SHA-1 of every piece"),
    );
    drop(tr);

    // 2. Every swarmbak peer stops; a fresh transmission (new config, same data) seeds
    //    alone; a new machine restores. (A fresh daemon: transmission keys peers by IP,
    //    and having seen a seed at 127.0.0.1 it drops every later connection from
    //    127.0.0.1 while it seeds itself. On one host every peer shares that address.)
    let serving = negotiated(&o.stop_swarmbak_peers());
    let tr = Transmission::start(&tmp.path().join("tr-config-2"), &dl);
    let add = tr.remote(&["-a", torrent.to_str().unwrap(), "--verify"]);
    assert!(
        add.status.success(),
        "{}{}",
        add.stdout_str(),
        add.stderr_str()
    );
    let _ = tr.remote(&["-t", "all", "--verify"]);
    assert!(
        wait_for_or_none(Duration::from_secs(60), || tr.complete()),
        "transmission does not seed the downloaded data:\n{}",
        tr.info()
    );
    let _ = tr.remote(&["-t", "all", "--reannounce"]);
    let (fetch_log, took) = o.restore_on_new_machine("tr");
    drop(tr);
    record_restore("transmission", &version, &serving, &fetch_log, took);
    drop(o.tracker);
    regenerate_table();
}

fn wait_for_or_none(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    false
}

#[test]
fn aria2_fetches_and_seeds_a_snapshot() {
    let _g = serial();
    require_libtorrent(); // the piece checker
    let version = tool_version("aria2c", &["--version"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut o = owner(tmp.path());
    let torrent = o.torrent_for("aria2");
    let dl = tmp.path().join("a2-download");
    std::fs::create_dir_all(&dl).unwrap();

    // 1. aria2 downloads every shard piece, then exits (--seed-time=0).
    let t0 = Instant::now();
    let mut c = Command::new("aria2c");
    c.args(aria2_args(&dl, free_port()))
        .arg("--seed-time=0")
        .arg(&torrent);
    let mut a = Bg::spawn("aria2c download", c);
    let st = a.wait_exit(Duration::from_secs(90));
    let took = t0.elapsed();
    let text = a.stdout_lines().join("\n");
    assert!(
        st.success() && text.contains("Download complete"),
        "aria2c failed ({st}):\n{}",
        a.tail()
    );
    verify_pieces(&o.torrent, &o.payload_in(&dl));
    record_download(
        "aria2",
        &version,
        &o,
        took,
        "aria2: download complete (exit 0); test: SHA-1 of every piece",
    );
    drop(a);

    // 2. Every swarmbak peer stops; aria2 checks the data and seeds it alone.
    let serving = negotiated(&o.stop_swarmbak_peers());
    let mut c = Command::new("aria2c");
    c.args(aria2_args(&dl, free_port()))
        .args([
            "--check-integrity=true",
            "--seed-ratio=0.0",
            "--bt-seed-unverified=false",
        ])
        .arg(&torrent);
    let seeder = Bg::spawn("aria2c seed", c);
    seeder.wait_line(|l| l.contains("SEED("), Duration::from_secs(60));
    let (fetch_log, took) = o.restore_on_new_machine("a2");
    drop(seeder);
    record_restore("aria2", &version, &serving, &fetch_log, took);
    drop(o.tracker);
    regenerate_table();
}

/// A peer with every reserved bit zero (no BEP 6, no BEP 10, no DHT) downloads pieces
/// from a swarmbak agent, and the agent sends it nothing from either extension.
#[test]
fn plain_peer_without_extensions_downloads() {
    let _g = serial();
    require_libtorrent(); // raw_peer.py reads the torrent with it
    let tmp = tempfile::tempdir().unwrap();
    let mut o = owner(tmp.path());
    let agent_addr = {
        let a = o.agent.as_ref().unwrap();
        a.stdout_lines()
            .iter()
            .find_map(|l| l.strip_prefix("listening ").map(|s| s.trim().to_string()))
            .expect("agent address")
    };
    // A standard client is served by an enrolled machine once the tracker lists it: it
    // announces with its own passkey, and the agent learns of it at its next announce
    // (wire.md "Authenticated peers"; a peer without BEP 10 gives no port: its IP counts).
    let url = client_announce_url(&o.tracker_data, "plain-peer");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let announcing = {
        let (stop, ih, port) = (stop.clone(), o.ih.clone(), free_port());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                announce_as_client(&url, &ih, port);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let want = 4.min(o.pieces);
    let out = Cmd::new(LT_PYTHON)
        .arg(py("raw_peer.py"))
        .arg(&o.torrent)
        .arg(&agent_addr)
        .arg(want.to_string())
        .arg("30")
        .run_unchecked();
    let res: serde_json::Value =
        serde_json::from_str(out.stdout_str().lines().last().unwrap_or("")).unwrap_or_else(|e| {
            panic!("raw_peer.py: {e}\n{}{}", out.stdout_str(), out.stderr_str())
        });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    announcing.join().unwrap();
    eprintln!("plain peer: {res}");
    assert!(
        out.status.success(),
        "the plain peer failed: {res}\n{}",
        out.stderr_str()
    );
    assert_eq!(res["forbidden"], serde_json::json!([]), "{res}");
    // The agent's own account of that connection.
    std::thread::sleep(Duration::from_millis(500));
    let log = o.stop_swarmbak_peers();
    let n = negotiated(&log);
    eprintln!("agent's wire log for the plain peer: {n:#?}");
    assert!(
        n.connections > 0 && !n.fast && !n.ext && !n.their_fast && !n.their_ext,
        "{n:#?}"
    );
    for k in [
        "have_all",
        "have_none",
        "allowed_fast",
        "reject",
        "suggest",
        "extended",
    ] {
        assert_eq!(
            n.sent.get(k),
            None,
            "the agent sent {k} to a peer without the extension: {n:#?}"
        );
    }
    assert!(
        n.sent.contains_key("bitfield") && n.sent.contains_key("piece"),
        "{n:#?}"
    );
    record(
        "plain peer",
        "raw_peer.py (reserved bits 0)",
        "download snapshot",
        true,
        &format!("verified {} pieces; swarmbak sent {:?}", want, n.sent),
    );
    record(
        "plain peer",
        "raw_peer.py (reserved bits 0)",
        "fast extension (BEP 6)",
        true,
        "not negotiated; swarmbak sent no BEP 6 message",
    );
    record(
        "plain peer",
        "raw_peer.py (reserved bits 0)",
        "extension protocol (BEP 10)",
        true,
        "not negotiated; swarmbak sent no extended message",
    );
    drop(o.tracker);
    regenerate_table();
}

/// One HTTP announce of a standard client (`url`: its passkey announce URL) for `ih`
/// (hex), listening on `port`; panics unless the tracker answers 200.
fn announce_as_client(url: &str, ih: &str, port: u16) {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .expect("an http:// announce URL");
    let (host, path) = rest.split_once('/').expect("HOST/PATH");
    let ih_q: String = (0..20)
        .map(|i| format!("%{}", &ih[2 * i..2 * i + 2]))
        .collect();
    let req = format!(
        "GET /{path}?info_hash={ih_q}&peer_id=-PLAIN0-000000000001&port={port}&uploaded=0&downloaded=0&left=1&compact=1 HTTP/1.0\r\nHost: {host}\r\n\r\n"
    );
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
