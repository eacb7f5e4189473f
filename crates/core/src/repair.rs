//! Repair with no key (protocol-spec/swarm.md §18): when a shard this machine should hold
//! has had no holder in sight for the repair grace, it is rebuilt from k shards of its
//! stripe with Reed-Solomon over the ciphertext. This module decides *when* and *which*;
//! fetching the helpers and rebuilding are the agent's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::layout::{Layout, PieceIndex};

/// What the repair decision needs to know about one snapshot on this machine.
pub struct RepairView<'a> {
    /// Its stripes.
    pub layout: &'a Layout,
    /// The pieces placement wants on this machine (its own and takeovers: swarm.md §3.1).
    pub wanted: &'a [bool],
    /// Pieces this machine has.
    pub have: &'a dyn Fn(usize) -> bool,
    /// Pieces some connected peer has (the owner included).
    pub reachable: &'a dyn Fn(usize) -> bool,
    /// For each shard index, how many graces this machine waits: one more than the
    /// machines ahead of it in the index's placement order that are online
    /// ([`crate::placement::turns`]); so the first machine in line repairs first and the
    /// next only if it did not.
    pub turns: &'a dyn Fn(usize) -> u32,
    /// The repair grace `R` (swarm.md §18: 72 h by default).
    pub grace: Duration,
}

/// A stripe due for repair on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub stripe: usize,
    /// Indices of the stripe reachable now beyond the k a rebuild needs: the fewer, the
    /// closer the stripe is to being lost, the sooner it is repaired.
    pub spare: usize,
    /// The pieces of the stripe to rebuild here: wanted, not had, held by nobody in sight.
    pub targets: Vec<PieceIndex>,
}

/// The stripes of a snapshot due for repair on this machine, fewest spare first.
///
/// A piece is **missing** while placement wants it here, this machine does not have it and
/// no connected peer has it; `missing_since` keeps when each piece was first seen missing
/// (updated here: entries of pieces no longer missing are removed, so a holder that comes
/// back resets the clock). A stripe is due when one of its missing pieces has been missing
/// for longer than `grace × turns(index)` and at least k of its shards are reachable (or
/// here), so that it can be rebuilt; every missing piece of a due stripe is a target (one
/// rebuild serves them all).
pub fn due(
    v: &RepairView<'_>,
    missing_since: &mut HashMap<PieceIndex, Instant>,
    now: Instant,
) -> Vec<Due> {
    let l = v.layout;
    let mut out = Vec::new();
    for s in 0..l.stripes {
        let mut targets = Vec::new();
        let mut ripe = false;
        let mut available = 0;
        for i in 0..l.n() {
            let p = l.piece(s, i);
            let here = (v.have)(p);
            let seen = (v.reachable)(p);
            if here || seen {
                available += 1;
            }
            let piece = p as PieceIndex;
            if !v.wanted.get(p).copied().unwrap_or(false) || here || seen {
                missing_since.remove(&piece);
                continue;
            }
            let since = *missing_since.entry(piece).or_insert(now);
            let wait = v.grace.saturating_mul((v.turns)(i).max(1));
            ripe |= now.saturating_duration_since(since) > wait;
            targets.push(piece);
        }
        if ripe && available >= l.k {
            out.push(Due {
                stripe: s,
                spare: available - l.k,
                targets,
            });
        }
    }
    out.sort_by_key(|d| (d.spare, d.stripe));
    out
}

