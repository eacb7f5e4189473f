//! Plain-HTTP connections. A BitTorrent client opens a connection per announce (or keeps
//! one alive for a few), and announces and scrapes are most of a tracker's work: a
//! `GET` announce or scrape is parsed here (`httparse`) and answered in one write, without
//! building a hyper request and response (tracker.md §1: the same answers as over hyper,
//! which `handle` and this module share through `bt_answer`). Anything else (another
//! method or path, a body, an `Expect`, a head too long or malformed, `HEAD`) goes to
//! hyper with the bytes already read, so every other endpoint and every error stays
//! hyper's.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::server::{bt_answer, bt_route, serve_connection, Bt, Shared, HEADER_READ_TIMEOUT};

/// Headers a request may carry and still take the fast path (more: hyper's).
const MAX_HEADERS: usize = 32;

/// A plain connection: first the bytes the fast path read and did not answer, then the
/// socket. Its `shutdown` does nothing: hyper shuts the write side down before it
/// returns, and the socket is closed right after (dropped), which sends the same FIN
/// (one system call less per connection; whether unread input turns the close into a
/// reset does not depend on the shutdown either).
pub(crate) struct PlainConn {
    pre: Vec<u8>,
    pos: usize,
    tcp: TcpStream,
}

impl AsyncRead for PlainConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.pre.len() {
            let n = (self.pre.len() - self.pos).min(buf.remaining());
            let at = self.pos;
            buf.put_slice(&self.pre[at..at + n]);
            self.pos += n;
            if self.pos == self.pre.len() {
                self.pre = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for PlainConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What the fast path makes of a complete request head.
#[derive(Debug, PartialEq)]
enum Head<'a> {
    /// A GET announce or scrape: answer it here. `head_len` bytes of the buffer were the
    /// request; keep the connection open after it or not; HTTP/1.0 (then the answer says
    /// `connection: keep-alive`).
    Bt {
        head_len: usize,
        kind: Bt,
        passkey: Option<&'a str>,
        query: &'a [u8],
        keep_alive: bool,
        http10: bool,
    },
    /// Not ours: hyper's.
    Hyper,
}

/// Serves a plain connection: announces and scrapes here, the rest through hyper.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut tcp: TcpStream,
    remote: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let limit = shared.config.max_url_len.max(8192) + 8192;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut out: Vec<u8> = Vec::new();
    let mut served = 0u64;
    loop {
        // Read until the buffer holds a whole request head (or it is not ours).
        let deadline = tokio::time::Instant::now() + HEADER_READ_TIMEOUT;
        let answer = loop {
            if !buf.is_empty() {
                match classify(&buf, shared.config.max_url_len) {
                    Some(Head::Hyper) => break None,
                    Some(Head::Bt {
                        head_len,
                        kind,
                        passkey,
                        query,
                        keep_alive,
                        http10,
                    }) => {
                        let t0 = std::time::Instant::now();
                        let body = bt_answer(&shared, remote, kind, passkey, query);
                        shared.metrics.observe(t0.elapsed());
                        break Some((head_len, body, keep_alive, http10));
                    }
                    None if buf.len() >= limit => break None,
                    None => {}
                }
            }
            if buf.capacity() - buf.len() < 512 {
                buf.reserve(buf.len().max(1024));
            }
            let read = tokio::select! {
                r = tokio::time::timeout_at(deadline, tcp.read_buf(&mut buf)) => r,
                _ = stop.changed() => return,
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(_)) => {}
            }
        };
        match answer {
            None => {
                let _ = tcp.set_nodelay(true);
                let conn = PlainConn {
                    pre: buf,
                    pos: 0,
                    tcp,
                };
                serve_connection(shared, conn, remote, false, stop).await;
                return;
            }
            Some((head_len, body, keep_alive, http10)) => {
                out.clear();
                write_head(&mut out, body.len(), keep_alive, http10);
                out.extend_from_slice(&body);
                if tcp.write_all(&out).await.is_err() {
                    return;
                }
                if !keep_alive {
                    return;
                }
                if served == 0 {
                    // A second answer must not wait for the ACK of the first (Nagle). A
                    // connection with one request, as most are, skips the system call.
                    let _ = tcp.set_nodelay(true);
                }
                served += 1;
                buf.drain(..head_len);
            }
        }
    }
}

/// What `buf` starts with; `None`: the head is not complete yet.
fn classify(buf: &[u8], max_url_len: usize) -> Option<Head<'_>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(Head::Hyper),
    };
    let (Some("GET"), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Some(Head::Hyper);
    };
    if !target.starts_with('/') || target.len() > max_url_len {
        return Some(Head::Hyper);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let Some((kind, passkey)) = bt_route(path) else {
        return Some(Head::Hyper);
    };
    let http10 = version == 0;
    let mut keep_alive = !http10;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let t = token.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
            || (name.eq_ignore_ascii_case("content-length") && h.value.trim_ascii() != b"0")
        {
            // A body (or a promise of one): hyper reads it.
            return Some(Head::Hyper);
        }
    }
    Some(Head::Bt {
        head_len,
        kind,
        passkey,
        query: query.as_bytes(),
        keep_alive,
        http10,
    })
}

