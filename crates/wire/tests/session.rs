//! PeerSession: the download and upload paths, and every reason to disconnect.

use std::time::{Duration, Instant};

use bytes::Bytes;
use swarmbak_wire::{
    Action, Bitfield, BlockRef, DisconnectReason, ExtensionHandshake, Message, MetadataMessage,
    PeerSession, PiecePicker, Reserved, SessionConfig, BLOCK_SIZE, UT_METADATA,
};

const K: u64 = BLOCK_SIZE as u64;

fn picker(pieces: u32, piece_len: u64) -> PiecePicker<u32> {
    PiecePicker::new(pieces, piece_len, u64::from(pieces) * piece_len, 7).unwrap()
}

fn session(fast: bool, pieces: u32, now: Instant) -> PeerSession<u32> {
    let mut ext = ExtensionHandshake::default();
    ext.extensions.insert(UT_METADATA.into(), 3);
    ext.extensions.insert("sb_machine".into(), 4);
    let config = SessionConfig {
        extensions: ext,
        ..SessionConfig::default()
    };
    let common = Reserved::SWARMBAK.with_fast(fast);
    PeerSession::new(1, config, pieces, common, now)
}

fn sent(actions: &[Action<u32>]) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn requests(actions: &[Action<u32>]) -> Vec<BlockRef> {
    sent(actions)
        .into_iter()
        .filter_map(|m| match m {
            Message::Request(b) => Some(b),
            _ => None,
        })
        .collect()
}

fn banned(actions: &[Action<u32>]) -> Option<DisconnectReason> {
    actions.iter().find_map(|a| match a {
        Action::Disconnect { reason, ban: true } => Some(reason.clone()),
        _ => None,
    })
}

fn piece_msg(b: BlockRef) -> Message {
    Message::Piece {
        piece: b.piece,
        offset: b.offset,
        data: Bytes::from(vec![b.piece as u8; b.length as usize]),
    }
}

#[test]
fn download_path() {
    let t = Instant::now();
    let mut p = picker(2, 2 * K);
    let mut s = session(true, 2, t);
    let start = s.start(t, &p);
    assert_eq!(sent(&start)[0], Message::HaveNone);
    assert!(matches!(&sent(&start)[1], Message::Extended { id: 0, .. }));

    let a = s.on_message(t, Message::HaveAll, &mut p);
    assert_eq!(sent(&a), vec![Message::Interested]);
    assert!(s.am_interested());
    let a = s.on_message(t, Message::Unchoke, &mut p);
    let reqs = requests(&a);
    assert_eq!(reqs.len(), 4, "two pieces of two blocks");
    let mut verified = Vec::new();
    let mut stored = 0;
    for b in reqs {
        for act in s.on_message(t, piece_msg(b), &mut p) {
            match act {
                Action::StoreBlock { data, .. } => stored += data.len(),
                Action::VerifyPiece(piece) => verified.push(piece),
                Action::Disconnect { .. } => panic!("disconnected"),
                _ => {}
            }
        }
    }
    verified.sort();
    assert_eq!(verified, vec![0, 1]);
    assert_eq!(stored as u64, 4 * K);
    p.piece_verified(0);
    p.piece_verified(1);
    let a = s.we_have(t, 1, &mut p);
    assert_eq!(sent(&a), vec![Message::Have(1), Message::NotInterested]);
    assert!(p.is_complete());
}

#[test]
fn pipeline_depth_is_respected() {
    let t = Instant::now();
    let mut p = picker(4, 64 * K);
    let mut s = session(true, 4, t);
    s.on_message(t, Message::HaveAll, &mut p);
    let a = s.on_message(t, Message::Unchoke, &mut p);
    assert_eq!(requests(&a).len(), 64);
    let first = requests(&a)[0];
    let a = s.on_message(t, piece_msg(first), &mut p);
    assert_eq!(requests(&a).len(), 1, "one block in, one request out");
}

