//! Per-shard Merkle roots (protocol-spec/format-v2.md §2): BEP 52's piece-layer hash of
//! one piece, so that a holder can prove it holds a shard by answering for one random
//! 16 KiB block, checkable by a machine that does not hold the shard.
//!
//! - Leaves: `L_i = SHA-256(block_i)`, block `i` being bytes `[i * BLOCK, (i + 1) * BLOCK)`
//!   of the shard.
//! - When the number of blocks is not a power of two, the leaf layer is padded with
//!   all-zero 32-byte hashes up to the next power of two (BEP 52).
//! - Parent: `SHA-256(left ‖ right)`; the root is the single node of the top layer, so a
//!   shard of exactly one block has its leaf as root.
//!
//! Shards of swarmbak snapshots are a power of two of blocks (16 KiB ..= 1 MiB,
//! `Layout`), so the padding never applies to them; it is implemented for BEP 52
//! compatibility. A shard whose length is not a multiple of [`BLOCK`] (never written by
//! swarmbak) is treated as BEP 52 treats the end of a file: the short last block is hashed
//! as it is (`SHA-256` of its bytes, not zero-extended). An empty shard has no blocks; its
//! [`root`] is the all-zero hash, and [`verify`] refuses every proof for it.

use sha2::{Digest, Sha256};

/// Block size: one BitTorrent request, one Merkle leaf.
pub const BLOCK: usize = 16384;

type Hash = [u8; 32];
const ZERO: Hash = [0; 32];

/// The leaf hash of one block: SHA-256 of its bytes.
pub fn leaf(block: &[u8]) -> [u8; 32] {
    Sha256::digest(block).into()
}

