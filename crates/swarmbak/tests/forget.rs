//! `swarmbak forget` (swarm.md §16): the policy leaves the kept snapshots, the forgotten
//! ones are retired (signed records in the store), the owner's store lets go of every
//! stripe no kept snapshot reads, the kept snapshot restores byte for byte, and a forget
//! killed at any moment loses nothing a kept snapshot reads.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{assert_same, du, fetch_recovery, machine, ok, seed};

const MIB: usize = 1 << 20;

/// Three snapshots of a tree: `a`; `a` and a new `b`; `b` and a small `c` (`a` gone).
/// The third reads `b` in the second and nothing in the first. (Each snapshot's new
/// data is one file: files packed side by side may share packs, and a pack stays whole.)
fn three(m: &common::Machine, tree: &Path) -> [String; 3] {
    fs::create_dir_all(tree).unwrap();
    fs::write(tree.join("a"), common::noise(1, 24 * MIB)).unwrap();
    let s1 = seed(&m.home, &[tree]);
    fs::write(tree.join("b"), common::noise(2, 24 * MIB)).unwrap();
    let s2 = seed(&m.home, &[tree]);
    fs::remove_file(tree.join("a")).unwrap();
    fs::write(tree.join("c"), b"a small file").unwrap();
    let s3 = seed(&m.home, &[tree]);
    [s1, s2, s3]
}

fn forget_json(home: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json", "forget"];
    all.extend_from_slice(args);
    let out = ok(home, &all);
    serde_json::from_str(out.lines().next().unwrap()).unwrap()
}

#[test]
fn forget_keep_last_1_leaves_one_frees_what_no_kept_snapshot_reads() {
    let t = tempfile::tempdir().unwrap();
    let m = machine(t.path());
    let tree = t.path().join("tree");
    let [s1, s2, s3] = three(&m, &tree);
    let store = m.home.join("store");
    let before = du(&store);

    // A dry run says what would go and changes nothing.
    let dry = forget_json(&m.home, &["--keep-last", "1", "--dry-run"]);
    assert_eq!(dry["dry_run"], true, "{dry}");
    let fates = dry["plan"]["snapshots"].as_array().unwrap();
    assert_eq!(fates.len(), 3, "{dry}");
    for (f, (ih, keep)) in fates.iter().zip([(&s1, false), (&s2, false), (&s3, true)]) {
        assert_eq!(f["infohash"], ih.as_str(), "{dry}");
        assert_eq!(f["keep"], keep, "{dry}");
    }
    // The third reads nothing in the first and `b` in the second (all its stripes but
    // what held only its manifest, if anything).
    let stripes = |f: &serde_json::Value| {
        (
            f["stripes_kept"].as_u64().unwrap(),
            f["stripes"].as_u64().unwrap(),
        )
    };
    assert_eq!(stripes(&fates[0]).0, 0, "{}", fates[0]);
    let (kept, all) = stripes(&fates[1]);
    assert!(kept > 0 && kept + 1 >= all, "{}", fates[1]);
    assert_eq!(du(&store), before, "a dry run changed the store");
    assert!(!common::store_dir(&m.home, &s1).join("retired").exists());

    let done = forget_json(&m.home, &["--keep-last", "1"]);
    let retired = done["retired"].as_array().unwrap();
    assert_eq!(retired.len(), 2, "{done}");
    let freed: u64 = retired
        .iter()
        .map(|r| r["bytes_freed_here"].as_u64().unwrap())
        .sum();
    let after = du(&store);
    eprintln!(
        "store: {before} bytes before, {after} after forget --keep-last 1 ({freed} bytes of shards let go)"
    );
    // `a` (24 MiB of data, more with parity) is read by nothing kept.
    assert!(freed >= (24 * MIB) as u64, "{done}");
    assert!(before - after >= freed - 4096, "{before} {after} {freed}");
    assert_eq!(common::shards(&m.home, &s1), 0);
    assert!(common::shards(&m.home, &s2) > 0);
    for ih in [&s1, &s2] {
        assert!(common::store_dir(&m.home, ih).join("retired").exists());
    }
    // Only the kept snapshot is listed; it restores byte for byte from what is left.
    let list = ok(&m.home, &["--json", "snapshots"]);
    let listed: Vec<String> = list
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["infohash"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(listed, vec![s3.clone()], "{list}");
    let to = t.path().join("restored");
    fetch_recovery(&m, &s3, &to);
    assert_same(&tree, &to.join("tree"));

    // Again: nothing more to forget, nothing signed again.
    let again = forget_json(&m.home, &["--keep-last", "1"]);
    assert_eq!(again["retired"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(du(&store), after);
}

/// A forget killed at random moments, then run to the end: the kept snapshot restores,
/// and the store ends as an uninterrupted forget leaves it.
#[test]
fn a_forget_killed_at_random_moments_loses_nothing_kept() {
    let t = tempfile::tempdir().unwrap();
    let m = machine(t.path());
    let tree = t.path().join("tree");
    let [_, _, s3] = three(&m, &tree);
    let pristine = t.path().join("pristine");
    let cp = |from: &Path, to: &Path| {
        let st = Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .unwrap();
        assert!(st.success());
    };
    cp(&m.home, &pristine);
    // What an uninterrupted forget leaves.
    forget_json(&m.home, &["--keep-last", "1"]);
    let expected = du(&m.home.join("store"));
    let bin = env!("CARGO_BIN_EXE_swarmbak");
    // Each run is killed a random 0 to 4 ms after its first retirement is on disk; the
    // runs cut half-way (retired, not all let go) are counted.
    let mut midway = 0;
    const TRIALS: u64 = 8;
    for trial in 0..TRIALS {
        let home = t.path().join(format!("trial-{trial}"));
        cp(&pristine, &home);
        let snaps = home.join("store/snapshots");
        let began = || {
            fs::read_dir(&snaps)
                .unwrap()
                .any(|e| e.unwrap().path().join("retired").exists())
        };
        let mut child = Command::new(bin)
            .args([
                "--home",
                home.to_str().unwrap(),
                "forget",
                "--keep-last",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while !began() && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_micros(200));
        }
        let at = Duration::from_micros(u64::from(common::noise(trial, 1)[0]) * 16);
        std::thread::sleep(at);
        let _ = child.kill();
        let _ = child.wait();
        midway += usize::from(du(&home.join("store")) != expected);
        // The next forget finishes what the killed one began.
        forget_json(&home, &["--keep-last", "1"]);
        assert_eq!(
            du(&home.join("store")),
            expected,
            "trial {trial} (killed {at:?} after its first retirement)"
        );
        let to = t.path().join(format!("restored-{trial}"));
        let m2 = common::Machine {
            home: home.clone(),
            recovery: m.recovery.clone(),
        };
        fetch_recovery(&m2, &s3, &to);
        assert_same(&tree, &to.join("tree"));
        let _ = fs::remove_dir_all(&to);
        let _ = fs::remove_dir_all(&home);
    }
    eprintln!("{midway} of {TRIALS} runs were killed half-way");
    assert!(midway >= 1, "no kill came while the forget worked");
}
