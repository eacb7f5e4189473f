//! The swarm with real processes on 127.0.0.1: a tracker and agents; a machine backs up
//! until durable, is lost, and a new machine restores it with the recovery key.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::procs::*;
use common::*;

/// The swarm tests start a tracker and several agents each: run them one at a time, so
/// that on a 2-core CI machine their timing does not depend on each other's load.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

struct Org {
    dir: tempfile::TempDir,
    tracker: Tracker,
    agents: Vec<(std::path::PathBuf, Proc)>,
    recovery: std::path::PathBuf,
    recovery_pub: String,
}

fn org(agents: usize) -> Org {
    let dir = tempfile::tempdir().unwrap();
    let rec = swarmbak_format::Identity::generate();
    let recovery = dir.path().join("recovery.txt");
    fs::write(&recovery, rec.to_identity_file()).unwrap();
    let recovery_pub = rec.to_public().to_string();
    let tracker = tracker(dir.path(), &recovery_pub);
    let mut v = Vec::new();
    for i in 0..agents {
        let home = dir.path().join(format!("agent{i}"));
        init(&home, &format!("agent{i}"), &tracker, &recovery_pub);
        let p = agent(&home, &format!("agent{i}"));
        v.push((home, p));
    }
    Org {
        dir,
        tracker,
        agents: v,
        recovery,
        recovery_pub,
    }
}

/// The owner backs up `tree` until durable; returns (owner home, infohash).
fn seed_durable(o: &Org, tree: &Path) -> (std::path::PathBuf, String) {
    let owner = o.dir.path().join("owner");
    init(&owner, "owner", &o.tracker, &o.recovery_pub);
    let ih = seed_on(&owner, tree, &[]);
    (owner, ih)
}

/// `owner` backs up `tree` until durable (`seed` with `extra` arguments); returns the
/// infohash.
fn seed_on(owner: &Path, tree: &Path, extra: &[&str]) -> String {
    let mut args = vec!["seed", tree.to_str().unwrap(), "--timeout", "90"];
    args.extend_from_slice(extra);
    let out = run_fast(owner, &args);
    let (so, se) = text(&out);
    assert!(
        out.status.success(),
        "seed failed ({:?})\n{so}\n{se}",
        out.status
    );
    let ih = so.lines().next().unwrap().to_string();
    assert_eq!(ih.len(), 40, "{so}");
    assert!(
        so.contains("published to") && so.contains("durable"),
        "{so}"
    );
    ih
}

/// A machine enrolled in the organisation (a replacement for a lost one, say).
fn new_machine(o: &Org, name: &str) -> std::path::PathBuf {
    let home = o.dir.path().join(name);
    init(&home, name, &o.tracker, &o.recovery_pub);
    home
}

fn fetch_json(home: &Path, ih: &str, to: &Path, recovery: &Path) -> serde_json::Value {
    let out = run_fast(
        home,
        &[
            "--json",
            "fetch",
            ih,
            "--to",
            to.to_str().unwrap(),
            "--identity",
            recovery.to_str().unwrap(),
        ],
    );
    let (so, se) = text(&out);
    assert!(
        out.status.success(),
        "fetch failed ({:?})\n{so}\n{se}",
        out.status
    );
    serde_json::from_str(so.lines().last().unwrap()).unwrap()
}

#[test]
fn durable_backup_of_a_lost_machine_restores_on_a_new_one_with_the_recovery_key() {
    let _serial = serial();
    let o = org(5);
    let tree = o.dir.path().join("laptop");
    swarmbak_gentree::office(&tree, 16 << 20, 7).unwrap();
    swarmbak_gentree::edge_with_big_file(&tree.join("edge"), 7, 1 << 20).unwrap();
    let (owner, ih) = seed_durable(&o, &tree);
    // Every shard has at least 2 holders other than the owner (the default copies).
    let l = inspect_json(&owner, &ih);
    let pieces = l["pieces"].as_u64().unwrap() as usize;
    let mut count = vec![0; pieces];
    for (home, _) in &o.agents {
        for p in held(home, &ih) {
            count[p] += 1;
        }
    }
    assert!(count.iter().all(|&c| c >= 2), "copies per shard: {count:?}");
    // The laptop is stolen.
    fs::remove_dir_all(&owner).unwrap();
    let newm = new_machine(&o, "replacement");
    let list = ok(&newm, &["snapshots", "--machine", "owner"]);
    assert!(list.contains(&ih), "{list}");
    let to = o.dir.path().join("restored");
    let v = fetch_json(&newm, &ih, &to, &o.recovery);
    assert_same(&tree, &to.join("laptop"));
    // Only what was needed: k shards of each stripe, not all k + m.
    let k = l["swarmbak"]["k"].as_u64().unwrap();
    let stripes = l["swarmbak"]["stripes"].as_u64().unwrap();
    let need = k * stripes * l["piece_length"].as_u64().unwrap();
    let got = v["downloaded_bytes"].as_u64().unwrap();
    assert!(got <= need + need / 4, "downloaded {got} for {need} needed");
    // Health from the swarm: recoverable, with holders per shard.
    let h = run_fast(&newm, &["--json", "health", &ih]);
    let hv: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    assert_eq!(hv["recoverable"], true, "{hv}");
}

