//! Which snapshots a retention policy keeps (`swarmbak forget`, the agent after each
//! backup; swarm.md §16.1). Pure: snapshots and their times in, a decision per snapshot
//! out.
//!
//! The rule is restic's and kopia's: going from the newest snapshot to the oldest,
//! `last` keeps the `last` newest; each calendar policy (`hourly`, `daily`, `weekly`,
//! `monthly`, `yearly`) keeps the newest snapshot of each of its `n` most recent
//! periods that have one; `within` keeps every snapshot taken within that long of the
//! newest. A snapshot is kept if any policy keeps it, and the newest is always kept.
//! Periods are in the machine's local time (the caller gives its UTC offset); weeks
//! start on Monday (ISO 8601).

use serde::{Deserialize, Serialize};

/// How many snapshots of each kind to keep. `None`: that policy keeps nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hourly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yearly: Option<u32>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<u64>,
}

impl Policy {
    /// The default policy (kopia's): the 10 newest, 48 hourly, 7 daily, 4 weekly, 24
    /// monthly, 3 yearly.
    pub fn default_policy() -> Policy {
        Policy {
            last: Some(10),
            hourly: Some(48),
            daily: Some(7),
            weekly: Some(4),
            monthly: Some(24),
            yearly: Some(3),
            within: None,
        }
    }

    /// Whether no policy is set (keeps only the newest).
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    /// Replaces each setting `other` gives; a 0 there turns that one off.
    pub fn overlay(&mut self, other: &Policy) {
        let set = |mine: &mut Option<u32>, theirs: Option<u32>| {
            if let Some(n) = theirs {
                *mine = (n > 0).then_some(n);
            }
        };
        set(&mut self.last, other.last);
        set(&mut self.hourly, other.hourly);
        set(&mut self.daily, other.daily);
        set(&mut self.weekly, other.weekly);
        set(&mut self.monthly, other.monthly);
        set(&mut self.yearly, other.yearly);
        if let Some(w) = other.within {
            self.within = (w > 0).then_some(w);
        }
    }
}

/// `10 last, 48 hourly, 7 daily, 4 weekly, 24 monthly, 3 yearly, all within 30d`, or
/// `only the newest`.
impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = [
            (self.last, "last"),
            (self.hourly, "hourly"),
            (self.daily, "daily"),
            (self.weekly, "weekly"),
            (self.monthly, "monthly"),
            (self.yearly, "yearly"),
        ]
        .iter()
        .filter_map(|(n, what)| n.map(|n| format!("{n} {what}")))
        .collect();
        if let Some(w) = self.within {
            parts.push(format!("all within {}", crate::compact_duration(w)));
        }
        if parts.is_empty() {
            return f.write_str("only the newest");
        }
        f.write_str(&parts.join(", "))
    }
}

/// Why a snapshot is kept: the policies that keep it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Index into the input.
    pub index: usize,
    pub keep: bool,
    /// "newest", "last", "hourly", ... (empty when forgotten).
    pub reasons: Vec<&'static str>,
}

/// The period keys of a local time `t` (seconds): hour, day, ISO week, month, year.
fn periods(t: i64) -> [i64; 5] {
    let day = t.div_euclid(86_400);
    let (y, m, _) = crate::civil(day);
    [
        t.div_euclid(3_600),
        day,
        // 1970-01-01 was a Thursday: Monday-based weeks start 3 days before it.
        (day + 3).div_euclid(7),
        y * 12 + m,
        y,
    ]
}

