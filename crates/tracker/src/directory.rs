//! What the running tracker keeps in memory from its database: the enrolled machines by
//! passkey and by key (rebuilt whenever the database changes, so that a revocation
//! written by `swarmbak tracker revoke` counts on the next request), with their
//! certificates for the roster (tracker.md §7.9), and the published snapshots by
//! info-hash.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::client::RosterEntry;
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
    /// The certificate the organisation key signed for it, as enrolled (machines only):
    /// what the roster lists (tracker.md §7.9).
    pub certificate: Option<StoredCertificate>,
    /// Its last successful backup ([`NEVER`]: none known): the later of its latest
    /// successful report's end and its latest published snapshot (as
    /// [`crate::status`] counts it), kept up to date by the running tracker.
    last_success: AtomicI64,
    first_seen: AtomicI64,
    last_seen: AtomicI64,
    /// The address of its latest announce or roster request (for the administrator's
    /// search).
    address: Mutex<Option<IpAddr>>,
    /// The quota its announces give ([`NO_QUOTA`]: none given).
    quota: AtomicU64,
}

/// An enrolled machine's certificate ([`swarmbak_trust::Certificate`], unparsed): its
/// bytes as stored (the roster's order) and their base64url text (what the roster lists),
/// encoded once when the directory is built so that a roster is answered from memory
/// without encoding anything.
#[derive(Debug)]
pub struct StoredCertificate {
    /// The certificate's bytes, as the database holds them.
    pub bytes: Box<[u8]>,
    /// The same bytes in base64url without padding ([`swarmbak_trust::to_b64`]).
    pub b64: Box<str>,
}

impl StoredCertificate {
    fn new(bytes: &[u8]) -> StoredCertificate {
        StoredCertificate {
            bytes: bytes.into(),
            b64: swarmbak_trust::to_b64(bytes).into(),
        }
    }
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

    /// Notes an announce (or another request that counts as the machine being seen, as a
    /// roster request, tracker.md §7.9) at `now` (Unix seconds) from `ip`.
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

    /// When it was last seen (its latest announce or roster request, Unix seconds, the
    /// tracker's clock) by this run of the tracker, if at all.
    pub fn last_seen(&self) -> Option<i64> {
        Some(self.last_seen.load(Ordering::Relaxed)).filter(|&t| t != 0)
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
    /// The machines a roster may list (kind machine, with a certificate, not revoked),
    /// sorted by certificate bytes: a roster only filters them by expiry and presence.
    rosterable: Vec<Arc<Member>>,
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
                certificate: match r.kind {
                    MachineKind::Machine => r.certificate.as_deref().map(StoredCertificate::new),
                    MachineKind::Client => None,
                },
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
            if m.kind == MachineKind::Machine && !m.revoked && m.certificate.is_some() {
                d.rosterable.push(m.clone());
            }
            d.by_passkey.insert(r.passkey.clone(), m);
        }
        d.rosterable
            .sort_by(|a, b| cert_bytes(a).cmp(cert_bytes(b)).then(a.id.cmp(&b.id)));
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

    /// The roster at `now` (tracker.md §7.9): every enrolled machine with a certificate,
    /// not revoked, whose certificate has not expired and that was seen (announced or
    /// asked for the roster) at most `window` seconds before `now`, by certificate bytes.
    /// From memory only: every agent polls it.
    pub fn roster(&self, now: i64, window: u64) -> Vec<RosterEntry> {
        let window = i64::try_from(window).unwrap_or(i64::MAX);
        self.rosterable
            .iter()
            .filter(|m| m.expires.is_none_or(|x| now <= x))
            .filter_map(|m| {
                let seen = m.last_seen()?;
                let cert = m.certificate.as_ref()?;
                (now.saturating_sub(seen) <= window).then(|| RosterEntry {
                    certificate: cert.b64.to_string(),
                    last_seen: seen,
                })
            })
            .collect()
    }

    /// The online spans seen since the last call, one per member seen.
    pub fn take_intervals(&self) -> Vec<OnlineInterval> {
        self.by_passkey
            .values()
            .filter_map(|m| m.take_interval())
            .collect()
    }

    /// What this run saw of each member: its last announce (or roster request) and
    /// address.
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

/// A member's certificate bytes (none: empty), the roster's order.
fn cert_bytes(m: &Member) -> &[u8] {
    m.certificate.as_ref().map_or(&[], |c| &c.bytes)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, kind: MachineKind, certificate: Option<&[u8]>) -> MachineRow {
        MachineRow {
            id,
            kind,
            key: (kind == MachineKind::Machine).then_some([id as u8; 32]),
            age_recipient: None,
            name: format!("m{id}"),
            user: None,
            vip: false,
            domain: None,
            passkey: format!("{id:032x}"),
            certificate: certificate.map(<[u8]>::to_vec),
            enrolled: 0,
            expires: None,
            revoked: None,
            revocation: None,
            schedule: MachineSchedule::default(),
        }
    }

    /// The roster lists machines with a certificate, not revoked, not expired, seen
    /// within the window, by certificate bytes (not by their base64url text: `-` and `_`
    /// sort before letters as text, after them as values); a rebuild keeps who was seen.
    #[test]
    fn roster() {
        let now = 1_763_900_000;
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut expired = row(4, MachineKind::Machine, Some(&[4]));
        expired.expires = Some(now - 1);
        let mut revoked = row(3, MachineKind::Machine, Some(&[3]));
        revoked.revoked = Some(now - 5);
        let rows = vec![
            row(1, MachineKind::Machine, Some(&[0xfb])), // "-w" as text
            row(2, MachineKind::Machine, Some(&[0x00])), // "AA"
            revoked,
            expired,
            row(5, MachineKind::Client, None),
            row(6, MachineKind::Machine, Some(&[6])), // never seen
            row(7, MachineKind::Machine, Some(&[7])), // seen too long ago
            row(8, MachineKind::Machine, None),       // no certificate
        ];
        let d = Directory::build(&rows, &Directory::default());
        for id in [1, 2, 3, 4, 5, 8] {
            d.by_passkey(&format!("{id:032x}"))
                .unwrap()
                .seen(now - 10, ip);
        }
        d.by_passkey(&format!("{:032x}", 7))
            .unwrap()
            .seen(now - 301, ip);
        let entry = |b: &[u8]| RosterEntry {
            certificate: swarmbak_trust::to_b64(b),
            last_seen: now - 10,
        };
        let want = vec![entry(&[0x00]), entry(&[0xfb])];
        assert_eq!(d.roster(now, 300), want);
        assert!(
            want[1].certificate < want[0].certificate,
            "text order differs"
        );
        // The window's edge is in: seen exactly `window` seconds ago.
        assert_eq!(d.roster(now, 301).len(), 3);
        assert_eq!(d.roster(now, 9), []);
        // A rebuild (the database changed) keeps what was seen.
        let d = Directory::build(&rows, &d);
        assert_eq!(d.roster(now, 300), want);
    }
}
