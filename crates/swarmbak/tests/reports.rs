//! Backup reports at the private tracker (issue 10; trust.md §9, tracker.md §7.6): a real
//! `swarmbak tracker` and machines enrolled with `swarmbak init --enroll`. A report counts
//! only when the machine whose passkey carries it signed it.

mod common;

use std::path::Path;

use common::procs;
use swarmbak_tracker::sqlite::Sqlite;
use swarmbak_tracker::storage::Storage;
use swarmbak_tracker::trust::{BackupReport, SigningKey};

fn config(home: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(home.join("config.json")).unwrap()).unwrap()
}

fn passkey(home: &Path) -> String {
    config(home)["enrolment"]["passkey"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn post(addr: &str, target: &str, body: &[u8]) -> (u16, String) {
    common::try_http(addr, "POST", target, &[], body).expect("the tracker answers")
}

fn report(key: &SigningKey, id: u8, outcome: Result<[u8; 20], String>) -> Vec<u8> {
    BackupReport {
        id: [id; 16],
        machine: key.public(),
        start: 1_796_100_000,
        end: 1_796_100_030,
        bytes: 4096,
        files: 3,
        outcome,
    }
    .sign(key)
}

#[test]
fn only_the_machine_s_own_signed_reports_count_and_each_counts_once() {
    let t = tempfile::tempdir().unwrap();
    let recovery = procs::recovery_key(t.path());
    let tracker = procs::tracker(t.path(), &recovery);
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    procs::init(&a, "laptop-a", &tracker, &recovery);
    procs::init(&b, "laptop-b", &tracker, &recovery);
    let key_a = SigningKey::load(&a.join("signing.key")).unwrap();
    let key_b = SigningKey::load(&b.join("signing.key")).unwrap();
    let (pk_a, pk_b) = (passkey(&a), passkey(&b));
    let at = |pk: &str| format!("/{pk}/report");

    let ok_report = report(&key_a, 1, Ok([0xab; 20]));
    let (status, body) = post(&tracker.addr, &at(&pk_a), &ok_report);
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("\"new\":true"), "{body}");
    // Sent again (its acknowledgement lost): stored once.
    let (status, body) = post(&tracker.addr, &at(&pk_a), &ok_report);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"new\":false"), "{body}");
    let failed = report(
        &key_a,
        2,
        Err("cannot read /home/ana: permission denied".into()),
    );
    assert_eq!(post(&tracker.addr, &at(&pk_a), &failed).0, 201);

    // Forgeries: A's report under B's passkey, a report signed by B naming A's key,
    // a made-up key, no passkey, an unknown passkey, garbage.
    let (status, body) = post(&tracker.addr, &at(&pk_b), &report(&key_a, 3, Ok([1; 20])));
    assert_eq!(status, 403, "{body}");
    let mut forged = BackupReport {
        id: [4; 16],
        machine: key_a.public(),
        start: 1,
        end: 2,
        bytes: 0,
        files: 0,
        outcome: Ok([1; 20]),
    }
    .sign(&key_b);
    assert_eq!(post(&tracker.addr, &at(&pk_a), &forged).0, 403);
    let stranger = SigningKey::from_seed([9; 32]);
    assert_eq!(
        post(
            &tracker.addr,
            &at(&pk_a),
            &report(&stranger, 5, Ok([1; 20]))
        )
        .0,
        403
    );
    assert_eq!(post(&tracker.addr, "/report", &ok_report).0, 401);
    assert_eq!(post(&tracker.addr, &at(&"0".repeat(32)), &ok_report).0, 401);
    forged.truncate(forged.len() / 2);
    assert_eq!(post(&tracker.addr, &at(&pk_a), &forged).0, 403);
    // A standard client's passkey has no signing key: it reports nothing.
    let client_url = tracker.client_announce("client-1");
    let client_pk = client_url.rsplit('/').nth(1).unwrap().to_owned();
    assert_eq!(post(&tracker.addr, &at(&client_pk), &ok_report).0, 403);
    // A report ending more than a day in the tracker's future: the machine's clock.
    let mut future = BackupReport::verify(&ok_report, &key_a.public()).unwrap();
    future.id = [6; 16];
    future.end = i64::MAX / 2;
    let (status, body) = post(&tracker.addr, &at(&pk_a), &future.sign(&key_a));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("clock"), "{body}");
    // Too large: refused before it is read.
    let big = vec![b'x'; 9000];
    assert_eq!(post(&tracker.addr, &at(&pk_a), &big).0, 413);

    // A revoked machine reports nothing more.
    common::ok(
        t.path(),
        &[
            "tracker",
            "revoke",
            "--data",
            tracker.data.to_str().unwrap(),
            "laptop-a",
        ],
    );
    let (status, body) = post(&tracker.addr, &at(&pk_a), &report(&key_a, 7, Ok([1; 20])));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("revoked"), "{body}");

    // What the tracker kept: A's two reports, the latest first, each as signed.
    let (mut db, _) = Sqlite::open(&tracker.data).unwrap();
    let machines = db.machines().unwrap();
    let id_of = |name: &str| machines.iter().find(|m| m.name == name).unwrap().id;
    let id_a = id_of("laptop-a");
    let kept = db.reports(id_a, 10).unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.iter().any(|r| r.report == ok_report));
    assert!(kept.iter().any(|r| r.report == failed));
    assert!(kept
        .iter()
        .any(|r| r.outcome == Err("cannot read /home/ana: permission denied".to_owned())));
    let id_b = id_of("laptop-b");
    assert!(db.reports(id_b, 10).unwrap().is_empty());
}

