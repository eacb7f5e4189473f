//! swarmbak torrents: build → parse round trips and the parameter checks.

use proptest::prelude::*;
use swarmbak_bencode::{decode, OwnedValue};
use swarmbak_metainfo::{
    build_swarmbak_torrent, Metainfo, MetainfoError, SwarmbakParams, SwarmbakTorrent,
};

fn sample(k: u16, m: u16, stripes: u64, piece_length: u64) -> SwarmbakTorrent {
    let pieces = stripes as usize * (k as usize + m as usize);
    SwarmbakTorrent {
        announce: Some("http://tracker.internal:6969/announce".into()),
        creation_date: 1_700_000_000,
        name: "swarmbak-0123456789abcdef.shards".into(),
        piece_length,
        piece_hashes: (0..pieces).map(|i| [i as u8; 20]).collect(),
        params: SwarmbakParams {
            format: 1,
            k,
            m,
            stripes,
            payload_length: (stripes * u64::from(k) * piece_length).saturating_sub(7),
            manifest_offset: 100,
            manifest_length: 50,
            id: *b"0123456789abcdef",
            roots: None,
        },
    }
}

/// [`sample`] as format 2, with a distinct root per piece.
fn sample2(k: u16, m: u16, stripes: u64, piece_length: u64) -> SwarmbakTorrent {
    let mut t = sample(k, m, stripes, piece_length);
    t.params.format = 2;
    t.params.roots = Some(
        (0..t.piece_hashes.len())
            .map(|i| [(i as u8).wrapping_add(100); 32])
            .collect(),
    );
    t
}

