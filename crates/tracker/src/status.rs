//! Each machine's backup status: what the administrator's reports, the dashboard, the
//! alerts and `/metrics` show (tracker.md §10). Pure: built from the database's rows,
//! the published snapshots and what the running tracker saw, at a given `now`.
//!
//! A machine's **last success** is the later of its latest successful backup report and
//! its latest published snapshot (a published snapshot is a signed proof of a backup,
//! even from a `seed` that could not report). Its **age** is the time since then, or,
//! for a machine never backed up, since it enrolled: a machine enrolled yesterday is not
//! overdue yet, but is listed under "never".

use std::collections::HashMap;

use serde::Serialize;

use crate::storage::{Activity, MachineKind, MachineRow, SnapshotRow};

/// One day, in seconds.
pub const DAY: i64 = 86_400;

/// When a machine counts as overdue (configurable; 10 and 30 days by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Overdue: no success for this many days (a VIP machine's alert).
    pub warn_days: u32,
    /// Badly overdue: no success for this many days (every machine's alert).
    pub alert_days: u32,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            warn_days: 10,
            alert_days: 30,
        }
    }
}

/// A machine's status, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Never backed up (and enrolled at least `alert_days` ago).
    Never,
    /// Last success `alert_days` ago or more.
    OverdueAlert,
    /// Last success `warn_days` ago or more.
    OverdueWarn,
    /// Never backed up, enrolled less than `alert_days` ago.
    New,
    /// Backed up within `warn_days`.
    Ok,
    /// Revoked: no longer part of the organisation's backups.
    Revoked,
}

impl Status {
    /// Every status, in order (for counts).
    pub const ALL: [Status; 6] = [
        Status::Never,
        Status::OverdueAlert,
        Status::OverdueWarn,
        Status::New,
        Status::Ok,
        Status::Revoked,
    ];

    /// The JSON and `/metrics` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Never => "never",
            Status::OverdueAlert => "overdue_alert",
            Status::OverdueWarn => "overdue_warn",
            Status::New => "new",
            Status::Ok => "ok",
            Status::Revoked => "revoked",
        }
    }
}

/// One machine as the administrator sees it (`GET /api/v1/machines`, tracker.md §10.2).
/// Times are Unix seconds, `None` (JSON `null`) when it never happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MachineStatus {
    /// [`MachineRow::id`] (not in the JSON: names are the API's handles).
    #[serde(skip)]
    pub id: i64,
    /// The enrolled name.
    pub name: String,
    /// The person using it.
    pub user: Option<String>,
    /// A VIP machine.
    pub vip: bool,
    /// `SITE/ROOM`.
    pub domain: Option<String>,
    /// Announcing now (seen, by an announce or a roster request, within the tracker's peer
    /// timeout).
    pub online: bool,
    /// Its last announce or roster request (this run of the tracker, or the online spans
    /// it wrote before).
    pub last_seen: Option<i64>,
    /// The address it last announced or asked for the roster from (this run of the
    /// tracker only).
    pub address: Option<String>,
    /// When its latest backup attempt ended.
    pub last_attempt: Option<i64>,
    /// Whether that attempt succeeded.
    pub last_attempt_ok: Option<bool>,
    /// That attempt's error text, when it failed.
    pub last_error: Option<String>,
    /// Its last successful backup (report or published snapshot).
    pub last_success: Option<i64>,
    /// Whole days since `last_success` (`None`: never).
    pub age_days: Option<i64>,
    /// See [`Status`].
    pub status: Status,
    /// Its published snapshots.
    pub snapshots: u64,
    /// The size of its latest backup: the bytes its latest successful report read, else
    /// the encrypted payload of its latest snapshot.
    pub bytes: u64,
    /// The encrypted payload of all its snapshots (what it asks the swarm to hold).
    pub stored_bytes: u64,
    /// What it holds of other machines' snapshots, as its announces say (this run of the
    /// tracker; a claim, not a proof).
    pub held_bytes: u64,
    /// The bytes of the others' backups it offers to hold (its agent's quota, as its
    /// announces give it; `None`: not given, or not seen in this run).
    pub quota: Option<u64>,
    /// When it enrolled.
    pub enrolled: i64,
    /// When it was revoked.
    pub revoked: Option<i64>,
}

/// What the running tracker knows of a machine beyond the database.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Its last announce or roster request in this run (Unix seconds).
    pub last_seen: Option<i64>,
    /// The address it announced or asked for the roster from.
    pub address: Option<String>,
    /// What its announces say it holds of other machines' snapshots.
    pub held: u64,
    /// The quota its announces give.
    pub quota: Option<u64>,
}

