//! The tracker's embedded database: [`Sqlite`], the [`Storage`] the tracker uses unless
//! it is given a server database (protocol-spec/tracker-storage.draft.md).
//!
//! ```text
//! DATA/
//!   tracker.db (+ -wal, -shm)      everything: settings, machines, tokens, snapshots, metainfo
//!   index.jsonl.imported           a v1 index after its one-time import (kept for reference)
//!   torrents/<hex>.torrent         v1 torrents: imported into tracker.db, no longer read;
//!                                  the directory may be deleted once the import is done
//! ```
//!
//! The database is in WAL mode, so `swarmbak tracker enroll` or `revoke` (another process)
//! can write while the tracker runs; each waits up to [`BUSY_TIMEOUT`] for the write lock.
//! A handle has two connections: the *write* connection (`synchronous=FULL`: a commit is
//! on disk before the call returns) for everything a client or an administrator is
//! answered about, and the *batch* connection (`synchronous=NORMAL`: durable at the next
//! checkpoint or full commit) for [`Storage::add_online`].
//!
//! The schema is versioned by `PRAGMA user_version`: [`MIGRATIONS`] are applied in order,
//! one transaction each, and a database from a newer swarmbak is refused.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{
    params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row, Transaction,
    TransactionBehavior,
};
use swarmbak_metainfo::Metainfo;

use crate::proto::InfoHash;
use crate::storage::{
    Activity, AlertRow, Attempt, AuditRow, MachineKind, MachineRow, MachineSchedule, NewMachine,
    OnlineInterval, OrgSchedule, Pending, Published, Redeemed, ReportRow, Retired, RetirementRow,
    SnapshotRow, Storage, StorageError,
};

/// The database file inside the data directory.
pub const DB_FILE: &str = "tracker.db";

/// How long a connection waits for another one's write lock before [`StorageError::Busy`].
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one step per version: step `i` takes `user_version` from `i` to `i + 1`.
/// Steps are only ever appended; a released step is never edited.
pub const MIGRATIONS: &[&str] = &[
    // Version 1.
    r#"
CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE machines (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('machine', 'client')),
    key           BLOB CHECK (key IS NULL OR length(key) = 32),
    age_recipient TEXT,
    name          TEXT NOT NULL,
    user          TEXT,
    vip           INTEGER NOT NULL DEFAULT 0,
    domain        TEXT,
    passkey       TEXT NOT NULL UNIQUE,
    certificate   BLOB,
    enrolled      INTEGER NOT NULL,
    expires       INTEGER,
    revoked       INTEGER,
    revocation    BLOB
) STRICT;
CREATE UNIQUE INDEX machines_live_name ON machines (name)
    WHERE kind = 'machine' AND revoked IS NULL;
CREATE UNIQUE INDEX machines_live_key ON machines (key)
    WHERE key IS NOT NULL AND revoked IS NULL;

CREATE TABLE pending (
    token_hash  BLOB PRIMARY KEY NOT NULL CHECK (length(token_hash) = 32),
    name        TEXT NOT NULL,
    user        TEXT,
    vip         INTEGER NOT NULL DEFAULT 0,
    domain      TEXT,
    cert_days   INTEGER,
    created     INTEGER NOT NULL,
    valid_until INTEGER NOT NULL,
    used_at     INTEGER
) STRICT;

CREATE TABLE snapshots (
    infohash       BLOB PRIMARY KEY NOT NULL CHECK (length(infohash) = 20),
    seq            INTEGER NOT NULL UNIQUE,
    machine_key    TEXT NOT NULL,
    machine_name   TEXT NOT NULL,
    published      INTEGER NOT NULL,
    total_length   INTEGER NOT NULL,
    payload_length INTEGER NOT NULL,
    name           TEXT NOT NULL,
    copies         INTEGER NOT NULL DEFAULT 0,
    record         BLOB,
    certificate    BLOB
) STRICT;
CREATE INDEX snapshots_machine_key ON snapshots (machine_key);

CREATE TABLE metainfo (
    infohash BLOB PRIMARY KEY NOT NULL REFERENCES snapshots (infohash),
    torrent  BLOB NOT NULL
) STRICT;

CREATE TABLE online (
    machine INTEGER NOT NULL REFERENCES machines (id),
    "start" INTEGER NOT NULL,
    "end"   INTEGER NOT NULL
) STRICT;
CREATE INDEX online_machine_end ON online (machine, "end");

-- Backup reports from machines (reserved: filled from the next protocol version on).
CREATE TABLE reports (
    id       INTEGER PRIMARY KEY,
    machine  INTEGER NOT NULL REFERENCES machines (id),
    started  INTEGER NOT NULL,
    ended    INTEGER,
    success  INTEGER NOT NULL,
    bytes    INTEGER,
    files    INTEGER,
    error    TEXT,
    infohash BLOB,
    report   BLOB NOT NULL
) STRICT;
CREATE INDEX reports_machine_started ON reports (machine, started);
"#,
    // 2: backup reports are filled (trust.md §9): the report's random id, one row per
    // machine and id (a report sent again after a lost acknowledgement counts once).
    r#"
ALTER TABLE reports ADD COLUMN attempt BLOB;
CREATE UNIQUE INDEX reports_attempt ON reports (machine, attempt);
"#,
    // 3: what the administrator sees (tracker.md §10): a machine's latest success found
    // through an index, the audit log, alerts.
    r#"
CREATE INDEX reports_machine_success ON reports (machine, success, started);

CREATE TABLE audit (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    "from" TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
) STRICT;

