//! `POST BASE/<passkey>/retire` (tracker.md §7.8) on a private tracker served on
//! 127.0.0.1 with its real SQLite file: machines enrolled through the real endpoint,
//! snapshots published signed through it, retirements sent through it; every refusal,
//! the listing's fields, replacement, a restart, and the administrator's cancellation
//! through the admin API.

mod common;

use std::time::{Duration, Instant};

use common::machines::{as_machine, enrol, publish, status_of, M};
use common::{admin_db, Server};
use swarmbak_tracker::admin::{self, Actor};
use swarmbak_tracker::server::unix_now;
use swarmbak_tracker::trust::{Retirement, SigningKey};
use swarmbak_tracker::{SnapshotRecord, TrackerClient};

fn retirement(m: &M, ih: [u8; 20], newest: [u8; 20], retired: i64) -> Retirement {
    Retirement {
        infohash: ih,
        machine: m.key.public(),
        retired,
        newest,
        stripes: 10,
        keep: vec![(0, 3), (7, 8)],
    }
}

/// The refusal's status and message.
async fn refused(c: &TrackerClient, signed: &[u8]) -> (u16, String) {
    let e = c.retire(signed).await.unwrap_err();
    (status_of(&e).unwrap_or(0), e.to_string())
}

async fn listed(c: &TrackerClient, ih: [u8; 20]) -> SnapshotRecord {
    c.snapshot(&swarmbak_tracker::InfoHash(ih))
        .await
        .unwrap()
        .expect("listed")
}

