//! What the tracker keeps on disk: published metainfo and the publish index.
//!
//! ```text
//! DATA/
//!   torrents/<40-hex infohash>.torrent   the metainfo as published (atomic: tmp, fsync, rename)
//!   index.jsonl                          one JSON publish record a line, append-only, fsynced
//!   machines/                            (reserved: enrolment, one file per machine key)
//!   reports/                             (reserved: backup reports from machines)
//! ```
//!
//! One tracker at a time: `DATA/lock` is held (flock) while the store is open.
//!
//! A record is appended only after its torrent file is durable, so every record on disk
//! has its torrent. A torn last line (a crash mid-append) is cut off on the next start;
//! a torrent without a record (a crash between the two writes) is ignored until the
//! machine publishes it again, which is idempotent.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use swarmbak_metainfo::Metainfo;

use crate::proto::{InfoHash, MAX_MACHINE_LEN};

/// Longest machine name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// One published snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Info-hash, 40 lower-case hex digits.
    pub infohash: String,
    /// The owner machine's key (as given at publish).
    pub machine_key: String,
    /// The owner machine's name (as given at publish).
    pub machine_name: String,
    /// When it was published, Unix seconds.
    pub published: i64,
    /// The torrent's total length in bytes (all shards).
    pub total_length: u64,
    /// The encrypted payload inside the data shards, in bytes.
    pub payload_length: u64,
    /// The torrent's `name`.
    #[serde(default)]
    pub name: String,
}

/// A machine seen publishing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRecord {
    /// The machine's key.
    pub machine_key: String,
    /// Its name at its latest publish.
    pub machine_name: String,
    /// How many snapshots it published.
    pub snapshots: u64,
    /// Its latest publish, Unix seconds.
    pub last_published: i64,
    /// Sum of its snapshots' payload lengths.
    pub payload_bytes: u64,
    /// A peer announcing with this machine's key (`machine` = hex of the key) is in a
    /// swarm now.
    #[serde(default)]
    pub online: bool,
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The request is wrong (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// Another machine already published this info-hash (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The disk failed (HTTP 500).
    #[error("storage: {0}")]
    Io(#[from] io::Error),
}

/// What [`Store::open`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Records loaded.
    pub records: usize,
    /// A torn last line was cut off.
    pub torn_tail: bool,
    /// Unreadable lines skipped (not the last).
    pub bad_lines: usize,
    /// Records dropped because their torrent file is missing.
    pub missing_torrents: usize,
}

#[derive(Serialize, Deserialize)]
struct Line {
    v: u32,
    #[serde(flatten)]
    rec: SnapshotRecord,
}

/// The on-disk state, loaded.
pub struct Store {
    // Held for the store's lifetime: the flock is released when the file is closed.
    _lock: fd_lock::RwLock<File>,
    dir: PathBuf,
    index: File,
    records: Vec<SnapshotRecord>,
    by_ih: HashMap<InfoHash, usize>,
}

/// Checks a machine key: 1 to 256 printable ASCII characters, no spaces.
pub fn check_machine_key(k: &str) -> Result<(), String> {
    if k.is_empty() || k.len() > MAX_MACHINE_LEN {
        return Err(format!(
            "machine key must be 1 to {MAX_MACHINE_LEN} characters"
        ));
    }
    if !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("machine key must be printable ASCII without spaces".into());
    }
    Ok(())
}