CREATE TABLE alerts (
    id       INTEGER PRIMARY KEY,
    machine  INTEGER NOT NULL REFERENCES machines (id),
    kind     TEXT NOT NULL,
    raised   INTEGER NOT NULL,
    notified INTEGER NOT NULL,
    acked    INTEGER,
    acked_by TEXT,
    cleared  INTEGER
) STRICT;
CREATE UNIQUE INDEX alerts_open ON alerts (machine) WHERE cleared IS NULL;
"#,
    // 4: scheduled backups (tracker.md §7.7): what the administrator set for each machine
    // (the organisation's defaults are `schedule.*` settings).
    r#"
ALTER TABLE machines ADD COLUMN backup_every INTEGER;
ALTER TABLE machines ADD COLUMN every_may_override INTEGER;
ALTER TABLE machines ADD COLUMN backup_requested INTEGER;
"#,
    // 5: snapshot retirements (tracker.md §7.8): the owner's signed record for each
    // retired snapshot, and the administrator's cancellation.
    r#"
CREATE TABLE retirements (
    infohash     BLOB PRIMARY KEY NOT NULL REFERENCES snapshots (infohash),
    machine      INTEGER NOT NULL REFERENCES machines (id),
    record       BLOB NOT NULL,
    retired      INTEGER NOT NULL,
    received     INTEGER NOT NULL,
    cancelled    INTEGER,
    cancelled_by TEXT
) STRICT;
"#,
];

/// The setting holding the organisation's backup interval in seconds (tracker.md §7.7).
pub const SCHEDULE_EVERY: &str = "schedule.every";
/// The setting holding VIP machines' backup interval in seconds.
pub const SCHEDULE_VIP_EVERY: &str = "schedule.vip_every";
/// The setting saying whether a machine's own interval may win (`true` | `false`).
pub const SCHEDULE_MAY_OVERRIDE: &str = "schedule.machine_may_override";

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The setting that records a finished v1 import (its value: when, and what it found).
pub const IMPORTED_V1: &str = "imported_v1";

/// What [`Sqlite::open`] imported from a v1 data directory (`index.jsonl` and
/// `torrents/`). All zero when there was nothing to import.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// A v1 `index.jsonl` was imported by this open.
    pub ran: bool,
    /// Records imported.
    pub imported: usize,
    /// A torn last line (a crash mid-append) was ignored.
    pub torn_tail: bool,
    /// Unreadable lines skipped (not the last).
    pub bad_lines: usize,
    /// Records skipped because their torrent file is missing.
    pub missing_torrents: usize,
    /// Records skipped because their torrent file is not a torrent of that info-hash.
    pub bad_torrents: usize,
    /// Records skipped because an earlier line had the same info-hash (the first wins).
    pub duplicates: usize,
}

impl ImportReport {
    /// For the tracker's start line: empty when no v1 directory was imported.
    pub fn summary(&self) -> String {
        if !self.ran {
            return String::new();
        }
        let skipped: Vec<String> = [
            (self.bad_lines, "unreadable lines"),
            (self.missing_torrents, "torrent files missing"),
            (self.bad_torrents, "torrent files not matching"),
            (self.duplicates, "duplicates"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        format!(
            "; imported {} snapshot record(s) from the v1 index{}{}",
            self.imported,
            if self.torn_tail {
                " (a torn last line ignored)"
            } else {
                ""
            },
            if skipped.is_empty() {
                String::new()
            } else {
                format!(", skipped: {}", skipped.join(", "))
            }
        )
    }

    /// Records (complete lines) that were not imported, whatever the reason.
    pub fn skipped(&self) -> usize {
        self.bad_lines + self.missing_torrents + self.bad_torrents + self.duplicates
    }
}

/// The embedded database of one data directory. See the [module](self) documentation.
pub struct Sqlite {
    /// Settings, enrolment, publish, revoke and every read: `synchronous=FULL`.
    write: Connection,
    /// Online intervals only: `synchronous=NORMAL`.
    batch: Connection,
    path: PathBuf,
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> StorageError {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                ErrorCode::DiskFull => StorageError::Full,
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StorageError::Busy,
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                    StorageError::Corrupt(e.to_string())
                }
                _ => StorageError::Other(e.to_string()),
            },
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::Utf8Error(..) => {
                StorageError::Corrupt(format!("unexpected stored value: {e}"))
            }
            _ => StorageError::Other(e.to_string()),
        }
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StorageError {
    if e.kind() == std::io::ErrorKind::StorageFull {
        return StorageError::Full;
    }
    StorageError::Other(format!("{what} {}: {e}", path.display()))
}

fn corrupt(what: impl Into<String>) -> StorageError {
    StorageError::Corrupt(what.into())
}

/// Whether `torrent` is a metainfo whose info-hash is `ih`.
fn hashes_to(torrent: &[u8], ih: &[u8; 20]) -> bool {
    Metainfo::from_bytes(torrent).is_ok_and(|m| m.info_hash() == *ih)
}

fn to_i64(v: u64, what: &str) -> Result<i64, StorageError> {
    i64::try_from(v).map_err(|_| StorageError::Other(format!("{what} {v} is too large to store")))
}

fn to_u64(v: i64, what: &str) -> Result<u64, StorageError> {
    u64::try_from(v).map_err(|_| corrupt(format!("stored {what} is negative ({v})")))
}

fn blob<const N: usize>(v: Vec<u8>, what: &str) -> Result<[u8; N], StorageError> {
    let len = v.len();
    v.try_into()
        .map_err(|_| corrupt(format!("stored {what} is {len} bytes, not {N}")))
}

fn kind_str(k: MachineKind) -> &'static str {
    match k {
        MachineKind::Machine => "machine",
        MachineKind::Client => "client",
    }
}

