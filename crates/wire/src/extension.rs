//! The BEP 10 extension handshake (extended message id 0).

use std::collections::BTreeMap;
use std::net::IpAddr;

use swarmbak_bencode::{decode_with, Encoder, Limits as BencodeLimits, Value};

use crate::error::ExtensionError;

/// Extended message id of the extension handshake.
pub const EXTENSION_HANDSHAKE_ID: u8 = 0;
/// BEP 9 metadata exchange.
pub const UT_METADATA: &str = "ut_metadata";
/// swarmbak's own extension: machine identity and holdings between swarmbak peers.
pub const SB_MACHINE: &str = "sb_machine";
/// Longest `sb_key` accepted (bytes); a longer one is ignored.
pub const MAX_SB_KEY_LEN: usize = 256;
/// Longest client name (`v`) kept; a longer one is ignored.
pub const MAX_CLIENT_LEN: usize = 256;

/// The extension handshake dictionary. Parsing keeps what it understands and ignores the
/// rest: unknown keys, and known keys with the wrong type or out of range, are dropped
/// (foreign clients send all sorts), never an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtensionHandshake {
    /// `m`: extension name → the id the sender wants to receive it under (1..=255).
    /// A name with id 0 (disabled, per BEP 10) is left out.
    pub extensions: BTreeMap<String, u8>,
    /// `v`: client name and version.
    pub client: Option<String>,
    /// `p`: the sender's listening port.
    pub port: Option<u16>,
    /// `reqq`: how many outstanding requests the sender accepts.
    pub reqq: Option<u32>,
    /// `metadata_size` (BEP 9): bytes of the info dictionary.
    pub metadata_size: Option<u64>,
    /// `yourip`: the receiver's address as the sender sees it (4 or 16 bytes).
    pub yourip: Option<IpAddr>,
    /// `sb_key` (swarmbak): the sending machine's public key. Machines are counted by
    /// this key, never by peer id.
    pub sb_key: Option<Vec<u8>>,
    /// `sb_owner` (swarmbak): 1 when the sender owns the snapshot this connection is for
    /// (so other machines never count the owner as a holder of its own snapshot).
    pub sb_owner: bool,
    /// `sb_nonce` (swarmbak): 32 fresh random bytes per connection, sent by enrolled
    /// machines; with `m.sb_machine` it opens the `sb_machine` authentication
    /// (wire.md "Authenticated peers"). A value of another length is absent.
    pub sb_nonce: Option<[u8; 32]>,
}

impl ExtensionHandshake {
    /// The id the sender wants `name` sent under, if it supports it.
    pub fn extension_id(&self, name: &str) -> Option<u8> {
        self.extensions.get(name).copied()
    }

    /// The bencoded dictionary (the payload of extended message 0).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.begin_dict();
        e.key(b"m").begin_dict();
        for (name, id) in &self.extensions {
            e.key(name.as_bytes()).int(i64::from(*id));
        }
        e.end();
        if let Some(size) = self.metadata_size {
            e.key(b"metadata_size").int(clamp_i64(size));
        }
        if let Some(p) = self.port {
            e.key(b"p").int(i64::from(p));
        }
        if let Some(q) = self.reqq {
            e.key(b"reqq").int(i64::from(q));
        }
        if let Some(k) = &self.sb_key {
            e.key(b"sb_key").bytes(k);
        }
        if let Some(n) = &self.sb_nonce {
            e.key(b"sb_nonce").bytes(n);
        }
        if self.sb_owner {
            e.key(b"sb_owner").int(1);
        }
        if let Some(v) = &self.client {
            e.key(b"v").str(v);
        }
        if let Some(ip) = self.yourip {
            match ip {
                IpAddr::V4(a) => e.key(b"yourip").bytes(&a.octets()),
                IpAddr::V6(a) => e.key(b"yourip").bytes(&a.octets()),
            };
        }
        e.end();
        // Keys are written in sorted order above and every container is closed, so the
        // encoder cannot report misuse; fall back to an empty dictionary regardless.
        e.finish().unwrap_or_else(|_| b"de".to_vec())
    }

    /// Parses an extension handshake payload. Only a payload that is not a bencoded
    /// dictionary is an error.
    pub fn parse(payload: &[u8]) -> Result<Self, ExtensionError> {
        let limits = BencodeLimits {
            max_depth: 16,
            max_items: 10_000,
        };
        let value =
            decode_with(payload, limits).map_err(|e| ExtensionError::Bencode(e.to_string()))?;
        let dict = value
            .as_dict()
            .ok_or_else(|| ExtensionError::NotADict(value.type_name()))?;
        let mut out = ExtensionHandshake::default();
        if let Some(m) = dict.get(b"m").and_then(Value::as_dict) {
            for (name, v) in m.iter() {
                let (Ok(name), Some(id)) = (std::str::from_utf8(name), v.as_int()) else {
                    continue;
                };
                if let Ok(id @ 1..=255) = u8::try_from(id) {
                    out.extensions.entry(name.to_owned()).or_insert(id);
                }
            }
        }
        out.client = dict
            .get(b"v")
            .and_then(Value::as_bytes)
            .filter(|v| v.len() <= MAX_CLIENT_LEN)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        out.port = int_in(dict.get(b"p"))
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0);
        out.reqq = int_in(dict.get(b"reqq")).and_then(|q| u32::try_from(q).ok());
        out.metadata_size = int_in(dict.get(b"metadata_size")).and_then(|s| u64::try_from(s).ok());
        out.yourip = dict.get(b"yourip").and_then(Value::as_bytes).and_then(|b| {
            if let Ok(a) = <[u8; 4]>::try_from(b) {
                Some(IpAddr::from(a))
            } else if let Ok(a) = <[u8; 16]>::try_from(b) {
                Some(IpAddr::from(a))
            } else {
                None
            }
        });
        out.sb_owner = int_in(dict.get(b"sb_owner")) == Some(1);
        out.sb_nonce = dict
            .get(b"sb_nonce")
            .and_then(Value::as_bytes)
            .and_then(|n| <[u8; 32]>::try_from(n).ok());
        out.sb_key = dict
            .get(b"sb_key")
            .and_then(Value::as_bytes)
            .filter(|k| !k.is_empty() && k.len() <= MAX_SB_KEY_LEN)
            .map(<[u8]>::to_vec);
        Ok(out)
    }
}

