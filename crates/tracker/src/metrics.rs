//! `GET /metrics` (tracker.md §10.5): counters kept on the request paths (relaxed atomic
//! adds, nothing else), rendered in Prometheus' text format with the gauges the caller
//! measures at scrape time. Counts only: no machine name, key or address.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the request latency histogram, in seconds.
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The tracker's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Announces over HTTP.
    pub announces_http: AtomicU64,
    /// Announces over UDP.
    pub announces_udp: AtomicU64,
    /// Scrapes over HTTP.
    pub scrapes_http: AtomicU64,
    /// Scrapes over UDP.
    pub scrapes_udp: AtomicU64,
    /// Publishes stored now.
    pub publishes_new: AtomicU64,
    /// Publishes stored before.
    pub publishes_existing: AtomicU64,
    /// Publishes refused.
    pub publishes_refused: AtomicU64,
    /// Reports of a successful backup, stored now.
    pub reports_success: AtomicU64,
    /// Reports of a failed backup, stored now.
    pub reports_failure: AtomicU64,
    /// Reports stored before (a resend).
    pub reports_resent: AtomicU64,
    /// Reports refused.
    pub reports_refused: AtomicU64,
    /// Requests per latency bucket (the last one: above every bound).
    latency: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_ns: AtomicU64,
}

/// Adds one to a counter.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What `/metrics` measures when it is asked (gauges).
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Machines by status (tracker.md §10.1), in [`crate::status::Status::ALL`] order.
    pub machines: Vec<(&'static str, usize)>,
    /// Open alerts.
    pub alerts_open: usize,
    /// Peers in every swarm.
    pub peers: usize,
    /// Torrents served.
    pub torrents: usize,
}

impl Metrics {
    /// Records one HTTP request's time.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ns.fetch_add(
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// The text exposition (format 0.0.4).
    pub fn render(&self, g: &Gauges) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut o = String::with_capacity(4096);
        let mut family = |name: &str, kind: &str, help: &str, rows: &[(&str, u64)]| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                if labels.is_empty() {
                    let _ = writeln!(o, "{name} {v}");
                } else {
                    let _ = writeln!(o, "{name}{{{labels}}} {v}");
                }
            }
        };
        family(
            "swarmbak_tracker_announces_total",
            "counter",
            "Announces answered.",
            &[
                ("transport=\"http\"", get(&self.announces_http)),
                ("transport=\"udp\"", get(&self.announces_udp)),
            ],
        );
        family(
            "swarmbak_tracker_scrapes_total",
            "counter",
            "Scrapes answered.",
            &[
                ("transport=\"http\"", get(&self.scrapes_http)),
                ("transport=\"udp\"", get(&self.scrapes_udp)),
            ],
        );
        family(
            "swarmbak_tracker_publishes_total",
            "counter",
            "Snapshot publishes, by result.",
            &[
                ("result=\"new\"", get(&self.publishes_new)),
                ("result=\"existing\"", get(&self.publishes_existing)),
                ("result=\"refused\"", get(&self.publishes_refused)),
            ],
        );
        family(
            "swarmbak_tracker_reports_total",
            "counter",
            "Backup reports, by result.",
            &[
                ("result=\"success\"", get(&self.reports_success)),
                ("result=\"failure\"", get(&self.reports_failure)),
                ("result=\"resent\"", get(&self.reports_resent)),
                ("result=\"refused\"", get(&self.reports_refused)),
            ],
        );
        let labels: Vec<String> = g
            .machines
            .iter()
            .map(|(s, _)| format!("status=\"{s}\""))
            .collect();
        let rows: Vec<(&str, u64)> = labels
            .iter()
            .zip(&g.machines)
            .map(|(l, (_, n))| (l.as_str(), *n as u64))
            .collect();
        family(
            "swarmbak_tracker_machines",
            "gauge",
            "Enrolled machines, by backup status.",
            &rows,
        );
        family(
            "swarmbak_tracker_alerts_open",
            "gauge",
            "Open alerts.",
            &[("", g.alerts_open as u64)],
        );
        family(
            "swarmbak_tracker_peers",
            "gauge",
            "Peers in every swarm.",
            &[("", g.peers as u64)],
        );
        family(
            "swarmbak_tracker_torrents",
            "gauge",
            "Torrents served.",
            &[("", g.torrents as u64)],
        );
        let name = "swarmbak_tracker_request_duration_seconds";
        let _ = writeln!(
            o,
            "# HELP {name} HTTP request handling time.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += get(&self.latency[i]);
            let _ = writeln!(o, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += get(&self.latency[BUCKETS.len()]);
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = get(&self.latency_sum_ns) as f64 / 1e9;
        let _ = writeln!(o, "{name}_sum {sum}\n{name}_count {cumulative}");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition() {
        let m = Metrics::default();
        inc(&m.announces_http);
        inc(&m.announces_http);
        inc(&m.reports_refused);
        m.observe(Duration::from_micros(50));
        m.observe(Duration::from_millis(3));
        m.observe(Duration::from_secs(60));
        let text = m.render(&Gauges {
            machines: vec![("ok", 3), ("never", 1)],
            alerts_open: 2,
            peers: 7,
            torrents: 4,
        });
        for line in [
            "swarmbak_tracker_announces_total{transport=\"http\"} 2",
            "swarmbak_tracker_reports_total{result=\"refused\"} 1",
            "swarmbak_tracker_machines{status=\"never\"} 1",
            "swarmbak_tracker_alerts_open 2",
            "swarmbak_tracker_request_duration_seconds_bucket{le=\"0.0001\"} 1",
            "swarmbak_tracker_request_duration_seconds_bucket{le=\"0.005\"} 2",
            "swarmbak_tracker_request_duration_seconds_bucket{le=\"10\"} 2",
            "swarmbak_tracker_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "swarmbak_tracker_request_duration_seconds_count 3",
            "# TYPE swarmbak_tracker_machines gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
