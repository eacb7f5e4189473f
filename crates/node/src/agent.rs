//! `swarmbak agent`: the long-running peer. It seeds this machine's snapshots, holds its
//! assigned shards of other machines' snapshots (swarm.md §2, Replicate), answers the
//! local control socket, and runs scheduled jobs. Replication discovery is the first job;
//! scheduled backups, scrubbing, repair and retention join it as jobs.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use swarmbak_agent::{Engine, Quota, Role, Torrent};
use swarmbak_core::{placement, InfoHash, MachineKey};
use swarmbak_format::{backup, Store};
use swarmbak_trust::PublicKey;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::config::Node;
use crate::control::{parse_request, Request, Response};
use crate::discovery::{Discovery, PeerTrackerDiscovery, Sources, TrackerDiscovery};
use crate::error::{AgentError, ConfigError, FetchError};
use crate::fetch::start_engine;

/// A job the agent runs on a schedule.
pub trait Job: Send {
    /// For logs.
    fn name(&self) -> &'static str;
    /// How often it runs (at once when the agent starts, then every this long).
    fn every(&self) -> Duration;
    /// When it is next due, given when it last ran (`None`: never).
    fn due(&self, last: Option<Instant>, now: Instant) -> bool {
        every_due(last, now, self.every())
    }
    /// Runs once. An error is logged; the job runs again when next due.
    fn run<'a>(
        &'a mut self,
        cx: &'a JobContext,
    ) -> crate::discovery::BoxFuture<'a, Result<(), FetchError>>;
    /// The agent is stopping: finish or abandon what runs in the background.
    fn stop<'a>(&'a mut self, _cx: &'a JobContext) -> crate::discovery::BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// Due at once, then every `every`: the schedule of a periodic job.
pub fn every_due(last: Option<Instant>, now: Instant, every: Duration) -> bool {
    last.is_none_or(|l| now.saturating_duration_since(l) >= every)
}

/// What jobs work with.
pub struct JobContext {
    pub node: Node,
    pub engine: Engine,
    pub store: Store,
    pub me: MachineKey,
    /// This machine's failure domain, as its certificate names it (swarm.md §3.1).
    pub domain: Option<Arc<str>>,
    pub quota: Option<Arc<Quota>>,
    /// The organisation key, when enrolled.
    pub org: Option<PublicKey>,
    /// What the jobs and the control socket share (the backup slot, the status).
    pub shared: Arc<crate::schedule::Shared>,
}

/// Takes part in every snapshot of other machines that discovery finds and this agent
/// does not hold yet, in the Replicate role (swarm.md §2, §6).
pub struct Replicate {
    pub discovery: Box<dyn Discovery>,
    pub every: Duration,
    /// Snapshots refused (said once each).
    pub refused: HashSet<InfoHash>,
    /// Snapshots whose metainfo (or, for an enrolled machine, the owner's record) no
    /// source gave, and when it was last asked: asked again after ten poll periods, at
    /// most [`RETRY_LOOKUP`] (a peer-only tracker lists every torrent, and asking means
    /// dialling its peers).
    pub tried: HashMap<InfoHash, Instant>,
    /// The company tracker's roster as last verified (swarm.md §3.5): with one, a
    /// snapshot this machine holds nothing of is joined only when placement over it
    /// assigns this machine a shard index; when the sources keep none, every listed
    /// snapshot is joined; until the first answer, none. Kept while the tracker does not
    /// answer.
    pub roster: RosterState,
    /// Shard indices (k + m) of the listed snapshots whose metainfo the store keeps,
    /// read once each.
    pub shards: HashMap<InfoHash, usize>,
    /// Listed snapshots placement does not assign to this machine under `roster`
    /// (cleared when it changes).
    pub unassigned: HashSet<InfoHash>,
    /// Roster requests in a row that got no answer before the first one did.
    pub roster_misses: u32,
}

/// What the Replicate job knows of the company tracker's roster (swarm.md §3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterState {
    /// Not answered yet: no snapshot this machine holds nothing of is joined.
    Unknown,
    /// The sources keep none (an older or open tracker, peer-only trackers): every
    /// listed snapshot is joined.
    None,
    /// The verified roster.
    Listed(Vec<placement::Candidate>),
}

/// Polls without a roster answer after which an agent that never had one joins as if
/// its sources kept none (swarm.md §3.5).
pub const ROSTER_PATIENCE: u32 = 3;

/// Longest the agent waits before asking again for a snapshot nobody gave it.
pub const RETRY_LOOKUP: Duration = Duration::from_secs(60);

