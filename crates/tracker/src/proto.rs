//! The announce and scrape messages (BEP 3, 23, 48), shared by the server and the client:
//! request query strings both ways, and bencoded replies both ways.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use swarmbak_bencode::{Dict, Encoder, Value};

use crate::query::{percent_decode_into, percent_encode_into, raw_pairs};

pub use swarmbak_core::{InfoHash, PeerId};

/// The `event` of an announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceEvent {
    /// The first announce of a download.
    Started,
    /// The download finished (sent once).
    Completed,
    /// The peer leaves the swarm.
    Stopped,
}

impl AnnounceEvent {
    /// The query-string spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AnnounceEvent::Started => "started",
            AnnounceEvent::Completed => "completed",
            AnnounceEvent::Stopped => "stopped",
        }
    }
}

/// An announce request (BEP 3), plus swarmbak's `machine` extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    /// The torrent.
    pub info_hash: InfoHash,
    /// The announcing peer.
    pub peer_id: PeerId,
    /// The port the peer listens on.
    pub port: u16,
    /// Bytes uploaded so far.
    pub uploaded: u64,
    /// Bytes downloaded so far.
    pub downloaded: u64,
    /// Bytes still missing (0: a seeder).
    pub left: u64,
    /// `started`, `completed`, `stopped`, or none for a regular announce.
    pub event: Option<AnnounceEvent>,
    /// How many peers the peer wants (`None`: the tracker's default).
    pub numwant: Option<u32>,
    /// Ask for a compact peer list (BEP 23). The client always sends `compact=1`
    /// (opentracker refuses `compact=0`) unless told otherwise.
    pub compact: bool,
    /// `key`: lets the peer prove its identity across IP changes.
    pub key: Option<u32>,
    /// `ip`: the address the peer claims (the server ignores it unless configured to trust it).
    pub ip: Option<String>,
    /// `trackerid` from an earlier reply.
    pub tracker_id: Option<Vec<u8>>,
    /// swarmbak's extension: hex of the machine's key.
    pub machine: Option<String>,
    /// swarmbak's extension: the bytes of other machines' backups this machine offers to
    /// hold (its quota), for the administrator's view (tracker.md §1, §10.1).
    pub quota: Option<u64>,
    /// `no_peer_id=1` (BEP 23): leave `peer id` out of a dictionary peer list. Sent by
    /// [`to_query`](Self::to_query) only when set.
    pub no_peer_id: bool,
}

impl AnnounceRequest {
    /// A regular announce with `compact=1` and no optional fields.
    pub fn new(info_hash: InfoHash, peer_id: PeerId, port: u16, left: u64) -> AnnounceRequest {
        AnnounceRequest {
            info_hash,
            peer_id,
            port,
            uploaded: 0,
            downloaded: 0,
            left,
            event: None,
            numwant: None,
            compact: true,
            key: None,
            ip: None,
            tracker_id: None,
            machine: None,
            quota: None,
            no_peer_id: false,
        }
    }

    /// The query string (without `?`), binary fields percent-encoded as libtorrent does.
    pub fn to_query(&self) -> String {
        let mut q = String::with_capacity(200);
        q.push_str("info_hash=");
        percent_encode_into(self.info_hash.as_ref(), &mut q);
        q.push_str("&peer_id=");
        percent_encode_into(self.peer_id.as_ref(), &mut q);
        q.push_str(&format!(
            "&port={}&uploaded={}&downloaded={}&left={}&compact={}",
            self.port,
            self.uploaded,
            self.downloaded,
            self.left,
            u8::from(self.compact)
        ));
        if let Some(e) = self.event {
            q.push_str("&event=");
            q.push_str(e.as_str());
        }
        if let Some(n) = self.numwant {
            q.push_str(&format!("&numwant={n}"));
        }
        if let Some(k) = self.key {
            q.push_str(&format!("&key={k:08X}"));
        }
        if let Some(ip) = &self.ip {
            q.push_str("&ip=");
            percent_encode_into(ip.as_bytes(), &mut q);
        }
        if let Some(t) = &self.tracker_id {
            q.push_str("&trackerid=");
            percent_encode_into(t, &mut q);
        }
        if let Some(m) = &self.machine {
            q.push_str("&machine=");
            percent_encode_into(m.as_bytes(), &mut q);
        }
        if let Some(n) = self.quota {
            q.push_str(&format!("&quota={n}"));
        }
        if self.no_peer_id {
            q.push_str("&no_peer_id=1");
        }
        q
    }

