//! The commands.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use swarmbak_format::{
    backup, restore, BackupOptions, FormatError, Home, Identities, InfoHash, InitOptions,
    RestoreOptions,
};

use crate::ui::Ui;
use crate::{Ctx, Until};

/// A command's failure: the message for stderr and the exit status.
pub struct Failure {
    pub status: u8,
    pub message: String,
}

impl Failure {
    pub fn new(status: u8, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }
}

impl From<FormatError> for Failure {
    fn from(e: FormatError) -> Failure {
        Failure::new(1, e.to_string())
    }
}

impl From<swarmbak_format::CryptoError> for Failure {
    fn from(e: swarmbak_format::CryptoError) -> Failure {
        Failure::new(1, e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::new(1, e.to_string())
    }
}

type R = Result<(), Failure>;

fn out(ctx: &Ctx, v: serde_json::Value, human: impl FnOnce() -> String) {
    if ctx.json {
        println!("{v}");
    } else {
        println!("{}", human());
    }
}

fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

#[allow(clippy::too_many_arguments)]
pub fn init(
    ctx: &Ctx,
    name: Option<String>,
    tracker: Option<String>,
    enroll: Option<String>,
    recovery: Vec<String>,
    copies: Option<u32>,
    quota: Option<String>,
    k: Option<u16>,
    m: Option<u16>,
) -> R {
    let quota = match quota {
        Some(q) => Some(swarmbak_gentree::parse_size(&q).ok_or_else(|| {
            Failure::new(2, format!("--quota {q:?}: give a size like 50G or 500M"))
        })?),
        None => None,
    };
    if let Some(t) = &tracker {
        if !(t.starts_with("http://") || t.starts_with("https://")) {
            return Err(Failure::new(
                2,
                format!(
                    "--tracker takes the tracker's base URL, like http://HOST:PORT (got {t:?})"
                ),
            ));
        }
    }
    let opts = InitOptions {
        name,
        tracker,
        enroll_token: enroll,
        recovery_recipients: recovery,
        copies,
        k,
        m,
        quota,
    };
    let (home, created) = Home::init(&ctx.home, &opts)?;
    let c = home.config();
    out(
        ctx,
        json!({"event": "init", "created": created, "home": ctx.home, "name": c.name,
               "public_key": c.public_key, "tracker": c.tracker, "copies": c.copies,
               "k": c.k, "m": c.m, "quota": c.quota, "recovery_recipients": c.recovery_recipients}),
        || {
            format!(
                "{} machine {:?} in {}\npublic key: {}\nrecovery recipients: {}\ntracker: {}\ncopies: {}, stripes of {}+{} shards",
                if created { "created" } else { "updated" },
                c.name,
                ctx.home.display(),
                c.public_key,
                if c.recovery_recipients.is_empty() {
                    "none (only this machine's key can restore its backups)".to_string()
                } else {
                    c.recovery_recipients.join(", ")
                },
                c.tracker.as_deref().unwrap_or("none (local only)"),
                c.copies,
                c.k,
                c.m
            )
        },
    );
    Ok(())
}

pub fn seed(
    ctx: &Ctx,
    paths: Vec<PathBuf>,
    until: Until,
    copies: Option<u32>,
    timeout: Option<u64>,
) -> R {
    let home = Home::open(&ctx.home)?;
    if home.config().tracker.is_none() && until != Until::Published {
        return Err(Failure::new(
            2,
            "no tracker is configured, so no other machine can hold this backup: run `swarmbak init --tracker http://HOST:PORT`, or use `--until published` to make the snapshot in the local store only",
        ));
    }
    crate::net::seed(ctx, paths, until, copies, timeout)
}

/// Backs up `paths` into the store (this process takes the lock) and prints the
/// infohash line first.
pub fn make_snapshot(ctx: &Ctx, home: &Home, paths: Vec<PathBuf>) -> Result<InfoHash, Failure> {
    let mut opts = BackupOptions::new(paths);
    opts.announce = home
        .config()
        .tracker
        .as_ref()
        .map(|t| format!("{t}/announce"));
    let ui = Ui::new(ctx.json, "backup");
    let t0 = Instant::now();
    let r = backup(home, &opts, &ui);
    ui.finish();
    let r = r?;
    print_snapshot(
        ctx,
        &r.infohash,
        &Some(r.info.clone()),
        t0.elapsed().as_secs_f64(),
        home.config().tracker.is_some(),
    );
    Ok(r.infohash)
}

/// The lines `seed` prints once a snapshot exists: the infohash first.
pub fn print_snapshot(
    ctx: &Ctx,
    ih: &InfoHash,
    info: &Option<swarmbak_format::SnapshotInfo>,
    secs: f64,
    tracker: bool,
) {
    let Some(i) = info else {
        if ctx.json {
            println!("{}", json!({"infohash": ih.to_hex(), "event": "snapshot"}));
        } else {
            println!("{ih}");
        }
        return;
    };
    if ctx.json {
        println!(
            "{}",
            json!({"infohash": ih.to_hex(), "event": "snapshot", "files": i.files, "dirs": i.dirs,
                   "symlinks": i.symlinks, "bytes": i.bytes, "new_bytes": i.new_bytes,
                   "payload_bytes": i.payload_bytes, "shard_bytes": i.shard_bytes,
                   "chunks": i.chunks, "new_chunks": i.new_chunks, "parents": i.parents,
                   "skipped": i.skipped, "seconds": secs})
        );
        if !tracker {
            println!(
                "{}",
                json!({"event": "published", "infohash": ih.to_hex(), "tracker": null})
            );
        }
    } else {
        println!("{ih}");
        println!(
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
            println!(
                "{} entries were skipped (see the warnings above)",
                i.skipped.len()
            );
        }
        if !tracker {
            println!("published in the local store (no tracker configured)");
        }
    }
}

/// Accepts a 40-hex infohash, a 32-character base32 one, a magnet link, or a .torrent file.
fn parse_target(s: &str, home: &Path) -> Result<InfoHash, Failure> {
    if let Some(rest) = s.strip_prefix("magnet:?") {
        for kv in rest.split('&') {
            if let Some(v) = kv.strip_prefix("xt=urn:btih:") {
                return parse_hash(v);
            }
        }
        return Err(Failure::new(
            2,
            format!("{s:?} is a magnet link without an xt=urn:btih: infohash"),
        ));
    }
    let p = Path::new(s);
    if s.ends_with(".torrent") || (p.is_file() && s.len() != 40) {
        let b = fs::read(p).map_err(|e| Failure::new(1, format!("{s}: {e}")))?;
        let mi = swarmbak_metainfo::Metainfo::from_bytes(&b)
            .map_err(|e| Failure::new(1, format!("{s}: not valid metainfo: {e}")))?;
        return Ok(InfoHash(mi.info_hash()));
    }
    if s.len() == 40 || s.len() == 32 {
        return parse_hash(s);
    }
    let store = swarmbak_format::Store::new(home.join("store"));
    Ok(store.resolve(s)?)
}

/// The bytes of a .torrent given as the fetch target, if it is one.
fn torrent_file(s: &str) -> Option<Vec<u8>> {
    let p = Path::new(s);
    if s.starts_with("magnet:") || !p.is_file() {
        return None;
    }
    fs::read(p).ok()
}

/// A tracker base URL from a magnet's `tr=` or a .torrent's `announce`.
fn tracker_of(target: &str, torrent: Option<&[u8]>) -> Option<String> {
    let announce = if let Some(rest) = target.strip_prefix("magnet:?") {
        rest.split('&')
            .find_map(|kv| kv.strip_prefix("tr="))
            .map(percent_decode)
    } else {
        torrent
            .and_then(|b| swarmbak_metainfo::Metainfo::from_bytes(b).ok())
            .and_then(|m| m.announce().map(|a| a.to_string()))
    }?;
    Some(announce.trim_end_matches("/announce").to_string())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_hash(v: &str) -> Result<InfoHash, Failure> {
    if v.len() == 32 {
        if let Some(b) = base32_decode(v) {
            if let Ok(a) = <[u8; 20]>::try_from(b.as_slice()) {
                return Ok(InfoHash(a));
            }
        }
    }
    InfoHash::from_hex(v).map_err(|e| Failure::new(2, e.to_string()))
}

fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u64;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        } as u64;
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    Some(out)
}

