//! The `sb_machine` messages of protocol-spec/wire.md "Authenticated peers": the spec's
//! examples are checked byte for byte, and random bytes never panic the parser.

use proptest::prelude::*;
use swarmbak_core::spec::assert_quoted;
use swarmbak_wire::{Answer, Challenge, MachineMessage, MAX_TAGGED_MESSAGE, TAG_LEN};

/// The bytes of an example as wire.md writes it: `<xx×n>` is n bytes of hex xx, the rest
/// is ASCII.
fn expand(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('<') {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        let end = rest[at..].find('>').expect("closed") + at;
        let (byte, n) = rest[at + 1..end].split_once('×').expect("xx×n");
        let byte = u8::from_str_radix(byte, 16).expect("hex byte");
        out.extend(std::iter::repeat_n(byte, n.parse().expect("count")));
        rest = &rest[end + 1..];
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

fn examples() -> Vec<(&'static str, MachineMessage)> {
    vec![
        (
            "d4:cert4:CERT3:rec3:REC1:ti5ee",
            MachineMessage::Record {
                record: b"REC".to_vec(),
                cert: b"CERT".to_vec(),
            },
        ),
        (
            "d4:held4:HELD1:ti6ee",
            MachineMessage::Held {
                statement: b"HELD".to_vec(),
            },
        ),
        (
            "d2:idi7e4:modei0e1:qlli5ei2eeli11ei0eee1:ti7ee",
            MachineMessage::Challenge {
                id: 7,
                nonce: None,
                entries: Challenge::Blocks(vec![(5, 2), (11, 0)]),
            },
        ),
        (
            "d2:idi8e4:modei1e5:nonce32:<c0×32>1:qlli5ei2ei2eee1:ti7ee",
            MachineMessage::Challenge {
                id: 8,
                nonce: Some([0xc0; 32]),
                entries: Challenge::Digest(vec![(5, 2, 2)]),
            },
        ),
        (
            "d1:all4:DATA64:<aa×32><bb×32>ee1:ii1e2:idi7e1:ti8ee",
            MachineMessage::Response {
                id: 7,
                index: 1,
                answers: vec![Answer::Block {
                    data: b"DATA".to_vec(),
                    path: vec![[0xaa; 32], [0xbb; 32]],
                }],
            },
        ),
        (
            "d1:al32:<d1×32>e1:ii0e2:idi8e1:ti8ee",
            MachineMessage::Response {
                id: 8,
                index: 0,
                answers: vec![Answer::Digest([0xd1; 32])],
            },
        ),
        (
            "d2:idi7e5:retryi60e1:ti9e3:whyi2ee",
            MachineMessage::Refuse {
                id: 7,
                why: 2,
                retry: Some(60),
            },
        ),
        (
            "d3:badli1ee2:idi7e2:oki0e1:ti10ee",
            MachineMessage::Verdict {
                id: 7,
                ok: false,
                bad: vec![1],
            },
        ),
        (
            "d2:idi8e2:oki1e1:ti10ee",
            MachineMessage::Verdict {
                id: 8,
                ok: true,
                bad: vec![],
            },
        ),
    ]
}

#[test]
fn spec_examples() {
    for (text, m) in examples() {
        let bytes = expand(text);
        assert_eq!(m.encode(), bytes, "{text}");
        assert_eq!(MachineMessage::parse(&bytes), Ok(m), "{text}");
        assert_quoted("wire.md", &[text]);
    }
    // The tagged refuse of trust.md §11.5: D's first tagged message on that connection.
    let tag: [u8; TAG_LEN] = hex::decode("9cb4046d5b1203f49bda15a3d68a880f")
        .unwrap()
        .try_into()
        .unwrap();
    let refuse = MachineMessage::Refuse {
        id: 7,
        why: 2,
        retry: Some(60),
    };
    let payload = refuse.encode_tagged(|_| tag);
    let (dict, got) = MachineMessage::split_tagged(&payload).unwrap();
    assert_eq!((MachineMessage::parse(dict), got), (Ok(refuse), tag));
    assert_quoted(
        "wire.md",
        &[
            "`d2:idi7e5:retryi60e1:ti9e3:whyi2ee` followed by the 16 bytes \
             `9cb4046d5b1203f49bda15a3d68a880f`",
            "at most 98,304 bytes (96 KiB)",
        ],
    );
    assert_eq!(MAX_TAGGED_MESSAGE, 98_304);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random bytes: no panic; whatever parses re-encodes to something that parses the
    /// same.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(m) = MachineMessage::parse(&bytes) {
            prop_assert_eq!(MachineMessage::parse(&m.encode()), Ok(m));
        }
        if let Ok((dict, _)) = MachineMessage::split_tagged(&bytes) {
            prop_assert_eq!(dict.len() + TAG_LEN, bytes.len());
            let _ = MachineMessage::parse(dict);
        }
    }

    /// Valid messages with a byte changed, cut short or extended: no panic.
    #[test]
    fn mutated_messages_never_panic(
        which in 0usize..9,
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let (text, _) = examples()[which];
        let mut b = expand(text);
        let i = at.index(b.len());
        b[i] = byte;
        let _ = MachineMessage::parse(&b);
        let _ = MachineMessage::parse(&b[..cut.index(b.len())]);
        b.extend_from_slice(&[0; TAG_LEN]);
        if let Ok((dict, _)) = MachineMessage::split_tagged(&b) {
            if let Ok(m) = MachineMessage::parse(dict) {
                prop_assert_eq!(MachineMessage::parse(&m.encode()), Ok(m));
            }
        }
    }
}
