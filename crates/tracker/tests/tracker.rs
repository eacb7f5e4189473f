//! The tracker and its client over real TCP on 127.0.0.1.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use swarmbak_metainfo::{build_swarmbak_torrent, Metainfo, SwarmbakParams, SwarmbakTorrent};
use swarmbak_tracker::{
    AnnounceEvent, AnnounceRequest, ClientError, Retry, Tracker, TrackerClient, TrackerConfig,
    UNKNOWN_TORRENT,
};
use swarmbak_tracker::{InfoHash, PeerId};
mod common;

use common::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn torrent(seed: u8, name: &str) -> Vec<u8> {
    build_swarmbak_torrent(&SwarmbakTorrent {
        announce: None,
        creation_date: 1_700_000_000,
        name: name.to_owned(),
        piece_length: 16384,
        piece_hashes: vec![[seed; 20]; 3],
        params: SwarmbakParams {
            format: 1,
            k: 2,
            m: 1,
            stripes: 1,
            payload_length: 1000 + u64::from(seed),
            manifest_offset: 0,
            manifest_length: 100,
            id: [seed; 16],
            roots: None,
        },
    })
    .unwrap()
}

fn ih_of(t: &[u8]) -> InfoHash {
    InfoHash(Metainfo::from_bytes(t).unwrap().info_hash())
}

fn pid(n: u8) -> PeerId {
    let mut p = *b"-SB0100-000000000000";
    p[19] = n;
    PeerId(p)
}

async fn published(server: &Server, seed: u8) -> InfoHash {
    let t = torrent(seed, &format!("swarmbak-{seed}.shards"));
    let r = server
        .client()
        .publish(&t, "age1machinekey", "laptop")
        .await
        .unwrap();
    assert_eq!(r.infohash, hex::encode(ih_of(&t)));
    ih_of(&t)
}

/// Sends raw bytes, returns the raw reply (status line, headers, body).
async fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

fn body_of(reply: &[u8]) -> &[u8] {
    let i = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    &reply[i + 4..]
}

#[tokio::test]
async fn announce_compact_excludes_self_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let ih = published(&server, 1).await;
    let c = server.client();

    let mut a = AnnounceRequest::new(ih, pid(1), 7001, 0);
    a.event = Some(AnnounceEvent::Started);
    let r = c.announce(&a).await.unwrap();
    assert_eq!(r.interval, Duration::from_secs(60));
    assert_eq!(r.min_interval, Some(Duration::from_secs(30)));
    assert_eq!((r.complete, r.incomplete), (Some(1), Some(0)));
    assert!(r.peers.is_empty(), "the requesting peer is not returned");

    let b = AnnounceRequest::new(ih, pid(2), 7002, 500);
    let r = c.announce(&b).await.unwrap();
    assert_eq!((r.complete, r.incomplete), (Some(1), Some(1)));
    assert_eq!(r.peers.len(), 1);
    assert_eq!(r.peers[0].addr, "127.0.0.1:7001".parse().unwrap());

    let mut c3 = AnnounceRequest::new(ih, pid(3), 7003, 500);
    c3.machine = Some(hex::encode("age1other"));
    let r = c.announce(&c3).await.unwrap();
    let mut got: Vec<_> = r.peers.iter().map(|p| p.addr.port()).collect();
    got.sort();
    assert_eq!(got, vec![7001, 7002]);

    // numwant limits the answer.
    let mut few = c3.clone();
    few.numwant = Some(1);
    assert_eq!(c.announce(&few).await.unwrap().peers.len(), 1);

    // completed: a leecher becomes a seeder, counted once as a download.
    let mut done = b.clone();
    done.left = 0;
    done.event = Some(AnnounceEvent::Completed);
    let r = c.announce(&done).await.unwrap();
    assert_eq!((r.complete, r.incomplete), (Some(2), Some(1)));
    let s = c.scrape(&[ih]).await.unwrap();
    assert_eq!(s[&ih].downloaded, 1);

    // stopped removes the peer and returns no peers.
    let mut stop = c3.clone();
    stop.event = Some(AnnounceEvent::Stopped);
    let r = c.announce(&stop).await.unwrap();
    assert!(r.peers.is_empty());
    assert_eq!((r.complete, r.incomplete), (Some(2), Some(0)));
    server.stop().await;
}