const MACHINE_COLS: &str = "id, kind, key, age_recipient, name, user, vip, domain, passkey, \
                            certificate, enrolled, expires, revoked, revocation, \
                            backup_every, every_may_override, backup_requested";

fn machine_row(r: &Row<'_>) -> Result<MachineRow, StorageError> {
    let kind: String = r.get(1)?;
    let kind = match kind.as_str() {
        "machine" => MachineKind::Machine,
        "client" => MachineKind::Client,
        other => return Err(corrupt(format!("unknown machine kind {other:?}"))),
    };
    let key: Option<Vec<u8>> = r.get(2)?;
    Ok(MachineRow {
        id: r.get(0)?,
        kind,
        key: key.map(|k| blob(k, "machine key")).transpose()?,
        age_recipient: r.get(3)?,
        name: r.get(4)?,
        user: r.get(5)?,
        vip: r.get::<_, i64>(6)? != 0,
        domain: r.get(7)?,
        passkey: r.get(8)?,
        certificate: r.get(9)?,
        enrolled: r.get(10)?,
        expires: r.get(11)?,
        revoked: r.get(12)?,
        revocation: r.get(13)?,
        schedule: MachineSchedule {
            every: r
                .get::<_, Option<i64>>(14)?
                .map(|v| to_u64(v, "backup_every"))
                .transpose()?,
            may_override: r.get::<_, Option<i64>>(15)?.map(|v| v != 0),
            requested: r.get(16)?,
        },
    })
}

const SNAPSHOT_COLS: &str = "infohash, machine_key, machine_name, published, total_length, \
                             payload_length, name, copies, record, certificate";

fn snapshot_row(r: &Row<'_>) -> Result<SnapshotRow, StorageError> {
    Ok(SnapshotRow {
        infohash: blob(r.get(0)?, "info-hash")?,
        machine_key: r.get(1)?,
        machine_name: r.get(2)?,
        published: r.get(3)?,
        total_length: to_u64(r.get(4)?, "total length")?,
        payload_length: to_u64(r.get(5)?, "payload length")?,
        name: r.get(6)?,
        copies: r.get(7)?,
        record: r.get(8)?,
        certificate: r.get(9)?,
    })
}

const RETIREMENT_COLS: &str =
    "infohash, machine, record, retired, received, cancelled, cancelled_by";

fn retirement_row(r: &Row<'_>) -> Result<RetirementRow, StorageError> {
    Ok(RetirementRow {
        infohash: blob(r.get(0)?, "retired info-hash")?,
        machine: r.get(1)?,
        record: r.get(2)?,
        retired: r.get(3)?,
        received: r.get(4)?,
        cancelled: r.get(5)?,
        cancelled_by: r.get(6)?,
    })
}

/// Every row the parameterless query `sql` selects, each read by `read`.
fn every_row<T>(
    conn: &Connection,
    sql: &str,
    read: fn(&Row<'_>) -> Result<T, StorageError>,
) -> Result<Vec<T>, StorageError> {
    let mut st = conn.prepare_cached(sql)?;
    let mut rows = st.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(read(r)?);
    }
    Ok(out)
}

fn pending_row(r: &Row<'_>) -> Result<Pending, StorageError> {
    Ok(Pending {
        token_hash: blob(r.get(0)?, "token hash")?,
        name: r.get(1)?,
        user: r.get(2)?,
        vip: r.get::<_, i64>(3)? != 0,
        domain: r.get(4)?,
        cert_days: r.get(5)?,
        created: r.get(6)?,
        valid_until: r.get(7)?,
    })
}

fn immediate(conn: &mut Connection) -> Result<Transaction<'_>, StorageError> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

fn user_version(conn: &Connection) -> Result<i64, StorageError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

fn newer(found: i64) -> StorageError {
    corrupt(format!(
        "the database has schema version {found}, but this swarmbak knows versions up to \
         {SCHEMA_VERSION}: it was written by a newer swarmbak; run that version (or newer)"
    ))
}

fn report_row(r: &rusqlite::Row<'_>) -> Result<ReportRow, StorageError> {
    let corrupt =
        |what: &str| StorageError::Corrupt(format!("a stored backup report has a bad {what}"));
    let blob = |i: usize| -> Result<Option<Vec<u8>>, StorageError> { Ok(r.get(i)?) };
    let attempt: [u8; 16] = blob(1)?
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("id"))?;
    let count = |i: usize, what: &str| -> Result<u64, StorageError> {
        u64::try_from(r.get::<_, i64>(i)?).map_err(|_| corrupt(what))
    };
    let error: Option<String> = r.get(6)?;
    let outcome = match (blob(7)?, error) {
        (Some(ih), None) => Ok(ih.try_into().map_err(|_| corrupt("info-hash"))?),
        (None, Some(e)) => Err(e),
        _ => return Err(corrupt("outcome")),
    };
    Ok(ReportRow {
        machine: r.get(0)?,
        attempt,
        started: r.get(2)?,
        ended: r.get(3)?,
        bytes: count(4, "byte count")?,
        files: count(5, "file count")?,
        outcome,
        report: r.get(8)?,
    })
}

/// Applies the [`MIGRATIONS`] a database lacks, one transaction each.
fn migrate(conn: &mut Connection) -> Result<(), StorageError> {
    loop {
        let tx = immediate(conn)?;
        // Read under the write lock: another process may be migrating the same file.
        let v = user_version(&tx)?;
        if v > SCHEMA_VERSION {
            return Err(newer(v));
        }
        let Some(step) = usize::try_from(v).ok().and_then(|i| MIGRATIONS.get(i)) else {
            return Ok(());
        };
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", v + 1)?;
        tx.commit()?;
    }
}

