//! The tracker's HTTP server (hyper on tokio, HTTP/1.1 with keep-alive), on plain TCP
//! and/or TLS (rustls; tracker.md §7.5): the same service on every listener.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use swarmbak_bencode::Encoder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::admin::{self, AdminError};
use crate::directory::{Directory, Member, Snapshots};
use crate::org::{is_passkey, Org};
use crate::proto::{encode_failure, AnnounceRequest, InfoHash};
use crate::query::{decoded_pairs, text_param};
use crate::sqlite::{ImportReport, Sqlite};
use crate::storage::{
    OrgSchedule, Published, Retired, RetirementRow, SnapshotRow, Storage, StorageError,
};
use crate::store::{check_machine_key, check_machine_name};
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
    /// Today's open tracker (`--open`): no passkeys, unsigned publishes under any name.
    /// Off by default: the tracker is private (tracker.md §7).
    pub open: bool,
    /// The base URL machines reach the tracker at, written into enrolment tokens
    /// (default: `http://` and the address it listens on).
    pub public_url: Option<String>,
    /// The organisation's recovery recipients (`age1…`); when not empty, they replace the
    /// stored set at start.
    pub recovery_recipients: Vec<String>,
    /// How often the database is checked for changes other processes made (default 1 s;
    /// `swarmbak tracker revoke` also asks the running tracker to reload at once).
    pub reload_every: Duration,
    /// How often online spans are written (default 30 s).
    pub online_flush: Duration,
    /// A request body must arrive within this (default 30 s; later: 408).
    pub body_timeout: Duration,
    /// Publish bytes being received at once, all publishes together (default 64 MiB):
    /// beyond it a publish is answered 503 at once, before its body is read.
    pub max_publish_in_flight: usize,
    /// Publishes being received at once (default 16; more: 503 at once).
    pub max_publishes_at_once: usize,
    /// Most pieces a published snapshot may have (default 2^20).
    pub max_pieces: usize,
    /// Longest a TLS client may take over its handshake before it is dropped (default
    /// 10 s). The handshake runs in the connection's task, never in the accept loop.
    pub tls_handshake_timeout: Duration,
    /// When a machine counts as overdue (tracker.md §10.1; 10 and 30 days by default).
    pub overdue: crate::status::Thresholds,
    /// How often alerts are evaluated (tracker.md §10.4; default 5 minutes).
    pub alert_every: Duration,
    /// An open alert is notified again at most this often (default one day).
    pub alert_repeat: Duration,
    /// Where alerts are POSTed as JSON (`http://` only), if anywhere.
    pub alert_webhook: Option<String>,
    /// A machine is on the roster (tracker.md §7.9) when it was seen (announced or asked
    /// for the roster) at most this long ago (default 5 minutes; whole seconds, at least
    /// one).
    pub roster_window: Duration,
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
            open: false,
            public_url: None,
            recovery_recipients: Vec::new(),
            reload_every: Duration::from_secs(1),
            online_flush: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_publish_in_flight: 64 << 20,
            max_publishes_at_once: 16,
            max_pieces: 1 << 20,
            tls_handshake_timeout: Duration::from_secs(10),
            overdue: crate::status::Thresholds::default(),
            alert_every: Duration::from_secs(300),
            alert_repeat: Duration::from_secs(86_400),
            alert_webhook: None,
            roster_window: Duration::from_secs(DEFAULT_ROSTER_WINDOW),
        }
    }

    pub(crate) fn peer_timeout(&self) -> Duration {
        self.peer_timeout.unwrap_or(self.interval * 2)
    }

    /// The roster window in whole seconds, at least one (what the roster answers as
    /// `window`, tracker.md §7.9).
    pub(crate) fn roster_window_secs(&self) -> u64 {
        self.roster_window.as_secs().max(1)
    }
}