#[tokio::test]
async fn dictionary_peer_list() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let ih = published(&server, 2).await;
    let c = server.client();
    c.announce(&AnnounceRequest::new(ih, pid(1), 7101, 0))
        .await
        .unwrap();
    let mut q = AnnounceRequest::new(ih, pid(2), 7102, 10);
    q.compact = false;
    let r = c.announce(&q).await.unwrap();
    assert_eq!(r.peers.len(), 1);
    assert_eq!(r.peers[0].addr, "127.0.0.1:7101".parse().unwrap());
    assert_eq!(r.peers[0].peer_id, Some(pid(1)));
    server.stop().await;
}

#[tokio::test]
async fn peers_expire() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |c| {
        c.interval = Duration::from_secs(1);
        c.min_interval = Duration::from_secs(1);
        c.peer_timeout = Some(Duration::from_millis(600));
    })
    .await;
    let ih = published(&server, 3).await;
    let c = server.client();
    c.announce(&AnnounceRequest::new(ih, pid(1), 7201, 0))
        .await
        .unwrap();
    let r = c
        .announce(&AnnounceRequest::new(ih, pid(2), 7202, 1))
        .await
        .unwrap();
    assert_eq!(r.peers.len(), 1);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Peer 1 has been silent longer than the timeout; peer 3 is new.
    let r = c
        .announce(&AnnounceRequest::new(ih, pid(3), 7203, 1))
        .await
        .unwrap();
    assert!(r.peers.is_empty(), "{:?}", r.peers);
    assert_eq!((r.complete, r.incomplete), (Some(0), Some(1)));
    let s = c.scrape(&[]).await.unwrap();
    assert_eq!(s[&ih].incomplete, 1);
    server.stop().await;
}

#[tokio::test]
async fn unknown_torrent_is_a_failure_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let c = server.client();
    let err = c
        .announce(&AnnounceRequest::new(InfoHash([9; 20]), pid(1), 7301, 0))
        .await
        .unwrap_err();
    assert_eq!(err, ClientError::Failure(UNKNOWN_TORRENT.into()));
    assert_eq!(err.failure_reason(), Some(UNKNOWN_TORRENT));
    assert!(err.to_string().contains(UNKNOWN_TORRENT));
    assert!(!err.is_retryable());
    // On the wire: HTTP 200 and a bencoded failure dictionary.
    let reply = raw(
        server.addr,
        format!(
            "GET /announce?info_hash={}&peer_id=-SB0100-000000000001&port=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "%09".repeat(20)
        )
        .as_bytes(),
    )
    .await;
    assert!(reply.starts_with(b"HTTP/1.1 200"));
    assert_eq!(
        body_of(&reply),
        format!(
            "d14:failure reason{}:{}e",
            UNKNOWN_TORRENT.len(),
            UNKNOWN_TORRENT
        )
        .as_bytes()
    );
    server.stop().await;
}

#[tokio::test]
async fn scrape_single_multiple_full() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let a = published(&server, 4).await;
    let b = published(&server, 5).await;
    let c = server.client();
    c.announce(&AnnounceRequest::new(a, pid(1), 7401, 0))
        .await
        .unwrap();
    c.announce(&AnnounceRequest::new(a, pid(2), 7402, 9))
        .await
        .unwrap();
    c.announce(&AnnounceRequest::new(b, pid(1), 7401, 9))
        .await
        .unwrap();

    let one = c.scrape(&[a]).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!((one[&a].complete, one[&a].incomplete), (1, 1));
    assert_eq!(one[&a].name.as_deref(), Some("swarmbak-4.shards"));

    let two = c.scrape(&[a, b, InfoHash([7; 20])]).await.unwrap();
    assert_eq!(two.len(), 2, "unknown info-hashes are omitted");
    assert_eq!((two[&b].complete, two[&b].incomplete), (0, 1));

    let full = c.scrape(&[]).await.unwrap();
    assert_eq!(full.len(), 2);
    assert!(full.contains_key(&a) && full.contains_key(&b));
    server.stop().await;
}

