//! The running swarmbak node: everything between the command line and the layers below.
//!
//! - [`config`]: the node's settings (`HOME/config.json`, written by `swarmbak init`) and
//!   its runtime knobs ([`Settings`], read once), with the [`Node`] that holds them.
//! - [`agent`]: the long-running peer's supervisor and its scheduled jobs.
//! - [`seed`] and [`fetch`]: making, publishing, seeding and restoring snapshots over the
//!   swarm; [`health`]: who holds what right now; [`plain`]: plain torrents.
//! - [`discovery`]: where snapshots and their metainfo are found (the tracker today;
//!   the DHT plugs in beside it).
//! - [`control`]: the typed local control socket between `swarmbak seed` and the agent.
//!
//! The binary (crates/swarmbak) parses arguments and renders what happens here (text,
//! `--json`, progress bars) through the [`Report`] trait.

pub mod agent;
pub mod config;
pub mod control;
pub mod discovery;
pub mod enrol;
mod error;
pub mod fetch;
pub mod health;
pub mod membership;
pub mod outbox;
pub mod plain;
mod report;
pub mod retention;
pub mod schedule;
pub mod scrub;
pub mod seed;
pub mod status;
pub mod watch;

pub use config::{
    parse_duration, parse_listen, parse_size, InitOptions, Node, NodeConfig, Settings,
};
pub use error::{
    AgentError, ConfigError, ControlError, FetchError, HealthError, PublishError, SeedError,
};
pub use report::{Event, NoReport, Report};

/// A multi-threaded async runtime for a command.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
