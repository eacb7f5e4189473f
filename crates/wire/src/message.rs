//! Peer messages (BEP 3, BEP 6, BEP 10) and their length-prefixed framing.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::WireError;

/// The block size every client requests: 16 KiB.
pub const BLOCK_SIZE: u32 = 16 * 1024;

/// Message ids.
pub mod id {
    /// BEP 3 choke.
    pub const CHOKE: u8 = 0;
    /// BEP 3 unchoke.
    pub const UNCHOKE: u8 = 1;
    /// BEP 3 interested.
    pub const INTERESTED: u8 = 2;
    /// BEP 3 not interested.
    pub const NOT_INTERESTED: u8 = 3;
    /// BEP 3 have.
    pub const HAVE: u8 = 4;
    /// BEP 3 bitfield.
    pub const BITFIELD: u8 = 5;
    /// BEP 3 request.
    pub const REQUEST: u8 = 6;
    /// BEP 3 piece.
    pub const PIECE: u8 = 7;
    /// BEP 3 cancel.
    pub const CANCEL: u8 = 8;
    /// BEP 5 port.
    pub const PORT: u8 = 9;
    /// BEP 6 suggest piece.
    pub const SUGGEST: u8 = 13;
    /// BEP 6 have all.
    pub const HAVE_ALL: u8 = 14;
    /// BEP 6 have none.
    pub const HAVE_NONE: u8 = 15;
    /// BEP 6 reject request.
    pub const REJECT: u8 = 16;
    /// BEP 6 allowed fast.
    pub const ALLOWED_FAST: u8 = 17;
    /// BEP 10 extended.
    pub const EXTENDED: u8 = 20;
}

/// A block: `length` bytes at `offset` in piece `piece` (request, cancel, reject).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRef {
    /// Piece index.
    pub piece: u32,
    /// Byte offset in the piece.
    pub offset: u32,
    /// Length in bytes.
    pub length: u32,
}

impl BlockRef {
    /// A block reference.
    pub fn new(piece: u32, offset: u32, length: u32) -> Self {
        BlockRef {
            piece,
            offset,
            length,
        }
    }
}

/// One peer message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// Length 0: keeps the connection open.
    KeepAlive,
    /// We will not answer requests.
    Choke,
    /// We will answer requests.
    Unchoke,
    /// We want something the receiver has.
    Interested,
    /// We want nothing the receiver has.
    NotInterested,
    /// We now have this piece.
    Have(u32),
    /// Which pieces we have, high bit of the first byte = piece 0 (validate against the
    /// piece count with [`Bitfield::from_bytes`](crate::Bitfield::from_bytes)).
    Bitfield(Bytes),
    /// Please send this block.
    Request(BlockRef),
    /// A block's bytes.
    Piece {
        /// Piece index.
        piece: u32,
        /// Byte offset in the piece.
        offset: u32,
        /// The bytes.
        data: Bytes,
    },
    /// Never mind that request.
    Cancel(BlockRef),
    /// BEP 5: our DHT port.
    Port(u16),
    /// BEP 6: this piece would be a good one to ask us for.
    Suggest(u32),
    /// BEP 6: we have every piece.
    HaveAll,
    /// BEP 6: we have no piece.
    HaveNone,
    /// BEP 6: we will not send this block.
    Reject(BlockRef),
    /// BEP 6: you may request this piece while choked.
    AllowedFast(u32),
    /// BEP 10: extended message `id` (0 = the extension handshake).
    Extended {
        /// Extended message id.
        id: u8,
        /// The payload after the id byte.
        payload: Bytes,
    },
    /// A message id this codec does not know (kept so the policy layer decides; swarmbak
    /// ignores them, see `protocol-spec/wire.md`).
    Unknown {
        /// The id byte.
        id: u8,
        /// Everything after the id byte.
        payload: Bytes,
    },
}

impl Message {
    /// The message id, `None` for keep-alive.
    pub fn id(&self) -> Option<u8> {
        Some(match self {
            Message::KeepAlive => return None,
            Message::Choke => id::CHOKE,
            Message::Unchoke => id::UNCHOKE,
            Message::Interested => id::INTERESTED,
            Message::NotInterested => id::NOT_INTERESTED,
            Message::Have(_) => id::HAVE,
            Message::Bitfield(_) => id::BITFIELD,
            Message::Request(_) => id::REQUEST,
            Message::Piece { .. } => id::PIECE,
            Message::Cancel(_) => id::CANCEL,
            Message::Port(_) => id::PORT,
            Message::Suggest(_) => id::SUGGEST,
            Message::HaveAll => id::HAVE_ALL,
            Message::HaveNone => id::HAVE_NONE,
            Message::Reject(_) => id::REJECT,
            Message::AllowedFast(_) => id::ALLOWED_FAST,
            Message::Extended { .. } => id::EXTENDED,
            Message::Unknown { id, .. } => *id,
        })
    }

