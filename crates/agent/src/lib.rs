//! swarmbak's peer engine: seeds, fetches and replicates snapshots over the BitTorrent
//! wire protocol (crates/wire), finding peers through the tracker (crates/tracker).

pub mod auth;
pub mod cache;
pub mod engine;
pub mod io;
pub mod metadata;
pub mod peer;
pub mod possession;
pub mod torrent;

pub use auth::{Identity, Member};
pub use engine::{Engine, EngineConfig};
pub use metadata::MetadataFetchError;
pub use torrent::{BlockError, Quota, RepairSettings, Role, Scrubbed, Torrent, TorrentError};
