//! The embedded database (`swarmbak_tracker::sqlite`) on real files.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use swarmbak_metainfo::Metainfo;
use swarmbak_tracker::sqlite::{Sqlite, DB_FILE, IMPORTED_V1, MIGRATIONS, SCHEMA_VERSION};
use swarmbak_tracker::storage::{
    AuditRow, MachineKind, NewMachine, OnlineInterval, Pending, Published, Redeemed, ReportRow,
    Storage, StorageError,
};

mod common;
use common::torrents::{row_of, torrent};

fn pending(token: u8, name: &str, valid_until: i64) -> Pending {
    Pending {
        token_hash: [token; 32],
        name: name.to_owned(),
        user: Some("ana".into()),
        vip: true,
        domain: Some("HQ/2.14".into()),
        cert_days: Some(365),
        created: 1000,
        valid_until,
    }
}

/// What `swarmbak tracker` would make of a token: a machine with a key from `seed`.
fn machine_from(p: &Pending, seed: u8) -> NewMachine {
    NewMachine {
        kind: MachineKind::Machine,
        key: Some([seed; 32]),
        age_recipient: Some(format!("age1machine{seed}")),
        name: p.name.clone(),
        user: p.user.clone(),
        vip: p.vip,
        domain: p.domain.clone(),
        passkey: format!("{seed:032x}"),
        certificate: Some(vec![seed; 64]),
        enrolled: 2000,
        expires: p.cert_days.map(|d| 2000 + i64::from(d) * 86400),
    }
}

fn redeem(db: &mut Sqlite, token: u8, now: i64, seed: u8) -> Redeemed {
    db.redeem(&[token; 32], now, &mut |p| Ok(machine_from(p, seed)))
        .unwrap()
}

fn client(name: &str, passkey: &str) -> NewMachine {
    NewMachine {
        kind: MachineKind::Client,
        key: None,
        age_recipient: None,
        name: name.to_owned(),
        user: None,
        vip: false,
        domain: None,
        passkey: passkey.to_owned(),
        certificate: None,
        enrolled: 3000,
        expires: None,
    }
}

fn open(dir: &Path) -> Sqlite {
    Sqlite::open(dir).unwrap().0
}