/// Per-machine figures of the published snapshots, by owner key (lowercase hex).
#[derive(Debug, Clone, Copy, Default)]
struct Owned {
    snapshots: u64,
    latest: i64,
    latest_payload: u64,
    payload: u64,
}

/// Builds every machine's status (clients excluded: they make no backups), in
/// enrolment order.
pub fn build(
    machines: &[MachineRow],
    activity: &HashMap<i64, Activity>,
    snapshots: &[SnapshotRow],
    live: &HashMap<i64, Live>,
    now: i64,
    online_window: i64,
    th: Thresholds,
) -> Vec<MachineStatus> {
    let mut owned: HashMap<&str, Owned> = HashMap::new();
    for s in snapshots {
        let o = owned.entry(s.machine_key.as_str()).or_default();
        o.snapshots += 1;
        o.payload = o.payload.saturating_add(s.payload_length);
        if s.published >= o.latest {
            o.latest = s.published;
            o.latest_payload = s.payload_length;
        }
    }
    let none = Activity::default();
    let no_live = Live::default();
    machines
        .iter()
        .filter(|m| m.kind == MachineKind::Machine)
        .map(|m| {
            let a = activity.get(&m.id).unwrap_or(&none);
            let l = live.get(&m.id).unwrap_or(&no_live);
            let key = m.key.map(hex::encode).unwrap_or_default();
            let o = owned.get(key.as_str()).copied().unwrap_or_default();
            let report_success = a.last_success.as_ref().map(|s| s.ended);
            let published = (o.snapshots > 0).then_some(o.latest);
            let last_success = report_success.max(published);
            let bytes = match &a.last_success {
                Some(s) if report_success >= published => s.bytes,
                _ => o.latest_payload,
            };
            let last_seen = l.last_seen.max(a.last_online);
            let age = now - last_success.unwrap_or(m.enrolled);
            let status = if m.revoked.is_some() {
                Status::Revoked
            } else if last_success.is_none() {
                if age >= i64::from(th.alert_days) * DAY {
                    Status::Never
                } else {
                    Status::New
                }
            } else if age >= i64::from(th.alert_days) * DAY {
                Status::OverdueAlert
            } else if age >= i64::from(th.warn_days) * DAY {
                Status::OverdueWarn
            } else {
                Status::Ok
            };
            MachineStatus {
                id: m.id,
                name: m.name.clone(),
                user: m.user.clone(),
                vip: m.vip,
                domain: m.domain.clone(),
                online: m.revoked.is_none()
                    && l.last_seen.is_some_and(|t| now - t <= online_window),
                last_seen,
                address: l.address.clone(),
                last_attempt: a.last_attempt.as_ref().map(|x| x.ended),
                last_attempt_ok: a.last_attempt.as_ref().map(|x| x.error.is_none()),
                last_error: a.last_attempt.as_ref().and_then(|x| x.error.clone()),
                last_success,
                age_days: last_success.map(|t| (now - t).max(0) / DAY),
                status,
                snapshots: o.snapshots,
                bytes,
                stored_bytes: o.payload,
                held_bytes: l.held,
                quota: l.quota,
                enrolled: m.enrolled,
                revoked: m.revoked,
            }
        })
        .collect()
}

/// Which machines a report asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overdue {
    /// Backed up before, but not within this many days.
    Days(u32),
    /// Never backed up.
    Never,
    /// Not backed up within this many days, never backed up included.
    DaysOrNever(u32),
}

/// How a list is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// VIPs first, then the longest without a backup (never first), then by name.
    #[default]
    Attention,
    /// Time since the last success, longest first (never first).
    Age,
    /// By name.
    Name,
    /// By user.
    User,
    /// Last seen, most recent first.
    LastSeen,
    /// Size of the latest backup, largest first.
    Size,
}

/// The filters of `GET /api/v1/machines` and of the dashboard (tracker.md §10.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `overdue=N|never|N+never`.
    pub overdue: Option<Overdue>,
    /// `vip=1|0`.
    pub vip: Option<bool>,
    /// `online=1|0`.
    pub online: Option<bool>,
    /// `q=PATTERN`: host name, user or address; `*` matches any run of characters;
    /// without a `*`, any part matches. Case-insensitive.
    pub q: Option<String>,
    /// `revoked=1`: revoked machines too (left out by default).
    pub revoked: bool,
    /// `sort=attention|age|name|user|last_seen|size`.
    pub sort: Sort,
    /// `order=asc|desc` (`desc` reverses the sort's natural order).
    pub reverse: bool,
}

/// A filter parameter that is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

fn flag(key: &str, v: &str) -> Result<bool, FilterError> {
    match v {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(FilterError(format!("{key}= takes 1 or 0, not {v:?}"))),
    }
}

