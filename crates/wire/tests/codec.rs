//! The codec: golden vectors, round trips, malformed input, random bytes.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use swarmbak_wire::{
    decode_message, BlockRef, CodecError, Frame, Handshake, Limits, Message, PeerCodec, Reserved,
    WireError, BLOCK_SIZE, HANDSHAKE_LEN,
};
use tokio_util::codec::{Decoder, Encoder};

/// Hex with `#` comments and any whitespace, as in the annotated examples of
/// protocol-spec/wire.md.
fn annotated_hex(s: &str) -> Vec<u8> {
    let digits: String = s
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    hex::decode(digits).expect("valid hex")
}

fn decode_all(bytes: &[u8], limits: &Limits) -> Result<Vec<Message>, WireError> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(m) = decode_message(&mut buf, limits)? {
        out.push(m);
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    Ok(out)
}

#[test]
fn golden_handshake() {
    let wire = annotated_hex(
        "
        13                                        # pstrlen 19
        426974546f7272656e742070726f746f636f6c    # 'BitTorrent protocol'
        0000000000100004                          # reserved: BEP 10 (byte 5, 0x10), BEP 6 (byte 7, 0x04)
        0102030405060708090a0b0c0d0e0f1011121314  # info_hash
        2d5342303130302d000000000000000000000001  # peer_id '-SB0100-' ...
        ",
    );
    let mut peer_id = [0u8; 20];
    peer_id[..8].copy_from_slice(b"-SB0100-");
    peer_id[19] = 1;
    let info_hash: [u8; 20] = core::array::from_fn(|i| i as u8 + 1);
    let hs = Handshake::new(info_hash, peer_id);
    assert_eq!(hs.to_bytes().to_vec(), wire);
    assert_eq!(Handshake::parse(&wire), Ok(hs));
    assert!(hs.reserved.fast() && hs.reserved.extension_protocol() && !hs.reserved.dht());
    assert!(Reserved::default().with_dht(true).dht());
    assert_eq!(wire.len(), HANDSHAKE_LEN);
}

#[test]
fn golden_messages() {
    let wire = annotated_hex(
        "
        00000000                    # keep-alive: length 0
        00000001 00                 # choke
        00000001 02                 # interested
        00000005 04 0000002a        # have piece 42
        00000002 05 c0              # bitfield: pieces 0 and 1
        0000000d 06 00000001 00004000 00004000   # request piece 1, offset 16384, length 16384
        0000000c 07 00000001 00004000 616263     # piece 1, offset 16384, 'abc'
        0000000d 08 00000001 00004000 00004000   # cancel
        00000003 09 1ae1            # port 6881
        00000001 0e                 # have all (BEP 6)
        0000000d 10 00000001 00004000 00004000   # reject request (BEP 6)
        00000005 11 00000007        # allowed fast piece 7 (BEP 6)
        00000004 14 00 6465         # extended id 0 (handshake), payload 'de'
        ",
    );
    let b = BlockRef::new(1, BLOCK_SIZE, BLOCK_SIZE);
    let expected = vec![
        Message::KeepAlive,
        Message::Choke,
        Message::Interested,
        Message::Have(42),
        Message::Bitfield(Bytes::from_static(&[0xc0])),
        Message::Request(b),
        Message::Piece {
            piece: 1,
            offset: BLOCK_SIZE,
            data: Bytes::from_static(b"abc"),
        },
        Message::Cancel(b),
        Message::Port(6881),
        Message::HaveAll,
        Message::Reject(b),
        Message::AllowedFast(7),
        Message::Extended {
            id: 0,
            payload: Bytes::from_static(b"de"),
        },
    ];
    assert_eq!(decode_all(&wire, &Limits::for_pieces(2)).unwrap(), expected);
    let mut enc = BytesMut::new();
    for m in &expected {
        m.encode(&mut enc);
    }
    assert_eq!(enc.to_vec(), wire);
}

