//! The node's configuration: the settings `swarmbak init` writes (`HOME/config.json`) and
//! the runtime knobs (timers), read once per process into [`Settings`]; [`Node`] holds
//! both with the machine's home and its clock.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use swarmbak_core::{Clock, MachineKey, SystemClock};
use swarmbak_format::{BackupOptions, Home, Recipient, DEFAULT_K, DEFAULT_M};

pub use swarmbak_core::{parse_duration, parse_size};

use crate::error::ConfigError;

pub use swarmbak_core::placement::DEFAULT_COPIES;

/// `HOME/config.json`, version 1 (protocol-spec/swarm.md §1 for the machine key).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeConfig {
    pub version: u32,
    /// A label (default: the host name); machines are known by key.
    pub name: String,
    /// The machine's age recipient (`age1...`), the public half of `identity.txt`.
    pub public_key: String,
    /// The tracker's base URL.
    #[serde(default)]
    pub tracker: Option<String>,
    #[serde(default)]
    pub enroll_token: Option<String>,
    pub copies: u32,
    pub k: u16,
    pub m: u16,
    #[serde(default)]
    pub recovery_recipients: Vec<String>,
    /// Most bytes of other machines' shards this machine holds (None: no limit).
    #[serde(default)]
    pub quota: Option<u64>,
    /// Timers that differ from the defaults (seconds); the environment overrides them.
    #[serde(default, skip_serializing_if = "Timers::is_empty")]
    pub timers: Timers,
    /// What enrolment with a private tracker gave this machine (trust.md, tracker.md §7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolment: Option<Enrolment>,
    /// Where this machine listens for peers (`HOST:PORT`, `init --listen`; swarm.md §2):
    /// the agent binds it as given; `seed`, `fetch` and `health` bind its host on any
    /// port. Absent: `0.0.0.0:0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Peer-only trackers (`init --peer-tracker URL`, swarm.md §5.1.1): BitTorrent
    /// trackers that are not the company's (opentracker), announced to for peers, and
    /// scraped by the agent for snapshots whose owner's record then comes from the swarm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_trackers: Vec<String>,
    /// What the agent backs up on its own, and how often (`init --backup`, `--exclude`,
    /// `--every`; swarm.md §15).
    #[serde(default, skip_serializing_if = "BackupSet::is_unset")]
    pub backup: BackupSet,
    /// Which own snapshots the agent keeps after each backup, and `forget` without
    /// `--keep-*` (swarm.md §16.1): `None` is the default policy
    /// ([`swarmbak_core::retention::Policy::default_policy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<swarmbak_core::retention::Policy>,
}

impl NodeConfig {
    /// The retention policy in force.
    pub fn retention_policy(&self) -> swarmbak_core::retention::Policy {
        self.retention
            .clone()
            .unwrap_or_else(swarmbak_core::retention::Policy::default_policy)
    }
}

/// The machine's backup set (`config.json` `backup`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackupSet {
    /// Absolute paths; empty: the agent makes no backups on its own.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// Exclude patterns, beside the defaults (format's `Excludes` says how they match).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Whether [`DEFAULT_EXCLUDES`] apply (`init --no-default-excludes` turns them off).
    #[serde(default = "yes")]
    pub default_excludes: bool,
    /// The machine's own interval, seconds (`init --every`; absent: [`DEFAULT_EVERY`],
    /// or the administrator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<u64>,
}

fn yes() -> bool {
    true
}

impl Default for BackupSet {
    fn default() -> Self {
        BackupSet {
            paths: Vec::new(),
            exclude: Vec::new(),
            default_excludes: true,
            every: None,
        }
    }
}

impl BackupSet {
    fn is_unset(&self) -> bool {
        *self == BackupSet::default()
    }
}

/// How often a machine backs up when neither it nor the administrator says otherwise.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(86_400);

/// What a backup leaves out unless `init --no-default-excludes` (README "What is backed
/// up"): caches and trash, which are rebuilt or meant to go. The swarmbak home is always
/// left out, defaults or not (a backup of the store that holds it grows with every backup).
pub const DEFAULT_EXCLUDES: &[&str] = &[
    // XDG caches (~/.cache): browsers, thumbnails, package managers.
    ".cache/",
    // The desktop's trash (XDG) and trash folders on other file systems.
    ".local/share/Trash/",
    ".Trash-*/",
    // Trash on macOS-formatted media.
    ".Trashes/",
];