/// Picks agents to kill so that every stripe keeps at least k reachable shards, and some
/// stripe is left with exactly k if that is possible.
fn kill_set(holders: &[Vec<usize>], pieces: usize, k: usize, n: usize) -> Vec<usize> {
    let reachable = |dead: &[usize]| -> usize {
        let mut have = vec![false; pieces];
        for (a, h) in holders.iter().enumerate() {
            if !dead.contains(&a) {
                for &p in h {
                    have[p] = true;
                }
            }
        }
        (0..pieces / n)
            .map(|s| (0..n).filter(|&i| have[s * n + i]).count())
            .min()
            .unwrap_or(0)
    };
    let mut dead = Vec::new();
    loop {
        let best = (0..holders.len())
            .filter(|a| !dead.contains(a))
            .map(|a| {
                let mut d = dead.clone();
                d.push(a);
                (reachable(&d), a)
            })
            .filter(|(r, _)| *r >= k)
            .min();
        match best {
            Some((_, a)) => dead.push(a),
            None => return dead,
        }
    }
}

#[test]
fn agents_killed_during_the_fetch_until_only_k_shards_of_a_stripe_remain() {
    let _serial = serial();
    let o = org(5);
    let tree = o.dir.path().join("desk");
    swarmbak_gentree::office(&tree, 48 << 20, 9).unwrap();
    let (owner, ih) = seed_durable(&o, &tree);
    let l = inspect_json(&owner, &ih);
    let (k, m) = (
        l["swarmbak"]["k"].as_u64().unwrap() as usize,
        l["swarmbak"]["m"].as_u64().unwrap() as usize,
    );
    let pieces = l["pieces"].as_u64().unwrap() as usize;
    fs::remove_dir_all(&owner).unwrap();
    let holders: Vec<Vec<usize>> = o.agents.iter().map(|(h, _)| held(h, &ih)).collect();
    let dead = kill_set(&holders, pieces, k, k + m);
    assert!(!dead.is_empty(), "some agent can be lost");
    let newm = new_machine(&o, "replacement");
    let to = o.dir.path().join("restored");
    let mut agents = o.agents;
    let ihc = ih.clone();
    let (newc, toc, rec) = (newm.clone(), to.clone(), o.recovery.clone());
    let fetch = std::thread::spawn(move || fetch_json(&newc, &ihc, &toc, &rec));
    std::thread::sleep(Duration::from_millis(300));
    for a in &dead {
        agents[*a].1.kill();
    }
    fetch.join().unwrap();
    assert_same(&tree, &to.join("desk"));
}

#[test]
fn an_interrupted_fetch_resumes_without_downloading_again() {
    let _serial = serial();
    let o = org(4);
    let tree = o.dir.path().join("pc");
    swarmbak_gentree::office(&tree, 64 << 20, 11).unwrap();
    let (owner, ih) = seed_durable(&o, &tree);
    let l = inspect_json(&owner, &ih);
    let piece = l["piece_length"].as_u64().unwrap();
    let need =
        l["swarmbak"]["k"].as_u64().unwrap() * l["swarmbak"]["stripes"].as_u64().unwrap() * piece;
    let newm = new_machine(&o, "replacement");
    let to = o.dir.path().join("restored");
    // Start a fetch and kill it once some shards are in.
    let mut c = std::process::Command::new(BIN);
    c.arg("--home").arg(&newm).args([
        "fetch",
        &ih,
        "--to",
        to.to_str().unwrap(),
        "--identity",
        o.recovery.to_str().unwrap(),
    ]);
    for (k, v) in FAST {
        c.env(k, v);
    }
    let mut child = c
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while held(&newm, &ih).len() < 4 && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    let had = held(&newm, &ih).len() as u64;
    assert!(had >= 4, "the first run got {had} shards");
    let v = fetch_json(&newm, &ih, &to, &o.recovery);
    assert_same(&tree, &to.join("pc"));
    let got = v["downloaded_bytes"].as_u64().unwrap();
    assert!(
        got + had * piece <= need + 2 * piece,
        "second run downloaded {got} bytes though {had} shards of {piece} bytes were already here ({need} needed)"
    );
}

