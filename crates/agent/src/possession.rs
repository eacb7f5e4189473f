//! Proofs of possession (protocol-spec/swarm.md §14 "Proven holders"): what this process
//! believes each authenticated holder holds, and why.
//!
//! A holder signs a *held statement* after each flush (the shards on its disk); a checker
//! counts a holder's stated shards only while the holder passed a proof for that snapshot
//! within [`RECENT`] and has not failed one since: the checker asks for randomly chosen
//! blocks of what it states and verifies them (against per-shard Merkle roots, its own
//! copy, or the shard's SHA-1). This module keeps the checker's records (engine-wide,
//! replayed from `HOME/possession.log`), plans challenges, and keeps the holder's budget
//! for answering them. It does no network I/O; the connections (crate::peer) carry the
//! messages.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::Rng;
use swarmbak_core::{Clock, InfoHash};
use swarmbak_trust::{HeldStatement, PublicKey};
use swarmbak_wire::{Bitfield, Challenge};

/// A holder counts while its last passed proof for a snapshot is at most this old
/// (seconds): three base periods, so one or two missed rounds do not drop an honest
/// holder.
pub const RECENT: i64 = 24 * 3600;
/// A new round for a (holder, snapshot) this long after the last passed one (seconds),
/// ± [`JITTER`].
pub const BASE_PERIOD: i64 = 8 * 3600;
/// The random spread of [`BASE_PERIOD`] (seconds), so checkers do not all ask at once.
pub const JITTER: i64 = 2 * 3600;
/// Base rounds per (checker, holder) per base period, spread over the holder's
/// snapshots: a holder that states S snapshots to this process has each one asked every
/// [`BASE_PERIOD`] × ⌈S / 8⌉, and counted for [`RECENT`] × ⌈S / 8⌉ after a pass (S as
/// it was when the round passed), so a
/// checker's base rounds cost a holder the same however many snapshots they share.
pub const ROUNDS_PER_PERIOD: usize = 8;
/// At most one round prompted by stated shards not proven yet, per (holder, snapshot),
/// this often (seconds).
pub const NEW_PIECES_EVERY: i64 = 2;
/// Blocks sampled per round when the checker lacks the data and has Merkle roots.
pub const SAMPLED_BLOCKS: usize = 2;
/// Digest entries per round when the checker has the data, and blocks per entry.
pub const DIGEST_ENTRIES: usize = 2;
pub const DIGEST_BLOCKS: u32 = 4;
/// Bytes of a block (BEP 52's leaf).
pub const BLOCK: u32 = 16384;
/// What a holder reads to answer proofs, per rolling day: this share of what it holds
/// (1 %), but at least [`BUDGET_FLOOR`].
pub const BUDGET_SHARE: u64 = 100;
pub const BUDGET_FLOOR: u64 = 64 << 20;
/// One checker may use at most this fraction (½) of a holder's daily budget.
pub const BUDGET_PER_CHECKER_DIVISOR: u64 = 2;
/// How long failures are remembered (seconds), and the longest distrust.
pub const MEMORY: i64 = 30 * 24 * 3600;

/// Where a challenge's time limit starts: the holder then has 1 s more per 4 MiB it must
/// send (blocks) or per 32 MiB it must read (digests).
pub fn deadline_secs(c: &Challenge) -> u64 {
    let per_second: u64 = match c {
        Challenge::Blocks(_) => 4 << 20,
        Challenge::Digest(_) => 32 << 20,
    };
    5 + proven_bytes(c) / per_second
}

/// The bytes a challenge is about: 16 KiB per block asked, the ranges to digest (what
/// the holder's budget counts).
pub fn proven_bytes(c: &Challenge) -> u64 {
    match c {
        Challenge::Blocks(e) => e.len() as u64 * u64::from(BLOCK),
        Challenge::Digest(e) => e
            .iter()
            .map(|&(_, _, n)| u64::from(n) * u64::from(BLOCK))
            .sum(),
    }
}

/// The outcome of one round, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// An answer did not verify, or the holder said it lacks a shard it still states.
    Failed,
    /// The holder refused as busy (over its budget): its claim stops counting here until
    /// a round passes, without distrust.
    Refused,
}

