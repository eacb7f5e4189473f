//! The tracker's HTTP server (hyper on tokio, HTTP/1.1 with keep-alive).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use swarmbak_bencode::Encoder;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::proto::{encode_failure, AnnounceRequest, InfoHash};
use crate::query::{decoded_pairs, percent_decode_into, raw_pairs, text_param};
use crate::store::{LoadReport, PublishError, Store};
use crate::swarm::{PeerAnnounce, Swarms};

/// The failure reason for an announce or scrape of a torrent nobody published.
pub const UNKNOWN_TORRENT: &str = "unknown torrent: not published to this tracker";

/// How the tracker behaves.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// Where published metainfo and the index live.
    pub data_dir: PathBuf,
    /// `interval` sent to peers (default 60 s).
    pub interval: Duration,
    /// `min interval` sent to peers (default 30 s).
    pub min_interval: Duration,
    /// Peers not heard from for this long are dropped (default: twice `interval`).
    pub peer_timeout: Option<Duration>,
    /// Peers returned when the announce has no `numwant` (default 50).
    pub default_numwant: usize,
    /// Most peers returned (default 200).
    pub max_numwant: usize,
    /// Longest request target (path and query) accepted (default 8 KiB; longer: 414).
    pub max_url_len: usize,
    /// Largest `POST /publish` body (default 16 MiB; larger: 413).
    pub max_publish_bytes: usize,
    /// Use the announce's `ip` parameter instead of the connection's address (default
    /// false: the parameter is ignored, as a tracker not behind a trusted proxy must).
    pub trust_ip_param: bool,
    /// Most connections served at once (default 4096); more wait to be accepted.
    pub max_connections: usize,
    /// Most info-hashes answered in one scrape (default 256; the rest are ignored).
    pub max_scrape_hashes: usize,
}

impl TrackerConfig {
    /// Defaults, with state in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> TrackerConfig {
        TrackerConfig {
            data_dir: data_dir.into(),
            interval: Duration::from_secs(60),
            min_interval: Duration::from_secs(30),
            peer_timeout: None,
            default_numwant: 50,
            max_numwant: 200,
            max_url_len: 8 * 1024,
            max_publish_bytes: 16 << 20,
            trust_ip_param: false,
            max_connections: 4096,
            max_scrape_hashes: 256,
        }
    }

    fn peer_timeout(&self) -> Duration {
        self.peer_timeout.unwrap_or(self.interval * 2)
    }
}

/// Why the tracker could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// The data directory could not be opened or read.
    #[error("tracker data directory {path}: {source}")]
    Data {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Accepting connections failed.
    #[error("accepting connections: {0}")]
    Accept(std::io::Error),
}

struct Shared {
    config: TrackerConfig,
    swarms: Swarms,
    store: Mutex<Store>,
    started: Instant,
}

