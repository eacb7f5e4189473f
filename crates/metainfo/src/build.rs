//! Writing swarmbak's torrents.

use swarmbak_bencode::OwnedValue;

use crate::error::MetainfoError;
use crate::parse::Metainfo;
use crate::swarmbak::SwarmbakParams;
use crate::{MAX_PIECES, MAX_PIECE_LENGTH};

/// What goes into a swarmbak torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmbakTorrent {
    /// Tracker announce URL, if any.
    pub announce: Option<String>,
    /// `creation date`, Unix seconds.
    pub creation_date: i64,
    /// The info dictionary's `name`, e.g. `swarmbak-0123456789abcdef.shards`.
    pub name: String,
    /// Piece (= shard) length in bytes.
    pub piece_length: u64,
    /// SHA-1 of each piece, `stripes * (k + m)` of them.
    pub piece_hashes: Vec<[u8; 20]>,
    /// The `swarmbak` dictionary.
    pub params: SwarmbakParams,
}

impl SwarmbakTorrent {
    /// What `mi` was built from (its announce left out), to build it again with some part
    /// changed; `None` when it is not a swarmbak torrent.
    pub fn of(mi: &crate::Metainfo) -> Option<SwarmbakTorrent> {
        Some(SwarmbakTorrent {
            announce: None,
            creation_date: mi.creation_date().unwrap_or(0),
            name: String::from_utf8_lossy(mi.name()).into_owned(),
            piece_length: mi.piece_length(),
            piece_hashes: mi.pieces().to_vec(),
            params: mi.swarmbak()?.clone(),
        })
    }
}

/// Writes a swarmbak torrent as canonical bencode:
///
/// ```text
/// { "announce": <only if given>, "created by": "swarmbak <version>",
///   "creation date": <unix seconds>,
///   "info": { "length": <pieces * piece length>, "name": <name>,
///             "piece length": <S>, "pieces": <20 bytes per piece>, "private": 1,
///             "swarmbak": { ... see SwarmbakParams ... } } }
/// ```
///
/// The result is parsed back before it is returned, so whatever this returns,
/// [`Metainfo::from_bytes`] accepts, with the same parameters.
pub fn build_swarmbak_torrent(t: &SwarmbakTorrent) -> Result<Vec<u8>, MetainfoError> {
    let pieces = t.piece_hashes.len() as u64;
    if !(1..=MAX_PIECE_LENGTH).contains(&t.piece_length) {
        return Err(MetainfoError::BadPieceLength(format!(
            "is {}",
            t.piece_length
        )));
    }
    if pieces > MAX_PIECES {
        return Err(MetainfoError::TooManyPieces(pieces));
    }
    // Both bounded above, so this fits.
    let length = pieces * t.piece_length;
    t.params.check(false, t.piece_length, length, pieces)?;

    let mut hashes = Vec::with_capacity(t.piece_hashes.len() * 20);
    for h in &t.piece_hashes {
        hashes.extend_from_slice(h);
    }
    let info = OwnedValue::dict()
        .with("length", length as i64)
        .with("name", t.name.as_str())
        .with("piece length", t.piece_length as i64)
        .with("pieces", hashes)
        .with("private", 1)
        .with("swarmbak", t.params.to_value())
        .build();
    let torrent = OwnedValue::dict()
        .with_opt("announce", t.announce.as_deref())
        .with(
            "created by",
            format!("swarmbak {}", env!("CARGO_PKG_VERSION")),
        )
        .with("creation date", t.creation_date)
        .with("info", info)
        .build();
    let bytes = torrent.to_bytes();
    Metainfo::from_bytes(&bytes)?;
    Ok(bytes)
}
