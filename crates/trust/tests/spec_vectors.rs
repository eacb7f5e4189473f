//! protocol-spec/trust.md's examples are these tests: the keys come from fixed seeds and
//! ed25519 signatures are deterministic, so every byte of each example is checked.

use swarmbak_core::spec::assert_quoted;
use swarmbak_trust::{
    bitfield_bytes, member_mac, possession_digest, session_key, tag, Attestation, BackupReport,
    Certificate, CertificateFields, EnrollRequest, EnrollToken, HeldStatement, Kind, PublishRecord,
    Retirement, Revocation, Side, SigningKey, Transcript,
};

fn org() -> SigningKey {
    SigningKey::from_seed([0x0a; 32])
}

fn machine() -> SigningKey {
    SigningKey::from_seed([0x01; 32])
}

/// Hex, 64 digits a line, as the spec prints long values.
fn lines(b: &[u8]) -> String {
    hex::encode(b)
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn examples() -> Vec<(&'static str, String)> {
    let org = org();
    let m = machine();
    let cert = Certificate::issue(
        &org,
        &CertificateFields {
            machine: m.public(),
            age_recipient: "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p".into(),
            name: "laptop-7".into(),
            user: Some("ana".into()),
            vip: true,
            domain: Some("hq/2.14".into()),
            issued: 1_796_000_000,
            expires: None,
        },
    );
    let record = PublishRecord {
        infohash: [0xab; 20],
        machine: m.public(),
        copies: 2,
        published: 1_796_100_000,
    }
    .sign(&m);
    let revocation = Revocation::issue(&org, m.public(), "laptop-7", 1_796_200_000);
    let enroll = EnrollRequest {
        machine: m.public(),
        age_recipient: "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p".into(),
        secret: [0x5e; 32],
    }
    .sign(&m);
    let report_ok = BackupReport {
        id: [0x1d; 16],
        machine: m.public(),
        start: 1_796_100_000,
        end: 1_796_100_042,
        bytes: 50_364_416,
        files: 123,
        outcome: Ok([0xab; 20]),
    }
    .sign(&m);
    let report_failed = BackupReport::new_failure(
        [0x1e; 16],
        m.public(),
        1_796_186_400,
        1_796_186_401,
        0,
        0,
        "cannot read /home/ana: permission denied",
    )
    .sign(&m);
    let retirement = retirement().sign(&m);
    let token = EnrollToken {
        url: "http://10.0.0.5:7070".into(),
        org: org.public(),
        secret: [0x5e; 32],
        tls: None,
    };
    // §10: the sb_machine exchange of wire.md's golden handshake (info-hash 01..14).
    let ih: [u8; 20] = std::array::from_fn(|i| i as u8 + 1);
    let pid = |last: u8| {
        let mut p = [0u8; 20];
        p[..8].copy_from_slice(b"-SB0100-");
        p[19] = last;
        p
    };
    let t = Transcript::new(&ih, &pid(1), &pid(2), &[0xd0; 32], &[0xa0; 32]);
    let secret = [0x0b; 32];
    let a = SigningKey::from_seed([0x02; 32]);
    let (kd, ka) = (m.public(), a.public());
    // §11: proofs of possession, on the same keys and connection.
    let held = HeldStatement {
        infohash: [0xab; 20],
        key: m.public(),
        pieces: 12,
        have: bitfield_bytes(12, |p| [0, 1, 2, 5, 11].contains(&p)),
        seq: 3,
        flushed: 1_796_100_100,
    }
    .sign(&m);
    let attestation = Attestation {
        checker: a.public(),
        holder: m.public(),
        infohash: [0xab; 20],
        mode: 1,
        blocks: 2,
        result: true,
        seq: 3,
        time: 1_796_100_200,
    }
    .sign(&a);
    let k = session_key(&secret, &t);
    let tagged = b"d2:idi7e5:retryi60e1:ti9e3:whyi2ee";
    let (zeros, ones) = (vec![0u8; 16384], vec![0x11u8; 16384]);
    let digest = possession_digest(&[0xc0; 32], &[0xab; 20], &kd, 5, 2, 2, &[&zeros, &ones]);
    vec![
        ("held statement", lines(&held)),
        ("attestation", lines(&attestation)),
        ("session key", hex::encode(k.0)),
        ("tag D 0", hex::encode(tag(&k, Side::Dialler, 0, tagged))),
        ("tag A 1", hex::encode(tag(&k, Side::Acceptor, 1, tagged))),
        ("digest", hex::encode(digest)),
        ("peer A public key", ka.to_hex()),
        ("transcript", lines(&t.0)),
        ("MAC_D", hex::encode(member_mac(&secret, Side::Dialler, &t))),
        (
            "MAC_A",
            hex::encode(member_mac(&secret, Side::Acceptor, &t)),
        ),
        ("SIG_D", lines(&m.sign_peer(Side::Dialler, &t, &kd, &ka, 1))),
        (
            "SIG_A",
            lines(&a.sign_peer(Side::Acceptor, &t, &kd, &ka, 1)),
        ),
        ("org public key", org.public().to_hex()),
        ("org fingerprint", org.public().fingerprint()),
        ("machine public key", m.public().to_hex()),
        ("certificate", lines(&cert)),
        ("publish record", lines(&record)),
        ("revocation", lines(&revocation)),
        ("enrolment request", lines(&enroll)),
        ("token", token.to_text()),
        ("backup report", lines(&report_ok)),
        ("failed backup report", lines(&report_failed)),
        ("retirement", lines(&retirement)),
    ]
}

#[test]
fn spec_examples() {
    let ex = examples();
    if std::env::var_os("PRINT_SPEC").is_some() {
        for (name, v) in &ex {
            println!("== {name}\n{v}");
        }
    }
    let quotes: Vec<&str> = ex.iter().map(|(_, v)| v.as_str()).collect();
    assert_quoted("trust.md", &quotes);
    for k in [
        Kind::Certificate,
        Kind::Publish,
        Kind::Revocation,
        Kind::Enroll,
        Kind::Report,
        Kind::Held,
        Kind::Attestation,
        Kind::Retire,
    ] {
        let p = std::str::from_utf8(&k.prefix()[..k.prefix().len() - 1]).unwrap();
        assert_quoted("trust.md", &[&format!("`{p}\\0`")]);
    }
    assert_quoted(
        "trust.md",
        &[
            "`swarmbak-peer-v1\\0`",
            "`swarmbak-member-v1\\0`",
            "`swarmbak-session-v1\\0`",
            "`swarmbak-digest-v1\\0`",
        ],
    );
}

/// §12's example: a retirement keeping stripes 0-2 and 7 of 10.
fn retirement() -> Retirement {
    Retirement {
        infohash: [0xab; 20],
        machine: machine().public(),
        retired: 1_798_000_000,
        newest: [0xcd; 20],
        stripes: 10,
        keep: vec![(0, 3), (7, 8)],
    }
}

#[test]
fn retirements_refuse_bad_ranges_and_the_newest() {
    let m = machine();
    let r = retirement();
    let signed = r.sign(&m);
    let back = Retirement::verify(&signed, &m.public()).unwrap();
    assert_eq!(back, r);
    assert!((0..3).all(|s| back.keeps(s)) && back.keeps(7));
    assert!(!back.keeps(3) && !back.keeps(6) && !back.keeps(8) && !back.keeps(9));
    assert_eq!(back.kept_stripes(), 4);
    // Another machine's key does not verify it.
    let other = SigningKey::from_seed([0x02; 32]);
    assert!(Retirement::verify(&signed, &other.public()).is_err());
    for keep in [
        vec![(3, 3)],         // empty range
        vec![(0, 11)],        // beyond the stripes
        vec![(4, 6), (2, 3)], // out of order
        vec![(0, 3), (3, 5)], // touching: not merged
    ] {
        let bad = Retirement {
            keep: keep.clone(),
            ..r.clone()
        }
        .sign(&m);
        assert!(Retirement::verify(&bad, &m.public()).is_err(), "{keep:?}");
    }
    let newest = Retirement {
        newest: r.infohash,
        ..r.clone()
    }
    .sign(&m);
    let e = Retirement::verify(&newest, &m.public()).unwrap_err();
    assert!(e.to_string().contains("newest"), "{e}");
    assert_eq!(
        swarmbak_trust::stripe_ranges(10, |s| s < 3 || s == 7 || s == 9),
        vec![(0, 3), (7, 8), (9, 10)]
    );
}
