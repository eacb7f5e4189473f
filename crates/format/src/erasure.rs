//! Stripes and shards (format v1): the encrypted payload is cut into stripes of `k` data
//! shards of `shard_size` bytes, and `m` parity shards are computed per stripe with
//! Reed-Solomon over GF(2^16) (the Leopard construction of reed-solomon-16 /
//! reed-solomon-simd 3.x). Any `k` of the `k + m` shards rebuild the stripe.
//!
//! Piece `p` of the torrent is shard `p % (k + m)` of stripe `p / (k + m)`; shards `0..k`
//! are data, `k..k+m` parity. The payload is zero-padded to `stripes * k * shard_size`.

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

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErasureError {
    #[error("unsupported erasure parameters k={k} m={m} (need 1 <= k, 1 <= m, k + m <= 256)")]
    BadParams { k: usize, m: usize },
    #[error("shard size {0} is not a power of two between 16 KiB and 1 MiB")]
    BadShardSize(usize),
    #[error("stripe {stripe}: only {have} of the {k} shards needed are available")]
    NotEnoughShards {
        stripe: usize,
        have: usize,
        k: usize,
    },
    #[error("Reed-Solomon failed: {0}")]
    Codec(String),
}

pub fn check_params(k: usize, m: usize) -> Result<(), ErasureError> {
    if k == 0 || m == 0 || k + m > 256 {
        return Err(ErasureError::BadParams { k, m });
    }
    Ok(())
}

impl Layout {
    /// The layout a writer chooses for a payload of `payload_len` bytes: the largest
    /// power-of-two shard size in [`MIN_SHARD`, `MAX_SHARD`], no larger than needed
    /// (`payload_len / k` rounded up to a power of two), whose padding of the last stripe
    /// is at most an eighth of the payload; when none is, the one with the least padding.
    /// Any power-of-two shard size in range is valid for readers ([`Layout::with_shard_size`]).
    pub fn for_payload(payload_len: u64, k: usize, m: usize) -> Result<Layout, ErasureError> {
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
        best.ok_or(ErasureError::BadParams { k, m })
    }

    /// The layout of a payload cut into shards of `shard_size` bytes (a power of two in
    /// [`MIN_SHARD`, `MAX_SHARD`]): as many stripes as needed, at least one.
    pub fn with_shard_size(
        payload_len: u64,
        k: usize,
        m: usize,
        shard_size: usize,
    ) -> Result<Layout, ErasureError> {
        check_params(k, m)?;
        if !shard_size.is_power_of_two() || !(MIN_SHARD..=MAX_SHARD).contains(&shard_size) {
            return Err(ErasureError::BadShardSize(shard_size));
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

/// Computes the `m` parity shards of one stripe (`data.len() == k * shard_size`).
pub fn encode(k: usize, m: usize, data: &[u8]) -> Result<Vec<Vec<u8>>, ErasureError> {
    check_params(k, m)?;
    let s = data.len() / k;
    reed_solomon_simd::encode(k, m, data.chunks(s)).map_err(|e| ErasureError::Codec(e.to_string()))
}

/// Rebuilds every missing shard of a stripe in place from any `k` present ones.
/// `shards.len() == k + m`; present shards must all have the same length.
pub fn reconstruct(
    stripe: usize,
    k: usize,
    m: usize,
    shards: &mut [Option<Vec<u8>>],
) -> Result<(), ErasureError> {
    check_params(k, m)?;
    let have = shards.iter().filter(|s| s.is_some()).count();
    if have == k + m {
        return Ok(());
    }
    if have < k {
        return Err(ErasureError::NotEnoughShards { stripe, have, k });
    }
    let data_missing = shards[..k].iter().any(|s| s.is_none());
    if data_missing {
        let restored = reed_solomon_simd::decode(
            k,
            m,
            shards[..k]
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.as_ref().map(|s| (i, s))),
            shards[k..]
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.as_ref().map(|s| (i, s))),
        )
        .map_err(|e| ErasureError::Codec(e.to_string()))?;
        for (i, v) in restored {
            shards[i] = Some(v);
        }
    }
    if shards[k..].iter().any(|s| s.is_none()) {
        let parity = reed_solomon_simd::encode(
            k,
            m,
            shards[..k].iter().map(|s| s.as_deref().unwrap_or(&[])),
        )
        .map_err(|e| ErasureError::Codec(e.to_string()))?;
        for (i, p) in parity.into_iter().enumerate() {
            if shards[k + i].is_none() {
                shards[k + i] = Some(p);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stripe_bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Any k of the k + m shards rebuild the stripe, data and parity alike.
        #[test]
        fn any_k_of_n_rebuild(k in 1usize..20, m in 1usize..12, shard_words in 1usize..40, seed: u8, pick in any::<u64>()) {
            let s = shard_words * 64;
            let data = stripe_bytes(k * s, seed);
            let parity = encode(k, m, &data).unwrap();
            let full: Vec<Vec<u8>> = data.chunks(s).map(|c| c.to_vec()).chain(parity).collect();
            // Choose which k shards survive with a permutation seeded by `pick`.
            let mut order: Vec<usize> = (0..k + m).collect();
            let mut x = pick | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut shards: Vec<Option<Vec<u8>>> = vec![None; k + m];
            for &i in &order[..k] {
                shards[i] = Some(full[i].clone());
            }
            reconstruct(0, k, m, &mut shards).unwrap();
            for i in 0..k + m {
                prop_assert_eq!(shards[i].as_ref().unwrap(), &full[i]);
            }
            // One fewer than k is refused with a clear error.
            let mut fewer: Vec<Option<Vec<u8>>> = vec![None; k + m];
            for &i in &order[..k - 1] {
                fewer[i] = Some(full[i].clone());
            }
            let refused = matches!(reconstruct(3, k, m, &mut fewer), Err(ErasureError::NotEnoughShards { stripe: 3, .. }));
            prop_assert!(refused);
        }
    }
}
