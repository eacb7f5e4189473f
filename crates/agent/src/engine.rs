//! The engine: a listening socket, the torrents this machine takes part in, their
//! announces and connections, and the choker.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use swarmbak_core::MachineKey;
use swarmbak_format::InfoHash;
use swarmbak_tracker::{AnnounceEvent, AnnounceRequest, TrackerClient};
use swarmbak_wire::{
    new_connection_stays, ChokeDecision, Choker, ChokerConfig, Frame, Handshake, Limits, PeerCodec,
    PeerStats,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::cache::PieceCache;
use crate::io::PeerIo;
use crate::peer::{self, Conn, Control, End};
use crate::torrent::{PeerKey, RepairSettings, Torrent};

#[derive(Clone)]
pub struct EngineConfig {
    pub listen: SocketAddr,
    /// This machine's placement key (its age recipient; sent as `sb_key` when not
    /// enrolled). `None` for processes that are not holders (fetch, health): they never
    /// move placement.
    pub machine_key: Option<MachineKey>,
    /// The machine's membership, when enrolled: peers then authenticate with
    /// `sb_machine` to count, and only members and listed peers are served.
    pub identity: Option<Arc<crate::auth::Identity>>,
    /// How long the next machine in line waits before taking over a shard (swarm.md §3.1).
    pub takeover_grace: Duration,
    /// The clock takeovers are measured with.
    pub clock: Arc<dyn swarmbak_core::Clock>,
    pub tracker: Option<TrackerClient>,
    /// Peer-only trackers (`init --peer-tracker`, swarm.md §5.1.1): announced to as well, for
    /// peers only; the peers they list are dialled but never count as listed by the
    /// company tracker (an enrolled machine serves them only once they authenticate).
    pub peer_trackers: Vec<TrackerClient>,
    /// Announce at least this often (the tracker's interval permitting less).
    pub announce_every: Duration,
    /// Print connection events to stderr.
    pub verbose: bool,
    /// Where an enrolled engine records the proofs of possession it checked
    /// (`HOME/possession.log`; swarm.md §14); `None`: in memory only.
    pub possession_log: Option<std::path::PathBuf>,
    /// Repair with no key (swarm.md §18): the grace, the rate and the log; `None`: this
    /// engine never repairs (fetch, health).
    pub repair: Option<RepairSettings>,
}

impl EngineConfig {
    /// An engine listening on `listen` with nothing else: not enrolled, no tracker, the
    /// default takeover grace (30 s) and announce period (30 s), the system clock.
    pub fn new(listen: SocketAddr, machine_key: Option<MachineKey>) -> EngineConfig {
        EngineConfig {
            listen,
            machine_key,
            identity: None,
            takeover_grace: Duration::from_secs(30),
            clock: Arc::new(swarmbak_core::SystemClock),
            tracker: None,
            peer_trackers: Vec::new(),
            announce_every: Duration::from_secs(30),
            verbose: false,
            possession_log: None,
            repair: None,
        }
    }
}

/// Most peer connections an engine keeps at once (both directions, handshakes under way
/// included); more are closed at once (wire.md "Limits").
pub const MAX_CONNECTIONS: usize = 512;
/// Most peer connections from or to one IP address.
pub const MAX_CONNECTIONS_PER_IP: usize = 64;

/// Connection slots: a connection holds one from before its handshake until it ends.
#[derive(Default)]
struct Slots {
    per_ip: Mutex<HashMap<std::net::IpAddr, usize>>,
}

/// A connection's slot, given back when dropped.
struct Slot {
    slots: Arc<Slots>,
    ip: std::net::IpAddr,
}

impl Slots {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<Slot> {
        let mut g = lock(&self.per_ip);
        let total: usize = g.values().sum();
        let here = g.get(&ip).copied().unwrap_or(0);
        if total >= MAX_CONNECTIONS || here >= MAX_CONNECTIONS_PER_IP {
            return None;
        }
        g.insert(ip, here + 1);
        Some(Slot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = lock(&self.slots.per_ip);
        if let Some(n) = g.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                g.remove(&self.ip);
            }
        }
    }
}

/// How often received shards are flushed and then announced.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

