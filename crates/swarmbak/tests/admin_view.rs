//! What the administrator gets from a real `swarmbak tracker` (issue 10; tracker.md §10):
//! alerts logged and POSTed to a webhook (raised, repeated, acknowledged, back to OK,
//! not forgotten by a restart), the admin token rotated while the tracker runs, the
//! admin API's history and revoke, and `/metrics`. Machines are enrolled with
//! `swarmbak init --enroll` and send reports signed with their own keys, backdated as a
//! machine that was away would send them. (The dashboard in a browser: tests/dashboard.rs.)

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::procs;
use swarmbak_tracker::trust::{BackupReport, SigningKey};

const DAY: i64 = 86_400;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn config(home: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(home.join("config.json")).unwrap()).unwrap()
}

/// An enrolled machine: its passkey and signing key.
struct Machine {
    passkey: String,
    key: SigningKey,
}

fn enrol(dir: &Path, t: &procs::Tracker, recovery: &str, name: &str, extra: &[&str]) -> Machine {
    let home = dir.join(name);
    procs::init_with(&home, name, t, recovery, extra);
    Machine {
        passkey: config(&home)["enrolment"]["passkey"]
            .as_str()
            .unwrap()
            .to_owned(),
        key: SigningKey::load(&home.join("signing.key")).unwrap(),
    }
}

/// Sends a signed report of a backup that ended `ended` (success when `ok`).
fn report(t: &procs::Tracker, m: &Machine, ended: i64, ok: bool) {
    let r = BackupReport {
        id: rand_id(),
        machine: m.key.public(),
        start: ended - 120,
        end: ended,
        bytes: 1 << 20,
        files: 10,
        outcome: if ok {
            Ok([0x5a; 20])
        } else {
            Err("disk full".into())
        },
    }
    .sign(&m.key);
    let (status, body) =
        common::try_http(&t.addr, "POST", &format!("/{}/report", m.passkey), &[], &r).unwrap();
    assert_eq!(status, 201, "{body}");
}

fn rand_id() -> [u8; 16] {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8..].copy_from_slice(&(now() as u64).to_be_bytes());
    id
}

fn admin_token(t: &procs::Tracker) -> String {
    std::fs::read_to_string(t.data.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned()
}

fn api(t: &procs::Tracker, method: &str, target: &str, token: &str) -> (u16, serde_json::Value) {
    let (status, body) = common::try_http(
        &t.addr,
        method,
        target,
        &[("Authorization", format!("Bearer {token}"))],
        b"",
    )
    .expect("the tracker answers");
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    )
}

/// A webhook receiver on loopback: every JSON body POSTed to it, in order.
struct Hook {
    url: String,
    got: Arc<Mutex<Vec<serde_json::Value>>>,
}

fn hook() -> Hook {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/swarmbak", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0usize;
            let mut line = String::new();
            let mut first = true;
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if first {
                    assert!(line.starts_with("POST /hooks/swarmbak "), "{line}");
                    first = false;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            g.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).expect("the webhook gets JSON"));
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    Hook { url, got }
}

