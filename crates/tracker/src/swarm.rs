//! The in-memory peer lists: one [`Swarm`] per published torrent, in sharded maps so
//! announces for different torrents rarely wait on each other. Nothing here is persisted.
//!
//! Every peer entry belongs to an **owner**, an opaque `u64` naming who announced it (the
//! enrolled machine, or in open mode the address it announced from, [`ip_owner`]). Only
//! its owner updates, moves or removes an entry; an owner holds at most a bounded number
//! of entries per swarm (its oldest is replaced beyond that). An announce costs
//! O(`numwant`), whatever the swarm's size: entries are found through hash maps and the
//! reply is a run of the swarm from a random start (`protocol-spec/tracker.md` §1).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use swarmbak_bencode::Encoder;

use crate::proto::{AnnounceEvent, InfoHash, PeerId};

const SHARDS: usize = 16;

/// Default most entries one owner (an enrolled machine) holds in one swarm: its agent and
/// a `seed`, `fetch` or `health` process or two running beside it, each with its own peer
/// id, plus the entries a restarted process leaves behind until they expire. Beyond it the
/// owner's least recently announced entry is replaced.
pub const MAX_PEERS_PER_OWNER: usize = 8;

/// Suggested cap when the owner is an address ([`ip_owner`], open mode): several machines
/// behind one NAT share it.
pub const MAX_PEERS_PER_ADDRESS_OWNER: usize = 64;

/// The owner of an announce in open mode: the IPv4 address, or the IPv6 /64 prefix (one
/// host can hold a whole /64, so a finer owner would not bound anything). The two ranges
/// do not meet: IPv4 owners have bit 32 set and the rest of the upper half clear, which
/// as a /64 prefix lies in `::/8`, reserved and never a peer's address.
pub fn ip_owner(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => (1 << 32) | u64::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => ip_owner(IpAddr::V4(v4)),
            None => (u128::from(v6) >> 64) as u64,
        },
    }
}

#[derive(Debug, Clone)]
struct Peer {
    id: PeerId,
    owner: u64,
    addr: SocketAddr,
    seeder: bool,
    /// Bytes it still wants, as last announced (what it holds: the torrent's length
    /// minus this).
    left: u64,
    last_seen: Instant,
    machine: Option<Box<str>>,
}

/// One torrent's peers and counters.
#[derive(Debug, Default)]
pub struct Swarm {
    /// Dense, in no particular order: replies are runs of it from a random start.
    peers: Vec<Peer>,
    /// (owner, peer id) -> position in `peers`.
    index: HashMap<(u64, PeerId), usize>,
    /// owner -> positions of its entries in `peers` (at most its cap, in no order).
    owners: HashMap<u64, Vec<usize>>,
    seeders: u64,
    downloaded: u64,
    last_sweep: Option<Instant>,
}

/// Seeders, downloads and leechers of a swarm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Seeders.
    pub complete: u64,
    /// `completed` events seen.
    pub downloaded: u64,
    /// Leechers.
    pub incomplete: u64,
}

impl Swarm {
    fn counts(&self) -> Counts {
        Counts {
            complete: self.seeders,
            downloaded: self.downloaded,
            incomplete: self.peers.len() as u64 - self.seeders,
        }
    }

    /// Removes entry `i`; the last entry takes its place. O(the owners' caps).
    fn remove_at(&mut self, i: usize) {
        let p = self.peers.swap_remove(i);
        self.index.remove(&(p.owner, p.id));
        if let Some(list) = self.owners.get_mut(&p.owner) {
            if let Some(k) = list.iter().position(|&j| j == i) {
                list.swap_remove(k);
            }
            if list.is_empty() {
                self.owners.remove(&p.owner);
            }
        }
        if p.seeder {
            self.seeders -= 1;
        }
        let from = self.peers.len();
        if let Some(moved) = self.peers.get(i) {
            if let Some(slot) = self.index.get_mut(&(moved.owner, moved.id)) {
                *slot = i;
            }
            if let Some(list) = self.owners.get_mut(&moved.owner) {
                if let Some(slot) = list.iter_mut().find(|j| **j == from) {
                    *slot = i;
                }
            }
        }
    }

    /// The owner's entry announced from `addr`, if any. O(the owner's cap).
    fn owned_at(&self, owner: u64, addr: SocketAddr) -> Option<usize> {
        let list = self.owners.get(&owner)?;
        visited(list.len());
        list.iter().copied().find(|&j| self.peers[j].addr == addr)
    }