pub fn fetch(
    ctx: &Ctx,
    target: &str,
    to: &Path,
    paths: Vec<String>,
    identity: Option<PathBuf>,
    peers: Vec<std::net::SocketAddr>,
) -> R {
    let ih = parse_target(target, &ctx.home)?;
    // A plain torrent (not a swarmbak snapshot): download it and write its files.
    let torrent = torrent_file(target);
    let home_tracker = Home::open(&ctx.home)
        .ok()
        .and_then(|h| h.config().tracker.clone());
    let plain = match &torrent {
        Some(b) => swarmbak_metainfo::Metainfo::from_bytes(b)
            .map(|m| m.swarmbak().is_none())
            .unwrap_or(false),
        None => {
            target.starts_with("magnet:")
                && home_tracker.is_none()
                && !swarmbak_format::Store::new(ctx.home.join("store")).has(&ih)
        }
    };
    if plain {
        let tracker = tracker_of(target, torrent.as_deref());
        let t0 = Instant::now();
        let got = crate::net::fetch_plain(ctx, &ih, torrent, tracker, &peers, to)?;
        out(
            ctx,
            json!({"event": "downloaded", "infohash": ih.to_hex(), "to": to, "downloaded_bytes": got,
                   "seconds": t0.elapsed().as_secs_f64()}),
            || {
                format!(
                    "downloaded torrent {ih} into {} ({}) in {:.1}s",
                    to.display(),
                    human_bytes(got),
                    t0.elapsed().as_secs_f64()
                )
            },
        );
        return Ok(());
    }
    let identities = match &identity {
        Some(f) => {
            let text = fs::read_to_string(f)
                .map_err(|e| Failure::new(1, format!("--identity {}: {e}", f.display())))?;
            Identities::parse_file(&text)
                .map_err(|e| Failure::new(1, format!("--identity {}: {e}", f.display())))?
        }
        None => Home::open(&ctx.home)
            .map_err(|e| {
                Failure::new(
                    1,
                    format!("{e}; or give --identity FILE (e.g. the organisation's recovery key)"),
                )
            })?
            .identities()?,
    };
    let store = swarmbak_format::Store::new(ctx.home.join("store"));
    let home = Home::open(&ctx.home).ok();
    let tracker = home
        .as_ref()
        .and_then(|h| h.config().tracker.clone())
        .or_else(|| tracker_of(target, torrent.as_deref()));
    // A fetch is not a holder: it sends no machine key, so placement does not move.
    let me = Vec::new();
    let started = Instant::now();
    let mut downloaded = crate::net::fetch_into_store(
        ctx,
        &store,
        &ih,
        torrent.clone(),
        tracker.clone(),
        &identities,
        me.clone(),
        false,
    )?;
    // Repairs are written back only when no other process is writing the store.
    let lock = Home::open(&ctx.home).ok().and_then(|h| h.lock().ok());
    let src = swarmbak_format::restore::LocalSource {
        store: &store,
        repair: lock.is_some(),
    };
    let opts = RestoreOptions {
        target: to.to_path_buf(),
        paths,
        identities,
    };
    let ui = Ui::new(ctx.json, "restore");
    let t0 = Instant::now();
    let mut r = restore(&src, &ih, &opts, &ui);
    ui.finish();
    // Shards here looked complete but some were damaged: get good ones from the swarm
    // (a shard is checked by SHA-1 before it counts) and restore again.
    if let (Err(FormatError::Damaged(_)), Some(_)) = (&r, &tracker) {
        downloaded += crate::net::fetch_into_store(
            ctx,
            &store,
            &ih,
            torrent,
            tracker.clone(),
            &opts.identities,
            me,
            true,
        )?;
        r = restore(&src, &ih, &opts, &ui);
    }
    let r = r?;
    let secs = t0.elapsed().as_secs_f64();
    let download_secs = t0.duration_since(started).as_secs_f64();
    out(
        ctx,
        json!({"event": "restored", "infohash": ih.to_hex(), "to": to, "files": r.files, "dirs": r.dirs,
               "symlinks": r.symlinks, "bytes": r.bytes, "resumed": r.resumed, "repaired": r.repaired,
               "downloaded_bytes": downloaded, "seconds": secs, "download_seconds": download_secs,
               "total_seconds": started.elapsed().as_secs_f64()}),
        || {
            let mut s = format!(
                "restored {} files, {} dirs, {} symlinks ({}) into {}{} in {:.1}s",
                r.files,
                r.dirs,
                r.symlinks,
                human_bytes(r.bytes),
                to.display(),
                if r.resumed { " (resumed)" } else { "" },
                secs
            );
            if !r.repaired.is_empty() {
                s.push_str(&format!(
                    "\n{} shards were missing or damaged and were rebuilt from the others{}",
                    r.repaired.len(),
                    if lock.is_some() { " and rewritten" } else { "" }
                ));
            }
            s
        },
    );
    Ok(())
}

