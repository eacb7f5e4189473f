//! Who should hold what, who holds what, and whether a snapshot can be rebuilt: pure
//! functions over what a process knows (protocol-spec/swarm.md §2, §3, §7).
//!
//! Nothing here does I/O or reads the time: the engine hands in the machines it sees,
//! the holders it counted and the moment it is.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use std::sync::Arc;

use crate::{InfoHash, Layout, MachineKey, PieceIndex, ShardIndex};

/// Default number of distinct machines other than the owner that should hold each shard
/// (protocol-spec/durability.md §4).
pub const DEFAULT_COPIES: u32 = 2;

/// The machines holding each piece of a snapshot (index: piece), owner included.
pub type HolderSets = Vec<BTreeSet<MachineKey>>;

/// A placement candidate (swarm.md §3.1): a machine's placement key and its failure
/// domain (the `SITE/ROOM` its certificate names), if any.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Candidate {
    pub key: MachineKey,
    pub domain: Option<Arc<str>>,
}

impl Candidate {
    pub fn new(key: MachineKey, domain: Option<&str>) -> Candidate {
        Candidate {
            key,
            domain: domain.filter(|d| !d.is_empty()).map(Arc::from),
        }
    }
}

/// What a snapshot's holders are chosen under (swarm.md §3.1, `G`): its owner's key, so
/// that every snapshot of a machine (a chain of incremental snapshots) has one holder
/// group; its info-hash when the owner is not known.
pub fn group<'a>(owner: Option<&'a MachineKey>, ih: &'a InfoHash) -> &'a [u8] {
    owner.map_or(&ih.0[..], |o| o.as_bytes())
}

/// `score(key, G, j) = SHA-1(key || G || BE32(j))` (swarm.md §3.1), compared as a
/// 20-byte big-endian number.
pub fn score(key: &MachineKey, group: &[u8], shard: ShardIndex) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(group);
    h.update((shard as u32).to_be_bytes());
    h.finalize().into()
}

/// The machines in placement order for shard index `shard` of group `group` (swarm.md
/// §3.1): by score, highest first (ties by key bytes, ascending; a key counts once), in
/// rounds: each round takes, in that order, every machine whose domain no machine taken
/// earlier in the round has (a machine without a domain is a domain of its own); the
/// machines it passed over make the next round. So the first `copies` are on as many
/// distinct domains as there are.
pub fn ranking<'a>(
    group: &[u8],
    shard: ShardIndex,
    machines: &'a [Candidate],
) -> Vec<&'a Candidate> {
    let mut ranked: Vec<([u8; 20], &Candidate)> = machines
        .iter()
        .map(|c| (score(&c.key, group, shard), c))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.key.cmp(&b.1.key)));
    ranked.dedup_by(|a, b| a.1.key == b.1.key);
    let mut rest: Vec<&Candidate> = ranked.into_iter().map(|(_, c)| c).collect();
    let mut out = Vec::with_capacity(rest.len());
    while !rest.is_empty() {
        let mut used: BTreeSet<&str> = BTreeSet::new();
        let mut next = Vec::new();
        for c in rest {
            match c.domain.as_deref() {
                Some(d) if used.contains(d) => next.push(c),
                Some(d) => {
                    used.insert(d);
                    out.push(c);
                }
                None => out.push(c),
            }
        }
        rest = next;
    }
    out
}

/// `me`'s place (0 = first) in the ranking for shard index `shard`, if it is a candidate.
pub fn rank(
    group: &[u8],
    shard: ShardIndex,
    machines: &[Candidate],
    me: &MachineKey,
) -> Option<usize> {
    ranking(group, shard, machines)
        .iter()
        .position(|c| c.key == *me)
}

/// Is `me` among the `copies` machines that should hold shard index `shard` of every
/// stripe? `machines` are the candidates: the online machines other than the owner.
pub fn assigned(
    group: &[u8],
    shard: ShardIndex,
    machines: &[Candidate],
    copies: usize,
    me: &MachineKey,
) -> bool {
    rank(group, shard, machines, me).is_some_and(|r| r < copies)
}