/// What a checker knows of one (holder, snapshot).
#[derive(Debug, Clone, Default)]
struct Claim {
    /// The holder's latest statement (its `seq` and the shards it states).
    seq: u64,
    stated: Option<Arc<Bitfield>>,
    /// The statement a passed round was drawn from: only its shards (still stated)
    /// count, so shards stated since wait for a round that samples them.
    proven: Option<Arc<Bitfield>>,
    /// When a round last passed (Unix seconds), and for how long after it the claim
    /// counts ([`RECENT`] stretched with the holder's snapshots when it passed).
    last_ok: Option<i64>,
    recent_for: i64,
    /// When the next base round is due (Unix seconds), drawn after each pass.
    next_round: i64,
    /// When a statement that added shards last prompted a round.
    last_prompted: i64,
    /// Failed rounds within [`MEMORY`] (Unix seconds).
    failures: Vec<i64>,
    /// Distrusted until (Unix seconds): not counted, not a placement candidate.
    distrust_until: i64,
    /// A challenge that timed out or was refused as busy: asked again as it was
    /// (dodging by timing out gains nothing).
    retry: Option<Challenge>,
}

/// One line of `HOME/possession.log` (JSON).
#[derive(Debug, Clone)]
struct LogLine {
    time: i64,
    holder: PublicKey,
    infohash: InfoHash,
    result: Outcome,
    mode: &'static str,
    entries: usize,
    seq: u64,
    why: String,
}

/// The checker's records and the holder's answering budget, engine-wide.
#[derive(Debug)]
pub struct Possession {
    claims: Mutex<HashMap<(PublicKey, InfoHash), Claim>>,
    log: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    budget: Mutex<Budget>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a statement changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// Not newer than one already taken (replayed or reordered): ignored.
    Stale,
    /// Taken; these shards were not in the previous statement.
    Taken { added: Vec<u32> },
}

impl Possession {
    /// Records kept in memory only (short-lived processes still remember within a run).
    pub fn new(clock: Arc<dyn Clock>, log: Option<PathBuf>) -> Arc<Possession> {
        let p = Possession {
            claims: Mutex::new(HashMap::new()),
            log,
            clock,
            budget: Mutex::new(Budget::default()),
        };
        p.replay();
        Arc::new(p)
    }

    fn now(&self) -> i64 {
        self.clock.unix()
    }

    /// A verified statement from `holder` (the key it authenticated with).
    pub fn on_statement(&self, holder: PublicKey, ih: InfoHash, s: &HeldStatement) -> Statement {
        let Ok(stated) = Bitfield::from_bytes(&s.have, s.pieces) else {
            return Statement::Stale;
        };
        let mut g = lock(&self.claims);
        let c = g.entry((holder, ih)).or_default();
        if s.seq <= c.seq {
            return Statement::Stale;
        }
        let added = stated
            .iter_ones()
            .filter(|&p| !c.stated.as_ref().is_some_and(|old| old.get(p)))
            .collect();
        c.seq = s.seq;
        c.stated = Some(Arc::new(stated));
        Statement::Taken { added }
    }

    /// The holder's latest statement, whatever its proofs.
    pub fn stated(&self, holder: &PublicKey, ih: &InfoHash) -> Option<Arc<Bitfield>> {
        lock(&self.claims)
            .get(&(*holder, *ih))
            .and_then(|c| c.stated.clone())
    }

    /// How many times longer than the base schedule `holder`'s rounds are spaced here:
    /// ⌈S / [`ROUNDS_PER_PERIOD`]⌉, S = the snapshots it states to this process.
    fn stretch(g: &HashMap<(PublicKey, InfoHash), Claim>, holder: &PublicKey) -> i64 {
        let s = g
            .iter()
            .filter(|((h, _), c)| h == holder && c.stated.as_ref().is_some_and(|b| !b.has_none()))
            .count();
        s.div_ceil(ROUNDS_PER_PERIOD).max(1) as i64
    }

    /// The shards `holder` counts for on `ih`: those of the statement its last passed
    /// round was drawn from that it still states, if that round is at most [`RECENT`]
    /// (stretched with the holder's snapshots when it passed, [`ROUNDS_PER_PERIOD`]) old
    /// and the holder is not distrusted. (No scan of other claims: this runs for every
    /// holder each time copies are counted.)
    pub fn counted(&self, holder: &PublicKey, ih: &InfoHash) -> Option<Bitfield> {
        let now = self.now();
        let g = lock(&self.claims);
        let c = g.get(&(*holder, *ih))?;
        let recent = c
            .last_ok
            .is_some_and(|t| now - t <= c.recent_for && t <= now + 60);
        if !recent || c.distrust_until > now {
            return None;
        }
        let (proven, stated) = (c.proven.as_ref()?, c.stated.as_ref()?);
        let mut b = Bitfield::new(stated.len());
        for p in proven.iter_ones().filter(|&p| stated.get(p)) {
            b.set(p, true);
        }
        Some(b)
    }

