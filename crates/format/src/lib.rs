//! swarmbak's backup format, version 2 (normative description: `protocol-spec/format-v1.md`
//! and `protocol-spec/format-v2.md`, "format 1 plus per-shard Merkle roots"); it reads
//! snapshots of format 1 and 2.
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
pub mod exclude;
pub mod home;
pub mod manifest;
pub mod restore;
pub mod store;
#[cfg(feature = "test-utils")]
pub mod testing;
mod walk;

use std::path::{Path, PathBuf};

pub use backup::{
    backup, BackupOptions, BackupReport, ChangedSince, Progress, DEFAULT_K, DEFAULT_M,
};
pub use crypto::{CryptoError, Identities, Identity, Recipient};
pub use erasure::{ErasureError, Layout};
pub use exclude::Excludes;
pub use home::{append_line, write_private, Home};
pub use manifest::Manifest;
pub use restore::{restore, RestoreOptions, RestoreReport};
pub use store::{SnapshotInfo, Store};

/// The snapshot format version (`swarmbak.format` in the torrent) this crate writes, and
/// the newest it reads: it reads every version from 1 up to this one (format-v2.md).
pub const FORMAT_VERSION: u32 = 2;

/// The manifest's own format version (`format` in the manifest), the only one this crate
/// reads and writes; format 2 snapshots carry format 1 manifests.
pub const MANIFEST_FORMAT: u32 = 1;

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
    /// A shard of a format 2 snapshot matches its SHA-1 but not its Merkle root: the owner
    /// wrote a bad torrent (format-v2.md §4). The snapshot is dropped, not repaired.
    #[error("snapshot {snapshot} is inconsistent: shard {piece} matches its SHA-1 but not its Merkle root; the snapshot was made wrongly; re-run the backup")]
    Inconsistent { snapshot: InfoHash, piece: u32 },
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
