//! The UDP tracker protocol (BEP 15) over the same state as the HTTP server, with the
//! passkey of a private tracker carried as BEP 41 URL data (`protocol-spec/tracker.md` §9).
//!
//! One datagram in, at most one out. Connection ids cannot be forged: each is a keyed
//! BLAKE3 hash of the client's address and port and a one-minute window, under a key made
//! when the socket starts serving; an id is good in the window it was made in and the
//! next (one to two minutes), as opentracker does. A packet with an unknown connection id,
//! a connect without the protocol id, or anything shorter than a header or longer than
//! [`MAX_PACKET`] is dropped without an answer (no reply goes to an address that did not
//! prove it receives ours). Other malformed requests are answered with an error (action
//! 3) carrying the same texts as the HTTP tracker's `failure reason`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::org::is_passkey;
use crate::proto::{AnnounceEvent, AnnounceRequest, InfoHash, PeerId};
use crate::server::{
    bt_route, check_passkey, intervals, peer_announce, scrape_files, Shared, UNKNOWN_TORRENT,
};

/// The magic connection id of a connect request (BEP 15).
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// Action of a connect request and reply.
pub const ACTION_CONNECT: u32 = 0;
/// Action of an announce request and reply.
pub const ACTION_ANNOUNCE: u32 = 1;
/// Action of a scrape request and reply.
pub const ACTION_SCRAPE: u32 = 2;
/// Action of an error reply.
pub const ACTION_ERROR: u32 = 3;
/// Largest datagram read; longer ones are dropped unanswered.
pub const MAX_PACKET: usize = 2048;
/// Length of an announce request without options.
pub const ANNOUNCE_LEN: usize = 98;
/// How long a connection-id window lasts; an id is accepted in its window and the next.
pub const CONNECTION_WINDOW: Duration = Duration::from_secs(60);
/// BEP 41 option types.
pub const OPTION_END: u8 = 0;
/// BEP 41: a one-byte option that does nothing.
pub const OPTION_NOP: u8 = 1;
/// BEP 41: URL data (the announce URL's path and query), concatenated over options.
pub const OPTION_URL_DATA: u8 = 2;

/// The first 16 bytes of every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The connection id ([`PROTOCOL_ID`] in a connect).
    pub connection_id: u64,
    /// What the packet asks.
    pub action: u32,
    /// The client's transaction id, echoed in the reply.
    pub transaction: u32,
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn array20(b: &[u8], at: usize) -> Option<[u8; 20]> {
    b.get(at..at + 20)?.try_into().ok()
}

/// The header of a request; `None` when the packet is shorter than 16 bytes.
pub fn header(p: &[u8]) -> Option<Header> {
    Some(Header {
        connection_id: be_u64(p, 0)?,
        action: be_u32(p, 8)?,
        transaction: be_u32(p, 12)?,
    })
}

/// Reads BEP 41 options: returns the concatenated URL data, if any. Parsing stops at the
/// end or at an EndOfOptions; NOP is one byte; every other option (URL data and the
/// unknown ones, which are skipped) has a length byte. An option running past the end is
/// an error.
pub fn parse_options(opts: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut url: Option<Vec<u8>> = None;
    let mut i = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            OPTION_END => break,
            OPTION_NOP => i += 1,
            _ => {
                let data = opts
                    .get(i + 1)
                    .and_then(|&len| opts.get(i + 2..i + 2 + usize::from(len)))
                    .ok_or("malformed BEP 41 options: an option runs past the packet")?;
                if kind == OPTION_URL_DATA {
                    url.get_or_insert_with(Vec::new).extend_from_slice(data);
                }
                i += 2 + data.len();
            }
        }
    }
    Ok(url)
}

/// The request path in BEP 41 URL data (the query string cut off).
fn url_path(url: Option<Vec<u8>>) -> Result<Option<String>, String> {
    let Some(url) = url else { return Ok(None) };
    let mut s = String::from_utf8(url).map_err(|_| "malformed URL data: not UTF-8")?;
    if let Some(q) = s.find('?') {
        s.truncate(q);
    }
    Ok(Some(s))
}

