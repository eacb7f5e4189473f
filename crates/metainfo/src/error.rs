//! Why a torrent was rejected.

use swarmbak_bencode::DecodeError;

/// Why a `.torrent` could not be read or built. Messages name the key and what is wrong
/// with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetainfoError {
    /// The bytes are not bencode.
    #[error("not a torrent file: {0}")]
    Bencode(#[from] DecodeError),
    /// The top-level value is not a dictionary.
    #[error("not a torrent file: the top-level value is a {0}, not a dictionary")]
    NotADictionary(&'static str),
    /// No `info` dictionary.
    #[error("the torrent has no `info` dictionary")]
    MissingInfo,
    /// `meta version` is above 2, or positive with unsorted or repeated keys somewhere in
    /// the info dictionary (libtorrent 2.0.8 refuses both).
    #[error("`meta version` is {0}: libtorrent reads a `meta version` of 1 or 2 (hybrid) only, and only from an info dictionary whose keys are all sorted and unique")]
    UnsupportedMetaVersion(i64),
    /// A v2 `file tree` in a torrent whose `meta version` is not 2.
    #[error("the info dictionary has a v2 `file tree` but its `meta version` is not 2")]
    FileTreeWithoutMetaVersion,
    /// A v2 torrent without the v1 part this reader uses.
    #[error("this is a BitTorrent v2-only torrent (no `pieces`); only v1 and hybrid torrents are supported")]
    V2Only,
    /// `meta version` 2 without a `file tree` dictionary.
    #[error("`meta version` is 2 but there is no `file tree` dictionary")]
    MissingFileTree,
    /// `piece length` missing, not an integer, or out of range.
    #[error("`piece length` {0}; it must be an integer from 1 to {max}", max = crate::MAX_PIECE_LENGTH)]
    BadPieceLength(String),
    /// No usable `name`.
    #[error("`name` {0}")]
    BadName(String),
    /// Neither a `files` list nor a `length`.
    #[error("the `info` dictionary has neither a `files` list nor an integer `length`")]
    MissingLength,
    /// A negative file length.
    #[error("{0} has a negative length ({1})")]
    NegativeLength(String, i64),
    /// Total length 0.
    #[error("the torrent holds no data (total length 0)")]
    Empty,
    /// Total length over `i64::MAX`.
    #[error("the file lengths add up to more than 2^63 - 1 bytes")]
    TotalTooLarge,
    /// An empty `files` list.
    #[error("the `files` list is empty")]
    NoFiles,
    /// A malformed entry of `files`.
    #[error("`files` entry {index}: {what}")]
    BadFile {
        /// Index in `files`.
        index: usize,
        /// What is wrong.
        what: String,
    },
    /// No `pieces` string.
    #[error("`pieces` is missing or not a string")]
    MissingPieces,
    /// `pieces` is not whole SHA-1 hashes.
    #[error("`pieces` is {0} bytes, not a multiple of 20")]
    PiecesNotMultipleOf20(usize),
    /// The number of hashes does not fit the total length.
    #[error("`pieces` holds {hashes} hashes, but {total} bytes in pieces of {piece_length} bytes make {expected} pieces")]
    PieceCountMismatch {
        /// Hashes in `pieces`.
        hashes: u64,
        /// Pieces the length needs.
        expected: u64,
        /// Total length.
        total: u64,
        /// Piece length.
        piece_length: u64,
    },
    /// More pieces than libtorrent loads.
    #[error("the torrent has {0} pieces; at most {max} are supported", max = crate::MAX_PIECES)]
    TooManyPieces(u64),
    /// The `swarmbak` dictionary is malformed or inconsistent with the torrent.
    #[error("bad swarmbak parameters: {0}")]
    BadSwarmbak(String),
    /// A `swarmbak` format this reader does not know.
    #[error("swarmbak format version {found} is newer than this swarmbak understands ({known}); upgrade swarmbak")]
    NewerSwarmbakFormat {
        /// The version in the torrent.
        found: i64,
        /// The newest this build reads.
        known: u32,
    },
}