/// The roster window when none is given, seconds (tracker.md §7.9): five minutes, several
/// announce intervals (60 s by default), so that a machine up and announcing stays listed
/// through a late or lost announce.
pub const DEFAULT_ROSTER_WINDOW: u64 = 300;

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
    /// The database could not be opened.
    #[error("tracker database in {path}: {source}")]
    Storage {
        /// The data directory.
        path: PathBuf,
        /// The error.
        source: StorageError,
    },
    /// The organisation's keys could not be read or made.
    #[error(transparent)]
    Org(#[from] crate::org::OrgError),
    /// A bad setting.
    #[error("{0}")]
    Config(String),
    /// The TLS certificate or key.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A socket the tracker accepts connections on: plain HTTP, or HTTPS with the tracker's
/// certificate (the handshake is done in each connection's task).
pub struct Listener {
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Listener {
    /// Plain HTTP on `tcp`.
    pub fn plain(tcp: TcpListener) -> Listener {
        Listener { tcp, tls: None }
    }

    /// HTTPS on `tcp` with `config` (see [`crate::tls::TlsIdentity::server_config`]).
    pub fn tls(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> Listener {
        Listener {
            tcp,
            tls: Some(tokio_rustls::TlsAcceptor::from(config)),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Serves TLS?
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

pub(crate) struct Shared {
    pub(crate) config: TrackerConfig,
    pub(crate) swarms: Swarms,
    db: Mutex<Box<dyn Storage>>,
    snaps: RwLock<Snapshots>,
    dir: RwLock<Directory>,
    /// The organisation's schedule settings (tracker.md §7.7), read again with `dir`.
    schedule: RwLock<OrgSchedule>,
    /// The database's `data_version` when `dir` was built.
    dir_version: Mutex<i64>,
    /// The addresses last recorded in the database (recorded once, not at every start of
    /// `serve` after `swarmbak tracker` recorded them before printing `listening`).
    recorded: Mutex<Option<(Option<SocketAddr>, Option<SocketAddr>)>>,
    pub(crate) org: Org,
    /// The admin API's token (DATA/admin-token), read again when the database changes
    /// (`swarmbak tracker rotate-admin-token` records a rotation there).
    pub(crate) admin_token: RwLock<String>,
    /// The dashboard's sessions.
    pub(crate) sessions: crate::web::Sessions,
    /// The counters of `/metrics`.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Bytes of publish bodies being received (permits are bytes).
    publish_bytes: Semaphore,
    /// Publishes being received.
    publish_slots: Semaphore,
    started: Instant,
    // Held while the tracker runs: a second tracker on the same DATA is refused.
    _lock: fd_lock::RwLock<std::fs::File>,
}

/// A tracker with its state loaded, ready to serve.
pub struct Tracker {
    shared: Arc<Shared>,
    report: ImportReport,
    /// The UDP socket served beside the HTTP listener (BEP 15), if any.
    udp: Option<tokio::net::UdpSocket>,
}

/// Now, in Unix seconds (the tracker's clock for records, tokens and expiry).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn lock_data_dir(dir: &std::path::Path) -> std::io::Result<fd_lock::RwLock<std::fs::File>> {
    std::fs::create_dir_all(dir)?;
    let mut lock = fd_lock::RwLock::new(
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?,
    );
    match lock.try_write() {
        // Keep the lock until the file is closed (when the tracker is dropped).
        Ok(guard) => std::mem::forget(guard),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "in use by another tracker (DATA/lock is held)",
            ))
        }
        Err(e) => return Err(e),
    }
    Ok(lock)
}

impl Tracker {
    /// Opens the data directory (creating it, the organisation key and the database the
    /// first time; importing a v1 directory once) and loads what was published before.
    /// Blocking file I/O: call it before serving, or from `spawn_blocking`.
    pub fn open(config: TrackerConfig) -> Result<Tracker, TrackerError> {
        let data = config.data_dir.clone();
        let lock = lock_data_dir(&data).map_err(|source| TrackerError::Data {
            path: data.clone(),
            source,
        })?;
        let org = Org::open(&data)?;
        let storage_err = |source| TrackerError::Storage {
            path: data.clone(),
            source,
        };
        let (mut db, report) = Sqlite::open(&data).map_err(storage_err)?;
        if !config.recovery_recipients.is_empty() {
            for r in &config.recovery_recipients {
                if !r.starts_with("age1") {
                    return Err(TrackerError::Config(format!(
                        "--recovery-recipient takes an age public key (age1...), not {r:?}"
                    )));
                }
            }
            db.set_setting(
                admin::RECOVERY_SETTING,
                &config.recovery_recipients.join("\n"),
            )
            .map_err(storage_err)?;
        }
        let rows = db.snapshots().map_err(storage_err)?;
        let retirements = db.retirements().map_err(storage_err)?;
        let machines = db.machines().map_err(storage_err)?;
        let schedule = org_schedule_or_default(&mut db, OrgSchedule::default());
        let activity = db.activity().map_err(storage_err)?;
        let version = db.data_version().map_err(storage_err)?;
        let dir = Directory::build(&machines, &Directory::default());
        seed_last_success(&dir, &machines, &activity, &rows);
        let swarms = Swarms::new(config.peer_timeout());
        for r in &rows {
            if config.open || r.record.is_some() {
                swarms.add_torrent(InfoHash(r.infohash));
            }
        }
        let mut snaps = Snapshots::new(rows);
        snaps.set_retirements(&retirements);
        Ok(Tracker {
            shared: Arc::new(Shared {
                swarms,
                db: Mutex::new(Box::new(db)),
                snaps: RwLock::new(snaps),
                dir: RwLock::new(dir),
                schedule: RwLock::new(schedule),
                dir_version: Mutex::new(version),
                recorded: Mutex::new(None),
                admin_token: RwLock::new(org.admin_token.clone()),
                sessions: crate::web::Sessions::default(),
                metrics: crate::metrics::Metrics::default(),
                org,
                publish_bytes: Semaphore::new(config.max_publish_in_flight.max(1)),
                publish_slots: Semaphore::new(config.max_publishes_at_once.max(1)),
                started: Instant::now(),
                _lock: lock,
                config,
            }),
            report,
            udp: None,
        })
    }

    /// What opening the data directory found (a v1 import, ...).
    pub fn load_report(&self) -> &ImportReport {
        &self.report
    }

    /// Records where the tracker listens in plain HTTP and in TLS: with TLS, the URL
    /// tokens carry is `https://` and the TLS address (unless `public_url` is set), and
    /// `swarmbak tracker revoke` reaches the admin API over TLS.
    pub fn record_addresses(&self, plain: Option<SocketAddr>, tls: Option<SocketAddr>) {
        record_address(&self.shared, plain, tls);
    }

    /// The tracker's TLS identity for a TLS listener on `tls_listen`: the
    /// administrator's own certificate and key (`own`, PEM files), else `DATA/tls.crt`
    /// and `DATA/tls.key`, made the first time (naming the public URL's host,
    /// `localhost` and the listen address) and never replaced. Its SHA-256 is recorded
    /// (setting [`admin::TLS_SETTING`]) so that `https://` enrolment tokens pin it.
    /// Blocking file I/O.
    pub fn tls_identity(
        &self,
        own: Option<(&std::path::Path, &std::path::Path)>,
        tls_listen: SocketAddr,
    ) -> Result<crate::tls::TlsIdentity, TrackerError> {
        let sh = &self.shared;
        let id = match own {
            Some((cert, key)) => crate::tls::TlsIdentity::from_files(cert, key)?,
            None => {
                let url = public_url(sh, None, Some(tls_listen));
                let names = crate::tls::subject_names(Some(&url), Some(tls_listen.ip()));
                crate::tls::TlsIdentity::load_or_create(&sh.config.data_dir, &names)?
            }
        };
        lock_db(sh)
            .set_setting(admin::TLS_SETTING, &id.sha256_hex())
            .map_err(|source| TrackerError::Storage {
                path: sh.config.data_dir.clone(),
                source,
            })?;
        Ok(id)
    }

    /// The shared state (unit tests of the UDP server).
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The organisation's public key.
    pub fn org_key(&self) -> swarmbak_trust::PublicKey {
        self.shared.org.public()
    }

    /// Also serves the UDP tracker protocol (BEP 15, with BEP 41 passkeys; tracker.md §9)
    /// on `socket` when serving: `serve` and `serve_until` run it beside the HTTP
    /// listener and stop it with them.
    pub fn with_udp(mut self, socket: tokio::net::UdpSocket) -> Tracker {
        self.udp = Some(socket);
        self
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) -> Result<(), TrackerError> {
        self.serve_until(listener, std::future::pending()).await
    }

    /// Serves plain HTTP on `listener` until `shutdown` completes, then stops accepting,
    /// lets requests in flight finish (at most 5 s) and returns.
    pub async fn serve_until(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), TrackerError> {
        self.serve_listeners_until(vec![Listener::plain(listener)], shutdown)
            .await
    }

    /// Serves the same service on every listener (plain and TLS) until `shutdown`
    /// completes or one of them fails, then stops accepting, lets requests in flight
    /// finish (at most 5 s) and returns. The connection limit is shared.
    pub async fn serve_listeners_until(
        self,
        listeners: Vec<Listener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), TrackerError> {
        if listeners.is_empty() {
            return Err(TrackerError::Config(
                "the tracker needs at least one listener (--listen or --tls-listen)".into(),
            ));
        }
        let shared = self.shared;
        let (stop_tx, stop_rx) = watch::channel(false);
        let udp = self
            .udp
            .map(|socket| tokio::spawn(crate::udp::serve(shared.clone(), socket, stop_rx.clone())));
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
        let background = {
            let shared = shared.clone();
            let stop = stop_rx.clone();
            let plain = listeners
                .iter()
                .find(|l| !l.is_tls())
                .and_then(|l| l.local_addr().ok());
            let tls = listeners
                .iter()
                .find(|l| l.is_tls())
                .and_then(|l| l.local_addr().ok());
            tokio::spawn(background(shared, stop, plain, tls))
        };
        let alerts = tokio::spawn(crate::alerts::run(shared.clone(), stop_rx.clone()));
        // One accept loop per listener; the first to fail ends the service.
        let (ended_tx, mut ended_rx) = tokio::sync::mpsc::channel(listeners.len());
        let loops: Vec<_> = listeners
            .into_iter()
            .map(|l| {
                let shared = shared.clone();
                let permits = permits.clone();
                let stop = stop_rx.clone();
                let ended = ended_tx.clone();
                tokio::spawn(async move {
                    let r = accept_loop(shared, l, permits, stop).await;
                    let _ = ended.send(r).await;
                })
            })
            .collect();
        drop(ended_tx);
        let result = tokio::select! {
            _ = shutdown => Ok(()),
            r = ended_rx.recv() => r.unwrap_or(Ok(())),
        };
        let _ = stop_tx.send(true);
        for l in loops {
            let _ = l.await;
        }
        let _ = sweeper.await;
        let _ = background.await;
        let _ = alerts.await;
        if let Some(udp) = udp {
            let _ = udp.await;
        }
        // Wait for the connections to finish (each holds a permit).
        let all = u32::try_from(shared.config.max_connections.max(1)).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(Duration::from_secs(6), permits.acquire_many(all)).await;
        result
    }
}

/// Accepts connections on `listener` until `stop`; each is served in its own task
/// (after its TLS handshake, on a TLS listener), holding a permit.
async fn accept_loop(
    shared: Arc<Shared>,
    listener: Listener,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), TrackerError> {
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return Ok(()),
            },
            _ = stop.changed() => return Ok(()),
        };
        let (stream, remote) = tokio::select! {
            r = listener.tcp.accept() => match r {
                Ok(x) => x,
                Err(e) if is_transient(&e) => {
                    // Out of file descriptors and the like: wait a little.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return Err(TrackerError::Accept(e)),
            },
            _ = stop.changed() => return Ok(()),
        };
        let shared = shared.clone();
        let stop = stop.clone();
        let tls = listener.tls.clone();
        tokio::spawn(async move {
            match tls {
                None => crate::plain::serve(shared, stream, remote, stop).await,
                Some(acceptor) => {
                    let _ = stream.set_nodelay(true);
                    let limit = shared.config.tls_handshake_timeout;
                    // A client that never finishes its handshake holds only this task.
                    if let Ok(Ok(tls)) = tokio::time::timeout(limit, acceptor.accept(stream)).await
                    {
                        serve_connection(shared, tls, remote, true, stop).await;
                    }
                }
            }
            // Only now: every reference to the shared state is gone.
            drop(permit);
        });
    }
}

