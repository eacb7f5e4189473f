//! The choking algorithm (BEP 3, as BitTorrent 4 and libtorrent's "fixed slots,
//! round-robin optimistic" describe it), as a pure state machine.
//!
//! Every `rechoke_interval` (10 s) the `unchoke_slots` (4) interested, non-snubbed peers
//! with the best rates are unchoked: the rate at which they upload to us while we
//! download, the rate at which we upload to them once we seed. One more peer, chosen at
//! random among the other interested peers, is unchoked optimistically and kept for
//! `optimistic_interval` (30 s); peers connected for less than `new_peer_age` (90 s, three
//! optimistic rounds) are `new_peer_weight` (3) times as likely to be chosen, so they get
//! a first piece to trade with. Snubbed peers (nothing received for a minute) only get
//! the optimistic slot.
//!
//! Between rechokes a free regular slot (fewer than `unchoke_slots` interested peers hold
//! one) goes at once to an interested peer that asks (`fill`, and every `tick`), as
//! libtorrent does: on a quiet swarm a new peer is served within milliseconds rather
//! than at the next round. Only free slots are filled; nobody is choked to make room.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::rng::Rng;

/// Choker parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChokerConfig {
    /// Regular unchoke slots. Default 4.
    pub unchoke_slots: usize,
    /// How often the regular slots are recomputed. Default 10 s.
    pub rechoke_interval: Duration,
    /// How long an optimistic unchoke lasts. Default 30 s.
    pub optimistic_interval: Duration,
    /// Peers first seen less than this long ago count as new. Default 90 s.
    pub new_peer_age: Duration,
    /// How much likelier a new peer is to be the optimistic unchoke. Default 3.
    pub new_peer_weight: u64,
    /// RNG seed for the optimistic choice.
    pub seed: u64,
}

impl Default for ChokerConfig {
    fn default() -> Self {
        ChokerConfig {
            unchoke_slots: 4,
            rechoke_interval: Duration::from_secs(10),
            optimistic_interval: Duration::from_secs(30),
            new_peer_age: Duration::from_secs(90),
            new_peer_weight: 3,
            seed: 0x5eed,
        }
    }
}

/// What the choker knows of one connected peer at a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats<K> {
    /// The caller's key for the peer (a connection id).
    pub key: K,
    /// Is the peer interested in what we have?
    pub interested: bool,
    /// Bytes per second the peer sends us.
    pub download_rate: u64,
    /// Bytes per second we send the peer.
    pub upload_rate: u64,
    /// Nothing received from the peer for a minute while we wanted something.
    pub snubbed: bool,
}

/// A change to send to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChokeDecision {
    /// Send `choke`.
    Choke,
    /// Send `unchoke`.
    Unchoke,
}

/// The choker. `K` is the caller's peer key.
#[derive(Debug, Clone)]
pub struct Choker<K> {
    config: ChokerConfig,
    rng: Rng,
    seeding: bool,
    regular: BTreeSet<K>,
    optimistic: Option<K>,
    last_rechoke: Option<Instant>,
    last_optimistic: Option<Instant>,
    first_seen: HashMap<K, Instant>,
}

impl<K: Clone + Eq + Hash + Ord> Choker<K> {
    /// A choker with no peer unchoked.
    pub fn new(config: ChokerConfig) -> Self {
        Choker {
            rng: Rng::new(config.seed),
            config,
            seeding: false,
            regular: BTreeSet::new(),
            optimistic: None,
            last_rechoke: None,
            last_optimistic: None,
            first_seen: HashMap::new(),
        }
    }

    /// Switches between ranking by download rate (leeching) and upload rate (seeding);
    /// the next tick rechokes.
    pub fn set_seeding(&mut self, seeding: bool) {
        if self.seeding != seeding {
            self.seeding = seeding;
            self.last_rechoke = None;
        }
    }

    /// Is `key` unchoked (regular or optimistic)?
    pub fn is_unchoked(&self, key: &K) -> bool {
        self.regular.contains(key) || self.optimistic.as_ref() == Some(key)
    }

    /// The peers in regular slots.
    pub fn regular(&self) -> impl Iterator<Item = &K> {
        self.regular.iter()
    }

    /// The optimistic unchoke.
    pub fn optimistic(&self) -> Option<&K> {
        self.optimistic.as_ref()
    }

