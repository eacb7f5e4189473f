//! Rendering: one JSON object per line with `--json`, text otherwise.

use serde_json::json;
use swarmbak_core::InfoHash;
use swarmbak_format::SnapshotInfo;

use crate::Ctx;

pub fn out(ctx: &Ctx, v: serde_json::Value, human: impl FnOnce() -> String) {
    if ctx.json {
        say!("{v}");
    } else {
        say!("{}", human());
    }
}

pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// A Unix time as `YYYY-MM-DD HH:MM:SSZ` (civil date, UTC, without a date library).
pub fn utc(t: i64) -> String {
    swarmbak_core::utc(t)
}

/// The lines `seed` prints once a snapshot exists: the infohash first.
pub fn print_snapshot(
    ctx: &Ctx,
    ih: &InfoHash,
    info: Option<&SnapshotInfo>,
    secs: f64,
    tracker: bool,
) {
    let Some(i) = info else {
        if ctx.json {
            say!("{}", json!({"infohash": ih.to_hex(), "event": "snapshot"}));
        } else {
            say!("{ih}");
        }
        return;
    };
    if ctx.json {
        say!(
            "{}",
            json!({"infohash": ih.to_hex(), "event": "snapshot", "files": i.files, "dirs": i.dirs,
                   "symlinks": i.symlinks, "bytes": i.bytes, "new_bytes": i.new_bytes,
                   "payload_bytes": i.payload_bytes, "shard_bytes": i.shard_bytes,
                   "chunks": i.chunks, "new_chunks": i.new_chunks, "parents": i.parents,
                   "skipped": i.skipped, "seconds": secs})
        );
        if !tracker {
            say!(
                "{}",
                json!({"event": "published", "infohash": ih.to_hex(), "tracker": null})
            );
        }
    } else {
        say!("{ih}");
        say!(
            "snapshot of {} files, {} dirs, {} symlinks ({}): {} new in {} of {} chunks; payload {}, shards {}; {:.1}s",
            i.files,
            i.dirs,
            i.symlinks,
            human_bytes(i.bytes),
            human_bytes(i.new_bytes),
            i.new_chunks,
            i.chunks,
            human_bytes(i.payload_bytes),
            human_bytes(i.shard_bytes),
            secs
        );
        if !i.skipped.is_empty() {
            say!(
                "{} entries were skipped (see the warnings above)",
                i.skipped.len()
            );
        }
        if !tracker {
            say!("published in the local store (no tracker configured)");
        }
    }
}

/// `swarmbak status` as text.
/// What `swarmbak forget` did (or would do).
pub fn forgot_text(f: &swarmbak_node::retention::Forgot) -> String {
    let mut o = String::new();
    for s in &f.plan.snapshots {
        let what = if s.keep {
            format!("keep    ({})", s.reasons.join(", "))
        } else if s.stripes_kept == 0 {
            "forget".to_string()
        } else {
            format!(
                "forget  ({} of {} stripes stay: kept snapshots read them)",
                s.stripes_kept, s.stripes
            )
        };
        o.push_str(&format!(
            "{}  {}  {}\n",
            &s.infohash[..16],
            utc(s.time),
            what
        ));
    }
    let n = f.retired.iter().filter(|r| !r.again).count();
    let (freed, kept) = f.plan.totals();
    let here: u64 = f.retired.iter().map(|r| r.bytes_freed_here).sum();
    let verb = if f.dry_run { "would be" } else { "were" };
    o.push_str(&format!(
        "{n} snapshot(s) {verb} forgotten: {} of shards go from every holder after the grace period, {} stay because kept snapshots read them",
        human_bytes(freed),
        human_bytes(kept)
    ));
    if !f.dry_run {
        o.push_str(&format!("; {} let go here now", human_bytes(here)));
    }
    if let Some(s) = &f.sent {
        o.push_str(&format!("\nretirements sent to the tracker: {}", s.sent));
        if s.waiting > 0 {
            o.push_str(&format!(
                "; {} wait (the agent sends them): {}",
                s.waiting,
                s.error.as_deref().unwrap_or("")
            ));
        }
    }
    let again = f.retired.len() - n;
    if again > 0 {
        o.push_str(&format!(
            "\n{again} snapshot(s) forgotten before keep fewer stripes now"
        ));
    }
    o
}

