//! `GET BASE/<passkey>/roster` (tracker.md §7.9) on a private tracker served on 127.0.0.1
//! with its real SQLite file: machines enrolled through the real endpoint, seen through
//! their roster requests and announces, a client and a revocation written by a second
//! database handle as `swarmbak tracker enroll --client` and `revoke` write them while
//! the tracker runs.

mod common;

use std::time::{Duration, Instant};

use common::machines::{as_machine, enrol, publish, status_of, M};
use common::torrents::torrent;
use common::{admin_db, Server};
use swarmbak_metainfo::Metainfo;
use swarmbak_tracker::admin::{self, Actor};
use swarmbak_tracker::server::unix_now;
use swarmbak_tracker::trust::{from_b64, Certificate, PublishRecord};
use swarmbak_tracker::{
    AnnounceRequest, ClientError, InfoHash, PeerId, Roster, TrackerClient, REVOKED_PASSKEY,
};

/// The certificates a roster lists, decoded.
fn listed(r: &Roster) -> Vec<Vec<u8>> {
    r.machines
        .iter()
        .map(|e| from_b64(&e.certificate).expect("base64url"))
        .collect()
}

/// Publishes a snapshot signed by `m` and announces it under `m`'s passkey.
async fn publish_and_announce(server: &Server, m: &M, n: u32) {
    let ih = publish(server, m, n, 4).await;
    let c = as_machine(server, m);
    let mut pid = *b"-SB0100-000000000000";
    pid[19] = n as u8;
    c.announce(&AnnounceRequest::new(InfoHash(ih), PeerId(pid), 7000, 0))
        .await
        .unwrap();
}

/// One request on its own connection: the status and the body.
async fn raw(server: &Server, method: &str, target: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
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

/// The error of `c`'s roster request once the running tracker no longer answers 200 or
/// 401 (it reloads what another handle wrote within `reload_every`).
async fn refusal_after_reload(c: &TrackerClient) -> ClientError {
    let t0 = Instant::now();
    loop {
        let r = c.roster().await;
        match r {
            Err(e) if status_of(&e) != Some(401) => return e,
            _ if t0.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            r => panic!("the running tracker never refused: {r:?}"),
        }
    }
}

#[tokio::test]
async fn the_roster_lists_the_machines_seen_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::private(dir.path()).await;
    let a = enrol(&server, dir.path(), "alpha").await;
    let b = enrol(&server, dir.path(), "bravo").await;
    let _c = enrol(&server, dir.path(), "charlie").await;
    let org = admin_db(dir.path()).1.public();

    // A asks: enrolled, not yet seen machines are absent; asking counts as being seen.
    let t0 = unix_now();
    let r = as_machine(&server, &a).roster().await.unwrap();
    assert_eq!(r.window, 300, "the default window");
    assert!((t0..=unix_now()).contains(&r.now), "{r:?}");
    assert_eq!(listed(&r), std::slice::from_ref(&a.certificate));
    assert_eq!(r.machines[0].last_seen, r.now);
    // The certificate as enrolled: the organisation's, with the machine's age recipient.
    let cert = Certificate::verify(&listed(&r)[0], &org).unwrap();
    assert_eq!(cert.fields.machine, a.key.public());
    assert_eq!(cert.fields.age_recipient, "age1alpha");

    // A publish is not presence; B's announce is.
    let tr = torrent(1, 4);
    let ih = Metainfo::from_bytes(&tr).unwrap().info_hash();
    let record = PublishRecord {
        infohash: ih,
        machine: b.key.public(),
        copies: 2,
        published: unix_now(),
    }
    .sign(&b.key);
    as_machine(&server, &b)
        .publish_signed(&tr, &record, &b.certificate)
        .await
        .unwrap();
    let r = as_machine(&server, &a).roster().await.unwrap();
    assert_eq!(listed(&r), std::slice::from_ref(&a.certificate));
    let mut pid = *b"-SB0100-000000000000";
    pid[19] = 1;
    as_machine(&server, &b)
        .announce(&AnnounceRequest::new(InfoHash(ih), PeerId(pid), 7000, 0))
        .await
        .unwrap();
    let r = as_machine(&server, &a).roster().await.unwrap();
    let mut both = vec![a.certificate.clone(), b.certificate.clone()];
    both.sort();
    assert_eq!(listed(&r), both, "both, by certificate bytes");
    for e in &r.machines {
        assert!(e.last_seen <= r.now && r.now - e.last_seen <= 300, "{e:?}");
    }
    // B asking sees the same machines.
    assert_eq!(
        listed(&as_machine(&server, &b).roster().await.unwrap()),
        both
    );

    // The exact JSON on the wire, under the path's passkey and as a bearer token.
    let (status, body) = raw(&server, "GET", &format!("/{}/roster", a.passkey)).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let keys = |o: &serde_json::Value| {
        let mut k: Vec<String> = o.as_object().unwrap().keys().cloned().collect();
        k.sort_unstable();
        k
    };
    assert_eq!(keys(&v), ["machines", "now", "window"]);
    assert_eq!(v["window"], 300);
    assert_eq!(v["machines"].as_array().unwrap().len(), 2);
    for e in v["machines"].as_array().unwrap() {
        assert_eq!(keys(e), ["certificate", "last_seen"]);
        let text = e["certificate"].as_str().unwrap();
        assert!(
            text.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "base64url without padding: {text}"
        );
    }
    let bearer = server.client().with_passkey(&a.passkey);
    assert_eq!(listed(&bearer.roster().await.unwrap()), both);
    let (status, body) = raw(&server, "HEAD", &format!("/{}/roster", a.passkey)).await;
    assert_eq!((status, body.as_str()), (200, ""));
    let (status, _) = raw(&server, "POST", &format!("/{}/roster", a.passkey)).await;
    assert_eq!(status, 405);
    server.stop().await;
}