/// The candidates for placement (swarm.md §3.1, `M`): the machines seen online, plus
/// this machine when it is one, minus the owner; sorted by key, each key once (the first
/// given wins).
pub fn candidates(
    online: impl IntoIterator<Item = Candidate>,
    me: Option<Candidate>,
    owner: Option<&MachineKey>,
) -> Vec<Candidate> {
    let mut v: Vec<Candidate> = me.into_iter().chain(online).collect();
    v.retain(|c| Some(&c.key) != owner);
    v.sort_by(|a, b| a.key.cmp(&b.key));
    v.dedup_by(|a, b| a.key == b.key);
    v
}

/// Whether placement over `machines` assigns `me` any of a snapshot's `shards` shard
/// indices (swarm.md §3.5): an agent joins the swarm of a snapshot it holds nothing of
/// only then. `machines` are the candidates ([`candidates`] of the company tracker's
/// roster, with this machine).
pub fn assigned_any(
    group: &[u8],
    shards: usize,
    machines: &[Candidate],
    copies: usize,
    me: &MachineKey,
) -> bool {
    copies > 0 && (0..shards).any(|j| assigned(group, j, machines, copies, me))
}

/// Distinct machines other than the owner holding each piece (swarm.md §3, "copies").
pub fn holder_counts(sets: &HolderSets, owner: Option<&MachineKey>) -> Vec<usize> {
    sets.iter()
        .map(|s| s.iter().filter(|k| Some(*k) != owner).count())
        .collect()
}

/// Is every piece held by at least `copies` machines other than the owner?
pub fn durable(holders: &[usize], copies: usize) -> bool {
    holders.iter().all(|&h| h >= copies)
}

/// The Fetch role's wanted pieces (swarm.md §2): per stripe with fewer than k shards
/// here, exactly `k - have` of the missing shards some peer has: data shards first, then
/// by decreasing availability, then by lower shard index.
pub fn fetch_wanted(
    l: &Layout,
    have: impl Fn(PieceIndex) -> bool,
    availability: impl Fn(PieceIndex) -> u32,
) -> Vec<bool> {
    let mut w = vec![false; l.pieces()];
    for s in 0..l.stripes {
        // The same choice as a repair's helpers (swarm.md §18).
        for p in crate::repair::helpers(
            l,
            s,
            |p| have(p as PieceIndex),
            |p| availability(p as PieceIndex),
        ) {
            w[p as usize] = true;
        }
    }
    w
}

/// What a Replicate role needs to decide (swarm.md §3.1).
#[derive(Debug)]
pub struct ReplicateView<'a> {
    /// The snapshot's holder group ([`group`]).
    pub group: &'a [u8],
    /// Its stripes.
    pub layout: &'a Layout,
    /// The placement candidates ([`candidates`]): the machines present.
    pub machines: &'a [Candidate],
    /// Those of them online in the swarm (connected, and this machine); `None`: all of
    /// them (a process without a roster).
    pub online: Option<&'a BTreeSet<MachineKey>>,
    /// This machine.
    pub me: &'a MachineKey,
    /// Target holders per shard.
    pub copies: usize,
    /// Holders per piece ([`holder_counts`]).
    pub holders: &'a [usize],
    /// The takeover grace for the first machine past the assigned ones.
    pub grace: Duration,
}

/// The Replicate role's wanted pieces (swarm.md §3.1): the pieces whose shard index
/// placement assigns to this machine, and, for a piece short of holders, the machines
/// after the assigned ones take it over in turn: the one with `a` machines online in
/// the swarm ahead of it once the piece has been short for `grace × max(1, a − copies +
/// 1)`.
/// `short_since` remembers when each piece was first seen short of holders; it is
/// updated here (`now` is the caller's clock).
pub fn replicate_wanted(
    v: &ReplicateView<'_>,
    short_since: &mut HashMap<PieceIndex, Instant>,
    now: Instant,
) -> Vec<bool> {
    replicate_wanted_at(v, &places(v), short_since, now)
}