#[test]
fn round_trip_of_every_method() {
    let dir = tempfile::tempdir().unwrap();
    let (mut db, report) = Sqlite::open(dir.path()).unwrap();
    assert!(!report.ran);
    assert_eq!(report.summary(), "");
    assert_eq!(
        db.synchronous().unwrap(),
        (2, 1),
        "write FULL, batch NORMAL"
    );
    assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
    // The reserved reports table is there, empty.
    assert_eq!(db.execute_raw("DELETE FROM reports").unwrap(), 0);

    // It holds passkeys: its owner's only.
    #[cfg(unix)]
    for f in ["tracker.db", "tracker.db-wal"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }

    // Settings.
    assert_eq!(db.setting("public_url").unwrap(), None);
    db.set_setting("public_url", "https://t.example").unwrap();
    db.set_setting("public_url", "https://tracker.example")
        .unwrap();
    assert_eq!(
        db.setting("public_url").unwrap().as_deref(),
        Some("https://tracker.example")
    );

    // Enrolment.
    let p = pending(1, "laptop", 5000);
    db.add_pending(&p).unwrap();
    assert_eq!(db.pending(&[1; 32]).unwrap(), Some((p.clone(), None)));
    let Redeemed::Enrolled(m) = redeem(&mut db, 1, 4000, 7) else {
        panic!("enrolled")
    };
    assert_eq!(m.kind, MachineKind::Machine);
    assert_eq!(m.key, Some([7; 32]));
    assert_eq!(m.name, "laptop");
    assert_eq!(m.domain.as_deref(), Some("HQ/2.14"));
    assert!(m.vip);
    assert_eq!(m.expires, Some(2000 + 365 * 86400));
    assert_eq!(db.pending(&[1; 32]).unwrap(), Some((p, Some(4000))));
    let c = db
        .add_machine(&client("qbittorrent", &"c".repeat(32)))
        .unwrap();
    assert_eq!(c.kind, MachineKind::Client);
    let all = db.machines().unwrap();
    assert_eq!(
        all,
        vec![m.clone(), c.clone()],
        "in enrolment order, fields kept"
    );

    // Revocation: the first one is kept; an unknown id is an error.
    db.revoke(m.id, 4500, b"revoked by admin").unwrap();
    db.revoke(m.id, 4600, b"again").unwrap();
    let revoked = &db.machines().unwrap()[0];
    assert_eq!(revoked.revoked, Some(4500));
    assert_eq!(
        revoked.revocation.as_deref(),
        Some(&b"revoked by admin"[..])
    );
    assert!(db.revoke(999, 1, b"x").is_err());

    // Publish, snapshots, metainfo.
    let t1 = torrent(1, 1);
    let t2 = torrent(2, 2);
    let r1 = row_of(&t1, &hex::encode([7; 32]), "laptop", 100);
    let r2 = row_of(&t2, &hex::encode([7; 32]), "laptop", 50);
    assert_eq!(db.publish(&r1, &t1).unwrap(), Published::New(r1.clone()));
    assert_eq!(db.publish(&r2, &t2).unwrap(), Published::New(r2.clone()));
    let mut again = r1.clone();
    again.machine_name = "renamed".into();
    again.published = 999;
    assert_eq!(
        db.publish(&again, &t1).unwrap(),
        Published::Existing(r1.clone()),
        "the stored row, unchanged"
    );
    assert_eq!(
        db.snapshots().unwrap(),
        vec![r1.clone(), r2.clone()],
        "publish order, not publish time"
    );
    assert_eq!(db.metainfo(&r1.infohash).unwrap(), Some(t1.clone()));
    assert_eq!(db.metainfo(&r2.infohash).unwrap(), Some(t2.clone()));
    assert_eq!(db.metainfo(&[9; 20]).unwrap(), None);
    // A torrent that is not that of the row is refused, and nothing is stored.
    let mut wrong = row_of(&torrent(3, 1), "k", "n", 1);
    wrong.infohash = [3; 20];
    assert!(db.publish(&wrong, &torrent(3, 1)).is_err());
    assert_eq!(db.snapshots().unwrap().len(), 2);

    // Online intervals.
    db.add_online(&[
        OnlineInterval {
            machine: m.id,
            start: 10,
            end: 20,
        },
        OnlineInterval {
            machine: m.id,
            start: 30,
            end: 40,
        },
        OnlineInterval {
            machine: c.id,
            start: 5,
            end: 50,
        },
    ])
    .unwrap();
    db.add_online(&[OnlineInterval {
        machine: m.id,
        start: 45,
        end: 60,
    }])
    .unwrap();
    let on = db.online(m.id, 25).unwrap();
    assert_eq!(
        on,
        vec![
            OnlineInterval {
                machine: m.id,
                start: 30,
                end: 40
            },
            OnlineInterval {
                machine: m.id,
                start: 45,
                end: 60
            },
        ]
    );
    assert_eq!(db.online(m.id, 0).unwrap().len(), 3);
    assert_eq!(db.online(c.id, 51).unwrap(), vec![]);
    // An interval for a machine that does not exist breaks a foreign key: nothing of
    // that batch is stored.
    assert!(db
        .add_online(&[
            OnlineInterval {
                machine: m.id,
                start: 70,
                end: 80
            },
            OnlineInterval {
                machine: 999,
                start: 1,
                end: 2
            },
        ])
        .is_err());
    assert_eq!(db.online(m.id, 0).unwrap().len(), 3);

    // data_version does not move for the write connection's own commits; it does for
    // the batch connection's (documented).
    let v = db.data_version().unwrap();
    db.set_setting("x", "y").unwrap();
    assert_eq!(db.data_version().unwrap(), v);
    db.add_online(&[OnlineInterval {
        machine: m.id,
        start: 90,
        end: 95,
    }])
    .unwrap();
    assert_ne!(db.data_version().unwrap(), v);

    // Everything survives a reopen, and an online backup has it all.
    let backup = tempfile::tempdir().unwrap();
    db.backup_to(&backup.path().join("tracker.db")).unwrap();
    drop(db);
    for d in [dir.path(), backup.path()] {
        let mut db = open(d);
        assert_eq!(db.machines().unwrap().len(), 2);
        assert_eq!(db.snapshots().unwrap(), vec![r1.clone(), r2.clone()]);
        assert_eq!(db.metainfo(&r2.infohash).unwrap(), Some(t2.clone()));
        assert_eq!(db.online(m.id, 0).unwrap().len(), 4);
        assert_eq!(db.setting("x").unwrap().as_deref(), Some("y"));
        assert_eq!(db.synchronous().unwrap(), (2, 1));
    }
}

