use super::*;

fn org() -> SigningKey {
    SigningKey::from_seed([7; 32])
}

fn fields(machine: PublicKey) -> CertificateFields {
    CertificateFields {
        machine,
        age_recipient: "age1example".into(),
        name: "laptop-7".into(),
        user: Some("ana".into()),
        vip: true,
        domain: Some("hq/2.14".into()),
        issued: 1_000_000,
        expires: Some(2_000_000),
    }
}

#[test]
fn certificate_round_trip_and_tampering() {
    let org = org();
    let m = SigningKey::from_seed([1; 32]);
    let cert = Certificate::issue(&org, &fields(m.public()));
    let c = Certificate::verify(&cert, &org.public()).unwrap();
    assert_eq!(c.fields, fields(m.public()));
    assert_eq!(c.org, org.public());
    // Another organisation's key does not verify it.
    let other = SigningKey::from_seed([8; 32]);
    assert_eq!(
        Certificate::verify(&cert, &other.public()),
        Err(TrustError::BadSignature("certificate"))
    );
    // Any flipped byte is refused (malformed or bad signature), never accepted.
    for i in 0..cert.len() {
        let mut t = cert.clone();
        t[i] ^= 1;
        assert!(Certificate::verify(&t, &org.public()).is_err(), "byte {i}");
    }
    // A certificate signature does not verify as another kind.
    let (body, sig) = split(&cert).unwrap();
    assert!(org.public().verify(Kind::Revocation, body, &sig).is_err());
    // Validity.
    assert!(c.valid_at(1_500_000).is_ok());
    assert!(matches!(
        c.valid_at(2_000_001),
        Err(TrustError::Expired { .. })
    ));
}

#[test]
fn publish_chain() {
    let org = org();
    let m = SigningKey::from_seed([1; 32]);
    let thief = SigningKey::from_seed([2; 32]);
    let cert = Certificate::issue(&org, &fields(m.public()));
    let rec = PublishRecord {
        infohash: [9; 20],
        machine: m.public(),
        copies: 2,
        published: 1_500_000,
    };
    let signed = rec.sign(&m);
    let (c, r) = verify_publish(&signed, &cert, &org.public(), &[9; 20]).unwrap();
    assert_eq!(r, rec);
    assert_eq!(c.fields.name, "laptop-7");
    // Another info-hash.
    assert!(matches!(
        verify_publish(&signed, &cert, &org.public(), &[8; 20]),
        Err(TrustError::Mismatch(_))
    ));
    // A record signed by someone else, presented with the victim's certificate.
    let forged = PublishRecord {
        machine: m.public(),
        ..rec.clone()
    }
    .sign(&thief);
    assert_eq!(
        verify_publish(&forged, &cert, &org.public(), &[9; 20]).map(|_| ()),
        Err(TrustError::BadSignature("publish record"))
    );
    // A self-made certificate (the thief's own "organisation").
    let fake_cert = Certificate::issue(&thief, &fields(thief.public()));
    let own = PublishRecord {
        machine: thief.public(),
        ..rec.clone()
    }
    .sign(&thief);
    assert!(verify_publish(&own, &fake_cert, &org.public(), &[9; 20]).is_err());
    // A record made after the certificate expired.
    let late = PublishRecord {
        published: 2_100_000,
        ..rec
    }
    .sign(&m);
    assert!(matches!(
        verify_publish(&late, &cert, &org.public(), &[9; 20]),
        Err(TrustError::Expired { .. })
    ));
}

#[test]
fn revocation_and_enrolment() {
    let org = org();
    let m = SigningKey::from_seed([1; 32]);
    let rev = Revocation::issue(&org, m.public(), "laptop-7", 42);
    let r = Revocation::verify(&rev, &org.public()).unwrap();
    assert_eq!(
        (r.machine, r.name.as_str(), r.revoked),
        (m.public(), "laptop-7", 42)
    );
    assert!(Revocation::verify(&rev, &m.public()).is_err());

    let req = EnrollRequest {
        machine: m.public(),
        age_recipient: "age1x".into(),
        secret: [5; 32],
    };
    let signed = req.sign(&m);
    assert_eq!(EnrollRequest::verify(&signed).unwrap(), req);
    // Signed by a key other than the one it names: refused.
    let bad = EnrollRequest {
        machine: m.public(),
        ..req
    }
    .sign(&SigningKey::from_seed([3; 32]));
    assert!(EnrollRequest::verify(&bad).is_err());

    let tok = EnrollToken {
        url: "https://tracker.example:7443".into(),
        org: org.public(),
        secret: [6; 32],
        tls: Some([4; 32]),
    };
    let text = tok.to_text();
    assert!(text.starts_with(TOKEN_PREFIX));
    assert_eq!(EnrollToken::parse(&text).unwrap(), tok);
    assert!(EnrollToken::parse("swarmbak-enroll-1.AAAA").is_err());
    assert!(EnrollToken::parse("hello").is_err());
}