/// The helper shards a repair of `stripe` downloads: `k` minus the shards of the stripe
/// already here, taken among those reachable and not here; data shards first (the
/// cheapest reconstruction), then by decreasing availability, then by index. Fewer than
/// needed when fewer are reachable.
pub fn helpers(
    l: &Layout,
    stripe: usize,
    here: impl Fn(usize) -> bool,
    availability: impl Fn(usize) -> u32,
) -> Vec<PieceIndex> {
    let have = (0..l.n()).filter(|&i| here(l.piece(stripe, i))).count();
    let mut cands: Vec<(bool, u32, usize)> = (0..l.n())
        .map(|i| l.piece(stripe, i))
        .filter(|&p| !here(p))
        .map(|p| (l.locate(p).1 >= l.k, availability(p), p))
        .filter(|&(_, a, _)| a > 0)
        .collect();
    cands.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    cands
        .into_iter()
        .take(l.k.saturating_sub(have))
        .map(|(_, _, p)| p as PieceIndex)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(stripes: usize) -> Layout {
        Layout {
            k: 4,
            m: 2,
            shard_size: 16,
            stripes,
            payload_len: 0,
        }
    }

    struct Office {
        l: Layout,
        wanted: Vec<bool>,
        have: Vec<bool>,
        reachable: Vec<bool>,
        turns: Vec<u32>,
    }

    impl Office {
        fn new(stripes: usize) -> Office {
            let l = layout(stripes);
            Office {
                wanted: vec![false; l.pieces()],
                have: vec![false; l.pieces()],
                reachable: vec![true; l.pieces()],
                turns: vec![1; l.n()],
                l,
            }
        }
        fn due(&self, since: &mut HashMap<PieceIndex, Instant>, now: Instant) -> Vec<Due> {
            let have = |p: usize| self.have[p];
            let reachable = |p: usize| self.reachable[p];
            let turns = |j: usize| self.turns[j];
            let v = RepairView {
                layout: &self.l,
                wanted: &self.wanted,
                have: &have,
                reachable: &reachable,
                turns: &turns,
                grace: Duration::from_secs(100),
            };
            due(&v, since, now)
        }
    }

    /// A shard held by nobody in sight is repaired only after the grace (a laptop that
    /// went home for the night is not repaired); a holder that comes back resets the
    /// clock.
    #[test]
    fn a_missing_shard_waits_the_grace_and_a_returning_holder_resets_it() {
        let mut o = Office::new(2);
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut since = HashMap::new();
        // Index 1 of stripe 1 (piece 7) is ours and nobody has it.
        o.wanted[7] = true;
        o.reachable[7] = false;
        assert!(o.due(&mut since, t0).is_empty());
        assert!(
            o.due(&mut since, t0 + s(100)).is_empty(),
            "not before the grace"
        );
        let d = o.due(&mut since, t0 + s(101));
        assert_eq!(
            d,
            vec![Due {
                stripe: 1,
                spare: 1,
                targets: vec![7]
            }]
        );
        // Its holder is back: no repair, and the clock starts again when it leaves.
        o.reachable[7] = true;
        assert!(o.due(&mut since, t0 + s(150)).is_empty());
        assert!(since.is_empty());
        o.reachable[7] = false;
        assert!(o.due(&mut since, t0 + s(200)).is_empty());
        assert!(o.due(&mut since, t0 + s(300)).is_empty());
        assert_eq!(o.due(&mut since, t0 + s(301)).len(), 1);
        // Ours now (rebuilt or replicated): nothing to do.
        o.have[7] = true;
        assert!(o.due(&mut since, t0 + s(400)).is_empty());
    }

    /// The next machine in line waits one more grace per machine ahead of it online: two
    /// machines do not rebuild the same shard unless the first did not in a grace.
    #[test]
    fn the_second_in_line_waits_a_grace_more() {
        let mut o = Office::new(1);
        let t0 = Instant::now();
        let s = Duration::from_secs;
        o.wanted[2] = true;
        o.reachable[2] = false;
        o.turns[2] = 2;
        let mut since = HashMap::new();
        assert!(o.due(&mut since, t0).is_empty());
        assert!(o.due(&mut since, t0 + s(150)).is_empty());
        assert!(o.due(&mut since, t0 + s(200)).is_empty());
        assert_eq!(o.due(&mut since, t0 + s(201)).len(), 1);
    }

    /// Fewer than k shards in sight: nothing can be rebuilt (the clock keeps running);
    /// among due stripes, the one with the fewest spare shards first; every missing piece
    /// of a due stripe is a target, not only those whose grace ran out.
    #[test]
    fn order_by_spare_and_only_what_can_be_rebuilt() {
        let mut o = Office::new(3);
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut since = HashMap::new();
        // Stripe 0: 5 of 6 reachable (spare 1). Stripe 1: 4 of 6 (spare 0). Stripe 2: 3.
        for p in [0, 6, 7, 12, 13, 14] {
            o.wanted[p] = true;
            o.reachable[p] = false;
        }
        o.due(&mut since, t0);
        let d = o.due(&mut since, t0 + s(101));
        let got: Vec<(usize, usize, Vec<PieceIndex>)> = d
            .into_iter()
            .map(|d| (d.stripe, d.spare, d.targets))
            .collect();
        assert_eq!(got, vec![(1, 0, vec![6, 7]), (0, 1, vec![0])]);
        // Stripe 2 comes within reach once one of its shards is here (spare 0, after
        // stripe 1 by index).
        o.have[12] = true;
        let d = o.due(&mut since, t0 + s(102));
        assert_eq!(d.iter().map(|d| d.stripe).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(d[1].targets, vec![13, 14]);
        // Unwanted (placement moved it elsewhere): forgotten.
        o.wanted[0] = false;
        o.due(&mut since, t0 + s(103));
        assert!(!since.contains_key(&0));
    }

    /// Helpers: k minus what is here, reachable only, data shards first, then the most
    /// available.
    #[test]
    fn helpers_are_k_reachable_shards_data_first() {
        let l = layout(2);
        // Stripe 1 = pieces 6..12 (data 6..10, parity 10, 11). 7 is here, 8 unreachable.
        let here = |p: usize| p == 7;
        let avail = |p: usize| match p {
            8 => 0,
            10 => 5,
            _ => 1,
        };
        assert_eq!(helpers(&l, 1, here, avail), vec![6, 9, 10]);
        // Nothing needed when k are here.
        assert!(helpers(&l, 1, |p| (6..10).contains(&p), avail).is_empty());
        // Too few reachable: as many as there are.
        assert_eq!(helpers(&l, 1, |_| false, |p| u32::from(p == 11)), vec![11]);
    }
}