#[test]
fn unrequested_block_bans() {
    let t = Instant::now();
    let mut p = picker(2, 2 * K);
    let mut s = session(true, 2, t);
    s.on_message(t, Message::HaveAll, &mut p);
    let a = s.on_message(t, piece_msg(BlockRef::new(0, 0, BLOCK_SIZE)), &mut p);
    assert!(matches!(
        banned(&a),
        Some(DisconnectReason::UnrequestedBlock(_))
    ));
    assert!(s.is_closed());
    assert_eq!(
        p.availability(0),
        0,
        "closing releases the peer's availability"
    );
    assert!(
        s.on_message(t, Message::Unchoke, &mut p).is_empty(),
        "nothing after close"
    );
}

#[test]
fn out_of_range_indices_ban() {
    let t = Instant::now();
    for m in [
        Message::Have(2),
        Message::Piece {
            piece: 9,
            offset: 0,
            data: Bytes::from_static(b"x"),
        },
    ] {
        let mut p = picker(2, 2 * K);
        let mut s = session(true, 2, t);
        let a = s.on_message(t, m, &mut p);
        assert!(
            matches!(banned(&a), Some(DisconnectReason::PieceOutOfRange(_))),
            "{a:?}"
        );
    }
}

#[test]
fn malformed_and_misplaced_messages_ban() {
    let t = Instant::now();
    let cases: Vec<(bool, Vec<Message>)> = vec![
        // spare bits set
        (true, vec![Message::Bitfield(Bytes::from_static(&[0xff]))]),
        // wrong length
        (
            true,
            vec![Message::Bitfield(Bytes::from_static(&[0xc0, 0]))],
        ),
        // fast messages without BEP 6
        (false, vec![Message::HaveAll]),
        (false, vec![Message::Reject(BlockRef::new(0, 0, 1))]),
        // bitfield after have
        (
            true,
            vec![
                Message::Have(0),
                Message::Bitfield(Bytes::from_static(&[0xc0])),
            ],
        ),
        // bad extension handshake, bad ut_metadata payload
        (
            true,
            vec![Message::Extended {
                id: 0,
                payload: Bytes::from_static(b"li1ee"),
            }],
        ),
        (
            true,
            vec![Message::Extended {
                id: 3,
                payload: Bytes::from_static(b"d5:piecei0ee"),
            }],
        ),
    ];
    for (fast, messages) in cases {
        let mut p = picker(2, 2 * K);
        let mut s = session(fast, 2, t);
        let mut last = Vec::new();
        for m in messages.clone() {
            last = s.on_message(t, m, &mut p);
        }
        assert!(banned(&last).is_some(), "{messages:?} → {last:?}");
    }
}

#[test]
fn late_block_after_cancel_is_harmless() {
    let t = Instant::now();
    let mut p = picker(1, 2 * K);
    let mut s = session(true, 1, t);
    s.on_message(t, Message::HaveAll, &mut p);
    let reqs = requests(&s.on_message(t, Message::Unchoke, &mut p));
    let a = s.cancel(t, reqs[0], &mut p);
    assert_eq!(sent(&a), vec![Message::Cancel(reqs[0])]);
    let a = s.on_message(t, piece_msg(reqs[0]), &mut p);
    assert!(banned(&a).is_none(), "{a:?}");
    assert!(!a.iter().any(|x| matches!(x, Action::StoreBlock { .. })));
}

