//! Golden tests: the examples of `protocol-spec/tracker.md` (the bencoded announce,
//! failure and scrape replies, the failure reasons, the JSON replies, the limits) checked
//! against a real tracker on 127.0.0.1, byte for byte where the spec gives the bytes.
//!
//! The spec's text is copied into the constants below and the expected replies are
//! rendered from it; `every_quote_appears_verbatim_in_the_spec` checks that each constant
//! still appears in tracker.md (whitespace runs compared as one space).
//!
//! Not pinned: `published`, `last_published` and `uptime_seconds` are clock readings,
//! info-hashes and machine keys are elided (`…`) in the spec; the "request head" limit
//! (hyper's buffer, a 20 s read timeout) is not observable without waiting 20 s.

use std::time::Duration;

use swarmbak_metainfo::{build_swarmbak_torrent, Metainfo, SwarmbakParams, SwarmbakTorrent};
use swarmbak_tracker::{TrackerConfig, MAX_REPLY_BYTES, UNKNOWN_TORRENT};
mod common;

use common::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------
// Quotes from protocol-spec/tracker.md
// ---------------------------------------------------------------------------------------

/// §1, a successful announce.
const S1_SUCCESS: &str = r#"d 8:complete i<seeders>e 10:downloaded i<completed events>e 10:incomplete i<leechers>e
  8:interval i<seconds>e 12:min interval i<seconds>e
  5:peers <6 bytes per IPv4 peer: address, port, big-endian>      (compact=1)
     or  l d 2:ip <text> 7:peer id <20 bytes> 4:port i<port>e e … e  (otherwise)
  6:peers6 <18 bytes per IPv6 peer>                               (compact=1, only if any)
e"#;
const S1_INTERVALS: &str = "`interval` is 60 s by default (configurable), `min interval` 30 s.";

/// §1, a failure, and the failure reasons.
const S1_FAILURE: &str =
    "Failure: `d14:failure reason<len>:<message>e`, HTTP 200, as clients expect:";
const S1_REASONS: &str = r#"| the info-hash was never published here | `unknown torrent: not published to this tracker` |
| missing or malformed parameter | e.g. `missing info_hash`, `invalid info_hash (3 bytes, not 20)`, `invalid port 0`, `invalid left`, `invalid event`, `malformed percent-encoding in the query string` |
| request target over 8 KiB | `request URL too long` |
| not GET/HEAD | `announce takes GET` |"#;

/// §2, a scrape.
const S2_SCRAPE: &str = r#"d 5:files d <20-byte info-hash> d 8:complete i…e 10:downloaded i…e 10:incomplete i…e
                                  4:name <torrent name> e … e e"#;

/// §3, the JSON replies.
const S3_PUBLISH_NEW: &str =
    r#"201 `{"infohash": "<40 hex>", "new": true, "published": <unix seconds>}` — stored."#;
const S3_PUBLISH_AGAIN: &str =
    r#"200 the same with `"new": false` — already published by the same machine key"#;
const S3_PUBLISH_CONFLICT: &str = "409 — already published by a different machine key.";
const S3_ERRORS: &str = r#"Errors are JSON `{"error": "<message>"}` with an HTTP status"#;
const S3_SNAPSHOTS: &str = r#"[{"infohash": "…40 hex…", "machine_key": "age1…", "machine_name": "alpha laptop",
  "published": 1763900000, "total_length": 49152, "payload_length": 1007,
  "name": "swarmbak-0123456789abcdef.shards", "copies": 0}]"#;
const S3_MACHINES: &str = r#"[{"machine_key": "age1…", "machine_name": "alpha laptop", "snapshots": 2,
  "last_published": 1763900000, "payload_bytes": 2013, "online": true}]"#;
const S3_HEALTH: &str = r#"{"status": "ok", "service": "swarmbak-tracker", "version": "0.1.0", "private": false,
 "torrents": 3, "machines": 2, "peers": 5, "uptime_seconds": 42}"#;

