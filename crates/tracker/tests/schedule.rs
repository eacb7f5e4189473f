//! `GET BASE/<passkey>/schedule` (tracker.md §7.7) on a private tracker served on
//! 127.0.0.1 with its real SQLite file: machines enrolled through the real endpoint,
//! reports sent through it, and the administrator's changes written by a second
//! database handle, as `swarmbak tracker schedule` writes them while the tracker runs.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{admin_db, Server};
use swarmbak_tracker::admin::{self, Actor, EnrollOptions, ScheduleChange};
use swarmbak_tracker::server::unix_now;
use swarmbak_tracker::trust::{BackupReport, SigningKey};
use swarmbak_tracker::{ClientError, Schedule, TrackerClient};

const DAY: u64 = 86_400;
const H: u64 = 3600;

/// Enrols a machine named `name` through `POST /api/v1/enroll`: its key and passkey.
async fn enrol(server: &Server, dir: &Path, name: &str, vip: bool) -> (SigningKey, String) {
    let options = EnrollOptions {
        vip,
        ..EnrollOptions::default()
    };
    let m = common::machines::enrol_with(server, dir, name, options).await;
    (m.key, m.passkey)
}

fn as_machine(server: &Server, passkey: &str) -> TrackerClient {
    server.client().with_passkey(passkey)
}

async fn report_success(server: &Server, key: &SigningKey, passkey: &str, id: u8, end: i64) {
    let signed = BackupReport {
        id: [id; 16],
        machine: key.public(),
        start: end - 60,
        end,
        bytes: 4096,
        files: 3,
        outcome: Ok([id; 20]),
    }
    .sign(key);
    assert!(as_machine(server, passkey).report(&signed).await.unwrap());
}

/// Polls the schedule until `ok` holds (the tracker reloads what another handle wrote
/// within `reload_every`).
async fn until(c: &TrackerClient, own: Option<u64>, ok: impl Fn(&Schedule) -> bool) -> Schedule {
    let t0 = Instant::now();
    loop {
        let s = c.schedule(own).await.unwrap();
        if ok(&s) {
            return s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the running tracker never showed the change: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_of(e: &ClientError) -> Option<u16> {
    match e {
        ClientError::Http { status, .. } => Some(*status),
        _ => None,
    }
}

#[tokio::test]
async fn schedule_follows_reports_and_the_administrator_s_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::private(dir.path()).await;
    let (key, pk) = enrol(&server, dir.path(), "laptop-1", false).await;
    let c = as_machine(&server, &pk);

    // Never backed up: at once, every day by default; its own interval when it gives one.
    let s = c.schedule(None).await.unwrap();
    assert_eq!(
        s,
        Schedule {
            every: DAY,
            admin_every: None,
            machine_may_override: true,
            backup_now: true,
            why: "never backed up (every 1d)".into(),
            last_success: None,
        }
    );
    let s = c.schedule(Some(6 * H)).await.unwrap();
    assert_eq!((s.every, s.backup_now), (6 * H, true));

    // The exact JSON on the wire.
    let raw = reqwest_like_get(&server, &format!("/{pk}/schedule?every=21600")).await;
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "admin_every",
            "backup_now",
            "every",
            "last_success",
            "machine_may_override",
            "why"
        ]
    );
    assert_eq!(v["every"], 21_600);
    assert!(v["admin_every"].is_null() && v["last_success"].is_null());

    // Backed up three days ago: overdue.
    let now = unix_now();
    report_success(&server, &key, &pk, 1, now - 3 * DAY as i64).await;
    let s = c.schedule(None).await.unwrap();
    assert!(s.backup_now, "{s:?}");
    assert_eq!(s.why, "overdue: last backup 3 days ago, every 1d");
    assert_eq!(s.last_success, Some(now - 3 * DAY as i64));

    // Backed up a minute ago: not due.
    report_success(&server, &key, &pk, 2, now - 60).await;
    let s = c.schedule(Some(6 * H)).await.unwrap();
    assert!(!s.backup_now, "{s:?}");
    assert_eq!(s.last_success, Some(now - 60));

    // The administrator sets the organisation's interval, and this machine's, and denies
    // its override; each change reaches the running tracker.
    let (mut db, _) = admin_db(dir.path());
    let set = |every: Option<Option<u64>>, may: Option<Option<bool>>| ScheduleChange {
        every,
        may_override: may,
        backup_now: false,
    };
    admin::set_org_schedule(
        &mut db,
        false,
        &set(Some(Some(2 * DAY)), None),
        &Actor::cli(),
        now,
    )
    .unwrap();
    let s = until(&c, None, |s| s.admin_every == Some(2 * DAY)).await;
    assert_eq!(s.every, 2 * DAY);
    // Overriding allowed (the default): its own interval still wins.
    let s = c.schedule(Some(6 * H)).await.unwrap();
    assert_eq!(s.every, 6 * H);
    admin::set_machine_schedule(
        &mut db,
        "laptop-1",
        &set(Some(Some(12 * H)), Some(Some(false))),
        &Actor::cli(),
        now,
    )
    .unwrap();
    let s = until(&c, Some(6 * H), |s| !s.machine_may_override).await;
    assert_eq!((s.every, s.admin_every), (12 * H, Some(12 * H)));

    // "Back up now": until a newer success.
    admin::set_machine_schedule(
        &mut db,
        "laptop-1",
        &ScheduleChange {
            backup_now: true,
            ..ScheduleChange::default()
        },
        &Actor::cli(),
        unix_now(),
    )
    .unwrap();
    let s = until(&c, None, |s| s.backup_now).await;
    assert!(
        s.why
            .starts_with("the administrator asked for a backup at "),
        "{s:?}"
    );
    report_success(&server, &key, &pk, 3, unix_now() + 2).await;
    let s = c.schedule(None).await.unwrap();
    assert!(!s.backup_now, "a newer success clears the request: {s:?}");

    // Every change is in the audit log.
    let log = swarmbak_tracker::storage::Storage::audit_log(&mut db, 10).unwrap();
    let schedule_lines: Vec<(&str, &str)> = log
        .iter()
        .filter(|r| r.action == "schedule")
        .map(|r| (r.target.as_str(), r.detail.as_str()))
        .collect();
    assert_eq!(
        schedule_lines,
        [
            ("laptop-1", "back up now"),
            ("laptop-1", "every 12h, may override no"),
            ("organisation", "every 2d"),
        ]
    );

    // A restart keeps the settings and finds the last success in the database.
    server.stop().await;
    drop(db);
    let server = Server::private(dir.path()).await;
    let s = as_machine(&server, &pk).schedule(None).await.unwrap();
    assert_eq!((s.every, s.backup_now), (12 * H, false), "{s:?}");
    assert!(s.last_success.is_some_and(|t| t > now), "{s:?}");
    server.stop().await;
}