    /// Makes room for one more entry of `owner`: replaces (removes) its least recently
    /// announced entry while it holds `cap` or more. O(the owner's cap).
    fn make_room(&mut self, owner: u64, cap: usize) {
        loop {
            let Some(list) = self.owners.get(&owner) else {
                return;
            };
            if list.len() < cap {
                return;
            }
            visited(list.len());
            let Some(oldest) = list
                .iter()
                .copied()
                .min_by_key(|&j| self.peers[j].last_seen)
            else {
                return;
            };
            self.remove_at(oldest);
        }
    }

    fn set_seeder(&mut self, i: usize, seeder: bool) -> bool {
        let was = std::mem::replace(&mut self.peers[i].seeder, seeder);
        match (was, seeder) {
            (false, true) => self.seeders += 1,
            (true, false) => self.seeders -= 1,
            _ => {}
        }
        was
    }

    /// Records one announce (already known to be for this swarm); returns the position of
    /// the announcing peer's entry, `None` after `stopped`.
    fn record(&mut self, a: &PeerAnnounce<'_>, now: Instant) -> Option<usize> {
        let key = (a.owner, *a.peer_id);
        let seeder = a.left == 0;
        let mut found = self.index.get(&key).copied();
        if a.event == Some(AnnounceEvent::Stopped) {
            if let Some(i) = found {
                self.remove_at(i);
            }
            return None;
        }
        // One entry per (owner, address): a peer that reappears on the same address with
        // a new id replaces its old entry, and one that moves onto the address of another
        // of its owner's entries replaces that one. Another owner's entries are never
        // touched.
        if found.is_none_or(|i| self.peers[i].addr != a.addr) {
            if let Some(j) = self.owned_at(a.owner, a.addr) {
                self.remove_at(j);
                found = self.index.get(&key).copied();
            }
        }
        let i = match found {
            Some(i) => {
                let was_seeder = self.set_seeder(i, seeder);
                if a.event == Some(AnnounceEvent::Completed) && !was_seeder {
                    self.downloaded += 1;
                }
                i
            }
            None => {
                self.make_room(a.owner, a.max_per_owner.max(1));
                let i = self.peers.len();
                self.peers.push(Peer {
                    id: *a.peer_id,
                    owner: a.owner,
                    addr: a.addr,
                    seeder: false,
                    left: a.left,
                    last_seen: now,
                    machine: None,
                });
                self.index.insert(key, i);
                self.owners
                    .entry(a.owner)
                    .or_insert_with(|| Vec::with_capacity(1))
                    .push(i);
                self.set_seeder(i, seeder);
                if a.event == Some(AnnounceEvent::Completed) {
                    self.downloaded += 1;
                }
                i
            }
        };
        let p = &mut self.peers[i];
        p.addr = a.addr;
        p.left = a.left;
        p.last_seen = now;
        if a.machine.is_some() && p.machine.as_deref() != a.machine {
            p.machine = a.machine.map(Into::into);
        }
        Some(i)
    }

    /// Panics unless the maps and counters agree with `peers`.
    #[cfg(test)]
    fn check(&self) {
        assert_eq!(self.index.len(), self.peers.len());
        assert_eq!(
            self.owners.values().map(Vec::len).sum::<usize>(),
            self.peers.len()
        );
        for (i, p) in self.peers.iter().enumerate() {
            assert_eq!(self.index.get(&(p.owner, p.id)), Some(&i));
            assert!(self.owners[&p.owner].contains(&i));
        }
        let seeders = self.peers.iter().filter(|p| p.seeder).count();
        assert_eq!(self.seeders, seeders as u64);
    }

    /// Sweeps when the last sweep is a quarter of the peer timeout old: O(n), but at most
    /// four times per timeout, not on every announce.
    fn sweep_if_due(&mut self, now: Instant, timeout: Duration) {
        if self
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= timeout / 4)
        {
            self.sweep(now, timeout);
        }
    }

    fn sweep(&mut self, now: Instant, timeout: Duration) {
        let mut i = 0;
        while i < self.peers.len() {
            if now.saturating_duration_since(self.peers[i].last_seen) > timeout {
                self.remove_at(i);
            } else {
                i += 1;
            }
        }
        self.last_sweep = Some(now);
        if self.peers.capacity() > 64 && self.peers.capacity() > 4 * self.peers.len() {
            self.peers.shrink_to_fit();
            self.index.shrink_to_fit();
            self.owners.shrink_to_fit();
        }
    }
}