    /// Parses an announce query string as a tracker receives it. Lenient where clients
    /// differ (unknown keys ignored, `left` missing counts as incomplete, `key` in hex or
    /// decimal), strict on what the tracker relies on: `info_hash` and `peer_id` must
    /// decode to 20 bytes, `port` must be 1..=65535, numbers must be decimal.
    pub fn parse_query(query: &[u8]) -> Result<AnnounceRequest, String> {
        let mut info_hash = None;
        let mut peer_id = None;
        let mut port = None;
        let mut req = AnnounceRequest::new(InfoHash([0; 20]), PeerId([0; 20]), 0, 1);
        req.compact = false;
        let mut buf = Vec::with_capacity(64);
        for (k, v) in raw_pairs(query) {
            percent_decode_into(v, &mut buf).map_err(|e| e.0)?;
            match k {
                b"info_hash" if info_hash.is_none() => {
                    info_hash =
                        Some(<[u8; 20]>::try_from(buf.as_slice()).map_err(|_| {
                            format!("invalid info_hash ({} bytes, not 20)", buf.len())
                        })?);
                }
                b"peer_id" => {
                    peer_id =
                        Some(<[u8; 20]>::try_from(buf.as_slice()).map_err(|_| {
                            format!("invalid peer_id ({} bytes, not 20)", buf.len())
                        })?);
                }
                b"port" => {
                    let p = dec_u64(&buf, "port")?;
                    port = Some(
                        u16::try_from(p)
                            .ok()
                            .filter(|&p| p != 0)
                            .ok_or_else(|| format!("invalid port {p}"))?,
                    );
                }
                b"uploaded" => req.uploaded = dec_u64(&buf, "uploaded")?,
                b"downloaded" => req.downloaded = dec_u64(&buf, "downloaded")?,
                b"left" => req.left = dec_u64(&buf, "left")?,
                b"quota" => req.quota = Some(dec_u64(&buf, "quota")?),
                b"numwant" => {
                    // Some clients send -1 for "default".
                    req.numwant = match buf.as_slice() {
                        b"-1" | b"" => None,
                        _ => Some(u32::try_from(dec_u64(&buf, "numwant")?).unwrap_or(u32::MAX)),
                    }
                }
                b"compact" => req.compact = buf.as_slice() == b"1",
                // As libtorrent and opentracker read it: present with any value but `0`.
                b"no_peer_id" => req.no_peer_id = buf.as_slice() != b"0",
                b"event" => {
                    req.event = match buf.as_slice() {
                        b"started" => Some(AnnounceEvent::Started),
                        b"completed" => Some(AnnounceEvent::Completed),
                        b"stopped" => Some(AnnounceEvent::Stopped),
                        b"" | b"empty" | b"paused" => None,
                        _ => return Err("invalid event".into()),
                    }
                }
                b"key" => {
                    let s = std::str::from_utf8(&buf).unwrap_or("");
                    req.key = u32::from_str_radix(s, 16)
                        .ok()
                        .or_else(|| s.parse::<u64>().ok().map(|n| n as u32));
                }
                b"ip" => req.ip = std::str::from_utf8(&buf).ok().map(str::to_owned),
                b"trackerid" => req.tracker_id = Some(buf.clone()),
                b"machine" => {
                    let s = std::str::from_utf8(&buf).map_err(|_| "`machine` is not UTF-8")?;
                    if s.len() > MAX_MACHINE_LEN {
                        return Err("`machine` is too long".into());
                    }
                    req.machine = Some(s.to_owned());
                }
                _ => {}
            }
        }
        req.info_hash = InfoHash(info_hash.ok_or("missing info_hash")?);
        req.peer_id = PeerId(peer_id.ok_or("missing peer_id")?);
        req.port = port.ok_or("missing port")?;
        Ok(req)
    }
}

