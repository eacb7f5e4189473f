//! BEP 9 between swarmbak peers: a machine with nothing but an infohash gets the
//! snapshot's metainfo from a peer that seeds it, verified against the infohash.

use swarmbak_agent::{Engine, EngineConfig, Role, Torrent};
use swarmbak_format::{backup, BackupOptions, Home};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_from_a_swarmbak_peer_with_only_the_infohash() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    swarmbak_gentree::office(&tree, 1 << 20, 1).unwrap();
    let (home, _) = Home::create(&t.path().join("home")).unwrap();
    let r = backup::backup(&home, &BackupOptions::new(vec![tree]), &backup::NoProgress).unwrap();
    let me = swarmbak_core::MachineKey::from_age_recipient(&home.recipient().unwrap().to_string())
        .unwrap();
    let engine = Engine::start(EngineConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        machine_key: Some(me.clone()),
        identity: None,
        takeover_grace: std::time::Duration::from_secs(30),
        clock: std::sync::Arc::new(swarmbak_core::SystemClock),
        tracker: None,
        announce_every: std::time::Duration::from_secs(30),
        verbose: false,
    })
    .await
    .unwrap();
    let tor = Torrent::open(
        &home.store(),
        r.infohash,
        Role::Seed,
        Some(me.clone()),
        Some(me),
    )
    .unwrap();
    engine.add(tor);
    let bytes = swarmbak_agent::metadata::from_peer(
        engine.local_addr(),
        r.infohash,
        *b"-SBTEST-abcdefghijkl",
        Some("http://127.0.0.1:1/announce"),
    )
    .await
    .unwrap();
    let mi = swarmbak_metainfo::Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(mi.info_hash(), r.infohash.0);
    assert_eq!(mi.announce(), Some("http://127.0.0.1:1/announce"));
    // A peer asked for a torrent it does not have answers nothing useful.
    let other = swarmbak_format::InfoHash([9u8; 20]);
    assert!(swarmbak_agent::metadata::from_peer(
        engine.local_addr(),
        other,
        *b"-SBTEST-abcdefghijkl",
        None
    )
    .await
    .is_err());
}
