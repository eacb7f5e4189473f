//! swarmbak's signatures (protocol-spec/trust.md).
//!
//! - The **organisation key** (ed25519) lives with the tracker (`DATA/org.key`); it signs
//!   machine [`Certificate`]s and [`Revocation`]s.
//! - Each machine's **signing key** (ed25519, `HOME/signing.key`) is the machine's
//!   identity: it signs [`PublishRecord`]s, enrolment requests ([`EnrollRequest`]),
//!   [`BackupReport`]s, peer connections (§10), [`HeldStatement`]s and
//!   [`Attestation`]s (§11).
//! - An [`EnrollToken`] is what `swarmbak tracker enroll` prints: the tracker's address,
//!   the organisation key and a one-time secret.
//!
//! Every signed object is the same envelope, a bencoded dictionary
//! `d4:body<bytes>3:sig64:<signature>e`, where the signature is over a kind-specific
//! prefix followed by `body` (so a signature made for one kind never verifies as another),
//! and `body` is itself a bencoded dictionary. Verification checks the signature over the
//! exact body bytes before parsing them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use ed25519_dalek::Signer;
use sha2::Digest;
use swarmbak_bencode::{decode, Dict, Encoder, Value};

mod peer;
mod possession;
mod records;
pub use peer::{
    check_member_mac, check_tag, member_mac, peer_signing_input, session_key, tag, SessionKey,
    Side, Transcript, MEMBER_PREFIX, PEER_PREFIX, PEER_SIGNING_INPUT_LEN, SESSION_PREFIX,
    TRANSCRIPT_LEN,
};
pub use possession::{
    bitfield_bytes, possession_digest, Attestation, DigestState, HeldStatement, DIGEST_PREFIX,
    MAX_HELD_PIECES,
};
pub use records::stripe_ranges;
pub use records::{
    verify_publish, BackupReport, Certificate, CertificateFields, EnrollRequest, EnrollToken,
    PublishRecord, Retirement, Revocation, MAX_REPORT_ERROR, MAX_RETIRE_RANGES, TOKEN_PREFIX,
};

/// Why a key, a token or a signed object was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrustError {
    /// Not the expected format (its message says what is wrong).
    #[error("{0}")]
    Malformed(String),
    /// The signature does not verify with the key it must come from.
    #[error("bad signature on the {0}")]
    BadSignature(&'static str),
    /// A certificate used outside its validity.
    #[error("the certificate of {name} expired at {expires} (Unix seconds)")]
    Expired {
        /// The certificate's name.
        name: String,
        /// Its expiry.
        expires: i64,
    },
    /// A record that does not belong to what it is presented with.
    #[error("{0}")]
    Mismatch(String),
}

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a swarmbak signing key.
    #[error("{path}: not a swarmbak signing key ({why})")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
}

/// The first line of a signing key file.
pub const KEY_FILE_HEADER: &str = "# swarmbak ed25519 signing key: secret, keep it mode 0600";

/// What a signature is for: each kind signs over its own prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A machine certificate (signed by the organisation key).
    Certificate,
    /// A publish record (signed by the machine).
    Publish,
    /// A revocation (signed by the organisation key).
    Revocation,
    /// An enrolment request (signed by the machine being enrolled).
    Enroll,
    /// A backup report (signed by the machine).
    Report,
    /// A held statement (signed by the holder machine, §11).
    Held,
    /// A possession attestation (signed by the checking machine, §11).
    Attestation,
    /// A retirement: a machine forgets one of its snapshots (signed by the machine, §12).
    Retire,
}

impl Kind {
    /// The bytes signed before the body.
    pub fn prefix(self) -> &'static [u8] {
        match self {
            Kind::Certificate => b"swarmbak-certificate-v1\0",
            Kind::Publish => b"swarmbak-publish-v1\0",
            Kind::Revocation => b"swarmbak-revocation-v1\0",
            Kind::Enroll => b"swarmbak-enroll-v1\0",
            Kind::Report => b"swarmbak-report-v1\0",
            Kind::Held => b"swarmbak-held-v1\0",
            Kind::Attestation => b"swarmbak-attest-v1\0",
            Kind::Retire => b"swarmbak-retire-v1\0",
        }
    }

    /// A human name, for errors.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Certificate => "certificate",
            Kind::Publish => "publish record",
            Kind::Revocation => "revocation",
            Kind::Enroll => "enrolment request",
            Kind::Report => "backup report",
            Kind::Held => "held statement",
            Kind::Attestation => "possession attestation",
            Kind::Retire => "retirement",
        }
    }
}

