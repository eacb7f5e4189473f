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
mod dirfd;
pub mod erasure;
pub mod home;
pub mod manifest;
pub mod restore;
pub mod store;
#[cfg(feature = "test-utils")]
pub mod testing;

use std::path::{Path, PathBuf};

pub use backup::{backup, BackupOptions, BackupReport, Progress, DEFAULT_K, DEFAULT_M};
pub use crypto::{CryptoError, Identities, Identity, Recipient};
pub use erasure::{ErasureError, Layout};
pub use home::{write_private, Home};
pub use manifest::Manifest;
pub use restore::{restore, RestoreOptions, RestoreReport};
pub use store::{SnapshotInfo, Store};

/// The format version this crate writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

pub use swarmbak_core::InfoHash;

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

impl From<swarmbak_core::IdError> for FormatError {
    fn from(e: swarmbak_core::IdError) -> Self {
        FormatError::Invalid(e.to_string())
    }
}

impl From<swarmbak_core::LayoutError> for FormatError {
    fn from(e: swarmbak_core::LayoutError) -> Self {
        FormatError::Erasure(ErasureError::Layout(e))
    }
}

impl FormatError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        FormatError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
