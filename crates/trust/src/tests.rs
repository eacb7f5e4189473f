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
