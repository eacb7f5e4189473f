//! BEP 9 metadata exchange (`ut_metadata`): messages and an assembler that checks the
//! result against the info-hash.

use bytes::Bytes;
use sha1::{Digest, Sha1};
use swarmbak_bencode::{decode_prefix_with, Encoder, Limits as BencodeLimits, Value};

use crate::error::MetadataError;

/// Metadata is exchanged in pieces of 16 KiB (the last may be shorter).
pub const METADATA_PIECE_SIZE: usize = 16 * 1024;
/// Default largest `metadata_size` accepted: 8 MiB.
pub const MAX_METADATA_SIZE: u64 = 8 * 1024 * 1024;

/// A `ut_metadata` message (the payload of an extended message).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataMessage {
    /// `msg_type` 0: send me this piece.
    Request {
        /// Metadata piece index.
        piece: u32,
    },
    /// `msg_type` 1: a piece, its bytes after the dictionary.
    Data {
        /// Metadata piece index.
        piece: u32,
        /// Size of the whole info dictionary.
        total_size: u64,
        /// The piece's bytes.
        data: Bytes,
    },
    /// `msg_type` 2: I will not send this piece.
    Reject {
        /// Metadata piece index.
        piece: u32,
    },
    /// A `msg_type` this side does not know (BEP 9: ignore it).
    Other {
        /// The type.
        msg_type: i64,
    },
}

impl MetadataMessage {
    /// The payload bytes (bencoded dictionary, then the data for `Data`).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.begin_dict();
        let tail: &[u8] = match self {
            MetadataMessage::Request { piece } => {
                e.key(b"msg_type")
                    .int(0)
                    .key(b"piece")
                    .int(i64::from(*piece));
                &[]
            }
            MetadataMessage::Data {
                piece,
                total_size,
                data,
            } => {
                e.key(b"msg_type")
                    .int(1)
                    .key(b"piece")
                    .int(i64::from(*piece))
                    .key(b"total_size")
                    .int(i64::try_from(*total_size).unwrap_or(i64::MAX));
                data
            }
            MetadataMessage::Reject { piece } => {
                e.key(b"msg_type")
                    .int(2)
                    .key(b"piece")
                    .int(i64::from(*piece));
                &[]
            }
            MetadataMessage::Other { msg_type } => {
                e.key(b"msg_type").int(*msg_type);
                &[]
            }
        };
        e.end();
        // Sorted keys, balanced: finish cannot fail.
        let mut out = e.finish().unwrap_or_default();
        out.extend_from_slice(tail);
        out
    }

    /// Parses a payload. A `data` piece longer than 16 KiB is refused.
    pub fn parse(payload: &Bytes) -> Result<Self, MetadataError> {
        let limits = BencodeLimits {
            max_depth: 4,
            max_items: 64,
        };
        let (value, used) = decode_prefix_with(payload, limits)
            .map_err(|e| MetadataError::Bencode(e.to_string()))?;
        let dict = value
            .as_dict()
            .ok_or(MetadataError::MissingKey("msg_type"))?;
        let msg_type = dict
            .get(b"msg_type")
            .and_then(Value::as_int)
            .ok_or(MetadataError::MissingKey("msg_type"))?;
        let piece = || {
            dict.get(b"piece")
                .and_then(Value::as_int)
                .and_then(|p| u32::try_from(p).ok())
                .ok_or(MetadataError::MissingKey("piece"))
        };
        let trailing = payload.len() - used;
        if matches!(msg_type, 0 | 2) && trailing != 0 {
            return Err(MetadataError::TrailingBytes {
                msg_type,
                len: trailing,
            });
        }
        Ok(match msg_type {
            0 => MetadataMessage::Request { piece: piece()? },
            1 => {
                let total_size = dict
                    .get(b"total_size")
                    .and_then(Value::as_int)
                    .and_then(|s| u64::try_from(s).ok())
                    .ok_or(MetadataError::MissingKey("total_size"))?;
                let piece = piece()?;
                if trailing > METADATA_PIECE_SIZE {
                    return Err(MetadataError::PieceLength {
                        piece,
                        len: trailing,
                        expected: METADATA_PIECE_SIZE,
                    });
                }
                MetadataMessage::Data {
                    piece,
                    total_size,
                    data: payload.slice(used..),
                }
            }
            2 => MetadataMessage::Reject { piece: piece()? },
            other => MetadataMessage::Other { msg_type: other },
        })
    }

    /// The `data` message for piece `piece` of `info` (the raw info dictionary), or
    /// `None` past the end: what a serving peer sends.
    pub fn data_for(info: &[u8], piece: u32) -> Option<MetadataMessage> {
        let start = (piece as usize).checked_mul(METADATA_PIECE_SIZE)?;
        if start >= info.len() {
            return None;
        }
        let end = (start + METADATA_PIECE_SIZE).min(info.len());
        Some(MetadataMessage::Data {
            piece,
            total_size: info.len() as u64,
            data: Bytes::copy_from_slice(&info[start..end]),
        })
    }
}