/// All swarms, sharded by info-hash.
pub struct Swarms {
    shards: Vec<Mutex<HashMap<InfoHash, Swarm>>>,
    timeout: Duration,
}

/// The parts of an announce the swarm needs.
pub struct PeerAnnounce<'a> {
    /// Announcing peer.
    pub peer_id: &'a PeerId,
    /// Where others reach it.
    pub addr: SocketAddr,
    /// Bytes left.
    pub left: u64,
    /// The event, if any.
    pub event: Option<AnnounceEvent>,
    /// Peers wanted.
    pub numwant: usize,
    /// Compact reply?
    pub compact: bool,
    /// `machine`, if sent.
    pub machine: Option<&'a str>,
    /// Who announces: an opaque identity (the enrolled machine's id, or [`ip_owner`] in
    /// open mode). Entries are keyed by (owner, peer id): an announce never updates,
    /// moves or removes another owner's entry, even one with the same peer id.
    pub owner: u64,
    /// Most entries `owner` may hold in this swarm ([`MAX_PEERS_PER_OWNER`] for a
    /// machine); a new entry beyond it replaces the owner's least recently announced one.
    /// 0 counts as 1.
    pub max_per_owner: usize,
    /// `no_peer_id=1`: leave `peer id` out of a dictionary peer list (compact lists
    /// never carry peer ids).
    pub no_peer_id: bool,
}