#[tokio::test]
async fn publish_metainfo_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let c = server.client();
    let t1 = torrent(6, "one");
    let t2 = torrent(7, "two");
    let t3 = torrent(8, "three");
    let p1 = c.publish(&t1, "age1alpha", "alpha laptop").await.unwrap();
    assert!(p1.new);
    let again = c.publish(&t1, "age1alpha", "alpha laptop").await.unwrap();
    assert!(!again.new, "publishing twice is idempotent");
    assert_eq!(again.infohash, p1.infohash);
    c.publish(&t2, "age1alpha", "alpha laptop").await.unwrap();
    c.publish(&t3, "age1beta", "beta").await.unwrap();

    // Another machine cannot claim the same snapshot.
    let err = c.publish(&t1, "age1beta", "beta").await.unwrap_err();
    assert!(
        matches!(err, ClientError::Http { status: 409, .. }),
        "{err}"
    );

    // The metainfo comes back byte for byte.
    assert_eq!(c.metainfo(&ih_of(&t2)).await.unwrap(), Some(t2.clone()));
    assert_eq!(c.metainfo(&InfoHash([1; 20])).await.unwrap(), None);

    let by_name = c.snapshots(Some("alpha laptop")).await.unwrap();
    let by_key = c.snapshots(Some("age1alpha")).await.unwrap();
    assert_eq!(by_name, by_key);
    assert_eq!(by_name.len(), 2);
    // Newest first (same second: later publish first).
    assert_eq!(by_name[0].infohash, hex::encode(ih_of(&t2)));
    assert_eq!(by_name[1].infohash, hex::encode(ih_of(&t1)));
    assert_eq!(by_name[0].machine_key, "age1alpha");
    assert_eq!(by_name[0].machine_name, "alpha laptop");
    assert_eq!(by_name[0].total_length, 3 * 16384);
    assert_eq!(by_name[0].payload_length, 1007);
    assert!(by_name[0].published > 1_700_000_000);
    assert_eq!(c.snapshots(None).await.unwrap().len(), 3);
    assert!(c.snapshots(Some("nobody")).await.unwrap().is_empty());

    let machines = c.machines().await.unwrap();
    assert_eq!(machines.len(), 2);
    let alpha = machines
        .iter()
        .find(|m| m.machine_key == "age1alpha")
        .unwrap();
    assert_eq!(alpha.snapshots, 2);
    assert_eq!(alpha.machine_name, "alpha laptop");
    assert!(!alpha.online);
    let mut a = AnnounceRequest::new(ih_of(&t1), pid(1), 7801, 0);
    a.machine = Some(hex::encode("age1alpha"));
    c.announce(&a).await.unwrap();
    let machines = c.machines().await.unwrap();
    let online: Vec<_> = machines
        .iter()
        .map(|m| (m.machine_key.as_str(), m.online))
        .collect();
    assert!(online.contains(&("age1alpha", true)) && online.contains(&("age1beta", false)));

    // A torrent that is not swarmbak's, garbage, and missing parameters: 400.
    let plain = b"d4:infod6:lengthi1e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaa7:privatei1eee";
    for (body, key, name) in [
        (&plain[..], "age1x", "x"),
        (b"not a torrent", "age1x", "x"),
        (&t1[..], "", "x"),
        (&t1[..], "age1x", ""),
        (&t1[..], "age 1x", "x"),
    ] {
        let err = c.publish(body, key, name).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Http { status: 400, .. }),
            "{err}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn state_survives_restart_and_one_tracker_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let c = server.client();
    let t1 = torrent(10, "a");
    let t2 = torrent(11, "b");
    c.publish(&t1, "age1k", "host").await.unwrap();
    c.publish(&t2, "age1k", "host").await.unwrap();
    server.stop().await;

    // Everything is in the database (a v1 directory's import: tests/sqlite.rs).
    assert!(dir.path().join("tracker.db").is_file());
    // The directory is free again once that tracker is gone; while one runs, it is not.
    let server = Server::start(dir.path(), |_| {}).await;
    let err = Tracker::open(TrackerConfig::new(dir.path())).err().unwrap();
    assert!(
        err.to_string().contains("in use by another tracker"),
        "{err}"
    );
    server.stop().await;

    let server = Server::start(dir.path(), |_| {}).await;
    let c = server.client();
    let snaps = c.snapshots(Some("host")).await.unwrap();
    assert_eq!(snaps.len(), 2);
    assert_eq!(c.metainfo(&ih_of(&t1)).await.unwrap(), Some(t1.clone()));
    // Announce works for what was published before the restart.
    c.announce(&AnnounceRequest::new(ih_of(&t2), pid(1), 7501, 0))
        .await
        .unwrap();
    let t3 = torrent(12, "c");
    c.publish(&t3, "age1k", "host").await.unwrap();
    server.stop().await;

    let server = Server::start(dir.path(), |_| {}).await;
    let c = server.client();
    assert_eq!(c.snapshots(Some("age1k")).await.unwrap().len(), 3);
    assert_eq!(c.scrape(&[]).await.unwrap().len(), 3);
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_clear_failures() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let ih = published(&server, 13).await;
    let ihq: String = ih.0.iter().map(|b| format!("%{b:02x}")).collect();
    let cases: Vec<(String, &str)> = vec![
        ("/announce".into(), "missing info_hash"),
        ("/announce?info_hash=abc".into(), "invalid info_hash"),
        (
            "/announce?info_hash=%zz".into(),
            "malformed percent-encoding",
        ),
        (format!("/announce?info_hash={ihq}"), "missing peer_id"),
        (
            format!("/announce?info_hash={ihq}&peer_id=12345678901234567890&port=99999"),
            "invalid port",
        ),
        (
            format!("/announce?info_hash={ihq}&peer_id=12345678901234567890&port=1&left=x"),
            "invalid left",
        ),
        (
            format!("/announce?info_hash={ihq}&peer_id=12345678901234567890&port=1&event=x"),
            "invalid event",
        ),
        ("/scrape?info_hash=%".into(), "malformed percent-encoding"),
        ("/scrape?info_hash=short".into(), "invalid info_hash"),
        (
            format!("/announce?{}", "a".repeat(10_000)),
            "request URL too long",
        ),
    ];
    for (target, want) in cases {
        let reply = raw(
            server.addr,
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(reply.starts_with(b"HTTP/1.1 200"), "{target}");
        let body = String::from_utf8_lossy(body_of(&reply)).into_owned();
        assert!(
            body.starts_with("d14:failure reason") && body.contains(want),
            "{target}: {body}"
        );
    }
    for (req, status) in [
        (
            "GET /snapshots?machine=%G1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
            "400",
        ),
        (
            "GET /metainfo/xyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
            "400",
        ),
        (
            format!(
                "GET /metainfo/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                "ab".repeat(20)
            ),
            "404",
        ),
        (
            "POST /publish?machine=a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_owned(),
            "400",
        ),
        (
            "POST /publish?machine=a&name=b HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\nConnection: close\r\n\r\n"
                .to_owned(),
            "413",
        ),
        (
            format!(
                "GET /snapshots?{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                "a".repeat(9000)
            ),
            "414",
        ),
        (
            "DELETE /snapshots HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
            "405",
        ),
        (
            "GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
            "404",
        ),
        ("\x00\x01garbage\r\n\r\n".to_owned(), "400"),
    ] {
        let reply = raw(server.addr, req.as_bytes()).await;
        let head = String::from_utf8_lossy(&reply[..reply.len().min(12)]).into_owned();
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{req:?} -> {head:?}"
        );
    }
    // A publish without a Content-Length (chunked) is refused before its body is read:
    // the bytes in flight are bounded by what publishes declare.
    let dir2 = tempfile::tempdir().unwrap();
    let small = Server::start(dir2.path(), |c| c.max_publish_bytes = 1000).await;
    let mut req =
        b"POST /publish?machine=a&name=b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"200\r\n");
        req.extend_from_slice(&[b'x'; 512]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let reply = raw(small.addr, &req).await;
    assert!(
        reply.starts_with(b"HTTP/1.1 411"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    small.stop().await;

    // Still serving.
    let reply = raw(
        server.addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let body: serde_json::Value = serde_json::from_slice(body_of(&reply)).unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["torrents"], 1);
    server.stop().await;
}

/// The request exactly as libtorrent 2.0 shapes it: every non-unreserved byte of the
/// binary info_hash and peer_id percent-encoded (lower-case hex here, as some clients
/// send), extra keys the tracker does not know, keep-alive, gzip accepted.
#[tokio::test]
async fn libtorrent_shaped_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let ih = published(&server, 14).await;
    let c = server.client();
    c.announce(&AnnounceRequest::new(ih, pid(1), 7601, 0))
        .await
        .unwrap();
    let enc = |b: &[u8]| -> String {
        b.iter()
            .map(|&x| {
                if x.is_ascii_alphanumeric() || b"-._~".contains(&x) {
                    (x as char).to_string()
                } else {
                    format!("%{x:02x}")
                }
            })
            .collect()
    };
    let peer_id = b"-LT2080-\x01\xff\x80 a+/%&=\x00\x7f";
    assert_eq!(peer_id.len(), 20);
    let target = format!(
        "/announce?info_hash={}&peer_id={}&port=6881&uploaded=0&downloaded=0&left=1000&corrupt=0&key=1A2B3C4D&event=started&numwant=200&compact=1&no_peer_id=1&supportcrypto=1&redundant=0",
        enc(ih.as_ref()),
        enc(peer_id)
    );
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: libtorrent/2.0.8.0\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
        server.addr
    );
    let reply = raw(server.addr, req.as_bytes()).await;
    assert!(reply.starts_with(b"HTTP/1.1 200"));
    let r = swarmbak_tracker::proto::parse_announce_response(body_of(&reply)).unwrap();
    assert_eq!(r.interval, Duration::from_secs(60));
    assert_eq!(r.peers.len(), 1);
    assert_eq!(r.peers[0].addr, "127.0.0.1:7601".parse().unwrap());
    assert_eq!((r.complete, r.incomplete), (Some(1), Some(1)));
    // The peer is registered under its exact binary peer id.
    let mut q = AnnounceRequest::new(ih, pid(9), 7609, 5);
    q.compact = false;
    let r = c.announce(&q).await.unwrap();
    let ids: Vec<_> = r.peers.iter().filter_map(|p| p.peer_id).collect();
    assert!(ids.contains(&PeerId(*peer_id)), "{ids:?}");
    // opentracker-style paths: anything under /an, and /announce/<passkey>.
    for path in ["/ann", "/announce/0123456789abcdef"] {
        let req = format!(
            "GET {path}?info_hash={}&peer_id={}&port=6881&left=0&compact=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            enc(ih.as_ref()),
            enc(peer_id)
        );
        let reply = raw(server.addr, req.as_bytes()).await;
        let r = swarmbak_tracker::proto::parse_announce_response(body_of(&reply)).unwrap();
        assert!(!r.peers.is_empty(), "{path}");
    }
    // Keep-alive: two announces on one connection.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let one = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(one.as_bytes()).await.unwrap();
    s.write_all(one.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.windows(8).filter(|w| w == b"HTTP/1.1").count() < 2 || !got.ends_with(b"e") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    server.stop().await;
}

#[tokio::test]
async fn retries_until_the_tracker_appears() {
    let dir = tempfile::tempdir().unwrap();
    // Reserve a port, free it, and start the tracker there a little later.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let client = TrackerClient::new(&url).unwrap().with_retry(Retry {
        give_up_after: Duration::from_secs(20),
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
    });
    let path = dir.path().to_owned();
    let starter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        Server::start_on(l, &path, |_| {}).await
    });
    let t0 = Instant::now();
    let snaps = client.snapshots(None).await.unwrap();
    assert!(snaps.is_empty());
    assert!(t0.elapsed() >= Duration::from_millis(1000));
    let server = starter.await.unwrap();
    server.stop().await;

    // Nobody there: gives up at the caller's deadline.
    let client = TrackerClient::new(&url)
        .unwrap()
        .with_retry(Retry::for_duration(Duration::from_millis(1500)));
    let t0 = Instant::now();
    let err = client
        .announce(&AnnounceRequest::new(InfoHash([1; 20]), pid(1), 1, 0))
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(4),
        "{took:?}"
    );
    match err {
        ClientError::GaveUp { attempts, last, .. } => {
            assert!(attempts >= 3, "{attempts}");
            assert!(matches!(*last, ClientError::Connect { .. }), "{last}");
        }
        e => panic!("{e}"),
    }
    // Without retry: one attempt, the connect error itself.
    let err = TrackerClient::new(&url)
        .unwrap()
        .snapshots(None)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
}

