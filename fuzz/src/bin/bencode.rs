//! `swarmbak_bencode::decode` on arbitrary bytes (every tracker reply, torrent, extension
//! handshake and manifest starts here).
//!
//! Invariants: decoding never panics; an accepted value re-encodes canonically, and the
//! canonical form decodes to the same value and re-encodes to itself; `decode_prefix`
//! agrees with `decode` on what it consumed; every list and dictionary's raw bytes are
//! the span of the input it was read from.

use swarmbak_bencode::{decode, decode_prefix, Value};

fn check_raw(v: &Value<'_>, input: &[u8], depth: usize) {
    if let Some(raw) = v.raw() {
        let start = raw.as_ptr() as usize - input.as_ptr() as usize;
        assert!(start + raw.len() <= input.len());
        assert!(matches!(raw.first(), Some(b'l' | b'd')));
        assert_eq!(raw.last(), Some(&b'e'));
        // The raw span decodes on its own to the same value (checked near the top only,
        // to keep an execution linear in the input).
        if depth < 2 {
            let again = decode(raw).expect("a raw span decodes");
            assert_eq!(again.to_owned_value(), v.to_owned_value());
        }
    }
    match v {
        Value::List(l) => l.iter().for_each(|i| check_raw(i, input, depth + 1)),
        Value::Dict(d) => d.iter().for_each(|(_, i)| check_raw(i, input, depth + 1)),
        _ => {}
    }
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok((v, used)) = decode_prefix(data) {
            assert!(used <= data.len());
            let whole = decode(&data[..used]).expect("the consumed prefix decodes alone");
            assert_eq!(whole, v);
            check_raw(&v, data, 0);
            let canonical = v.to_owned_value().to_bytes();
            assert_eq!(canonical.len(), v.to_owned_value().encoded_len());
            let back = decode(&canonical).expect("canonical output decodes");
            assert_eq!(back.to_owned_value(), v.to_owned_value());
            assert_eq!(back.to_owned_value().to_bytes(), canonical);
            if let Value::Dict(d) = &back {
                assert!(d.is_sorted());
            }
            if used == data.len() {
                assert!(decode(data).is_ok());
            }
        } else {
            assert!(decode(data).is_err());
        }
    });
}