#[test]
fn a_newer_schema_or_a_foreign_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(dir.path());
    db.execute_raw(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1))
        .unwrap();
    drop(db);
    match Sqlite::open(dir.path()) {
        Err(StorageError::Corrupt(m)) => assert!(m.contains("newer swarmbak"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a newer schema was opened"),
    }

    let other = tempfile::tempdir().unwrap();
    fs::write(other.path().join("tracker.db"), vec![b'x'; 8192]).unwrap();
    assert!(matches!(
        Sqlite::open(other.path()),
        Err(StorageError::Corrupt(_))
    ));
}

fn v1_line(t: &[u8], key: &str, published: i64) -> String {
    let mi = Metainfo::from_bytes(t).unwrap();
    format!(
        r#"{{"v":1,"infohash":"{}","machine_key":"{key}","machine_name":"old-{published}","published":{published},"total_length":{},"payload_length":{},"name":"{}"}}"#,
        mi.info_hash_hex(),
        mi.total_length(),
        mi.swarmbak().unwrap().payload_length,
        String::from_utf8_lossy(mi.name()),
    )
}

#[test]
fn v1_data_directory_is_imported_once() {
    let dir = tempfile::tempdir().unwrap();
    let torrents = dir.path().join("torrents");
    fs::create_dir(&torrents).unwrap();
    let ts: Vec<Vec<u8>> = (10..15).map(|n| torrent(n, 1)).collect();
    let ih = |t: &[u8]| Metainfo::from_bytes(t).unwrap().info_hash();
    // 10, 11, 13: stored; 12: its torrent is missing; 14: the torrent file is another's.
    for t in [&ts[0], &ts[1], &ts[3]] {
        fs::write(torrents.join(format!("{}.torrent", hex::encode(ih(t)))), t).unwrap();
    }
    fs::write(
        torrents.join(format!("{}.torrent", hex::encode(ih(&ts[4])))),
        &ts[0],
    )
    .unwrap();
    let index = format!(
        "{}\nnot json\n{}\n{}\n\n{}\n{}\n{}\n{{\"v\":1,\"infoh",
        v1_line(&ts[0], "age1a", 1),
        v1_line(&ts[1], "age1b", 2),
        v1_line(&ts[2], "age1a", 3),
        v1_line(&ts[0], "age1a", 4), // a duplicate: the first wins
        v1_line(&ts[4], "age1a", 5),
        v1_line(&ts[3], "age1c", 6),
    );
    fs::write(dir.path().join("index.jsonl"), &index).unwrap();

    let (mut db, report) = Sqlite::open(dir.path()).unwrap();
    assert!(report.ran);
    assert_eq!(report.imported, 3);
    assert!(report.torn_tail);
    assert_eq!(report.bad_lines, 1);
    assert_eq!(report.missing_torrents, 1);
    assert_eq!(report.bad_torrents, 1);
    assert_eq!(report.duplicates, 1);
    assert_eq!(report.skipped(), 4);
    // The tracker's start line.
    assert_eq!(
        report.summary(),
        "; imported 3 snapshot record(s) from the v1 index (a torn last line ignored), skipped: 1 unreadable lines, 1 torrent files missing, 1 torrent files not matching, 1 duplicates"
    );
    let snaps = db.snapshots().unwrap();
    assert_eq!(
        snaps.iter().map(|s| s.infohash).collect::<Vec<_>>(),
        vec![ih(&ts[0]), ih(&ts[1]), ih(&ts[3])],
        "index order"
    );
    let s = &snaps[1];
    assert_eq!(s.machine_key, "age1b");
    assert_eq!(s.machine_name, "old-2");
    assert_eq!(s.published, 2);
    assert_eq!(s.payload_length, 1011);
    assert_eq!(s.total_length, 3 * 16384);
    assert_eq!(s.name, "swarmbak-11.shards");
    assert_eq!((s.copies, &s.record, &s.certificate), (0, &None, &None));
    for t in [&ts[0], &ts[1], &ts[3]] {
        assert_eq!(db.metainfo(&ih(t)).unwrap().as_ref(), Some(t));
    }
    assert!(db.setting(IMPORTED_V1).unwrap().is_some());
    assert!(!dir.path().join("index.jsonl").exists());
    assert_eq!(
        fs::read_to_string(dir.path().join("index.jsonl.imported")).unwrap(),
        index
    );
    assert!(torrents.is_dir(), "torrents/ is left in place");
    drop(db);

    // Reopened: nothing new.
    let (mut db, report) = Sqlite::open(dir.path()).unwrap();
    assert!(!report.ran);
    assert_eq!(db.snapshots().unwrap().len(), 3);
    drop(db);

    // A crash between the commit and the rename: the index is back, and still not
    // imported twice (it is renamed now).
    fs::rename(
        dir.path().join("index.jsonl.imported"),
        dir.path().join("index.jsonl"),
    )
    .unwrap();
    let (mut db, report) = Sqlite::open(dir.path()).unwrap();
    assert!(!report.ran);
    assert_eq!(db.snapshots().unwrap().len(), 3);
    assert!(!dir.path().join("index.jsonl").exists());
    assert!(dir.path().join("index.jsonl.imported").exists());
}

#[test]
fn a_second_handle_sees_the_first_ones_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = open(dir.path());
    let mut cli = open(dir.path());
    let v0 = server.data_version().unwrap();
    assert_eq!(server.data_version().unwrap(), v0, "stable without writes");

    cli.add_pending(&pending(1, "laptop", 5000)).unwrap();
    let Redeemed::Enrolled(m) = redeem(&mut cli, 1, 100, 1) else {
        panic!("enrolled")
    };
    let v1 = server.data_version().unwrap();
    assert_ne!(v1, v0, "another connection committed");
    assert_eq!(server.machines().unwrap(), vec![m.clone()]);

    cli.revoke(m.id, 200, b"rev").unwrap();
    let v2 = server.data_version().unwrap();
    assert_ne!(v2, v1);
    assert_eq!(server.machines().unwrap()[0].revoked, Some(200));

    // The server's online backup has what the other process wrote.
    let backup = tempfile::tempdir().unwrap();
    server.backup_to(&backup.path().join("tracker.db")).unwrap();
    assert_eq!(
        open(backup.path()).machines().unwrap()[0].revoked,
        Some(200)
    );

    // And the other way round.
    let t = torrent(1, 1);
    server.publish(&row_of(&t, "k", "laptop", 1), &t).unwrap();
    assert_eq!(cli.snapshots().unwrap().len(), 1);
}