/// [`replicate_wanted`] with this machine's [`places`] already computed.
pub fn replicate_wanted_at(
    v: &ReplicateView<'_>,
    ranks: &[Option<(usize, usize)>],
    short_since: &mut HashMap<PieceIndex, Instant>,
    now: Instant,
) -> Vec<bool> {
    let l = v.layout;
    (0..l.pieces())
        .map(|p| {
            let piece = p as PieceIndex;
            if v.holders.get(p).copied().unwrap_or(0) >= v.copies {
                short_since.remove(&piece);
                return false;
            }
            let since = *short_since.entry(piece).or_insert(now);
            match ranks.get(l.locate(p).1).copied().flatten() {
                Some((r, _)) if r < v.copies => true,
                Some((_, ahead)) => {
                    let turns = (ahead + 1).saturating_sub(v.copies).max(1);
                    now.saturating_duration_since(since) > v.grace * turns as u32
                }
                None => false,
            }
        })
        .collect()
}

/// For each shard index (one ranking per index, the same for every stripe): this
/// machine's place in the order of `M`, and how many machines online in the swarm are
/// ahead of it; `None` when it is not a candidate.
pub fn places(v: &ReplicateView<'_>) -> Vec<Option<(usize, usize)>> {
    (0..v.layout.n())
        .map(|j| {
            let order = ranking(v.group, j, v.machines);
            let r = order.iter().position(|c| c.key == *v.me)?;
            let ahead = order[..r]
                .iter()
                .filter(|c| v.online.is_none_or(|o| o.contains(&c.key)))
                .count();
            Some((r, ahead))
        })
        .collect()
}

/// How many repair graces this machine waits for shard index `j` (swarm.md §18): one
/// more than the machines online in the swarm ahead of it ([`places`]); the first one in
/// line that is there waits one grace.
pub fn turns(places: &[Option<(usize, usize)>], j: usize) -> u32 {
    places
        .get(j)
        .copied()
        .flatten()
        .map_or(u32::MAX, |(_, ahead)| ahead as u32 + 1)
}

/// A snapshot's health as one process sees it (swarm.md §7): recoverable now from what
/// is reachable, and how far from its target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// Every stripe has at least k reachable shards.
    pub recoverable: bool,
    /// Data shards per stripe.
    pub k: usize,
    /// Parity shards per stripe.
    pub m: usize,
    /// Stripes.
    pub stripes: usize,
    /// Shards of each stripe that some machine holds.
    pub reachable_shards_per_stripe: Vec<usize>,
    /// Machines holding each piece (the owner included).
    pub holders_per_shard: Vec<usize>,
    /// Distinct machines holding any piece.
    pub machines_online: usize,
}