#[test]
fn key_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("signing.key");
    let (k, created) = SigningKey::load_or_create(&p).unwrap();
    assert!(created);
    let (k2, created) = SigningKey::load_or_create(&p).unwrap();
    assert!(!created);
    assert_eq!(k.public(), k2.public());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::write(&p, "garbage").unwrap();
    assert!(matches!(
        SigningKey::load_or_create(&p),
        Err(KeyFileError::Malformed { .. })
    ));
}

fn report(m: &SigningKey) -> BackupReport {
    BackupReport {
        id: [3; 16],
        machine: m.public(),
        start: 100,
        end: 160,
        bytes: 5_000,
        files: 7,
        outcome: Ok([9; 20]),
    }
}

#[test]
fn backup_reports_round_trip_and_only_their_signer_counts() {
    let m = SigningKey::from_seed([1; 32]);
    let other = SigningKey::from_seed([2; 32]);
    let r = report(&m);
    let signed = r.sign(&m);
    assert_eq!(BackupReport::verify(&signed, &m.public()).unwrap(), r);
    assert!(r.ok());
    assert_eq!(r.duration(), 60);
    // Another machine's key does not verify it; a report signed by another key naming
    // this machine is refused too.
    assert!(BackupReport::verify(&signed, &other.public()).is_err());
    let forged = r.sign(&other);
    assert!(BackupReport::verify(&forged, &m.public()).is_err());
    assert!(BackupReport::verify(&forged, &other.public()).is_err());
    // The same body signed as another kind does not verify as a report.
    let as_publish = m.sign(Kind::Publish, crate::split(&signed).unwrap().0);
    assert!(BackupReport::verify(&as_publish, &m.public()).is_err());
    let failed = BackupReport::new_failure([4; 16], m.public(), 10, 10, 0, 0, "disk full");
    let back = BackupReport::verify(&failed.sign(&m), &m.public()).unwrap();
    assert_eq!(back.outcome, Err("disk full".to_owned()));
    assert!(!back.ok());
}

#[test]
fn malformed_backup_reports_are_refused() {
    let m = SigningKey::from_seed([1; 32]);
    let key = m.public();
    use swarmbak_bencode::OwnedValue as V;
    let body = |extra: &[(&str, V)]| {
        let mut d = swarmbak_bencode::DictBuilder::default()
            .with("bytes", V::Int(1))
            .with("end", V::Int(20))
            .with("files", V::Int(1))
            .with("id", V::Bytes(vec![3; 16]))
            .with("key", V::Bytes(key.as_bytes().to_vec()))
            .with("start", V::Int(10));
        for (k, v) in extra {
            d.insert(k, v.clone());
        }
        m.sign(Kind::Report, &d.build().to_bytes())
    };
    let ih = V::Bytes(vec![9; 20]);
    let err = V::Bytes(b"boom".to_vec());
    assert!(BackupReport::verify(&body(&[("infohash", ih.clone())]), &key).is_ok());
    assert!(BackupReport::verify(&body(&[("error", err.clone())]), &key).is_ok());
    for (why, extra) in [
        ("neither", vec![]),
        (
            "both",
            vec![("infohash", ih.clone()), ("error", err.clone())],
        ),
        ("empty error", vec![("error", V::Bytes(Vec::new()))]),
        (
            "long error",
            vec![("error", V::Bytes(vec![b'x'; MAX_REPORT_ERROR + 1]))],
        ),
        ("short infohash", vec![("infohash", V::Bytes(vec![9; 19]))]),
        (
            "ends before it starts",
            vec![("infohash", ih.clone()), ("end", V::Int(5))],
        ),
        (
            "negative bytes",
            vec![("infohash", ih.clone()), ("bytes", V::Int(-1))],
        ),
    ] {
        assert!(
            BackupReport::verify(&body(&extra), &key).is_err(),
            "{why} was accepted"
        );
    }
}

#[test]
fn a_failure_report_cuts_its_error_at_a_character_boundary() {
    let m = SigningKey::from_seed([1; 32]);
    let long = "é".repeat(MAX_REPORT_ERROR); // 2 bytes each
    let r = BackupReport::new_failure([5; 16], m.public(), 1, 2, 0, 0, &long);
    let Err(text) = &r.outcome else { panic!() };
    assert_eq!(text.len(), MAX_REPORT_ERROR);
    assert!(BackupReport::verify(&r.sign(&m), &m.public()).is_ok());
    let r = BackupReport::new_failure([5; 16], m.public(), 1, 2, 0, 0, "  ");
    assert_eq!(r.outcome, Err("unknown error".to_owned()));
}