impl Filter {
    /// From decoded query pairs; an empty value means "not given" (an HTML form's
    /// "any" choice).
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Filter, FilterError> {
        let mut f = Filter::default();
        for (k, v) in pairs {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            match k {
                "overdue" => {
                    let days = |s: &str| {
                        s.parse::<u32>()
                            .ok()
                            .filter(|d| *d <= 36_500)
                            .ok_or_else(|| {
                                FilterError(format!(
                                    "overdue= takes a number of days, `never`, or DAYS+never, not {v:?}"
                                ))
                            })
                    };
                    f.overdue = Some(match v {
                        "never" => Overdue::Never,
                        _ => match v.strip_suffix("+never") {
                            Some(d) => Overdue::DaysOrNever(days(d)?),
                            None => Overdue::Days(days(v)?),
                        },
                    });
                }
                "vip" => f.vip = Some(flag(k, v)?),
                "online" => f.online = Some(flag(k, v)?),
                "revoked" => f.revoked = flag(k, v)?,
                "q" => f.q = Some(v.to_owned()),
                "sort" => {
                    f.sort = match v {
                        "attention" => Sort::Attention,
                        "age" => Sort::Age,
                        "name" => Sort::Name,
                        "user" => Sort::User,
                        "last_seen" => Sort::LastSeen,
                        "size" => Sort::Size,
                        _ => {
                            return Err(FilterError(format!(
                            "sort= takes attention, age, name, user, last_seen or size, not {v:?}"
                        )))
                        }
                    }
                }
                "order" => {
                    f.reverse = match v {
                        "asc" => false,
                        "desc" => true,
                        _ => {
                            return Err(FilterError(format!("order= takes asc or desc, not {v:?}")))
                        }
                    }
                }
                // Other parameters (a CSRF token, a page's own) are not filters.
                _ => {}
            }
        }
        Ok(f)
    }

    /// Does `m` pass, at `now`?
    pub fn matches(&self, m: &MachineStatus, now: i64) -> bool {
        if m.revoked.is_some() && !self.revoked {
            return false;
        }
        let older = |days: u32| {
            m.last_success
                .is_some_and(|t| now - t >= i64::from(days) * DAY)
        };
        let ok = match self.overdue {
            None => true,
            Some(Overdue::Never) => m.last_success.is_none(),
            Some(Overdue::Days(d)) => older(d),
            Some(Overdue::DaysOrNever(d)) => m.last_success.is_none() || older(d),
        };
        ok && self.vip.is_none_or(|v| m.vip == v)
            && self.online.is_none_or(|o| m.online == o)
            && self.q.as_deref().is_none_or(|q| {
                glob(q, &m.name)
                    || m.user.as_deref().is_some_and(|u| glob(q, u))
                    || m.address.as_deref().is_some_and(|a| glob(q, a))
            })
    }

    /// The machines of `all` that pass, sorted.
    pub fn apply(&self, all: &[MachineStatus], now: i64) -> Vec<MachineStatus> {
        let mut v: Vec<MachineStatus> = all
            .iter()
            .filter(|m| self.matches(m, now))
            .cloned()
            .collect();
        sort(&mut v, self.sort, self.reverse);
        v
    }
}

/// Sorts a list (stable; ties by name).
pub fn sort(v: &mut [MachineStatus], by: Sort, reverse: bool) {
    // "Never" sorts as the oldest possible success.
    let success = |m: &MachineStatus| m.last_success.unwrap_or(i64::MIN);
    v.sort_by(|a, b| {
        let o = match by {
            Sort::Attention => b.vip.cmp(&a.vip).then(success(a).cmp(&success(b))),
            Sort::Age => success(a).cmp(&success(b)),
            Sort::Name => std::cmp::Ordering::Equal,
            Sort::User => a.user.cmp(&b.user),
            Sort::LastSeen => b.last_seen.cmp(&a.last_seen),
            Sort::Size => b.bytes.cmp(&a.bytes),
        };
        o.then_with(|| a.name.cmp(&b.name))
    });
    if reverse {
        v.reverse();
    }
}

