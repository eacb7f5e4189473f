//! The agent's scheduled backups (swarm.md §15): the machine's backup set is backed up
//! when it is due, at once when the machine comes back overdue (from sleep, or an agent
//! started long after its last backup), and when the tracker says so; one backup at a
//! time, at low CPU and I/O priority; every attempt is reported (the outbox keeps it
//! while the tracker is unreachable). Change detection ([`crate::watch`]) lets a due
//! backup with nothing changed finish without a scan, and one with a few changes look
//! only at them.
//!
//! [`decide`] is the rule, pure and tested; [`ScheduledBackup`] is the job that applies
//! it; [`State`] (`HOME/schedule.json`) is what survives a restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use swarmbak_agent::{Role, Torrent};
use swarmbak_core::InfoHash;
use swarmbak_format::backup;

use crate::agent::{Job, JobContext};
use crate::config::{Node, DEFAULT_EVERY};
use crate::discovery::BoxFuture;
use crate::error::FetchError;
use crate::watch::{Changes, Watch};

/// A scan of the whole set at least this often even when watching says nothing changed:
/// inotify does not see writes through shared memory maps, nor changes made while the
/// agent was not running.
pub const FULL_SCAN_EVERY: i64 = 86_400;

/// The longest wait before a failed backup is tried again (doubling from a minute, and
/// never longer than the interval).
pub const MAX_RETRY: i64 = 3_600;

/// One backup attempt as the agent keeps it (`schedule.json`, `swarmbak status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// When it started and ended (Unix seconds).
    pub start: i64,
    pub end: i64,
    pub ok: bool,
    /// The snapshot made, or (nothing changed) the one that is still current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infohash: Option<String>,
    /// Nothing changed since `infohash`: no snapshot was made.
    #[serde(default)]
    pub unchanged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why it ran ("due", "overdue ...", "the tracker asked: ...").
    pub why: String,
    /// How changes were found: "watched", "scanned: REASON".
    #[serde(default)]
    pub how: String,
    /// Files and bytes read.
    #[serde(default)]
    pub files_read: u64,
    #[serde(default)]
    pub bytes_read: u64,
    /// How long it took, milliseconds (monotonic clock).
    #[serde(default)]
    pub duration_ms: u64,
}

impl AttemptRecord {
    /// The attempt succeeded: `ih` was made, or (`unchanged`) is still current.
    fn succeeded(&mut self, ih: InfoHash, unchanged: bool) {
        self.ok = true;
        self.unchanged = unchanged;
        self.infohash = Some(ih.to_hex());
    }
}

/// `HOME/schedule.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub last: Option<AttemptRecord>,
    #[serde(default)]
    pub last_success: Option<AttemptRecord>,
    /// Failed attempts since the last success.
    #[serde(default)]
    pub failures: u32,
    /// When the last scan of the whole set started.
    #[serde(default)]
    pub last_full_scan: Option<i64>,
    /// The interval the tracker last gave (used while it is unreachable).
    #[serde(default)]
    pub tracker_every: Option<u64>,
}

impl State {
    fn path(root: &Path) -> PathBuf {
        root.join("schedule.json")
    }

    /// Reads `schedule.json` (absent or damaged: empty, said once); a machine that
    /// backed up its set by hand before has that backup as its last success.
    pub fn load(node: &Node) -> State {
        let p = Self::path(&node.root);
        let mut s = match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                eprintln!(
                    "swarmbak agent: {} is damaged ({e}); starting the schedule afresh",
                    p.display()
                );
                State::default()
            }),
            Err(_) => State::default(),
        };
        if s.last_success.is_none() {
            s.last_success = newest_snapshot_of(node, &node.config.backup.paths);
        }
        s
    }

    /// Writes `schedule.json` (atomically).
    pub fn save(&self, root: &Path) {
        let p = Self::path(root);
        let r = serde_json::to_vec_pretty(self)
            .map_err(std::io::Error::other)
            .and_then(|b| swarmbak_format::write_private(&p, &b));
        if let Err(e) = r {
            eprintln!("swarmbak agent: cannot write {}: {e}", p.display());
        }
    }
}

/// The newest of this machine's snapshots of exactly `paths` (made by `seed`, or by an
/// earlier agent whose state was lost), as a successful attempt.
fn newest_snapshot_of(node: &Node, paths: &[PathBuf]) -> Option<AttemptRecord> {
    if paths.is_empty() {
        return None;
    }
    let mut want: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    want.sort();
    let own = node.home.store().own_snapshots().ok()?;
    let s = own
        .iter()
        .filter(|s| {
            let mut have = s.paths.clone();
            have.sort();
            have == want
        })
        .max_by_key(|s| s.time)?;
    Some(AttemptRecord {
        start: s.time,
        end: s.time,
        ok: true,
        infohash: Some(s.infohash.clone()),
        unchanged: false,
        error: None,
        why: "made by hand".into(),
        how: String::new(),
        files_read: s.files,
        bytes_read: s.new_bytes,
        duration_ms: 0,
    })
}