#[test]
fn the_tracker_keeps_published_snapshots_across_a_restart() {
    let _serial = serial();
    let mut o = org(3);
    let tree = o.dir.path().join("t");
    swarmbak_gentree::office(&tree, 2 << 20, 3).unwrap();
    let (owner, ih) = seed_durable(&o, &tree);
    o.tracker.kill();
    // Started again on the same data (the recovery recipient is stored: not given again).
    let t2 = Proc::start(
        "tracker",
        &[
            "tracker",
            "--listen",
            "127.0.0.1:0",
            "--data",
            o.tracker.data.to_str().unwrap(),
            "--interval",
            "1",
        ],
    );
    o.tracker.addr = t2.addr.clone();
    o.tracker.proc = t2;
    // A machine enrolled after the restart sees the owner's signed records...
    let home = o.dir.path().join("viewer");
    init(&home, "viewer", &o.tracker, &o.recovery_pub);
    let list = ok(&home, &["snapshots", "--machine", "owner"]);
    assert!(list.contains(&ih), "{list}");
    // ... and a passkey enrolled before it still works (the owner moves to the new port).
    ok(&owner, &["init", "--tracker", &o.tracker.url()]);
    let list = ok(&owner, &["snapshots", "--machine", "owner"]);
    assert!(list.contains(&ih), "{list}");
}

/// The old open tracker (`--open`), asked for explicitly: a machine that never enrolled
/// publishes an unsigned snapshot and another lists it by name.
#[test]
fn the_open_tracker_still_serves_machines_that_never_enrolled() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let rec = swarmbak_format::Identity::generate()
        .to_public()
        .to_string();
    let t = open_tracker(dir.path());
    let owner = dir.path().join("owner");
    init(&owner, "owner", &t, &rec);
    let tree = dir.path().join("t");
    swarmbak_gentree::office(&tree, 1 << 20, 3).unwrap();
    let ih = seed(&owner, &[&tree]);
    let c: serde_json::Value =
        serde_json::from_slice(&fs::read(owner.join("config.json")).unwrap()).unwrap();
    assert!(c["enrolment"].is_null(), "{c}");
    let viewer = dir.path().join("viewer");
    init(&viewer, "viewer", &t, &rec);
    let list = ok(&viewer, &["snapshots", "--machine", "owner"]);
    assert!(list.contains(&ih), "{list}");
    // No passkey in the announce path.
    let out = ok(&owner, &["--json", "inspect", &ih]);
    assert!(out.contains(&format!("\"{}/announce\"", t.url())), "{out}");
}

/// A peer that claims every piece and serves garbage: announced to the tracker, it is
/// the first to unchoke the fetcher, so the fetcher surely asks it for blocks.
mod liar {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::{SinkExt, StreamExt};
    use swarmbak_tracker::{AnnounceRequest, TrackerClient};
    use swarmbak_wire::{
        ExtensionHandshake, Frame, Handshake, Limits, Message, PeerCodec, Reserved,
    };
    use tokio_util::codec::Framed;

    #[derive(Default)]
    pub struct Counts {
        /// Peer ids of every connection, in order.
        pub peers: std::sync::Mutex<Vec<[u8; 20]>>,
        pub connections: AtomicUsize,
        pub blocks_served: AtomicUsize,
        pub closed_by_peer: AtomicUsize,
    }