/// A foreign tracker that answers with unsorted keys, a dictionary peer list, a warning
/// and a tracker id; then one that answers HTTP 503 then a failure.
#[tokio::test]
async fn lenient_with_foreign_trackers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let replies: Vec<Vec<u8>> = vec![
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nd8:intervali1800e5:peersld2:ip9:127.0.0.14:porti6881e7:peer id20:AAAAAAAAAAAAAAAAAAAAee15:warning message7:be nice10:tracker id3:xyz8:completei5e10:incompletei3e12:min intervali900ee".to_vec(),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nd8:in\r\n1a\r\ntervali60e5:peers6:\x7f\0\0\x01\x1a\xe1e\r\n0\r\n\r\n".to_vec(),
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
        b"HTTP/1.0 200 OK\r\n\r\nd14:failure reason13:access deniede".to_vec(),
    ];
    tokio::spawn(async move {
        for reply in replies {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let head = String::from_utf8_lossy(&got).into_owned();
            assert!(
                head.starts_with("GET /tracker/announce?info_hash="),
                "{head}"
            );
            assert!(head.contains("&compact=1"), "{head}");
            s.write_all(&reply).await.unwrap();
            let _ = s.shutdown().await;
        }
    });
    let c = TrackerClient::new(&format!("http://{addr}/tracker")).unwrap();
    let req = AnnounceRequest::new(InfoHash([3; 20]), pid(1), 7701, 1);
    let r = c.announce(&req).await.unwrap();
    assert_eq!(r.interval, Duration::from_secs(1800));
    assert_eq!(r.min_interval, Some(Duration::from_secs(900)));
    assert_eq!(r.warning.as_deref(), Some("be nice"));
    assert_eq!(r.tracker_id.as_deref(), Some(&b"xyz"[..]));
    assert_eq!((r.complete, r.incomplete), (Some(5), Some(3)));
    assert_eq!(r.peers[0].peer_id, Some(PeerId([b'A'; 20])));
    let r = c.announce(&req).await.unwrap();
    assert_eq!(r.peers[0].addr, "127.0.0.1:6881".parse().unwrap());
    let err = c.announce(&req).await.unwrap_err();
    assert!(matches!(err, ClientError::Http { status: 503, .. }) && err.is_retryable());
    let err = c.announce(&req).await.unwrap_err();
    assert_eq!(err.failure_reason(), Some("access denied"));
}