/// Why a backup starts now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// Never backed up.
    First,
    /// The interval has passed.
    Due,
    /// Well past due: the machine was asleep, off, or its agent was not running.
    /// `last`: the last success; `away`: seconds the machine slept, if it did just now.
    Overdue { last: i64, away: Option<i64> },
    /// The tracker said so (its reason).
    TrackerAsked(String),
    /// Retrying after `n` failures.
    Retry(u32),
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::First => write!(f, "first backup"),
            Why::Due => write!(f, "due"),
            Why::Overdue { last, away } => {
                write!(f, "overdue (last backup {} ago)", ago(*last))?;
                if let Some(a) = away {
                    write!(
                        f,
                        ", back after {} away",
                        swarmbak_core::spoken_duration(*a)
                    )?;
                }
                Ok(())
            }
            Why::TrackerAsked(why) => write!(f, "the tracker asked ({why})"),
            Why::Retry(n) => write!(f, "retry after {n} failed attempt(s)"),
        }
    }
}

fn ago(t: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    swarmbak_core::spoken_duration((now - t).max(0))
}

/// How long after `n` failures the next attempt waits: a minute, doubling, at most
/// [`MAX_RETRY`] and never longer than the interval.
pub fn retry_after(n: u32, every: i64) -> i64 {
    let backoff = 60i64.saturating_mul(1 << n.saturating_sub(1).min(20));
    backoff.min(MAX_RETRY).min(every).max(1)
}

/// Whether a backup starts now, and why (swarm.md §15.2). `every`: the interval in
/// seconds; `tracker`: the tracker's reason when it asks for a backup, and when it first
/// asked; `away`: seconds the machine just slept, if it did.
pub fn decide(
    s: &State,
    every: i64,
    now: i64,
    tracker: Option<(&str, i64)>,
    away: Option<i64>,
) -> Option<Why> {
    let every = every.max(1);
    if s.failures > 0 {
        if let Some(l) = &s.last {
            if now < l.start + retry_after(s.failures, every) {
                return None;
            }
        }
    }
    let Some(last) = s.last_success.as_ref().map(|a| a.start) else {
        return Some(if s.failures > 0 {
            Why::Retry(s.failures)
        } else {
            Why::First
        });
    };
    if now >= last + every {
        // A backup later than a tenth of the interval (at least a minute, or the
        // interval when shorter), or right after a sleep, is one the machine missed.
        let late = now - (last + every);
        return Some(if s.failures > 0 {
            Why::Retry(s.failures)
        } else if away.is_some() || late > (every / 10).max(every.min(60)) {
            Why::Overdue { last, away }
        } else {
            Why::Due
        });
    }
    // The tracker asks (the machine is overdue in its view, or the administrator asked):
    // at once if no attempt started since it first asked; if it still asks after one (it
    // may not have that attempt's report yet), again after min(every, 10 min).
    if let Some((why, since)) = tracker {
        let recent = s.last.as_ref().map(|l| l.start).unwrap_or(i64::MIN);
        if recent < since || now.saturating_sub(recent) >= every.min(600) {
            return Some(Why::TrackerAsked(why.to_string()));
        }
    }
    None
}

/// When the next backup is due (Unix seconds), for `status`.
pub fn next_due(s: &State, every: i64) -> i64 {
    let base = match &s.last_success {
        Some(a) => a.start + every.max(1),
        None => 0,
    };
    match (&s.last, s.failures) {
        (Some(l), n) if n > 0 => base.max(l.start + retry_after(n, every)),
        _ => base,
    }
}

