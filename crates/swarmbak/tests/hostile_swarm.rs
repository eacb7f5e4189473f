//! Issue 11's attacks on the swarm, with real processes on 127.0.0.1: peers that claim
//! to hold what they do not, to be machines they are not, or to belong to an
//! organisation they do not, never make a snapshot durable, never move placement and
//! are never served by an enrolled machine unless the tracker listed them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::procs::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use swarmbak_tracker::{AnnounceRequest, TrackerClient};
use swarmbak_wire::{
    ExtensionHandshake, Frame, Handshake, Limits, MachineMessage, Message, PeerCodec, Reserved,
    SB_MACHINE, UT_METADATA,
};
use tokio_util::codec::Framed;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn ih_bytes(ih: &str) -> [u8; 20] {
    let v = hex::decode(ih).unwrap();
    v.try_into().unwrap()
}

/// What the fake holders saw.
#[derive(Default)]
struct Seen {
    /// Connections whose handshakes completed.
    connections: AtomicUsize,
    /// `unchoke`s received (an enrolled machine must never unchoke a stranger).
    unchoked: AtomicUsize,
    /// Extension handshakes that carried `sb_key` or `sb_owner` (must not: they would
    /// tell a stranger a machine's key and that it owns the snapshot).
    leaked_identity: AtomicUsize,
    /// `sb_machine` answers to a `member` with a made-up MAC (must be none).
    machine_answers: AtomicUsize,
    /// What a machine holds (`bitfield`, `have all`, `have`) or the snapshot's size
    /// (`metadata_size`) told to the fake holder: a stranger must learn neither, a listed
    /// client both (wire.md "Deferred availability").
    availability: AtomicUsize,
}

