//! Who should hold what, who holds what, and whether a snapshot can be rebuilt: pure
//! functions over what a process knows (protocol-spec/swarm.md §2, §3, §7).
//!
//! Nothing here does I/O or reads the time: the engine hands in the machines it sees,
//! the holders it counted and the moment it is.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use crate::{InfoHash, Layout, MachineKey, PieceIndex, ShardIndex};

/// Default number of distinct machines other than the owner that should hold each shard
/// (protocol-spec/durability.md §4).
pub const DEFAULT_COPIES: u32 = 2;

/// The machines holding each piece of a snapshot (index: piece), owner included.
pub type HolderSets = Vec<BTreeSet<MachineKey>>;

/// `score(key, ih, j) = SHA-1(key || ih || BE32(j))` (swarm.md §3.1), compared as a
/// 20-byte big-endian number.
pub fn score(key: &MachineKey, ih: &InfoHash, shard: ShardIndex) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(ih.0);
    h.update((shard as u32).to_be_bytes());
    h.finalize().into()
}

/// The machines in placement order for shard index `shard` (swarm.md §3.1): highest
/// score first, ties broken by the key bytes, ascending. Duplicates count once.
pub fn ranking<'a>(
    ih: &InfoHash,
    shard: ShardIndex,
    machines: impl IntoIterator<Item = &'a MachineKey>,
) -> Vec<&'a MachineKey> {
    let mut ranked: Vec<([u8; 20], &MachineKey)> = machines
        .into_iter()
        .map(|k| (score(k, ih, shard), k))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.into_iter().map(|(_, k)| k).collect()
}

/// `me`'s place (0 = first) in the ranking for shard index `shard`, if it is a candidate.
pub fn rank(
    ih: &InfoHash,
    shard: ShardIndex,
    machines: &[MachineKey],
    me: &MachineKey,
) -> Option<usize> {
    ranking(ih, shard, machines).iter().position(|k| *k == me)
}

/// Is `me` among the `copies` machines that should hold shard index `shard` of every
/// stripe? `machines` are the candidates: the online machines other than the owner.
pub fn assigned(
    ih: &InfoHash,
    shard: ShardIndex,
    machines: &[MachineKey],
    copies: usize,
    me: &MachineKey,
) -> bool {
    rank(ih, shard, machines, me).is_some_and(|r| r < copies)
}

/// The candidates for placement (swarm.md §3.1, `M`): the machines seen online, plus
/// this machine when it is one, minus the owner; sorted, each once.
pub fn candidates<'a>(
    online: impl IntoIterator<Item = &'a MachineKey>,
    me: Option<&MachineKey>,
    owner: Option<&MachineKey>,
) -> Vec<MachineKey> {
    let mut v: Vec<MachineKey> = online.into_iter().cloned().chain(me.cloned()).collect();
    v.retain(|k| Some(k) != owner);
    v.sort();
    v.dedup();
    v
}

/// Whether placement over `machines` assigns `me` any of a snapshot's `shards` shard
/// indices (swarm.md §3.3): an agent joins the swarm of a snapshot it holds nothing of
/// only then. `machines` are the candidates ([`candidates`] of the company tracker's
/// roster); `me` counts as one whether or not it is among them. The same answer as
/// [`assigned`] for some index, without sorting: for each index, `me` is assigned unless
/// `copies` candidates rank above it.
pub fn assigned_any(
    ih: &InfoHash,
    shards: usize,
    machines: &[MachineKey],
    copies: usize,
    me: &MachineKey,
) -> bool {
    copies > 0
        && (0..shards).any(|j| {
            let mine = score(me, ih, j);
            let above = machines
                .iter()
                .filter(|k| *k != me)
                .filter(|k| {
                    let s = score(k, ih, j);
                    s > mine || (s == mine && *k < me)
                })
                .take(copies)
                .count();
            above < copies
        })
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
        let here = (0..l.n())
            .filter(|&i| have(l.piece(s, i) as PieceIndex))
            .count();
        if here >= l.k {
            continue;
        }
        let mut cands: Vec<(bool, u32, usize)> = (0..l.n())
            .filter(|&i| !have(l.piece(s, i) as PieceIndex))
            .map(|i| (i >= l.k, availability(l.piece(s, i) as PieceIndex), i))
            .filter(|(_, a, _)| *a > 0)
            .collect();
        cands.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        for (_, _, i) in cands.into_iter().take(l.k - here) {
            w[l.piece(s, i)] = true;
        }
    }
    w
}

