//! `swarmbak init --enroll TOKEN` (tracker.md §7.2, trust.md §6–§7): the machine proves
//! its signing key to the tracker the token names, gets a certificate signed by the
//! organisation key the token carries (so another server cannot pose as the tracker),
//! its passkey and the organisation's recovery recipients; and the publish records and
//! snapshot lists of enrolled machines are checked against that key.

use std::path::Path;

use swarmbak_core::InfoHash;
use swarmbak_trust::{Certificate, EnrollToken, PublicKey, PublishRecord};

use crate::config::{signing_key, Enrolment, InitOptions, Node, NodeConfig};
use crate::error::ConfigError;

/// Enrols the machine at `root` with `token` after `NodeConfig::init` made its keys, and
/// saves what the tracker gave. Returns the updated configuration.
pub async fn enroll(
    root: &Path,
    token: &str,
    opts: &InitOptions,
) -> Result<NodeConfig, ConfigError> {
    let tok = EnrollToken::parse(token).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    if let Some(t) = &opts.tracker {
        if t.trim_end_matches('/') != tok.url {
            return Err(ConfigError::Invalid(format!(
                "--tracker {t} differs from the tracker the enrolment token names ({}): leave --tracker out",
                tok.url
            )));
        }
    }
    // An https tracker is trusted only by the pin the token carries (tracker.md §7.5):
    // the TLS handshake checks it before the request (and its token secret) is sent.
    let pin = match (tok.url.starts_with("https://"), tok.tls) {
        (true, Some(pin)) => Some(pin),
        (true, None) => {
            return Err(ConfigError::Invalid(
                "this token names an https:// tracker but carries no TLS certificate pin, so the tracker cannot be told from an impostor: ask the administrator for a new token (swarmbak tracker enroll)".into(),
            ))
        }
        (false, _) => None,
    };
    let mut config = NodeConfig::load(root)?;
    let key = signing_key(root)?;
    let request = tok.request(&key, config.public_key.clone());
    let mut client = swarmbak_tracker::TrackerClient::new(&tok.url)
        .map_err(|e| ConfigError::Invalid(format!("the token's tracker {}: {e}", tok.url)))?;
    if let Some(pin) = pin {
        client = client.with_tls_pin(pin);
    }
    let client = client.with_retry(swarmbak_tracker::Retry::for_duration(
        std::time::Duration::from_secs(30),
    ));
    let answer = client
        .enroll(&request)
        .await
        .map_err(|e| ConfigError::Invalid(format!("enrolment with {} failed: {e}", tok.url)))?;
    // Trust nothing the server says until the token's organisation key vouches for it.
    let cert_bytes = swarmbak_trust::from_b64(&answer.certificate)
        .map_err(|e| ConfigError::Invalid(format!("the tracker's certificate: {e}")))?;
    let cert = Certificate::verify(&cert_bytes, &tok.org).map_err(|e| {
        ConfigError::Invalid(format!(
            "the tracker at {} did not prove the organisation key of the token ({e}): it is not your organisation's tracker",
            tok.url
        ))
    })?;
    if cert.fields.machine != key.public() || cert.fields.age_recipient != config.public_key {
        return Err(ConfigError::Invalid(
            "the tracker's certificate is for another machine: refusing it".into(),
        ));
    }
    if let Some(n) = opts.name.as_ref().filter(|n| **n != cert.fields.name) {
        // The enrolled name is the machine's name (names are unique among the
        // organisation's active machines): a different --name is ignored, and said so.
        eprintln!(
            "swarmbak: --name {n:?} ignored: the administrator enrolled this machine as {:?}",
            cert.fields.name
        );
    }
    let org_hex = tok.org.to_hex();
    config.name = cert.fields.name.clone();
    config.tracker = Some(tok.url.clone());
    for r in &answer.recovery_recipients {
        swarmbak_format::Recipient::parse(r)?;
        if !config.recovery_recipients.iter().any(|x| x == r) {
            config.recovery_recipients.push(r.clone());
        }
    }
    config.enrolment = Some(Enrolment {
        passkey: answer.passkey,
        org_key: org_hex,
        org_secret: answer.org_secret,
        certificate: answer.certificate,
        tls_sha256: pin.map(hex::encode),
    });
    config.save(root)?;
    Ok(config)
}

/// A signed publish record and the certificate that goes with it.
pub type SignedPublish = (Vec<u8>, Vec<u8>);

/// The signed record of a snapshot this machine publishes, with its certificate, when it
/// is enrolled.
pub fn sign_publish(node: &Node, ih: &InfoHash) -> Result<Option<SignedPublish>, ConfigError> {
    let Some(e) = &node.config.enrolment else {
        return Ok(None);
    };
    let key = signing_key(&node.root)?;
    let now = node
        .clock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let record = PublishRecord {
        infohash: ih.0,
        machine: key.public(),
        copies: node.config.copies.clamp(1, 64),
        published: now,
    }
    .sign(&key);
    Ok(Some((record, e.certificate()?)))
}

/// A listed snapshot whose chain (trust.md §4) verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The owner's certificate.
    pub certificate: Certificate,
    /// The owner's record.
    pub record: PublishRecord,
}

/// Checks a listed snapshot against the organisation key: the record and certificate the
/// tracker lists with it must verify (trust.md §4).
pub fn verify_listed(
    org: &PublicKey,
    rec: &swarmbak_tracker::SnapshotRecord,
) -> Result<Verified, String> {
    let ih = InfoHash::from_hex(&rec.infohash).map_err(|e| e.to_string())?;
    let (Some(r), Some(c)) = (&rec.record, &rec.certificate) else {
        return Err("no signed publish record".into());
    };
    let r = swarmbak_trust::from_b64(r).map_err(|e| e.to_string())?;
    let c = swarmbak_trust::from_b64(c).map_err(|e| e.to_string())?;
    let (certificate, record) =
        swarmbak_trust::verify_publish(&r, &c, org, &ih.0).map_err(|e| e.to_string())?;
    Ok(Verified {
        certificate,
        record,
    })
}
