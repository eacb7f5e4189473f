//! One error type per operation. Each message says what happened and what to do next.

use std::path::PathBuf;

use swarmbak_core::InfoHash;
use swarmbak_format::FormatError;

/// Reading or writing the node's configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{0} is not a swarmbak home yet: run `swarmbak init` first (or pass --home)")]
    NotInitialised(PathBuf),
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Format(#[from] FormatError),
}

impl From<swarmbak_format::CryptoError> for ConfigError {
    fn from(e: swarmbak_format::CryptoError) -> Self {
        ConfigError::Format(e.into())
    }
}

impl From<swarmbak_core::LayoutError> for ConfigError {
    fn from(e: swarmbak_core::LayoutError) -> Self {
        ConfigError::Format(e.into())
    }
}

impl From<swarmbak_core::IdError> for ConfigError {
    fn from(e: swarmbak_core::IdError) -> Self {
        ConfigError::Invalid(e.to_string())
    }
}

/// Talking to an agent over its control socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error("cannot reach the agent at {path}: {source}")]
    Unreachable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent closed the connection")]
    Closed,
    #[error("agent: {0}")]
    Protocol(String),
    /// The agent understood and refused.
    #[error("{0}")]
    Refused(String),
}

/// Publishing a snapshot to the tracker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    #[error("could not publish {infohash} to {tracker}: {reason}")]
    Tracker {
        infohash: InfoHash,
        tracker: String,
        reason: String,
    },
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// `seed`: making, publishing and seeding a snapshot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeedError {
    #[error("no tracker is configured, so no other machine can hold this backup: run `swarmbak init --tracker http://HOST:PORT`, or use `--until published` to make the snapshot in the local store only")]
    NoTracker,
    #[error("durable counts only enrolled machines that prove who they are, and this machine is not enrolled (its tracker is open): nothing its peers claim can be checked. Enrol it with `swarmbak init --enroll TOKEN` (the administrator runs `swarmbak tracker enroll`), or use `--until published`")]
    NotEnrolled,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("the agent could not make the snapshot: {0}")]
    Agent(#[source] ControlError),
    #[error("{0}; the snapshot is in the local store: run `swarmbak seed` again later, or start `swarmbak agent`")]
    Publish(#[source] PublishError),
    #[error("timed out: {short} of {pieces} shards of {infohash} are held by fewer than {copies} other machines (fewest: {fewest}); start more agents or lower --copies; the snapshot stays published")]
    Timeout {
        infohash: InfoHash,
        short: usize,
        pieces: usize,
        copies: usize,
        fewest: usize,
    },
    /// The snapshot's own shards are held widely enough, but an earlier snapshot it needs
    /// for a restore (a parent) is not.
    #[error("timed out: every shard of {infohash} is held by enough machines, but it builds on the earlier snapshot {parent}, which {why}, and a restore needs both; keep the agent running (it publishes and seeds it), then run `swarmbak health {infohash}`")]
    MissingLink {
        infohash: InfoHash,
        parent: InfoHash,
        why: String,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Seeding: listening for peers, opening the snapshot for the swarm.
    #[error(transparent)]
    Swarm(#[from] FetchError),
}

impl From<ControlError> for SeedError {
    fn from(e: ControlError) -> Self {
        SeedError::Agent(e)
    }
}

impl SeedError {
    /// Gave up waiting (`--timeout`) or could not publish: exit status 3 by the
    /// command line contract.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            SeedError::Timeout { .. } | SeedError::MissingLink { .. } | SeedError::Publish(_)
        )
    }
}

/// `fetch`: getting a snapshot's shards (or a plain torrent's pieces) from the swarm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("snapshot {0} is not in the local store and no tracker is configured: `swarmbak init --tracker http://HOST:PORT`, or give the .torrent file")]
    NoSource(InfoHash),
    #[error("neither the tracker at {tracker} nor its peers know snapshot {infohash}; `swarmbak snapshots --machine NAME` lists a machine's snapshots")]
    Unknown { infohash: InfoHash, tracker: String },
    #[error("cannot get {infohash}'s metainfo from {tracker} or its peers: {reason}")]
    Metainfo {
        infohash: InfoHash,
        tracker: String,
        reason: String,
    },
    /// The tracker lists the snapshot under a record the organisation key does not vouch
    /// for: refused, never waited out.
    #[error("cannot get {infohash}'s metainfo from {tracker} or its peers: {reason}")]
    Untrusted {
        infohash: InfoHash,
        tracker: String,
        reason: String,
    },
    /// Waited up to `--timeout` for the tracker or peers to know the snapshot.
    #[error("{last} (waited {secs}s: the tracker lists a snapshot once its machine has published it; give fetch a longer --timeout to wait longer)")]
    Waited {
        secs: u64,
        #[source]
        last: Box<FetchError>,
    },
    #[error("no peer served {infohash}'s metadata ({tried} tried{why}); give the .torrent file instead (standard clients never serve metadata for private torrents)")]
    NoMetadata {
        infohash: InfoHash,
        tried: usize,
        why: String,
    },
    #[error("could not get {infohash}: only {have} of the {k} shards needed for stripe {stripe} are reachable; {peers} peers are online; run fetch again to resume")]
    Unreachable {
        infohash: InfoHash,
        stripe: usize,
        have: usize,
        k: usize,
        peers: usize,
    },
    #[error("could not get {infohash} in {secs}s: the shards are reachable from {peers} peers but arrived too slowly; run fetch again to resume (shards already here are kept)")]
    TooSlow {
        infohash: InfoHash,
        secs: u64,
        peers: usize,
    },
    #[error("could not get every piece of {infohash} in {secs}s ({have} of {pieces} here, {peers} peers); run fetch again to resume")]
    Incomplete {
        infohash: InfoHash,
        secs: u64,
        have: u32,
        pieces: u32,
        peers: usize,
    },
    #[error("{0} is not empty; give a new or empty directory")]
    NotEmpty(PathBuf),
    #[error("refused: this torrent names {count} path(s) that would leave the target directory or are not plain names: {shown}; nothing was written")]
    UnsafePaths { count: usize, shown: String },
    #[error("cannot listen for peers: {0}")]
    Listen(#[source] std::io::Error),
    #[error("tracker {tracker}: {reason}")]
    Tracker { tracker: String, reason: String },
    #[error(transparent)]
    Torrent(#[from] swarmbak_agent::TorrentError),
    /// A plain torrent that names no safe files or lacks a piece it should have.
    #[error("{0}")]
    Plain(String),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FetchError {
    /// The snapshot may yet become known: nobody knows it yet (a whitelist not updated, a
    /// publish not made yet), or the tracker did not answer.
    pub fn may_become_known(&self) -> bool {
        matches!(
            self,
            FetchError::Unknown { .. } | FetchError::Metainfo { .. } | FetchError::Tracker { .. }
        )
    }

    /// What a fetch that got this error is waiting for, in words.
    pub fn waiting_for(&self) -> String {
        match self {
            FetchError::Unknown { tracker, .. } => {
                format!("the tracker at {tracker} or its peers to know the snapshot (not published yet?)")
            }
            FetchError::Metainfo {
                tracker, reason, ..
            } => {
                format!("the tracker at {tracker} ({reason})")
            }
            FetchError::Tracker { tracker, reason } => {
                format!("the tracker at {tracker} ({reason})")
            }
            e => e.to_string(),
        }
    }
}

/// `health`: who holds a snapshot's shards right now.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    #[error("snapshot {0} cannot be restored from the machines online now")]
    NotRecoverable(InfoHash),
    /// Its own shards are reachable, but an earlier snapshot it builds on is not.
    #[error("snapshot {infohash} cannot be restored now: it builds on the earlier snapshot {parent}, which {why}; start `swarmbak agent` on this machine (it publishes and seeds it) and run health again")]
    MissingLink {
        infohash: InfoHash,
        parent: InfoHash,
        why: String,
    },
    /// The tracker did not answer: who holds what cannot be known, which is not the same
    /// as nobody holding anything.
    #[error("cannot tell whether {infohash} is recoverable: the tracker at {tracker} is unreachable ({reason}); health asks it which machines hold the shards: run health again once it is up")]
    TrackerUnreachable {
        infohash: InfoHash,
        tracker: String,
        reason: String,
    },
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

/// The agent: starting it and keeping it running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("cannot listen for peers on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tracker {tracker}: {reason}")]
    Tracker { tracker: String, reason: String },
}
