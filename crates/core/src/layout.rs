//! Where a snapshot's shards sit among its pieces (format-v1.md §9.1).
//!
//! The encrypted payload is cut into stripes of `k` data shards of `shard_size` bytes,
//! and `m` parity shards are computed per stripe. Piece `p` of the torrent is shard
//! `p % (k + m)` of stripe `p / (k + m)`; shards `0..k` are data, `k..k+m` parity. The
//! payload is zero-padded to `stripes * k * shard_size`.

/// A piece of a torrent (BEP 3), numbered from 0: in a snapshot, one shard.
pub type PieceIndex = u32;
/// A stripe of a snapshot, numbered from 0.
pub type StripeIndex = usize;
/// A shard's place within its stripe: `0..k` data, `k..k+m` parity. Placement assigns
/// machines by shard index, the same for every stripe (swarm.md §3.1).
pub type ShardIndex = usize;

/// Smallest shard: one BitTorrent block (16 KiB).
pub const MIN_SHARD: usize = 16 << 10;
/// Largest shard (and piece length).
pub const MAX_SHARD: usize = 1 << 20;

/// Where the bytes of a snapshot's payload sit among its pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub k: usize,
    pub m: usize,
    pub shard_size: usize,
    pub stripes: usize,
    pub payload_len: u64,
}

/// Why stripe parameters are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// k or m out of range.
    #[error("unsupported erasure parameters k={k} m={m} (need 1 <= k, 1 <= m, k + m <= 256)")]
    BadParams {
        /// Data shards per stripe.
        k: usize,
        /// Parity shards per stripe.
        m: usize,
    },
    /// Not a power of two in [`MIN_SHARD`, `MAX_SHARD`].
    #[error("shard size {0} is not a power of two between 16 KiB and 1 MiB")]
    BadShardSize(usize),
}

/// Checks stripe parameters: 1 <= k, 1 <= m, k + m <= 256.
pub fn check_params(k: usize, m: usize) -> Result<(), LayoutError> {
    if k == 0 || m == 0 || k + m > 256 {
        return Err(LayoutError::BadParams { k, m });
    }
    Ok(())
}

impl Layout {
    /// The layout a writer chooses for a payload of `payload_len` bytes: the largest
    /// power-of-two shard size in [`MIN_SHARD`, `MAX_SHARD`], no larger than needed
    /// (`payload_len / k` rounded up to a power of two), whose padding of the last stripe
    /// is at most an eighth of the payload; when none is, the one with the least padding.
    /// Any power-of-two shard size in range is valid for readers ([`Layout::with_shard_size`]).
    pub fn for_payload(payload_len: u64, k: usize, m: usize) -> Result<Layout, LayoutError> {
        check_params(k, m)?;
        let per = payload_len.div_ceil(k as u64).max(1);
        let top = (per.next_power_of_two() as usize).clamp(MIN_SHARD, MAX_SHARD);
        let mut best: Option<Layout> = None;
        let mut s = top;
        while s >= MIN_SHARD {
            let l = Self::with_shard_size(payload_len, k, m, s)?;
            if l.padding() <= payload_len / 8 {
                return Ok(l);
            }
            if best.map(|b| l.padding() < b.padding()).unwrap_or(true) {
                best = Some(l);
            }
            s /= 2;
        }
        best.ok_or(LayoutError::BadParams { k, m })
    }

    /// The layout of a payload cut into shards of `shard_size` bytes (a power of two in
    /// [`MIN_SHARD`, `MAX_SHARD`]): as many stripes as needed, at least one.
    pub fn with_shard_size(
        payload_len: u64,
        k: usize,
        m: usize,
        shard_size: usize,
    ) -> Result<Layout, LayoutError> {
        check_params(k, m)?;
        if !shard_size.is_power_of_two() || !(MIN_SHARD..=MAX_SHARD).contains(&shard_size) {
            return Err(LayoutError::BadShardSize(shard_size));
        }
        let stripe_bytes = (k * shard_size) as u64;
        let stripes = payload_len.div_ceil(stripe_bytes).max(1) as usize;
        Ok(Layout {
            k,
            m,
            shard_size,
            stripes,
            payload_len,
        })
    }

    /// Zero bytes added after the payload to fill the last stripe.
    pub fn padding(&self) -> u64 {
        (self.stripes * self.stripe_data_len()) as u64 - self.payload_len
    }