fn connect(path: &Path, synchronous: &str) -> Result<Connection, StorageError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Reading the header here reports a file that is not a database (NOTADB: Corrupt).
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError::Other(format!(
            "{}: cannot use WAL journal mode (got {mode:?})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

impl Sqlite {
    /// Opens (creating if needed) `DATA/tracker.db`, applies the schema migrations it
    /// lacks, and imports a v1 data directory once (see [`ImportReport`]).
    ///
    /// Several handles may be open on the same directory, in one process or several (the
    /// running tracker and `swarmbak tracker enroll`, say).
    pub fn open(data_dir: &Path) -> Result<(Sqlite, ImportReport), StorageError> {
        fs::create_dir_all(data_dir)
            .map_err(|e| io_err("cannot create the data directory", data_dir, e))?;
        let path = data_dir.join(DB_FILE);
        create_private(&path)?;
        let mut write = connect(&path, "FULL")?;
        migrate(&mut write)?;
        let batch = connect(&path, "NORMAL")?;
        let mut db = Sqlite { write, batch, path };
        let report = db.import_v1(data_dir)?;
        Ok((db, report))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `PRAGMA synchronous` of the write and of the batch connection (2 is FULL,
    /// 1 NORMAL).
    pub fn synchronous(&mut self) -> Result<(i64, i64), StorageError> {
        let q = |c: &Connection| c.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0));
        Ok((q(&self.write)?, q(&self.batch)?))
    }

    /// The database's schema version (`PRAGMA user_version`).
    pub fn schema_version(&mut self) -> Result<i64, StorageError> {
        user_version(&self.write)
    }

    /// Copies the whole database to `dest` (a new file, or an existing database that is
    /// overwritten) with SQLite's online backup, while other connections go on reading
    /// and writing. `sqlite3 DATA/tracker.db ".backup FILE"` does the same from a shell.
    ///
    /// The copy is one consistent snapshot: it is taken in a single step under a read
    /// transaction, which in WAL mode does not stop writers. `dest` is created readable
    /// by its owner only.
    pub fn backup_to(&mut self, dest: &Path) -> Result<(), StorageError> {
        use rusqlite::backup::{Backup, StepResult};
        create_private(dest)?;
        let mut to = Connection::open(dest)?;
        to.busy_timeout(BUSY_TIMEOUT)?;
        let backup = Backup::new(&self.write, &mut to)?;
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match backup.step(-1)? {
                StepResult::Done => return Ok(()),
                // `dest` is in use by someone else.
                StepResult::Busy | StepResult::Locked => {
                    if std::time::Instant::now() > deadline {
                        return Err(StorageError::Busy);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                // More (-1 copies everything at once, so not expected).
                _ => {}
            }
        }
    }

    /// Limits the database to `pages` pages on the write connection (tests: a full disk).
    /// Returns the limit in force (never below the current size).
    #[doc(hidden)]
    pub fn set_max_page_count(&mut self, pages: i64) -> Result<i64, StorageError> {
        Ok(self
            .write
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get(0)
            })?)
    }

    /// Runs raw SQL on the write connection (tests: corrupting rows on purpose).
    #[doc(hidden)]
    pub fn execute_raw(&mut self, sql: &str) -> Result<usize, StorageError> {
        Ok(self.write.execute(sql, [])?)
    }

    /// The enrolment token `token_hash`, used or not (`None` if unknown), and when it was
    /// used.
    pub fn pending(
        &mut self,
        token_hash: &[u8; 32],
    ) -> Result<Option<(Pending, Option<i64>)>, StorageError> {
        let mut st = self.write.prepare_cached(
            "SELECT token_hash, name, user, vip, domain, cert_days, created, valid_until, used_at \
             FROM pending WHERE token_hash = ?1",
        )?;
        let mut rows = st.query(params![&token_hash[..]])?;
        match rows.next()? {
            Some(r) => Ok(Some((pending_row(r)?, r.get(8)?))),
            None => Ok(None),
        }
    }

    /// One-time import of `DATA/index.jsonl` and `DATA/torrents/` (swarmbak's v1 store).
    fn import_v1(&mut self, dir: &Path) -> Result<ImportReport, StorageError> {
        let index = dir.join("index.jsonl");
        let done = dir.join("index.jsonl.imported");
        let mut report = ImportReport::default();
        if !index.exists() {
            return Ok(report);
        }
        let tx = immediate(&mut self.write)?;
        let already: Option<String> = tx
            .query_row(
                "SELECT value FROM settings WHERE key = ?1",
                [IMPORTED_V1],
                |r| r.get(0),
            )
            .optional()?;
        if already.is_none() {
            let content = fs::read(&index).map_err(|e| io_err("cannot read", &index, e))?;
            let records = v1::parse(&content, &mut report);
            let mut seq: i64 =
                tx.query_row("SELECT coalesce(max(seq), 0) FROM snapshots", [], |r| {
                    r.get(0)
                })?;
            for (ih, rec) in records {
                let torrent_path = dir
                    .join("torrents")
                    .join(format!("{}.torrent", hex::encode(ih.0)));
                let torrent = match fs::read(&torrent_path) {
                    Ok(t) => t,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        report.missing_torrents += 1;
                        continue;
                    }
                    Err(e) => return Err(io_err("cannot read", &torrent_path, e)),
                };
                if !hashes_to(&torrent, &ih.0) {
                    report.bad_torrents += 1;
                    continue;
                }
                let exists: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM snapshots WHERE infohash = ?1)",
                    [&ih.0[..]],
                    |r| r.get(0),
                )?;
                if exists {
                    report.duplicates += 1;
                    continue;
                }
                seq += 1;
                tx.execute(
                    "INSERT INTO snapshots (infohash, seq, machine_key, machine_name, published, \
                     total_length, payload_length, name, copies, record, certificate) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, NULL, NULL)",
                    params![
                        &ih.0[..],
                        seq,
                        rec.machine_key,
                        rec.machine_name,
                        rec.published,
                        to_i64(rec.total_length, "total length")?,
                        to_i64(rec.payload_length, "payload length")?,
                        rec.name,
                    ],
                )?;
                tx.execute(
                    "INSERT INTO metainfo (infohash, torrent) VALUES (?1, ?2)",
                    params![&ih.0[..], torrent],
                )?;
                report.imported += 1;
            }
            report.ran = true;
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)",
                params![
                    IMPORTED_V1,
                    format!(
                        "imported {} records, skipped {}{}",
                        report.imported,
                        report.skipped(),
                        if report.torn_tail {
                            " and a torn last line"
                        } else {
                            ""
                        }
                    )
                ],
            )?;
        }
        tx.commit()?;
        // Committed: the setting keeps a crash right here from importing twice; the rename
        // tells the administrator it is done.
        fs::rename(&index, &done).map_err(|e| io_err("cannot rename", &index, e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("cannot sync", dir, e))?;
        Ok(report)
    }
}

