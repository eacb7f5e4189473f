//! The tracker client used by swarmbak machines: announce and scrape (any BEP 3 tracker,
//! opentracker included) and swarmbak's own calls (publish, metainfo, snapshots, the
//! schedule and the roster).
//!
//! A small HTTP/1.1 exchange per call (hyper's client connection on a tokio
//! `TcpStream`). `http://` as it always was; `https://` only with the SHA-256 pin of the
//! tracker's certificate ([`TrackerClient::with_tls_pin`], from the enrolment token):
//! the TLS verifier accepts exactly that certificate (tracker.md §7.5).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use crate::proto::{
    parse_announce_response, parse_scrape_response, AnnounceRequest, AnnounceResponse, InfoHash,
    ReplyError, ScrapeResponse,
};
use crate::query::percent_encode_into;
use crate::store::{MachineRecord, SnapshotRecord};

/// Largest reply the client reads (a torrent from `/metainfo`, a full scrape).
pub const MAX_REPLY_BYTES: usize = 64 << 20;

/// What went wrong talking to a tracker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The tracker URL is not usable.
    #[error("invalid tracker URL: {0}")]
    InvalidUrl(String),
    /// The URL's scheme is not supported (udp), or https without a pin.
    #[error("{0}")]
    Unsupported(String),
    /// The tracker's TLS certificate is not the pinned one: another server answered (or
    /// the tracker's certificate was replaced). Not retried.
    #[error("the server at {addr} is not the tracker the pin names: {mismatch}; nothing was sent to it. Check the enrolment token (ask the administrator for a new one), or, if the tracker's certificate was replaced on purpose, enrol again")]
    TlsPin {
        /// host:port.
        addr: String,
        /// Expected and presented hashes.
        mismatch: crate::tls::PinMismatch,
    },
    /// Could not connect (tracker down, refused).
    #[error("cannot connect to the tracker at {addr}: {message}")]
    Connect {
        /// host:port tried.
        addr: String,
        /// The system's message.
        message: String,
    },
    /// The tracker did not answer in time.
    #[error("the tracker did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection broke during the exchange.
    #[error("talking to the tracker: {0}")]
    Io(String),
    /// An HTTP error status.
    #[error("tracker answered HTTP {status}: {message}")]
    Http {
        /// The status code.
        status: u16,
        /// The tracker's error message, or the status text.
        message: String,
    },
    /// The tracker refused the request with a bencoded `failure reason`.
    #[error("tracker refused: {0}")]
    Failure(String),
    /// The reply could not be understood.
    #[error("unreadable tracker reply: {0}")]
    BadResponse(String),
    /// Retried until the caller's deadline; the last error is kept.
    #[error("gave up after {attempts} attempts in {elapsed:?}: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The last attempt's error.
        last: Box<ClientError>,
    },
}

impl ClientError {
    /// Worth trying again later: the tracker is down, refusing connections, overloaded
    /// or timing out. A `failure reason` or a 4xx is a final answer.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Timeout(_) | ClientError::Io(_) => true,
            ClientError::Http { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }

    /// The tracker's `failure reason`, if that is what this is (also inside `GaveUp`).
    pub fn failure_reason(&self) -> Option<&str> {
        match self {
            ClientError::Failure(m) => Some(m),
            ClientError::GaveUp { last, .. } => last.failure_reason(),
            _ => None,
        }
    }
}

/// How long to keep trying when the tracker is down: exponential backoff from
/// `first_delay`, doubling up to `max_delay`, each wait jittered to between half and all
/// of it, until `give_up_after` has passed since the first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Stop trying once this much time has passed (zero: one attempt only).
    pub give_up_after: Duration,
    /// The first wait.
    pub first_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
}

impl Retry {
    /// One attempt, no retry.
    pub fn none() -> Retry {
        Retry {
            give_up_after: Duration::ZERO,
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }

    /// Retry for up to `d` (250 ms first wait, 30 s at most between attempts).
    pub fn for_duration(d: Duration) -> Retry {
        Retry {
            give_up_after: d,
            ..Retry::none()
        }
    }
}

impl Default for Retry {
    fn default() -> Self {
        Retry::none()
    }
}

/// A tracker, by its base URL.
#[derive(Clone)]
pub struct TrackerClient {
    /// `https://`: every call goes over TLS, with `tls` (none until a pin is given).
    https: bool,
    tls: Option<(Arc<rustls::ClientConfig>, [u8; 32])>,
    host: String,
    port: u16,
    announce_path: String,
    scrape_path: String,
    api_base: String,
    extra_query: Option<String>,
    passkey: Option<String>,
    retry: Retry,
    timeout: Duration,
}

impl std::fmt::Debug for TrackerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackerClient")
            .field("url", &self.announce_url())
            .field("tls_pin", &self.tls.as_ref().map(|(_, p)| hex::encode(p)))
            .finish_non_exhaustive()
    }
}

