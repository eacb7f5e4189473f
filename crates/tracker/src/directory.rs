//! What the running tracker keeps in memory from its database: the enrolled machines by
//! passkey and by key (rebuilt whenever the database changes, so that a revocation
//! written by `swarmbak tracker revoke` counts on the next request), and the published
//! snapshots by info-hash.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::proto::InfoHash;
use crate::storage::{
    MachineKind, MachineRow, MachineSchedule, OnlineInterval, RetirementRow, SnapshotRow,
};
use crate::store::{MachineRecord, SnapshotRecord};

/// An enrolled machine or client, as the announce path sees it.
#[derive(Debug)]
pub struct Member {
    /// Its database id (the owner of its peer entries).
    pub id: i64,
    /// Machine or client.
    pub kind: MachineKind,
    /// Lowercase hex of its signing key (machines only): how its peers are marked online.
    pub key_hex: Option<Box<str>>,
    /// Its enrolled name.
    pub name: String,
    /// Revoked: its passkey no longer works.
    pub revoked: bool,
    /// When its certificate expires (Unix seconds): its passkey stops working then.
    pub expires: Option<i64>,
    /// A VIP machine.
    pub vip: bool,
    /// What the administrator set for its scheduled backups.
    pub schedule: MachineSchedule,
    /// Its last successful backup ([`NEVER`]: none known): the later of its latest
    /// successful report's end and its latest published snapshot (as
    /// [`crate::status`] counts it), kept up to date by the running tracker.
    last_success: AtomicI64,
    first_seen: AtomicI64,
    last_seen: AtomicI64,
    /// The address of its latest announce (for the administrator's search).
    address: Mutex<Option<IpAddr>>,
    /// The quota its announces give ([`NO_QUOTA`]: none given).
    quota: AtomicU64,
}

/// [`Member`]'s quota when its announces give none.
const NO_QUOTA: u64 = u64::MAX;

/// [`Member`]'s last success when it never backed up.
const NEVER: i64 = i64::MIN;

impl Member {
    /// Notes a successful backup that ended (or was published) at `at`.
    pub fn backed_up(&self, at: i64) {
        self.last_success.fetch_max(at, Ordering::Relaxed);
    }

    /// Its last successful backup known, Unix seconds.
    pub fn last_success(&self) -> Option<i64> {
        Some(self.last_success.load(Ordering::Relaxed)).filter(|&t| t != NEVER)
    }

    /// Notes the quota an announce gives (tracker.md §1 `quota`).
    pub fn set_quota(&self, quota: Option<u64>) {
        if let Some(q) = quota {
            self.quota.store(q.min(NO_QUOTA - 1), Ordering::Relaxed);
        }
    }

    /// Notes an announce at `now` (Unix seconds) from `ip`.
    pub fn seen(&self, now: i64, ip: IpAddr) {
        let _ = self
            .first_seen
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        self.last_seen.store(now, Ordering::Relaxed);
        let mut a = self.address.lock().unwrap_or_else(|p| p.into_inner());
        if *a != Some(ip) {
            *a = Some(ip);
        }
    }

    fn address(&self) -> Option<IpAddr> {
        *self.address.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The span seen since the last call, if any.
    fn take_interval(&self) -> Option<OnlineInterval> {
        let start = self.first_seen.swap(0, Ordering::Relaxed);
        (start != 0).then(|| OnlineInterval {
            machine: self.id,
            start,
            end: self.last_seen.load(Ordering::Relaxed).max(start),
        })
    }
}

/// The enrolled machines.
#[derive(Debug, Default)]
pub struct Directory {
    by_passkey: HashMap<String, Arc<Member>>,
    by_key: HashMap<[u8; 32], Arc<Member>>,
}

impl Directory {
    /// Builds the directory from the database's rows, keeping the online spans of the
    /// members `old` had.
    pub fn build(rows: &[MachineRow], old: &Directory) -> Directory {
        let mut d = Directory::default();
        for r in rows {
            let prev = old.by_passkey.get(&r.passkey);
            let m = Arc::new(Member {
                id: r.id,
                kind: r.kind,
                key_hex: r.key.map(|k| hex::encode(k).into()),
                name: r.name.clone(),
                revoked: r.revoked.is_some(),
                expires: r.expires,
                vip: r.vip,
                schedule: r.schedule,
                last_success: AtomicI64::new(
                    prev.map_or(NEVER, |p| p.last_success.load(Ordering::Relaxed)),
                ),
                first_seen: AtomicI64::new(
                    prev.map_or(0, |p| p.first_seen.load(Ordering::Relaxed)),
                ),
                last_seen: AtomicI64::new(prev.map_or(0, |p| p.last_seen.load(Ordering::Relaxed))),
                address: Mutex::new(prev.and_then(|p| p.address())),
                quota: AtomicU64::new(prev.map_or(NO_QUOTA, |p| p.quota.load(Ordering::Relaxed))),
            });
            if let Some(k) = r.key {
                // The active row wins over a revoked one with the same key.
                if !m.revoked || !d.by_key.contains_key(&k) {
                    d.by_key.insert(k, m.clone());
                }
            }
            d.by_passkey.insert(r.passkey.clone(), m);
        }
        d
    }