/// A GET announce or scrape as the fast path reads it, for `fuzz/` (not an API).
#[doc(hidden)]
#[derive(Debug)]
pub struct FastPathHead<'a> {
    /// Bytes of the buffer the request head takes.
    pub head_len: usize,
    /// An announce (else a scrape).
    pub announce: bool,
    /// The passkey in the path.
    pub passkey: Option<&'a str>,
    /// The raw query string.
    pub query: &'a [u8],
}

/// The fast path's reading of a request head, for `fuzz/` (not an API): `None` while the
/// head is incomplete, `Some(None)` when hyper takes the request.
#[doc(hidden)]
pub fn classify_for_fuzzing(buf: &[u8], max_url_len: usize) -> Option<Option<FastPathHead<'_>>> {
    Some(match classify(buf, max_url_len)? {
        Head::Hyper => None,
        Head::Bt {
            head_len,
            kind,
            passkey,
            query,
            ..
        } => Some(FastPathHead {
            head_len,
            announce: kind == Bt::Announce,
            passkey,
            query,
        }),
    })
}

/// The response head: the status, the headers hyper sends for the same answer
/// (`content-type`, `content-length`, `date`), and `connection` when it is not the
/// version's default.
fn write_head(out: &mut Vec<u8>, len: usize, keep_alive: bool, http10: bool) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ");
    swarmbak_bencode::write_decimal(out, i64::try_from(len).unwrap_or(i64::MAX));
    out.extend_from_slice(b"\r\n");
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"date: ");
    with_date(|d| out.extend_from_slice(d));
    out.extend_from_slice(b"\r\n\r\n");
}

thread_local! {
    /// The IMF-fixdate of the current second, formatted once a second per thread.
    static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        f(d.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bt<'a>(
        head_len: usize,
        kind: Bt,
        passkey: Option<&'a str>,
        query: &'a str,
        keep_alive: bool,
        http10: bool,
    ) -> Option<Head<'a>> {
        Some(Head::Bt {
            head_len,
            kind,
            passkey,
            query: query.as_bytes(),
            keep_alive,
            http10,
        })
    }

    #[test]
    fn which_requests_take_the_fast_path() {
        let c = |s: &'static str| classify(s.as_bytes(), 64);
        let get = "GET /pk/announce?a=1 HTTP/1.1\r\nHost: t\r\n\r\n";
        assert_eq!(
            c(get),
            bt(get.len(), Bt::Announce, Some("pk"), "a=1", true, false)
        );
        // The head's end is where the next request starts.
        let two = "GET /scrape HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n";
        assert_eq!(
            c(two),
            bt(
                "GET /scrape HTTP/1.1\r\n\r\n".len(),
                Bt::Scrape,
                None,
                "",
                true,
                false
            )
        );
        assert_eq!(
            c("GET /announce/pk HTTP/1.1\r\nConnection: Keep-Alive, close\r\n\r\n"),
            bt(60, Bt::Announce, Some("pk"), "", false, false)
        );
        assert_eq!(
            c("GET /announce HTTP/1.0\r\n\r\n"),
            bt(26, Bt::Announce, None, "", false, true)
        );
        assert_eq!(
            c("GET /announce HTTP/1.0\r\nconnection: keep-alive\r\n\r\n"),
            bt(50, Bt::Announce, None, "", true, true)
        );
        assert_eq!(
            c("GET /announce HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            bt(45, Bt::Announce, None, "", true, false)
        );
        // Incomplete: read more.
        assert_eq!(c("GET /announce HTTP/1.1\r\nHost: t\r\n"), None);
        assert_eq!(c("GE"), None);
        // hyper's: other methods, paths, bodies, promises, odd targets, bad heads.
        for h in [
            "HEAD /announce HTTP/1.1\r\n\r\n",
            "POST /announce HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET /health HTTP/1.1\r\n\r\n",
            "GET /pk/snapshots HTTP/1.1\r\n\r\n",
            "GET /announce HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "GET /announce HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /announce HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /announce HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            "GET http://t/announce HTTP/1.1\r\n\r\n",
            "GET /announce?aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
            "GET /announce HTTP/1.1\r\nBad Header\r\n\r\n",
            "\x16\x03\x01\x02\x00",
        ] {
            assert_eq!(c(h), Some(Head::Hyper), "{h:?}");
        }
        // More headers than the fast path keeps: hyper's.
        let many = format!("GET /announce HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(40));
        assert_eq!(classify(many.as_bytes(), 64), Some(Head::Hyper));
    }

    #[test]
    fn response_head() {
        let mut out = Vec::new();
        write_head(&mut out, 1234, true, false);
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.starts_with(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1234\r\ndate: "
            ),
            "{s}"
        );
        assert!(s.ends_with(" GMT\r\n\r\n"), "{s}");
        let mut out = Vec::new();
        write_head(&mut out, 0, false, false);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("content-length: 0\r\nconnection: close\r\n"));
        let mut out = Vec::new();
        write_head(&mut out, 7, true, true);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("connection: keep-alive\r\n"));
    }
}