/// `path` as a glob pattern matching it literally (anchored: it starts with `/`).
pub fn literal_pattern(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '*' | '?' | '[' | ']' | '{' | '}' | '\\' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

/// What a private tracker handed this machine at enrolment.
#[derive(Clone, Serialize, Deserialize)]
pub struct Enrolment {
    /// The passkey in its announce paths (a secret).
    pub passkey: String,
    /// The organisation key, hex: certificates and publish records are checked against it.
    pub org_key: String,
    /// The organisation secret, hex (peer handshakes, DHT keys).
    pub org_secret: String,
    /// This machine's certificate, base64url.
    pub certificate: String,
    /// SHA-256 (hex) of the tracker's TLS certificate, from an `https://` enrolment
    /// token: every connection to the tracker must present exactly that certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_sha256: Option<String>,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolment")
            .field("org_key", &self.org_key)
            .finish_non_exhaustive()
    }
}

impl Enrolment {
    /// The organisation key.
    pub fn org(&self) -> Result<swarmbak_trust::PublicKey, ConfigError> {
        swarmbak_trust::PublicKey::from_hex(&self.org_key)
            .map_err(|e| ConfigError::Invalid(format!("config.json: enrolment.org_key: {e}")))
    }

    /// The tracker's TLS pin, when enrolled over https.
    pub fn tls_pin(&self) -> Result<Option<[u8; 32]>, ConfigError> {
        let Some(h) = &self.tls_sha256 else {
            return Ok(None);
        };
        hex::decode(h)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(Some)
            .ok_or_else(|| {
                ConfigError::Invalid(
                    "config.json: enrolment.tls_sha256 is not 64 hex digits: enrol again (swarmbak init --enroll TOKEN)".into(),
                )
            })
    }

    /// This machine's certificate.
    pub fn certificate(&self) -> Result<Vec<u8>, ConfigError> {
        swarmbak_trust::from_b64(&self.certificate)
            .map_err(|e| ConfigError::Invalid(format!("config.json: enrolment.certificate: {e}")))
    }
}

/// The `timers` section of `config.json`: each in seconds, absent for the default
/// (swarm.md §11).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_timeout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub takeover: Option<f64>,
}

impl Timers {
    fn is_empty(&self) -> bool {
        *self == Timers::default()
    }
}

/// What `swarmbak init` may set; `None` leaves a setting as it is.
#[derive(Clone, Debug, Default)]
pub struct InitOptions {
    pub name: Option<String>,
    pub tracker: Option<String>,
    pub enroll_token: Option<String>,
    pub recovery_recipients: Vec<String>,
    pub copies: Option<u32>,
    pub k: Option<u16>,
    pub m: Option<u16>,
    pub quota: Option<u64>,
    /// Where to listen for peers (`HOST:PORT`).
    pub listen: Option<String>,
    /// Peer-only trackers' announce base URLs; `Some(empty)` removes them all.
    pub peer_trackers: Option<Vec<String>>,
    /// The backup set's paths (replacing the last ones); `Some(empty)` removes them.
    pub backup: Option<Vec<PathBuf>>,
    /// Exclude patterns (replacing the last ones); `Some(empty)` removes them.
    pub exclude: Option<Vec<String>>,
    /// Whether the default excludes apply.
    pub default_excludes: Option<bool>,
    /// The machine's own backup interval.
    pub every: Option<Duration>,
    /// Retention settings given (`--keep-*`): each replaces that one of the policy in
    /// force (0 turns it off); `retention_default` goes back to the default first.
    pub retention: swarmbak_core::retention::Policy,
    pub retention_default: bool,
}

/// Parses a `--listen` address.
pub fn parse_listen(s: &str) -> Result<SocketAddr, ConfigError> {
    s.trim().parse().map_err(|_| {
        ConfigError::Invalid(format!(
            "--listen {s:?}: give HOST:PORT, like 0.0.0.0:6881 or 127.0.0.1:0 (port 0 picks one)"
        ))
    })
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "machine".to_string())
}