    /// Stated shards that no passed round was drawn from yet.
    pub fn unproven(&self, holder: &PublicKey, ih: &InfoHash) -> Vec<u32> {
        let g = lock(&self.claims);
        let Some(c) = g.get(&(*holder, *ih)) else {
            return Vec::new();
        };
        let Some(stated) = &c.stated else {
            return Vec::new();
        };
        stated
            .iter_ones()
            .filter(|&p| !c.proven.as_ref().is_some_and(|b| b.get(p)))
            .collect()
    }

    /// Whether `holder` failed a proof on `ih` recently enough to be left out of
    /// placement for it (or three snapshots within a week: out of every one).
    pub fn distrusted(&self, holder: &PublicKey, ih: &InfoHash) -> bool {
        let now = self.now();
        lock(&self.claims)
            .get(&(*holder, *ih))
            .is_some_and(|c| c.distrust_until > now)
    }

    /// Whether a round for (holder, ih) is due now: never proven, the base period is
    /// over, or it states shards no passed round was drawn from (at most every
    /// [`NEW_PIECES_EVERY`]).
    pub fn due(&self, holder: &PublicKey, ih: &InfoHash) -> bool {
        let now = self.now();
        let mut g = lock(&self.claims);
        let Some(c) = g.get_mut(&(*holder, *ih)) else {
            return false;
        };
        if c.stated.as_ref().is_none_or(|s| s.has_none()) || c.distrust_until > now {
            return false;
        }
        if c.last_ok.is_none() || now >= c.next_round {
            return true;
        }
        let unproven = match (&c.stated, &c.proven) {
            (Some(s), Some(p)) => s.iter_ones().any(|i| !p.get(i)),
            _ => true,
        };
        unproven && now - c.last_prompted >= NEW_PIECES_EVERY
    }

    /// The holder asked us (a checker) for a block of `piece`, which it states it holds:
    /// it is fetching it, so its claim on that shard stops counting here until a round
    /// drawn from a later statement samples it again (a holder relaying its answers from
    /// the checker itself, swarm.md §14.6). Returns whether a counted claim was dropped.
    pub fn requested(&self, holder: &PublicKey, ih: &InfoHash, piece: u32) -> bool {
        let mut g = lock(&self.claims);
        let Some(c) = g.get_mut(&(*holder, *ih)) else {
            return false;
        };
        if !c.stated.as_ref().is_some_and(|s| s.get(piece)) {
            return false;
        }
        match c.proven.as_mut() {
            Some(p) if p.get(piece) => {
                Arc::make_mut(p).set(piece, false);
                true
            }
            _ => false,
        }
    }

    /// The challenge left over from a round that timed out, to ask again.
    pub fn take_retry(&self, holder: &PublicKey, ih: &InfoHash) -> Option<Challenge> {
        lock(&self.claims)
            .get_mut(&(*holder, *ih))
            .and_then(|c| c.retry.take())
    }

    /// A round timed out, the connection closed mid-round, or the holder was busy:
    /// nothing changes but the same challenge is asked next time.
    pub fn unanswered(&self, holder: &PublicKey, ih: &InfoHash, c: Challenge) {
        if let Some(cl) = lock(&self.claims).get_mut(&(*holder, *ih)) {
            cl.retry = Some(c);
        }
    }

    /// A round is being asked now (rounds for stated shards not proven yet are spaced
    /// by [`NEW_PIECES_EVERY`]).
    pub fn asking(&self, holder: &PublicKey, ih: &InfoHash) {
        let now = self.now();
        if let Some(c) = lock(&self.claims).get_mut(&(*holder, *ih)) {
            c.last_prompted = now;
        }
    }

    /// The holder refused a round as busy: its claim on `ih` no longer counts here
    /// until a round passes (a refused proof proves nothing), but it is not distrusted,
    /// and the same challenge is asked again.
    pub fn refused(&self, holder: PublicKey, ih: InfoHash, c: Challenge) {
        let now = self.now();
        let (entries, mode) = (c.len(), mode_name(&c));
        let seq = match lock(&self.claims).get_mut(&(holder, ih)) {
            Some(cl) => {
                cl.last_ok = None;
                cl.retry = Some(c);
                cl.seq
            }
            None => 0,
        };
        self.append(LogLine {
            time: now,
            holder,
            infohash: ih,
            result: Outcome::Refused,
            mode,
            entries,
            seq,
            why: "busy".into(),
        });
    }

