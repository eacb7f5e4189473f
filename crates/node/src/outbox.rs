//! Backup reports (trust.md §9) on their way to the tracker (tracker.md §7.6). Every
//! backup attempt of an enrolled machine, successful or not, is signed and written to
//! `HOME/outbox/<id>.report` first (synced: a crash or a tracker that is down loses no
//! attempt), then sent. What the tracker acknowledged is deleted; what it could not take
//! now waits for the next send; what it refuses for good (a 4xx other than 408 and 429:
//! a revoked machine, a report it calls forged) goes to `HOME/outbox/refused/`, kept for
//! the user to read but never sent again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use swarmbak_trust::BackupReport;

use crate::config::Node;
use crate::discovery::{http_status, tracker_client};
use crate::error::ConfigError;

/// One backup attempt, as the machine saw it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When it started and ended, Unix seconds.
    pub start: i64,
    /// When it ended.
    pub end: i64,
    /// Bytes and files read.
    pub bytes: u64,
    /// Files read.
    pub files: u64,
    /// The snapshot's info-hash, or what went wrong.
    pub outcome: Result<[u8; 20], String>,
}

/// What a send did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Reports the tracker acknowledged (and that were deleted).
    pub sent: usize,
    /// Reports still waiting (the tracker could not be reached, or answered 5xx).
    pub waiting: usize,
    /// Reports the tracker refused for good (moved to `outbox/refused/`).
    pub refused: usize,
    /// Why the first report that is still waiting or was refused was not taken.
    pub error: Option<String>,
}

/// `HOME/outbox`.
pub fn dir(node: &Node) -> PathBuf {
    node.root.join("outbox")
}

/// Signs `attempt` with the machine key and writes it to the outbox. `None` when this
/// machine is not enrolled (an open tracker takes no reports).
pub fn queue(node: &Node, attempt: &Attempt) -> Result<Option<PathBuf>, ConfigError> {
    if node.config.enrolment.is_none() {
        return Ok(None);
    }
    let key = crate::config::signing_key(&node.root)?;
    let id: [u8; 16] = rand::random();
    let report = match &attempt.outcome {
        Ok(ih) => BackupReport {
            id,
            machine: key.public(),
            start: attempt.start,
            end: attempt.end.max(attempt.start),
            bytes: attempt.bytes,
            files: attempt.files,
            outcome: Ok(*ih),
        },
        Err(e) => BackupReport::new_failure(
            id,
            key.public(),
            attempt.start,
            attempt.end.max(attempt.start),
            attempt.bytes,
            attempt.files,
            e,
        ),
    };
    let dir = dir(node);
    let io = |path: &Path, source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let path = dir.join(format!("{}.report", hex::encode(id)));
    swarmbak_trust::create_once(&path, &report.sign(&key), 0o600).map_err(|e| io(&path, e))?;
    Ok(Some(path))
}

/// Keeps `attempt` in the outbox and sends what waits there, this one included, each
/// retried for at most `timeout`. `None`: this machine is not enrolled (nothing to
/// report to).
pub async fn report(
    node: &Node,
    attempt: &Attempt,
    timeout: Duration,
) -> Result<Option<Sent>, ConfigError> {
    if queue(node, attempt)?.is_none() {
        return Ok(None);
    }
    Ok(Some(send(node, timeout).await))
}

/// The outbox's reports, oldest first (by file time, then name).
fn waiting(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(std::time::SystemTime, PathBuf)> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "report"))
        .map(|p| {
            let t = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (t, p)
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// Sends the outbox's reports to the tracker, oldest first, each retried for at most
/// `timeout`; stops at the first the tracker cannot take now.
pub async fn send(node: &Node, timeout: Duration) -> Sent {
    let mut out = Sent::default();
    let dir = dir(node);
    let reports = waiting(&dir);
    if reports.is_empty() {
        return out;
    }
    let client = match node.config.tracker_ref().map(|t| tracker_client(&t)) {
        Some(Ok(c)) => c.with_retry(swarmbak_tracker::Retry::for_duration(timeout)),
        Some(Err(e)) => {
            out.waiting = reports.len();
            out.error = Some(e.to_string());
            return out;
        }
        None => {
            out.waiting = reports.len();
            out.error = Some("no tracker configured".into());
            return out;
        }
    };
    for (i, path) in reports.iter().enumerate() {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        match client.report(&bytes).await {
            Ok(_) => {
                let _ = std::fs::remove_file(path);
                out.sent += 1;
            }
            Err(e) if matches!(http_status(&e), Some(s) if (400..500).contains(&s) && s != 408 && s != 429) =>
            {
                let refused = dir.join("refused");
                let _ = std::fs::create_dir_all(&refused);
                if let Some(name) = path.file_name() {
                    let _ = std::fs::rename(path, refused.join(name));
                }
                out.refused += 1;
                out.error.get_or_insert_with(|| e.to_string());
            }
            Err(e) => {
                out.waiting = reports.len() - i;
                out.error.get_or_insert_with(|| e.to_string());
                break;
            }
        }
    }
    out
}
