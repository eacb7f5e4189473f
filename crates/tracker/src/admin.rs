//! Enrolment and revocation (tracker.md §7): the operations `swarmbak tracker
//! enroll|revoke|machines` run on the data directory, and the tracker runs for
//! `POST /api/v1/enroll` and the admin API, written once over [`Storage`].

use swarmbak_trust::{Certificate, CertificateFields, EnrollRequest, EnrollToken, Revocation};

use crate::org::{new_passkey, Org};
use crate::storage::{
    AuditRow, MachineKind, MachineRow, NewMachine, Pending, Redeemed, RetirementRow, Storage,
    StorageError,
};
use crate::store::check_machine_name;

/// The setting holding the organisation's recovery recipients, one a line.
pub const RECOVERY_SETTING: &str = "recovery_recipients";
/// The setting holding the tracker's base URL as machines reach it.
pub const URL_SETTING: &str = "public_url";
/// The setting holding the SHA-256 (hex) of the tracker's TLS certificate.
pub const TLS_SETTING: &str = "tls_sha256";
/// The setting holding the address the running tracker listens on (for
/// `swarmbak tracker revoke` to ask it to reload).
pub const LISTEN_SETTING: &str = "listen_addr";
/// How long an enrolment token can be used, by default.
pub const TOKEN_DAYS: u32 = 7;

/// Why an enrolment, a revocation or a listing failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The database.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An active machine has the name.
    #[error("a machine named {0:?} is enrolled and not revoked: choose another name, or revoke it first (swarmbak tracker revoke)")]
    NameTaken(String),
    /// A bad name, user or domain.
    #[error("{0}")]
    Invalid(String),
    /// No recovery recipient configured.
    #[error("the organisation has no recovery recipient, so its machines' backups could not be restored without them: start the tracker once with --recovery-recipient AGE_PUBKEY (the public half of the key you keep offline)")]
    NoRecovery,
    /// The tracker's address is unknown.
    #[error("the tracker's address is not known yet: start the tracker once (it records the address it listens on), or pass --url")]
    NoUrl,
    /// No machine with that name or key.
    #[error("no enrolled machine is named or keyed {0:?} (swarmbak tracker machines lists them)")]
    UnknownMachine(String),
    /// The machine is revoked already.
    #[error("{0:?} is revoked already")]
    AlreadyRevoked(String),
    /// The enrolment request does not verify.
    #[error("enrolment request refused: {0}")]
    BadRequest(String),
    /// The snapshot has no retirement standing to cancel.
    #[error("snapshot {0} has no retirement standing at this tracker (swarmbak tracker retirements lists them)")]
    NotRetired(String),
    /// Its retirement was cancelled before.
    #[error("the retirement of snapshot {0} is cancelled already")]
    AlreadyCancelled(String),
    /// The token is unknown, used or expired.
    #[error("the enrolment token is unknown, used or expired: ask the administrator for a new one (swarmbak tracker enroll)")]
    UnknownToken,
}

/// Who does an administrative action, for the audit log (tracker.md §10.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `admin-token`, `session:<8 hex>`, `cli`.
    pub actor: String,
    /// The client's address, or `local`.
    pub from: String,
}

impl Actor {
    /// The command line on the tracker's machine.
    pub fn cli() -> Actor {
        Actor {
            actor: "cli".into(),
            from: "local".into(),
        }
    }
}

/// Appends `action` on `target` by `by` to the audit log, durably.
pub fn audit(
    db: &mut dyn Storage,
    by: &Actor,
    action: &str,
    target: &str,
    detail: &str,
    now: i64,
) -> Result<(), StorageError> {
    db.audit(&AuditRow {
        id: 0,
        at: now,
        actor: by.actor.clone(),
        from: by.from.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail: detail.to_owned(),
    })
}

