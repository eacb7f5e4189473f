//! `swarmbak tracker schedule` against a running `swarmbak tracker` (tracker.md §7.7):
//! each change the command writes reaches the running tracker's
//! `GET BASE/<passkey>/schedule` at once (the command asks it to reload), and is audited.

mod common;

use common::procs;
use swarmbak_tracker::trust::{EnrollToken, SigningKey};

/// Enrols `name` at `tracker` as its agent would (`POST /api/v1/enroll` with a token from
/// `swarmbak tracker enroll`): its passkey.
fn enrol(tracker: &procs::Tracker, name: &str, extra: &[&str]) -> String {
    let token = EnrollToken::parse(&tracker.token(name, extra)).unwrap();
    let key = SigningKey::generate();
    let request = token.request(&key, format!("age1{name}"));
    let (st, body) = common::try_http(&tracker.addr, "POST", "/api/v1/enroll", &[], &request)
        .expect("the tracker answers");
    assert_eq!(st, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["passkey"].as_str().unwrap().to_owned()
}

fn schedule(tracker: &procs::Tracker, passkey: &str, own: Option<u64>) -> serde_json::Value {
    let target = match own {
        Some(e) => format!("/{passkey}/schedule?every={e}"),
        None => format!("/{passkey}/schedule"),
    };
    let (st, body) =
        common::try_http(&tracker.addr, "GET", &target, &[], b"").expect("the tracker answers");
    assert_eq!(st, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn schedule_changes_reach_the_running_tracker_at_once() {
    let t = tempfile::tempdir().unwrap();
    let tracker = procs::tracker(t.path(), "age1organisationrecoveryfortests");
    let data = tracker.data.to_str().unwrap().to_owned();
    let laptop = enrol(&tracker, "laptop-9", &[]);
    let boss = enrol(&tracker, "boss-1", &["--vip"]);
    let home = t.path().join("admin-home");
    let run = |args: &[&str]| {
        let mut all = vec!["tracker", "schedule", "--data", data.as_str()];
        all.extend_from_slice(args);
        common::ok(&home, &all)
    };

    let s = schedule(&tracker, &laptop, None);
    assert_eq!(s["every"], 86_400, "{s}");
    assert_eq!(s["backup_now"], true, "{s}");
    assert_eq!(s["why"], "never backed up (every 1d)", "{s}");

    // The organisation's default and the VIP interval.
    run(&["--every", "2d"]);
    run(&["--vip", "--every", "6h"]);
    assert_eq!(schedule(&tracker, &laptop, None)["admin_every"], 2 * 86_400);
    assert_eq!(schedule(&tracker, &boss, None)["every"], 6 * 3600);
    // The machine's own interval wins while the organisation allows it...
    assert_eq!(schedule(&tracker, &laptop, Some(3600))["every"], 3600);
    // ...and not once one machine is denied.
    let out = run(&[
        "--machine",
        "laptop-9",
        "--every",
        "12h",
        "--machine-may-override",
        "no",
    ]);
    assert!(
        out.contains("laptop-9: every 12h, may override no"),
        "{out}"
    );
    let s = schedule(&tracker, &laptop, Some(3600));
    assert_eq!(s["every"], 12 * 3600, "{s}");
    assert_eq!(s["machine_may_override"], false, "{s}");
    // `default` gives the choice back to the organisation.
    run(&["--machine", "laptop-9", "--machine-may-override", "default"]);
    assert_eq!(schedule(&tracker, &laptop, Some(3600))["every"], 3600);

    // A backup request (boss-1 never backed up, so that is what `why` says first; the
    // request and its clearing are the tracker's own tests, crates/tracker/tests).
    let out = run(&["--machine", "boss-1", "--now"]);
    assert!(out.contains("boss-1: back up now"), "{out}");
    assert_eq!(schedule(&tracker, &boss, None)["backup_now"], true);

    // The listing, as text and as JSON.
    let out = run(&[]);
    assert!(
        out.contains("organisation: every 2d, VIP every 6h, machines may override: yes"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("laptop-9") && l.contains("12h")),
        "{out}"
    );
    let all = ["--json", "tracker", "schedule", "--data", data.as_str()];
    let v: serde_json::Value = serde_json::from_str(common::ok(&home, &all).trim()).unwrap();
    assert_eq!(v["every"], 2 * 86_400, "{v}");
    assert_eq!(v["vip_every"], 6 * 3600, "{v}");
    assert_eq!(v["machine_may_override"], true, "{v}");
    let boss_row = v["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "boss-1")
        .unwrap();
    assert_eq!(boss_row["admin_every"], 6 * 3600, "{v}");
    assert!(boss_row["backup_requested"].is_i64(), "{v}");

    // Refusals: a bad duration, an unknown machine, a request for nobody in particular.
    let fail = |args: &[&str]| {
        let mut all = vec!["tracker", "schedule", "--data", data.as_str()];
        all.extend_from_slice(args);
        common::fails(&home, &all)
    };
    assert!(fail(&["--every", "soon"]).contains("duration"));
    assert!(fail(&["--machine", "nobody", "--every", "1d"]).contains("nobody"));
    assert!(fail(&["--every", "10s"]).contains("between"));
    fail(&["--now"]);

    // Every change is audited, as `cli`.
    let (st, body) = common::try_http(
        &tracker.addr,
        "GET",
        "/api/v1/audit",
        &[(
            "authorization",
            format!(
                "Bearer {}",
                std::fs::read_to_string(tracker.data.join("admin-token"))
                    .unwrap()
                    .trim()
            ),
        )],
        b"",
    )
    .unwrap();
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let lines: Vec<String> = v["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "schedule")
        .map(|r| format!("{} {} {}", r["actor"], r["target"], r["detail"]))
        .collect();
    assert_eq!(
        lines,
        [
            r#""cli" "boss-1" "back up now""#,
            r#""cli" "laptop-9" "may override default""#,
            r#""cli" "laptop-9" "every 12h, may override no""#,
            r#""cli" "vip" "every 6h""#,
            r#""cli" "organisation" "every 2d""#,
        ]
    );
}