/// The JSON answer to a publish.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Published {
    /// The torrent's info-hash, 40 hex digits.
    pub infohash: String,
    /// False when it had already been published (by the same machine).
    pub new: bool,
    /// When it was first published, Unix seconds.
    pub published: i64,
}

/// The private tracker's answer to `GET BASE/<passkey>/roster` (tracker.md §7.9): the
/// enrolled machines present now, so that an agent knows which machines placement may
/// count on without joining a swarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// The tracker's roster window, seconds: a machine is listed when it was seen at
    /// most this long before `now`.
    pub window: u64,
    /// The tracker's clock when it answered, Unix seconds.
    pub now: i64,
    /// The machines present, by certificate bytes; the one asking among them.
    pub machines: Vec<RosterEntry>,
}

/// One machine of a [`Roster`]. The tracker vouches only for its presence: the
/// certificate (with the machine's age recipient) is to be verified against the
/// organisation key by whoever uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    /// The machine's certificate (trust.md §3) as enrolled, base64url
    /// ([`swarmbak_trust::from_b64`] reads it back).
    pub certificate: String,
    /// When the tracker last saw the machine (its latest announce or roster request),
    /// Unix seconds, the tracker's clock.
    pub last_seen: i64,
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    percent_encode_into(s.as_bytes(), &mut out);
    out
}