impl NodeConfig {
    /// Creates the machine's keys the first time; afterwards changes only the options
    /// given and never replaces keys. Returns the configuration and whether it was
    /// created now.
    pub fn init(root: &Path, opts: &InitOptions) -> Result<(NodeConfig, bool), ConfigError> {
        let cfg_path = root.join("config.json");
        let created = !cfg_path.exists();
        for r in &opts.recovery_recipients {
            Recipient::parse(r)?;
        }
        if let (Some(k), Some(m)) = (opts.k, opts.m) {
            swarmbak_core::check_params(k as usize, m as usize)?;
        }
        if let Some(l) = &opts.listen {
            parse_listen(l)?;
        }
        if let Some(e) = opts.every {
            if e < Duration::from_secs(1) {
                return Err(ConfigError::Invalid(
                    "--every takes a duration of at least one second, like 30m, 6h or 1d".into(),
                ));
            }
        }
        if let Some(t) = &opts.tracker {
            if !(t.starts_with("http://") || t.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "--tracker takes the tracker's base URL, like http://HOST:PORT (got {t:?})"
                )));
            }
        }
        for t in opts.peer_trackers.iter().flatten() {
            if !(t.starts_with("http://") || t.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "--peer-tracker takes a tracker's base URL (its announce URL without /announce), like http://HOST:6969, or `none` (got {t:?})"
                )));
            }
        }
        if created && root.join("identity.txt").exists() {
            return Err(ConfigError::Invalid(format!(
                "{} exists but config.json does not: refusing to replace a key; move it away or restore config.json",
                root.join("identity.txt").display()
            )));
        }
        let (home, _) = Home::create(root)?;
        let mut config = if created {
            NodeConfig {
                version: 1,
                name: host_name(),
                public_key: home.recipient()?.to_string(),
                tracker: None,
                enroll_token: None,
                copies: DEFAULT_COPIES,
                k: DEFAULT_K,
                m: DEFAULT_M,
                recovery_recipients: Vec::new(),
                // Other machines' shards never fill this disk unless asked (format-v1.md
                // §15.1): a share of it, said by `init`.
                quota: default_quota(root),
                timers: Timers::default(),
                enrolment: None,
                listen: None,
                peer_trackers: Vec::new(),
                backup: BackupSet::default(),
                retention: None,
            }
        } else {
            Self::load(root)?
        };
        if let Some(n) = &opts.name {
            config.name = n.clone();
        }
        if let Some(t) = &opts.tracker {
            config.tracker = Some(t.trim_end_matches('/').to_string());
        }
        if let Some(t) = &opts.enroll_token {
            config.enroll_token = Some(t.clone());
        }
        if let Some(c) = opts.copies {
            config.copies = c;
        }
        if let Some(k) = opts.k {
            config.k = k;
        }
        if let Some(m) = opts.m {
            config.m = m;
        }
        if let Some(q) = opts.quota {
            config.quota = Some(q);
        }
        if let Some(l) = &opts.listen {
            config.listen = Some(parse_listen(l)?.to_string());
        }
        if let Some(ts) = &opts.peer_trackers {
            config.peer_trackers = ts
                .iter()
                .map(|t| {
                    t.trim_end_matches('/')
                        .trim_end_matches("/announce")
                        .to_string()
                })
                .collect();
        }
        if let Some(paths) = &opts.backup {
            config.backup.paths = backup_paths(paths, root)?;
        }
        if let Some(ex) = &opts.exclude {
            swarmbak_format::Excludes::new(ex)?;
            config.backup.exclude = ex.clone();
        }
        if let Some(d) = opts.default_excludes {
            config.backup.default_excludes = d;
        }
        if let Some(e) = opts.every {
            config.backup.every = Some(e.as_secs());
        }
        if opts.retention_default {
            config.retention = None;
        }
        if !opts.retention.is_empty() {
            let mut p = config.retention_policy();
            p.overlay(&opts.retention);
            config.retention = Some(p);
        }
        for r in &opts.recovery_recipients {
            if !config.recovery_recipients.iter().any(|x| x == r.trim()) {
                config.recovery_recipients.push(r.trim().to_string());
            }
        }
        swarmbak_core::check_params(config.k as usize, config.m as usize)?;
        // The machine's signing key, beside its age identity (homes made before it get
        // one now).
        signing_key(root)?;
        config.save(root)?;
        Ok((config, created))
    }

    /// Writes `ROOT/config.json` (mode 0600: it holds the passkey).
    pub fn save(&self, root: &Path) -> Result<(), ConfigError> {
        let cfg_path = root.join("config.json");
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| ConfigError::Invalid(format!("cannot encode config: {e}")))?;
        swarmbak_format::write_private(&cfg_path, &json).map_err(|source| ConfigError::Io {
            path: cfg_path.clone(),
            source,
        })
    }

    /// The tracker as the machine's clients reach it: the base URL, followed by the
    /// passkey when enrolled (`BASE/<passkey>`: announces go to `BASE/<passkey>/announce`,
    /// the JSON endpoints are authorised by the same segment; tracker.md §7.3), and the
    /// TLS pin of an https tracker (tracker.md §7.5). (`load` has checked the pin.)
    pub fn tracker_ref(&self) -> Option<crate::discovery::TrackerRef> {
        let t = self.tracker.as_ref()?;
        Some(match &self.enrolment {
            Some(e) => crate::discovery::TrackerRef {
                url: format!("{t}/{}", e.passkey),
                tls_sha256: e.tls_pin().ok().flatten(),
            },
            None => crate::discovery::TrackerRef::unpinned(t.clone()),
        })
    }

    /// Reads `ROOT/config.json`.
    pub fn load(root: &Path) -> Result<NodeConfig, ConfigError> {
        let p = root.join("config.json");
        let data = std::fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ConfigError::NotInitialised(root.to_path_buf())
            } else {
                ConfigError::Io {
                    path: p.clone(),
                    source: e,
                }
            }
        })?;
        let c: NodeConfig = serde_json::from_slice(&data)
            .map_err(|e| ConfigError::Invalid(format!("{} is damaged: {e}", p.display())))?;
        if let Some(e) = &c.enrolment {
            e.tls_pin()?;
        }
        if c.version != 1 {
            return Err(ConfigError::Invalid(format!(
                "{} has version {}, which this swarmbak does not know",
                p.display(),
                c.version
            )));
        }
        Ok(c)
    }

    /// The machine's key (swarm.md §1): in v1, the bytes of its age recipient.
    pub fn machine_key(&self) -> Result<MachineKey, ConfigError> {
        Ok(MachineKey::from_age_recipient(&self.public_key)?)
    }

    /// The configured peer address (`init --listen`), if any.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        self.listen.as_deref().map(parse_listen).transpose()
    }

    /// Where a command that is not the agent (`seed`, `fetch`, `health`) listens for
    /// peers: `flag` (its `--listen`) as given, else the configured host on any port (the
    /// agent may hold the configured port), else `None` (`0.0.0.0:0`).
    pub fn command_listen(
        config: Option<&NodeConfig>,
        flag: Option<&str>,
    ) -> Result<Option<SocketAddr>, ConfigError> {
        if let Some(f) = flag {
            return parse_listen(f).map(Some);
        }
        Ok(match config {
            Some(c) => c.listen_addr()?.map(|a| SocketAddr::new(a.ip(), 0)),
            None => None,
        })
    }

    /// The announce URL written into new snapshots' metainfo.
    pub fn announce_url(&self) -> Option<String> {
        self.tracker.as_ref().map(|t| format!("{t}/announce"))
    }

    /// The patterns a backup on this machine leaves out: the defaults (unless turned
    /// off), the configured ones, and always the swarmbak home `root`.
    pub fn exclude_patterns(&self, root: &Path) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        if self.backup.default_excludes {
            v.extend(DEFAULT_EXCLUDES.iter().map(|s| s.to_string()));
        }
        v.extend(self.backup.exclude.iter().cloned());
        let home = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        v.push(literal_pattern(&home));
        v
    }

    /// How a backup of `paths` is made on this machine (its excludes apply; `root` is
    /// its home).
    pub fn backup_options(
        &self,
        paths: Vec<PathBuf>,
        root: &Path,
    ) -> Result<BackupOptions, ConfigError> {
        let mut o = BackupOptions::new(paths);
        o.exclude = swarmbak_format::Excludes::new(&self.exclude_patterns(root))?;
        o.announce = self.announce_url();
        o.k = self.k as usize;
        o.m = self.m as usize;
        o.machine_name = self.name.clone();
        o.recovery = self
            .recovery_recipients
            .iter()
            .map(|r| Recipient::parse(r))
            .collect::<Result<_, _>>()?;
        Ok(o)
    }
}

