//! Encryption of packs and manifests: standard age v1 files (X25519 recipients).
//!
//! Every encrypted object is a complete age file, decryptable by the reference `age`
//! command with any one of the recipients' identities. Packs are encrypted in parallel by
//! the backup pipeline (one age file per pack), which is how encryption keeps up with
//! chunking and compression on a multi-core machine.

use std::io::{Read, Write};
use std::str::FromStr;

use age::secrecy::ExposeSecret;

/// An age X25519 public key (`age1...`).
#[derive(Clone, Debug)]
pub struct Recipient(age::x25519::Recipient);

impl Recipient {
    pub fn parse(s: &str) -> Result<Self, CryptoError> {
        age::x25519::Recipient::from_str(s.trim())
            .map(Recipient)
            .map_err(|e| CryptoError::BadRecipient(format!("{s:?}: {e}")))
    }
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An age X25519 identity (secret key).
pub struct Identity(age::x25519::Identity);

impl Identity {
    pub fn generate() -> Self {
        Identity(age::x25519::Identity::generate())
    }

    pub fn to_public(&self) -> Recipient {
        Recipient(self.0.to_public())
    }

    /// The secret key as `AGE-SECRET-KEY-1...`.
    pub fn secret_string(&self) -> String {
        self.0.to_string().expose_secret().to_string()
    }

    /// The contents of an identity file as `age-keygen` writes it.
    pub fn to_identity_file(&self) -> String {
        format!(
            "# created by swarmbak\n# public key: {}\n{}\n",
            self.to_public(),
            self.secret_string()
        )
    }
}

/// Identities read from an age identity file (lines of `AGE-SECRET-KEY-1...`, comments).
pub struct Identities(Vec<age::x25519::Identity>);

impl Identities {
    pub fn parse_file(text: &str) -> Result<Self, CryptoError> {
        let mut ids = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let id = age::x25519::Identity::from_str(line).map_err(|_| {
                CryptoError::BadIdentity(format!(
                    "line {} is not an age X25519 identity (AGE-SECRET-KEY-1...)",
                    n + 1
                ))
            })?;
            ids.push(id);
        }
        if ids.is_empty() {
            return Err(CryptoError::BadIdentity(
                "the file holds no age identity".to_string(),
            ));
        }
        Ok(Identities(ids))
    }

    pub fn from_identity(id: Identity) -> Self {
        Identities(vec![id.0])
    }

    pub fn recipients(&self) -> Vec<Recipient> {
        self.0.iter().map(|i| Recipient(i.to_public())).collect()
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("not a valid age recipient: {0}")]
    BadRecipient(String),
    #[error("bad identity: {0}")]
    BadIdentity(String),
    #[error("no recipients to encrypt to")]
    NoRecipients,
    #[error("age encryption failed: {0}")]
    Encrypt(String),
    #[error("none of the given identities can decrypt this object (is it the right key?)")]
    NoMatchingKey,
    #[error("age decryption failed: {0}")]
    Decrypt(String),
}

/// Bytes age adds to `len` plaintext bytes, excluding the header.
pub fn payload_overhead(len: usize) -> usize {
    // 16-byte nonce, then 64 KiB chunks each with a 16-byte tag (an empty file has one).
    16 + 16 * len.div_ceil(64 << 10).max(1)
}

/// Encrypts `plaintext` as one age file to every recipient.
pub fn encrypt(recipients: &[Recipient], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if recipients.is_empty() {
        return Err(CryptoError::NoRecipients);
    }
    let enc =
        age::Encryptor::with_recipients(recipients.iter().map(|r| &r.0 as &dyn age::Recipient))
            .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    let mut out = Vec::with_capacity(
        plaintext.len() + payload_overhead(plaintext.len()) + 256 * recipients.len(),
    );
    let mut w = enc
        .wrap_output(&mut out)
        .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    w.write_all(plaintext)
        .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    w.finish()
        .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    Ok(out)
}

/// Decrypts one age file with any of `identities`.
pub fn decrypt(identities: &Identities, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let dec = age::Decryptor::new_buffered(ciphertext)
        .map_err(|e| CryptoError::Decrypt(e.to_string()))?;
    let mut r = dec
        .decrypt(identities.0.iter().map(|i| i as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => CryptoError::NoMatchingKey,
            e => CryptoError::Decrypt(e.to_string()),
        })?;
    let mut out = Vec::with_capacity(ciphertext.len());
    r.read_to_end(&mut out)
        .map_err(|e| CryptoError::Decrypt(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_to_several_recipients() {
        let a = Identity::generate();
        let b = Identity::generate();
        let c = Identity::generate();
        let msg = vec![7u8; 200_000];
        let ct = encrypt(&[a.to_public(), b.to_public()], &msg).unwrap();
        let ib = Identities::parse_file(&b.to_identity_file()).unwrap();
        assert_eq!(decrypt(&ib, &ct).unwrap(), msg);
        let ic = Identities::from_identity(c);
        assert!(matches!(decrypt(&ic, &ct), Err(CryptoError::NoMatchingKey)));
        let mut bad = ct.clone();
        let n = bad.len() - 5;
        bad[n] ^= 1;
        assert!(decrypt(&ib, &bad).is_err());
    }

    #[test]
    fn bad_identity_file_is_refused() {
        assert!(Identities::parse_file("# nothing\n").is_err());
        assert!(Identities::parse_file("AGE-SECRET-KEY-1XYZ\n").is_err());
    }
}