    /// The member whose passkey this is.
    pub fn by_passkey(&self, passkey: &str) -> Option<&Arc<Member>> {
        self.by_passkey.get(passkey)
    }

    /// The machine with this signing key.
    pub fn by_key(&self, key: &[u8; 32]) -> Option<&Arc<Member>> {
        self.by_key.get(key)
    }

    /// The online spans seen since the last call, one per member seen.
    pub fn take_intervals(&self) -> Vec<OnlineInterval> {
        self.by_passkey
            .values()
            .filter_map(|m| m.take_interval())
            .collect()
    }

    /// What this run saw of each member: its last announce and address.
    pub fn live(&self) -> HashMap<i64, crate::status::Live> {
        self.by_passkey
            .values()
            .filter_map(|m| {
                let t = m.last_seen.load(Ordering::Relaxed);
                (t != 0).then(|| {
                    (
                        m.id,
                        crate::status::Live {
                            last_seen: Some(t),
                            address: m.address().map(|a| a.to_string()),
                            held: 0,
                            quota: Some(m.quota.load(Ordering::Relaxed)).filter(|&q| q != NO_QUOTA),
                        },
                    )
                })
            })
            .collect()
    }

    /// How many machines (not clients) are enrolled and not revoked.
    pub fn active_machines(&self) -> usize {
        self.by_passkey
            .values()
            .filter(|m| m.kind == MachineKind::Machine && !m.revoked)
            .count()
    }
}

/// The published snapshots, in publish order, with their retirements (tracker.md §7.8).
#[derive(Debug, Default)]
pub struct Snapshots {
    rows: Vec<SnapshotRow>,
    by_ih: HashMap<InfoHash, usize>,
    retired: HashMap<InfoHash, Retirement>,
}

/// What a listing says of a snapshot's retirement.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Retirement {
    /// The signed record, base64url.
    record: String,
    /// When the tracker took it.
    received: i64,
    /// When the administrator cancelled it.
    cancelled: Option<i64>,
}

impl From<&SnapshotRow> for SnapshotRecord {
    fn from(r: &SnapshotRow) -> SnapshotRecord {
        SnapshotRecord {
            infohash: hex::encode(r.infohash),
            machine_key: r.machine_key.clone(),
            machine_name: r.machine_name.clone(),
            published: r.published,
            total_length: r.total_length,
            payload_length: r.payload_length,
            name: r.name.clone(),
            copies: r.copies,
            record: r.record.as_deref().map(swarmbak_trust::to_b64),
            certificate: r.certificate.as_deref().map(swarmbak_trust::to_b64),
            retirement: None,
            retired_at: None,
            retirement_cancelled: None,
        }
    }
}

impl Snapshots {
    /// From the database's rows (publish order).
    pub fn new(rows: Vec<SnapshotRow>) -> Snapshots {
        let mut s = Snapshots::default();
        for r in rows {
            s.push(r);
        }
        s
    }

    /// Adds a row (a new publish).
    pub fn push(&mut self, r: SnapshotRow) {
        let ih = InfoHash(r.infohash);
        if !self.by_ih.contains_key(&ih) {
            self.by_ih.insert(ih, self.rows.len());
            self.rows.push(r);
        }
    }