impl Hook {
    /// Waits until `pred` holds over what was received, or fails after `secs`.
    fn wait(&self, secs: u64, what: &str, pred: impl Fn(&[serde_json::Value]) -> bool) {
        let t0 = Instant::now();
        loop {
            {
                let g = self.got.lock().unwrap();
                if pred(&g) {
                    return;
                }
                if t0.elapsed() > Duration::from_secs(secs) {
                    panic!("{what}: the webhook got {g:#?}");
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn count(&self, event: &str, machine: &str) -> usize {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["event"] == event && v["machine"] == machine)
            .count()
    }
}

#[test]
fn alerts_are_posted_repeated_acknowledged_cleared_and_survive_a_restart() {
    let t = tempfile::tempdir().unwrap();
    let recovery = procs::recovery_key(t.path());
    let h = hook();
    let opts = [
        "--alert-every",
        "0.2s",
        "--alert-repeat",
        "3s",
        "--alert-webhook",
        h.url.as_str(),
    ];
    let mut tracker = procs::tracker_with(t.path(), &recovery, &opts);
    let vip = enrol(
        t.path(),
        &tracker,
        &recovery,
        "boss-laptop",
        &["--vip", "--user", "ceo"],
    );
    let desk = enrol(t.path(), &tracker, &recovery, "desk-3", &["--user", "bob"]);
    let fine = enrol(t.path(), &tracker, &recovery, "desk-4", &[]);
    let old_vip = enrol(t.path(), &tracker, &recovery, "desk-5", &[]);
    // The VIP last backed up 12 days ago (a VIP alert at 10), desk-3 40 days ago and
    // failing since (an alert for anyone at 30), desk-4 yesterday, desk-5 (not a VIP)
    // 12 days ago: no alert.
    report(&tracker, &vip, now() - 12 * DAY, true);
    report(&tracker, &desk, now() - 40 * DAY, true);
    report(&tracker, &desk, now() - DAY, false);
    report(&tracker, &fine, now() - DAY, true);
    report(&tracker, &old_vip, now() - 12 * DAY, true);

    h.wait(5, "both alerts raised", |g| g.len() >= 2);
    {
        let g = h.got.lock().unwrap();
        let v = g.iter().find(|v| v["machine"] == "boss-laptop").unwrap();
        assert_eq!(v["event"], "alert");
        assert_eq!(v["kind"], "vip_overdue");
        assert_eq!(v["vip"], true);
        assert_eq!(v["user"], "ceo");
        assert_eq!(v["age_days"], 12);
        assert_eq!(v["status"], "overdue_warn");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("no backup for 12 days"),
            "{v}"
        );
        let d = g.iter().find(|v| v["machine"] == "desk-3").unwrap();
        assert_eq!(d["kind"], "overdue");
        assert_eq!(d["age_days"], 40);
        assert!(!g
            .iter()
            .any(|v| v["machine"] == "desk-4" || v["machine"] == "desk-5"));
    }
    let token = admin_token(&tracker);
    let (status, alerts) = api(&tracker, "GET", "/api/v1/alerts", &token);
    assert_eq!(status, 200, "{alerts}");
    let list = alerts["alerts"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{alerts}");
    let desk_alert = list.iter().find(|a| a["machine"] == "desk-3").unwrap()["id"]
        .as_i64()
        .unwrap();

    // Acknowledged: desk-3's alert is not repeated; the VIP's is, once per --alert-repeat.
    let (status, body) = api(
        &tracker,
        "POST",
        &format!("/api/v1/alerts/{desk_alert}/ack"),
        &token,
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = api(
        &tracker,
        "POST",
        &format!("/api/v1/alerts/{desk_alert}/ack"),
        &token,
    );
    assert_eq!(status, 404, "acknowledged twice");
    h.wait(6, "the VIP's alert repeated", |g| {
        g.iter()
            .filter(|v| v["machine"] == "boss-laptop" && v["event"] == "alert")
            .count()
            >= 2
    });
    assert_eq!(
        h.count("alert", "desk-3"),
        1,
        "an acknowledged alert repeated"
    );

    // A restart neither forgets the alerts nor tells them again early.
    tracker.kill();
    let before = h.got.lock().unwrap().len();
    let tracker = procs::tracker_with(t.path(), &recovery, &opts);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        h.got.lock().unwrap().len(),
        before,
        "a restart told the open alerts again: {:#?}",
        h.got.lock().unwrap()
    );

    // The VIP backs up: back to OK, once.
    report(&tracker, &vip, now() - 60, true);
    h.wait(5, "the VIP back to OK", |g| {
        g.iter()
            .any(|v| v["machine"] == "boss-laptop" && v["event"] == "ok")
    });
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(h.count("ok", "boss-laptop"), 1);
    let (_, alerts) = api(&tracker, "GET", "/api/v1/alerts", &token);
    let vip_alert = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["machine"] == "boss-laptop")
        .unwrap()
        .clone();
    assert!(vip_alert["cleared"].is_i64(), "{alerts}");
    let desk_row = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["machine"] == "desk-3")
        .unwrap()
        .clone();
    assert!(
        desk_row["cleared"].is_null() && desk_row["acked"].is_i64(),
        "{alerts}"
    );
    assert_eq!(desk_row["acked_by"], "admin-token");

    // The acknowledgement is in the audit log, with who and from where.
    let (_, audit) = api(&tracker, "GET", "/api/v1/audit", &token);
    let ack = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "ack-alert")
        .unwrap_or_else(|| panic!("{audit}"))
        .clone();
    assert_eq!(ack["target"], "desk-3");
    assert_eq!(ack["actor"], "admin-token");
    assert_eq!(ack["from"], "127.0.0.1");
}

#[test]
fn the_admin_token_rotates_while_the_tracker_runs_and_ends_sessions() {
    let t = tempfile::tempdir().unwrap();
    let recovery = procs::recovery_key(t.path());
    let tracker = procs::tracker(t.path(), &recovery);
    let old = admin_token(&tracker);
    assert_eq!(api(&tracker, "GET", "/api/v1/machines", &old).0, 200);
    assert_eq!(api(&tracker, "GET", "/api/v1/machines", "nope").0, 401);
    // A dashboard session made with the old token.
    let login = format!("token={old}");
    let mut s = std::net::TcpStream::connect(&tracker.addr).unwrap();
    write!(
        s,
        "POST /login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{login}",
        tracker.addr,
        login.len()
    )
    .unwrap();
    let mut head = String::new();
    s.read_to_string(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("{head}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let page = |c: &str| {
        common::try_http(
            &tracker.addr,
            "GET",
            "/",
            &[("Cookie", c.to_owned()), ("Accept", "text/html".into())],
            b"",
        )
        .unwrap()
    };
    let (status, body) = page(&cookie);
    assert_eq!(status, 200);
    assert!(body.contains("id=\"machines\""), "not signed in: {body}");

    let out = common::ok(
        t.path(),
        &[
            "tracker",
            "rotate-admin-token",
            "--data",
            tracker.data.to_str().unwrap(),
        ],
    );
    assert!(out.contains("replaced"), "{out}");
    let new = admin_token(&tracker);
    assert_ne!(new, old);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tracker.data.join("admin-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Within the tracker's poll (a second): the old token and its sessions are done.
    let t0 = Instant::now();
    while api(&tracker, "GET", "/api/v1/machines", &old).0 != 401 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the old token still works"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(api(&tracker, "GET", "/api/v1/machines", &new).0, 200);
    let (_, body) = page(&cookie);
    assert!(
        body.contains("id=\"login\"") && !body.contains("id=\"machines\""),
        "the session outlived the rotation: {body}"
    );
    let (_, audit) = api(&tracker, "GET", "/api/v1/audit", &new);
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"rotate-admin-token"), "{audit}");
    assert!(actions.contains(&"sign-in"), "{audit}");
}