/// Parses a scrape query string as a tracker receives it: the `info_hash` values, each
/// percent-decoded to 20 bytes, in order, at most `max` of them (the rest are checked and
/// ignored); other keys are ignored. None is a full scrape.
pub fn parse_scrape_query(query: &[u8], max: usize) -> Result<Vec<InfoHash>, String> {
    let mut wanted: Vec<InfoHash> = Vec::new();
    let mut buf = Vec::with_capacity(20);
    for (k, v) in raw_pairs(query) {
        if k != b"info_hash" {
            continue;
        }
        percent_decode_into(v, &mut buf).map_err(|e| e.0)?;
        let ih = <[u8; 20]>::try_from(buf.as_slice())
            .map(InfoHash)
            .map_err(|_| format!("invalid info_hash ({} bytes, not 20)", buf.len()))?;
        if wanted.len() < max {
            wanted.push(ih);
        }
    }
    Ok(wanted)
}

/// Longest `machine` value (and machine key) the tracker accepts.
pub const MAX_MACHINE_LEN: usize = 256;

fn dec_u64(s: &[u8], what: &str) -> Result<u64, String> {
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return Err(format!("invalid {what}"));
    }
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("invalid {what}"))
}

/// A peer in an announce reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerInfo {
    /// Address to connect to.
    pub addr: SocketAddr,
    /// Its peer id, when the reply was a dictionary list that had one.
    pub peer_id: Option<PeerId>,
}

/// A tracker's answer to an announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceResponse {
    /// How long to wait before the next regular announce.
    pub interval: Duration,
    /// Announce no more often than this, if given.
    pub min_interval: Option<Duration>,
    /// Seeders, if given.
    pub complete: Option<u64>,
    /// Leechers, if given.
    pub incomplete: Option<u64>,
    /// Peers (`peers` compact or dictionary list, and `peers6`).
    pub peers: Vec<PeerInfo>,
    /// `warning message`: the announce worked, but the tracker has something to say.
    pub warning: Option<String>,
    /// `tracker id`, to send back as `trackerid`.
    pub tracker_id: Option<Vec<u8>>,
}

/// What went wrong reading a tracker's bencoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// The tracker answered with `failure reason`.
    Failure(String),
    /// Not a usable reply.
    Malformed(String),
}

fn text(v: &Value<'_>) -> String {
    String::from_utf8_lossy(v.as_bytes().unwrap_or_default()).into_owned()
}

/// A tracker's reply, decoded as leniently as clients do (trailing bytes ignored).
fn reply(body: &[u8]) -> Result<Value<'_>, ReplyError> {
    swarmbak_bencode::decode(body)
        .or_else(|_| swarmbak_bencode::decode_prefix(body).map(|(v, _)| v))
        .map_err(|e| ReplyError::Malformed(format!("reply is not bencode: {e}")))
}

/// The reply's dictionary, unless it is not one or it carries a `failure reason`.
fn reply_dict<'v, 'a>(v: &'v Value<'a>) -> Result<&'v Dict<'a>, ReplyError> {
    let d = v
        .as_dict()
        .ok_or_else(|| ReplyError::Malformed("reply is not a dictionary".into()))?;
    match d.get(b"failure reason") {
        Some(f) => Err(ReplyError::Failure(text(f))),
        None => Ok(d),
    }
}

