//! Scheduled backups (tracker.md §7.7): which interval a machine backs up at, and
//! whether it should back up now. Pure: the organisation's settings, the machine's row,
//! its own interval, its last success and `now` in; the answer of
//! `GET BASE/<passkey>/schedule` out.
//!
//! - The **administrator's interval** is the machine's own `backup_every`, else (a VIP
//!   machine) `schedule.vip_every`, else `schedule.every`, else none.
//! - The machine **may override** it as its `every_may_override` says, else as
//!   `schedule.machine_may_override` (default true).
//! - The **effective interval** is the machine's own when it gives one and either it may
//!   override or there is no administrator's interval; else the administrator's; else
//!   one day.
//! - It should **back up now** when it never backed up, when its last success is at
//!   least the effective interval ago (overdue), or when an administrator asked for a
//!   backup after its last success.

use serde::{Deserialize, Serialize};

use swarmbak_core::{compact_duration as compact, spoken_duration as spoken};

use crate::storage::{MachineSchedule, OrgSchedule};

/// The interval when neither the machine nor the administrator gives one: one day.
pub const DEFAULT_EVERY: u64 = 86_400;

/// The shortest interval the administrator may set (one minute).
pub const MIN_EVERY: u64 = 60;

/// The longest interval anyone may set or send (ten years).
pub const MAX_EVERY: u64 = 10 * 365 * 86_400;

/// What `GET BASE/<passkey>/schedule` answers (tracker.md §7.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// The effective interval, seconds.
    pub every: u64,
    /// The administrator's interval for this machine, seconds (`None`: none set).
    pub admin_every: Option<u64>,
    /// May the machine's own interval win over the administrator's?
    pub machine_may_override: bool,
    /// Back up at once.
    pub backup_now: bool,
    /// Why (or why not), in a short sentence for people.
    pub why: String,
    /// Its last successful backup, Unix seconds (`None`: never).
    pub last_success: Option<i64>,
}

/// The administrator's interval for a machine: its own setting, else the VIP one (for a
/// VIP machine), else the organisation's.
pub fn admin_every(org: &OrgSchedule, vip: bool, m: &MachineSchedule) -> Option<u64> {
    m.every
        .or(if vip { org.vip_every } else { None })
        .or(org.every)
}

/// May the machine's own interval win: its own setting, else the organisation's.
pub fn may_override(org: &OrgSchedule, m: &MachineSchedule) -> bool {
    m.may_override.unwrap_or(org.machine_may_override)
}