/// What a Replicate role needs to decide (swarm.md §3.1).
#[derive(Debug)]
pub struct ReplicateView<'a> {
    /// The snapshot.
    pub ih: &'a InfoHash,
    /// Its stripes.
    pub layout: &'a Layout,
    /// The placement candidates ([`candidates`]).
    pub machines: &'a [MachineKey],
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
/// placement assigns to this machine, and, for a piece short of holders for longer than
/// `grace × (r − copies + 1)`, the machine at rank `r ≥ copies` takes it over.
/// `short_since` remembers when each piece was first seen short of holders; it is
/// updated here (`now` is the caller's clock).
pub fn replicate_wanted(
    v: &ReplicateView<'_>,
    short_since: &mut HashMap<PieceIndex, Instant>,
    now: Instant,
) -> Vec<bool> {
    let l = v.layout;
    // One ranking per shard index, the same for every stripe.
    let ranks: Vec<Option<usize>> = (0..l.n())
        .map(|j| rank(v.ih, j, v.machines, v.me))
        .collect();
    (0..l.pieces())
        .map(|p| {
            let piece = p as PieceIndex;
            if v.holders.get(p).copied().unwrap_or(0) >= v.copies {
                short_since.remove(&piece);
                return false;
            }
            let since = *short_since.entry(piece).or_insert(now);
            match ranks[l.locate(p).1] {
                Some(r) if r < v.copies => true,
                Some(r) => {
                    let wait = v.grace * (r - v.copies + 1) as u32;
                    now.saturating_duration_since(since) > wait
                }
                None => false,
            }
        })
        .collect()
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

    /// `assigned_any` agrees with `assigned` over every index, for every machine of a
    /// made-up office, and a machine ranked below `copies` everywhere is not assigned.
    #[test]
    fn assigned_any_is_assigned_for_some_index() {
        let keys: Vec<MachineKey> = (0..40u8)
            .map(|i| MachineKey::from_bytes(format!("machine-{i:02}").as_bytes()).unwrap())
            .collect();
        let mut joined = 0;
        for s in 0..30u8 {
            let ih = InfoHash([s; 20]);
            for me in &keys {
                let slow = (0..12).any(|j| assigned(&ih, j, &keys, 2, me));
                assert_eq!(assigned_any(&ih, 12, &keys, 2, me), slow);
                joined += usize::from(slow);
            }
            // The swarm.md §3.2 example: anna is assigned 6 of 12, so some index.
            let three = [key(ANNA), key(BEN), key(CHLOE)];
            assert!(assigned_any(
                &InfoHash::from_hex(IH).unwrap(),
                12,
                &three,
                2,
                &key(ANNA)
            ));
            assert!(!assigned_any(&ih, 12, &keys, 0, &keys[0]));
        }
        // 40 machines, 12 indices, 2 copies: about 1 − (38/40)^12 ≈ 46% of the pairs.
        assert!((300..800).contains(&joined), "{joined} of 1200");
    }

    /// protocol-spec/swarm.md §3.2, the worked example, checked byte for byte.
    const IH: &str = "0123456789abcdef0123456789abcdef01234567";
    const ANNA: &str = "age1uj2a2c6fjzkhaz6sydxch2u6lpdqs02ww6lqfqh8j392akywkpkq6f2re0";
    const BEN: &str = "age1m28zz7394fndnc200e7kwwss02kd2d4m37hfkma4r52sucr3d4wqlr5udw";
    const CHLOE: &str = "age1vdqhlzvc0v0c8e4jhuz9cqffjhes2hsq6gk98qqn0vcj278hcsrs9cldrg";
    /// (j, [(name, first 4 bytes of score)] highest first), as printed in the table.
    const TABLE: [(usize, [(&str, &str); 3]); 12] = [
        (
            0,
            [
                ("chloe", "fd5d77a6"),
                ("ben", "d392420d"),
                ("anna", "4baa96f4"),
            ],
        ),
        (
            1,
            [
                ("chloe", "95892466"),
                ("anna", "7d74dac7"),
                ("ben", "74820de3"),
            ],
        ),
        (
            2,
            [
                ("chloe", "cfda36e7"),
                ("ben", "5239cac4"),
                ("anna", "4fbf8fd1"),
            ],
        ),
        (
            3,
            [
                ("ben", "f8e81f36"),
                ("anna", "a56dd41b"),
                ("chloe", "4d5511f0"),
            ],
        ),
        (
            4,
            [
                ("ben", "c128badf"),
                ("anna", "ada43a05"),
                ("chloe", "867a1327"),
            ],
        ),
        (
            5,
            [
                ("ben", "b2395c72"),
                ("anna", "7c076a34"),
                ("chloe", "70df9bc3"),
            ],
        ),
        (
            6,
            [
                ("chloe", "b16f2208"),
                ("ben", "50070104"),
                ("anna", "2dbdd21e"),
            ],
        ),
        (
            7,
            [
                ("chloe", "d8c60d73"),
                ("anna", "abe9847d"),
                ("ben", "83b56e31"),
            ],
        ),
        (
            8,
            [
                ("chloe", "db1c2779"),
                ("anna", "2be502e1"),
                ("ben", "06ef2ff4"),
            ],
        ),
        (
            9,
            [
                ("ben", "fd22d392"),
                ("chloe", "dcb66885"),
                ("anna", "0d5bf1ab"),
            ],
        ),
        (
            10,
            [
                ("chloe", "833d3581"),
                ("ben", "820e0481"),
                ("anna", "56910cc9"),
            ],
        ),
        (
            11,
            [
                ("chloe", "f86965be"),
                ("ben", "9830244e"),
                ("anna", "6b91ee34"),
            ],
        ),
    ];

    #[test]
    fn the_worked_placement_example_of_swarm_md_holds() {
        let ih = InfoHash::from_hex(IH).unwrap();
        let named = |n: &str| {
            key(match n {
                "anna" => ANNA,
                "ben" => BEN,
                _ => CHLOE,
            })
        };
        // The three full scores of shard index 0.
        assert_eq!(
            hex::encode(score(&key(ANNA), &ih, 0)),
            "4baa96f44b236c9f85c8c4b6f5b63e0e8c19d733"
        );
        assert_eq!(
            hex::encode(score(&key(BEN), &ih, 0)),
            "d392420daaf5b2adbe6ff0d29b03f6f67390fffc"
        );
        assert_eq!(
            hex::encode(score(&key(CHLOE), &ih, 0)),
            "fd5d77a6157224fa370dd1c33cff72d9926577cd"
        );
        let machines = candidates([&key(ANNA), &key(BEN), &key(CHLOE)], None, None);
        let spec = crate::spec::read("swarm.md");
        let mut held: HashMap<&str, Vec<usize>> = HashMap::new();
        for (j, row) in TABLE {
            let r = ranking(&ih, j, &machines);
            for (pos, (name, prefix)) in row.iter().enumerate() {
                assert_eq!(r[pos], &named(name), "shard index {j}, place {pos}");
                assert_eq!(&hex::encode(score(r[pos], &ih, j))[..8], *prefix);
                assert_eq!(assigned(&ih, j, &machines, 2, &named(name)), pos < 2);
                if pos < 2 {
                    held.entry(name).or_default().push(j);
                }
            }
            // The row is printed in the spec as the test has it.
            let line = format!(
                "| {j} | {} `{}` > {} `{}` > {} `{}` | {}, {} |",
                row[0].0, row[0].1, row[1].0, row[1].1, row[2].0, row[2].1, row[0].0, row[1].0
            );
            assert!(spec.contains(&line), "swarm.md lacks {line:?}");
        }
        assert_eq!(held["chloe"], vec![0, 1, 2, 6, 7, 8, 9, 10, 11]);
        assert_eq!(held["ben"], vec![0, 2, 3, 4, 5, 6, 9, 10, 11]);
        assert_eq!(held["anna"], vec![1, 3, 4, 5, 7, 8]);
        for k in [IH, ANNA, BEN, CHLOE] {
            assert!(spec.contains(k));
        }
    }

    #[test]
    fn the_owner_is_never_a_candidate_and_each_machine_counts_once() {
        let (a, b, o) = (key("age1a"), key("age1b"), key("age1owner"));
        let c = candidates([&a, &o, &b, &a], Some(&o), Some(&o));
        assert_eq!(c, vec![a.clone(), b.clone()]);
        let ih = InfoHash([9; 20]);
        for j in 0..12 {
            assert!(!assigned(&ih, j, &c, 3, &o));
            assert_eq!(ranking(&ih, j, &c).len(), 2);
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
        let ms: Vec<MachineKey> = (0..4).map(|i| key(&format!("age1m{i}"))).collect();
        let order = ranking(&ih, 0, &ms);
        let third = order[2].clone();
        let fourth = order[3].clone();
        let grace = Duration::from_secs(30);
        let t0 = Instant::now();
        let want = |me: &MachineKey, holders: &[usize], since: &mut HashMap<_, _>, now| {
            replicate_wanted(
                &ReplicateView {
                    ih: &ih,
                    layout: &l,
                    machines: &ms,
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
            want(order[0], &[0, 0], &mut HashMap::new(), t0),
            vec![true, true]
        );
        assert!(want(order[1], &[0, 0], &mut HashMap::new(), t0)[0]);
        assert!(!want(&third, &[0, 0], &mut s3, t0)[0]);
        assert!(!want(&fourth, &[0, 0], &mut s4, t0)[0]);
        let t1 = t0 + grace + Duration::from_secs(1);
        assert!(want(&third, &[0, 0], &mut s3, t1)[0]);
        assert!(!want(&fourth, &[0, 0], &mut s4, t1)[0]);
        let t2 = t0 + 2 * grace + Duration::from_secs(1);
        assert!(want(&fourth, &[0, 0], &mut s4, t2)[0]);
        // Enough holders: nobody wants it, and the shortage is forgotten.
        assert!(!want(order[0], &[2, 2], &mut s3, t2)[0]);
        assert!(s3.is_empty());
        // Not a candidate (the owner): never.
        assert!(!want(&key("age1owner"), &[0, 0], &mut HashMap::new(), t2)[0]);
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