/// Creates an empty `tracker.db` readable by its owner only (it holds passkeys); SQLite
/// gives its `-wal` and `-shm` files the same mode.
fn create_private(path: &Path) -> Result<(), StorageError> {
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    match o.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("cannot create", path, e)),
    }
}

/// Reading swarmbak v1's `index.jsonl`, with the rules of [`crate::store`]: a torn last
/// line is ignored, an unreadable line in the middle is skipped, blank lines are nothing.
mod v1 {
    use super::*;

    /// A v1 line: the publish record the JSON endpoints still answer (its `v` ignored).
    pub(super) type Line = crate::store::SnapshotRecord;

    pub(super) fn parse(content: &[u8], report: &mut ImportReport) -> Vec<(InfoHash, Line)> {
        let lines: Vec<&[u8]> = content.split(|&b| b == b'\n').collect();
        let mut out = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let parsed = serde_json::from_slice::<Line>(line)
                .ok()
                .and_then(|l| Some((InfoHash::from_hex(&l.infohash).ok()?, l)));
            let blank = line.iter().all(u8::is_ascii_whitespace);
            match parsed {
                Some(p) => out.push(p),
                None if blank => {}
                // The last piece of the file has no newline after it: a crash mid-append.
                None if i + 1 == lines.len() => report.torn_tail = true,
                None => report.bad_lines += 1,
            }
        }
        out
    }
}

