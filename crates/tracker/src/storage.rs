//! What the tracker keeps, behind a small trait so that a server database can stand in
//! for the embedded one when several tracker instances share a state
//! (protocol-spec/tracker.md §8). The embedded implementation is [`crate::sqlite`].
//!
//! Every method that answers a client's request for a change (enrol, publish, revoke)
//! is durable when it returns `Ok`; [`Storage::add_online`] need not be (it is batched
//! off the announce path).

use std::fmt;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The disk (or the database's size limit) is full: nothing was written; retry once
    /// space is freed.
    #[error("the tracker's disk is full: nothing was written; free space in the data directory and retry")]
    Full,
    /// Another process holds the database's write lock for too long.
    #[error("the tracker's database is busy: retry")]
    Busy,
    /// The stored data is not what this version understands (a newer schema, a corrupt file).
    #[error("tracker database: {0}")]
    Corrupt(String),
    /// Anything else the database reported.
    #[error("tracker database: {0}")]
    Other(String),
}

/// What a machine row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineKind {
    /// A swarmbak machine: it has a signing key and a certificate.
    Machine,
    /// A standard BitTorrent client (libtorrent, transmission) with a passkey only.
    Client,
}

/// An enrolled machine or client.
#[derive(Clone, PartialEq, Eq)]
pub struct MachineRow {
    /// The database's id for it (stable).
    pub id: i64,
    /// Machine or client.
    pub kind: MachineKind,
    /// The machine's ed25519 public key (`None` for a client).
    pub key: Option<[u8; 32]>,
    /// Its age recipient (`age1…`; `None` for a client).
    pub age_recipient: Option<String>,
    /// The enrolled name (unique among machines not revoked).
    pub name: String,
    /// The person using it.
    pub user: Option<String>,
    /// A VIP machine (listed first by the administrator's reports).
    pub vip: bool,
    /// Where it is, `SITE/ROOM`.
    pub domain: Option<String>,
    /// Its passkey (32 lowercase hex digits), in announce paths.
    pub passkey: String,
    /// The certificate the organisation key signed for it (`None` for a client).
    pub certificate: Option<Vec<u8>>,
    /// When it enrolled, Unix seconds.
    pub enrolled: i64,
    /// When its certificate expires, Unix seconds (`None`: never).
    pub expires: Option<i64>,
    /// When it was revoked, Unix seconds.
    pub revoked: Option<i64>,
    /// The signed revocation.
    pub revocation: Option<Vec<u8>>,
    /// What the administrator set for its scheduled backups (tracker.md §7.7).
    pub schedule: MachineSchedule,
}

/// What the administrator set for one machine's scheduled backups (tracker.md §7.7);
/// every field `None` by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineSchedule {
    /// Its backup interval in seconds (`None`: not set for this machine: the VIP or the
    /// organisation's default applies).
    pub every: Option<u64>,
    /// May the machine's own interval win (`None`: the organisation's default)?
    pub may_override: Option<bool>,
    /// When an administrator asked it to back up now, Unix seconds (`None`: never).
    pub requested: Option<i64>,
}

/// The organisation's schedule settings (the `settings` table's `schedule.*` keys,
/// tracker.md §7.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrgSchedule {
    /// `schedule.every`: every machine's interval in seconds (`None`: not set).
    pub every: Option<u64>,
    /// `schedule.vip_every`: VIP machines' interval in seconds (`None`: not set).
    pub vip_every: Option<u64>,
    /// `schedule.machine_may_override`: may a machine's own interval win (default true)?
    pub machine_may_override: bool,
}

impl Default for OrgSchedule {
    fn default() -> OrgSchedule {
        OrgSchedule {
            every: None,
            vip_every: None,
            machine_may_override: true,
        }
    }
}

impl fmt::Debug for MachineRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the passkey: it is a secret.
        f.debug_struct("MachineRow")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("key", &self.key.map(hex::encode))
            .field("name", &self.name)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// A machine to insert (the id is the database's).