/// The backup set's paths as `config.json` keeps them: absolute, existing, no two the
/// same, none inside the swarmbak home `root`.
fn backup_paths(paths: &[PathBuf], root: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let home = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        let abs = std::fs::canonicalize(p).map_err(|e| {
            ConfigError::Invalid(format!(
                "--backup {}: {e} (give directories or files that exist)",
                p.display()
            ))
        })?;
        if abs.starts_with(&home) {
            return Err(ConfigError::Invalid(format!(
                "--backup {}: that is inside the swarmbak home {}, which is never backed up",
                p.display(),
                home.display()
            )));
        }
        if !out.contains(&abs) {
            out.push(abs);
        }
    }
    Ok(out)
}

/// The storage quota a new home gets for other machines' shards: a fifth of the size of
/// the file system holding it, and at most half of what is free there now, in whole
/// GiB (at least 1 GiB). `None` when the file system cannot be asked.
pub fn default_quota(root: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(root).ok()?;
    let size = st.f_blocks.saturating_mul(st.f_frsize);
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    const GIB: u64 = 1 << 30;
    let q = (size / 5).min(free / 2) / GIB * GIB;
    Some(q.max(GIB))
}

/// The machine's ed25519 signing key (`ROOT/signing.key`, trust.md §1), made the first
/// time it is needed.
pub fn signing_key(root: &Path) -> Result<swarmbak_trust::SigningKey, ConfigError> {
    swarmbak_trust::SigningKey::load_or_create(&root.join("signing.key"))
        .map(|(k, _)| k)
        .map_err(|e| ConfigError::Invalid(e.to_string()))
}