/// The passkey in a request path: `/<passkey>/announce`, `/announce/<passkey>` (and the
/// same with `scrape`, as for HTTP), or `/<passkey>` alone.
pub fn passkey_in(path: &str) -> Option<&str> {
    bt_route(path).and_then(|(_, pk)| pk).or_else(|| {
        let p = path.strip_prefix('/')?.trim_end_matches('/');
        is_passkey(p).then_some(p)
    })
}

/// Parses an announce request (BEP 15, 98 bytes, then BEP 41 options): the request as
/// the HTTP tracker would have parsed it, and the URL path. The failure texts are the
/// HTTP tracker's.
pub fn parse_announce(p: &[u8]) -> Result<(AnnounceRequest, Option<String>), String> {
    if p.len() < ANNOUNCE_LEN {
        return Err(format!(
            "malformed announce ({} bytes, at least {ANNOUNCE_LEN})",
            p.len()
        ));
    }
    let short = || "malformed announce".to_string();
    let info_hash = InfoHash(array20(p, 16).ok_or_else(short)?);
    let peer_id = PeerId(array20(p, 36).ok_or_else(short)?);
    let downloaded = be_u64(p, 56).ok_or_else(short)?;
    let left = be_u64(p, 64).ok_or_else(short)?;
    let uploaded = be_u64(p, 72).ok_or_else(short)?;
    let event = be_u32(p, 80).ok_or_else(short)?;
    let ip = be_u32(p, 84).ok_or_else(short)?;
    let key = be_u32(p, 88).ok_or_else(short)?;
    let numwant = be_u32(p, 92).ok_or_else(short)? as i32;
    let port = u16::from_be_bytes([p[96], p[97]]);
    if port == 0 {
        return Err("invalid port 0".into());
    }
    // BEP 15's integers are signed: a negative `left` means nothing sensible.
    if (left as i64) < 0 {
        return Err("invalid left".into());
    }
    let mut req = AnnounceRequest::new(info_hash, peer_id, port, left);
    req.downloaded = downloaded;
    req.uploaded = uploaded;
    req.event = match event {
        0 => None,
        1 => Some(AnnounceEvent::Completed),
        2 => Some(AnnounceEvent::Started),
        3 => Some(AnnounceEvent::Stopped),
        _ => return Err("invalid event".into()),
    };
    req.ip = (ip != 0).then(|| Ipv4Addr::from(ip).to_string());
    req.key = Some(key);
    // -1 (or any negative): the tracker's default. The server caps the rest.
    req.numwant = u32::try_from(numwant).ok();
    let path = url_path(parse_options(&p[ANNOUNCE_LEN..])?)?;
    Ok((req, path))
}

/// Parses a scrape request: at most `max` info-hashes (the rest are ignored) and the URL
/// path. BEP 41 defines options for announces only, and a scrape's length is its count of
/// info-hashes; swarmbak reads options after the info-hashes when they do not fill the
/// packet: the info-hashes are the longest run of whole 20-byte blocks after which the
/// rest parses as options (tracker.md §9.4).
pub fn parse_scrape(p: &[u8], max: usize) -> Result<(Vec<InfoHash>, Option<String>), String> {
    let body = p.get(16..).unwrap_or(&[]);
    let whole = body.len() / 20;
    let (n, url) = if body.len() % 20 == 0 {
        (whole, None)
    } else {
        (0..=whole)
            .rev()
            .find_map(|n| {
                parse_options(&body[n * 20..])
                    .ok()
                    .filter(|u| u.is_some())
                    .map(|u| (n, u))
            })
            .ok_or("malformed scrape: the info-hashes are not whole 20-byte blocks")?
    };
    if n == 0 {
        return Err("scrape without info_hash (a full scrape is HTTP only)".into());
    }
    let hashes = body
        .chunks_exact(20)
        .take(n.min(max))
        .filter_map(|c| c.try_into().ok().map(InfoHash))
        .collect();
    Ok((hashes, url_path(url)?))
}