/// What an enrolment token will make.
#[derive(Debug, Clone, Default)]
pub struct EnrollOptions {
    /// The machine's name.
    pub name: String,
    /// Who uses it.
    pub user: Option<String>,
    /// A VIP machine.
    pub vip: bool,
    /// `SITE/ROOM`.
    pub domain: Option<String>,
    /// The certificate's lifetime in days (`None`: never expires).
    pub cert_days: Option<u32>,
}

fn check_label(what: &str, v: &Option<String>) -> Result<(), AdminError> {
    if let Some(v) = v {
        check_machine_name(v).map_err(|e| AdminError::Invalid(e.replace("machine name", what)))?;
    }
    Ok(())
}

/// The organisation's recovery recipients.
pub fn recovery_recipients(db: &mut dyn Storage) -> Result<Vec<String>, AdminError> {
    Ok(db
        .setting(RECOVERY_SETTING)?
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The announce URL of a passkey: `BASE/<passkey>/announce` (BEP 48: a standard client
/// derives the scrape URL from it).
pub fn announce_url(base: &str, passkey: &str) -> String {
    format!("{}/{passkey}/announce", base.trim_end_matches('/'))
}

fn active_name_taken(db: &mut dyn Storage, name: &str) -> Result<bool, AdminError> {
    Ok(db
        .machines()?
        .iter()
        .any(|m| m.kind == MachineKind::Machine && m.revoked.is_none() && m.name == name))
}

/// The tracker's base URL and TLS pin as recorded (or `url` when given).
pub fn tracker_address(
    db: &mut dyn Storage,
    url: Option<&str>,
) -> Result<(String, Option<[u8; 32]>), AdminError> {
    let url = match url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => db.setting(URL_SETTING)?.ok_or(AdminError::NoUrl)?,
    };
    let tls = if url.starts_with("https://") {
        db.setting(TLS_SETTING)?
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| b.try_into().ok())
    } else {
        None
    };
    Ok((url, tls))
}

/// Makes a one-time enrolment token for a machine (`swarmbak tracker enroll`).
pub fn create_token(
    db: &mut dyn Storage,
    org: &Org,
    url: Option<&str>,
    o: &EnrollOptions,
    by: &Actor,
    now: i64,
) -> Result<String, AdminError> {
    check_machine_name(&o.name).map_err(AdminError::Invalid)?;
    check_label("user", &o.user)?;
    check_label("domain", &o.domain)?;
    if recovery_recipients(db)?.is_empty() {
        return Err(AdminError::NoRecovery);
    }
    if active_name_taken(db, &o.name)? {
        return Err(AdminError::NameTaken(o.name.clone()));
    }
    let (url, tls) = tracker_address(db, url)?;
    let secret: [u8; 32] = rand::random();
    db.add_pending(&Pending {
        token_hash: EnrollToken::secret_hash(&secret),
        name: o.name.clone(),
        user: o.user.clone(),
        vip: o.vip,
        domain: o.domain.clone(),
        cert_days: o.cert_days,
        created: now,
        valid_until: now + i64::from(TOKEN_DAYS) * 86_400,
    })?;
    let detail = format!(
        "token for user {:?}{}",
        o.user.as_deref().unwrap_or(""),
        if o.vip { ", VIP" } else { "" }
    );
    audit(db, by, "enroll", &o.name, &detail, now)?;
    Ok(EnrollToken {
        url,
        org: org.public(),
        secret,
        tls,
    }
    .to_text())
}

/// Enrols a standard BitTorrent client: a passkey and no machine key. Returns the row and
/// the client's announce URL.
pub fn create_client(
    db: &mut dyn Storage,
    url: Option<&str>,
    name: &str,
    by: &Actor,
    now: i64,
) -> Result<(MachineRow, String), AdminError> {
    check_machine_name(name).map_err(AdminError::Invalid)?;
    let (base, _) = tracker_address(db, url)?;
    let row = db.add_machine(&NewMachine {
        kind: MachineKind::Client,
        key: None,
        age_recipient: None,
        name: name.to_owned(),
        user: None,
        vip: false,
        domain: None,
        passkey: new_passkey(),
        certificate: None,
        enrolled: now,
        expires: None,
    })?;
    audit(db, by, "enroll", name, "standard BitTorrent client", now)?;
    let url = announce_url(&base, &row.passkey);
    Ok((row, url))
}

/// A machine enrolled by [`redeem`].
#[derive(Debug)]
pub struct Enrolled {
    /// Its row (passkey included).
    pub row: MachineRow,
    /// Its certificate.
    pub certificate: Vec<u8>,
    /// The organisation's recovery recipients.
    pub recovery_recipients: Vec<String>,
}

/// Enrols the machine that sent the signed `request` (`POST /api/v1/enroll`).
pub fn redeem(
    db: &mut dyn Storage,
    org: &Org,
    request: &[u8],
    now: i64,
) -> Result<Enrolled, AdminError> {
    let req = EnrollRequest::verify(request).map_err(|e| AdminError::BadRequest(e.to_string()))?;
    if !req.age_recipient.starts_with("age1") || req.age_recipient.len() > 256 {
        return Err(AdminError::BadRequest(
            "the age recipient must be an age1… public key".into(),
        ));
    }
    let recovery = recovery_recipients(db)?;
    if recovery.is_empty() {
        return Err(AdminError::NoRecovery);
    }
    if db
        .machines()?
        .iter()
        .any(|m| m.key == Some(*req.machine.as_bytes()) && m.revoked.is_none())
    {
        return Err(AdminError::BadRequest(
            "this machine key is enrolled already".into(),
        ));
    }
    let mut certificate = Vec::new();
    let outcome = db.redeem(&EnrollToken::secret_hash(&req.secret), now, &mut |p| {
        let expires = p.cert_days.map(|d| now + i64::from(d) * 86_400);
        certificate = Certificate::issue(
            &org.key,
            &CertificateFields {
                machine: req.machine,
                age_recipient: req.age_recipient.clone(),
                name: p.name.clone(),
                user: p.user.clone(),
                vip: p.vip,
                domain: p.domain.clone(),
                issued: now,
                expires,
            },
        );
        Ok(NewMachine {
            kind: MachineKind::Machine,
            key: Some(*req.machine.as_bytes()),
            age_recipient: Some(req.age_recipient.clone()),
            name: p.name.clone(),
            user: p.user.clone(),
            vip: p.vip,
            domain: p.domain.clone(),
            passkey: new_passkey(),
            certificate: Some(certificate.clone()),
            enrolled: now,
            expires,
        })
    })?;
    match outcome {
        Redeemed::Enrolled(row) => Ok(Enrolled {
            row,
            certificate,
            recovery_recipients: recovery,
        }),
        Redeemed::UnknownToken => Err(AdminError::UnknownToken),
        Redeemed::NameTaken => Err(AdminError::NameTaken("the token's name".into())),
        Redeemed::Refused(m) => Err(AdminError::BadRequest(m)),
    }
}

/// Finds the one machine `who` names: an enrolled name (active machines first), a
/// key in hex, or a passkey.
pub fn find(db: &mut dyn Storage, who: &str) -> Result<MachineRow, AdminError> {
    let all = db.machines()?;
    let key = who.to_ascii_lowercase();
    let by_key = all
        .iter()
        .find(|m| m.key.map(hex::encode).as_deref() == Some(key.as_str()) || m.passkey == key);
    if let Some(m) = by_key {
        return Ok(m.clone());
    }
    let mut named: Vec<&MachineRow> = all.iter().filter(|m| m.name == who).collect();
    // The active one, else the latest revoked.
    named.sort_by_key(|m| (m.revoked.is_none(), m.id));
    named
        .last()
        .map(|m| (*m).clone())
        .ok_or_else(|| AdminError::UnknownMachine(who.to_owned()))
}

/// Revokes the machine `who` names (`swarmbak tracker revoke`): its passkey stops working
/// and a signed revocation is stored.
pub fn revoke(
    db: &mut dyn Storage,
    org: &Org,
    who: &str,
    by: &Actor,
    now: i64,
) -> Result<MachineRow, AdminError> {
    let m = find(db, who)?;
    if m.revoked.is_some() {
        return Err(AdminError::AlreadyRevoked(m.name));
    }
    let revocation = match m.key {
        Some(k) => Revocation::issue(&org.key, swarmbak_trust::PublicKey(k), &m.name, now),
        None => Vec::new(),
    };
    db.revoke(m.id, now, &revocation)?;
    audit(db, by, "revoke", &m.name, "", now)?;
    Ok(MachineRow {
        revoked: Some(now),
        revocation: Some(revocation),
        ..m
    })
}

/// A change to a schedule (tracker.md §7.7): for each field, `None` keeps it,
/// `Some(None)` puts it back to its default, `Some(Some(v))` sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScheduleChange {
    /// The backup interval, seconds.
    pub every: Option<Option<u64>>,
    /// May the machine's own interval win?
    pub may_override: Option<Option<bool>>,
    /// Record an administrator's "back up now" (a machine's only).
    pub backup_now: bool,
}