/// The tracker of `data` started again on the same address.
fn restart(addr: &str, data: &Path) -> procs::Proc {
    procs::Proc::start(
        "tracker",
        &[
            "tracker",
            "--listen",
            addr,
            "--data",
            data.to_str().unwrap(),
            "--interval",
            "1",
        ],
    )
}

/// `seed` while the tracker is down: it fails, and its report waits in the outbox.
fn seed_while_down(home: &Path, tree: &Path) -> std::process::Output {
    common::run(
        home,
        &[
            "seed",
            "--until",
            "published",
            "--timeout",
            "2",
            tree.to_str().unwrap(),
        ],
    )
}

fn outbox(home: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(home.join("outbox"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default()
}

/// `swarmbak seed` reports every attempt: a success with its snapshot, a failure with
/// its error; with the tracker down the report waits in HOME/outbox and goes with the
/// next backup.
#[test]
fn seed_reports_each_attempt_and_keeps_what_the_tracker_could_not_take() {
    let t = tempfile::tempdir().unwrap();
    let recovery = procs::recovery_key(t.path());
    let mut tracker = procs::tracker(t.path(), &recovery);
    let home = t.path().join("m");
    procs::init(&home, "desk-1", &tracker, &recovery);
    let tree = t.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("a.txt"), vec![7u8; 50_000]).unwrap();
    std::fs::write(tree.join("b.txt"), b"hello").unwrap();

    let out = common::ok(
        &home,
        &["seed", "--until", "published", tree.to_str().unwrap()],
    );
    let ih = out.lines().next().unwrap().trim().to_owned();
    let r = procs::reports_of(&tracker.data, "desk-1");
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        r[0].outcome,
        Ok(<[u8; 20]>::try_from(hex::decode(&ih).unwrap()).unwrap())
    );
    assert_eq!((r[0].files, r[0].bytes), (2, 50_005));
    assert!(r[0].ended >= r[0].started);
    assert!(outbox(&home).is_empty());

    let missing = t.path().join("no-such-dir");
    common::fails(
        &home,
        &["seed", "--until", "published", missing.to_str().unwrap()],
    );
    let r = procs::reports_of(&tracker.data, "desk-1");
    assert_eq!(r.len(), 2, "{r:?}");
    let failure = r
        .iter()
        .find(|x| x.outcome.is_err())
        .expect("a failure report");
    assert!(
        failure
            .outcome
            .as_ref()
            .unwrap_err()
            .contains("no-such-dir"),
        "{failure:?}"
    );

    // The tracker is down: the attempt fails (nothing published) and its report waits.
    let addr = tracker.addr.clone();
    tracker.kill();
    let o = seed_while_down(&home, &tree);
    let (_, err) = common::text(&o);
    assert!(!o.status.success());
    assert!(err.contains("wait in"), "{err}");
    assert_eq!(outbox(&home).len(), 1);
    // Back on the same address: the next backup sends both.
    let _again = restart(&addr, &tracker.data);
    common::ok(
        &home,
        &["seed", "--until", "published", tree.to_str().unwrap()],
    );
    assert!(outbox(&home).is_empty(), "{:?}", outbox(&home));
    let r = procs::reports_of(&tracker.data, "desk-1");
    assert_eq!(r.len(), 4, "{r:?}");
    assert_eq!(r.iter().filter(|x| x.outcome.is_ok()).count(), 2);
}

/// The agent sends what waits in HOME/outbox as soon as it starts: a report kept while
/// the tracker was down reaches it without another backup.
#[test]
fn the_agent_sends_waiting_reports_when_it_starts() {
    let t = tempfile::tempdir().unwrap();
    let recovery = procs::recovery_key(t.path());
    let mut tracker = procs::tracker(t.path(), &recovery);
    let home = t.path().join("m");
    procs::init(&home, "desk-2", &tracker, &recovery);
    let tree = t.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("a.txt"), b"hello").unwrap();
    let addr = tracker.addr.clone();
    tracker.kill();
    let o = seed_while_down(&home, &tree);
    assert!(!o.status.success());
    assert_eq!(outbox(&home).len(), 1);
    let _again = restart(&addr, &tracker.data);
    assert!(procs::reports_of(&tracker.data, "desk-2").is_empty());
    let _agent = procs::agent(&home, "desk-2");
    let t0 = std::time::Instant::now();
    while !outbox(&home).is_empty() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(15),
            "the agent did not send the waiting report"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let r = procs::reports_of(&tracker.data, "desk-2");
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(r[0].outcome.is_err(), "{r:?}");
}