/// A tracker with its state loaded, ready to serve.
pub struct Tracker {
    shared: Arc<Shared>,
    report: LoadReport,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Tracker {
    /// Opens the data directory (creating it) and loads what was published before.
    /// Blocking file I/O: call it before serving, or from `spawn_blocking`.
    pub fn open(config: TrackerConfig) -> Result<Tracker, TrackerError> {
        let (store, report) =
            Store::open(&config.data_dir).map_err(|source| TrackerError::Data {
                path: config.data_dir.clone(),
                source,
            })?;
        let swarms = Swarms::new(config.peer_timeout());
        for r in store.records() {
            if let Ok(ih) = InfoHash::from_hex(&r.infohash) {
                swarms.add_torrent(ih);
            }
        }
        Ok(Tracker {
            shared: Arc::new(Shared {
                config,
                swarms,
                store: Mutex::new(store),
                started: Instant::now(),
            }),
            report,
        })
    }

    /// What loading the data directory found (records, a torn index tail, ...).
    pub fn load_report(&self) -> &LoadReport {
        &self.report
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) -> Result<(), TrackerError> {
        self.serve_until(listener, std::future::pending()).await
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting, lets
    /// requests in flight finish (at most 5 s) and returns.
    pub async fn serve_until(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), TrackerError> {
        let shared = self.shared;
        let (stop_tx, stop_rx) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(shared.config.max_connections.max(1)));
        let sweeper = {
            let shared = shared.clone();
            let mut stop = stop_rx.clone();
            let every = (shared.config.peer_timeout() / 2).max(Duration::from_millis(100));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = tick.tick() => { shared.swarms.sweep_all(Instant::now()); }
                        _ = stop.changed() => break,
                    }
                }
            })
        };
        tokio::pin!(shutdown);
        let result = loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break Ok(()),
                },
                _ = &mut shutdown => break Ok(()),
            };
            let (stream, remote) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) if is_transient(&e) => {
                        // Out of file descriptors and the like: wait a little.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(e) => break Err(TrackerError::Accept(e)),
                },
                _ = &mut shutdown => break Ok(()),
            };
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                serve_connection(shared, stream, remote, stop).await;
                // Only now: every reference to the shared state is gone.
                drop(permit);
            });
        };
        let _ = stop_tx.send(true);
        let _ = sweeper.await;
        drop(listener);
        // Wait for the connections to finish (each holds a permit).
        let all = u32::try_from(shared.config.max_connections.max(1)).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(Duration::from_secs(6), permits.acquire_many(all)).await;
        result
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let max_buf = shared.config.max_url_len.max(8192) + 8192;
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, remote, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(20))
        .max_buf_size(max_buf)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || e.raw_os_error().is_some_and(|c| c == 23 || c == 24) // ENFILE, EMFILE
}

/// Opens `config.data_dir` and serves on `listener` forever: what `swarmbak tracker`
/// runs (it binds the listener itself, so it can print the bound address first).
pub async fn serve(listener: TcpListener, config: TrackerConfig) -> Result<(), TrackerError> {
    let tracker = tokio::task::spawn_blocking(move || Tracker::open(config))
        .await
        .map_err(|e| TrackerError::Data {
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        })??;
    tracker.serve(listener).await
}

type Resp = Response<Full<Bytes>>;

fn response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn bencoded(body: Vec<u8>) -> Resp {
    response(StatusCode::OK, "text/plain", body)
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Resp {
    match serde_json::to_vec(v) {
        Ok(b) => response(status, "application/json", b),
        Err(_) => response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            &b"{\"error\":\"internal\"}"[..],
        ),
    }
}

fn json_error(status: StatusCode, msg: impl Into<String>) -> Resp {
    #[derive(Serialize)]
    struct E {
        error: String,
    }
    json(status, &E { error: msg.into() })
}

