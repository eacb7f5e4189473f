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
    /// The earlier snapshots this one needs for a restore (its manifest's parents and
    /// snapshots, known for this machine's own snapshots), each with what is wrong with it
    /// (`None`: recoverable now too).
    pub chain: Vec<(InfoHash, Option<String>)>,
}

impl SwarmHealth {
    /// Recoverable now: its own shards, and every snapshot it builds on.
    pub fn recoverable(&self) -> bool {
        self.health.recoverable && self.missing_link().is_none()
    }

    /// The first earlier snapshot that is not recoverable now, and why.
    pub fn missing_link(&self) -> Option<(&InfoHash, &str)> {
        self.chain
            .iter()
            .find_map(|(ih, why)| why.as_deref().map(|w| (ih, w)))
    }
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
            &[],
            settings,
            std::time::Duration::from_secs(2),
            std::sync::Arc::new(swarmbak_core::SystemClock),
            None,
        )
        .await?;
        let t = Torrent::open(store, *ih, Role::Seed, None, None).map_err(FetchError::from)?;
        engine.add(t.clone());
        // The chain (swarm.md §8): each snapshot it builds on must be recoverable too.
        let mut chain: Vec<(InfoHash, Result<std::sync::Arc<Torrent>, String>)> = Vec::new();
        for r in store.referenced(ih).map_err(FetchError::from)?.unwrap_or_default() {
            let link = if !store.is_published(&r) {
                Err("is not published (the tracker never acknowledged it)".to_string())
            } else {
                match ensure_metainfo(store, &r, None, Some(&d)).await {
                    Err(e) => Err(format!("is unknown to the tracker ({e})")),
                    Ok(()) => Torrent::open(store, r, Role::Seed, None, None)
                        .inspect(|t| engine.add(t.clone()))
                        .map_err(|e| format!("cannot be opened: {e}")),
                }
            };
            chain.push((r, link));
        }
        // Listen to the swarm for a moment: peers' bitfields arrive right after connecting.
        tokio::time::sleep(settings.health_wait).await;
        let chain = chain
            .into_iter()
            .map(|(r, link)| {
                let why = match link {
                    Err(why) => Some(why),
                    Ok(t) => {
                        let h = Health::evaluate(&t.layout(), &t.holder_sets());
                        (!h.recoverable).then(|| {
                            format!(
                                "is not recoverable now: a stripe has only {} of the {} shards it needs reachable ({} machines online hold its shards)",
                                h.worst_stripe(),
                                h.k,
                                h.machines_online
                            )
                        })
                    }
                };
                (r, why)
            })
            .collect();
        Ok(SwarmHealth {
            health: Health::evaluate(&t.layout(), &t.holder_sets()),
            tracker_peers: listed.len(),
            chain,
        })
    })
}