    pub fn n(&self) -> usize {
        self.k + self.m
    }
    pub fn stripe_data_len(&self) -> usize {
        self.k * self.shard_size
    }
    pub fn pieces(&self) -> usize {
        self.stripes * self.n()
    }
    pub fn piece(&self, stripe: usize, shard: usize) -> usize {
        stripe * self.n() + shard
    }
    /// (stripe, shard index within the stripe) of a piece.
    pub fn locate(&self, piece: usize) -> (usize, usize) {
        (piece / self.n(), piece % self.n())
    }
    /// For each stripe, how many of its shards satisfy `present(piece)` (shards here,
    /// shards some peer has, shards with a holder...).
    pub fn shards_per_stripe(&self, mut present: impl FnMut(usize) -> bool) -> Vec<usize> {
        (0..self.stripes)
            .map(|s| (0..self.n()).filter(|&i| present(self.piece(s, i))).count())
            .collect()
    }
    /// Does every stripe have at least k shards satisfying `present(piece)`, i.e. can
    /// the snapshot be rebuilt from them?
    pub fn recoverable_with(&self, present: impl FnMut(usize) -> bool) -> bool {
        self.shards_per_stripe(present).iter().all(|&c| c >= self.k)
    }
    /// The stripe with the fewest shards satisfying `present(piece)`, and that count
    /// (the first such stripe on a tie).
    pub fn worst_stripe(&self, present: impl FnMut(usize) -> bool) -> (StripeIndex, usize) {
        self.shards_per_stripe(present)
            .into_iter()
            .enumerate()
            .min_by_key(|&(s, c)| (c, s))
            .unwrap_or((0, 0))
    }
    /// The stripes holding payload bytes `[offset, offset + len)`.
    pub fn stripes_for(&self, offset: u64, len: u64) -> std::ops::Range<usize> {
        let sd = self.stripe_data_len() as u64;
        if len == 0 {
            let s = (offset / sd) as usize;
            return s..s;
        }
        (offset / sd) as usize..((offset + len - 1) / sd + 1) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_stripe() {
        let l = Layout::with_shard_size(3 * 8 * MIN_SHARD as u64, 8, 4, MIN_SHARD).unwrap();
        assert_eq!(l.stripes, 3);
        // Stripe 0 complete, stripe 1 with exactly k, stripe 2 one short.
        let have = |p: usize| match l.locate(p) {
            (0, _) => true,
            (1, i) => i < 8,
            (_, i) => i < 7,
        };
        assert_eq!(l.shards_per_stripe(have), vec![12, 8, 7]);
        assert!(!l.recoverable_with(have));
        assert_eq!(l.worst_stripe(have), (2, 7));
        assert!(l.recoverable_with(|p| l.locate(p).1 >= 4));
    }

    #[test]
    fn layout_sizes() {
        // The table of interesting sizes: 0, 1, a block, a shard, a stripe, a pack.
        for (len, k, shard, stripes) in [
            (0u64, 8, MIN_SHARD, 1),
            (1, 8, MIN_SHARD, 1),
            (16 << 10, 8, MIN_SHARD, 1),
            ((8 * MIN_SHARD) as u64, 8, MIN_SHARD, 1),
            ((8 * MIN_SHARD + 1) as u64, 8, 2 * MIN_SHARD, 1),
            (8 << 20, 8, MAX_SHARD, 1),
            // Just over a stripe: 1 MiB shards would pad 8 MiB, 512 KiB shards 4 MiB,
            // 256 KiB shards 2 MiB; 128 KiB shards (9 stripes) pad under an eighth.
            ((8 << 20) + 1, 8, 128 << 10, 9),
            (12_000_000, 8, 512 << 10, 3),
            (16 << 20, 8, MAX_SHARD, 2),
            (256 << 20, 8, MAX_SHARD, 32),
        ] {
            let l = Layout::for_payload(len, k, 4).unwrap();
            assert_eq!((l.shard_size, l.stripes), (shard, stripes), "len {len}");
            assert!(l.stripes as u64 * l.stripe_data_len() as u64 >= len);
        }
        assert!(Layout::for_payload(10, 0, 4).is_err());
        assert!(Layout::for_payload(10, 200, 57).is_err());
    }

    #[test]
    fn stripes_for_ranges() {
        let l = Layout::for_payload(100 << 20, 8, 4).unwrap();
        assert_eq!(l.stripes_for(0, 1), 0..1);
        assert_eq!(l.stripes_for((8 << 20) - 1, 2), 0..2);
        assert_eq!(l.stripes_for(8 << 20, 8 << 20), 1..2);
    }
}