/// §6.
const S6_LIMITS: &str = r#"| request target (path and query) | 8 KiB (longer: `failure reason` on announce/scrape, 414 elsewhere) |
| request head | target limit + 8 KiB (hyper's buffer), read within 20 s |
| publish body | 16 MiB (413); a publish must declare its `Content-Length` (411) |
| request body arrival | 30 s (408) |
| publishes being received at once | 16, and 64 MiB of declared bodies together: beyond, 503 at once, before any body byte is read |
| pieces per published snapshot | 2^20 (413) |
| `numwant` | 50 default, 200 at most |
| info-hashes per scrape | 256 |
| simultaneous connections | 4096 (more wait to be accepted) |
| client reply size | 64 MiB |"#;

const ALL_QUOTES: &[&str] = &[
    S1_SUCCESS,
    S1_INTERVALS,
    S1_FAILURE,
    S1_REASONS,
    S2_SCRAPE,
    S3_PUBLISH_NEW,
    S3_PUBLISH_AGAIN,
    S3_PUBLISH_CONFLICT,
    S3_ERRORS,
    S3_SNAPSHOTS,
    S3_MACHINES,
    S3_HEALTH,
    S6_LIMITS,
];

#[test]
fn every_quote_appears_verbatim_in_the_spec() {
    swarmbak_core::spec::assert_quoted("tracker.md", ALL_QUOTES);
}

// ---------------------------------------------------------------------------------------
// Rendering the spec's bencode templates
// ---------------------------------------------------------------------------------------

/// Renders one of the spec's bencode templates: whitespace between tokens is dropped,
/// `(…)` annotations are skipped, `N:text` is a string of N bytes (spaces included), and
/// each placeholder (`<…>` or a bare `…`) is replaced by the next of `values`, in order.
fn render(template: &str, values: &[&[u8]]) -> Vec<u8> {
    let c: Vec<char> = template.chars().collect();
    let mut values = values.iter();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            w if w.is_whitespace() => i += 1,
            '(' => {
                while c[i] != ')' {
                    i += 1;
                }
                i += 1;
            }
            '<' => {
                while c[i] != '>' {
                    i += 1;
                }
                i += 1;
                out.extend_from_slice(values.next().expect("a value for each placeholder"));
            }
            '…' => {
                i += 1;
                out.extend_from_slice(values.next().expect("a value for each placeholder"));
            }
            d if d.is_ascii_digit() => {
                let start = i;
                while c[i].is_ascii_digit() {
                    i += 1;
                }
                let n: usize = c[start..i].iter().collect::<String>().parse().unwrap();
                assert_eq!(c[i], ':');
                let s: String = c[i + 1..i + 1 + n].iter().collect();
                out.extend_from_slice(format!("{n}:{s}").as_bytes());
                i += 1 + n;
            }
            ch @ ('d' | 'l' | 'i' | 'e' | ':') => {
                out.push(ch as u8);
                i += 1;
            }
            ch => panic!("unexpected {ch:?} in the template"),
        }
    }
    assert!(values.next().is_none(), "more values than placeholders");
    out
}

fn str_value(b: &[u8]) -> Vec<u8> {
    let mut v = format!("{}:", b.len()).into_bytes();
    v.extend_from_slice(b);
    v
}

#[test]
fn the_renderer_reads_the_templates_as_written() {
    let f = S1_FAILURE.split('`').nth(1).unwrap();
    assert_eq!(render(f, &[b"2", b"no"]), b"d14:failure reason2:noe");
}

// ---------------------------------------------------------------------------------------
// A tracker on 127.0.0.1
// ---------------------------------------------------------------------------------------

