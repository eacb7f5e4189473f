//! `swarmbak status`: what the agent is doing now (a backup and its progress,
//! replication), its last backup and the next, what it holds for others, its peers and
//! whether the tracker answers (swarm.md §8, the `status` op).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use swarmbak_agent::{Engine, Role};

use crate::config::Node;
use crate::schedule::{lock, BackupStatus, Shared, TrackerSeen};

/// The agent's state, as the `status` op answers it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// The machine's label.
    pub machine: String,
    /// Where it listens for peers.
    pub listen: String,
    pub backup: BackupStatus,
    pub tracker: TrackerSeen,
    /// This machine's own snapshots (seeded).
    pub own_snapshots: usize,
    pub holding: Holding,
    /// Distinct peers connected, and connections (a peer has one per snapshot).
    pub peers: usize,
    pub connections: usize,
    /// The scrub's progress and findings (swarm.md §17).
    #[serde(default)]
    pub scrub: crate::scrub::ScrubState,
    /// Repair with no key (swarm.md §18).
    #[serde(default)]
    pub repair: Repairs,
}

/// Repairs of shards nobody in sight holds (swarm.md §18).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repairs {
    /// Stripes being repaired now.
    pub under_way: usize,
    /// Shards rebuilt since the agent started (`HOME/repair.log` has every one).
    pub rebuilt: u64,
}

/// What the agent holds for other machines.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    pub snapshots: usize,
    /// Shards held, and their bytes.
    pub shards: u64,
    pub bytes: u64,
    /// The quota (`None`: no limit).
    pub quota: Option<u64>,
    /// Snapshots still missing shards assigned to this machine (replication at work).
    pub replicating: usize,
    /// Shards assigned and not held yet.
    pub shards_wanted: u64,
}

/// The running agent's status.
pub fn of_agent(engine: &Engine, node: &Node, shared: &Shared) -> AgentStatus {
    let mut holding = Holding {
        quota: node.config.quota,
        ..Default::default()
    };
    let mut own = 0;
    for t in engine.torrents() {
        let g = t.inner();
        match &g.role {
            Role::Seed if t.is_own() => own += 1,
            Role::Replicate { .. } | Role::Seed => {
                let have = g.picker.have().count() as u64;
                holding.snapshots += 1;
                holding.shards += have;
                holding.bytes += have * t.layout().shard_size as u64;
                let wanted = (0..t.num_pieces())
                    .filter(|&p| g.picker.is_wanted(p) && !g.picker.have().get(p))
                    .count() as u64;
                if wanted > 0 {
                    holding.replicating += 1;
                    holding.shards_wanted += wanted;
                }
            }
            Role::Fetch => {}
        }
    }
    let (under_way, rebuilt) = engine.repairs();
    let conns = engine.connections();
    let peers: HashSet<_> = conns.iter().map(|(_, a)| *a).collect();
    AgentStatus {
        machine: node.config.name.clone(),
        listen: engine.local_addr().to_string(),
        backup: lock(&shared.backup).clone(),
        tracker: lock(&shared.tracker).clone(),
        own_snapshots: own,
        holding,
        peers: peers.len(),
        connections: conns.len(),
        scrub: crate::scrub::ScrubState::load(&node.root),
        repair: Repairs { under_way, rebuilt },
    }
}