/// Checks a machine name: 1 to 128 bytes of UTF-8 without control characters.
pub fn check_machine_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > MAX_NAME_LEN {
        return Err(format!("machine name must be 1 to {MAX_NAME_LEN} bytes"));
    }
    if n.chars().any(char::is_control) {
        return Err("machine name must not contain control characters".into());
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Store {
    /// Opens (creating if needed) the data directory and loads the index. Fails with
    /// `WouldBlock` if another tracker has the directory open.
    pub fn open(dir: &Path) -> io::Result<(Store, LoadReport)> {
        for sub in ["torrents", "machines", "reports"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let mut lock = fd_lock::RwLock::new(
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join("lock"))?,
        );
        match lock.try_write() {
            // Keep the lock until the file is closed (when the store is dropped).
            Ok(guard) => std::mem::forget(guard),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "in use by another tracker (DATA/lock is held)",
                ))
            }
            Err(e) => return Err(e),
        }
        let index_path = dir.join("index.jsonl");
        let content = match fs::read(&index_path) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut report = LoadReport::default();
        let mut records = Vec::new();
        let mut by_ih = HashMap::new();
        let mut good_len = 0usize;
        let mut pos = 0usize;
        let mut needs_newline = false;
        while pos < content.len() {
            let (line, next, complete) = match content[pos..].iter().position(|&b| b == b'\n') {
                Some(i) => (&content[pos..pos + i], pos + i + 1, true),
                None => (&content[pos..], content.len(), false),
            };
            let parsed = serde_json::from_slice::<Line>(line)
                .ok()
                .and_then(|l| Some((InfoHash::from_hex(&l.rec.infohash).ok()?, l.rec)));
            match parsed {
                Some((ih, rec)) => {
                    good_len = next;
                    needs_newline = !complete;
                    if !dir
                        .join("torrents")
                        .join(format!("{}.torrent", rec.infohash))
                        .is_file()
                    {
                        report.missing_torrents += 1;
                    } else if let std::collections::hash_map::Entry::Vacant(e) = by_ih.entry(ih) {
                        e.insert(records.len());
                        records.push(rec);
                    }
                }
                None if !complete => report.torn_tail = true,
                None => {
                    if !line.iter().all(u8::is_ascii_whitespace) {
                        report.bad_lines += 1;
                    }
                    good_len = next;
                }
            }
            pos = next;
        }
        let mut index = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&index_path)?;
        if report.torn_tail {
            index.set_len(good_len as u64)?;
        }
        if needs_newline {
            index.write_all(b"\n")?;
        }
        if report.torn_tail || needs_newline {
            index.sync_data()?;
        }
        report.records = records.len();
        Ok((
            Store {
                _lock: lock,
                dir: dir.to_path_buf(),
                index,
                records,
                by_ih,
            },
            report,
        ))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every record, oldest first.
    pub fn records(&self) -> &[SnapshotRecord] {
        &self.records
    }

    /// The record of `ih`.
    pub fn get(&self, ih: &InfoHash) -> Option<&SnapshotRecord> {
        self.by_ih.get(ih).map(|&i| &self.records[i])
    }

    /// Where the torrent of `ih` lives.
    pub fn torrent_path(&self, ih: &InfoHash) -> PathBuf {
        torrent_path(&self.dir, ih)
    }

    /// Validates and stores a published torrent. Returns the record and whether it is
    /// new (publishing the same torrent again from the same machine changes nothing).
    pub fn publish(
        &mut self,
        torrent: &[u8],
        machine_key: &str,
        machine_name: &str,
        now: i64,
    ) -> Result<(SnapshotRecord, bool), PublishError> {
        check_machine_key(machine_key).map_err(PublishError::Invalid)?;
        check_machine_name(machine_name).map_err(PublishError::Invalid)?;
        let mi = Metainfo::from_bytes(torrent)
            .map_err(|e| PublishError::Invalid(format!("not a valid torrent: {e}")))?;
        let Some(params) = mi.swarmbak() else {
            return Err(PublishError::Invalid(
                "not a swarmbak torrent (no `swarmbak` dictionary in info)".into(),
            ));
        };
        if !mi.is_private() {
            return Err(PublishError::Invalid(
                "swarmbak torrents must be private (BEP 27)".into(),
            ));
        }
        let ih = InfoHash(mi.info_hash());
        if let Some(existing) = self.get(&ih) {
            if existing.machine_key == machine_key {
                return Ok((existing.clone(), false));
            }
            return Err(PublishError::Conflict(format!(
                "{} was already published by another machine",
                existing.infohash
            )));
        }
        let rec = SnapshotRecord {
            infohash: mi.info_hash_hex(),
            machine_key: machine_key.to_owned(),
            machine_name: machine_name.to_owned(),
            published: now,
            total_length: mi.total_length(),
            payload_length: params.payload_length,
            name: String::from_utf8_lossy(mi.name()).into_owned(),
        };
        // 1. The torrent, durably.
        let dir = self.dir.join("torrents");
        let tmp = dir.join(format!(".{}.tmp", rec.infohash));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(mi.as_bytes())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.torrent_path(&ih))?;
        sync_dir(&dir)?;
        // 2. The record.
        let mut line = serde_json::to_vec(&Line {
            v: 1,
            rec: rec.clone(),
        })
        .map_err(|e| PublishError::Io(io::Error::other(e)))?;
        line.push(b'\n');
        self.index.write_all(&line)?;
        self.index.sync_data()?;
        self.by_ih.insert(ih, self.records.len());
        self.records.push(rec.clone());
        Ok((rec, true))
    }

    /// Snapshots of the machine whose name or key is `machine` (all when `None`),
    /// newest first.
    pub fn snapshots(&self, machine: Option<&str>) -> Vec<SnapshotRecord> {
        let mut v: Vec<(usize, &SnapshotRecord)> = self
            .records
            .iter()
            .enumerate()
            .filter(|(_, r)| machine.is_none_or(|m| r.machine_key == m || r.machine_name == m))
            .collect();
        v.sort_by(|a, b| b.1.published.cmp(&a.1.published).then(b.0.cmp(&a.0)));
        v.into_iter().map(|(_, r)| r.clone()).collect()
    }

    /// Every machine that published, most recent publish first.
    pub fn machines(&self) -> Vec<MachineRecord> {
        let mut by_key: HashMap<&str, MachineRecord> = HashMap::new();
        for r in &self.records {
            let m = by_key
                .entry(r.machine_key.as_str())
                .or_insert_with(|| MachineRecord {
                    machine_key: r.machine_key.clone(),
                    machine_name: r.machine_name.clone(),
                    snapshots: 0,
                    last_published: i64::MIN,
                    payload_bytes: 0,
                    online: false,
                });
            m.snapshots += 1;
            m.payload_bytes = m.payload_bytes.saturating_add(r.payload_length);
            if r.published >= m.last_published {
                m.last_published = r.published;
                m.machine_name.clone_from(&r.machine_name);
            }
        }
        let mut v: Vec<MachineRecord> = by_key.into_values().collect();
        v.sort_by(|a, b| {
            b.last_published
                .cmp(&a.last_published)
                .then_with(|| a.machine_key.cmp(&b.machine_key))
        });
        v
    }
}