/// Number of 16 KiB metadata pieces for `size` bytes.
pub fn metadata_pieces(size: u64) -> u32 {
    u32::try_from(size.div_ceil(METADATA_PIECE_SIZE as u64)).unwrap_or(u32::MAX)
}

/// Collects the metadata pieces of one torrent and checks the SHA-1 of the whole against
/// its info-hash.
#[derive(Debug, Clone)]
pub struct MetadataAssembler {
    info_hash: [u8; 20],
    total_size: usize,
    pieces: Vec<Option<Bytes>>,
    have: u32,
}

impl MetadataAssembler {
    /// For `total_size` bytes (from a peer's `metadata_size`) with the default 8 MiB limit.
    pub fn new(info_hash: [u8; 20], total_size: u64) -> Result<Self, MetadataError> {
        Self::with_limit(info_hash, total_size, MAX_METADATA_SIZE)
    }

    /// With an explicit size limit.
    pub fn with_limit(
        info_hash: [u8; 20],
        total_size: u64,
        limit: u64,
    ) -> Result<Self, MetadataError> {
        let size = usize::try_from(total_size)
            .ok()
            .filter(|_| total_size > 0 && total_size <= limit);
        let Some(size) = size else {
            return Err(MetadataError::BadSize {
                size: total_size,
                limit,
            });
        };
        Ok(MetadataAssembler {
            info_hash,
            total_size: size,
            pieces: vec![None; size.div_ceil(METADATA_PIECE_SIZE)],
            have: 0,
        })
    }

    /// The size being assembled.
    pub fn total_size(&self) -> u64 {
        self.total_size as u64
    }

    /// Number of metadata pieces.
    pub fn num_pieces(&self) -> u32 {
        self.pieces.len() as u32
    }

