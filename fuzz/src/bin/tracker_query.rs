//! The tracker's parsers of what clients send, on arbitrary bytes: the plain-HTTP fast
//! path's request head (`plain::classify`, then the announce or scrape query string it
//! hands to the tracker), `AnnounceRequest::parse_query`, `parse_scrape_query`, and the
//! UDP tracker's packets (BEP 15 header, announce with BEP 41 options, scrape).
//!
//! Input: byte 0 chooses how the rest is read: as an HTTP request head (0), a bare query
//! string (1), or a UDP datagram (2); anything else tries all three.
//!
//! Invariants: nothing panics; a head the fast path takes is complete and its query and
//! passkey lie inside it; an accepted announce query survives `to_query` and parses to
//! the same request; a scrape returns at most `max` info-hashes.

use swarmbak_tracker::proto::parse_scrape_query;
use swarmbak_tracker::udp::{self, ANNOUNCE_LEN};
use swarmbak_tracker::{classify_for_fuzzing, AnnounceRequest, FastPathHead};

const MAX_URL_LEN: usize = 4096;
const MAX_SCRAPE: usize = 8;

fn query(q: &[u8]) {
    if let Ok(req) = AnnounceRequest::parse_query(q) {
        let again = AnnounceRequest::parse_query(req.to_query().as_bytes())
            .expect("to_query's output parses");
        assert_eq!(again, req);
    }
    if let Ok(hashes) = parse_scrape_query(q, MAX_SCRAPE) {
        assert!(hashes.len() <= MAX_SCRAPE);
    }
}

fn http(buf: &[u8]) {
    if let Some(Some(FastPathHead {
        head_len,
        passkey,
        query: q,
        ..
    })) = classify_for_fuzzing(buf, MAX_URL_LEN)
    {
        assert!(head_len <= buf.len());
        let head = buf.as_ptr() as usize..buf.as_ptr() as usize + head_len;
        assert!(head.contains(&(q.as_ptr() as usize)) || q.is_empty());
        if let Some(pk) = passkey {
            assert!(head.contains(&(pk.as_ptr() as usize)) || pk.is_empty());
            let _ = udp::passkey_in(pk);
        }
        query(q);
    }
}

fn datagram(p: &[u8]) {
    let Some(h) = udp::header(p) else {
        assert!(p.len() < 16);
        return;
    };
    let _ = h;
    if let Ok((req, path)) = udp::parse_announce(p) {
        assert!(p.len() >= ANNOUNCE_LEN);
        assert!(req.port != 0);
        if let Some(path) = path {
            let _ = udp::passkey_in(&path);
        }
    }
    if let Ok((hashes, path)) = udp::parse_scrape(p, MAX_SCRAPE) {
        assert!(!hashes.is_empty() && hashes.len() <= MAX_SCRAPE);
        if let Some(path) = path {
            let _ = udp::passkey_in(&path);
        }
    }
    let _ = udp::parse_options(p.get(ANNOUNCE_LEN..).unwrap_or_default());
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let [mode, rest @ ..] = data else {
            return;
        };
        match mode {
            0 => http(rest),
            1 => query(rest),
            2 => datagram(rest),
            _ => {
                http(rest);
                query(rest);
                datagram(rest);
            }
        }
    });
}