#[tokio::test]
async fn vip_machines_get_the_vip_interval() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::private(dir.path()).await;
    let (_, vip) = enrol(&server, dir.path(), "ceo-laptop", true).await;
    let (_, plain) = enrol(&server, dir.path(), "desk-3", false).await;
    let (mut db, _) = admin_db(dir.path());
    let change = |e: u64| ScheduleChange {
        every: Some(Some(e)),
        ..ScheduleChange::default()
    };
    admin::set_org_schedule(&mut db, true, &change(4 * H), &Actor::cli(), unix_now()).unwrap();
    admin::set_org_schedule(&mut db, false, &change(3 * DAY), &Actor::cli(), unix_now()).unwrap();
    let s = until(&as_machine(&server, &vip), None, |s| {
        s.admin_every.is_some()
    })
    .await;
    assert_eq!(s.every, 4 * H);
    let s = until(&as_machine(&server, &plain), None, |s| {
        s.admin_every.is_some()
    })
    .await;
    assert_eq!(s.every, 3 * DAY);
    // `default` takes the VIP setting away: the organisation's applies to VIPs too.
    let unset = ScheduleChange {
        every: Some(None),
        ..ScheduleChange::default()
    };
    admin::set_org_schedule(&mut db, true, &unset, &Actor::cli(), unix_now()).unwrap();
    let s = until(&as_machine(&server, &vip), None, |s| s.every == 3 * DAY).await;
    assert_eq!(s.admin_every, Some(3 * DAY));
    // A backup request names a machine; a client has no schedule.
    let now_only = ScheduleChange {
        backup_now: true,
        ..ScheduleChange::default()
    };
    assert!(admin::set_org_schedule(&mut db, false, &now_only, &Actor::cli(), unix_now()).is_err());
    assert!(admin::set_machine_schedule(&mut db, "desk-3", &change(10), &Actor::cli(), 0).is_err());
    server.stop().await;
}

#[tokio::test]
async fn client_unknown_revoked_and_bad_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::private(dir.path()).await;
    let (_, pk) = enrol(&server, dir.path(), "laptop-2", false).await;
    let (mut db, org) = admin_db(dir.path());
    let (client, _) = admin::create_client(
        &mut db,
        Some(&server.url()),
        "bt-box",
        &Actor::cli(),
        unix_now(),
    )
    .unwrap();
    // The tracker sees the new client within its reload interval.
    let c = as_machine(&server, &client.passkey);
    let t0 = Instant::now();
    let e = loop {
        let e = c.schedule(None).await.unwrap_err();
        if status_of(&e) != Some(401) || t0.elapsed() > Duration::from_secs(10) {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status_of(&e), Some(403), "{e}");
    assert!(e.to_string().contains("client passkey"), "{e}");

    let unknown = as_machine(&server, "0123456789abcdef0123456789abcdef");
    let e = unknown.schedule(None).await.unwrap_err();
    assert_eq!(status_of(&e), Some(401), "{e}");

    for bad in [Some(0), Some(u64::MAX)] {
        let e = as_machine(&server, &pk).schedule(bad).await.unwrap_err();
        assert_eq!(status_of(&e), Some(400), "{bad:?}: {e}");
    }
    let raw = reqwest_like_get(&server, &format!("/{pk}/schedule?every=abc")).await;
    assert!(raw.contains("whole seconds"), "{raw}");

    admin::revoke(&mut db, &org, "laptop-2", &Actor::cli(), unix_now()).unwrap();
    let c = as_machine(&server, &pk);
    let t0 = Instant::now();
    let e = loop {
        match c.schedule(None).await {
            Err(e) => break e,
            Ok(_) if t0.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Ok(s) => panic!("still answered after the revocation: {s:?}"),
        }
    };
    assert_eq!(status_of(&e), Some(403), "{e}");
    assert!(e.to_string().contains("revoked"), "{e}");
    server.stop().await;
}

#[tokio::test]
async fn an_open_tracker_has_no_schedules() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let e = as_machine(&server, "0123456789abcdef0123456789abcdef")
        .schedule(None)
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), Some(404), "{e}");
    assert!(
        e.to_string().contains("schedules need a private tracker"),
        "{e}"
    );
    server.stop().await;
}

/// A plain GET's body (whatever its status).
async fn reqwest_like_get(server: &Server, target: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(text)
}