/// Most pieces of a snapshot an agent holds shards of (a snapshot of 256 Ki shards of
/// 1 MiB is 256 GiB of shards; the piece state of a larger one costs every agent more
/// memory than a backup is worth).
pub const MAX_SNAPSHOT_PIECES: usize = 1 << 18;

/// Most bytes of shards a snapshot an agent holds shards of may have (2^18 shards of
/// 1 MiB; the largest snapshot swarmbak writes at the defaults has about 158 GiB).
pub const MAX_SNAPSHOT_BYTES: u64 = 256 << 30;

/// Why a snapshot's metainfo is over the per-snapshot limits ([`MAX_SNAPSHOT_PIECES`],
/// [`MAX_SNAPSHOT_BYTES`]), or `None` when it is within them. Metainfo that does not
/// parse is over them.
pub fn over_limits(torrent: &[u8]) -> Option<String> {
    let mi = match swarmbak_metainfo::Metainfo::from_bytes(torrent) {
        Ok(mi) => mi,
        Err(e) => return Some(format!("its metainfo does not parse: {e}")),
    };
    let pieces = mi.pieces().len();
    let bytes = (pieces as u64).saturating_mul(mi.piece_length());
    if pieces > MAX_SNAPSHOT_PIECES {
        return Some(format!("{pieces} pieces (at most {MAX_SNAPSHOT_PIECES})"));
    }
    if bytes > MAX_SNAPSHOT_BYTES {
        return Some(format!(
            "{bytes} bytes of shards (at most {MAX_SNAPSHOT_BYTES}, 256 GiB)"
        ));
    }
    None
}

impl Replicate {
    /// Polls `discovery` every `every`.
    pub fn new(discovery: Box<dyn Discovery>, every: Duration) -> Replicate {
        Replicate {
            discovery,
            every,
            refused: HashSet::new(),
            tried: HashMap::new(),
            roster: RosterState::Unknown,
            shards: HashMap::new(),
            unassigned: HashSet::new(),
            roster_misses: 0,
        }
    }

    /// Whether placement over the roster assigns this machine any shard index of `ih`
    /// (swarm.md §3.5); `true` when the sources keep no roster, or when the snapshot's
    /// layout cannot be read (opening it says why); `false` before the first answer.
    fn assigned(
        &mut self,
        cx: &JobContext,
        ih: &InfoHash,
        owner: Option<&MachineKey>,
        copies: usize,
    ) -> bool {
        let roster = match &self.roster {
            RosterState::Unknown => return false,
            RosterState::None => return true,
            RosterState::Listed(r) => r,
        };
        if self.unassigned.contains(ih) {
            return false;
        }
        let n = match self.shards.get(ih) {
            Some(&n) => n,
            None => {
                let Ok(n) = crate::retention::layout_of(&cx.store, ih).map(|l| l.n()) else {
                    return true;
                };
                self.shards.insert(*ih, n);
                n
            }
        };
        let me = placement::Candidate {
            key: cx.me.clone(),
            domain: cx.domain.clone(),
        };
        let machines = placement::candidates(roster.iter().cloned(), Some(me), owner);
        let yes =
            placement::assigned_any(placement::group(owner, ih), n, &machines, copies, &cx.me);
        if !yes {
            self.unassigned.insert(*ih);
        }
        yes
    }

    /// Takes the tracker's roster (swarm.md §3.5). When it changed, the snapshots joined
    /// but holding nothing that placement no longer assigns here are left (their
    /// metainfo stays in the store; joined again when assigned again).
    async fn update_roster(&mut self, cx: &JobContext) {
        let roster = match self.discovery.roster().await {
            Ok(Some(r)) => RosterState::Listed(r),
            Ok(None) => RosterState::None,
            // Not answered now: the last one stands. Before any, nothing new is joined
            // for a few polls (holding nothing, this machine waits to know what is its
            // own); a tracker down from the start then counts as none, so replication
            // goes on through the other sources (swarm.md §3.5).
            Err(_) if self.roster != RosterState::Unknown => return,
            Err(_) => {
                self.roster_misses += 1;
                if self.roster_misses < ROSTER_PATIENCE {
                    return;
                }
                RosterState::None
            }
        };
        if self.roster == roster {
            return;
        }
        cx.engine.set_present(match &roster {
            RosterState::Listed(r) => Some(r.clone()),
            _ => None,
        });
        self.roster = roster;
        self.unassigned.clear();
        for t in cx.engine.torrents() {
            let ih = t.ih;
            let Role::Replicate { copies } = t.inner().role else {
                continue;
            };
            if t.have().count() == 0 && !self.assigned(cx, &ih, t.owner(), copies) {
                cx.engine.remove(&ih);
            }
        }
    }

