//! One snapshot's swarm state on this machine: what we have, what we want, who has what.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use sha1::{Digest, Sha1};
use swarmbak_core::placement::{self, HolderSets};
use swarmbak_core::repair;
use swarmbak_core::{Clock, MachineKey, SystemClock};
use swarmbak_format::restore::SnapshotMeta;
use swarmbak_format::{InfoHash, Layout, Store};
use swarmbak_wire::{Bitfield, PiecePicker};
use tokio::sync::broadcast;

/// Why a snapshot could not be opened, or a piece not stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TorrentError {
    #[error(transparent)]
    Store(#[from] swarmbak_format::FormatError),
    #[error("not valid metainfo: {0}")]
    Metainfo(#[from] swarmbak_metainfo::MetainfoError),
    #[error("the metainfo stored for {0} has another infohash")]
    Mismatch(InfoHash),
    #[error(transparent)]
    Picker(#[from] swarmbak_wire::PickerError),
    /// A shard matched its SHA-1 but not its Merkle root: the owner wrote a wrong torrent.
    #[error("snapshot {0} is inconsistent: shard {1} matches its SHA-1 but not its Merkle root; the snapshot was made wrongly and nothing of it is kept")]
    Inconsistent(InfoHash, u32),
}

/// A block that does not belong where a peer put it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    #[error("block at {offset} (+{len}) does not fit piece {piece}")]
    Misfit { piece: u32, offset: u32, len: usize },
    #[error("piece {0} completed with blocks missing")]
    Incomplete(u32),
}

/// What the scrub of one shard found (swarm.md §17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scrubbed {
    /// Not ours (never had, or already given up): nothing to check.
    NotHeld,
    /// On disk, the right size, its SHA-1 and (format 2) Merkle root match.
    Good,
    /// Damaged (or missing) and rebuilt in place from k good shards of its stripe on this
    /// disk (an owner holds every shard of its snapshots): no key needed.
    Rebuilt,
    /// Its file is gone: given up, wanted again when assigned.
    Missing,
    /// Its bytes no longer match: given up (the file removed), wanted again when assigned.
    Corrupt,
}

/// A connection's key (unique per engine).
pub type PeerKey = u64;

/// A block's SHA-1 and the connection that sent it.
pub type BlockSender = ([u8; 20], Option<PeerKey>);

/// A storage budget for other machines' shards, shared by the torrents that draw on it.
#[derive(Debug)]
pub struct Quota {
    pub limit: u64,
    pub used: std::sync::atomic::AtomicU64,
}

impl Quota {
    pub fn new(limit: u64, used: u64) -> Arc<Quota> {
        Arc::new(Quota {
            limit,
            used: std::sync::atomic::AtomicU64::new(used),
        })
    }
    pub fn full(&self) -> bool {
        self.used.load(std::sync::atomic::Ordering::Relaxed) >= self.limit
    }

    /// Gives back `bytes` no longer held (let go, or given up by the scrub).
    pub fn release(&self, bytes: u64) {
        let _ = self.used.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |u| Some(u.saturating_sub(bytes)),
        );
    }
}

/// What this machine does with a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Our own snapshot, or one we hold: serve what we have, want nothing.
    Seed,
    /// Restore: want any k verified shards of every stripe, then stop.
    Fetch,
    /// Hold other machines' shards: want the shards placement assigns to us.
    Replicate {
        /// Target number of distinct holders other than the owner.
        copies: usize,
    },
}

/// What we know of one connected peer.
#[derive(Clone, Debug)]
pub struct PeerView {
    pub addr: SocketAddr,
    /// The peer's placement key: from its certificate once it authenticated as a
    /// holder (an enrolled machine), or its BEP 10 `sb_key` (not enrolled: an open
    /// tracker). Only peers with one count as holders and take part in placement.
    pub machine: Option<MachineKey>,
    /// The signing key the peer authenticated with (`sb_machine`), if it did.
    pub member: Option<swarmbak_trust::PublicKey>,
    /// The failure domain its certificate names (swarm.md §3.1), if it authenticated.
    pub domain: Option<Arc<str>>,
    /// We serve the peer (unchoke it, answer its metadata requests): it authenticated,
    /// the tracker listed it, or we are not enrolled.
    pub servable: bool,
    pub has: Bitfield,
    pub interested: bool,
    pub downloaded: u64,
    pub uploaded: u64,
    /// No block from it for the request timeout while our requests were outstanding
    /// (wire.md, "State machine"); the choker gives it only the optimistic slot.
    pub snubbed: bool,
}

pub struct Inner {
    pub role: Role,
    pub picker: PiecePicker<PeerKey>,
    pub peers: HashMap<PeerKey, PeerView>,
    /// Pieces being assembled: their blocks as received (slices of the connection's read
    /// buffer, not copied), by block index.
    pub partial: HashMap<u32, Vec<Option<bytes::Bytes>>>,
    /// Banned peers' addresses and ports: the address a connection came from or went
    /// to, and the peer's listening address (wire.md, "Disconnect and ban": never by
    /// address alone, since machines may share one).
    pub banned_addrs: HashSet<SocketAddr>,
    /// Banned peers' peer ids (a banned process dialling in again from a new port).
    pub banned_ids: HashSet<[u8; 20]>,
    /// Connections to close and ban: each alone sent a piece (the value) that failed its
    /// hash check.
    pub kick: HashMap<PeerKey, u32>,
    /// Who sent each block of the pieces being assembled.
    pub senders: HashMap<u32, Vec<Option<PeerKey>>>,
    /// Pieces that failed their hash check with several senders: each block's SHA-1 and
    /// sender, to compare with the piece once it passes (smart ban, wire.md).
    pub suspects: HashMap<u32, Vec<BlockSender>>,
}

/// A snapshot this engine takes part in.
pub struct Torrent {
    pub ih: InfoHash,
    /// Pieces of the stripes this store let go of (a retired snapshot: swarm.md §16):
    /// never wanted again.
    let_go: Vec<bool>,
    /// Bytes of all pieces (the last piece of a plain torrent may be short).
    pub total_length: u64,
    pub torrent_bytes: Vec<u8>,
    /// The raw info dictionary (served over BEP 9).
    pub info: Vec<u8>,
    pub meta: SnapshotMeta,
    /// The owner's machine key, when known (from the tracker's publish record, or from
    /// the owner's own extension handshake: `sb_owner`).
    owner: std::sync::OnceLock<MachineKey>,
    /// This machine's key; `None` for processes that are not holders (fetch, health).
    pub me: Option<MachineKey>,
    pub store: Store,
    inner: Mutex<Inner>,
    /// Pieces we just verified, for every peer task to announce.
    pub haves: broadcast::Sender<u32>,
    /// Bytes of verified pieces this torrent downloaded (this process).
    pub downloaded: std::sync::atomic::AtomicU64,
    /// The budget replicated shards count against (none for own snapshots and fetches).
    quota: std::sync::OnceLock<Arc<Quota>>,
    /// When each piece was first seen with fewer holders than the target.
    under_since: Mutex<HashMap<u32, std::time::Instant>>,
    /// The takeover grace (swarm.md §3.1), set by the engine from its configuration.
    grace: std::sync::OnceLock<std::time::Duration>,
    /// The time source for takeovers, set by the engine (the system clock otherwise).
    clock: std::sync::OnceLock<Arc<dyn Clock>>,
    /// The machines present by the company tracker's roster, shared by the engine's
    /// torrents (swarm.md §3.1).
    present: std::sync::OnceLock<Arc<Present>>,
    /// The peers of this torrent's last two announce answers (wire.md "Authenticated
    /// peers": the peers an enrolled machine serves without authentication).
    listed: Mutex<[HashSet<SocketAddr>; 2]>,
    /// Replicated shards written and verified but not flushed yet: not in the picker's
    /// `have`, so neither announced, nor served, nor counted, until a flush makes them
    /// durable ([`Torrent::flush_pending`], swarm.md §13).
    unflushed: Mutex<Vec<u32>>,
    /// What peers hold changed since wanted pieces were last computed (a `have` marks
    /// it; the connections' timers recompute, so a flood of `have`s costs one
    /// recomputation per tick, not one each).
    wanted_stale: std::sync::atomic::AtomicBool,
    /// How many times wanted pieces were recomputed (a peer's flood of `have`s must not
    /// make it once per message: threat-model.md).
    wanted_updates: std::sync::atomic::AtomicU64,
    /// Writing shards failed (a full disk): nothing is wanted until then.
    store_backoff: Mutex<Option<std::time::Instant>>,
    /// Enrolled engines: proofs of possession (who counts) and our identity (to sign
    /// our held statements), set by the engine.
    proofs: std::sync::OnceLock<Proofs>,
    /// A shard matched its SHA-1 but not its Merkle root (format-v2.md): nothing more
    /// of this snapshot is wanted.
    inconsistent: std::sync::atomic::AtomicBool,
    /// Our latest held statement for this snapshot (the connections send it when its
    /// `seq` changed).
    statement: Mutex<Option<Held>>,
    /// The owner's publish record and certificate, once kept in the store (read from it
    /// once: every member connection sends it).
    record: std::sync::OnceLock<(Vec<u8>, Vec<u8>)>,
    /// Repair with no key (swarm.md §18): what is missing since when, the stripes being
    /// repaired.
    repair: Mutex<RepairState>,
    /// The repair grace and log, set by the engine; unset: this torrent never repairs.
    repair_settings: std::sync::OnceLock<RepairSettings>,
    /// Shards this torrent rebuilt by repair (this process).
    pub repaired: std::sync::atomic::AtomicU64,
}