pub fn status_text(st: &swarmbak_node::status::AgentStatus) -> String {
    use swarmbak_core::{compact_duration, spoken_duration};
    let now = swarmbak_tracker::server::unix_now();
    let mut o = format!("agent of {:?}, listening on {}\n", st.machine, st.listen);
    let b = &st.backup;
    if b.paths.is_empty() {
        o.push_str("backups: no backup set (swarmbak init --backup PATH)\n");
    } else {
        o.push_str(&format!(
            "backup set: {} (every {}, set by {})\n",
            b.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            compact_duration(b.every),
            b.every_from
        ));
        o.push_str(&format!("changes: {}\n", b.changes));
        match &b.running {
            Some(r) => o.push_str(&format!(
                "now: backing up since {} ({}; {}): {}, {} of {} read\n",
                utc(r.started),
                r.why,
                r.how,
                r.stage,
                human_bytes(r.bytes_read),
                human_bytes(r.bytes_to_read)
            )),
            None => o.push_str("now: no backup running\n"),
        }
        match &b.last {
            Some(a) => o.push_str(&format!(
                "last backup: {} ({} ago), {}{}\n",
                utc(a.start),
                spoken_duration((now - a.start).max(0)),
                match (a.ok, a.unchanged) {
                    (true, true) => "nothing had changed".to_string(),
                    (true, false) => format!(
                        "made {} ({} bytes read)",
                        a.infohash.as_deref().unwrap_or("?"),
                        a.bytes_read
                    ),
                    (false, _) => format!("FAILED: {}", a.error.as_deref().unwrap_or("?")),
                },
                if a.ok {
                    String::new()
                } else {
                    b.last_success
                        .as_ref()
                        .map_or(" (never backed up successfully)".to_string(), |s| {
                            format!(" (last success {})", utc(s.start))
                        })
                }
            )),
            None => o.push_str("last backup: none yet\n"),
        }
        if let Some(n) = b.next_due {
            o.push_str(&if n <= now {
                "next backup: now\n".to_string()
            } else {
                format!(
                    "next backup: {} (in {})\n",
                    utc(n),
                    spoken_duration(n - now)
                )
            });
        }
    }
    let h = &st.holding;
    o.push_str(&format!(
        "own snapshots seeded: {}\nholding for others: {} snapshots, {} shards, {} of {}\n",
        st.own_snapshots,
        h.snapshots,
        h.shards,
        human_bytes(h.bytes),
        h.quota.map_or("no quota".to_string(), human_bytes)
    ));
    if h.replicating > 0 {
        o.push_str(&format!(
            "replicating: {} snapshots, {} shards to fetch\n",
            h.replicating, h.shards_wanted
        ));
    }
    let sc = &st.scrub;
    o.push_str(&format!(
        "scrub: {} shards verified, last whole pass {}; {} damaged, {} missing, {} rebuilt here\n",
        sc.verified,
        sc.last_pass.map_or("not yet".to_string(), utc),
        sc.corrupt,
        sc.missing,
        sc.rebuilt
    ));
    if st.repair.under_way > 0 || st.repair.rebuilt > 0 {
        o.push_str(&format!(
            "repair: {} stripes under way, {} shards rebuilt since start (repair.log)\n",
            st.repair.under_way, st.repair.rebuilt
        ));
    }
    o.push_str(&format!(
        "peers: {} connected ({} connections)\ntracker: {}",
        st.peers,
        st.connections,
        match (&st.tracker.url, st.tracker.reachable) {
            (None, _) => "none".to_string(),
            (Some(u), None) => format!("{u} (not asked yet)"),
            (Some(u), Some(true)) => format!("{u}, reachable"),
            (Some(u), Some(false)) => format!(
                "{u}, UNREACHABLE ({})",
                st.tracker.error.as_deref().unwrap_or("?")
            ),
        }
    ));
    o
}