    async fn once(&mut self, cx: &JobContext) -> Result<(), FetchError> {
        let copies = cx.node.config.copies as usize;
        let listed = self.discovery.snapshots().await?;
        self.update_roster(cx).await;
        // Owners' retirements of what this machine holds (swarm.md §16.4).
        match crate::retention::holder_step(
            &cx.store,
            &listed,
            cx.node.clock.unix(),
            cx.node.settings.retire_grace,
        ) {
            Ok(events) => {
                for e in events {
                    self.retirement_event(cx, e);
                }
            }
            Err(e) => eprintln!("swarmbak agent: owners' retirements: {e}"),
        }
        for found in listed {
            let ih = found.infohash;
            if cx.engine.torrent(&ih).is_some()
                || found.owner.as_ref() == Some(&cx.me)
                || self.unassigned.contains(&ih)
                || let_go_whole(&cx.store, &ih)
            {
                continue;
            }
            // An enrolled machine holds only snapshots whose owner's record verified
            // against the organisation key: listed with it by the company tracker, or
            // sent by a member in the swarm (a peer-only tracker's snapshots).
            let mut signed = found.signed.clone();
            let need_record =
                cx.org.is_some() && signed.is_none() && cx.store.owner_record(&ih).is_none();
            if !cx.store.has(&ih) || need_record {
                let again = (self.every * 10).min(RETRY_LOOKUP);
                if self.tried.get(&ih).is_some_and(|t| t.elapsed() < again) {
                    continue;
                }
                let meta = match self.discovery.metainfo(&ih).await {
                    Ok(Some(m)) if !need_record || m.signed.is_some() => m,
                    r => {
                        if let Err(e @ FetchError::Untrusted { .. }) = r {
                            if self.refused.insert(ih) {
                                eprintln!("swarmbak agent: not holding {ih}: {e}");
                            }
                        }
                        self.tried.insert(ih, Instant::now());
                        continue;
                    }
                };
                self.tried.remove(&ih);
                if need_record {
                    signed = meta.signed;
                }
                // A snapshot larger than any machine makes costs every agent memory for
                // its piece state: refused before it is kept (swarm.md §5.1).
                if let Some(why) = over_limits(&meta.torrent) {
                    if self.refused.insert(ih) {
                        eprintln!("swarmbak agent: not holding {ih}: {why}");
                    }
                    continue;
                }
                if !cx.store.has(&ih) {
                    cx.store.add_torrent(&ih, &meta.torrent)?;
                }
            }
            match (&signed, &found.owner) {
                (Some((record, cert)), _) => cx.store.set_owner_record(&ih, record, cert)?,
                (None, Some(o)) => cx.store.set_owner(&ih, o.as_bytes())?,
                (None, None) => {}
            }
            let stored = stored_owner(&cx.store, &ih, cx.org.as_ref());
            let owner = found
                .owner
                .clone()
                .or_else(|| stored.as_ref().map(|s| s.0.clone()));
            // The owner's target, not this machine's (swarm.md §3.1).
            let copies = found
                .copies
                .or(stored.and_then(|s| s.1))
                .filter(|&c| c > 0)
                .map_or(copies, |c| c as usize);
            // Joined only when placement assigns this machine some of it, or it holds
            // some already (swarm.md §3.5); the rest is looked up when asked for.
            if !cx.store.holds_shards(&ih) && !self.assigned(cx, &ih, owner.as_ref(), copies) {
                continue;
            }
            // Not a swarmbak snapshot (someone else's torrent on a shared tracker): left
            // alone.
            match Torrent::open(
                &cx.store,
                ih,
                Role::Replicate { copies },
                owner,
                Some(cx.me.clone()),
            ) {
                Ok(t) => {
                    if let Some(q) = &cx.quota {
                        t.set_quota(q.clone());
                    }
                    cx.engine.add(t)
                }
                Err(e) => {
                    if found.owner.is_some() {
                        eprintln!("swarmbak agent: {ih}: {e}");
                    }
                }
            }
        }
        Ok(())
    }
}

impl Replicate {
    fn retirement_event(&self, cx: &JobContext, e: crate::retention::HolderEvent) {
        use crate::retention::HolderEvent;
        match e {
            HolderEvent::Seen { ih, until } => eprintln!(
                "swarmbak agent: {ih} was retired by its owner: what no kept snapshot reads goes at {} (unless the administrator cancels)",
                swarmbak_core::utc(until)
            ),
            HolderEvent::Cancelled { ih } => {
                eprintln!("swarmbak agent: the retirement of {ih} was cancelled: all of it stays")
            }
            HolderEvent::LetGo { ih, bytes, gone } => {
                eprintln!(
                    "swarmbak agent: let go of {bytes} bytes of {ih}'s shards (retired by its owner{})",
                    if gone { "; nothing of it stays" } else { "" }
                );
                if let Some(q) = &cx.quota {
                    q.release(bytes);
                }
                // Opened again (by the next look) without the stripes let go, or not at all.
                cx.engine.remove(&ih);
            }
        }
    }
}