/// How long a client may take to send a request head (hyper's `header_read_timeout`
/// and the plain fast path's, `crate::plain`).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) async fn serve_connection<S>(
    shared: Arc<Shared>,
    stream: S,
    remote: SocketAddr,
    tls: bool,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let max_buf = shared.config.max_url_len.max(8192) + 8192;
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        async move {
            let t0 = Instant::now();
            let r = handle(&shared, remote, tls, req).await;
            shared.metrics.observe(t0.elapsed());
            Ok::<_, Infallible>(r)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
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

pub(crate) type Resp = Response<Full<Bytes>>;

pub(crate) fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn bencoded(body: Vec<u8>) -> Resp {
    response(StatusCode::OK, "text/plain", body)
}

pub(crate) fn json<T: Serialize>(status: StatusCode, v: &T) -> Resp {
    match serde_json::to_vec(v) {
        Ok(b) => response(status, "application/json", b),
        Err(_) => response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            &b"{\"error\":\"internal\"}"[..],
        ),
    }
}

pub(crate) fn json_error(status: StatusCode, msg: impl Into<String>) -> Resp {
    #[derive(Serialize)]
    struct E {
        error: String,
    }
    json(status, &E { error: msg.into() })
}

/// Runs beside the accept loop: records where the tracker listens (for enrolment tokens
/// and `swarmbak tracker revoke`), reloads the machines when another process changed the
/// database, and writes online spans.
async fn background(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    plain: Option<SocketAddr>,
    tls: Option<SocketAddr>,
) {
    if plain.is_some() || tls.is_some() {
        let sh = shared.clone();
        let _ = tokio::task::spawn_blocking(move || record_address(&sh, plain, tls)).await;
    }
    let mut reload =
        tokio::time::interval(shared.config.reload_every.max(Duration::from_millis(50)));
    let mut flush =
        tokio::time::interval(shared.config.online_flush.max(Duration::from_millis(50)));
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = reload.tick() => {
                let sh = shared.clone();
                let _ = tokio::task::spawn_blocking(move || reload_if_changed(&sh, false)).await;
            }
            _ = flush.tick() => {
                let sh = shared.clone();
                let _ = tokio::task::spawn_blocking(move || flush_online(&sh)).await;
            }
            _ = stop.changed() => {
                let sh = shared.clone();
                let _ = tokio::task::spawn_blocking(move || flush_online(&sh)).await;
                break;
            }
        }
    }
}

/// The URL machines reach the tracker at: `public_url` when set, else `https://` and
/// the TLS address when TLS is served, else `http://` and the plain address (the host
/// name for an unspecified address).
fn public_url(sh: &Shared, plain: Option<SocketAddr>, tls: Option<SocketAddr>) -> String {
    if let Some(u) = &sh.config.public_url {
        return u.trim_end_matches('/').to_owned();
    }
    let (scheme, local) = match (tls, plain) {
        (Some(t), _) => ("https", t),
        (None, Some(p)) => ("http", p),
        (None, None) => return String::new(),
    };
    if local.ip().is_unspecified() {
        format!("{scheme}://{}:{}", crate::org::host_name(), local.port())
    } else {
        format!("{scheme}://{local}")
    }
}

/// Records the URL enrolment tokens carry and the address `swarmbak tracker revoke`
/// reaches the running tracker at (`https://ADDR` when TLS is served, so that the admin
/// token never crosses in clear; else `ADDR`).
fn record_address(sh: &Shared, plain: Option<SocketAddr>, tls: Option<SocketAddr>) {
    let mut last = sh.recorded.lock().unwrap_or_else(|p| p.into_inner());
    if *last == Some((plain, tls)) {
        return;
    }
    let url = public_url(sh, plain, tls);
    let listen = match (tls, plain) {
        (Some(t), _) => format!("https://{t}"),
        (None, Some(p)) => p.to_string(),
        (None, None) => return,
    };
    let mut db = lock_db(sh);
    if let Err(e) = db
        .set_setting(admin::URL_SETTING, &url)
        .and_then(|()| db.set_setting(admin::LISTEN_SETTING, &listen))
    {
        eprintln!("swarmbak tracker: cannot record its address: {e}");
    } else {
        *last = Some((plain, tls));
    }
}

/// Rebuilds the machine directory and the snapshots' retirements from the database when
/// another connection changed it (or always, with `force`).
pub(crate) fn reload_if_changed(shared: &Shared, force: bool) -> Result<(), StorageError> {
    let mut db = lock_db(shared);
    let v = db.data_version()?;
    let mut seen = shared.dir_version.lock().unwrap_or_else(|p| p.into_inner());
    if !force && v == *seen {
        return Ok(());
    }
    let rows = db.machines()?;
    let retirements = db.retirements()?;
    let old = *shared.schedule.read().unwrap_or_else(|p| p.into_inner());
    let schedule = org_schedule_or_default(&mut **db, old);
    let mut dir = shared.dir.write().unwrap_or_else(|p| p.into_inner());
    *dir = Directory::build(&rows, &dir);
    *seen = v;
    drop(dir);
    // Under the database lock: a retirement being stored now updates `snaps` after this.
    shared
        .snaps
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .set_retirements(&retirements);
    *shared.schedule.write().unwrap_or_else(|p| p.into_inner()) = schedule;
    reload_admin_token(shared);
    Ok(())
}

/// The organisation's schedule settings, else (a damaged setting, the database
/// failing) `fallback`, said on stderr: a bad schedule setting must not stop the
/// machines (and their revocations) from being reloaded.
fn org_schedule_or_default(db: &mut dyn Storage, fallback: OrgSchedule) -> OrgSchedule {
    db.org_schedule().unwrap_or_else(|e| {
        eprintln!("swarmbak tracker: schedule settings not read ({e}); keeping {fallback:?}");
        fallback
    })
}

/// Notes each machine's last success as [`crate::status`] counts it: the later of its
/// latest successful report's end and its latest published snapshot.
fn seed_last_success(
    dir: &Directory,
    machines: &[crate::storage::MachineRow],
    activity: &std::collections::HashMap<i64, crate::storage::Activity>,
    snapshots: &[SnapshotRow],
) {
    let by_id: std::collections::HashMap<i64, &str> = machines
        .iter()
        .map(|m| (m.id, m.passkey.as_str()))
        .collect();
    for (id, a) in activity {
        if let (Some(s), Some(m)) = (
            &a.last_success,
            by_id.get(id).and_then(|pk| dir.by_passkey(pk)),
        ) {
            m.backed_up(s.ended);
        }
    }
    for r in snapshots {
        if r.record.is_none() {
            continue;
        }
        if let Some(m) = machine_key_bytes(&r.machine_key).and_then(|k| dir.by_key(&k)) {
            m.backed_up(r.published);
        }
    }
}

/// A snapshot row's `machine_key` (hex of an enrolled machine's key) as bytes.
fn machine_key_bytes(hex_key: &str) -> Option<[u8; 32]> {
    hex::decode(hex_key).ok()?.try_into().ok()
}

/// Reads DATA/admin-token again; a new token ends every dashboard session
/// (tracker.md §10.3).
fn reload_admin_token(shared: &Shared) {
    let path = shared.config.data_dir.join("admin-token");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let new = text.trim();
    if new.len() < 32 {
        eprintln!(
            "swarmbak tracker: {} is malformed; the admin token is unchanged",
            path.display()
        );
        return;
    }
    let mut cur = shared
        .admin_token
        .write()
        .unwrap_or_else(|p| p.into_inner());
    if *cur != new {
        *cur = new.to_owned();
        drop(cur);
        shared.sessions.clear();
        eprintln!("swarmbak tracker: the admin token was rotated; dashboard sessions ended");
    }
}

fn flush_online(shared: &Shared) {
    let spans = shared
        .dir
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .take_intervals();
    if !spans.is_empty() {
        if let Err(e) = lock_db(shared).add_online(&spans) {
            eprintln!("swarmbak tracker: online spans not written: {e}");
        }
    }
}

pub(crate) fn lock_db(shared: &Shared) -> std::sync::MutexGuard<'_, Box<dyn Storage>> {
    shared.db.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn read_snaps(shared: &Shared) -> std::sync::RwLockReadGuard<'_, Snapshots> {
    shared.snaps.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn read_dir(shared: &Shared) -> std::sync::RwLockReadGuard<'_, Directory> {
    shared.dir.read().unwrap_or_else(|p| p.into_inner())
}

/// Runs blocking database work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&Shared) -> T + Send + 'static,
) -> Option<T> {
    let sh = shared.clone();
    tokio::task::spawn_blocking(move || f(&sh)).await.ok()
}

/// An announce or scrape path: which one, and the passkey in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bt {
    Announce,
    Scrape,
}

