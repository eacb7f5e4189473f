//! The private company tracker, as an attacker and an administrator meet it (issue 9):
//! real `swarmbak tracker`, `swarmbak tracker enroll|revoke|machines` and `swarmbak init
//! --enroll` processes on loopback. Each attack here succeeded against the open tracker.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use common::procs::Proc;
use common::{fails, ok};

/// One HTTP/1.1 exchange: (status, body).
fn http(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn pct(b: &[u8]) -> String {
    b.iter().map(|x| format!("%{x:02X}")).collect()
}

fn announce_target(prefix: &str, ih: &[u8], extra: &str) -> String {
    format!(
        "{prefix}?info_hash={}&peer_id={}&port=6881&left=0&compact=1{extra}",
        pct(ih),
        pct(&[7u8; 20])
    )
}

/// An announce's bencoded reply.
fn announce(addr: &str, prefix: &str, ih: &[u8], extra: &str) -> String {
    http(addr, "GET", &announce_target(prefix, ih, extra), &[], b"").1
}

fn config(home: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(home.join("config.json")).unwrap()).unwrap()
}

#[test]
fn enrolment_signed_publishes_passkeys_and_revocation() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("tracker");
    let data_s = data.to_str().unwrap();
    // The organisation's recovery key (its public half configured at the tracker).
    let rec_home = t.path().join("recovery");
    ok(&rec_home, &["init", "--name", "recovery"]);
    let recovery = config(&rec_home)["public_key"].as_str().unwrap().to_owned();

    // Nothing can be enrolled before the organisation has a recovery recipient.
    let err = fails(
        t.path(),
        &[
            "tracker",
            "enroll",
            "--data",
            data_s,
            "--name",
            "x",
            "--url",
            "http://127.0.0.1:1",
        ],
    );
    assert!(err.contains("recovery recipient"), "{err}");

    let tracker = Proc::start(
        "tracker",
        &[
            "tracker",
            "--listen",
            "127.0.0.1:0",
            "--data",
            data_s,
            "--interval",
            "1",
            "--recovery-recipient",
            &recovery,
        ],
    );
    let addr = tracker.addr.clone();
    // The organisation key is private (0600).
    use std::os::unix::fs::PermissionsExt;
    for f in ["org.key", "admin-token", "org-secret"] {
        assert_eq!(
            std::fs::metadata(data.join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600,
            "{f}"
        );
    }

    // The administrator enrols laptop-7; the token is the first line of stdout.
    let out = ok(
        t.path(),
        &[
            "tracker", "enroll", "--data", data_s, "--name", "laptop-7", "--user", "ana", "--vip",
        ],
    );
    let token = out.lines().next().unwrap().to_owned();
    assert!(token.starts_with("swarmbak-enroll-1."), "{out}");
    let victim = t.path().join("victim");
    // An --name that differs from the enrolled name is ignored, and said so.
    let o = common::run(&victim, &["init", "--enroll", &token, "--name", "other"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--name \"other\" ignored"));
    let c = config(&victim);
    assert_eq!(c["name"], "laptop-7");
    assert_eq!(c["tracker"], format!("http://{addr}"));
    assert!(c["recovery_recipients"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r == recovery.as_str()));
    let passkey = c["enrolment"]["passkey"].as_str().unwrap().to_owned();
    assert!(victim.join("signing.key").is_file());
    // The token was for one machine.
    let err = fails(&t.path().join("second"), &["init", "--enroll", &token]);
    assert!(err.contains("unknown, used or expired"), "{err}");
    // A token whose organisation key is not the tracker's: the tracker cannot prove it.
    let out = ok(
        t.path(),
        &["tracker", "enroll", "--data", data_s, "--name", "laptop-8"],
    );
    let mut forged =
        swarmbak_tracker::trust::EnrollToken::parse(out.lines().next().unwrap()).unwrap();
    forged.org = swarmbak_tracker::trust::SigningKey::generate().public();
    let err = fails(
        &t.path().join("third"),
        &["init", "--enroll", &forged.to_text()],
    );
    assert!(err.contains("did not prove the organisation key"), "{err}");

    // The victim backs up and publishes a signed record.
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"the victim's own data").unwrap();
    let out = ok(
        &victim,
        &["seed", src.to_str().unwrap(), "--until", "published"],
    );
    let ih = out.lines().next().unwrap().to_owned();
    let listed = ok(&victim, &["--json", "snapshots", "--machine", "laptop-7"]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.contains(&ih));

    // A stranger with no keys makes its own snapshot encrypted to the recovery key...
    let stranger = t.path().join("stranger");
    ok(
        &stranger,
        &[
            "init",
            "--name",
            "stranger",
            "--recovery-recipient",
            &recovery,
        ],
    );
    std::fs::write(src.join("a.txt"), b"the attacker's content").unwrap();
    let out = ok(
        &stranger,
        &["seed", src.to_str().unwrap(), "--until", "published"],
    );
    let evil_ih = out.lines().next().unwrap().to_owned();
    let file = t.path().join("evil.torrent");
    ok(&stranger, &["export", &evil_ih, file.to_str().unwrap()]);
    let evil = std::fs::read(&file).unwrap();
    let victim_key = hex::encode(
        swarmbak_tracker::trust::SigningKey::load(&victim.join("signing.key"))
            .unwrap()
            .public()
            .0,
    );
    // ... and publishes it under the victim's name: refused (the open tracker said 201).
    let (status, body) = http(
        &addr,
        "POST",
        &format!("/publish?machine={victim_key}&name=laptop-7"),
        &[],
        &evil,
    );
    assert_eq!(status, 401, "{body}");
    // With a record signed by its own key and a certificate of its own "organisation".
    let k = swarmbak_tracker::trust::SigningKey::generate();
    let fake_org = swarmbak_tracker::trust::SigningKey::generate();
    let cert = swarmbak_tracker::trust::Certificate::issue(
        &fake_org,
        &swarmbak_tracker::trust::CertificateFields {
            machine: k.public(),
            age_recipient: recovery.clone(),
            name: "laptop-7".into(),
            user: None,
            vip: false,
            domain: None,
            issued: 0,
            expires: None,
        },
    );
    let mut evil_ih_bytes = [0u8; 20];
    hex::decode_to_slice(&evil_ih, &mut evil_ih_bytes).unwrap();
    let record = swarmbak_tracker::trust::PublishRecord {
        infohash: evil_ih_bytes,
        machine: k.public(),
        copies: 2,
        published: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    }
    .sign(&k);
    let headers = [
        ("Swarmbak-Record", swarmbak_tracker::trust::to_b64(&record)),
        (
            "Swarmbak-Certificate",
            swarmbak_tracker::trust::to_b64(&cert),
        ),
    ];
    let (status, body) = http(&addr, "POST", "/publish", &headers, &evil);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("bad signature"), "{body}");
    // Reading the directory needs a passkey.
    assert_eq!(http(&addr, "GET", "/snapshots", &[], b"").0, 401);
    let listed = ok(&victim, &["--json", "snapshots", "--machine", "laptop-7"]);
    assert_eq!(
        listed.lines().count(),
        1,
        "the forgery is not listed: {listed}"
    );

    // Spoofing the victim online: announces need a passkey; `machine=` counts for nothing.
    let mut ih_bytes = [0u8; 20];
    hex::decode_to_slice(&ih, &mut ih_bytes).unwrap();
    let body = announce(
        &addr,
        "/announce",
        &ih_bytes,
        &format!("&machine={victim_key}"),
    );
    assert!(body.contains("this tracker is private"), "{body}");
    let body = announce(
        &addr,
        &format!("/{}/announce", "0".repeat(32)),
        &ih_bytes,
        "",
    );
    assert!(body.contains("unknown passkey"), "{body}");
    // The victim's own passkey works, in both path forms (BEP 48 form first).
    let body = announce(&addr, &format!("/{passkey}/announce"), &ih_bytes, "");
    assert!(body.contains("8:intervali"), "{body}");
    let body = announce(&addr, &format!("/announce/{passkey}"), &ih_bytes, "");
    assert!(body.contains("8:intervali"), "{body}");

    // The administrator's list.
    let machines = ok(
        t.path(),
        &["--json", "tracker", "machines", "--data", data_s],
    );
    assert!(
        machines.contains("\"laptop-7\"") && machines.contains("\"vip\":true"),
        "{machines}"
    );

    // Revocation counts on the very next request, without a restart.
    ok(
        t.path(),
        &["tracker", "revoke", "--data", data_s, "laptop-7"],
    );
    let body = announce(&addr, &format!("/{passkey}/announce"), &ih_bytes, "");
    assert!(body.contains("passkey revoked"), "{body}");
    std::fs::write(src.join("b.txt"), b"more").unwrap();
    let err = fails(
        &victim,
        &[
            "seed",
            src.to_str().unwrap(),
            "--until",
            "published",
            "--timeout",
            "5",
        ],
    );
    assert!(err.contains("revoked"), "{err}");
    // The signed revocation is published for peers to check.
    let (status, body) = http(
        &addr,
        "GET",
        "/revocations",
        &[(
            "Authorization",
            format!(
                "Bearer {}",
                std::fs::read_to_string(data.join("admin-token"))
                    .unwrap()
                    .trim()
            ),
        )],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rev = swarmbak_tracker::trust::from_b64(list[0]["revocation"].as_str().unwrap()).unwrap();
    let org = swarmbak_tracker::trust::PublicKey::from_hex(
        config(&victim)["enrolment"]["org_key"].as_str().unwrap(),
    )
    .unwrap();
    let r = swarmbak_tracker::trust::Revocation::verify(&rev, &org).unwrap();
    assert_eq!(
        (r.name.as_str(), hex::encode(r.machine.0)),
        ("laptop-7", victim_key.clone())
    );
    // Enrolled again (a new token, the same machine and keys): a new passkey works.
    let out = ok(
        t.path(),
        &["tracker", "enroll", "--data", data_s, "--name", "laptop-7"],
    );
    ok(&victim, &["init", "--enroll", out.lines().next().unwrap()]);
    let again = config(&victim)["enrolment"]["passkey"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(again, passkey);
    let body = announce(&addr, &format!("/{again}/announce"), &ih_bytes, "");
    assert!(body.contains("8:intervali"), "{body}");
    drop(tracker);

    // A tracker that lies: its database gains an unsigned record of the attacker's
    // snapshot under the victim's name. Enrolled machines believe only what the
    // organisation key vouches for.
    {
        use swarmbak_tracker::storage::Storage;
        let (mut db, _) = swarmbak_tracker::sqlite::Sqlite::open(&data).unwrap();
        let mi = swarmbak_metainfo::Metainfo::from_bytes(&evil).unwrap();
        db.publish(
            &swarmbak_tracker::storage::SnapshotRow {
                infohash: mi.info_hash(),
                machine_key: victim_key.clone(),
                machine_name: "laptop-7".into(),
                published: 4_000_000_000,
                total_length: mi.total_length(),
                payload_length: mi.swarmbak().unwrap().payload_length,
                name: "forged".into(),
                copies: 2,
                record: None,
                certificate: None,
            },
            &evil,
        )
        .unwrap();
    }
    let tracker = Proc::start(
        "tracker",
        &[
            "tracker",
            "--listen",
            &addr,
            "--data",
            data_s,
            "--interval",
            "1",
        ],
    );
    let o = common::run(&victim, &["--json", "snapshots", "--machine", "laptop-7"]);
    let (out, err) = common::text(&o);
    assert!(o.status.success(), "{err}");
    assert!(!out.contains(&evil_ih), "the forgery is listed: {out}");
    assert!(out.contains(&ih), "{out}");
    assert!(err.contains("ignoring snapshot"), "{err}");
    let identity = rec_home.join("identity.txt");
    let err = fails(
        &victim,
        &[
            "fetch",
            &evil_ih,
            "--to",
            t.path().join("restored").to_str().unwrap(),
            "--identity",
            identity.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("does not verify with the organisation key"),
        "{err}"
    );
    assert!(!t.path().join("restored").join("src").exists());
    drop(tracker);
}

#[test]
fn an_expired_certificate_stops_the_passkey() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("tracker");
    let data_s = data.to_str().unwrap();
    let rec_home = t.path().join("recovery");
    ok(&rec_home, &["init", "--name", "recovery"]);
    let recovery = config(&rec_home)["public_key"].as_str().unwrap().to_owned();
    let tracker = Proc::start(
        "tracker",
        &[
            "tracker",
            "--listen",
            "127.0.0.1:0",
            "--data",
            data_s,
            "--recovery-recipient",
            &recovery,
        ],
    );
    // A certificate of 0 days expires the second it is made.
    let out = ok(
        t.path(),
        &[
            "tracker",
            "enroll",
            "--data",
            data_s,
            "--name",
            "temp",
            "--expires",
            "0",
        ],
    );
    let home = t.path().join("temp");
    ok(&home, &["init", "--enroll", out.lines().next().unwrap()]);
    let passkey = config(&home)["enrolment"]["passkey"]
        .as_str()
        .unwrap()
        .to_owned();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let body = announce(
        &tracker.addr,
        &format!("/{passkey}/announce"),
        &[1u8; 20],
        "",
    );
    assert!(body.contains("certificate expired"), "{body}");
}