#[test]
fn request_timeout_frees_blocks_and_snubs() {
    let t = Instant::now();
    let mut p = picker(1, 2 * K);
    let mut s = session(true, 1, t);
    s.on_message(t, Message::HaveAll, &mut p);
    let reqs = requests(&s.on_message(t, Message::Unchoke, &mut p));
    assert_eq!(reqs.len(), 2);
    let later = t + Duration::from_secs(31);
    s.on_message(later, Message::KeepAlive, &mut p);
    let a = s.tick(later, &mut p);
    assert!(s.is_snubbed());
    assert!(requests(&a).is_empty());
    assert_eq!(s.pending_requests().count(), 0);
    // another peer can take the blocks now
    let all = Bitfield::full(1);
    p.add_peer(&all);
    assert_eq!(p.pick(&2, &all, 10, None), reqs);
    // the late answer is not held against the first peer
    let a = s.on_message(later, piece_msg(reqs[0]), &mut p);
    assert!(banned(&a).is_none());
}

#[test]
fn reject_frees_the_block() {
    let t = Instant::now();
    let mut p = picker(1, 2 * K);
    let mut s = session(true, 1, t);
    s.on_message(t, Message::HaveAll, &mut p);
    let reqs = requests(&s.on_message(t, Message::Unchoke, &mut p));
    let a = s.on_message(t, Message::Reject(reqs[1]), &mut p);
    assert!(a.is_empty());
    assert_eq!(s.pending_requests().count(), 1);
    let a = s.tick(t + Duration::from_secs(1), &mut p);
    assert_eq!(requests(&a), vec![reqs[1]], "re-requested on the next tick");
}

#[test]
fn choked_peer_uses_allowed_fast() {
    let t = Instant::now();
    let mut p = picker(4, K);
    let mut s = session(true, 4, t);
    s.on_message(t, Message::HaveAll, &mut p);
    let a = s.on_message(t, Message::AllowedFast(2), &mut p);
    assert_eq!(requests(&a), vec![BlockRef::new(2, 0, BLOCK_SIZE)]);
}

#[test]
fn choke_without_fast_drops_requests() {
    let t = Instant::now();
    let mut p = picker(1, 2 * K);
    let mut s = session(false, 1, t);
    s.on_message(t, Message::Bitfield(Bytes::from_static(&[0x80])), &mut p);
    let reqs = requests(&s.on_message(t, Message::Unchoke, &mut p));
    s.on_message(t, Message::Choke, &mut p);
    assert_eq!(s.pending_requests().count(), 0);
    // a block that crossed the choke on the wire is accepted silently
    assert!(banned(&s.on_message(t, piece_msg(reqs[0]), &mut p)).is_none());
}

#[test]
fn upload_path() {
    let t = Instant::now();
    let mut p = picker(2, 2 * K);
    p.piece_verified(0);
    let mut s = session(true, 2, t);
    let start = s.start(t, &p);
    assert_eq!(
        sent(&start)[0],
        Message::Bitfield(Bytes::from_static(&[0x80]))
    );
    s.on_message(t, Message::Interested, &mut p);
    assert!(s.peer_interested());
    let b = BlockRef::new(0, 0, BLOCK_SIZE);
    // choked: rejected
    assert_eq!(
        sent(&s.on_message(t, Message::Request(b), &mut p)),
        vec![Message::Reject(b)]
    );
    assert_eq!(sent(&s.set_choking(t, false)), vec![Message::Unchoke]);
    // fine
    assert!(s.on_message(t, Message::Request(b), &mut p).is_empty());
    // too long, a piece we lack, past the piece end: rejected
    for bad in [
        BlockRef::new(0, 0, BLOCK_SIZE + 1),
        BlockRef::new(1, 0, BLOCK_SIZE),
        BlockRef::new(0, BLOCK_SIZE + 1, BLOCK_SIZE),
    ] {
        assert_eq!(
            sent(&s.on_message(t, Message::Request(bad), &mut p)),
            vec![Message::Reject(bad)]
        );
    }
    let b2 = BlockRef::new(0, BLOCK_SIZE, BLOCK_SIZE);
    s.on_message(t, Message::Request(b2), &mut p);
    s.on_message(t, Message::Cancel(b2), &mut p);
    assert_eq!(s.pop_request(), Some(b));
    assert_eq!(s.pop_request(), None);
    s.on_message(t, Message::Request(b), &mut p);
    assert_eq!(
        sent(&s.set_choking(t, true)),
        vec![Message::Choke, Message::Reject(b)]
    );
    assert_eq!(s.pop_request(), None);
}

