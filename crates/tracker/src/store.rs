//! The records the JSON endpoints answer (tracker.md §3), the checks of machine keys and
//! names, and where a v1 tracker kept its torrents (`DATA/torrents/<hex>.torrent`, read
//! once by the v1 import in [`crate::sqlite`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::proto::{InfoHash, MAX_MACHINE_LEN};

/// Longest machine name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// One published snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Info-hash, 40 lower-case hex digits.
    pub infohash: String,
    /// The owner machine's key (as given at publish).
    pub machine_key: String,
    /// The owner machine's name (as given at publish).
    pub machine_name: String,
    /// When it was published, Unix seconds.
    pub published: i64,
    /// The torrent's total length in bytes (all shards).
    pub total_length: u64,
    /// The encrypted payload inside the data shards, in bytes.
    pub payload_length: u64,
    /// The torrent's `name`.
    #[serde(default)]
    pub name: String,
    /// The snapshot's target copies (from its signed record; 0: unknown).
    #[serde(default)]
    pub copies: u32,
    /// The owner's signed publish record, base64url (trust.md §4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// The owner's certificate, base64url (trust.md §3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The owner's signed retirement of this snapshot, base64url (trust.md §12), while it
    /// stands (tracker.md §7.8); see [`SnapshotRecord::retirement_record`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retirement: Option<String>,
    /// When the tracker took that retirement, Unix seconds (its clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<i64>,
    /// When the administrator cancelled the snapshot's retirement, Unix seconds (then
    /// `retirement` is not listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retirement_cancelled: Option<i64>,
}

impl SnapshotRecord {
    /// The signed retirement listed with the snapshot, decoded (`None` when none is
    /// listed or it is not base64url); unverified: check it with the owner's key
    /// (`swarmbak_trust::Retirement::verify`).
    pub fn retirement_record(&self) -> Option<Vec<u8>> {
        swarmbak_trust::from_b64(self.retirement.as_deref()?).ok()
    }
}

/// A machine seen publishing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRecord {
    /// The machine's key.
    pub machine_key: String,
    /// Its name at its latest publish.
    pub machine_name: String,
    /// How many snapshots it published.
    pub snapshots: u64,
    /// Its latest publish, Unix seconds.
    pub last_published: i64,
    /// Sum of its snapshots' payload lengths.
    pub payload_bytes: u64,
    /// A peer announcing with this machine's key (`machine` = hex of the key) is in a
    /// swarm now.
    #[serde(default)]
    pub online: bool,
}

/// Checks a machine key: 1 to 256 printable ASCII characters, no spaces.
pub fn check_machine_key(k: &str) -> Result<(), String> {
    if k.is_empty() || k.len() > MAX_MACHINE_LEN {
        return Err(format!(
            "machine key must be 1 to {MAX_MACHINE_LEN} characters"
        ));
    }
    if !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("machine key must be printable ASCII without spaces".into());
    }
    Ok(())
}

/// Checks a machine name: 1 to 128 bytes of UTF-8 without control characters.
pub fn check_machine_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > MAX_NAME_LEN {
        return Err(format!("machine name must be 1 to {MAX_NAME_LEN} bytes"));
    }
    if n.chars().any(char::is_control) {
        return Err("machine name must not contain control characters".into());
    }
    Ok(())
}

/// `DATA/torrents/<hex>.torrent`.
pub fn torrent_path(dir: &Path, ih: &InfoHash) -> PathBuf {
    dir.join("torrents")
        .join(format!("{}.torrent", hex::encode(ih)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        assert!(check_machine_key("age1qqq").is_ok());
        assert!(check_machine_key("").is_err());
        assert!(check_machine_key("a b").is_err());
        assert!(check_machine_key(&"k".repeat(257)).is_err());
        assert!(check_machine_name("Ana's laptop (ß)").is_ok());
        assert!(check_machine_name("a\nb").is_err());
        assert!(check_machine_name("").is_err());
    }
}