/// How an engine repairs (swarm.md §18).
#[derive(Clone, Debug)]
pub struct RepairSettings {
    /// The repair grace `R`: a shard held by nobody in sight for this long (times the
    /// machine's turn) is rebuilt.
    pub grace: std::time::Duration,
    /// Bytes per second repairs may download, over every snapshot (the engine's budget).
    pub rate: u64,
    /// Where each repaired stripe is logged (`HOME/repair.log`), if anywhere.
    pub log: Option<std::path::PathBuf>,
}

/// A torrent's repair bookkeeping.
#[derive(Default)]
struct RepairState {
    /// The pieces placement wanted here at the last [`Torrent::update_wanted`] (before
    /// the quota's cut).
    wanted: Vec<bool>,
    /// This machine's place in each shard index's order ([`placement::places`]).
    places: Vec<Option<(usize, usize)>>,
    /// When each wanted piece was first seen held by nobody in sight.
    missing_since: HashMap<u32, std::time::Instant>,
    /// The stripes being repaired, each with the helper shards fetched so far (kept in
    /// the store's repair directory).
    jobs: std::collections::BTreeMap<usize, std::collections::BTreeSet<u32>>,
    /// Stripes whose rebuild is running on a blocking thread.
    rebuilding: HashSet<usize>,
}

/// A held statement we signed: its `seq`, the bitfield it states, the envelope.
struct Held {
    seq: u64,
    have: Vec<u8>,
    envelope: Arc<Vec<u8>>,
}

/// What an enrolled engine gives its torrents for proofs of possession.
#[derive(Clone)]
pub struct Proofs {
    pub possession: Arc<crate::possession::Possession>,
    pub identity: Arc<crate::auth::Identity>,
}

/// The machines present by the company tracker's roster (tracker.md §7.9), each
/// certificate verified: placement candidates besides the connected machines (swarm.md
/// §3.1). One per engine, shared by its torrents; `None` without a roster.
#[derive(Default, Debug)]
pub struct Present(std::sync::RwLock<Option<Arc<Vec<placement::Candidate>>>>);

impl Present {
    pub fn get(&self) -> Option<Arc<Vec<placement::Candidate>>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn set(&self, roster: Option<Vec<placement::Candidate>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = roster.map(Arc::new);
    }
}