fn arb_block() -> impl Strategy<Value = BlockRef> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(p, o, l)| BlockRef::new(p, o, l))
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        Just(Message::KeepAlive),
        Just(Message::Choke),
        Just(Message::Unchoke),
        Just(Message::Interested),
        Just(Message::NotInterested),
        any::<u32>().prop_map(Message::Have),
        arb_bytes(64).prop_map(Message::Bitfield),
        arb_block().prop_map(Message::Request),
        (
            any::<u32>(),
            any::<u32>(),
            arb_bytes(BLOCK_SIZE as usize + 1)
        )
            .prop_map(|(piece, offset, data)| Message::Piece {
                piece,
                offset,
                data
            }),
        arb_block().prop_map(Message::Cancel),
        any::<u16>().prop_map(Message::Port),
        any::<u32>().prop_map(Message::Suggest),
        Just(Message::HaveAll),
        Just(Message::HaveNone),
        arb_block().prop_map(Message::Reject),
        any::<u32>().prop_map(Message::AllowedFast),
        (any::<u8>(), arb_bytes(300)).prop_map(|(id, payload)| Message::Extended { id, payload }),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(m in arb_message()) {
        let wire = m.to_bytes();
        prop_assert_eq!(wire.len(), m.encoded_len());
        let mut buf = BytesMut::from(&wire[..]);
        let decoded = decode_message(&mut buf, &Limits::default());
        prop_assert_eq!(decoded, Ok(Some(m)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn split_anywhere_decodes_the_same(ms in proptest::collection::vec(arb_message(), 1..8), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let hs = Handshake::new([7; 20], [9; 20]);
        let mut wire = hs.to_bytes().to_vec();
        for m in &ms {
            wire.extend_from_slice(&m.to_bytes());
        }
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort();
        let mut codec = PeerCodec::default();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut at = 0;
        for c in cuts {
            buf.extend_from_slice(&wire[at..c]);
            at = c;
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        let mut want = vec![Frame::Handshake(hs)];
        want.extend(ms.into_iter().map(Frame::Message));
        prop_assert_eq!(frames, want);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000), handshake in any::<bool>()) {
        let mut codec = if handshake {
            PeerCodec::default()
        } else {
            PeerCodec::after_handshake(Limits::for_pieces(100))
        };
        let mut buf = BytesMut::from(&bytes[..]);
        for _ in 0..bytes.len() + 1 {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn random_bodies_with_valid_framing_never_panic(id in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..40)) {
        let mut wire = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        wire.push(id);
        wire.extend_from_slice(&body);
        let mut buf = BytesMut::from(&wire[..]);
        let _ = decode_message(&mut buf, &Limits::for_pieces(37));
    }
}

fn frame(len: u32, id: u8, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(&[id]);
    b.extend_from_slice(body);
    b
}

#[test]
fn wrong_lengths_for_fixed_size_messages() {
    for (id, good) in [
        (0u8, 1u32),
        (1, 1),
        (2, 1),
        (3, 1),
        (4, 5),
        (6, 13),
        (8, 13),
        (9, 3),
        (13, 5),
        (14, 1),
        (15, 1),
        (16, 13),
        (17, 5),
    ] {
        for len in [good - 1, good + 1] {
            if len == 0 {
                continue;
            }
            // the error comes from the prefix alone, before the body is buffered
            let mut buf = frame(len, id, &[]);
            assert!(
                matches!(decode_message(&mut buf, &Limits::default()), Err(WireError::WrongLength { len: l, expected, .. }) if l == len && expected == good),
                "id {id} len {len}"
            );
        }
    }
}

#[test]
fn length_limits() {
    let limits = Limits::default();
    // piece: 16 KiB + 9 is fine, one more is not
    let mut ok = frame(BLOCK_SIZE + 9, 7, &vec![0; BLOCK_SIZE as usize + 8]);
    assert!(matches!(
        decode_message(&mut ok, &limits),
        Ok(Some(Message::Piece { .. }))
    ));
    let mut long = frame(BLOCK_SIZE + 10, 7, &[]);
    assert!(matches!(
        decode_message(&mut long, &limits),
        Err(WireError::TooLong {
            message: "piece",
            ..
        })
    ));
    let mut short = frame(8, 7, &[0; 7]);
    assert!(matches!(
        decode_message(&mut short, &limits),
        Err(WireError::TooShort {
            message: "piece",
            ..
        })
    ));
    // extended: 1 MiB payload
    let mut ext = frame(1024 * 1024 + 3, 20, &[]);
    assert!(matches!(
        decode_message(&mut ext, &limits),
        Err(WireError::TooLong {
            message: "extended",
            ..
        })
    ));
    let mut ext = frame(1, 20, &[]);
    assert!(matches!(
        decode_message(&mut ext, &limits),
        Err(WireError::TooShort {
            message: "extended",
            ..
        })
    ));
    // bitfield: exactly ceil(pieces / 8) once the piece count is known
    let pieces = Limits::for_pieces(9);
    assert!(matches!(
        decode_message(&mut frame(3, 5, &[0xff, 0x80]), &pieces),
        Ok(Some(Message::Bitfield(_)))
    ));
    assert!(matches!(
        decode_message(&mut frame(2, 5, &[0xff]), &pieces),
        Err(WireError::WrongLength {
            message: "bitfield",
            ..
        })
    ));
    assert!(matches!(
        decode_message(&mut frame(4, 5, &[]), &pieces),
        Err(WireError::WrongLength {
            message: "bitfield",
            ..
        })
    ));
    // a 4 GiB length prefix fails before the id byte arrives
    let mut huge = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
    assert!(matches!(
        decode_message(&mut huge, &limits),
        Err(WireError::TooLong {
            message: "message",
            ..
        })
    ));
    // incomplete: Ok(None), nothing consumed
    let mut part = frame(13, 6, &[0; 5]);
    assert_eq!(decode_message(&mut part, &limits), Ok(None));
    assert_eq!(part.len(), 10);
}

#[test]
fn unknown_ids_are_passed_up_or_refused() {
    let mut buf = frame(3, 0x15, &[1, 2]);
    assert_eq!(
        decode_message(&mut buf, &Limits::default()),
        Ok(Some(Message::Unknown {
            id: 0x15,
            payload: Bytes::from_static(&[1, 2])
        }))
    );
    let strict = Limits {
        reject_unknown: true,
        ..Limits::default()
    };
    let mut buf = frame(3, 0x15, &[1, 2]);
    assert_eq!(
        decode_message(&mut buf, &strict),
        Err(WireError::UnknownMessage { id: 0x15 })
    );
    let mut buf = frame(2 * 1024 * 1024, 0x15, &[]);
    assert!(matches!(
        decode_message(&mut buf, &Limits::default()),
        Err(WireError::TooLong { .. })
    ));
}

#[test]
fn bad_handshakes_fail_early() {
    let mut codec = PeerCodec::default();
    // an HTTP request is refused at its first byte
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(CodecError::Wire(WireError::BadHandshake { offset: 0, .. }))
    ));
    let mut buf = BytesMut::from(&b"\x13BitTorrent protocoX"[..]);
    assert!(matches!(
        PeerCodec::default().decode(&mut buf),
        Err(CodecError::Wire(WireError::BadHandshake { offset: 19, .. }))
    ));
    let mut buf = BytesMut::from(&b"\x13BitTorr"[..]);
    assert!(matches!(PeerCodec::default().decode(&mut buf), Ok(None)));
    assert!(matches!(
        Handshake::parse(b"\x13BitTorrent protocol"),
        Err(WireError::TooShort { .. })
    ));
}

#[test]
fn codec_encodes_every_frame_kind() {
    let mut codec = PeerCodec::default();
    let mut out = BytesMut::new();
    let hs = Handshake::new([1; 20], [2; 20]);
    codec.encode(Frame::Handshake(hs), &mut out).unwrap();
    codec
        .encode(Frame::Message(Message::Unchoke), &mut out)
        .unwrap();
    codec.encode(Message::HaveNone, &mut out).unwrap();
    let mut back = PeerCodec::default();
    assert_eq!(back.decode(&mut out).unwrap(), Some(Frame::Handshake(hs)));
    assert!(back.handshake_done());
    assert_eq!(
        back.decode(&mut out).unwrap(),
        Some(Frame::Message(Message::Unchoke))
    );
    assert_eq!(
        back.decode(&mut out).unwrap(),
        Some(Frame::Message(Message::HaveNone))
    );
    assert_eq!(back.decode(&mut out).unwrap(), None);
}
