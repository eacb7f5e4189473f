//! Getting a snapshot's shards from the swarm into the local store (swarm.md §2, Fetch):
//! discover → connect → pick → verify; the restore (rebuild → decrypt → write) is the
//! format crate's.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::sync::Arc;
use swarmbak_agent::{Engine, EngineConfig, Role, Torrent};

use swarmbak_core::{Clock, InfoHash, MachineKey, SystemClock};
use swarmbak_format::restore::{LocalSource, SnapshotMeta, SnapshotReader};
use swarmbak_format::{Identities, Manifest, Store};

use crate::config::Settings;
use crate::discovery::{tracker_client, Discovery, TrackerDiscovery, TrackerRef};
use crate::error::FetchError;
use crate::membership::Membership;
use crate::report::{Event, Report};

/// How often a command that waits says what for.
pub const SAY_EVERY: Duration = Duration::from_secs(5);

/// The default of `fetch --timeout`.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(300);

/// Starts a peer engine: listening on `listen` (port 0: any), announcing to `tracker`
/// and to the peer-only trackers `peer_trackers` (swarm.md §5.1.1).
/// `machine`: the key sent as `sb_key`; `None` for processes that are not holders
/// (fetch, health), so they never move placement (swarm.md §3.1). `clock`: what
/// takeovers are measured with (the node's, which tests move by hand). `repair`: how
/// the agent repairs (swarm.md §18); `None` for every other process.
///
/// `membership`: an enrolled machine's; its peers then authenticate (wire.md
/// "Authenticated peers"), and its revocations are refreshed while the engine runs.
#[allow(clippy::too_many_arguments)]
pub async fn start_engine(
    listen: SocketAddr,
    machine: Option<&MachineKey>,
    membership: Option<&Membership>,
    tracker: Option<&TrackerRef>,
    peer_trackers: &[String],
    settings: &Settings,
    announce_every: Duration,
    clock: Arc<dyn Clock>,
    repair: Option<swarmbak_agent::RepairSettings>,
) -> Result<Engine, FetchError> {
    let client = match tracker {
        Some(t) => Some(tracker_client(t)?),
        None => None,
    };
    let peer_trackers = peer_trackers
        .iter()
        .map(|u| tracker_client(&TrackerRef::unpinned(u.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let engine = Engine::start(EngineConfig {
        listen,
        machine_key: machine.cloned(),
        identity: membership.map(|m| m.identity.clone()),
        takeover_grace: settings.takeover_grace,
        clock,
        tracker: client,
        peer_trackers,
        announce_every,
        verbose: settings.verbose,
        possession_log: membership.map(Membership::possession_log),
        repair,
    })
    .await
    .map_err(FetchError::Listen)?;
    if let (Some(m), Some(t)) = (membership, tracker) {
        m.watch(t, &engine);
    }
    Ok(engine)
}

/// Makes sure `ih`'s metainfo is in the store: from a .torrent's bytes, or discovery.
pub async fn ensure_metainfo(
    store: &Store,
    ih: &InfoHash,
    torrent: Option<&[u8]>,
    discovery: Option<&TrackerDiscovery>,
) -> Result<(), FetchError> {
    if store.has(ih) {
        return Ok(());
    }
    if let Some(b) = torrent {
        store.add_torrent(ih, b)?;
        return Ok(());
    }
    let Some(d) = discovery else {
        return Err(FetchError::NoSource(*ih));
    };
    match d.metainfo(ih).await? {
        Some(m) => {
            store.add_torrent(ih, &m.torrent)?;
            Ok(())
        }
        None => Err(FetchError::Unknown {
            infohash: *ih,
            tracker: d.url().to_string(),
        }),
    }
}

/// [`ensure_metainfo`], waiting until `deadline` while nobody knows `ih` yet (a snapshot
/// not published yet, a whitelist not updated) or the tracker does not answer: asked again
/// every second or so, and `report` told what it waits for every [`SAY_EVERY`].
pub async fn await_metainfo(
    store: &Store,
    ih: &InfoHash,
    torrent: Option<&[u8]>,
    d: &TrackerDiscovery,
    deadline: Instant,
    report: &dyn Report,
) -> Result<(), FetchError> {
    let start = Instant::now();
    let mut said: Option<Instant> = None;
    let mut what = format!("the tracker at {} to answer", d.url());
    loop {
        let attempt = ensure_metainfo(store, ih, torrent, Some(d));
        tokio::pin!(attempt);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let r = loop {
            tokio::select! {
                r = &mut attempt => break r,
                _ = tick.tick() => {
                    // A slow answer (a tracker that is down, retried) is waited for too.
                    if start.elapsed() >= Duration::from_secs(2)
                        && said.is_none_or(|t| t.elapsed() >= SAY_EVERY)
                    {
                        said = Some(Instant::now());
                        report.event(&Event::Waiting {
                            what: what.clone(),
                            seconds: start.elapsed().as_secs(),
                        });
                    }
                }
            }
        };
        match r {
            Err(e) if e.may_become_known() => {
                if Instant::now() >= deadline {
                    return Err(FetchError::Waited {
                        secs: start.elapsed().as_secs(),
                        last: Box::new(e),
                    });
                }
                what = e.waiting_for();
                if said.is_none_or(|t| t.elapsed() >= SAY_EVERY) {
                    said = Some(Instant::now());
                    report.event(&Event::Waiting {
                        what: what.clone(),
                        seconds: start.elapsed().as_secs(),
                    });
                }
                tokio::time::sleep(
                    Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now())),
                )
                .await;
            }
            r => return r,
        }
    }
}

/// Downloads any k shards of every stripe of `ih` from the swarm into the local store;
/// returns the bytes downloaded. Gives up when `timeout` passes, or when nothing arrived
/// for `settings.stall` and some stripe lacks reachable shards while peers are connected
/// (with none, it waits for peers, saying so every [`SAY_EVERY`]).
pub async fn download(
    engine: &Engine,
    store: &Store,
    ih: &InfoHash,
    timeout: Duration,
    settings: &Settings,
    report: &dyn Report,
) -> Result<u64, FetchError> {
    let t = Torrent::open(store, *ih, Role::Fetch, None, None)?;
    if t.restorable_here() {
        return Ok(0);
    }
    engine.add(t.clone());
    let l = t.layout();
    report.counter((l.stripes * l.k) as u64);
    let start = Instant::now();
    let mut progress = (0u64, Instant::now());
    let mut last_note = Instant::now();
    let mut said = Instant::now();
    let r = loop {
        let have = t.have();
        let got: u64 = l
            .shards_per_stripe(|p| have.get(p as u32))
            .iter()
            .map(|&c| c.min(l.k) as u64)
            .sum();
        report.set(got);
        if settings.verbose && last_note.elapsed() >= Duration::from_millis(500) {
            last_note = Instant::now();
            report.note(&format!(
                "{ih}: {:.1}s: {got} of {} shards, {} peers",
                start.elapsed().as_secs_f64(),
                l.stripes * l.k,
                t.inner().peers.len()
            ));
        }
        if t.restorable_here() {
            break Ok(());
        }
        if got != progress.0 {
            progress = (got, Instant::now());
        }
        // Give up early when nothing arrives and the swarm cannot supply some stripe.
        // (Standard clients seeding a snapshot count too: reachability is by bitfield.)
        let peers = t.inner().peers.len();
        let starved = peers > 0 && progress.1.elapsed() > settings.stall && {
            let avail = t.reachable();
            !l.recoverable_with(|p| avail[p])
        };
        if peers == 0 && said.elapsed() >= SAY_EVERY {
            said = Instant::now();
            report.event(&Event::Waiting {
                what: format!("peers that hold {ih}'s shards (none connected yet)"),
                seconds: start.elapsed().as_secs(),
            });
        }
        if start.elapsed() > timeout || starved {
            let avail = t.reachable();
            let (stripe, have) = l.worst_stripe(|p| avail[p]);
            let peers = t.inner().peers.len();
            break Err(if have < l.k {
                FetchError::Unreachable {
                    infohash: *ih,
                    stripe,
                    have,
                    k: l.k,
                    peers,
                }
            } else {
                FetchError::TooSlow {
                    infohash: *ih,
                    secs: timeout.as_secs(),
                    peers,
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    report.finish();
    if settings.verbose {
        let g = t.inner();
        for v in g.peers.values() {
            report.note(&format!(
                "{ih}: {} sent us {} and got {} from us",
                v.addr, v.downloaded, v.uploaded
            ));
        }
        report.note(&format!(
            "{ih}: downloaded in {:.2}s",
            start.elapsed().as_secs_f64()
        ));
    }
    engine.remove(ih);
    r.map(|()| t.downloaded.load(Ordering::Relaxed))
}

/// A snapshot's manifest, read from the shards in the local store.
pub fn local_manifest(
    store: &Store,
    ih: &InfoHash,
    ids: &Identities,
) -> Result<Manifest, FetchError> {
    let src = LocalSource {
        store,
        repair: false,
    };
    let reader = SnapshotReader::open(&src, ih, &swarmbak_format::backup::NoProgress)?;
    Ok(reader.manifest(ids)?)
}

/// Does every stripe of `ih` have k shard files of the right size here? (Sizes only: the
/// restore verifies every shard it reads.)
pub fn restorable_locally(store: &Store, ih: &InfoHash) -> bool {
    let Ok(bytes) = store.torrent_bytes(ih) else {
        return false;
    };
    let Ok(meta) = SnapshotMeta::parse(ih, &bytes) else {
        return false;
    };
    let l = meta.layout;
    l.recoverable_with(|p| {
        store
            .shard_path(ih, p)
            .metadata()
            .is_ok_and(|m| m.len() == l.shard_size as u64)
    })
}

/// Where a fetch gets a snapshot from.
pub struct FetchPlan<'a> {
    pub store: &'a Store,
    pub infohash: InfoHash,
    /// The .torrent's bytes, when the user gave a file.
    pub torrent: Option<Vec<u8>>,
    /// The tracker (its URL and TLS pin).
    pub tracker: Option<TrackerRef>,
    /// To read the manifest (which names the earlier snapshots this one reuses).
    pub identities: &'a Identities,
    /// Do not trust shard files by their size (a restore found damage).
    pub verify: bool,
    /// The organisation key of an enrolled machine: snapshots from the tracker must carry
    /// a record it vouches for.
    pub org: Option<swarmbak_trust::PublicKey>,
    /// An enrolled machine's membership: it authenticates to the peers it fetches from.
    pub membership: Option<Membership>,
    /// How long to wait for the tracker and peers to know the snapshot and for its shards
    /// (`fetch --timeout`); `None`: `SWARMBAK_FETCH_TIMEOUT_SECS`, else [`FETCH_TIMEOUT`].
    pub timeout: Option<Duration>,
}

/// Makes the snapshot and every earlier snapshot it reuses restorable from the local
/// store, downloading what is missing (resumable: shards already here stay). Returns the
/// bytes downloaded.
pub fn fetch_into_store(
    plan: &FetchPlan<'_>,
    settings: &Settings,
    report: &dyn Report,
) -> Result<u64, FetchError> {
    let (store, ih) = (plan.store, &plan.infohash);
    if !plan.verify && restorable_locally(store, ih) {
        // Parents are checked by the restore itself.
        let m = local_manifest(store, ih, plan.identities)?;
        if m.snapshots.iter().all(|p| restorable_locally(store, p)) {
            return Ok(0);
        }
    }
    let Some(tracker) = plan.tracker.as_ref() else {
        // Nowhere to look: restore from what is here, which names what is missing.
        return Ok(0);
    };
    let deadline = Instant::now()
        + plan
            .timeout
            .or(settings.fetch_timeout)
            .unwrap_or(FETCH_TIMEOUT);
    let left = || deadline.saturating_duration_since(Instant::now());
    let rt = crate::runtime().map_err(FetchError::Listen)?;
    rt.block_on(async {
        let d = TrackerDiscovery::new(tracker)?
            .retrying_for(Duration::from_secs(10).min(left()))
            .trusting(plan.org);
        await_metainfo(store, ih, plan.torrent.as_deref(), &d, deadline, report).await?;
        let engine = start_engine(
            settings.peer_addr(),
            None,
            plan.membership.as_ref(),
            Some(tracker),
            &[],
            settings,
            settings.fetch_announce(),
            Arc::new(SystemClock),
            None,
        )
        .await?;
        let mut got = download(&engine, store, ih, left(), settings, report).await?;
        let m = local_manifest(store, ih, plan.identities)?;
        for p in &m.snapshots {
            await_metainfo(store, p, None, &d, deadline, report).await?;
            got += download(&engine, store, p, left(), settings, report).await?;
        }
        Ok(got)
    })
}