    /// The message's name, for logs and errors: `keep_alive`, `choke`, `unchoke`,
    /// `interested`, `not_interested`, `have`, `bitfield`, `request`, `piece`, `cancel`,
    /// `port`, `suggest`, `have_all`, `have_none`, `reject`, `allowed_fast`, `extended`,
    /// or `unknown` (an id this codec does not know). The wire log uses these names.
    pub fn name(&self) -> &'static str {
        match self {
            Message::KeepAlive => "keep_alive",
            Message::Unknown { .. } => "unknown",
            m => m.id().map_or("unknown", name_of),
        }
    }

    /// The length prefix: bytes after the 4-byte length.
    pub fn body_len(&self) -> usize {
        match self {
            Message::KeepAlive => 0,
            Message::Choke
            | Message::Unchoke
            | Message::Interested
            | Message::NotInterested
            | Message::HaveAll
            | Message::HaveNone => 1,
            Message::Have(_) | Message::Suggest(_) | Message::AllowedFast(_) => 5,
            Message::Bitfield(b) => 1 + b.len(),
            Message::Request(_) | Message::Cancel(_) | Message::Reject(_) => 13,
            Message::Piece { data, .. } => 9 + data.len(),
            Message::Port(_) => 3,
            Message::Extended { payload, .. } => 2 + payload.len(),
            Message::Unknown { payload, .. } => 1 + payload.len(),
        }
    }

    /// Bytes on the wire, length prefix included.
    pub fn encoded_len(&self) -> usize {
        4 + self.body_len()
    }

    /// Appends the framed message to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        if let Message::Piece {
            piece,
            offset,
            data,
        } = self
        {
            encode_piece_header(*piece, *offset, data.len(), dst);
            dst.put_slice(data);
            return;
        }
        dst.put_u32(self.body_len() as u32);
        let Some(message_id) = self.id() else {
            return;
        };
        dst.put_u8(message_id);
        match self {
            Message::KeepAlive
            | Message::Choke
            | Message::Unchoke
            | Message::Interested
            | Message::NotInterested
            | Message::HaveAll
            | Message::HaveNone => {}
            Message::Have(i) | Message::Suggest(i) | Message::AllowedFast(i) => dst.put_u32(*i),
            Message::Bitfield(b) => dst.put_slice(b),
            Message::Request(b) | Message::Cancel(b) | Message::Reject(b) => {
                dst.put_u32(b.piece);
                dst.put_u32(b.offset);
                dst.put_u32(b.length);
            }
            Message::Piece { .. } => {}
            Message::Port(p) => dst.put_u16(*p),
            Message::Extended { id, payload } => {
                dst.put_u8(*id);
                dst.put_slice(payload);
            }
            Message::Unknown { payload, .. } => dst.put_slice(payload),
        }
    }

    /// The framed message as a fresh buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut b);
        b.freeze()
    }
}

/// A message's name by id, as swarmbak's logs spell it (the wire log,
/// `SWARMBAK_WIRE_LOG`, which the interop tests read) and as errors name it.
fn name_of(message_id: u8) -> &'static str {
    match message_id {
        id::CHOKE => "choke",
        id::UNCHOKE => "unchoke",
        id::INTERESTED => "interested",
        id::NOT_INTERESTED => "not_interested",
        id::HAVE => "have",
        id::BITFIELD => "bitfield",
        id::REQUEST => "request",
        id::PIECE => "piece",
        id::CANCEL => "cancel",
        id::PORT => "port",
        id::SUGGEST => "suggest",
        id::HAVE_ALL => "have_all",
        id::HAVE_NONE => "have_none",
        id::REJECT => "reject",
        id::ALLOWED_FAST => "allowed_fast",
        id::EXTENDED => "extended",
        _ => "unknown",
    }
}

/// Appends the 13 bytes of a `piece` message that come before its block (length prefix,
/// id, piece index, offset): for a transport that sends the block from its own buffer.
pub fn encode_piece_header(piece: u32, offset: u32, block_len: usize, dst: &mut BytesMut) {
    dst.put_u32(9 + block_len as u32);
    dst.put_u8(id::PIECE);
    dst.put_u32(piece);
    dst.put_u32(offset);
}

/// Size limits the decoder enforces before buffering a message. Lengths here count the
/// payload only (not the 4-byte prefix or the id byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest block in a `piece` message. Default 16 KiB ([`BLOCK_SIZE`]), the size every
    /// client requests; raise it only if this side requests larger blocks.
    pub max_block: u32,
    /// The torrent's piece count once known: a `bitfield` must then be exactly
    /// `ceil(pieces / 8)` bytes. `None` (a magnet fetch before the metadata) allows up to
    /// `max_extended` bytes; the session checks it once the piece count is known.
    pub num_pieces: Option<u32>,
    /// Largest payload of an extended (BEP 10) message. Default 128 KiB (a BEP 9 piece is
    /// 16 KiB; an extension handshake a few hundred bytes).
    pub max_extended: u32,
    /// Largest payload of a message with an unknown id. Default 128 KiB.
    pub max_unknown: u32,
    /// Fail on unknown message ids instead of returning [`Message::Unknown`].
    /// Default false (swarmbak ignores them, as transmission does).
    pub reject_unknown: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_block: BLOCK_SIZE,
            num_pieces: None,
            max_extended: 128 * 1024,
            max_unknown: 128 * 1024,
            reject_unknown: false,
        }
    }
}

