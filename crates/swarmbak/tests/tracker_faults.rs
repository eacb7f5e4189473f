//! The tracker under faults and abuse, as a real `swarmbak tracker` process (issue 9's
//! measured reproductions): SIGKILL during a burst of publishes, a full disk, stalled and
//! header-only uploads. These concern storage and limits, the same for an open and a
//! private tracker: they run `--open` so that any valid torrent can be published.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../../tracker/tests/common/torrents.rs"]
#[allow(dead_code)]
mod torrents;

use common::procs;

fn http(addr: &str, method: &str, target: &str, body: &[u8]) -> Option<(u16, String)> {
    common::try_http(addr, method, target, &[], body)
}

fn publish(addr: &str, torrent: &[u8]) -> Option<(u16, String)> {
    http(addr, "POST", "/publish?machine=age1test&name=host", torrent)
}

fn ih_hex(torrent: &[u8]) -> String {
    swarmbak_metainfo::Metainfo::from_bytes(torrent)
        .unwrap()
        .info_hash_hex()
}

/// Four threads send requests (`send(thread, n)` for n = 0, 1, ...: what identifies it
/// when the tracker answered 201, `None` otherwise, which ends the thread); the tracker
/// is SIGKILLed once 60 were acknowledged. Returns what the acknowledged ones returned.
fn burst_until_sigkill<T: Send + 'static>(
    tracker: &mut procs::Tracker,
    send: impl Fn(u32, u32) -> Option<T> + Send + Sync + 'static,
) -> Vec<T> {
    let send = Arc::new(send);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..4u32)
        .map(|k| {
            let (send, acked) = (send.clone(), acked.clone());
            std::thread::spawn(move || {
                for n in 0..20_000u32 {
                    match send(k, n) {
                        Some(id) => acked.lock().unwrap().push(id),
                        None => return,
                    }
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    while acked.lock().unwrap().len() < 60 && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    tracker.proc.child.kill().unwrap();
    tracker.proc.child.wait().unwrap();
    for th in threads {
        th.join().unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() >= 60, "only {} acknowledged", acked.len());
    acked
}

#[test]
fn every_acknowledged_publish_survives_sigkill() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path();
    let mut tracker = procs::open_tracker(data);
    let addr = tracker.addr.clone();
    let acked = burst_until_sigkill(&mut tracker, move |k, n| {
        let tor = torrents::torrent(k * 20_000 + n, 8);
        matches!(publish(&addr, &tor), Some((201, _))).then(|| ih_hex(&tor))
    });
    drop(tracker);
    let tracker = procs::open_tracker(data);
    for ih in &acked {
        let (status, _) = http(&tracker.addr, "GET", &format!("/metainfo/{ih}"), b"").unwrap();
        assert_eq!(status, 200, "acknowledged {ih} lost after SIGKILL");
    }
}

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_acknowledges_nothing_it_did_not_keep_and_service_resumes() {
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("mount runs");
    assert!(
        st.success(),
        "this test needs to mount a small tmpfs (root, as CI runs): mount failed"
    );
    let _m = Mount(mnt.clone());
    let data = mnt.as_path();
    let tracker = procs::open_tracker(data);
    // Leave a little room, and keep a file to free later.
    let filler = mnt.join("filler");
    let free = fs_free(&mnt);
    std::fs::write(
        &filler,
        vec![0u8; (free.saturating_sub(900 << 10)) as usize],
    )
    .unwrap();
    let mut acked = Vec::new();
    let mut full = None;
    for n in 0..200u32 {
        // About 100 KiB of piece hashes each.
        let tor = torrents::torrent(n, 1700);
        match publish(&tracker.addr, &tor).expect("the tracker answers") {
            (201, _) => acked.push(ih_hex(&tor)),
            (status, body) => {
                full = Some((status, body));
                break;
            }
        }
    }
    let (status, body) = full.expect("the disk filled up");
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("disk is full"), "{body}");
    assert!(!acked.is_empty());
    // Still serving, and still full.
    assert_eq!(http(&tracker.addr, "GET", "/health", b"").unwrap().0, 200);
    let next = torrents::torrent(10_000, 1700);
    assert_eq!(publish(&tracker.addr, &next).unwrap().0, 507);
    // Space returns: the same publish succeeds, without a restart.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(publish(&tracker.addr, &next).unwrap().0, 201);
    acked.push(ih_hex(&next));
    drop(tracker);
    let tracker = procs::open_tracker(data);
    for ih in &acked {
        assert_eq!(
            http(&tracker.addr, "GET", &format!("/metainfo/{ih}"), b"")
                .unwrap()
                .0,
            200,
            "{ih} lost"
        );
    }
}

fn fs_free(p: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn stalled_uploads_cost_bounded_memory_and_health_keeps_answering() {
    let t = tempfile::tempdir().unwrap();
    let tracker = procs::open_tracker(t.path());
    let before = rss_kib(tracker.proc.child.id());
    // 24 publishes declare one byte short of 16 MiB, send 15 MiB, and stall.
    let chunk = vec![b'd'; 1 << 20];
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..24 {
        let mut s = TcpStream::connect(&tracker.addr).unwrap();
        let head = format!(
            "POST /publish?machine=age1x&name=x HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            (16 << 20) - 1
        );
        s.write_all(head.as_bytes()).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut sent = 0;
        for _ in 0..15 {
            if s.write_all(&chunk).is_err() {
                break;
            }
            sent += 1;
        }
        if sent < 15 {
            refused += 1;
        }
        held.push(s);
    }
    let after = rss_kib(tracker.proc.child.id());
    assert!(
        after < before + 80 * 1024,
        "24 stalled 16 MiB uploads took the tracker from {before} KiB to {after} KiB"
    );
    assert!(
        refused >= 20,
        "only {refused} of 24 stalled uploads were turned away"
    );
    // 500 header-only POSTs on top: answered at once, and /health answers quickly.
    for _ in 0..500 {
        let mut s = TcpStream::connect(&tracker.addr).unwrap();
        s.write_all(
            b"POST /publish?machine=a&name=b HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
        )
        .unwrap();
        held.push(s);
    }
    let t0 = Instant::now();
    let (status, _) = http(&tracker.addr, "GET", "/health", b"").unwrap();
    assert_eq!(status, 200);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "/health took {:?} while uploads were held",
        t0.elapsed()
    );
    drop(held);
}

/// Backup reports are acknowledged as durably as publishes (tracker.md §7.6): a
/// private tracker killed with SIGKILL in the middle of a burst of signed reports from
/// an enrolled machine keeps every report it answered 201 to.
#[test]
fn every_acknowledged_report_survives_sigkill() {
    use swarmbak_tracker::storage::Storage;
    use swarmbak_tracker::trust::{BackupReport, SigningKey};
    let t = tempfile::tempdir().unwrap();
    let rec = t.path().join("recovery");
    common::ok(&rec, &["init", "--name", "recovery"]);
    let config = |home: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(home.join("config.json")).unwrap()).unwrap()
    };
    let recovery = config(&rec)["public_key"].as_str().unwrap().to_owned();
    let mut tracker = procs::tracker(t.path(), &recovery);
    let home = t.path().join("m");
    procs::init(&home, "desk-9", &tracker, &recovery);
    let key = SigningKey::load(&home.join("signing.key")).unwrap();
    let target = format!(
        "/{}/report",
        config(&home)["enrolment"]["passkey"].as_str().unwrap()
    );
    let addr = tracker.addr.clone();
    let acked = burst_until_sigkill(&mut tracker, move |k, n| {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&k.to_be_bytes());
        id[4..8].copy_from_slice(&n.to_be_bytes());
        let r = BackupReport {
            id,
            machine: key.public(),
            start: 1_796_000_000 + i64::from(n),
            end: 1_796_000_060 + i64::from(n),
            bytes: u64::from(n),
            files: 1,
            outcome: if n % 3 == 0 {
                Err("disk full".into())
            } else {
                Ok([k as u8; 20])
            },
        }
        .sign(&key);
        matches!(http(&addr, "POST", &target, &r), Some((201, _))).then_some(id)
    });
    let (mut db, _) = swarmbak_tracker::sqlite::Sqlite::open(&tracker.data).unwrap();
    let id = db.machines().unwrap()[0].id;
    let kept: std::collections::HashSet<[u8; 16]> = db
        .reports(id, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.attempt)
        .collect();
    for a in &acked {
        assert!(
            kept.contains(a),
            "acknowledged report {} lost after SIGKILL",
            hex::encode(a)
        );
    }
}