impl Storage for Sqlite {
    fn setting(&mut self, key: &str) -> Result<Option<String>, StorageError> {
        Ok(self
            .write
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn set_setting(&mut self, key: &str, value: &str) -> Result<(), StorageError> {
        let tx = immediate(&mut self.write)?;
        tx.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn add_pending(&mut self, p: &Pending) -> Result<(), StorageError> {
        let tx = immediate(&mut self.write)?;
        tx.execute(
            "INSERT INTO pending (token_hash, name, user, vip, domain, cert_days, created, \
             valid_until, used_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL)",
            params![
                &p.token_hash[..],
                p.name,
                p.user,
                i64::from(p.vip),
                p.domain,
                p.cert_days,
                p.created,
                p.valid_until,
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn redeem(
        &mut self,
        token_hash: &[u8; 32],
        now: i64,
        make: &mut dyn FnMut(&Pending) -> Result<NewMachine, String>,
    ) -> Result<Redeemed, StorageError> {
        // One write transaction from the token check to marking it used: two machines
        // redeeming the same token (or taking the same name) cannot both succeed.
        let tx = immediate(&mut self.write)?;
        let found = {
            let mut st = tx.prepare_cached(
                "SELECT token_hash, name, user, vip, domain, cert_days, created, valid_until, \
                 used_at FROM pending WHERE token_hash = ?1",
            )?;
            let mut rows = st.query(params![&token_hash[..]])?;
            match rows.next()? {
                Some(r) => Some((pending_row(r)?, r.get::<_, Option<i64>>(8)?)),
                None => None,
            }
        };
        let pending = match found {
            Some((p, None)) if p.valid_until >= now => p,
            // Unknown, used, or expired: the same answer for all three.
            _ => return Ok(Redeemed::UnknownToken),
        };
        let name_taken = |tx: &Transaction<'_>, name: &str| -> Result<bool, StorageError> {
            Ok(tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM machines \
                 WHERE kind = 'machine' AND revoked IS NULL AND name = ?1)",
                [name],
                |r| r.get(0),
            )?)
        };
        if name_taken(&tx, &pending.name)? {
            return Ok(Redeemed::NameTaken);
        }
        let m = match make(&pending) {
            Ok(m) => m,
            Err(msg) => return Ok(Redeemed::Refused(msg)),
        };
        if m.name != pending.name && name_taken(&tx, &m.name)? {
            return Ok(Redeemed::NameTaken);
        }
        let row = insert_machine(&tx, &m)?;
        tx.execute(
            "UPDATE pending SET used_at = ?2 WHERE token_hash = ?1",
            params![&token_hash[..], now],
        )?;
        tx.commit()?;
        Ok(Redeemed::Enrolled(row))
    }

    fn add_machine(&mut self, m: &NewMachine) -> Result<MachineRow, StorageError> {
        let tx = immediate(&mut self.write)?;
        let row = insert_machine(&tx, m)?;
        tx.commit()?;
        Ok(row)
    }

    fn machines(&mut self) -> Result<Vec<MachineRow>, StorageError> {
        every_row(
            &self.write,
            &format!("SELECT {MACHINE_COLS} FROM machines ORDER BY id"),
            machine_row,
        )
    }

    /// Marks machine `id` revoked. Revoking a machine that is revoked already keeps the
    /// first revocation (and returns `Ok`); an unknown `id` is an error.
    fn revoke(&mut self, id: i64, at: i64, revocation: &[u8]) -> Result<(), StorageError> {
        let tx = immediate(&mut self.write)?;
        let n = tx.execute(
            "UPDATE machines SET revoked = ?2, revocation = ?3 WHERE id = ?1 AND revoked IS NULL",
            params![id, at, revocation],
        )?;
        if n == 0 {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM machines WHERE id = ?1)",
                [id],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(StorageError::Other(format!("no machine has id {id}")));
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Stores `row` and `torrent` in one transaction. `torrent` must be a metainfo whose
    /// info-hash is `row.infohash` (checked). If the info-hash is stored already, the
    /// stored row is returned unchanged, but a stored metainfo that no longer hashes to
    /// its info-hash is replaced by `torrent` (the owner's next publish repairs it).
    fn set_machine_schedule(&mut self, id: i64, s: &MachineSchedule) -> Result<(), StorageError> {
        let every = s.every.map(|e| to_i64(e, "backup_every")).transpose()?;
        let tx = immediate(&mut self.write)?;
        let n = tx.execute(
            "UPDATE machines SET backup_every = ?2, every_may_override = ?3, \
             backup_requested = ?4 WHERE id = ?1",
            params![id, every, s.may_override.map(i64::from), s.requested],
        )?;
        if n == 0 {
            return Err(corrupt(format!("no machine with id {id}")));
        }
        tx.commit()?;
        Ok(())
    }

    fn org_schedule(&mut self) -> Result<OrgSchedule, StorageError> {
        let every = every_setting(SCHEDULE_EVERY, self.setting(SCHEDULE_EVERY)?)?;
        let vip_every = every_setting(SCHEDULE_VIP_EVERY, self.setting(SCHEDULE_VIP_EVERY)?)?;
        let machine_may_override = match self.setting(SCHEDULE_MAY_OVERRIDE)?.as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(corrupt(format!(
                    "setting {SCHEDULE_MAY_OVERRIDE} is {other:?}, not true or false"
                )))
            }
        };
        Ok(OrgSchedule {
            every,
            vip_every,
            machine_may_override,
        })
    }

    fn set_org_schedule(&mut self, s: &OrgSchedule) -> Result<(), StorageError> {
        let tx = immediate(&mut self.write)?;
        for (key, value) in [
            (SCHEDULE_EVERY, s.every.map(|e| e.to_string())),
            (SCHEDULE_VIP_EVERY, s.vip_every.map(|e| e.to_string())),
            (
                SCHEDULE_MAY_OVERRIDE,
                Some(s.machine_may_override.to_string()),
            ),
        ] {
            match value {
                Some(v) => tx.execute(
                    "INSERT INTO settings (key, value) VALUES (?1, ?2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [key, v.as_str()],
                )?,
                None => tx.execute("DELETE FROM settings WHERE key = ?1", [key])?,
            };
        }
        tx.commit()?;
        Ok(())
    }

    fn publish(&mut self, row: &SnapshotRow, torrent: &[u8]) -> Result<Published, StorageError> {
        if !hashes_to(torrent, &row.infohash) {
            return Err(StorageError::Other(format!(
                "refusing to store a metainfo that is not that of {}",
                hex::encode(row.infohash)
            )));
        }
        let tx = immediate(&mut self.write)?;
        let existing = {
            let mut st = tx.prepare_cached(&format!(
                "SELECT {SNAPSHOT_COLS} FROM snapshots WHERE infohash = ?1"
            ))?;
            let mut rows = st.query(params![&row.infohash[..]])?;
            match rows.next()? {
                Some(r) => Some(snapshot_row(r)?),
                None => None,
            }
        };
        if let Some(existing) = existing {
            let stored: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT torrent FROM metainfo WHERE infohash = ?1",
                    [&row.infohash[..]],
                    |r| r.get(0),
                )
                .optional()?;
            if !stored.is_some_and(|s| hashes_to(&s, &row.infohash)) {
                tx.execute(
                    "INSERT INTO metainfo (infohash, torrent) VALUES (?1, ?2) \
                     ON CONFLICT (infohash) DO UPDATE SET torrent = excluded.torrent",
                    params![&row.infohash[..], torrent],
                )?;
            }
            tx.commit()?;
            return Ok(Published::Existing(existing));
        }
        tx.execute(
            "INSERT INTO snapshots (infohash, seq, machine_key, machine_name, published, \
             total_length, payload_length, name, copies, record, certificate) \
             VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM snapshots), \
             ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                &row.infohash[..],
                row.machine_key,
                row.machine_name,
                row.published,
                to_i64(row.total_length, "total length")?,
                to_i64(row.payload_length, "payload length")?,
                row.name,
                row.copies,
                row.record,
                row.certificate,
            ],
        )?;
        tx.execute(
            "INSERT INTO metainfo (infohash, torrent) VALUES (?1, ?2)",
            params![&row.infohash[..], torrent],
        )?;
        tx.commit()?;
        Ok(Published::New(row.clone()))
    }

    fn snapshots(&mut self) -> Result<Vec<SnapshotRow>, StorageError> {
        every_row(
            &self.write,
            &format!("SELECT {SNAPSHOT_COLS} FROM snapshots ORDER BY seq"),
            snapshot_row,
        )
    }

