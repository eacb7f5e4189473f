//! `tokio_util::codec` framing over [`Handshake::decode`] and [`decode_message`], so a
//! transport can use `Framed<TcpStream, PeerCodec>`.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::CodecError;
use crate::handshake::Handshake;
use crate::message::{decode_message, Limits, Message};

/// What [`PeerCodec`] reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The first frame in each direction.
    Handshake(Handshake),
    /// Every frame after it.
    Message(Message),
}

/// Peer wire framing with a handshake phase: the first frame decoded is the 68-byte
/// handshake, every later one a length-prefixed message.
#[derive(Debug, Clone)]
pub struct PeerCodec {
    limits: Limits,
    handshake_done: bool,
}

impl PeerCodec {
    /// A codec that expects the peer's handshake first.
    pub fn new(limits: Limits) -> Self {
        PeerCodec {
            limits,
            handshake_done: false,
        }
    }

    /// A codec past the handshake (for a stream whose handshake was read elsewhere).
    pub fn after_handshake(limits: Limits) -> Self {
        PeerCodec {
            limits,
            handshake_done: true,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Changes the limits (for example with the piece count once metadata is known).
    pub fn limits_mut(&mut self) -> &mut Limits {
        &mut self.limits
    }

    /// Has the peer's handshake been decoded?
    pub fn handshake_done(&self) -> bool {
        self.handshake_done
    }
}

impl Default for PeerCodec {
    fn default() -> Self {
        PeerCodec::new(Limits::default())
    }
}

impl Decoder for PeerCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if !self.handshake_done {
            return match Handshake::decode(src)? {
                Some(hs) => {
                    self.handshake_done = true;
                    Ok(Some(Frame::Handshake(hs)))
                }
                None => Ok(None),
            };
        }
        Ok(decode_message(src, &self.limits)?.map(Frame::Message))
    }
}

impl Encoder<Frame> for PeerCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        match item {
            Frame::Handshake(hs) => hs.encode(dst),
            Frame::Message(m) => m.encode(dst),
        }
        Ok(())
    }
}

impl Encoder<Message> for PeerCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode(dst);
        Ok(())
    }
}

impl Encoder<Handshake> for PeerCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Handshake, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode(dst);
        Ok(())
    }
}