#[tokio::test]
async fn revoked_client_unknown_and_missing_passkeys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::private(dir.path()).await;
    let a = enrol(&server, dir.path(), "alpha").await;
    let c = enrol(&server, dir.path(), "charlie").await;
    publish_and_announce(&server, &c, 2).await;
    let r = as_machine(&server, &a).roster().await.unwrap();
    let mut both = vec![a.certificate.clone(), c.certificate.clone()];
    both.sort();
    assert_eq!(listed(&r), both);

    // A client: refused, and never listed.
    let (mut db, org) = admin_db(dir.path());
    let (client, _) = admin::create_client(
        &mut db,
        Some(&server.url()),
        "bt-box",
        &Actor::cli(),
        unix_now(),
    )
    .unwrap();
    let e = refusal_after_reload(&server.client().with_passkey(&client.passkey)).await;
    assert_eq!(status_of(&e), Some(403), "{e}");
    assert!(e.to_string().contains("client passkey"), "{e}");
    assert_eq!(
        listed(&as_machine(&server, &a).roster().await.unwrap()),
        both
    );

    // Unknown, malformed and missing passkeys.
    for pk in ["0123456789abcdef0123456789abcdef", "not-a-passkey"] {
        let e = server.client().with_passkey(pk).roster().await.unwrap_err();
        assert_eq!(status_of(&e), Some(401), "{pk}: {e}");
        assert!(e.to_string().contains("unknown passkey"), "{pk}: {e}");
    }
    let e = server.client().roster().await.unwrap_err();
    assert_eq!(status_of(&e), Some(401), "{e}");
    assert!(e.to_string().contains("this tracker is private"), "{e}");

    // A revoked machine: refused with the announce's text, and off the roster at once
    // although it was seen within the window.
    admin::revoke(&mut db, &org, "charlie", &Actor::cli(), unix_now()).unwrap();
    let e = refusal_after_reload(&as_machine(&server, &c)).await;
    assert_eq!(status_of(&e), Some(403), "{e}");
    assert!(e.to_string().contains(REVOKED_PASSKEY), "{e}");
    let r = as_machine(&server, &a).roster().await.unwrap();
    assert_eq!(listed(&r), std::slice::from_ref(&a.certificate));
    server.stop().await;
}

#[tokio::test]
async fn a_machine_not_seen_within_the_window_drops_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::private_with(dir.path(), |c| {
        c.roster_window = Duration::from_secs(1);
    })
    .await;
    let a = enrol(&server, dir.path(), "alpha").await;
    let b = enrol(&server, dir.path(), "bravo").await;
    as_machine(&server, &b).roster().await.unwrap();
    let r = as_machine(&server, &a).roster().await.unwrap();
    assert_eq!(r.window, 1);
    assert!(listed(&r).contains(&a.certificate), "{r:?}");

    // Two seconds later (more than the window on the tracker's clock, in whole seconds)
    // only the machine asking is present.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = as_machine(&server, &a).roster().await.unwrap();
    assert_eq!(listed(&r), std::slice::from_ref(&a.certificate), "{r:?}");

    // B is back as soon as it asks again; A is listed as long as its last request is
    // within the window.
    let r = as_machine(&server, &b).roster().await.unwrap();
    assert!(listed(&r).contains(&b.certificate), "{r:?}");
    for e in &r.machines {
        assert!(r.now - e.last_seen <= 1, "{e:?} outside the window: {r:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn an_open_tracker_has_no_roster() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let e = server
        .client()
        .with_passkey("0123456789abcdef0123456789abcdef")
        .roster()
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), Some(404), "{e}");
    assert!(
        e.to_string().contains("rosters need a private tracker"),
        "{e}"
    );
    server.stop().await;
}