#[derive(Clone)]
pub struct NewMachine {
    /// Machine or client.
    pub kind: MachineKind,
    /// See [`MachineRow`].
    pub key: Option<[u8; 32]>,
    /// See [`MachineRow`].
    pub age_recipient: Option<String>,
    /// See [`MachineRow`].
    pub name: String,
    /// See [`MachineRow`].
    pub user: Option<String>,
    /// See [`MachineRow`].
    pub vip: bool,
    /// See [`MachineRow`].
    pub domain: Option<String>,
    /// See [`MachineRow`].
    pub passkey: String,
    /// See [`MachineRow`].
    pub certificate: Option<Vec<u8>>,
    /// See [`MachineRow`].
    pub enrolled: i64,
    /// See [`MachineRow`].
    pub expires: Option<i64>,
}

/// An enrolment waiting for its machine: what `swarmbak tracker enroll` wrote. Only a
/// hash of the token's secret is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// SHA-256 of the token's secret.
    pub token_hash: [u8; 32],
    /// The name the machine will have.
    pub name: String,
    /// See [`MachineRow`].
    pub user: Option<String>,
    /// See [`MachineRow`].
    pub vip: bool,
    /// See [`MachineRow`].
    pub domain: Option<String>,
    /// The certificate's lifetime in days (`None`: it does not expire).
    pub cert_days: Option<u32>,
    /// When the token was made, Unix seconds.
    pub created: i64,
    /// The token is refused after this time, Unix seconds.
    pub valid_until: i64,
}

/// What [`Storage::redeem`] did.
#[derive(Debug)]
// Made once per enrolment and matched at once: boxing the row would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Redeemed {
    /// The machine is enrolled (the token is used up, in the same transaction).
    Enrolled(MachineRow),
    /// No such token, or it was used, or it expired.
    UnknownToken,
    /// A machine not revoked already has the token's name.
    NameTaken,
    /// `make` refused (its message).
    Refused(String),
}

/// One published snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    /// The torrent's info-hash.
    pub infohash: [u8; 20],
    /// The owner's machine key as text: lowercase hex of the ed25519 key for enrolled
    /// machines; whatever an open tracker was given (an age recipient) otherwise.
    pub machine_key: String,
    /// The owner's name at publish.
    pub machine_name: String,
    /// When it was published, Unix seconds.
    pub published: i64,
    /// The torrent's total length (all shards).
    pub total_length: u64,
    /// The encrypted payload inside the data shards.
    pub payload_length: u64,
    /// The torrent's `name`.
    pub name: String,
    /// The snapshot's target copy count (from its signed record; 0 when unknown).
    pub copies: u32,
    /// The owner's signed publish record (`None` on an open tracker or from a v1 import).
    pub record: Option<Vec<u8>>,
    /// The owner's certificate at publish.
    pub certificate: Option<Vec<u8>>,
}

/// What [`Storage::publish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Stored now.
    New(SnapshotRow),
    /// It was stored before (the stored row; nothing changed unless the stored metainfo
    /// did not match its info-hash, in which case `torrent` replaced it).
    Existing(SnapshotRow),
}

/// A span of time a machine was seen online (announcing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnlineInterval {
    /// [`MachineRow::id`].
    pub machine: i64,
    /// Unix seconds.
    pub start: i64,
    /// Unix seconds.
    pub end: i64,
}

/// One backup attempt as stored: the fields of the machine's signed report
/// (trust.md §9) and the report itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    /// [`MachineRow::id`] of the reporting machine.
    pub machine: i64,
    /// The report's random id: a report stored twice counts once.
    pub attempt: [u8; 16],
    /// Unix seconds (the machine's clock).
    pub started: i64,
    /// Unix seconds.
    pub ended: i64,
    /// Bytes and files read.
    pub bytes: u64,
    /// Files read.
    pub files: u64,
    /// Success: the snapshot's info-hash. Failure: the error text.
    pub outcome: Result<[u8; 20], String>,
    /// The signed report, as received.
    pub report: Vec<u8>,
}

/// One backup attempt, as a machine's status needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Unix seconds (the machine's clock).
    pub started: i64,
    /// Unix seconds.
    pub ended: i64,
    /// Bytes read.
    pub bytes: u64,
    /// Files read.
    pub files: u64,
    /// The error text of a failure (`None`: it succeeded).
    pub error: Option<String>,
}

