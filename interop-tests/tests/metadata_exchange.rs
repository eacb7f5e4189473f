//! BEP 9 metadata exchange with libtorrent, both ways (issue 4, item 5).
//!
//! 1. libtorrent, from nothing but a magnet link with the swarmbak tracker (its own
//!    passkey URL: `swarmbak tracker enroll --client`), gets a snapshot's metadata from
//!    swarmbak peers (swarmbak serves it for its private torrents; libtorrent accepts an
//!    info dict with `private=1` that came this way).
//! 2. swarmbak (`fetch MAGNET --to DIR`, plain-torrent mode) gets the metadata of a
//!    torrent that is NOT private from libtorrent, then its files, byte-identical. The
//!    tracker here is opentracker (the swarmbak tracker only tracks published snapshots).

use std::process::Command;
use std::time::Duration;

use swarmbak_interop_tests::clients::{
    agent, assert_same_tree, client_announce_url, enrol_machine, negotiated, py, record,
    regenerate_table, require_libtorrent, swarmbak_fast, swarmbak_tracker, Bg, OpenTracker,
    LT_PYTHON,
};
use swarmbak_interop_tests::Cmd;

#[test]
fn libtorrent_gets_snapshot_metadata_from_swarmbak() {
    let version = require_libtorrent();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let key = swarmbak_format::Identity::generate()
        .to_public()
        .to_string();
    let (_tracker, _) = swarmbak_tracker(&t.join("tracker"), &key);
    let home = t.join("owner");
    enrol_machine(&home, &t.join("tracker"), "owner");
    let (mut owner_agent, _) = agent("owner agent", &home);
    let src = t.join("src");
    swarmbak_gentree::office(&src, 1 << 20, 3).unwrap();
    let ih = swarmbak_fast(&home)
        .arg("seed")
        .arg(&src)
        .args(["--until", "published"])
        .run()
        .first_line();
    // The snapshot's info dict, for the size check.
    let torrent = t.join("s.torrent");
    Cmd::swarmbak(&home)
        .args(["export", &ih])
        .arg(&torrent)
        .run();
    let meta: serde_json::Value = serde_json::from_slice(
        &Cmd::swarmbak(&home)
            .args(["--json", "inspect"])
            .arg(&torrent)
            .run()
            .stdout,
    )
    .unwrap();

    // libtorrent's own announce URL, its passkey in it, percent-encoded into the magnet.
    let announce = client_announce_url(&t.join("tracker"), "libtorrent");
    let magnet = format!(
        "magnet:?xt=urn:btih:{ih}&tr={}",
        announce.replace(':', "%3A").replace('/', "%2F")
    );
    let save = t.join("lt");
    std::fs::create_dir_all(&save).unwrap();
    let out = Cmd::new(LT_PYTHON)
        .arg(py("lt_client.py"))
        .arg("magnet")
        .arg(&magnet)
        .arg(&save)
        .arg("60")
        .run_unchecked();
    let res: serde_json::Value =
        serde_json::from_str(out.stdout_str().lines().last().unwrap_or("")).unwrap_or_else(|e| {
            panic!(
                "lt_client magnet: {e}\n{}{}",
                out.stdout_str(),
                out.stderr_str()
            )
        });
    eprintln!("libtorrent magnet: {res:#}");
    assert!(
        out.status.success() && res["metadata_received"] == true,
        "libtorrent got no metadata_received_alert from swarmbak peers: {res}\n{}",
        out.stderr_str()
    );
    assert_eq!(res["infohash"].as_str(), Some(ih.as_str()));
    assert_eq!(res["private"], serde_json::json!(true));
    assert_eq!(res["pieces"], meta["pieces"]);
    assert_eq!(res["name"], meta["name"]);

    // The agent's side: libtorrent offered ut_metadata and sent extended messages.
    std::thread::sleep(Duration::from_millis(300));
    let log = owner_agent.wire_log();
    owner_agent.kill();
    let n = negotiated(&log);
    eprintln!("agent's wire log for libtorrent: {n:#?}");
    assert!(n.extensions.iter().any(|e| e == "ut_metadata"), "{n:#?}");
    assert!(
        n.received.get("extended").copied().unwrap_or(0) >= 2,
        "{n:#?}"
    );
    record(
        "libtorrent",
        &version,
        "metadata from swarmbak (BEP 9)",
        true,
        &format!(
            "magnet + swarmbak tracker (its passkey URL): metadata_received_alert, infohash matches, private=1 accepted ({} pieces)",
            res["pieces"]
        ),
    );
    regenerate_table();
}