struct Entry {
    torrent: Arc<Torrent>,
    choker: Choker<PeerKey>,
    /// Bytes counted at the last choker round, for rates.
    last: HashMap<PeerKey, (u64, u64)>,
}

impl Entry {
    /// What the choker needs of each connected peer: interest, and bytes each way since
    /// the last round.
    fn stats(&self) -> Vec<PeerStats<PeerKey>> {
        let inner = self.torrent.inner();
        inner
            .peers
            .iter()
            .map(|(k, v)| {
                let (d0, u0) = self
                    .last
                    .get(k)
                    .copied()
                    .unwrap_or((v.downloaded, v.uploaded));
                PeerStats {
                    key: *k,
                    // A peer we do not serve is never unchoked.
                    interested: v.interested && v.servable,
                    download_rate: v.downloaded.saturating_sub(d0),
                    upload_rate: v.uploaded.saturating_sub(u0),
                    snubbed: v.snubbed,
                }
            })
            .collect()
    }
}

/// A live connection.
struct ConnEntry {
    ih: InfoHash,
    /// The remote address (for an accepted connection, the peer's ephemeral port).
    addr: SocketAddr,
    tx: mpsc::UnboundedSender<Control>,
    /// The peer's id, once its handshake was read and the connection admitted.
    peer_id: Option<[u8; 20]>,
    /// We dialled it.
    outgoing: bool,
}

impl ConnEntry {
    fn new(
        ih: InfoHash,
        addr: SocketAddr,
        tx: mpsc::UnboundedSender<Control>,
        outgoing: bool,
    ) -> ConnEntry {
        ConnEntry {
            ih,
            addr,
            tx,
            peer_id: None,
            outgoing,
        }
    }
}

struct Inner {
    cfg: EngineConfig,
    local: SocketAddr,
    peer_id: [u8; 20],
    next_key: AtomicU64,
    torrents: Mutex<HashMap<InfoHash, Entry>>,
    /// Connections by (torrent, remote address), and each one's control channel.
    conns: Mutex<HashMap<PeerKey, ConnEntry>>,
    /// Poked by a connection whose peer became interested: free unchoke slots are
    /// given at once rather than at the next round.
    interest: Arc<tokio::sync::Notify>,
    /// Pieces read from disk to serve peers.
    cache: Arc<PieceCache>,
    /// The quota announced to the tracker (tracker.md §1 `quota`), once the agent sets it.
    announced_quota: std::sync::OnceLock<u64>,
    /// Connection slots (caps in total and per address).
    slots: Arc<Slots>,
    /// Enrolled: what this process believes each authenticated holder holds.
    proofs: Option<crate::torrent::Proofs>,
    /// The roster's machines, for every torrent's placement (swarm.md §3.1).
    present: Arc<crate::torrent::Present>,
    /// What repairs may still download (swarm.md §18).
    repair_budget: Mutex<RepairBudget>,
}

/// Most stripes an engine repairs at once (each keeps up to k helper shards on disk).
pub const MAX_REPAIRS: usize = 16;

/// A token bucket over the bytes repairs download (swarm.md §18): it fills at the repair
/// rate, holds at most one second of it, and a repair is admitted while it is not in
/// debt (the repair then takes its whole cost: k shards), so over time repairs download
/// at most the rate, and a stripe larger than one second of it is not held back for
/// ever.
#[derive(Debug)]
pub struct RepairBudget {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RepairBudget {
    pub fn new(rate: u64, now: Instant) -> RepairBudget {
        RepairBudget {
            rate: rate as f64,
            tokens: rate as f64,
            last: now,
        }
    }

