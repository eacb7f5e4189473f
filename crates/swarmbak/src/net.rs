//! The commands that talk to the network: tracker, agent, and the swarm side of seed,
//! fetch, health and snapshots --machine.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use swarmbak_agent::{Engine, EngineConfig, Role, Torrent};
use swarmbak_format::{backup, BackupOptions, Home, InfoHash, Store};
use swarmbak_tracker::{TrackerClient, TrackerConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::cmd::Failure;
use crate::ui::Ui;
use crate::{Ctx, Until};

type R = Result<(), Failure>;

pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(1, format!("cannot start the async runtime: {e}")))
}

fn client(url: &str) -> Result<TrackerClient, Failure> {
    TrackerClient::new(url).map_err(|e| Failure::new(2, format!("tracker {url}: {e}")))
}

fn listening(ctx: &Ctx, addr: SocketAddr) {
    // The contract: the first line of stdout of a listening command.
    if ctx.json {
        println!(
            "{}",
            json!({"event": "listening", "addr": addr.to_string()})
        );
    }
    println!("listening {addr}");
}

/// Seconds from an environment variable (for tests and the demo), or a default.
fn env_secs(name: &str, default: f64) -> Duration {
    let s = std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(default);
    Duration::from_secs_f64(s.max(0.05))
}

fn bind_addr(listen: Option<&str>) -> Result<SocketAddr, Failure> {
    let s = listen.unwrap_or("0.0.0.0:0");
    s.parse().map_err(|_| {
        Failure::new(
            2,
            format!("--listen {s:?}: give HOST:PORT, like 0.0.0.0:6881 (port 0 picks one)"),
        )
    })
}