/// Does `text` match `pattern`? `*` matches any run of characters (none included); a
/// pattern without `*` matches any part of the text. Case-insensitive (ASCII and
/// Unicode lowercase).
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    if !p.contains(&'*') {
        return t.windows(p.len().max(1)).any(|w| w == p.as_slice()) || p.is_empty();
    }
    // Iterative wildcard match with backtracking to the last star: O(|p| * |t|).
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// How many machines have each status.
pub fn counts(all: &[MachineStatus]) -> Vec<(Status, usize)> {
    Status::ALL
        .iter()
        .map(|s| (*s, all.iter().filter(|m| m.status == *s).count()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("lap*", "laptop-7"));
        assert!(glob("*-7", "laptop-7"));
        assert!(!glob("*-8", "laptop-7"));
        assert!(glob("top", "laptop-7"));
        assert!(glob("LAP*7", "laptop-7"));
        assert!(glob("10.0.*.5", "10.0.12.5"));
        assert!(!glob("10.0.*.5", "10.0.12.6"));
        assert!(glob("*", ""));
        assert!(glob("", "x"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("**a**", "bab"));
        assert!(!glob("ab", "a"));
    }

    fn machine(id: i64, name: &str, vip: bool, enrolled: i64) -> MachineRow {
        MachineRow {
            id,
            kind: MachineKind::Machine,
            key: Some([id as u8; 32]),
            age_recipient: None,
            name: name.into(),
            user: Some(format!("user-{name}")),
            vip,
            domain: None,
            passkey: format!("{id:032x}"),
            certificate: None,
            enrolled,
            expires: None,
            revoked: None,
            revocation: None,
            schedule: Default::default(),
        }
    }

    fn ok_at(ended: i64, bytes: u64) -> crate::storage::Attempt {
        crate::storage::Attempt {
            started: ended - 60,
            ended,
            bytes,
            files: 1,
            error: None,
        }
    }

    #[test]
    fn statuses_and_filters() {
        let now = 1_000 * DAY;
        let th = Thresholds::default();
        let mut machines = vec![
            machine(1, "fresh", false, now - 100 * DAY),
            machine(2, "warn", true, now - 100 * DAY),
            machine(3, "late", false, now - 100 * DAY),
            machine(4, "never", false, now - 100 * DAY),
            machine(5, "newbie", false, now - DAY),
            machine(6, "gone", false, now - 100 * DAY),
        ];
        machines[5].revoked = Some(now - DAY);
        let mut activity = HashMap::new();
        for (id, days) in [(1, 1), (2, 10), (3, 45)] {
            activity.insert(
                id,
                Activity {
                    last_success: Some(ok_at(now - days * DAY, 100 * id as u64)),
                    last_attempt: Some(ok_at(now - days * DAY, 100 * id as u64)),
                    last_online: None,
                },
            );
        }
        let mut live = HashMap::new();
        live.insert(
            1,
            Live {
                last_seen: Some(now - 10),
                address: Some("10.1.2.3".into()),
                held: 7,
                quota: Some(1 << 30),
            },
        );
        let all = build(&machines, &activity, &[], &live, now, 120, th);
        let st: Vec<(&str, Status)> = all.iter().map(|m| (m.name.as_str(), m.status)).collect();
        assert_eq!(
            st,
            [
                ("fresh", Status::Ok),
                ("warn", Status::OverdueWarn),
                ("late", Status::OverdueAlert),
                ("never", Status::Never),
                ("newbie", Status::New),
                ("gone", Status::Revoked),
            ]
        );
        let names = |q: &str| -> Vec<String> {
            let pairs = crate::query::decoded_pairs(q.as_bytes()).unwrap();
            let f = Filter::parse(pairs.iter().map(|(k, v)| {
                (
                    std::str::from_utf8(k).unwrap(),
                    std::str::from_utf8(v).unwrap(),
                )
            }))
            .unwrap();
            f.apply(&all, now).into_iter().map(|m| m.name).collect()
        };
        assert_eq!(names("overdue=10&sort=name"), ["late", "warn"]);
        assert_eq!(names("overdue=30"), ["late"]);
        assert_eq!(names("overdue=never&sort=name"), ["never", "newbie"]);
        assert_eq!(
            names("overdue=30%2Bnever&sort=age"),
            ["never", "newbie", "late"]
        );
        assert_eq!(names("vip=1"), ["warn"]);
        assert_eq!(names("online=1"), ["fresh"]);
        assert_eq!(names("q=10.1.*"), ["fresh"]);
        assert_eq!(names("q=user-ne*"), ["never", "newbie"]);
        assert_eq!(names("revoked=1&q=gone"), ["gone"]);
        assert_eq!(names("q=gone"), Vec::<String>::new());
        // Attention: VIPs first, then never, then the oldest success.
        assert_eq!(names(""), ["warn", "never", "newbie", "late", "fresh"]);
        assert!(Filter::parse([("overdue", "ten")]).is_err());
        assert!(Filter::parse([("vip", "maybe")]).is_err());
        let fresh = &all[0];
        assert_eq!(fresh.age_days, Some(1));
        assert_eq!(fresh.bytes, 100);
        assert!(fresh.online);
        assert_eq!(fresh.last_seen, Some(now - 10));
        assert_eq!(fresh.held_bytes, 7);
    }
}
