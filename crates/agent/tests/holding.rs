//! Holding shards for another machine (swarm.md §13): a received shard is claimed (in
//! our `have`, announced, counted) only once a flush made it durable, and a shard that
//! cannot be written makes the torrent back off instead of downloading it again and
//! again.

use swarmbak_agent::{Role, Torrent};
use swarmbak_format::{backup, BackupOptions, Home, InfoHash};

struct Setup {
    _dir: tempfile::TempDir,
    owner: Home,
    holder: Home,
    ih: InfoHash,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    swarmbak_gentree::office(&tree, 1 << 20, 2).unwrap();
    let (owner, _) = Home::create(&dir.path().join("owner")).unwrap();
    let r = backup::backup(&owner, &BackupOptions::new(vec![tree]), &backup::NoProgress).unwrap();
    let (holder, _) = Home::create(&dir.path().join("holder")).unwrap();
    let bytes = owner.store().torrent_bytes(&r.infohash).unwrap();
    holder.store().add_torrent(&r.infohash, &bytes).unwrap();
    Setup {
        _dir: dir,
        owner,
        holder,
        ih: r.infohash,
    }
}

fn replicate(s: &Setup) -> std::sync::Arc<Torrent> {
    let me =
        swarmbak_core::MachineKey::from_age_recipient(&s.holder.recipient().unwrap().to_string())
            .unwrap();
    Torrent::open(
        &s.holder.store(),
        s.ih,
        Role::Replicate { copies: 2 },
        None,
        Some(me),
    )
    .unwrap()
}

#[test]
fn a_received_shard_is_announced_only_after_its_flush() {
    let s = setup();
    let t = replicate(&s);
    let mut haves = t.haves.subscribe();
    let shard = s.owner.store().read_shard(&s.ih, 0).unwrap().unwrap();
    assert!(
        t.complete_piece(0, &[&shard[..]]).unwrap(),
        "the shard verifies"
    );
    // Written, not yet flushed: not ours yet.
    assert!(!t.have().get(0), "claimed before the flush");
    assert!(haves.try_recv().is_err(), "announced before the flush");
    assert_eq!(t.holders()[0], 0, "counted before the flush");
    assert_eq!(t.flush_pending().unwrap(), vec![0]);
    assert!(t.have().get(0));
    assert_eq!(haves.try_recv().unwrap(), 0);
    assert_eq!(t.holders()[0], 1, "ourselves, once durable");
    assert!(t.flush_pending().unwrap().is_empty(), "flushed once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_cannot_be_written_backs_off_instead_of_downloading_again() {
    let s = setup();
    let t = replicate(&s);
    let wanted = |t: &Torrent| {
        let g = t.inner();
        (0..t.num_pieces())
            .filter(|&p| g.picker.is_wanted(p))
            .count()
    };
    assert!(
        wanted(&t) > 0,
        "placement gives the only machine every shard"
    );
    // The shards directory cannot be created (a file is in its place): every write fails,
    // as on a full disk.
    let shards = s.holder.store().shard_path(&s.ih, 0);
    let dir = shards.parent().unwrap();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::write(dir, b"in the way").unwrap();
    let shard = s.owner.store().read_shard(&s.ih, 0).unwrap().unwrap();
    t.complete_in_background(0, vec![bytes::Bytes::from(shard)], vec![None]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while wanted(&t) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(wanted(&t), 0, "still downloading after a failed write");
    assert!(!t.have().get(0));
}

/// Format 2 (format-v2.md): a received shard whose SHA-1 matches but whose Merkle root
/// does not (the owner wrote a wrong torrent) is not kept, and nothing more of that
/// snapshot is wanted; the right shard of a consistent snapshot is kept.
#[test]
fn a_shard_that_matches_its_sha1_but_not_its_root_is_refused() {
    let s = setup();
    let torrent = s.owner.store().torrent_bytes(&s.ih).unwrap();
    let mi = swarmbak_metainfo::Metainfo::from_bytes(&torrent).unwrap();
    let mut parts = swarmbak_metainfo::SwarmbakTorrent::of(&mi).unwrap();
    assert_eq!(parts.params.format, 2, "new snapshots are format 2");
    parts.params.roots.as_mut().unwrap()[0][0] ^= 1;
    let bad = swarmbak_metainfo::build_swarmbak_torrent(&parts).unwrap();
    let bad_ih = InfoHash(
        swarmbak_metainfo::Metainfo::from_bytes(&bad)
            .unwrap()
            .info_hash(),
    );
    s.holder.store().add_torrent(&bad_ih, &bad).unwrap();
    let me =
        swarmbak_core::MachineKey::from_age_recipient(&s.holder.recipient().unwrap().to_string())
            .unwrap();
    let t = Torrent::open(
        &s.holder.store(),
        bad_ih,
        Role::Replicate { copies: 2 },
        None,
        Some(me),
    )
    .unwrap();
    assert!(t.roots().is_some());
    let shard = s.owner.store().read_shard(&s.ih, 0).unwrap().unwrap();
    let e = t.complete_piece(0, &[&shard[..]]).unwrap_err();
    assert!(
        e.to_string()
            .contains("matches its SHA-1 but not its Merkle root"),
        "{e}"
    );
    assert!(
        s.holder.store().read_shard(&bad_ih, 0).unwrap().is_none(),
        "nothing of it written"
    );
    // The consistent snapshot takes the same bytes.
    let good = replicate(&s);
    assert!(good.complete_piece(0, &[&shard[..]]).unwrap());
}

/// swarm.md §14.1: a holder's signed statement names a shard only after the flush that
/// made it durable, and its sequence number goes on growing across a restart (kept in
/// the snapshot's `held` file), so peers never take an older statement for a newer one.
#[test]
fn the_held_statement_follows_the_flush_and_its_seq_survives_a_restart() {
    let s = setup();
    let key = || swarmbak_trust::SigningKey::from_seed([3; 32]);
    let proofs = || swarmbak_agent::torrent::Proofs {
        possession: swarmbak_agent::possession::Possession::new(
            std::sync::Arc::new(swarmbak_core::SystemClock),
            None,
        ),
        identity: swarmbak_agent::Identity::new([1; 32], key().public(), Vec::new(), key()),
    };
    let t = replicate(&s);
    t.set_proofs(proofs());
    assert!(
        t.states(),
        "a holder states what it holds of others' snapshots"
    );
    assert!(t.statement().is_none(), "nothing held: nothing stated");
    let shard = s.owner.store().read_shard(&s.ih, 0).unwrap().unwrap();
    assert!(t.complete_piece(0, &[&shard[..]]).unwrap());
    assert!(t.statement().is_none(), "stated before the flush");
    assert_eq!(t.flush_pending().unwrap(), vec![0]);
    let (_, envelope) = t.statement().expect("stated after the flush");
    let st = swarmbak_trust::HeldStatement::verify(&envelope, &key().public()).unwrap();
    assert!(st.holds(0) && !st.holds(1));
    assert_eq!(st.infohash, s.ih.0);
    drop(t);
    // A restart: the next statement's seq is larger than any sent before.
    let t = replicate(&s);
    t.set_proofs(proofs());
    let (_, envelope) = t.statement().expect("stated again at start");
    let again = swarmbak_trust::HeldStatement::verify(&envelope, &key().public()).unwrap();
    assert!(again.seq > st.seq, "{} after {}", again.seq, st.seq);
    assert!(again.holds(0));
}