/// Lowers the calling thread's CPU priority to nice 19 and its I/O priority to the
/// lowest level of the best-effort class (the idle class never runs while another
/// process keeps the disk busy: a backup could then never finish).
pub fn lower_priority() -> std::io::Result<()> {
    // Already that low (the system unit runs the whole agent at nice 19 and the idle
    // I/O class, and forbids changing priorities): nothing to do.
    if let Ok((nice, (class, level))) = thread_priority() {
        if nice >= 19 && (class == 3 || (class == 2 && level == 7)) {
            return Ok(());
        }
    }
    // SAFETY: gettid, setpriority and ioprio_set take integers only and change this
    // thread's scheduling attributes; no memory is passed.
    unsafe {
        let tid = libc::gettid();
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_CLASS_BE: libc::c_long = 2;
        const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
        let prio = (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | 7;
        if libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid as libc::c_long,
            prio,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The calling thread's nice value and I/O priority (class, level), for tests and
/// `status`.
pub fn thread_priority() -> std::io::Result<(i32, (i64, i64))> {
    // SAFETY: as in `lower_priority`; errno is cleared first because -1 is a valid
    // getpriority result.
    unsafe {
        let tid = libc::gettid();
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        if nice == -1 && *libc::__errno_location() != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let p = libc::syscall(libc::SYS_ioprio_get, 1 as libc::c_long, tid as libc::c_long);
        if p < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((nice, (p >> 13, p & 0xff)))
    }
}

/// The thread pool scheduled backups run on: its threads run at low priority
/// ([`lower_priority`]); as many as the machine has cores.
fn backup_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("swarmbak-backup-{i}"))
            .start_handler(|i| {
                if let Err(e) = lower_priority() {
                    if i == 0 {
                        eprintln!("swarmbak agent: cannot lower the backup threads' priority: {e}");
                    }
                }
            })
            .build()
            .map_err(|e| eprintln!("swarmbak agent: no backup thread pool: {e}"))
            .ok()
    })
    .as_ref()
}

