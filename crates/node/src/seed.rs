//! `seed`: walk → chunk → pack → encrypt → stripe → piece (the format crate's backup),
//! then publish and seed until the snapshot is durable (swarm.md §4, §8).
//!
//! When an agent runs on the same home it holds the store: the backup is handed to it
//! over the control socket and the agent keeps seeding after `seed` exits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use swarmbak_agent::{Role, Torrent};
use swarmbak_core::placement::durable;
use swarmbak_core::InfoHash;
use swarmbak_format::{FormatError, Progress, SnapshotInfo};

use crate::config::Node;
use crate::control::ControlClient;
use crate::discovery::{http_status, not_a_swarmbak_tracker, tracker_client};
use crate::error::{FetchError, PublishError, SeedError};
use crate::fetch::{start_engine, SAY_EVERY};
use crate::report::{Event, Report};

/// How long `seed` goes on (the command line contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// The tracker has it (or at once with no tracker).
    Published,
    /// Every shard is held by `copies` machines other than the owner.
    Durable,
    /// Keep seeding.
    Forever,
}

/// Who makes and seeds the snapshot.
#[derive(Debug)]
pub enum Maker {
    /// This process (it took the store lock).
    Here,
    /// The agent running on this home.
    Agent(PathBuf),
}

/// A snapshot just made.
pub struct Made {
    pub infohash: InfoHash,
    pub info: Option<SnapshotInfo>,
    pub by: Maker,
}