/// Many announces at once, from many peers, over keep-alive-less connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_announces() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let ih = published(&server, 15).await;
    let mut tasks = Vec::new();
    for n in 0..40u8 {
        let c = server.client();
        tasks.push(tokio::spawn(async move {
            for round in 0..10u64 {
                let mut a = AnnounceRequest::new(ih, pid(n), 8000 + u16::from(n), round % 2);
                a.numwant = Some(25);
                let r = c.announce(&a).await.unwrap();
                assert!(r.peers.len() <= 25);
                assert!(r.peers.iter().all(|p| p.addr.port() != 8000 + u16::from(n)));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = server.client().scrape(&[ih]).await.unwrap();
    assert_eq!(s[&ih].complete + s[&ih].incomplete, 40);
    assert_eq!(
        s[&ih].incomplete, 40,
        "the last announce of each had left=1"
    );
    server.stop().await;
}

/// Reads `n` HTTP responses (each with a content-length) from `s`: (head, body) pairs.
async fn read_responses(s: &mut TcpStream, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..i].to_vec()).unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .expect("content-length")
                .parse()
                .unwrap();
            if buf.len() >= i + 4 + len {
                let body = buf[i + 4..i + 4 + len].to_vec();
                buf.drain(..i + 4 + len);
                out.push((head, body));
                continue;
            }
        }
        let mut chunk = [0u8; 4096];
        let k = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(k > 0, "closed after {} responses: {:?}", out.len(), buf);
        buf.extend_from_slice(&chunk[..k]);
    }
    assert!(buf.is_empty(), "unexpected bytes: {buf:?}");
    out
}