/// An announce with `m`'s passkey (for a torrent nobody published: it still marks `m`
/// online, and a revoked passkey is refused first).
fn announce(t: &procs::Tracker, m: &Machine) -> (u16, String) {
    let ih = [0x42u8; 20];
    common::try_http(
        &t.addr,
        "GET",
        &format!(
            "/{}/announce?info_hash={}&peer_id=-SB0001-abcdefghijkl&port=6881&left=0&quota=1073741824",
            m.passkey,
            swarmbak_tracker::query::percent_encode(&ih)
        ),
        &[],
        b"",
    )
    .unwrap()
}

#[test]
fn history_revoke_and_metrics() {
    let t = tempfile::tempdir().unwrap();
    let recovery = procs::recovery_key(t.path());
    let tracker = procs::tracker(t.path(), &recovery);
    let token = admin_token(&tracker);
    let a = enrol(t.path(), &tracker, &recovery, "lap-1", &["--user", "ana"]);
    let b = enrol(t.path(), &tracker, &recovery, "lap-2", &[]);
    report(&tracker, &a, now() - 3 * DAY, true);
    report(&tracker, &a, now() - 2 * DAY, false);
    report(&tracker, &a, now() - DAY, true);
    // lap-2 announces (online) and never backs up.
    let (status, _) = announce(&tracker, &b);
    assert_eq!(status, 200);

    let (status, m) = api(&tracker, "GET", "/api/v1/machines/lap-1", &token);
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["user"], "ana");
    assert_eq!(m["age_days"], 1);
    assert_eq!(m["status"], "ok");
    let attempts = m["attempts"].as_array().unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| a["ok"].as_bool().unwrap())
            .collect::<Vec<_>>(),
        [true, false, true],
        "{m}"
    );
    assert_eq!(attempts[1]["error"], "disk full");
    assert_eq!(attempts[0]["duration"], 120);
    assert_eq!(
        api(&tracker, "GET", "/api/v1/machines/nobody", &token).0,
        404
    );

    let (_, list) = api(&tracker, "GET", "/api/v1/machines?online=1", &token);
    let names: Vec<&str> = list["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lap-2"], "{list}");
    assert_eq!(list["machines"][0]["address"], "127.0.0.1");
    // The quota its announce gave (an agent sends its --quota).
    assert_eq!(list["machines"][0]["quota"], 1_073_741_824u64);
    let (status, body) = api(&tracker, "GET", "/api/v1/machines?overdue=soon", &token);
    assert_eq!(status, 400, "{body}");

    // Revoked through the API: refused from the next announce on, and audited.
    let (status, body) = api(&tracker, "POST", "/api/v1/machines/lap-2/revoke", &token);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        api(&tracker, "POST", "/api/v1/machines/lap-2/revoke", &token).0,
        409
    );
    let (_, body) = announce(&tracker, &b);
    assert!(body.contains("revoked"), "{body}");
    let (_, list) = api(&tracker, "GET", "/api/v1/machines", &token);
    assert_eq!(list["machines"].as_array().unwrap().len(), 1, "{list}");
    let (_, list) = api(
        &tracker,
        "GET",
        "/api/v1/machines?revoked=1&q=lap-2",
        &token,
    );
    assert_eq!(list["machines"][0]["status"], "revoked", "{list}");

    // /metrics: no token, counts only.
    let (status, text) = common::try_http(&tracker.addr, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(status, 200);
    for line in [
        "swarmbak_tracker_reports_total{result=\"success\"} 2",
        "swarmbak_tracker_reports_total{result=\"failure\"} 1",
        "swarmbak_tracker_announces_total{transport=\"http\"} 2",
        "swarmbak_tracker_machines{status=\"ok\"} 1",
        "swarmbak_tracker_machines{status=\"revoked\"} 1",
        "swarmbak_tracker_alerts_open 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    assert!(text.contains("swarmbak_tracker_request_duration_seconds_count"));
    for secret in ["lap-1", "lap-2", "ana", &a.passkey, &token] {
        assert!(!text.contains(secret), "/metrics names {secret}");
    }
}