fn load_torrent(ctx: &Ctx, what: &str) -> Result<(Vec<u8>, String), Failure> {
    let p = Path::new(what);
    if p.is_file() {
        let b = fs::read(p).map_err(|e| Failure::new(1, format!("{what}: {e}")))?;
        return Ok((b, what.to_string()));
    }
    let store = swarmbak_format::Store::new(ctx.home.join("store"));
    let ih = store.resolve(what).map_err(|e| {
        Failure::new(
            1,
            format!("{what} is neither a file nor a snapshot in the local store: {e}"),
        )
    })?;
    Ok((store.torrent_bytes(&ih)?, ih.to_hex()))
}

pub fn inspect(ctx: &Ctx, what: &str) -> R {
    let (bytes, _) = load_torrent(ctx, what)?;
    let mi = swarmbak_metainfo::Metainfo::from_bytes(&bytes)
        .map_err(|e| Failure::new(1, format!("{what}: not valid metainfo: {e}")))?;
    let files: Vec<serde_json::Value> = mi
        .files()
        .iter()
        .map(|f| {
            json!({"path": f.path.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("/"),
                   "length": f.length, "padding": f.is_padding()})
        })
        .collect();
    let unsafe_paths: Vec<String> = mi
        .unsafe_paths()
        .iter()
        .map(|u| {
            format!(
                "{} {}: component {:?} ({:?})",
                match u.file {
                    Some(i) => format!("file {i}"),
                    None => "the torrent's name".to_string(),
                },
                if u.in_symlink_target {
                    "symlink target"
                } else {
                    "path"
                },
                String::from_utf8_lossy(&u.component),
                u.problem
            )
        })
        .collect();
    let sb = mi.swarmbak().map(|p| {
        json!({"format": p.format, "k": p.k, "m": p.m, "stripes": p.stripes,
               "payload_length": p.payload_length, "manifest_offset": p.manifest_offset,
               "manifest_length": p.manifest_length, "id": hex::encode(p.id)})
    });
    let v = json!({
        "infohash": mi.info_hash_hex(),
        "name": String::from_utf8_lossy(mi.name()),
        "piece_length": mi.piece_length(),
        "pieces": mi.pieces().len(),
        "total_length": mi.total_length(),
        "private": mi.is_private(),
        "announce": mi.announce(),
        "files": files,
        "unsafe_paths": unsafe_paths,
        "swarmbak": sb,
    });
    out(ctx, v, || {
        let mut s = format!(
            "infohash:     {}\nname:         {}\npiece length: {}\npieces:       {}\ntotal length: {}\nprivate:      {}\nannounce:     {}\n",
            mi.info_hash_hex(),
            String::from_utf8_lossy(mi.name()),
            mi.piece_length(),
            mi.pieces().len(),
            mi.total_length(),
            if mi.is_private() { "yes" } else { "no" },
            mi.announce().unwrap_or("-"),
        );
        s.push_str(&format!("files:        {}\n", mi.files().len()));
        for f in mi.files().iter().take(20) {
            s.push_str(&format!(
                "  {} ({} bytes){}\n",
                f.path
                    .iter()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join("/"),
                f.length,
                if f.is_padding() { " [padding]" } else { "" }
            ));
        }
        if mi.files().len() > 20 {
            s.push_str(&format!("  ... and {} more\n", mi.files().len() - 20));
        }
        for u in &unsafe_paths {
            s.push_str(&format!("UNSAFE PATH (never written by fetch): {u}\n"));
        }
        match mi.swarmbak() {
            Some(p) => s.push_str(&format!(
                "swarmbak:     format {}, stripes of {}+{} shards, {} stripes, payload {} bytes, manifest at {}+{}",
                p.format, p.k, p.m, p.stripes, p.payload_length, p.manifest_offset, p.manifest_length
            )),
            None => s.push_str("swarmbak:     - (a plain torrent)"),
        }
        s
    });
    Ok(())
}

