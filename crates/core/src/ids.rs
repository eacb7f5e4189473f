//! Identities: the info-hash of a snapshot, the peer id of a process, the key of a machine.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Longest machine key accepted anywhere (bytes): in `sb_key`, in an announce's
/// `machine`, in a publish record.
pub const MAX_MACHINE_KEY_LEN: usize = 256;

/// Why an identity could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Not 40 hex digits.
    #[error("{0:?} is not an infohash (40 hex digits)")]
    InfoHash(String),
    /// Empty, too long, or not hex.
    #[error("not a machine key: {0}")]
    MachineKey(String),
}

fn hex20(s: &str) -> Option<[u8; 20]> {
    let mut b = [0u8; 20];
    (s.len() == 40 && hex::decode_to_slice(s, &mut b).is_ok()).then_some(b)
}

/// A v1 info-hash: SHA-1 of a torrent's bencoded info dictionary, as it appears in the
/// metainfo (format-v1.md §10). Text form: 40 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct InfoHash(pub [u8; 20]);

impl InfoHash {
    /// 40 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Parses 40 hex digits (either case).
    pub fn from_hex(s: &str) -> Result<InfoHash, IdError> {
        hex20(s)
            .map(InfoHash)
            .ok_or_else(|| IdError::InfoHash(s.to_string()))
    }
    /// The 20 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }
}

impl From<[u8; 20]> for InfoHash {
    fn from(b: [u8; 20]) -> Self {
        InfoHash(b)
    }
}

impl AsRef<[u8]> for InfoHash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl FromStr for InfoHash {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        InfoHash::from_hex(s)
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({})", self.to_hex())
    }
}

/// A BitTorrent peer id (20 bytes, BEP 3): names one running process, not a machine.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PeerId(pub [u8; 20]);

impl PeerId {
    /// swarmbak's client prefix (Azureus style, BEP 20): `-SW0100-`.
    pub const PREFIX: &'static [u8; 8] = b"-SW0100-";

    /// swarmbak's prefix followed by 12 given (random) bytes.
    pub fn swarmbak(random: [u8; 12]) -> PeerId {
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(Self::PREFIX);
        id[8..].copy_from_slice(&random);
        PeerId(id)
    }
    /// The 20 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }
    /// 40 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<[u8; 20]> for PeerId {
    fn from(b: [u8; 20]) -> Self {
        PeerId(b)
    }
}

impl AsRef<[u8]> for PeerId {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Printable client prefixes stay readable: "-SW0100-" + hex of the rest.
        let (head, tail) = self.0.split_at(8);
        if head.iter().all(|b| b.is_ascii_graphic()) {
            write!(
                f,
                "PeerId({}{})",
                String::from_utf8_lossy(head),
                hex::encode(tail)
            )
        } else {
            write!(f, "PeerId({})", self.to_hex())
        }
    }
}

/// A machine's public key: what machines are counted by (one machine, one key, however
/// many processes and addresses it has; swarm.md §1). Canonical encoding: its bytes (as
/// sent in `sb_key`), 1 to [`MAX_MACHINE_KEY_LEN`] of them; text form for logs and URLs:
/// lowercase hex of those bytes.
///
/// In format v1 the bytes are the machine's age recipient string (`age1...`), so
/// [`MachineKey::from_age_recipient`] builds one. The type is opaque on purpose: when a
/// signing key becomes the machine's identity, only the constructors change.
///
/// "Not a machine" (a `fetch` or `health` process, which is never a holder) is
/// `Option<MachineKey>::None`, never an empty key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MachineKey(Arc<[u8]>);

impl MachineKey {
    /// A key from its bytes (as received in `sb_key`).
    pub fn from_bytes(b: &[u8]) -> Result<MachineKey, IdError> {
        if b.is_empty() || b.len() > MAX_MACHINE_KEY_LEN {
            return Err(IdError::MachineKey(format!(
                "{} bytes (1 to {MAX_MACHINE_KEY_LEN})",
                b.len()
            )));
        }
        Ok(MachineKey(Arc::from(b)))
    }
    /// The key of a machine identified by its age recipient (`age1...`), format v1.
    pub fn from_age_recipient(r: &str) -> Result<MachineKey, IdError> {
        MachineKey::from_bytes(r.trim().as_bytes())
    }
    /// Parses the hex text form (as an announce's `machine` carries it).
    pub fn from_hex(s: &str) -> Result<MachineKey, IdError> {
        let b = hex::decode(s).map_err(|_| IdError::MachineKey(format!("{s:?} is not hex")))?;
        MachineKey::from_bytes(&b)
    }
    /// The canonical bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// Lowercase hex of the bytes.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
    /// The key as text when its bytes are printable (an age recipient), else hex.
    pub fn to_text(&self) -> String {
        match std::str::from_utf8(&self.0) {
            Ok(s) if s.bytes().all(|b| b.is_ascii_graphic()) => s.to_string(),
            _ => self.to_hex(),
        }
    }
}

impl fmt::Display for MachineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl fmt::Debug for MachineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MachineKey({})", self.to_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infohash_text_round_trips_and_rejects_non_hex() {
        let ih = InfoHash([0xab; 20]);
        assert_eq!(ih.to_hex(), "ab".repeat(20));
        assert_eq!(InfoHash::from_hex(&ih.to_hex()), Ok(ih));
        assert_eq!("AB".repeat(20).parse::<InfoHash>(), Ok(ih));
        for bad in ["", "ab", &"zz".repeat(20), &"ab".repeat(21)] {
            assert!(InfoHash::from_hex(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn machine_keys_are_never_empty_or_too_long() {
        assert!(MachineKey::from_bytes(b"").is_err());
        assert!(MachineKey::from_bytes(&[b'a'; MAX_MACHINE_KEY_LEN]).is_ok());
        assert!(MachineKey::from_bytes(&[b'a'; MAX_MACHINE_KEY_LEN + 1]).is_err());
        let k = MachineKey::from_age_recipient(" age1xyz ").unwrap();
        assert_eq!(k.as_bytes(), b"age1xyz");
        assert_eq!(k.to_string(), "age1xyz");
        assert_eq!(MachineKey::from_hex(&k.to_hex()), Ok(k));
        assert!(MachineKey::from_hex("not hex").is_err());
        assert_eq!(MachineKey::from_bytes(&[0, 1]).unwrap().to_string(), "0001");
    }

    #[test]
    fn peer_ids_carry_the_client_prefix() {
        let p = PeerId::swarmbak([7; 12]);
        assert_eq!(&p.0[..8], b"-SW0100-");
        assert_eq!(
            format!("{p:?}"),
            format!("PeerId(-SW0100-{})", "07".repeat(12))
        );
    }
}
