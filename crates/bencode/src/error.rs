//! The decoder's and the encoder's errors.

use std::fmt;

/// What the decoder was doing when the input ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reading {
    /// Looking for the start of a value.
    Value,
    /// Reading an integer (`i...e`) that started at `start`.
    Int {
        /// Offset of the `i`.
        start: usize,
    },
    /// Reading the decimal length of a string that started at `start`.
    StringLength {
        /// Offset of the first digit.
        start: usize,
    },
    /// Reading the `len` bytes of a string whose length prefix started at `start`.
    String {
        /// Offset of the length prefix.
        start: usize,
        /// The declared length.
        len: usize,
    },
    /// Reading the items of a list that started at `start`.
    List {
        /// Offset of the `l`.
        start: usize,
    },
    /// Reading the entries of a dictionary that started at `start`.
    Dict {
        /// Offset of the `d`.
        start: usize,
    },
}

impl fmt::Display for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reading::Value => write!(f, "looking for a value"),
            Reading::Int { start } => write!(f, "reading an integer started at offset {start}"),
            Reading::StringLength { start } => {
                write!(f, "reading a string length started at offset {start}")
            }
            Reading::String { len, .. } => write!(f, "reading a string of {len} bytes"),
            Reading::List { start } => write!(f, "reading a list started at offset {start}"),
            Reading::Dict { start } => {
                write!(f, "reading a dictionary started at offset {start}")
            }
        }
    }
}

/// A byte shown for humans: printable ASCII as `'x'`, anything else as `0xNN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShownByte(pub u8);

impl fmt::Display for ShownByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", self.0 as char)
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

/// Why bencoded input was rejected. Every variant carries the byte offset where the
/// problem was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended in the middle of a value.
    #[error("unexpected end of input at offset {offset} while {reading}")]
    UnexpectedEof {
        /// Where the input ended (its length).
        offset: usize,
        /// What was being read.
        reading: Reading,
    },
    /// A byte that cannot appear here.
    #[error("unexpected byte {byte} at offset {offset}: expected {expected}")]
    UnexpectedByte {
        /// Offset of the byte.
        offset: usize,
        /// The byte.
        byte: ShownByte,
        /// What would have been valid here.
        expected: &'static str,
    },
    /// A dictionary key that is not a string.
    #[error("dictionary key at offset {offset} is not a string")]
    NonStringKey {
        /// Offset of the key.
        offset: usize,
    },
    /// `ie` or `i-e`.
    #[error("integer at offset {offset} has no digits")]
    EmptyInt {
        /// Offset of the `i`.
        offset: usize,
    },
    /// `i03e`: only `0` itself may start with a zero.
    #[error("integer at offset {offset} has a leading zero")]
    IntLeadingZero {
        /// Offset of the `i`.
        offset: usize,
    },
    /// `i-0e`.
    #[error("integer at offset {offset} is negative zero")]
    NegativeZero {
        /// Offset of the `i`.
        offset: usize,
    },
    /// The integer does not fit in an `i64`.
    #[error("integer at offset {offset} does not fit in a signed 64-bit integer")]
    IntOverflow {
        /// Offset of the `i`.
        offset: usize,
    },
    /// `03:abc`: only a zero length may start with a zero.
    #[error("string length at offset {offset} has a leading zero")]
    StringLengthLeadingZero {
        /// Offset of the length prefix.
        offset: usize,
    },
    /// The string's declared length is larger than any input could hold.
    #[error("string length at offset {offset} is too large")]
    StringLengthOverflow {
        /// Offset of the length prefix.
        offset: usize,
    },
    /// Lists and dictionaries nest as deep as [`Limits::max_depth`](crate::Limits).
    #[error("lists and dictionaries nest too deeply at offset {offset} (depth limit {limit})")]
    DepthLimit {
        /// Offset of the container that reached the limit.
        offset: usize,
        /// The limit in force.
        limit: usize,
    },
    /// More than [`Limits::max_items`](crate::Limits) values and keys.
    #[error("more than {limit} values at offset {offset}")]
    ItemLimit {
        /// Offset of the value over the limit.
        offset: usize,
        /// The limit in force.
        limit: usize,
    },
    /// Bytes after a complete top-level value (see [`decode_prefix`](crate::decode_prefix)).
    #[error("{len} bytes of trailing data at offset {offset} after the value")]
    TrailingData {
        /// Where the value ended.
        offset: usize,
        /// How many bytes follow it.
        len: usize,
    },
}

impl DecodeError {
    /// The byte offset where the problem was found.
    pub fn offset(&self) -> usize {
        match *self {
            DecodeError::UnexpectedEof { offset, .. }
            | DecodeError::UnexpectedByte { offset, .. }
            | DecodeError::NonStringKey { offset }
            | DecodeError::EmptyInt { offset }
            | DecodeError::IntLeadingZero { offset }
            | DecodeError::NegativeZero { offset }
            | DecodeError::IntOverflow { offset }
            | DecodeError::StringLengthLeadingZero { offset }
            | DecodeError::StringLengthOverflow { offset }
            | DecodeError::DepthLimit { offset, .. }
            | DecodeError::ItemLimit { offset, .. }
            | DecodeError::TrailingData { offset, .. } => offset,
        }
    }
}

/// Misuse of the streaming [`Encoder`](crate::Encoder), reported by `finish`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A dictionary key not greater than the key before it (BEP 3 wants keys sorted as raw
    /// bytes, without duplicates).
    #[error("dictionary key {key:?} is not after the previous key {previous:?}")]
    UnsortedKey {
        /// The key written, lossily as UTF-8.
        key: String,
        /// The key before it.
        previous: String,
    },
    /// A value written in a dictionary where a key was due.
    #[error("a value was written in a dictionary where a key was expected")]
    MissingKey,
    /// A key written outside a dictionary, or two keys in a row.
    #[error("a key was written where a value was expected")]
    UnexpectedKey,
    /// A dictionary closed after a key without its value.
    #[error("a dictionary was closed after a key without a value")]
    KeyWithoutValue,
    /// `end` with nothing open.
    #[error("`end` called with no open list or dictionary")]
    UnbalancedEnd,
    /// `finish` with lists or dictionaries still open.
    #[error("{0} lists or dictionaries were left open")]
    Unclosed(usize),
    /// More than one top-level value, or none.
    #[error("the output must be exactly one value, not {0}")]
    TopLevelCount(usize),
}
