//! `health INFOHASH` against the swarm: who holds which shard right now (swarm.md §7).

use swarmbak_agent::{Role, Torrent};
use swarmbak_core::placement::Health;
use swarmbak_core::InfoHash;
use swarmbak_format::Store;

use crate::config::Settings;
use crate::discovery::{TrackerDiscovery, TrackerRef};
use crate::error::{FetchError, HealthError};
use crate::fetch::{ensure_metainfo, start_engine};

/// Joins the swarm of `ih` for `settings.health_wait` as a watcher (no machine key: it
/// is not a holder), and evaluates the holders it saw.
pub fn swarm_health(
    store: &Store,
    ih: &InfoHash,
    tracker: &TrackerRef,
    settings: &Settings,
) -> Result<Health, HealthError> {
    let rt = crate::runtime().map_err(FetchError::Listen)?;
    rt.block_on(async {
        let d = TrackerDiscovery::new(tracker)?.retrying_for(std::time::Duration::from_secs(10));
        ensure_metainfo(store, ih, None, Some(&d)).await?;
        let engine = start_engine(
            settings.peer_addr(),
            None,
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
        Ok(Health::evaluate(&t.layout(), &t.holder_sets()))
    })
}
