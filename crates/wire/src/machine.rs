//! The `sb_machine` extension's messages (protocol-spec/wire.md "Authenticated peers"):
//! the four-step exchange in which two machines of one organisation prove membership
//! (a MAC keyed by the organisation secret) and then their certified signing keys. This
//! module only encodes and parses; the bytes the MACs and signatures cover are
//! `swarmbak_trust`'s (trust.md §10) and the exchange is run by the agent.

use swarmbak_bencode::{decode_with, Encoder, Limits as BencodeLimits, Value};

use crate::error::ExtensionError;

/// Largest `sb_machine` payload accepted (bytes); a larger one is malformed.
pub const MAX_MACHINE_MESSAGE: usize = 4096;

/// One `sb_machine` message (a bencoded dictionary; `t` is the type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineMessage {
    /// `t` 1, dialler → acceptor: the dialler's membership MAC.
    Member {
        /// MAC_D.
        mac: [u8; 32],
    },
    /// `t` 2, acceptor → dialler: the acceptor's MAC, certificate and flags.
    MemberAck {
        /// The acceptor's certificate envelope (trust.md §3).
        cert: Vec<u8>,
        /// Flags (bit 0: holder).
        flags: u8,
        /// MAC_A.
        mac: [u8; 32],
    },
    /// `t` 3, dialler → acceptor: the dialler's certificate, flags and signature.
    Sign {
        /// The dialler's certificate envelope.
        cert: Vec<u8>,
        /// Flags (bit 0: holder).
        flags: u8,
        /// SIG_D.
        sig: [u8; 64],
    },
    /// `t` 4, acceptor → dialler: the acceptor's signature.
    SignAck {
        /// SIG_A.
        sig: [u8; 64],
    },
    /// A type this version does not know (a later version's message).
    Unknown(i64),
}

/// Flag bit 0: the machine is a holder (a placement candidate).
pub const FLAG_HOLDER: u8 = 1;

impl MachineMessage {
    /// The message type (`t`).
    pub fn kind(&self) -> i64 {
        match self {
            MachineMessage::Member { .. } => 1,
            MachineMessage::MemberAck { .. } => 2,
            MachineMessage::Sign { .. } => 3,
            MachineMessage::SignAck { .. } => 4,
            MachineMessage::Unknown(t) => *t,
        }
    }

    /// The canonical bencoded payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.begin_dict();
        match self {
            MachineMessage::Member { mac } => {
                e.key(b"mac").bytes(mac);
            }
            MachineMessage::MemberAck { cert, flags, mac } => {
                e.key(b"cert")
                    .bytes(cert)
                    .key(b"f")
                    .int(i64::from(*flags))
                    .key(b"mac")
                    .bytes(mac);
            }
            MachineMessage::Sign { cert, flags, sig } => {
                e.key(b"cert")
                    .bytes(cert)
                    .key(b"f")
                    .int(i64::from(*flags))
                    .key(b"sig")
                    .bytes(sig);
            }
            MachineMessage::SignAck { sig } => {
                e.key(b"sig").bytes(sig);
            }
            MachineMessage::Unknown(_) => {}
        }
        e.key(b"t").int(self.kind()).end();
        // Keys are written in sorted order and the dictionary is closed.
        e.finish().unwrap_or_else(|_| b"de".to_vec())
    }

    /// Parses a payload. Unknown keys are ignored; a known type with a missing or
    /// wrong-sized field, a payload over [`MAX_MACHINE_MESSAGE`], or one that is not a
    /// dictionary with an integer `t` is an error.
    pub fn parse(payload: &[u8]) -> Result<MachineMessage, ExtensionError> {
        if payload.len() > MAX_MACHINE_MESSAGE {
            return Err(ExtensionError::Bencode(format!(
                "an sb_machine message of {} bytes (at most {MAX_MACHINE_MESSAGE})",
                payload.len()
            )));
        }
        let limits = BencodeLimits {
            max_depth: 4,
            max_items: 64,
        };
        let v = decode_with(payload, limits).map_err(|e| ExtensionError::Bencode(e.to_string()))?;
        let d = v
            .as_dict()
            .ok_or_else(|| ExtensionError::NotADict(v.type_name()))?;
        let field = |k: &str| -> Result<&[u8], ExtensionError> {
            d.get(k.as_bytes())
                .and_then(Value::as_bytes)
                .ok_or_else(|| ExtensionError::Bencode(format!("sb_machine: no valid `{k}`")))
        };
        let fixed = |k: &str| -> Result<Vec<u8>, ExtensionError> { field(k).map(<[u8]>::to_vec) };
        let mac = || -> Result<[u8; 32], ExtensionError> {
            field("mac")?
                .try_into()
                .map_err(|_| ExtensionError::Bencode("sb_machine: `mac` is 32 bytes".into()))
        };
        let sig = || -> Result<[u8; 64], ExtensionError> {
            field("sig")?
                .try_into()
                .map_err(|_| ExtensionError::Bencode("sb_machine: `sig` is 64 bytes".into()))
        };
        let flags = || -> Result<u8, ExtensionError> {
            d.get(b"f")
                .and_then(Value::as_int)
                .and_then(|f| u8::try_from(f).ok())
                .ok_or_else(|| ExtensionError::Bencode("sb_machine: `f` is 0..=255".into()))
        };
        let t = d
            .get(b"t")
            .and_then(Value::as_int)
            .ok_or_else(|| ExtensionError::Bencode("sb_machine: no integer `t`".into()))?;
        Ok(match t {
            1 => MachineMessage::Member { mac: mac()? },
            2 => MachineMessage::MemberAck {
                cert: fixed("cert")?,
                flags: flags()?,
                mac: mac()?,
            },
            3 => MachineMessage::Sign {
                cert: fixed("cert")?,
                flags: flags()?,
                sig: sig()?,
            },
            4 => MachineMessage::SignAck { sig: sig()? },
            other => MachineMessage::Unknown(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_canonical() {
        let all = [
            MachineMessage::Member { mac: [1; 32] },
            MachineMessage::MemberAck {
                cert: b"cert".to_vec(),
                flags: 1,
                mac: [2; 32],
            },
            MachineMessage::Sign {
                cert: b"c".to_vec(),
                flags: 0,
                sig: [3; 64],
            },
            MachineMessage::SignAck { sig: [4; 64] },
        ];
        for m in all {
            assert_eq!(MachineMessage::parse(&m.encode()), Ok(m.clone()));
        }
        let member = MachineMessage::Member { mac: [0xab; 32] }.encode();
        let mut want = b"d3:mac32:".to_vec();
        want.extend([0xab; 32]);
        want.extend(b"1:ti1ee");
        assert_eq!(member, want);
        assert_eq!(
            MachineMessage::parse(b"d1:ti9e5:extrai1ee"),
            Ok(MachineMessage::Unknown(9))
        );
    }

    #[test]
    fn wrong_sizes_and_shapes_are_errors() {
        for bad in [
            &b"d3:mac31:01234567890123456789012345678901:ti1ee"[..],
            b"d1:ti4ee",
            b"d1:ti2e3:mac32:01234567890123456789012345678901e",
            b"le",
            b"d3:mac32:01234567890123456789012345678901e",
            b"d4:cert1:x1:fi256e3:mac32:012345678901234567890123456789011:ti2ee",
        ] {
            assert!(MachineMessage::parse(bad).is_err(), "{bad:?}");
        }
        let huge = vec![b'x'; MAX_MACHINE_MESSAGE + 1];
        assert!(MachineMessage::parse(&huge).is_err());
    }
}