impl TrackerClient {
    /// A client for the tracker at `base_url`, `http://HOST[:PORT][/PATH]` or
    /// `https://HOST[:PORT][/PATH]` (the latter needs [`TrackerClient::with_tls_pin`]
    /// before its first call).
    ///
    /// Announces go to `PATH/announce` and scrapes to `PATH/scrape`, so a bare
    /// `http://host:port` works with swarmbak's tracker and opentracker alike. A URL
    /// whose last path segment starts with `announce` (as in a .torrent) is used as the
    /// announce URL as is, with the BEP 48 convention for the scrape URL (that segment's
    /// `announce` replaced by `scrape`). swarmbak's own endpoints (`/publish`, ...)
    /// hang off `PATH`.
    pub fn new(base_url: &str) -> Result<TrackerClient, ClientError> {
        let url = base_url.trim();
        let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(r), _) => (false, Some(r)),
            (None, Some(r)) => (true, Some(r)),
            (None, None) => (false, None),
        };
        let default_port = if https { 443 } else { 80 };
        let Some(rest) = rest else {
            if let Some((scheme, _)) = url.split_once("://") {
                return Err(ClientError::Unsupported(format!(
                    "{scheme}:// trackers are not supported (yet): give the tracker as http://HOST:PORT or https://HOST:PORT"
                )));
            }
            return Err(ClientError::InvalidUrl(format!(
                "{url:?}: expected http://HOST:PORT"
            )));
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q.to_owned()).filter(|q| !q.is_empty())),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(ClientError::InvalidUrl(format!("{url:?}: bad host")));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| ClientError::InvalidUrl(format!("{url:?}: bad IPv6 host")))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse::<u16>().ok(),
                None if after.is_empty() => Some(default_port),
                None => None,
            };
            (format!("[{h}]"), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse::<u16>().ok()),
                None => (authority.to_owned(), Some(default_port)),
            }
        };
        let port = port
            .filter(|&p| p != 0)
            .ok_or_else(|| ClientError::InvalidUrl(format!("{url:?}: bad port")))?;
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '#') {
            return Err(ClientError::InvalidUrl(format!("{url:?}: bad host")));
        }
        let path = path.trim_end_matches('/');
        let (dir, last) = match path.rfind('/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => ("", path),
        };
        let (announce_path, scrape_path, api_base) = if last.starts_with("announce") {
            (
                path.to_owned(),
                format!("{dir}/{}", last.replacen("announce", "scrape", 1)),
                dir.to_owned(),
            )
        } else {
            (
                format!("{path}/announce"),
                format!("{path}/scrape"),
                path.to_owned(),
            )
        };
        Ok(TrackerClient {
            https,
            tls: None,
            host,
            port,
            announce_path,
            scrape_path,
            api_base,
            extra_query: query,
            passkey: None,
            retry: Retry::none(),
            timeout: Duration::from_secs(15),
        })
    }

    /// Announce and scrape as an enrolled machine (tracker.md §7.3): to
    /// `PATH/<passkey>/announce` and `PATH/<passkey>/scrape`, and send the passkey as the
    /// bearer token of the JSON endpoints.
    pub fn with_passkey(mut self, passkey: &str) -> TrackerClient {
        self.announce_path = format!("{}/{passkey}/announce", self.api_base);
        self.scrape_path = format!("{}/{passkey}/scrape", self.api_base);
        self.passkey = Some(passkey.to_owned());
        self
    }

    /// Trust exactly the TLS certificate whose DER has SHA-256 `pin` (the `tls` field
    /// of an enrolment token): no certificate authority, no host name check. Only
    /// `https://` URLs use it; on `http://` it changes nothing.
    pub fn with_tls_pin(mut self, pin: [u8; 32]) -> TrackerClient {
        if self.https {
            self.tls = Some((crate::tls::pinned_client_config(pin), pin));
        }
        self
    }

    /// Does this client speak TLS (an `https://` URL)?
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// Retry calls with backoff as `retry` says (default: no retry).
    pub fn with_retry(mut self, retry: Retry) -> TrackerClient {
        self.retry = retry;
        self
    }

    /// Time allowed for one attempt, connecting included (default 15 s).
    pub fn with_timeout(mut self, timeout: Duration) -> TrackerClient {
        self.timeout = timeout;
        self
    }

    /// The announce URL this client uses.
    pub fn announce_url(&self) -> String {
        format!(
            "{}://{}:{}{}",
            self.scheme(),
            self.host,
            self.port,
            self.announce_path
        )
    }

    fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// The scrape URL this client uses.
    pub fn scrape_url(&self) -> String {
        format!(
            "{}://{}:{}{}",
            self.scheme(),
            self.host,
            self.port,
            self.scrape_path
        )
    }

    fn bt_target(&self, path: &str, query: &str) -> String {
        let mut t = String::with_capacity(path.len() + query.len() + 2);
        t.push_str(if path.is_empty() { "/" } else { path });
        let mut sep = '?';
        if let Some(q) = &self.extra_query {
            t.push('?');
            t.push_str(q);
            sep = '&';
        }
        if !query.is_empty() {
            t.push(sep);
            t.push_str(query);
        }
        t
    }

    /// Announces (BEP 3). A `failure reason` is [`ClientError::Failure`]; a
    /// `warning message` is in the reply.
    pub async fn announce(&self, req: &AnnounceRequest) -> Result<AnnounceResponse, ClientError> {
        let target = self.bt_target(&self.announce_path, &req.to_query());
        self.with_retries(|| async {
            let (status, body) = self.exchange(Method::GET, &target, None, &[]).await?;
            bt_reply(status, &body, parse_announce_response)
        })
        .await
    }

    /// Scrapes (BEP 48) the given torrents, or every torrent the tracker has when
    /// `info_hashes` is empty (a full scrape). Torrents the tracker does not know are
    /// absent from the answer.
    pub async fn scrape(&self, info_hashes: &[InfoHash]) -> Result<ScrapeResponse, ClientError> {
        let mut q = String::with_capacity(info_hashes.len() * 70);
        for (i, ih) in info_hashes.iter().enumerate() {
            if i > 0 {
                q.push('&');
            }
            q.push_str("info_hash=");
            percent_encode_into(ih.as_ref(), &mut q);
        }
        let target = self.bt_target(&self.scrape_path, &q);
        self.with_retries(|| async {
            let (status, body) = self.exchange(Method::GET, &target, None, &[]).await?;
            bt_reply(status, &body, parse_scrape_response)
        })
        .await
    }

    /// Publishes a snapshot's torrent as `machine_key`'s, named `machine_name`.
    /// Idempotent: publishing it again gives `new: false`.
    pub async fn publish(
        &self,
        torrent: &[u8],
        machine_key: &str,
        machine_name: &str,
    ) -> Result<Published, ClientError> {
        let target = format!(
            "{}/publish?machine={}&name={}",
            self.api_base,
            url_encode(machine_key),
            url_encode(machine_name)
        );
        self.json_call(Method::POST, &target, Some(torrent), &[])
            .await
    }

    /// Publishes a snapshot's torrent with its owner's signed record and certificate
    /// (trust.md §4; what a private tracker requires). Idempotent.
    pub async fn publish_signed(
        &self,
        torrent: &[u8],
        record: &[u8],
        certificate: &[u8],
    ) -> Result<Published, ClientError> {
        let target = format!("{}/publish", self.api_base);
        let headers = [
            (crate::server::RECORD_HEADER, swarmbak_trust::to_b64(record)),
            (
                crate::server::CERTIFICATE_HEADER,
                swarmbak_trust::to_b64(certificate),
            ),
        ];
        self.json_call(Method::POST, &target, Some(torrent), &headers)
            .await
    }

    /// Sends this machine's signed backup report (trust.md §9) under its passkey:
    /// `true` when the tracker stored it now, `false` when it had it already (a resend).
    pub async fn report(&self, signed: &[u8]) -> Result<bool, ClientError> {
        self.post_signed("report", signed).await
    }

    /// `POST PATH/<endpoint>` with a signed record as body: the answer's `new`.
    async fn post_signed(&self, endpoint: &str, signed: &[u8]) -> Result<bool, ClientError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            new: bool,
        }
        let target = format!("{}/{endpoint}", self.api_base);
        let a: Answer = self
            .json_call(Method::POST, &target, Some(signed), &[])
            .await?;
        Ok(a.new)
    }

    /// Sends this machine's signed retirement of one of its snapshots (trust.md §12,
    /// tracker.md §7.8) under its passkey: `true` when the tracker stored it now (new,
    /// or replacing an earlier one), `false` when it had that record already or the
    /// administrator cancelled the snapshot's retirement (nothing changed).
    pub async fn retire(&self, signed: &[u8]) -> Result<bool, ClientError> {
        self.post_signed("retire", signed).await
    }

    /// When this machine should back up (`GET PATH/<passkey>/schedule`, tracker.md §7.7),
    /// telling the tracker its own interval `own_every` (seconds), if it has one.
    pub async fn schedule(
        &self,
        own_every: Option<u64>,
    ) -> Result<crate::schedule::Schedule, ClientError> {
        let mut target = format!("{}/schedule", self.api_base);
        if let Some(e) = own_every {
            target.push_str(&format!("?every={e}"));
        }
        self.json_call(Method::GET, &target, None, &[]).await
    }

    /// The enrolled machines present now (`GET PATH/<passkey>/roster`, tracker.md §7.9):
    /// those seen within the tracker's window, this machine included (asking counts as
    /// being seen). The reply is bounded like every other ([`MAX_REPLY_BYTES`]); the
    /// certificates are not verified here.
    pub async fn roster(&self) -> Result<Roster, ClientError> {
        let target = format!("{}/roster", self.api_base);
        self.json_call(Method::GET, &target, None, &[]).await
    }

    /// Enrols this machine with its signed enrolment request (trust.md §6).
    pub async fn enroll(&self, request: &[u8]) -> Result<crate::EnrollAnswer, ClientError> {
        let target = format!("{}/api/v1/enroll", self.api_base);
        self.json_call(Method::POST, &target, Some(request), &[])
            .await
    }

    /// `POST PATH/api/v1/reload` with the admin token: the running tracker rereads its
    /// machines now.
    pub async fn reload(&self, admin_token: &str) -> Result<(), ClientError> {
        let target = format!("{}/api/v1/reload", self.api_base);
        let headers = [("authorization", format!("Bearer {admin_token}"))];
        let (status, reply) = self
            .exchange(Method::POST, &target, Some(Bytes::new()), &headers)
            .await?;
        json_reply::<serde_json::Value>(status, &reply).map(|_| ())
    }

    /// `GET /api/v1/<path>` with the admin token (tracker.md §10.2): the JSON answer.
    pub async fn admin_get(
        &self,
        admin_token: &str,
        path: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let target = format!("{}/api/v1/{}", self.api_base, path.trim_start_matches('/'));
        let headers = [("authorization", format!("Bearer {admin_token}"))];
        let (status, reply) = self.exchange(Method::GET, &target, None, &headers).await?;
        json_reply::<serde_json::Value>(status, &reply)
    }

    /// The torrent published as `info_hash`, or `None` if the tracker has none. The
    /// bytes are checked to be a torrent with that info-hash.
    pub async fn metainfo(&self, info_hash: &InfoHash) -> Result<Option<Vec<u8>>, ClientError> {
        let target = format!("{}/metainfo/{}", self.api_base, hex::encode(info_hash));
        self.with_retries(|| async {
            let (status, body) = self.exchange(Method::GET, &target, None, &[]).await?;
            if status == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if status != StatusCode::OK {
                return Err(http_error(status, &body));
            }
            let mi = swarmbak_metainfo::Metainfo::from_bytes(&body)
                .map_err(|e| ClientError::BadResponse(format!("metainfo: {e}")))?;
            if mi.info_hash() != info_hash.0 {
                return Err(ClientError::BadResponse(format!(
                    "asked for {}, got a torrent with info-hash {}",
                    hex::encode(info_hash),
                    mi.info_hash_hex()
                )));
            }
            Ok(Some(body.to_vec()))
        })
        .await
    }

    /// Snapshots of the machine named or keyed `machine` (all when `None`), newest first.
    pub async fn snapshots(
        &self,
        machine: Option<&str>,
    ) -> Result<Vec<SnapshotRecord>, ClientError> {
        let target = match machine {
            Some(m) => format!("{}/snapshots?machine={}", self.api_base, url_encode(m)),
            None => format!("{}/snapshots", self.api_base),
        };
        self.json_call(Method::GET, &target, None, &[]).await
    }

    /// The tracker's record of one snapshot (`GET /snapshots?infohash=`), `None` when it
    /// lists none.
    pub async fn snapshot(&self, ih: &InfoHash) -> Result<Option<SnapshotRecord>, ClientError> {
        let target = format!("{}/snapshots?infohash={}", self.api_base, hex::encode(ih));
        let list: Vec<SnapshotRecord> = self.json_call(Method::GET, &target, None, &[]).await?;
        Ok(list.into_iter().find(|r| r.infohash == hex::encode(ih)))
    }

    /// Every signed revocation the tracker keeps (`GET /revocations`, tracker.md §7.2):
    /// the envelopes, unchecked (the caller verifies each with the organisation key).
    pub async fn revocations(&self) -> Result<Vec<Vec<u8>>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Row {
            revocation: String,
        }
        let target = format!("{}/revocations", self.api_base);
        let rows: Vec<Row> = self.json_call(Method::GET, &target, None, &[]).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| swarmbak_trust::from_b64(&r.revocation).ok())
            .collect())
    }

    /// Every machine that published, most recent first.
    pub async fn machines(&self) -> Result<Vec<MachineRecord>, ClientError> {
        let target = format!("{}/machines", self.api_base);
        self.json_call(Method::GET, &target, None, &[]).await
    }

    /// One JSON endpoint: `method target` with `body` and `headers`, retried as the client
    /// says, the reply's JSON (or the tracker's error) returned.
    async fn json_call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        target: &str,
        body: Option<&[u8]>,
        headers: &[(&str, String)],
    ) -> Result<T, ClientError> {
        let body = body.map(Bytes::copy_from_slice);
        self.with_retries(|| async {
            let (status, reply) = self
                .exchange(method.clone(), target, body.clone(), headers)
                .await?;
            json_reply(status, &reply)
        })
        .await
    }

    async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let start = Instant::now();
        let mut delay = self.retry.first_delay.max(Duration::from_millis(1));
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let err = match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !err.is_retryable() || self.retry.give_up_after.is_zero() {
                return Err(err);
            }
            let elapsed = start.elapsed();
            let jittered = delay / 2 + delay.mul_f64(rand::random::<f64>() / 2.0);
            if elapsed + jittered >= self.retry.give_up_after {
                // Sleep out what is left, then one last try, unless nothing is left.
                let left = self.retry.give_up_after.saturating_sub(elapsed);
                if left < Duration::from_millis(20) {
                    return Err(ClientError::GaveUp {
                        attempts,
                        elapsed,
                        last: Box::new(err),
                    });
                }
                tokio::time::sleep(left).await;
                attempts += 1;
                return match attempt().await {
                    Ok(v) => Ok(v),
                    Err(e) if e.is_retryable() => Err(ClientError::GaveUp {
                        attempts,
                        elapsed: start.elapsed(),
                        last: Box::new(e),
                    }),
                    Err(e) => Err(e),
                };
            }
            tokio::time::sleep(jittered).await;
            delay = (delay * 2).min(self.retry.max_delay.max(self.retry.first_delay));
        }
    }

    async fn exchange(
        &self,
        method: Method,
        target: &str,
        body: Option<Bytes>,
        headers: &[(&str, String)],
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.exchange_inner(method, target, body, headers))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout(timeout)),
        }
    }

    async fn exchange_inner(
        &self,
        method: Method,
        target: &str,
        body: Option<Bytes>,
        headers: &[(&str, String)],
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        let addr_text = format!("{}:{}", self.host, self.port);
        // Checked before connecting: an https tracker is never spoken to without its pin.
        let tls = match (&self.tls, self.https) {
            (Some((cfg, _)), true) => Some(cfg.clone()),
            (_, false) => None,
            (None, true) => {
                return Err(ClientError::Unsupported(format!(
                    "https://{addr_text}: an https tracker is trusted only by the SHA-256 of its certificate, and none was given: enrol with a token that carries it (swarmbak tracker enroll writes it into https tokens), or use the tracker's http:// address on a trusted network"
                )))
            }
        };
        let connect_err = |e: std::io::Error| ClientError::Connect {
            addr: addr_text.clone(),
            message: e.to_string(),
        };
        let stream = match bare.parse::<std::net::IpAddr>() {
            Ok(ip) => TcpStream::connect(SocketAddr::new(ip, self.port)).await,
            Err(_) => TcpStream::connect((bare, self.port)).await,
        }
        .map_err(connect_err)?;
        let _ = stream.set_nodelay(true);
        let req = self.request(method, target, body, headers, &addr_text)?;
        match tls {
            None => send(stream, req).await,
            Some(cfg) => {
                let name = ServerName::try_from(bare.to_owned())
                    .map_err(|_| ClientError::InvalidUrl(format!("bad host {bare:?}")))?;
                let stream = tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, stream)
                    .await
                    .map_err(|e| match crate::tls::pin_mismatch(&e) {
                        Some(mismatch) => ClientError::TlsPin {
                            addr: addr_text.clone(),
                            mismatch,
                        },
                        None => ClientError::Io(format!("TLS handshake with {addr_text}: {e}")),
                    })?;
                send(stream, req).await
            }
        }
    }

    fn request(
        &self,
        method: Method,
        target: &str,
        body: Option<Bytes>,
        headers: &[(&str, String)],
        addr_text: &str,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut req = Request::new(Full::new(body.unwrap_or_default()));
        *req.method_mut() = method;
        *req.uri_mut() = target
            .parse()
            .map_err(|e| ClientError::InvalidUrl(format!("{target:?}: {e}")))?;
        let h = req.headers_mut();
        h.insert(
            HOST,
            HeaderValue::from_str(addr_text)
                .map_err(|_| ClientError::InvalidUrl(format!("bad host {addr_text:?}")))?,
        );
        h.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("swarmbak/", env!("CARGO_PKG_VERSION"))),
        );
        h.insert(CONNECTION, HeaderValue::from_static("close"));
        if let Some(pk) = &self.passkey {
            if let Ok(v) = HeaderValue::from_str(&format!("Bearer {pk}")) {
                h.insert(hyper::header::AUTHORIZATION, v);
            }
        }
        for (name, value) in headers {
            let (Ok(n), Ok(v)) = (
                hyper::header::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                return Err(ClientError::InvalidUrl(format!("bad header {name}")));
            };
            h.insert(n, v);
        }
        if req.method() == Method::POST {
            req.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-bittorrent"),
            );
        }
        Ok(req)
    }
}