/// Whether this store let go of every stripe of the snapshot (a retirement keeping
/// nothing): what stays of it is a tombstone (torrent, owner record, retirement).
fn let_go_whole(store: &Store, ih: &InfoHash) -> bool {
    let Ok(Some(dropped)) = store.dropped_stripes(ih) else {
        return false;
    };
    crate::retention::layout_of(store, ih).is_ok_and(|l| dropped.len() >= l.stripes)
}

impl Job for Replicate {
    fn name(&self) -> &'static str {
        "replicate"
    }
    fn every(&self) -> Duration {
        self.every
    }
    fn run<'a>(
        &'a mut self,
        cx: &'a JobContext,
    ) -> crate::discovery::BoxFuture<'a, Result<(), FetchError>> {
        Box::pin(self.once(cx))
    }
}

/// Sends the backup reports waiting in `HOME/outbox` (an attempt made while the tracker
/// could not be reached left them there) when the agent starts, and then every `every`
/// (tracker.md §7.6). A send runs in the background: a tracker that is down does not
/// hold up the other jobs.
pub struct SendReports {
    pub every: Duration,
    pub sending: Option<tokio::task::JoinHandle<()>>,
}

impl Job for SendReports {
    fn name(&self) -> &'static str {
        "send reports"
    }
    fn every(&self) -> Duration {
        self.every
    }
    fn run<'a>(
        &'a mut self,
        cx: &'a JobContext,
    ) -> crate::discovery::BoxFuture<'a, Result<(), FetchError>> {
        Box::pin(async move {
            if self.sending.as_ref().is_some_and(|h| !h.is_finished()) {
                return Ok(());
            }
            let node = cx.node.clone();
            self.sending = Some(tokio::spawn(async move {
                let sent = crate::outbox::send(&node, Duration::from_secs(5)).await;
                if sent.sent > 0 {
                    eprintln!(
                        "swarmbak agent: sent {} waiting backup report(s) to the tracker",
                        sent.sent
                    );
                }
                if sent.refused > 0 {
                    eprintln!(
                        "swarmbak agent: the tracker refused {} backup report(s) (kept in outbox/refused): {}",
                        sent.refused,
                        sent.error.as_deref().unwrap_or("")
                    );
                }
            }));
            Ok(())
        })
    }
}

/// Publishes this machine's snapshots whose publish has not gone through (the tracker was
/// down, a `seed` was interrupted, the tracker refused: format-v1.md §15.2), oldest first,
/// when the agent starts and then every `every` (swarm.md §6).
pub struct PublishPending {
    pub every: Duration,
    /// The last failure said, so a tracker that stays down is said once, not every period.
    pub last_error: Option<String>,
    /// The same for retirements (swarm.md §16.3).
    pub last_retire_error: Option<String>,
    /// A scheduled backup made a snapshot: due at once (`Shared::publish_now`).
    pub shared: Arc<crate::schedule::Shared>,
}

impl Job for PublishPending {
    fn name(&self) -> &'static str {
        "publish pending"
    }
    fn every(&self) -> Duration {
        self.every
    }
    fn due(&self, last: Option<Instant>, now: Instant) -> bool {
        self.shared.publish_now.load(Ordering::Relaxed) || every_due(last, now, self.every)
    }
    fn run<'a>(
        &'a mut self,
        cx: &'a JobContext,
    ) -> crate::discovery::BoxFuture<'a, Result<(), FetchError>> {
        Box::pin(async move {
            let woken = self.shared.publish_now.swap(false, Ordering::Relaxed);
            self.publish(cx, woken).await;
            // Retirements after publishes: the tracker takes one only for a snapshot it
            // has (swarm.md §16.3).
            let sent = crate::retention::send_retirements(&cx.node, Duration::from_secs(2)).await;
            if sent.sent > 0 {
                eprintln!(
                    "swarmbak agent: the tracker took {} retirement(s)",
                    sent.sent
                );
            }
            if let Some(e) = sent.error {
                if self.last_retire_error.as_ref() != Some(&e) {
                    eprintln!(
                        "swarmbak agent: {} retirement(s) wait for the tracker: {e}",
                        sent.waiting
                    );
                    self.last_retire_error = Some(e);
                }
            } else {
                self.last_retire_error = None;
            }
            Ok(())
        })
    }
}

