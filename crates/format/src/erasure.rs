//! Stripes and shards (format v1): the encrypted payload is cut into stripes of `k` data
//! shards of `shard_size` bytes, and `m` parity shards are computed per stripe with
//! Reed-Solomon over GF(2^16) (the Leopard construction of reed-solomon-16 /
//! reed-solomon-simd 3.x). Any `k` of the `k + m` shards rebuild the stripe.
//!
//! Piece `p` of the torrent is shard `p % (k + m)` of stripe `p / (k + m)`; shards `0..k`
//! are data, `k..k+m` parity. The payload is zero-padded to `stripes * k * shard_size`.

pub use swarmbak_core::{check_params, Layout, LayoutError, MAX_SHARD, MIN_SHARD};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErasureError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("stripe {stripe}: only {have} of the {k} shards needed are available")]
    NotEnoughShards {
        stripe: usize,
        have: usize,
        k: usize,
    },
    #[error("Reed-Solomon failed: {0}")]
    Codec(String),
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
