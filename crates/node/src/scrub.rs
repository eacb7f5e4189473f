//! The scrub (swarm.md §17): an agent re-verifies, a batch at a time, every shard on its
//! disk against its piece hash (and Merkle root, format 2), so that a disk that rots is
//! found out before a restore needs it. A damaged or missing shard is rebuilt in place
//! when the disk holds k good shards of its stripe (an owner's own snapshots), else given
//! up and fetched again from other holders like any missing shard; either way it is said
//! on stderr, appended to `HOME/scrub.log` and counted in `HOME/scrub.json`.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use swarmbak_agent::{Engine, Scrubbed};
use swarmbak_format::InfoHash;

/// Every shard on the disk is verified at least this often by default.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(21 * 86_400);
/// A batch is verified this often by default.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(3_600);
/// The scrub's progress and findings, in the home.
pub const STATE_FILE: &str = "scrub.json";
/// One JSON line per shard found damaged or missing.
pub const LOG_FILE: &str = "scrub.log";

/// Where the scrub is and what it has found (`HOME/scrub.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubState {
    /// Where the next batch starts: a snapshot (hex) and a piece; `None`: a new pass.
    pub cursor: Option<(String, u32)>,
    /// When the pass under way started (Unix seconds).
    pub pass_started: Option<i64>,
    /// When the last whole pass ended.
    pub last_pass: Option<i64>,
    /// Shards verified since the home was made.
    pub verified: u64,
    /// Shards found damaged, found missing, and rebuilt here, since the home was made.
    pub corrupt: u64,
    pub missing: u64,
    pub rebuilt: u64,
}

impl ScrubState {
    pub fn load(root: &Path) -> ScrubState {
        std::fs::read(root.join(STATE_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, root: &Path) -> std::io::Result<()> {
        let b = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        swarmbak_format::write_private(&root.join(STATE_FILE), &b)
    }
}

/// Shards to verify in a batch so that `held` shards are all verified once per `period`
/// with a batch every `every`: at least one.
pub fn batch_size(held: u64, every: Duration, period: Duration) -> u64 {
    let per = every.as_secs_f64() / period.as_secs_f64().max(1e-3);
    ((held as f64 * per).ceil() as u64).max(1)
}

/// A shard the scrub found wanting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub infohash: InfoHash,
    pub piece: u32,
    pub found: Scrubbed,
}

/// Verifies the next `budget` shards of the snapshots `engine` runs, in the order of
/// their info-hashes and pieces, from `state`'s cursor; a pass ends (and the next starts
/// from the beginning) when the last shard of the last snapshot is done. Returns what
/// was wanting.
pub fn batch(engine: &Engine, state: &mut ScrubState, budget: u64, now: i64) -> Vec<Finding> {
    let mut torrents = engine.torrents();
    torrents.sort_by_key(|t| t.ih.0);
    let start = state
        .cursor
        .as_ref()
        .and_then(|(h, p)| Some((InfoHash::from_hex(h).ok()?, *p)));
    if state.pass_started.is_none() {
        state.pass_started = Some(now);
    }
    let mut left = budget;
    let mut out = Vec::new();
    for t in torrents {
        let from = match start {
            Some((ih, _)) if t.ih.0 < ih.0 => continue,
            Some((ih, p)) if ih == t.ih => p,
            _ => 0,
        };
        let held: Vec<u32> = t.have().iter_ones().filter(|&p| p >= from).collect();
        for p in held {
            if left == 0 {
                state.cursor = Some((t.ih.to_hex(), p));
                return out;
            }
            left -= 1;
            match engine.scrub_piece(&t, p) {
                Ok(Scrubbed::Good | Scrubbed::NotHeld) => {}
                Ok(found) => out.push(Finding {
                    infohash: t.ih,
                    piece: p,
                    found,
                }),
                Err(e) => eprintln!("swarmbak agent: scrub: shard {p} of {}: {e}", t.ih),
            }
            state.verified += 1;
        }
    }
    state.cursor = None;
    state.pass_started = None;
    state.last_pass = Some(now);
    out
}

/// Says and records what a batch found.
pub fn report(root: &Path, state: &mut ScrubState, found: &[Finding], now: i64) {
    for f in found {
        const GIVEN_UP: &str = "given up; it is fetched again from other holders";
        let (count, name, what, then) = match f.found {
            Scrubbed::Corrupt => (&mut state.corrupt, "corrupt", "damaged", GIVEN_UP),
            Scrubbed::Missing => (&mut state.missing, "missing", "missing", GIVEN_UP),
            Scrubbed::Rebuilt => (
                &mut state.rebuilt,
                "rebuilt",
                "damaged or missing",
                "rebuilt from the other shards of its stripe here",
            ),
            Scrubbed::Good | Scrubbed::NotHeld => continue,
        };
        *count += 1;
        eprintln!(
            "swarmbak agent: scrub: shard {} of snapshot {} was {what} on this disk: {then}",
            f.piece, f.infohash
        );
        let line = serde_json::json!({
            "time": now,
            "infohash": f.infohash.to_hex(),
            "piece": f.piece,
            "found": name,
        });
        if let Err(e) = swarmbak_format::append_line(&root.join(LOG_FILE), &line.to_string()) {
            eprintln!("swarmbak agent: scrub: cannot write {LOG_FILE}: {e}");
        }
    }
}

/// The agent's scrub job: a batch every `every`, on a blocking thread (it reads shards);
/// a batch still running when the next is due is not doubled.
pub struct Scrub {
    pub every: Duration,
    pub period: Duration,
    pub running: Option<tokio::task::JoinHandle<()>>,
}

impl crate::agent::Job for Scrub {
    fn name(&self) -> &'static str {
        "scrub"
    }
    fn every(&self) -> Duration {
        self.every
    }
    fn run<'a>(
        &'a mut self,
        cx: &'a crate::agent::JobContext,
    ) -> crate::discovery::BoxFuture<'a, Result<(), crate::error::FetchError>> {
        Box::pin(async move {
            if self.running.as_ref().is_some_and(|h| !h.is_finished()) {
                return Ok(());
            }
            let (engine, root, clock) = (
                cx.engine.clone(),
                cx.node.root.clone(),
                cx.node.clock.clone(),
            );
            let (every, period) = (self.every, self.period);
            self.running = Some(tokio::task::spawn_blocking(move || {
                let mut state = ScrubState::load(&root);
                let held: u64 = engine
                    .torrents()
                    .iter()
                    .map(|t| t.inner().picker.have().count() as u64)
                    .sum();
                let now = clock.unix();
                let found = batch(&engine, &mut state, batch_size(held, every, period), now);
                report(&root, &mut state, &found, now);
                if let Err(e) = state.save(&root) {
                    eprintln!("swarmbak agent: scrub: cannot write {STATE_FILE}: {e}");
                }
            }));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_covers_the_held_shards_once_per_period() {
        let day = Duration::from_secs(86_400);
        // 51,200 shards (50 GiB of 1 MiB shards) over 21 days, a batch an hour.
        assert_eq!(
            batch_size(51_200, Duration::from_secs(3_600), 21 * day),
            102
        );
        assert_eq!(batch_size(0, Duration::from_secs(3_600), 21 * day), 1);
        assert_eq!(batch_size(10, day, day), 10);
        assert_eq!(batch_size(10, 2 * day, day), 20);
    }
}