/// A fake holder: announces with `announce` (a standard client's passkey: how it learns
/// the swarm's addresses) at port 1, then dials every peer twice, as two machines with
/// made-up `sb_key`s that "have all", and keeps the connections open. With `member` it
/// is a stranger: it gives a listening port the tracker never listed and, on two of
/// three connections, opens the `sb_machine` exchange with a MAC it cannot know (the
/// third stays silent); without, it is the listed standard client (`p` 1, the port it
/// announced).
///
/// Half the connections also claim to own the snapshot (`sb_owner`) under `victim`'s
/// key (a real holder's age recipient), the issue's `sb_owner` attack: an enrolled
/// machine ignores `sb_owner` (the owner is the signer of the verified publish record,
/// known before it joins), so the victim still counts.
async fn fake_holders(
    announce: String,
    ih: [u8; 20],
    seen: Arc<Seen>,
    member: bool,
    victim: Vec<u8>,
) {
    let c = TrackerClient::new(&announce).unwrap();
    let mut dialled = std::collections::HashSet::new();
    let mut n = 0u8;
    loop {
        let mut pid = [b'F'; 20];
        pid[..8].copy_from_slice(b"-FAKE01-");
        if let Ok(r) = c
            .announce(&AnnounceRequest::new(ih.into(), pid.into(), 1, 0))
            .await
        {
            for p in r.peers {
                if p.addr.port() == 1 || !dialled.insert(p.addr) {
                    continue;
                }
                for _ in 0..2 {
                    n = n.wrapping_add(1);
                    let mut pid = [b'F'; 20];
                    pid[..8].copy_from_slice(b"-FAKE01-");
                    pid[19] = n;
                    let seen = seen.clone();
                    let addr = p.addr;
                    let victim = victim.clone();
                    tokio::spawn(async move {
                        let _ = fake_connection(addr, ih, pid, n, seen, member, victim).await;
                    });
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn fake_connection(
    addr: std::net::SocketAddr,
    ih: [u8; 20],
    pid: [u8; 20],
    n: u8,
    seen: Arc<Seen>,
    member: bool,
    victim: Vec<u8>,
) -> Option<()> {
    let s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let mut f = Framed::new(s, PeerCodec::new(Limits::default()));
    let mut hs = Handshake::new(ih, pid);
    hs.reserved = Reserved::default()
        .with_fast(true)
        .with_extension_protocol(true);
    f.send(Frame::Handshake(hs)).await.ok()?;
    let Some(Ok(Frame::Handshake(_))) = f.next().await else {
        return None;
    };
    seen.connections.fetch_add(1, Ordering::SeqCst);
    let mut eh = ExtensionHandshake::default();
    eh.extensions.insert(UT_METADATA.into(), 1);
    eh.extensions.insert(SB_MACHINE.into(), 2);
    // Every other connection claims a key of its own; the rest claim the victim's and
    // that they own the snapshot.
    if n.is_multiple_of(2) {
        eh.sb_key = Some(victim);
        eh.sb_owner = true;
    } else {
        eh.sb_key = Some(format!("age1fakeholder{n}").into_bytes());
    }
    // A third of the stranger's connections stay silent (no exchange: kept open until
    // the stranger timeout, so whatever the machine tells them is seen); the others open
    // the exchange with a made-up MAC (and are closed at once).
    let opens = member && !n.is_multiple_of(3);
    eh.sb_nonce = opens.then_some([n; 32]);
    // The stranger gives a listening port no tracker listed (a peer that gives none is
    // matched by its IP alone, and on loopback every honest peer shares it).
    eh.port = Some(if member { 2 } else { 1 });
    f.send(Frame::Message(Message::Extended {
        id: 0,
        payload: Bytes::from(eh.encode()),
    }))
    .await
    .ok()?;
    f.send(Frame::Message(Message::HaveAll)).await.ok()?;
    f.send(Frame::Message(Message::Interested)).await.ok()?;
    let mut their_sb_machine = None;
    while let Some(Ok(m)) = f.next().await {
        match m {
            Frame::Message(Message::Unchoke) => {
                seen.unchoked.fetch_add(1, Ordering::SeqCst);
            }
            Frame::Message(Message::Bitfield(_) | Message::HaveAll | Message::Have(_)) => {
                seen.availability.fetch_add(1, Ordering::SeqCst);
            }
            Frame::Message(Message::Extended { id: 0, payload }) => {
                let theirs = ExtensionHandshake::parse(&payload).ok()?;
                if theirs.sb_key.is_some() || theirs.sb_owner {
                    seen.leaked_identity.fetch_add(1, Ordering::SeqCst);
                }
                if theirs.metadata_size.is_some() {
                    seen.availability.fetch_add(1, Ordering::SeqCst);
                }
                if their_sb_machine.is_some() {
                    // A later handshake (what a served peer is told): no second exchange.
                    continue;
                }
                their_sb_machine = theirs.extension_id(SB_MACHINE);
                if let (true, Some(id)) = (opens, their_sb_machine) {
                    let m = MachineMessage::Member { mac: [n; 32] };
                    f.send(Frame::Message(Message::Extended {
                        id,
                        payload: Bytes::from(m.encode()),
                    }))
                    .await
                    .ok()?;
                }
            }
            Frame::Message(Message::Extended { id: 2, .. }) if their_sb_machine.is_some() => {
                seen.machine_answers.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }
    Some(())
}

/// The held shards of `ih` in `home`'s store.
fn held_all(homes: &[PathBuf], ih: &str, pieces: usize) -> Vec<usize> {
    let mut count = vec![0; pieces];
    for h in homes {
        for p in held(h, ih) {
            if p < pieces {
                count[p] += 1;
            }
        }
    }
    count
}

fn pieces_of(home: &Path, ih: &str) -> usize {
    inspect_json(home, ih)["pieces"].as_u64().unwrap() as usize
}

/// Issue 11's worst finding: strangers with made-up keys that "have all" made `seed
/// --until durable --copies 2` report durable with no copy anywhere. Now only enrolled
/// machines that authenticate count: with no honest agent running, the seed waits; once
/// two honest agents run, it reports durable only when they really hold every shard,
/// and the fake holders never mislead them.
#[test]
fn fake_holders_never_make_a_snapshot_durable() {
    let _serial = serial();
    let Office {
        dir,
        rec_pub,
        t,
        owner,
        tree,
    } = office(6 << 20, 21);
    // The honest agents' homes, made now: the attackers name agent0 the owner.
    let a: Vec<PathBuf> = (0..2).map(|i| member(&dir, &t, &rec_pub, i)).collect();
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a[0].join("config.json")).unwrap()).unwrap();
    let victim = cfg["public_key"].as_str().unwrap().as_bytes().to_vec();
    let started = Instant::now();
    let (mut child, ih) = start_seed(&owner, &tree, "60");
    // The attackers: a standard client the tracker lists, and a stranger that opens
    // sb_machine with a made-up MAC; two connections to every peer each.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listed = Arc::new(Seen::default());
    let stranger = Arc::new(Seen::default());
    rt.spawn(fake_holders(
        t.client_announce("fake-listed"),
        ih_bytes(&ih),
        listed.clone(),
        false,
        victim.clone(),
    ));
    rt.spawn(fake_holders(
        t.client_announce("fake-member"),
        ih_bytes(&ih),
        stranger.clone(),
        true,
        victim,
    ));
    // No honest machine holds anything yet: the seed must still be waiting.
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            let (_, rest) = finish(child);
            panic!(
                "seed exited ({st:?}) after {:.2}s with no honest holder:\n{rest}",
                started.elapsed().as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        listed.connections.load(Ordering::SeqCst) >= 2
            && stranger.connections.load(Ordering::SeqCst) >= 2,
        "the fake holders reached the owner"
    );
    // Two honest agents join: the fake holders reach them too, and name agent0 the
    // owner (were it taken for the owner, it would not count and copies 2 could not be
    // met with two agents).
    let mut procs = Vec::new();
    for (i, h) in a.iter().enumerate() {
        procs.push(agent(h, &format!("agent{i}")));
    }
    let (st, rest) = finish(child);
    assert!(st.success(), "seed: {st:?}\n{rest}");
    assert!(rest.contains("durable"), "{rest}");
    // Durable means durable: at the moment the seed said so, both honest agents held
    // every shard (copies 2 with two agents).
    let pieces = pieces_of(&owner, &ih);
    let count = held_all(&a, &ih, pieces);
    assert!(
        count.iter().all(|&c| c >= 2),
        "durable with copies per shard {count:?}"
    );
    // The enrolled machines told the strangers nothing and served them nothing.
    for (who, s) in [("listed client", &listed), ("stranger", &stranger)] {
        assert_eq!(
            s.leaked_identity.load(Ordering::SeqCst),
            0,
            "{who} was told sb_key/sb_owner"
        );
    }
    assert_eq!(
        stranger.machine_answers.load(Ordering::SeqCst),
        0,
        "a made-up membership MAC got an answer"
    );
    assert_eq!(
        stranger.unchoked.load(Ordering::SeqCst),
        0,
        "a stranger was unchoked"
    );
    eprintln!(
        "told what machines hold or the size: stranger {}, listed client {}",
        stranger.availability.load(Ordering::SeqCst),
        listed.availability.load(Ordering::SeqCst)
    );
    // Nor what they hold, nor how large the snapshot is; the listed client was told.
    assert_eq!(
        stranger.availability.load(Ordering::SeqCst),
        0,
        "a stranger learnt what a machine holds or the snapshot's size"
    );
    assert!(
        listed.availability.load(Ordering::SeqCst) > 0,
        "the listed client was never told what the machines hold"
    );
    drop(procs);
}

/// On an open tracker nothing a peer says can be checked, so `--until durable` (the
/// default) is refused before anything is made: exit 2, and what to do instead.
#[test]
fn a_machine_that_is_not_enrolled_cannot_claim_durable() {
    let dir = tempfile::tempdir().unwrap();
    let rec_pub = swarmbak_format::Identity::generate()
        .to_public()
        .to_string();
    let t = open_tracker(dir.path());
    let home = dir.path().join("m");
    init(&home, "m", &t, &rec_pub);
    let tree = dir.path().join("t");
    swarmbak_gentree::office(&tree, 1 << 20, 4).unwrap();
    let out = run_fast(&home, &["seed", tree.to_str().unwrap(), "--timeout", "5"]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{so}\n{se}");
    assert!(
        se.contains("not enrolled") && se.contains("--until published"),
        "{se}"
    );
    assert!(so.is_empty(), "nothing was made: {so}");
    // `--until published` still works there.
    seed(&home, &[&tree]);
}

/// Other machines' shards never fill a disk by default: a new home gets a quota from its
/// file system's size and free space, and `init` says what it chose.
#[test]
fn a_new_home_gets_a_quota_from_its_disk_and_init_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("m");
    let out = ok(&home, &["init", "--name", "m"]);
    assert!(
        out.contains("quota for other machines' shards:") && out.contains("chosen"),
        "{out}"
    );
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("config.json")).unwrap()).unwrap();
    let q = c["quota"].as_u64().expect("a quota is set");
    let st = rustix::fs::statvfs(dir.path()).unwrap();
    let size = st.f_blocks * st.f_frsize;
    assert!(
        q >= 1 << 30 && q <= (size / 5).max(1 << 30),
        "quota {q} of {size}"
    );
    // An explicit quota is kept as given, and not called chosen.
    let out = ok(&home, &["init", "--quota", "3G"]);
    assert!(!out.contains("chosen"), "{out}");
}

/// A revocation reaches every machine's peer checks: fetched from the tracker, checked
/// against the organisation key, kept in HOME/revocations, and still in force when the
/// tracker is down.
#[test]
fn a_revocation_reaches_the_peer_checks_and_outlives_the_tracker() {
    let dir = tempfile::tempdir().unwrap();
    let rec_pub = swarmbak_format::Identity::generate()
        .to_public()
        .to_string();
    let mut t = tracker(dir.path(), &rec_pub);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    init(&a, "a", &t, &rec_pub);
    init(&b, "b", &t, &rec_pub);
    let b_key = swarmbak_trust::SigningKey::load(&b.join("signing.key"))
        .unwrap()
        .public();
    let node = swarmbak_node::config::Node::open(&a).unwrap();
    let m = swarmbak_node::membership::Membership::of(&node)
        .unwrap()
        .expect("enrolled");
    let tr = node.config.tracker_ref().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let none = rt.block_on(m.refresh(&tr, Duration::from_secs(5))).unwrap();
    assert!(none.is_empty() && !m.identity.is_revoked(&b_key));
    let data = t.data.to_str().unwrap().to_string();
    ok(&t.data, &["tracker", "revoke", "--data", &data, "b"]);
    let new = rt.block_on(m.refresh(&tr, Duration::from_secs(5))).unwrap();
    assert_eq!(new, vec![b_key]);
    assert!(m.identity.is_revoked(&b_key));
    // The tracker goes away: a process started now still refuses b.
    t.kill();
    let again = swarmbak_node::membership::Membership::of(&node)
        .unwrap()
        .unwrap();
    assert!(again.identity.is_revoked(&b_key), "the cached revocation");
    assert!(rt
        .block_on(again.refresh(&tr, Duration::from_secs(2)))
        .is_err());
    assert!(
        again.identity.is_revoked(&b_key),
        "a tracker that is down changes nothing"
    );
}

/// A `seed` running in the background, its stdout read through a buffer (the first line,
/// the infohash, is read already).
struct Seeding {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Seeding {
    fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }
}

/// A private tracker, an enrolled owner machine and its generated tree of `size` bytes.
struct Office {
    dir: tempfile::TempDir,
    rec_pub: String,
    t: Tracker,
    owner: PathBuf,
    tree: PathBuf,
}

/// A machine `agent{i}` of the office, enrolled (its home).
fn member(dir: &tempfile::TempDir, t: &Tracker, rec_pub: &str, i: usize) -> PathBuf {
    let h = dir.path().join(format!("agent{i}"));
    init(&h, &format!("agent{i}"), t, rec_pub);
    h
}

fn office(size: u64, seed: u64) -> Office {
    let dir = tempfile::tempdir().unwrap();
    let rec = swarmbak_format::Identity::generate();
    let rec_pub = rec.to_public().to_string();
    let t = tracker(dir.path(), &rec_pub);
    let owner = dir.path().join("owner");
    init(&owner, "owner", &t, &rec_pub);
    let tree = dir.path().join("laptop");
    swarmbak_gentree::office(&tree, size, seed).unwrap();
    Office {
        dir,
        rec_pub,
        t,
        owner,
        tree,
    }
}

/// Runs `seed` of `tree` in the background (copies 2, at most `timeout` seconds); returns
/// the process and its infohash line.
fn start_seed(home: &Path, tree: &Path, timeout: &str) -> (Seeding, String) {
    let mut seed = Command::new(BIN);
    seed.arg("--home")
        .arg(home)
        .args(["seed", tree.to_str().unwrap()])
        .args(["--copies", "2", "--timeout", timeout])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in FAST {
        seed.env(k, v);
    }
    let mut child = seed.spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut ih = String::new();
    std::io::BufRead::read_line(&mut out, &mut ih).unwrap();
    (Seeding { child, out }, ih.trim().to_string())
}

/// Waits for a seed; returns its status and what it printed after the infohash (stdout,
/// then stderr).
fn finish(mut s: Seeding) -> (std::process::ExitStatus, String) {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s.out, &mut text).unwrap();
    if let Some(mut e) = s.child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut text).unwrap();
    }
    (s.child.wait().unwrap(), text)
}