/// An ed25519 public key: a machine's identity, or the organisation's.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// From 32 bytes (checked to be a valid curve point).
    pub fn from_bytes(b: &[u8]) -> Result<PublicKey, TrustError> {
        let a: [u8; 32] = b.try_into().map_err(|_| {
            TrustError::Malformed(format!("a public key is 32 bytes, not {}", b.len()))
        })?;
        ed25519_dalek::VerifyingKey::from_bytes(&a)
            .map_err(|_| TrustError::Malformed("not an ed25519 public key".into()))?;
        Ok(PublicKey(a))
    }

    /// From 64 hex digits.
    pub fn from_hex(s: &str) -> Result<PublicKey, TrustError> {
        let b = hex::decode(s.trim())
            .map_err(|_| TrustError::Malformed("a public key is 64 hex digits".into()))?;
        PublicKey::from_bytes(&b)
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `SHA256:` and the first 16 bytes of the key's SHA-256 in hex: what people compare.
    pub fn fingerprint(&self) -> String {
        format!("SHA256:{}", hex::encode(&sha256(&self.0)[..16]))
    }

    fn verify(&self, kind: Kind, body: &[u8], sig: &[u8; 64]) -> Result<(), TrustError> {
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&self.0)
            .map_err(|_| TrustError::BadSignature(kind.name()))?;
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        let mut msg = Vec::with_capacity(kind.prefix().len() + body.len());
        msg.extend_from_slice(kind.prefix());
        msg.extend_from_slice(body);
        // verify_strict: no malleable or small-order keys and signatures.
        vk.verify_strict(&msg, &sig)
            .map_err(|_| TrustError::BadSignature(kind.name()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An ed25519 signing key (the organisation's or a machine's). Its `Debug` never shows it.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public {})", self.public())
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> SigningKey {
        SigningKey::from_seed(rand::random())
    }

    /// The key of a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `body` as `kind`: the envelope `d4:body…3:sig64:…e`.
    pub fn sign(&self, kind: Kind, body: &[u8]) -> Vec<u8> {
        let mut msg = Vec::with_capacity(kind.prefix().len() + body.len());
        msg.extend_from_slice(kind.prefix());
        msg.extend_from_slice(body);
        let sig = self.0.sign(&msg).to_bytes();
        let mut e = Encoder::with_capacity(body.len() + 90);
        e.begin_dict()
            .key(b"body")
            .bytes(body)
            .key(b"sig")
            .bytes(&sig)
            .end();
        e.finish().unwrap_or_default()
    }

    /// The file's text: a comment line, then the seed in hex.
    pub fn to_file_text(&self) -> String {
        format!("{KEY_FILE_HEADER}\n{}\n", hex::encode(self.0.to_bytes()))
    }

    /// Parses [`SigningKey::to_file_text`].
    pub fn from_file_text(text: &str) -> Result<SigningKey, String> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or("empty")?;
        let seed: [u8; 32] = hex::decode(line)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("expected 64 hex digits")?;
        Ok(SigningKey::from_seed(seed))
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<SigningKey, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        SigningKey::from_file_text(&text).map_err(|why| KeyFileError::Malformed {
            path: path.display().to_string(),
            why: why.to_string(),
        })
    }

    /// Reads the key at `path`, or creates it (mode 0600, written to a temporary file,
    /// synced and linked into place so a crash never leaves half a key) if there is none.
    /// Returns the key and whether it was created now.
    pub fn load_or_create(path: &Path) -> Result<(SigningKey, bool), KeyFileError> {
        match SigningKey::load(path) {
            Ok(k) => return Ok((k, false)),
            Err(KeyFileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let key = SigningKey::generate();
        let created =
            create_once(path, key.to_file_text().as_bytes(), 0o600).map_err(|source| {
                KeyFileError::Io {
                    path: path.display().to_string(),
                    source,
                }
            })?;
        if created {
            Ok((key, true))
        } else {
            // Another process created it meanwhile: theirs counts.
            Ok((SigningKey::load(path)?, false))
        }
    }
}

/// Creates `path` with `data` and `mode` unless it exists, so that a crash never leaves
/// half a file and two processes racing agree on one: written to a temporary file,
/// synced, hard-linked into place (which fails if `path` exists), the directory synced.
/// Returns whether this call created it (`false`: it existed, and is left as it is).
pub fn create_once(path: &Path, data: &[u8], mode: u32) -> std::io::Result<bool> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// SHA-256.
pub fn sha256(b: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(b).into()
}

/// Splits an envelope into its body and signature without checking anything.
pub fn split(envelope: &[u8]) -> Result<(&[u8], [u8; 64]), TrustError> {
    let v = decode(envelope).map_err(|e| TrustError::Malformed(format!("not bencode: {e}")))?;
    let d = v
        .as_dict()
        .ok_or_else(|| TrustError::Malformed("a signed object is a dictionary".into()))?;
    let body = d
        .get(b"body")
        .and_then(Value::as_bytes)
        .ok_or_else(|| TrustError::Malformed("a signed object needs `body`".into()))?;
    let sig: [u8; 64] = d
        .get(b"sig")
        .and_then(Value::as_bytes)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| TrustError::Malformed("a signed object needs a 64-byte `sig`".into()))?;
    Ok((body, sig))
}

/// Checks `envelope`'s signature as `kind` by `key` and returns its body's bytes.
pub fn open<'a>(envelope: &'a [u8], kind: Kind, key: &PublicKey) -> Result<&'a [u8], TrustError> {
    let (body, sig) = split(envelope)?;
    key.verify(kind, body, &sig)?;
    Ok(body)
}

