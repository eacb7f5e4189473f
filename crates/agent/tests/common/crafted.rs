//! A crafted format-2 snapshot of many tiny pieces (random hashes and roots, nothing
//! stored): what an attacker publishes to make agents replicate something large. Shared
//! by the `have`-flood test (`tests/limits.rs`) and `examples/attack_haves.rs`.

use rand::RngCore;
use swarmbak_format::{InfoHash, Store};
use swarmbak_metainfo::{build_swarmbak_torrent, Metainfo, SwarmbakParams, SwarmbakTorrent};

/// Shard size of the crafted snapshot: 16 KiB, so a few MiB of metainfo name many pieces.
pub const SHARD: u64 = 16 * 1024;

/// Adds to `store` a snapshot of about `pieces` pieces (stripes of 8 + 4 shards) and
/// returns its info-hash and its exact piece count.
pub fn crafted_snapshot(store: &Store, pieces: usize) -> (InfoHash, usize) {
    let (k, m) = (8u16, 4u16);
    let stripes = (pieces / (k + m) as usize).max(1);
    let pieces = stripes * (k + m) as usize;
    let mut rng = rand::thread_rng();
    let mut random = |n: usize| {
        let mut b = vec![0u8; n];
        rng.fill_bytes(&mut b);
        b
    };
    let hashes: Vec<[u8; 20]> = (0..pieces)
        .map(|_| random(20).try_into().expect("20"))
        .collect();
    let roots: Vec<[u8; 32]> = (0..pieces)
        .map(|_| random(32).try_into().expect("32"))
        .collect();
    let payload = stripes as u64 * k as u64 * SHARD;
    let bytes = build_swarmbak_torrent(&SwarmbakTorrent {
        announce: None,
        creation_date: 0,
        name: "swarmbak-crafted.shards".into(),
        piece_length: SHARD,
        piece_hashes: hashes,
        params: SwarmbakParams {
            format: 2,
            k,
            m,
            stripes: stripes as u64,
            payload_length: payload,
            // The manifest ends the payload (format-v1.md).
            manifest_offset: payload - 1024,
            manifest_length: 1024,
            id: random(16).try_into().expect("16"),
            roots: Some(roots),
        },
    })
    .expect("a crafted snapshot builds");
    let ih = InfoHash(Metainfo::from_bytes(&bytes).expect("parses").info_hash());
    store.add_torrent(&ih, &bytes).expect("store");
    (ih, pieces)
}
