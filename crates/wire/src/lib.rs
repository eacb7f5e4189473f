//! The BitTorrent peer wire protocol for swarmbak, without I/O.
//!
//! - [`Handshake`], [`Message`], [`decode_message`] and [`PeerCodec`]: BEP 3 framing with
//!   the Fast extension (BEP 6) and the extension protocol (BEP 10), bounded by [`Limits`].
//! - [`ExtensionHandshake`]: the BEP 10 handshake dictionary, with swarmbak's `sb_nonce`;
//!   [`MachineMessage`]: the `sb_machine` messages (authentication, then tagged proofs of
//!   possession: [`Challenge`], [`Answer`]).
//! - [`MetadataMessage`] and [`MetadataAssembler`]: BEP 9 metadata exchange.
//! - [`Bitfield`], [`Choker`], [`PiecePicker`] and [`PeerSession`]: the state machines an
//!   engine drives with received messages and timer ticks.
//!
//! The rules (limits, what gets a peer disconnected or banned) are in
//! `protocol-spec/wire.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bitfield;
mod choker;
mod codec;
mod error;
mod extension;
mod handshake;
mod machine;
mod message;
mod metadata;
mod picker;
mod rng;
mod session;

pub use bitfield::Bitfield;
pub use choker::{ChokeDecision, Choker, ChokerConfig, PeerStats};
pub use codec::{Frame, PeerCodec};
pub use error::{BitfieldError, CodecError, ExtensionError, MetadataError, PickerError, WireError};
pub use extension::{
    ExtensionHandshake, EXTENSION_HANDSHAKE_ID, MAX_SB_KEY_LEN, SB_MACHINE, UT_METADATA,
};
pub use handshake::{Handshake, Reserved, HANDSHAKE_LEN, PROTOCOL};
pub use machine::{
    Answer, Challenge, MachineMessage, FLAG_HOLDER, MAX_ANSWER_DATA, MAX_BLOCK_ANSWERS,
    MAX_BLOCK_ENTRIES, MAX_DIGEST_ANSWERS, MAX_DIGEST_BLOCKS, MAX_DIGEST_ENTRIES,
    MAX_MACHINE_MESSAGE, MAX_PATH_HASHES, MAX_TAGGED_MESSAGE, REFUSE_BUSY, REFUSE_MISSING, TAG_LEN,
};
pub use message::{decode_message, encode_piece_header, id, BlockRef, Limits, Message, BLOCK_SIZE};
pub use metadata::{
    metadata_pieces, MetadataAssembler, MetadataMessage, MAX_METADATA_SIZE, METADATA_PIECE_SIZE,
};
pub use picker::{BlockOutcome, PiecePicker, MAX_PIECE_LENGTH};
pub use session::{
    new_connection_stays, Action, DisconnectReason, PeerSession, SessionConfig, MAX_HELD,
};
