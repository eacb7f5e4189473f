//! Round trips through the real binary: generated office and edge trees, lost and
//! corrupted shards, incremental snapshots, partial restores, the recovery key alone.

mod common;

use std::fs;
use std::path::Path;

use common::*;

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walk_files(&p));
        } else if fs::metadata(&p).unwrap().len() > 0 {
            v.push(p);
        }
    }
    v.sort();
    v
}

fn office_and_edge(dir: &Path, mb: u64) -> (std::path::PathBuf, std::path::PathBuf) {
    let office = dir.join("src/office");
    let edge = dir.join("src/edge");
    swarmbak_gentree::office(&office, mb << 20, 1).unwrap();
    swarmbak_gentree::edge(&edge, 1).unwrap();
    (office, edge)
}

#[test]
fn office_64mb_and_edge_round_trip_with_recovery_key_after_losing_m_shards_per_stripe() {
    let t = tempfile::tempdir().unwrap();
    let m = machine(t.path());
    let (office, edge) = office_and_edge(t.path(), 64);
    let ih = seed(&m.home, &[&office, &edge]);
    let j = inspect_json(&m.home, &ih);
    assert_eq!(j["private"], true);
    let (k, mm, stripes) = (
        j["swarmbak"]["k"].as_u64().unwrap() as usize,
        j["swarmbak"]["m"].as_u64().unwrap() as usize,
        j["swarmbak"]["stripes"].as_u64().unwrap() as usize,
    );
    assert!(stripes >= 2, "64 MB makes several stripes");
    // Lose m shards of every stripe: data shards in even stripes, parity in odd ones,
    // a mix in the last.
    let shards = store_dir(&m.home, &ih).join("shards");
    for s in 0..stripes {
        let lost: Vec<usize> = if s + 1 == stripes {
            (0..mm).map(|i| i * (k + mm) / mm).collect()
        } else if s % 2 == 0 {
            (0..mm).collect()
        } else {
            (k..k + mm).collect()
        };
        for i in lost {
            fs::remove_file(shards.join((s * (k + mm) + i).to_string())).unwrap();
        }
    }
    let to = t.path().join("restored");
    let out = fetch_recovery(&m, &ih, &to);
    assert!(out.contains("rebuilt"), "{out}");
    assert_same(&office, &to.join("office"));
    assert_same(&edge, &to.join("edge"));
    // Restore rebuilt (and wrote back) the data shards it needed; health sees the lost
    // parity shards, and repair rebuilds them without any key.
    let h = ok(&m.home, &["--json", "health", &ih]);
    let v: serde_json::Value = serde_json::from_str(h.trim()).unwrap();
    assert_eq!(v["recoverable"], true);
    let per: Vec<u64> = v["local_shards_per_stripe"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert!(
        per.iter().all(|&n| n as usize >= k && n as usize <= k + mm),
        "{per:?}"
    );
    assert!(
        per.iter().any(|&n| n as usize == k),
        "parity lost in odd stripes: {per:?}"
    );
    fs::remove_file(m.home.join("identity.txt")).unwrap();
    ok(&m.home, &["repair", &ih]);
    let h = ok(&m.home, &["--json", "health", &ih]);
    let v: serde_json::Value = serde_json::from_str(h.trim()).unwrap();
    for n in v["local_shards_per_stripe"].as_array().unwrap() {
        assert_eq!(n.as_u64().unwrap() as usize, k + mm);
    }
}

#[test]
fn one_more_lost_shard_than_m_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let m = machine(t.path());
    let (office, _) = office_and_edge(t.path(), 4);
    let ih = seed(&m.home, &[&office]);
    let j = inspect_json(&m.home, &ih);
    let mm = j["swarmbak"]["m"].as_u64().unwrap() as usize;
    let shards = store_dir(&m.home, &ih).join("shards");
    for i in 0..=mm {
        fs::remove_file(shards.join(i.to_string())).unwrap();
    }
    let to = t.path().join("restored");
    let err = fails(
        &m.home,
        &[
            "fetch",
            &ih,
            "--to",
            to.to_str().unwrap(),
            "--identity",
            m.recovery.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("stripe 0") && err.contains("shards needed"),
        "{err}"
    );
}

#[test]
fn a_corrupted_shard_is_detected_named_and_repaired() {
    let t = tempfile::tempdir().unwrap();
    let m = machine(t.path());
    let (office, _) = office_and_edge(t.path(), 8);
    let ih = seed(&m.home, &[&office]);
    let p = store_dir(&m.home, &ih).join("shards/1");
    let mut b = fs::read(&p).unwrap();
    b[100] ^= 0x40;
    fs::write(&p, &b).unwrap();
    let to = t.path().join("restored");
    let o = run(&m.home, &["fetch", &ih, "--to", to.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        err.contains("piece 1 ") && err.contains("SHA-1"),
        "names the damaged piece: {err}"
    );
    assert_same(&office, &to.join("office"));
    // Repaired on disk: the shard has its original bytes again.
    let fixed = fs::read(&p).unwrap();
    assert_ne!(fixed, b);
    b[100] ^= 0x40;
    assert_eq!(fixed, b);
}

#[test]
fn incremental_snapshot_after_a_days_edits_is_small_and_restores_exactly() {
    let t = tempfile::tempdir().unwrap();
    let m = machine(t.path());
    let (office, _) = office_and_edge(t.path(), 32);
    let first = seed(&m.home, &[&office]);
    let first_size = du(&store_dir(&m.home, &first).join("shards"));

    // Nothing changed: the new snapshot carries only a manifest.
    let same = seed(&m.home, &[&office]);
    let list = ok(&m.home, &["--json", "snapshots"]);
    let infos: Vec<serde_json::Value> = list
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let s2 = infos
        .iter()
        .find(|i| i["infohash"] == same.as_str())
        .unwrap();
    assert_eq!(s2["new_chunks"], 0, "{s2}");
    assert_eq!(s2["parents"][0], first.as_str());

    // A day's edits.
    swarmbak_gentree::mutate(&office, 2, 2).unwrap();
    let second = seed(&m.home, &[&office]);
    let second_size = du(&store_dir(&m.home, &second).join("shards"));
    assert!(
        second_size * 5 < first_size,
        "incremental torrent {second_size} bytes vs first {first_size}"
    );
    let j = inspect_json(&m.home, &second);
    assert!(j["total_length"].as_u64().unwrap() * 5 < first_size);

    let to = t.path().join("restored");
    fetch_recovery(&m, &second, &to);
    assert_same(&office, &to.join("office"));
    // The first snapshot still restores as it was.
    let to1 = t.path().join("restored-first");
    fetch_recovery(&m, &first, &to1);
    assert_eq!(
        swarmbak_gentree::stats(&to1.join("office")).unwrap().files,
        infos[0]["files"].as_u64().unwrap()
    );
}

#[test]
fn restore_a_single_path() {
    let t = tempfile::tempdir().unwrap();
    let m = machine(t.path());
    let (office, edge) = office_and_edge(t.path(), 4);
    let ih = seed(&m.home, &[&office, &edge]);
    let to = t.path().join("part");
    ok(
        &m.home,
        &[
            "fetch",
            &ih,
            "--to",
            to.to_str().unwrap(),
            "--path",
            "edge/bin",
        ],
    );
    assert_same(&edge.join("bin"), &to.join("edge/bin"));
    assert!(!to.join("office").exists());
    assert!(!to.join("edge/empty.txt").exists());
    let err = fails(
        &m.home,
        &[
            "fetch",
            &ih,
            "--to",
            t.path().join("p2").to_str().unwrap(),
            "--path",
            "nope",
        ],
    );
    assert!(
        err.contains("not in this snapshot") && err.contains("office"),
        "{err}"
    );
    let err = fails(
        &m.home,
        &[
            "fetch",
            &ih,
            "--to",
            t.path().join("p3").to_str().unwrap(),
            "--path",
            "../etc",
        ],
    );
    assert!(err.contains("--path"), "{err}");
}

#[test]
fn non_empty_target_is_refused_and_an_unfinished_restore_resumes() {
    let t = tempfile::tempdir().unwrap();
    let m = machine(t.path());
    let (office, _) = office_and_edge(t.path(), 4);
    let ih = seed(&m.home, &[&office]);
    let to = t.path().join("busy");
    fs::create_dir_all(&to).unwrap();
    fs::write(to.join("precious.txt"), b"mine").unwrap();
    let err = fails(&m.home, &["fetch", &ih, "--to", to.to_str().unwrap()]);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(fs::read(to.join("precious.txt")).unwrap(), b"mine");

    // An interrupted restore (its marker left behind) is resumed: packs it recorded as
    // finished are checked, and the damage a power cut could leave is rewritten.
    let to = t.path().join("resume");
    ok(&m.home, &["fetch", &ih, "--to", to.to_str().unwrap()]);
    let home = swarmbak_format::Home::open(&m.home).unwrap();
    let man = swarmbak_format::Manifest::decode(
        &home
            .store()
            .manifest_cache(&swarmbak_format::InfoHash::from_hex(&ih).unwrap())
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let mut marker = format!("swarmbak restore {ih} \n");
    for p in &man.packs {
        marker.push_str(&format!("{} {}\n", p.snapshot, p.offset));
    }
    fs::write(to.join(".swarmbak-restore"), marker).unwrap();
    // One file lost its data, another was zeroed, a third is gone.
    let files: Vec<std::path::PathBuf> = walk_files(&to.join("office"));
    assert!(files.len() >= 3);
    fs::write(&files[0], b"").unwrap();
    let len = fs::metadata(&files[1]).unwrap().len();
    fs::write(&files[1], vec![0u8; len as usize]).unwrap();
    fs::remove_file(&files[2]).unwrap();
    let out = ok(&m.home, &["fetch", &ih, "--to", to.to_str().unwrap()]);
    assert!(out.contains("resumed"), "{out}");
    assert_same(&office, &to.join("office"));
    assert!(!to.join(".swarmbak-restore").exists());
}

#[test]
fn magnet_and_torrent_file_name_the_same_snapshot_and_export_round_trips() {
    let t = tempfile::tempdir().unwrap();
    let m = machine(t.path());
    let (_, edge) = office_and_edge(t.path(), 1);
    let ih = seed(&m.home, &[&edge]);
    let tf = t.path().join("snap.torrent");
    ok(&m.home, &["export", &ih, tf.to_str().unwrap()]);
    let j = inspect_json(&m.home, tf.to_str().unwrap());
    assert_eq!(j["infohash"], ih.as_str());
    // For a standard client: another announce URL, the same info-hash.
    let url = "http://tracker.example:6969/0123456789abcdef0123456789abcdef/announce";
    let tc = t.path().join("client.torrent");
    ok(
        &m.home,
        &["export", &ih, tc.to_str().unwrap(), "--announce", url],
    );
    let jc = inspect_json(&m.home, tc.to_str().unwrap());
    assert_eq!(jc["infohash"], ih.as_str());
    assert_eq!(jc["announce"], url);
    assert_eq!(jc["pieces"], j["pieces"]);
    let err = fails(
        &m.home,
        &[
            "export",
            &ih,
            tc.to_str().unwrap(),
            "--announce",
            "tracker:6969",
        ],
    );
    assert!(err.contains("--announce"), "{err}");
    let to = t.path().join("a");
    ok(
        &m.home,
        &["fetch", tf.to_str().unwrap(), "--to", to.to_str().unwrap()],
    );
    assert_same(&edge, &to.join("edge"));
    let to = t.path().join("b");
    let magnet = format!("magnet:?xt=urn:btih:{ih}&dn=x");
    ok(&m.home, &["fetch", &magnet, "--to", to.to_str().unwrap()]);
    assert_same(&edge, &to.join("edge"));
}

#[test]
fn a_recovery_key_added_later_restores_the_next_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let m = machine(t.path());
    let (office, _) = office_and_edge(t.path(), 2);
    seed(&m.home, &[&office]);
    // The organisation adds a second recovery key; unchanged data is re-encrypted to it
    // rather than reused from packs it cannot open.
    let newkey = swarmbak_format::Identity::generate();
    let newfile = t.path().join("new-recovery.txt");
    fs::write(&newfile, newkey.to_identity_file()).unwrap();
    ok(
        &m.home,
        &[
            "init",
            "--recovery-recipient",
            &newkey.to_public().to_string(),
        ],
    );
    let second = seed(&m.home, &[&office]);
    let to = t.path().join("restored");
    ok(
        &m.home,
        &[
            "fetch",
            &second,
            "--to",
            to.to_str().unwrap(),
            "--identity",
            newfile.to_str().unwrap(),
        ],
    );
    assert_same(&office, &to.join("office"));
}
