//! swarmbak's core: the types every layer names the same way, defined once, and the
//! rules that decide who holds what, computed without I/O.
//!
//! - [`InfoHash`], [`PeerId`], [`MachineKey`]: identities (protocol-spec/swarm.md §1).
//! - [`Layout`] and the index types [`PieceIndex`], [`StripeIndex`], [`ShardIndex`]: where
//!   a snapshot's shards sit among its pieces (protocol-spec/format-v1.md §9.1).
//! - [`merkle`]: per-shard Merkle roots (BEP 52's piece layer), format-v2.md.
//! - [`placement`]: rendezvous placement, holder counting and health (swarm.md §3, §7).
//! - [`repair`]: when a shard nobody holds is rebuilt, and from which (swarm.md §18).
//! - [`retention`]: which snapshots a forget policy keeps (swarm.md §16).
//! - [`Clock`]: the time source, injectable so that schedules, grace periods and overdue
//!   thresholds are testable in seconds.
//!
//! This crate does no I/O and depends on no other swarmbak crate: every other crate sits
//! above it.
#![forbid(unsafe_code)]

mod clock;
mod ids;
mod layout;
pub mod merkle;
pub mod placement;
pub mod repair;
pub mod retention;
#[cfg(any(test, feature = "test-utils"))]
pub mod spec;
mod units;

pub use clock::{Clock, ManualClock, SystemClock};
pub use ids::{IdError, InfoHash, MachineKey, PeerId, MAX_MACHINE_KEY_LEN};
pub use layout::{
    check_params, Layout, LayoutError, PieceIndex, ShardIndex, StripeIndex, MAX_SHARD, MIN_SHARD,
};
pub use units::{civil, compact_duration, parse_duration, parse_size, spoken_duration, utc};
