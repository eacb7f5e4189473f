//! How the node tells its caller what it is doing: the binary renders it as text, JSON
//! lines or a progress bar.

use swarmbak_core::InfoHash;

/// Something worth telling the user while a command runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The tracker has the snapshot.
    Published {
        infohash: InfoHash,
        tracker: Option<String>,
        /// An earlier snapshot whose publish had not gone through (published first).
        earlier: bool,
    },
    /// The tracker keeps no snapshots (not a swarmbak tracker): announcing only.
    AnnounceOnly { tracker: String, status: u16 },
    /// The fewest holders of any shard changed.
    Holders {
        infohash: InfoHash,
        min: usize,
        copies: usize,
    },
    /// Still waiting, `seconds` into the wait, for `what` (said every few seconds).
    Waiting { what: String, seconds: u64 },
    /// Every shard has `copies` holders.
    Durable {
        infohash: InfoHash,
        copies: usize,
        /// An agent keeps seeding after the command exits.
        agent_keeps_seeding: bool,
    },
}

/// Where progress goes. Every method has a default that does nothing.
pub trait Report: Sync {
    /// A counter of `total` units starts (pieces, copies).
    fn counter(&self, _total: u64) {}
    /// The counter stands at `pos`.
    fn set(&self, _pos: u64) {}
    /// The counter is done.
    fn finish(&self) {}
    /// Something happened.
    fn event(&self, _e: &Event) {}
    /// A line for `--verbose` (connection-level detail).
    fn note(&self, _msg: &str) {}
}

/// Reports nothing.
pub struct NoReport;
impl Report for NoReport {}