/// One request on a fresh connection (plain or TLS), and its reply.
pub(crate) async fn send<S>(
    stream: S,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Io(e.to_string()))?;
    let conn_task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_REPLY_BYTES)
            .collect()
            .await
            .map_err(|e| ClientError::Io(format!("reading the reply: {e}")))?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    drop(sender);
    conn_task.abort();
    result
}

fn http_error(status: StatusCode, body: &[u8]) -> ClientError {
    #[derive(Deserialize)]
    struct E {
        error: String,
    }
    let message = serde_json::from_slice::<E>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| status.canonical_reason().unwrap_or("error").to_owned());
    ClientError::Http {
        status: status.as_u16(),
        message,
    }
}

fn bt_reply<T>(
    status: StatusCode,
    body: &[u8],
    parse: fn(&[u8]) -> Result<T, ReplyError>,
) -> Result<T, ClientError> {
    match parse(body) {
        Ok(v) if status.is_success() => Ok(v),
        Err(ReplyError::Failure(m)) => Err(ClientError::Failure(m)),
        _ if !status.is_success() => Err(http_error(status, body)),
        Err(ReplyError::Malformed(m)) => Err(ClientError::BadResponse(m)),
        Ok(_) => Err(http_error(status, body)),
    }
}

fn json_reply<T: serde::de::DeserializeOwned>(
    status: StatusCode,
    body: &[u8],
) -> Result<T, ClientError> {
    if !status.is_success() {
        return Err(http_error(status, body));
    }
    serde_json::from_slice(body).map_err(|e| ClientError::BadResponse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = TrackerClient::new("http://127.0.0.1:6969").unwrap();
        assert_eq!(c.announce_url(), "http://127.0.0.1:6969/announce");
        assert_eq!(c.scrape_url(), "http://127.0.0.1:6969/scrape");
        assert_eq!(c.api_base, "");
        let c = TrackerClient::new("http://tracker.example:80/bt/announce.php").unwrap();
        assert_eq!(c.scrape_url(), "http://tracker.example:80/bt/scrape.php");
        assert_eq!(c.api_base, "/bt");
        let c = TrackerClient::new("http://[::1]:7000/x/").unwrap();
        assert_eq!(c.announce_url(), "http://[::1]:7000/x/announce");
        let c = TrackerClient::new("http://h/announce?pk=abc").unwrap();
        assert_eq!(c.bt_target(&c.announce_path, "a=1"), "/announce?pk=abc&a=1");
        let c = TrackerClient::new("https://h/x").unwrap();
        assert_eq!(c.announce_url(), "https://h:443/x/announce");
        assert!(c.is_https());
        assert!(matches!(
            TrackerClient::new("udp://h:1"),
            Err(ClientError::Unsupported(_))
        ));
        for bad in [
            "h:1",
            "http://",
            "http://h:0",
            "http://h:x",
            "http://u@h:1",
            "https://u@h:1",
        ] {
            assert!(
                matches!(TrackerClient::new(bad), Err(ClientError::InvalidUrl(_))),
                "{bad}"
            );
        }
    }

    /// A roster is read as the tracker writes it (tracker.md §7.9); one missing a field
    /// is an unreadable reply, and an error status the tracker's message.
    #[test]
    fn roster_replies() {
        let body = br#"{"window": 300, "now": 1763900000, "machines": [{"certificate": "AAEC-_8", "last_seen": 1763899990}]}"#;
        let r: Roster = json_reply(StatusCode::OK, body).unwrap();
        assert_eq!(
            r,
            Roster {
                window: 300,
                now: 1_763_900_000,
                machines: vec![RosterEntry {
                    certificate: "AAEC-_8".into(),
                    last_seen: 1_763_899_990,
                }],
            }
        );
        assert_eq!(
            swarmbak_trust::from_b64(&r.machines[0].certificate).unwrap(),
            [0, 1, 2, 0xfb, 0xff]
        );
        let back: Roster = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let e = json_reply::<Roster>(
            StatusCode::OK,
            br#"{"window": 300, "now": 1, "machines": [{"certificate": "AA"}]}"#,
        )
        .unwrap_err();
        assert!(matches!(e, ClientError::BadResponse(_)), "{e}");
        let e = json_reply::<Roster>(StatusCode::FORBIDDEN, br#"{"error": "passkey revoked"}"#)
            .unwrap_err();
        assert_eq!(
            e,
            ClientError::Http {
                status: 403,
                message: "passkey revoked".into()
            }
        );
    }

    /// An https tracker is never spoken to without a pin: refused before connecting
    /// (port 1 would refuse the connection: a `Connect` error would mean it tried).
    #[tokio::test]
    async fn https_needs_a_pin() {
        let c = TrackerClient::new("https://127.0.0.1:1").unwrap();
        let err = c.scrape(&[]).await.unwrap_err();
        assert!(matches!(err, ClientError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("SHA-256"), "{err}");
        assert!(!err.is_retryable());
        // With a pin it connects (and here finds nobody).
        let err = c.with_tls_pin([1; 32]).scrape(&[]).await.unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    }
}