/// Decides, for snapshots taken at `times` (Unix seconds, any order), which `policy`
/// keeps; `utc_offset` is the machine's local offset in seconds (periods are local).
/// Of snapshots with the same time, the later in `times` counts as the newer (give them
/// oldest first). Decisions are in the order of `times`.
pub fn decide(times: &[i64], policy: &Policy, utc_offset: i64) -> Vec<Decision> {
    let mut order: Vec<usize> = (0..times.len()).collect();
    // Newest first; of equal times, the later given.
    order.sort_by(|&a, &b| times[b].cmp(&times[a]).then(b.cmp(&a)));
    let mut out: Vec<Decision> = (0..times.len())
        .map(|index| Decision {
            index,
            keep: false,
            reasons: Vec::new(),
        })
        .collect();
    let calendar: [(&'static str, Option<u32>); 5] = [
        ("hourly", policy.hourly),
        ("daily", policy.daily),
        ("weekly", policy.weekly),
        ("monthly", policy.monthly),
        ("yearly", policy.yearly),
    ];
    let mut last_period: [Option<i64>; 5] = [None; 5];
    let mut kept_periods = [0u32; 5];
    let newest = order.first().map(|&i| times[i]);
    for (rank, &i) in order.iter().enumerate() {
        let t = times[i];
        let d = &mut out[i];
        if rank == 0 {
            d.reasons.push("newest");
        }
        if policy.last.is_some_and(|n| (rank as u64) < u64::from(n)) {
            d.reasons.push("last");
        }
        if let (Some(w), Some(n)) = (policy.within, newest) {
            if n.saturating_sub(t) <= w as i64 {
                d.reasons.push("within");
            }
        }
        let p = periods(t + utc_offset);
        for (k, (name, n)) in calendar.iter().enumerate() {
            let Some(n) = n else { continue };
            if kept_periods[k] < *n && last_period[k] != Some(p[k]) {
                last_period[k] = Some(p[k]);
                kept_periods[k] += 1;
                d.reasons.push(name);
            }
        }
        d.keep = !d.reasons.is_empty();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600;
    const D: i64 = 86_400;
    // 2026-12-01 00:00:00Z, a Tuesday.
    const T0: i64 = 1_796_083_200;

    fn kept(times: &[i64], p: &Policy) -> Vec<usize> {
        decide(times, p, 0)
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.index)
            .collect()
    }

    #[test]
    fn the_newest_is_always_kept_and_last_keeps_the_n_newest() {
        let times: Vec<i64> = (0..5).map(|i| T0 + i * H).collect();
        assert_eq!(kept(&times, &Policy::default()), vec![4]);
        let p = Policy {
            last: Some(2),
            ..Default::default()
        };
        assert_eq!(kept(&times, &p), vec![3, 4]);
        assert!(kept(&[], &p).is_empty());
        // Taken within one second: the later given is the newer.
        assert_eq!(kept(&[T0, T0, T0], &Policy::default()), vec![2]);
    }

    #[test]
    fn calendar_policies_keep_the_newest_of_each_period() {
        // Three a day for ten days, at 01:00, 09:00 and 17:00.
        let times: Vec<i64> = (0..10)
            .flat_map(|d| [1, 9, 17].map(|h| T0 + d * D + h * H))
            .collect();
        let daily = Policy {
            daily: Some(3),
            ..Default::default()
        };
        // The 17:00 of the last three days.
        assert_eq!(kept(&times, &daily), vec![23, 26, 29]);
        let hourly = Policy {
            hourly: Some(4),
            ..Default::default()
        };
        assert_eq!(kept(&times, &hourly), vec![26, 27, 28, 29]);
        // Weeks start on Monday: T0 + 6 days is Monday 2026-12-07.
        let weekly = Policy {
            weekly: Some(2),
            ..Default::default()
        };
        assert_eq!(kept(&times, &weekly), vec![17, 29]);
        // Local time moves the day boundary: at UTC+8, 17:00Z is 01:00 the next day.
        let d = decide(&times, &daily, 8 * H);
        let k: Vec<usize> = d.iter().filter(|d| d.keep).map(|d| d.index).collect();
        assert_eq!(k, vec![25, 28, 29]);
    }

    #[test]
    fn monthly_yearly_within_and_reasons() {
        let times = [
            T0 - 400 * D, // 2025-10-27
            T0 - 40 * D,  // 2026-10-22
            T0 - 20 * D,  // 2026-11-11
            T0 - 2 * D,   // 2026-11-29
            T0,           // 2026-12-01
        ];
        let p = Policy {
            monthly: Some(2),
            yearly: Some(2),
            within: Some(3 * D as u64),
            ..Default::default()
        };
        let d = decide(&times, &p, 0);
        assert_eq!(d[4].reasons, vec!["newest", "within", "monthly", "yearly"]);
        assert_eq!(d[3].reasons, vec!["within", "monthly"]);
        assert!(!d[2].keep && !d[1].keep);
        assert_eq!(d[0].reasons, vec!["yearly"]);
        // Kopia's defaults keep all of a few days of daily backups.
        let days: Vec<i64> = (0..6).map(|i| T0 + i * D).collect();
        assert!(decide(&days, &Policy::default_policy(), 0)
            .iter()
            .all(|d| d.keep));
    }
}
