//! swarmbak's tracker and tracker client.
//!
//! The server ([`serve`], [`Tracker`]) is a BitTorrent HTTP tracker (announce and scrape,
//! BEP 3, 23, 48) for private torrents only (BEP 27: it answers only for torrents that
//! were published to it), plus swarmbak's endpoints to publish a snapshot's torrent,
//! fetch it back by info-hash and list a machine's snapshots. Its state lives in a data
//! directory ([`store`]) and survives restarts; peer lists are in memory.
//!
//! The same tracker answers BEP 15 over UDP ([`udp`], [`Tracker::with_udp`]), with a
//! private tracker's passkey carried as BEP 41 URL data.
//!
//! The client ([`TrackerClient`]) speaks to it, and its announce and scrape to any
//! BitTorrent HTTP tracker (opentracker included). The HTTP interface is described in
//! `protocol-spec/tracker.md`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
mod alerts;
pub mod client;
pub mod dashboard;
pub mod directory;
pub mod metrics;
pub mod org;
mod plain;
pub mod proto;
pub mod query;
pub mod schedule;
pub mod server;
pub mod sqlite;
pub mod status;
pub mod storage;
pub mod store;
pub mod swarm;
pub mod tls;
pub mod udp;
mod web;

pub use client::{
    ClientError, Published, Retry, Roster, RosterEntry, TrackerClient, MAX_REPLY_BYTES,
};
#[doc(hidden)]
pub use plain::{classify_for_fuzzing, FastPathHead};
pub use proto::{
    AnnounceEvent, AnnounceRequest, AnnounceResponse, InfoHash, PeerId, PeerInfo, ScrapeResponse,
    ScrapeStats,
};
pub use schedule::Schedule;
pub use server::{
    serve, EnrollAnswer, Listener, Tracker, TrackerConfig, TrackerError, CERTIFICATE_HEADER,
    NO_PASSKEY, RECORD_HEADER, REVOKED_PASSKEY, UNKNOWN_PASSKEY, UNKNOWN_TORRENT,
};
pub use sqlite::ImportReport;
pub use store::{MachineRecord, SnapshotRecord};
pub use swarmbak_trust as trust;