async fn handle(shared: &Arc<Shared>, remote: SocketAddr, req: Request<Incoming>) -> Resp {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("").as_bytes();
    let target_len = req
        .uri()
        .path_and_query()
        .map_or(path.len(), |p| p.as_str().len());
    let is_bt = path.starts_with("/an") || path.starts_with("/sc");
    if target_len > shared.config.max_url_len {
        return if is_bt {
            bencoded(encode_failure("request URL too long"))
        } else {
            json_error(StatusCode::URI_TOO_LONG, "request URL too long")
        };
    }
    let method = req.method().clone();
    if path.starts_with("/an") {
        return match method {
            Method::GET | Method::HEAD => announce(shared, remote, query),
            _ => bencoded(encode_failure("announce takes GET")),
        };
    }
    if path.starts_with("/sc") {
        return match method {
            Method::GET | Method::HEAD => scrape(shared, query),
            _ => bencoded(encode_failure("scrape takes GET")),
        };
    }
    match (method, path) {
        (Method::POST | Method::PUT, "/publish") => publish(shared, req).await,
        (Method::GET | Method::HEAD, p) if p.starts_with("/metainfo/") => {
            metainfo(shared, &p["/metainfo/".len()..]).await
        }
        (Method::GET | Method::HEAD, "/snapshots") => snapshots(shared, query),
        (Method::GET | Method::HEAD, "/machines") => {
            let mut list = lock_store(shared).machines();
            let online = shared.swarms.online_machines();
            for m in &mut list {
                m.online = online.contains(&hex::encode(&m.machine_key))
                    || online.contains(&m.machine_key);
            }
            json(StatusCode::OK, &list)
        }
        (Method::GET | Method::HEAD, "/" | "/health") => health(shared),
        (_, "/publish" | "/snapshots" | "/machines" | "/" | "/health") => {
            json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        (_, p) if p.starts_with("/metainfo/") => {
            json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => json_error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

fn lock_store(shared: &Shared) -> std::sync::MutexGuard<'_, Store> {
    shared.store.lock().unwrap_or_else(|p| p.into_inner())
}

fn canonical(addr: SocketAddr) -> IpAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        ip => ip,
    }
}

fn announce(shared: &Shared, remote: SocketAddr, query: &[u8]) -> Resp {
    let req = match AnnounceRequest::parse_query(query) {
        Ok(r) => r,
        Err(msg) => return bencoded(encode_failure(&msg)),
    };
    let cfg = &shared.config;
    let mut ip = canonical(remote);
    if cfg.trust_ip_param {
        if let Some(claimed) = req.ip.as_deref().and_then(|s| s.parse::<IpAddr>().ok()) {
            ip = claimed;
        }
    }
    let numwant = req
        .numwant
        .map_or(cfg.default_numwant, |n| n as usize)
        .min(cfg.max_numwant);
    let a = PeerAnnounce {
        peer_id: &req.peer_id,
        addr: SocketAddr::new(ip, req.port),
        left: req.left,
        event: req.event,
        numwant,
        compact: req.compact,
        machine: req.machine.as_deref(),
        // Until announces carry a passkey, every announce is open: its owner is the address.
        owner: crate::swarm::ip_owner(ip),
        max_per_owner: crate::swarm::MAX_PEERS_PER_ADDRESS_OWNER,
        no_peer_id: req.no_peer_id,
    };
    let mut enc = Encoder::with_capacity(96 + numwant * if req.compact { 6 } else { 64 });
    enc.begin_dict();
    let intervals = (
        cfg.interval.as_secs().max(1) as i64,
        cfg.min_interval.as_secs() as i64,
    );
    match shared
        .swarms
        .announce(&req.info_hash, &a, Instant::now(), intervals, &mut enc)
    {
        None => bencoded(encode_failure(UNKNOWN_TORRENT)),
        Some(_) => {
            enc.end();
            match enc.finish() {
                Ok(b) => bencoded(b),
                Err(_) => bencoded(encode_failure("internal error")),
            }
        }
    }
}

fn scrape(shared: &Shared, query: &[u8]) -> Resp {
    let mut wanted: Vec<InfoHash> = Vec::new();
    let mut buf = Vec::with_capacity(20);
    for (k, v) in raw_pairs(query) {
        if k != b"info_hash" {
            continue;
        }
        if let Err(e) = percent_decode_into(v, &mut buf) {
            return bencoded(encode_failure(&e.0));
        }
        let Ok(ih) = <[u8; 20]>::try_from(buf.as_slice()).map(InfoHash) else {
            return bencoded(encode_failure(&format!(
                "invalid info_hash ({} bytes, not 20)",
                buf.len()
            )));
        };
        if wanted.len() < shared.config.max_scrape_hashes {
            wanted.push(ih);
        }
    }
    let now = Instant::now();
    let mut files: BTreeMap<InfoHash, (crate::swarm::Counts, String)> = BTreeMap::new();
    {
        let store = lock_store(shared);
        if wanted.is_empty() {
            for r in store.records() {
                let Ok(ih) = InfoHash::from_hex(&r.infohash) else {
                    continue;
                };
                if let Some(c) = shared.swarms.counts(&ih, now) {
                    files.insert(ih, (c, r.name.clone()));
                }
            }
        } else {
            for ih in wanted {
                if let (Some(r), Some(c)) = (store.get(&ih), shared.swarms.counts(&ih, now)) {
                    files.insert(ih, (c, r.name.clone()));
                }
            }
        }
    }
    let mut enc = Encoder::with_capacity(16 + files.len() * 100);
    enc.begin_dict().key(b"files").begin_dict();
    for (ih, (c, name)) in &files {
        enc.key(ih.as_ref())
            .begin_dict()
            .key(b"complete")
            .int(c.complete as i64)
            .key(b"downloaded")
            .int(c.downloaded as i64)
            .key(b"incomplete")
            .int(c.incomplete as i64);
        if !name.is_empty() {
            enc.key(b"name").str(name);
        }
        enc.end();
    }
    enc.end().end();
    match enc.finish() {
        Ok(b) => bencoded(b),
        Err(_) => bencoded(encode_failure("internal error")),
    }
}

async fn publish(shared: &Arc<Shared>, req: Request<Incoming>) -> Resp {
    let max = shared.config.max_publish_bytes;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("torrent larger than {max} bytes"),
        );
    }
    let pairs = match decoded_pairs(req.uri().query().unwrap_or("").as_bytes()) {
        Ok(p) => p,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.0),
    };
    let (key, name) = match (text_param(&pairs, "machine"), text_param(&pairs, "name")) {
        (Ok(Some(k)), Ok(Some(n))) => (k, n),
        (Err(e), _) | (_, Err(e)) => return json_error(StatusCode::BAD_REQUEST, e.0),
        _ => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "publish needs `machine` (the machine key) and `name` (the machine name)",
            )
        }
    };
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("torrent larger than {max} bytes"),
                )
            } else {
                json_error(StatusCode::BAD_REQUEST, format!("reading body: {e}"))
            };
        }
    };
    let sh = shared.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut store = lock_store(&sh);
        let r = store.publish(&body, &key, &name, unix_now());
        if let Ok((rec, _)) = &r {
            if let Ok(ih) = InfoHash::from_hex(&rec.infohash) {
                sh.swarms.add_torrent(ih);
            }
        }
        r
    })
    .await;
    #[derive(Serialize)]
    struct Published {
        infohash: String,
        new: bool,
        published: i64,
    }
    match result {
        Ok(Ok((rec, new))) => json(
            if new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &Published {
                infohash: rec.infohash,
                new,
                published: rec.published,
            },
        ),
        Ok(Err(PublishError::Invalid(m))) => json_error(StatusCode::BAD_REQUEST, m),
        Ok(Err(PublishError::Conflict(m))) => json_error(StatusCode::CONFLICT, m),
        Ok(Err(e @ PublishError::Io(_))) => {
            json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        Err(_) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "publish failed"),
    }
}

