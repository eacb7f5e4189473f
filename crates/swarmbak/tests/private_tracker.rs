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
    common::try_http(addr, method, target, headers, body).expect("the tracker answers")
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

/// Issue 9, point 4: the tracker over TLS with its own certificate, pinned by the
/// enrolment token. (a) enrolment, publishing and listing work over TLS; (b) a token
/// pinning another certificate fails before any secret is sent (the token stays usable);
/// (c) the plain port still serves standard clients.
#[test]
fn tls_tracker_pinned_by_the_token() {
    use swarmbak_tracker::tls::{TlsIdentity, CERT_FILE, KEY_FILE};
    use swarmbak_tracker::trust::EnrollToken;

    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("tracker");
    let data_s = data.to_str().unwrap();
    let rec_home = t.path().join("recovery");
    ok(&rec_home, &["init", "--name", "recovery"]);
    let recovery = config(&rec_home)["public_key"].as_str().unwrap().to_owned();
    let (tracker, lines) = Proc::start_lines(
        "tracker",
        &[
            "tracker",
            "--listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
            "--data",
            data_s,
            "--interval",
            "1",
            "--recovery-recipient",
            &recovery,
        ],
        3,
    );
    let plain = tracker.addr.clone();
    let tls = lines[1]
        .strip_prefix("listening-tls ")
        .unwrap_or_else(|| panic!("second line: {:?}", lines[1]))
        .to_owned();
    assert_ne!(plain, tls);
    // UDP (passkeys in clear) rides on the plain listener's port, not on the TLS one.
    assert_eq!(lines[2], format!("listening-udp {plain}"));
    // The tracker made its key (private) and certificate; the pin is the certificate's.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join(KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let id = TlsIdentity::from_files(&data.join(CERT_FILE), &data.join(KEY_FILE)).unwrap();

    // The token names the https address and pins the certificate.
    let out = ok(
        t.path(),
        &["tracker", "enroll", "--data", data_s, "--name", "laptop-9"],
    );
    let token = out.lines().next().unwrap().to_owned();
    let tok = EnrollToken::parse(&token).unwrap();
    assert_eq!(tok.url, format!("https://{tls}"));
    assert_eq!(tok.tls, Some(id.sha256));

    // (b) The same token pinning another certificate: refused at the TLS handshake,
    // before the request (and its secret) is sent.
    let other = tempfile::tempdir().unwrap();
    let other_id = TlsIdentity::load_or_create(other.path(), &["localhost".into()]).unwrap();
    assert_ne!(other_id.sha256, id.sha256);
    let mut altered = tok.clone();
    altered.tls = Some(other_id.sha256);
    let err = fails(
        &t.path().join("impostor-victim"),
        &["init", "--enroll", &altered.to_text()],
    );
    assert!(
        err.contains("is not the tracker the pin names") && err.contains("nothing was sent"),
        "{err}"
    );
    assert!(
        err.contains(&hex::encode(id.sha256)),
        "names what it saw: {err}"
    );
    // An https token without a pin is refused without connecting.
    let mut unpinned = tok.clone();
    unpinned.tls = None;
    let err = fails(
        &t.path().join("unpinned"),
        &["init", "--enroll", &unpinned.to_text()],
    );
    assert!(err.contains("carries no TLS certificate pin"), "{err}");

    // (a) The token is still unused: the right pin enrols over TLS.
    let laptop = t.path().join("laptop");
    ok(&laptop, &["init", "--enroll", &token]);
    let c = config(&laptop);
    assert_eq!(c["tracker"], format!("https://{tls}"));
    assert_eq!(c["enrolment"]["tls_sha256"], hex::encode(id.sha256));
    let passkey = c["enrolment"]["passkey"].as_str().unwrap().to_owned();
    // Publish and list over TLS.
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"over tls").unwrap();
    let out = ok(
        &laptop,
        &["seed", src.to_str().unwrap(), "--until", "published"],
    );
    let ih = out.lines().next().unwrap().to_owned();
    let listed = ok(&laptop, &["--json", "snapshots", "--machine", "laptop-9"]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.contains(&ih), "{listed}");
    // Every later connection carries the pin: with another one, the tracker is refused.
    let cfg_path = laptop.join("config.json");
    let good = std::fs::read(&cfg_path).unwrap();
    let mut bad = c.clone();
    bad["enrolment"]["tls_sha256"] = hex::encode(other_id.sha256).into();
    std::fs::write(&cfg_path, serde_json::to_vec(&bad).unwrap()).unwrap();
    let err = fails(&laptop, &["snapshots", "--machine", "laptop-9"]);
    assert!(err.contains("is not the tracker the pin names"), "{err}");
    std::fs::write(&cfg_path, good).unwrap();

    // (c) The plain port serves the same tracker to standard clients.
    let mut ih_bytes = [0u8; 20];
    hex::decode_to_slice(&ih, &mut ih_bytes).unwrap();
    let out = ok(
        t.path(),
        &[
            "tracker", "enroll", "--data", data_s, "--client", "--name", "qbt",
        ],
    );
    let announce_url = out.lines().next().unwrap();
    let client_pk = announce_url
        .trim_end_matches("/announce")
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let body = announce(&plain, &format!("/{client_pk}/announce"), &ih_bytes, "");
    assert!(body.contains("8:intervali"), "{body}");
    let body = announce(&plain, &format!("/{passkey}/scrape"), &ih_bytes, "");
    assert!(body.contains("5:filesd"), "{body}");
    assert_eq!(http(&plain, "GET", "/health", &[], b"").0, 200);
    // Plain HTTP on the TLS port gets no answer it could take for the tracker's.
    let mut s = TcpStream::connect(&tls).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/1.1 200"), "{got:?}");

    // Revocation asks the running tracker to reload over TLS (the admin token never in
    // clear): no complaint, and the passkey is refused on the next request.
    let o = common::run(
        t.path(),
        &["tracker", "revoke", "--data", data_s, "laptop-9"],
    );
    let (_, err) = common::text(&o);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("did not reload"), "{err}");
    let body = announce(&plain, &format!("/{passkey}/announce"), &ih_bytes, "");
    assert!(body.contains("passkey revoked"), "{body}");
    drop(tracker);
}

/// A tracker with only `--tls-listen` serves no UDP unless asked: UDP would carry the
/// passkeys in clear that the administrator chose HTTPS to protect (tracker.md §9).
#[test]
fn a_tls_only_tracker_serves_no_udp_unless_asked() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("tracker");
    let start = |extra: &[&str]| {
        let mut args = vec![
            "tracker",
            "--tls-listen",
            "127.0.0.1:0",
            "--data",
            data.to_str().unwrap(),
            "--open",
        ];
        args.extend_from_slice(extra);
        Proc::start_lines("tracker", &args, 1 + usize::from(!extra.is_empty()))
    };
    let (mut first, lines) = start(&[]);
    let tls = lines[0].strip_prefix("listening ").unwrap().to_owned();
    // Nothing bound the TLS port for UDP: this test can.
    std::net::UdpSocket::bind(&tls).expect("the TLS port is free over UDP");
    first.kill();
    let free = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let asked = free.local_addr().unwrap().to_string();
    drop(free);
    let (_second, lines) = start(&["--udp-listen", &asked]);
    assert_eq!(lines[1], format!("listening-udp {asked}"));
    assert!(
        std::net::UdpSocket::bind(&asked).is_err(),
        "the tracker holds the UDP port it was asked for"
    );
}