    /// Indices still missing, ascending: what to request.
    pub fn missing(&self) -> impl Iterator<Item = u32> + '_ {
        self.pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_none())
            .map(|(i, _)| i as u32)
    }

    fn expected_len(&self, piece: u32) -> usize {
        let start = piece as usize * METADATA_PIECE_SIZE;
        (self.total_size - start).min(METADATA_PIECE_SIZE)
    }

    /// Adds a `data` message's piece. Returns the verified info dictionary once the last
    /// piece is in. If the whole does not hash to the info-hash, every piece is discarded
    /// and [`MetadataError::HashMismatch`] returned (the caller drops or bans whoever sent
    /// them and starts again).
    pub fn add_piece(
        &mut self,
        piece: u32,
        total_size: u64,
        data: &[u8],
    ) -> Result<Option<Vec<u8>>, MetadataError> {
        if total_size != self.total_size as u64 {
            return Err(MetadataError::SizeMismatch {
                got: total_size,
                expected: self.total_size as u64,
            });
        }
        let pieces = self.num_pieces();
        if piece >= pieces {
            return Err(MetadataError::PieceOutOfRange { piece, pieces });
        }
        let expected = self.expected_len(piece);
        if data.len() != expected {
            return Err(MetadataError::PieceLength {
                piece,
                len: data.len(),
                expected,
            });
        }
        let slot = &mut self.pieces[piece as usize];
        if slot.is_none() {
            *slot = Some(Bytes::copy_from_slice(data));
            self.have += 1;
        }
        if self.have < pieces {
            return Ok(None);
        }
        let mut info = Vec::with_capacity(self.total_size);
        for p in self.pieces.iter().flatten() {
            info.extend_from_slice(p);
        }
        let digest: [u8; 20] = Sha1::digest(&info).into();
        if digest != self.info_hash {
            self.pieces.iter_mut().for_each(|p| *p = None);
            self.have = 0;
            return Err(MetadataError::HashMismatch);
        }
        Ok(Some(info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_of(len: usize) -> (Vec<u8>, [u8; 20]) {
        let body: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut e = Encoder::new();
        e.begin_dict().key(b"x").bytes(&body).end();
        let info = e.finish().unwrap();
        let h: [u8; 20] = Sha1::digest(&info).into();
        (info, h)
    }

    #[test]
    fn messages_round_trip() {
        for m in [
            MetadataMessage::Request { piece: 3 },
            MetadataMessage::Reject { piece: 0 },
            MetadataMessage::Data {
                piece: 1,
                total_size: 20000,
                data: Bytes::from_static(b"abc"),
            },
            MetadataMessage::Other { msg_type: 9 },
        ] {
            let bytes = Bytes::from(m.encode());
            assert_eq!(MetadataMessage::parse(&bytes), Ok(m));
        }
        assert_eq!(
            MetadataMessage::Request { piece: 2 }.encode(),
            b"d8:msg_typei0e5:piecei2ee".to_vec()
        );
    }

    #[test]
    fn malformed_messages() {
        let p = |b: &'static [u8]| MetadataMessage::parse(&Bytes::from_static(b));
        assert!(matches!(
            p(b"d5:piecei0ee"),
            Err(MetadataError::MissingKey("msg_type"))
        ));
        assert!(matches!(
            p(b"d8:msg_typei0ee"),
            Err(MetadataError::MissingKey("piece"))
        ));
        assert!(matches!(
            p(b"d8:msg_typei0e5:piecei-1ee"),
            Err(MetadataError::MissingKey("piece"))
        ));
        assert!(matches!(
            p(b"d8:msg_typei1e5:piecei0ee"),
            Err(MetadataError::MissingKey("total_size"))
        ));
        assert!(matches!(
            p(b"d8:msg_typei0e5:piecei0eeXX"),
            Err(MetadataError::TrailingBytes { .. })
        ));
        assert!(matches!(
            p(b"i1e"),
            Err(MetadataError::MissingKey("msg_type"))
        ));
        assert!(matches!(p(b"d8:msg_type"), Err(MetadataError::Bencode(_))));
        let mut big = b"d8:msg_typei1e5:piecei0e10:total_sizei99999ee".to_vec();
        big.extend(std::iter::repeat_n(0u8, METADATA_PIECE_SIZE + 1));
        assert!(matches!(
            MetadataMessage::parse(&Bytes::from(big)),
            Err(MetadataError::PieceLength { .. })
        ));
    }

    #[test]
    fn assembles_and_verifies() {
        let (info, hash) = info_of(40_000);
        let mut a = MetadataAssembler::new(hash, info.len() as u64).unwrap();
        assert_eq!(a.num_pieces(), 3);
        // out of order, with a duplicate
        let mut done = None;
        for piece in [2u32, 0, 0, 1] {
            let Some(MetadataMessage::Data {
                data, total_size, ..
            }) = MetadataMessage::data_for(&info, piece)
            else {
                panic!("piece {piece}");
            };
            done = a.add_piece(piece, total_size, &data).unwrap();
        }
        assert_eq!(done, Some(info.clone()));
        assert_eq!(MetadataMessage::data_for(&info, 3), None);
    }

    #[test]
    fn wrong_hash_size_and_range_refused() {
        let (info, hash) = info_of(20_000);
        let mut wrong = hash;
        wrong[0] ^= 1;
        let mut a = MetadataAssembler::new(wrong, info.len() as u64).unwrap();
        a.add_piece(0, info.len() as u64, &info[..METADATA_PIECE_SIZE])
            .unwrap();
        assert_eq!(
            a.add_piece(1, info.len() as u64, &info[METADATA_PIECE_SIZE..]),
            Err(MetadataError::HashMismatch)
        );
        assert_eq!(a.missing().count(), 2, "pieces discarded after a mismatch");

        let mut a = MetadataAssembler::new(hash, info.len() as u64).unwrap();
        assert!(matches!(
            a.add_piece(2, info.len() as u64, b"x"),
            Err(MetadataError::PieceOutOfRange { .. })
        ));
        assert!(matches!(
            a.add_piece(1, info.len() as u64, b"x"),
            Err(MetadataError::PieceLength { .. })
        ));
        assert!(matches!(
            a.add_piece(0, 5, b"x"),
            Err(MetadataError::SizeMismatch { .. })
        ));
        assert!(matches!(
            MetadataAssembler::new(hash, 0),
            Err(MetadataError::BadSize { .. })
        ));
        assert!(matches!(
            MetadataAssembler::new(hash, MAX_METADATA_SIZE + 1),
            Err(MetadataError::BadSize { .. })
        ));
        assert!(MetadataAssembler::new(hash, MAX_METADATA_SIZE).is_ok());
    }
}
