//! `fetch` of a plain (non-swarmbak) torrent: download every piece from the peers the
//! tracker names (or given peers), then write its files, refusing any path that would
//! leave the target directory (protocol-spec/interop.md).

use std::ffi::OsStr;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use swarmbak_agent::Torrent;
use swarmbak_core::InfoHash;
use swarmbak_format::Store;
use swarmbak_metainfo::Metainfo;

use crate::config::Settings;
use crate::discovery::{metadata_from_swarm, TrackerRef};
use crate::error::FetchError;
use crate::fetch::start_engine;
use crate::report::Report;

/// What to fetch and from where.
pub struct PlainFetch<'a> {
    pub infohash: InfoHash,
    pub torrent: Option<Vec<u8>>,
    pub tracker: Option<String>,
    pub peers: &'a [SocketAddr],
}

/// Refuses a non-empty target directory.
pub fn check_empty(to: &Path) -> Result<(), FetchError> {
    let busy = std::fs::read_dir(to)
        .map(|mut rd| rd.next().is_some())
        .unwrap_or(false);
    if busy {
        return Err(FetchError::NotEmpty(to.to_path_buf()));
    }
    Ok(())
}

/// Downloads a plain torrent into `store` and writes its files under `to`; returns the
/// bytes downloaded.
pub fn fetch_plain(
    store: &Store,
    f: PlainFetch<'_>,
    to: &Path,
    settings: &Settings,
    report: &dyn Report,
) -> Result<u64, FetchError> {
    let ih = f.infohash;
    check_empty(to)?;
    // A plain torrent's tracker comes from its magnet or .torrent: no pin.
    let tracker = f.tracker.clone().map(TrackerRef::unpinned);
    let rt = crate::runtime().map_err(FetchError::Listen)?;
    let downloaded = rt.block_on(async {
        if !store.has(&ih) {
            let bytes = match f.torrent {
                Some(b) => b,
                None => metadata_from_swarm(&ih, tracker.as_ref(), f.peers).await?,
            };
            store.add_torrent(&ih, &bytes)?;
        }
        let t = Torrent::open_plain(store, ih)?;
        refuse_unsafe_paths(&t.torrent_bytes)?;
        if t.restorable_here() {
            return Ok(0);
        }
        let engine = start_engine(
            settings.peer_addr(),
            None,
            None,
            tracker.as_ref(),
            &[],
            settings,
            settings.fetch_announce(),
            std::sync::Arc::new(swarmbak_core::SystemClock),
            None,
        )
        .await?;
        engine.add(t.clone());
        for p in f.peers {
            engine.connect(ih, *p);
        }
        report.counter(t.num_pieces() as u64);
        let timeout = settings.fetch_timeout.unwrap_or(Duration::from_secs(600));
        let start = Instant::now();
        while !t.restorable_here() {
            report.set(t.have().count() as u64);
            if start.elapsed() > timeout {
                report.finish();
                return Err(FetchError::Incomplete {
                    infohash: ih,
                    secs: timeout.as_secs(),
                    have: t.have().count(),
                    pieces: t.num_pieces(),
                    peers: t.inner().peers.len(),
                });
            }
            if t.inner().peers.is_empty() {
                for p in f.peers {
                    engine.connect(ih, *p);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        report.finish();
        Ok(t.downloaded.load(Ordering::Relaxed))
    })?;
    let t = Torrent::open_plain(store, ih)?;
    write_plain_files(&t, store, to)?;
    Ok(downloaded)
}

/// Refuses a torrent naming a path that would leave the target directory.
pub fn refuse_unsafe_paths(torrent: &[u8]) -> Result<(), FetchError> {
    let mi = Metainfo::from_bytes(torrent).map_err(|e| FetchError::Torrent(e.into()))?;
    let bad = mi.unsafe_paths();
    if bad.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = bad
        .iter()
        .take(5)
        .map(|u| {
            format!(
                "{:?} ({:?})",
                String::from_utf8_lossy(&u.component),
                u.problem
            )
        })
        .collect();
    Err(FetchError::UnsafePaths {
        count: bad.len(),
        shown: shown.join(", "),
    })
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a plain torrent's files from its verified pieces: DIR/NAME for a single file,
/// DIR/NAME/PATH... for several; padding files (BEP 47) are skipped. Nothing is written
/// through a symlink.
fn write_plain_files(t: &Torrent, store: &Store, to: &Path) -> Result<(), FetchError> {
    let mi = Metainfo::from_bytes(&t.torrent_bytes).map_err(|e| FetchError::Torrent(e.into()))?;
    refuse_unsafe_paths(&t.torrent_bytes)?;
    let name = OsStr::from_bytes(mi.name());
    std::fs::create_dir_all(to).map_err(io_err(to))?;
    let pl = mi.piece_length();
    let mut cache: Option<(u64, Vec<u8>)> = None;
    for f in mi.files() {
        if f.is_padding() {
            continue;
        }
        let mut path = to.join(name);
        if mi.is_multi_file() {
            for c in &f.path {
                path.push(OsStr::from_bytes(c));
            }
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut off = f.offset;
        let end = f.offset + f.length;
        while off < end {
            let piece = off / pl;
            let b = match &cache {
                Some((p, b)) if *p == piece => b,
                _ => {
                    let b = store
                        .read_shard(&t.ih, piece as usize)?
                        .ok_or_else(|| FetchError::Plain(format!("piece {piece} is missing")))?;
                    &cache.insert((piece, b)).1
                }
            };
            let a = (off - piece * pl) as usize;
            let n = ((end - off) as usize).min(b.len().saturating_sub(a));
            if n == 0 {
                return Err(FetchError::Plain(format!("piece {piece} is short")));
            }
            out.write_all(&b[a..a + n]).map_err(io_err(&path))?;
            off += n as u64;
        }
    }
    Ok(())
}