impl PublishPending {
    async fn publish(&mut self, cx: &JobContext, woken: bool) {
        if cx.store.unpublished().map_or(true, |v| v.is_empty()) {
            return;
        }
        // A tracker that is down costs this job at most 2 s each period.
        match crate::seed::publish_pending(&cx.node, None, Duration::from_secs(2)).await {
            Ok(done) => {
                let late = if woken {
                    ""
                } else {
                    " (its publish had not gone through)"
                };
                for ih in done {
                    eprintln!("swarmbak agent: published {ih}{late}");
                }
                self.last_error = None;
            }
            Err(e) => {
                let e = e.to_string();
                if self.last_error.as_ref() != Some(&e) {
                    eprintln!("swarmbak agent: a snapshot waits to be published: {e}; trying again every {}s", self.every.as_secs_f64());
                    self.last_error = Some(e);
                }
            }
        }
    }
}

/// The owner recorded for a snapshot held for another machine, if any, with the target
/// copies of its publish record. An enrolled machine (`org`) believes only a kept
/// publish record that verifies (the plain `owner` file of older versions may have come
/// from an unauthenticated `sb_owner`, and says no copies).
fn stored_owner(
    store: &Store,
    ih: &InfoHash,
    org: Option<&PublicKey>,
) -> Option<(MachineKey, Option<u32>)> {
    match org {
        Some(org) => {
            let (record, cert) = store.owner_record(ih)?;
            let (c, r) = swarmbak_trust::verify_publish(&record, &cert, org, &ih.0).ok()?;
            let key = MachineKey::from_age_recipient(&c.fields.age_recipient).ok()?;
            Some((key, Some(r.copies)))
        }
        None => Some((MachineKey::from_bytes(&store.owner(ih)?).ok()?, None)),
    }
}

/// The agent's listening address for peers: `listen` (its `--listen`), else
/// `config.json`'s `listen` (`init --listen`), else `0.0.0.0:0`.
pub fn bind_addr(listen: Option<&str>, node: &Node) -> Result<SocketAddr, ConfigError> {
    match listen.or(node.config.listen.as_deref()) {
        Some(s) => crate::config::parse_listen(s),
        None => Ok(SocketAddr::from(([0, 0, 0, 0], 0))),
    }
}