/// Backs up `paths` as a new snapshot: here, or by the agent that holds the store.
pub fn make(node: &Node, paths: Vec<PathBuf>, progress: &dyn Progress) -> Result<Made, SeedError> {
    let sock = node.control_socket();
    match node.home.lock() {
        Ok(lock) => {
            let opts = node.config.backup_options(paths, &node.root)?;
            let r = swarmbak_format::backup::backup_locked(&node.home, &opts, progress);
            drop(lock);
            let r = r?;
            Ok(Made {
                infohash: r.infohash,
                info: Some(r.info),
                by: Maker::Here,
            })
        }
        Err(FormatError::Locked(_)) if sock.exists() => {
            // The agent runs elsewhere: give it absolute paths.
            let abs: Vec<PathBuf> = paths
                .iter()
                .map(|p| {
                    std::fs::canonicalize(p).map_err(|e| {
                        SeedError::Format(FormatError::Io {
                            path: p.clone(),
                            source: e,
                        })
                    })
                })
                .collect::<Result<_, _>>()?;
            let rt = crate::runtime().map_err(SeedError::Runtime)?;
            let (infohash, info) = rt.block_on(ControlClient::new(&sock).seed(abs))?;
            Ok(Made {
                infohash,
                info,
                by: Maker::Agent(sock),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Publishes a snapshot to the configured tracker, retrying with backoff until `timeout`.
/// A tracker that keeps no snapshots (opentracker) is told nothing: the snapshot is
/// announced and seeded, and its metainfo travels over BEP 9.
pub async fn publish(
    node: &Node,
    ih: &InfoHash,
    timeout: Duration,
) -> Result<Option<Event>, PublishError> {
    let Some(tracker) = node.config.tracker_ref() else {
        return Ok(None);
    };
    let url = tracker.url.clone();
    let failed = |reason: String| PublishError::Tracker {
        infohash: *ih,
        tracker: url.clone(),
        reason,
    };
    let bytes = node.home.store().torrent_bytes(ih)?;
    let c = tracker_client(&tracker)
        .map_err(|e| failed(e.to_string()))?
        .with_retry(swarmbak_tracker::Retry::for_duration(timeout));
    let signed = own_record(node, ih).map_err(|e| failed(e.to_string()))?;
    let answer = match &signed {
        Some((record, cert)) => c.publish_signed(&bytes, record, cert).await,
        None => {
            c.publish(&bytes, &node.config.public_key, &node.config.name)
                .await
        }
    };
    let note = match answer {
        Ok(_) => None,
        Err(e) if not_a_swarmbak_tracker(&e) => Some(Event::AnnounceOnly {
            tracker: url.clone(),
            status: http_status(&e).unwrap_or(0),
        }),
        Err(e) => return Err(failed(e.to_string())),
    };
    // Acknowledged (or a tracker that keeps no snapshots: nothing more to do).
    node.home.store().mark_published(ih)?;
    Ok(note)
}

/// The signed publish record of one of this machine's snapshots, signed once and kept
/// with it (the same record goes to the tracker on every attempt, and to members in the
/// swarm as `record`, wire.md type 5, so they can check the owner without the tracker).
fn own_record(
    node: &Node,
    ih: &InfoHash,
) -> Result<Option<crate::enrol::SignedPublish>, Box<dyn std::error::Error>> {
    let store = node.home.store();
    if node.config.enrolment.is_some() {
        if let Some(kept) = store.owner_record(ih) {
            return Ok(Some(kept));
        }
    }
    let Some((record, cert)) = crate::enrol::sign_publish(node, ih)? else {
        return Ok(None);
    };
    store.set_owner_record(ih, &record, &cert)?;
    Ok(Some((record, cert)))
}

/// Publishes this machine's snapshots whose publish has not gone through (the tracker
/// was down, the publish was interrupted or refused: format-v1.md §15.2), oldest first so
/// parents go before their children, except `skip`; stops at the first that fails, each
/// retried for up to `timeout`. Returns those published.
pub async fn publish_pending(
    node: &Node,
    skip: Option<&InfoHash>,
    timeout: Duration,
) -> Result<Vec<InfoHash>, PublishError> {
    if node.config.tracker.is_none() {
        return Ok(Vec::new());
    }
    let mut done = Vec::new();
    for ih in node.home.store().unpublished()? {
        if Some(&ih) == skip {
            continue;
        }
        publish(node, &ih, timeout).await?;
        done.push(ih);
    }
    Ok(done)
}

/// Where `seed` reads how many machines hold each shard (of the snapshot and of the
/// earlier snapshots it refers to).
enum Holders {
    Agent(ControlClient),
    Here(Vec<Arc<Torrent>>),
}

impl Holders {
    async fn get(&self, ih: &InfoHash) -> Result<Vec<usize>, SeedError> {
        match self {
            Holders::Agent(c) => Ok(c.holders(ih).await?),
            Holders::Here(ts) => Ok(ts
                .iter()
                .find(|t| &t.ih == ih)
                .map(|t| t.holders())
                .unwrap_or_default()),
        }
    }

    /// Shards of `ih` stated by a holder but not proven yet, when known here.
    fn unproven(&self, ih: &InfoHash) -> Option<usize> {
        match self {
            Holders::Agent(_) => None,
            Holders::Here(ts) => Some(ts.iter().find(|t| &t.ih == ih)?.unproven()),
        }
    }

    /// Distinct machines other than the owner holding any shard of `ih`, when known here.
    fn machines(&self, ih: &InfoHash) -> Option<usize> {
        match self {
            Holders::Agent(_) => None,
            Holders::Here(ts) => {
                let t = ts.iter().find(|t| &t.ih == ih)?;
                let all: std::collections::HashSet<_> =
                    t.holder_sets().into_iter().flatten().collect();
                Some(all.len())
            }
        }
    }

    /// The first earlier snapshot `refs` (the snapshot's parents and the snapshots its
    /// manifest refers to) that is not durable, and why: a snapshot is restorable only
    /// with every one of them (swarm.md §4.2).
    async fn missing_link(
        &self,
        node: &Node,
        refs: &[InfoHash],
        copies: usize,
    ) -> Result<Option<(InfoHash, String)>, SeedError> {
        let store = node.home.store();
        for r in refs {
            if !store.has(r) {
                return Ok(Some((*r, "is not in the local store".into())));
            }
            if !store.is_published(r) {
                return Ok(Some((*r, "is not published".into())));
            }
            let h = kept_pieces(&store, r, self.get(r).await?);
            if h.is_empty() && store.is_retired(r) {
                // Forgotten since, keeping nothing: no snapshot reads any of it.
                continue;
            }
            if h.is_empty() || !durable(&h, copies) {
                let short = h.iter().filter(|&&c| c < copies).count();
                return Ok(Some((
                    *r,
                    format!(
                        "has {short} of {} shards held by fewer than {copies} other machines (fewest: {})",
                        h.len(),
                        h.iter().copied().min().unwrap_or(0)
                    ),
                )));
            }
        }
        Ok(None)
    }
}

/// Holders of each piece of own snapshot `r` that a later snapshot may read: all of them,
/// or, once `r` is forgotten, those of the stripes its retirement keeps (the others are
/// let go: swarm.md §16).
fn kept_pieces(store: &swarmbak_format::Store, r: &InfoHash, holders: Vec<usize>) -> Vec<usize> {
    let Some(ret) = store
        .retirement(r)
        .ok()
        .flatten()
        .and_then(|b| swarmbak_trust::Retirement::parse_unverified(&b).ok())
    else {
        return holders;
    };
    let Some(layout) = store
        .torrent_bytes(r)
        .ok()
        .and_then(|b| swarmbak_format::restore::SnapshotMeta::parse(r, &b).ok())
        .map(|m| m.layout)
    else {
        return holders;
    };
    holders
        .into_iter()
        .enumerate()
        .filter(|(p, _)| ret.keeps(layout.locate(*p).0 as u32))
        .map(|(_, h)| h)
        .collect()
}

/// Runs `attempt` (a publish retried for at most the slice it is given) in slices of
/// [`SAY_EVERY`] until it succeeds or `left` runs out, telling `report` after each failed
/// slice what it waits for (swarm.md §4.2: `waiting` events).
async fn saying<T, F, Fut>(
    report: &dyn Report,
    t0: Instant,
    left: &dyn Fn() -> Duration,
    mut attempt: F,
) -> Result<T, PublishError>
where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = Result<T, PublishError>>,
{
    loop {
        let slice = SAY_EVERY.min(left());
        let began = Instant::now();
        match attempt(slice).await {
            Ok(v) => return Ok(v),
            Err(e) if left().is_zero() => return Err(e),
            Err(e) => {
                let what = match &e {
                    PublishError::Tracker {
                        infohash,
                        tracker,
                        reason,
                    } => format!(
                        "the tracker at {tracker} to take the publish of {infohash} (last attempt: {reason})"
                    ),
                    e => format!("the publish to go through (last attempt: {e})"),
                };
                report.event(&Event::Waiting {
                    what,
                    seconds: t0.elapsed().as_secs(),
                });
                // A refusal comes back at once: try again after the rest of the slice.
                tokio::time::sleep(slice.saturating_sub(began.elapsed()).min(left())).await;
            }
        }
    }
}

/// What to wait for after the snapshot is made.
pub struct SeedPlan {
    pub until: Until,
    pub copies: usize,
    pub deadline: Option<Instant>,
}

/// Publishes the snapshot and seeds it until `plan.until` holds (or the deadline).
pub fn publish_and_seed(
    node: &Node,
    made: &Made,
    plan: &SeedPlan,
    report: &dyn Report,
) -> Result<(), SeedError> {
    let ih = made.infohash;
    if node.config.tracker.is_none() {
        return Ok(());
    }
    let left = || {
        plan.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600 * 24 * 365))
    };
    let rt = crate::runtime().map_err(SeedError::Runtime)?;
    let t0 = Instant::now();
    // Earlier snapshots whose publish did not go through first: this one may build on
    // them (its parents), and is restorable only once they are known.
    let earlier = rt
        .block_on(saying(report, t0, &left, |slice| {
            publish_pending(node, Some(&ih), slice)
        }))
        .map_err(SeedError::Publish)?;
    for e in earlier {
        report.event(&Event::Published {
            infohash: e,
            tracker: node.config.tracker.clone(),
            earlier: true,
        });
    }
    // Publish (retrying while the tracker refuses or is down).
    let published = rt.block_on(saying(report, t0, &left, |slice| async move {
        match &made.by {
            Maker::Agent(sock) => ControlClient::new(sock)
                .publish(&ih, slice.as_secs().max(1))
                .await
                .map(|()| None)
                .map_err(PublishError::from),
            Maker::Here => publish(node, &ih, slice).await,
        }
    }));
    match published {
        Ok(note) => {
            if let Some(e) = note {
                report.event(&e);
            }
            report.event(&Event::Published {
                infohash: ih,
                tracker: node.config.tracker.clone(),
                earlier: false,
            })
        }
        Err(e) => return Err(SeedError::Publish(e)),
    }
    if plan.until == Until::Published {
        return Ok(());
    }
    let lock = match made.by {
        Maker::Here => Some(node.home.lock()?),
        Maker::Agent(_) => None,
    };
    // The earlier snapshots this one needs for a restore: durable only with them.
    let refs = node.home.store().referenced(&ih)?.unwrap_or_default();
    rt.block_on(async {
        let (holders, _engine, tick) = match &made.by {
            Maker::Agent(sock) => (
                Holders::Agent(ControlClient::new(sock)),
                None,
                Duration::from_millis(500),
            ),
            Maker::Here => {
                let me = node.machine_key()?;
                let engine = start_engine(
                    node.settings.peer_addr(),
                    Some(&me),
                    crate::membership::Membership::of(node)?.as_ref(),
                    node.config.tracker_ref().as_ref(),
                    &node.config.peer_trackers,
                    &node.settings,
                    node.settings.announce,
                    node.clock.clone(),
                    None,
                )
                .await?;
                let t = Torrent::open(
                    &node.home.store(),
                    ih,
                    Role::Seed,
                    Some(me.clone()),
                    Some(me.clone()),
                )
                .map_err(FetchError::from)?;
                engine.add(t.clone());
                report.counter(t.num_pieces() as u64 * plan.copies as u64);
                let mut ts = vec![t];
                // Seed the earlier snapshots too: the swarm needs them as well.
                for r in refs.iter().filter(|r| node.home.store().has(r)) {
                    let t = Torrent::open(
                        &node.home.store(),
                        *r,
                        Role::Seed,
                        Some(me.clone()),
                        Some(me.clone()),
                    )
                    .map_err(FetchError::from)?;
                    engine.add(t.clone());
                    ts.push(t);
                }
                (Holders::Here(ts), Some(engine), Duration::from_millis(200))
            }
        };
        let mut last = Vec::new();
        let mut said = Instant::now();
        loop {
            let h = holders.get(&ih).await?;
            report.set(h.iter().map(|&c| c.min(plan.copies) as u64).sum());
            let itself = !h.is_empty() && durable(&h, plan.copies);
            let missing = if itself {
                holders.missing_link(node, &refs, plan.copies).await?
            } else {
                None
            };
            if plan.until == Until::Durable && itself && missing.is_none() {
                report.finish();
                report.event(&Event::Durable {
                    infohash: ih,
                    copies: plan.copies,
                    agent_keeps_seeding: matches!(made.by, Maker::Agent(_)),
                });
                return Ok(());
            }
            if h != last {
                last = h.clone();
                report.event(&Event::Holders {
                    infohash: ih,
                    min: h.iter().copied().min().unwrap_or(0),
                    copies: plan.copies,
                });
            }
            if plan.until == Until::Durable && said.elapsed() >= SAY_EVERY {
                said = Instant::now();
                let short = h.iter().filter(|&&c| c < plan.copies).count();
                let what = match &missing {
                    Some((p, why)) if short == 0 => {
                        format!("the earlier snapshot {p} it builds on, which {why}")
                    }
                    _ => format!(
                        "more holders: {short} of {} shards are held by fewer than {} other machines (fewest: {}{})",
                        h.len(),
                        plan.copies,
                        h.iter().copied().min().unwrap_or(0),
                        holders
                            .machines(&ih)
                            .map(|m| format!("; {m} machines hold some of its shards"))
                            .unwrap_or_default()
                            + &holders
                                .unproven(&ih)
                                .filter(|&u| u > 0)
                                .map(|u| format!("; {u} shards stated by holders are not proven yet"))
                                .unwrap_or_default()
                    ),
                };
                report.event(&Event::Waiting {
                    what,
                    seconds: t0.elapsed().as_secs(),
                });
            }
            if plan.deadline.is_some_and(|d| Instant::now() > d) {
                report.finish();
                if let Some((parent, why)) = missing {
                    return Err(SeedError::MissingLink {
                        infohash: ih,
                        parent,
                        why,
                    });
                }
                return Err(SeedError::Timeout {
                    infohash: ih,
                    short: h.iter().filter(|&&c| c < plan.copies).count(),
                    pieces: h.len(),
                    copies: plan.copies,
                    fewest: h.iter().copied().min().unwrap_or(0),
                });
            }
            tokio::time::sleep(tick).await;
        }
    })?;
    drop(lock);
    Ok(())
}