pub fn export(ctx: &Ctx, infohash: &str, file: &Path) -> R {
    let store = swarmbak_format::Store::new(ctx.home.join("store"));
    let ih = store.resolve(infohash)?;
    let bytes = store.torrent_bytes(&ih)?;
    let tmp = file.with_extension("torrent.tmp");
    fs::write(&tmp, &bytes).map_err(|e| Failure::new(1, format!("{}: {e}", tmp.display())))?;
    fs::rename(&tmp, file).map_err(|e| Failure::new(1, format!("{}: {e}", file.display())))?;
    out(
        ctx,
        json!({"event": "exported", "infohash": ih.to_hex(), "file": file}),
        || {
            format!(
                "wrote {} ({} bytes) for {}",
                file.display(),
                bytes.len(),
                ih
            )
        },
    );
    Ok(())
}

pub fn utc(t: i64) -> String {
    // Civil date from Unix time (UTC), without a date library.
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

pub fn snapshots(ctx: &Ctx, machine: Option<String>) -> R {
    if let Some(m) = machine {
        return crate::net::machine_snapshots(ctx, &m);
    }
    let home = Home::open(&ctx.home)?;
    let list = home.store().own_snapshots()?;
    if ctx.json {
        for s in &list {
            println!("{}", serde_json::to_string(s).unwrap_or_default());
        }
        return Ok(());
    }
    if list.is_empty() {
        println!("no snapshots yet: `swarmbak seed PATH` makes one");
    }
    for s in &list {
        println!(
            "{}  {}  {:>7} files  {:>10}  {:>10} new  {}",
            s.infohash,
            utc(s.time),
            s.files,
            human_bytes(s.bytes),
            human_bytes(s.new_bytes),
            s.paths.join(" ")
        );
    }
    Ok(())
}

pub fn health(ctx: &Ctx, infohash: &str) -> R {
    if let Ok(home) = Home::open(&ctx.home) {
        if let Some(t) = home.config().tracker.clone() {
            let ih = parse_target(infohash, &ctx.home)?;
            // Health watches; it is not a holder and sends no machine key.
            return crate::net::swarm_health(ctx, &ih, &t, Vec::new());
        }
    }
    scrub(ctx, infohash, false)
}

pub fn repair(ctx: &Ctx, infohash: &str) -> R {
    scrub(ctx, infohash, true)
}

/// Checks every shard of a snapshot in the local store; with `repair`, rebuilds missing
/// and damaged ones from the rest of their stripe (no key needed).
fn scrub(ctx: &Ctx, infohash: &str, repair: bool) -> R {
    let store = swarmbak_format::Store::new(ctx.home.join("store"));
    let ih = store.resolve(infohash)?;
    let _lock = if repair {
        Some(Home::open(&ctx.home)?.lock()?)
    } else {
        None
    };
    let src = swarmbak_format::restore::LocalSource {
        store: &store,
        repair,
    };
    let reader = swarmbak_format::restore::SnapshotReader::open(
        &src,
        &ih,
        &swarmbak_format::backup::NoProgress,
    )?;
    let l = reader.meta.layout;
    let sc = reader.scrub(repair)?;
    let worst = sc.good_per_stripe.iter().copied().min().unwrap_or(0);
    out(
        ctx,
        json!({"infohash": ih.to_hex(), "recoverable": sc.recoverable, "k": l.k, "m": l.m,
               "stripes": l.stripes, "local_shards_per_stripe": sc.good_per_stripe,
               "problems": sc.problems, "repaired": repair && sc.recoverable && !sc.problems.is_empty(),
               "scope": "local store"}),
        || {
            let mut s = format!(
                "{ih}: {} from the local store; {} stripes of {}+{} shards; fewest good shards in a stripe: {} (need {})",
                if sc.recoverable { "recoverable now" } else { "NOT recoverable" },
                l.stripes, l.k, l.m, worst, l.k
            );
            for p in &sc.problems {
                s.push_str(&format!("\n  {p}"));
            }
            s
        },
    );
    if sc.recoverable {
        Ok(())
    } else {
        Err(Failure::new(
            1,
            format!("snapshot {ih} cannot be restored from this store: a stripe has only {worst} of the {} good shards it needs", l.k),
        ))
    }
}

pub fn demo(ctx: &Ctx, size: &str, tree: Option<PathBuf>, keep: bool, offline: bool) -> R {
    crate::demo::run(ctx, size, tree, keep, offline)
}