/// `DATA/torrents/<hex>.torrent`.
pub fn torrent_path(dir: &Path, ih: &InfoHash) -> PathBuf {
    dir.join("torrents")
        .join(format!("{}.torrent", hex::encode(ih)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec_line(ih: &str) -> String {
        format!(
            "{{\"v\":1,\"infohash\":\"{ih}\",\"machine_key\":\"k\",\"machine_name\":\"n\",\"published\":1,\"total_length\":2,\"payload_length\":1}}"
        )
    }

    #[test]
    fn index_repairs() {
        let dir = tempfile::tempdir().unwrap();
        let a = "aa".repeat(20);
        let b = "bb".repeat(20);
        let c = "cc".repeat(20);
        drop(Store::open(dir.path()).unwrap());
        for ih in [&a, &b] {
            fs::write(
                dir.path().join("torrents").join(format!("{ih}.torrent")),
                b"x",
            )
            .unwrap();
        }
        // a: good; garbage line; c: torrent missing; b: good but no final newline.
        let content = format!(
            "{}\nnot json\n{}\n\n{}",
            rec_line(&a),
            rec_line(&c),
            rec_line(&b)
        );
        fs::write(dir.path().join("index.jsonl"), &content).unwrap();
        let (store, report) = Store::open(dir.path()).unwrap();
        assert_eq!(report.records, 2);
        assert_eq!(report.bad_lines, 1);
        assert_eq!(report.missing_torrents, 1);
        assert!(!report.torn_tail);
        assert_eq!(store.records()[1].infohash, b);
        drop(store);
        let now = fs::read_to_string(dir.path().join("index.jsonl")).unwrap();
        assert_eq!(now, format!("{content}\n"), "the missing newline is added");

        // A torn tail is cut off, and what follows starts on a fresh line.
        let torn = format!("{now}{{\"v\":1,\"infoh");
        fs::write(dir.path().join("index.jsonl"), &torn).unwrap();
        let (store, report) = Store::open(dir.path()).unwrap();
        assert!(report.torn_tail);
        // A second tracker on the same directory is refused while this one runs.
        let err = Store::open(dir.path()).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(store);
        assert!(Store::open(dir.path()).is_ok());
        assert_eq!(report.records, 2);
        assert_eq!(
            fs::read_to_string(dir.path().join("index.jsonl")).unwrap(),
            now
        );
    }

    #[test]
    fn names_and_keys() {
        assert!(check_machine_key("age1qqq").is_ok());
        assert!(check_machine_key("").is_err());
        assert!(check_machine_key("a b").is_err());
        assert!(check_machine_key(&"k".repeat(257)).is_err());
        assert!(check_machine_name("Ana's laptop (ß)").is_ok());
        assert!(check_machine_name("a\nb").is_err());
        assert!(check_machine_name("").is_err());
    }
}