    pub async fn run(announce_url: String, ih: [u8; 20], counts: Arc<Counts>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let mut peer_id = [b'L'; 20];
        peer_id[..8].copy_from_slice(b"-LIAR01-");
        tokio::spawn(async move {
            let c = TrackerClient::new(&announce_url).unwrap();
            loop {
                let _ = c
                    .announce(&AnnounceRequest::new(ih.into(), peer_id.into(), port, 0))
                    .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        loop {
            let (s, _) = l.accept().await.unwrap();
            let counts = counts.clone();
            counts.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut f = Framed::new(s, PeerCodec::new(Limits::default()));
                let Some(Ok(Frame::Handshake(theirs))) = f.next().await else {
                    return;
                };
                counts.peers.lock().unwrap().push(theirs.peer_id);
                let mut hs = Handshake::new(ih, peer_id);
                hs.reserved = Reserved::default()
                    .with_fast(true)
                    .with_extension_protocol(true);
                let _ = f.send(Frame::Handshake(hs)).await;
                let eh = ExtensionHandshake {
                    sb_key: Some(b"liar".to_vec()),
                    ..Default::default()
                };
                let _ = f
                    .send(Frame::Message(Message::Extended {
                        id: 0,
                        payload: Bytes::from(eh.encode()),
                    }))
                    .await;
                let _ = f.send(Frame::Message(Message::HaveAll)).await;
                let _ = f.send(Frame::Message(Message::Unchoke)).await;
                while let Some(m) = f.next().await {
                    if let Ok(Frame::Message(Message::Request(b))) = m {
                        let junk = vec![0xA5u8; b.length as usize];
                        counts.blocks_served.fetch_add(1, Ordering::SeqCst);
                        if f.send(Frame::Message(Message::Piece {
                            piece: b.piece,
                            offset: b.offset,
                            data: Bytes::from(junk),
                        }))
                        .await
                        .is_err()
                        {
                            break;
                        }
                    }
                }
                counts.closed_by_peer.fetch_add(1, Ordering::SeqCst);
            });
        }
    }
}

#[test]
fn a_lying_peer_is_detected_and_banned_and_the_fetch_completes_from_honest_peers() {
    let _serial = serial();
    let o = org(3);
    let tree = o.dir.path().join("box");
    swarmbak_gentree::office(&tree, 8 << 20, 5).unwrap();
    let (_owner, ih) = seed_durable(&o, &tree);
    let mut ihb = [0u8; 20];
    for i in 0..20 {
        ihb[i] = u8::from_str_radix(&ih[2 * i..2 * i + 2], 16).unwrap();
    }
    let counts = std::sync::Arc::new(liar::Counts::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The liar is enrolled as a standard client would be (a passkey, no key): a private
    // tracker refuses announces without one.
    let liar_url = o.tracker.client_announce("liar");
    rt.spawn(liar::run(liar_url, ihb, counts.clone()));
    std::thread::sleep(Duration::from_millis(800));
    let newm = new_machine(&o, "replacement");
    let to = o.dir.path().join("restored");
    fetch_json(&newm, &ih, &to, &o.recovery);
    assert_same(&tree, &to.join("box"));
    use std::sync::atomic::Ordering;
    assert!(
        counts.blocks_served.load(Ordering::SeqCst) > 0,
        "the liar was asked for blocks"
    );
    assert!(
        counts.closed_by_peer.load(Ordering::SeqCst) >= 1,
        "the fetcher hung up on the liar"
    );
    // Every machine that connected did so once: a banned peer is not contacted again.
    let peers = counts.peers.lock().unwrap().clone();
    let mut unique = peers.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        peers.len(),
        "a peer reconnected to the liar: {} connections",
        counts.connections.load(Ordering::SeqCst)
    );
}

#[test]
fn an_agent_holds_other_machines_shards_within_its_quota() {
    let _serial = serial();
    let o = org(3);
    let small = o.dir.path().join("small-disk");
    init(&small, "small-disk", &o.tracker, &o.recovery_pub);
    ok(&small, &["init", "--quota", "2M"]);
    let _a = agent(&small, "small-disk");
    std::thread::sleep(Duration::from_millis(500));
    let tree = o.dir.path().join("big");
    swarmbak_gentree::office(&tree, 24 << 20, 13).unwrap();
    let (owner, ih) = seed_durable(&o, &tree);
    let piece = inspect_json(&owner, &ih)["piece_length"].as_u64().unwrap();
    // Give it time to take on more than it may.
    std::thread::sleep(Duration::from_secs(2));
    let bytes = held(&small, &ih).len() as u64 * piece;
    // A soft limit: pieces already in flight when it is reached still land.
    assert!(
        bytes <= (2 << 20) + 4 * piece,
        "the quota agent holds {bytes} bytes"
    );
}

#[test]
fn seed_hands_the_snapshot_to_the_agent_running_on_the_same_home() {
    let _serial = serial();
    let o = org(3);
    let owner = o.dir.path().join("owner");
    init(&owner, "owner", &o.tracker, &o.recovery_pub);
    let _owner_agent = agent(&owner, "owner-agent");
    let tree = o.dir.path().join("docs");
    swarmbak_gentree::office(&tree, 4 << 20, 21).unwrap();
    // A relative path: the agent runs elsewhere, so seed must resolve it.
    let mut c = std::process::Command::new(BIN);
    c.current_dir(o.dir.path()).arg("--home").arg(&owner).args([
        "seed",
        "docs",
        "--timeout",
        "60",
        "--json",
    ]);
    for (k, v) in FAST {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let (so, se) = text(&out);
    assert!(out.status.success(), "{so}\n{se}");
    let lines: Vec<serde_json::Value> = so
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ih = lines[0]["infohash"].as_str().unwrap().to_string();
    assert!(lines.iter().any(|l| l["event"] == "durable"), "{so}");
    // The agent made it (the store was its to write) and keeps seeding it after seed
    // exits: a new machine restores it while the owner's agent is the only full copy.
    assert!(ok(&owner, &["snapshots"]).contains(&ih));
    let newm = new_machine(&o, "replacement");
    let to = o.dir.path().join("restored");
    fetch_json(&newm, &ih, &to, &o.recovery);
    assert_same(&tree, &to.join("docs"));
}

/// `health` counts the machines that hold shards, wherever it runs: on a machine that
/// holds some (its agent running) as on one that holds none.
#[test]
fn health_counts_each_holder_once_wherever_it_runs() {
    let _serial = serial();
    let o = org(3);
    let ih = {
        let tree = o.dir.path().join("laptop");
        swarmbak_gentree::office(&tree, 2 << 20, 3).unwrap();
        seed_durable(&o, &tree).1
    };
    let holders = o
        .agents
        .iter()
        .filter(|(home, _)| !held(home, &ih).is_empty())
        .count();
    let newm = new_machine(&o, "watcher");
    for home in [&newm, &o.agents[0].0] {
        let h = run_fast(home, &["--json", "health", &ih]);
        let (so, se) = text(&h);
        let hv: serde_json::Value = serde_json::from_str(so.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("{e}: {so}\n{se}"));
        assert_eq!(hv["recoverable"], true, "{hv}");
        assert_eq!(
            hv["machines_online"].as_u64(),
            Some(holders as u64),
            "health on {}: {hv}",
            home.display()
        );
    }
}

/// Issue 11: a snapshot that builds on one nobody has (made while the tracker was down by
/// a version that did not remember it was unpublished) is not durable, nor recoverable in
/// `health`, however many machines hold its own shards; both name the missing link.
#[test]
fn a_snapshot_is_durable_only_with_every_snapshot_it_builds_on() {
    let _s = serial();
    let mut o = org(2);
    let owner = new_machine(&o, "owner");
    let tree = o.dir.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("a"), vec![7u8; 50_000]).unwrap();
    let addr = o.tracker.addr.clone();
    o.tracker.kill();
    let out = run_fast(
        &owner,
        &[
            "seed",
            tree.to_str().unwrap(),
            "--until",
            "published",
            "--timeout",
            "3",
        ],
    );
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{so}{se}");
    let parent = so.lines().next().unwrap().to_string();
    // What a store from before the `unpublished` marker looks like after this happened.
    let marker = owner
        .join("store/snapshots")
        .join(&parent)
        .join("unpublished");
    let _ = fs::remove_file(marker);
    o.tracker = tracker_with(o.dir.path(), &o.recovery_pub, &["--listen", &addr]);
    fs::write(tree.join("b"), vec![8u8; 50_000]).unwrap();
    let out = run_fast(
        &owner,
        &[
            "seed",
            tree.to_str().unwrap(),
            "--copies",
            "1",
            "--timeout",
            "20",
        ],
    );
    let (so, se) = text(&out);
    let child = so.lines().next().unwrap().to_string();
    assert_ne!(child, parent);
    assert_eq!(
        out.status.code(),
        Some(3),
        "not durable without its parent: {so}{se}"
    );
    assert!(
        se.contains(&format!("builds on the earlier snapshot {parent}")),
        "{se}"
    );
    let out = run_fast(&owner, &["health", &child]);
    let (so, se) = text(&out);
    assert!(!out.status.success(), "{so}{se}");
    assert!(so.contains("NOT recoverable"), "{so}");
    assert!(
        se.contains(&format!("builds on the earlier snapshot {parent}"))
            && se.contains("is not recoverable now"),
        "{se}"
    );
}

/// What the running agent on `home` holds for others (`status --json`'s `holding`).
fn holding(home: &Path) -> serde_json::Value {
    let out = ok(home, &["--json", "status"]);
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["holding"].clone()
}

/// An agent joins only the swarms of what it holds or what placement over the tracker's
/// roster assigns it (swarm.md §3.5), not every snapshot the organisation has: with k + m
/// = 3 shard indices, copies 1 and six agents, at most three agents are assigned the
/// snapshot; the others never take part in it, not after a restart either, and the
/// snapshot is durable and restores all the same. (Before: every agent took part in
/// every listed snapshot.)
#[test]
fn agents_join_only_the_swarms_placement_assigns_them() {
    let _serial = serial();
    let o = org(0);
    let mut agents = Vec::new();
    let mut keys = Vec::new();
    for i in 0..6 {
        let name = format!("agent{i}");
        let home = new_machine(&o, &name);
        ok(&home, &["init", "--copies", "1"]);
        let c: serde_json::Value =
            serde_json::from_slice(&fs::read(home.join("config.json")).unwrap()).unwrap();
        keys.push(
            swarmbak_core::MachineKey::from_age_recipient(c["public_key"].as_str().unwrap())
                .unwrap(),
        );
        // Takeovers (swarm.md §3.1) would put shards on unassigned agents that
        // joined; a long grace keeps them out of what this test looks at.
        let p = agent_env(&home, &name, &[("SWARMBAK_TAKEOVER_SECS", "120")]);
        agents.push((home, p));
    }
    // Every agent has asked for the roster (every 0.3 s) before the snapshot is listed.
    std::thread::sleep(Duration::from_secs(1));
    let owner = new_machine(&o, "owner");
    // copies 1 in its publish records: the holders' target (swarm.md §3.1).
    ok(&owner, &["init", "--k", "2", "--m", "1", "--copies", "1"]);
    let tree = o.dir.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("a"), noise(5, 3 << 20)).unwrap();
    let ih = seed_on(&owner, &tree, &["--copies", "1"]);
    // Placement over the six (the owner is not a candidate), under the owner's key:
    // the first of each index.
    let c: serde_json::Value =
        serde_json::from_slice(&fs::read(owner.join("config.json")).unwrap()).unwrap();
    let group = c["public_key"].as_str().unwrap().as_bytes().to_vec();
    let candidates: Vec<_> = keys
        .iter()
        .map(|k| swarmbak_core::placement::Candidate::new(k.clone(), None))
        .collect();
    let assigned: std::collections::BTreeSet<usize> = (0..3)
        .map(|j| {
            let first = &swarmbak_core::placement::ranking(&group, j, &candidates)[0].key;
            keys.iter().position(|k| k == first).unwrap()
        })
        .collect();
    assert!(assigned.len() <= 3);
    // A few more polls, then a restart of every agent placement leaves out.
    std::thread::sleep(Duration::from_secs(2));
    for (i, (home, p)) in agents.iter_mut().enumerate() {
        if !assigned.contains(&i) {
            p.kill();
            *p = agent_env(
                home,
                &format!("agent{i}"),
                &[("SWARMBAK_TAKEOVER_SECS", "120")],
            );
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    for (i, (home, _)) in agents.iter().enumerate() {
        let h = holding(home);
        let here = held(home, &ih);
        if assigned.contains(&i) {
            assert_eq!(h["snapshots"], 1, "agent{i} is assigned: {h}");
            assert!(
                !here.is_empty(),
                "agent{i} holds nothing of what it is assigned"
            );
        } else {
            assert_eq!(
                h["snapshots"], 0,
                "agent{i} is assigned nothing yet takes part: {h}"
            );
            assert!(here.is_empty(), "agent{i} holds {here:?}");
        }
    }
    // Restorable with the recovery key by a new machine, from the assigned agents alone
    // (the owner's `seed` ended when the snapshot was durable; it runs no agent).
    let new = new_machine(&o, "new");
    let to = o.dir.path().join("restored");
    fetch_json(&new, &ih, &to, &o.recovery);
    assert_same(&tree, &to.join("tree"));
}

/// Placement across rooms, per owner, with the owner's copies (swarm.md §3.1): four
/// agents, two enrolled in room hq/1 and two in hq/2, each configured for 1 copy; the
/// owner publishes two snapshots with copies 2. Every shard index of both is held in
/// both rooms (by score alone, about a third of the indices would have both copies in
/// one room), by the same machines for both snapshots (one holder group per owner).
#[test]
fn copies_are_spread_over_rooms_by_the_owners_holder_group() {
    let _serial = serial();
    let o = org(0);
    let rooms = ["hq/1", "hq/1", "hq/2", "hq/2"];
    let mut agents = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        let name = format!("agent{i}");
        let home = o.dir.path().join(&name);
        init_with(
            &home,
            &name,
            &o.tracker,
            &o.recovery_pub,
            &["--domain", room],
        );
        ok(&home, &["init", "--copies", "1"]);
        // No takeover while the assigned holders download (swarm.md §3.1).
        let p = agent_env(&home, &name, &[("SWARMBAK_TAKEOVER_SECS", "120")]);
        agents.push((home, p));
    }
    std::thread::sleep(Duration::from_secs(1));
    let owner = new_machine(&o, "owner");
    let tree = o.dir.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("a"), noise(6, 1 << 20)).unwrap();
    let first = seed_on(&owner, &tree, &["--copies", "2"]);
    fs::write(tree.join("b"), noise(7, 1 << 20)).unwrap();
    let second = seed_on(&owner, &tree, &["--copies", "2"]);
    let n = 12;
    let mut groups = Vec::new();
    for ih in [&first, &second] {
        // Which agents hold each shard index.
        let mut by_index: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); n];
        for (i, (home, _)) in agents.iter().enumerate() {
            for p in held(home, ih) {
                by_index[p % n].insert(i);
            }
        }
        for (j, holders) in by_index.iter().enumerate() {
            let in_rooms: std::collections::BTreeSet<&str> =
                holders.iter().map(|&i| rooms[i]).collect();
            assert_eq!(
                in_rooms.len(),
                2,
                "{ih}: shard index {j} held by {holders:?}"
            );
        }
        groups.push(by_index);
    }
    assert_eq!(groups[0], groups[1], "two holder groups for one owner");
}