    /// A round drawn from statement `from` passed.
    pub fn passed(&self, holder: PublicKey, ih: InfoHash, c: &Challenge, from: Arc<Bitfield>) {
        let now = self.now();
        let seq = {
            let mut g = lock(&self.claims);
            let stretch = Self::stretch(&g, &holder);
            let cl = g.entry((holder, ih)).or_default();
            cl.proven = Some(from);
            cl.last_ok = Some(now);
            cl.recent_for = RECENT * stretch;
            cl.next_round =
                now + stretch * (BASE_PERIOD + rand::thread_rng().gen_range(-JITTER..=JITTER));
            cl.last_prompted = now;
            cl.retry = None;
            cl.seq
        };
        self.append(LogLine {
            time: now,
            holder,
            infohash: ih,
            result: Outcome::Passed,
            mode: mode_name(c),
            entries: c.len(),
            seq,
            why: String::new(),
        });
    }

    /// A round failed: the holder's claims on `ih` are dropped at once, and it is
    /// distrusted for it for 24 h × 2^(n−1) (n: its failures on `ih` within 30 days,
    /// at most 30 days); three snapshots failed within 7 days distrust it on every one.
    pub fn failed(&self, holder: PublicKey, ih: InfoHash, c: &Challenge, why: &str) {
        let now = self.now();
        let seq = self.fail_at(holder, ih, now);
        self.append(LogLine {
            time: now,
            holder,
            infohash: ih,
            result: Outcome::Failed,
            mode: mode_name(c),
            entries: c.len(),
            seq,
            why: why.to_string(),
        });
    }

    fn fail_at(&self, holder: PublicKey, ih: InfoHash, now: i64) -> u64 {
        let mut g = lock(&self.claims);
        let seq = {
            let cl = g.entry((holder, ih)).or_default();
            cl.failures.retain(|&t| now - t < MEMORY);
            cl.failures.push(now);
            let n = cl.failures.len() as u32;
            let span = (24 * 3600i64)
                .saturating_mul(1i64 << (n - 1).min(10))
                .min(MEMORY);
            cl.distrust_until = cl.distrust_until.max(now + span);
            cl.last_ok = None;
            cl.proven = None;
            cl.retry = None;
            cl.seq
        };
        let week = 7 * 24 * 3600;
        let failed_snapshots = g
            .iter()
            .filter(|((h, _), c)| *h == holder && c.failures.iter().any(|&t| now - t < week))
            .count();
        if failed_snapshots >= 3 {
            for ((h, _), c) in g.iter_mut() {
                if *h == holder {
                    c.distrust_until = c.distrust_until.max(now + week);
                    c.last_ok = None;
                    c.proven = None;
                }
            }
        }
        seq
    }

    /// The holder side: may we read `bytes` more to answer `checker`, holding
    /// `held_bytes` for others? `Err(seconds)`: refuse as busy, retry after that.
    pub fn spend(&self, checker: &PublicKey, bytes: u64, held_bytes: u64) -> Result<(), u32> {
        let hour = self.now().div_euclid(3600);
        lock(&self.budget).spend(hour, checker, bytes, held_bytes)
    }

    fn append(&self, l: LogLine) {
        let Some(path) = &self.log else { return };
        let line = serde_json::json!({
            "time": l.time,
            "holder": l.holder.to_hex(),
            "infohash": l.infohash.to_hex(),
            "result": match l.result {
                Outcome::Passed => 1,
                Outcome::Failed => 0,
                Outcome::Refused => 2,
            },
            "mode": l.mode,
            "entries": l.entries,
            "seq": l.seq,
            "why": l.why,
        });
        // One write of the whole line: checkers writing at once (the connections of one
        // process, or a seed and the agent sharing a home) never interleave their lines.
        if let Err(e) = swarmbak_format::append_line(path, &line.to_string()) {
            eprintln!(
                "swarmbak: cannot record a proof of possession in {}: {e}",
                path.display()
            );
        }
    }