/// Opens this machine's snapshots and the shards it holds for others; returns the
/// replicated torrents' shared quota.
fn open_held(
    node: &Node,
    engine: &Engine,
    store: &Store,
    me: &MachineKey,
    org: Option<&PublicKey>,
) -> Result<Option<Arc<Quota>>, AgentError> {
    let copies = node.config.copies as usize;
    let own: HashSet<String> = store
        .all_own_snapshots()?
        .into_iter()
        .map(|s| s.infohash)
        .collect();
    let mut held = Vec::new();
    for ih in store.list()? {
        if let_go_whole(store, &ih) {
            continue;
        }
        let seed = own.contains(&ih.to_hex());
        // Another machine's snapshot this one holds nothing of: joined by the first
        // look at the tracker if placement assigns it here (swarm.md §3.5).
        if !seed && !store.holds_shards(&ih) {
            continue;
        }
        let (role, owner) = if seed {
            (Role::Seed, Some(me.clone()))
        } else {
            let stored = stored_owner(store, &ih, org);
            // The owner's target copies (swarm.md §3.1), else this machine's.
            let copies = stored
                .as_ref()
                .and_then(|s| s.1)
                .filter(|&c| c > 0)
                .map_or(copies, |c| c as usize);
            (Role::Replicate { copies }, stored.map(|s| s.0))
        };
        match Torrent::open(store, ih, role.clone(), owner, Some(me.clone())) {
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
    let quota = node.config.quota.map(|limit| {
        let used = held
            .iter()
            .map(|t| t.have().count() as u64 * t.layout().shard_size as u64)
            .sum();
        Quota::new(limit, used)
    });
    if let Some(q) = &quota {
        for t in &held {
            t.set_quota(q.clone());
        }
    }
    Ok(quota)
}

/// Where the agent logs each stripe it repaired (swarm.md §18), under the home.
pub const REPAIR_LOG: &str = "repair.log";

/// Runs the agent until SIGTERM or Ctrl-C. `listening` is called once peers can connect.
pub fn run(
    node: Node,
    listen: Option<&str>,
    listening: impl FnOnce(SocketAddr),
) -> Result<(), AgentError> {
    let lock = node.home.lock()?;
    let store = node.home.store();
    store.clean_tmp()?;
    // A repair's helpers do not outlive the process that fetched them (swarm.md §18).
    store.clean_repair(None)?;
    crate::schedule::fixed_mmap_threshold();
    let addr = bind_addr(listen, &node)?;
    let me = node.machine_key()?;
    // Homes made before machines had signing keys get theirs now (trust.md §1).
    crate::config::signing_key(&node.root)?;
    let membership = crate::membership::Membership::of(&node)?;
    let rt = crate::runtime().map_err(|source| AgentError::Listen { addr, source })?;
    rt.block_on(async move {
        let engine = start_engine(
            addr,
            Some(&me),
            membership.as_ref(),
            node.config.tracker_ref().as_ref(),
            &node.config.peer_trackers,
            &node.settings,
            node.settings.announce,
            node.clock.clone(),
            Some(
                node.settings
                    .repair(node.root.join(crate::agent::REPAIR_LOG)),
            ),
        )
        .await
        .map_err(|e| match e {
            FetchError::Listen(source) => AgentError::Listen { addr, source },
            e => AgentError::Tracker {
                tracker: node.config.tracker.clone().unwrap_or_default(),
                reason: e.to_string(),
            },
        })?;
        if let Some(q) = node.config.quota {
            engine.announce_quota(q);
        }
        let quota = open_held(
            &node,
            &engine,
            &store,
            &me,
            membership.as_ref().map(|m| &m.org),
        )?;
        let shared = Arc::new(crate::schedule::Shared::default());
        let sock = node.control_socket();
        let mut control = ControlServer::bind(&sock)?;
        control.spawn(engine.clone(), node.clone(), shared.clone());
        // Said once the control socket answers: a `seed` started after this line hands
        // its backup to the agent (before, it could find the home locked and no socket).
        listening(engine.local_addr());
        let mut jobs: Vec<(Box<dyn Job>, Option<Instant>)> = Vec::new();
        // Where snapshots are found (swarm.md §6): the company tracker, then each
        // peer-only tracker.
        let mut sources: Vec<Box<dyn Discovery>> = Vec::new();
        if let Some(tracker) = &node.config.tracker_ref() {
            sources.push(Box::new(
                TrackerDiscovery::new(tracker)
                    .map_err(|e| AgentError::Tracker {
                        tracker: tracker.url.clone(),
                        reason: e.to_string(),
                    })?
                    .trusting(membership.as_ref().map(|m| m.org)),
            ));
        }
        for url in &node.config.peer_trackers {
            sources.push(Box::new(
                PeerTrackerDiscovery::new(url, membership.as_ref().map(|m| m.identity.clone()))
                    .map_err(|e| AgentError::Tracker {
                        tracker: url.clone(),
                        reason: e.to_string(),
                    })?,
            ));
        }
        if !sources.is_empty() {
            jobs.push((
                Box::new(Replicate::new(
                    Box::new(Sources(sources)),
                    node.settings.poll,
                )),
                None,
            ));
        }
        if node.config.tracker_ref().is_some() {
            jobs.push((
                Box::new(PublishPending {
                    every: node.settings.poll,
                    last_error: None,
                    last_retire_error: None,
                    shared: shared.clone(),
                }),
                None,
            ));
            if node.config.enrolment.is_some() {
                // Ten poll periods, at most five minutes (tests poll in a fraction of a
                // second).
                jobs.push((
                    Box::new(SendReports {
                        every: (node.settings.poll * 10).min(Duration::from_secs(300)),
                        sending: None,
                    }),
                    None,
                ));
            }
        }
        // The scrub (swarm.md §17).
        jobs.push((
            Box::new(crate::scrub::Scrub {
                every: node.settings.scrub_every,
                period: node.settings.scrub_period,
                running: None,
            }),
            None,
        ));
        // Scheduled backups (swarm.md §15): the job also says, in `status`, that there
        // is no backup set.
        jobs.push((
            Box::new(crate::schedule::ScheduledBackup::new(&node, shared.clone())),
            None,
        ));
        let cx = JobContext {
            node: node.clone(),
            engine: engine.clone(),
            store: store.clone(),
            me,
            domain: membership.as_ref().and_then(|m| m.identity.domain.clone()),
            quota,
            org: membership.as_ref().map(|m| m.org),
            shared,
        };
        let mut stop = Box::pin(shutdown_signal());
        loop {
            let now = cx.node.clock.instant();
            for (job, last) in jobs.iter_mut() {
                if job.due(*last, now) {
                    if let Err(e) = job.run(&cx).await {
                        eprintln!("swarmbak agent: {}: {e}", job.name());
                    }
                    *last = Some(now);
                }
            }
            // Jobs are looked at every second at most (the poll period when shorter).
            tokio::select! {
                _ = tokio::time::sleep(cx.node.settings.poll.min(Duration::from_secs(1))) => {}
                _ = &mut stop => break,
            }
        }
        for (job, _) in jobs.iter_mut() {
            job.stop(&cx).await;
        }
        for t in engine.torrents() {
            engine.remove(&t.ih);
        }
        // Let connections say goodbye and the tracker hear `stopped`.
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(control);
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

/// The control socket's listener; the socket file is removed when it is dropped.
struct ControlServer {
    path: std::path::PathBuf,
    listener: Option<tokio::net::UnixListener>,
}

impl ControlServer {
    fn bind(path: &std::path::Path) -> Result<ControlServer, AgentError> {
        let err = |source| AgentError::Socket {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let listener = tokio::net::UnixListener::bind(path).map_err(err)?;
        // Only this user may hand the agent backups to make.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            listener: Some(listener),
        })
    }

    /// Serves requests until the process ends.
    fn spawn(&mut self, engine: Engine, node: Node, shared: Arc<crate::schedule::Shared>) {
        let Some(l) = self.listener.take() else {
            return;
        };
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (engine, node, shared) = (engine.clone(), node.clone(), shared.clone());
                tokio::spawn(async move { serve(s, engine, node, shared).await });
            }
        });
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("swarmbak agent: cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

/// One client of the control socket: a request per line, a reply per line.
async fn serve(
    s: tokio::net::UnixStream,
    engine: Engine,
    node: Node,
    shared: Arc<crate::schedule::Shared>,
) {
    let (r, mut w) = s.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let reply = match parse_request(&line) {
            // A backup is cancelled when its client goes away (its `seed` was
            // interrupted) or sends `cancel` meanwhile (swarm.md §6.2).
            Ok(Request::Seed { paths }) => {
                let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let made = seed_op(paths, &engine, &node, &shared, cancel.clone());
                tokio::pin!(made);
                let mut gone = false;
                let reply = loop {
                    tokio::select! {
                        r = &mut made => break r,
                        l = lines.next_line(), if !gone => {
                            let stop = match l {
                                Ok(Some(l)) => matches!(parse_request(&l), Ok(Request::Cancel)),
                                _ => {
                                    gone = true;
                                    true
                                }
                            };
                            if stop {
                                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                };
                if gone {
                    if let Response::Error { error } = &reply {
                        eprintln!("swarmbak agent: a backup whose seed went away: {error}");
                    }
                    return;
                }
                reply
            }
            Ok(req) => answer(req, &engine, &node, &shared).await,
            Err(e) => e,
        };
        let text = serde_json::to_string(&reply)
            .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode the reply: {e}\"}}"));
        if w.write_all(format!("{text}\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Tells a backup the agent makes for a `seed` client that the client went away.
struct Cancel(Arc<std::sync::atomic::AtomicBool>);

impl backup::Progress for Cancel {
    fn cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The `seed` op: makes the snapshot (unless `cancel` is set first) and seeds it. It
/// waits for a scheduled backup that runs (one backup at a time).
async fn seed_op(
    paths: Vec<std::path::PathBuf>,
    engine: &Engine,
    node: &Node,
    shared: &crate::schedule::Shared,
    cancel: Arc<std::sync::atomic::AtomicBool>,
) -> Response {
    let _slot = shared.slot.lock().await;
    let n = node.clone();
    let made = tokio::task::spawn_blocking(move || {
        let opts = n
            .config
            .backup_options(paths, &n.root)
            .map_err(|e| e.to_string())?;
        backup::backup_locked(&n.home, &opts, &Cancel(cancel)).map_err(|e| e.to_string())
    })
    .await;
    let r = match made {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Response::error(e),
        Err(e) => return Response::error(e),
    };
    let me = match node.machine_key() {
        Ok(k) => k,
        Err(e) => return Response::error(e),
    };
    match Torrent::open(
        &node.home.store(),
        r.infohash,
        Role::Seed,
        Some(me.clone()),
        Some(me),
    ) {
        Ok(t) => engine.add(t),
        Err(e) => return Response::error(format!("made {} but cannot seed it: {e}", r.infohash)),
    }
    Response::Seeded {
        infohash: r.infohash.to_hex(),
        info: Some(Box::new(r.info)),
    }
}

/// The `forget` op: forgets by `policy` (one store writer at a time: it waits for a
/// backup that runs) and lets the engine's torrents of retired snapshots go of the
/// shards let go.
async fn forget_op(
    policy: swarmbak_core::retention::Policy,
    dry_run: bool,
    engine: &Engine,
    node: &Node,
    shared: &crate::schedule::Shared,
) -> Response {
    let _slot = shared.slot.lock().await;
    let n = node.clone();
    let forgot =
        tokio::task::spawn_blocking(move || crate::retention::forget_node(&n, &policy, dry_run))
            .await;
    match forgot {
        Ok(Ok(f)) => {
            reopen_retired(engine, node, &f);
            // Its retirements go to the tracker now.
            if !f.dry_run && !f.retired.is_empty() {
                shared.publish_now.store(true, Ordering::Relaxed);
            }
            Response::Forgot {
                forgot: Box::new(f),
            }
        }
        Ok(Err(e)) => Response::error(e),
        Err(e) => Response::error(e),
    }
}

/// Opens again, from the store, the engine's torrents of the snapshots `f` retired (their
/// pieces let go are no longer had nor served).
pub(crate) fn reopen_retired(engine: &Engine, node: &Node, f: &crate::retention::Forgot) {
    if f.dry_run {
        return;
    }
    let Ok(me) = node.machine_key() else {
        return;
    };
    for r in &f.retired {
        let Ok(ih) = InfoHash::from_hex(&r.infohash) else {
            continue;
        };
        engine.remove(&ih);
        if r.keep.is_empty() {
            continue;
        }
        match Torrent::open(
            &node.home.store(),
            ih,
            Role::Seed,
            Some(me.clone()),
            Some(me.clone()),
        ) {
            Ok(t) => engine.add(t),
            Err(e) => eprintln!("swarmbak agent: cannot seed what stays of {ih}: {e}"),
        }
    }
}

async fn answer(
    req: Request,
    engine: &Engine,
    node: &Node,
    shared: &crate::schedule::Shared,
) -> Response {
    match req {
        Request::Seed { paths } => {
            seed_op(paths, engine, node, shared, Arc::new(Default::default())).await
        }
        Request::Forget { policy, dry_run } => {
            forget_op(policy, dry_run, engine, node, shared).await
        }
        Request::Status => Response::Status {
            status: Box::new(crate::status::of_agent(engine, node, shared)),
        },
        Request::Cancel => Response::error("nothing to cancel: no backup runs on this connection"),
        Request::Publish { infohash, timeout } => {
            let Ok(ih) = InfoHash::from_hex(&infohash) else {
                return Response::error("publish needs an infohash");
            };
            match crate::seed::publish(node, &ih, Duration::from_secs(timeout)).await {
                Ok(note) => {
                    if let Some(n) = note {
                        eprintln!("swarmbak agent: {n:?}");
                    }
                    Response::Published { published: true }
                }
                Err(e) => Response::error(e),
            }
        }
        Request::Holders { infohash } => {
            match InfoHash::from_hex(&infohash)
                .ok()
                .and_then(|ih| engine.torrent(&ih))
            {
                Some(t) => Response::Holders {
                    holders: t.holders(),
                },
                None => Response::error("not a snapshot this agent serves"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarmbak_metainfo::{build_swarmbak_torrent, SwarmbakParams, SwarmbakTorrent};

    /// A format-1 snapshot's torrent of `stripes` stripes of 8 + 4 shards of `shard`
    /// bytes (hashes made up: only its size matters here).
    fn snapshot(stripes: u64, shard: u64) -> Vec<u8> {
        let payload = stripes * 8 * shard;
        build_swarmbak_torrent(&SwarmbakTorrent {
            announce: None,
            creation_date: 0,
            name: "swarmbak-limits.shards".into(),
            piece_length: shard,
            piece_hashes: vec![[7u8; 20]; (stripes * 12) as usize],
            params: SwarmbakParams {
                format: 1,
                k: 8,
                m: 4,
                stripes,
                payload_length: payload,
                manifest_offset: payload - 1024,
                manifest_length: 1024,
                id: [1; 16],
                roots: None,
            },
        })
        .unwrap()
    }

    #[test]
    fn snapshots_over_the_per_snapshot_limits_are_refused() {
        assert_eq!(over_limits(&snapshot(100, 1 << 20)), None);
        // The largest a writer makes at the defaults (161,304 pieces of 1 MiB) is held.
        assert_eq!(over_limits(&snapshot(13_442, 1 << 20)), None);
        let many = over_limits(&snapshot((MAX_SNAPSHOT_PIECES as u64) / 12 + 1, 16 << 10));
        assert!(many.unwrap().contains("pieces (at most 262144)"));
        // Few pieces, but each as long as a piece may be: the bytes are over.
        let big = over_limits(&snapshot(50, 512 << 20)).unwrap();
        assert!(big.contains("bytes of shards (at most"), "{big}");
        assert!(over_limits(b"not a torrent").is_some());
    }
}