    /// Takes `cost` bytes if the bucket is not in debt.
    pub fn take(&mut self, cost: u64, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        if self.tokens < 0.0 {
            return false;
        }
        self.tokens -= cost as f64;
        true
    }
}

/// A running engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine(Arc<Inner>);

/// An engine held without keeping it alive ([`Engine::downgrade`]).
#[derive(Clone)]
pub struct WeakEngine(std::sync::Weak<Inner>);

impl WeakEngine {
    /// The engine, while it runs.
    pub fn upgrade(&self) -> Option<Engine> {
        self.0.upgrade().map(Engine)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh peer id: swarmbak's client prefix and 12 random bytes.
pub fn new_peer_id() -> [u8; 20] {
    swarmbak_core::PeerId::swarmbak(rand::random()).0
}

impl Engine {
    /// Gives the tracker this machine's quota in every announce from now on (the
    /// administrator sees it; tracker.md §1). Set once.
    pub fn announce_quota(&self, bytes: u64) {
        let _ = self.0.announced_quota.set(bytes);
    }

    /// Binds the listening socket and starts accepting and choking.
    pub async fn start(cfg: EngineConfig) -> std::io::Result<Engine> {
        let listener = TcpListener::bind(cfg.listen).await?;
        let local = listener.local_addr()?;
        let e = Engine(Arc::new(Inner {
            local,
            peer_id: new_peer_id(),
            next_key: AtomicU64::new(1),
            torrents: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            interest: Arc::new(tokio::sync::Notify::new()),
            cache: Arc::new(PieceCache::default()),
            announced_quota: std::sync::OnceLock::new(),
            slots: Arc::default(),
            present: Arc::default(),
            repair_budget: Mutex::new(RepairBudget::new(
                cfg.repair.as_ref().map_or(0, |r| r.rate),
                Instant::now(),
            )),
            proofs: cfg.identity.clone().map(|identity| crate::torrent::Proofs {
                possession: crate::possession::Possession::new(
                    cfg.clock.clone(),
                    cfg.possession_log.clone(),
                ),
                identity,
            }),
            cfg,
        }));
        let acc = e.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((s, addr)) => {
                        let e = acc.clone();
                        tokio::spawn(async move { e.accept(s, addr).await });
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let ch = e.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(1));
            let interest = ch.0.interest.clone();
            loop {
                tokio::select! {
                    _ = t.tick() => ch.choke_round(),
                    _ = interest.notified() => ch.fill_slots(),
                }
            }
        });
        // Shards this machine holds for others are flushed in batches (every second: one
        // syncfs for what each torrent wrote) and only then announced and counted
        // (swarm.md §13). A fetch's shards are a staging copy, restored right away: they
        // are neither flushed nor held back.
        let sy = e.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(FLUSH_EVERY);
            let mut failing = false;
            loop {
                t.tick().await;
                sy.0.cache.expire();
                let ts = sy.torrents();
                let flushed = tokio::task::spawn_blocking(move || {
                    ts.iter()
                        .map(|t| t.flush_pending().map_err(|e| format!("{}: {e}", t.ih)))
                        .collect::<Result<Vec<_>, String>>()
                })
                .await;
                match flushed {
                    Ok(Ok(_)) => failing = false,
                    // Said once while it lasts; the pieces stay unannounced and are
                    // flushed again at the next tick.
                    Ok(Err(e)) if !failing => {
                        failing = true;
                        eprintln!("swarmbak: cannot flush received shards to disk (they are not announced until they are): {e}");
                    }
                    Ok(Err(_)) => {}
                    Err(e) => eprintln!("swarmbak: the shard flush stopped: {e}"),
                }
            }
        });
        Ok(e)
    }

    /// A handle that does not keep the engine alive.
    pub fn downgrade(&self) -> WeakEngine {
        WeakEngine(Arc::downgrade(&self.0))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.0.local
    }

    pub fn machine_key(&self) -> Option<&MachineKey> {
        self.0.cfg.machine_key.as_ref()
    }

    pub fn torrent(&self, ih: &InfoHash) -> Option<Arc<Torrent>> {
        lock(&self.0.torrents).get(ih).map(|e| e.torrent.clone())
    }

    pub fn torrents(&self) -> Vec<Arc<Torrent>> {
        lock(&self.0.torrents)
            .values()
            .map(|e| e.torrent.clone())
            .collect()
    }

    /// Takes part in a torrent: announces it (when a tracker is configured) and connects
    /// to its peers.
    pub fn add(&self, t: Arc<Torrent>) {
        let ih = t.ih;
        t.set_takeover(self.0.cfg.takeover_grace, self.0.cfg.clock.clone());
        t.set_present(self.0.present.clone());
        if let Some(r) = &self.0.cfg.repair {
            t.set_repair(r.clone());
        }
        if let Some(p) = &self.0.proofs {
            t.set_proofs(p.clone());
        }
        {
            let mut g = lock(&self.0.torrents);
            if g.contains_key(&ih) {
                return;
            }
            // An office LAN: more regular slots and quicker rechokes than on the
            // Internet, so a new machine gets data within seconds.
            let cfg = ChokerConfig {
                unchoke_slots: 8,
                rechoke_interval: Duration::from_secs(2),
                seed: rand::random(),
                ..ChokerConfig::default()
            };
            g.insert(
                ih,
                Entry {
                    torrent: t,
                    choker: Choker::new(cfg),
                    last: HashMap::new(),
                },
            );
        }
        if let Some(tr) = self.0.cfg.tracker.clone() {
            let e = self.clone();
            tokio::spawn(async move { e.announce_loop(tr, ih, true).await });
        }
        for tr in self.0.cfg.peer_trackers.clone() {
            let e = self.clone();
            tokio::spawn(async move { e.announce_loop(tr, ih, false).await });
        }
    }

    /// Scrubs shard `piece` of `t`, one of the engine's torrents
    /// ([`Torrent::scrub_piece`]). A shard given up or rebuilt leaves no cached copy
    /// behind.
    pub fn scrub_piece(
        &self,
        t: &Torrent,
        piece: u32,
    ) -> Result<crate::torrent::Scrubbed, crate::TorrentError> {
        let r = t.scrub_piece(piece);
        if !matches!(
            r,
            Ok(crate::torrent::Scrubbed::Good | crate::torrent::Scrubbed::NotHeld)
        ) {
            self.0.cache.forget(&t.ih);
        }
        r
    }

    /// The machines the company tracker's roster lists now (verified; `None`: no
    /// roster): every torrent places with them as well as with its connected machines
    /// (swarm.md §3.1), from its next look at what it wants on.
    pub fn set_present(&self, roster: Option<Vec<swarmbak_core::placement::Candidate>>) {
        self.0.present.set(roster);
        for t in self.torrents() {
            t.wanted_is_stale();
        }
    }

    /// Leaves a torrent: closes its connections and stops announcing it.
    pub fn remove(&self, ih: &InfoHash) {
        lock(&self.0.torrents).remove(ih);
        self.0.cache.forget(ih);
        for c in lock(&self.0.conns).values() {
            if c.ih == *ih {
                let _ = c.tx.send(Control::Close);
            }
        }
    }

    /// Announces `ih` to `tr` until the torrent is left. `company`: the company tracker
    /// (its answer is the list of peers an enrolled machine serves unauthenticated, and it
    /// is told our machine key and quota); else a peer-only tracker, told only what any
    /// BitTorrent client tells one.
    async fn announce_loop(&self, tr: TrackerClient, ih: InfoHash, company: bool) {
        let mut event = Some(AnnounceEvent::Started);
        loop {
            let Some(t) = self.torrent(&ih) else {
                // Left the torrent: say so, once, without retrying.
                let mut req = AnnounceRequest::new(
                    ih,
                    swarmbak_tracker::PeerId(self.0.peer_id),
                    self.0.local.port(),
                    0,
                );
                req.event = Some(AnnounceEvent::Stopped);
                let _ = tokio::time::timeout(Duration::from_secs(2), tr.announce(&req)).await;
                return;
            };
            let have = t.have();
            let left = (0..t.num_pieces())
                .filter(|&p| !have.get(p))
                .map(|p| t.piece_size(p) as u64)
                .sum::<u64>();
            let (up, down) = {
                let g = t.inner();
                g.peers
                    .values()
                    .fold((0, 0), |a, p| (a.0 + p.uploaded, a.1 + p.downloaded))
            };
            let mut req = AnnounceRequest::new(
                ih,
                swarmbak_tracker::PeerId(self.0.peer_id),
                self.0.local.port(),
                left,
            );
            req.event = event;
            req.uploaded = up;
            req.downloaded = down;
            if company {
                req.machine = self.0.cfg.machine_key.as_ref().map(MachineKey::to_hex);
                req.quota = self.0.announced_quota.get().copied();
            }
            req.numwant = Some(200);
            let mut wait = self.0.cfg.announce_every;
            match tokio::time::timeout(Duration::from_secs(20), tr.announce(&req)).await {
                Ok(Ok(resp)) => {
                    event = None;
                    if company {
                        t.set_listed(resp.peers.iter().map(|p| p.addr));
                    }
                    for p in resp.peers {
                        self.dial(ih, p.addr, company);
                    }
                    wait = wait.min(resp.interval.max(Duration::from_millis(200)));
                }
                Ok(Err(e)) => {
                    if self.0.cfg.verbose {
                        eprintln!("swarmbak: announce {ih}: {e}");
                    }
                }
                Err(_) => {}
            }
            tokio::time::sleep(wait).await;
        }
    }

    fn is_self(&self, addr: SocketAddr) -> bool {
        addr.port() == self.0.local.port()
            && (addr.ip() == self.0.local.ip()
                || addr.ip().is_loopback()
                || self.0.local.ip().is_unspecified())
    }

    /// Connects to a peer of a torrent unless already connected or banned (an address
    /// the company tracker or the user gave: listed, wire.md "Authenticated peers").
    pub fn connect(&self, ih: InfoHash, addr: SocketAddr) {
        self.dial(ih, addr, true)
    }

    /// Connects to a peer; `vouched`: the company tracker or the user gave its address
    /// (an enrolled machine serves it as listed), else a peer-only tracker did (served
    /// only once it authenticates).
    fn dial(&self, ih: InfoHash, addr: SocketAddr, vouched: bool) {
        if self.is_self(addr) {
            return;
        }
        let Some(t) = self.torrent(&ih) else { return };
        if t.inner().banned_addrs.contains(&addr) {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let key = self.0.next_key.fetch_add(1, Ordering::Relaxed);
        {
            let mut c = lock(&self.0.conns);
            if c.values().any(|c| c.ih == ih && c.addr == addr) {
                return;
            }
            c.insert(key, ConnEntry::new(ih, addr, tx, true));
        }
        let Some(slot) = self.0.slots.take(addr.ip()) else {
            lock(&self.0.conns).remove(&key);
            return;
        };
        let mut conn = self.conn(key, addr, t, rx, true);
        conn.vouched = vouched;
        let e = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let end = match peer::dial(&conn).await {
                Ok((io, theirs)) if e.admit(key, ih, theirs.peer_id) => {
                    peer::accepted(conn, io, theirs).await
                }
                Ok(_) => End::Closed(
                    "not admitted: a second connection to the same peer, or banned".into(),
                ),
                Err(end) => end,
            };
            e.ended(key, ih, addr, end);
        });
    }

    fn conn(
        &self,
        key: PeerKey,
        addr: SocketAddr,
        torrent: Arc<Torrent>,
        control: mpsc::UnboundedReceiver<Control>,
        outgoing: bool,
    ) -> Conn {
        Conn {
            key,
            addr,
            torrent,
            peer_id: self.0.peer_id,
            listen_port: self.0.local.port(),
            control,
            interest: self.0.interest.clone(),
            cache: self.0.cache.clone(),
            route: self.route(),
            outgoing,
            vouched: outgoing,
            identity: self.0.cfg.identity.clone(),
        }
    }

    /// The organisation revoked these machines: connections they authenticated are
    /// closed at once, in every torrent (their certificates are refused from now on by
    /// [`crate::auth::Identity`]).
    pub fn revoke(&self, keys: &[swarmbak_trust::PublicKey]) {
        if keys.is_empty() {
            return;
        }
        let mut close = Vec::new();
        for t in self.torrents() {
            let g = t.inner();
            close.extend(
                g.peers
                    .iter()
                    .filter(|(_, v)| v.member.is_some_and(|m| keys.contains(&m)))
                    .map(|(k, _)| *k),
            );
        }
        let c = lock(&self.0.conns);
        for k in close {
            if let Some(e) = c.get(&k) {
                let _ = e.tx.send(Control::Close);
            }
        }
    }

    /// Sends orders to connections by key (a connection's endgame cancels reach the
    /// others through it). Holds the engine weakly: connections do not keep it alive.
    fn route(&self) -> peer::Route {
        let weak = Arc::downgrade(&self.0);
        Arc::new(move |key, order| {
            if let Some(inner) = weak.upgrade() {
                if let Some(c) = lock(&inner.conns).get(&key) {
                    let _ = c.tx.send(order);
                }
            }
        })
    }

    /// Admits connection `key` to a peer that sent `peer_id`, unless it is a second
    /// connection to a peer already connected for this torrent (both dialled each other,
    /// having learnt of each other from the tracker). Of two, the one dialled by the side
    /// with the smaller peer id stays, so both sides keep the same one; the other is
    /// closed (the old one, by its control channel, or the new one: `false`). A peer id
    /// banned from the torrent is not admitted.
    fn admit(&self, key: PeerKey, ih: InfoHash, peer_id: [u8; 20]) -> bool {
        let banned = self
            .torrent(&ih)
            .is_none_or(|t| t.inner().banned_ids.contains(&peer_id));
        if banned {
            return false;
        }
        let mut c = lock(&self.0.conns);
        let Some(outgoing) = c.get(&key).map(|e| e.outgoing) else {
            return false;
        };
        let other = c
            .iter()
            .find(|(k, e)| **k != key && e.ih == ih && e.peer_id == Some(peer_id))
            .map(|(k, e)| (*k, e.outgoing));
        if let Some((old, old_outgoing)) = other {
            if !new_connection_stays(&self.0.peer_id, &peer_id, outgoing, old_outgoing) {
                return false;
            }
            if let Some(e) = c.get_mut(&old) {
                e.peer_id = None;
                let _ = e.tx.send(Control::Close);
            }
        }
        if let Some(e) = c.get_mut(&key) {
            e.peer_id = Some(peer_id);
        }
        true
    }

    fn ended(&self, key: PeerKey, ih: InfoHash, addr: SocketAddr, end: End) {
        lock(&self.0.conns).remove(&key);
        if self.0.cfg.verbose {
            eprintln!("swarmbak: peer {addr} ({ih}): {end:?}");
        }
    }

    async fn accept(&self, s: TcpStream, addr: SocketAddr) {
        // Over the caps: closed before anything is read or allocated for it.
        let Some(_slot) = self.0.slots.take(addr.ip()) else {
            return;
        };
        let _ = s.set_nodelay(true);
        let mut framed = PeerIo::new(s, PeerCodec::new(Limits::default()));
        let theirs = match tokio::time::timeout(Duration::from_secs(10), framed.next()).await {
            Ok(Some(Ok(Frame::Handshake(h)))) => h,
            _ => return,
        };
        let ih = InfoHash(theirs.info_hash);
        let Some(t) = self.torrent(&ih) else { return };
        if theirs.peer_id == self.0.peer_id || t.inner().banned_addrs.contains(&addr) {
            return;
        }
        *framed.codec_mut().limits_mut() = Limits::for_pieces(t.num_pieces());
        let mut hs = Handshake::new(ih.0, self.0.peer_id);
        hs.reserved = peer::reserved();
        if framed.send(Frame::Handshake(hs)).await.is_err() {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let key = self.0.next_key.fetch_add(1, Ordering::Relaxed);
        lock(&self.0.conns).insert(key, ConnEntry::new(ih, addr, tx, false));
        if !self.admit(key, ih, theirs.peer_id) {
            lock(&self.0.conns).remove(&key);
            return;
        }
        let conn = self.conn(key, addr, t, rx, false);
        let end = peer::accepted(conn, framed, theirs).await;
        self.ended(key, ih, addr, end);
    }

    /// One round of the choker for every torrent (rates over the last second); also lets
    /// replicating torrents re-evaluate placement (takeovers are time-based).
    fn choke_round(&self) {
        let now = Instant::now();
        for t in self.torrents() {
            if matches!(t.inner().role, crate::torrent::Role::Replicate { .. }) {
                t.update_wanted();
            }
        }
        self.repair_round();
        let mut decisions: Vec<(PeerKey, ChokeDecision)> = Vec::new();
        {
            let mut g = lock(&self.0.torrents);
            for e in g.values_mut() {
                let seeding = e.torrent.inner().picker.is_complete() || {
                    let inner = e.torrent.inner();
                    (0..inner.picker.num_pieces()).all(|p| !inner.picker.is_wanted(p))
                };
                e.choker.set_seeding(seeding);
                let stats = e.stats();
                e.last = e
                    .torrent
                    .inner()
                    .peers
                    .iter()
                    .map(|(k, v)| (*k, (v.downloaded, v.uploaded)))
                    .collect();
                decisions.extend(e.choker.tick(now, &stats));
            }
        }
        self.send_decisions(decisions);
    }

    /// Repairs (swarm.md §18): moves those under way on, then admits the stripes due,
    /// fewest spare shards first across every snapshot, while the budget and
    /// [`MAX_REPAIRS`] allow.
    fn repair_round(&self) {
        if self.0.cfg.repair.is_none() {
            return;
        }
        let mut due = Vec::new();
        let mut under_way = 0;
        for t in self.torrents() {
            t.advance_repairs();
            under_way += t.repairs_under_way();
            due.extend(t.repairs_due().into_iter().map(|d| (d, t.clone())));
        }
        due.sort_by_key(|(d, t)| (d.spare, t.ih, d.stripe));
        let now = Instant::now();
        for (d, t) in due {
            if under_way >= MAX_REPAIRS {
                break;
            }
            let l = t.layout();
            let cost = (l.k * l.shard_size) as u64;
            if !lock(&self.0.repair_budget).take(cost, now) {
                break;
            }
            t.start_repair(d.stripe);
            under_way += 1;
        }
    }

    /// Stripes being repaired and shards rebuilt by repair (this process), over every
    /// snapshot.
    pub fn repairs(&self) -> (usize, u64) {
        self.torrents().iter().fold((0, 0), |(u, r), t| {
            (
                u + t.repairs_under_way(),
                r + t.repaired.load(Ordering::Relaxed),
            )
        })
    }

    /// Between rounds: free unchoke slots go to newly interested peers at once (rates
    /// since the last round rank them; the round's bookkeeping is left alone).
    fn fill_slots(&self) {
        let now = Instant::now();
        let mut decisions: Vec<(PeerKey, ChokeDecision)> = Vec::new();
        {
            let mut g = lock(&self.0.torrents);
            for e in g.values_mut() {
                let stats = e.stats();
                decisions.extend(e.choker.fill(now, &stats));
            }
        }
        self.send_decisions(decisions);
    }

    fn send_decisions(&self, decisions: Vec<(PeerKey, ChokeDecision)>) {
        let c = lock(&self.0.conns);
        for (k, d) in decisions {
            if let Some(e) = c.get(&k) {
                let _ = e.tx.send(match d {
                    ChokeDecision::Choke => Control::Choke,
                    ChokeDecision::Unchoke => Control::Unchoke,
                });
            }
        }
    }

    /// Connected peers per torrent (for status).
    pub fn connections(&self) -> HashSet<(InfoHash, SocketAddr)> {
        lock(&self.0.conns)
            .values()
            .map(|c| (c.ih, c.addr))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Repairs download at most the repair rate over time (swarm.md §18): a stripe is
    /// admitted while the bucket is not in debt and takes its whole cost, so one larger
    /// than a second of the rate still goes, and the next waits until the debt is paid.
    #[test]
    fn the_repair_budget_holds_repairs_to_its_rate() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // 10 MB/s; stripes of 8 MB (k = 8 shards of 1 MB).
        let mut b = RepairBudget::new(10_000_000, t0);
        assert!(b.take(8_000_000, t0));
        assert!(b.take(8_000_000, t0), "2 MB left: not in debt");
        assert!(!b.take(8_000_000, t0), "6 MB in debt");
        assert!(!b.take(8_000_000, t0 + ms(500)), "1 MB in debt");
        assert!(b.take(8_000_000, t0 + ms(600)));
        // Over 10 s, about 100 MB worth: 12 or 13 stripes, never more.
        let mut b = RepairBudget::new(10_000_000, t0);
        let admitted = (0..=1000)
            .filter(|i| b.take(8_000_000, t0 + ms(10 * i)))
            .count();
        assert!((12..=14).contains(&admitted), "{admitted}");
        // Idle time banks at most one second of the rate.
        let mut b = RepairBudget::new(10_000_000, t0);
        let later = t0 + Duration::from_secs(3600);
        assert!(b.take(8_000_000, later));
        assert!(b.take(8_000_000, later));
        assert!(!b.take(8_000_000, later));
    }
}