    /// Replays the log's last 30 days (failures and distrust; passes within
    /// [`RECENT`] need the statement they were for, which a restart does not keep, so
    /// they are not replayed: a restarted checker proves again before it counts), and
    /// rewrites it without older lines.
    fn replay(&self) {
        let Some(path) = &self.log else { return };
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        let now = self.now();
        let mut kept = String::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let time = v["time"].as_i64().unwrap_or(0);
            if now - time >= MEMORY || time > now + 3600 {
                continue;
            }
            kept.push_str(line);
            kept.push('\n');
            if v["result"].as_i64() != Some(0) {
                continue;
            }
            let holder = v["holder"]
                .as_str()
                .and_then(|h| PublicKey::from_hex(h).ok());
            let ih = v["infohash"]
                .as_str()
                .and_then(|h| InfoHash::from_hex(h).ok());
            if let (Some(h), Some(ih)) = (holder, ih) {
                self.fail_at(h, ih, time);
            }
        }
        if kept.len() < text.len() {
            let tmp = path.with_extension("log.tmp");
            if std::fs::write(&tmp, kept).is_ok() {
                let _ = std::fs::rename(&tmp, path);
            }
        }
    }
}

fn mode_name(c: &Challenge) -> &'static str {
    match c {
        Challenge::Blocks(_) => "blocks",
        Challenge::Digest(_) => "digest",
    }
}

/// Bytes read to answer proofs, per hour of the last day, in total and per checker.
#[derive(Debug, Default)]
struct Budget {
    hours: HashMap<i64, (u64, HashMap<PublicKey, u64>)>,
}

impl Budget {
    fn spend(
        &mut self,
        hour: i64,
        checker: &PublicKey,
        bytes: u64,
        held_bytes: u64,
    ) -> Result<(), u32> {
        self.hours.retain(|&h, _| hour - h < 24);
        let cap = (held_bytes / BUDGET_SHARE).max(BUDGET_FLOOR);
        let per_checker = cap / BUDGET_PER_CHECKER_DIVISOR;
        let total: u64 = self.hours.values().map(|(t, _)| t).sum();
        let mine: u64 = self
            .hours
            .values()
            .map(|(_, m)| m.get(checker).copied().unwrap_or(0))
            .sum();
        if total + bytes > cap || mine + bytes > per_checker {
            // The oldest hour leaves the window first.
            let oldest = self.hours.keys().min().copied().unwrap_or(hour);
            return Err(((oldest + 24 - hour).max(1) * 3600) as u32);
        }
        let e = self.hours.entry(hour).or_default();
        e.0 += bytes;
        *e.1.entry(*checker).or_default() += bytes;
        Ok(())
    }
}