/// Issue 13 point 5: disks rot. A holder loses m + 1 shards of a stripe (one overwritten
/// in place, m deleted), so fewer than k good ones of it are left on its disk; one of the
/// owner's own shards is overwritten. The agents' scrub (here a whole pass every 2 s)
/// finds every one, says so and logs it; the holder gives up the first it meets (its disk
/// cannot rebuild it) and fetches it again from the others (later ones it may rebuild
/// itself once k good shards of the stripe are back), the owner rebuilds its own from the
/// other shards of the stripe on its disk (no key), and every file ends with its right
/// bytes.
#[test]
fn the_scrub_finds_rotten_shards_and_they_come_back() {
    let _serial = serial();
    let scrub = [
        ("SWARMBAK_SCRUB_SECS", "0.2"),
        ("SWARMBAK_SCRUB_PERIOD_SECS", "2"),
    ];
    // Two holders: with copies 2 each holds every shard.
    let o = org(0);
    let holders: Vec<std::path::PathBuf> = (0..2)
        .map(|i| {
            let home = o.dir.path().join(format!("holder{i}"));
            init(&home, &format!("holder{i}"), &o.tracker, &o.recovery_pub);
            home
        })
        .collect();
    let agents: Vec<Proc> = holders
        .iter()
        .enumerate()
        .map(|(i, h)| agent_env(h, &format!("holder{i}"), &scrub))
        .collect();
    let tree = o.dir.path().join("tree");
    swarmbak_gentree::office(&tree, 3 << 20, 41).unwrap();
    let (owner, ih) = seed_durable(&o, &tree);
    let owner_agent = agent_env(&owner, "owner", &scrub);
    let shard = |home: &Path, p: usize| store_dir(home, &ih).join("shards").join(p.to_string());
    let meta = inspect_json(&owner, &ih);
    let pieces = meta["pieces"].as_u64().unwrap() as usize;
    let m = meta["swarmbak"]["m"].as_u64().unwrap() as usize;
    let lost = m + 1;
    assert!(pieces > lost, "{meta}");
    let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for("both holders hold every shard", &|| {
        holders.iter().all(|h| held(h, &ih).len() == pieces)
    });
    let original: Vec<Vec<u8>> = (0..pieces)
        .map(|p| fs::read(shard(&owner, p)).unwrap())
        .collect();

    // The rot: holder0's piece 0 overwritten in place, its pieces 1..=m gone (stripe 0 is
    // pieces 0..k+m); the owner's piece 2 overwritten. The two agents are stopped
    // meanwhile, so that no scrub sees the rot half done (a holder that still has k good
    // shards of the stripe rebuilds the others itself).
    let signal = |p: &Proc, sig: &str| {
        let st = std::process::Command::new("kill")
            .args([sig, &p.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    };
    signal(&agents[0], "-STOP");
    signal(&owner_agent, "-STOP");
    let flip = |path: &Path| {
        let mut b = fs::read(path).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0xff;
        fs::write(path, b).unwrap();
    };
    flip(&shard(&holders[0], 0));
    for p in 1..lost {
        fs::remove_file(shard(&holders[0], p)).unwrap();
    }
    flip(&shard(&owner, 2));
    signal(&agents[0], "-CONT");
    signal(&owner_agent, "-CONT");

    let log = |home: &Path| fs::read_to_string(home.join("scrub.log")).unwrap_or_default();
    let found = |home: &Path, piece: usize, what: &[&str]| {
        log(home).lines().any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["infohash"] == ih.as_str()
                && v["piece"] == piece
                && what.iter().any(|w| v["found"] == *w)
        })
    };
    wait_for(
        "holder0's scrub finds its damaged and missing shards",
        &|| {
            found(&holders[0], 0, &["corrupt", "rebuilt"])
                && (1..lost).all(|p| found(&holders[0], p, &["missing", "rebuilt"]))
        },
    );
    wait_for("the owner's scrub rebuilds its damaged shard", &|| {
        found(&owner, 2, &["rebuilt"])
    });
    // Back, with their right bytes: fetched again by the holder, rebuilt by the owner.
    wait_for("the shards come back with their right bytes", &|| {
        (0..lost).all(|p| fs::read(shard(&holders[0], p)).ok().as_ref() == Some(&original[p]))
            && fs::read(shard(&owner, 2)).ok().as_ref() == Some(&original[2])
    });
    // Nothing else was found wanting, anywhere.
    assert_eq!(
        log(&holders[0]).lines().count(),
        lost,
        "{}",
        log(&holders[0])
    );
    assert_eq!(log(&holders[1]), "");
    assert_eq!(log(&owner).lines().count(), 1, "{}", log(&owner));
    // `status` says what the scrub did (once it has gone through every shard at least
    // once: a batch here is a sixth of them).
    let status = || -> serde_json::Value {
        serde_json::from_str(&ok(&holders[0], &["--json", "status"])).unwrap()
    };
    wait_for("a whole pass in status", &|| {
        status()["scrub"]["verified"].as_u64().unwrap_or(0) >= pieces as u64
    });
    let st = status();
    let sc = &st["scrub"];
    let n = |k: &str| sc[k].as_u64().unwrap();
    assert_eq!(
        n("corrupt") + n("missing") + n("rebuilt"),
        lost as u64,
        "{st}"
    );
    assert!(
        n("corrupt") + n("missing") >= 1,
        "nothing given up and fetched again: {st}"
    );
    assert!(sc["last_pass"].as_i64().is_some(), "{st}");
}