/// `/announce`, `/announce/<passkey>`, `/<passkey>/announce` (and any path starting
/// with `/an`, as opentracker answers); the same for `scrape` (but not `/schedule`,
/// tracker.md §7.7).
pub(crate) fn bt_route(path: &str) -> Option<(Bt, Option<&str>)> {
    let p = path.strip_prefix('/')?;
    let kind = |s: &str| {
        if s == "announce" {
            Some(Bt::Announce)
        } else if s == "scrape" {
            Some(Bt::Scrape)
        } else {
            None
        }
    };
    match p.split_once('/') {
        None if p.starts_with("an") => Some((Bt::Announce, None)),
        None if p.starts_with("sc") && p != "schedule" => Some((Bt::Scrape, None)),
        None => None,
        Some((a, b)) => {
            let b = b.trim_end_matches('/');
            if let Some(k) = kind(a) {
                Some((k, Some(b)))
            } else if let Some(k) = kind(b) {
                Some((k, Some(a)))
            } else if a.starts_with("an") && !b.contains('/') {
                Some((Bt::Announce, Some(b)))
            } else {
                None
            }
        }
    }
}

/// The bencoded answer to a GET announce or scrape (`kind`, with the path's `passkey` and
/// the raw `query`), over hyper or over the plain connection's fast path (`crate::plain`).
pub(crate) fn bt_answer(
    shared: &Shared,
    remote: SocketAddr,
    kind: Bt,
    passkey: Option<&str>,
    query: &[u8],
) -> Vec<u8> {
    crate::metrics::inc(match kind {
        Bt::Announce => &shared.metrics.announces_http,
        Bt::Scrape => &shared.metrics.scrapes_http,
    });
    // One clock read per request: the certificate's expiry and the online span.
    let now = unix_now();
    let member = if shared.config.open {
        None
    } else {
        match check_passkey(shared, passkey, now) {
            Ok(m) => Some(m),
            Err(msg) => return encode_failure(msg),
        }
    };
    match kind {
        Bt::Announce => announce(shared, remote, query, member.as_deref().map(|m| (m, now))),
        Bt::Scrape => scrape(shared, query),
    }
}

/// Who a request comes from, for the JSON endpoints.
enum Caller {
    Admin,
    Member,
    Anyone,
}

fn caller(shared: &Shared, req: &Request<Incoming>, path_passkey: Option<&str>) -> Caller {
    let auth = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if crate::web::is_admin(shared, auth) {
        return Caller::Admin;
    }
    if let Some(pk) = passkey_of(req, path_passkey) {
        if let Some(m) = read_dir(shared).by_passkey(pk) {
            if !m.revoked {
                return Caller::Member;
            }
        }
    }
    Caller::Anyone
}

/// The passkey a JSON request carries: in its path (`BASE/<passkey>/…`), else as
/// `Authorization: Bearer <passkey>`.
fn passkey_of<'a>(req: &'a Request<Incoming>, path_passkey: Option<&'a str>) -> Option<&'a str> {
    path_passkey
        .or_else(|| {
            req.headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|h| h.strip_prefix("Bearer "))
        })
        .map(str::trim)
}

fn private_refusal() -> Resp {
    json_error(
        StatusCode::UNAUTHORIZED,
        "this tracker is private: send `Authorization: Bearer <passkey>` (enrol with `swarmbak init --enroll TOKEN`)",
    )
}

async fn handle(
    shared: &Arc<Shared>,
    remote: SocketAddr,
    tls: bool,
    req: Request<Incoming>,
) -> Resp {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("").as_bytes();
    let target_len = req
        .uri()
        .path_and_query()
        .map_or(path.len(), |p| p.as_str().len());
    let bt = bt_route(path);
    if target_len > shared.config.max_url_len {
        return if bt.is_some() {
            bencoded(encode_failure("request URL too long"))
        } else {
            json_error(StatusCode::URI_TOO_LONG, "request URL too long")
        };
    }
    let method = req.method().clone();
    if let Some((kind, passkey)) = bt {
        if !matches!(method, Method::GET | Method::HEAD) {
            return bencoded(encode_failure(match kind {
                Bt::Announce => "announce takes GET",
                Bt::Scrape => "scrape takes GET",
            }));
        }
        return bencoded(bt_answer(shared, remote, kind, passkey, query));
    }
    // The administrator's endpoints (tracker.md §10): the dashboard, the admin API's
    // status and actions, /metrics.
    let req = match crate::web::route(shared, remote, tls, req).await {
        Ok(resp) => return resp,
        Err(req) => req,
    };
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("").as_bytes();
    // `/<passkey>/publish`, `/<passkey>/snapshots`, ...: the JSON endpoints under a
    // machine's tracker URL (`BASE/<passkey>`), authorised by that segment.
    let (path, path_passkey) = match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((pk, _)) if is_passkey(pk) => (&path[pk.len() + 1..], Some(pk)),
        _ => (path, None),
    };
    let who = caller(shared, &req, path_passkey);
    let may_read = shared.config.open || !matches!(who, Caller::Anyone);
    match (method, path) {
        (Method::POST | Method::PUT, "/publish") => {
            let r = publish(shared, req).await;
            let m = &shared.metrics;
            crate::metrics::inc(match r.status() {
                StatusCode::CREATED => &m.publishes_new,
                StatusCode::OK => &m.publishes_existing,
                _ => &m.publishes_refused,
            });
            r
        }
        (Method::POST, "/report") => {
            let pk = passkey_of(&req, path_passkey).map(str::to_owned);
            let mut success = false;
            let r = report(shared, req, pk.as_deref(), &mut success).await;
            let m = &shared.metrics;
            crate::metrics::inc(match (r.status(), success) {
                (StatusCode::CREATED, true) => &m.reports_success,
                (StatusCode::CREATED, false) => &m.reports_failure,
                (StatusCode::OK, _) => &m.reports_resent,
                _ => &m.reports_refused,
            });
            r
        }
        (Method::POST, "/retire") => {
            let pk = passkey_of(&req, path_passkey).map(str::to_owned);
            retire(shared, req, pk.as_deref()).await
        }
        (Method::POST, "/api/v1/enroll") => enroll(shared, req).await,
        (Method::POST, "/api/v1/enrollments") => {
            if !matches!(who, Caller::Admin) {
                return json_error(
                    StatusCode::UNAUTHORIZED,
                    "the admin API needs `Authorization: Bearer <DATA/admin-token>`",
                );
            }
            let by = admin::Actor {
                actor: "admin-token".into(),
                from: remote.ip().to_string(),
            };
            enrollments(shared, req, by).await
        }
        (Method::POST, "/api/v1/reload") => {
            if !matches!(who, Caller::Admin) {
                return json_error(
                    StatusCode::UNAUTHORIZED,
                    "the admin API needs `Authorization: Bearer <DATA/admin-token>`",
                );
            }
            match blocking(shared, |sh| reload_if_changed(sh, true)).await {
                Some(Ok(())) => json(StatusCode::OK, &serde_json::json!({"reloaded": true})),
                Some(Err(e)) => storage_error(&e),
                None => json_error(StatusCode::INTERNAL_SERVER_ERROR, "reload failed"),
            }
        }
        (Method::GET | Method::HEAD, p) if p.starts_with("/metainfo/") => {
            if !may_read {
                return private_refusal();
            }
            metainfo(shared, &p["/metainfo/".len()..]).await
        }
        (Method::GET | Method::HEAD, "/snapshots") => {
            if !may_read {
                return private_refusal();
            }
            snapshots(shared, query)
        }
        (Method::GET | Method::HEAD, "/machines") => {
            if !may_read {
                return private_refusal();
            }
            let mut list = read_snaps(shared).machines();
            let online = shared.swarms.online_machines();
            for m in &mut list {
                m.online = online.contains(&hex::encode(&m.machine_key))
                    || online.contains(&m.machine_key);
            }
            json(StatusCode::OK, &list)
        }
        (Method::GET | Method::HEAD, "/schedule") => {
            let pk = passkey_of(&req, path_passkey);
            schedule(shared, pk, query)
        }
        (Method::GET | Method::HEAD, "/roster") => {
            let pk = passkey_of(&req, path_passkey);
            roster(shared, remote, pk)
        }
        (Method::GET | Method::HEAD, "/revocations") => {
            if !may_read {
                return private_refusal();
            }
            revocations(shared).await
        }
        (Method::GET | Method::HEAD, "/" | "/health") => health(shared),
        (
            _,
            "/publish" | "/report" | "/retire" | "/schedule" | "/roster" | "/snapshots"
            | "/machines" | "/revocations" | "/" | "/health",
        ) => json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        (_, p) if p.starts_with("/metainfo/") || p.starts_with("/api/v1/") => {
            json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => json_error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

/// The failure reasons of a private tracker's announce and scrape (tracker.md §7.3).
pub const NO_PASSKEY: &str = "this tracker is private: announce to /<passkey>/announce (enrol with `swarmbak init --enroll TOKEN`, or ask the administrator for a client passkey)";
/// An unknown passkey.
pub const UNKNOWN_PASSKEY: &str = "unknown passkey: this machine is not enrolled here (enrol with `swarmbak init --enroll TOKEN`)";
/// The passkey of a machine whose certificate expired.
pub const EXPIRED_PASSKEY: &str = "certificate expired: this machine's enrolment ran out (ask the administrator for a new token: swarmbak tracker enroll)";
/// A revoked passkey.
pub const REVOKED_PASSKEY: &str =
    "passkey revoked: the administrator shut this machine out (ask them to enrol it again)";

pub(crate) fn check_passkey(
    shared: &Shared,
    passkey: Option<&str>,
    now: i64,
) -> Result<Arc<Member>, &'static str> {
    let pk = passkey.filter(|p| !p.is_empty()).ok_or(NO_PASSKEY)?;
    if !is_passkey(pk) {
        return Err(UNKNOWN_PASSKEY);
    }
    let dir = read_dir(shared);
    let m = dir.by_passkey(pk).ok_or(UNKNOWN_PASSKEY)?;
    if m.revoked {
        return Err(REVOKED_PASSKEY);
    }
    if m.expires.is_some_and(|x| now > x) {
        return Err(EXPIRED_PASSKEY);
    }
    Ok(m.clone())
}

/// The address as IPv4 when it is an IPv4-mapped IPv6 address (a dual-stack socket).
pub(crate) fn canonical(addr: SocketAddr) -> IpAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        ip => ip,
    }
}