/// Reads an announce reply, as leniently as libtorrent and transmission: keys in any
/// order, unknown keys ignored, `interval` missing means 30 minutes, compact and
/// dictionary peer lists both accepted (a compact list's trailing partial entry and
/// dictionary entries without a usable address are dropped).
pub fn parse_announce_response(body: &[u8]) -> Result<AnnounceResponse, ReplyError> {
    let v = reply(body)?;
    let d = reply_dict(&v)?;
    let secs = |key: &[u8]| {
        d.get(key)
            .and_then(Value::as_int)
            .map(|n| Duration::from_secs(n.clamp(0, 7 * 24 * 3600) as u64))
    };
    let count = |key: &[u8]| d.get(key).and_then(Value::as_int).map(|n| n.max(0) as u64);
    let mut peers = Vec::new();
    match d.get(b"peers") {
        Some(Value::Bytes(b)) => {
            for c in b.chunks_exact(6) {
                let ip = Ipv4Addr::new(c[0], c[1], c[2], c[3]);
                let port = u16::from_be_bytes([c[4], c[5]]);
                peers.push(PeerInfo {
                    addr: SocketAddr::new(IpAddr::V4(ip), port),
                    peer_id: None,
                });
            }
        }
        Some(Value::List(l)) => {
            for p in l.iter() {
                let Some(pd) = p.as_dict() else { continue };
                let ip = pd
                    .get(b"ip")
                    .and_then(Value::as_bytes)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|s| s.parse::<IpAddr>().ok());
                let port = pd
                    .get(b"port")
                    .and_then(Value::as_int)
                    .and_then(|n| u16::try_from(n).ok());
                let (Some(ip), Some(port)) = (ip, port) else {
                    continue;
                };
                let peer_id = pd
                    .get(b"peer id")
                    .and_then(Value::as_bytes)
                    .and_then(|b| <[u8; 20]>::try_from(b).ok())
                    .map(PeerId);
                peers.push(PeerInfo {
                    addr: SocketAddr::new(ip, port),
                    peer_id,
                });
            }
        }
        _ => {}
    }
    if let Some(Value::Bytes(b)) = d.get(b"peers6") {
        for c in b.chunks_exact(18) {
            let mut a = [0u8; 16];
            a.copy_from_slice(&c[..16]);
            let port = u16::from_be_bytes([c[16], c[17]]);
            peers.push(PeerInfo {
                addr: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port),
                peer_id: None,
            });
        }
    }
    Ok(AnnounceResponse {
        interval: secs(b"interval").unwrap_or(Duration::from_secs(1800)),
        min_interval: secs(b"min interval"),
        complete: count(b"complete"),
        incomplete: count(b"incomplete"),
        peers,
        warning: d.get(b"warning message").map(text),
        tracker_id: d
            .get(b"tracker id")
            .and_then(Value::as_bytes)
            .map(<[u8]>::to_vec),
    })
}

/// One torrent's line in a scrape reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrapeStats {
    /// Seeders.
    pub complete: u64,
    /// Completed downloads the tracker has seen.
    pub downloaded: u64,
    /// Leechers.
    pub incomplete: u64,
    /// The torrent's name, if the tracker gave it.
    pub name: Option<String>,
}

/// A scrape reply: `files`, keyed by info-hash.
pub type ScrapeResponse = BTreeMap<InfoHash, ScrapeStats>;

/// Reads a scrape reply (BEP 48), leniently: entries whose key is not 20 bytes are
/// dropped, missing counts are 0.
pub fn parse_scrape_response(body: &[u8]) -> Result<ScrapeResponse, ReplyError> {
    let v = reply(body)?;
    let d = reply_dict(&v)?;
    let mut out = BTreeMap::new();
    let Some(files) = d.get(b"files").and_then(Value::as_dict) else {
        return Ok(out);
    };
    for (k, v) in files.iter() {
        let (Ok(ih), Some(e)) = (<[u8; 20]>::try_from(k).map(InfoHash), v.as_dict()) else {
            continue;
        };
        let n = |key: &[u8]| {
            e.get(key)
                .and_then(Value::as_int)
                .map_or(0, |n| n.max(0) as u64)
        };
        out.insert(
            ih,
            ScrapeStats {
                complete: n(b"complete"),
                downloaded: n(b"downloaded"),
                incomplete: n(b"incomplete"),
                name: e.get(b"name").map(text),
            },
        );
    }
    Ok(out)
}

