//! swarmbak's backup format, version 1 (normative description: `protocol-spec/format-v1.md`).
//!
//! A directory becomes a snapshot: content-defined chunks named by keyed BLAKE3, bundled
//! into packs that are zstd-compressed and encrypted with age; the packs and the encrypted
//! manifest form the payload, which is cut into Reed-Solomon stripes whose shards are the
//! pieces of a private BitTorrent v1 torrent. This crate does no network I/O: it reads and
//! writes the paths and stores it is handed.

pub mod backup;
pub mod chunker;
pub mod crypto;
pub mod erasure;
pub mod home;
pub mod manifest;
pub mod restore;
pub mod store;
#[cfg(feature = "test-utils")]
pub mod testing;

use std::path::{Path, PathBuf};

pub use backup::{backup, BackupOptions, BackupReport, Progress};
pub use crypto::{CryptoError, Identities, Identity, Recipient};
pub use erasure::{ErasureError, Layout};
pub use home::{Config, Home, InitOptions};
pub use manifest::Manifest;
pub use restore::{restore, RestoreOptions, RestoreReport};
pub use store::{SnapshotInfo, Store};

/// The format version this crate writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// A v1 info-hash: SHA-1 of the torrent's bencoded info dictionary.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InfoHash(pub [u8; 20]);

impl InfoHash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Result<InfoHash, FormatError> {
        let mut b = [0u8; 20];
        if s.len() != 40 {
            return Err(FormatError::Invalid(format!(
                "{s:?} is not an infohash (40 hex digits)"
            )));
        }
        hex::decode_to_slice(s, &mut b).map_err(|_| {
            FormatError::Invalid(format!("{s:?} is not an infohash (40 hex digits)"))
        })?;
        Ok(InfoHash(b))
    }
}

impl std::fmt::Display for InfoHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InfoHash({})", self.to_hex())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a swarmbak home yet: run `swarmbak init` first (or pass --home)")]
    NotInitialised(PathBuf),
    #[error("another swarmbak process (an agent or a backup) is writing the store in {0}; wait for it to finish or stop it")]
    Locked(PathBuf),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("hostile or damaged manifest: {0}")]
    Manifest(String),
    #[error("{0}")]
    Metainfo(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Erasure(#[from] ErasureError),
    #[error("restore refused: {0}")]
    Unsafe(String),
    #[error("{0}")]
    Damaged(String),
}

impl FormatError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        FormatError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