/// The swarm's view of a parsed announce, whatever it came over (HTTP or UDP): the
/// address (the packet's, or the `ip` parameter's with `trust_ip_param`), `numwant`
/// within the configured bounds, the machine (the passkey's on a private tracker, with
/// the request's time), the owner of the entry and its cap (tracker.md §1, §7.3).
pub(crate) fn peer_announce<'a>(
    shared: &Shared,
    remote: SocketAddr,
    req: &'a AnnounceRequest,
    member: Option<(&'a Member, i64)>,
) -> PeerAnnounce<'a> {
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
    // On a private tracker the passkey says which machine this is; `machine=` is ignored
    // (anyone can type another machine's key).
    let machine = match member {
        Some((m, now)) => {
            m.seen(now, ip);
            m.set_quota(req.quota);
            m.key_hex.as_deref()
        }
        None => req.machine.as_deref(),
    };
    PeerAnnounce {
        peer_id: &req.peer_id,
        addr: SocketAddr::new(ip, req.port),
        left: req.left,
        event: req.event,
        numwant,
        compact: req.compact,
        machine,
        // Who may move or remove the entry, and whose cap it counts against: the enrolled
        // machine (its passkey), or on an open tracker the address.
        owner: member.map_or_else(|| crate::swarm::ip_owner(ip), |(m, _)| m.id as u64),
        max_per_owner: if member.is_some() {
            crate::swarm::MAX_PEERS_PER_OWNER
        } else {
            crate::swarm::MAX_PEERS_PER_ADDRESS_OWNER
        },
        no_peer_id: req.no_peer_id,
    }
}

/// `interval` and `min interval` handed to peers, in seconds.
pub(crate) fn intervals(cfg: &TrackerConfig) -> (i64, i64) {
    (
        cfg.interval.as_secs().max(1) as i64,
        cfg.min_interval.as_secs() as i64,
    )
}

/// `member`: the announcing machine on a private tracker, and the request's time.
fn announce(
    shared: &Shared,
    remote: SocketAddr,
    query: &[u8],
    member: Option<(&Member, i64)>,
) -> Vec<u8> {
    let req = match AnnounceRequest::parse_query(query) {
        Ok(r) => r,
        Err(msg) => return encode_failure(&msg),
    };
    let a = peer_announce(shared, remote, &req, member);
    let numwant = a.numwant;
    let mut enc = Encoder::with_capacity(96 + numwant * if req.compact { 6 } else { 64 });
    enc.begin_dict();
    let intervals = intervals(&shared.config);
    match shared
        .swarms
        .announce(&req.info_hash, &a, Instant::now(), intervals, &mut enc)
    {
        None => encode_failure(UNKNOWN_TORRENT),
        Some(_) => {
            enc.end();
            match enc.finish() {
                Ok(b) => b,
                Err(_) => encode_failure("internal error"),
            }
        }
    }
}

fn scrape(shared: &Shared, query: &[u8]) -> Vec<u8> {
    let wanted = match crate::proto::parse_scrape_query(query, shared.config.max_scrape_hashes) {
        Ok(w) => w,
        Err(e) => return encode_failure(&e),
    };
    let files = scrape_files(shared, &wanted);
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
        Ok(b) => b,
        Err(_) => encode_failure("internal error"),
    }
}

/// The counts and names of the `wanted` torrents that are announced here (unknown ones
/// left out), or of every one when `wanted` is empty (a full scrape). Shared by the HTTP
/// and UDP scrapes.
pub(crate) fn scrape_files(
    shared: &Shared,
    wanted: &[InfoHash],
) -> BTreeMap<InfoHash, (crate::swarm::Counts, String)> {
    let now = Instant::now();
    let mut files = BTreeMap::new();
    let snaps = read_snaps(shared);
    if wanted.is_empty() {
        for r in snaps.rows() {
            let ih = InfoHash(r.infohash);
            if let Some(c) = shared.swarms.counts(&ih, now) {
                files.insert(ih, (c, r.name.clone()));
            }
        }
    } else {
        for ih in wanted {
            if let (Some(r), Some(c)) = (snaps.get(ih), shared.swarms.counts(ih, now)) {
                files.insert(*ih, (c, r.name.clone()));
            }
        }
    }
    files
}

/// A storage failure as an HTTP answer: a full disk is 507 and says what to do.
pub(crate) fn storage_error(e: &StorageError) -> Resp {
    let status = match e {
        StorageError::Full => StatusCode::INSUFFICIENT_STORAGE,
        StorageError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_error(status, e.to_string())
}

pub(crate) fn admin_error(e: &AdminError) -> Resp {
    match e {
        AdminError::Storage(s) => storage_error(s),
        e => json_error(admin_status(e), e.to_string()),
    }
}

/// The HTTP status of an administrative failure.
pub(crate) fn admin_status(e: &AdminError) -> StatusCode {
    match e {
        AdminError::Storage(StorageError::Full) => StatusCode::INSUFFICIENT_STORAGE,
        AdminError::Storage(StorageError::Busy) => StatusCode::SERVICE_UNAVAILABLE,
        AdminError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        AdminError::NameTaken(_)
        | AdminError::AlreadyRevoked(_)
        | AdminError::AlreadyCancelled(_) => StatusCode::CONFLICT,
        AdminError::UnknownToken => StatusCode::FORBIDDEN,
        AdminError::UnknownMachine(_) | AdminError::NotRetired(_) => StatusCode::NOT_FOUND,
        AdminError::NoRecovery | AdminError::NoUrl => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The request's `Content-Length`, if it declares one.
fn declared_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok())
}

fn too_large(max: usize) -> Resp {
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body larger than {max} bytes"),
    )
}

/// Reads a request body of at most `max` bytes (413 beyond), within `timeout` (408).
pub(crate) async fn read_body(
    req: Request<Incoming>,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, Resp> {
    if declared_length(&req).is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let read = tokio::time::timeout(timeout, Limited::new(req.into_body(), max).collect()).await;
    let Ok(read) = read else {
        return Err(json_error(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {} s", timeout.as_secs()),
        ));
    };
    match read {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large(max)
            } else {
                json_error(StatusCode::BAD_REQUEST, format!("reading body: {e}"))
            },
        ),
    }
}