/// A body dictionary's fields, read with clear errors.
pub(crate) struct Fields<'a> {
    dict: Dict<'a>,
    what: &'static str,
}

impl<'a> Fields<'a> {
    pub(crate) fn parse(body: &'a [u8], what: &'static str) -> Result<Fields<'a>, TrustError> {
        let v = decode(body)
            .map_err(|e| TrustError::Malformed(format!("the {what} is not bencode: {e}")))?;
        match v {
            Value::Dict(dict) => Ok(Fields { dict, what }),
            _ => Err(TrustError::Malformed(format!(
                "the {what} is not a dictionary"
            ))),
        }
    }

    fn missing(&self, key: &str) -> TrustError {
        TrustError::Malformed(format!("the {} has no valid `{key}`", self.what))
    }

    pub(crate) fn bytes(&self, key: &str) -> Result<&'a [u8], TrustError> {
        self.opt_bytes(key)?.ok_or_else(|| self.missing(key))
    }

    pub(crate) fn opt_bytes(&self, key: &str) -> Result<Option<&'a [u8]>, TrustError> {
        match self.dict.get(key.as_bytes()) {
            None => Ok(None),
            Some(v) => v.as_bytes().map(Some).ok_or_else(|| self.missing(key)),
        }
    }

    pub(crate) fn text(&self, key: &str) -> Result<String, TrustError> {
        self.opt_text(key)?.ok_or_else(|| self.missing(key))
    }

    pub(crate) fn opt_text(&self, key: &str) -> Result<Option<String>, TrustError> {
        match self.opt_bytes(key)? {
            None => Ok(None),
            Some(b) => std::str::from_utf8(b)
                .map(|s| Some(s.to_owned()))
                .map_err(|_| self.missing(key)),
        }
    }

    pub(crate) fn int(&self, key: &str) -> Result<i64, TrustError> {
        self.opt_int(key)?.ok_or_else(|| self.missing(key))
    }

    pub(crate) fn opt_int(&self, key: &str) -> Result<Option<i64>, TrustError> {
        match self.dict.get(key.as_bytes()) {
            None => Ok(None),
            Some(v) => v.as_int().map(Some).ok_or_else(|| self.missing(key)),
        }
    }

    pub(crate) fn key(&self, key: &str) -> Result<PublicKey, TrustError> {
        PublicKey::from_bytes(self.bytes(key)?)
    }

    pub(crate) fn array<const N: usize>(&self, key: &str) -> Result<[u8; N], TrustError> {
        self.bytes(key)?.try_into().map_err(|_| self.missing(key))
    }
}

/// base64url without padding: how signed objects travel in JSON and headers.
pub fn to_b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Reverses [`to_b64`].
pub fn from_b64(s: &str) -> Result<Vec<u8>, TrustError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim())
        .map_err(|_| TrustError::Malformed("not base64url".into()))
}

#[cfg(test)]
mod tests;