/// A connect reply.
pub fn encode_connect(transaction: u32, connection_id: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
    b.extend_from_slice(&transaction.to_be_bytes());
    b.extend_from_slice(&connection_id.to_be_bytes());
    b
}

/// An error reply: the message as UTF-8 after the header.
pub fn encode_error(transaction: u32, message: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + message.len());
    b.extend_from_slice(&ACTION_ERROR.to_be_bytes());
    b.extend_from_slice(&transaction.to_be_bytes());
    b.extend_from_slice(message.as_bytes());
    b
}

fn u32_sat(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The 20-byte head of an announce reply; the compact peers follow it.
pub fn encode_announce_head(
    transaction: u32,
    interval: u32,
    leechers: u64,
    seeders: u64,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(20);
    b.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    b.extend_from_slice(&transaction.to_be_bytes());
    b.extend_from_slice(&interval.to_be_bytes());
    b.extend_from_slice(&u32_sat(leechers).to_be_bytes());
    b.extend_from_slice(&u32_sat(seeders).to_be_bytes());
    b
}

/// A scrape reply: (seeders, completed, leechers) per info-hash, in request order.
pub fn encode_scrape(transaction: u32, stats: &[(u64, u64, u64)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + 12 * stats.len());
    b.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    b.extend_from_slice(&transaction.to_be_bytes());
    for &(s, c, l) in stats {
        for n in [s, c, l] {
            b.extend_from_slice(&u32_sat(n).to_be_bytes());
        }
    }
    b
}

/// Makes and checks connection ids: a keyed hash of the client's address and port and
/// the time window.
pub struct ConnectionIds {
    key: [u8; 32],
}

impl Default for ConnectionIds {
    fn default() -> Self {
        ConnectionIds::new()
    }
}

impl ConnectionIds {
    /// With a fresh random key (ids made before do not count any more).
    pub fn new() -> ConnectionIds {
        ConnectionIds {
            key: rand::random(),
        }
    }

    /// The id for `client` in `window`.
    pub fn id(&self, client: SocketAddr, window: u64) -> u64 {
        let mut msg = [0u8; 8 + 16 + 2];
        msg[..8].copy_from_slice(&window.to_be_bytes());
        let ip = match client.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        msg[8..24].copy_from_slice(&ip.octets());
        msg[24..].copy_from_slice(&client.port().to_be_bytes());
        let h = blake3::keyed_hash(&self.key, &msg);
        let mut id = [0u8; 8];
        id.copy_from_slice(&h.as_bytes()[..8]);
        u64::from_be_bytes(id)
    }

    /// Whether `id` was made for `client` in `window` or the one before.
    pub fn valid(&self, id: u64, client: SocketAddr, window: u64) -> bool {
        id == self.id(client, window)
            || window
                .checked_sub(1)
                .is_some_and(|w| id == self.id(client, w))
    }
}

/// Answers one datagram from `from` (`window`: the current connection-id window); `None`
/// when it is dropped.
pub(crate) fn handle(
    shared: &Shared,
    ids: &ConnectionIds,
    p: &[u8],
    from: SocketAddr,
    window: u64,
) -> Option<Vec<u8>> {
    if p.len() > MAX_PACKET {
        return None;
    }
    let h = header(p)?;
    if h.action == ACTION_CONNECT {
        return (h.connection_id == PROTOCOL_ID)
            .then(|| encode_connect(h.transaction, ids.id(from, window)));
    }
    if !ids.valid(h.connection_id, from, window) {
        return None;
    }
    let tx = h.transaction;
    if !matches!(h.action, ACTION_ANNOUNCE | ACTION_SCRAPE) {
        return Some(encode_error(tx, &format!("unknown action {}", h.action)));
    }
    let cfg = &shared.config;
    let (announce, scrape, path) = if h.action == ACTION_ANNOUNCE {
        match parse_announce(p) {
            Ok((req, path)) => (Some(req), None, path),
            Err(e) => return Some(encode_error(tx, &e)),
        }
    } else {
        match parse_scrape(p, cfg.max_scrape_hashes) {
            Ok((hashes, path)) => (None, Some(hashes), path),
            Err(e) => return Some(encode_error(tx, &e)),
        }
    };
    crate::metrics::inc(if h.action == ACTION_ANNOUNCE {
        &shared.metrics.announces_udp
    } else {
        &shared.metrics.scrapes_udp
    });
    let now = crate::server::unix_now();
    let member = if cfg.open {
        None
    } else {
        match check_passkey(shared, path.as_deref().and_then(passkey_in), now) {
            Ok(m) => Some(m),
            Err(msg) => return Some(encode_error(tx, msg)),
        }
    };
    if let Some(req) = announce {
        let a = peer_announce(shared, from, &req, member.as_deref().map(|m| (m, now)));
        let ipv6 = crate::server::canonical(from).is_ipv6();
        let mut peers = Vec::with_capacity(a.numwant * if ipv6 { 18 } else { 6 });
        let Some(counts) =
            shared
                .swarms
                .announce_compact(&req.info_hash, &a, Instant::now(), ipv6, &mut peers)
        else {
            return Some(encode_error(tx, UNKNOWN_TORRENT));
        };
        let interval = u32::try_from(intervals(cfg).0).unwrap_or(u32::MAX);
        let mut b = encode_announce_head(tx, interval, counts.incomplete, counts.complete);
        b.extend_from_slice(&peers);
        return Some(b);
    }
    let hashes = scrape.unwrap_or_default();
    let files = scrape_files(shared, &hashes);
    let stats: Vec<(u64, u64, u64)> = hashes
        .iter()
        .map(|ih| {
            files
                .get(ih)
                .map_or((0, 0, 0), |(c, _)| (c.complete, c.downloaded, c.incomplete))
        })
        .collect();
    Some(encode_scrape(tx, &stats))
}

/// Serves BEP 15 on `socket` until `stop` changes (or its sender is gone).
pub(crate) async fn serve(shared: Arc<Shared>, socket: UdpSocket, mut stop: watch::Receiver<bool>) {
    let ids = ConnectionIds::new();
    let started = Instant::now();
    // One byte more than accepted: a datagram that fills it was longer than MAX_PACKET.
    let mut buf = vec![0u8; MAX_PACKET + 1];
    loop {
        let (n, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => {
                    // ICMP errors reported on the socket and the like: keep serving.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let window = started.elapsed().as_secs() / CONNECTION_WINDOW.as_secs();
        let Some(packet) = buf.get(..n) else { continue };
        if let Some(reply) = handle(&shared, &ids, packet, from, window) {
            let _ = socket.send_to(&reply, from).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn announce_packet(conn: u64, numwant: i32, event: u32, opts: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&conn.to_be_bytes());
        p.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
        p.extend_from_slice(&7u32.to_be_bytes());
        p.extend_from_slice(&[0xAB; 20]);
        p.extend_from_slice(&[b'p'; 20]);
        p.extend_from_slice(&5u64.to_be_bytes());
        p.extend_from_slice(&100u64.to_be_bytes());
        p.extend_from_slice(&6u64.to_be_bytes());
        p.extend_from_slice(&event.to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&0xDEADu32.to_be_bytes());
        p.extend_from_slice(&numwant.to_be_bytes());
        p.extend_from_slice(&6881u16.to_be_bytes());
        assert_eq!(p.len(), ANNOUNCE_LEN);
        p.extend_from_slice(opts);
        p
    }

    fn url_data(path: &str) -> Vec<u8> {
        let mut o = vec![OPTION_URL_DATA, path.len() as u8];
        o.extend_from_slice(path.as_bytes());
        o
    }

    #[test]
    fn constants() {
        assert_eq!(PROTOCOL_ID, 0x41727101980);
        assert_eq!(
            (ACTION_CONNECT, ACTION_ANNOUNCE, ACTION_SCRAPE, ACTION_ERROR),
            (0, 1, 2, 3)
        );
    }

    #[test]
    fn announce_fields_and_url_data() {
        let pk = "0123456789abcdef0123456789abcdef";
        let (r, path) = parse_announce(&announce_packet(
            1,
            -1,
            2,
            &url_data(&format!("/{pk}/announce")),
        ))
        .unwrap();
        assert_eq!(r.info_hash, InfoHash([0xAB; 20]));
        assert_eq!(r.peer_id, PeerId([b'p'; 20]));
        assert_eq!((r.downloaded, r.left, r.uploaded), (5, 100, 6));
        assert_eq!(r.event, Some(AnnounceEvent::Started));
        assert_eq!(r.numwant, None);
        assert_eq!(r.key, Some(0xDEAD));
        assert_eq!(r.ip, None);
        assert_eq!(r.port, 6881);
        assert_eq!(path.as_deref(), Some(&*format!("/{pk}/announce")));
        assert_eq!(passkey_in(path.as_deref().unwrap()), Some(pk));
        assert_eq!(passkey_in(&format!("/announce/{pk}")), Some(pk));
        assert_eq!(passkey_in(&format!("/{pk}")), Some(pk));
        assert_eq!(passkey_in("/announce"), None);
        assert_eq!(passkey_in("/a/b/c"), None);
        // Split over two URL data options, a NOP between, a query string, EndOfOptions
        // and trailing garbage.
        let mut o = url_data("/announce/");
        o.push(OPTION_NOP);
        o.extend(url_data(&format!("{pk}?x=1")));
        o.extend([OPTION_END, 0xFF, 0xFF]);
        let (_, path) = parse_announce(&announce_packet(1, 50, 0, &o)).unwrap();
        assert_eq!(path.as_deref(), Some(&*format!("/announce/{pk}")));
        // Unknown options are skipped by their length.
        let mut o = vec![9, 2, 0, 0];
        o.extend(url_data("/x"));
        let (_, path) = parse_announce(&announce_packet(1, 50, 0, &o)).unwrap();
        assert_eq!(path.as_deref(), Some("/x"));
        // No options: no path.
        let (_, path) = parse_announce(&announce_packet(1, 50, 0, &[])).unwrap();
        assert_eq!(path, None);
    }

    #[test]
    fn hostile_announces() {
        // Huge numwant: kept (the server caps it); negative: the default.
        let (r, _) = parse_announce(&announce_packet(1, i32::MAX, 0, &[])).unwrap();
        assert_eq!(r.numwant, Some(i32::MAX as u32));
        let (r, _) = parse_announce(&announce_packet(1, -7, 0, &[])).unwrap();
        assert_eq!(r.numwant, None);
        // Short.
        for n in [0, 16, 97] {
            let p = &announce_packet(1, 1, 0, &[])[..n];
            assert!(parse_announce(p)
                .unwrap_err()
                .contains("malformed announce"));
        }
        // Bad event, port 0, negative left.
        assert_eq!(
            parse_announce(&announce_packet(1, 1, 4, &[])).unwrap_err(),
            "invalid event"
        );
        let mut p = announce_packet(1, 1, 0, &[]);
        p[96..98].copy_from_slice(&[0, 0]);
        assert_eq!(parse_announce(&p).unwrap_err(), "invalid port 0");
        let mut p = announce_packet(1, 1, 0, &[]);
        p[64..72].copy_from_slice(&(-1i64).to_be_bytes());
        assert_eq!(parse_announce(&p).unwrap_err(), "invalid left");
        // Garbage options: a length past the end, a lone length-bearing type byte,
        // URL data that is not UTF-8.
        for o in [&[2u8, 200, b'/'][..], &[2], &[7], &[2, 2, 0xFF, 0xFE]] {
            assert!(
                parse_announce(&announce_packet(1, 1, 0, o)).is_err(),
                "{o:?}"
            );
        }
        // Every truncation and every single-byte option tail parses or errs: never panics.
        let full = announce_packet(1, 1, 0, &url_data("/announce/abc"));
        for n in 0..full.len() {
            let _ = parse_announce(&full[..n]);
        }
        for b in 0..=255u8 {
            for len in 0..=3u8 {
                let _ = parse_announce(&announce_packet(1, 1, 0, &[b, len, b'/']));
            }
        }
    }

    fn scrape_packet(hashes: &[[u8; 20]], opts: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&1u64.to_be_bytes());
        p.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
        p.extend_from_slice(&9u32.to_be_bytes());
        for h in hashes {
            p.extend_from_slice(h);
        }
        p.extend_from_slice(opts);
        p
    }

    #[test]
    fn scrapes() {
        let pk = "0123456789abcdef0123456789abcdef";
        let hs = [[1u8; 20], [2; 20], [3; 20]];
        let (h, path) = parse_scrape(&scrape_packet(&hs, &[]), 256).unwrap();
        assert_eq!(h, hs.iter().map(|x| InfoHash(*x)).collect::<Vec<_>>());
        assert_eq!(path, None);
        // The per-request limit.
        let (h, _) = parse_scrape(&scrape_packet(&hs, &[]), 2).unwrap();
        assert_eq!(h.len(), 2);
        // Options after the info-hashes (both path forms).
        for form in [format!("/{pk}/scrape"), format!("/announce/{pk}")] {
            for n in 1..=3 {
                let (h, path) = parse_scrape(&scrape_packet(&hs[..n], &url_data(&form)), 256)
                    .unwrap_or_else(|e| panic!("{form} {n}: {e}"));
                assert_eq!(h.len(), n, "{form}");
                assert_eq!(passkey_in(path.as_deref().unwrap()), Some(pk));
            }
        }
        // No info-hash; a ragged tail that is no option list.
        assert!(parse_scrape(&scrape_packet(&[], &[]), 256)
            .unwrap_err()
            .contains("without info_hash"));
        assert!(parse_scrape(&scrape_packet(&hs, &[7, 9]), 256).is_err());
        assert!(parse_scrape(&scrape_packet(&[], &url_data("/x")), 256).is_err());
        for n in 0..60 {
            let _ = parse_scrape(&scrape_packet(&hs, &url_data("/x"))[..n], 256);
        }
    }

    #[test]
    fn encodings() {
        assert_eq!(
            encode_connect(0x01020304, 0x1122334455667788),
            [0, 0, 0, 0, 1, 2, 3, 4, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        );
        assert_eq!(encode_error(5, "no"), [0, 0, 0, 3, 0, 0, 0, 5, b'n', b'o']);
        assert_eq!(
            encode_announce_head(1, 60, 2, u64::MAX),
            [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 60, 0, 0, 0, 2, 255, 255, 255, 255]
        );
        assert_eq!(
            encode_scrape(1, &[(1, 2, 3)]),
            [0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]
        );
        assert_eq!(header(&[0; 15]), None);
    }

    #[test]
    fn connection_ids() {
        let ids = ConnectionIds::new();
        let id = ids.id(v4(1000), 10);
        assert!(ids.valid(id, v4(1000), 10));
        assert!(ids.valid(id, v4(1000), 11));
        assert!(!ids.valid(id, v4(1000), 12), "expired after two windows");
        assert!(!ids.valid(id, v4(1000), 9));
        assert!(!ids.valid(id, v4(1001), 10), "another port");
        assert!(!ids.valid(id, SocketAddr::from(([127, 0, 0, 2], 1000)), 10));
        assert!(!ids.valid(id ^ 1, v4(1000), 10));
        // Another key (a restarted tracker): the old id is refused.
        assert!(!ConnectionIds::new().valid(id, v4(1000), 10));
        assert!(ids.valid(ids.id(v4(5), 0), v4(5), 0));
    }

    fn tracker(open: bool) -> (tempfile::TempDir, crate::Tracker) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::TrackerConfig::new(dir.path());
        cfg.open = open;
        (dir, crate::Tracker::open(cfg).unwrap())
    }

    #[test]
    fn handle_drops_and_refuses() {
        let (_d, t) = tracker(true);
        let sh = t.shared();
        let ids = ConnectionIds::new();
        let me = v4(4000);
        // Short, too long, connect without the protocol id: dropped.
        assert_eq!(handle(sh, &ids, &[0; 15], me, 0), None);
        assert_eq!(handle(sh, &ids, &[0; MAX_PACKET + 1], me, 0), None);
        let mut c = 0x41727101981u64.to_be_bytes().to_vec();
        c.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 42]);
        assert_eq!(handle(sh, &ids, &c, me, 0), None);
        c[..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
        let r = handle(sh, &ids, &c, me, 0).unwrap();
        assert_eq!(r.len(), 16);
        assert_eq!(&r[..8], &[0, 0, 0, 0, 0, 0, 0, 42]);
        let conn = be_u64(&r, 8).unwrap();
        // A wrong connection id, or the right one from another address: dropped.
        let a = announce_packet(conn ^ 1, 50, 0, &[]);
        assert_eq!(handle(sh, &ids, &a, me, 0), None);
        let a = announce_packet(conn, 50, 0, &[]);
        assert_eq!(handle(sh, &ids, &a, v4(4001), 0), None);
        // The right one: an unknown torrent is an error with the HTTP text.
        let r = handle(sh, &ids, &a, me, 1).unwrap();
        assert_eq!(&r[..8], &[0, 0, 0, 3, 0, 0, 0, 7]);
        assert_eq!(&r[8..], UNKNOWN_TORRENT.as_bytes());
        // Expired.
        assert_eq!(handle(sh, &ids, &a, me, 2), None);
        // Unknown action, short announce.
        let mut u = a.clone();
        u[8..12].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(
            &handle(sh, &ids, &u, me, 0).unwrap()[8..],
            b"unknown action 9"
        );
        let r = handle(sh, &ids, &a[..50], me, 0).unwrap();
        assert_eq!(be_u32(&r, 0), Some(ACTION_ERROR));
        // A known torrent, a huge numwant: an answer with the counts.
        sh.swarms.add_torrent(InfoHash([0xAB; 20]));
        let a = announce_packet(conn, i32::MAX, 2, &[]);
        let r = handle(sh, &ids, &a, me, 0).unwrap();
        assert_eq!(r.len(), 20, "nobody else in the swarm");
        assert_eq!(be_u32(&r, 0), Some(ACTION_ANNOUNCE));
        assert_eq!(be_u32(&r, 12), Some(1), "one leecher: us");
    }

    #[test]
    fn private_tracker_wants_a_passkey() {
        let (_d, t) = tracker(false);
        let sh = t.shared();
        let ids = ConnectionIds::new();
        let me = v4(4000);
        let conn = ids.id(me, 0);
        let pk = "0123456789abcdef0123456789abcdef";
        for (opts, want) in [
            (vec![], crate::NO_PASSKEY),
            (url_data("/announce"), crate::NO_PASSKEY),
            (url_data(&format!("/{pk}/announce")), crate::UNKNOWN_PASSKEY),
            (url_data("/announce/nothex"), crate::UNKNOWN_PASSKEY),
        ] {
            let r = handle(sh, &ids, &announce_packet(conn, 5, 0, &opts), me, 0).unwrap();
            assert_eq!(be_u32(&r, 0), Some(ACTION_ERROR));
            assert_eq!(std::str::from_utf8(&r[8..]).unwrap(), want);
        }
        let r = handle(sh, &ids, &scrape_packet(&[[1; 20]], &[]), me, 0);
        let r = r.unwrap_or_default();
        // The scrape packet's connection id is 1: dropped; with the right one, refused.
        assert!(r.is_empty());
        let mut s = scrape_packet(&[[1; 20]], &[]);
        s[..8].copy_from_slice(&conn.to_be_bytes());
        let r = handle(sh, &ids, &s, me, 0).unwrap();
        assert_eq!(&r[8..], crate::NO_PASSKEY.as_bytes());
    }
}