fn header_b64(req: &Request<Incoming>, name: &str) -> Result<Option<Vec<u8>>, String> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| swarmbak_trust::from_b64(s).ok())
            .map(Some)
            .ok_or_else(|| format!("`{name}` is not base64url")),
    }
}

/// The header carrying a publish's signed record (trust.md §4), base64url.
pub const RECORD_HEADER: &str = "swarmbak-record";
/// The header carrying the publisher's certificate (trust.md §3), base64url.
pub const CERTIFICATE_HEADER: &str = "swarmbak-certificate";

async fn publish(shared: &Arc<Shared>, req: Request<Incoming>) -> Resp {
    let pairs = match decoded_pairs(req.uri().query().unwrap_or("").as_bytes()) {
        Ok(p) => p,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.0),
    };
    let (record, cert) = match (
        header_b64(&req, RECORD_HEADER),
        header_b64(&req, CERTIFICATE_HEADER),
    ) {
        (Ok(r), Ok(c)) => (r, c),
        (Err(e), _) | (_, Err(e)) => return json_error(StatusCode::BAD_REQUEST, e),
    };
    let signed = match (record, cert) {
        (Some(r), Some(c)) => Some((r, c)),
        (None, None) if shared.config.open => None,
        _ => {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "this tracker is private: a publish carries the owner's signed record and certificate (Swarmbak-Record, Swarmbak-Certificate; protocol-spec/trust.md §4)",
            )
        }
    };
    let open_names = if signed.is_none() {
        match (text_param(&pairs, "machine"), text_param(&pairs, "name")) {
            (Ok(Some(k)), Ok(Some(n))) => {
                if let Err(e) = check_machine_key(&k).and(check_machine_name(&n)) {
                    return json_error(StatusCode::BAD_REQUEST, e);
                }
                Some((k, n))
            }
            (Err(e), _) | (_, Err(e)) => return json_error(StatusCode::BAD_REQUEST, e.0),
            _ => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "publish needs `machine` (the machine key) and `name` (the machine name)",
                )
            }
        }
    } else {
        None
    };
    // Memory and connection slots are bounded before any body byte is read: a publish
    // declares its length, and gets a share of the bytes in flight or a 503 at once.
    let max = shared.config.max_publish_bytes;
    let Some(declared) = declared_length(&req) else {
        return json_error(
            StatusCode::LENGTH_REQUIRED,
            "a publish declares its Content-Length",
        );
    };
    if declared > max as u64 {
        return too_large(max);
    }
    let busy = || {
        json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the tracker is receiving as many publishes as it takes at once: retry shortly",
        )
    };
    let Ok(_slot) = shared.publish_slots.try_acquire() else {
        return busy();
    };
    let Ok(_bytes) = shared
        .publish_bytes
        .try_acquire_many(u32::try_from(declared.max(1)).unwrap_or(u32::MAX))
    else {
        return busy();
    };
    let body = match read_body(req, max, shared.config.body_timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mi = match swarmbak_metainfo::Metainfo::from_bytes(&body) {
        Ok(m) => m,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("not a valid torrent: {e}")),
    };
    let Some(params) = mi.swarmbak() else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "not a swarmbak torrent (no `swarmbak` dictionary in info)",
        );
    };
    if !mi.is_private() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "swarmbak torrents must be private (BEP 27)",
        );
    }
    let ih = mi.info_hash();
    let now = unix_now();
    let mut row = SnapshotRow {
        infohash: ih,
        machine_key: String::new(),
        machine_name: String::new(),
        published: now,
        total_length: mi.total_length(),
        payload_length: params.payload_length,
        name: String::from_utf8_lossy(mi.name()).into_owned(),
        copies: 0,
        record: None,
        certificate: None,
    };
    match (signed, open_names) {
        (Some((record, cert)), _) => {
            let (c, r) =
                match swarmbak_trust::verify_publish(&record, &cert, &shared.org.public(), &ih) {
                    Ok(x) => x,
                    Err(e) => {
                        return json_error(StatusCode::FORBIDDEN, format!("publish refused: {e}"))
                    }
                };
            {
                let dir = read_dir(shared);
                match dir.by_key(c.fields.machine.as_bytes()) {
                    Some(m) if !m.revoked => {}
                    Some(_) => {
                        return json_error(
                            StatusCode::FORBIDDEN,
                            format!("publish refused: {} is revoked", c.fields.name),
                        )
                    }
                    None => {
                        return json_error(
                            StatusCode::FORBIDDEN,
                            "publish refused: the certificate's machine is not enrolled here",
                        )
                    }
                }
            }
            if let Err(e) = c.valid_at(now) {
                return json_error(StatusCode::FORBIDDEN, format!("publish refused: {e}"));
            }
            if (r.published - now).abs() > 86_400 {
                return json_error(
                    StatusCode::FORBIDDEN,
                    "publish refused: the record's time is more than a day from the tracker's clock (check the machine's clock)",
                );
            }
            row.machine_key = c.fields.machine.to_hex();
            row.machine_name = c.fields.name.clone();
            row.copies = r.copies;
            row.record = Some(record);
            row.certificate = Some(cert);
        }
        (None, Some((k, n))) => {
            row.machine_key = k;
            row.machine_name = n;
        }
        (None, None) => return json_error(StatusCode::BAD_REQUEST, "publish needs a machine"),
    }
    let torrent = mi.as_bytes().to_vec();
    let result = blocking(shared, move |sh| {
        let r = lock_db(sh).publish(&row, &torrent);
        if let Ok(Published::New(row)) = &r {
            sh.swarms.add_torrent(InfoHash(row.infohash));
            sh.snaps
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .push(row.clone());
            if row.record.is_some() {
                if let Some(m) = machine_key_bytes(&row.machine_key)
                    .and_then(|k| read_dir(sh).by_key(&k).cloned())
                {
                    m.backed_up(row.published);
                }
            }
        }
        (r, row.machine_key)
    })
    .await;
    #[derive(Serialize)]
    struct Answer {
        infohash: String,
        new: bool,
        published: i64,
    }
    match result {
        Some((Ok(Published::New(r)), _)) => json(
            StatusCode::CREATED,
            &Answer {
                infohash: hex::encode(r.infohash),
                new: true,
                published: r.published,
            },
        ),
        Some((Ok(Published::Existing(r)), key)) if r.machine_key == key => json(
            StatusCode::OK,
            &Answer {
                infohash: hex::encode(r.infohash),
                new: false,
                published: r.published,
            },
        ),
        Some((Ok(Published::Existing(r)), _)) => json_error(
            StatusCode::CONFLICT,
            format!(
                "{} was already published by another machine",
                hex::encode(r.infohash)
            ),
        ),
        Some((Err(e), _)) => storage_error(&e),
        None => json_error(StatusCode::INTERNAL_SERVER_ERROR, "publish failed"),
    }
}

/// The largest signed backup report taken (its error text is at most 2,048 bytes).
pub const MAX_REPORT_BYTES: usize = 8 * 1024;

/// The enrolled machine a per-machine request (a report, its schedule, the roster) comes
/// from, with its signing key: 404 on an open tracker (`open_tracker` says why), 401 for
/// a missing or unknown passkey, 403 for a revoked or expired one or a client's (`client`
/// says why).
// The error is the response itself, built once per refused request (as `read_body`'s).
#[allow(clippy::result_large_err)]
fn enrolled_machine(
    shared: &Shared,
    passkey: Option<&str>,
    now: i64,
    open_tracker: &str,
    client: &str,
) -> Result<(Arc<Member>, swarmbak_trust::PublicKey), Resp> {
    if shared.config.open {
        return Err(json_error(StatusCode::NOT_FOUND, open_tracker));
    }
    let m = match check_passkey(shared, passkey, now) {
        Ok(m) => m,
        Err(msg) if msg == NO_PASSKEY || msg == UNKNOWN_PASSKEY => {
            return Err(json_error(StatusCode::UNAUTHORIZED, msg))
        }
        Err(msg) => return Err(json_error(StatusCode::FORBIDDEN, msg)),
    };
    let key = m
        .key_hex
        .as_deref()
        .and_then(|h| swarmbak_trust::PublicKey::from_hex(h).ok());
    match key {
        Some(key) => Ok((m, key)),
        None => Err(json_error(StatusCode::FORBIDDEN, client)),
    }
}

