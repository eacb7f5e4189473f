//! `swarmbak tracker retirements` and `swarmbak tracker unretire` against a running
//! `swarmbak tracker` (tracker.md §7.8): a machine enrolled through the real endpoint
//! publishes signed snapshots and retires one; the administrator lists it, cancels it
//! with the command, and the running tracker's listing shows the cancellation at once
//! (the command asks it to reload). Audited as `cli`.

mod common;

use common::procs;
use swarmbak_metainfo::{build_swarmbak_torrent, Metainfo, SwarmbakParams, SwarmbakTorrent};
use swarmbak_tracker::trust::{
    from_b64, to_b64, EnrollToken, PublishRecord, Retirement, SigningKey,
};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A valid swarmbak torrent, distinct for each `n`, of 10 stripes.
fn torrent(n: u8) -> Vec<u8> {
    build_swarmbak_torrent(&SwarmbakTorrent {
        announce: None,
        creation_date: 1_700_000_000,
        name: format!("swarmbak-{n}.shards"),
        piece_length: 16384,
        piece_hashes: (0..30u8).map(|i| [n ^ i; 20]).collect(),
        params: SwarmbakParams {
            format: 1,
            k: 2,
            m: 1,
            stripes: 10,
            payload_length: 1000 + u64::from(n),
            manifest_offset: 0,
            manifest_length: 100,
            id: [n; 16],
            roots: None,
        },
    })
    .unwrap()
}

fn http(
    tracker: &procs::Tracker,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    common::try_http(&tracker.addr, method, target, headers, body).expect("the tracker answers")
}

#[test]
fn unretire_reaches_the_running_tracker_and_retirements_lists_them() {
    let t = tempfile::tempdir().unwrap();
    let tracker = procs::tracker(t.path(), "age1organisationrecoveryfortests");
    let data = tracker.data.to_str().unwrap().to_owned();
    let home = t.path().join("admin-home");

    // Enrol a machine as its agent would; publish two snapshots signed by it.
    let token = EnrollToken::parse(&tracker.token("laptop-3", &[])).unwrap();
    let key = SigningKey::generate();
    let (st, body) = http(
        &tracker,
        "POST",
        "/api/v1/enroll",
        &[],
        &token.request(&key, "age1laptop3"),
    );
    assert_eq!(st, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pk = v["passkey"].as_str().unwrap().to_owned();
    let cert = from_b64(v["certificate"].as_str().unwrap()).unwrap();
    let mut ihs = Vec::new();
    for n in [1u8, 2] {
        let tr = torrent(n);
        let ih = Metainfo::from_bytes(&tr).unwrap().info_hash();
        let record = PublishRecord {
            infohash: ih,
            machine: key.public(),
            copies: 2,
            published: now(),
        }
        .sign(&key);
        let headers = [
            ("Swarmbak-Record", to_b64(&record)),
            ("Swarmbak-Certificate", to_b64(&cert)),
        ];
        let (st, body) = http(&tracker, "POST", &format!("/{pk}/publish"), &headers, &tr);
        assert_eq!(st, 201, "{body}");
        ihs.push(ih);
    }
    let (old, newest) = (ihs[0], ihs[1]);
    let old_hex = hex::encode(old);

    // Nothing retired yet: the listing says so; cancelling is an error naming it.
    let list = |json: bool| {
        let mut args = vec!["tracker", "retirements", "--data", data.as_str()];
        if json {
            args.insert(0, "--json");
        }
        common::ok(&home, &args)
    };
    assert_eq!(list(false).trim(), "no snapshot is retired at this tracker");
    let err = common::fails(&home, &["tracker", "unretire", "--data", &data, &old_hex]);
    assert!(
        err.contains(&format!("snapshot {old_hex} has no retirement standing")),
        "{err}"
    );

    // The machine retires its older snapshot.
    let signed = Retirement {
        infohash: old,
        machine: key.public(),
        retired: now(),
        newest,
        stripes: 10,
        keep: vec![(0, 3), (7, 8)],
    }
    .sign(&key);
    let (st, body) = http(&tracker, "POST", &format!("/{pk}/retire"), &[], &signed);
    assert_eq!(st, 201, "{body}");
    let listing = |ih: &str| -> serde_json::Value {
        let (st, body) = http(
            &tracker,
            "GET",
            &format!("/{pk}/snapshots?infohash={ih}"),
            &[],
            b"",
        );
        assert_eq!(st, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()[0].clone()
    };
    let s = listing(&old_hex);
    assert_eq!(s["retirement"], to_b64(&signed), "{s}");
    assert!(s["retired_at"].is_i64(), "{s}");

    // The administrator's list, as text and as JSON.
    let out = list(false);
    let line = out.lines().next().unwrap();
    assert!(line.starts_with(&format!("{old_hex} laptop-3 ")), "{out}");
    assert!(line.contains("keeps 0-2,7 of 10 stripes"), "{out}");
    assert!(!line.contains("CANCELLED"), "{out}");
    let v: serde_json::Value = serde_json::from_str(list(true).trim()).unwrap();
    assert_eq!(v["infohash"], old_hex.as_str(), "{v}");
    assert_eq!(v["machine"], "laptop-3", "{v}");
    assert_eq!(v["keep"], "0-2,7", "{v}");
    assert_eq!(v["stripes"], 10, "{v}");
    assert!(v["cancelled"].is_null(), "{v}");

    // Cancelled with the command: the running tracker lists it so at once.
    let out = common::ok(
        &home,
        &["--json", "tracker", "unretire", "--data", &data, &old_hex],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["event"], "unretired", "{v}");
    assert_eq!(v["cancelled_by"], "cli", "{v}");
    let cancelled = v["cancelled"].as_i64().unwrap();
    let s = listing(&old_hex);
    assert!(s.get("retirement").is_none(), "{s}");
    assert!(s.get("retired_at").is_none(), "{s}");
    assert_eq!(s["retirement_cancelled"], cancelled, "{s}");
    let out = list(false);
    assert!(out.contains(", CANCELLED "), "{out}");
    assert!(out.contains(" by cli"), "{out}");
    // Again: an error naming it; the machine's record does not revive it.
    let err = common::fails(&home, &["tracker", "unretire", "--data", &data, &old_hex]);
    assert!(
        err.contains(&format!(
            "the retirement of snapshot {old_hex} is cancelled already"
        )),
        "{err}"
    );
    let (st, body) = http(&tracker, "POST", &format!("/{pk}/retire"), &[], &signed);
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"cancelled\":true"), "{body}");
    assert!(listing(&old_hex).get("retirement").is_none());
    let err = common::fails(&home, &["tracker", "unretire", "--data", &data, "beef"]);
    assert!(err.contains("40 hex digits"), "{err}");

    // Audited as the command line's.
    let admin = std::fs::read_to_string(tracker.data.join("admin-token")).unwrap();
    let (st, body) = http(
        &tracker,
        "GET",
        "/api/v1/audit",
        &[("authorization", format!("Bearer {}", admin.trim()))],
        b"",
    );
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let lines: Vec<(String, String)> = v["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "unretire")
        .map(|r| {
            (
                r["actor"].as_str().unwrap().to_owned(),
                r["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(lines, [("cli".to_owned(), old_hex.clone())]);
}
