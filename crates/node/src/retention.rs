//! Forgetting snapshots (swarm.md §16): which of this machine's snapshots a policy keeps
//! (`swarmbak_core::retention`, applied to each set of backed-up paths on its own), and,
//! for each one forgotten, which of its stripes the kept snapshots still read (their
//! manifests name chunks in its packs: format-v1.md §11.4). Those stripes stay; the
//! others' shards can go.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use swarmbak_core::retention::{decide, Policy};
use swarmbak_core::{InfoHash, Layout};
use swarmbak_format::manifest::Manifest;
use swarmbak_format::restore::SnapshotMeta;
use swarmbak_format::{FormatError, SnapshotInfo, Store};

/// What a policy does to one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fate {
    pub infohash: String,
    /// Unix seconds.
    pub time: i64,
    pub paths: Vec<String>,
    pub keep: bool,
    /// The policies that keep it ("newest", "last", "daily", ...).
    pub reasons: Vec<String>,
    /// Its stripes, and (forgotten) those kept snapshots still read.
    pub stripes: u32,
    pub stripes_kept: u32,
    /// Bytes of shards (all k+m per stripe) of the stripes that can go.
    pub bytes_freed: u64,
    /// Bytes of shards that stay.
    pub bytes_kept: u64,
}

/// A policy applied to this machine's snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Every own snapshot, oldest first.
    pub snapshots: Vec<Fate>,
    /// The stripes of each snapshot (forgotten before or now) that kept ones read.
    #[serde(skip)]
    pub needed: HashMap<InfoHash, BTreeSet<usize>>,
}

impl Plan {
    pub fn forgotten(&self) -> impl Iterator<Item = &Fate> {
        self.snapshots.iter().filter(|f| !f.keep)
    }
    /// Shard bytes the forgotten snapshots free, and those they keep for kept ones.
    pub fn totals(&self) -> (u64, u64) {
        self.forgotten()
            .fold((0, 0), |(f, k), s| (f + s.bytes_freed, k + s.bytes_kept))
    }
}

/// Why forgetting cannot be planned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("the store names a snapshot wrongly: {0}")]
    Id(#[from] swarmbak_core::IdError),
    /// A kept snapshot's manifest is not in the manifest cache: what it reads is unknown,
    /// so nothing may be forgotten.
    #[error("the manifest of kept snapshot {0} is not in this machine's store: what it still reads cannot be told, so nothing is forgotten (restore it into the store with `swarmbak fetch`, or forget nothing)")]
    NoManifest(InfoHash),
}

/// The group a snapshot belongs to: its sorted backed-up paths.
fn group_of(s: &SnapshotInfo) -> Vec<String> {
    let mut p = s.paths.clone();
    p.sort();
    p
}

/// A snapshot's layout, from the torrent this store keeps of it.
pub(crate) fn layout_of(store: &Store, ih: &InfoHash) -> Result<Layout, FormatError> {
    Ok(SnapshotMeta::parse(ih, &store.torrent_bytes(ih)?)?.layout)
}

/// The packs kept snapshot `ih` reads in other snapshots: (snapshot, offset, length).
fn reads(store: &Store, ih: &InfoHash) -> Result<Vec<(InfoHash, u64, u64)>, RetentionError> {
    let plain = store
        .manifest_cache(ih)?
        .ok_or(RetentionError::NoManifest(*ih))?;
    let m = Manifest::decode(&plain)?;
    Ok(m.packs
        .iter()
        .filter(|p| p.snapshot != 0)
        .filter_map(|p| {
            let target = m.snapshots.get(p.snapshot as usize - 1)?;
            Some((*target, p.offset, p.len))
        })
        .collect())
}