impl Limits {
    /// Default limits for a torrent of `num_pieces` pieces.
    pub fn for_pieces(num_pieces: u32) -> Self {
        Limits {
            num_pieces: Some(num_pieces),
            ..Limits::default()
        }
    }

    /// Checks a length prefix against the message id; `Ok(())` if a message of this
    /// length and id may be valid.
    fn check(&self, message_id: u8, len: u32) -> Result<(), WireError> {
        let name = name_of(message_id);
        let exact = |expected: u32| {
            if len == expected {
                Ok(())
            } else {
                Err(WireError::WrongLength {
                    message: name,
                    len,
                    expected,
                })
            }
        };
        let range = |min: u32, limit: u32| {
            if len < min {
                Err(WireError::TooShort {
                    message: name,
                    len,
                    min,
                })
            } else if len > limit {
                Err(WireError::TooLong {
                    message: name,
                    len,
                    limit,
                })
            } else {
                Ok(())
            }
        };
        match message_id {
            id::CHOKE
            | id::UNCHOKE
            | id::INTERESTED
            | id::NOT_INTERESTED
            | id::HAVE_ALL
            | id::HAVE_NONE => exact(1),
            id::HAVE | id::SUGGEST | id::ALLOWED_FAST => exact(5),
            id::REQUEST | id::CANCEL | id::REJECT => exact(13),
            id::PORT => exact(3),
            id::BITFIELD => match self.num_pieces {
                Some(n) => exact(1 + n.div_ceil(8)),
                None => range(1, self.max_extended.saturating_add(1)),
            },
            id::PIECE => range(9, self.max_block.saturating_add(9)),
            id::EXTENDED => range(2, self.max_extended.saturating_add(2)),
            other => {
                if self.reject_unknown {
                    Err(WireError::UnknownMessage { id: other })
                } else {
                    range(1, self.max_unknown.saturating_add(1))
                }
            }
        }
    }

    /// The largest length prefix any message may have under these limits.
    fn max_len(&self) -> u32 {
        let bitfield = match self.num_pieces {
            Some(n) => 1 + n.div_ceil(8),
            None => self.max_extended.saturating_add(1),
        };
        [
            13,
            bitfield,
            self.max_block.saturating_add(9),
            self.max_extended.saturating_add(2),
            self.max_unknown.saturating_add(1),
        ]
        .into_iter()
        .max()
        .unwrap_or(13)
    }
}

/// Decodes one framed message from the front of `src`.
///
/// `Ok(None)`: more bytes are needed (nothing is consumed, and room is reserved for the
/// rest of the message). A length prefix over the limits fails as soon as the prefix and
/// id byte are in, before the body is buffered.
pub fn decode_message(src: &mut BytesMut, limits: &Limits) -> Result<Option<Message>, WireError> {
    if src.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
    if len == 0 {
        src.advance(4);
        return Ok(Some(Message::KeepAlive));
    }
    if src.len() < 5 {
        let max = limits.max_len();
        if len > max {
            return Err(WireError::TooLong {
                message: "message",
                len,
                limit: max,
            });
        }
        return Ok(None);
    }
    let message_id = src[4];
    limits.check(message_id, len)?;
    let total = 4 + len as usize;
    if src.len() < total {
        src.reserve(total - src.len());
        return Ok(None);
    }
    src.advance(5);
    let mut body = src.split_to(len as usize - 1).freeze();
    Ok(Some(parse_body(message_id, &mut body)))
}

/// Parses a body whose length `check` has accepted.
fn parse_body(message_id: u8, body: &mut Bytes) -> Message {
    let block = |b: &mut Bytes| BlockRef {
        piece: b.get_u32(),
        offset: b.get_u32(),
        length: b.get_u32(),
    };
    match message_id {
        id::CHOKE => Message::Choke,
        id::UNCHOKE => Message::Unchoke,
        id::INTERESTED => Message::Interested,
        id::NOT_INTERESTED => Message::NotInterested,
        id::HAVE => Message::Have(body.get_u32()),
        id::BITFIELD => Message::Bitfield(body.split_off(0)),
        id::REQUEST => Message::Request(block(body)),
        id::PIECE => {
            let piece = body.get_u32();
            let offset = body.get_u32();
            Message::Piece {
                piece,
                offset,
                data: body.split_off(0),
            }
        }
        id::CANCEL => Message::Cancel(block(body)),
        id::PORT => Message::Port(body.get_u16()),
        id::SUGGEST => Message::Suggest(body.get_u32()),
        id::HAVE_ALL => Message::HaveAll,
        id::HAVE_NONE => Message::HaveNone,
        id::REJECT => Message::Reject(block(body)),
        id::ALLOWED_FAST => Message::AllowedFast(body.get_u32()),
        id::EXTENDED => {
            let ext = body.get_u8();
            Message::Extended {
                id: ext,
                payload: body.split_off(0),
            }
        }
        other => Message::Unknown {
            id: other,
            payload: body.split_off(0),
        },
    }
}