/// Metadata of one 16 KiB BEP 9 piece (a few files).
#[test]
fn swarmbak_gets_metadata_from_libtorrent() {
    gets_metadata_from_libtorrent(12, "one metadata piece");
}

/// Metadata of several 16 KiB BEP 9 pieces (hundreds of files).
#[test]
fn swarmbak_gets_multi_piece_metadata_from_libtorrent() {
    gets_metadata_from_libtorrent(600, "several metadata pieces");
}

fn gets_metadata_from_libtorrent(files: usize, what: &str) {
    let version = require_libtorrent();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ot = OpenTracker::start();
    // A plain multi-file torrent, not private, made and seeded by libtorrent.
    let src = t.join("data");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let mut rng = swarmbak_gentree::Rng::new(files as u64);
    for i in 0..files {
        let dir = if i % 3 == 0 {
            src.join("sub")
        } else {
            src.clone()
        };
        let name = format!("file-with-a-fairly-long-name-{i:04}.bin");
        std::fs::write(dir.join(name), rng.bytes(1000 + (i * 7919) % 40000)).unwrap();
    }
    // The torrent is made first, so its infohash is whitelisted before libtorrent's first
    // announce (opentracker refuses torrents it does not list, and libtorrent would only
    // try again after the tracker's interval).
    let torrent = t.join("plain.torrent");
    let made = Command::new(LT_PYTHON)
        .arg(py("lt_seed.py"))
        .arg("--make")
        .arg(&torrent)
        .arg(&src)
        .arg("16384")
        .arg("--announce")
        .arg(format!("{}/announce", ot.url()))
        .status()
        .unwrap();
    assert!(made.success(), "libtorrent could not make the torrent");
    let info = swarmbak_fast(&t.join("inspect"))
        .args(["--json", "inspect"])
        .arg(&torrent)
        .run();
    let j: serde_json::Value = serde_json::from_str(&info.first_line()).unwrap();
    let ih = j["infohash"].as_str().unwrap().to_string();
    ot.allow(&ih);
    let mut c = Command::new(LT_PYTHON);
    c.arg(py("lt_seed.py")).arg(&torrent).arg(t);
    let seeder = Bg::spawn("libtorrent seeder", c);
    seeder.wait_line(|l| l == "seeding", Duration::from_secs(60));

    let magnet = format!("magnet:?xt=urn:btih:{ih}&tr={}/announce", ot.url());
    let home = t.join("fresh"); // no init: a plain fetch needs no machine
    let to = t.join("out");
    // libtorrent's first announce may still be on its way: try a few times.
    let mut out = None;
    for _ in 0..10 {
        let o = swarmbak_fast(&home)
            .args(["fetch", &magnet, "--to"])
            .arg(&to)
            .run_unchecked();
        let done = o.status.success();
        out = Some(o);
        if done {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let out = out.unwrap();
    assert!(
        out.status.success(),
        "swarmbak fetch of a libtorrent-seeded magnet failed:\n{}\n{}\n{}",
        out.stdout_str(),
        out.stderr_str(),
        seeder.tail()
    );
    let name = src.file_name().unwrap();
    let got = if to.join(name).is_dir() {
        to.join(name)
    } else {
        to.clone()
    };
    assert_same_tree(&src, &got);
    let log: Vec<_> = out
        .stderr_str()
        .lines()
        .filter_map(swarmbak_interop_tests::clients::WireEvent::parse)
        .collect();
    let n = negotiated(&log);
    eprintln!("swarmbak fetch's wire log with libtorrent: {n:#?}");
    record(
        "libtorrent",
        &version,
        "metadata to swarmbak (BEP 9)",
        true,
        &format!(
            "magnet + opentracker, not private, {what}: swarmbak fetch got the metadata and files byte-identical (libtorrent m={{{}}})",
            n.extensions.join(", ")
        ),
    );
    drop(seeder);
    regenerate_table();
}