    /// The stored metainfo, checked: bytes that do not hash to `infohash` are never
    /// returned ([`StorageError::Corrupt`]).
    fn metainfo(&mut self, infohash: &[u8; 20]) -> Result<Option<Vec<u8>>, StorageError> {
        let stored: Option<Vec<u8>> = self
            .write
            .query_row(
                "SELECT torrent FROM metainfo WHERE infohash = ?1",
                [&infohash[..]],
                |r| r.get(0),
            )
            .optional()?;
        match stored {
            Some(t) if !hashes_to(&t, infohash) => Err(corrupt(format!(
                "stored metainfo of {} is corrupt: the owner's next publish repairs it",
                hex::encode(infohash)
            ))),
            other => Ok(other),
        }
    }

    fn add_online(&mut self, intervals: &[OnlineInterval]) -> Result<(), StorageError> {
        let tx = immediate(&mut self.batch)?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO online (machine, \"start\", \"end\") VALUES (?1, ?2, ?3)",
            )?;
            for i in intervals {
                st.execute(params![i.machine, i.start, i.end])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn add_report(&mut self, r: &ReportRow) -> Result<bool, StorageError> {
        let tx = immediate(&mut self.write)?;
        let (infohash, error) = match &r.outcome {
            Ok(ih) => (Some(&ih[..]), None),
            Err(e) => (None, Some(e.as_str())),
        };
        let added = tx.execute(
            "INSERT INTO reports (machine, attempt, started, ended, success, bytes, files, \
             error, infohash, report) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT (machine, attempt) DO NOTHING",
            params![
                r.machine,
                &r.attempt[..],
                r.started,
                r.ended,
                r.outcome.is_ok(),
                to_i64(r.bytes, "bytes")?,
                to_i64(r.files, "files")?,
                error,
                infohash,
                r.report,
            ],
        )?;
        tx.commit()?;
        Ok(added == 1)
    }

    fn retire(&mut self, r: &RetirementRow) -> Result<Retired, StorageError> {
        let tx = immediate(&mut self.write)?;
        let stored = tx
            .query_row(
                &format!("SELECT {RETIREMENT_COLS} FROM retirements WHERE infohash = ?1"),
                [&r.infohash[..]],
                |row| Ok(retirement_row(row)),
            )
            .optional()?
            .transpose()?;
        let outcome = match stored {
            Some(s) if s.cancelled.is_some() => return Ok(Retired::Cancelled(s)),
            Some(s) if s.record == r.record => return Ok(Retired::Same),
            Some(s) if s.retired >= r.retired => return Ok(Retired::NotLater(s)),
            Some(_) => Retired::Stored(true),
            None => Retired::Stored(false),
        };
        tx.execute(
            "INSERT INTO retirements (infohash, machine, record, retired, received, cancelled, \
             cancelled_by) VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL) \
             ON CONFLICT (infohash) DO UPDATE SET machine = excluded.machine, \
             record = excluded.record, retired = excluded.retired, received = excluded.received",
            params![&r.infohash[..], r.machine, r.record, r.retired, r.received],
        )?;
        tx.commit()?;
        Ok(outcome)
    }

    fn retirements(&mut self) -> Result<Vec<RetirementRow>, StorageError> {
        every_row(
            &self.write,
            &format!("SELECT {RETIREMENT_COLS} FROM retirements ORDER BY received, infohash"),
            retirement_row,
        )
    }

    fn cancel_retirement(
        &mut self,
        infohash: &[u8; 20],
        at: i64,
        by: &str,
    ) -> Result<bool, StorageError> {
        let tx = immediate(&mut self.write)?;
        let n = tx.execute(
            "UPDATE retirements SET cancelled = ?2, cancelled_by = ?3 \
             WHERE infohash = ?1 AND cancelled IS NULL",
            params![&infohash[..], at, by],
        )?;
        tx.commit()?;
        Ok(n == 1)
    }

    fn reports(&mut self, machine: i64, limit: usize) -> Result<Vec<ReportRow>, StorageError> {
        let mut st = self.write.prepare_cached(
            "SELECT machine, attempt, started, ended, bytes, files, error, infohash, report \
             FROM reports WHERE machine = ?1 AND attempt IS NOT NULL \
             ORDER BY started DESC, id DESC LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = st.query(params![machine, limit])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(report_row(r)?);
        }
        Ok(out)
    }

    fn online(&mut self, machine: i64, since: i64) -> Result<Vec<OnlineInterval>, StorageError> {
        let mut st = self.write.prepare_cached(
            "SELECT machine, \"start\", \"end\" FROM online WHERE machine = ?1 AND \"end\" >= ?2 \
             ORDER BY \"start\", \"end\"",
        )?;
        let rows = st.query_map(params![machine, since], |r| {
            Ok(OnlineInterval {
                machine: r.get(0)?,
                start: r.get(1)?,
                end: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn activity(&mut self) -> Result<HashMap<i64, Activity>, StorageError> {
        let mut out: HashMap<i64, Activity> = HashMap::new();
        {
            let mut st = self
                .write
                .prepare_cached("SELECT machine, max(\"end\") FROM online GROUP BY machine")?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                out.entry(r.get(0)?).or_default().last_online = Some(r.get(1)?);
            }
        }
        let ids: Vec<i64> = {
            let mut st = self
                .write
                .prepare_cached("SELECT id FROM machines WHERE kind = 'machine'")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        // One index lookup per machine and question (reports_machine_started,
        // reports_machine_success): no scan of the whole history.
        let mut latest = self.write.prepare_cached(
            "SELECT started, ended, bytes, files, error FROM reports \
             WHERE machine = ?1 AND attempt IS NOT NULL ORDER BY started DESC, id DESC LIMIT 1",
        )?;
        let mut success = self.write.prepare_cached(
            "SELECT started, ended, bytes, files, error FROM reports \
             WHERE machine = ?1 AND success = 1 AND attempt IS NOT NULL \
             ORDER BY started DESC, id DESC LIMIT 1",
        )?;
        let attempt = |r: &Row<'_>| -> Result<Attempt, StorageError> {
            Ok(Attempt {
                started: r.get(0)?,
                ended: r.get(1)?,
                bytes: to_u64(r.get(2)?, "bytes")?,
                files: to_u64(r.get(3)?, "files")?,
                error: r.get(4)?,
            })
        };
        for id in ids {
            let a = match latest.query([id])?.next()? {
                Some(r) => Some(attempt(r)?),
                None => continue,
            };
            let s = match success.query([id])?.next()? {
                Some(r) => Some(attempt(r)?),
                None => None,
            };
            let e = out.entry(id).or_default();
            e.last_attempt = a;
            e.last_success = s;
        }
        Ok(out)
    }

    fn audit(&mut self, row: &AuditRow) -> Result<(), StorageError> {
        self.write.execute(
            "INSERT INTO audit (at, actor, \"from\", action, target, detail) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![row.at, row.actor, row.from, row.action, row.target, row.detail],
        )?;
        Ok(())
    }

    fn audit_log(&mut self, limit: usize) -> Result<Vec<AuditRow>, StorageError> {
        let mut st = self.write.prepare_cached(
            "SELECT id, at, actor, \"from\", action, target, detail FROM audit \
             ORDER BY id DESC LIMIT ?1",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = st.query_map([limit], |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                at: r.get(1)?,
                actor: r.get(2)?,
                from: r.get(3)?,
                action: r.get(4)?,
                target: r.get(5)?,
                detail: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn raise_alert(
        &mut self,
        machine: i64,
        kind: &str,
        at: i64,
    ) -> Result<Option<AlertRow>, StorageError> {
        let tx = immediate(&mut self.write)?;
        let added = tx.execute(
            "INSERT INTO alerts (machine, kind, raised, notified) VALUES (?1, ?2, ?3, ?3) \
             ON CONFLICT DO NOTHING",
            params![machine, kind, at],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok((added == 1).then(|| AlertRow {
            id,
            machine,
            kind: kind.to_owned(),
            raised: at,
            notified: at,
            acked: None,
            acked_by: None,
            cleared: None,
        }))
    }

    fn alert_notified(&mut self, id: i64, kind: &str, at: i64) -> Result<(), StorageError> {
        self.write.execute(
            "UPDATE alerts SET notified = ?2, kind = ?3 WHERE id = ?1",
            params![id, at, kind],
        )?;
        Ok(())
    }

    fn ack_alert(&mut self, id: i64, at: i64, by: &str) -> Result<bool, StorageError> {
        let n = self.write.execute(
            "UPDATE alerts SET acked = ?2, acked_by = ?3 \
             WHERE id = ?1 AND cleared IS NULL AND acked IS NULL",
            params![id, at, by],
        )?;
        Ok(n == 1)
    }

    fn clear_alert(&mut self, id: i64, at: i64) -> Result<(), StorageError> {
        self.write.execute(
            "UPDATE alerts SET cleared = ?2 WHERE id = ?1 AND cleared IS NULL",
            params![id, at],
        )?;
        Ok(())
    }

    fn alerts(&mut self, closed_since: Option<i64>) -> Result<Vec<AlertRow>, StorageError> {
        let mut st = self.write.prepare_cached(
            "SELECT id, machine, kind, raised, notified, acked, acked_by, cleared FROM alerts \
             WHERE cleared IS NULL OR cleared >= ?1 ORDER BY id DESC",
        )?;
        let rows = st.query_map([closed_since.unwrap_or(i64::MAX)], |r| {
            Ok(AlertRow {
                id: r.get(0)?,
                machine: r.get(1)?,
                kind: r.get(2)?,
                raised: r.get(3)?,
                notified: r.get(4)?,
                acked: r.get(5)?,
                acked_by: r.get(6)?,
                cleared: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// `PRAGMA data_version` of the write connection. It also moves when this handle's
    /// own batch connection commits [`Storage::add_online`]: a caller that reloads on a
    /// change reloads once more than needed, never once less.
    fn data_version(&mut self) -> Result<i64, StorageError> {
        Ok(self
            .write
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }
}

fn insert_machine(tx: &Transaction<'_>, m: &NewMachine) -> Result<MachineRow, StorageError> {
    tx.execute(
        "INSERT INTO machines (kind, key, age_recipient, name, user, vip, domain, passkey, \
         certificate, enrolled, expires, revoked, revocation) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL, NULL)",
        params![
            kind_str(m.kind),
            m.key.as_ref().map(|k| &k[..]),
            m.age_recipient,
            m.name,
            m.user,
            i64::from(m.vip),
            m.domain,
            m.passkey,
            m.certificate,
            m.enrolled,
            m.expires,
        ],
    )?;
    Ok(MachineRow {
        id: tx.last_insert_rowid(),
        kind: m.kind,
        key: m.key,
        age_recipient: m.age_recipient.clone(),
        name: m.name.clone(),
        user: m.user.clone(),
        vip: m.vip,
        domain: m.domain.clone(),
        passkey: m.passkey.clone(),
        certificate: m.certificate.clone(),
        enrolled: m.enrolled,
        expires: m.expires,
        revoked: None,
        revocation: None,
        schedule: MachineSchedule::default(),
    })
}

/// A stored interval setting: whole seconds, at least 1.
fn every_setting(key: &str, v: Option<String>) -> Result<Option<u64>, StorageError> {
    v.map(|t| {
        t.trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| corrupt(format!("setting {key} is {t:?}, not a number of seconds")))
    })
    .transpose()
}