/// Raw HTTP against the test tracker (`common::Server`), as the spec's examples show it.
impl Server {
    /// One HTTP/1.1 request; the reply's status and body.
    async fn request(&self, method: &str, target: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("a reply")
            .unwrap();
        let status = std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap();
        let i = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("header end");
        (status, out[i + 4..].to_vec())
    }

    async fn get(&self, target: &str) -> (u16, Vec<u8>) {
        self.request("GET", target, b"").await
    }

    async fn json(&self, target: &str) -> serde_json::Value {
        let (status, body) = self.get(target).await;
        assert_eq!(status, 200);
        serde_json::from_slice(&body).unwrap()
    }

    async fn publish(&self, t: &[u8], machine: &str, name: &str) -> (u16, serde_json::Value) {
        let target = format!(
            "/publish?machine={}&name={}",
            swarmbak_tracker::query::percent_encode(machine.as_bytes()),
            swarmbak_tracker::query::percent_encode(name.as_bytes())
        );
        let (status, body) = self.request("POST", &target, t).await;
        (status, serde_json::from_slice(&body).unwrap())
    }
}

fn torrent(name: &str, payload_length: u64) -> Vec<u8> {
    build_swarmbak_torrent(&SwarmbakTorrent {
        announce: None,
        creation_date: 1_700_000_000,
        name: name.to_owned(),
        piece_length: 16384,
        piece_hashes: vec![[payload_length as u8; 20]; 3],
        params: SwarmbakParams {
            format: 1,
            k: 2,
            m: 1,
            stripes: 1,
            payload_length,
            manifest_offset: 0,
            manifest_length: payload_length,
            id: [payload_length as u8; 16],
            roots: None,
        },
    })
    .unwrap()
}

fn enc(b: &[u8]) -> String {
    swarmbak_tracker::query::percent_encode(b)
}

fn announce_target(ih: &[u8; 20], peer_id: &[u8; 20], port: u16, extra: &str) -> String {
    format!(
        "/announce?info_hash={}&peer_id={}&port={port}{extra}",
        enc(ih),
        enc(peer_id)
    )
}

