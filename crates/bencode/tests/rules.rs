//! One test per decoding and encoding rule.

use swarmbak_bencode::{
    decode, decode_prefix, decode_with, DecodeError, EncodeError, Encoder, Limits, OwnedValue,
    Reading, Value,
};

fn err(input: &[u8]) -> DecodeError {
    match decode(input) {
        Ok(v) => panic!("{:?} decoded to {v:?}", String::from_utf8_lossy(input)),
        Err(e) => e,
    }
}

#[test]
fn integers() {
    assert_eq!(decode(b"i0e").unwrap(), Value::Int(0));
    assert_eq!(decode(b"i42e").unwrap(), Value::Int(42));
    assert_eq!(decode(b"i-42e").unwrap(), Value::Int(-42));
    assert_eq!(
        decode(b"i9223372036854775807e").unwrap(),
        Value::Int(i64::MAX)
    );
    assert_eq!(
        decode(b"i-9223372036854775808e").unwrap(),
        Value::Int(i64::MIN)
    );
}

#[test]
fn integer_rules() {
    assert_eq!(err(b"ie"), DecodeError::EmptyInt { offset: 0 });
    assert_eq!(err(b"i-e"), DecodeError::EmptyInt { offset: 0 });
    assert_eq!(err(b"i03e"), DecodeError::IntLeadingZero { offset: 0 });
    assert_eq!(err(b"i00e"), DecodeError::IntLeadingZero { offset: 0 });
    assert_eq!(err(b"i-03e"), DecodeError::IntLeadingZero { offset: 0 });
    assert_eq!(err(b"i-0e"), DecodeError::NegativeZero { offset: 0 });
    assert_eq!(
        err(b"i9223372036854775808e"),
        DecodeError::IntOverflow { offset: 0 }
    );
    assert_eq!(
        err(b"i-9223372036854775809e"),
        DecodeError::IntOverflow { offset: 0 }
    );
    assert!(matches!(
        err(b"i+1e"),
        DecodeError::UnexpectedByte { offset: 1, .. }
    ));
    assert!(matches!(
        err(b"i1.5e"),
        DecodeError::UnexpectedByte { offset: 2, .. }
    ));
    assert!(matches!(
        err(b"i 1e"),
        DecodeError::UnexpectedByte { offset: 1, .. }
    ));
    assert_eq!(
        err(b"i12"),
        DecodeError::UnexpectedEof {
            offset: 3,
            reading: Reading::Int { start: 0 }
        }
    );
}

#[test]
fn strings() {
    assert_eq!(decode(b"0:").unwrap(), Value::Bytes(b""));
    assert_eq!(decode(b"4:spam").unwrap(), Value::Bytes(b"spam"));
    assert_eq!(decode(b"3:\x00\xff:").unwrap(), Value::Bytes(b"\x00\xff:"));
    assert_eq!(decode(b"4:spam").unwrap().as_str(), Some("spam"));
    assert_eq!(decode(b"1:\xff").unwrap().as_str(), None);
}

#[test]
fn string_rules() {
    assert_eq!(
        err(b"04:spam"),
        DecodeError::StringLengthLeadingZero { offset: 0 }
    );
    assert_eq!(
        err(b"00:"),
        DecodeError::StringLengthLeadingZero { offset: 0 }
    );
    assert_eq!(
        err(b"99999999999999999999999:"),
        DecodeError::StringLengthOverflow { offset: 0 }
    );
    assert!(matches!(
        err(b"4x"),
        DecodeError::UnexpectedByte { offset: 1, .. }
    ));
    assert!(matches!(
        err(b"-1:a"),
        DecodeError::UnexpectedByte { offset: 0, .. }
    ));
    assert_eq!(
        err(b"12"),
        DecodeError::UnexpectedEof {
            offset: 2,
            reading: Reading::StringLength { start: 0 }
        }
    );
}