async fn metainfo(shared: &Arc<Shared>, hex_ih: &str) -> Resp {
    let hex_ih = hex_ih.strip_suffix(".torrent").unwrap_or(hex_ih);
    let Ok(ih) = InfoHash::from_hex(hex_ih) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "expected /metainfo/<40 hex digits>",
        );
    };
    let path = {
        let store = lock_store(shared);
        if store.get(&ih).is_none() {
            return json_error(StatusCode::NOT_FOUND, "unknown torrent");
        }
        store.torrent_path(&ih)
    };
    match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
        Ok(Ok(bytes)) => response(StatusCode::OK, "application/x-bittorrent", bytes),
        _ => json_error(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the torrent"),
    }
}

fn snapshots(shared: &Shared, query: &[u8]) -> Resp {
    let pairs = match decoded_pairs(query) {
        Ok(p) => p,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.0),
    };
    let machine = match text_param(&pairs, "machine") {
        Ok(m) => m.filter(|m| !m.is_empty()),
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.0),
    };
    let list = lock_store(shared).snapshots(machine.as_deref());
    json(StatusCode::OK, &list)
}

fn health(shared: &Shared) -> Resp {
    #[derive(Serialize)]
    struct Health {
        status: &'static str,
        service: &'static str,
        version: &'static str,
        torrents: usize,
        machines: usize,
        peers: usize,
        uptime_seconds: u64,
    }
    let (torrents, machines) = {
        let s = lock_store(shared);
        (s.records().len(), s.machines().len())
    };
    json(
        StatusCode::OK,
        &Health {
            status: "ok",
            service: "swarmbak-tracker",
            version: env!("CARGO_PKG_VERSION"),
            torrents,
            machines,
            peers: shared.swarms.peer_count(),
            uptime_seconds: shared.started.elapsed().as_secs(),
        },
    )
}
