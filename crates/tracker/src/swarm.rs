//! The in-memory peer lists: one [`Swarm`] per published torrent, in sharded maps so
//! announces for different torrents rarely wait on each other. Nothing here is persisted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use swarmbak_bencode::Encoder;

use crate::proto::{AnnounceEvent, InfoHash, PeerId};

const SHARDS: usize = 16;

#[derive(Debug, Clone)]
struct Peer {
    id: PeerId,
    addr: SocketAddr,
    seeder: bool,
    last_seen: Instant,
    machine: Option<Box<str>>,
}

/// One torrent's peers and counters.
#[derive(Debug, Default)]
pub struct Swarm {
    peers: Vec<Peer>,
    index: HashMap<PeerId, usize>,
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

    fn remove_at(&mut self, i: usize) {
        let p = self.peers.swap_remove(i);
        self.index.remove(&p.id);
        if p.seeder {
            self.seeders -= 1;
        }
        if let Some(moved) = self.peers.get(i) {
            self.index.insert(moved.id, i);
        }
    }

    /// Sweeps when the last sweep is a quarter of the peer timeout old.
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
    /// unknown torrent.
    pub fn announce(
        &self,
        ih: &InfoHash,
        a: &PeerAnnounce<'_>,
        now: Instant,
        interval: (i64, i64),
        enc: &mut Encoder,
    ) -> Option<Counts> {
        let mut shard = self.lock(ih);
        let swarm = shard.get_mut(ih)?;
        swarm.sweep_if_due(now, self.timeout);
        let seeder = a.left == 0;
        match (a.event, swarm.index.get(a.peer_id).copied()) {
            (Some(AnnounceEvent::Stopped), Some(i)) => swarm.remove_at(i),
            (Some(AnnounceEvent::Stopped), None) => {}
            (event, Some(i)) => {
                let p = &mut swarm.peers[i];
                let was_seeder = p.seeder;
                p.addr = a.addr;
                p.last_seen = now;
                p.seeder = seeder;
                if p.machine.as_deref() != a.machine && a.machine.is_some() {
                    p.machine = a.machine.map(Into::into);
                }
                if was_seeder != seeder {
                    if seeder {
                        swarm.seeders += 1;
                    } else {
                        swarm.seeders -= 1;
                    }
                }
                if event == Some(AnnounceEvent::Completed) && !was_seeder {
                    swarm.downloaded += 1;
                }
            }
            (event, None) => {
                // A peer that reappears on the same address with a new id replaces its
                // old entry.
                if let Some(i) = swarm.peers.iter().position(|p| p.addr == a.addr) {
                    swarm.remove_at(i);
                }
                swarm.index.insert(*a.peer_id, swarm.peers.len());
                swarm.peers.push(Peer {
                    id: *a.peer_id,
                    addr: a.addr,
                    seeder,
                    last_seen: now,
                    machine: a.machine.map(Into::into),
                });
                if seeder {
                    swarm.seeders += 1;
                }
                if event == Some(AnnounceEvent::Completed) {
                    swarm.downloaded += 1;
                }
            }
        }
        let counts = swarm.counts();
        let want = if a.event == Some(AnnounceEvent::Stopped) {
            0
        } else {
            a.numwant
        };
        enc.key(b"complete").int(counts.complete as i64);
        enc.key(b"downloaded").int(counts.downloaded as i64);
        enc.key(b"incomplete").int(counts.incomplete as i64);
        enc.key(b"interval").int(interval.0);
        enc.key(b"min interval").int(interval.1);
        write_peers(swarm, a, want, enc);
        Some(counts)
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

fn write_peers(swarm: &Swarm, a: &PeerAnnounce<'_>, want: usize, enc: &mut Encoder) {
    let n = swarm.peers.len();
    let others = swarm
        .peers
        .iter()
        .filter(|p| p.id != *a.peer_id && p.addr != a.addr)
        .count();
    let take = want.min(others);
    // Start at a random place so that different peers get different subsets.
    let start = if take < others && n > 0 {
        rand::random::<u32>() as usize % n
    } else {
        0
    };
    let chosen = (0..n)
        .map(|k| &swarm.peers[(start + k) % n])
        .filter(|p| p.id != *a.peer_id && p.addr != a.addr)
        .take(take);
    if a.compact {
        let mut v4 = Vec::with_capacity(take * 6);
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
            enc.begin_dict()
                .key(b"ip")
                .str(&p.addr.ip().to_string())
                .key(b"peer id")
                .bytes(p.id.as_ref())
                .key(b"port")
                .int(i64::from(p.addr.port()))
                .end();
        }
        enc.end();
    }
}

#[cfg(test)]
mod tests {
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
        }
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
}