pub fn tracker(ctx: &Ctx, listen: &str, data: &Path, interval: Option<u64>) -> R {
    let addr = bind_addr(Some(listen))?;
    let rt = runtime()?;
    rt.block_on(async {
        let mut cfg = TrackerConfig::new(data);
        if let Some(i) = interval {
            cfg.interval = Duration::from_secs(i.max(1));
            cfg.min_interval = Duration::from_secs((i / 2).max(1));
        }
        let data = data.to_path_buf();
        let t = tokio::task::spawn_blocking(move || swarmbak_tracker::Tracker::open(cfg))
            .await
            .map_err(|e| Failure::new(1, e.to_string()))?
            .map_err(|e| Failure::new(1, format!("{e}")))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Failure::new(1, format!("cannot listen on {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| Failure::new(1, e.to_string()))?;
        listening(ctx, local);
        let r = t.load_report();
        eprintln!("swarmbak tracker: data in {}; {r:?}", data.display());
        t.serve(listener)
            .await
            .map_err(|e| Failure::new(1, e.to_string()))
    })
}

fn machine_key(home: &Home) -> Vec<u8> {
    home.config().public_key.as_bytes().to_vec()
}

async fn engine_for(home: &Home, listen: Option<&str>, verbose: bool) -> Result<Engine, Failure> {
    let tracker = match &home.config().tracker {
        Some(t) => Some(client(t)?),
        None => None,
    };
    Engine::start(EngineConfig {
        listen: bind_addr(listen)?,
        machine_key: machine_key(home),
        tracker,
        announce_every: env_secs("SWARMBAK_ANNOUNCE_SECS", 30.0),
        verbose,
    })
    .await
    .map_err(|e| Failure::new(1, format!("cannot listen for peers: {e}")))
}

/// `swarmbak agent`: seeds this machine's snapshots, holds and replicates others'.
pub fn agent(ctx: &Ctx, listen: Option<&str>) -> R {
    let home = Home::open(&ctx.home)?;
    let lock = home.lock()?;
    let store = home.store();
    store.clean_tmp()?;
    let copies = home.config().copies as usize;
    let rt = runtime()?;
    rt.block_on(async move {
        let engine = engine_for(
            &home,
            listen,
            std::env::var_os("SWARMBAK_VERBOSE").is_some(),
        )
        .await?;
        listening(ctx, engine.local_addr());
        let me = machine_key(&home);
        let own: HashSet<String> = store
            .own_snapshots()?
            .into_iter()
            .map(|s| s.infohash)
            .collect();
        let mut held = Vec::new();
        for ih in store.list()? {
            let role = if own.contains(&ih.to_hex()) {
                Role::Seed
            } else {
                Role::Replicate { copies }
            };
            let owner = if role == Role::Seed {
                Some(me.clone())
            } else {
                store.owner(&ih)
            };
            match Torrent::open(&store, ih, role.clone(), owner, me.clone()) {
                Ok(t) => {
                    if role != Role::Seed {
                        held.push(t.clone());
                    }
                    engine.add(t)
                }
                Err(e) => eprintln!("swarmbak agent: skipping {ih}: {e}"),
            }
        }
        // Other machines' shards count against the quota.
        let quota = home.config().quota.map(|limit| {
            let used = held
                .iter()
                .map(|t| t.have().count() as u64 * t.layout().shard_size as u64)
                .sum();
            swarmbak_agent::Quota::new(limit, used)
        });
        if let Some(q) = &quota {
            for t in &held {
                t.set_quota(q.clone());
            }
        }
        let home = Arc::new(home);
        // Seed hand-over from `swarmbak seed` on the same home.
        let sock = ctx.home.join("agent.sock");
        let _ = std::fs::remove_file(&sock);
        let ul = tokio::net::UnixListener::bind(&sock)
            .map_err(|e| Failure::new(1, format!("{}: {e}", sock.display())))?;
        // Only this user may hand the agent backups to make.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Failure::new(1, format!("{}: {e}", sock.display())))?;
        }
        {
            let (engine, home) = (engine.clone(), home.clone());
            tokio::spawn(async move {
                while let Ok((s, _)) = ul.accept().await {
                    let (engine, home) = (engine.clone(), home.clone());
                    tokio::spawn(async move { serve_local(s, engine, home).await });
                }
            });
        }
        let poll = env_secs("SWARMBAK_POLL_SECS", 30.0);
        let tracker = home.config().tracker.clone();
        let mut stop = Box::pin(shutdown_signal());
        loop {
            if let Some(url) = &tracker {
                if let Err(e) =
                    replicate_new(&engine, &store, url, copies, &me, quota.as_ref()).await
                {
                    eprintln!("swarmbak agent: {e}");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = &mut stop => break,
            }
        }
        for t in engine.torrents() {
            engine.remove(&t.ih);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = std::fs::remove_file(&sock);
        drop(lock);
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// [`replicate_new`] for a tracker that keeps no snapshot list: every torrent of a full
/// scrape that turns out (by its metainfo, fetched over BEP 9) to be a swarmbak snapshot.
/// The owner is unknown here unless recorded earlier.
async fn replicate_scraped(
    engine: &Engine,
    store: &Store,
    c: &TrackerClient,
    url: &str,
    copies: usize,
    me: &[u8],
    quota: Option<&Arc<swarmbak_agent::Quota>>,
) -> Result<(), String> {
    let scraped = c
        .scrape(&[])
        .await
        .map_err(|e| format!("tracker full scrape: {e}"))?;
    for ih in scraped.keys() {
        let ih = *ih;
        if engine.torrent(&ih).is_some() {
            continue;
        }
        if !store.has(&ih) && ensure_metainfo(store, &ih, None, Some(url)).await.is_err() {
            continue;
        }
        // Not a swarmbak snapshot (someone else's torrent on a shared tracker): left alone.
        if let Ok(t) = Torrent::open(
            store,
            ih,
            Role::Replicate { copies },
            store.owner(&ih),
            me.to_vec(),
        ) {
            if let Some(q) = quota {
                t.set_quota(q.clone());
            }
            engine.add(t)
        }
    }
    Ok(())
}

/// Takes part in every published snapshot of other machines this agent does not hold yet.
async fn replicate_new(
    engine: &Engine,
    store: &Store,
    url: &str,
    copies: usize,
    me: &[u8],
    quota: Option<&Arc<swarmbak_agent::Quota>>,
) -> Result<(), String> {
    let c = client(url)
        .map_err(|f| f.message)?
        .with_retry(swarmbak_tracker::Retry::none());
    let recs = match c.snapshots(None).await {
        Ok(r) => r,
        // Not a swarmbak tracker (opentracker): learn the torrents from a full scrape and
        // their metainfo over BEP 9 from the peers that seed them.
        Err(e) if matches!(http_status(&e), Some(400 | 404 | 405)) => {
            return replicate_scraped(engine, store, &c, url, copies, me, quota).await;
        }
        Err(e) => return Err(format!("tracker: {e}")),
    };
    for r in recs {
        let Ok(ih) = InfoHash::from_hex(&r.infohash) else {
            continue;
        };
        if engine.torrent(&ih).is_some() || r.machine_key.as_bytes() == me {
            continue;
        }
        if !store.has(&ih) {
            let Ok(Some(bytes)) = c.metainfo(&ih).await else {
                continue;
            };
            store.add_torrent(&ih, &bytes).map_err(|e| e.to_string())?;
            store
                .set_owner(&ih, r.machine_key.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        match Torrent::open(
            store,
            ih,
            Role::Replicate { copies },
            Some(r.machine_key.as_bytes().to_vec()),
            me.to_vec(),
        ) {
            Ok(t) => {
                if let Some(q) = quota {
                    t.set_quota(q.clone());
                }
                engine.add(t)
            }
            Err(e) => eprintln!("swarmbak agent: {ih}: {e}"),
        }
    }
    Ok(())
}

/// One request from a local `swarmbak seed` (JSON lines over HOME/agent.sock).
async fn serve_local(s: tokio::net::UnixStream, engine: Engine, home: Arc<Home>) {
    let (r, mut w) = s.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let reply = match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(v) => local_request(&v, &engine, &home).await,
            Err(e) => json!({"error": format!("bad request: {e}")}),
        };
        if w.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn local_request(
    v: &serde_json::Value,
    engine: &Engine,
    home: &Arc<Home>,
) -> serde_json::Value {
    match v["op"].as_str() {
        Some("seed") => {
            let paths: Vec<PathBuf> = v["paths"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_str().map(PathBuf::from))
                        .collect()
                })
                .unwrap_or_default();
            let h = home.clone();
            let made = tokio::task::spawn_blocking(move || {
                let mut opts = BackupOptions::new(paths);
                opts.announce = h.config().tracker.as_ref().map(|t| format!("{t}/announce"));
                backup::backup_locked(&h, &opts, &backup::NoProgress)
            })
            .await;
            let r = match made {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return json!({"error": e.to_string()}),
                Err(e) => return json!({"error": e.to_string()}),
            };
            let store = home.store();
            let me = machine_key(home);
            if let Ok(t) = Torrent::open(&store, r.infohash, Role::Seed, Some(me.clone()), me) {
                engine.add(t);
            }
            json!({"infohash": r.infohash.to_hex(), "info": r.info})
        }
        Some("publish") => {
            let Some(ih) = v["infohash"]
                .as_str()
                .and_then(|s| InfoHash::from_hex(s).ok())
            else {
                return json!({"error": "publish needs an infohash"});
            };
            match publish(
                home,
                &ih,
                Duration::from_secs(v["timeout"].as_u64().unwrap_or(600)),
            )
            .await
            {
                Ok(()) => json!({"published": true}),
                Err(f) => json!({"error": f.message}),
            }
        }
        Some("holders") => {
            let Some(t) = v["infohash"]
                .as_str()
                .and_then(|s| InfoHash::from_hex(s).ok())
                .and_then(|ih| engine.torrent(&ih))
            else {
                return json!({"error": "not a snapshot this agent serves"});
            };
            json!({"holders": t.holders()})
        }
        _ => json!({"error": "unknown op"}),
    }
}

/// The HTTP status behind a tracker client error, if it was one.
fn http_status(e: &swarmbak_tracker::ClientError) -> Option<u16> {
    match e {
        swarmbak_tracker::ClientError::Http { status, .. } => Some(*status),
        swarmbak_tracker::ClientError::GaveUp { last, .. } => http_status(last),
        _ => None,
    }
}

/// Publishes a snapshot to the configured tracker, retrying with backoff until `timeout`.
async fn publish(home: &Home, ih: &InfoHash, timeout: Duration) -> Result<(), Failure> {
    let Some(url) = home.config().tracker.clone() else {
        return Ok(());
    };
    let bytes = home.store().torrent_bytes(ih)?;
    let c = client(&url)?.with_retry(swarmbak_tracker::Retry::for_duration(timeout));
    match c
        .publish(&bytes, &home.config().public_key, &home.config().name)
        .await
    {
        Ok(_) => Ok(()),
        // A tracker that is not swarmbak's (opentracker) has no publish endpoint: the
        // snapshot is still announced and seeded; its metainfo travels over BEP 9.
        Err(e) if matches!(http_status(&e), Some(400 | 404 | 405)) => {
            let status = http_status(&e).unwrap_or(0);
            eprintln!(
                "swarmbak: {url} keeps no snapshots (HTTP {status} on publish: not a swarmbak tracker?); announcing only. Machines find this snapshot by its infohash, its metainfo over BEP 9"
            );
            Ok(())
        }
        Err(e) => Err(Failure::new(
            3,
            format!("could not publish {ih} to {url}: {e}"),
        )),
    }
}

/// The swarm side of `swarmbak seed`: publish, then seed until durable (or forever).
pub fn seed(
    ctx: &Ctx,
    paths: Vec<PathBuf>,
    until: Until,
    copies: Option<u32>,
    timeout: Option<u64>,
) -> R {
    let home = Home::open(&ctx.home)?;
    let copies = copies.unwrap_or(home.config().copies) as usize;
    let deadline = timeout.map(|s| Instant::now() + Duration::from_secs(s));
    let rt = runtime()?;
    // An agent on this home holds the store: hand the backup to it.
    let sock = ctx.home.join("agent.sock");
    let handed = match home.lock() {
        Ok(lock) => {
            drop(lock);
            false
        }
        Err(swarmbak_format::FormatError::Locked(_)) if sock.exists() => true,
        Err(e) => return Err(e.into()),
    };
    let ih = if handed {
        // The agent runs elsewhere: give it absolute paths.
        let abs: Vec<PathBuf> = paths
            .iter()
            .map(|p| {
                std::fs::canonicalize(p)
                    .map_err(|e| Failure::new(1, format!("{}: {e}", p.display())))
            })
            .collect::<Result<_, _>>()?;
        let reply = rt.block_on(local_call(&sock, json!({"op": "seed", "paths": abs})))?;
        let ih = reply["infohash"]
            .as_str()
            .and_then(|s| InfoHash::from_hex(s).ok())
            .ok_or_else(|| {
                Failure::new(
                    1,
                    format!(
                        "the agent could not make the snapshot: {}",
                        reply["error"].as_str().unwrap_or("?")
                    ),
                )
            })?;
        crate::cmd::print_snapshot(
            ctx,
            &ih,
            &serde_json::from_value(reply["info"].clone()).ok(),
            0.0,
            home.config().tracker.is_some(),
        );
        ih
    } else {
        crate::cmd::make_snapshot(ctx, &home, paths)?
    };
    if home.config().tracker.is_none() {
        return Ok(());
    }
    let left = |d: Option<Instant>| {
        d.map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600 * 24 * 365))
    };
    // Publish (retrying while the tracker refuses or is down).
    let published = if handed {
        rt.block_on(local_call(
            &sock,
            json!({"op": "publish", "infohash": ih.to_hex(), "timeout": left(deadline).as_secs()}),
        ))
        .and_then(|r| match r["error"].as_str() {
            Some(e) => Err(Failure::new(3, e.to_string())),
            None => Ok(()),
        })
    } else {
        rt.block_on(publish(&home, &ih, left(deadline)))
    };
    match published {
        Ok(()) => say(ctx, json!({"event": "published", "infohash": ih.to_hex(), "tracker": home.config().tracker}), || {
            format!("published to {}", home.config().tracker.as_deref().unwrap_or(""))
        }),
        Err(f) => {
            return Err(Failure::new(3, format!("{}; the snapshot is in the local store: run `swarmbak seed` again later, or start `swarmbak agent`", f.message)))
        }
    }
    if until == Until::Published {
        return Ok(());
    }
    if handed {
        // The agent seeds; wait for durability through it.
        return rt.block_on(async {
            loop {
                let r = local_call(&sock, json!({"op": "holders", "infohash": ih.to_hex()})).await?;
                let holders: Vec<usize> = serde_json::from_value(r["holders"].clone()).unwrap_or_default();
                if until == Until::Durable && !holders.is_empty() && holders.iter().all(|&h| h >= copies) {
                    say(ctx, json!({"event": "durable", "infohash": ih.to_hex(), "copies": copies}), || {
                        format!("durable: every shard is held by at least {copies} other machines; the agent keeps seeding")
                    });
                    return Ok(());
                }
                if deadline.is_some_and(|d| Instant::now() > d) {
                    return Err(timeout_failure(&ih, &holders, copies));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
    let lock = home.lock()?;
    rt.block_on(async {
        let engine = engine_for(&home, None, std::env::var_os("SWARMBAK_VERBOSE").is_some()).await?;
        let me = machine_key(&home);
        let t = Torrent::open(&home.store(), ih, Role::Seed, Some(me.clone()), me).map_err(|e| Failure::new(1, e))?;
        engine.add(t.clone());
        let ui = Ui::new(ctx.json, "durable");
        ui.counter(t.num_pieces() as u64 * copies as u64);
        let mut last = Vec::new();
        loop {
            let holders = t.holders();
            ui.set(holders.iter().map(|&h| h.min(copies) as u64).sum());
            if until == Until::Durable && holders.iter().all(|&h| h >= copies) {
                ui.finish();
                say(ctx, json!({"event": "durable", "infohash": ih.to_hex(), "copies": copies}), || {
                    format!("durable: every shard is held by at least {copies} other machines")
                });
                drop(lock);
                return Ok(());
            }
            if holders != last {
                last = holders.clone();
                if ctx.json {
                    println!("{}", json!({"event": "holders", "infohash": ih.to_hex(), "min": holders.iter().min(), "copies": copies}));
                }
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                ui.finish();
                return Err(timeout_failure(&ih, &holders, copies));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

fn timeout_failure(ih: &InfoHash, holders: &[usize], copies: usize) -> Failure {
    let short = holders.iter().filter(|&&h| h < copies).count();
    Failure::new(
        3,
        format!(
            "timed out: {short} of {} shards of {ih} are held by fewer than {copies} other machines (fewest: {}); start more agents or lower --copies; the snapshot stays published",
            holders.len(),
            holders.iter().min().copied().unwrap_or(0)
        ),
    )
}

fn say(ctx: &Ctx, v: serde_json::Value, human: impl FnOnce() -> String) {
    if ctx.json {
        println!("{v}");
    } else {
        println!("{}", human());
    }
}

async fn local_call(sock: &Path, req: serde_json::Value) -> Result<serde_json::Value, Failure> {
    let s = tokio::net::UnixStream::connect(sock).await.map_err(|e| {
        Failure::new(
            1,
            format!("cannot reach the agent at {}: {e}", sock.display()),
        )
    })?;
    let (r, mut w) = s.into_split();
    w.write_all(format!("{req}\n").as_bytes())
        .await
        .map_err(|e| Failure::new(1, format!("agent: {e}")))?;
    let mut lines = BufReader::new(r).lines();
    match lines.next_line().await {
        Ok(Some(l)) => serde_json::from_str(&l).map_err(|e| Failure::new(1, format!("agent: {e}"))),
        _ => Err(Failure::new(
            1,
            "the agent closed the connection".to_string(),
        )),
    }
}

/// Makes sure `ih`'s metainfo is in the store: from a .torrent, or the tracker.
pub async fn ensure_metainfo(
    store: &Store,
    ih: &InfoHash,
    torrent: Option<&[u8]>,
    tracker: Option<&str>,
) -> Result<(), Failure> {
    if store.has(ih) {
        return Ok(());
    }
    if let Some(b) = torrent {
        store.add_torrent(ih, b)?;
        return Ok(());
    }
    let Some(url) = tracker else {
        return Err(Failure::new(
            1,
            format!("snapshot {ih} is not in the local store and no tracker is configured: `swarmbak init --tracker http://HOST:PORT`, or give the .torrent file"),
        ));
    };
    let c = client(url)?.with_retry(swarmbak_tracker::Retry::for_duration(Duration::from_secs(
        10,
    )));
    let from_tracker = c.metainfo(ih).await;
    if let Ok(Some(b)) = &from_tracker {
        store.add_torrent(ih, b)?;
        return Ok(());
    }
    // The tracker keeps no metainfo for it (opentracker keeps none at all): ask the
    // swarmbak peers it knows of, over BEP 9.
    if let Ok(b) = metadata_from_swarm(ih, Some(url), &[]).await {
        store.add_torrent(ih, &b)?;
        return Ok(());
    }
    match from_tracker {
        Ok(_) => Err(Failure::new(
            1,
            format!("neither the tracker at {url} nor its peers know snapshot {ih}; `swarmbak snapshots --machine NAME` lists a machine's snapshots"),
        )),
        Err(e) => Err(Failure::new(1, format!("cannot get {ih}'s metainfo from {url} or its peers: {e}"))),
    }
}

/// Downloads any k shards of every stripe of `ih` from the swarm into the local store;
/// returns the bytes downloaded.
pub async fn download(
    ctx: &Ctx,
    engine: &Engine,
    store: &Store,
    ih: &InfoHash,
    me: &[u8],
    timeout: Duration,
) -> Result<u64, Failure> {
    let t = Torrent::open(store, *ih, Role::Fetch, None, me.to_vec())
        .map_err(|e| Failure::new(1, e))?;
    if t.restorable_here() {
        return Ok(0);
    }
    engine.add(t.clone());
    let ui = Ui::new(ctx.json, "fetch");
    let l = t.layout();
    ui.counter((l.stripes * l.k) as u64);
    let start = Instant::now();
    let stall = env_secs("SWARMBAK_STALL_SECS", 20.0);
    let mut progress = (0u64, Instant::now());
    let verbose = std::env::var_os("SWARMBAK_VERBOSE").is_some();
    let mut last_note = Instant::now();
    let r = loop {
        let have = t.have();
        let got: u64 = (0..l.stripes)
            .map(|s| {
                (0..l.n())
                    .filter(|&i| have.get(l.piece(s, i) as u32))
                    .count()
                    .min(l.k) as u64
            })
            .sum();
        ui.set(got);
        if verbose && last_note.elapsed() >= Duration::from_millis(500) {
            last_note = Instant::now();
            eprintln!(
                "swarmbak: {ih}: {:.1}s: {got} of {} shards, {} peers",
                start.elapsed().as_secs_f64(),
                l.stripes * l.k,
                t.inner().peers.len()
            );
        }
        if t.restorable_here() {
            break Ok(());
        }
        if got != progress.0 {
            progress = (got, Instant::now());
        }
        // Give up early when nothing arrives and the swarm cannot supply some stripe.
        // (Standard clients seeding a snapshot count too: reachability is by bitfield.)
        let starved = progress.1.elapsed() > stall && {
            let avail = t.reachable();
            (0..l.stripes).any(|s| (0..l.n()).filter(|&i| avail[l.piece(s, i)]).count() < l.k)
        };
        if start.elapsed() > timeout || starved {
            let avail: Vec<bool> = t.reachable();
            let worst = (0..l.stripes)
                .map(|s| (s, (0..l.n()).filter(|&i| avail[l.piece(s, i)]).count()))
                .min_by_key(|x| x.1)
                .unwrap_or((0, 0));
            let peers = t.inner().peers.len();
            let msg = if worst.1 < l.k {
                format!(
                    "could not get {ih}: only {} of the {} shards needed for stripe {} are reachable; {peers} peers are online; run fetch again to resume",
                    worst.1, l.k, worst.0
                )
            } else {
                format!(
                    "could not get {ih} in {}s: the shards are reachable from {peers} peers but arrived too slowly; run fetch again to resume (shards already here are kept)",
                    timeout.as_secs()
                )
            };
            break Err(Failure::new(1, msg));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ui.finish();
    if verbose {
        let g = t.inner();
        for v in g.peers.values() {
            eprintln!(
                "swarmbak: {ih}: {} sent us {} and got {} from us",
                v.addr, v.downloaded, v.uploaded
            );
        }
        eprintln!(
            "swarmbak: {ih}: downloaded in {:.2}s",
            start.elapsed().as_secs_f64()
        );
    }
    engine.remove(ih);
    r.map(|()| t.downloaded.load(std::sync::atomic::Ordering::Relaxed))
}

/// A snapshot's manifest, read from the shards in the local store.
fn local_manifest(
    store: &Store,
    ih: &InfoHash,
    ids: &swarmbak_format::Identities,
) -> Result<swarmbak_format::Manifest, Failure> {
    let src = swarmbak_format::restore::LocalSource {
        store,
        repair: false,
    };
    let reader = swarmbak_format::restore::SnapshotReader::open(
        &src,
        ih,
        &swarmbak_format::backup::NoProgress,
    )?;
    Ok(reader.manifest(ids)?)
}

fn restorable_locally(store: &Store, ih: &InfoHash) -> bool {
    if !store.has(ih) {
        return false;
    }
    let Ok(bytes) = store.torrent_bytes(ih) else {
        return false;
    };
    let Ok(meta) = swarmbak_format::restore::SnapshotMeta::parse(ih, &bytes) else {
        return false;
    };
    let l = meta.layout;
    (0..l.stripes).all(|s| {
        (0..l.n())
            .filter(|&i| {
                let p = l.piece(s, i);
                store
                    .shard_path(ih, p)
                    .metadata()
                    .map(|m| m.len() == l.shard_size as u64)
                    .unwrap_or(false)
            })
            .count()
            >= l.k
    })
}

/// Makes `ih` and every earlier snapshot it reuses restorable from the local store,
/// downloading from the swarm what is missing (resumable: shards already here stay).
#[allow(clippy::too_many_arguments)]
pub fn fetch_into_store(
    ctx: &Ctx,
    store: &Store,
    ih: &InfoHash,
    torrent: Option<Vec<u8>>,
    tracker: Option<String>,
    ids: &swarmbak_format::Identities,
    me: Vec<u8>,
    verify: bool,
) -> Result<u64, Failure> {
    // `verify`: do not trust shard files by their size (a restore found damage).
    if !verify && restorable_locally(store, ih) {
        // Parents are checked by the restore itself.
        let m = local_manifest(store, ih, ids)?;
        if m.snapshots.iter().all(|p| restorable_locally(store, p)) {
            return Ok(0);
        }
    }
    if tracker.is_none() {
        // Nowhere to look: restore from what is here, which names what is missing.
        return Ok(0);
    }
    let timeout = env_secs("SWARMBAK_FETCH_TIMEOUT_SECS", 120.0);
    let rt = runtime()?;
    rt.block_on(async {
        ensure_metainfo(store, ih, torrent.as_deref(), tracker.as_deref()).await?;
        let engine = Engine::start(EngineConfig {
            listen: bind_addr(None)?,
            machine_key: me.clone(),
            tracker: match &tracker {
                Some(t) => Some(client(t)?),
                None => None,
            },
            announce_every: env_secs("SWARMBAK_ANNOUNCE_SECS", 5.0).min(Duration::from_secs(5)),
            verbose: std::env::var_os("SWARMBAK_VERBOSE").is_some(),
        })
        .await
        .map_err(|e| Failure::new(1, format!("cannot listen for peers: {e}")))?;
        let mut got = download(ctx, &engine, store, ih, &me, timeout).await?;
        let m = local_manifest(store, ih, ids)?;
        for p in &m.snapshots {
            ensure_metainfo(store, p, None, tracker.as_deref()).await?;
            got += download(ctx, &engine, store, p, &me, timeout).await?;
        }
        Ok(got)
    })
}

/// `snapshots --machine NAME|KEY`: what the tracker knows of another machine.
pub fn machine_snapshots(ctx: &Ctx, machine: &str) -> R {
    let home = Home::open(&ctx.home)?;
    let Some(url) = home.config().tracker.clone() else {
        return Err(Failure::new(2, "listing another machine's snapshots needs the tracker: `swarmbak init --tracker http://HOST:PORT`"));
    };
    let rt = runtime()?;
    let recs = rt.block_on(async {
        client(&url)?
            .snapshots(Some(machine))
            .await
            .map_err(|e| Failure::new(1, format!("tracker {url}: {e}")))
    })?;
    if recs.is_empty() {
        return Err(Failure::new(
            1,
            format!("the tracker knows no snapshot of a machine named or keyed {machine:?}"),
        ));
    }
    for r in &recs {
        if ctx.json {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        } else {
            println!(
                "{}  {}  {:>10}  {}",
                r.infohash,
                crate::cmd::utc(r.published),
                indicatif::HumanBytes(r.payload_length).to_string(),
                r.machine_name
            );
        }
    }
    Ok(())
}

/// `health INFOHASH` against the swarm: who holds which shard right now.
pub fn swarm_health(ctx: &Ctx, ih: &InfoHash, tracker: &str, me: Vec<u8>) -> R {
    let store = Store::new(ctx.home.join("store"));
    let rt = runtime()?;
    rt.block_on(async {
        ensure_metainfo(&store, ih, None, Some(tracker)).await?;
        let engine = Engine::start(EngineConfig {
            listen: bind_addr(None)?,
            machine_key: me.clone(),
            tracker: Some(client(tracker)?),
            announce_every: Duration::from_secs(2),
            verbose: false,
        })
        .await
        .map_err(|e| Failure::new(1, format!("cannot listen for peers: {e}")))?;
        let t = Torrent::open(&store, *ih, Role::Seed, None, me.clone()).map_err(|e| Failure::new(1, e))?;
        engine.add(t.clone());
        // Listen to the swarm for a moment: peers' bitfields arrive right after connecting.
        let wait = env_secs("SWARMBAK_HEALTH_SECS", 3.0);
        tokio::time::sleep(wait).await;
        let sets = t.holder_sets();
        let l = t.layout();
        let mut stripes = Vec::new();
        let mut recoverable = true;
        for s in 0..l.stripes {
            let reachable = (0..l.n()).filter(|&i| !sets[l.piece(s, i)].is_empty()).count();
            recoverable &= reachable >= l.k;
            stripes.push(reachable);
        }
        let machines: HashSet<&Vec<u8>> = sets.iter().flatten().collect();
        let per_shard: Vec<usize> = sets.iter().map(|s| s.len()).collect();
        let v = json!({"infohash": ih.to_hex(), "recoverable": recoverable, "k": l.k, "m": l.m,
                       "stripes": l.stripes, "reachable_shards_per_stripe": stripes,
                       "holders_per_shard": per_shard, "machines_online": machines.len(), "scope": "swarm"});
        if ctx.json {
            println!("{v}");
        } else {
            println!(
                "{ih}: {} now; {} machines online hold its shards; {} stripes of {}+{}; fewest reachable shards in a stripe: {} (need {}); fewest holders of a shard: {}",
                if recoverable { "recoverable" } else { "NOT recoverable" },
                machines.len(),
                l.stripes,
                l.k,
                l.m,
                stripes.iter().min().copied().unwrap_or(0),
                l.k,
                per_shard.iter().min().copied().unwrap_or(0)
            );
        }
        if recoverable {
            Ok(())
        } else {
            Err(Failure::new(1, format!("snapshot {ih} cannot be restored from the machines online now")))
        }
    })
}

/// `fetch` of a plain (non-swarmbak) torrent: download every piece from the peers the
/// tracker names (or `peers`), then write its files under `to`, refusing any path that
/// would leave it.
pub fn fetch_plain(
    ctx: &Ctx,
    ih: &InfoHash,
    torrent: Option<Vec<u8>>,
    tracker: Option<String>,
    peers: &[SocketAddr],
    to: &Path,
) -> Result<u64, Failure> {
    let store = Store::new(ctx.home.join("plain"));
    check_empty(to)?;
    let rt = runtime()?;
    let downloaded = rt.block_on(async {
        if !store.has(ih) {
            let bytes = match torrent {
                Some(b) => b,
                None => metadata_from_swarm(ih, tracker.as_deref(), peers).await?,
            };
            store.add_torrent(ih, &bytes)?;
        }
        let t = Torrent::open_plain(&store, *ih, Vec::new()).map_err(|e| Failure::new(1, e))?;
        refuse_unsafe_paths(&t.torrent_bytes)?;
        if t.restorable_here() {
            return Ok(0);
        }
        let engine = Engine::start(EngineConfig {
            listen: bind_addr(None)?,
            machine_key: Vec::new(),
            tracker: match &tracker {
                Some(u) => Some(client(u)?),
                None => None,
            },
            announce_every: env_secs("SWARMBAK_ANNOUNCE_SECS", 5.0).min(Duration::from_secs(5)),
            verbose: std::env::var_os("SWARMBAK_VERBOSE").is_some(),
        })
        .await
        .map_err(|e| Failure::new(1, format!("cannot listen for peers: {e}")))?;
        engine.add(t.clone());
        for p in peers {
            engine.connect(*ih, *p);
        }
        let ui = Ui::new(ctx.json, "fetch");
        ui.counter(t.num_pieces() as u64);
        let timeout = env_secs("SWARMBAK_FETCH_TIMEOUT_SECS", 600.0);
        let start = Instant::now();
        while !t.restorable_here() {
            ui.set(t.have().count() as u64);
            if start.elapsed() > timeout {
                ui.finish();
                return Err(Failure::new(
                    1,
                    format!(
                        "could not get every piece of {ih} in {}s ({} of {} here, {} peers); run fetch again to resume",
                        timeout.as_secs(),
                        t.have().count(),
                        t.num_pieces(),
                        t.inner().peers.len()
                    ),
                ));
            }
            if t.inner().peers.is_empty() {
                for p in peers {
                    engine.connect(*ih, *p);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ui.finish();
        Ok(t.downloaded.load(std::sync::atomic::Ordering::Relaxed))
    })?;
    let t = Torrent::open_plain(&store, *ih, Vec::new()).map_err(|e| Failure::new(1, e))?;
    write_plain_files(&t, &store, to)?;
    Ok(downloaded)
}

fn check_empty(to: &Path) -> R {
    let busy = std::fs::read_dir(to)
        .map(|mut rd| rd.next().is_some())
        .unwrap_or(false);
    if busy {
        return Err(Failure::new(
            1,
            format!(
                "{} is not empty; give a new or empty directory",
                to.display()
            ),
        ));
    }
    Ok(())
}

/// A plain torrent's metainfo over BEP 9 from the peers the tracker names (or given).
async fn metadata_from_swarm(
    ih: &InfoHash,
    tracker: Option<&str>,
    peers: &[SocketAddr],
) -> Result<Vec<u8>, Failure> {
    let peer_id = swarmbak_agent::engine::new_peer_id();
    let mut cands: Vec<SocketAddr> = peers.to_vec();
    if let Some(url) = tracker {
        let c = client(url)?.with_retry(swarmbak_tracker::Retry::for_duration(
            Duration::from_secs(10),
        ));
        if let Ok(r) = c
            .announce(&swarmbak_tracker::AnnounceRequest::new(
                *ih,
                swarmbak_tracker::PeerId(peer_id),
                1,
                1,
            ))
            .await
        {
            // Not ourselves (we announced port 1 only to be given peers; some trackers,
            // opentracker among them, return the asker too).
            cands.extend(
                r.peers
                    .into_iter()
                    .map(|p| p.addr)
                    .filter(|a| a.port() != 1),
            );
        }
        let mut stop =
            swarmbak_tracker::AnnounceRequest::new(*ih, swarmbak_tracker::PeerId(peer_id), 1, 1);
        stop.event = Some(swarmbak_tracker::AnnounceEvent::Stopped);
        let _ = tokio::time::timeout(Duration::from_secs(2), c.announce(&stop)).await;
    }
    let announce = tracker.map(|u| format!("{u}/announce"));
    let mut why = Vec::new();
    for p in &cands {
        match swarmbak_agent::metadata::from_peer(*p, *ih, peer_id, announce.as_deref()).await {
            Ok(b) => return Ok(b),
            Err(e) => why.push(format!("{p}: {e}")),
        }
    }
    Err(Failure::new(
        1,
        format!(
            "no peer served {ih}'s metadata ({} tried{}{}); give the .torrent file instead (standard clients never serve metadata for private torrents)",
            cands.len(),
            if why.is_empty() { "" } else { ": " },
            why.join("; ")
        ),
    ))
}

fn refuse_unsafe_paths(torrent: &[u8]) -> R {
    let mi = swarmbak_metainfo::Metainfo::from_bytes(torrent)
        .map_err(|e| Failure::new(1, e.to_string()))?;
    let bad = mi.unsafe_paths();
    if bad.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = bad
        .iter()
        .take(5)
        .map(|u| {
            format!(
                "{:?} ({:?})",
                String::from_utf8_lossy(&u.component),
                u.problem
            )
        })
        .collect();
    Err(Failure::new(
        1,
        format!(
            "refused: this torrent names {} path(s) that would leave the target directory or are not plain names: {}; nothing was written",
            bad.len(),
            shown.join(", ")
        ),
    ))
}

/// Writes a plain torrent's files from its verified pieces: DIR/NAME for a single file,
/// DIR/NAME/PATH... for several; padding files (BEP 47) are skipped.
fn write_plain_files(t: &Torrent, store: &Store, to: &Path) -> R {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mi = swarmbak_metainfo::Metainfo::from_bytes(&t.torrent_bytes)
        .map_err(|e| Failure::new(1, e.to_string()))?;
    refuse_unsafe_paths(&t.torrent_bytes)?;
    let name = std::ffi::OsStr::from_encoded_bytes_unchecked_safe(mi.name());
    std::fs::create_dir_all(to)?;
    let pl = mi.piece_length();
    let mut cache: Option<(u64, Vec<u8>)> = None;
    for f in mi.files() {
        if f.is_padding() {
            continue;
        }
        let mut path = to.join(name);
        if mi.is_multi_file() {
            for c in &f.path {
                path.push(std::ffi::OsStr::from_encoded_bytes_unchecked_safe(c));
            }
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Failure::new(1, format!("{}: {e}", path.display())))?;
        let mut off = f.offset;
        let end = f.offset + f.length;
        while off < end {
            let piece = off / pl;
            if cache.as_ref().map(|c| c.0) != Some(piece) {
                let b = store
                    .read_shard(&t.ih, piece as usize)?
                    .ok_or_else(|| Failure::new(1, format!("piece {piece} is missing")))?;
                cache = Some((piece, b));
            }
            let (_, b) = cache
                .as_ref()
                .ok_or_else(|| Failure::new(1, "piece cache"))?;
            let a = (off - piece * pl) as usize;
            let n = ((end - off) as usize).min(b.len() - a);
            out.write_all(&b[a..a + n])?;
            off += n as u64;
        }
    }
    Ok(())
}

/// `OsStr` from bytes on Unix (file names are bytes).
trait OsStrBytes {
    fn from_encoded_bytes_unchecked_safe(b: &[u8]) -> &std::ffi::OsStr;
}
impl OsStrBytes for std::ffi::OsStr {
    fn from_encoded_bytes_unchecked_safe(b: &[u8]) -> &std::ffi::OsStr {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(b)
    }
}
