//! Retention across the swarm (swarm.md §16; tracker.md §7.8): an owner forgets, the
//! tracker takes its signed retirements, the holders keep everything for the grace period
//! and then let go of what no kept snapshot reads; a retirement the administrator cancels
//! in time costs nothing; the kept snapshot restores from the holders alone. Real
//! tracker and agents on loopback; the grace period shortened to a few seconds.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{assert_same, du, ok, procs, store_dir};

const MIB: usize = 1 << 20;
/// The holders' grace period in this test.
const GRACE: &str = "6";

fn until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "waited {secs} s for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `seed --until durable` (every shard on both holders), through the owner's agent.
fn seed_durable(home: &Path, tree: &Path) -> String {
    let out = ok(
        home,
        &[
            "seed",
            tree.to_str().unwrap(),
            "--until",
            "durable",
            "--copies",
            "2",
            "--timeout",
            "120",
        ],
    );
    out.lines().next().unwrap().to_owned()
}

#[test]
fn holders_let_go_of_what_no_kept_snapshot_reads_after_the_grace_period() {
    let t = tempfile::tempdir().unwrap();
    let recovery = procs::recovery_key(t.path());
    let tracker = procs::tracker(t.path(), &recovery);
    let env = [("SWARMBAK_RETIRE_GRACE_SECS", GRACE)];
    let desk = t.path().join("desk");
    procs::init(&desk, "desk", &tracker, &recovery);
    let holders = [t.path().join("h1"), t.path().join("h2")];
    let mut agents = vec![procs::agent_env(&desk, "desk", &env)];
    for (i, h) in holders.iter().enumerate() {
        procs::init(h, &format!("h{}", i + 1), &tracker, &recovery);
        agents.push(procs::agent_env(h, &format!("h{}", i + 1), &env));
    }
    // s1: a; s2: a and b; s3: b and c. s3 reads b in s2, nothing in s1.
    let tree = t.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("a"), common::noise(1, 8 * MIB)).unwrap();
    let s1 = seed_durable(&desk, &tree);
    fs::write(tree.join("b"), common::noise(2, 8 * MIB)).unwrap();
    let s2 = seed_durable(&desk, &tree);
    fs::remove_file(tree.join("a")).unwrap();
    fs::write(tree.join("c"), b"a small file").unwrap();
    let s3 = seed_durable(&desk, &tree);
    let before: Vec<u64> = holders.iter().map(|h| du(&h.join("store"))).collect();
    let s2_shards = common::shards(&holders[0], &s2);
    assert!(common::shards(&holders[0], &s1) > 0 && s2_shards > 0);

    // The owner forgets s1 and s2 (through its agent, which sends the retirements).
    let out = ok(&desk, &["forget", "--keep-last", "1"]);
    assert!(out.contains("2 snapshot(s) were forgotten"), "{out}");
    let data = tracker.data.to_str().unwrap().to_owned();
    let admin = t.path().join("admin");
    until(20, "the tracker to list both retirements", || {
        let l = ok(&admin, &["tracker", "retirements", "--data", &data]);
        l.contains(&s1) && l.contains(&s2)
    });
    // Every holder keeps everything while the grace period runs...
    for h in &holders {
        until(20, "the holders to see the retirements", || {
            store_dir(h, &s1).join("retired").exists() && store_dir(h, &s2).join("retired").exists()
        });
    }
    // ...and the administrator cancels s2's in time.
    ok(&admin, &["tracker", "unretire", "--data", &data, &s2]);
    for h in &holders {
        until(20, "the holders to drop the cancelled retirement", || {
            !store_dir(h, &s2).join("retired").exists()
        });
        assert!(
            common::shards(h, &s1) > 0,
            "s1 was let go before its grace period"
        );
    }
    // After the grace period: s1 is let go on every holder; s2 stays whole.
    for h in &holders {
        until(40, "the holders to let go of s1", || {
            common::shards(h, &s1) == 0
        });
        assert_eq!(common::shards(h, &s2), s2_shards);
    }
    let after: Vec<u64> = holders.iter().map(|h| du(&h.join("store"))).collect();
    for (b, a) in before.iter().zip(&after) {
        eprintln!("holder store: {b} bytes before forget, {a} after the grace period");
        // a: 8 MiB of data, 12 MiB of shards at k=8, m=4.
        assert!(b - a >= (10 * MIB) as u64, "{b} -> {a}");
    }
    // The kept snapshot restores from the holders alone, with the recovery key.
    agents[0].kill();
    let new = t.path().join("new");
    procs::init(&new, "desk-new", &tracker, &recovery);
    let to = t.path().join("restored");
    ok(
        &new,
        &[
            "fetch",
            &s3,
            "--to",
            to.to_str().unwrap(),
            "--identity",
            t.path().join("recovery/identity.txt").to_str().unwrap(),
            "--timeout",
            "60s",
        ],
    );
    assert_same(&tree, &to.join("tree"));
}
