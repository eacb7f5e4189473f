//! `health INFOHASH` against the swarm: who holds which shard right now (swarm.md §7).

use std::collections::BTreeSet;

use swarmbak_agent::{Role, Torrent};
use swarmbak_core::placement::{Health, HolderSets};
use swarmbak_core::{InfoHash, MachineKey};
use swarmbak_format::Store;

use crate::config::Settings;
use crate::discovery::TrackerDiscovery;
use crate::error::{FetchError, HealthError};
use crate::fetch::{any_addr, ensure_metainfo, start_engine};

/// Joins the swarm of `ih` for `settings.health_wait` as a watcher (no machine key: it
/// is not a holder), and evaluates the holders it saw.
pub fn swarm_health(
    store: &Store,
    ih: &InfoHash,
    tracker: &str,
    settings: &Settings,
) -> Result<Health, HealthError> {
    let rt = crate::runtime().map_err(FetchError::Listen)?;
    rt.block_on(async {
        let d = TrackerDiscovery::new(tracker)?.retrying_for(std::time::Duration::from_secs(10));
        ensure_metainfo(store, ih, None, Some(&d)).await?;
        let engine = start_engine(
            any_addr(),
            None,
            Some(tracker),
            std::time::Duration::from_secs(2),
            false,
        )
        .await?;
        let t =
            Torrent::open(store, *ih, Role::Seed, None, Vec::new()).map_err(FetchError::Torrent)?;
        engine.add(t.clone());
        // Listen to the swarm for a moment: peers' bitfields arrive right after connecting.
        tokio::time::sleep(settings.health_wait).await;
        let sets: HolderSets = t
            .holder_sets()
            .into_iter()
            .map(|s| {
                s.into_iter()
                    .filter_map(|k| MachineKey::from_bytes(&k).ok())
                    .collect::<BTreeSet<_>>()
            })
            .collect();
        Ok(Health::evaluate(&t.layout(), &sets))
    })
}
