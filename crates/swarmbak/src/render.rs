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