/// `d14:failure reason<len>:<msg>e`.
pub fn encode_failure(msg: &str) -> Vec<u8> {
    let mut e = Encoder::with_capacity(msg.len() + 32);
    e.begin_dict().key(b"failure reason").str(msg).end();
    e.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_query_keeps_at_most_max_and_checks_every_hash() {
        let a = "%AB".repeat(20);
        let q = format!(
            "info_hash={a}&x=1&info_hash=bbbbbbbbbbbbbbbbbbbb&info_hash=cccccccccccccccccccc"
        );
        let got = parse_scrape_query(q.as_bytes(), 2).unwrap();
        assert_eq!(got, vec![InfoHash([0xab; 20]), InfoHash([b'b'; 20])]);
        assert_eq!(parse_scrape_query(b"", 2).unwrap(), vec![]);
        // Past `max` a hash is still checked.
        let bad = format!("{q}&info_hash=short");
        assert_eq!(
            parse_scrape_query(bad.as_bytes(), 2),
            Err("invalid info_hash (5 bytes, not 20)".into())
        );
        assert!(parse_scrape_query(b"info_hash=%zz", 2).is_err());
    }

    #[test]
    fn quota_round_trips_and_is_optional() {
        let mut r = AnnounceRequest::new(InfoHash([3; 20]), PeerId([4; 20]), 6881, 10);
        assert!(!r.to_query().contains("quota"));
        r.quota = Some(50 << 30);
        let q = r.to_query();
        assert!(q.contains("&quota=53687091200"), "{q}");
        assert_eq!(
            AnnounceRequest::parse_query(q.as_bytes()).unwrap().quota,
            Some(50 << 30)
        );
        assert!(AnnounceRequest::parse_query(q.replace("quota=5", "quota=x").as_bytes()).is_err());
    }

    #[test]
    fn query_round_trip() {
        let mut r = AnnounceRequest::new(
            InfoHash([0xff; 20]),
            PeerId(*b"-SB0100-abc def+%&=x"),
            6881,
            5,
        );
        r.event = Some(AnnounceEvent::Started);
        r.numwant = Some(30);
        r.key = Some(0xdeadbeef);
        r.machine = Some("age1xyz".into());
        r.uploaded = 7;
        r.downloaded = 9;
        let q = r.to_query();
        assert!(!q.contains("no_peer_id"), "{q}");
        let back = AnnounceRequest::parse_query(q.as_bytes()).unwrap();
        assert_eq!(back, r);
        r.no_peer_id = true;
        let q = r.to_query();
        assert!(q.ends_with("&no_peer_id=1"), "{q}");
        assert_eq!(AnnounceRequest::parse_query(q.as_bytes()).unwrap(), r);
        let base = "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=aaaaaaaaaaaaaaaaaaaa&port=1";
        for (tail, want) in [
            ("", false),
            ("&no_peer_id=0", false),
            ("&no_peer_id=1", true),
        ] {
            let q = format!("{base}{tail}");
            let r = AnnounceRequest::parse_query(q.as_bytes()).unwrap();
            assert_eq!(r.no_peer_id, want, "{q}");
        }
    }

    #[test]
    fn unsorted_reply_with_dict_peers() {
        let body = b"d8:intervali90e5:peersld4:porti7000e2:ip9:127.0.0.17:peer id20:aaaaaaaaaaaaaaaaaaaaed2:ip3:bad4:porti1eed2:ip3:::14:porti9eee8:completei2e15:warning message3:hmme";
        let r = parse_announce_response(body).unwrap();
        assert_eq!(r.interval, Duration::from_secs(90));
        assert_eq!(r.complete, Some(2));
        assert_eq!(r.warning.as_deref(), Some("hmm"));
        assert_eq!(r.peers.len(), 2);
        assert_eq!(r.peers[0].addr, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(r.peers[0].peer_id, Some(PeerId([b'a'; 20])));
        assert_eq!(r.peers[1].addr, "[::1]:9".parse().unwrap());
    }

    #[test]
    fn failure_reply() {
        let r = parse_announce_response(&encode_failure("nope"));
        assert_eq!(r, Err(ReplyError::Failure("nope".into())));
    }

    #[test]
    fn bad_queries() {
        for q in [
            &b""[..],
            b"info_hash=abc&peer_id=aaaaaaaaaaaaaaaaaaaa&port=1",
            b"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=aaaaaaaaaaaaaaaaaaaa&port=0",
            b"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=aaaaaaaaaaaaaaaaaaaa&port=70000",
            b"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=aaaaaaaaaaaaaaaaaaaa&port=1&left=-1",
            b"info_hash=%zz&peer_id=aaaaaaaaaaaaaaaaaaaa&port=1",
            b"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=aaaaaaaaaaaaaaaaaaaa&port=1&event=bogus",
            b"info_hash=aaaaaaaaaaaaaaaaaaaa&port=1",
        ] {
            assert!(AnnounceRequest::parse_query(q).is_err(), "{q:?}");
        }
    }
}
