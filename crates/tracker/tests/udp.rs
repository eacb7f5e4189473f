//! The UDP tracker (BEP 15, BEP 41 passkeys; tracker.md §9) over real sockets on
//! loopback, with a hand-written client: connect, announce and scrape on an open and on a
//! private tracker, beside the HTTP tracker over the same state.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use swarmbak_metainfo::{build_swarmbak_torrent, Metainfo, SwarmbakParams, SwarmbakTorrent};
use swarmbak_tracker::admin::{self, EnrollOptions};
use swarmbak_tracker::org::Org;
use swarmbak_tracker::sqlite::Sqlite;
use swarmbak_tracker::storage::Storage;
use swarmbak_tracker::trust::{EnrollToken, PublishRecord, SigningKey};
use swarmbak_tracker::{
    AnnounceRequest, InfoHash, PeerId, Tracker, TrackerClient, TrackerConfig, NO_PASSKEY,
    REVOKED_PASSKEY, UNKNOWN_PASSKEY, UNKNOWN_TORRENT,
};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;

const PROTOCOL_ID: u64 = 0x41727101980;

fn torrent(seed: u8) -> Vec<u8> {
    build_swarmbak_torrent(&SwarmbakTorrent {
        announce: None,
        creation_date: 1_700_000_000,
        name: format!("swarmbak-{seed}.shards"),
        piece_length: 16384,
        piece_hashes: vec![[seed; 20]; 3],
        params: SwarmbakParams {
            format: 1,
            k: 2,
            m: 1,
            stripes: 1,
            payload_length: 1000,
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

/// A tracker serving HTTP on 127.0.0.1 and UDP on `udp_at`, stopped on drop of `stop`.
struct Running {
    http: SocketAddr,
    udp: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(dir: &Path, udp_at: &str, tweak: impl FnOnce(&mut TrackerConfig)) -> Running {
        let mut cfg = TrackerConfig::new(dir);
        cfg.reload_every = Duration::from_millis(100);
        tweak(&mut cfg);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = listener.local_addr().unwrap();
        let sock = UdpSocket::bind(udp_at).await.unwrap();
        let udp = sock.local_addr().unwrap();
        let tracker = Tracker::open(cfg).unwrap().with_udp(sock);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tracker
                .serve_until(listener, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Running {
            http,
            udp,
            stop: Some(tx),
            task,
        }
    }

    fn client(&self) -> TrackerClient {
        TrackerClient::new(&format!("http://{}", self.http)).unwrap()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the tracker stops")
            .unwrap();
    }
}

/// A UDP tracker client, by hand.
struct Udp {
    sock: UdpSocket,
    tracker: SocketAddr,
    conn: u64,
    tx: u32,
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Announce {
        interval: u32,
        leechers: u32,
        seeders: u32,
        peers: Vec<SocketAddr>,
    },
    Scrape(Vec<(u32, u32, u32)>),
    Error(String),
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes(b[i..i + 4].try_into().unwrap())
}

fn url_data(path: &str) -> Vec<u8> {
    let mut o = Vec::new();
    // Several options when the path is longer than one option holds (BEP 41).
    for chunk in path.as_bytes().chunks(255) {
        o.push(2);
        o.push(chunk.len() as u8);
        o.extend_from_slice(chunk);
    }
    o
}

impl Udp {
    async fn new(tracker: SocketAddr) -> Udp {
        let local = if tracker.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        let sock = UdpSocket::bind(local).await.unwrap();
        let mut u = Udp {
            sock,
            tracker,
            conn: 0,
            tx: 100,
        };
        u.connect().await;
        u
    }

    /// Sends `p` and waits for the answer (`None` after 400 ms of silence).
    async fn exchange(&mut self, p: &[u8]) -> Option<Vec<u8>> {
        self.sock.send_to(p, self.tracker).await.unwrap();
        let mut buf = vec![0u8; 8192];
        match tokio::time::timeout(Duration::from_millis(400), self.sock.recv_from(&mut buf)).await
        {
            Ok(Ok((n, from))) => {
                assert_eq!(from, self.tracker);
                buf.truncate(n);
                Some(buf)
            }
            Ok(Err(e)) => panic!("recv: {e}"),
            Err(_) => None,
        }
    }

    async fn connect(&mut self) {
        self.tx += 1;
        let mut p = PROTOCOL_ID.to_be_bytes().to_vec();
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&self.tx.to_be_bytes());
        let r = self.exchange(&p).await.expect("a connect reply");
        assert_eq!(r.len(), 16);
        assert_eq!((u32_at(&r, 0), u32_at(&r, 4)), (0, self.tx));
        self.conn = u64::from_be_bytes(r[8..16].try_into().unwrap());
    }

    fn head(&mut self, action: u32) -> Vec<u8> {
        self.tx += 1;
        let mut p = self.conn.to_be_bytes().to_vec();
        p.extend_from_slice(&action.to_be_bytes());
        p.extend_from_slice(&self.tx.to_be_bytes());
        p
    }

    fn announce_packet(
        &mut self,
        ih: &InfoHash,
        peer: u8,
        port: u16,
        left: u64,
        event: u32,
        path: Option<&str>,
    ) -> Vec<u8> {
        let mut p = self.head(1);
        p.extend_from_slice(ih.as_ref());
        p.extend_from_slice(&[peer; 20]);
        p.extend_from_slice(&0u64.to_be_bytes());
        p.extend_from_slice(&left.to_be_bytes());
        p.extend_from_slice(&0u64.to_be_bytes());
        p.extend_from_slice(&event.to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&0x1234u32.to_be_bytes());
        p.extend_from_slice(&(-1i32).to_be_bytes());
        p.extend_from_slice(&port.to_be_bytes());
        if let Some(path) = path {
            p.extend(url_data(path));
        }
        p
    }

    fn parse(&self, r: &[u8]) -> Reply {
        assert!(r.len() >= 8, "short reply {r:?}");
        assert_eq!(u32_at(r, 4), self.tx, "transaction id echoed");
        match u32_at(r, 0) {
            1 => {
                let width = if self.tracker.is_ipv6() { 18 } else { 6 };
                assert_eq!((r.len() - 20) % width, 0, "whole peers: {r:?}");
                let peers = r[20..]
                    .chunks(width)
                    .map(|c| {
                        let port = u16::from_be_bytes([c[width - 2], c[width - 1]]);
                        let ip: std::net::IpAddr = if width == 6 {
                            <[u8; 4]>::try_from(&c[..4]).unwrap().into()
                        } else {
                            <[u8; 16]>::try_from(&c[..16]).unwrap().into()
                        };
                        SocketAddr::new(ip, port)
                    })
                    .collect();
                Reply::Announce {
                    interval: u32_at(r, 8),
                    leechers: u32_at(r, 12),
                    seeders: u32_at(r, 16),
                    peers,
                }
            }
            2 => Reply::Scrape(
                r[8..]
                    .chunks(12)
                    .map(|c| (u32_at(c, 0), u32_at(c, 4), u32_at(c, 8)))
                    .collect(),
            ),
            3 => Reply::Error(String::from_utf8(r[8..].to_vec()).unwrap()),
            a => panic!("unknown action {a} in {r:?}"),
        }
    }

    async fn announce(
        &mut self,
        ih: &InfoHash,
        peer: u8,
        port: u16,
        left: u64,
        event: u32,
        path: Option<&str>,
    ) -> Reply {
        let p = self.announce_packet(ih, peer, port, left, event, path);
        let r = self.exchange(&p).await.expect("an announce reply");
        self.parse(&r)
    }

    async fn scrape(&mut self, hashes: &[InfoHash], path: Option<&str>) -> Reply {
        let mut p = self.head(2);
        for h in hashes {
            p.extend_from_slice(h.as_ref());
        }
        if let Some(path) = path {
            p.extend(url_data(path));
        }
        let r = self.exchange(&p).await.expect("a scrape reply");
        self.parse(&r)
    }
}

fn error(s: &str) -> Reply {
    Reply::Error(s.to_owned())
}

#[tokio::test]
async fn open_tracker_connect_announce_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let t = Running::start(dir.path(), "127.0.0.1:0", |c| c.open = true).await;
    let tr = torrent(1);
    let ih = ih_of(&tr);
    let mut a = Udp::new(t.udp).await;
    // Not published yet: the HTTP tracker's failure text.
    assert_eq!(
        a.announce(&ih, 1, 6001, 100, 2, None).await,
        error(UNKNOWN_TORRENT)
    );
    t.client()
        .publish(&tr, "age1machinekey", "laptop")
        .await
        .unwrap();
    // A leecher, then a seeder on another socket: each sees the other (never itself).
    let r = a.announce(&ih, 1, 6001, 100, 2, None).await;
    assert_eq!(
        r,
        Reply::Announce {
            interval: 60,
            leechers: 1,
            seeders: 0,
            peers: vec![]
        }
    );
    let mut b = Udp::new(t.udp).await;
    let r = b.announce(&ih, 2, 6002, 0, 2, None).await;
    assert_eq!(
        r,
        Reply::Announce {
            interval: 60,
            leechers: 1,
            seeders: 1,
            peers: vec!["127.0.0.1:6001".parse().unwrap()]
        }
    );
    // The HTTP tracker shares the swarm.
    let http = t
        .client()
        .announce(&AnnounceRequest::new(ih, PeerId([3; 20]), 6003, 5))
        .await
        .unwrap();
    let mut seen: Vec<SocketAddr> = http.peers.iter().map(|p| p.addr).collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            "127.0.0.1:6001".parse().unwrap(),
            "127.0.0.1:6002".parse().unwrap()
        ]
    );
    // Scrape: in request order, an unknown info-hash counts zero.
    let other = InfoHash([9; 20]);
    assert_eq!(
        a.scrape(&[other, ih], None).await,
        Reply::Scrape(vec![(0, 0, 0), (1, 0, 2)])
    );
    // `completed` (event 1) counts a download; `stopped` (3) removes the entry.
    let r = a.announce(&ih, 1, 6001, 0, 1, None).await;
    assert!(matches!(r, Reply::Announce { seeders: 2, .. }), "{r:?}");
    let r = b.announce(&ih, 2, 6002, 0, 3, None).await;
    assert!(
        matches!(r, Reply::Announce { ref peers, .. } if peers.is_empty()),
        "{r:?}"
    );
    assert_eq!(a.scrape(&[ih], None).await, Reply::Scrape(vec![(1, 1, 1)]));
    // Hostile: another socket's connection id, garbage and a huge numwant.
    let forged = b.conn;
    b.conn = a.conn;
    let p = b.announce_packet(&ih, 2, 6002, 0, 2, None);
    assert_eq!(
        b.exchange(&p).await,
        None,
        "a connection id of another address"
    );
    b.conn = forged;
    assert_eq!(b.exchange(&[0xFF; 7]).await, None);
    let mut p = b.announce_packet(&ih, 2, 6002, 0, 2, None);
    p[92..96].copy_from_slice(&i32::MAX.to_be_bytes());
    let r = b.exchange(&p).await.unwrap();
    assert!(matches!(b.parse(&r), Reply::Announce { .. }));
    let p = b.announce_packet(&ih, 2, 6002, 0, 9, Some("/announce"));
    let r = b.exchange(&p).await.unwrap();
    assert_eq!(b.parse(&r), error("invalid event"));
    let mut p = b.announce_packet(&ih, 2, 6002, 0, 0, None);
    p.extend_from_slice(&[2, 200, b'/']);
    let r = b.exchange(&p).await.unwrap();
    assert!(matches!(b.parse(&r), Reply::Error(ref e) if e.contains("BEP 41")));
    // Still serving.
    assert!(matches!(
        a.scrape(&[ih], None).await,
        Reply::Scrape(ref v) if v.len() == 1
    ));
    t.stop().await;
}

#[tokio::test]
async fn ipv6_replies_carry_18_byte_peers() {
    let dir = tempfile::tempdir().unwrap();
    let t = Running::start(dir.path(), "[::1]:0", |c| c.open = true).await;
    let tr = torrent(2);
    let ih = ih_of(&tr);
    t.client()
        .publish(&tr, "age1machinekey", "laptop")
        .await
        .unwrap();
    let mut a = Udp::new(t.udp).await;
    let mut b = Udp::new(t.udp).await;
    a.announce(&ih, 1, 7001, 100, 2, None).await;
    let r = b.announce(&ih, 2, 7002, 100, 2, None).await;
    assert_eq!(
        r,
        Reply::Announce {
            interval: 60,
            leechers: 2,
            seeders: 0,
            peers: vec!["[::1]:7001".parse().unwrap()]
        }
    );
    t.stop().await;
}

/// A private tracker's data directory with an enrolled machine (its signing key and
/// certificate) and two standard clients (their passkeys); the machine's name.
struct Org1 {
    key: SigningKey,
    certificate: Vec<u8>,
    clients: [String; 2],
}

fn enrol(dir: &Path) -> Org1 {
    let org = Org::open(dir).unwrap();
    let (mut db, _) = Sqlite::open(dir).unwrap();
    db.set_setting(admin::RECOVERY_SETTING, "age1recovery")
        .unwrap();
    let url = Some("http://127.0.0.1:1");
    let now = 1_700_000_000i64.max(unix_now());
    let token = admin::create_token(
        &mut db,
        &org,
        url,
        &EnrollOptions {
            name: "laptop-7".into(),
            user: None,
            vip: false,
            domain: None,
            cert_days: None,
        },
        &admin::Actor::cli(),
        now,
    )
    .unwrap();
    let token = EnrollToken::parse(&token).unwrap();
    let key = SigningKey::generate();
    let request = token.request(&key, "age1laptop");
    let enrolled = admin::redeem(&mut db, &org, &request, now).unwrap();
    let c1 = admin::create_client(&mut db, url, "lt-1", &admin::Actor::cli(), now)
        .unwrap()
        .0;
    let c2 = admin::create_client(&mut db, url, "lt-2", &admin::Actor::cli(), now)
        .unwrap()
        .0;
    Org1 {
        key,
        certificate: enrolled.certificate,
        clients: [c1.passkey, c2.passkey],
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn private_tracker_takes_passkeys_as_bep41_url_data() {
    let dir = tempfile::tempdir().unwrap();
    let o = enrol(dir.path());
    let t = Running::start(dir.path(), "127.0.0.1:0", |c| c.open = false).await;
    let tr = torrent(3);
    let ih = ih_of(&tr);
    let record = PublishRecord {
        infohash: ih.0,
        machine: o.key.public(),
        copies: 2,
        published: unix_now(),
    }
    .sign(&o.key);
    t.client()
        .publish_signed(&tr, &record, &o.certificate)
        .await
        .unwrap();
    let [pk1, pk2] = &o.clients;
    let mut a = Udp::new(t.udp).await;
    // No passkey, a path without one, an unknown one: the HTTP tracker's texts.
    assert_eq!(
        a.announce(&ih, 1, 6001, 9, 2, None).await,
        error(NO_PASSKEY)
    );
    assert_eq!(
        a.announce(&ih, 1, 6001, 9, 2, Some("/announce")).await,
        error(NO_PASSKEY)
    );
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        a.announce(&ih, 1, 6001, 9, 2, Some(&format!("/{unknown}/announce")))
            .await,
        error(UNKNOWN_PASSKEY)
    );
    assert_eq!(
        a.scrape(&[ih], Some(&format!("/{unknown}/scrape"))).await,
        error(UNKNOWN_PASSKEY)
    );
    assert_eq!(a.scrape(&[ih], None).await, error(NO_PASSKEY));
    // A valid passkey, `/<passkey>/announce`.
    let r = a
        .announce(&ih, 1, 6001, 9, 2, Some(&format!("/{pk1}/announce")))
        .await;
    assert!(matches!(r, Reply::Announce { leechers: 1, .. }), "{r:?}");
    // The other client, `/announce/<passkey>`, is told about the first.
    let mut b = Udp::new(t.udp).await;
    let r = b
        .announce(&ih, 2, 6002, 0, 2, Some(&format!("/announce/{pk2}")))
        .await;
    assert_eq!(
        r,
        Reply::Announce {
            interval: 60,
            leechers: 1,
            seeders: 1,
            peers: vec!["127.0.0.1:6001".parse().unwrap()]
        }
    );
    // Scrape with the passkey after the info-hashes, both path forms.
    assert_eq!(
        a.scrape(&[ih, InfoHash([8; 20])], Some(&format!("/{pk1}/scrape")))
            .await,
        Reply::Scrape(vec![(1, 0, 1), (0, 0, 0)])
    );
    assert_eq!(
        b.scrape(&[ih], Some(&format!("/announce/{pk2}"))).await,
        Reply::Scrape(vec![(1, 0, 1)])
    );
    // The HTTP tracker sees the UDP peers (another machine's passkey).
    let http = t.client().with_passkey(pk2).scrape(&[ih]).await.unwrap();
    let s = http.get(&ih).expect("scraped");
    assert_eq!((s.complete, s.incomplete), (1, 1));
    // And an HTTP announce (the second client's passkey, another peer) is told about
    // both UDP peers, the UDP entries left in place.
    let http = t
        .client()
        .with_passkey(pk2)
        .announce(&AnnounceRequest::new(ih, PeerId([4; 20]), 6004, 5))
        .await
        .unwrap();
    let mut seen: Vec<SocketAddr> = http.peers.iter().map(|p| p.addr).collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            "127.0.0.1:6001".parse().unwrap(),
            "127.0.0.1:6002".parse().unwrap()
        ]
    );
    assert_eq!(
        a.scrape(&[ih], Some(&format!("/{pk1}/scrape"))).await,
        Reply::Scrape(vec![(1, 0, 2)])
    );
    let r = t
        .client()
        .with_passkey(pk2)
        .announce(&{
            let mut r = AnnounceRequest::new(ih, PeerId([4; 20]), 6004, 5);
            r.event = Some(swarmbak_tracker::AnnounceEvent::Stopped);
            r
        })
        .await
        .unwrap();
    assert!(r.peers.is_empty());
    // Entries are owned by the passkey's machine: the second client cannot stop the
    // first one's entry by sending its peer id.
    let r = b
        .announce(&ih, 1, 6001, 9, 3, Some(&format!("/{pk2}/announce")))
        .await;
    assert!(matches!(r, Reply::Announce { .. }), "{r:?}");
    assert_eq!(
        a.scrape(&[ih], Some(&format!("/{pk1}/scrape"))).await,
        Reply::Scrape(vec![(1, 0, 1)])
    );
    // Revoked: refused from the next request on (the tracker notices the database).
    {
        let org = Org::open(dir.path()).unwrap();
        let (mut db, _) = Sqlite::open(dir.path()).unwrap();
        admin::revoke(&mut db, &org, pk1, &admin::Actor::cli(), unix_now()).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = a
            .announce(&ih, 1, 6001, 9, 0, Some(&format!("/{pk1}/announce")))
            .await;
        if r == error(REVOKED_PASSKEY) {
            break;
        }
        assert!(Instant::now() < deadline, "still answered: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.stop().await;
}

/// Golden: the constants tracker.md §9.1 quotes are the code's.
#[test]
fn spec_constants_are_the_codes() {
    use swarmbak_tracker::udp::*;
    let spec = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../protocol-spec/tracker.md"),
    )
    .unwrap();
    assert_eq!(PROTOCOL_ID, 0x41727101980, "BEP 15's magic");
    let rows = [
        format!("| protocol id (connect) | `{PROTOCOL_ID:#x}` |"),
        format!(
            "| actions | connect `{ACTION_CONNECT}`, announce `{ACTION_ANNOUNCE}`, scrape `{ACTION_SCRAPE}`, error `{ACTION_ERROR}` |"
        ),
        format!(
            "| BEP 41 options | EndOfOptions `{OPTION_END}`, NOP `{OPTION_NOP}`, URLData `{OPTION_URL_DATA}` |"
        ),
        format!("| announce request without options | {ANNOUNCE_LEN} bytes |"),
        format!("| largest datagram read | {MAX_PACKET} bytes |"),
        format!(
            "| connection-id window | {} s |",
            CONNECTION_WINDOW.as_secs()
        ),
        "| announce events | none `0`, completed `1`, started `2`, stopped `3` |".into(),
        format!("| UDP datagram (§9) | {MAX_PACKET} bytes (longer: dropped) |"),
        format!("`malformed announce (<n> bytes, at least {ANNOUNCE_LEN})`"),
    ];
    for r in &rows {
        assert!(spec.contains(r.as_str()), "tracker.md §9 lacks {r:?}");
    }
    // The event codes as the parser reads them.
    let ev = |code: u32| {
        let mut p = vec![0u8; ANNOUNCE_LEN];
        p[80..84].copy_from_slice(&code.to_be_bytes());
        p[96..98].copy_from_slice(&1u16.to_be_bytes());
        parse_announce(&p).map(|(r, _)| r.event)
    };
    use swarmbak_tracker::AnnounceEvent::*;
    assert_eq!(ev(0), Ok(None));
    assert_eq!(ev(1), Ok(Some(Completed)));
    assert_eq!(ev(2), Ok(Some(Started)));
    assert_eq!(ev(3), Ok(Some(Stopped)));
}
