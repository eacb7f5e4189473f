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

fn layout_of(store: &Store, ih: &InfoHash) -> Result<Layout, FormatError> {
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
        Ok(_lock) => forget_node(node, policy, dry_run),
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
    let newest = plan
        .snapshots
        .iter()
        .max_by_key(|f| (f.time, f.infohash.clone()))
        .map(|f| InfoHash::from_hex(&f.infohash))
        .transpose()?;
    let Some(newest) = newest else {
        return Ok(Forgot {
            dry_run,
            plan,
            retired: Vec::new(),
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
    })
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
}