#[cfg(test)]
thread_local! {
    static VISITED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts peer entries looked at (tests only: they assert an announce's cost).
#[inline]
fn visited(_n: usize) {
    #[cfg(test)]
    VISITED.with(|v| v.set(v.get() + _n));
}

fn shard_of(ih: &InfoHash) -> usize {
    // Info-hashes are SHA-1 outputs: any byte is uniform.
    usize::from(ih.0[0]) % SHARDS
}

impl Swarms {
    /// Empty swarms; peers not heard from for `timeout` are dropped.
    pub fn new(timeout: Duration) -> Swarms {
        Swarms {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            timeout,
        }
    }

    fn lock(&self, ih: &InfoHash) -> std::sync::MutexGuard<'_, HashMap<InfoHash, Swarm>> {
        // A panic while holding the lock cannot leave a swarm inconsistent in a way that
        // matters more than losing the tracker: keep serving.
        self.shards[shard_of(ih)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `ih` known (published); does nothing if it already is.
    pub fn add_torrent(&self, ih: InfoHash) {
        self.lock(&ih).entry(ih).or_default();
    }

    /// Is `ih` known?
    pub fn contains(&self, ih: &InfoHash) -> bool {
        self.lock(ih).contains_key(ih)
    }

    /// Records an announce and writes the reply's `complete`, `incomplete` and peer list
    /// into `enc` (inside the reply dictionary, keys in order). Returns `None` for an
    /// unknown torrent. Costs O(`numwant` + the owner's cap), whatever the swarm's size
    /// (plus, four times per peer timeout, a sweep of the swarm).
    pub fn announce(
        &self,
        ih: &InfoHash,
        a: &PeerAnnounce<'_>,
        now: Instant,
        interval: (i64, i64),
        enc: &mut Encoder,
    ) -> Option<Counts> {
        self.record_announce(ih, a, now, |swarm, me, counts| {
            let want = if me.is_none() { 0 } else { a.numwant };
            enc.key(b"complete").int(counts.complete as i64);
            enc.key(b"downloaded").int(counts.downloaded as i64);
            enc.key(b"incomplete").int(counts.incomplete as i64);
            enc.key(b"interval").int(interval.0);
            enc.key(b"min interval").int(interval.1);
            write_peers(swarm, a, me, want, enc);
            counts
        })
    }

    /// Records an announce as [`Swarms::announce`] does and appends to `out` the compact
    /// peer list of one address family only (BEP 15: an IPv4 request is answered with
    /// IPv4 peers, 6 bytes each; an IPv6 request with IPv6 peers, 18 bytes each). Returns
    /// `None` for an unknown torrent. Costs O(`numwant` + the owner's cap) when the
    /// swarm's peers are of the requester's family, at most O(swarm) otherwise.
    pub fn announce_compact(
        &self,
        ih: &InfoHash,
        a: &PeerAnnounce<'_>,
        now: Instant,
        ipv6: bool,
        out: &mut Vec<u8>,
    ) -> Option<Counts> {
        self.record_announce(ih, a, now, |swarm, me, counts| {
            let want = if me.is_none() { 0 } else { a.numwant };
            for p in chosen(swarm, a, me, want, Some(ipv6)) {
                match p.addr.ip() {
                    IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
                    IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
                }
                out.extend_from_slice(&p.addr.port().to_be_bytes());
            }
            counts
        })
    }

    /// Records `a` in its swarm (sweeping first when due) and hands the swarm, the
    /// announcing peer's entry (`None` after `stopped`) and the counts to `reply`.
    fn record_announce<T>(
        &self,
        ih: &InfoHash,
        a: &PeerAnnounce<'_>,
        now: Instant,
        reply: impl FnOnce(&Swarm, Option<usize>, Counts) -> T,
    ) -> Option<T> {
        let mut shard = self.lock(ih);
        let swarm = shard.get_mut(ih)?;
        swarm.sweep_if_due(now, self.timeout);
        let me = swarm.record(a, now);
        let counts = swarm.counts();
        Some(reply(swarm, me, counts))
    }

    /// Counts for one torrent, `None` if unknown.
    pub fn counts(&self, ih: &InfoHash, now: Instant) -> Option<Counts> {
        let mut shard = self.lock(ih);
        let swarm = shard.get_mut(ih)?;
        swarm.sweep_if_due(now, self.timeout);
        Some(swarm.counts())
    }

    /// Drops expired peers everywhere; returns how many peers remain.
    pub fn sweep_all(&self, now: Instant) -> usize {
        let mut total = 0;
        for s in &self.shards {
            let mut shard = s.lock().unwrap_or_else(|p| p.into_inner());
            for swarm in shard.values_mut() {
                swarm.sweep(now, self.timeout);
                total += swarm.peers.len();
            }
        }
        total
    }

    /// Peers currently known, all swarms together.
    pub fn peer_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .map(|w| w.peers.len())
                    .sum::<usize>()
            })
            .sum()
    }

    /// What each owner's peers say they hold of the torrents `size_of` knows, summed over
    /// those torrents (per torrent, the most any one of the owner's entries holds):
    /// `size_of(ih)` is the torrent's length and the owner not to count (its own
    /// machine's snapshots are not held for others). Claims from announces, not proofs.
    pub fn held_by_owner(
        &self,
        size_of: impl Fn(&InfoHash) -> Option<(u64, Option<u64>)>,
    ) -> HashMap<u64, u64> {
        let mut out: HashMap<u64, u64> = HashMap::new();
        for s in &self.shards {
            let shard = s.lock().unwrap_or_else(|p| p.into_inner());
            for (ih, swarm) in shard.iter() {
                let Some((len, own)) = size_of(ih) else {
                    continue;
                };
                let mut best: HashMap<u64, u64> = HashMap::new();
                for p in &swarm.peers {
                    if Some(p.owner) == own {
                        continue;
                    }
                    let held = len.saturating_sub(p.left);
                    let e = best.entry(p.owner).or_default();
                    *e = (*e).max(held);
                }
                for (o, h) in best {
                    *out.entry(o).or_default() += h;
                }
            }
        }
        out
    }

    /// Every `machine` value announced by a peer present now, all swarms together.
    pub fn online_machines(&self) -> std::collections::HashSet<String> {
        let mut out = std::collections::HashSet::new();
        for s in &self.shards {
            let shard = s.lock().unwrap_or_else(|p| p.into_inner());
            for swarm in shard.values() {
                for p in &swarm.peers {
                    if let Some(m) = p.machine.as_deref() {
                        if !out.contains(m) {
                            out.insert(m.to_owned());
                        }
                    }
                }
            }
        }
        out
    }

    /// Machine keys (as announced) of the peers of `ih`.
    pub fn machines(&self, ih: &InfoHash) -> Vec<String> {
        let shard = self.lock(ih);
        let mut v: Vec<String> = shard
            .get(ih)
            .map(|s| {
                s.peers
                    .iter()
                    .filter_map(|p| p.machine.as_deref().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.dedup();
        v
    }
}

/// Up to `want` entries for a reply, a run of the swarm from a random start, leaving out
/// the requester's own entry (`me`) and any entry with its peer id or its address; only
/// IPv6 (`Some(true)`) or IPv4 (`Some(false)`) entries when `family` says so. Stops as
/// soon as it has `want`: O(`want` + entries left out).
fn chosen<'s>(
    swarm: &'s Swarm,
    a: &PeerAnnounce<'_>,
    me: Option<usize>,
    want: usize,
    family: Option<bool>,
) -> impl Iterator<Item = &'s Peer> + 's {
    let n = swarm.peers.len();
    // Start at a random place so that different peers get different subsets (when
    // everyone fits, the order does not matter).
    let start = if want > 0 && n > want + 1 {
        rand::random::<u32>() as usize % n
    } else {
        0
    };
    let (tail, head) = swarm.peers.split_at(start.min(n));
    let (id, addr) = (*a.peer_id, a.addr);
    head.iter()
        .enumerate()
        .map(move |(k, p)| (start + k, p))
        .chain(tail.iter().enumerate())
        .take(if want == 0 { 0 } else { n })
        .inspect(|_| visited(1))
        .filter(move |&(k, p)| {
            Some(k) != me
                && p.id != id
                && p.addr != addr
                && family.is_none_or(|v6| p.addr.is_ipv6() == v6)
        })
        .map(|(_, p)| p)
        .take(want)
}

/// Writes `peers` (and `peers6`): the entries [`chosen`] picks.
fn write_peers(
    swarm: &Swarm,
    a: &PeerAnnounce<'_>,
    me: Option<usize>,
    want: usize,
    enc: &mut Encoder,
) {
    let n = swarm.peers.len();
    let chosen = chosen(swarm, a, me, want, None);
    if a.compact {
        let mut v4 = Vec::with_capacity(want.min(n) * 6);
        let mut v6 = Vec::new();
        for p in chosen {
            match p.addr.ip() {
                IpAddr::V4(ip) => {
                    v4.extend_from_slice(&ip.octets());
                    v4.extend_from_slice(&p.addr.port().to_be_bytes());
                }
                IpAddr::V6(ip) => {
                    v6.extend_from_slice(&ip.octets());
                    v6.extend_from_slice(&p.addr.port().to_be_bytes());
                }
            }
        }
        enc.key(b"peers").bytes(&v4);
        if !v6.is_empty() {
            enc.key(b"peers6").bytes(&v6);
        }
    } else {
        enc.key(b"peers").begin_list();
        for p in chosen {
            enc.begin_dict().key(b"ip").str(&p.addr.ip().to_string());
            if !a.no_peer_id {
                enc.key(b"peer id").bytes(p.id.as_ref());
            }
            enc.key(b"port").int(i64::from(p.addr.port())).end();
        }
        enc.end();
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn what_each_owner_holds_for_others() {
        let sw = Swarms::new(Duration::from_secs(60));
        let (a, b) = (InfoHash([1; 20]), InfoHash([2; 20]));
        sw.add_torrent(a);
        sw.add_torrent(b);
        let now = Instant::now();
        let ann = |ih: InfoHash, owner: u64, id: u8, port: u16, left: u64| {
            let pid = PeerId([id; 20]);
            let pa = PeerAnnounce {
                peer_id: &pid,
                addr: SocketAddr::from(([10, 0, 0, owner as u8], port)),
                left,
                event: None,
                numwant: 0,
                compact: true,
                machine: None,
                owner,
                max_per_owner: MAX_PEERS_PER_OWNER,
                no_peer_id: false,
            };
            let _ = sw.announce_compact(&ih, &pa, now, false, &mut Vec::new());
        };
        // Torrent a (1000 bytes) is owner 1's: its own entry does not count.
        ann(a, 1, 1, 1, 0);
        ann(a, 2, 2, 1, 600); // holds 400
        ann(a, 2, 3, 2, 900); // a second entry of owner 2: the larger counts
        ann(b, 2, 4, 3, 0); // torrent b (50 bytes, owner unknown): holds 50
        ann(b, 3, 5, 1, 10); // holds 40
        let held = sw.held_by_owner(|ih| match ih.0[0] {
            1 => Some((1000, Some(1))),
            2 => Some((50, None)),
            _ => None,
        });
        assert_eq!(held.get(&1), None);
        assert_eq!(held[&2], 450);
        assert_eq!(held[&3], 40);
    }
    use super::*;

    fn ann<'a>(id: &'a PeerId, port: u16, left: u64) -> PeerAnnounce<'a> {
        PeerAnnounce {
            peer_id: id,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            left,
            event: None,
            numwant: 50,
            compact: true,
            machine: None,
            owner: 1,
            max_per_owner: 8,
            no_peer_id: false,
        }
    }

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn pid(n: u32) -> PeerId {
        let mut p = [b'x'; 20];
        p[16..].copy_from_slice(&n.to_be_bytes());
        PeerId(p)
    }

    /// The announce's reply, read as a client reads it.
    fn reply(
        swarms: &Swarms,
        ih: &InfoHash,
        a: &PeerAnnounce<'_>,
        now: Instant,
    ) -> crate::proto::AnnounceResponse {
        let mut e = Encoder::new();
        e.begin_dict();
        swarms.announce(ih, a, now, (60, 30), &mut e).unwrap();
        e.end();
        crate::proto::parse_announce_response(&e.finish().unwrap()).unwrap()
    }

    /// The addresses an observer (owner 999, port 9) is told about.
    fn seen(swarms: &Swarms, ih: &InfoHash, now: Instant) -> Vec<SocketAddr> {
        let obs = pid(999_999);
        let mut a = ann(&obs, 9, 1);
        a.owner = 999;
        a.numwant = 200;
        let mut v: Vec<SocketAddr> = reply(swarms, ih, &a, now)
            .peers
            .iter()
            .map(|p| p.addr)
            .collect();
        v.sort();
        v
    }

    fn peers_of(swarms: &Swarms, ih: &InfoHash, a: &PeerAnnounce<'_>, now: Instant) -> Vec<u8> {
        let mut e = Encoder::new();
        e.begin_dict();
        swarms.announce(ih, a, now, (60, 30), &mut e).unwrap();
        e.end();
        let out = e.finish().unwrap();
        let v = swarmbak_bencode::decode(&out).unwrap();
        v.as_dict()
            .unwrap()
            .get(b"peers")
            .unwrap()
            .as_bytes()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn expiry_and_replacement() {
        let s = Swarms::new(Duration::from_secs(10));
        let ih = InfoHash([1; 20]);
        let mut e = Encoder::new();
        assert!(s
            .announce(
                &InfoHash([2; 20]),
                &ann(&PeerId([0; 20]), 1, 0),
                Instant::now(),
                (1, 1),
                &mut e
            )
            .is_none());
        s.add_torrent(ih);
        let t0 = Instant::now();
        let (p1, p2, p3) = (PeerId([1; 20]), PeerId([2; 20]), PeerId([3; 20]));
        peers_of(&s, &ih, &ann(&p1, 1001, 0), t0);
        assert_eq!(peers_of(&s, &ih, &ann(&p2, 1002, 5), t0).len(), 6);
        // p1 silent for 11 s: gone; p2 announced at t0 + 5 s stays.
        peers_of(&s, &ih, &ann(&p2, 1002, 5), t0 + Duration::from_secs(5));
        let seen = peers_of(&s, &ih, &ann(&p3, 1003, 5), t0 + Duration::from_secs(11));
        assert_eq!(seen, [127, 0, 0, 1, 0x03, 0xea]);
        assert_eq!(
            s.counts(&ih, t0 + Duration::from_secs(11)),
            Some(Counts {
                complete: 0,
                downloaded: 0,
                incomplete: 2
            })
        );
        // A new id on p3's address replaces p3.
        let p4 = PeerId([4; 20]);
        peers_of(&s, &ih, &ann(&p4, 1003, 0), t0 + Duration::from_secs(11));
        assert_eq!(
            s.counts(&ih, t0 + Duration::from_secs(11)),
            Some(Counts {
                complete: 1,
                downloaded: 0,
                incomplete: 1
            })
        );
        assert_eq!(s.sweep_all(t0 + Duration::from_secs(30)), 0);
    }

    #[test]
    fn another_owner_cannot_move_or_remove_a_peer() {
        let s = Swarms::new(Duration::from_secs(100));
        let ih = InfoHash([1; 20]);
        s.add_torrent(ih);
        let t = Instant::now();
        let victim = pid(1);
        let mut v = ann(&victim, 1001, 0);
        v.owner = 10;
        reply(&s, &ih, &v, t);
        let victim_counts = Counts {
            complete: 1,
            downloaded: 0,
            incomplete: 1, // the observer
        };
        // The attacker knows the victim's peer id and announces it from elsewhere.
        let mut x = ann(&victim, 6666, 5);
        x.owner = 66;
        reply(&s, &ih, &x, t);
        assert!(seen(&s, &ih, t).contains(&at(1001)), "the victim was moved");
        // ... and stops it.
        x.event = Some(AnnounceEvent::Stopped);
        reply(&s, &ih, &x, t);
        assert!(
            seen(&s, &ih, t).contains(&at(1001)),
            "the victim was removed"
        );
        // ... and announces a new peer id on the victim's address and port (behind the
        // same NAT, or a proxy trusted for `ip`): a peer of its own, the victim stays.
        let other = pid(2);
        let mut y = ann(&other, 1001, 5);
        y.owner = 66;
        reply(&s, &ih, &y, t);
        y.event = Some(AnnounceEvent::Stopped);
        reply(&s, &ih, &y, t);
        assert_eq!(s.counts(&ih, t), Some(victim_counts));
        assert_eq!(seen(&s, &ih, t), [at(1001)]);
        // The owner itself still moves and removes its peer.
        v.addr = at(1002);
        reply(&s, &ih, &v, t);
        assert_eq!(seen(&s, &ih, t), [at(1002)]);
        v.event = Some(AnnounceEvent::Stopped);
        reply(&s, &ih, &v, t);
        assert_eq!(seen(&s, &ih, t), []);
    }

    #[test]
    fn an_owner_holds_at_most_its_cap_and_loses_its_oldest_entries() {
        let s = Swarms::new(Duration::from_secs(100));
        let ih = InfoHash([1; 20]);
        s.add_torrent(ih);
        let t0 = Instant::now();
        let honest = pid(0);
        let mut h = ann(&honest, 1, 0);
        h.owner = 5;
        reply(&s, &ih, &h, t0);
        // 1,000 fake seeders from one owner, each with a fresh peer id and port.
        let ids: Vec<PeerId> = (1..=1000).map(pid).collect();
        for (k, id) in ids.iter().enumerate() {
            let mut a = ann(id, 2000 + k as u16, 0);
            a.owner = 7;
            a.max_per_owner = 8;
            reply(&s, &ih, &a, t0 + Duration::from_millis(k as u64));
        }
        let now = t0 + Duration::from_secs(2);
        let mut want: Vec<SocketAddr> = vec![at(1)];
        want.extend((992..1000).map(|k| at(2000 + k)));
        assert_eq!(seen(&s, &ih, now), want, "the honest peer and the newest 8");
        assert_eq!(
            s.counts(&ih, now),
            Some(Counts {
                complete: 9,
                downloaded: 0,
                incomplete: 1 // the observer
            })
        );
        // Re-announcing an existing entry refreshes it: it is no longer the oldest.
        let mut a = ann(&ids[992], 2992, 0);
        a.owner = 7;
        reply(&s, &ih, &a, now);
        let fresh = pid(5000);
        let mut b = ann(&fresh, 3000, 0);
        b.owner = 7;
        reply(&s, &ih, &b, now);
        let after = seen(&s, &ih, now);
        assert!(
            after.contains(&at(2992)) && after.contains(&at(3000)),
            "{after:?}"
        );
        assert!(
            !after.contains(&at(2993)),
            "the oldest (2993) was replaced: {after:?}"
        );
        assert_eq!(after.len(), 9);
        // A larger cap (open mode: the owner is an address) is the caller's choice.
        for k in 0..20u16 {
            let id = pid(10_000 + u32::from(k));
            let mut a = ann(&id, 4000 + k, 5);
            a.owner = 8;
            a.max_per_owner = 16;
            reply(&s, &ih, &a, now);
        }
        assert_eq!(s.counts(&ih, now).map(|c| c.incomplete), Some(16 + 1));
    }

    #[test]
    fn announce_cost_does_not_grow_with_the_swarm() {
        let s = Swarms::new(Duration::from_secs(100));
        let ih = InfoHash([1; 20]);
        s.add_torrent(ih);
        let t = Instant::now();
        let ids: Vec<PeerId> = (0..5_000).map(pid).collect();
        let mut worst = 0;
        for (k, id) in ids.iter().enumerate() {
            let mut a = ann(id, 1 + (k % 60_000) as u16, (k % 2) as u64);
            a.addr = SocketAddr::from(([10, 0, (k >> 8) as u8, k as u8], 6881));
            a.owner = k as u64;
            a.numwant = 50;
            VISITED.with(|v| v.set(0));
            let r = reply(&s, &ih, &a, t);
            worst = worst.max(VISITED.with(|v| v.get()));
            assert_eq!(r.peers.len(), k.min(50));
            assert!(
                r.peers.iter().all(|p| p.addr != a.addr),
                "the requester is in its answer"
            );
        }
        // numwant plus the requester's own entry, whatever the swarm's size.
        assert!(worst <= 51, "an announce looked at {worst} entries");
        assert_eq!(
            s.counts(&ih, t),
            Some(Counts {
                complete: 2_500,
                downloaded: 0,
                incomplete: 2_500
            })
        );
        // Different peers see different subsets.
        let first = |n: u32| {
            let id = pid(100_000 + n);
            let mut a = ann(&id, 9, 1);
            a.owner = 1_000_000 + u64::from(n);
            a.addr = SocketAddr::from(([10, 9, 9, n as u8], 9));
            reply(&s, &ih, &a, t).peers[0].addr
        };
        let firsts: std::collections::HashSet<SocketAddr> = (0..10).map(first).collect();
        assert!(firsts.len() > 1);
    }

    #[test]
    fn no_peer_id_leaves_peer_ids_out() {
        let s = Swarms::new(Duration::from_secs(100));
        let ih = InfoHash([1; 20]);
        s.add_torrent(ih);
        let t = Instant::now();
        for n in 0..3 {
            let id = pid(n);
            let mut a = ann(&id, 100 + n as u16, 0);
            a.owner = u64::from(n);
            reply(&s, &ih, &a, t);
        }
        let me = pid(77);
        let mut a = ann(&me, 77, 1);
        a.owner = 77;
        a.compact = false;
        let with = reply(&s, &ih, &a, t);
        assert_eq!(with.peers.len(), 3);
        assert!(with.peers.iter().all(|p| p.peer_id.is_some()));
        a.no_peer_id = true;
        let without = reply(&s, &ih, &a, t);
        assert_eq!(without.peers.len(), 3);
        assert!(without.peers.iter().all(|p| p.peer_id.is_none()));
        // A compact list has no room for them anyway.
        a.compact = true;
        a.no_peer_id = false;
        let mut e = Encoder::new();
        e.begin_dict();
        s.announce(&ih, &a, t, (60, 30), &mut e).unwrap();
        e.end();
        let body = e.finish().unwrap();
        assert!(!body.windows(7).any(|w| w == b"peer id"));
    }

    #[test]
    fn maps_stay_consistent_under_random_announces() {
        let s = Swarms::new(Duration::from_secs(10));
        let ih = InfoHash([1; 20]);
        s.add_torrent(ih);
        let t0 = Instant::now();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for step in 0..20_000u64 {
            let id = pid(next(64) as u32);
            let mut a = ann(&id, 1 + next(16) as u16, next(2));
            a.owner = next(6);
            a.max_per_owner = 1 + next(4) as usize;
            a.event = match next(8) {
                0 => Some(AnnounceEvent::Stopped),
                1 => Some(AnnounceEvent::Completed),
                _ => None,
            };
            let now = t0 + Duration::from_millis(step * 3);
            let r = reply(&s, &ih, &a, now);
            assert!(r.peers.iter().all(|p| p.addr != a.addr));
            let mut shard = s.lock(&ih);
            let swarm = shard.get_mut(&ih).unwrap();
            swarm.check();
            for list in swarm.owners.values() {
                assert!(list.len() <= 4);
            }
            if a.event != Some(AnnounceEvent::Stopped) {
                let i = swarm.index[&(a.owner, id)];
                assert_eq!(swarm.peers[i].addr, a.addr);
                assert!(list_has_unique_addrs(swarm, a.owner));
            }
        }
        assert_eq!(s.sweep_all(t0 + Duration::from_secs(1000)), 0);
        s.lock(&ih).get(&ih).unwrap().check();
    }

    fn list_has_unique_addrs(swarm: &Swarm, owner: u64) -> bool {
        let mut addrs: Vec<SocketAddr> = swarm.owners[&owner]
            .iter()
            .map(|&j| swarm.peers[j].addr)
            .collect();
        let n = addrs.len();
        addrs.sort();
        addrs.dedup();
        addrs.len() == n
    }

    #[test]
    fn ip_owners() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_owner(v4), ip_owner(mapped));
        assert_ne!(ip_owner(v4), ip_owner("192.0.2.8".parse().unwrap()));
        // One /64, one owner.
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(ip_owner(a), ip_owner(b));
        assert_ne!(ip_owner(a), ip_owner("2001:db8:1:3::1".parse().unwrap()));
    }
}