/// Repair with no key (swarm.md §18; issue 13 point 8): eight agents hold a durable
/// snapshot (k = 8, m = 4, copies 2); the owner is offline; three agents are lost for
/// good, their homes deleted, among them both holders of some shard index, so nobody
/// has those shards any more. The agents placement now gives that index rebuild it from
/// k shards of each stripe (they have no key of the snapshot), every shard is back to
/// two copies, and a new machine restores byte for byte with the recovery key.
#[test]
fn shards_nobody_holds_are_rebuilt_and_every_shard_is_back_to_its_copies() {
    let _serial = serial();
    let o = org(0);
    let env = [("SWARMBAK_REPAIR_SECS", "3")];
    let mut agents: Vec<(std::path::PathBuf, Option<Proc>)> = (0..8)
        .map(|i| {
            let name = format!("agent{i}");
            let home = new_machine(&o, &name);
            let p = agent_env(&home, &name, &env);
            (home, Some(p))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let tree = o.dir.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    // Incompressible: three stripes of 1 MiB shards.
    fs::write(tree.join("a"), noise(13, 20 << 20)).unwrap();
    let (owner, ih) = seed_durable(&o, &tree);
    let meta = inspect_json(&owner, &ih);
    let pieces = meta["pieces"].as_u64().unwrap() as usize;
    let (k, m) = (
        meta["swarmbak"]["k"].as_u64().unwrap() as usize,
        meta["swarmbak"]["m"].as_u64().unwrap() as usize,
    );
    let n = k + m;
    let stripes = pieces / n;
    assert!(stripes >= 2, "{meta}");
    let held_by: Vec<Vec<usize>> = agents.iter().map(|(h, _)| held(h, &ih)).collect();
    // The shards nobody holds once `lost` are gone.
    let orphans = |lost: &[usize]| -> Vec<usize> {
        (0..pieces)
            .filter(|p| {
                (0..agents.len())
                    .filter(|&a| held_by[a].contains(p))
                    .all(|a| lost.contains(&a))
            })
            .collect()
    };
    // The three agents whose loss leaves the most shards with no holder, every stripe
    // keeping k (holders of a shard index are the same for every stripe, but takeovers
    // during the seed may have added some here and there).
    let mut best: (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    for a in 0..agents.len() {
        for b in a + 1..agents.len() {
            for c in b + 1..agents.len() {
                let gone = orphans(&[a, b, c]);
                let restorable =
                    (0..stripes).all(|s| gone.iter().filter(|&&p| p / n == s).count() <= m);
                if restorable && gone.len() > best.1.len() {
                    best = (vec![a, b, c], gone);
                }
            }
        }
    }
    let (lost_agents, lost_pieces) = best;
    assert!(
        !lost_pieces.is_empty(),
        "no three agents hold a shard alone: {held_by:?}"
    );
    for &a in &lost_agents {
        let (home, p) = &mut agents[a];
        if let Some(mut p) = p.take() {
            p.kill();
        }
        fs::remove_dir_all(home).unwrap();
    }
    let survivors: Vec<&std::path::PathBuf> = agents
        .iter()
        .enumerate()
        .filter(|(a, _)| !lost_agents.contains(a))
        .map(|(_, (h, _))| h)
        .collect();
    let copies = || -> Vec<usize> {
        let mut c = vec![0; pieces];
        for h in &survivors {
            for p in held(h, &ih) {
                c[p] += 1;
            }
        }
        c
    };
    let status = |h: &Path| -> serde_json::Value {
        serde_json::from_str(&ok(h, &["--json", "status"])).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = copies();
        let settled = c.iter().all(|&x| x >= 2)
            && survivors
                .iter()
                .all(|h| status(h)["repair"]["under_way"] == 0);
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not back to 2 copies (pieces {lost_pieces:?} were lost): {c:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Rebuilt, not copied: nobody had them. Each lost shard was rebuilt by some survivor
    // (logged), and no helper shard is left on any disk.
    let mut rebuilt = std::collections::BTreeSet::new();
    for h in &survivors {
        if let Ok(log) = fs::read_to_string(h.join("repair.log")) {
            for line in log.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["infohash"], ih.as_str(), "{v}");
                assert!(v["error"].is_null(), "{v}");
                for p in v["rebuilt"].as_array().unwrap() {
                    rebuilt.insert(p.as_u64().unwrap() as usize);
                }
            }
        }
        let left = fs::read_dir(h.join("store/repair").join(&ih))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "helpers left in {}", h.display());
    }
    for p in &lost_pieces {
        assert!(rebuilt.contains(p), "piece {p} never rebuilt: {rebuilt:?}");
    }
    // The owner is gone too: a new machine restores with the recovery key.
    fs::remove_dir_all(&owner).unwrap();
    let new = new_machine(&o, "new");
    let to = o.dir.path().join("restored");
    fetch_json(&new, &ih, &to, &o.recovery);
    assert_same(&tree, &to.join("tree"));
}
