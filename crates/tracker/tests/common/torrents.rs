//! Valid swarmbak torrents and snapshot rows for the storage tests.

use swarmbak_metainfo::{build_swarmbak_torrent, Metainfo, SwarmbakParams, SwarmbakTorrent};
use swarmbak_tracker::storage::SnapshotRow;

/// A valid swarmbak torrent, distinct for each `n`, with `3 * stripes` pieces (20 bytes
/// of piece hash each: `stripes` sets its size).
pub fn torrent(n: u32, stripes: u64) -> Vec<u8> {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    let pieces = (0..stripes * 3)
        .map(|i| {
            let mut h = [0u8; 20];
            h[..4].copy_from_slice(&n.to_be_bytes());
            h[4..12].copy_from_slice(&i.to_be_bytes());
            h
        })
        .collect();
    build_swarmbak_torrent(&SwarmbakTorrent {
        announce: None,
        creation_date: 1_700_000_000,
        name: format!("swarmbak-{n}.shards"),
        piece_length: 16384,
        piece_hashes: pieces,
        params: SwarmbakParams {
            format: 1,
            k: 2,
            m: 1,
            stripes,
            payload_length: 1000 + u64::from(n),
            manifest_offset: 0,
            manifest_length: 100,
            id,
            roots: None,
        },
    })
    .unwrap()
}

/// The row a tracker would store for `torrent`.
pub fn row_of(
    torrent: &[u8],
    machine_key: &str,
    machine_name: &str,
    published: i64,
) -> SnapshotRow {
    let mi = Metainfo::from_bytes(torrent).unwrap();
    SnapshotRow {
        infohash: mi.info_hash(),
        machine_key: machine_key.to_owned(),
        machine_name: machine_name.to_owned(),
        published,
        total_length: mi.total_length(),
        payload_length: mi.swarmbak().unwrap().payload_length,
        name: String::from_utf8_lossy(mi.name()).into_owned(),
        copies: 3,
        record: Some(b"signed record".to_vec()),
        certificate: Some(b"certificate".to_vec()),
    }
}
