//! `fetch`: restore a snapshot (or download a plain torrent). What to fetch comes as an
//! infohash, a magnet link or a .torrent file.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use swarmbak_format::{restore, FormatError, Home, Identities, InfoHash, RestoreOptions};
use swarmbak_node::fetch::{fetch_into_store, FetchPlan};
use swarmbak_node::plain::{fetch_plain, PlainFetch};
use swarmbak_node::{NodeConfig, Settings};

use crate::failure::Failure;
use crate::render::{human_bytes, out};
use crate::ui::Ui;
use crate::Ctx;

type R = Result<(), Failure>;

/// Accepts a 40-hex infohash, a 32-character base32 one, a magnet link, or a .torrent file.
pub fn parse_target(s: &str, home: &Path) -> Result<InfoHash, Failure> {
    if let Some(rest) = s.strip_prefix("magnet:?") {
        for kv in rest.split('&') {
            if let Some(v) = kv.strip_prefix("xt=urn:btih:") {
                return parse_hash(v);
            }
        }
        return Err(Failure::usage(format!(
            "{s:?} is a magnet link without an xt=urn:btih: infohash"
        )));
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

/// `fetch`'s options besides what and where.
pub struct Options {
    pub paths: Vec<String>,
    pub identity: Option<PathBuf>,
    pub peers: Vec<std::net::SocketAddr>,
    pub listen: Option<String>,
    pub timeout: Option<String>,
}

pub fn fetch(ctx: &Ctx, target: &str, to: &Path, o: Options) -> R {
    let Options {
        paths,
        identity,
        peers,
        listen,
        timeout,
    } = o;
    let timeout = match timeout {
        Some(t) => Some(swarmbak_node::parse_duration(&t).ok_or_else(|| {
            Failure::usage(format!(
                "--timeout {t:?}: give a duration like 90s, 10m or 1h"
            ))
        })?),
        None => None,
    };
    let ih = parse_target(target, &ctx.home)?;
    // A plain torrent (not a swarmbak snapshot): download it and write its files.
    let torrent = torrent_file(target);
    let config = NodeConfig::load(&ctx.home).ok();
    let home_tracker = config.as_ref().and_then(|c| c.tracker_ref());
    let mut settings = Settings::from_env();
    settings.listen = NodeConfig::command_listen(config.as_ref(), listen.as_deref())?;
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
        let store = swarmbak_format::Store::new(ctx.home.join("plain"));
        let ui = Ui::new(ctx.json, "fetch");
        let got = fetch_plain(
            &store,
            PlainFetch {
                infohash: ih,
                torrent,
                tracker,
                peers: &peers,
            },
            to,
            &settings,
            &ui,
        );
        ui.finish();
        let got = got?;
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
    let opts = RestoreOptions {
        target: to.to_path_buf(),
        paths,
        identities,
    };
    let tracker = home_tracker.or_else(|| {
        tracker_of(target, torrent.as_deref()).map(swarmbak_node::discovery::TrackerRef::unpinned)
    });
    let started = Instant::now();
    // A fetch is not a holder: it sends no machine key, so placement does not move. An
    // enrolled home authenticates to its peers (as a member that holds nothing).
    let config = NodeConfig::load(&ctx.home).ok();
    let membership = config
        .as_ref()
        .and_then(|c| swarmbak_node::membership::Membership::load(&ctx.home, c).ok())
        .flatten();
    let mut plan = FetchPlan {
        store: &store,
        infohash: ih,
        torrent,
        tracker: tracker.clone(),
        identities: &opts.identities,
        verify: false,
        org: config.and_then(|c| c.enrolment).and_then(|e| e.org().ok()),
        membership,
        timeout,
    };
    let ui = Ui::new(ctx.json, "fetch");
    let mut downloaded = fetch_into_store(&plan, &settings, &ui)?;
    ui.finish();
    // Repairs are written back only when no other process is writing the store.
    let lock = Home::open(&ctx.home).ok().and_then(|h| h.lock().ok());
    let src = swarmbak_format::restore::LocalSource {
        store: &store,
        repair: lock.is_some(),
    };
    let ui = Ui::new(ctx.json, "restore");
    let t0 = Instant::now();
    let mut r = restore(&src, &ih, &opts, &ui);
    ui.finish();
    // Shards here looked complete but some were damaged: get good ones from the swarm
    // (a shard is checked by SHA-1 before it counts) and restore again.
    if let (Err(FormatError::Damaged(_)), Some(_)) = (&r, &tracker) {
        plan.verify = true;
        let fui = Ui::new(ctx.json, "fetch");
        downloaded += fetch_into_store(&plan, &settings, &fui)?;
        fui.finish();
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