// ---------------------------------------------------------------------------------------
// §1, §2: the bencoded replies
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn s1_s2_announce_failure_and_scrape_replies() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let name = "swarmbak-0123456789abcdef.shards";
    let t = torrent(name, 1007);
    let ih = Metainfo::from_bytes(&t).unwrap().info_hash();
    let (status, _) = server.publish(&t, "age1alpha", "alpha laptop").await;
    assert_eq!(status, 201);

    // A seeder on port 7002, then a leecher on port 7001 (`left` missing: incomplete).
    let (seed_id, leech_id) = (*b"-SB0100-seeder000002", *b"-SB0100-leecher00001");
    let (_, first) = server
        .get(&announce_target(&ih, &seed_id, 7002, "&left=0&compact=1"))
        .await;
    let lines: Vec<&str> = S1_SUCCESS.lines().collect();
    let head = format!("{}{}", lines[0], lines[1]);
    // "`interval` is 60 s by default (configurable), `min interval` 30 s."
    let seconds_after = |key: &str| -> u64 {
        let rest = &S1_INTERVALS[S1_INTERVALS.find(key).unwrap() + key.len()..];
        rest.split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap()
    };
    let (interval, min_interval) = (seconds_after("`interval`"), seconds_after("`min interval`"));
    assert_eq!((interval, min_interval), (60, 30));
    let (iv, miv) = (interval.to_string(), min_interval.to_string());
    // Alone in the swarm: no peers (an empty compact string).
    let compact = format!("{head}{}e", lines[2]);
    assert_eq!(
        String::from_utf8_lossy(&first),
        String::from_utf8_lossy(&render(
            &compact,
            &[b"1", b"0", b"0", iv.as_bytes(), miv.as_bytes(), b"0:"]
        ))
    );

    let (status, reply) = server
        .get(&announce_target(&ih, &leech_id, 7001, "&compact=1"))
        .await;
    assert_eq!(status, 200);
    let peer = str_value(&[127, 0, 0, 1, (7002u16 >> 8) as u8, 7002u16 as u8]);
    assert_eq!(
        String::from_utf8_lossy(&reply),
        String::from_utf8_lossy(&render(
            &compact,
            &[b"1", b"0", b"1", iv.as_bytes(), miv.as_bytes(), &peer]
        ))
    );

    // The dictionary peer list (compact absent).
    let (_, reply) = server.get(&announce_target(&ih, &leech_id, 7001, "")).await;
    let dict_list = format!(
        "{head}5:peers {}e",
        lines[3].trim_start().trim_start_matches("or")
    );
    assert_eq!(
        String::from_utf8_lossy(&reply),
        String::from_utf8_lossy(&render(
            &dict_list,
            &[
                b"1",
                b"0",
                b"1",
                iv.as_bytes(),
                miv.as_bytes(),
                &str_value(b"127.0.0.1"),
                &str_value(&seed_id),
                b"7002",
                b""
            ]
        ))
    );

    // `event=completed` from the leecher counts one download; it is a seeder now.
    let (_, reply) = server
        .get(&announce_target(
            &ih,
            &leech_id,
            7001,
            "&left=0&event=completed&compact=1",
        ))
        .await;
    assert_eq!(
        String::from_utf8_lossy(&reply),
        String::from_utf8_lossy(&render(
            &compact,
            &[b"2", b"1", b"0", iv.as_bytes(), miv.as_bytes(), &peer]
        ))
    );

    // §2: the scrape.
    let (status, reply) = server.get(&format!("/scrape?info_hash={}", enc(&ih))).await;
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8_lossy(&reply),
        String::from_utf8_lossy(&render(
            S2_SCRAPE,
            &[
                &str_value(&ih),
                b"2",
                b"1",
                b"0",
                &str_value(name.as_bytes()),
                b""
            ]
        ))
    );
    // Unknown info-hashes are omitted, not a failure.
    let (_, reply) = server
        .get(&format!("/scrape?info_hash={}", enc(&[7; 20])))
        .await;
    assert_eq!(reply, b"d5:filesdee");

    // §1: the failures, each reason exactly as the table writes it.
    let failure = S1_FAILURE.split('`').nth(1).unwrap();
    let reasons: Vec<&str> = S1_REASONS
        .lines()
        .flat_map(|l| l.split('|').nth(2).unwrap().split('`').skip(1).step_by(2))
        .collect();
    assert_eq!(reasons.len(), 9);
    assert_eq!(reasons[0], UNKNOWN_TORRENT);
    let pid = enc(&seed_id);
    let long = format!(
        "/announce?info_hash={}&peer_id={pid}&port=1&x={}",
        enc(&ih),
        "a".repeat(8 * 1024)
    );
    let cases: Vec<(&str, String)> = vec![
        ("GET", announce_target(&[9; 20], &seed_id, 1, "")),
        ("GET", format!("/announce?peer_id={pid}&port=1")),
        (
            "GET",
            format!("/announce?info_hash=abc&peer_id={pid}&port=1"),
        ),
        ("GET", announce_target(&ih, &seed_id, 0, "")),
        ("GET", announce_target(&ih, &seed_id, 1, "&left=x")),
        ("GET", announce_target(&ih, &seed_id, 1, "&event=bogus")),
        (
            "GET",
            format!("/announce?info_hash=%zz&peer_id={pid}&port=1"),
        ),
        ("GET", long),
        ("POST", announce_target(&ih, &seed_id, 1, "")),
    ];
    for ((method, target), reason) in cases.iter().zip(&reasons) {
        let (status, reply) = server.request(method, target, b"").await;
        assert_eq!(status, 200, "{reason}");
        let len = reason.len().to_string();
        assert_eq!(
            String::from_utf8_lossy(&reply),
            String::from_utf8_lossy(&render(failure, &[len.as_bytes(), reason.as_bytes()])),
            "{method} {}",
            &target[..target.len().min(80)]
        );
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// §3: the JSON replies
// ---------------------------------------------------------------------------------------

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test]
async fn s3_json_replies() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |_| {}).await;
    let snapshots_example: serde_json::Value = serde_json::from_str(S3_SNAPSHOTS).unwrap();
    let machines_example: serde_json::Value = serde_json::from_str(S3_MACHINES).unwrap();
    let health_example: serde_json::Value = serde_json::from_str(S3_HEALTH).unwrap();
    let s = &snapshots_example[0];
    let mx = &machines_example[0];
    let alpha = s["machine_name"].as_str().unwrap();
    assert_eq!(mx["machine_name"], s["machine_name"]);

    // The machines example: alpha laptop with two snapshots whose payloads sum to
    // `payload_bytes`; the snapshots example is the later of them.
    let later = s["payload_length"].as_u64().unwrap();
    let earlier = mx["payload_bytes"].as_u64().unwrap() - later;
    assert_eq!(mx["snapshots"], 2);
    let t1 = torrent("swarmbak-fedcba9876543210.shards", earlier);
    let t2 = torrent(s["name"].as_str().unwrap(), later);
    let t3 = torrent("swarmbak-0000000000000000.shards", 1);

    // §3 publish: 201 new, 200 again, 409 for another machine, errors as {"error": …}.
    let new_example: serde_json::Value = serde_json::from_str(
        &S3_PUBLISH_NEW
            .split('`')
            .nth(1)
            .unwrap()
            .replace("<40 hex>", "x")
            .replace("<unix seconds>", "0"),
    )
    .unwrap();
    let (status, reply) = server.publish(&t1, "age1alpha", alpha).await;
    assert_eq!(
        status,
        S3_PUBLISH_NEW[..3].parse::<u16>().unwrap(),
        "{reply}"
    );
    assert_eq!(keys(&reply), keys(&new_example));
    assert_eq!(reply["new"], true);
    let ih1 = Metainfo::from_bytes(&t1).unwrap().info_hash_hex();
    assert_eq!(reply["infohash"], ih1.as_str());
    assert!(reply["published"].as_u64().unwrap() > 1_700_000_000);
    let (status, again) = server.publish(&t1, "age1alpha", alpha).await;
    assert_eq!(status, S3_PUBLISH_AGAIN[..3].parse::<u16>().unwrap());
    assert_eq!(again["new"], false);
    assert_eq!(
        (&again["infohash"], &again["published"]),
        (&reply["infohash"], &reply["published"])
    );
    let (status, conflict) = server.publish(&t1, "age1beta", "beta").await;
    assert_eq!(status, S3_PUBLISH_CONFLICT[..3].parse::<u16>().unwrap());
    assert_eq!(keys(&conflict), vec!["error".to_string()]);

    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(server.publish(&t2, "age1alpha", alpha).await.0, 201);
    assert_eq!(server.publish(&t3, "age1beta", "beta").await.0, 201);

    // GET /snapshots?machine=…: newest first, the example's keys and values.
    let list = server
        .json(&format!("/snapshots?machine={}", enc(alpha.as_bytes())))
        .await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(keys(&list[0]), keys(s));
    for k in ["machine_name", "total_length", "payload_length", "name"] {
        assert_eq!(list[0][k], s[k], "{k}");
    }
    assert_eq!(list[0]["machine_key"], "age1alpha");
    assert_eq!(list[1]["infohash"], ih1.as_str());

    // A peer announcing alpha's key makes it `online`; five peers in all.
    let ihs: Vec<[u8; 20]> = [&t1, &t2, &t3]
        .iter()
        .map(|t| Metainfo::from_bytes(t).unwrap().info_hash())
        .collect();
    let peers = health_example["peers"].as_u64().unwrap() as u8;
    for n in 0..peers {
        let mut id = *b"-SB0100-000000000000";
        id[19] = n;
        let extra = if n == 0 {
            format!("&machine={}", hex::encode("age1alpha"))
        } else {
            String::new()
        };
        let (_, r) = server
            .get(&announce_target(
                &ihs[n as usize % 3],
                &id,
                7100 + n as u16,
                &extra,
            ))
            .await;
        assert!(
            r.starts_with(b"d8:complete"),
            "{}",
            String::from_utf8_lossy(&r)
        );
    }

    // GET /machines: the example's keys and values, most recent publish first.
    let machines = server.json("/machines").await;
    let machines = machines.as_array().unwrap();
    assert_eq!(machines.len(), 2);
    let m = machines
        .iter()
        .find(|m| m["machine_key"] == "age1alpha")
        .unwrap();
    assert_eq!(keys(m), keys(mx));
    for k in ["machine_name", "snapshots", "payload_bytes", "online"] {
        assert_eq!(m[k], mx[k], "{k}");
    }
    // Most recent publish first (`last_published` is in seconds: a tie within a second is
    // broken by key).
    let last: Vec<u64> = machines
        .iter()
        .map(|m| m["last_published"].as_u64().unwrap())
        .collect();
    assert!(last[0] >= last[1], "{last:?}");

    // GET /health and GET /.
    for target in ["/health", "/"] {
        let h = server.json(target).await;
        assert_eq!(keys(&h), keys(&health_example));
        for k in [
            "status", "service", "version", "torrents", "machines", "peers",
        ] {
            assert_eq!(h[k], health_example[k], "{target} {k}");
        }
        assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    }

    // Errors: {"error": …}.
    let (status, body) = server.get("/metainfo/nothex").await;
    assert_eq!(status, 400);
    let e: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(S3_ERRORS.contains(r#"{"error": "<message>"}"#));
    assert_eq!(keys(&e), vec!["error".to_string()]);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// §6: limits
// ---------------------------------------------------------------------------------------

#[test]
fn s6_limits_are_the_defaults() {
    let row = |what: &str| -> String {
        S6_LIMITS
            .lines()
            .find(|l| l.starts_with(&format!("| {what}")))
            .unwrap_or_else(|| panic!("{what}"))
            .split('|')
            .nth(2)
            .unwrap()
            .trim()
            .to_string()
    };
    let c = TrackerConfig::new("/nonexistent");
    assert!(row("request target").starts_with("8 KiB"));
    assert_eq!(c.max_url_len, 8 << 10);
    assert!(row("publish body").starts_with("16 MiB (413)"));
    assert_eq!(c.max_publish_bytes, 16 << 20);
    assert_eq!(row("request body arrival"), "30 s (408)");
    assert_eq!(c.body_timeout, Duration::from_secs(30));
    assert!(row("publishes being received at once").starts_with("16, and 64 MiB"));
    assert_eq!(
        (c.max_publishes_at_once, c.max_publish_in_flight),
        (16, 64 << 20)
    );
    assert!(row("pieces per published snapshot").starts_with("2^20"));
    assert_eq!(c.max_pieces, 1 << 20);
    assert_eq!(row("`numwant`"), "50 default, 200 at most");
    assert_eq!((c.default_numwant, c.max_numwant), (50, 200));
    assert_eq!(row("info-hashes per scrape"), "256");
    assert_eq!(c.max_scrape_hashes, 256);
    assert!(row("simultaneous connections").starts_with("4096 "));
    assert_eq!(c.max_connections, 4096);
    assert_eq!(row("client reply size"), "64 MiB");
    assert_eq!(MAX_REPLY_BYTES, 64 << 20);
    // §1: intervals, and peers expire after twice `interval`.
    assert_eq!(
        (c.interval, c.min_interval, c.peer_timeout),
        (Duration::from_secs(60), Duration::from_secs(30), None)
    );
}