/// How long holders keep what an owner's retirement lets go (swarm.md §16.4): a key stolen
/// or hit by ransomware destroys nothing for this long, and the administrator can cancel.
pub const DEFAULT_RETIRE_GRACE: Duration = Duration::from_secs(30 * 86_400);

/// The node's timers and switches, read once per process. Defaults suit an office;
/// the environment overrides them (tests and the demo run in seconds). Seconds are
/// decimal numbers; values under 0.05 s count as 0.05 s (swarm.md §11).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Agent: how often it looks for new snapshots to replicate (`SWARMBAK_POLL_SECS`, 30).
    pub poll: Duration,
    /// Agent and seed: announce at least this often (`SWARMBAK_ANNOUNCE_SECS`, 30).
    pub announce: Duration,
    /// Health: how long to listen to the swarm (`SWARMBAK_HEALTH_SECS`, 3).
    pub health_wait: Duration,
    /// Fetch: deadline per snapshot (`SWARMBAK_FETCH_TIMEOUT_SECS`, 120; plain torrents 600).
    pub fetch_timeout: Option<Duration>,
    /// Fetch: give up when nothing arrived for this long and a stripe lacks shards
    /// (`SWARMBAK_STALL_SECS`, 20).
    pub stall: Duration,
    /// Replication: the takeover grace (`SWARMBAK_TAKEOVER_SECS`, 30; swarm.md §3.1).
    pub takeover_grace: Duration,
    /// Connection events and progress on stderr (`SWARMBAK_VERBOSE`).
    pub verbose: bool,
    /// Agent: watch the backup set for changes (on; `SWARMBAK_WATCH=0` turns it off, and
    /// every scheduled backup then scans: size, mtime, ctime, inode; swarm.md §15.3).
    pub watch: bool,
    /// Holders: how long an owner's retirement must stand before the shards it lets go are
    /// deleted (`SWARMBAK_RETIRE_GRACE_SECS`, 30 days; swarm.md §16.4).
    pub retire_grace: Duration,
    /// Agent: every shard on this disk is re-verified at least this often
    /// (`SWARMBAK_SCRUB_PERIOD_SECS`, 21 days; swarm.md §17).
    pub scrub_period: Duration,
    /// Agent: how often the scrub verifies its next batch (`SWARMBAK_SCRUB_SECS`, 1 hour).
    pub scrub_every: Duration,
    /// Agent: how long a shard this machine should hold is held by nobody in sight before
    /// it is rebuilt from its stripe (`SWARMBAK_REPAIR_SECS`, 72 hours; swarm.md §18).
    pub repair_grace: Duration,
    /// Agent: bytes per second repairs may download (`SWARMBAK_REPAIR_RATE`, 10 MB/s;
    /// swarm.md §18).
    pub repair_rate: u64,
    /// Where this process listens for peers (`--listen`, `config.json` `listen`); `None`:
    /// `0.0.0.0:0`.
    pub listen: Option<SocketAddr>,
}

/// The repair grace (swarm.md §18): a weekend and a night, so that machines taken home
/// on Friday evening are back before anything is rebuilt.
pub const DEFAULT_REPAIR_GRACE: Duration = Duration::from_secs(72 * 3600);

