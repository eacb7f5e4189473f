//! PeerSession: the download and upload paths, and every reason to disconnect.

use std::time::{Duration, Instant};

use bytes::Bytes;
use swarmbak_wire::{
    new_connection_stays, Action, Bitfield, BlockRef, DisconnectReason, ExtensionHandshake,
    Message, MetadataMessage, PeerSession, PiecePicker, Reserved, SessionConfig, BLOCK_SIZE,
    UT_METADATA,
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

fn session_for(key: u32, fast: bool, pieces: u32, now: Instant) -> PeerSession<u32> {
    let mut ext = ExtensionHandshake::default();
    ext.extensions.insert(UT_METADATA.into(), 3);
    let config = SessionConfig {
        extensions: ext,
        ..SessionConfig::default()
    };
    PeerSession::new(key, config, pieces, Reserved::SWARMBAK.with_fast(fast), now)
}

fn disconnect(actions: &[Action<u32>]) -> Option<(DisconnectReason, bool)> {
    actions.iter().find_map(|a| match a {
        Action::Disconnect { reason, ban } => Some((reason.clone(), *ban)),
        _ => None,
    })
}

/// A session (key 1, BEP 6) whose peer has the one piece of `blocks` blocks and unchoked
/// us: the requests it made.
fn downloading(t: Instant, blocks: u64) -> (PiecePicker<u32>, PeerSession<u32>, Vec<BlockRef>) {
    let mut p = picker(1, blocks * K);
    let mut s = session(true, 1, t);
    s.on_message(t, Message::HaveAll, &mut p);
    let reqs = requests(&s.on_message(t, Message::Unchoke, &mut p));
    (p, s, reqs)
}

/// A session (key 1) that unchoked its peer and holds the one piece of two blocks, after
/// the peer requested both: the two blocks.
fn serving(t: Instant, fast: bool) -> (PiecePicker<u32>, PeerSession<u32>, BlockRef, BlockRef) {
    let mut p = picker(1, 2 * K);
    p.piece_verified(0);
    let mut s = session(fast, 1, t);
    s.set_choking(t, false);
    let a = BlockRef::new(0, 0, BLOCK_SIZE);
    let b = BlockRef::new(0, BLOCK_SIZE, BLOCK_SIZE);
    s.on_message(t, Message::Request(a), &mut p);
    s.on_message(t, Message::Request(b), &mut p);
    (p, s, a, b)
}

/// The peer's extension handshake.
fn handshake(theirs: &ExtensionHandshake) -> Message {
    Message::Extended {
        id: 0,
        payload: Bytes::from(theirs.encode()),
    }
}

/// The names the wire log (`SWARMBAK_WIRE_LOG`) gives messages: the interop tests and
/// raw_peer.py read these spellings.
#[test]
fn message_names_are_the_wire_log_spellings() {
    let b = BlockRef::new(0, 0, 1);
    let cases = [
        (Message::KeepAlive, "keep_alive"),
        (Message::Choke, "choke"),
        (Message::Unchoke, "unchoke"),
        (Message::Interested, "interested"),
        (Message::NotInterested, "not_interested"),
        (Message::Have(0), "have"),
        (Message::Bitfield(Bytes::new()), "bitfield"),
        (Message::Request(b), "request"),
        (piece_msg(b), "piece"),
        (Message::Cancel(b), "cancel"),
        (Message::Port(1), "port"),
        (Message::Suggest(0), "suggest"),
        (Message::HaveAll, "have_all"),
        (Message::HaveNone, "have_none"),
        (Message::Reject(b), "reject"),
        (Message::AllowedFast(0), "allowed_fast"),
        (
            Message::Extended {
                id: 0,
                payload: Bytes::new(),
            },
            "extended",
        ),
    ];
    for (m, name) in cases {
        assert_eq!(m.name(), name, "{m:?}");
    }
    let unknown: Message = swarmbak_wire::decode_message(
        &mut bytes::BytesMut::from(&[0, 0, 0, 2, 0x63, 1][..]),
        &swarmbak_wire::Limits::default(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(unknown.name(), "unknown");
}

#[test]
fn keep_alive_keeps_the_connection_open() {
    let t = Instant::now();
    let mut p = picker(1, K);
    let mut s = session(true, 1, t);
    let later = t + Duration::from_secs(100);
    assert!(s.on_message(later, Message::KeepAlive, &mut p).is_empty());
    let a = s.tick(t + Duration::from_secs(121), &mut p);
    assert!(disconnect(&a).is_none(), "heard 21 s ago: {a:?}");
}

#[test]
fn choke_under_bep6_keeps_requests_and_unchoke_fills_the_pipeline() {
    let t = Instant::now();
    let (mut p, mut s, reqs) = downloading(t, 2);
    assert_eq!(reqs.len(), 2);
    assert!(!s.peer_choking());
    assert!(s.on_message(t, Message::Choke, &mut p).is_empty());
    assert!(s.peer_choking());
    // BEP 6: the peer rejects what it will not serve; until then the requests stand.
    assert_eq!(s.pending_requests().count(), 2);
    let a = s.on_message(t, piece_msg(reqs[0]), &mut p);
    assert!(a.iter().any(|x| matches!(x, Action::StoreBlock { .. })));
    assert!(requests(&a).is_empty(), "choked: nothing more is asked");
}

#[test]
fn interested_and_not_interested_follow_the_peer() {
    let t = Instant::now();
    let mut p = picker(1, K);
    let mut s = session(true, 1, t);
    assert!(!s.peer_interested());
    assert!(s.on_message(t, Message::Interested, &mut p).is_empty());
    assert!(s.peer_interested());
    assert!(s.on_message(t, Message::NotInterested, &mut p).is_empty());
    assert!(!s.peer_interested());
}

#[test]
fn have_and_bitfield_set_availability_and_interest() {
    let t = Instant::now();
    let mut p = picker(3, K);
    let mut s = session(false, 3, t);
    let a = s.on_message(t, Message::Bitfield(Bytes::from_static(&[0x80])), &mut p);
    assert_eq!(sent(&a), vec![Message::Interested]);
    assert_eq!(p.availability(0), 1);
    let a = s.on_message(t, Message::Have(2), &mut p);
    assert!(sent(&a).is_empty(), "already interested");
    assert!(s.peer_has().get(2));
    assert_eq!(p.availability(2), 1);
    // a repeated have counts once
    s.on_message(t, Message::Have(2), &mut p);
    assert_eq!(p.availability(2), 1);
    // have none (BEP 6) leaves us not interested
    let mut p = picker(3, K);
    let mut s = session(true, 3, t);
    assert!(s.on_message(t, Message::HaveNone, &mut p).is_empty());
    assert!(!s.am_interested());
    assert_eq!(p.availability(0), 0);
}

#[test]
fn port_suggest_and_stray_rejects_and_allowed_fast_are_harmless() {
    let t = Instant::now();
    let mut p = picker(2, K);
    let mut s = session(true, 2, t);
    assert_eq!(
        s.on_message(t, Message::Port(6881), &mut p),
        vec![Action::DhtPort(6881)]
    );
    assert!(s.on_message(t, Message::Suggest(1), &mut p).is_empty());
    assert!(s.on_message(t, Message::Suggest(99), &mut p).is_empty());
    assert!(s
        .on_message(t, Message::Reject(BlockRef::new(0, 0, BLOCK_SIZE)), &mut p)
        .is_empty());
    // allowed fast out of range: ignored, no ban
    assert!(s.on_message(t, Message::AllowedFast(99), &mut p).is_empty());
    assert!(!s.is_closed());
}

#[test]
fn cancel_takes_a_queued_request_out_before_it_is_served() {
    let t = Instant::now();
    let (mut p, mut s, a, b) = serving(t, true);
    assert_eq!(s.queued_requests(), 2);
    assert!(s.on_message(t, Message::Cancel(a), &mut p).is_empty());
    assert_eq!(s.pop_request(), Some(b));
    assert_eq!(s.pop_request(), None);
    // a cancel for something not queued (already served) changes nothing
    assert!(s.on_message(t, Message::Cancel(a), &mut p).is_empty());
    assert!(!s.is_closed());
    // the engine sent one block: counted, and it counts as sending (no keep-alive)
    s.block_sent(t + Duration::from_secs(50), BLOCK_SIZE as usize);
    assert_eq!(s.uploaded(), u64::from(BLOCK_SIZE));
    s.on_message(t + Duration::from_secs(70), Message::KeepAlive, &mut p);
    assert!(sent(&s.tick(t + Duration::from_secs(70), &mut p)).is_empty());
}

#[test]
fn a_block_that_cannot_be_read_is_refused() {
    let t = Instant::now();
    let b = BlockRef::new(0, 0, BLOCK_SIZE);
    let mut s = session(true, 1, t);
    assert_eq!(sent(&s.refuse(t, b)), vec![Message::Reject(b)]);
    let mut s = session(false, 1, t);
    assert!(s.refuse(t, b).is_empty(), "without BEP 6: silence");
}

#[test]
fn choke_drops_queued_requests_with_rejects_under_bep6_only() {
    let t = Instant::now();
    for fast in [true, false] {
        let (mut p, mut s, a, b) = serving(t, fast);
        let out = sent(&s.set_choking(t, true));
        if fast {
            assert_eq!(
                out,
                vec![Message::Choke, Message::Reject(a), Message::Reject(b)]
            );
        } else {
            assert_eq!(out, vec![Message::Choke]);
        }
        assert_eq!(s.queued_requests(), 0);
        // choked: a new request is refused
        let out = sent(&s.on_message(t, Message::Request(a), &mut p));
        assert_eq!(
            out,
            if fast {
                vec![Message::Reject(a)]
            } else {
                vec![]
            }
        );
        // choking twice sends nothing
        assert!(s.set_choking(t, true).is_empty());
    }
}

#[test]
fn requests_beyond_our_queue_are_refused() {
    let t = Instant::now();
    let mut p = picker(1, 1024 * K);
    p.piece_verified(0);
    let mut s = session(true, 1, t);
    s.set_choking(t, false);
    let max = SessionConfig::default().max_incoming_requests as u32;
    for i in 0..max {
        let b = BlockRef::new(0, i * BLOCK_SIZE, BLOCK_SIZE);
        assert!(s.on_message(t, Message::Request(b), &mut p).is_empty());
    }
    let over = BlockRef::new(0, max * BLOCK_SIZE, BLOCK_SIZE);
    assert_eq!(
        sent(&s.on_message(t, Message::Request(over), &mut p)),
        vec![Message::Reject(over)]
    );
    // a duplicate request is refused too
    let dup = BlockRef::new(0, 0, BLOCK_SIZE);
    assert_eq!(
        sent(&s.on_message(t, Message::Request(dup), &mut p)),
        vec![Message::Reject(dup)]
    );
    assert!(!s.is_closed(), "refusing is not a protocol error");
}

#[test]
fn extension_handshake_carries_sb_key_and_sb_owner() {
    let t = Instant::now();
    let mut p = picker(1, K);
    let mut s = session(true, 1, t);
    let theirs = ExtensionHandshake {
        sb_key: Some(b"owner-key".to_vec()),
        sb_owner: true,
        port: Some(7000),
        ..ExtensionHandshake::default()
    };
    let a = s.on_message(t, handshake(&theirs), &mut p);
    match &a[..] {
        [Action::ExtensionHandshake(h)] => {
            assert_eq!(h.sb_key.as_deref(), Some(&b"owner-key"[..]));
            assert!(h.sb_owner);
            assert_eq!(h.port, Some(7000));
        }
        other => panic!("{other:?}"),
    }
    // ours, at the start: what the engine configured, after the availability message
    let start = s.start(t, &p);
    match &sent(&start)[1] {
        Message::Extended { id: 0, payload } => {
            let ours = ExtensionHandshake::parse(payload).unwrap();
            assert_eq!(ours.extension_id(UT_METADATA), Some(3));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ut_metadata_answers_go_under_the_peers_id() {
    let t = Instant::now();
    let mut p = picker(1, K);
    let mut s = session(true, 1, t);
    let payload = Bytes::from(MetadataMessage::Reject { piece: 0 }.encode());
    assert!(
        s.extended(t, UT_METADATA, payload.clone()).is_empty(),
        "the peer advertised no ut_metadata yet"
    );
    let mut theirs = ExtensionHandshake::default();
    theirs.extensions.insert(UT_METADATA.into(), 9);
    s.on_message(t, handshake(&theirs), &mut p);
    assert_eq!(
        sent(&s.extended(t, UT_METADATA, payload.clone())),
        vec![Message::Extended { id: 9, payload }]
    );
    // an unknown ut_metadata type is handed on (and ignored by the engine), no ban
    let other = Bytes::from_static(b"d8:msg_typei7e5:piecei0ee");
    let a = s.on_message(
        t,
        Message::Extended {
            id: 3,
            payload: other,
        },
        &mut p,
    );
    assert!(matches!(
        &a[..],
        [Action::Metadata(MetadataMessage::Other { msg_type: 7 })]
    ));
}

#[test]
fn extended_message_without_bep10_bans() {
    let t = Instant::now();
    let mut p = picker(1, K);
    let common = Reserved::default().with_fast(true);
    let mut s = PeerSession::new(1u32, SessionConfig::default(), 1, common, t);
    let a = s.on_message(
        t,
        Message::Extended {
            id: 0,
            payload: Bytes::from_static(b"de"),
        },
        &mut p,
    );
    assert!(matches!(
        disconnect(&a),
        Some((DisconnectReason::ProtocolViolation(_), true))
    ));
    assert!(s
        .start(t, &p)
        .iter()
        .all(|a| !matches!(a, Action::Send(Message::Extended { .. }))));
}

/// Every reason to disconnect, and whether it bans (wire.md, "Disconnect and ban").
#[test]
fn each_disconnect_reason_and_whether_it_bans() {
    let t = Instant::now();
    let reasons = [
        (DisconnectReason::Malformed("x".into()), true),
        (DisconnectReason::ProtocolViolation("x"), true),
        (
            DisconnectReason::UnrequestedBlock(BlockRef::new(0, 0, 1)),
            true,
        ),
        (DisconnectReason::PieceOutOfRange(9), true),
        (DisconnectReason::HashFailed(0), true),
        (DisconnectReason::Idle, false),
    ];
    for (r, bans) in &reasons {
        assert_eq!(r.bans(), *bans, "{r:?}");
    }
    // and the session reports each with that ban flag
    let mut p = picker(2, K);
    let mut s = session(true, 2, t);
    let a = s.on_message(t, Message::Have(5), &mut p);
    assert_eq!(
        disconnect(&a),
        Some((DisconnectReason::PieceOutOfRange(5), true))
    );
    let mut s = session(false, 2, t);
    let a = s.on_message(t, Message::HaveNone, &mut p);
    assert!(matches!(
        disconnect(&a),
        Some((DisconnectReason::ProtocolViolation(_), true))
    ));
    let mut s = session(true, 2, t);
    let a = s.on_message(t, Message::Bitfield(Bytes::from_static(&[0xff])), &mut p);
    assert!(matches!(
        disconnect(&a),
        Some((DisconnectReason::Malformed(_), true))
    ));
    let mut s = session(true, 2, t);
    let a = s.on_message(t, piece_msg(BlockRef::new(1, 0, BLOCK_SIZE)), &mut p);
    assert!(matches!(
        disconnect(&a),
        Some((DisconnectReason::UnrequestedBlock(_), true))
    ));
    let mut s = session(true, 2, t);
    let a = s.hash_failed(0, true, &mut p);
    assert_eq!(
        disconnect(&a),
        Some((DisconnectReason::HashFailed(0), true))
    );
    let mut s = session(true, 2, t);
    let a = s.tick(t + Duration::from_secs(120), &mut p);
    assert_eq!(disconnect(&a), Some((DisconnectReason::Idle, false)));
}

/// Two peers (keys 1 and 2) with the one piece of two blocks: the first was asked for
/// both blocks, the second (endgame) for the same two. Returns the blocks.
fn endgame_pair(
    t: Instant,
) -> (
    PiecePicker<u32>,
    PeerSession<u32>,
    PeerSession<u32>,
    Vec<BlockRef>,
) {
    let mut p = picker(1, 2 * K);
    let mut a = session_for(1, true, 1, t);
    let mut b = session_for(2, true, 1, t);
    a.on_message(t, Message::HaveAll, &mut p);
    b.on_message(t, Message::HaveAll, &mut p);
    let ra = requests(&a.on_message(t, Message::Unchoke, &mut p));
    let rb = requests(&b.on_message(t, Message::Unchoke, &mut p));
    assert_eq!(ra.len(), 2);
    assert_eq!(ra, rb, "endgame: the same blocks from both");
    (p, a, b, ra)
}

/// A piece several peers sent that fails its check bans nobody: it is downloaded again
/// from one peer, which is banned if it fails again.
#[test]
fn a_failed_piece_with_several_senders_bans_nobody() {
    let t = Instant::now();
    let (mut p, mut a, mut b, ra) = endgame_pair(t);
    let rb = ra.clone();
    a.on_message(t, piece_msg(ra[0]), &mut p);
    let out = b.on_message(t, piece_msg(rb[1]), &mut p);
    assert!(out.contains(&Action::VerifyPiece(0)));
    let mut senders = p.piece_failed(0);
    senders.sort();
    assert_eq!(senders, vec![1, 2]);
    let sole = senders.len() == 1;
    assert!(a.hash_failed(0, sole, &mut p).is_empty());
    assert!(b.hash_failed(0, sole, &mut p).is_empty());
    assert!(!a.is_closed() && !b.is_closed());
}

#[test]
fn a_slow_steady_peer_does_not_time_out() {
    let t = Instant::now();
    let (mut p, mut s, reqs) = downloading(t, 8);
    assert_eq!(reqs.len(), 8);
    // one block every 20 s: each request waits longer than 30 s in all, but the peer
    // never leaves us 30 s without a block
    for (i, b) in reqs.iter().enumerate() {
        let now = t + Duration::from_secs(20 * (i as u64 + 1));
        let a = s.tick(now - Duration::from_millis(1), &mut p);
        assert!(sent(&a).iter().all(|m| !matches!(m, Message::Cancel(_))));
        assert!(!s.is_snubbed());
        s.on_message(now, piece_msg(*b), &mut p);
    }
}

#[test]
fn a_snubbed_peer_is_cancelled_and_unsnubbed_by_its_next_block() {
    let t = Instant::now();
    let (mut p, mut s, reqs) = downloading(t, 2);
    let later = t + Duration::from_secs(30);
    s.on_message(later, Message::KeepAlive, &mut p);
    let a = s.tick(later, &mut p);
    assert!(s.is_snubbed());
    let mut cancels: Vec<Message> = sent(&a);
    cancels.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(
        cancels,
        reqs.iter().map(|b| Message::Cancel(*b)).collect::<Vec<_>>()
    );
    // next tick: asked again (the blocks are free), and the block that arrives (late,
    // for an old request) is not held against it
    let again = requests(&s.tick(later + Duration::from_secs(1), &mut p));
    assert_eq!(again.len(), 2);
    let a = s.on_message(later, piece_msg(again[0]), &mut p);
    assert!(a.iter().any(|x| matches!(x, Action::StoreBlock { .. })));
    assert!(!s.is_snubbed(), "a block ends the snub");
}

/// Endgame: the block both peers were asked for arrives from one; the session tells the
/// engine to cancel it at the other, which sends `cancel` and tolerates the late copy.
#[test]
fn endgame_cancels_the_duplicate_request() {
    let t = Instant::now();
    let (mut p, mut a, mut b, ra) = endgame_pair(t);
    let out = a.on_message(t, piece_msg(ra[0]), &mut p);
    let cancel: Vec<(u32, BlockRef)> = out
        .iter()
        .filter_map(|x| match x {
            Action::CancelAt { peer, block } => Some((*peer, *block)),
            _ => None,
        })
        .collect();
    assert_eq!(cancel, vec![(2, ra[0])]);
    let (_, block) = cancel[0];
    assert_eq!(
        sent(&b.cancel(t, block, &mut p)),
        vec![Message::Cancel(block)]
    );
    assert_eq!(b.pending_requests().count(), 1);
    // the copy already on the wire arrives anyway: dropped, no ban, not stored
    let late = b.on_message(t, piece_msg(block), &mut p);
    assert!(banned(&late).is_none());
    assert!(!late.iter().any(|x| matches!(x, Action::StoreBlock { .. })));
    // cancelling what was already answered sends nothing
    assert!(b.cancel(t, block, &mut p).is_empty());
}

#[test]
fn refresh_follows_what_we_want() {
    let t = Instant::now();
    let mut p = picker(2, K);
    for piece in 0..2 {
        p.set_wanted(piece, false);
    }
    let mut s = session(true, 2, t);
    assert!(sent(&s.on_message(t, Message::HaveAll, &mut p)).is_empty());
    s.on_message(t, Message::Unchoke, &mut p);
    p.set_wanted(1, true);
    let a = s.refresh(t, &mut p);
    assert_eq!(
        sent(&a),
        vec![
            Message::Interested,
            Message::Request(BlockRef::new(1, 0, BLOCK_SIZE))
        ]
    );
}

/// Both sides keep the same one of two connections between them (swarm.md §5.3).
#[test]
fn both_sides_keep_the_same_connection() {
    let (a, b) = ([1u8; 20], [2u8; 20]);
    // A (smaller id) dialled B, and B dialled A. Whichever arrives second at each
    // side's admission, A keeps the one it dialled and B the one it accepted.
    for a_new_is_outgoing in [true, false] {
        let a_keeps_new = new_connection_stays(&a, &b, a_new_is_outgoing, !a_new_is_outgoing);
        let a_keeps_outgoing = a_keeps_new == a_new_is_outgoing;
        assert!(a_keeps_outgoing, "A keeps its own dial");
    }
    for b_new_is_outgoing in [true, false] {
        let b_keeps_new = new_connection_stays(&b, &a, b_new_is_outgoing, !b_new_is_outgoing);
        let b_keeps_outgoing = b_keeps_new == b_new_is_outgoing;
        assert!(!b_keeps_outgoing, "B keeps the connection A dialled");
    }
    // Two connections dialled the same way: the old one stays.
    for outgoing in [true, false] {
        assert!(!new_connection_stays(&a, &b, outgoing, outgoing));
        assert!(!new_connection_stays(&b, &a, outgoing, outgoing));
    }
}

/// A later availability message replaces the earlier one, without a ban: aria2 sends
/// `have none`, then `have`s, then a `bitfield` (seen in the interop tests).
#[test]
fn a_later_availability_message_replaces_the_earlier() {
    let t = Instant::now();
    let mut p = picker(3, K);
    let mut s = session(true, 3, t);
    assert!(s.on_message(t, Message::HaveNone, &mut p).is_empty());
    let a = s.on_message(t, Message::Have(0), &mut p);
    assert_eq!(sent(&a)[0], Message::Interested);
    let a = s.on_message(t, Message::Bitfield(Bytes::from_static(&[0x60])), &mut p);
    assert!(disconnect(&a).is_none(), "{a:?}");
    assert_eq!(
        (p.availability(0), p.availability(1), p.availability(2)),
        (0, 1, 1)
    );
    assert!(s
        .on_message(t, Message::HaveAll, &mut p)
        .iter()
        .all(|a| !matches!(a, Action::Disconnect { .. })));
    assert_eq!(
        (p.availability(0), p.availability(1), p.availability(2)),
        (1, 1, 1)
    );
    let a = s.on_message(t, Message::HaveNone, &mut p);
    assert_eq!(p.availability(1), 0);
    assert_eq!(sent(&a), vec![Message::NotInterested]);
}

/// Deferred availability (wire.md): a session whose start is deferred holds what it would
/// send, so its availability message still comes first; started hidden, the peer learns
/// `have none`, no `metadata_size` and no `have`; revealed, a member gets the compact
/// form and a standard client one `have` per piece, then the handshake with the size.
#[test]
fn deferred_availability_tells_a_stranger_nothing_and_reveals_in_order() {
    let t = Instant::now();
    let with_size = |fast: bool| {
        let mut ext = ExtensionHandshake::default();
        ext.extensions.insert(UT_METADATA.into(), 3);
        ext.metadata_size = Some(1234);
        let config = SessionConfig {
            extensions: ext,
            ..SessionConfig::default()
        };
        let mut s = PeerSession::new(1, config, 4, Reserved::SWARMBAK.with_fast(fast), t);
        s.defer_start();
        s
    };
    let size_of = |m: &Message| match m {
        Message::Extended { id: 0, payload } => {
            ExtensionHandshake::parse(payload).unwrap().metadata_size
        }
        other => panic!("not an extension handshake: {other:?}"),
    };
    let mut p = picker(4, K);
    for i in [0, 2] {
        p.piece_verified(i);
    }

    // Before the start: the peer's bitfield makes us interested, a request while choked
    // is refused, a piece we complete is not announced: all held, nothing sent.
    let mut s = with_size(true);
    assert!(!s.is_started());
    assert!(
        sent(&s.on_message(t, Message::Bitfield(Bytes::from_static(&[0x10])), &mut p)).is_empty()
    );
    let b = BlockRef::new(0, 0, BLOCK_SIZE);
    assert!(sent(&s.on_message(t, Message::Request(b), &mut p)).is_empty());
    assert!(sent(&s.we_have(t, 2, &mut p)).is_empty());
    // Hidden: have none, the handshake without metadata_size, then what was held.
    let start = sent(&s.start_hidden(t));
    assert_eq!(start[0], Message::HaveNone);
    assert_eq!(size_of(&start[1]), None);
    assert_eq!(start[2..], [Message::Interested, Message::Reject(b)]);
    assert!(s.is_hidden());
    // No `have` while hidden.
    assert!(sent(&s.we_have(t, 2, &mut p)).is_empty());
    // Revealed to a member: the bitfield, then the size.
    let r = sent(&s.reveal(t, &p, true));
    assert_eq!(r[0], Message::Bitfield(Bytes::from_static(&[0xa0])));
    assert_eq!(size_of(&r[1]), Some(1234));
    assert_eq!(r.len(), 2);
    assert!(!s.is_hidden());
    assert!(s.reveal(t, &p, true).is_empty(), "revealed once");
    assert_eq!(sent(&s.we_have(t, 1, &mut p))[0], Message::Have(1));

    // Revealed to a standard client: a `have` per piece (always legal after have none).
    let mut s = with_size(true);
    s.start_hidden(t);
    let r = sent(&s.reveal(t, &p, false));
    assert_eq!(r[..2], [Message::Have(0), Message::Have(2)]);
    assert_eq!(size_of(&r[2]), Some(1234));

    // Without the Fast extension a hidden start sends no availability message at all.
    let mut s = with_size(false);
    let start = sent(&s.start_hidden(t));
    assert_eq!(start.len(), 1);
    assert_eq!(size_of(&start[0]), None);

    // Started plainly after a deferral: the real availability first, then the held.
    let mut s = with_size(true);
    s.on_message(t, Message::Bitfield(Bytes::from_static(&[0x10])), &mut p);
    let start = sent(&s.start(t, &p));
    assert_eq!(start[0], Message::Bitfield(Bytes::from_static(&[0xa0])));
    assert_eq!(size_of(&start[1]), Some(1234));
    assert_eq!(start[2], Message::Interested);

    // A peer that floods requests before our first message is closed.
    let mut s = with_size(true);
    let mut closed = None;
    for _ in 0..=swarmbak_wire::MAX_HELD {
        let a = s.on_message(t, Message::Request(b), &mut p);
        if let Some(r) = banned(&a) {
            closed = Some(r);
            break;
        }
    }
    assert!(
        matches!(closed, Some(DisconnectReason::ProtocolViolation(_))),
        "{closed:?}"
    );
}