impl ScheduleChange {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        self.every.is_none() && self.may_override.is_none() && !self.backup_now
    }

    /// What it changes, for the audit log: `every 6h, may override no, back up now`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match self.every {
            Some(Some(e)) => parts.push(format!("every {}", swarmbak_core::compact_duration(e))),
            Some(None) => parts.push("every default".to_owned()),
            None => {}
        }
        match self.may_override {
            Some(Some(b)) => parts.push(format!("may override {}", if b { "yes" } else { "no" })),
            Some(None) => parts.push("may override default".to_owned()),
            None => {}
        }
        if self.backup_now {
            parts.push("back up now".to_owned());
        }
        parts.join(", ")
    }

    fn check_every(&self) -> Result<(), AdminError> {
        use crate::schedule::{MAX_EVERY, MIN_EVERY};
        match self.every {
            Some(Some(e)) if !(MIN_EVERY..=MAX_EVERY).contains(&e) => {
                Err(AdminError::Invalid(format!(
                    "a backup interval is between {} and {} days",
                    swarmbak_core::compact_duration(MIN_EVERY),
                    MAX_EVERY / 86_400
                )))
            }
            _ => Ok(()),
        }
    }
}

/// Changes the schedule of the machine `who` names (`swarmbak tracker schedule
/// --machine`), with an audit line; returns its row as changed.
pub fn set_machine_schedule(
    db: &mut dyn Storage,
    who: &str,
    change: &ScheduleChange,
    by: &Actor,
    now: i64,
) -> Result<MachineRow, AdminError> {
    change.check_every()?;
    let mut m = find(db, who)?;
    if m.kind == MachineKind::Client {
        return Err(AdminError::Invalid(format!(
            "{:?} is a standard BitTorrent client: it has no backup schedule",
            m.name
        )));
    }
    if m.revoked.is_some() {
        return Err(AdminError::AlreadyRevoked(m.name));
    }
    if let Some(e) = change.every {
        m.schedule.every = e;
    }
    if let Some(o) = change.may_override {
        m.schedule.may_override = o;
    }
    if change.backup_now {
        m.schedule.requested = Some(now);
    }
    db.set_machine_schedule(m.id, &m.schedule)?;
    audit(db, by, "schedule", &m.name, &change.describe(), now)?;
    Ok(m)
}