/// Applies `policy` to this machine's snapshots (each set of paths on its own;
/// `utc_offset`: the machine's local offset, seconds) and finds what the kept ones still
/// read of the others.
pub fn plan(store: &Store, policy: &Policy, utc_offset: i64) -> Result<Plan, RetentionError> {
    let own = store.own_snapshots()?;
    let mut groups: BTreeMap<Vec<String>, Vec<usize>> = BTreeMap::new();
    for (i, s) in own.iter().enumerate() {
        groups.entry(group_of(s)).or_default().push(i);
    }
    let mut keep = vec![false; own.len()];
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); own.len()];
    for members in groups.values() {
        let times: Vec<i64> = members.iter().map(|&i| own[i].time).collect();
        for d in decide(&times, policy, utc_offset) {
            let i = members[d.index];
            keep[i] = d.keep;
            reasons[i] = d.reasons.iter().map(|r| r.to_string()).collect();
        }
    }
    // What the kept snapshots read of each snapshot.
    let mut needed: HashMap<InfoHash, BTreeSet<usize>> = HashMap::new();
    let mut layouts: HashMap<InfoHash, Layout> = HashMap::new();
    for (i, s) in own.iter().enumerate() {
        if !keep[i] {
            continue;
        }
        let ih = InfoHash::from_hex(&s.infohash)?;
        for (target, offset, len) in reads(store, &ih)? {
            let layout = match layouts.get(&target) {
                Some(l) => *l,
                None => {
                    let l = layout_of(store, &target)?;
                    layouts.insert(target, l);
                    l
                }
            };
            needed
                .entry(target)
                .or_default()
                .extend(layout.stripes_for(offset, len));
        }
    }
    let mut out = Plan::default();
    // Oldest first, as `own_snapshots` orders them (time, then nanoseconds).
    for i in 0..own.len() {
        let s = &own[i];
        let ih = InfoHash::from_hex(&s.infohash)?;
        let layout = match layouts.get(&ih) {
            Some(l) => *l,
            None => layout_of(store, &ih)?,
        };
        let stripes = layout.stripes as u32;
        let per_stripe = (layout.n() * layout.shard_size) as u64;
        let kept = if keep[i] {
            stripes
        } else {
            needed.get(&ih).map_or(0, |n| n.len() as u32)
        };
        out.snapshots.push(Fate {
            infohash: s.infohash.clone(),
            time: s.time,
            paths: s.paths.clone(),
            keep: keep[i],
            reasons: reasons[i].clone(),
            stripes,
            stripes_kept: kept,
            bytes_freed: u64::from(stripes - kept) * per_stripe,
            bytes_kept: if keep[i] {
                0
            } else {
                u64::from(kept) * per_stripe
            },
        });
    }
    out.needed = needed;
    Ok(out)
}

/// The stripes of forgotten snapshot `ih` the kept ones read, by [`plan`]'s rule (for
/// the retirement record).
pub fn needed_stripes(plan: &Plan, ih: &InfoHash) -> BTreeSet<usize> {
    plan.needed.get(ih).cloned().unwrap_or_default()
}

/// The machine's offset from UTC at Unix time `t`, seconds (its local time zone), for
/// the calendar policies.
pub fn local_offset(t: i64) -> i64 {
    let t = t as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which outlives the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return 0;
    }
    tm.tm_gmtoff
}

/// One snapshot `forget` retired (or, `--dry-run`, would retire).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    pub infohash: String,
    pub stripes: u32,
    /// Stripe ranges `[start, end)` that stay (kept snapshots read them).
    pub keep: Vec<(u32, u32)>,
    /// Bytes of this machine's shard files let go.
    pub bytes_freed_here: u64,
    /// Retired before, its record signed again because fewer stripes stay now.
    pub again: bool,
}

/// What `forget` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forgot {
    pub dry_run: bool,
    pub plan: Plan,
    pub retired: Vec<Retired>,
    /// Forgotten here (no agent): the retirements sent to the tracker then. By the agent:
    /// `None` (it sends them at once, and again until the tracker takes them).
    #[serde(default)]
    pub sent: Option<Sent>,
}

/// Why `forget` stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForgetError {
    #[error(transparent)]
    Plan(#[from] RetentionError),
    #[error("this machine's signing key: {0}")]
    Key(String),
    #[error("the agent holds the store and did not forget: {0}")]
    Agent(String),
}