/// How long a torrent wants nothing after a shard could not be written.
pub const STORE_BACKOFF: std::time::Duration = std::time::Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Torrent {
    /// Opens a snapshot held in `store` (its torrent must be there), checking which
    /// shards are present and intact.
    pub fn open(
        store: &Store,
        ih: InfoHash,
        role: Role,
        owner: Option<MachineKey>,
        me: Option<MachineKey>,
    ) -> Result<Arc<Torrent>, TorrentError> {
        let torrent_bytes = store.torrent_bytes(&ih)?;
        let mi = swarmbak_metainfo::Metainfo::from_bytes(&torrent_bytes)?;
        let meta = SnapshotMeta::from_metainfo(&ih, &mi)?;
        let total = meta.layout.pieces() as u64 * meta.layout.shard_size as u64;
        let info = mi.raw_info().to_vec();
        Self::with_meta(store, ih, torrent_bytes, info, meta, total, role, owner, me)
    }

    /// Opens a plain (non-swarmbak) torrent held in `store`, to download all of it: a
    /// plain torrent is treated as stripes of one data shard and no parity (k = 1, m = 0),
    /// so "k shards of every stripe" means every piece.
    pub fn open_plain(store: &Store, ih: InfoHash) -> Result<Arc<Torrent>, TorrentError> {
        let torrent_bytes = store.torrent_bytes(&ih)?;
        let mi = swarmbak_metainfo::Metainfo::from_bytes(&torrent_bytes)?;
        if mi.info_hash() != ih.0 {
            return Err(TorrentError::Mismatch(ih));
        }
        let n = mi.pieces().len();
        let meta = SnapshotMeta {
            infohash: ih,
            layout: Layout {
                k: 1,
                m: 0,
                shard_size: mi.piece_length() as usize,
                stripes: n,
                payload_len: mi.total_length(),
            },
            hashes: mi.pieces().to_vec(),
            roots: None,
            manifest_offset: 0,
            manifest_length: 0,
        };
        let info = mi.raw_info().to_vec();
        Self::with_meta(
            store,
            ih,
            torrent_bytes,
            info,
            meta,
            mi.total_length(),
            Role::Fetch,
            None,
            None,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn with_meta(
        store: &Store,
        ih: InfoHash,
        torrent_bytes: Vec<u8>,
        info: Vec<u8>,
        meta: SnapshotMeta,
        total_length: u64,
        role: Role,
        owner: Option<MachineKey>,
        me: Option<MachineKey>,
    ) -> Result<Arc<Torrent>, TorrentError> {
        let l = meta.layout;
        let n = meta.hashes.len() as u32;
        let mut picker = PiecePicker::new(n, l.shard_size as u64, total_length, rand::random())?;
        let size = |p: u32| -> usize {
            (total_length - p as u64 * l.shard_size as u64).min(l.shard_size as u64) as usize
        };
        for p in 0..n {
            if let Ok(Some(b)) = store.read_shard(&ih, p as usize) {
                // SHA-1 catches a shard damaged on disk; its Merkle root (format 2) was
                // checked when it came in (`complete_piece`).
                if b.len() == size(p) && Sha1::digest(&b)[..] == meta.hashes[p as usize][..] {
                    picker.piece_verified(p);
                }
            }
        }
        // A torrent announces each piece at most once it comes in (a Replicate role's
        // assigned shards): a slot per piece, up to 1,024, so a receiver of a small
        // snapshot never lags and an idle swarm does not keep 1,024 empty slots (about
        // 40 KiB, most of what an idle swarm cost).
        let (haves, _) = broadcast::channel((n as usize).clamp(1, 1024));
        let mut let_go = Vec::new();
        if let Ok(Some(stripes)) = store.dropped_stripes(&ih) {
            let_go = vec![false; n as usize];
            for s in stripes.into_iter().filter(|&s| (s as usize) < l.stripes) {
                for i in 0..l.n() {
                    let_go[l.piece(s as usize, i)] = true;
                }
            }
        }
        let t = Arc::new(Torrent {
            ih,
            let_go,
            total_length,
            info,
            torrent_bytes,
            meta,
            owner: {
                let o = std::sync::OnceLock::new();
                if let Some(k) = owner {
                    let _ = o.set(k);
                }
                o
            },
            me,
            store: store.clone(),
            inner: Mutex::new(Inner {
                role,
                picker,
                peers: HashMap::new(),
                partial: HashMap::new(),
                banned_addrs: HashSet::new(),
                banned_ids: HashSet::new(),
                kick: HashMap::new(),
                senders: HashMap::new(),
                suspects: HashMap::new(),
            }),
            haves,
            downloaded: std::sync::atomic::AtomicU64::new(0),
            quota: std::sync::OnceLock::new(),
            under_since: Mutex::new(HashMap::new()),
            grace: std::sync::OnceLock::new(),
            clock: std::sync::OnceLock::new(),
            present: std::sync::OnceLock::new(),
            listed: Mutex::new(Default::default()),
            unflushed: Mutex::new(Vec::new()),
            wanted_stale: std::sync::atomic::AtomicBool::new(false),
            wanted_updates: std::sync::atomic::AtomicU64::new(0),
            store_backoff: Mutex::new(None),
            proofs: std::sync::OnceLock::new(),
            inconsistent: std::sync::atomic::AtomicBool::new(false),
            statement: Mutex::new(None),
            record: std::sync::OnceLock::new(),
            repair: Mutex::new(RepairState::default()),
            repair_settings: std::sync::OnceLock::new(),
            repaired: std::sync::atomic::AtomicU64::new(0),
        });
        t.update_wanted();
        Ok(t)
    }

    /// The tracker's latest answer for this torrent: its peers are listed, with those of
    /// the answer before (a peer between two announces stays listed).
    pub fn set_listed(&self, peers: impl IntoIterator<Item = SocketAddr>) {
        let mut g = lock(&self.listed);
        g[1] = std::mem::take(&mut g[0]);
        g[0] = peers.into_iter().collect();
    }

    /// Did one of the last two announce answers list `addr`?
    pub fn is_listed(&self, addr: &SocketAddr) -> bool {
        let g = lock(&self.listed);
        g[0].contains(addr) || g[1].contains(addr)
    }

    /// Did one of the last two announce answers list a peer at `ip` (any port)?
    pub fn is_listed_ip(&self, ip: std::net::IpAddr) -> bool {
        let g = lock(&self.listed);
        g.iter().flatten().any(|a| a.ip() == ip)
    }

    /// The owner's machine key, if known.
    pub fn owner(&self) -> Option<&MachineKey> {
        self.owner.get()
    }

    /// Learns the owner's key from a peer that says it owns this snapshot (a tracker
    /// without publish records, like opentracker, cannot tell). The first claim stands.
    pub fn learn_owner(&self, key: &MachineKey) {
        if self.owner.set(key.clone()).is_ok() {
            if let Err(e) = self.store.set_owner(&self.ih, key.as_bytes()) {
                // Only a hint for the next start: it is learnt again from the owner.
                eprintln!("swarmbak: cannot record {}'s owner: {e}", self.ih);
            }
            self.update_wanted();
        }
    }

    /// The owner's signed publish record and certificate kept with this snapshot (sent
    /// to members as `record`, wire.md type 5), unchecked.
    pub fn signed_record(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        if let Some(r) = self.record.get() {
            return Some(r.clone());
        }
        // Not in the store yet (the owner keeps its record at its first publish
        // attempt, maybe after this snapshot opened): looked for again next time.
        let r = self.store.owner_record(&self.ih)?;
        Some(self.record.get_or_init(|| r).clone())
    }

    /// A publish record a member sent (wire.md type 5): kept when this snapshot has none
    /// and it verifies for this info-hash (trust.md §4, [`Identity::check_record`]);
    /// its certificate names the owner. Returns whether it was taken.
    ///
    /// [`Identity::check_record`]: crate::auth::Identity::check_record
    pub fn learn_record(&self, id: &crate::auth::Identity, record: &[u8], cert: &[u8]) -> bool {
        if self.signed_record().is_some() {
            return false;
        }
        let Ok(c) = id.check_record(record, cert, &self.ih.0) else {
            return false;
        };
        if let Err(e) = self.store.set_owner_record(&self.ih, record, cert) {
            eprintln!("swarmbak: cannot keep {}'s publish record: {e}", self.ih);
            return false;
        }
        let _ = self.record.set((record.to_vec(), cert.to_vec()));
        if let Ok(k) = MachineKey::from_age_recipient(&c.fields.age_recipient) {
            if self.owner.set(k).is_ok() {
                self.update_wanted();
            }
        }
        true
    }

    /// Whether this machine owns the snapshot.
    pub fn is_own(&self) -> bool {
        self.me.is_some() && self.owner() == self.me.as_ref()
    }

    /// Sets the takeover grace (swarm.md §3.1; default 30 s) and the clock it is
    /// measured with. The first call wins.
    pub fn set_takeover(&self, grace: std::time::Duration, clock: Arc<dyn Clock>) {
        let changed = self.grace.set(grace).is_ok() | self.clock.set(clock).is_ok();
        if changed {
            self.update_wanted();
        }
    }

    /// Repairs shards nobody in sight holds (swarm.md §18) with these settings. The first
    /// call wins.
    pub fn set_repair(&self, r: RepairSettings) {
        let _ = self.repair_settings.set(r);
    }

    /// Now, by the clock takeovers and repairs are measured with.
    fn now(&self) -> std::time::Instant {
        match self.clock.get() {
            Some(c) => c.instant(),
            None => std::time::Instant::now(),
        }
    }

    /// Places with the machines `present` lists besides those connected (swarm.md §3.1).
    /// The first call wins.
    pub fn set_present(&self, present: Arc<Present>) {
        if self.present.set(present).is_ok() {
            self.update_wanted();
        }
    }

    pub fn layout(&self) -> Layout {
        self.meta.layout
    }

    /// Bytes in piece `p`.
    pub fn piece_size(&self, p: u32) -> usize {
        let pl = self.meta.layout.shard_size as u64;
        self.total_length.saturating_sub(p as u64 * pl).min(pl) as usize
    }

    pub fn num_pieces(&self) -> u32 {
        self.meta.hashes.len() as u32
    }

    pub fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    pub fn have(&self) -> Bitfield {
        self.inner().picker.have().clone()
    }

    /// Makes replicated shards count against `q`; at the limit, nothing more is wanted.
    pub fn set_quota(&self, q: Arc<Quota>) {
        let _ = self.quota.set(q);
        self.update_wanted();
    }

    pub fn set_role(&self, role: Role) {
        self.inner().role = role;
        self.update_wanted();
    }

    /// Does every stripe have at least k verified shards here?
    pub fn restorable_here(&self) -> bool {
        let have = self.have();
        self.layout().recoverable_with(|p| have.get(p as u32))
    }

    /// Recomputes which pieces we want, from the role and what peers hold.
    pub fn update_wanted(&self) {
        self.wanted_updates
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut g = self.inner();
        let l = self.meta.layout;
        let role = g.role.clone();
        let mut places = Vec::new();
        let want: Vec<bool> = match role {
            Role::Seed => vec![false; l.pieces()],
            _ if self.inconsistent.load(std::sync::atomic::Ordering::Relaxed) => {
                vec![false; l.pieces()]
            }
            Role::Fetch => placement::fetch_wanted(
                &l,
                |p| g.picker.have().get(p),
                |p| g.picker.availability(p),
            ),
            Role::Replicate { .. }
                if self.quota.get().is_some_and(|q| q.full()) || self.backing_off() =>
            {
                vec![false; l.pieces()]
            }
            Role::Replicate { copies } => match &self.me {
                // Not a machine: never a holder.
                None => vec![false; l.pieces()],
                Some(me) => {
                    // Enrolled: a holder that failed a proof of this snapshot is no
                    // candidate (its indices go to the next machines: a takeover).
                    let proven = self.proofs.get().map(|p| (&*p.possession, &self.ih));
                    let trusted = |v: &&PeerView| match (proven, v.member) {
                        (Some((pos, ih)), Some(m)) => !pos.distrusted(&m, ih),
                        _ => true,
                    };
                    // The roster's machines count as well as the connected ones: every
                    // agent places with the same machines, whoever it is connected to
                    // yet; a connected holder that failed a proof is left out of both.
                    let distrusted: Vec<&MachineKey> = g
                        .peers
                        .values()
                        .filter(|v| !trusted(v))
                        .filter_map(|v| v.machine.as_ref())
                        .collect();
                    let roster = self.present.get().and_then(|p| p.get());
                    let listed = roster
                        .iter()
                        .flat_map(|r| r.iter())
                        .filter(|c| !distrusted.contains(&&c.key))
                        .cloned();
                    let online: std::collections::BTreeSet<MachineKey> = g
                        .peers
                        .values()
                        .filter(trusted)
                        .filter_map(|v| v.machine.clone())
                        .chain(std::iter::once(me.clone()))
                        .collect();
                    let machines = placement::candidates(
                        g.peers
                            .values()
                            .filter(trusted)
                            .filter_map(|p| {
                                Some(placement::Candidate {
                                    key: p.machine.clone()?,
                                    domain: p.domain.clone(),
                                })
                            })
                            .chain(listed),
                        Some(placement::Candidate {
                            key: me.clone(),
                            domain: self.proofs.get().and_then(|p| p.identity.domain.clone()),
                        }),
                        self.owner(),
                    );
                    let holders = placement::holder_counts(
                        &holder_sets(&g, self.me.as_ref(), l.pieces(), proven),
                        self.owner(),
                    );
                    let view = placement::ReplicateView {
                        group: placement::group(self.owner(), &self.ih),
                        online: roster.is_some().then_some(&online),
                        layout: &l,
                        machines: &machines,
                        me,
                        copies,
                        holders: &holders,
                        grace: self.grace.get().copied().unwrap_or(DEFAULT_GRACE),
                    };
                    let mut under = lock(&self.under_since);
                    places = placement::places(&view);
                    placement::replicate_wanted_at(&view, &places, &mut under, self.now())
                }
            },
        };
        // Under a quota, want no more new pieces than the budget left holds (pieces
        // already being assembled count against it), so the quota is overshot by at most
        // the pieces in flight.
        let mut want = want;
        for (w, gone) in want.iter_mut().zip(&self.let_go) {
            *w &= !gone;
        }
        if let Role::Replicate { .. } = role {
            // Repairs under way want their helper shards too (swarm.md §18).
            let mut rs = lock(&self.repair);
            let mut helpers = Vec::new();
            for (&stripe, fetched) in &rs.jobs {
                helpers.extend(repair::helpers(
                    &l,
                    stripe,
                    // A piece placement wants and some peer has comes anyway (and is
                    // then held): no helper in its place.
                    |p| {
                        g.picker.have().get(p as u32)
                            || fetched.contains(&(p as u32))
                            || (want[p] && g.picker.availability(p as u32) > 0)
                    },
                    |p| g.picker.availability(p as u32),
                ));
            }
            rs.wanted = want.clone();
            rs.places = places;
            for p in helpers {
                want[p as usize] = true;
            }
        }
        if let (Role::Replicate { .. }, Some(q)) = (&role, self.quota.get()) {
            let used = q.used.load(std::sync::atomic::Ordering::Relaxed);
            let in_progress = g.partial.len() as u64 * l.shard_size as u64;
            let mut budget =
                q.limit.saturating_sub(used + in_progress) / l.shard_size.max(1) as u64;
            for (p, w) in want.iter_mut().enumerate() {
                if *w && !g.partial.contains_key(&(p as u32)) {
                    if budget == 0 {
                        *w = false;
                    } else {
                        budget -= 1;
                    }
                }
            }
        }
        for (p, w) in want.into_iter().enumerate() {
            let p = p as u32;
            if g.picker.is_wanted(p) != w {
                g.picker.set_wanted(p, w);
            }
        }
    }

    /// What peers hold changed: wanted pieces are recomputed at the next
    /// [`Torrent::update_wanted_if_stale`] (each connection's timer calls it).
    pub fn wanted_is_stale(&self) {
        self.wanted_stale
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many times wanted pieces have been recomputed since the torrent opened.
    pub fn wanted_updates(&self) -> u64 {
        self.wanted_updates
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Recomputes wanted pieces if something changed since the last time.
    pub fn update_wanted_if_stale(&self) {
        if self
            .wanted_stale
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            self.update_wanted();
        }
    }

    /// Is the torrent waiting after a shard could not be written?
    fn backing_off(&self) -> bool {
        let mut g = lock(&self.store_backoff);
        match *g {
            Some(until) if std::time::Instant::now() < until => true,
            Some(_) => {
                *g = None;
                false
            }
            None => false,
        }
    }

    /// A shard could not be written (a full disk, an I/O error): want nothing for
    /// [`STORE_BACKOFF`] rather than download the same pieces again and again. Says so
    /// once per back-off.
    fn store_failed(&self, piece: u32, e: &TorrentError) {
        let fresh = {
            let mut g = lock(&self.store_backoff);
            let fresh = g.is_none();
            *g = Some(std::time::Instant::now() + STORE_BACKOFF);
            fresh
        };
        if fresh {
            eprintln!(
                "swarmbak: cannot store piece {piece} of {}: {e}; not downloading its shards for {} s",
                self.ih,
                STORE_BACKOFF.as_secs()
            );
        }
        self.update_wanted();
    }

    /// Flushes the replicated shards written since the last call (one `syncfs` for the
    /// batch) and only then makes them ours: in the picker's `have`, announced with
    /// `have` to every connection, counted. A failed flush announces nothing (the
    /// pieces stay pending and are flushed again next time). Returns the pieces made
    /// durable.
    pub fn flush_pending(&self) -> Result<Vec<u32>, TorrentError> {
        let batch = std::mem::take(&mut *lock(&self.unflushed));
        if batch.is_empty() {
            return Ok(batch);
        }
        if let Err(e) = self.store.sync() {
            lock(&self.unflushed).extend(batch);
            return Err(e.into());
        }
        {
            let mut g = self.inner();
            for &p in &batch {
                g.picker.piece_verified(p);
            }
        }
        for &p in &batch {
            let _ = self.haves.send(p);
        }
        self.restate();
        self.update_wanted();
        Ok(batch)
    }

    /// Proofs of possession, when the engine is enrolled.
    pub fn set_proofs(&self, p: Proofs) {
        if self.proofs.set(p).is_ok() {
            self.restate();
        }
    }

    pub fn proofs(&self) -> Option<&Proofs> {
        self.proofs.get()
    }

    /// Whether we state what we hold of this snapshot: enrolled, a holder process, and
    /// not the owner (the owner is never counted).
    pub fn states(&self) -> bool {
        self.proofs.get().is_some() && self.me.is_some() && !self.is_own()
    }

    /// Signs a new held statement of the shards on our disk (called after each flush
    /// that made some durable, and once at start), persisted in the snapshot's
    /// directory as `held` before any connection sends it (its `seq` then never goes
    /// back across restarts).
    pub fn restate(&self) {
        let Some(p) = self.proofs.get().filter(|_| self.states()) else {
            return;
        };
        let have = self.have();
        let mut g = lock(&self.statement);
        // Nothing held and nothing stated yet: nothing to say. Something stated and now
        // nothing held (the scrub gave it up): say so.
        if have.has_none() && g.is_none() && self.store.held(&self.ih).is_none() {
            return;
        }
        if g.as_ref().is_some_and(|h| h.have == have.as_bytes()) {
            return;
        }
        let key = p.identity.key.public();
        // The last seq: ours in memory, else the one kept on disk by an earlier run.
        let last = match g.as_ref() {
            Some(h) => h.seq,
            None => self
                .store
                .held(&self.ih)
                .and_then(|e| swarmbak_trust::HeldStatement::verify(&e, &key).ok())
                .map_or(0, |l| l.seq),
        };
        let s = swarmbak_trust::HeldStatement {
            infohash: self.ih.0,
            key,
            pieces: self.num_pieces(),
            have: have.as_bytes().to_vec(),
            seq: last + 1,
            flushed: self
                .clock
                .get()
                .map_or_else(|| SystemClock.unix(), |c| c.unix()),
        };
        let envelope = s.sign(&p.identity.key);
        if let Err(e) = self.store.set_held(&self.ih, &envelope) {
            eprintln!(
                "swarmbak: cannot record what this machine holds of {}: {e}; not stating it",
                self.ih
            );
            return;
        }
        *g = Some(Held {
            seq: s.seq,
            have: s.have,
            envelope: Arc::new(envelope),
        });
    }

    /// Our latest held statement and its `seq` (larger for each new one).
    pub fn statement(&self) -> Option<(u64, Arc<Vec<u8>>)> {
        lock(&self.statement)
            .as_ref()
            .map(|h| (h.seq, h.envelope.clone()))
    }

    /// The Merkle roots of the shards (format 2), when the snapshot has them.
    pub fn roots(&self) -> Option<&[[u8; 32]]> {
        self.meta.roots.as_deref()
    }

    /// Reads a whole shard we hold from disk (not the cache: a proof is about the disk).
    pub async fn read_shard_from_disk(&self, piece: u32) -> Option<bytes::Bytes> {
        if !self.inner().picker.have().get(piece) {
            return None;
        }
        let (store, ih) = (self.store.clone(), self.ih);
        tokio::task::spawn_blocking(move || store.read_shard(&ih, piece as usize))
            .await
            .ok()?
            .ok()?
            .map(bytes::Bytes::from)
    }

    /// Re-reads shard `piece` from disk and checks it (SHA-1, and the Merkle root of
    /// format 2; swarm.md §17). One that is missing or damaged is rebuilt in place when
    /// this disk holds k good shards of its stripe (the owner does: no key is needed);
    /// otherwise it is no longer ours: its file is removed, the picker no longer has it
    /// (nothing of it is served), the quota gets its bytes back, a new held statement
    /// leaves it out, and it is wanted again if assigned (replicated like any missing
    /// shard). The caller drops its cached copy.
    pub fn scrub_piece(&self, piece: u32) -> Result<Scrubbed, TorrentError> {
        use swarmbak_format::restore::ShardCheck;
        if piece >= self.num_pieces() || !self.inner().picker.have().get(piece) {
            return Ok(Scrubbed::NotHeld);
        }
        let p = piece as usize;
        let found = match self.store.read_shard(&self.ih, p)? {
            None => Scrubbed::Missing,
            Some(b) => match self.meta.check_shard(piece, &b) {
                ShardCheck::Good => return Ok(Scrubbed::Good),
                ShardCheck::Bad | ShardCheck::Inconsistent => Scrubbed::Corrupt,
            },
        };
        if self.rebuild_from_local(piece)? {
            return Ok(Scrubbed::Rebuilt);
        }
        self.store.remove_shard(&self.ih, p)?;
        self.inner().picker.piece_lost(piece);
        if let (Some(q), Role::Replicate { .. }) = (self.quota.get(), &self.inner().role) {
            q.release(self.piece_size(piece) as u64);
        }
        self.restate();
        self.update_wanted();
        Ok(found)
    }

    /// Rebuilds shard `piece` on disk from k good shards of its stripe held here
    /// ([`SnapshotMeta::rebuild_shard`]), if there are that many.
    fn rebuild_from_local(&self, piece: u32) -> Result<bool, TorrentError> {
        let have = self.have();
        let rebuilt = self
            .meta
            .rebuild_shard(piece, |q| match have.get(q as u32) {
                true => self.store.read_shard(&self.ih, q),
                false => Ok(None),
            })?;
        let Some(rebuilt) = rebuilt else {
            return Ok(false);
        };
        self.store.write_shard(&self.ih, piece as usize, &rebuilt)?;
        self.store.sync()?;
        Ok(true)
    }

    /// Bytes we hold for others (the holder's proof budget is a share of it).
    pub fn held_bytes(&self) -> u64 {
        match self.quota.get() {
            Some(q) => q.used.load(std::sync::atomic::Ordering::Relaxed),
            None => self.have().count() as u64 * self.meta.layout.shard_size as u64,
        }
    }

    /// Distinct machines (by key) other than the owner holding each piece, among
    /// connected peers and ourselves.
    pub fn holders(&self) -> Vec<usize> {
        placement::holder_counts(&self.holder_sets(), self.owner())
    }

    /// Shards some connected authenticated holder states but has not proven (so does not
    /// count for) yet: what a `seed --until durable` may be waiting on (swarm.md §14).
    pub fn unproven(&self) -> usize {
        let Some(p) = self.proofs.get() else {
            return 0;
        };
        let members: Vec<swarmbak_trust::PublicKey> = self
            .inner()
            .peers
            .values()
            .filter(|v| v.machine.is_some())
            .filter_map(|v| v.member)
            .collect();
        let mut shards = HashSet::new();
        for m in members {
            let Some(stated) = p.possession.stated(&m, &self.ih) else {
                continue;
            };
            let counted = p.possession.counted(&m, &self.ih);
            shards.extend(
                stated
                    .iter_ones()
                    .filter(|&q| !counted.as_ref().is_some_and(|c| c.get(q))),
            );
        }
        shards.len()
    }

    /// Every machine (by key, the owner included) that holds each piece, among connected
    /// peers and ourselves.
    pub fn holder_sets(&self) -> HolderSets {
        let g = self.inner();
        let proven = self.proofs.get().map(|p| (&*p.possession, &self.ih));
        holder_sets(&g, self.me.as_ref(), self.num_pieces() as usize, proven)
    }

    /// Whether some connected peer (any client, with or without a machine key) has each
    /// piece, or we do.
    pub fn reachable(&self) -> Vec<bool> {
        let g = self.inner();
        (0..self.num_pieces())
            .map(|p| g.picker.have().get(p) || g.peers.values().any(|v| v.has.get(p)))
            .collect()
    }

    /// Files block `data` at `offset` of `piece` (a block the picker accepted); an error
    /// for a block that does not fit the piece. [`Torrent::take_piece`] takes the piece
    /// once the session says every block is in.
    pub fn add_block(
        g: &mut Inner,
        piece_size: usize,
        piece: u32,
        offset: u32,
        data: bytes::Bytes,
    ) -> Result<(), BlockError> {
        let bs = swarmbak_wire::BLOCK_SIZE as usize;
        let i = offset as usize / bs;
        let blocks = piece_size.div_ceil(bs);
        if !(offset as usize).is_multiple_of(bs)
            || i >= blocks
            || offset as usize + data.len() > piece_size
        {
            return Err(BlockError::Misfit {
                piece,
                offset,
                len: data.len(),
            });
        }
        let slots = g.partial.entry(piece).or_insert_with(|| vec![None; blocks]);
        slots[i] = Some(data);
        Ok(())
    }

    /// Takes a piece whose every block was filed ([`Torrent::add_block`]) out of the
    /// pieces being assembled: its blocks, in order. An error if a block is missing.
    pub fn take_piece(g: &mut Inner, piece: u32) -> Result<Vec<bytes::Bytes>, BlockError> {
        let slots = g.partial.remove(&piece).unwrap_or_default();
        if slots.is_empty() || slots.iter().any(|b| b.is_none()) {
            return Err(BlockError::Incomplete(piece));
        }
        Ok(slots.into_iter().flatten().collect())
    }

    /// Verifies and stores a completed piece on a blocking thread, so the connection that
    /// delivered it keeps reading meanwhile. A piece that fails its hash check is
    /// downloaded again, from one peer; if one peer alone sent it, that peer's address is
    /// banned at once and its connection closed and banned (wire.md, "Disconnect and
    /// ban").
    ///
    /// A piece that failed with several senders bans nobody at first; its blocks' hashes
    /// are kept, and once the piece passes, every sender of a block that differed from
    /// the good one is banned (libtorrent's smart ban).
    pub fn complete_in_background(
        self: &Arc<Self>,
        piece: u32,
        blocks: Vec<bytes::Bytes>,
        senders: Vec<Option<PeerKey>>,
    ) {
        let t = self.clone();
        tokio::task::spawn_blocking(move || match t.complete_piece(piece, &blocks) {
            Ok(true) => {
                let mut g = t.inner();
                if let Some(before) = g.suspects.remove(&piece) {
                    for liar in liars(&before, &blocks) {
                        Torrent::ban_liar(&mut g, liar, piece);
                    }
                }
            }
            Ok(false) => {
                let mut g = t.inner();
                match g.picker.piece_failed(piece)[..] {
                    [liar] => Torrent::ban_liar(&mut g, liar, piece),
                    _ => {
                        let hashed = blocks
                            .iter()
                            .zip(senders.iter().copied().chain(std::iter::repeat(None)))
                            .map(|(b, s)| (Sha1::digest(b).into(), s))
                            .collect();
                        g.suspects.insert(piece, hashed);
                    }
                }
            }
            Err(e @ TorrentError::Inconsistent(..)) => {
                t.inner().picker.piece_failed(piece);
                if !t
                    .inconsistent
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    eprintln!("swarmbak: {e}");
                }
                t.update_wanted();
            }
            Err(e) => {
                t.inner().picker.piece_failed(piece);
                t.store_failed(piece, &e);
            }
        });
    }

    /// Closes and bans the connection `liar` (its address at once): it sent bad data
    /// for `piece`.
    fn ban_liar(g: &mut Inner, liar: PeerKey, piece: u32) {
        if let Some(addr) = g.peers.get(&liar).map(|v| v.addr) {
            g.banned_addrs.insert(addr);
        }
        g.kick.insert(liar, piece);
    }

    /// Notes who sent the block at `offset` of `piece` (filed by [`Torrent::add_block`]).
    pub fn note_sender(g: &mut Inner, piece_size: usize, piece: u32, offset: u32, key: PeerKey) {
        let bs = swarmbak_wire::BLOCK_SIZE as usize;
        let slots = g
            .senders
            .entry(piece)
            .or_insert_with(|| vec![None; piece_size.div_ceil(bs)]);
        if let Some(s) = slots.get_mut(offset as usize / bs) {
            *s = Some(key);
        }
    }

    /// The senders of a piece's blocks, in order, taken with its blocks.
    pub fn take_senders(g: &mut Inner, piece: u32) -> Vec<Option<PeerKey>> {
        g.senders.remove(&piece).unwrap_or_default()
    }

    /// Verifies a completed piece (its blocks in order) and stores it. Returns false when
    /// the hash is wrong.
    pub fn complete_piece<B: AsRef<[u8]>>(
        &self,
        piece: u32,
        blocks: &[B],
    ) -> Result<bool, TorrentError> {
        let size = self.piece_size(piece);
        let len: usize = blocks.iter().map(|b| b.as_ref().len()).sum();
        let mut h = Sha1::new();
        for b in blocks {
            h.update(b.as_ref());
        }
        if len != size || h.finalize()[..] != self.meta.hashes[piece as usize][..] {
            return Ok(false);
        }
        // Format 2: the root too. A shard whose SHA-1 matches but whose root does not
        // means the owner wrote a wrong torrent: nothing of it is taken (format-v2.md).
        let root_ok = self.roots().is_none_or(|roots| {
            roots.get(piece as usize) == Some(&swarmbak_core::merkle::root_of_parts(blocks))
        });
        if !root_ok {
            return Err(TorrentError::Inconsistent(self.ih, piece));
        }
        if self.is_helper(piece) {
            return self.keep_helper(piece, blocks).map(|()| true);
        }
        self.store
            .write_shard_parts(&self.ih, piece as usize, blocks)?;
        self.downloaded
            .fetch_add(len as u64, std::sync::atomic::Ordering::Relaxed);
        if let Some(q) = self.quota.get() {
            q.used
                .fetch_add(len as u64, std::sync::atomic::Ordering::Relaxed);
        }
        if matches!(self.inner().role, Role::Replicate { .. }) {
            // A shard held for another machine is claimed only once it is durable
            // (swarm.md §13): the engine flushes in batches, then announces.
            lock(&self.unflushed).push(piece);
            return Ok(true);
        }
        // A fetch's shards are a staging copy, restored right away: not flushed.
        self.inner().picker.piece_verified(piece);
        let _ = self.haves.send(piece);
        self.update_wanted();
        Ok(true)
    }

    /// Is `piece` a helper of a repair under way: of a stripe being repaired, and not a
    /// piece placement wants here (those are held, not helpers)?
    fn is_helper(&self, piece: u32) -> bool {
        let stripe = self.meta.layout.locate(piece as usize).0;
        let rs = lock(&self.repair);
        rs.jobs.contains_key(&stripe) && !rs.wanted.get(piece as usize).copied().unwrap_or(false)
    }

    /// Keeps a verified helper shard in the store's repair directory (swarm.md §18): not
    /// had, not announced, not stated, not served; its bytes count against the quota
    /// while it is there.
    fn keep_helper<B: AsRef<[u8]>>(&self, piece: u32, blocks: &[B]) -> Result<(), TorrentError> {
        let bytes: Vec<u8> = blocks
            .iter()
            .flat_map(|b| b.as_ref().iter().copied())
            .collect();
        self.store.write_repair(&self.ih, piece as usize, &bytes)?;
        let len = bytes.len() as u64;
        self.downloaded
            .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        let stripe = self.meta.layout.locate(piece as usize).0;
        let kept = match lock(&self.repair).jobs.get_mut(&stripe) {
            Some(fetched) => fetched.insert(piece),
            None => false,
        };
        if kept {
            if let Some(q) = self.quota.get() {
                q.used.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
            }
        } else {
            // The repair ended meanwhile (its shards came back): not needed.
            let _ = self.store.remove_repair(&self.ih, piece as usize);
        }
        // Neither had nor wanted any more: its progress is forgotten.
        self.inner().picker.set_wanted(piece, false);
        self.update_wanted();
        Ok(())
    }

    /// Which pieces some connected peer that counts has: for an enrolled machine, an
    /// authenticated member that has not failed a proof of this snapshot (a stranger's
    /// `have all` must not hold a repair back); otherwise any peer.
    fn seen_by_members(&self, g: &Inner) -> Vec<bool> {
        let proofs = self.proofs.get();
        let counts = |v: &&PeerView| match (proofs, v.member) {
            (None, _) => true,
            (Some(_), None) => false,
            // A member that failed a proof of this snapshot is in sight of nothing.
            (Some(p), Some(m)) => !p.possession.distrusted(&m, &self.ih),
        };
        let mut seen = vec![false; self.num_pieces() as usize];
        for v in g.peers.values().filter(counts) {
            for i in v.has.iter_ones() {
                if let Some(x) = seen.get_mut(i as usize) {
                    *x = true;
                }
            }
        }
        seen
    }

    /// The stripes due for repair here and not under way (swarm.md §18), fewest spare
    /// shards first; none when this torrent does not repair (not a Replicate role, or no
    /// repair settings).
    pub fn repairs_due(&self) -> Vec<repair::Due> {
        let Some(cfg) = self.repair_settings.get() else {
            return Vec::new();
        };
        let now = self.now();
        let pending = self.pending();
        let g = self.inner();
        if !matches!(g.role, Role::Replicate { .. }) {
            return Vec::new();
        }
        let seen = self.seen_by_members(&g);
        let mut rs = lock(&self.repair);
        let mut since = std::mem::take(&mut rs.missing_since);
        let have = |p: usize| g.picker.have().get(p as u32) || pending.contains(&(p as u32));
        let reachable = |p: usize| seen.get(p).copied().unwrap_or(false);
        let turns = |j: usize| placement::turns(&rs.places, j);
        let view = repair::RepairView {
            layout: &self.meta.layout,
            wanted: &rs.wanted,
            have: &have,
            reachable: &reachable,
            turns: &turns,
            grace: cfg.grace,
        };
        let mut due = repair::due(&view, &mut since, now);
        rs.missing_since = since;
        due.retain(|d| !rs.jobs.contains_key(&d.stripe));
        due
    }

    /// Starts repairing `stripe` (admitted by the engine): its helper shards are wanted.
    pub fn start_repair(&self, stripe: usize) {
        lock(&self.repair).jobs.entry(stripe).or_default();
        self.update_wanted();
    }

    /// Stripes being repaired here.
    pub fn repairs_under_way(&self) -> usize {
        lock(&self.repair).jobs.len()
    }

    /// Moves the repairs under way on: one whose shards came back (or that placement no
    /// longer wants here) ends; one with k shards of its stripe here (held or helpers) is
    /// rebuilt on a blocking thread.
    pub fn advance_repairs(self: &Arc<Self>) {
        let l = self.meta.layout;
        let pending = self.pending();
        let (ended, ready) = {
            let g = self.inner();
            let seen = self.seen_by_members(&g);
            let mut rs = lock(&self.repair);
            let (mut ended, mut ready) = (Vec::new(), Vec::new());
            for (&stripe, fetched) in &rs.jobs {
                if rs.rebuilding.contains(&stripe) {
                    continue;
                }
                let pieces = (0..l.n()).map(|i| l.piece(stripe, i));
                let targets = pieces
                    .clone()
                    .filter(|&p| rs.wanted.get(p).copied().unwrap_or(false))
                    .filter(|&p| !g.picker.have().get(p as u32) && !seen[p])
                    .filter(|&p| !pending.contains(&(p as u32)))
                    .count();
                let here = pieces
                    .filter(|&p| g.picker.have().get(p as u32) || fetched.contains(&(p as u32)))
                    .count();
                if targets == 0 {
                    ended.push((stripe, fetched.clone()));
                } else if here >= l.k {
                    ready.push(stripe);
                }
            }
            for (stripe, _) in &ended {
                rs.jobs.remove(stripe);
            }
            rs.rebuilding.extend(ready.iter().copied());
            (ended, ready)
        };
        for (_, fetched) in ended {
            self.drop_helpers(&fetched);
        }
        if !ready.is_empty() {
            self.update_wanted();
        }
        for stripe in ready {
            let t = self.clone();
            tokio::task::spawn_blocking(move || t.rebuild_stripe(stripe));
        }
    }

    /// Shards written and verified, waiting for their flush (§13): had in a second.
    fn pending(&self) -> HashSet<u32> {
        lock(&self.unflushed).iter().copied().collect()
    }

    /// Deletes helper shards and gives their bytes back to the quota.
    fn drop_helpers(&self, fetched: &std::collections::BTreeSet<u32>) {
        for &p in fetched {
            let _ = self.store.remove_repair(&self.ih, p as usize);
            if let Some(q) = self.quota.get() {
                q.release(self.piece_size(p) as u64);
            }
        }
    }

    /// Rebuilds the missing wanted shards of `stripe` from k good shards here (held, or
    /// helpers): Reed-Solomon over the ciphertext, no key; each rebuilt shard must match
    /// its piece hash (and root) before it is written; then it is flushed and announced
    /// like a replicated shard. The repair ends either way: its helpers are deleted, and
    /// a failed one is tried again when next due.
    fn rebuild_stripe(&self, stripe: usize) {
        let l = self.meta.layout;
        let (fetched, targets) = {
            let g = self.inner();
            let rs = lock(&self.repair);
            let fetched = rs.jobs.get(&stripe).cloned().unwrap_or_default();
            let targets: Vec<u32> = (0..l.n())
                .map(|i| l.piece(stripe, i))
                .filter(|&p| rs.wanted.get(p).copied().unwrap_or(false))
                .filter(|&p| !g.picker.have().get(p as u32))
                .map(|p| p as u32)
                .collect();
            (fetched, targets)
        };
        let have = self.have();
        let mut rebuilt = Vec::new();
        let mut failed = None;
        for &t in &targets {
            // A helper that placement wants here since it was fetched (a takeover) is
            // already the shard: kept as it is, checked again.
            let fetched_target = match fetched.contains(&t) {
                true => self
                    .store
                    .read_repair(&self.ih, t as usize)
                    .map(|b| b.filter(|b| self.meta.shard_ok(t, b))),
                false => Ok(None),
            };
            let shard = fetched_target.and_then(|b| match b {
                Some(b) => Ok(Some(b)),
                None => self.meta.rebuild_shard(t, |q| {
                    if have.get(q as u32) {
                        self.store.read_shard(&self.ih, q)
                    } else if fetched.contains(&(q as u32)) {
                        self.store.read_repair(&self.ih, q)
                    } else {
                        Ok(None)
                    }
                }),
            });
            match shard {
                Ok(Some(b)) => match self.store.write_shard(&self.ih, t as usize, &b) {
                    Ok(()) => {
                        if let Some(q) = self.quota.get() {
                            q.used
                                .fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        }
                        rebuilt.push(t);
                    }
                    Err(e) => failed = Some(e.to_string()),
                },
                Ok(None) => {
                    failed = Some("fewer than k good shards of its stripe, or a rebuilt shard that does not match its hash".into())
                }
                Err(e) => failed = Some(e.to_string()),
            }
        }
        {
            let mut rs = lock(&self.repair);
            rs.jobs.remove(&stripe);
            rs.rebuilding.remove(&stripe);
        }
        self.drop_helpers(&fetched);
        self.repaired
            .fetch_add(rebuilt.len() as u64, std::sync::atomic::Ordering::Relaxed);
        // Claimed once durable, like a replicated shard (swarm.md §13).
        lock(&self.unflushed).extend(rebuilt.iter().copied());
        self.log_repair(stripe, &rebuilt, fetched.len(), failed.as_deref());
        self.update_wanted();
    }

    /// Says what a repair did, on stderr and in the repair log.
    fn log_repair(&self, stripe: usize, rebuilt: &[u32], helpers: usize, failed: Option<&str>) {
        match failed {
            None => eprintln!(
                "swarmbak: repaired stripe {stripe} of {}: rebuilt {} shard(s) from {helpers} fetched",
                self.ih,
                rebuilt.len()
            ),
            Some(e) => eprintln!(
                "swarmbak: repair of stripe {stripe} of {} rebuilt {} shard(s), then failed: {e}; tried again later",
                self.ih,
                rebuilt.len()
            ),
        }
        let Some(path) = self.repair_settings.get().and_then(|r| r.log.as_ref()) else {
            return;
        };
        let line = serde_json::json!({
            "time": self.clock.get().map_or_else(|| SystemClock.unix(), |c| c.unix()),
            "infohash": self.ih.to_hex(),
            "stripe": stripe,
            "rebuilt": rebuilt,
            "helpers": helpers,
            "error": failed,
        });
        if let Err(e) = swarmbak_format::append_line(path, &line.to_string()) {
            eprintln!("swarmbak: cannot write {}: {e}", path.display());
        }
    }

    /// Bans a peer from this torrent (wire.md, "Disconnect and ban"): the address its
    /// connection used, its listening address when it gave one, and its peer id.
    pub fn ban(&self, addr: SocketAddr, listen: Option<SocketAddr>, peer_id: [u8; 20]) {
        let mut g = self.inner();
        g.banned_addrs.insert(addr);
        g.banned_addrs.extend(listen);
        g.banned_ids.insert(peer_id);
    }

    /// A block of a piece we have: a slice of the whole piece, read once through `cache`.
    /// A piece not in the cache is read on a blocking thread (a shard not in the page
    /// cache means a disk read, which must not stall the connections sharing this
    /// thread).
    pub async fn read_block(
        &self,
        cache: &crate::cache::PieceCache,
        piece: u32,
        offset: u32,
        len: u32,
    ) -> Option<bytes::Bytes> {
        if !self.inner().picker.have().get(piece) {
            return None;
        }
        let whole = match cache.get(&self.ih, piece) {
            Some(b) => b,
            None => {
                let path = self.store.shard_path(&self.ih, piece as usize);
                let b = tokio::task::spawn_blocking(move || std::fs::read(path).ok())
                    .await
                    .ok()
                    .flatten()
                    .map(bytes::Bytes::from)?;
                cache.insert(&self.ih, piece, b.clone());
                b
            }
        };
        let end = offset as usize + len as usize;
        (end <= whole.len()).then(|| whole.slice(offset as usize..end))
    }
}

/// The senders of blocks that differ between a failed attempt at a piece (each block's
/// SHA-1 and sender) and the piece that then passed: the liars (smart ban).
pub fn liars<B: AsRef<[u8]>>(before: &[BlockSender], good: &[B]) -> Vec<PeerKey> {
    let mut out: Vec<PeerKey> = before
        .iter()
        .zip(good)
        .filter(|((h, _), g)| Sha1::digest(g.as_ref())[..] != h[..])
        .filter_map(|((_, s), _)| *s)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The takeover grace when the engine sets none (swarm.md §11).
const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Every machine (by key) holding each piece: us, and connected peers with a placement
/// key. Enrolled (`proven` given): an authenticated holder holds what it stated and
/// recently proved (swarm.md §14); not enrolled: what its bitfield says.
fn holder_sets(
    g: &Inner,
    me: Option<&MachineKey>,
    n: usize,
    proven: Option<(&crate::possession::Possession, &InfoHash)>,
) -> HolderSets {
    let mut sets: HolderSets = vec![Default::default(); n];
    let mut add = |k: &MachineKey, has: &Bitfield| {
        for i in has.iter_ones() {
            if let Some(s) = sets.get_mut(i as usize) {
                s.insert(k.clone());
            }
        }
    };
    if let Some(k) = me {
        add(k, g.picker.have());
    }
    for p in g.peers.values() {
        let Some(k) = p.machine.as_ref() else {
            continue;
        };
        match proven {
            None => add(k, &p.has),
            Some((possession, ih)) => {
                if let Some(b) = p.member.and_then(|m| possession.counted(&m, ih)) {
                    add(k, &b);
                }
            }
        }
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn inner(pieces: u32, piece_len: u64) -> Inner {
        Inner {
            role: Role::Fetch,
            picker: PiecePicker::new(pieces, piece_len, pieces as u64 * piece_len, 1).unwrap(),
            peers: HashMap::new(),
            partial: HashMap::new(),
            banned_addrs: HashSet::new(),
            banned_ids: HashSet::new(),
            kick: HashMap::new(),
            senders: HashMap::new(),
            suspects: HashMap::new(),
        }
    }

    /// Smart ban: of two senders of a piece that failed, only the one whose block
    /// differs from the good piece is a liar.
    #[test]
    fn only_the_sender_of_the_bad_block_is_a_liar() {
        let good = [Bytes::from(vec![1u8; 16]), Bytes::from(vec![2u8; 16])];
        let h = |b: &[u8]| -> [u8; 20] { Sha1::digest(b).into() };
        let before = vec![(h(&good[0]), Some(7)), (h(&[9u8; 16]), Some(8))];
        assert_eq!(liars(&before, &good), vec![8]);
        let honest = vec![(h(&good[0]), Some(7)), (h(&good[1]), Some(8))];
        assert!(liars(&honest, &good).is_empty());
        let unknown = vec![(h(&[0u8; 16]), None), (h(&good[1]), Some(8))];
        assert!(liars(&unknown, &good).is_empty(), "no sender, no ban");
    }

    #[test]
    fn blocks_assemble_in_order_whatever_order_they_arrive_in() {
        let bs = swarmbak_wire::BLOCK_SIZE as usize;
        let size = 3 * bs + 100; // a short last block
        let mut g = inner(4, size as u64);
        let block = |i: usize| Bytes::from(vec![i as u8; if i == 3 { 100 } else { bs }]);
        for i in [2usize, 0, 3] {
            let r = Torrent::add_block(&mut g, size, 1, (i * bs) as u32, block(i));
            assert_eq!(r, Ok(()));
        }
        Torrent::add_block(&mut g, size, 1, bs as u32, block(1)).unwrap();
        let done = Torrent::take_piece(&mut g, 1).unwrap();
        assert_eq!(done, (0..4).map(block).collect::<Vec<_>>());
        assert!(
            g.partial.is_empty(),
            "a completed piece leaves the partial set"
        );
    }

    /// The driver files blocks as they come and takes the piece when the session says it
    /// is complete: once, and only whole.
    #[test]
    fn a_complete_piece_is_taken_once() {
        let bs = swarmbak_wire::BLOCK_SIZE as usize;
        let mut g = inner(1, 2 * bs as u64);
        let b = Bytes::from(vec![1u8; bs]);
        assert_eq!(Torrent::add_block(&mut g, 2 * bs, 0, 0, b.clone()), Ok(()));
        assert!(
            Torrent::take_piece(&mut g, 0).is_err(),
            "a block is missing"
        );
        // the failed take dropped the partial piece: it is assembled again
        assert_eq!(Torrent::add_block(&mut g, 2 * bs, 0, 0, b.clone()), Ok(()));
        let second = (bs as u32, b.clone());
        assert_eq!(
            Torrent::add_block(&mut g, 2 * bs, 0, second.0, second.1),
            Ok(())
        );
        assert_eq!(Torrent::take_piece(&mut g, 0), Ok(vec![b.clone(), b]));
        assert!(Torrent::take_piece(&mut g, 0).is_err(), "taken once");
    }

    #[test]
    fn blocks_that_do_not_fit_are_refused() {
        let bs = swarmbak_wire::BLOCK_SIZE as usize;
        let size = 2 * bs;
        let mut g = inner(2, size as u64);
        let b = Bytes::from(vec![0u8; bs]);
        // Past the end, misaligned, or too long for the piece.
        assert!(Torrent::add_block(&mut g, size, 0, (2 * bs) as u32, b.clone()).is_err());
        assert!(Torrent::add_block(&mut g, size, 0, 5, b.clone()).is_err());
        let long = Bytes::from(vec![0u8; bs + 1]);
        assert!(Torrent::add_block(&mut g, size, 0, bs as u32, long).is_err());
        // Said complete with a block missing.
        Torrent::add_block(&mut g, size, 0, 0, b).unwrap();
        assert!(Torrent::take_piece(&mut g, 0).is_err());
    }
}