/// Plans a round on `stated` (the holder's statement): digests of ranges of shards the
/// checker has (`ours`), else sampled blocks checked against Merkle roots (`roots`),
/// else one whole shard (checked against its SHA-1). At least one entry is taken from
/// `prefer` (shards the statement just added) when there are some. `blocks` is the
/// number of 16 KiB blocks in a shard. `None`: nothing stated.
pub fn plan(
    stated: &Bitfield,
    prefer: &[u32],
    ours: &Bitfield,
    roots: bool,
    blocks: u32,
    rng: &mut impl Rng,
) -> Option<(Challenge, Option<[u8; 32]>)> {
    let all: Vec<u32> = stated.iter_ones().collect();
    if all.is_empty() || blocks == 0 {
        return None;
    }
    let prefer: Vec<u32> = prefer.iter().copied().filter(|&p| stated.get(p)).collect();
    let pick = |rng: &mut dyn rand::RngCore, from: &[u32]| from[rng.gen_range(0..from.len())];
    let mut chosen = Vec::new();
    let wanted = SAMPLED_BLOCKS.max(DIGEST_ENTRIES);
    if !prefer.is_empty() {
        chosen.push(pick(rng, &prefer));
    }
    while chosen.len() < wanted {
        chosen.push(pick(rng, &all));
    }
    if chosen.iter().all(|&p| ours.get(p)) {
        let count = DIGEST_BLOCKS.min(blocks);
        let entries = chosen
            .iter()
            .take(DIGEST_ENTRIES)
            .map(|&p| (p, rng.gen_range(0..=blocks - count), count))
            .collect();
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        return Some((Challenge::Digest(entries), Some(nonce)));
    }
    if roots {
        let entries = chosen
            .iter()
            .take(SAMPLED_BLOCKS)
            .map(|&p| (p, rng.gen_range(0..blocks)))
            .collect();
        return Some((Challenge::Blocks(entries), None));
    }
    // Format 1 and no copy of our own: the whole of one shard, checked against its SHA-1.
    let p = chosen[0];
    Some((
        Challenge::Blocks((0..blocks).map(|b| (p, b)).collect()),
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use swarmbak_core::ManualClock;
    use swarmbak_trust::SigningKey;

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        ))
    }

    fn statement(
        key: &SigningKey,
        ih: InfoHash,
        seq: u64,
        have: &[u32],
        pieces: u32,
    ) -> HeldStatement {
        let mut b = Bitfield::new(pieces);
        for &p in have {
            b.set(p, true);
        }
        HeldStatement {
            infohash: ih.0,
            key: key.public(),
            pieces,
            have: b.as_bytes().to_vec(),
            seq,
            flushed: 0,
        }
    }

    #[test]
    fn only_a_recently_proven_statement_counts_and_a_failure_drops_it_for_longer_each_time() {
        let c = clock();
        let p = Possession::new(c.clone(), None);
        let h = SigningKey::from_seed([1; 32]);
        let ih = InfoHash([9; 20]);
        let ch = Challenge::Blocks(vec![(0, 0)]);
        assert_eq!(
            p.on_statement(h.public(), ih, &statement(&h, ih, 1, &[0, 1], 4)),
            Statement::Taken { added: vec![0, 1] }
        );
        assert!(p.counted(&h.public(), &ih).is_none(), "stated, not proven");
        assert!(p.due(&h.public(), &ih));
        let from = p.stated(&h.public(), &ih).unwrap();
        p.asking(&h.public(), &ih);
        p.passed(h.public(), ih, &ch, from);
        assert_eq!(p.counted(&h.public(), &ih).map(|b| b.count()), Some(2));
        assert!(!p.due(&h.public(), &ih));
        // Shards stated after the round do not count until a round samples them.
        p.on_statement(h.public(), ih, &statement(&h, ih, 2, &[0, 1, 2], 4));
        assert_eq!(p.counted(&h.public(), &ih).map(|b| b.count()), Some(2));
        assert_eq!(p.unproven(&h.public(), &ih), vec![2]);
        assert!(
            !p.due(&h.public(), &ih),
            "not within NEW_PIECES_EVERY of the last round"
        );
        c.advance(std::time::Duration::from_secs(NEW_PIECES_EVERY as u64));
        assert!(p.due(&h.public(), &ih));
        let from = p.stated(&h.public(), &ih).unwrap();
        p.passed(h.public(), ih, &ch, from);
        assert_eq!(p.counted(&h.public(), &ih).map(|b| b.count()), Some(3));
        // A replayed (older or equal) statement changes nothing.
        assert_eq!(
            p.on_statement(h.public(), ih, &statement(&h, ih, 2, &[0, 1, 2, 3], 4)),
            Statement::Stale
        );
        // A newer one that withdraws a shard takes effect at once.
        p.on_statement(h.public(), ih, &statement(&h, ih, 3, &[1], 4));
        assert_eq!(p.counted(&h.public(), &ih).map(|b| b.count()), Some(1));
        // Not due again before the base period, due after it; stale after RECENT.
        assert!(!p.due(&h.public(), &ih));
        c.advance(std::time::Duration::from_secs(
            (BASE_PERIOD + JITTER + 1) as u64,
        ));
        assert!(p.due(&h.public(), &ih));
        c.advance(std::time::Duration::from_secs(RECENT as u64));
        assert!(p.counted(&h.public(), &ih).is_none(), "no proof for a day");
        let from = p.stated(&h.public(), &ih).unwrap();
        p.passed(h.public(), ih, &ch, from);
        p.failed(h.public(), ih, &ch, "bad block");
        assert!(p.counted(&h.public(), &ih).is_none());
        assert!(p.distrusted(&h.public(), &ih));
        assert!(!p.due(&h.public(), &ih), "no rounds while distrusted");
        c.advance(std::time::Duration::from_secs(24 * 3600 + 1));
        assert!(
            !p.distrusted(&h.public(), &ih),
            "the first failure: one day"
        );
        p.failed(h.public(), ih, &ch, "again");
        c.advance(std::time::Duration::from_secs(24 * 3600 + 1));
        assert!(p.distrusted(&h.public(), &ih), "the second: two days");
    }

    #[test]
    fn a_holder_of_many_snapshots_is_asked_as_often_as_one_of_eight() {
        let c = clock();
        let p = Possession::new(c.clone(), None);
        let h = SigningKey::from_seed([3; 32]);
        let ch = Challenge::Blocks(vec![(0, 0)]);
        // 20 snapshots stated here: ⌈20 / 8⌉ = 3 times the base schedule.
        let ihs: Vec<InfoHash> = (0..20u8).map(|i| InfoHash([i; 20])).collect();
        for ih in &ihs {
            p.on_statement(h.public(), *ih, &statement(&h, *ih, 1, &[0], 4));
            let from = p.stated(&h.public(), ih).unwrap();
            p.passed(h.public(), *ih, &ch, from);
        }
        let due = |p: &Possession| ihs.iter().filter(|ih| p.due(&h.public(), ih)).count();
        // The first snapshots were planned before the others were stated: a round at
        // most one base period later. From then on, every 3 base periods.
        c.advance(std::time::Duration::from_secs(
            (BASE_PERIOD + JITTER + 1) as u64,
        ));
        assert!(
            due(&p) < ihs.len(),
            "not every snapshot is due after one period"
        );
        for ih in &ihs {
            if p.due(&h.public(), ih) {
                let from = p.stated(&h.public(), ih).unwrap();
                p.passed(h.public(), *ih, &ch, from);
            }
        }
        assert_eq!(due(&p), 0);
        // Counted beyond a day (RECENT × 3), asked again within 3 base periods.
        c.advance(std::time::Duration::from_secs((RECENT + 3600) as u64));
        assert!(ihs.iter().all(|ih| p.counted(&h.public(), ih).is_some()));
        c.advance(std::time::Duration::from_secs(
            (2 * (BASE_PERIOD + JITTER)) as u64,
        ));
        assert_eq!(
            due(&p),
            ihs.len(),
            "every snapshot due within 3 base periods"
        );
        c.advance(std::time::Duration::from_secs((3 * RECENT) as u64));
        assert!(ihs.iter().all(|ih| p.counted(&h.public(), ih).is_none()));
        // One snapshot alone: the base schedule.
        let lone = SigningKey::from_seed([4; 32]);
        let ih = InfoHash([99; 20]);
        p.on_statement(lone.public(), ih, &statement(&lone, ih, 1, &[0], 4));
        let from = p.stated(&lone.public(), &ih).unwrap();
        p.passed(lone.public(), ih, &ch, from);
        c.advance(std::time::Duration::from_secs(
            (BASE_PERIOD + JITTER + 1) as u64,
        ));
        assert!(p.due(&lone.public(), &ih));
    }

    #[test]
    fn a_holder_that_asks_the_checker_for_a_shard_it_states_stops_counting_for_it() {
        let c = clock();
        let p = Possession::new(c.clone(), None);
        let h = SigningKey::from_seed([5; 32]);
        let ih = InfoHash([5; 20]);
        p.on_statement(h.public(), ih, &statement(&h, ih, 1, &[0, 1, 2], 4));
        let from = p.stated(&h.public(), &ih).unwrap();
        p.passed(h.public(), ih, &Challenge::Blocks(vec![(0, 0)]), from);
        assert_eq!(p.counted(&h.public(), &ih).map(|b| b.count()), Some(3));
        // A shard it does not state: fetching it is what holders do.
        assert!(!p.requested(&h.public(), &ih, 3));
        // One it states: it is relaying from us.
        assert!(p.requested(&h.public(), &ih, 1));
        assert_eq!(p.counted(&h.public(), &ih).map(|b| b.count()), Some(2));
        assert_eq!(p.unproven(&h.public(), &ih), vec![1], "asked again first");
        assert!(
            !p.distrusted(&h.public(), &ih),
            "not a failure: it may have lost it"
        );
    }

    #[test]
    fn a_busy_refusal_stops_the_claim_counting_without_distrust() {
        let c = clock();
        let p = Possession::new(c.clone(), None);
        let h = SigningKey::from_seed([8; 32]);
        let ih = InfoHash([1; 20]);
        let ch = Challenge::Blocks(vec![(0, 1)]);
        p.on_statement(h.public(), ih, &statement(&h, ih, 1, &[0], 2));
        p.passed(h.public(), ih, &ch, p.stated(&h.public(), &ih).unwrap());
        assert!(p.counted(&h.public(), &ih).is_some());
        p.refused(h.public(), ih, ch.clone());
        assert!(
            p.counted(&h.public(), &ih).is_none(),
            "a refused proof proves nothing"
        );
        assert!(!p.distrusted(&h.public(), &ih));
        assert_eq!(
            p.take_retry(&h.public(), &ih),
            Some(ch),
            "the same challenge next"
        );
        assert!(p.due(&h.public(), &ih));
    }

    #[test]
    fn failures_survive_a_restart_through_the_log() {
        let c = clock();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("possession.log");
        let h = SigningKey::from_seed([2; 32]);
        let ih = InfoHash([3; 20]);
        let ch = Challenge::Digest(vec![(0, 0, 8)]);
        {
            let p = Possession::new(c.clone(), Some(log.clone()));
            p.on_statement(h.public(), ih, &statement(&h, ih, 1, &[0], 2));
            p.passed(h.public(), ih, &ch, p.stated(&h.public(), &ih).unwrap());
            p.failed(h.public(), ih, &ch, "digest differs");
        }
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("\"result\":0") && text.contains("digest differs"));
        let p = Possession::new(c.clone(), Some(log.clone()));
        assert!(p.distrusted(&h.public(), &ih));
        // Three snapshots failed within a week: distrusted on every snapshot.
        let other = InfoHash([4; 20]);
        p.on_statement(h.public(), other, &statement(&h, other, 1, &[0], 2));
        p.passed(
            h.public(),
            other,
            &ch,
            p.stated(&h.public(), &other).unwrap(),
        );
        for n in 5..7u8 {
            p.failed(h.public(), InfoHash([n; 20]), &ch, "x");
        }
        assert!(p.distrusted(&h.public(), &other));
        // Lines older than 30 days are dropped at the next start.
        c.advance(std::time::Duration::from_secs(MEMORY as u64 + 1));
        let _ = Possession::new(c, Some(log.clone()));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
    }

    #[test]
    fn checkers_writing_at_once_never_interleave_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("possession.log");
        let ch = Challenge::Digest(vec![(0, 0, 8)]);
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let (log, ch) = (log.clone(), ch.clone());
                s.spawn(move || {
                    let p = Possession::new(clock(), Some(log));
                    let h = SigningKey::from_seed([10 + t; 32]);
                    for n in 0..50u8 {
                        p.failed(h.public(), InfoHash([n; 20]), &ch, "digest differs");
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.lines().count(), 200);
        for l in text.lines() {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(v["result"], 0, "{l}");
        }
    }

    #[test]
    fn the_budget_refuses_above_one_percent_a_day_and_half_of_it_per_checker() {
        let c = clock();
        let p = Possession::new(c.clone(), None);
        let a = SigningKey::from_seed([5; 32]).public();
        let b = SigningKey::from_seed([6; 32]).public();
        let held = 100 * BUDGET_FLOOR; // 1 % = BUDGET_FLOOR
        let share = BUDGET_FLOOR / BUDGET_PER_CHECKER_DIVISOR;
        assert_eq!(p.spend(&a, share, held), Ok(()));
        assert!(
            p.spend(&a, 1, held).is_err(),
            "one checker: at most its share"
        );
        assert_eq!(p.spend(&b, share, held), Ok(()));
        let third = SigningKey::from_seed([7; 32]).public();
        let retry = p.spend(&third, 1, held).unwrap_err();
        assert!(retry > 0 && retry <= 24 * 3600, "the whole budget is spent");
        c.advance(std::time::Duration::from_secs(24 * 3600));
        assert_eq!(p.spend(&a, share, held), Ok(()), "a day later");
    }

    #[test]
    fn plans_digests_with_our_copy_blocks_with_roots_and_a_whole_shard_otherwise() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut stated = Bitfield::new(10);
        stated.set(3, true);
        stated.set(7, true);
        let none = Bitfield::new(10);
        let all = Bitfield::full(10);
        let (c, nonce) = plan(&stated, &[7], &all, true, 64, &mut rng).unwrap();
        assert!(nonce.is_some());
        match c {
            Challenge::Digest(e) => {
                assert_eq!(e.len(), DIGEST_ENTRIES);
                assert_eq!(e[0].0, 7, "a new shard first");
                assert!(e
                    .iter()
                    .all(|&(p, f, n)| stated.get(p) && n == DIGEST_BLOCKS && f + n <= 64));
            }
            other => panic!("{other:?}"),
        }
        let (c, nonce) = plan(&stated, &[], &none, true, 64, &mut rng).unwrap();
        assert!(nonce.is_none());
        match c {
            Challenge::Blocks(e) => {
                assert_eq!(e.len(), SAMPLED_BLOCKS);
                assert!(e.iter().all(|&(p, b)| stated.get(p) && b < 64));
            }
            other => panic!("{other:?}"),
        }
        let (c, _) = plan(&stated, &[], &none, false, 64, &mut rng).unwrap();
        match c {
            Challenge::Blocks(e) => {
                assert_eq!(e.len(), 64);
                assert!(e.iter().all(|&(p, _)| p == e[0].0));
            }
            other => panic!("{other:?}"),
        }
        assert!(plan(&none, &[], &all, true, 64, &mut rng).is_none());
    }
}