/// Changes the organisation's schedule (`vip`: the VIP machines' interval; else the
/// default interval and whether machines may override), with an audit line; returns the
/// settings as changed.
pub fn set_org_schedule(
    db: &mut dyn Storage,
    vip: bool,
    change: &ScheduleChange,
    by: &Actor,
    now: i64,
) -> Result<crate::storage::OrgSchedule, AdminError> {
    change.check_every()?;
    if change.backup_now {
        return Err(AdminError::Invalid(
            "a backup request is for one machine: name it".into(),
        ));
    }
    if vip && change.may_override.is_some() {
        return Err(AdminError::Invalid(
            "whether machines may override is set for the organisation or for one machine, not for VIP machines".into(),
        ));
    }
    let mut s = db.org_schedule()?;
    if let Some(e) = change.every {
        if vip {
            s.vip_every = e;
        } else {
            s.every = e;
        }
    }
    if let Some(o) = change.may_override {
        s.machine_may_override = o.unwrap_or(true);
    }
    db.set_org_schedule(&s)?;
    let target = if vip { "vip" } else { "organisation" };
    audit(db, by, "schedule", target, &change.describe(), now)?;
    Ok(s)
}

/// A stored retirement as the administrator sees it (`swarmbak tracker retirements`,
/// `GET /api/v1/retirements`, tracker.md §7.8, §10.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetirementView {
    /// The row.
    pub row: RetirementRow,
    /// Its machine's enrolled name.
    pub machine: String,
    /// The snapshot's stripes (from the record; 0 when it no longer parses).
    pub stripes: u32,
    /// The stripe ranges `[start, end)` that stay.
    pub keep: Vec<(u32, u32)>,
}

