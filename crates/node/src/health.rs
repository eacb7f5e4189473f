//! `health INFOHASH` against the swarm: who holds which shard right now (swarm.md §7).

use swarmbak_agent::{Role, Torrent};
use swarmbak_core::placement::Health;
use swarmbak_core::InfoHash;
use swarmbak_format::Store;

use crate::config::Settings;
use crate::discovery::{TrackerDiscovery, TrackerRef};
use crate::error::{FetchError, HealthError};
use crate::fetch::{ensure_metainfo, start_engine};

/// What `health` saw: the holders' evaluation, and how many peers the tracker listed (0
/// after a restart, until the machines announce again).
pub struct SwarmHealth {
    pub health: Health,
    pub tracker_peers: usize,
}

/// Asks the tracker who takes part in `ih` (an unreachable tracker is an error, not "no
/// machines"), then joins the swarm for `settings.health_wait` as a watcher (no machine
/// key: it is not a holder), and evaluates the holders it saw.
pub fn swarm_health(
    store: &Store,
    ih: &InfoHash,
    tracker: &TrackerRef,
    membership: Option<&crate::membership::Membership>,
    settings: &Settings,
) -> Result<SwarmHealth, HealthError> {
    let rt = crate::runtime().map_err(FetchError::Listen)?;
    rt.block_on(async {
        let listed = crate::discovery::tracker_peers(
            ih,
            tracker,
            swarmbak_agent::engine::new_peer_id(),
            std::time::Duration::from_secs(5),
        )
        .await
        .map_err(|e| HealthError::TrackerUnreachable {
            infohash: *ih,
            tracker: tracker.url.clone(),
            reason: match e {
                FetchError::Tracker { reason, .. } => reason,
                e => e.to_string(),
            },
        })?;
        let d = TrackerDiscovery::new(tracker)?.retrying_for(std::time::Duration::from_secs(10));
        ensure_metainfo(store, ih, None, Some(&d)).await?;
        let engine = start_engine(
            settings.peer_addr(),
            None,
            membership,
            Some(tracker),
            settings,
            std::time::Duration::from_secs(2),
            std::sync::Arc::new(swarmbak_core::SystemClock),
        )
        .await?;
        let t = Torrent::open(store, *ih, Role::Seed, None, None).map_err(FetchError::from)?;
        engine.add(t.clone());
        // Listen to the swarm for a moment: peers' bitfields arrive right after connecting.
        tokio::time::sleep(settings.health_wait).await;
        Ok(SwarmHealth {
            health: Health::evaluate(&t.layout(), &t.holder_sets()),
            tracker_peers: listed.len(),
        })
    })
}