#[test]
fn redeem_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(dir.path());
    db.add_pending(&pending(1, "laptop", 5000)).unwrap();
    db.add_pending(&pending(2, "laptop", 5000)).unwrap();
    db.add_pending(&pending(3, "desk", 5000)).unwrap();
    db.add_pending(&pending(4, "desk", 5000)).unwrap();

    assert!(matches!(redeem(&mut db, 9, 100, 9), Redeemed::UnknownToken));
    // Expired: valid_until < now (valid_until itself is still fine).
    assert!(matches!(
        redeem(&mut db, 3, 5001, 3),
        Redeemed::UnknownToken
    ));
    // make refusing leaves the token unused.
    assert!(matches!(
        db.redeem(&[3; 32], 5000, &mut |_| Err("no".into())).unwrap(),
        Redeemed::Refused(m) if m == "no"
    ));
    assert!(matches!(redeem(&mut db, 3, 5000, 3), Redeemed::Enrolled(_)));

    let Redeemed::Enrolled(laptop) = redeem(&mut db, 1, 100, 1) else {
        panic!("enrolled")
    };
    assert!(
        matches!(redeem(&mut db, 1, 100, 11), Redeemed::UnknownToken),
        "used"
    );
    // Token 2 names "laptop" too: taken, and the token stays usable.
    assert!(matches!(redeem(&mut db, 2, 100, 2), Redeemed::NameTaken));
    assert_eq!(db.pending(&[2; 32]).unwrap().unwrap().1, None);
    // A client with the same name does not take it; revoking the machine frees it.
    db.add_machine(&client("laptop", &"c".repeat(32))).unwrap();
    db.revoke(laptop.id, 150, b"rev").unwrap();
    let Redeemed::Enrolled(again) = redeem(&mut db, 2, 200, 2) else {
        panic!("the name is free again")
    };
    assert_eq!(again.name, "laptop");
    assert_ne!(again.id, laptop.id);
    // add_machine cannot bypass the rule either (the unique index).
    let mut dup = machine_from(&pending(0, "desk", 0), 40);
    dup.name = "desk".into();
    assert!(db.add_machine(&dup).is_err());
    assert!(matches!(redeem(&mut db, 4, 100, 4), Redeemed::NameTaken));
    assert_eq!(
        db.machines()
            .unwrap()
            .iter()
            .filter(|m| m.kind == MachineKind::Machine)
            .count(),
        3
    );
}