#[test]
fn hash_failure_by_a_sole_sender_bans() {
    let t = Instant::now();
    let mut p = picker(1, K);
    let mut s = session(true, 1, t);
    s.on_message(t, Message::HaveAll, &mut p);
    let reqs = requests(&s.on_message(t, Message::Unchoke, &mut p));
    let a = s.on_message(t, piece_msg(reqs[0]), &mut p);
    assert!(a.contains(&Action::VerifyPiece(0)));
    let blamed = p.piece_failed(0);
    assert_eq!(blamed, vec![1]);
    let a = s.hash_failed(0, blamed.len() == 1, &mut p);
    assert_eq!(banned(&a), Some(DisconnectReason::HashFailed(0)));
}

#[test]
fn extension_messages_are_routed() {
    let t = Instant::now();
    let mut p = picker(1, K);
    let mut s = session(true, 1, t);
    let mut theirs = ExtensionHandshake::default();
    theirs.extensions.insert(UT_METADATA.into(), 9);
    theirs.sb_key = Some(b"machine-key".to_vec());
    theirs.reqq = Some(2);
    let a = s.on_message(
        t,
        Message::Extended {
            id: 0,
            payload: Bytes::from(theirs.encode()),
        },
        &mut p,
    );
    assert_eq!(
        a,
        vec![Action::ExtensionHandshake(Box::new(theirs.clone()))]
    );
    assert_eq!(s.peer_extensions(), Some(&theirs));
    // they send ut_metadata under OUR id (3)
    let req = MetadataMessage::Request { piece: 0 };
    let a = s.on_message(
        t,
        Message::Extended {
            id: 3,
            payload: Bytes::from(req.encode()),
        },
        &mut p,
    );
    assert_eq!(a, vec![Action::Metadata(req)]);
    let a = s.on_message(
        t,
        Message::Extended {
            id: 4,
            payload: Bytes::from_static(b"de"),
        },
        &mut p,
    );
    assert_eq!(
        a,
        vec![Action::Extended {
            name: "sb_machine".into(),
            payload: Bytes::from_static(b"de")
        }]
    );
    // an id we never advertised, and an unknown message id: ignored
    assert!(s
        .on_message(
            t,
            Message::Extended {
                id: 77,
                payload: Bytes::new()
            },
            &mut p
        )
        .is_empty());
    let unknown: Message = swarmbak_wire::decode_message(
        &mut bytes::BytesMut::from(&[0, 0, 0, 2, 0x63, 1][..]),
        &swarmbak_wire::Limits::default(),
    )
    .unwrap()
    .unwrap();
    assert!(s.on_message(t, unknown, &mut p).is_empty());
    // their reqq caps our pipeline
    let mut p = picker(1, 4 * K);
    let mut s2 = session(true, 1, t);
    s2.on_message(
        t,
        Message::Extended {
            id: 0,
            payload: Bytes::from(theirs.encode()),
        },
        &mut p,
    );
    s2.on_message(t, Message::HaveAll, &mut p);
    assert_eq!(
        requests(&s2.on_message(t, Message::Unchoke, &mut p)).len(),
        2
    );
}

#[test]
fn idle_peer_is_dropped_without_ban_and_keepalives_are_sent() {
    let t = Instant::now();
    let mut p = picker(1, K);
    let mut s = session(true, 1, t);
    let a = s.tick(t + Duration::from_secs(91), &mut p);
    assert_eq!(sent(&a), vec![Message::KeepAlive]);
    let a = s.tick(t + Duration::from_secs(121), &mut p);
    assert_eq!(
        a,
        vec![Action::Disconnect {
            reason: DisconnectReason::Idle,
            ban: false
        }]
    );
}