/// What the database knows of one machine's activity (tracker.md §10.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity {
    /// The end of its latest online span written.
    pub last_online: Option<i64>,
    /// Its latest report (the latest start).
    pub last_attempt: Option<Attempt>,
    /// Its latest successful report.
    pub last_success: Option<Attempt>,
}

/// One line of the audit log: an action that changed the tracker's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Its id (increasing).
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Who: `admin-token`, `session:<id prefix>`, `cli`.
    pub actor: String,
    /// From where (an address, or `local` for the command line).
    pub from: String,
    /// What: `revoke`, `enroll`, `ack-alert`, `rotate-admin-token`, `sign-in`, ...
    pub action: String,
    /// On what (a machine's name, an alert's id).
    pub target: String,
    /// Anything else worth keeping.
    pub detail: String,
}

/// An alert: a machine overdue (tracker.md §10.4). At most one is open per machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRow {
    /// Its id.
    pub id: i64,
    /// [`MachineRow::id`].
    pub machine: i64,
    /// `vip_overdue` or `overdue`.
    pub kind: String,
    /// When it was raised, Unix seconds.
    pub raised: i64,
    /// When it was last notified (log line, webhook).
    pub notified: i64,
    /// When an administrator acknowledged it (no more repeats).
    pub acked: Option<i64>,
    /// Who acknowledged it.
    pub acked_by: Option<String>,
    /// When the machine was backed up again (the back-to-OK notice).
    pub cleared: Option<i64>,
}

/// A snapshot's retirement as stored (tracker.md §7.8): the owner's signed record
/// (trust.md §12) and what the tracker and its administrator did with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetirementRow {
    /// The snapshot retired (a published one).
    pub infohash: [u8; 20],
    /// [`MachineRow::id`] of its owner (the signer).
    pub machine: i64,
    /// The signed record, as received.
    pub record: Vec<u8>,
    /// The record's `retired` (the owner's clock), Unix seconds.
    pub retired: i64,
    /// When the tracker took it (its clock), Unix seconds.
    pub received: i64,
    /// When the administrator cancelled it, Unix seconds (`None`: it stands).
    pub cancelled: Option<i64>,
    /// Who cancelled it (an audit actor: `cli`, `admin-token`, `session:…`).
    pub cancelled_by: Option<String>,
}

/// What [`Storage::retire`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retired {
    /// Stored now: the snapshot had no retirement (`false`), or this one replaced an
    /// earlier one (`true`).
    Stored(bool),
    /// The very same record is stored already: nothing changed.
    Same,
    /// A retirement with an equal or later `retired` is stored: nothing changed.
    NotLater(RetirementRow),
    /// The stored retirement was cancelled by the administrator: nothing changed.
    Cancelled(RetirementRow),
}

/// The tracker's persistent state. Blocking calls: the server makes them from
/// `spawn_blocking` or its writer thread, never on the announce path.
pub trait Storage: Send {
    /// A setting (`public_url`, `recovery_recipients`, ...).
    fn setting(&mut self, key: &str) -> Result<Option<String>, StorageError>;
    /// Sets a setting, durably.
    fn set_setting(&mut self, key: &str, value: &str) -> Result<(), StorageError>;

    /// Stores an enrolment token's hash and what the machine will be.
    fn add_pending(&mut self, p: &Pending) -> Result<(), StorageError>;
    /// In one transaction: finds the unused, unexpired token `token_hash`, checks that no
    /// machine not revoked has its name, asks `make` for the machine row (it signs the
    /// certificate), inserts it and marks the token used.
    fn redeem(
        &mut self,
        token_hash: &[u8; 32],
        now: i64,
        make: &mut dyn FnMut(&Pending) -> Result<NewMachine, String>,
    ) -> Result<Redeemed, StorageError>;
    /// Inserts a machine directly (clients, and `enroll --client`); `NameTaken` rules as
    /// for [`Storage::redeem`] are the caller's (see [`Storage::machines`]).
    fn add_machine(&mut self, m: &NewMachine) -> Result<MachineRow, StorageError>;
    /// Every machine and client, revoked ones included, in enrolment order.
    fn machines(&mut self) -> Result<Vec<MachineRow>, StorageError>;
    /// Marks machine `id` revoked at `at` with its signed revocation.
    fn revoke(&mut self, id: i64, at: i64, revocation: &[u8]) -> Result<(), StorageError>;
    /// Replaces machine `id`'s schedule fields, durably (a `Corrupt` error when there is
    /// no such machine).
    fn set_machine_schedule(&mut self, id: i64, s: &MachineSchedule) -> Result<(), StorageError>;