#[test]
fn string_longer_than_input_names_offset_and_length() {
    let mut input = b"d4:infod6:pieces40:".to_vec();
    input.extend_from_slice(&[0u8; 10]);
    let e = err(&input);
    assert_eq!(
        e,
        DecodeError::UnexpectedEof {
            offset: 29,
            reading: Reading::String { start: 16, len: 40 }
        }
    );
    assert_eq!(
        e.to_string(),
        "unexpected end of input at offset 29 while reading a string of 40 bytes"
    );
    assert_eq!(e.offset(), 29);
}

#[test]
fn lists_and_dicts() {
    let v = decode(b"l4:spami7ee").unwrap();
    let l = v.as_list().unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(l.get(0).unwrap().as_bytes(), Some(&b"spam"[..]));
    assert_eq!(l.get(1).unwrap().as_int(), Some(7));
    assert_eq!(v.raw(), Some(&b"l4:spami7ee"[..]));

    let v = decode(b"d0:de3:cow3:moo4:spamlee").unwrap();
    let d = v.as_dict().unwrap();
    assert_eq!(d.get(b"cow").unwrap().as_str(), Some("moo"));
    assert!(d.get(b"spam").unwrap().as_list().unwrap().is_empty());
    assert!(d.get(b"").unwrap().as_dict().unwrap().is_empty());
    assert_eq!(d.get(b"").unwrap().raw(), Some(&b"de"[..]));
    assert!(d.get(b"nope").is_none());
    assert!(d.is_sorted());
}

#[test]
fn unsorted_keys_are_kept_in_input_order() {
    let input = b"d1:bi2e1:ai1ee";
    let v = decode(input).unwrap();
    let d = v.as_dict().unwrap();
    let keys: Vec<&[u8]> = d.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![&b"b"[..], &b"a"[..]]);
    assert_eq!(d.get(b"a").unwrap().as_int(), Some(1));
    assert!(!d.is_sorted());
    assert_eq!(d.raw(), &input[..]);
}

#[test]
fn duplicate_keys_first_wins_on_lookup() {
    let v = decode(b"d1:ai1e1:ai2ee").unwrap();
    let d = v.as_dict().unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d.get(b"a").unwrap().as_int(), Some(1));
    assert!(!d.is_sorted());
    // The owned copy keeps the same entry lookup sees.
    let owned = v.to_owned_value();
    assert_eq!(owned.to_bytes(), b"d1:ai1ee");
}

#[test]
fn raw_spans_point_into_the_input() {
    let input = b"d4:infod1:zi1e1:ai2ee3:zzz0:e";
    let v = decode(input).unwrap();
    let info = v.as_dict().unwrap().get(b"info").unwrap();
    assert_eq!(info.raw(), Some(&b"d1:zi1e1:ai2ee"[..]));
    assert_eq!(Value::Int(3).raw(), None);
}

#[test]
fn dictionary_keys_must_be_strings() {
    assert_eq!(err(b"di1ei2ee"), DecodeError::NonStringKey { offset: 1 });
    assert_eq!(err(b"dlei2ee"), DecodeError::NonStringKey { offset: 1 });
    assert!(matches!(
        err(b"dxe"),
        DecodeError::UnexpectedByte { offset: 1, .. }
    ));
}

#[test]
fn dict_key_without_value() {
    assert!(matches!(
        err(b"d1:ae"),
        DecodeError::UnexpectedByte { offset: 4, .. }
    ));
    assert_eq!(
        err(b"d1:a"),
        DecodeError::UnexpectedEof {
            offset: 4,
            reading: Reading::Dict { start: 0 }
        }
    );
}

#[test]
fn truncated_containers() {
    assert_eq!(
        err(b"l"),
        DecodeError::UnexpectedEof {
            offset: 1,
            reading: Reading::List { start: 0 }
        }
    );
    assert_eq!(
        err(b"d"),
        DecodeError::UnexpectedEof {
            offset: 1,
            reading: Reading::Dict { start: 0 }
        }
    );
    assert_eq!(
        err(b""),
        DecodeError::UnexpectedEof {
            offset: 0,
            reading: Reading::Value
        }
    );
}