/// A long-running agent's large buffers (shards, packs: 1 MiB and more) are mapped on
/// their own and unmapped when freed. glibc otherwise raises its mmap threshold after the
/// first such free (up to 32 MiB), and from then on serves them from heaps that keep
/// their pages: an agent went from 11 MiB to 33 MiB of anonymous memory for good after
/// one 592 MiB backup (tools/bench-agent-memory).
pub fn fixed_mmap_threshold() {
    // SAFETY: mallopt only changes the allocator's tunables; setting the threshold turns
    // its dynamic adjustment off.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Gives the memory a backup used back to the system (glibc keeps freed arenas).
pub(crate) fn trim_memory() {
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A backup in progress, as `status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub started: i64,
    pub why: String,
    pub how: String,
    /// "scanning", "reading", then the pipeline's stages.
    pub stage: String,
    pub files_to_read: u64,
    pub bytes_to_read: u64,
    pub bytes_read: u64,
}

/// What `swarmbak status` shows of the scheduled backups.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStatus {
    pub paths: Vec<PathBuf>,
    pub excludes: Vec<String>,
    /// The interval in force, seconds, and who set it.
    pub every: u64,
    pub every_from: String,
    /// How changes are detected.
    pub changes: String,
    pub running: Option<Running>,
    pub last: Option<AttemptRecord>,
    pub last_success: Option<AttemptRecord>,
    /// Unix seconds.
    pub next_due: Option<i64>,
}

/// The tracker as the agent last saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerSeen {
    pub url: Option<String>,
    /// `None`: not asked yet (or no tracker).
    pub reachable: Option<bool>,
    pub error: Option<String>,
    /// Unix seconds of the last answer.
    pub last_answer: Option<i64>,
}

/// What the agent's jobs and its control socket share.
#[derive(Default)]
pub struct Shared {
    /// One backup at a time: scheduled ones and those `seed` hands the agent take it.
    pub slot: Arc<tokio::sync::Mutex<()>>,
    pub backup: Mutex<BackupStatus>,
    pub tracker: Mutex<TrackerSeen>,
    /// Set when a backup made a snapshot: the `publish pending` job publishes it at its
    /// next look (within a second) rather than at its next period.
    pub publish_now: AtomicBool,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a running backup reads: the files and bytes changed since its parent (known once
/// it has scanned), and the bytes read so far.
#[derive(Default)]
struct Counts {
    files_to_read: AtomicU64,
    bytes_to_read: AtomicU64,
    bytes_read: AtomicU64,
}

/// Feeds a running backup's progress to `status`, and tells it to stop.
struct Progress {
    shared: Arc<Shared>,
    counts: Arc<Counts>,
    cancel: Arc<AtomicBool>,
}

impl backup::Progress for Progress {
    fn scanned(&self, files: u64, bytes_to_read: u64, _unchanged: u64) {
        self.counts.files_to_read.store(files, Ordering::Relaxed);
        self.counts
            .bytes_to_read
            .store(bytes_to_read, Ordering::Relaxed);
        if let Some(r) = &mut lock(&self.shared.backup).running {
            r.files_to_read = files;
            r.bytes_to_read = bytes_to_read;
            r.stage = "reading".into();
        }
    }
    fn advance(&self, n: u64) {
        let total = self.counts.bytes_read.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(r) = &mut lock(&self.shared.backup).running {
            r.bytes_read = total;
        }
    }
    fn stage(&self, name: &str) {
        if let Some(r) = &mut lock(&self.shared.backup).running {
            r.stage = name.to_string();
        }
    }
    fn warn(&self, msg: &str) {
        eprintln!("swarmbak agent: backup: {msg}");
    }
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// What the backup task returns: its result, when it ended (monotonic; the job sees the
/// end only at its next tick), and what the retention policy then forgot (after a new
/// snapshot).
type Outcome = (
    Result<backup::BackupReport, String>,
    Instant,
    Option<Result<crate::retention::Forgot, String>>,
);

struct InFlight {
    handle: tokio::task::JoinHandle<Outcome>,
    cancel: Arc<AtomicBool>,
    counts: Arc<Counts>,
    /// When it started (monotonic).
    t0: Instant,
    record: AttemptRecord,
    /// What the watch said at the start (given back if the backup fails).
    taken: Option<Changes>,
    full_scan: bool,
    _slot: tokio::sync::OwnedMutexGuard<()>,
}

/// The job: checks every second whether a backup is due and runs it in the background.
pub struct ScheduledBackup {
    pub shared: Arc<Shared>,
    state: State,
    watch: Option<Watch>,
    /// Why changes are not watched (the set is scanned).
    unwatched: Option<String>,
    /// The snapshot the watch's changes are relative to: made by a backup of this agent
    /// that started after the watch did.
    base: Option<InfoHash>,
    running: Option<InFlight>,
    /// The tracker's last schedule answer, and when it was asked.
    asked: Option<Instant>,
    /// The tracker's reason when it asks for a backup, and when it first asked.
    tracker_asks: Option<(String, i64)>,
    tracker_every: Option<(u64, String)>,
    /// Wall and monotonic time at the last tick (a sleep shows as wall time that moved
    /// more than monotonic time).
    last_tick: Option<(i64, Instant)>,
    away: Option<i64>,
}

impl ScheduledBackup {
    /// The job for `node`'s backup set; starts watching it.
    pub fn new(node: &Node, shared: Arc<Shared>) -> ScheduledBackup {
        let state = State::load(node);
        let mut job = ScheduledBackup {
            shared,
            tracker_every: state
                .tracker_every
                .map(|e| (e, "the administrator (the tracker's last answer)".into())),
            state,
            watch: None,
            unwatched: None,
            base: None,
            running: None,
            asked: None,
            tracker_asks: None,
            last_tick: None,
            away: None,
        };
        job.start_watch(node);
        job.publish_status(node);
        job
    }

    fn start_watch(&mut self, node: &Node) {
        self.watch = None;
        self.base = None;
        let paths = &node.config.backup.paths;
        if paths.is_empty() {
            return;
        }
        if !node.settings.watch {
            self.unwatched = Some("watching is off (SWARMBAK_WATCH=0)".into());
            return;
        }
        let ex = swarmbak_format::Excludes::new(&node.config.exclude_patterns(&node.root));
        let ex = match ex {
            Ok(e) => e,
            Err(e) => {
                self.unwatched = Some(format!("the excludes do not parse: {e}"));
                return;
            }
        };
        let home = std::fs::canonicalize(&node.root).unwrap_or_else(|_| node.root.clone());
        // An event below an excluded directory is ignored like one on it.
        let roots = paths.clone();
        let ignore = move |p: &Path| {
            if p.starts_with(&home) {
                return true;
            }
            let Some(root) = roots.iter().find(|r| p.starts_with(r)) else {
                return true;
            };
            if p != root && ex.is_excluded_if_dir(p, || p.is_dir()) {
                return true;
            }
            p.ancestors()
                .skip(1)
                .take_while(|a| a.starts_with(root) && *a != root)
                .any(|a| ex.is_excluded(a, true))
        };
        match Watch::start(paths, &node.root.join("watch"), ignore) {
            Ok(w) => {
                eprintln!(
                    "swarmbak agent: watching {} director{} of the backup set for changes",
                    w.dirs(),
                    if w.dirs() == 1 { "y" } else { "ies" }
                );
                self.watch = Some(w);
                self.unwatched = None;
            }
            Err(why) => {
                eprintln!(
                    "swarmbak agent: not watching the backup set ({why}); each backup scans it"
                );
                self.unwatched = Some(why);
            }
        }
    }

    /// The interval in force (seconds) and who set it.
    fn every(&self, node: &Node) -> (u64, String) {
        if let Some(e) = &self.tracker_every {
            return e.clone();
        }
        match node.config.backup.every {
            Some(e) => (e, "this machine (init --every)".into()),
            None => (DEFAULT_EVERY.as_secs(), "the default".into()),
        }
    }

    fn publish_status(&self, node: &Node) {
        let (every, from) = self.every(node);
        let changes = match (&self.watch, &self.unwatched) {
            (Some(w), _) => match w.broken() {
                Some(b) => format!("scanning: {b}"),
                None => format!(
                    "watching {} directories ({} paths changed since the last backup)",
                    w.dirs(),
                    w.pending().map_or("?".into(), |n| n.to_string())
                ),
            },
            (None, Some(why)) => format!("scanning: {why}"),
            (None, None) => "no backup set".into(),
        };
        lock(&self.shared.tracker).url = node.config.tracker.clone();
        let mut b = lock(&self.shared.backup);
        b.paths = node.config.backup.paths.clone();
        b.excludes = node.config.exclude_patterns(&node.root);
        b.every = every;
        b.every_from = from;
        b.changes = changes;
        b.last = self.state.last.clone();
        b.last_success = self.state.last_success.clone();
        b.next_due =
            (!node.config.backup.paths.is_empty()).then(|| next_due(&self.state, every as i64));
        if self.running.is_none() {
            b.running = None;
        }
    }

    /// Asks the tracker for this machine's schedule (enrolled machines), every poll
    /// period.
    async fn ask_tracker(&mut self, cx: &JobContext) {
        let node = &cx.node;
        if node.config.enrolment.is_none() {
            return;
        }
        let Some(tr) = node.config.tracker_ref() else {
            return;
        };
        if self.asked.is_some_and(|t| t.elapsed() < node.settings.poll) {
            return;
        }
        self.asked = Some(Instant::now());
        let client = match crate::discovery::tracker_client(&tr) {
            Ok(c) => c.with_retry(swarmbak_tracker::Retry::for_duration(Duration::from_secs(
                2,
            ))),
            Err(e) => {
                self.tracker_seen(node, Err(e.to_string()));
                return;
            }
        };
        match client.schedule(node.config.backup.every).await {
            Ok(s) => {
                let from = match (
                    s.admin_every,
                    s.machine_may_override,
                    node.config.backup.every,
                ) {
                    (Some(a), false, _) if a == s.every => "the administrator".to_string(),
                    (Some(a), _, None) if a == s.every => "the administrator".to_string(),
                    (_, _, Some(m)) if m == s.every => "this machine (init --every)".to_string(),
                    _ => "the tracker".to_string(),
                };
                self.tracker_every = Some((s.every.max(1), from));
                if self.state.tracker_every != Some(s.every) {
                    self.state.tracker_every = Some(s.every);
                    self.state.save(&node.root);
                }
                self.tracker_asks = match (s.backup_now, self.tracker_asks.take()) {
                    (false, _) => None,
                    (true, Some((_, since))) => Some((s.why, since)),
                    (true, None) => Some((s.why, node.clock.unix())),
                };
                self.tracker_seen(node, Ok(()));
            }
            Err(e) => {
                self.tracker_asks = None;
                self.tracker_seen(node, Err(e.to_string()));
            }
        }
    }

    fn tracker_seen(&self, node: &Node, r: Result<(), String>) {
        let mut t = lock(&self.shared.tracker);
        let was = t.reachable;
        match r {
            Ok(()) => {
                t.reachable = Some(true);
                t.error = None;
                t.last_answer = Some(node.clock.unix());
                if was == Some(false) {
                    eprintln!("swarmbak agent: the tracker answers again");
                }
            }
            Err(e) => {
                if was != Some(false) {
                    eprintln!("swarmbak agent: the tracker does not answer ({e}); backups go on and wait to be published and reported");
                }
                t.reachable = Some(false);
                t.error = Some(e);
            }
        }
    }

    async fn tick(&mut self, cx: &JobContext) {
        let node = &cx.node;
        let now = node.clock.unix();
        let mono = node.clock.instant();
        if let Some((w, m)) = self.last_tick {
            let slept = (now - w) - mono.saturating_duration_since(m).as_secs() as i64;
            if slept > 60 {
                self.away = Some(slept);
            }
        }
        self.last_tick = Some((now, mono));
        if let Some(f) = &self.running {
            if !f.handle.is_finished() {
                return;
            }
            if let Some(f) = self.running.take() {
                self.finish(cx, f).await;
            }
        }
        if node.config.backup.paths.is_empty() {
            self.publish_status(node);
            return;
        }
        self.ask_tracker(cx).await;
        let (every, _) = self.every(node);
        let why = decide(
            &self.state,
            every as i64,
            now,
            self.tracker_asks.as_ref().map(|(w, t)| (w.as_str(), *t)),
            self.away,
        );
        if let Some(why) = why {
            self.start(cx, why, now);
        }
        self.publish_status(node);
    }

    fn start(&mut self, cx: &JobContext, why: Why, now: i64) {
        let node = &cx.node;
        // A `seed` handed to the agent holds the slot: wait for it.
        let Ok(slot) = self.shared.slot.clone().try_lock_owned() else {
            return;
        };
        self.away = None;
        let t0 = Instant::now();
        if self.watch.as_ref().is_some_and(|w| w.broken().is_some()) || self.unwatched.is_some() {
            // Try again: the limit may have been raised, the directory removed.
            let scan_due = self
                .state
                .last_full_scan
                .is_none_or(|t| now - t >= FULL_SCAN_EVERY);
            if scan_due || self.watch.is_some() {
                self.start_watch(node);
            }
        }
        let full_due = self
            .state
            .last_full_scan
            .is_none_or(|t| now - t >= FULL_SCAN_EVERY);
        let taken = self.watch.as_ref().map(|w| w.take());
        let changed = match (&taken, self.base, full_due) {
            (Some(Changes::Known(v)), Some(base), false) => Ok((base, v.clone())),
            (Some(Changes::Unknown(why)), _, _) => Err(format!("scanned: {why}")),
            (Some(_), None, _) => {
                Err("scanned: the first backup since the agent started".to_string())
            }
            (Some(_), _, true) => Err("scanned: the daily scan".to_string()),
            (None, _, _) => Err(format!(
                "scanned: {}",
                self.unwatched.as_deref().unwrap_or("not watching")
            )),
        };
        let mut record = AttemptRecord {
            start: now,
            end: now,
            ok: false,
            infohash: None,
            unchanged: false,
            error: None,
            why: why.to_string(),
            how: match &changed {
                Ok((_, v)) => format!("watched: {} changed path(s)", v.len()),
                Err(h) => h.clone(),
            },
            files_read: 0,
            bytes_read: 0,
            duration_ms: 0,
        };
        eprintln!(
            "swarmbak agent: backing up ({}; {})",
            record.why, record.how
        );
        if let Ok((base, v)) = &changed {
            if v.is_empty() {
                // Known without a scan: nothing changed since `base`.
                record.succeeded(*base, true);
                record.duration_ms = t0.elapsed().as_millis() as u64;
                eprintln!("swarmbak agent: nothing changed since {base}");
                self.done(cx, record);
                return;
            }
        }
        let mut opts = match node
            .config
            .backup_options(node.config.backup.paths.clone(), &node.root)
        {
            Ok(o) => o,
            Err(e) => {
                record.error = Some(e.to_string());
                if let (Some(w), Some(t)) = (&self.watch, taken) {
                    w.put_back(t);
                }
                self.done(cx, record);
                return;
            }
        };
        opts.skip_unchanged = true;
        let full_scan = changed.is_err();
        if let Ok((base, paths)) = changed {
            opts.changed = Some(swarmbak_format::backup::ChangedSince {
                parent: base,
                paths,
            });
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let progress = Progress {
            shared: self.shared.clone(),
            counts: counts.clone(),
            cancel: cancel.clone(),
        };
        lock(&self.shared.backup).running = Some(Running {
            started: now,
            why: record.why.clone(),
            how: record.how.clone(),
            stage: "scanning".into(),
            ..Default::default()
        });
        let n = node.clone();
        let handle = tokio::task::spawn_blocking(move || {
            let run = || {
                let r = backup::backup_locked(&n.home, &opts, &progress).map_err(|e| e.to_string());
                let ended = Instant::now();
                // The policy, after a new snapshot (swarm.md §16.1), at the same priority.
                let forgot = match &r {
                    Ok(rep) if !rep.unchanged => Some(
                        crate::retention::forget_node(&n, &n.config.retention_policy(), false)
                            .map_err(|e| e.to_string()),
                    ),
                    _ => None,
                };
                (r, ended, forgot)
            };
            let out = match backup_pool() {
                Some(pool) => pool.install(run),
                None => run(),
            };
            trim_memory();
            out
        });
        self.running = Some(InFlight {
            handle,
            cancel,
            counts,
            t0,
            record,
            taken,
            full_scan,
            _slot: slot,
        });
    }

    async fn finish(&mut self, cx: &JobContext, f: InFlight) {
        let node = &cx.node;
        let mut record = f.record;
        record.end = node.clock.unix();
        let (result, ended, forgot) = match f.handle.await {
            Ok(r) => r,
            Err(e) => (
                Err(format!("the backup task failed: {e}")),
                Instant::now(),
                None,
            ),
        };
        match forgot {
            Some(Ok(f)) if !f.retired.is_empty() => {
                let freed: u64 = f.retired.iter().map(|r| r.bytes_freed_here).sum();
                eprintln!(
                    "swarmbak agent: the retention policy forgot {} snapshot(s) ({} bytes of shards let go here)",
                    f.retired.len(),
                    freed
                );
                crate::agent::reopen_retired(&cx.engine, node, &f);
                self.shared.publish_now.store(true, Ordering::Relaxed);
            }
            Some(Err(e)) => eprintln!("swarmbak agent: the retention policy forgot nothing: {e}"),
            Some(Ok(_)) | None => {}
        }
        record.duration_ms = ended.saturating_duration_since(f.t0).as_millis() as u64;
        match result {
            Ok(r) => {
                record.succeeded(r.infohash, r.unchanged);
                record.files_read = f.counts.files_to_read.load(Ordering::Relaxed);
                record.bytes_read = f.counts.bytes_to_read.load(Ordering::Relaxed);
                if f.full_scan {
                    self.state.last_full_scan = Some(record.start);
                }
                self.base = self.watch.as_ref().map(|_| r.infohash);
                if r.unchanged {
                    eprintln!("swarmbak agent: nothing changed since {}", r.infohash);
                } else {
                    eprintln!(
                        "swarmbak agent: made {} ({} files, {} new bytes)",
                        r.infohash, r.info.files, r.info.new_bytes
                    );
                    self.seed(cx, r.infohash);
                }
            }
            Err(e) => {
                eprintln!("swarmbak agent: the backup failed: {e}");
                record.error = Some(e);
                if let (Some(w), Some(t)) = (&self.watch, f.taken) {
                    w.put_back(t);
                }
            }
        }
        // Opening the new snapshot's torrent read every shard once more.
        trim_memory();
        self.done(cx, record);
    }

    /// Seeds a snapshot just made and has the `publish pending` job publish it now (it
    /// keeps trying while the tracker does not take it).
    fn seed(&self, cx: &JobContext, ih: InfoHash) {
        match Torrent::open(
            &cx.store,
            ih,
            Role::Seed,
            Some(cx.me.clone()),
            Some(cx.me.clone()),
        ) {
            Ok(t) => cx.engine.add(t),
            Err(e) => eprintln!("swarmbak agent: made {ih} but cannot seed it: {e}"),
        }
        self.shared.publish_now.store(true, Ordering::Relaxed);
    }

    /// Keeps an attempt in schedule.json and the status.
    fn keep(&mut self, node: &Node, record: &AttemptRecord) {
        if record.ok {
            self.state.failures = 0;
            self.state.last_success = Some(record.clone());
        } else {
            self.state.failures = self.state.failures.saturating_add(1);
        }
        self.state.last = Some(record.clone());
        self.state.save(&node.root);
        lock(&self.shared.backup).running = None;
        self.publish_status(node);
    }

    /// Records an attempt and reports it to the tracker (the outbox keeps it until the
    /// tracker takes it).
    fn done(&mut self, cx: &JobContext, record: AttemptRecord) {
        self.keep(&cx.node, &record);
        let attempt = attempt(&record);
        let node = cx.node.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::outbox::report(&node, &attempt, Duration::from_secs(5)).await {
                eprintln!("swarmbak agent: cannot keep this backup's report: {e}");
            }
        });
    }

    /// Stops a running backup (the agent is stopping): it commits nothing and is
    /// recorded as interrupted, its report kept in the outbox; the next start backs up
    /// again.
    async fn shutdown(&mut self, cx: &JobContext) {
        let Some(f) = self.running.take() else {
            return;
        };
        f.cancel.store(true, Ordering::Relaxed);
        let mut record = f.record.clone();
        let r = tokio::time::timeout(Duration::from_secs(30), f.handle).await;
        record.end = cx.node.clock.unix();
        match r {
            // It had finished meanwhile.
            Ok(Ok((Ok(rep), _, _))) => record.succeeded(rep.infohash, rep.unchanged),
            _ => {
                record.error =
                    Some("interrupted: the agent stopped; the next start backs up again".into())
            }
        }
        self.keep(&cx.node, &record);
        if let Err(e) = crate::outbox::queue(&cx.node, &attempt(&record)) {
            eprintln!("swarmbak agent: cannot keep this backup's report: {e}");
        }
    }
}

/// An attempt as the outbox reports it.
fn attempt(record: &AttemptRecord) -> crate::outbox::Attempt {
    crate::outbox::Attempt {
        start: record.start,
        end: record.end,
        bytes: record.bytes_read,
        files: record.files_read,
        outcome: match (&record.infohash, &record.error) {
            (Some(ih), None) => InfoHash::from_hex(ih)
                .map(|i| i.0)
                .map_err(|e| e.to_string()),
            (_, Some(e)) => Err(e.clone()),
            (None, None) => Err("no snapshot was made".into()),
        },
    }
}

impl Job for ScheduledBackup {
    fn name(&self) -> &'static str {
        "scheduled backup"
    }
    fn every(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn due(&self, _last: Option<Instant>, _now: Instant) -> bool {
        true
    }
    fn run<'a>(&'a mut self, cx: &'a JobContext) -> BoxFuture<'a, Result<(), FetchError>> {
        Box::pin(async move {
            self.tick(cx).await;
            Ok(())
        })
    }
    fn stop<'a>(&'a mut self, cx: &'a JobContext) -> BoxFuture<'a, ()> {
        Box::pin(self.shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(start: i64) -> AttemptRecord {
        AttemptRecord {
            start,
            end: start + 5,
            ok: true,
            infohash: Some("00".repeat(20)),
            unchanged: false,
            error: None,
            why: "due".into(),
            how: String::new(),
            files_read: 0,
            bytes_read: 0,
            duration_ms: 0,
        }
    }

    #[test]
    fn due_overdue_retry_and_the_trackers_ask() {
        const H: i64 = 3600;
        let day = 24 * H;
        let t0 = 1_800_000_000;
        // Never backed up: at once.
        assert_eq!(
            decide(&State::default(), day, t0, None, None),
            Some(Why::First)
        );
        let mut s = State {
            last_success: Some(ok(t0)),
            last: Some(ok(t0)),
            ..Default::default()
        };
        assert_eq!(decide(&s, day, t0 + H, None, None), None);
        assert_eq!(decide(&s, day, t0 + day, None, None), Some(Why::Due));
        // Three days later (an agent started late, a laptop back from a trip).
        assert_eq!(
            decide(&s, day, t0 + 3 * day, None, None),
            Some(Why::Overdue {
                last: t0,
                away: None
            })
        );
        // Right after a sleep, even a little late is overdue.
        assert_eq!(
            decide(&s, day, t0 + day + 5, None, Some(7200)),
            Some(Why::Overdue {
                last: t0,
                away: Some(7200)
            })
        );
        // The tracker asks: at once when no attempt started since it asked...
        assert_eq!(
            decide(&s, day, t0 + 300, Some(("asked", t0 + 200)), None),
            Some(Why::TrackerAsked("asked".into()))
        );
        // ...and if it still asks after one, ten minutes after that attempt.
        assert_eq!(decide(&s, day, t0 + 300, Some(("overdue", t0)), None), None);
        assert_eq!(
            decide(&s, day, t0 + 600, Some(("overdue", t0)), None),
            Some(Why::TrackerAsked("overdue".into()))
        );
        // A failure: retried after a minute, then two, four...
        let mut failed = ok(t0 + day);
        failed.ok = false;
        s.last = Some(failed);
        s.failures = 1;
        assert_eq!(decide(&s, day, t0 + day + 30, None, None), None);
        assert_eq!(
            decide(&s, day, t0 + day + 60, None, None),
            Some(Why::Retry(1))
        );
        s.failures = 3;
        assert_eq!(decide(&s, day, t0 + day + 200, None, None), None);
        assert_eq!(
            decide(&s, day, t0 + day + 240, None, None),
            Some(Why::Retry(3))
        );
        assert_eq!(retry_after(30, day), MAX_RETRY);
        // Never longer than the interval (a 5 s interval retries every 5 s).
        assert_eq!(retry_after(4, 5), 5);
        assert_eq!(next_due(&s, day), t0 + day + 240);
    }

    #[test]
    fn backup_threads_run_at_low_priority() {
        let (nice, (class, level)) = std::thread::spawn(|| {
            lower_priority().unwrap();
            thread_priority().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!((nice, class, level), (19, 2, 7));
        // The pool's threads are all lowered.
        let pool = backup_pool().unwrap();
        let seen: Vec<(i32, (i64, i64))> = pool.install(|| {
            use rayon::prelude::*;
            (0..64)
                .into_par_iter()
                .map(|_| thread_priority().unwrap())
                .collect()
        });
        assert!(seen.iter().all(|&p| p == (19, (2, 7))), "{seen:?}");
        // This thread is untouched.
        assert_ne!(thread_priority().unwrap().0, 19);
    }
}
