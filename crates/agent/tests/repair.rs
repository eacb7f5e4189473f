//! Repair with no key (swarm.md §18), two engines on loopback: a shard index that no
//! machine holds any more is rebuilt by the machine placement gives it to, from k shards
//! of each stripe that another machine serves; helpers are never claimed and are deleted.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use swarmbak_agent::{Engine, EngineConfig, RepairSettings, Role, Torrent};
use swarmbak_core::MachineKey;
use swarmbak_format::{backup, BackupOptions, Home};

fn key(h: &Home) -> MachineKey {
    MachineKey::from_age_recipient(&h.recipient().unwrap().to_string()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_nobody_holds_is_rebuilt_from_its_stripe_with_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    swarmbak_gentree::office(&tree, 6 << 20, 11).unwrap();
    // The owner made the snapshot and is gone (its home stays, to compare bytes).
    let (owner, _) = Home::create(&dir.path().join("owner")).unwrap();
    // Two data shards a stripe, so that the snapshot has several stripes (shards are at
    // most 1 MiB) and several repairs run.
    let mut opts = BackupOptions::new(vec![tree]);
    opts.k = 2;
    opts.m = 2;
    let r = backup::backup(&owner, &opts, &backup::NoProgress).unwrap();
    let ih = r.infohash;
    let torrent = owner.store().torrent_bytes(&ih).unwrap();
    // A machine that holds every shard but index J of each stripe: index J's holders
    // are all gone.
    let (source, _) = Home::create(&dir.path().join("source")).unwrap();
    source.store().add_torrent(&ih, &torrent).unwrap();
    let probe = Torrent::open(&source.store(), ih, Role::Seed, None, None).unwrap();
    let l = probe.layout();
    drop(probe);
    assert!(l.stripes >= 2, "{l:?}");
    const J: usize = 1;
    for p in 0..l.pieces() {
        if l.locate(p).1 != J {
            let b = owner.store().read_shard(&ih, p).unwrap().unwrap();
            source.store().write_shard(&ih, p, &b).unwrap();
        }
    }
    let src = Engine::start(EngineConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        Some(key(&source)),
    ))
    .await
    .unwrap();
    src.add(
        Torrent::open(
            &source.store(),
            ih,
            Role::Seed,
            Some(key(&owner)),
            Some(key(&source)),
        )
        .unwrap(),
    );
    // The holder: placement over {source, holder} gives it index J (its own, or by
    // takeover once J has been short of holders for the takeover grace).
    let (holder, _) = Home::create(&dir.path().join("holder")).unwrap();
    holder.store().add_torrent(&ih, &torrent).unwrap();
    let log = dir.path().join("repair.log");
    let mut cfg = EngineConfig::new("127.0.0.1:0".parse().unwrap(), Some(key(&holder)));
    cfg.takeover_grace = Duration::from_millis(100);
    cfg.repair = Some(RepairSettings {
        grace: Duration::from_millis(300),
        rate: 1 << 30,
        log: Some(log.clone()),
    });
    let eng = Engine::start(cfg).await.unwrap();
    let t = Torrent::open(
        &holder.store(),
        ih,
        Role::Replicate { copies: 1 },
        Some(key(&owner)),
        Some(key(&holder)),
    )
    .unwrap();
    eng.add(t.clone());
    eng.connect(ih, src.local_addr());

    let index_j: Vec<u32> = (0..l.stripes).map(|s| l.piece(s, J) as u32).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Until every stripe's index J is had and no repair is under way any more.
    while !index_j.iter().all(|&p| t.have().get(p)) || t.repairs_under_way() > 0 {
        assert!(
            Instant::now() < deadline,
            "index {J} not rebuilt: {} of {} stripes; repair.log: {:?}",
            index_j.iter().filter(|&&p| t.have().get(p)).count(),
            l.stripes,
            std::fs::read_to_string(&log).ok()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Byte for byte the owner's shards, though the holder has no key of the snapshot.
    for &p in &index_j {
        assert_eq!(
            holder.store().read_shard(&ih, p as usize).unwrap(),
            owner.store().read_shard(&ih, p as usize).unwrap(),
            "piece {p}"
        );
    }
    assert_eq!(t.repaired.load(Ordering::Relaxed), l.stripes as u64);
    // The helpers were never claimed (only index J is had) and are gone from the disk.
    let had: Vec<u32> = t.have().iter_ones().collect();
    assert_eq!(had, index_j, "helpers claimed as held");
    let repair_dir = holder.store().repair_path(&ih, 0);
    let left = std::fs::read_dir(repair_dir.parent().unwrap())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "helper shards left behind");
    for p in 0..l.pieces() {
        if l.locate(p).1 != J {
            assert!(
                holder.store().read_shard(&ih, p).unwrap().is_none(),
                "helper {p} in the shards"
            );
        }
    }
    // One log line per stripe, each naming what it rebuilt from k helpers.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), l.stripes, "{lines:?}");
    for v in &lines {
        assert_eq!(v["rebuilt"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v["helpers"], l.k, "{v}");
        assert!(v["error"].is_null(), "{v}");
    }
}

/// An enrolled agent counts only authenticated members as holders in sight: a stranger
/// that says it has every shard (a `have all` costs nothing) does not hold a repair back
/// (threat-model.md). Here a member has k shards of the stripe and a stranger claims
/// all: the other shards are missing, and due once the grace has passed.
#[test]
fn a_strangers_have_all_does_not_hold_a_repair_back() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    swarmbak_gentree::office(&tree, 1 << 20, 12).unwrap();
    let (owner, _) = Home::create(&dir.path().join("owner")).unwrap();
    let r = backup::backup(&owner, &BackupOptions::new(vec![tree]), &backup::NoProgress).unwrap();
    let (holder, _) = Home::create(&dir.path().join("holder")).unwrap();
    let torrent = owner.store().torrent_bytes(&r.infohash).unwrap();
    holder.store().add_torrent(&r.infohash, &torrent).unwrap();
    let t = Torrent::open(
        &holder.store(),
        r.infohash,
        Role::Replicate { copies: 2 },
        Some(key(&owner)),
        Some(key(&holder)),
    )
    .unwrap();
    let clock = std::sync::Arc::new(swarmbak_core::ManualClock::new(std::time::SystemTime::now()));
    t.set_takeover(Duration::from_secs(1), clock.clone());
    let signing = swarmbak_trust::SigningKey::from_seed([4; 32]);
    t.set_proofs(swarmbak_agent::torrent::Proofs {
        possession: swarmbak_agent::possession::Possession::new(clock.clone(), None),
        identity: swarmbak_agent::Identity::new([1; 32], signing.public(), Vec::new(), signing),
    });
    t.set_repair(RepairSettings {
        grace: Duration::from_secs(10),
        rate: 1 << 30,
        log: None,
    });
    let l = t.layout();
    let n = t.num_pieces();
    let mut member_has = swarmbak_wire::Bitfield::new(n);
    for i in 0..l.k {
        member_has.set(l.piece(0, i) as u32, true);
    }
    let (other, _) = Home::create(&dir.path().join("member")).unwrap();
    let peer = |port: u16, machine, member, has: swarmbak_wire::Bitfield| {
        swarmbak_agent::torrent::PeerView {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            machine,
            member,
            domain: None,
            servable: true,
            has,
            interested: false,
            downloaded: 0,
            uploaded: 0,
            snubbed: false,
        }
    };
    {
        let mut g = t.inner();
        let member = peer(
            1,
            Some(key(&other)),
            Some(swarmbak_trust::SigningKey::from_seed([5; 32]).public()),
            member_has.clone(),
        );
        g.picker.add_peer(&member.has);
        g.peers.insert(1, member);
        let stranger = peer(2, None, None, swarmbak_wire::Bitfield::full(n));
        g.picker.add_peer(&stranger.has);
        g.peers.insert(2, stranger);
    }
    t.update_wanted();
    assert!(t.repairs_due().is_empty(), "due before the grace");
    clock.advance(Duration::from_secs(25));
    t.update_wanted();
    let due = t.repairs_due();
    let missing: Vec<u32> = (l.k..l.n()).map(|i| l.piece(0, i) as u32).collect();
    assert_eq!(due.len(), 1, "the stranger's have all held the repair back");
    assert_eq!(due[0].stripe, 0);
    assert_eq!(due[0].spare, 0);
    assert_eq!(due[0].targets, missing);
}