/// Bytes per second repairs may download (swarm.md §18): a tenth of a gigabit link.
pub const DEFAULT_REPAIR_RATE: u64 = 10_000_000;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            poll: Duration::from_secs(30),
            announce: Duration::from_secs(30),
            health_wait: Duration::from_secs(3),
            fetch_timeout: None,
            stall: Duration::from_secs(20),
            takeover_grace: Duration::from_secs(30),
            verbose: false,
            watch: true,
            retire_grace: DEFAULT_RETIRE_GRACE,
            scrub_period: crate::scrub::DEFAULT_PERIOD,
            scrub_every: crate::scrub::DEFAULT_EVERY,
            repair_grace: DEFAULT_REPAIR_GRACE,
            repair_rate: DEFAULT_REPAIR_RATE,
            listen: None,
        }
    }
}

impl Settings {
    /// Fetch and health announce at least this often: the announce period, at most 5 s.
    pub fn fetch_announce(&self) -> Duration {
        self.announce.min(Duration::from_secs(5))
    }

    /// How the agent repairs (swarm.md §18), logging to `log`.
    pub fn repair(&self, log: PathBuf) -> swarmbak_agent::RepairSettings {
        swarmbak_agent::RepairSettings {
            grace: self.repair_grace,
            rate: self.repair_rate,
            log: Some(log),
        }
    }

    /// Where this process listens for peers.
    pub fn peer_addr(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The defaults, overridden by `SWARMBAK_*` variables.
    pub fn from_env() -> Settings {
        Self::resolve(&Timers::default(), |k| std::env::var(k).ok())
    }

    /// The defaults, overridden by `config.json`'s timers, overridden by the variables
    /// `get` returns (tests and the demo).
    pub fn resolve(file: &Timers, get: impl Fn(&str) -> Option<String>) -> Settings {
        let from_file = |name: &str| match name {
            "SWARMBAK_POLL_SECS" => file.poll,
            "SWARMBAK_ANNOUNCE_SECS" => file.announce,
            "SWARMBAK_HEALTH_SECS" => file.health,
            "SWARMBAK_FETCH_TIMEOUT_SECS" => file.fetch_timeout,
            "SWARMBAK_STALL_SECS" => file.stall,
            "SWARMBAK_TAKEOVER_SECS" => file.takeover,
            _ => None,
        };
        let secs = |name: &str| {
            get(name)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .or_else(|| from_file(name))
                .filter(|s| s.is_finite())
                .map(|s| Duration::from_secs_f64(s.clamp(0.05, 1e9)))
        };
        let d = Settings::default();
        Settings {
            poll: secs("SWARMBAK_POLL_SECS").unwrap_or(d.poll),
            announce: secs("SWARMBAK_ANNOUNCE_SECS").unwrap_or(d.announce),
            health_wait: secs("SWARMBAK_HEALTH_SECS").unwrap_or(d.health_wait),
            fetch_timeout: secs("SWARMBAK_FETCH_TIMEOUT_SECS"),
            stall: secs("SWARMBAK_STALL_SECS").unwrap_or(d.stall),
            takeover_grace: secs("SWARMBAK_TAKEOVER_SECS")
                .unwrap_or(d.takeover_grace)
                .max(Duration::from_millis(100)),
            verbose: get("SWARMBAK_VERBOSE").is_some(),
            watch: get("SWARMBAK_WATCH").map_or(d.watch, |v| v.trim() != "0"),
            retire_grace: secs("SWARMBAK_RETIRE_GRACE_SECS").unwrap_or(d.retire_grace),
            scrub_period: secs("SWARMBAK_SCRUB_PERIOD_SECS").unwrap_or(d.scrub_period),
            scrub_every: secs("SWARMBAK_SCRUB_SECS").unwrap_or(d.scrub_every),
            repair_grace: secs("SWARMBAK_REPAIR_SECS").unwrap_or(d.repair_grace),
            repair_rate: get("SWARMBAK_REPAIR_RATE")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|r| r.is_finite() && *r >= 1.0)
                .map_or(d.repair_rate, |r| r.min(1e15) as u64),
            listen: None,
        }
    }
}

/// A machine's node: its home (keys and store), its configuration, its settings and its
/// clock.
#[derive(Clone)]
pub struct Node {
    pub root: PathBuf,
    pub home: Arc<Home>,
    pub config: NodeConfig,
    pub settings: Settings,
    pub clock: Arc<dyn Clock>,
}