    /// Advances to `now` with the current peers (every connected peer, once). Peers
    /// missing from `peers` are forgotten. Returns the messages to send, sorted by key;
    /// between rechoke intervals only free slots are filled and the optimistic slot
    /// rotates.
    pub fn tick(&mut self, now: Instant, peers: &[PeerStats<K>]) -> Vec<(K, ChokeDecision)> {
        let before: BTreeSet<K> = self.unchoked_set();
        self.forget_departed(now, peers);
        if self
            .optimistic
            .as_ref()
            .is_some_and(|k| !peers.iter().any(|p| &p.key == k && p.interested))
        {
            self.optimistic = None;
        }

        let rechoke_due = self
            .last_rechoke
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.rechoke_interval);
        let optimistic_due = self.optimistic.is_none()
            || self.last_optimistic.is_none_or(|t| {
                now.saturating_duration_since(t) >= self.config.optimistic_interval
            });
        if rechoke_due {
            self.last_rechoke = Some(now);
            let mut ranked: Vec<&PeerStats<K>> = peers
                .iter()
                .filter(|p| p.interested && !p.snubbed)
                .collect();
            let seeding = self.seeding;
            ranked.sort_by(|a, b| {
                let (ra, rb) = if seeding {
                    (a.upload_rate, b.upload_rate)
                } else {
                    (a.download_rate, b.download_rate)
                };
                rb.cmp(&ra).then_with(|| a.key.cmp(&b.key))
            });
            self.regular = ranked
                .into_iter()
                .take(self.config.unchoke_slots)
                .map(|p| p.key.clone())
                .collect();
        }
        let optimistic_taken = self
            .optimistic
            .as_ref()
            .is_some_and(|k| self.regular.contains(k));
        if optimistic_due || optimistic_taken {
            self.pick_optimistic(now, peers);
        }
        self.fill_free_slots(peers);
        self.changes(before, peers)
    }

    /// Between rounds: gives free regular slots to interested peers at once (call it when
    /// a peer becomes interested). Returns the messages to send, as `tick` does.
    pub fn fill(&mut self, now: Instant, peers: &[PeerStats<K>]) -> Vec<(K, ChokeDecision)> {
        let before: BTreeSet<K> = self.unchoked_set();
        self.forget_departed(now, peers);
        self.fill_free_slots(peers);
        self.changes(before, peers)
    }

    fn forget_departed(&mut self, now: Instant, peers: &[PeerStats<K>]) {
        self.first_seen
            .retain(|k, _| peers.iter().any(|p| &p.key == k));
        for p in peers {
            self.first_seen.entry(p.key.clone()).or_insert(now);
        }
        self.regular.retain(|k| peers.iter().any(|p| &p.key == k));
    }

    /// Regular slots held by no interested peer go to interested, non-snubbed peers that
    /// are choked, best rate first (the optimistic peer keeps its own slot).
    fn fill_free_slots(&mut self, peers: &[PeerStats<K>]) {
        let busy = peers
            .iter()
            .filter(|p| p.interested && self.regular.contains(&p.key))
            .count();
        let free = self.config.unchoke_slots.saturating_sub(busy);
        if free == 0 {
            return;
        }
        let seeding = self.seeding;
        let mut cands: Vec<&PeerStats<K>> = peers
            .iter()
            .filter(|p| p.interested && !p.snubbed && !self.is_unchoked(&p.key))
            .collect();
        cands.sort_by(|a, b| {
            let (ra, rb) = if seeding {
                (a.upload_rate, b.upload_rate)
            } else {
                (a.download_rate, b.download_rate)
            };
            rb.cmp(&ra).then_with(|| a.key.cmp(&b.key))
        });
        if cands.is_empty() {
            return;
        }
        // Uninterested peers give their slots up.
        self.regular
            .retain(|k| peers.iter().any(|p| &p.key == k && p.interested));
        for p in cands.into_iter().take(free) {
            self.regular.insert(p.key.clone());
        }
    }

    /// The messages that take the peers from `before` to the current unchoked set.
    fn changes(&self, before: BTreeSet<K>, peers: &[PeerStats<K>]) -> Vec<(K, ChokeDecision)> {
        let after = self.unchoked_set();
        let mut out: Vec<(K, ChokeDecision)> = Vec::new();
        for k in before.difference(&after) {
            if peers.iter().any(|p| &p.key == k) {
                out.push((k.clone(), ChokeDecision::Choke));
            }
        }
        for k in after.difference(&before) {
            out.push((k.clone(), ChokeDecision::Unchoke));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn unchoked_set(&self) -> BTreeSet<K> {
        let mut s = self.regular.clone();
        if let Some(o) = &self.optimistic {
            s.insert(o.clone());
        }
        s
    }

    fn pick_optimistic(&mut self, now: Instant, peers: &[PeerStats<K>]) {
        self.last_optimistic = Some(now);
        let mut candidates: Vec<(&K, u64)> = peers
            .iter()
            .filter(|p| p.interested && !self.regular.contains(&p.key))
            .map(|p| {
                let new = self
                    .first_seen
                    .get(&p.key)
                    .is_some_and(|t| now.saturating_duration_since(*t) < self.config.new_peer_age);
                (
                    &p.key,
                    if new {
                        self.config.new_peer_weight.max(1)
                    } else {
                        1
                    },
                )
            })
            .collect();
        // Prefer a different peer than the current one when there is a choice.
        if candidates.len() > 1 {
            if let Some(current) = &self.optimistic {
                candidates.retain(|(k, _)| *k != current);
            }
        }
        candidates.sort_by(|a, b| a.0.cmp(b.0));
        let total: u64 = candidates.iter().map(|(_, w)| w).sum();
        let mut ticket = self.rng.below(total);
        self.optimistic = None;
        for (k, w) in candidates {
            if ticket < w {
                self.optimistic = Some(k.clone());
                break;
            }
            ticket -= w;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(key: u32, interested: bool, down: u64) -> PeerStats<u32> {
        PeerStats {
            key,
            interested,
            download_rate: down,
            upload_rate: 0,
            snubbed: false,
        }
    }

    fn unchoked(c: &Choker<u32>, peers: &[PeerStats<u32>]) -> Vec<u32> {
        peers
            .iter()
            .map(|p| p.key)
            .filter(|k| c.is_unchoked(k))
            .collect()
    }

    #[test]
    fn best_uploaders_get_regular_slots() {
        let mut c = Choker::new(ChokerConfig::default());
        let peers: Vec<_> = (0..10).map(|k| peer(k, true, u64::from(k) * 100)).collect();
        let t0 = Instant::now();
        let out = c.tick(t0, &peers);
        let regular: Vec<u32> = c.regular().copied().collect();
        assert_eq!(regular, vec![6, 7, 8, 9]);
        let opt = *c.optimistic().unwrap();
        assert!(opt < 6, "optimistic is outside the regular set");
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|(_, d)| *d == ChokeDecision::Unchoke));
    }

    #[test]
    fn uninterested_and_snubbed_get_no_regular_slot() {
        let mut c = Choker::new(ChokerConfig::default());
        let mut peers = vec![
            peer(1, false, 10_000),
            peer(2, true, 9_000),
            peer(3, true, 10),
            peer(4, true, 5),
        ];
        peers[1].snubbed = true;
        c.tick(Instant::now(), &peers);
        let regular: Vec<u32> = c.regular().copied().collect();
        assert_eq!(regular, vec![3, 4]);
        assert!(!c.is_unchoked(&1), "uninterested peers are never unchoked");
        assert_eq!(
            c.optimistic(),
            Some(&2),
            "a snubbed peer may only get the optimistic slot"
        );
    }

    #[test]
    fn seeding_ranks_by_upload_rate() {
        let mut c = Choker::new(ChokerConfig {
            unchoke_slots: 1,
            ..ChokerConfig::default()
        });
        let mut peers = vec![peer(1, true, 1000), peer(2, true, 0)];
        peers[1].upload_rate = 500;
        c.set_seeding(true);
        c.tick(Instant::now(), &peers);
        assert_eq!(c.regular().copied().collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn rechokes_only_every_ten_seconds() {
        let mut c = Choker::new(ChokerConfig {
            unchoke_slots: 1,
            ..ChokerConfig::default()
        });
        let t0 = Instant::now();
        let mut peers = vec![peer(1, true, 100), peer(2, true, 50)];
        c.tick(t0, &peers);
        assert_eq!(c.regular().copied().collect::<Vec<_>>(), vec![1]);
        peers[1].download_rate = 1000;
        assert!(c.tick(t0 + Duration::from_secs(5), &peers).is_empty());
        assert_eq!(c.regular().copied().collect::<Vec<_>>(), vec![1]);
        c.tick(t0 + Duration::from_secs(10), &peers);
        assert_eq!(c.regular().copied().collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn decisions_are_the_difference() {
        let mut c = Choker::new(ChokerConfig {
            unchoke_slots: 2,
            ..ChokerConfig::default()
        });
        let t0 = Instant::now();
        let peers = vec![peer(1, true, 100), peer(2, true, 90)];
        c.tick(t0, &peers);
        // peer 2 loses interest; peer 3 arrives and is fast
        let peers = vec![peer(1, true, 100), peer(2, false, 90), peer(3, true, 500)];
        let out = c.tick(t0 + Duration::from_secs(10), &peers);
        assert_eq!(
            out,
            vec![(2, ChokeDecision::Choke), (3, ChokeDecision::Unchoke)]
        );
        assert_eq!(unchoked(&c, &peers), vec![1, 3]);
    }

    #[test]
    fn optimistic_rotates_every_thirty_seconds() {
        let mut c = Choker::new(ChokerConfig {
            unchoke_slots: 1,
            ..ChokerConfig::default()
        });
        let t0 = Instant::now();
        let peers: Vec<_> = (0..6)
            .map(|k| peer(k, true, if k == 0 { 1000 } else { 0 }))
            .collect();
        c.tick(t0, &peers);
        let mut seen = std::collections::BTreeSet::new();
        let mut last = *c.optimistic().unwrap();
        seen.insert(last);
        for round in 1..=12u64 {
            // at 10 s and 20 s the optimistic peer stays
            c.tick(t0 + Duration::from_secs(30 * round - 20), &peers);
            assert_eq!(c.optimistic(), Some(&last));
            c.tick(t0 + Duration::from_secs(30 * round - 10), &peers);
            assert_eq!(c.optimistic(), Some(&last));
            c.tick(t0 + Duration::from_secs(30 * round), &peers);
            let now = *c.optimistic().unwrap();
            assert_ne!(now, last, "rotates to another peer");
            assert_ne!(now, 0, "never the regular peer");
            last = now;
            seen.insert(now);
        }
        assert!(seen.len() >= 4, "rotation reaches most peers: {seen:?}");
    }

    #[test]
    fn new_peers_are_three_times_as_likely() {
        // peer 1 is old (first seen long ago), peer 2 new; count optimistic picks over
        // many independent chokers.
        let t0 = Instant::now();
        let mut new_wins = 0;
        let trials = 2000;
        for seed in 0..trials {
            let mut c = Choker::new(ChokerConfig {
                unchoke_slots: 0,
                seed,
                ..ChokerConfig::default()
            });
            c.tick(t0, &[peer(1, false, 0)]);
            let later = t0 + Duration::from_secs(200);
            c.tick(later, &[peer(1, true, 0), peer(2, true, 0)]);
            if c.optimistic() == Some(&2) {
                new_wins += 1;
            }
        }
        // expected 3/4 of the trials
        assert!(
            (1350..=1650).contains(&new_wins),
            "new peer won {new_wins} of {trials}"
        );
    }

    #[test]
    fn deterministic_for_a_seed() {
        let run = |seed| {
            let mut c = Choker::new(ChokerConfig {
                seed,
                unchoke_slots: 2,
                ..ChokerConfig::default()
            });
            let t0 = Instant::now();
            let peers: Vec<_> = (0..20)
                .map(|k| peer(k, k % 3 != 0, u64::from(k % 5)))
                .collect();
            (0..20)
                .map(|i| c.tick(t0 + Duration::from_secs(10 * i), &peers))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn a_free_slot_is_given_at_once() {
        let mut c = Choker::new(ChokerConfig {
            unchoke_slots: 2,
            ..ChokerConfig::default()
        });
        let t0 = Instant::now();
        // Nobody interested at the round: nothing unchoked.
        assert!(c
            .tick(t0, &[peer(1, false, 0), peer(2, false, 0)])
            .is_empty());
        // Peer 1 becomes interested a moment later: unchoked without waiting for the
        // next round (a regular slot, so the optimistic slot is still free).
        let later = t0 + Duration::from_millis(10);
        let out = c.fill(later, &[peer(1, true, 0), peer(2, false, 0)]);
        assert_eq!(out, vec![(1, ChokeDecision::Unchoke)]);
        assert_eq!(c.regular().copied().collect::<Vec<_>>(), vec![1]);
        // A snubbed peer gets no regular slot from fill either.
        let mut p3 = peer(3, true, 0);
        p3.snubbed = true;
        assert!(c
            .fill(later, &[peer(1, true, 0), peer(2, false, 0), p3])
            .is_empty());
        // Peers 2 and 4 ask: one free slot left, the better rate gets it; nobody is
        // choked to make room.
        let peers = [peer(1, true, 0), peer(2, true, 5), peer(4, true, 50)];
        let out = c.fill(later, &peers);
        assert_eq!(out, vec![(4, ChokeDecision::Unchoke)]);
        assert!(c.fill(later, &peers).is_empty());
        assert_eq!(unchoked(&c, &peers), vec![1, 4]);
        // Peer 1 loses interest: its slot goes to peer 2.
        let peers = [peer(1, false, 0), peer(2, true, 5), peer(4, true, 50)];
        let out = c.fill(later, &peers);
        assert_eq!(
            out,
            vec![(1, ChokeDecision::Choke), (2, ChokeDecision::Unchoke)]
        );
    }

    #[test]
    fn departed_peers_are_forgotten() {
        let mut c = Choker::new(ChokerConfig::default());
        let t0 = Instant::now();
        c.tick(t0, &[peer(1, true, 10), peer(2, true, 5)]);
        assert!(c.is_unchoked(&1));
        let out = c.tick(t0 + Duration::from_secs(1), &[peer(2, true, 5)]);
        assert!(!c.is_unchoked(&1));
        assert!(
            out.iter().all(|(k, _)| *k != 1),
            "no message for a peer that is gone"
        );
    }
}
