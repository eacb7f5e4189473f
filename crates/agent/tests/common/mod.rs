//! What the agent's integration tests share: an engine on loopback seeding a snapshot of
//! a small test tree; a crafted snapshot of many pieces.

#![allow(dead_code)]

pub mod crafted;

use swarmbak_agent::{Engine, EngineConfig, Role, Torrent};
use swarmbak_format::{backup, BackupOptions, Home, InfoHash};

/// Backs up a small office tree into a new home under `dir` (seed `tree_seed`) and
/// starts an engine on 127.0.0.1 seeding it (not enrolled, no tracker).
pub async fn seeding_engine(dir: &std::path::Path, tree_seed: u64) -> (Engine, InfoHash) {
    let tree = dir.join("tree");
    swarmbak_gentree::office(&tree, 1 << 20, tree_seed).unwrap();
    let (home, _) = Home::create(&dir.join("home")).unwrap();
    let r = backup::backup(&home, &BackupOptions::new(vec![tree]), &backup::NoProgress).unwrap();
    let me = swarmbak_core::MachineKey::from_age_recipient(&home.recipient().unwrap().to_string())
        .unwrap();
    let engine = Engine::start(EngineConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        Some(me.clone()),
    ))
    .await
    .unwrap();
    let t = Torrent::open(
        &home.store(),
        r.infohash,
        Role::Seed,
        Some(me.clone()),
        Some(me),
    )
    .unwrap();
    engine.add(t);
    (engine, r.infohash)
}