#[test]
fn one_token_redeemed_from_two_processes_at_once_enrols_one_machine() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path())
        .add_pending(&pending(1, "laptop", 5000))
        .unwrap();
    let results: Vec<Redeemed> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4u8)
            .map(|i| {
                let path = dir.path();
                s.spawn(move || {
                    let mut db = open(path);
                    redeem(&mut db, 1, 100, 50 + i)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let enrolled = results
        .iter()
        .filter(|r| matches!(r, Redeemed::Enrolled(_)))
        .count();
    assert_eq!(enrolled, 1, "{results:?}");
    assert_eq!(open(dir.path()).machines().unwrap().len(), 1);
}

#[test]
fn a_full_database_writes_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(dir.path());
    let small = torrent(1, 1);
    let r_small = row_of(&small, "k", "n", 1);
    db.publish(&r_small, &small).unwrap();
    db.set_setting("a", "1").unwrap();

    // No room for another page: a torrent of ~60 KB needs many.
    let pages: i64 = db.set_max_page_count(1).unwrap();
    assert!(pages > 1, "the limit is never below the current size");
    let big = torrent(2, 1000);
    let r_big = row_of(&big, "k", "n", 2);
    assert!(matches!(db.publish(&r_big, &big), Err(StorageError::Full)));
    // Nothing half-written: no snapshot, no metainfo row, and what was acknowledged is
    // intact.
    assert_eq!(db.snapshots().unwrap(), vec![r_small.clone()]);
    assert_eq!(db.metainfo(&r_big.infohash).unwrap(), None);
    assert_eq!(
        db.execute_raw(
            "DELETE FROM metainfo WHERE infohash NOT IN (SELECT infohash FROM snapshots)"
        )
        .unwrap(),
        0
    );
    assert_eq!(db.metainfo(&r_small.infohash).unwrap(), Some(small.clone()));
    assert_eq!(db.setting("a").unwrap().as_deref(), Some("1"));

    // Space is back: the same publish succeeds.
    db.set_max_page_count(1 << 30).unwrap();
    assert_eq!(
        db.publish(&r_big, &big).unwrap(),
        Published::New(r_big.clone())
    );
    drop(db);
    let mut db = open(dir.path());
    assert_eq!(db.snapshots().unwrap(), vec![r_small, r_big.clone()]);
    assert_eq!(db.metainfo(&r_big.infohash).unwrap(), Some(big));
}

#[test]
fn corrupt_stored_metainfo_is_never_served_and_a_publish_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(dir.path());
    let t = torrent(5, 2);
    let row = row_of(&t, "k", "laptop", 1);
    db.publish(&row, &t).unwrap();

    // One flipped byte inside the info dictionary.
    let mut bad = t.clone();
    let info_at = t.windows(6).position(|w| w == b"4:info").unwrap() + 20;
    bad[info_at] ^= 0xff;
    db.execute_raw(&format!(
        "UPDATE metainfo SET torrent = x'{}' WHERE infohash = x'{}'",
        hex::encode(&bad),
        hex::encode(row.infohash)
    ))
    .unwrap();
    match db.metainfo(&row.infohash) {
        Err(StorageError::Corrupt(m)) => {
            assert!(m.contains(&hex::encode(row.infohash)), "{m}");
            assert!(m.contains("next publish repairs it"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // Garbage that is not bencode at all is refused too.
    db.execute_raw(&format!(
        "UPDATE metainfo SET torrent = x'00' WHERE infohash = x'{}'",
        hex::encode(row.infohash)
    ))
    .unwrap();
    assert!(matches!(
        db.metainfo(&row.infohash),
        Err(StorageError::Corrupt(_))
    ));

    // The owner publishes again: the stored row is kept, the bytes are repaired.
    assert_eq!(
        db.publish(&row, &t).unwrap(),
        Published::Existing(row.clone())
    );
    assert_eq!(db.metainfo(&row.infohash).unwrap(), Some(t));
}

/// When run by [`acknowledged_publishes_survive_sigkill`] (the variable set): publishes
/// forever, each publish followed by a backup report of machine 1, printing each
/// info-hash (`ACK`) and report id (`REPORT`) once the write returned `Ok`. Otherwise:
/// nothing.
#[test]
fn publisher_child() {
    let Some(dir) = std::env::var_os("SWARMBAK_SQLITE_PUBLISHER") else {
        return;
    };
    use std::io::Write;
    let mut db = open(Path::new(&dir));
    let mut out = std::io::stdout().lock();
    for n in 0.. {
        let t = torrent(n, 1 + u64::from(n % 20));
        let row = row_of(&t, "k", "child", i64::from(n));
        db.publish(&row, &t).unwrap();
        writeln!(out, "ACK {}", hex::encode(row.infohash)).unwrap();
        out.flush().unwrap();
        let r = report_row(1, n, Ok(row.infohash));
        assert!(db.add_report(&r).unwrap());
        writeln!(out, "REPORT {}", hex::encode(r.attempt)).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_publishes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    redeem_one(&mut open(dir.path()));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "publisher_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SWARMBAK_SQLITE_PUBLISHER", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let mut reported = Vec::new();
    while acked.len() < 40 {
        let line = lines.next().expect("the publisher stopped early").unwrap();
        if let Some(ih) = line.strip_prefix("ACK ") {
            acked.push(ih.to_owned());
        } else if let Some(id) = line.strip_prefix("REPORT ") {
            reported.push(id.to_owned());
        }
    }
    // SIGKILL, most likely in the middle of a transaction: the child publishes
    // without pause.
    child.kill().unwrap();
    child.wait().unwrap();
    // Whatever it acknowledged before it died counts too (each line is one write(2) of
    // less than PIPE_BUF bytes: never torn).
    for line in lines {
        let line = line.unwrap();
        if let Some(ih) = line.strip_prefix("ACK ") {
            acked.push(ih.to_owned());
        } else if let Some(id) = line.strip_prefix("REPORT ") {
            reported.push(id.to_owned());
        }
    }
    let mut db = open(dir.path());
    let stored: Vec<String> = db
        .snapshots()
        .unwrap()
        .iter()
        .map(|s| hex::encode(s.infohash))
        .collect();
    for ih in &acked {
        assert!(stored.contains(ih), "acknowledged {ih} is lost");
        let mut raw = [0u8; 20];
        hex::decode_to_slice(ih, &mut raw).unwrap();
        assert!(db.metainfo(&raw).unwrap().is_some());
    }
    assert!(stored.len() >= acked.len());
    let reports: Vec<String> = db
        .reports(1, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| hex::encode(r.attempt))
        .collect();
    assert!(
        reported.len() >= 39,
        "{} reports acknowledged",
        reported.len()
    );
    for id in &reported {
        assert!(reports.contains(id), "acknowledged report {id} is lost");
    }
}

/// Machine 1, enrolled (reports refer to a machine).
fn redeem_one(db: &mut Sqlite) {
    db.add_pending(&pending(1, "laptop-1", 10_000)).unwrap();
    let Redeemed::Enrolled(m) = redeem(db, 1, 5000, 1) else {
        panic!("not enrolled")
    };
    assert_eq!(m.id, 1);
}

fn report_row(machine: i64, n: u32, outcome: Result<[u8; 20], String>) -> ReportRow {
    let mut attempt = [0u8; 16];
    attempt[..4].copy_from_slice(&n.to_be_bytes());
    ReportRow {
        machine,
        attempt,
        started: 1_000 + i64::from(n) * 10,
        ended: 1_005 + i64::from(n) * 10,
        bytes: u64::from(n) * 1000,
        files: u64::from(n),
        outcome,
        report: vec![0xee; 100],
    }
}

#[test]
fn backup_reports_are_stored_once_and_listed_latest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(dir.path());
    redeem_one(&mut db);
    let ok = report_row(1, 1, Ok([7; 20]));
    let failed = report_row(1, 2, Err("disk full".into()));
    assert!(db.add_report(&ok).unwrap());
    assert!(db.add_report(&failed).unwrap());
    // Sent again (its acknowledgement lost): stored once, the first copy kept.
    let mut again = failed.clone();
    again.report = vec![1; 10];
    assert!(!db.add_report(&again).unwrap());
    assert_eq!(db.reports(1, 10).unwrap(), vec![failed.clone(), ok.clone()]);
    assert_eq!(db.reports(1, 1).unwrap(), vec![failed]);
    assert!(db.reports(2, 10).unwrap().is_empty());
    // A report of a machine that does not exist is refused by the database.
    assert!(db.add_report(&report_row(99, 3, Ok([7; 20]))).is_err());
    // Another handle (another process) reads them.
    assert_eq!(open(dir.path()).reports(1, 10).unwrap().len(), 2);
}

#[test]
fn activity_audit_and_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(dir.path());
    redeem_one(&mut db);
    assert!(db.activity().unwrap().is_empty());
    db.add_report(&report_row(1, 1, Ok([7; 20]))).unwrap();
    db.add_report(&report_row(1, 3, Ok([8; 20]))).unwrap();
    db.add_report(&report_row(1, 4, Err("disk full".into())))
        .unwrap();
    db.add_online(&[OnlineInterval {
        machine: 1,
        start: 100,
        end: 200,
    }])
    .unwrap();
    let a = &db.activity().unwrap()[&1];
    assert_eq!(a.last_online, Some(200));
    let last = a.last_attempt.as_ref().unwrap();
    assert_eq!(
        (last.ended, last.error.as_deref()),
        (1_045, Some("disk full"))
    );
    let ok = a.last_success.as_ref().unwrap();
    assert_eq!(
        (ok.started, ok.ended, ok.bytes, ok.error.as_deref()),
        (1_030, 1_035, 3000, None)
    );

    let row = AuditRow {
        id: 0,
        at: 5,
        actor: "cli".into(),
        from: "local".into(),
        action: "revoke".into(),
        target: "laptop-1".into(),
        detail: String::new(),
    };
    db.audit(&row).unwrap();
    db.audit(&AuditRow {
        at: 6,
        action: "enroll".into(),
        ..row.clone()
    })
    .unwrap();
    let log = open(dir.path()).audit_log(10).unwrap();
    assert_eq!(
        log.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        ["enroll", "revoke"]
    );
    assert_eq!(db.audit_log(1).unwrap().len(), 1);

    // One open alert per machine.
    let a1 = db.raise_alert(1, "vip_overdue", 100).unwrap().unwrap();
    assert!(db.raise_alert(1, "overdue", 101).unwrap().is_none());
    db.alert_notified(a1.id, "overdue", 200).unwrap();
    assert!(db.ack_alert(a1.id, 210, "session:abcd").unwrap());
    assert!(
        !db.ack_alert(a1.id, 211, "session:abcd").unwrap(),
        "acknowledged twice"
    );
    let open_now = db.alerts(None).unwrap();
    assert_eq!(open_now.len(), 1);
    assert_eq!(
        (
            open_now[0].kind.as_str(),
            open_now[0].notified,
            open_now[0].acked
        ),
        ("overdue", 200, Some(210))
    );
    db.clear_alert(a1.id, 300).unwrap();
    assert!(db.alerts(None).unwrap().is_empty());
    assert_eq!(db.alerts(Some(299)).unwrap()[0].cleared, Some(300));
    assert!(
        !db.ack_alert(a1.id, 301, "x").unwrap(),
        "a cleared alert is not acknowledged"
    );
    // Cleared: a new one may open.
    assert!(db.raise_alert(1, "overdue", 400).unwrap().is_some());
    // An alert of a machine that does not exist is refused.
    assert!(db.raise_alert(99, "overdue", 400).is_err());
}

#[test]
fn a_version_1_database_is_migrated_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO settings (key, value) VALUES ('public_url', 'http://old:1')",
            [],
        )
        .unwrap();
    }
    let mut db = open(dir.path());
    assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
    const { assert!(SCHEMA_VERSION >= 2) };
    assert_eq!(
        db.setting("public_url").unwrap().as_deref(),
        Some("http://old:1")
    );
    redeem_one(&mut db);
    assert!(db.add_report(&report_row(1, 1, Ok([7; 20]))).unwrap());
    assert!(!db.add_report(&report_row(1, 1, Ok([7; 20]))).unwrap());
}

#[test]
fn a_write_lock_held_too_long_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let mut holder = open(dir.path());
    let mut other = open(dir.path());
    holder.execute_raw("BEGIN IMMEDIATE").unwrap();
    holder
        .execute_raw("INSERT INTO settings VALUES ('h', '1')")
        .unwrap();
    let t = std::time::Instant::now();
    assert!(matches!(
        other.set_setting("o", "1"),
        Err(StorageError::Busy)
    ));
    assert!(
        t.elapsed() >= std::time::Duration::from_secs(4),
        "it waited"
    );
    // Reads are not blocked by a writer (WAL), and see only what is committed.
    assert_eq!(other.setting("h").unwrap(), None);
    holder.execute_raw("COMMIT").unwrap();
    other.set_setting("o", "1").unwrap();
    assert_eq!(other.setting("h").unwrap().as_deref(), Some("1"));
}