/// What a machine's signed request (a report, a retirement) needs: the texts of its
/// refusals and its largest body.
struct SignedPost {
    /// Why an `--open` tracker has no such endpoint.
    open_tracker: &'static str,
    /// Why a client's passkey cannot send one.
    client: &'static str,
    /// What it is, for `a <what> declares its Content-Length`.
    what: &'static str,
    /// The largest body taken.
    max: usize,
}

/// The enrolled machine a signed POST comes from (see [`enrolled_machine`]), its key and
/// the body: 411 without a declared `Content-Length`, 413 over `p.max`, 408 when it does
/// not arrive in time.
#[allow(clippy::result_large_err)]
async fn signed_post(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    passkey: Option<&str>,
    now: i64,
    p: &SignedPost,
) -> Result<(Arc<Member>, swarmbak_trust::PublicKey, Bytes), Resp> {
    let (m, key) = enrolled_machine(shared, passkey, now, p.open_tracker, p.client)?;
    if declared_length(&req).is_none() {
        return Err(json_error(
            StatusCode::LENGTH_REQUIRED,
            format!("a {} declares its Content-Length", p.what),
        ));
    }
    let body = read_body(req, p.max, shared.config.body_timeout).await?;
    Ok((m, key, body))
}

/// `POST BASE/<passkey>/report`: a machine's signed backup report (trust.md §9), stored
/// durably before the answer (tracker.md §7.6): 201 when new, 200 when that attempt was
/// stored already.
/// `success` is set to whether the report tells of a successful backup (for /metrics).
async fn report(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    passkey: Option<&str>,
    success: &mut bool,
) -> Resp {
    let now = unix_now();
    let post = SignedPost {
        open_tracker:
            "backup reports need a private tracker (they are signed by enrolled machines)",
        client: "a client passkey cannot report backups: only an enrolled machine signs reports",
        what: "report",
        max: MAX_REPORT_BYTES,
    };
    let (m, key, body) = match signed_post(shared, req, passkey, now, &post).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let r = match swarmbak_trust::BackupReport::verify(&body, &key) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::FORBIDDEN, format!("report refused: {e}")),
    };
    if r.end > now + 86_400 {
        return json_error(
            StatusCode::FORBIDDEN,
            "report refused: it ends more than a day after the tracker's clock (check the machine's clock)",
        );
    }
    *success = r.outcome.is_ok();
    let succeeded_at = r.outcome.is_ok().then_some(r.end);
    let row = crate::storage::ReportRow {
        machine: m.id,
        attempt: r.id,
        started: r.start,
        ended: r.end,
        bytes: r.bytes,
        files: r.files,
        outcome: r.outcome,
        report: body.to_vec(),
    };
    let id = hex::encode(row.attempt);
    match blocking(shared, move |sh| lock_db(sh).add_report(&row)).await {
        Some(Ok(new)) => {
            if let Some(at) = succeeded_at {
                m.backed_up(at);
            }
            json(
                if new {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                &serde_json::json!({"report": id, "new": new}),
            )
        }
        Some(Err(e)) => storage_error(&e),
        None => json_error(StatusCode::INTERNAL_SERVER_ERROR, "report failed"),
    }
}

/// The largest signed retirement taken (a record keeping 65,536 stripe ranges is about
/// 525 KiB).
pub const MAX_RETIRE_BYTES: usize = 1024 * 1024;

/// `POST BASE/<passkey>/retire`: a machine's signed retirement of one of its snapshots
/// (trust.md §12), checked and stored durably before the answer (tracker.md §7.8).
async fn retire(shared: &Arc<Shared>, req: Request<Incoming>, passkey: Option<&str>) -> Resp {
    let now = unix_now();
    let post = SignedPost {
        open_tracker: "retirements need a private tracker (they are signed by enrolled machines)",
        client:
            "a client passkey cannot retire snapshots: only an enrolled machine signs retirements",
        what: "retirement",
        max: MAX_RETIRE_BYTES,
    };
    let (m, key, body) = match signed_post(shared, req, passkey, now, &post).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let r = match swarmbak_trust::Retirement::verify(&body, &key) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::FORBIDDEN, format!("retirement refused: {e}")),
    };
    let ih = InfoHash(r.infohash);
    let hex_ih = hex::encode(r.infohash);
    {
        let snaps = read_snaps(shared);
        let Some(row) = snaps.get(&ih) else {
            return json_error(
                StatusCode::NOT_FOUND,
                format!("retirement refused: snapshot {hex_ih} is not published at this tracker (publish it first, or forget it locally only)"),
            );
        };
        if row.machine_key != key.to_hex() {
            return json_error(
                StatusCode::FORBIDDEN,
                format!("retirement refused: snapshot {hex_ih} was published by another machine: a machine retires only its own snapshots"),
            );
        }
        if snaps.newest_of(&row.machine_key) == Some(ih) {
            return json_error(
                StatusCode::CONFLICT,
                format!("retirement refused: {hex_ih} is this machine's newest snapshot here, and a machine's newest snapshot is never retired (publish a newer one first)"),
            );
        }
        // The record's own `newest`, when published here by this machine: the snapshot
        // retired must be older than it.
        let newest = InfoHash(r.newest);
        if snaps
            .get(&newest)
            .is_some_and(|n| n.machine_key == row.machine_key)
            && snaps.age_rank(&ih) > snaps.age_rank(&newest)
        {
            return json_error(
                StatusCode::CONFLICT,
                format!("retirement refused: {hex_ih} is newer than the record's own newest snapshot {} (a machine's newest snapshot is never retired)", hex::encode(r.newest)),
            );
        }
    }
    if r.retired > now + 86_400 {
        return json_error(
            StatusCode::FORBIDDEN,
            "retirement refused: it was signed more than a day after the tracker's clock (check the machine's clock)",
        );
    }
    let row = RetirementRow {
        infohash: r.infohash,
        machine: m.id,
        record: body.to_vec(),
        retired: r.retired,
        received: now,
        cancelled: None,
        cancelled_by: None,
    };
    let stored = blocking(shared, move |sh| {
        let mut db = lock_db(sh);
        let out = db.retire(&row);
        if let Ok(Retired::Stored(_)) = &out {
            sh.snaps
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .set_retirement(&row);
        }
        out
    })
    .await;
    match stored {
        Some(Ok(Retired::Stored(_))) => json(
            StatusCode::CREATED,
            &serde_json::json!({"infohash": hex_ih, "new": true}),
        ),
        Some(Ok(Retired::Same)) => json(
            StatusCode::OK,
            &serde_json::json!({"infohash": hex_ih, "new": false}),
        ),
        Some(Ok(Retired::Cancelled(s))) => json(
            StatusCode::OK,
            &serde_json::json!({"infohash": hex_ih, "new": false, "cancelled": true,
                "retirement_cancelled": s.cancelled}),
        ),
        Some(Ok(Retired::NotLater(s))) => json_error(
            StatusCode::CONFLICT,
            format!("retirement refused: an equal or later retirement of {hex_ih} is stored (retired {}); sign a new one with a later time to replace it", s.retired),
        ),
        Some(Err(e)) => storage_error(&e),
        None => json_error(StatusCode::INTERNAL_SERVER_ERROR, "retirement failed"),
    }
}

/// `GET BASE/<passkey>/schedule[?every=SECS]`: when the passkey's machine should back
/// up (tracker.md §7.7), from memory only (every agent polls it).
fn schedule(shared: &Shared, passkey: Option<&str>, query: &[u8]) -> Resp {
    let now = unix_now();
    let m = match enrolled_machine(
        shared,
        passkey,
        now,
        "schedules need a private tracker (they are set per enrolled machine)",
        "a client passkey has no backup schedule: only an enrolled machine backs up",
    ) {
        Ok((m, _)) => m,
        Err(r) => return r,
    };
    let pairs = match decoded_pairs(query) {
        Ok(p) => p,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.0),
    };
    let own = match text_param(&pairs, "every") {
        Ok(None) => None,
        Ok(Some(t)) => match t.parse::<u64>() {
            Ok(n) if (1..=crate::schedule::MAX_EVERY).contains(&n) => Some(n),
            _ => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "every: the machine's interval in whole seconds, 1 to {}",
                        crate::schedule::MAX_EVERY
                    ),
                )
            }
        },
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.0),
    };
    let org = *shared.schedule.read().unwrap_or_else(|p| p.into_inner());
    json(
        StatusCode::OK,
        &crate::schedule::decide(&org, m.vip, &m.schedule, own, m.last_success(), now),
    )
}