fn int_in(v: Option<&Value<'_>>) -> Option<i64> {
    v.and_then(Value::as_int)
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sb_owner_round_trips_and_is_absent_by_default() {
        let mut eh = super::ExtensionHandshake {
            sb_key: Some(b"age1owner".to_vec()),
            ..Default::default()
        };
        assert!(
            !super::ExtensionHandshake::parse(&eh.encode())
                .unwrap()
                .sb_owner
        );
        assert!(!String::from_utf8_lossy(&eh.encode()).contains("sb_owner"));
        eh.sb_owner = true;
        let back = super::ExtensionHandshake::parse(&eh.encode()).unwrap();
        assert!(back.sb_owner);
        assert_eq!(back.sb_key.as_deref(), Some(&b"age1owner"[..]));
    }

    use super::*;

    #[test]
    fn round_trip_and_canonical() {
        let mut h = ExtensionHandshake::default();
        h.extensions.insert(UT_METADATA.into(), 3);
        h.extensions.insert(SB_MACHINE.into(), 7);
        h.client = Some("swarmbak 0.1.0".into());
        h.port = Some(6881);
        h.reqq = Some(500);
        h.metadata_size = Some(31235);
        h.yourip = Some(IpAddr::from([127, 0, 0, 1]));
        h.sb_key = Some(b"age1examplekey".to_vec());
        let bytes = h.encode();
        assert_eq!(
            bytes,
            b"d1:md10:sb_machinei7e11:ut_metadatai3ee13:metadata_sizei31235e1:pi6881e4:reqqi500e6:sb_key14:age1examplekey1:v14:swarmbak 0.1.06:yourip4:\x7f\x00\x00\x01e".to_vec()
        );
        assert_eq!(ExtensionHandshake::parse(&bytes), Ok(h));
        assert_eq!(
            ExtensionHandshake::parse(b"de"),
            Ok(ExtensionHandshake::default())
        );
    }

    #[test]
    fn foreign_junk_is_ignored() {
        // unsorted keys, wrong types, id 0 (disabled), out-of-range ids, unknown keys,
        // a 5-byte yourip, negative port, an empty sb_key
        let raw = b"d1:v3:lt!1:md11:ut_metadatai0e6:ut_pexi1e3:bigi300e3:negi-1e3:strd1:xi1eee1:pi-5e4:reqq3:abc6:yourip5:abcde13:metadata_sizei-1e6:sb_key0:7:unknownli1eee";
        let h = ExtensionHandshake::parse(raw).unwrap();
        assert_eq!(h.extension_id("ut_pex"), Some(1));
        assert_eq!(h.extension_id(UT_METADATA), None);
        assert_eq!(h.extensions.len(), 1);
        assert_eq!(h.client.as_deref(), Some("lt!"));
        assert_eq!(h.port, None);
        assert_eq!(h.reqq, None);
        assert_eq!(h.yourip, None);
        assert_eq!(h.metadata_size, None);
        assert_eq!(h.sb_key, None);
    }

    #[test]
    fn sb_nonce_is_32_bytes_or_absent() {
        let h = ExtensionHandshake {
            sb_nonce: Some([7; 32]),
            ..Default::default()
        };
        let b = h.encode();
        assert!(b.windows(10).any(|w| w == b"8:sb_nonce"));
        assert_eq!(
            ExtensionHandshake::parse(&b).unwrap().sb_nonce,
            Some([7; 32])
        );
        let short = b"d8:sb_nonce31:0123456789012345678901234567890e";
        assert_eq!(ExtensionHandshake::parse(short).unwrap().sb_nonce, None);
    }

    #[test]
    fn not_a_dict_is_an_error() {
        assert!(matches!(
            ExtensionHandshake::parse(b"le"),
            Err(ExtensionError::NotADict("list"))
        ));
        assert!(matches!(
            ExtensionHandshake::parse(b"d1:m"),
            Err(ExtensionError::Bencode(_))
        ));
        assert!(matches!(
            ExtensionHandshake::parse(b""),
            Err(ExtensionError::Bencode(_))
        ));
    }
}
