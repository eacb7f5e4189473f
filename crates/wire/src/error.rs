//! Error types, one per operation.

/// Why bytes from a peer could not be decoded as a handshake or a message.
///
/// Every variant is a reason to disconnect: the stream cannot be resynchronised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The handshake does not start with `\x13BitTorrent protocol`.
    #[error(
        "not a BitTorrent handshake: byte {offset} is 0x{byte:02x}, expected 0x{expected:02x}"
    )]
    BadHandshake {
        /// Offset of the first wrong byte.
        offset: usize,
        /// The byte received.
        byte: u8,
        /// The byte expected.
        expected: u8,
    },
    /// A fixed-size message whose length prefix is wrong.
    #[error("{message} message has length {len}, expected {expected}")]
    WrongLength {
        /// The message's name.
        message: &'static str,
        /// The length prefix received (id byte included).
        len: u32,
        /// The only valid length.
        expected: u32,
    },
    /// A variable-size message shorter than its fixed part.
    #[error("{message} message has length {len}, shorter than its minimum {min}")]
    TooShort {
        /// The message's name.
        message: &'static str,
        /// The length prefix received (id byte included).
        len: u32,
        /// The minimum length.
        min: u32,
    },
    /// A message longer than the configured limit for its kind.
    #[error("{message} message has length {len}, over the limit of {limit}")]
    TooLong {
        /// The message's name (or "message" when its id is not known yet).
        message: &'static str,
        /// The length prefix received (id byte included).
        len: u32,
        /// The limit in force.
        limit: u32,
    },
    /// A message id the codec does not know, when [`Limits::reject_unknown`](crate::Limits)
    /// is set.
    #[error("unknown message id {id}")]
    UnknownMessage {
        /// The id.
        id: u8,
    },
}

/// An error of [`PeerCodec`](crate::PeerCodec): malformed input or a failed socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The peer sent bytes that are not valid wire protocol.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Reading or writing the transport failed.
    #[error("peer connection I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a bitfield was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BitfieldError {
    /// The byte length is not `ceil(pieces / 8)`.
    #[error("bitfield has {len} bytes, expected {expected} for {pieces} pieces")]
    WrongLength {
        /// Bytes received.
        len: usize,
        /// Bytes expected.
        expected: usize,
        /// The torrent's piece count.
        pieces: u32,
    },
    /// A bit past the last piece is set.
    #[error("bitfield sets spare bits past piece {pieces}")]
    SpareBitsSet {
        /// The torrent's piece count.
        pieces: u32,
    },
}

/// Why a BEP 10 extension handshake was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtensionError {
    /// The payload is not bencode.
    #[error("extension handshake is not valid bencode: {0}")]
    Bencode(String),
    /// The payload is bencode but not a dictionary.
    #[error("extension handshake is a {0}, not a dictionary")]
    NotADict(&'static str),
}

/// Why a BEP 9 (ut_metadata) message or metadata piece was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The message's dictionary is not valid bencode.
    #[error("ut_metadata message is not valid bencode: {0}")]
    Bencode(String),
    /// A required key is missing or has the wrong type.
    #[error("ut_metadata message lacks a valid `{0}`")]
    MissingKey(&'static str),
    /// Bytes follow the dictionary of a message that is not `data`.
    #[error("ut_metadata message type {msg_type} has {len} trailing bytes")]
    TrailingBytes {
        /// The message type.
        msg_type: i64,
        /// How many bytes follow the dictionary.
        len: usize,
    },
    /// The advertised metadata size is zero or over the limit.
    #[error("metadata size {size} is out of range (1..={limit})")]
    BadSize {
        /// The size offered.
        size: u64,
        /// The limit in force.
        limit: u64,
    },
    /// A data message's `total_size` differs from the size being assembled.
    #[error("metadata piece claims total size {got}, expected {expected}")]
    SizeMismatch {
        /// The size in the message.
        got: u64,
        /// The size being assembled.
        expected: u64,
    },
    /// A piece index past the last metadata piece.
    #[error("metadata piece {piece} out of range (metadata has {pieces} pieces)")]
    PieceOutOfRange {
        /// The index.
        piece: u32,
        /// Number of metadata pieces.
        pieces: u32,
    },
    /// A piece whose length is not what its index implies.
    #[error("metadata piece {piece} has {len} bytes, expected {expected}")]
    PieceLength {
        /// The index.
        piece: u32,
        /// Bytes received.
        len: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// The assembled metadata does not hash to the info-hash.
    #[error("assembled metadata does not match the info-hash (SHA-1 differs); pieces discarded")]
    HashMismatch,
}

/// Why a [`PiecePicker`](crate::PiecePicker) could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PickerError {
    /// Piece length zero or over 16 MiB.
    #[error("piece length {0} out of range (1..=16 MiB)")]
    PieceLength(u64),
    /// `total_length` does not give `num_pieces` pieces of `piece_length`.
    #[error(
        "{total_length} bytes in pieces of {piece_length} make {expected} pieces, not {num_pieces}"
    )]
    PieceCount {
        /// Total bytes.
        total_length: u64,
        /// Bytes per piece.
        piece_length: u64,
        /// Pieces claimed.
        num_pieces: u32,
        /// Pieces implied.
        expected: u64,
    },
}