    /// The row of `ih`.
    pub fn get(&self, ih: &InfoHash) -> Option<&SnapshotRow> {
        self.by_ih.get(ih).map(|&i| &self.rows[i])
    }

    /// Notes a retirement as stored (new, replaced or cancelled).
    pub fn set_retirement(&mut self, r: &RetirementRow) {
        self.retired.insert(
            InfoHash(r.infohash),
            Retirement {
                record: swarmbak_trust::to_b64(&r.record),
                received: r.received,
                cancelled: r.cancelled,
            },
        );
    }

    /// Replaces every retirement with `rows` (what the database holds).
    pub fn set_retirements(&mut self, rows: &[RetirementRow]) {
        self.retired.clear();
        for r in rows {
            self.set_retirement(r);
        }
    }

    /// The listing of `ih` (tracker.md §3), its retirement included.
    pub fn record(&self, ih: &InfoHash) -> Option<SnapshotRecord> {
        self.get(ih).map(|r| self.record_of(r))
    }

    fn record_of(&self, r: &SnapshotRow) -> SnapshotRecord {
        let mut rec = SnapshotRecord::from(r);
        if let Some(t) = self.retired.get(&InfoHash(r.infohash)) {
            match t.cancelled {
                Some(at) => rec.retirement_cancelled = Some(at),
                None => {
                    rec.retirement = Some(t.record.clone());
                    rec.retired_at = Some(t.received);
                }
            }
        }
        rec
    }

    /// Where `ih` stands in the order of §3's listing (by `published`, then publish
    /// order): a larger value is newer.
    pub fn age_rank(&self, ih: &InfoHash) -> Option<(i64, usize)> {
        self.by_ih.get(ih).map(|&i| (self.rows[i].published, i))
    }

    /// The newest snapshot published under `machine_key` (as §3 lists them).
    pub fn newest_of(&self, machine_key: &str) -> Option<InfoHash> {
        self.rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.machine_key == machine_key)
            .max_by_key(|(i, r)| (r.published, *i))
            .map(|(_, r)| InfoHash(r.infohash))
    }

    /// Every row, in publish order.
    pub fn rows(&self) -> &[SnapshotRow] {
        &self.rows
    }

    /// The snapshots of the machine whose name or key is `machine` (all when `None`),
    /// newest first.
    pub fn list(&self, machine: Option<&str>) -> Vec<SnapshotRecord> {
        let mut v: Vec<(usize, &SnapshotRow)> = self
            .rows
            .iter()
            .enumerate()
            .filter(|(_, r)| machine.is_none_or(|m| r.machine_key == m || r.machine_name == m))
            .collect();
        v.sort_by(|a, b| b.1.published.cmp(&a.1.published).then(b.0.cmp(&a.0)));
        v.into_iter().map(|(_, r)| self.record_of(r)).collect()
    }

    /// How many machines published (what [`Snapshots::machines`] would list, without
    /// building the list).
    pub fn machine_count(&self) -> usize {
        self.rows
            .iter()
            .map(|r| r.machine_key.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// Every machine that published, most recent publish first.
    pub fn machines(&self) -> Vec<MachineRecord> {
        let mut by_key: HashMap<&str, MachineRecord> = HashMap::new();
        for r in &self.rows {
            let m = by_key
                .entry(r.machine_key.as_str())
                .or_insert_with(|| MachineRecord {
                    machine_key: r.machine_key.clone(),
                    machine_name: r.machine_name.clone(),
                    snapshots: 0,
                    last_published: i64::MIN,
                    payload_bytes: 0,
                    online: false,
                });
            m.snapshots += 1;
            m.payload_bytes = m.payload_bytes.saturating_add(r.payload_length);
            if r.published >= m.last_published {
                m.last_published = r.published;
                m.machine_name.clone_from(&r.machine_name);
            }
        }
        let mut v: Vec<MachineRecord> = by_key.into_values().collect();
        v.sort_by(|a, b| {
            b.last_published
                .cmp(&a.last_published)
                .then_with(|| a.machine_key.cmp(&b.machine_key))
        });
        v
    }
}
