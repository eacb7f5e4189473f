//! Progress on a terminal (indicatif), JSON lines for scripts, nothing otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use swarmbak_format::Progress;
use swarmbak_node::{Event, Report};

pub struct Ui {
    /// With SWARMBAK_TIMINGS=1, each stage's start is written to stderr with its time.
    timings: Option<std::time::Instant>,
    bar: Option<ProgressBar>,
    json: bool,
    warnings: Mutex<Vec<String>>,
}

impl Ui {
    pub fn new(json: bool, what: &str) -> Ui {
        let bar = if !json && std::io::stderr().is_terminal() {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(what.to_string());
            Some(b)
        } else {
            None
        };
        Ui {
            timings: std::env::var_os("SWARMBAK_TIMINGS").map(|_| std::time::Instant::now()),
            bar,
            json,
            warnings: Mutex::new(Vec::new()),
        }
    }

    /// Turns the bar into a plain counter of `total` units (pieces, copies).
    pub fn counter(&self, total: u64) {
        if let Some(b) = &self.bar {
            b.set_style(
                ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b.set_length(total);
        }
    }

    pub fn set(&self, pos: u64) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Progress for Ui {
    fn scanned(&self, files: u64, bytes: u64, unchanged: u64) {
        if let Some(t) = self.timings {
            tell!("swarmbak: {:8.3}s scanned: {files} files ({bytes} bytes) to read, {unchanged} unchanged", t.elapsed().as_secs_f64());
        }
        if let Some(b) = &self.bar {
            b.set_length(bytes);
            b.set_message(format!("{files} files to read, {unchanged} unchanged"));
        }
    }
    fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
    fn stage(&self, name: &str) {
        if let Some(t) = self.timings {
            tell!("swarmbak: {:8.3}s {name}", t.elapsed().as_secs_f64());
        }
        if let Some(b) = &self.bar {
            b.set_message(name.to_string());
        }
    }
    fn warn(&self, msg: &str) {
        if self.json {
            say!(
                "{}",
                serde_json::json!({"event": "warning", "message": msg})
            );
        } else if let Some(b) = &self.bar {
            b.suspend(|| tell!("swarmbak: warning: {msg}"));
        } else {
            tell!("swarmbak: warning: {msg}");
        }
        if let Ok(mut w) = self.warnings.lock() {
            w.push(msg.to_string());
        }
    }
}

impl Ui {
    fn emit(&self, v: serde_json::Value, text: Option<String>) {
        if self.json {
            say!("{v}");
        } else if let Some(t) = text {
            match &self.bar {
                Some(b) => b.suspend(|| say!("{t}")),
                None => say!("{t}"),
            }
        }
    }
}

impl Report for Ui {
    fn counter(&self, total: u64) {
        Ui::counter(self, total)
    }
    fn set(&self, pos: u64) {
        Ui::set(self, pos)
    }
    fn finish(&self) {
        Ui::finish(self)
    }
    fn note(&self, msg: &str) {
        tell!("swarmbak: {msg}");
    }
    fn event(&self, e: &Event) {
        use serde_json::json;
        match e {
            Event::Published { infohash, tracker, earlier: false } => self.emit(
                json!({"event": "published", "infohash": infohash.to_hex(), "tracker": tracker}),
                Some(format!("published to {}", tracker.as_deref().unwrap_or(""))),
            ),
            Event::Published { infohash, tracker, earlier: true } => self.emit(
                json!({"event": "published", "infohash": infohash.to_hex(), "tracker": tracker, "earlier": true}),
                Some(format!(
                    "published the earlier snapshot {infohash} to {} (its publish had not gone through)",
                    tracker.as_deref().unwrap_or("")
                )),
            ),
            Event::AnnounceOnly { tracker, status } => tell!(
                "swarmbak: {tracker} keeps no snapshots (HTTP {status} on publish: not a swarmbak tracker?); announcing only. Machines find this snapshot by its infohash, its metainfo over BEP 9"
            ),
            Event::Waiting { what, seconds } => {
                if self.json {
                    say!("{}", json!({"event": "waiting", "for": what, "seconds": seconds}));
                } else {
                    let line = format!("swarmbak: waiting for {what} ({seconds}s)");
                    match &self.bar {
                        Some(b) => b.suspend(|| tell!("{line}")),
                        None => tell!("{line}"),
                    }
                }
            }
            Event::Holders { infohash, min, copies } => self.emit(
                json!({"event": "holders", "infohash": infohash.to_hex(), "min": min, "copies": copies}),
                None,
            ),
            Event::Durable { infohash, copies, agent_keeps_seeding } => self.emit(
                json!({"event": "durable", "infohash": infohash.to_hex(), "copies": copies}),
                Some(format!(
                    "durable: every shard is held by at least {copies} other machines{}",
                    if *agent_keeps_seeding { "; the agent keeps seeding" } else { "" }
                )),
            ),
            _ => {}
        }
    }
}