    /// The organisation's schedule settings (defaults for those not stored).
    fn org_schedule(&mut self) -> Result<OrgSchedule, StorageError>;
    /// Stores the organisation's schedule settings in one transaction, durably (a `None`
    /// removes its key).
    fn set_org_schedule(&mut self, s: &OrgSchedule) -> Result<(), StorageError>;

    /// Stores a snapshot and its metainfo, unless its info-hash is stored already.
    fn publish(&mut self, row: &SnapshotRow, torrent: &[u8]) -> Result<Published, StorageError>;
    /// Every snapshot, in publish order.
    fn snapshots(&mut self) -> Result<Vec<SnapshotRow>, StorageError>;
    /// A snapshot's metainfo as published.
    fn metainfo(&mut self, infohash: &[u8; 20]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Appends online intervals (not necessarily durable at once).
    fn add_online(&mut self, intervals: &[OnlineInterval]) -> Result<(), StorageError>;
    /// A machine's online intervals that end at or after `since`, oldest first.
    fn online(&mut self, machine: i64, since: i64) -> Result<Vec<OnlineInterval>, StorageError>;

    /// Stores a backup report durably before it returns; `false` when the machine's
    /// report with that `attempt` id is stored already (nothing changes).
    fn add_report(&mut self, r: &ReportRow) -> Result<bool, StorageError>;
    /// A machine's reports, the latest start first, at most `limit`.
    fn reports(&mut self, machine: i64, limit: usize) -> Result<Vec<ReportRow>, StorageError>;

    /// Stores a snapshot's retirement durably before it returns, in one transaction
    /// with the rules of tracker.md §7.8: a new one, or one with a later `retired` than
    /// the stored one (which it replaces); never over a cancelled one.
    fn retire(&mut self, r: &RetirementRow) -> Result<Retired, StorageError>;
    /// Every stored retirement, cancelled ones included, in the order received.
    fn retirements(&mut self) -> Result<Vec<RetirementRow>, StorageError>;
    /// Cancels the standing retirement of `infohash` at `at` by `by`, durably; `false`
    /// when there is none (none stored, or cancelled already).
    fn cancel_retirement(
        &mut self,
        infohash: &[u8; 20],
        at: i64,
        by: &str,
    ) -> Result<bool, StorageError>;

    /// Every machine's activity, by [`MachineRow::id`] (machines with none are left out).
    fn activity(&mut self) -> Result<std::collections::HashMap<i64, Activity>, StorageError>;

    /// Appends a line to the audit log, durably.
    fn audit(&mut self, row: &AuditRow) -> Result<(), StorageError>;
    /// The latest audit lines, newest first, at most `limit`.
    fn audit_log(&mut self, limit: usize) -> Result<Vec<AuditRow>, StorageError>;

    /// Opens an alert for `machine` raised (and notified) at `at`; `None` when one is
    /// open already.
    fn raise_alert(
        &mut self,
        machine: i64,
        kind: &str,
        at: i64,
    ) -> Result<Option<AlertRow>, StorageError>;
    /// Records that alert `id` was notified again at `at` (and its kind now).
    fn alert_notified(&mut self, id: i64, kind: &str, at: i64) -> Result<(), StorageError>;
    /// Acknowledges an open alert; `false` when there is no such open alert.
    fn ack_alert(&mut self, id: i64, at: i64, by: &str) -> Result<bool, StorageError>;
    /// Closes alert `id` at `at`.
    fn clear_alert(&mut self, id: i64, at: i64) -> Result<(), StorageError>;
    /// The open alerts, and (when `closed_since` is given) those cleared since then,
    /// newest first.
    fn alerts(&mut self, closed_since: Option<i64>) -> Result<Vec<AlertRow>, StorageError>;

    /// Changes whenever another connection (another process) committed a write: the
    /// running tracker polls it to see what `swarmbak tracker revoke` wrote.
    fn data_version(&mut self) -> Result<i64, StorageError>;
}
