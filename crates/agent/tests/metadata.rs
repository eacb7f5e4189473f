//! BEP 9 between swarmbak peers: a machine with nothing but an infohash gets the
//! snapshot's metainfo from a peer that seeds it, verified against the infohash.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_from_a_swarmbak_peer_with_only_the_infohash() {
    let t = tempfile::tempdir().unwrap();
    let (engine, ih) = common::seeding_engine(t.path(), 1).await;
    let bytes = swarmbak_agent::metadata::from_peer(
        engine.local_addr(),
        ih,
        *b"-SBTEST-abcdefghijkl",
        Some("http://127.0.0.1:1/announce"),
        None,
    )
    .await
    .unwrap();
    assert!(bytes.record.is_none(), "an unenrolled peer sends no record");
    let mi = swarmbak_metainfo::Metainfo::from_bytes(&bytes.torrent).unwrap();
    assert_eq!(mi.info_hash(), ih.0);
    assert_eq!(mi.announce(), Some("http://127.0.0.1:1/announce"));
    // A peer asked for a torrent it does not have answers nothing useful.
    let other = swarmbak_format::InfoHash([9u8; 20]);
    assert!(swarmbak_agent::metadata::from_peer(
        engine.local_addr(),
        other,
        *b"-SBTEST-abcdefghijkl",
        None,
        None
    )
    .await
    .is_err());
}
