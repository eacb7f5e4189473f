//! A backup killed with SIGKILL at random moments leaves a consistent store; the next run
//! works, and every snapshot in the store restores exactly.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn sigkill_at_random_moments_then_run_again() {
    let t = tempfile::tempdir().unwrap();
    let m = machine(t.path());
    let office = t.path().join("office");
    swarmbak_gentree::office(&office, 48 << 20, 3).unwrap();
    // How long an uninterrupted backup takes here, to spread the kills over it.
    let probe = tempfile::tempdir().unwrap();
    let pm = machine(probe.path());
    let t0 = std::time::Instant::now();
    seed(&pm.home, &[&office]);
    let full = t0.elapsed().as_millis().max(50) as u64;

    let seed_value: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test seed {seed_value} (set CRASH_SEED to repeat); full backup {full} ms");
    let mut x = seed_value | 1;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..6 {
        let delay = rnd() % (full + full / 4);
        let mut child = Command::new(BIN)
            .arg("--home")
            .arg(&m.home)
            .args(["seed", office.to_str().unwrap(), "--until", "published"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let st = child.wait().unwrap();
        eprintln!("round {round}: killed after {delay} ms ({st:?})");
        // Whatever is in the store is complete.
        for e in std::fs::read_dir(m.home.join("store/snapshots")).unwrap() {
            let p = e.unwrap().path();
            assert!(
                p.join("torrent").is_file(),
                "{} is half-published",
                p.display()
            );
        }
    }
    let last = seed(&m.home, &[&office]);
    assert_eq!(
        std::fs::read_dir(m.home.join("store/tmp")).unwrap().count(),
        0,
        "leftovers of killed runs are removed"
    );
    let list = ok(&m.home, &["--json", "snapshots"]);
    let ihs: Vec<String> = list
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["infohash"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(ihs.contains(&last));
    for (i, ih) in ihs.iter().enumerate() {
        let h = ok(&m.home, &["--json", "health", ih]);
        assert!(h.contains("\"recoverable\":true"), "{h}");
        let to = t.path().join(format!("r{i}"));
        fetch_recovery(&m, ih, &to);
        assert_same(&office, &to.join("office"));
    }
}