impl Health {
    /// Evaluates holder sets (one per piece) against the layout.
    pub fn evaluate(l: &Layout, sets: &HolderSets) -> Health {
        let reachable = l.shards_per_stripe(|p| sets.get(p).is_some_and(|s| !s.is_empty()));
        let machines: BTreeSet<&MachineKey> = sets.iter().flatten().collect();
        Health {
            recoverable: reachable.iter().all(|&c| c >= l.k),
            k: l.k,
            m: l.m,
            stripes: l.stripes,
            reachable_shards_per_stripe: reachable,
            holders_per_shard: sets.iter().map(|s| s.len()).collect(),
            machines_online: machines.len(),
        }
    }
    /// Fewest reachable shards of any stripe.
    pub fn worst_stripe(&self) -> usize {
        self.reachable_shards_per_stripe
            .iter()
            .copied()
            .min()
            .unwrap_or(0)
    }
    /// Fewest holders of any piece.
    pub fn fewest_holders(&self) -> usize {
        self.holders_per_shard.iter().copied().min().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> MachineKey {
        MachineKey::from_age_recipient(s).unwrap()
    }

    /// `assigned_any` is `assigned` for some index; in a made-up office of 40 machines
    /// each machine is assigned some of about 1 − (38/40)^12 ≈ 46% of the owners.
    #[test]
    fn assigned_any_is_assigned_for_some_index() {
        let keys: Vec<Candidate> = (0..40u8)
            .map(|i| Candidate::new(key(&format!("age1machine{i:02}")), None))
            .collect();
        let mut joined = 0;
        for s in 0..30u8 {
            let owner = key(&format!("age1owner{s}"));
            let g = group(Some(&owner), &InfoHash([0; 20]));
            for me in &keys {
                let slow = (0..12).any(|j| assigned(g, j, &keys, 2, &me.key));
                assert_eq!(assigned_any(g, 12, &keys, 2, &me.key), slow);
                joined += usize::from(slow);
            }
            assert!(!assigned_any(g, 12, &keys, 0, &keys[0].key));
        }
        assert!((300..800).contains(&joined), "{joined} of 1200");
    }

    /// Stable under churn (issue 13 point 1): in an office of 50, a machine that joins
    /// or leaves moves about its fair share of the 12 × 2 assignments of each owner
    /// (2 · 12 / 50 ≈ 0.5 per owner on average), never more than the indices it takes or
    /// leaves (with domains: and the second holder of an index whose first room changed).
    #[test]
    fn a_machine_joining_or_leaving_moves_its_share() {
        let rooms = ["a/1", "a/2", "b/1"];
        let office: Vec<Candidate> = (0..51)
            .map(|i| Candidate::new(key(&format!("age1desk{i:02}")), Some(rooms[i % 3])))
            .collect();
        let (before, newcomer) = office.split_at(50);
        let holders = |ms: &[Candidate], g: &[u8]| -> Vec<Vec<MachineKey>> {
            (0..12)
                .map(|j| {
                    ranking(g, j, ms)[..2]
                        .iter()
                        .map(|c| c.key.clone())
                        .collect()
                })
                .collect()
        };
        let (mut moved_join, mut moved_leave) = (0usize, 0usize);
        let owners = 200;
        for o in 0..owners {
            let owner = key(&format!("age1owner{o}"));
            let g = owner.as_bytes();
            let h0 = holders(before, g);
            let h1 = holders(&office, g);
            let h2 = holders(&before[1..], g);
            for j in 0..12 {
                moved_join += h1[j].iter().filter(|k| !h0[j].contains(k)).count();
                moved_leave += h2[j].iter().filter(|k| !h0[j].contains(k)).count();
                // Whoever leaves: only the indices it held change hands.
                if !h0[j].contains(&before[0].key) {
                    assert_eq!(h0[j], h2[j], "owner {o} index {j}");
                }
                // Whoever joins: only the indices it takes change.
                if !h1[j].contains(&newcomer[0].key) {
                    assert_eq!(h0[j], h1[j], "owner {o} index {j}");
                }
            }
        }
        eprintln!(
            "of {} assignments, a machine joining moved {moved_join}, one leaving {moved_leave}",
            owners * 24
        );
        // Its fair share: 24 assignments over 51 (50) machines, about 0.47 (0.48) per
        // owner, 94 (96) over 200 owners.
        assert!((50..150).contains(&moved_join), "{moved_join}");
        assert!((50..150).contains(&moved_leave), "{moved_leave}");
    }

    /// protocol-spec/swarm.md §3.2, the worked example, checked byte for byte.
    const DANA: &str = "age14srhdazn6kje45qda60tmgw53dx6fj43rt3gg66jy5xuhgcv4qwsukpaph";
    const ANNA: &str = "age1uj2a2c6fjzkhaz6sydxch2u6lpdqs02ww6lqfqh8j392akywkpkq6f2re0";
    const BEN: &str = "age1m28zz7394fndnc200e7kwwss02kd2d4m37hfkma4r52sucr3d4wqlr5udw";
    const CHLOE: &str = "age1vdqhlzvc0v0c8e4jhuz9cqffjhes2hsq6gk98qqn0vcj278hcsrs9cldrg";
    /// (j, [(name, first 4 bytes of score)] highest first), as printed in the table.
    const TABLE: [(usize, [(&str, &str); 3]); 12] = [
        (
            0,
            [
                ("ben", "fe1483d1"),
                ("chloe", "a29b86c9"),
                ("anna", "39d7885a"),
            ],
        ),
        (
            1,
            [
                ("ben", "f89886a3"),
                ("anna", "e0d03e36"),
                ("chloe", "5e6a3a98"),
            ],
        ),
        (
            2,
            [
                ("chloe", "c6cd0810"),
                ("anna", "b251e9fe"),
                ("ben", "0141c0ae"),
            ],
        ),
        (
            3,
            [
                ("chloe", "a1606332"),
                ("anna", "910c80c4"),
                ("ben", "1d62a391"),
            ],
        ),
        (
            4,
            [
                ("chloe", "febcd58d"),
                ("anna", "f349bbf9"),
                ("ben", "67ea75c8"),
            ],
        ),
        (
            5,
            [
                ("chloe", "cd48c526"),
                ("ben", "88324a33"),
                ("anna", "51909d24"),
            ],
        ),
        (
            6,
            [
                ("ben", "bf362e81"),
                ("anna", "a7265637"),
                ("chloe", "55d8562a"),
            ],
        ),
        (
            7,
            [
                ("chloe", "8c07d7b5"),
                ("anna", "4565d9df"),
                ("ben", "0246e855"),
            ],
        ),
        (
            8,
            [
                ("chloe", "a3497390"),
                ("anna", "8fd1bc9f"),
                ("ben", "8ebb8e02"),
            ],
        ),
        (
            9,
            [
                ("anna", "69760120"),
                ("chloe", "56706247"),
                ("ben", "1d8e9eb9"),
            ],
        ),
        (
            10,
            [
                ("anna", "8c436ae3"),
                ("chloe", "287ebeda"),
                ("ben", "26b6d78e"),
            ],
        ),
        (
            11,
            [
                ("chloe", "d42008bc"),
                ("anna", "b622b918"),
                ("ben", "aa8496af"),
            ],
        ),
    ];

    #[test]
    fn the_worked_placement_example_of_swarm_md_holds() {
        let dana = key(DANA);
        let ih = InfoHash([7; 20]);
        // The owner's key is the group, whatever the snapshot.
        let g = group(Some(&dana), &ih);
        assert_eq!(g, DANA.as_bytes());
        assert_eq!(group(None, &ih), &ih.0[..]);
        let named = |n: &str| {
            key(match n {
                "anna" => ANNA,
                "ben" => BEN,
                _ => CHLOE,
            })
        };
        // The three full scores of shard index 0.
        assert_eq!(
            hex::encode(score(&key(ANNA), g, 0)),
            "39d7885a2a2bc08e5082ca8ae2bdc1a4670face0"
        );
        assert_eq!(
            hex::encode(score(&key(BEN), g, 0)),
            "fe1483d1193d7c646c5842921502d52629790857"
        );
        assert_eq!(
            hex::encode(score(&key(CHLOE), g, 0)),
            "a29b86c9b912f783e6c3d193893eed44a6ca6044"
        );
        let bare = |n: &str| Candidate::new(named(n), None);
        let roomed = |n: &str, d: &str| Candidate::new(named(n), Some(d));
        let machines = candidates(
            [bare("anna"), bare("ben"), bare("chloe")],
            None,
            Some(&dana),
        );
        let rooms = candidates(
            [
                roomed("anna", "hq/1"),
                roomed("ben", "hq/1"),
                roomed("chloe", "hq/2"),
            ],
            None,
            Some(&dana),
        );
        let spec = crate::spec::read("swarm.md");
        let mut held: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut held_rooms: HashMap<&str, Vec<usize>> = HashMap::new();
        for (j, row) in TABLE {
            let r = ranking(g, j, &machines);
            for (pos, (name, prefix)) in row.iter().enumerate() {
                assert_eq!(r[pos].key, named(name), "shard index {j}, place {pos}");
                assert_eq!(&hex::encode(score(&r[pos].key, g, j))[..8], *prefix);
                assert_eq!(assigned(g, j, &machines, 2, &named(name)), pos < 2);
                if pos < 2 {
                    held.entry(name).or_default().push(j);
                }
            }
            let with_rooms = ranking(g, j, &rooms);
            let name_of = |c: &Candidate| row.iter().find(|(n, _)| named(n) == c.key).unwrap().0;
            let first_two = [name_of(with_rooms[0]), name_of(with_rooms[1])];
            for n in first_two {
                held_rooms.entry(n).or_default().push(j);
            }
            // Two rooms: the two holders of every index are in both.
            assert_ne!(with_rooms[0].domain, with_rooms[1].domain, "index {j}");
            // The row is printed in the spec as the test has it.
            let line = format!(
                "| {j} | {} `{}` > {} `{}` > {} `{}` | {}, {} | {}, {} |",
                row[0].0,
                row[0].1,
                row[1].0,
                row[1].1,
                row[2].0,
                row[2].1,
                row[0].0,
                row[1].0,
                first_two[0],
                first_two[1]
            );
            assert!(spec.contains(&line), "swarm.md lacks {line:?}");
        }
        assert_eq!(held["chloe"], vec![0, 2, 3, 4, 5, 7, 8, 9, 10, 11]);
        assert_eq!(held["anna"], vec![1, 2, 3, 4, 6, 7, 8, 9, 10, 11]);
        assert_eq!(held["ben"], vec![0, 1, 5, 6]);
        assert_eq!(held_rooms["chloe"], (0..12).collect::<Vec<_>>());
        assert_eq!(held_rooms["anna"], vec![2, 3, 4, 7, 8, 9, 10, 11]);
        assert_eq!(held_rooms["ben"], vec![0, 1, 5, 6]);
        for k in [DANA, ANNA, BEN, CHLOE] {
            assert!(spec.contains(k));
        }
    }

    /// Rounds over domains (swarm.md §3.1): the first of each room first, in score
    /// order, then the second of each, and so on; machines without a domain are rooms of
    /// their own; the order is a permutation of the candidates.
    #[test]
    fn domains_are_taken_in_rounds() {
        let ms: Vec<Candidate> = (0..9)
            .map(|i| {
                let d = ["a", "a", "a", "a", "b", "b", "c"].get(i).copied();
                Candidate::new(key(&format!("age1m{i}")), d)
            })
            .collect();
        for j in 0..50 {
            let r = ranking(b"someone", j, &ms);
            assert_eq!(r.len(), ms.len());
            // The first three are one of each of a, b, c, or a machine without a room.
            let firsts: BTreeSet<Option<&str>> =
                r[..3].iter().map(|c| c.domain.as_deref()).collect();
            assert!(firsts.len() == 3 || firsts.contains(&None), "{firsts:?}");
            // Within each room, score order is kept.
            for d in ["a", "b"] {
                let in_room: Vec<_> = r
                    .iter()
                    .filter(|c| c.domain.as_deref() == Some(d))
                    .collect();
                for w in in_room.windows(2) {
                    assert!(score(&w[0].key, b"someone", j) > score(&w[1].key, b"someone", j));
                }
            }
        }
    }

    #[test]
    fn the_owner_is_never_a_candidate_and_each_machine_counts_once() {
        let (a, b, o) = (key("age1a"), key("age1b"), key("age1owner"));
        let c = candidates(
            [&a, &o, &b, &a].map(|k| Candidate::new(k.clone(), None)),
            Some(Candidate::new(o.clone(), None)),
            Some(&o),
        );
        let keys: Vec<&MachineKey> = c.iter().map(|c| &c.key).collect();
        assert_eq!(keys, vec![&a, &b]);
        let ih = InfoHash([9; 20]);
        let g = group(Some(&o), &ih);
        for j in 0..12 {
            assert!(!assigned(g, j, &c, 3, &o));
            assert_eq!(ranking(g, j, &c).len(), 2);
        }
        let sets: HolderSets = vec![
            [a.clone(), o.clone()].into_iter().collect(),
            [o.clone()].into_iter().collect(),
            [a.clone(), b.clone()].into_iter().collect(),
        ];
        let counts = holder_counts(&sets, Some(&o));
        assert_eq!(counts, vec![1, 0, 2]);
        assert!(!durable(&counts, 1));
        assert!(durable(&[2, 3], 2));
    }

    #[test]
    fn fetch_wants_data_shards_first_then_the_most_available_parity() {
        let l = Layout::with_shard_size(4 * 16384, 4, 2, 16384).unwrap();
        // Stripe 0: shards 0 and 1 here; 2 unavailable; 3 available; parity 4 (1 peer),
        // 5 (3 peers): wants 3, then parity 5.
        let have = |p: PieceIndex| p < 2;
        let avail = |p: PieceIndex| match p {
            2 => 0,
            4 => 1,
            5 => 3,
            _ => 2,
        };
        let w = fetch_wanted(&l, have, avail);
        assert_eq!(w, vec![false, false, false, true, false, true]);
        // A stripe with k shards here wants nothing.
        assert_eq!(fetch_wanted(&l, |p| p < 4, |_| 5), vec![false; 6]);
    }

    #[test]
    fn takeover_waits_a_grace_that_grows_with_the_rank() {
        let l = Layout::with_shard_size(16384, 1, 1, 16384).unwrap();
        let ih = InfoHash([3; 20]);
        let g = group(None, &ih);
        let ms: Vec<Candidate> = (0..4)
            .map(|i| Candidate::new(key(&format!("age1m{i}")), None))
            .collect();
        let order: Vec<MachineKey> = ranking(g, 0, &ms).iter().map(|c| c.key.clone()).collect();
        let third = order[2].clone();
        let fourth = order[3].clone();
        let grace = Duration::from_secs(30);
        let t0 = Instant::now();
        let want = |me: &MachineKey, holders: &[usize], since: &mut HashMap<_, _>, now| {
            replicate_wanted(
                &ReplicateView {
                    group: g,
                    layout: &l,
                    machines: &ms,
                    online: None,
                    me,
                    copies: 2,
                    holders,
                    grace,
                },
                since,
                now,
            )
        };
        let mut s3 = HashMap::new();
        let mut s4 = HashMap::new();
        // Shard index 0 is short (no holders): the assigned two want it at once, the
        // third after one grace, the fourth after two.
        assert_eq!(
            want(&order[0], &[0, 0], &mut HashMap::new(), t0),
            vec![true, true]
        );
        assert!(want(&order[1], &[0, 0], &mut HashMap::new(), t0)[0]);
        assert!(!want(&third, &[0, 0], &mut s3, t0)[0]);
        assert!(!want(&fourth, &[0, 0], &mut s4, t0)[0]);
        let t1 = t0 + grace + Duration::from_secs(1);
        assert!(want(&third, &[0, 0], &mut s3, t1)[0]);
        assert!(!want(&fourth, &[0, 0], &mut s4, t1)[0]);
        let t2 = t0 + 2 * grace + Duration::from_secs(1);
        assert!(want(&fourth, &[0, 0], &mut s4, t2)[0]);
        // Enough holders: nobody wants it, and the shortage is forgotten.
        assert!(!want(&order[0], &[2, 2], &mut s3, t2)[0]);
        assert!(s3.is_empty());
        // Not a candidate (the owner): never.
        assert!(!want(&key("age1owner"), &[0, 0], &mut HashMap::new(), t2)[0]);

        // With a roster, the turns count the machines online in the swarm: the fourth,
        // with only the first online ahead of it, takes over after one grace, not three;
        // a machine alone in the swarm (it has just joined) is never at once.
        let with =
            |me: &MachineKey, online: &BTreeSet<MachineKey>, since: &mut HashMap<_, _>, now| {
                replicate_wanted(
                    &ReplicateView {
                        group: g,
                        layout: &l,
                        machines: &ms,
                        online: Some(online),
                        me,
                        copies: 2,
                        holders: &[0, 0],
                        grace,
                    },
                    since,
                    now,
                )[0]
            };
        let online: BTreeSet<MachineKey> = [order[0].clone(), fourth.clone()].into();
        let mut s = HashMap::new();
        assert!(!with(&fourth, &online, &mut s, t0));
        assert!(with(&fourth, &online, &mut s, t1));
        let alone: BTreeSet<MachineKey> = [third.clone()].into();
        let mut s = HashMap::new();
        assert!(!with(&third, &alone, &mut s, t0));
        assert!(with(&third, &alone, &mut s, t1));
        // The assigned want it at once, whoever is online.
        assert!(with(
            &order[1],
            &[order[1].clone()].into(),
            &mut HashMap::new(),
            t0
        ));
    }

    #[test]
    fn health_counts_reachable_shards_and_machines() {
        let l = Layout::with_shard_size(2 * 2 * 16384, 2, 1, 16384).unwrap();
        assert_eq!(l.stripes, 2);
        let (a, b) = (key("age1a"), key("age1b"));
        let set = |ks: &[&MachineKey]| ks.iter().map(|k| (*k).clone()).collect();
        let sets: HolderSets = vec![
            set(&[&a]),
            set(&[&a, &b]),
            set(&[]),
            set(&[&b]),
            set(&[]),
            set(&[]),
        ];
        let h = Health::evaluate(&l, &sets);
        assert!(!h.recoverable);
        assert_eq!(h.reachable_shards_per_stripe, vec![2, 1]);
        assert_eq!(h.holders_per_shard, vec![1, 2, 0, 1, 0, 0]);
        assert_eq!(
            (h.machines_online, h.worst_stripe(), h.fewest_holders()),
            (2, 1, 0)
        );
    }
}
