//! Bencode (BEP 3) for swarmbak.
//!
//! - [`decode`] / [`decode_prefix`]: a bounded, non-recursive decoder as lenient as
//!   libtorrent and transmission about dictionary key order and repeated keys, and strict
//!   about number syntax (see [`decode`] for the rules). It borrows from the input and
//!   keeps the raw bytes of every list and dictionary ([`Dict::raw`]), so info-hashes are
//!   computed over the bytes as they appear.
//! - [`OwnedValue`] and [`Encoder`]: canonical output (dictionary keys sorted as raw
//!   bytes), sized up front, linear in the output.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod decode;
mod encode;
mod error;
mod owned;
mod value;

pub use decode::{decode, decode_prefix, decode_prefix_with, decode_with, Limits};
pub use encode::{write_decimal, Encoder};
pub use error::{DecodeError, EncodeError, Reading, ShownByte};
pub use owned::{DictBuilder, OwnedValue};
pub use value::{Dict, List, Value};
