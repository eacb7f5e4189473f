//! The BEP 3 handshake: `\x13BitTorrent protocol`, 8 reserved bytes, info-hash, peer id.

use bytes::{Buf, BufMut, BytesMut};

use crate::error::WireError;

/// The 19-byte protocol string that follows the length byte.
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
/// Length of a handshake on the wire.
pub const HANDSHAKE_LEN: usize = 68;

// The wire carries info-hashes and peer ids as raw 20-byte strings; the types that name
// them (`swarmbak_core::InfoHash`, `PeerId`) wrap exactly these bytes. swarmbak never
// counts machines by peer id (see `sb_key`).

/// The 8 reserved bytes of the handshake: extension bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Reserved(pub [u8; 8]);

impl Reserved {
    /// What swarmbak sets: the Fast extension (BEP 6) and the extension protocol (BEP 10).
    pub const SWARMBAK: Reserved = Reserved([0, 0, 0, 0, 0, 0x10, 0, 0x04]);

    /// BEP 6 Fast extension: `reserved[7] & 0x04`.
    pub fn fast(&self) -> bool {
        self.0[7] & 0x04 != 0
    }

    /// BEP 10 extension protocol: `reserved[5] & 0x10`.
    pub fn extension_protocol(&self) -> bool {
        self.0[5] & 0x10 != 0
    }

    /// BEP 5 DHT (the peer sends `port` messages): `reserved[7] & 0x01`.
    pub fn dht(&self) -> bool {
        self.0[7] & 0x01 != 0
    }

    /// With the Fast bit set or cleared.
    pub fn with_fast(self, on: bool) -> Self {
        self.with_bit(7, 0x04, on)
    }

    /// With the extension-protocol bit set or cleared.
    pub fn with_extension_protocol(self, on: bool) -> Self {
        self.with_bit(5, 0x10, on)
    }

    /// With the DHT bit set or cleared.
    pub fn with_dht(self, on: bool) -> Self {
        self.with_bit(7, 0x01, on)
    }

    fn with_bit(mut self, byte: usize, mask: u8, on: bool) -> Self {
        if on {
            self.0[byte] |= mask;
        } else {
            self.0[byte] &= !mask;
        }
        self
    }

    /// The extensions both sides support (bitwise and).
    pub fn common(self, other: Reserved) -> Reserved {
        let mut out = [0u8; 8];
        for (o, (a, b)) in out.iter_mut().zip(self.0.iter().zip(other.0.iter())) {
            *o = a & b;
        }
        Reserved(out)
    }
}

/// A handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handshake {
    /// Extension bits.
    pub reserved: Reserved,
    /// The torrent.
    pub info_hash: [u8; 20],
    /// The sender's peer id.
    pub peer_id: [u8; 20],
}

impl Handshake {
    /// A handshake with swarmbak's reserved bits ([`Reserved::SWARMBAK`]).
    pub fn new(info_hash: [u8; 20], peer_id: [u8; 20]) -> Self {
        Handshake {
            reserved: Reserved::SWARMBAK,
            info_hash,
            peer_id,
        }
    }

    /// The 68 bytes on the wire.
    pub fn to_bytes(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[0] = 19;
        out[1..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved.0);
        out[28..48].copy_from_slice(&self.info_hash);
        out[48..68].copy_from_slice(&self.peer_id);
        out
    }

    /// Appends the 68 bytes to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_slice(&self.to_bytes());
    }

    /// Parses exactly one handshake from the first 68 bytes of `buf` (more is ignored).
    /// Fewer than 68 bytes is [`WireError::TooShort`].
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        check_prefix(buf)?;
        if buf.len() < HANDSHAKE_LEN {
            return Err(WireError::TooShort {
                message: "handshake",
                len: buf.len() as u32,
                min: HANDSHAKE_LEN as u32,
            });
        }
        let mut reserved = [0u8; 8];
        reserved.copy_from_slice(&buf[20..28]);
        let mut info_hash = [0u8; 20];
        info_hash.copy_from_slice(&buf[28..48]);
        let mut peer_id = [0u8; 20];
        peer_id.copy_from_slice(&buf[48..68]);
        Ok(Handshake {
            reserved: Reserved(reserved),
            info_hash,
            peer_id,
        })
    }

    /// Streaming decode: `Ok(None)` until 68 bytes are buffered, then consumes them.
    /// A wrong protocol prefix fails as soon as its first wrong byte arrives.
    pub fn decode(src: &mut BytesMut) -> Result<Option<Self>, WireError> {
        check_prefix(src)?;
        if src.len() < HANDSHAKE_LEN {
            src.reserve(HANDSHAKE_LEN - src.len());
            return Ok(None);
        }
        let hs = Handshake::parse(&src[..HANDSHAKE_LEN])?;
        src.advance(HANDSHAKE_LEN);
        Ok(Some(hs))
    }
}

/// Checks the bytes present against `\x13BitTorrent protocol`.
fn check_prefix(buf: &[u8]) -> Result<(), WireError> {
    let mut expected = [0u8; 20];
    expected[0] = 19;
    expected[1..].copy_from_slice(PROTOCOL);
    for (offset, (&byte, &want)) in buf.iter().zip(expected.iter()).enumerate() {
        if byte != want {
            return Err(WireError::BadHandshake {
                offset,
                byte,
                expected: want,
            });
        }
    }
    Ok(())
}