fn parent(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The leaf layer of `shard`, padded with zero hashes to a power of two (one allocation).
fn leaves(shard: &[u8]) -> Vec<Hash> {
    let n = shard.len().div_ceil(BLOCK);
    let mut layer = Vec::with_capacity(n.next_power_of_two());
    layer.extend(shard.chunks(BLOCK).map(leaf));
    layer.resize(n.next_power_of_two(), ZERO);
    layer
}

/// Replaces `layer` (a power of two of nodes, at least two) by the layer above, in place.
fn fold(layer: &mut Vec<Hash>) {
    let half = layer.len() / 2;
    for i in 0..half {
        layer[i] = parent(&layer[2 * i], &layer[2 * i + 1]);
    }
    layer.truncate(half);
}

/// The Merkle root of a shard (module documentation for the rules; the shard's length is
/// meant to be a positive multiple of [`BLOCK`]). The blocks are hashed in place, with one
/// allocation for the leaf layer.
pub fn root(shard: &[u8]) -> [u8; 32] {
    if shard.is_empty() {
        return ZERO;
    }
    let mut layer = leaves(shard);
    while layer.len() > 1 {
        fold(&mut layer);
    }
    layer[0]
}

/// The Merkle root of a shard given as consecutive parts (e.g. the blocks of a piece as
/// they arrived): the same as [`root`] of their concatenation; parts that are whole
/// blocks are hashed in place, others are joined first.
pub fn root_of_parts<B: AsRef<[u8]>>(parts: &[B]) -> [u8; 32] {
    if parts.iter().all(|p| p.as_ref().len() == BLOCK) {
        if parts.is_empty() {
            return ZERO;
        }
        let mut layer: Vec<Hash> = Vec::with_capacity(parts.len().next_power_of_two());
        layer.extend(parts.iter().map(|p| leaf(p.as_ref())));
        layer.resize(parts.len().next_power_of_two(), ZERO);
        while layer.len() > 1 {
            fold(&mut layer);
        }
        return layer[0];
    }
    root(
        &parts
            .iter()
            .flat_map(|p| p.as_ref().iter().copied())
            .collect::<Vec<u8>>(),
    )
}

/// The proof for block `block` of `shard`: the uncle hashes from the leaf layer up
/// (lowest level first), `log2(padded leaf count)` of them; empty for a one-block shard.
/// A `block` outside the shard gets an empty proof, which [`verify`] refuses.
pub fn proof(shard: &[u8], block: usize) -> Vec<[u8; 32]> {
    if block >= shard.len().div_ceil(BLOCK) {
        return Vec::new();
    }
    let mut layer = leaves(shard);
    let mut out = Vec::with_capacity(layer.len().trailing_zeros() as usize);
    let mut i = block;
    while layer.len() > 1 {
        out.push(layer[i ^ 1]);
        fold(&mut layer);
        i /= 2;
    }
    out
}

/// Whether `data` is block `block` of a shard of `blocks_in_shard` blocks whose root is
/// `root`, given the uncle hashes `proof` (lowest level first).
///
/// False, never a panic, when: `blocks_in_shard` is 0; `block >= blocks_in_shard`; `data`
/// is not [`BLOCK`] bytes (the last block may be 1 ..= [`BLOCK`] bytes, module
/// documentation); `proof` does not have exactly `log2(next power of two of
/// blocks_in_shard)` hashes; or the hashes do not fold to `root`.
pub fn verify(
    root: &[u8; 32],
    blocks_in_shard: usize,
    block: usize,
    data: &[u8],
    proof: &[[u8; 32]],
) -> bool {
    if block >= blocks_in_shard {
        return false;
    }
    let size_ok = if block + 1 == blocks_in_shard {
        (1..=BLOCK).contains(&data.len())
    } else {
        data.len() == BLOCK
    };
    let Some(padded) = blocks_in_shard.checked_next_power_of_two() else {
        return false;
    };
    if !size_ok || proof.len() != padded.trailing_zeros() as usize {
        return false;
    }
    let mut node = leaf(data);
    for (level, uncle) in proof.iter().enumerate() {
        node = if (block >> level) & 1 == 0 {
            parent(&node, uncle)
        } else {
            parent(uncle, &node)
        };
    }
    node == *root
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex32(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// Bytes that differ from block to block (16384 is not a multiple of 251).
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn vectors() {
        // Checked independently (Python hashlib) when they were written down.
        let zero_block = hex32("4fe7b59af6de3b665b67788cc2f99892ab827efae3a467342b3bb4e3bc8e5bfe");
        assert_eq!(root(&[0; BLOCK]), zero_block);
        assert_eq!(
            leaf(&[0; BLOCK]),
            zero_block,
            "one block: the root is its leaf"
        );
        assert_eq!(
            root(&vec![0; 1 << 20]),
            hex32("515ea9181744b817744ded9d2e8e9dc6a8450c0b0c52e24b5077f302ffbd9008")
        );
        // Three blocks, padded with one zero hash.
        assert_eq!(
            root(&vec![0; 3 * BLOCK]),
            hex32("1cb5a249f6e721060aae623d21d3eca23056bda8c19e4e89f9a086151553713d")
        );
        assert_eq!(
            root(&vec![0; 3 * BLOCK]),
            parent(
                &parent(&zero_block, &zero_block),
                &parent(&zero_block, &ZERO)
            )
        );
        // Five patterned blocks (byte i = i mod 256), padded to eight.
        assert_eq!(
            root(&(0..5 * BLOCK).map(|i| i as u8).collect::<Vec<u8>>()),
            hex32("f63a4b3a87328af5779784f6406e8bf45072a92b6a2a4393d744bc4b6c8c4db1")
        );
        // A short last block is hashed as it is (BEP 52's end of file).
        let mut short = vec![0; BLOCK];
        short.extend_from_slice(b"abc");
        assert_eq!(
            root(&short),
            hex32("8804d08efa2739a6f4e429d9d736b5e30c55b3df23e3fdc75d555f480c7228d8")
        );
        assert_eq!(root(&[]), ZERO);
    }

    fn check_all_blocks(shard: &[u8]) {
        let n = shard.len().div_ceil(BLOCK);
        let r = root(shard);
        let height = n.next_power_of_two().trailing_zeros() as usize;
        for (b, data) in shard.chunks(BLOCK).enumerate() {
            let p = proof(shard, b);
            assert_eq!(p.len(), height);
            assert!(verify(&r, n, b, data, &p), "block {b} of {n}");
            // Wrong index, flipped data bit, flipped uncle, short or long proof, other root.
            if n > 1 {
                assert!(!verify(&r, n, (b + 1) % n, data, &p));
            }
            let mut d = data.to_vec();
            let mid = d.len() / 2;
            d[mid] ^= 0x10;
            assert!(!verify(&r, n, b, &d, &p));
            for j in 0..p.len() {
                let mut q = p.clone();
                q[j][31] ^= 1;
                assert!(!verify(&r, n, b, data, &q), "uncle {j}");
            }
            if !p.is_empty() {
                assert!(!verify(&r, n, b, data, &p[1..]));
            }
            let mut longer = p.clone();
            longer.push([0; 32]);
            assert!(!verify(&r, n, b, data, &longer));
            let mut other_root = r;
            other_root[0] ^= 1;
            assert!(!verify(&other_root, n, b, data, &p));
        }
        assert!(proof(shard, n).is_empty());
        assert!(!verify(&r, n, n, &shard[..BLOCK.min(shard.len())], &[]));
    }

    #[test]
    fn every_block_proves_and_tampering_fails() {
        for blocks in [1, 2, 3, 4, 5, 8, 64] {
            check_all_blocks(&pattern(blocks * BLOCK));
        }
    }

    #[test]
    fn sizes_are_checked() {
        let shard = pattern(4 * BLOCK);
        let r = root(&shard);
        let p = proof(&shard, 1);
        let b1 = &shard[BLOCK..2 * BLOCK];
        assert!(verify(&r, 4, 1, b1, &p));
        assert!(
            !verify(&r, 4, 1, &b1[..BLOCK - 1], &p),
            "short middle block"
        );
        let mut long = b1.to_vec();
        long.push(0);
        assert!(!verify(&r, 4, 1, &long, &p), "long block");
        assert!(!verify(&r, 0, 0, b1, &p));
        assert!(!verify(&r, usize::MAX, 1, b1, &p));
        assert!(!verify(&r, 4, usize::MAX, b1, &p));
        // The one-block shard: empty proof, and a proof of any length is refused.
        let one = pattern(BLOCK);
        assert!(verify(&root(&one), 1, 0, &one, &[]));
        assert!(!verify(&root(&one), 1, 0, &one, &[[0; 32]]));
        assert!(!verify(&root(&one), 1, 0, &[], &[]));
        // A short last block verifies as itself and only as the last block.
        let mut s = pattern(2 * BLOCK);
        s.truncate(BLOCK + 100);
        let r = root(&s);
        assert!(verify(&r, 2, 1, &s[BLOCK..], &proof(&s, 1)));
        assert!(!verify(&r, 2, 0, &s[BLOCK..], &proof(&s, 1)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_sizes(blocks in 1usize..40, tail in 0usize..BLOCK, seed: u8, pick: usize) {
            let len = (blocks - 1) * BLOCK + tail.max(1);
            let shard: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let n = len.div_ceil(BLOCK);
            let b = pick % n;
            let data = &shard[b * BLOCK..((b + 1) * BLOCK).min(len)];
            let p = proof(&shard, b);
            prop_assert!(verify(&root(&shard), n, b, data, &p));
            // The root from the proof's own definition: padded leaf layer, pairwise.
            let mut layer: Vec<Hash> = shard.chunks(BLOCK).map(leaf).collect();
            layer.resize(n.next_power_of_two(), ZERO);
            while layer.len() > 1 {
                layer = layer.chunks(2).map(|c| parent(&c[0], &c[1])).collect();
            }
            prop_assert_eq!(layer[0], root(&shard));
        }

        #[test]
        fn hostile_input_never_panics(
            blocks in any::<usize>(),
            block in any::<usize>(),
            len in 0usize..(2 * BLOCK),
            plen in 0usize..70,
        ) {
            let data = vec![7u8; len];
            let p = vec![[1u8; 32]; plen];
            let _ = verify(&[0; 32], blocks, block, &data, &p);
        }
    }

    #[test]
    fn the_root_of_parts_is_the_root_of_the_whole() {
        let shard: Vec<u8> = (0..4 * BLOCK).map(|i| (i * 7 + i / 300) as u8).collect();
        let blocks: Vec<&[u8]> = shard.chunks(BLOCK).collect();
        assert_eq!(root_of_parts(&blocks), root(&shard));
        let uneven: Vec<&[u8]> = vec![&shard[..1000], &shard[1000..]];
        assert_eq!(root_of_parts(&uneven), root(&shard));
        assert_eq!(root_of_parts::<&[u8]>(&[]), root(&[]));
    }
}