#[test]
fn stray_bytes() {
    assert!(matches!(
        err(b"e"),
        DecodeError::UnexpectedByte { offset: 0, .. }
    ));
    assert!(matches!(
        err(b"x"),
        DecodeError::UnexpectedByte { offset: 0, .. }
    ));
    assert!(matches!(
        err(b"lxe"),
        DecodeError::UnexpectedByte { offset: 1, .. }
    ));
}

#[test]
fn trailing_data_is_an_error_for_decode_but_not_decode_prefix() {
    assert_eq!(
        err(b"i1ei2e"),
        DecodeError::TrailingData { offset: 3, len: 3 }
    );
    assert_eq!(err(b"dee"), DecodeError::TrailingData { offset: 2, len: 1 });
    let (v, used) = decode_prefix(b"i1ei2e").unwrap();
    assert_eq!((v, used), (Value::Int(1), 3));
    let (v, used) = decode_prefix(b"le garbage").unwrap();
    assert!(v.as_list().unwrap().is_empty());
    assert_eq!(used, 2);
}

fn nested(depth: usize) -> Vec<u8> {
    let mut v = vec![b'l'; depth];
    v.extend(std::iter::repeat_n(b'e', depth));
    v
}

#[test]
fn depth_limit_counts_like_libtorrent() {
    // libtorrent 2.0.8 with depth_limit 100: 99 nested lists decode, 100 do not.
    assert!(decode(&nested(99)).is_ok());
    assert_eq!(
        err(&nested(100)),
        DecodeError::DepthLimit {
            offset: 99,
            limit: 100
        }
    );
    let limits = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    assert!(decode_with(b"ld1:aleee", limits).is_err());
    assert!(decode_with(b"ld1:ai1eee", limits).is_ok());
    assert!(decode_with(
        b"i1e",
        Limits {
            max_depth: 0,
            ..limits
        }
    )
    .is_ok());
}

#[test]
fn a_million_nested_lists_is_an_error_not_a_stack_overflow() {
    let input = nested(1_000_000);
    assert!(matches!(
        err(&input),
        DecodeError::DepthLimit { limit: 100, .. }
    ));
    // Even with no depth limit the decoder does not recurse: unterminated nesting fails
    // at the end of the input.
    let open = vec![b'l'; 1_000_000];
    let unlimited = Limits {
        max_depth: usize::MAX,
        max_items: usize::MAX,
    };
    assert!(matches!(
        decode_with(&open, unlimited),
        Err(DecodeError::UnexpectedEof {
            offset: 1_000_000,
            ..
        })
    ));
    let mixed: Vec<u8> = b"d1:a".repeat(500_000);
    assert!(matches!(
        decode_with(&mixed, unlimited),
        Err(DecodeError::UnexpectedEof { .. })
    ));
}

#[test]
fn item_limit() {
    let limits = Limits {
        max_items: 3,
        ..Limits::default()
    };
    assert!(decode_with(b"li1ei2ee", limits).is_ok());
    assert_eq!(
        decode_with(b"li1ei2ei3ee", limits),
        Err(DecodeError::ItemLimit {
            offset: 7,
            limit: 3
        })
    );
    // Keys count too.
    assert!(decode_with(b"d1:ai1ee", limits).is_ok());
    assert!(decode_with(b"d1:ai1e1:bi1ee", limits).is_err());
}

#[test]
fn error_messages_read_well() {
    assert_eq!(
        err(b"i03e").to_string(),
        "integer at offset 0 has a leading zero"
    );
    assert_eq!(
        err(b"l\x01").to_string(),
        "unexpected byte 0x01 at offset 1: expected a value ('i', 'l', 'd' or a digit) or 'e'"
    );
    assert_eq!(
        err(b"d1:a").to_string(),
        "unexpected end of input at offset 4 while reading a dictionary started at offset 0"
    );
}

