//! BitTorrent v1 metainfo (`.torrent` files) for swarmbak.
//!
//! - [`Metainfo::from_bytes`] reads a torrent the way libtorrent 2.0's
//!   `torrent_info(buffer)` reads a v1 or hybrid torrent (the rules, and what libtorrent
//!   2.0.8 did with each, are listed on [`Metainfo::from_bytes`]).
//! - [`build_swarmbak_torrent`] writes swarmbak's own single-file private torrents, whose
//!   info dictionary carries a `swarmbak` dictionary ([`SwarmbakParams`]).
//! - [`Metainfo::with_announce`] re-serialises a torrent for another tracker without
//!   touching its info-hash.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod build;
mod error;
mod parse;
mod paths;
mod swarmbak;

pub use build::{build_swarmbak_torrent, SwarmbakTorrent};
pub use error::MetainfoError;
pub use parse::{FileEntry, Metainfo};
pub use paths::{PathProblem, UnsafePath};
pub use swarmbak::{SwarmbakParams, SWARMBAK_FORMAT};

/// Largest `piece length` accepted: libtorrent 2.0.8 accepts 2^30 - 1 and rejects 2^30
/// (`i32::MAX / 2`).
pub const MAX_PIECE_LENGTH: u64 = (i32::MAX / 2) as u64;

/// Most pieces accepted: libtorrent 2.0.8's default `load_torrent_limits::max_pieces`
/// (0x200000; checked: 2^21 pieces load, 2^21 + 1 do not).
pub const MAX_PIECES: u64 = 0x20_0000;