/// The raw JSON object of `ih` in `GET /<passkey>/snapshots`.
async fn raw_listing(server: &Server, m: &M, ih: [u8; 20]) -> serde_json::Value {
    let (status, body) = raw(
        server,
        "GET",
        &format!("/{}/snapshots?infohash={}", m.passkey, hex::encode(ih)),
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v[0].clone()
}

#[tokio::test]
async fn retirements_are_checked_stored_listed_replaced_and_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::private(dir.path()).await;
    let a = enrol(&server, dir.path(), "laptop-1").await;
    let b = enrol(&server, dir.path(), "laptop-2").await;
    let old = publish(&server, &a, 1, 10).await;
    let mid = publish(&server, &a, 2, 10).await;
    let newest = publish(&server, &a, 3, 10).await;
    let others = publish(&server, &b, 4, 10).await;
    let _b_newest = publish(&server, &b, 5, 10).await;
    let ca = as_machine(&server, &a);
    let now = unix_now();

    // Refusals, in the order the tracker checks.
    let signed = retirement(&a, old, newest, now).sign(&a.key);
    let (st, msg) = refused(
        &server
            .client()
            .with_passkey("0123456789abcdef0123456789abcdef"),
        &signed,
    )
    .await;
    assert_eq!(st, 401, "{msg}");
    assert!(msg.contains("unknown passkey"), "{msg}");
    let (mut db, _) = admin_db(dir.path());
    let (client, _) =
        admin::create_client(&mut db, Some(&server.url()), "bt-box", &Actor::cli(), now).unwrap();
    let cc = server.client().with_passkey(&client.passkey);
    let t0 = Instant::now();
    let (st, msg) = loop {
        let r = refused(&cc, &signed).await;
        if r.0 != 401 || t0.elapsed() > Duration::from_secs(10) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(st, 403, "{msg}");
    assert!(
        msg.contains("a client passkey cannot retire snapshots"),
        "{msg}"
    );
    // Signed by another machine's key, or altered.
    let (st, msg) = refused(&ca, &retirement(&a, old, newest, now).sign(&b.key)).await;
    assert_eq!(st, 403, "{msg}");
    assert!(msg.contains("retirement refused: "), "{msg}");
    let mut altered = signed.clone();
    let last = altered.len() - 5;
    altered[last] ^= 1;
    let (st, msg) = refused(&ca, &altered).await;
    assert_eq!(st, 403, "{msg}");
    assert!(msg.contains("retirement refused: "), "{msg}");
    // A snapshot not published here; another machine's snapshot.
    let (st, msg) = refused(&ca, &retirement(&a, [9; 20], newest, now).sign(&a.key)).await;
    assert_eq!(st, 404, "{msg}");
    assert!(msg.contains("is not published at this tracker"), "{msg}");
    let (st, msg) = refused(&ca, &retirement(&a, others, newest, now).sign(&a.key)).await;
    assert_eq!(st, 403, "{msg}");
    assert!(
        msg.contains("a machine retires only its own snapshots"),
        "{msg}"
    );
    // Its newest snapshot, whatever the record says is newest; one newer than the
    // record's own newest.
    let (st, msg) = refused(&ca, &retirement(&a, newest, old, now).sign(&a.key)).await;
    assert_eq!(st, 409, "{msg}");
    assert!(
        msg.contains("a machine's newest snapshot is never retired"),
        "{msg}"
    );
    let (st, msg) = refused(&ca, &retirement(&a, mid, old, now).sign(&a.key)).await;
    assert_eq!(st, 409, "{msg}");
    assert!(msg.contains("newer than the record's own newest"), "{msg}");
    // Signed more than a day ahead of the tracker's clock.
    let (st, msg) = refused(
        &ca,
        &retirement(&a, old, newest, now + 86_400 + 600).sign(&a.key),
    )
    .await;
    assert_eq!(st, 403, "{msg}");
    assert!(msg.contains("check the machine's clock"), "{msg}");
    // Nothing refused was stored.
    assert!(admin::retirements(&mut db).unwrap().is_empty());
    assert_eq!(listed(&ca, old).await.retirement, None);

    // Taken: 201, then 200 for the same record; listed with the record and the time.
    let (status, body) = raw(
        &server,
        "POST",
        &format!("/{}/retire", a.passkey),
        &[],
        &signed,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"infohash": hex::encode(old), "new": true})
    );
    assert!(!ca.retire(&signed).await.unwrap());
    let rec = listed(&ca, old).await;
    let back = rec
        .retirement_record()
        .expect("the listing carries the record");
    assert_eq!(back, signed);
    assert_eq!(
        Retirement::verify(&back, &a.key.public()).unwrap(),
        retirement(&a, old, newest, now)
    );
    let at = rec.retired_at.expect("retired_at");
    assert!((now..=unix_now()).contains(&at), "{at}");
    assert_eq!(rec.retirement_cancelled, None);
    let raw_rec = raw_listing(&server, &a, old).await;
    assert_eq!(
        raw_rec["retirement"],
        swarmbak_tracker::trust::to_b64(&signed)
    );
    assert_eq!(raw_rec["retired_at"], at);
    assert!(raw_rec.get("retirement_cancelled").is_none(), "{raw_rec}");
    // Snapshots not retired list none of the new fields.
    let plain = raw_listing(&server, &a, mid).await;
    for k in ["retirement", "retired_at", "retirement_cancelled"] {
        assert!(plain.get(k).is_none(), "{plain}");
    }

    // An older or equal record after it: 409; a later one replaces it.
    let (st, msg) = refused(&ca, &retirement(&a, old, mid, now - 10).sign(&a.key)).await;
    assert_eq!(st, 409, "{msg}");
    assert!(msg.contains("an equal or later retirement"), "{msg}");
    let (st, _) = refused(&ca, &retirement(&a, old, mid, now).sign(&a.key)).await;
    assert_eq!(st, 409);
    let mut later = retirement(&a, old, newest, now + 5);
    later.keep = vec![];
    let later_signed = later.sign(&a.key);
    assert!(ca.retire(&later_signed).await.unwrap());
    assert_eq!(
        listed(&ca, old).await.retirement_record(),
        Some(later_signed.clone())
    );

    // A restart keeps it.
    server.stop().await;
    drop(db);
    let server = Server::private(dir.path()).await;
    let ca = as_machine(&server, &a);
    let rec = listed(&ca, old).await;
    assert_eq!(rec.retirement_record(), Some(later_signed.clone()));
    assert!(rec.retired_at.is_some());
    assert!(!ca.retire(&later_signed).await.unwrap());

    // The admin API: the list, then the cancellation, audited.
    let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    let bearer = [("authorization", format!("Bearer {}", token.trim()))];
    let (st, body) = raw(&server, "GET", "/api/v1/retirements", &[], b"").await;
    assert_eq!(st, 401, "{body}");
    let (st, body) = raw(&server, "GET", "/api/v1/retirements", &bearer, b"").await;
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let r = &v["retirements"][0];
    assert_eq!(v["retirements"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(r["infohash"], hex::encode(old));
    assert_eq!(r["machine"], "laptop-1");
    assert_eq!(r["retired"], now + 5);
    assert_eq!(r["stripes"], 10);
    assert_eq!(r["keep"], "none");
    assert!(r["received"].is_i64() && r["cancelled"].is_null(), "{r}");
    let cancel = format!("/api/v1/retirements/{}/cancel", hex::encode(old));
    let (st, _) = raw(&server, "POST", &cancel, &[], b"").await;
    assert_eq!(st, 401);
    let (st, body) = raw(&server, "POST", &cancel, &bearer, b"").await;
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["infohash"], hex::encode(old));
    assert_eq!(v["cancelled_by"], "admin-token");
    let cancelled_at = v["cancelled"].as_i64().unwrap();
    // The listing at once: no record, the cancellation's time.
    let rec = listed(&ca, old).await;
    assert_eq!(
        (
            rec.retirement.as_deref(),
            rec.retired_at,
            rec.retirement_cancelled
        ),
        (None, None, Some(cancelled_at))
    );
    // Again: 409; an unknown or never retired snapshot: 404 naming it; not hex: 400.
    let (st, body) = raw(&server, "POST", &cancel, &bearer, b"").await;
    assert_eq!(st, 409, "{body}");
    assert!(body.contains("cancelled already"), "{body}");
    let other = format!("/api/v1/retirements/{}/cancel", hex::encode(mid));
    let (st, body) = raw(&server, "POST", &other, &bearer, b"").await;
    assert_eq!(st, 404, "{body}");
    assert!(body.contains(&hex::encode(mid)), "{body}");
    let (st, _) = raw(
        &server,
        "POST",
        "/api/v1/retirements/xyz/cancel",
        &bearer,
        b"",
    )
    .await;
    assert_eq!(st, 400);
    // The machine cannot revive it, with the same record or a later one.
    let (status, body) = raw(
        &server,
        "POST",
        &format!("/{}/retire", a.passkey),
        &[],
        &later_signed,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&v["new"], &v["cancelled"]),
        (&false.into(), &true.into()),
        "{v}"
    );
    assert!(!ca
        .retire(&retirement(&a, old, newest, now + 60).sign(&a.key))
        .await
        .unwrap());
    assert_eq!(listed(&ca, old).await.retirement, None);
    let (mut db, _) = admin_db(dir.path());
    let log = swarmbak_tracker::storage::Storage::audit_log(&mut db, 10).unwrap();
    let line = log
        .iter()
        .find(|r| r.action == "unretire")
        .expect("audited");
    assert_eq!(
        (line.actor.as_str(), line.target.as_str()),
        ("admin-token", hex::encode(old).as_str())
    );
    server.stop().await;
}

#[tokio::test]
async fn an_open_tracker_takes_no_retirements() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let key = SigningKey::generate();
    let signed = Retirement {
        infohash: [1; 20],
        machine: key.public(),
        retired: unix_now(),
        newest: [2; 20],
        stripes: 1,
        keep: vec![],
    }
    .sign(&key);
    let e = server
        .client()
        .with_passkey("0123456789abcdef0123456789abcdef")
        .retire(&signed)
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), Some(404), "{e}");
    assert!(
        e.to_string().contains("retirements need a private tracker"),
        "{e}"
    );
    server.stop().await;
}

/// One HTTP/1.1 request with `Content-Length`: its status and body.
async fn raw(
    server: &Server,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