/// The schedule of a machine (`vip`, its schedule fields `m`) that asks with its own
/// interval `own` (seconds), last backed up successfully at `last_success`, at `now`.
pub fn decide(
    org: &OrgSchedule,
    vip: bool,
    m: &MachineSchedule,
    own: Option<u64>,
    last_success: Option<i64>,
    now: i64,
) -> Schedule {
    let admin = admin_every(org, vip, m);
    let may = may_override(org, m);
    let every = match (own, admin) {
        (Some(o), None) => o,
        (Some(o), Some(_)) if may => o,
        (_, Some(a)) => a,
        (None, None) => DEFAULT_EVERY,
    };
    let every_i = i64::try_from(every).unwrap_or(i64::MAX);
    let requested = m.requested.filter(|&r| last_success.is_none_or(|s| r > s));
    let (backup_now, why) = match (last_success, requested) {
        (None, _) => (true, format!("never backed up (every {})", compact(every))),
        (Some(_), Some(r)) => (
            true,
            format!(
                "the administrator asked for a backup at {}",
                swarmbak_core::utc(r)
            ),
        ),
        (Some(s), None) => {
            let age = now.saturating_sub(s);
            if age >= every_i {
                (
                    true,
                    format!(
                        "overdue: last backup {} ago, every {}",
                        spoken(age),
                        compact(every)
                    ),
                )
            } else {
                (
                    false,
                    format!(
                        "next backup in {}: last backup {} ago, every {}",
                        spoken(every_i - age),
                        spoken(age.max(0)),
                        compact(every)
                    ),
                )
            }
        }
    };
    Schedule {
        every,
        admin_every: admin,
        machine_may_override: may,
        backup_now,
        why,
        last_success,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const H: u64 = 3600;
    const D: u64 = 86_400;

    fn org(every: Option<u64>, vip_every: Option<u64>, may: bool) -> OrgSchedule {
        OrgSchedule {
            every,
            vip_every,
            machine_may_override: may,
        }
    }

    fn machine(every: Option<u64>, may: Option<bool>, requested: Option<i64>) -> MachineSchedule {
        MachineSchedule {
            every,
            may_override: may,
            requested,
        }
    }

    fn ago(secs: u64) -> Option<i64> {
        Some(NOW - secs as i64)
    }

    #[test]
    fn nothing_set_is_one_day_or_the_machine_s_own() {
        let o = OrgSchedule::default();
        let m = MachineSchedule::default();
        let s = decide(&o, false, &m, None, ago(H), NOW);
        assert_eq!(
            (s.every, s.admin_every, s.machine_may_override),
            (D, None, true)
        );
        assert!(!s.backup_now, "{s:?}");
        assert_eq!(
            s.why,
            "next backup in 23 hours: last backup 1 hour ago, every 1d"
        );
        assert_eq!(s.last_success, ago(H));
        // The machine's own interval, with no administrator's: it wins even when
        // overriding is denied (there is nothing to override).
        let denied = org(None, None, false);
        let s = decide(&denied, false, &m, Some(6 * H), ago(H), NOW);
        assert_eq!((s.every, s.admin_every), (6 * H, None));
    }

    #[test]
    fn per_machine_setting_wins_over_vip_and_org() {
        let o = org(Some(2 * D), Some(12 * H), false);
        let m = machine(Some(3 * H), None, None);
        for vip in [false, true] {
            let s = decide(&o, vip, &m, None, ago(H), NOW);
            assert_eq!((s.every, s.admin_every), (3 * H, Some(3 * H)), "vip {vip}");
        }
    }

    #[test]
    fn vip_interval_for_vip_machines_only() {
        let o = org(Some(2 * D), Some(12 * H), false);
        let m = MachineSchedule::default();
        let s = decide(&o, true, &m, None, ago(H), NOW);
        assert_eq!((s.every, s.admin_every), (12 * H, Some(12 * H)));
        let s = decide(&o, false, &m, None, ago(H), NOW);
        assert_eq!((s.every, s.admin_every), (2 * D, Some(2 * D)));
        // A VIP machine with no VIP interval set: the organisation's.
        let o = org(Some(2 * D), None, false);
        let s = decide(&o, true, &m, None, ago(H), NOW);
        assert_eq!(s.every, 2 * D);
    }

    #[test]
    fn org_default_without_machine_interval() {
        let o = org(Some(6 * H), None, true);
        let s = decide(&o, false, &MachineSchedule::default(), None, ago(H), NOW);
        assert_eq!(
            (s.every, s.admin_every, s.machine_may_override),
            (6 * H, Some(6 * H), true)
        );
    }

    #[test]
    fn override_allowed_or_denied() {
        let m = MachineSchedule::default();
        // The organisation allows it: the machine's own wins.
        let allowed = org(Some(D), None, true);
        let s = decide(&allowed, false, &m, Some(H), ago(60), NOW);
        assert_eq!(
            (s.every, s.admin_every, s.machine_may_override),
            (H, Some(D), true)
        );
        // The organisation denies it: the administrator's wins.
        let denied = org(Some(D), None, false);
        let s = decide(&denied, false, &m, Some(H), ago(60), NOW);
        assert_eq!((s.every, s.machine_may_override), (D, false));
        // The machine's own setting beats the organisation's, both ways.
        let s = decide(
            &denied,
            false,
            &machine(None, Some(true), None),
            Some(H),
            ago(60),
            NOW,
        );
        assert_eq!((s.every, s.machine_may_override), (H, true));
        let s = decide(
            &allowed,
            false,
            &machine(None, Some(false), None),
            Some(H),
            ago(60),
            NOW,
        );
        assert_eq!((s.every, s.machine_may_override), (D, false));
    }

    #[test]
    fn overdue_and_due_at_the_interval() {
        let o = org(Some(D), None, true);
        let m = MachineSchedule::default();
        let s = decide(&o, false, &m, None, ago(3 * D), NOW);
        assert!(s.backup_now);
        assert_eq!(s.why, "overdue: last backup 3 days ago, every 1d");
        let s = decide(&o, false, &m, None, ago(D), NOW);
        assert!(s.backup_now, "due exactly at the interval: {s:?}");
        let s = decide(&o, false, &m, None, ago(D - 1), NOW);
        assert!(!s.backup_now, "{s:?}");
        // A last success in the future (the machine's clock ahead): not overdue.
        let s = decide(&o, false, &m, None, Some(NOW + 600), NOW);
        assert!(!s.backup_now, "{s:?}");
    }

    #[test]
    fn never_backed_up() {
        let s = decide(
            &OrgSchedule::default(),
            false,
            &MachineSchedule::default(),
            Some(6 * H),
            None,
            NOW,
        );
        assert!(s.backup_now);
        assert_eq!(s.why, "never backed up (every 6h)");
        assert_eq!(s.last_success, None);
    }

    #[test]
    fn an_administrator_s_request_until_a_newer_success() {
        let o = OrgSchedule::default();
        let asked = NOW - 600;
        let m = machine(None, None, Some(asked));
        // Backed up an hour ago, asked ten minutes ago: back up now.
        let s = decide(&o, false, &m, None, ago(H), NOW);
        assert!(s.backup_now);
        assert_eq!(
            s.why,
            format!(
                "the administrator asked for a backup at {}",
                swarmbak_core::utc(asked)
            )
        );
        // A success after the request clears it.
        let s = decide(&o, false, &m, None, Some(asked + 1), NOW);
        assert!(!s.backup_now, "{s:?}");
        // So does one in the same second (the request is not newer than it), and not
        // one a second before.
        let s = decide(&o, false, &m, None, Some(asked), NOW);
        assert!(!s.backup_now, "{s:?}");
        let s = decide(&o, false, &m, None, Some(asked - 1), NOW);
        assert!(s.backup_now, "{s:?}");
        // Never backed up: "never" says it first.
        let s = decide(&o, false, &m, None, None, NOW);
        assert!(s.why.starts_with("never backed up"), "{s:?}");
    }
}