/// `GET BASE/<passkey>/roster`: the enrolled machines present now (tracker.md §7.9),
/// from memory only (every agent polls it). Asking counts as the machine being seen, as
/// an announce does: it is on the roster it gets.
fn roster(shared: &Shared, remote: SocketAddr, passkey: Option<&str>) -> Resp {
    let now = unix_now();
    let m = match enrolled_machine(
        shared,
        passkey,
        now,
        "rosters need a private tracker (they list enrolled machines)",
        "a client passkey has no roster: only an enrolled machine places backups",
    ) {
        Ok((m, _)) => m,
        Err(r) => return r,
    };
    m.seen(now, canonical(remote));
    let window = shared.config.roster_window_secs();
    let machines = read_dir(shared).roster(now, window);
    json(
        StatusCode::OK,
        &crate::client::Roster {
            window,
            now,
            machines,
        },
    )
}

async fn metainfo(shared: &Arc<Shared>, hex_ih: &str) -> Resp {
    let hex_ih = hex_ih.strip_suffix(".torrent").unwrap_or(hex_ih);
    let Ok(ih) = InfoHash::from_hex(hex_ih) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "expected /metainfo/<40 hex digits>",
        );
    };
    if read_snaps(shared).get(&ih).is_none() {
        return json_error(StatusCode::NOT_FOUND, "unknown torrent");
    }
    match blocking(shared, move |sh| lock_db(sh).metainfo(&ih.0)).await {
        Some(Ok(Some(bytes))) => response(StatusCode::OK, "application/x-bittorrent", bytes),
        Some(Ok(None)) => json_error(StatusCode::NOT_FOUND, "unknown torrent"),
        Some(Err(e)) => storage_error(&e),
        None => json_error(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the torrent"),
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
    let infohash = match text_param(&pairs, "infohash") {
        Ok(Some(h)) => match InfoHash::from_hex(&h) {
            Ok(ih) => Some(ih),
            Err(_) => return json_error(StatusCode::BAD_REQUEST, "infohash: 40 hex digits"),
        },
        Ok(None) => None,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.0),
    };
    let snaps = read_snaps(shared);
    let list = match infohash {
        Some(ih) => snaps.record(&ih).into_iter().collect(),
        None => snaps.list(machine.as_deref()),
    };
    json(StatusCode::OK, &list)
}

/// `GET /revocations`: every signed revocation (trust.md §5), for peers and the DHT to
/// check against the organisation key.
async fn revocations(shared: &Arc<Shared>) -> Resp {
    match blocking(shared, |sh| lock_db(sh).machines()).await {
        Some(Ok(rows)) => {
            let list: Vec<serde_json::Value> = rows
                .iter()
                .filter_map(|m| {
                    let r = m.revocation.as_deref().filter(|r| !r.is_empty())?;
                    Some(serde_json::json!({
                        "name": m.name,
                        "machine_key": m.key.map(hex::encode),
                        "revoked": m.revoked,
                        "revocation": swarmbak_trust::to_b64(r),
                    }))
                })
                .collect();
            json(StatusCode::OK, &list)
        }
        Some(Err(e)) => storage_error(&e),
        None => json_error(StatusCode::INTERNAL_SERVER_ERROR, "revocations failed"),
    }
}

/// What `POST /api/v1/enroll` answers (tracker.md §7.2).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct EnrollAnswer {
    /// The enrolled name.
    pub name: String,
    /// The machine's certificate, base64url.
    pub certificate: String,
    /// Its passkey.
    pub passkey: String,
    /// The organisation key, hex.
    pub org_key: String,
    /// The organisation secret, hex.
    pub org_secret: String,
    /// The organisation's recovery recipients.
    pub recovery_recipients: Vec<String>,
}

async fn enroll(shared: &Arc<Shared>, req: Request<Incoming>) -> Resp {
    let body = match read_body(req, 4096, shared.config.body_timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let r = blocking(shared, move |sh| {
        let r = admin::redeem(&mut **lock_db(sh), &sh.org, &body, unix_now());
        if r.is_ok() {
            let _ = reload_if_changed(sh, true);
        }
        r
    })
    .await;
    match r {
        Some(Ok(e)) => json(
            StatusCode::CREATED,
            &EnrollAnswer {
                name: e.row.name.clone(),
                certificate: swarmbak_trust::to_b64(&e.certificate),
                passkey: e.row.passkey.clone(),
                org_key: shared.org.public().to_hex(),
                org_secret: hex::encode(shared.org.secret),
                recovery_recipients: e.recovery_recipients,
            },
        ),
        Some(Err(e)) => admin_error(&e),
        None => json_error(StatusCode::INTERNAL_SERVER_ERROR, "enrolment failed"),
    }
}

/// `POST /api/v1/enrollments` (admin): what `swarmbak tracker enroll` does, over HTTP.
async fn enrollments(shared: &Arc<Shared>, req: Request<Incoming>, by: admin::Actor) -> Resp {
    #[derive(serde::Deserialize)]
    struct Ask {
        name: String,
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        vip: bool,
        #[serde(default)]
        domain: Option<String>,
        #[serde(default)]
        expires_days: Option<u32>,
        #[serde(default)]
        client: bool,
    }
    let body = match read_body(req, 8192, shared.config.body_timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let ask: Ask = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"name\": …}}: {e}"),
            )
        }
    };
    let r = blocking(shared, move |sh| {
        let mut db = lock_db(sh);
        let now = unix_now();
        let out = if ask.client {
            admin::create_client(&mut **db, None, &ask.name, &by, now)
                .map(|(row, url)| serde_json::json!({"name": row.name, "passkey": row.passkey, "announce_url": url}))
        } else {
            admin::create_token(
                &mut **db,
                &sh.org,
                None,
                &admin::EnrollOptions {
                    name: ask.name.clone(),
                    user: ask.user,
                    vip: ask.vip,
                    domain: ask.domain,
                    cert_days: ask.expires_days,
                },
                &by,
                now,
            )
            .map(|t| serde_json::json!({"name": ask.name, "token": t}))
        };
        drop(db);
        if out.is_ok() {
            let _ = reload_if_changed(sh, true);
        }
        out
    })
    .await;
    match r {
        Some(Ok(v)) => json(StatusCode::CREATED, &v),
        Some(Err(e)) => admin_error(&e),
        None => json_error(StatusCode::INTERNAL_SERVER_ERROR, "enrolment failed"),
    }
}

fn health(shared: &Shared) -> Resp {
    #[derive(Serialize)]
    struct Health {
        status: &'static str,
        service: &'static str,
        version: &'static str,
        private: bool,
        torrents: usize,
        machines: usize,
        peers: usize,
        uptime_seconds: u64,
    }
    let (torrents, machines) = {
        let s = read_snaps(shared);
        (s.rows().len(), s.machine_count())
    };
    json(
        StatusCode::OK,
        &Health {
            status: "ok",
            service: "swarmbak-tracker",
            version: env!("CARGO_PKG_VERSION"),
            private: !shared.config.open,
            torrents,
            machines,
            peers: shared.swarms.peer_count(),
            uptime_seconds: shared.started.elapsed().as_secs(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let pk = "0123456789abcdef0123456789abcdef";
        assert_eq!(bt_route("/announce"), Some((Bt::Announce, None)));
        assert_eq!(bt_route("/ann"), Some((Bt::Announce, None)));
        assert_eq!(
            bt_route(&format!("/announce/{pk}")),
            Some((Bt::Announce, Some(pk)))
        );
        assert_eq!(
            bt_route(&format!("/{pk}/announce")),
            Some((Bt::Announce, Some(pk)))
        );
        assert_eq!(
            bt_route(&format!("/{pk}/scrape")),
            Some((Bt::Scrape, Some(pk)))
        );
        assert_eq!(bt_route("/scrape"), Some((Bt::Scrape, None)));
        assert_eq!(bt_route("/scr"), Some((Bt::Scrape, None)));
        assert_eq!(bt_route("/schedule"), None);
        assert_eq!(bt_route(&format!("/{pk}/schedule")), None);
        assert_eq!(bt_route("/roster"), None);
        assert_eq!(bt_route(&format!("/{pk}/roster")), None);
        assert_eq!(bt_route("/publish"), None);
        assert_eq!(bt_route("/metainfo/ab"), None);
        assert_eq!(bt_route("/api/v1/enroll"), None);
    }
}