#[test]
fn owned_value_encodes_canonically() {
    let v = OwnedValue::dict()
        .with("zeta", 1)
        .with(
            "alpha",
            OwnedValue::list([OwnedValue::str("x"), (-5i64).into()]),
        )
        .with(b"\xff", OwnedValue::bytes(vec![0u8, 1]))
        .with("", OwnedValue::dict().build())
        .with_opt("none", None::<i64>)
        .with_opt("some", Some(0i64))
        .build();
    let bytes = v.to_bytes();
    assert_eq!(
        bytes,
        b"d0:de5:alphal1:xi-5ee4:somei0e4:zetai1e1:\xff2:\x00\x01e"
    );
    assert_eq!(v.encoded_len(), bytes.len());
    assert_eq!(decode(&bytes).unwrap().to_owned_value(), v);
}

#[test]
fn integer_encoding_edges() {
    for i in [0, 1, -1, 9, 10, -10, 99, 100, i64::MAX, i64::MIN] {
        let v = OwnedValue::Int(i);
        let b = v.to_bytes();
        assert_eq!(b, format!("i{i}e").as_bytes());
        assert_eq!(v.encoded_len(), b.len());
        assert_eq!(decode(&b).unwrap(), Value::Int(i));
    }
}

#[test]
fn big_list_encodes_linearly() {
    let entries: Vec<OwnedValue> = (0..100_000i64)
        .map(|i| {
            OwnedValue::dict()
                .with("hash", [7u8; 32])
                .with("size", i)
                .build()
        })
        .collect();
    let v = OwnedValue::List(entries);
    let bytes = v.to_bytes();
    assert_eq!(bytes.len(), v.encoded_len());
    let d = decode(&bytes).unwrap();
    assert_eq!(d.as_list().unwrap().len(), 100_000);

    let mut e = Encoder::with_capacity(bytes.len());
    e.begin_list();
    for i in 0..100_000i64 {
        e.begin_dict()
            .key(b"hash")
            .bytes(&[7u8; 32])
            .key(b"size")
            .int(i)
            .end();
    }
    e.end();
    assert_eq!(e.finish().unwrap(), bytes);
}

#[test]
fn encoder_rejects_misuse() {
    let mut e = Encoder::new();
    e.begin_dict().key(b"b").int(1).key(b"a").int(2).end();
    assert!(matches!(e.finish(), Err(EncodeError::UnsortedKey { .. })));

    let mut e = Encoder::new();
    e.begin_dict().key(b"a").int(1).key(b"a").int(2).end();
    assert!(matches!(e.finish(), Err(EncodeError::UnsortedKey { .. })));

    let mut e = Encoder::new();
    e.begin_dict().int(1).end();
    assert_eq!(e.finish(), Err(EncodeError::MissingKey));

    let mut e = Encoder::new();
    e.begin_list().key(b"a").end();
    assert_eq!(e.finish(), Err(EncodeError::UnexpectedKey));

    let mut e = Encoder::new();
    e.begin_dict().key(b"a").end();
    assert_eq!(e.finish(), Err(EncodeError::KeyWithoutValue));

    let mut e = Encoder::new();
    e.begin_list();
    assert_eq!(e.finish(), Err(EncodeError::Unclosed(1)));

    let mut e = Encoder::new();
    e.int(1).end();
    assert_eq!(e.finish(), Err(EncodeError::UnbalancedEnd));

    let mut e = Encoder::new();
    e.int(1).int(2);
    assert_eq!(e.finish(), Err(EncodeError::TopLevelCount(2)));
    assert_eq!(Encoder::new().finish(), Err(EncodeError::TopLevelCount(0)));
}

#[test]
fn encoder_copies_raw_and_decoded_values_verbatim() {
    let input = b"d1:zi1e1:ai2ee";
    let v = decode(input).unwrap();
    let mut e = Encoder::new();
    e.begin_dict()
        .key(b"info")
        .decoded(&v)
        .key(b"n")
        .decoded(&Value::Int(-3))
        .key(b"s")
        .decoded(&Value::Bytes(b"xy"))
        .key(b"v")
        .value(&OwnedValue::int(1))
        .end();
    assert_eq!(
        e.finish().unwrap(),
        b"d4:infod1:zi1e1:ai2ee1:ni-3e1:s2:xy1:vi1ee"
    );
}