fn get(target: &str, extra: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\n{extra}\r\n")
}

/// Announces and scrapes on plain HTTP are answered without hyper (crate::plain): the
/// same answers, pipelined requests in order, a head split over many writes, keep-alive
/// and close as HTTP/1.0 and 1.1 say, and whatever is not a GET announce or scrape (a
/// body, a POST, another endpoint, a head too long) handed to hyper on the same
/// connection with the bytes already read.
#[tokio::test]
async fn plain_http_fast_path_answers_like_hyper() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let ih = published(&server, 21).await;
    let a1 = format!(
        "/announce?{}",
        AnnounceRequest::new(ih, pid(1), 7001, 0).to_query()
    );
    let a2 = format!(
        "/announce?{}",
        AnnounceRequest::new(ih, pid(2), 7002, 9).to_query()
    );
    let sc = format!(
        "/scrape?info_hash={}",
        swarmbak_tracker::query::percent_encode(&ih.0)
    );

    // Pipelined: two announces, a scrape, then /health (hyper's) on the same connection.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let burst = [get(&a1, ""), get(&a2, ""), get(&sc, ""), get("/health", "")].concat();
    s.write_all(burst.as_bytes()).await.unwrap();
    let r = read_responses(&mut s, 4).await;
    // Byte for byte what hyper sends (the tracker's unit tests show which path answers).
    for (head, _) in &r {
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("\r\ndate: "), "{head}");
    }
    let second = swarmbak_tracker::proto::parse_announce_response(&r[1].1).unwrap();
    assert_eq!(second.peers.len(), 1, "the first announce counted first");
    let scrape = swarmbak_tracker::proto::parse_scrape_response(&r[2].1).unwrap();
    let counts = &scrape[&ih];
    assert_eq!((counts.complete, counts.incomplete), (1, 1));
    assert!(r[2].0.contains("content-type: text/plain"), "{}", r[2].0);
    let health: serde_json::Value = serde_json::from_slice(&r[3].1).unwrap();
    assert!(health.is_object(), "{health}");

    // The same scrape through hyper (a chunked, empty body takes it there): byte-equal.
    let chunked = get(&sc, "Transfer-Encoding: chunked\r\n") + "0\r\n\r\n";
    s.write_all(chunked.as_bytes()).await.unwrap();
    let via_hyper = read_responses(&mut s, 1).await;
    assert_eq!(via_hyper[0].1, r[2].1);

    // A head in one-byte writes.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    for b in get(&sc, "Connection: close\r\n").bytes() {
        s.write_all(&[b]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let r = read_responses(&mut s, 1).await;
    assert!(r[0].0.contains("connection: close"), "{}", r[0].0);
    assert_eq!(r[0].1, via_hyper[0].1);
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "closed after Connection: close");

    // HTTP/1.0 closes unless it asks to keep alive.
    let one0 = format!("GET {sc} HTTP/1.0\r\n\r\n");
    let reply = raw(server.addr, one0.as_bytes()).await;
    assert_eq!(body_of(&reply), &via_hyper[0].1[..]);
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let keep = format!("GET {sc} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    s.write_all(keep.repeat(2).as_bytes()).await.unwrap();
    let r = read_responses(&mut s, 2).await;
    assert!(r[0].0.contains("connection: keep-alive"), "{}", r[0].0);

    // A GET announce with a body: hyper reads the body, and the next request after it
    // is parsed where it starts (the fast path would have taken "hello" for a request).
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let with_body = get(&a1, "Content-Length: 5\r\n") + "hello" + &get("/health", "");
    s.write_all(with_body.as_bytes()).await.unwrap();
    let r = read_responses(&mut s, 2).await;
    assert!(swarmbak_tracker::proto::parse_announce_response(&r[0].1).is_ok());
    assert!(serde_json::from_slice::<serde_json::Value>(&r[1].1).is_ok());

    // POST and a target too long: hyper's answers, bencoded.
    let post =
        format!("POST {a1} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let reply = raw(server.addr, post.as_bytes()).await;
    assert!(
        String::from_utf8_lossy(body_of(&reply)).contains("announce takes GET"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let long = format!("{a1}&pad={}", "x".repeat(9000));
    let reply = raw(server.addr, get(&long, "Connection: close\r\n").as_bytes()).await;
    assert!(
        String::from_utf8_lossy(body_of(&reply)).contains("request URL too long"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    server.stop().await;
}