impl Node {
    /// Opens an initialised node, with settings from the environment and the system
    /// clock.
    pub fn open(root: &Path) -> Result<Node, ConfigError> {
        let config = NodeConfig::load(root)?;
        let home = Home::open(root)?;
        let mut settings = Settings::resolve(&config.timers, |k| std::env::var(k).ok());
        settings.listen = NodeConfig::command_listen(Some(&config), None)?;
        Ok(Node {
            root: root.to_path_buf(),
            home: Arc::new(home),
            config,
            settings,
            clock: Arc::new(SystemClock),
        })
    }

    /// The machine's key.
    pub fn machine_key(&self) -> Result<MachineKey, ConfigError> {
        self.config.machine_key()
    }

    /// The local control socket of an agent running on this home.
    pub fn control_socket(&self) -> PathBuf {
        self.root.join("agent.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_take_the_environment_once_with_floors_and_caps() {
        let vars = |get: fn(&str) -> Option<String>| Settings::resolve(&Timers::default(), get);
        let d = vars(|_| None);
        assert_eq!(d, Settings::default());
        let s = vars(|k| match k {
            "SWARMBAK_ANNOUNCE_SECS" => Some("0.5".into()),
            "SWARMBAK_POLL_SECS" => Some("0.001".into()),
            "SWARMBAK_FETCH_TIMEOUT_SECS" => Some("7".into()),
            "SWARMBAK_TAKEOVER_SECS" => Some("nonsense".into()),
            "SWARMBAK_VERBOSE" => Some("1".into()),
            "SWARMBAK_REPAIR_SECS" => Some("3".into()),
            "SWARMBAK_REPAIR_RATE" => Some("0.5".into()),
            _ => None,
        });
        assert_eq!(d.repair_grace, Duration::from_secs(72 * 3600));
        assert_eq!(d.repair_rate, 10_000_000);
        assert_eq!(s.repair_grace, Duration::from_secs(3));
        // A rate under a byte a second is no rate: the default stands.
        assert_eq!(s.repair_rate, 10_000_000);
        assert_eq!(s.announce, Duration::from_millis(500));
        assert_eq!(s.fetch_announce(), Duration::from_millis(500));
        assert_eq!(s.poll, Duration::from_millis(50));
        assert_eq!(s.fetch_timeout, Some(Duration::from_secs(7)));
        assert_eq!(s.takeover_grace, Duration::from_secs(30));
        assert!(s.verbose);
        let slow = vars(|k| (k == "SWARMBAK_ANNOUNCE_SECS").then(|| "60".into()));
        assert_eq!(slow.fetch_announce(), Duration::from_secs(5));
        // config.json's timers sit between the defaults and the environment.
        let file = Timers {
            poll: Some(600.0),
            takeover: Some(120.0),
            ..Default::default()
        };
        let s = Settings::resolve(&file, |k| (k == "SWARMBAK_POLL_SECS").then(|| "1".into()));
        assert_eq!(s.poll, Duration::from_secs(1));
        assert_eq!(s.takeover_grace, Duration::from_secs(120));
        assert_eq!(s.announce, Duration::from_secs(30));
    }

    #[test]
    fn init_keeps_keys_and_changes_only_what_is_given() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("home");
        let (c, created) = NodeConfig::init(&root, &InitOptions::default()).unwrap();
        assert!(created);
        // A fresh config.json has the defaults (format-v1.md §19, durability.md §4).
        assert_eq!((c.k, c.m, c.copies), (DEFAULT_K, DEFAULT_M, DEFAULT_COPIES));
        let id = std::fs::read(root.join("identity.txt")).unwrap();
        let opts = InitOptions {
            name: Some("laptop-7".into()),
            copies: Some(3),
            ..Default::default()
        };
        let (c2, created) = NodeConfig::init(&root, &opts).unwrap();
        assert!(!created);
        assert_eq!((c2.name.as_str(), c2.copies), ("laptop-7", 3));
        assert_eq!(c2.public_key, c.public_key);
        assert_eq!(std::fs::read(root.join("identity.txt")).unwrap(), id);
        assert!(NodeConfig::init(
            &root,
            &InitOptions {
                tracker: Some("tracker:6969".into()),
                ..Default::default()
            }
        )
        .is_err());
        let node = Node::open(&root).unwrap();
        assert_eq!(
            node.machine_key().unwrap().as_bytes(),
            c.public_key.as_bytes()
        );
    }
}
