//! Laws: canonical encode∘decode is the identity, hostile bytes never panic.

use proptest::prelude::*;
use swarmbak_bencode::{decode, decode_prefix, OwnedValue};

fn value() -> impl Strategy<Value = OwnedValue> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(OwnedValue::Int),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(OwnedValue::Bytes),
    ];
    leaf.prop_recursive(6, 200, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(OwnedValue::List),
            proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..12),
                inner,
                0..8
            )
            .prop_map(OwnedValue::Dict),
        ]
    })
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(v in value()) {
        let bytes = v.to_bytes();
        prop_assert_eq!(bytes.len(), v.encoded_len());
        let decoded = decode(&bytes).unwrap();
        if let Some(raw) = decoded.raw() {
            prop_assert_eq!(raw, &bytes[..]);
        }
        prop_assert_eq!(decoded.to_owned_value(), v);
    }

    #[test]
    fn canonical_input_round_trips_byte_for_byte(v in value()) {
        let bytes = v.to_bytes();
        let again = decode(&bytes).unwrap().to_owned_value().to_bytes();
        prop_assert_eq!(again, bytes);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
        if let Ok((_, used)) = decode_prefix(&bytes) {
            prop_assert!(used <= bytes.len());
        }
    }

    #[test]
    fn mutated_valid_input_never_panics(
        v in value(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = v.to_bytes();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let _ = decode(&bytes);
        let _ = decode(&bytes[..cut.index(bytes.len() + 1)]);
    }

    #[test]
    fn every_strict_prefix_of_a_value_is_an_error(v in value()) {
        let bytes = v.to_bytes();
        for cut in 0..bytes.len() {
            // A value's encoding ends exactly at its last byte, so no proper prefix
            // decodes.
            if let Ok(short) = decode(&bytes[..cut]) {
                prop_assert!(false, "prefix {:?} decoded to {:?}", &bytes[..cut], short);
            }
        }
    }
}