/// Forgets by `policy` (swarm.md §16.3) in this process when it can take the store lock,
/// else by the agent that holds it (the control socket's `forget` op, which also lets
/// go of the torrents' shards it seeds).
pub fn forget_here_or_by_agent(
    node: &crate::config::Node,
    policy: &Policy,
    dry_run: bool,
) -> Result<Forgot, ForgetError> {
    match node.home.lock() {
        Ok(lock) => {
            let mut f = forget_node(node, policy, dry_run)?;
            drop(lock);
            if !dry_run && node.config.enrolment.is_some() {
                let rt = crate::runtime().map_err(|e| ForgetError::Agent(e.to_string()))?;
                f.sent =
                    Some(rt.block_on(send_retirements(node, std::time::Duration::from_secs(10))));
            }
            Ok(f)
        }
        Err(FormatError::Locked(_)) if node.control_socket().exists() => {
            let rt = crate::runtime().map_err(|e| ForgetError::Agent(e.to_string()))?;
            rt.block_on(
                crate::control::ControlClient::new(&node.control_socket()).forget(policy, dry_run),
            )
            .map_err(|e| ForgetError::Agent(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// [`forget`] with the node's store and signing key, now; the caller holds the lock.
pub fn forget_node(
    node: &crate::config::Node,
    policy: &Policy,
    dry_run: bool,
) -> Result<Forgot, ForgetError> {
    let key =
        crate::config::signing_key(&node.root).map_err(|e| ForgetError::Key(e.to_string()))?;
    forget(&node.home.store(), &key, policy, node.clock.unix(), dry_run)
}

impl From<FormatError> for ForgetError {
    fn from(e: FormatError) -> Self {
        ForgetError::Plan(RetentionError::Format(e))
    }
}

impl From<swarmbak_core::IdError> for ForgetError {
    fn from(e: swarmbak_core::IdError) -> Self {
        ForgetError::Plan(RetentionError::Id(e))
    }
}

fn ranges_of(stripes: u32, keep: &BTreeSet<usize>) -> Vec<(u32, u32)> {
    swarmbak_trust::stripe_ranges(stripes, |s| keep.contains(&(s as usize)))
}

/// Forgets what `policy` does not keep of this machine's snapshots (swarm.md §16.3). The
/// caller holds the store lock. For each snapshot forgotten, in this order, each step on
/// disk before the next: its retirement is signed (`newest`: this machine's newest
/// snapshot) and kept in the store, which takes it out of the snapshots backups build on;
/// then this machine lets go of its shards of the stripes no kept snapshot reads.
/// Snapshots retired before are looked at again: when kept snapshots read fewer of their
/// stripes than their record keeps, a new record (later `retired`) keeps only those.
/// Sending the records to the tracker is the caller's (they wait in the store).
pub fn forget(
    store: &Store,
    key: &swarmbak_trust::SigningKey,
    policy: &Policy,
    now: i64,
    dry_run: bool,
) -> Result<Forgot, ForgetError> {
    let plan = plan(store, policy, local_offset(now))?;
    // The newest kept snapshot, in the plan's order (time, then nanoseconds: snapshots of
    // one second are told apart by them, not by their info-hashes). The policy always
    // keeps each set's newest, so this is the machine's newest snapshot.
    let newest = plan
        .snapshots
        .iter()
        .rev()
        .find(|f| f.keep)
        .map(|f| InfoHash::from_hex(&f.infohash))
        .transpose()?;
    let Some(newest) = newest else {
        return Ok(Forgot {
            dry_run,
            plan,
            ..Forgot::default()
        });
    };
    let mut todo: Vec<(InfoHash, bool)> = Vec::new();
    for f in plan.forgotten() {
        todo.push((InfoHash::from_hex(&f.infohash)?, false));
    }
    for s in store.retired_snapshots()? {
        todo.push((InfoHash::from_hex(&s.infohash)?, true));
    }
    let mut retired = Vec::new();
    for (ih, before) in todo {
        let layout = layout_of(store, &ih)?;
        let stripes = layout.stripes as u32;
        let mut need = needed_stripes(&plan, &ih);
        // Signed already with exactly this `keep` (a run killed before it let the shards
        // go is finished here).
        let mut signed = false;
        if before {
            // Fewer stripes than the record keeps (never more: kept snapshots read only
            // what was kept, and new ones dedup against them).
            let old = store
                .retirement(&ih)?
                .and_then(|b| swarmbak_trust::Retirement::verify(&b, &key.public()).ok());
            if let Some(old) = old {
                need.retain(|&s| old.keeps(s as u32));
                signed = ranges_of(stripes, &need) == old.keep;
            }
        }
        let keep = ranges_of(stripes, &need);
        let mut r = Retired {
            infohash: ih.to_hex(),
            stripes,
            keep: keep.clone(),
            bytes_freed_here: 0,
            again: before && !signed,
        };
        if !dry_run {
            if !signed {
                let record = swarmbak_trust::Retirement {
                    infohash: ih.0,
                    machine: key.public(),
                    retired: now,
                    newest: newest.0,
                    stripes,
                    keep,
                }
                .sign(key);
                store.set_retirement(&ih, &record)?;
            }
            let drop: BTreeSet<u32> = (0..stripes)
                .filter(|s| !need.contains(&(*s as usize)))
                .collect();
            r.bytes_freed_here = store.drop_stripes(&ih, layout.n(), &drop)?;
        }
        if !signed || r.bytes_freed_here > 0 {
            retired.push(r);
        }
    }
    Ok(Forgot {
        dry_run,
        plan,
        retired,
        sent: None,
    })
}

/// What [`send_retirements`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub sent: usize,
    /// Retirements still waiting (the tracker could not be reached or refused them).
    pub waiting: usize,
    /// The last refusal or failure.
    pub error: Option<String>,
}

/// Sends this machine's retirements the tracker has not taken yet (tracker.md §7.8),
/// oldest first; each taken is marked so (`retired.sent`). An enrolled machine only (the
/// tracker checks the signature against its enrolment). A snapshot not published yet is
/// skipped: it is published first (the `publish pending` job; `seed`).
pub async fn send_retirements(node: &crate::config::Node, timeout: std::time::Duration) -> Sent {
    let mut out = Sent::default();
    if node.config.enrolment.is_none() {
        return out;
    }
    let Some(tr) = node.config.tracker_ref() else {
        return out;
    };
    let store = node.home.store();
    let pending: Vec<InfoHash> = match store.retired_snapshots() {
        Ok(v) => v
            .iter()
            .filter_map(|s| InfoHash::from_hex(&s.infohash).ok())
            .filter(|ih| store.is_published(ih) && !store.retirement_sent(ih).unwrap_or(true))
            .collect(),
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    if pending.is_empty() {
        return out;
    }
    let client = match crate::discovery::tracker_client(&tr) {
        Ok(c) => c.with_retry(swarmbak_tracker::Retry::for_duration(timeout)),
        Err(e) => {
            out.waiting = pending.len();
            out.error = Some(e.to_string());
            return out;
        }
    };
    for ih in pending {
        let record = match store.retirement(&ih) {
            Ok(Some(r)) => r,
            _ => continue,
        };
        match client.retire(&record).await {
            Ok(_) => match store.mark_retirement_sent(&ih, &record) {
                Ok(()) => out.sent += 1,
                Err(e) => {
                    out.waiting += 1;
                    out.error = Some(e.to_string());
                }
            },
            Err(e) => {
                out.waiting += 1;
                out.error = Some(format!("{ih}: {e}"));
            }
        }
    }
    out
}

/// What a holder keeps of an owner's retirement (`store/snapshots/<ih>/retired` of a
/// held snapshot): the record, and when this holder first saw it (its clock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SeenRetirement {
    /// base64url of the signed record.
    record: String,
    first_seen: i64,
}

/// What a holder did about the retirements the tracker lists (swarm.md §16.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HolderEvent {
    /// First seen: its grace period starts.
    Seen { ih: InfoHash, until: i64 },
    /// The grace period is over: the shards of the stripes it lets go are deleted
    /// (`bytes`); `gone`: no stripe stays.
    LetGo {
        ih: InfoHash,
        bytes: u64,
        gone: bool,
    },
    /// Cancelled (or no longer listed) before its grace period ended: nothing is let go.
    Cancelled { ih: InfoHash },
}

/// A holder's step for the retirements listed with the snapshots it holds for other
/// machines (`found`, from the tracker, each checked by discovery: signed by the owner of
/// the verified publish record, naming a later snapshot of it as `newest`). A retirement
/// first seen is kept with the time; once it has stood `grace` since the later of its
/// `retired` time and that moment, the shards of the stripes outside its `keep` are
/// deleted by [`Store::drop_stripes`]'s order (list first). A retirement no longer listed
/// before then is forgotten. Own snapshots are the owner's business (§16.3).
pub fn holder_step(
    store: &Store,
    found: &[crate::discovery::Found],
    now: i64,
    grace: std::time::Duration,
) -> Result<Vec<HolderEvent>, FormatError> {
    let grace = grace.as_secs() as i64;
    let mut events = Vec::new();
    for f in found {
        let ih = f.infohash;
        // Only the metainfo of a snapshot placement does not assign here (swarm.md
        // §3.5): nothing to keep or let go.
        if !store.has(&ih) || store.is_own(&ih) || !store.holds_shards(&ih) {
            continue;
        }
        let seen: Option<SeenRetirement> = store
            .retirement(&ih)?
            .and_then(|b| serde_json::from_slice(&b).ok());
        let Some((ret, bytes)) = &f.retirement else {
            if seen.is_some() && store.dropped_stripes(&ih)?.is_none() {
                store.clear_retirement(&ih)?;
                events.push(HolderEvent::Cancelled { ih });
            }
            continue;
        };
        let layout = layout_of(store, &ih)?;
        if ret.stripes as usize != layout.stripes {
            continue;
        }
        let record = swarmbak_trust::to_b64(bytes);
        let seen = match seen {
            Some(s) if s.record == record => s,
            // New, or replaced by a later record: its grace period starts now.
            _ => {
                let s = SeenRetirement {
                    record,
                    first_seen: now,
                };
                let text =
                    serde_json::to_vec(&s).map_err(|e| FormatError::Invalid(e.to_string()))?;
                store.set_retirement(&ih, &text)?;
                events.push(HolderEvent::Seen {
                    ih,
                    until: s.first_seen.max(ret.retired) + grace,
                });
                continue;
            }
        };
        if now < seen.first_seen.max(ret.retired) + grace {
            continue;
        }
        let drop: BTreeSet<u32> = (0..ret.stripes).filter(|&s| !ret.keeps(s)).collect();
        let done: BTreeSet<u32> = store
            .dropped_stripes(&ih)?
            .unwrap_or_default()
            .into_iter()
            .collect();
        if drop.is_subset(&done) {
            continue;
        }
        let bytes = store.drop_stripes(&ih, layout.n(), &drop)?;
        events.push(HolderEvent::LetGo {
            ih,
            bytes,
            gone: ret.keep.is_empty(),
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarmbak_format::backup::{backup, BackupOptions, NoProgress};
    use swarmbak_format::Home;

    /// A file backed up, then half rewritten, then replaced: keeping only the newest,
    /// the first snapshot keeps the stripes of the half the second still reads while the
    /// second is kept, and nothing once only the third is.
    #[test]
    fn forgotten_snapshots_keep_the_stripes_kept_ones_read() {
        let t = tempfile::tempdir().unwrap();
        let (home, _) = Home::create(&t.path().join("home")).unwrap();
        let tree = t.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        // Incompressible data.
        let mut seed = 7u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 33) as u8
                })
                .collect()
        };
        let half = 24 << 20;
        let mut data = noise(2 * half);
        std::fs::write(tree.join("f"), &data).unwrap();
        let opts = BackupOptions::new(vec![tree.clone()]);
        let first = backup(&home, &opts, &NoProgress).unwrap().infohash;
        data[..half].copy_from_slice(&noise(half));
        std::fs::write(tree.join("f"), &data).unwrap();
        let second = backup(&home, &opts, &NoProgress).unwrap().infohash;
        let store = home.store();
        let p = plan(&store, &Policy::default(), 0).unwrap();
        let by = |p: &Plan, ih: &InfoHash| {
            p.snapshots
                .iter()
                .find(|f| f.infohash == ih.to_hex())
                .cloned()
                .unwrap()
        };
        assert!(by(&p, &second).keep && by(&p, &second).reasons == vec!["newest"]);
        let a = by(&p, &first);
        assert!(!a.keep);
        // The second reads the first's second half: about half its stripes stay.
        assert!(a.stripes_kept > 0 && a.stripes_kept < a.stripes, "{a:?}");
        assert!(a.bytes_freed > 0 && a.bytes_kept > 0, "{a:?}");
        let need = needed_stripes(&p, &first);
        assert_eq!(need.len() as u32, a.stripes_kept);
        assert_eq!(
            *need.iter().next_back().unwrap() as u32,
            a.stripes - 1,
            "{need:?}"
        );
        // Replaced entirely: the third reads nothing of the others.
        std::fs::write(tree.join("f"), noise(2 * half)).unwrap();
        let third = backup(&home, &opts, &NoProgress).unwrap().infohash;
        let p3 = plan(&store, &Policy::default(), 0).unwrap();
        for ih in [&first, &second] {
            let f = by(&p3, ih);
            assert!(!f.keep && f.stripes_kept == 0 && f.bytes_kept == 0, "{f:?}");
        }
        assert!(by(&p3, &third).keep);
        let (freed, kept) = p3.totals();
        assert!(freed > (4 * half) as u64 && kept == 0, "{freed} {kept}");
        // Keeping the last two, the second stays whole and the first keeps what it reads.
        let two = Policy {
            last: Some(2),
            ..Default::default()
        };
        let p2 = plan(&store, &two, 0).unwrap();
        assert!(by(&p2, &second).keep && by(&p2, &second).bytes_freed == 0);
        assert_eq!(by(&p2, &first).stripes_kept, a.stripes_kept);
        // A kept snapshot whose manifest is gone: nothing can be planned.
        std::fs::remove_file(store.snapshot_dir(&third).join("manifest")).unwrap();
        assert!(matches!(
            plan(&store, &Policy::default(), 0),
            Err(RetentionError::NoManifest(ih)) if ih == third
        ));
    }

    /// Two snapshots of the same second, the later with the smaller info-hash: keeping the
    /// last, the earlier's retirement names the later as `newest` (it named itself, taking
    /// the larger info-hash as the newer: a record that never verifies, signed again by
    /// every later forget; seen in `forget.rs` on a fast machine).
    #[test]
    fn snapshots_of_one_second_are_ordered_by_time_not_by_infohash() {
        let t = tempfile::tempdir().unwrap();
        let (home, _) = Home::create(&t.path().join("home")).unwrap();
        let tree = t.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        let opts = BackupOptions::new(vec![tree.clone()]);
        let mut made = Vec::new();
        for i in 0..2u8 {
            std::fs::write(tree.join("f"), [i; 1000]).unwrap();
            made.push(backup(&home, &opts, &NoProgress).unwrap().infohash);
        }
        made.sort_by_key(|ih| std::cmp::Reverse(ih.to_hex()));
        let [older, newer] = [made[0], made[1]];
        let store = home.store();
        for (ih, ns) in [(&older, 1), (&newer, 2)] {
            let p = store.snapshot_dir(ih).join("local.json");
            let mut v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            v["time"] = 1_800_000_000.into();
            v["time_ns"] = ns.into();
            std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
        }
        let key = swarmbak_trust::SigningKey::generate();
        let last = Policy {
            last: Some(1),
            ..Default::default()
        };
        let f = forget(&store, &key, &last, 1_800_000_010, false).unwrap();
        assert_eq!(f.retired.len(), 1, "{f:?}");
        assert_eq!(f.retired[0].infohash, older.to_hex());
        let bytes = store.retirement(&older).unwrap().unwrap();
        let r = swarmbak_trust::Retirement::verify(&bytes, &key.public()).unwrap();
        assert_eq!(r.newest, newer.0);
        // Nothing more to do, nothing signed again.
        let again = forget(&store, &key, &last, 1_800_000_020, false).unwrap();
        assert!(again.retired.is_empty(), "{again:?}");
        assert_eq!(store.retirement(&older).unwrap().unwrap(), bytes);
    }

    /// A holder keeps a retirement for the grace period counted from when it first saw
    /// it, even when the record says it was signed long before (a stolen key backdating
    /// it), then lets go of the stripes outside `keep` only; a retirement no longer
    /// listed before then is forgotten.
    #[test]
    fn holders_wait_the_grace_period_from_first_sight_and_let_go_outside_keep() {
        let t = tempfile::tempdir().unwrap();
        let (owner, _) = Home::create(&t.path().join("owner")).unwrap();
        let (holder, _) = Home::create(&t.path().join("holder")).unwrap();
        let tree = t.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        let mut x = 1u64;
        let data: Vec<u8> = (0..20 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(tree.join("f"), data).unwrap();
        let ih = backup(&owner, &BackupOptions::new(vec![tree]), &NoProgress)
            .unwrap()
            .infohash;
        // The holder has the torrent and every shard (not the owner's local files).
        let (from, to) = (owner.store(), holder.store());
        to.add_torrent(&ih, &from.torrent_bytes(&ih).unwrap())
            .unwrap();
        let layout = layout_of(&from, &ih).unwrap();
        assert!(layout.stripes >= 3, "{layout:?}");
        for p in 0..layout.pieces() {
            to.write_shard(&ih, p, &from.read_shard(&ih, p).unwrap().unwrap())
                .unwrap();
        }
        let key = swarmbak_trust::SigningKey::generate();
        let t0 = 1_800_000_000;
        let record = swarmbak_trust::Retirement {
            infohash: ih.0,
            machine: key.public(),
            // Signed "a year ago".
            retired: t0 - 365 * 86_400,
            newest: [9; 20],
            stripes: layout.stripes as u32,
            keep: vec![(1, 2)],
        };
        let bytes = record.sign(&key);
        let listed = |with: bool| {
            vec![crate::discovery::Found {
                infohash: ih,
                owner: None,
                signed: None,
                retirement: with.then(|| (record.clone(), bytes.clone())),
                retirement_cancelled: false,
                copies: None,
            }]
        };
        let grace = std::time::Duration::from_secs(100);
        let shards = |s: usize| {
            (0..layout.n())
                .filter(|&i| to.read_shard(&ih, layout.piece(s, i)).unwrap().is_some())
                .count()
        };
        let ev = holder_step(&to, &listed(true), t0, grace).unwrap();
        assert_eq!(
            ev,
            vec![HolderEvent::Seen {
                ih,
                until: t0 + 100
            }]
        );
        assert!(holder_step(&to, &listed(true), t0 + 99, grace)
            .unwrap()
            .is_empty());
        assert_eq!(shards(0), layout.n());
        let ev = holder_step(&to, &listed(true), t0 + 100, grace).unwrap();
        let per_stripe = (layout.n() * layout.shard_size) as u64;
        let want = per_stripe * (layout.stripes as u64 - 1);
        assert_eq!(
            ev,
            vec![HolderEvent::LetGo {
                ih,
                bytes: want,
                gone: false
            }]
        );
        assert_eq!((shards(0), shards(1), shards(2)), (0, layout.n(), 0));
        // Once done, nothing more happens.
        assert!(holder_step(&to, &listed(true), t0 + 200, grace)
            .unwrap()
            .is_empty());

        // Another retirement, cancelled before its grace period ended: forgotten, nothing
        // let go.
        std::fs::remove_file(to.snapshot_dir(&ih).join("dropped")).unwrap();
        to.clear_retirement(&ih).unwrap();
        for p in 0..layout.pieces() {
            to.write_shard(&ih, p, &from.read_shard(&ih, p).unwrap().unwrap())
                .unwrap();
        }
        holder_step(&to, &listed(true), t0 + 300, grace).unwrap();
        let ev = holder_step(&to, &listed(false), t0 + 350, grace).unwrap();
        assert_eq!(ev, vec![HolderEvent::Cancelled { ih }]);
        assert!(holder_step(&to, &listed(false), t0 + 1000, grace)
            .unwrap()
            .is_empty());
        assert_eq!(shards(0), layout.n());
    }
}