/// The insider: an enrolled machine, authenticated with a real certificate, that states
/// shards its disk no longer has (here they were overwritten in place while it ran, so
/// it still believes it holds them). Before proofs of possession its `have`s counted:
/// the next backup's `seed --until durable` reported the parent durable with one real
/// copy. Now the checkers (the owner's seed, the other agent) challenge it, it fails,
/// its copies stop counting and are remembered in `possession.log`, the seed waits, and
/// a third machine takes its place.
#[test]
fn an_enrolled_machine_claiming_what_it_lacks_fails_its_proof() {
    let _serial = serial();
    let Office {
        dir,
        rec_pub,
        t,
        owner,
        tree,
    } = office(3 << 20, 33);
    let a: Vec<PathBuf> = (0..2).map(|i| member(&dir, &t, &rec_pub, i)).collect();
    let mut procs = Vec::new();
    for (i, h) in a.iter().enumerate() {
        procs.push(agent(h, &format!("agent{i}")));
    }
    let (first, ih) = start_seed(&owner, &tree, "60");
    let (st, text) = finish(first);
    assert!(st.success(), "first seed: {st:?}\n{text}");
    let pieces = pieces_of(&owner, &ih);
    assert!(held_all(&a, &ih, pieces).iter().all(|&c| c == 2));
    // agent0's disk loses the snapshot's shards while agent0 runs (same sizes, zeros).
    let shards = a[0].join("store/snapshots").join(&ih).join("shards");
    let mut overwritten = 0;
    for e in std::fs::read_dir(&shards).unwrap() {
        let p = e.unwrap().path();
        let len = std::fs::metadata(&p).unwrap().len() as usize;
        std::fs::write(&p, vec![0u8; len]).unwrap();
        overwritten += 1;
    }
    assert_eq!(overwritten, pieces);
    // The next backup builds on the first: durable needs the first durable too.
    std::fs::write(tree.join("new-today.txt"), b"one more file\n").unwrap();
    let (mut second, ih2) = start_seed(&owner, &tree, "90");
    assert_ne!(ih2, ih);
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        if let Some(st) = second.try_wait().unwrap() {
            let (_, text) = finish(second);
            panic!(
                "the second seed exited ({st:?}) counting a holder that lost its shards:\n{text}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A third machine joins and takes agent0's place: now the chain is durable.
    let third = member(&dir, &t, &rec_pub, 2);
    procs.push(agent(&third, "agent2"));
    let (st, text) = finish(second);
    let good = [a[1].clone(), third];
    assert!(
        st.success(),
        "second seed: {st:?}\n{text}\nshards of the first snapshot on agent1 and agent2: {:?}",
        held_all(&good, &ih, pieces)
    );
    assert!(
        text.contains("failed a proof of possession"),
        "the seed says who failed:\n{text}"
    );
    let count = held_all(&good, &ih, pieces);
    assert!(
        count.iter().all(|&c| c == 2),
        "copies of the first snapshot on honest disks: {count:?}"
    );
    // Remembered: the owner's possession.log has the failure.
    let log = std::fs::read_to_string(owner.join("possession.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"result\":0") && l.contains(&ih)),
        "{log}"
    );
    assert!(log.lines().any(|l| l.contains("\"result\":1")), "{log}");
    drop(procs);
}