#[test]
fn build_then_parse() {
    let t = sample(10, 4, 3, 16384);
    let bytes = build_swarmbak_torrent(&t).unwrap();
    // Canonical: decoding and re-encoding gives the same bytes.
    assert_eq!(decode(&bytes).unwrap().to_owned_value().to_bytes(), bytes);
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(m.swarmbak(), Some(&t.params));
    assert_eq!(m.announce(), t.announce.as_deref());
    assert_eq!(
        m.created_by(),
        Some(concat!("swarmbak ", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(m.creation_date(), Some(1_700_000_000));
    assert_eq!(m.name(), t.name.as_bytes());
    assert_eq!(m.pieces(), &t.piece_hashes[..]);
    assert_eq!(m.total_length(), 42 * 16384);
    assert!(m.is_private());
    assert!(!m.is_multi_file());
    let info = decode(m.raw_info()).unwrap();
    let keys: Vec<&[u8]> = info.as_dict().unwrap().iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            &b"length"[..],
            b"name",
            b"piece length",
            b"pieces",
            b"private",
            b"swarmbak"
        ]
    );
    // Without a tracker: no announce key; the info-hash does not depend on it.
    let mut no_tracker = t.clone();
    no_tracker.announce = None;
    let b2 = build_swarmbak_torrent(&no_tracker).unwrap();
    let m2 = Metainfo::from_bytes(&b2).unwrap();
    assert_eq!(m2.announce(), None);
    assert_eq!(m2.info_hash(), m.info_hash());
    assert!(!b2.windows(8).any(|w| w == b"announce"));
    // Export to another tracker.
    let m3 = Metainfo::from_bytes(&m.with_announce(Some("http://other/a"))).unwrap();
    assert_eq!(m3.info_hash(), m.info_hash());
    assert_eq!(m3.swarmbak(), m.swarmbak());
    assert_eq!(m.with_announce(None), b2);
}

#[test]
fn smallest_swarmbak_torrent() {
    let mut t = sample(1, 1, 1, 1);
    t.params.payload_length = 1;
    t.params.manifest_offset = 0;
    t.params.manifest_length = 1;
    let bytes = build_swarmbak_torrent(&t).unwrap();
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(m.total_length(), 2);
    assert_eq!(m.swarmbak(), Some(&t.params));
}

fn rebuild_with(f: impl FnOnce(&mut std::collections::BTreeMap<Vec<u8>, OwnedValue>)) -> Vec<u8> {
    let bytes = build_swarmbak_torrent(&sample(2, 1, 2, 16384)).unwrap();
    let mut top = decode(&bytes).unwrap().to_owned_value();
    let OwnedValue::Dict(top_map) = &mut top else {
        unreachable!()
    };
    let Some(OwnedValue::Dict(info)) = top_map.get_mut(&b"info"[..]) else {
        unreachable!()
    };
    let Some(OwnedValue::Dict(sb)) = info.get_mut(&b"swarmbak"[..]) else {
        unreachable!()
    };
    f(sb);
    top.to_bytes()
}

fn bad(f: impl FnOnce(&mut std::collections::BTreeMap<Vec<u8>, OwnedValue>)) -> String {
    match Metainfo::from_bytes(&rebuild_with(f)) {
        Ok(m) => panic!("accepted {:?}", m.swarmbak()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn newer_format_asks_for_an_upgrade() {
    let e = bad(|d| {
        d.insert(b"format".to_vec(), OwnedValue::int(3));
        d.insert(b"roots".to_vec(), OwnedValue::bytes(vec![0u8; 6 * 32]));
    });
    assert_eq!(
        e,
        "swarmbak format version 3 is newer than this swarmbak understands (2); upgrade swarmbak"
    );
    assert!(bad(|d| {
        d.insert(b"format".to_vec(), OwnedValue::int(0));
    })
    .contains("`format` 0"));
}

#[test]
fn malformed_params_are_errors() {
    assert!(bad(|d| {
        d.remove(&b"k"[..]);
    })
    .contains("`k` is missing"));
    assert!(bad(|d| {
        d.insert(b"m".to_vec(), OwnedValue::str("1"));
    })
    .contains("`m` is a string"));
    assert!(bad(|d| {
        d.insert(b"stripes".to_vec(), OwnedValue::int(-1));
    })
    .contains("negative"));
    assert!(bad(|d| {
        d.insert(b"k".to_vec(), OwnedValue::int(70000));
    })
    .contains("too large"));
    assert!(bad(|d| {
        d.insert(b"id".to_vec(), OwnedValue::bytes(vec![0u8; 15]));
    })
    .contains("`id` is 15 bytes"));
    // The whole dictionary of the wrong type.
    let bytes = build_swarmbak_torrent(&sample(2, 1, 2, 16384)).unwrap();
    let mut top = decode(&bytes).unwrap().to_owned_value();
    if let OwnedValue::Dict(t) = &mut top {
        if let Some(OwnedValue::Dict(info)) = t.get_mut(&b"info"[..]) {
            info.insert(b"swarmbak".to_vec(), OwnedValue::int(1));
        }
    }
    assert!(matches!(
        Metainfo::from_bytes(&top.to_bytes()),
        Err(MetainfoError::BadSwarmbak(_))
    ));
}

#[test]
fn inconsistent_params_are_errors() {
    // sample(2, 1, 2, 16384): 6 pieces, payload capacity 65536.
    assert!(bad(|d| {
        d.insert(b"k".to_vec(), OwnedValue::int(0));
        d.insert(b"m".to_vec(), OwnedValue::int(3));
    })
    .contains("`k` is 0"));
    assert!(bad(|d| {
        d.insert(b"stripes".to_vec(), OwnedValue::int(3));
    })
    .contains("make 9 pieces, but the torrent has 6"));
    assert!(bad(|d| {
        d.insert(b"payload length".to_vec(), OwnedValue::int(65537));
    })
    .contains("more than the 65536 bytes"));
    assert!(bad(|d| {
        d.insert(b"manifest offset".to_vec(), OwnedValue::int(65530));
    })
    .contains("does not lie within"));
    assert!(bad(|d| {
        d.insert(b"manifest length".to_vec(), OwnedValue::int(i64::MAX));
    })
    .contains("does not lie within"));
}

#[test]
fn builder_refuses_what_the_parser_would() {
    let mut t = sample(200, 57, 1, 16384);
    assert!(matches!(
        build_swarmbak_torrent(&t),
        Err(MetainfoError::BadSwarmbak(_))
    ));
    t = sample(200, 56, 1, 16384);
    assert!(build_swarmbak_torrent(&t).is_ok());
    t.piece_hashes.pop();
    assert!(build_swarmbak_torrent(&t).is_err());
    let mut t = sample2(2, 1, 1, 16384);
    t.params.format = 3;
    assert!(matches!(
        build_swarmbak_torrent(&t),
        Err(MetainfoError::NewerSwarmbakFormat { found: 3, known: 2 })
    ));
    let mut t = sample(2, 1, 1, 16384);
    t.name = "..".into();
    assert!(matches!(
        build_swarmbak_torrent(&t),
        Err(MetainfoError::BadName(_))
    ));
    let mut t = sample(2, 1, 1, 16384);
    t.piece_length = 1 << 30;
    assert!(build_swarmbak_torrent(&t).is_err());
}

#[test]
fn swarmbak_torrent_must_be_single_file_of_whole_pieces() {
    // A multi-file torrent carrying a swarmbak dictionary.
    let sb = OwnedValue::dict()
        .with("format", 1)
        .with("k", 1)
        .with("m", 1)
        .with("stripes", 1)
        .with("payload length", 1)
        .with("manifest offset", 0)
        .with("manifest length", 1)
        .with("id", [0u8; 16])
        .build();
    let file = OwnedValue::dict()
        .with("length", 32768)
        .with("path", OwnedValue::list([OwnedValue::str("x")]))
        .build();
    let info = OwnedValue::dict()
        .with("files", OwnedValue::list([file]))
        .with("name", "d")
        .with("piece length", 16384)
        .with("pieces", [0u8; 40])
        .with("swarmbak", sb.clone())
        .build();
    let t = OwnedValue::dict().with("info", info).build();
    let e = Metainfo::from_bytes(&t.to_bytes()).unwrap_err();
    assert!(e.to_string().contains("single file"), "{e}");
    // A short last piece.
    let info = OwnedValue::dict()
        .with("length", 32000)
        .with("name", "d")
        .with("piece length", 16384)
        .with("pieces", [0u8; 40])
        .with("swarmbak", sb)
        .build();
    let t = OwnedValue::dict().with("info", info).build();
    let e = Metainfo::from_bytes(&t.to_bytes()).unwrap_err();
    assert!(e.to_string().contains("whole pieces"), "{e}");
}

fn torrent_strategy() -> impl Strategy<Value = SwarmbakTorrent> {
    (
        1u16..=20,
        1u16..=8,
        1u64..=6,
        prop_oneof![Just(16384u64), 1u64..=100_000, Just((1u64 << 30) - 1)],
        any::<[u8; 16]>(),
        any::<i64>(),
        proptest::option::of("[a-z:/.0-9]{0,40}"),
        "swarmbak-[a-zA-Z0-9._-]{1,30}",
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(k, m, stripes, piece_length, id, date, announce, name, p, o, l)| {
                let pieces = stripes * u64::from(k + m);
                let capacity = stripes * u64::from(k) * piece_length;
                let payload_length = p % (capacity + 1);
                let manifest_offset = o % (payload_length + 1);
                let manifest_length = l % (payload_length - manifest_offset + 1);
                SwarmbakTorrent {
                    announce,
                    creation_date: date,
                    name,
                    piece_length,
                    piece_hashes: (0..pieces).map(|i| [(i * 7) as u8; 20]).collect(),
                    params: SwarmbakParams {
                        format: 1,
                        k,
                        m,
                        stripes,
                        payload_length,
                        manifest_offset,
                        manifest_length,
                        id,
                        roots: None,
                    },
                }
            },
        )
}

/// Format 1 or 2 (with roots), as the strategy above.
fn any_format() -> impl Strategy<Value = SwarmbakTorrent> {
    (torrent_strategy(), any::<bool>(), any::<u8>()).prop_map(|(mut t, two, seed)| {
        if two {
            t.params.format = 2;
            t.params.roots = Some(
                (0..t.piece_hashes.len())
                    .map(|i| [(i as u8) ^ seed; 32])
                    .collect(),
            );
        }
        t
    })
}

proptest! {
    #[test]
    fn build_parse_round_trip(t in any_format()) {
        let bytes = build_swarmbak_torrent(&t).unwrap();
        let m = Metainfo::from_bytes(&bytes).unwrap();
        prop_assert_eq!(m.swarmbak(), Some(&t.params));
        prop_assert_eq!(m.pieces(), &t.piece_hashes[..]);
        prop_assert_eq!(m.piece_length(), t.piece_length);
        prop_assert_eq!(m.announce(), t.announce.as_deref());
        prop_assert_eq!(m.creation_date(), Some(t.creation_date));
        prop_assert_eq!(m.as_bytes(), &bytes[..]);
        // Export and re-parse: same info-hash, same parameters.
        let again = Metainfo::from_bytes(&m.with_announce(Some("http://x/announce"))).unwrap();
        prop_assert_eq!(again.info_hash(), m.info_hash());
        prop_assert_eq!(again.swarmbak(), m.swarmbak());
        prop_assert_eq!(again.with_announce(t.announce.as_deref()), bytes);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Metainfo::from_bytes(&bytes);
    }

    #[test]
    fn mutated_torrents_never_panic(
        t in any_format(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = build_swarmbak_torrent(&t).unwrap();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        if let Ok(m) = Metainfo::from_bytes(&bytes) {
            let _ = m.unsafe_paths();
            let _ = m.with_announce(None);
        }
    }
}

#[test]
fn zero_parity_shards_are_refused() {
    let e = bad(|sb| {
        sb.insert(b"m".to_vec(), OwnedValue::int(0));
    });
    assert!(e.contains("`m` is 0"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Format 2: `roots` (protocol-spec/format-v2.md)
// ---------------------------------------------------------------------------------------

#[test]
fn format_2_round_trip_and_key_order() {
    let t = sample2(2, 1, 2, 16384);
    let bytes = build_swarmbak_torrent(&t).unwrap();
    assert_eq!(decode(&bytes).unwrap().to_owned_value().to_bytes(), bytes);
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(m.swarmbak(), Some(&t.params));
    let roots = t.params.roots.as_ref().unwrap();
    assert_eq!(m.swarmbak().unwrap().roots.as_deref(), Some(&roots[..]));
    // Canonical order: `roots` between `payload length` and `stripes`.
    let info = decode(m.raw_info()).unwrap();
    let sb = info.as_dict().unwrap().get(b"swarmbak").unwrap();
    let keys: Vec<&[u8]> = sb.as_dict().unwrap().iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            &b"format"[..],
            b"id",
            b"k",
            b"m",
            b"manifest length",
            b"manifest offset",
            b"payload length",
            b"roots",
            b"stripes"
        ]
    );
    let mut raw = b"5:roots192:".to_vec();
    raw.extend(roots.concat());
    raw.extend_from_slice(b"7:stripesi2ee");
    assert!(m.raw_info().windows(raw.len()).any(|w| w == raw));
}

fn rebuild2_with(f: impl FnOnce(&mut std::collections::BTreeMap<Vec<u8>, OwnedValue>)) -> Vec<u8> {
    rebuild_with(|d| {
        d.insert(b"format".to_vec(), OwnedValue::int(2));
        d.insert(b"roots".to_vec(), OwnedValue::bytes(vec![9u8; 6 * 32]));
        f(d);
    })
}

#[test]
fn format_2_requires_exact_roots() {
    // rebuild_with's torrent has 6 pieces: 192 bytes of roots.
    let ok = Metainfo::from_bytes(&rebuild2_with(|_| {})).unwrap();
    assert_eq!(ok.swarmbak().unwrap().roots, Some(vec![[9u8; 32]; 6]));
    let err =
        |f: fn(&mut std::collections::BTreeMap<Vec<u8>, OwnedValue>)| match Metainfo::from_bytes(
            &rebuild2_with(f),
        ) {
            Ok(m) => panic!("accepted {:?}", m.swarmbak()),
            Err(e @ MetainfoError::BadSwarmbak(_)) => e.to_string(),
            Err(e) => panic!("{e}"),
        };
    let e = err(|d| {
        d.remove(&b"roots"[..]);
    });
    assert_eq!(
        e,
        "bad swarmbak parameters: `roots` is missing; format 2 requires a Merkle root per piece"
    );
    let e = err(|d| {
        d.insert(b"roots".to_vec(), OwnedValue::bytes(vec![9u8; 6 * 32 - 1]));
    });
    assert_eq!(
        e,
        "bad swarmbak parameters: `roots` is 191 bytes, not 32 per piece (6 pieces: 192 bytes)"
    );
    assert!(err(|d| {
        d.insert(b"roots".to_vec(), OwnedValue::bytes(vec![9u8; 7 * 32]));
    })
    .contains("`roots` is 224 bytes"));
    assert!(err(|d| {
        d.insert(b"roots".to_vec(), OwnedValue::bytes(Vec::new()));
    })
    .contains("`roots` is 0 bytes"));
    assert!(err(|d| {
        d.insert(b"roots".to_vec(), OwnedValue::int(1));
    })
    .contains("`roots` is a"));
}

#[test]
fn format_1_ignores_roots() {
    // A `roots` key in a format 1 dictionary, even of the wrong size, is not read.
    for len in [6 * 32, 5] {
        let bytes = rebuild_with(|d| {
            d.insert(b"roots".to_vec(), OwnedValue::bytes(vec![1u8; len]));
        });
        let m = Metainfo::from_bytes(&bytes).unwrap();
        let p = m.swarmbak().unwrap();
        assert_eq!((p.format, p.roots.as_ref()), (1, None));
    }
}

#[test]
fn builder_checks_roots() {
    let mut t = sample2(2, 1, 2, 16384);
    t.params.roots = None;
    let e = build_swarmbak_torrent(&t).unwrap_err().to_string();
    assert!(e.contains("format 2 must have `roots`"), "{e}");
    let mut t = sample2(2, 1, 2, 16384);
    t.params.roots.as_mut().unwrap().pop();
    let e = build_swarmbak_torrent(&t).unwrap_err().to_string();
    assert!(
        e.contains("`roots` holds 5 roots, but the torrent has 6 pieces"),
        "{e}"
    );
    let mut t = sample(2, 1, 2, 16384);
    t.params.roots = Some(vec![[0; 32]; 6]);
    let e = build_swarmbak_torrent(&t).unwrap_err().to_string();
    assert!(e.contains("format 1 has no `roots`"), "{e}");
}