impl RetirementView {
    /// The stripes that stay, as `0-2,7` (inclusive ranges), `none` when none does.
    pub fn keep_text(&self) -> String {
        if self.keep.is_empty() {
            return "none".into();
        }
        self.keep
            .iter()
            .map(|&(a, b)| {
                if b == a + 1 {
                    a.to_string()
                } else {
                    format!("{a}-{}", b - 1)
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The JSON of tracker.md §10.2.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "infohash": hex::encode(self.row.infohash),
            "machine": self.machine,
            "retired": self.row.retired,
            "received": self.row.received,
            "stripes": self.stripes,
            "keep": self.keep_text(),
            "cancelled": self.row.cancelled,
            "cancelled_by": self.row.cancelled_by,
        })
    }
}

/// Every stored retirement, in the order received, with its machine's name.
pub fn retirements(db: &mut dyn Storage) -> Result<Vec<RetirementView>, AdminError> {
    let names: std::collections::HashMap<i64, String> =
        db.machines()?.into_iter().map(|m| (m.id, m.name)).collect();
    Ok(db
        .retirements()?
        .into_iter()
        .map(|row| {
            let parsed = swarmbak_trust::Retirement::parse_unverified(&row.record).ok();
            RetirementView {
                machine: names.get(&row.machine).cloned().unwrap_or_default(),
                stripes: parsed.as_ref().map_or(0, |r| r.stripes),
                keep: parsed.map(|r| r.keep).unwrap_or_default(),
                row,
            }
        })
        .collect())
}

/// Cancels the standing retirement of the snapshot `infohash` (40 hex digits) names
/// (`swarmbak tracker unretire`, `POST /api/v1/retirements/<ih>/cancel`), with an audit
/// line; returns it as cancelled. Holders keep the snapshot's shards.
pub fn cancel_retirement(
    db: &mut dyn Storage,
    infohash: &str,
    by: &Actor,
    now: i64,
) -> Result<RetirementView, AdminError> {
    let ih: [u8; 20] = hex::decode(infohash.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            AdminError::Invalid(format!(
                "{infohash:?} is not a snapshot's info-hash: give its 40 hex digits"
            ))
        })?;
    let hex_ih = hex::encode(ih);
    let mut view = retirements(db)?
        .into_iter()
        .find(|v| v.row.infohash == ih)
        .ok_or_else(|| AdminError::NotRetired(hex_ih.clone()))?;
    if view.row.cancelled.is_some() || !db.cancel_retirement(&ih, now, &by.actor)? {
        return Err(AdminError::AlreadyCancelled(hex_ih));
    }
    let detail = format!(
        "retirement by {} signed at {}",
        view.machine,
        swarmbak_core::utc(view.row.retired)
    );
    audit(db, by, "unretire", &hex_ih, &detail, now)?;
    view.row.cancelled = Some(now);
    view.row.cancelled_by = Some(by.actor.clone());
    Ok(view)
}
