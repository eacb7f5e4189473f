//! The peer wire protocol on arbitrary bytes from a peer: the 68-byte handshake and the
//! message stream through `PeerCodec` (as `agent::peer` frames a socket), every message
//! fed to a `wire::PeerSession` with a `PiecePicker` (as the agent drives them), and the
//! BEP 10 extension handshake, BEP 9 metadata and `sb_machine` payloads (untagged, and
//! tagged: split off the 16-byte tag, then the dictionary) on their own.
//!
//! Input: byte 0 and 1 choose the session (piece count and length, our pieces, Fast and
//! extension bits, whether a handshake comes first, how the stream is split into reads);
//! the rest is what the peer sends.
//!
//! Invariants: nothing panics; decoding the stream in small reads gives the same frames
//! as in one read; every decoded frame re-encodes to the bytes it was decoded from; an
//! accepted extension handshake, metadata or `sb_machine` message re-encodes and parses
//! the same (a tagged one with its tag); the
//! session never has more requests out than its pipeline allows, nor stores a block of a
//! piece it does not know.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use swarmbak_wire::{
    Action, ExtensionHandshake, Frame, Limits, MachineMessage, MetadataAssembler, MetadataMessage,
    PeerCodec, PeerSession, PiecePicker, Reserved, SessionConfig, SB_MACHINE, UT_METADATA,
};
use tokio_util::codec::{Decoder, Encoder};

/// Frames of `stream` read `step` bytes at a time (0: all at once), with the bytes each
/// was decoded from; the error, if decoding stopped at one.
fn frames(
    codec: &mut PeerCodec,
    stream: &[u8],
    step: usize,
) -> (Vec<(Frame, Vec<u8>)>, Option<String>) {
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut consumed = 0;
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(f)) => {
                let end = fed - buf.len();
                out.push((f, stream[consumed..end].to_vec()));
                consumed = end;
            }
            Ok(None) => {
                if fed == stream.len() {
                    return (out, None);
                }
                let n = if step == 0 {
                    stream.len() - fed
                } else {
                    step.min(stream.len() - fed)
                };
                buf.extend_from_slice(&stream[fed..fed + n]);
                fed += n;
            }
            Err(e) => return (out, Some(e.to_string())),
        }
    }
}

fn check_extension_handshake(payload: &[u8]) {
    if let Ok(h) = ExtensionHandshake::parse(payload) {
        let again = ExtensionHandshake::parse(&h.encode()).expect("our encoding parses");
        assert_eq!(again, h);
    }
}

fn check_metadata(payload: &Bytes) {
    if let Ok(m) = MetadataMessage::parse(payload) {
        if !matches!(m, MetadataMessage::Other { .. }) {
            let again = MetadataMessage::parse(&Bytes::from(m.encode())).expect("ours parses");
            assert_eq!(again, m);
        }
    }
}

fn check_machine(payload: &[u8]) {
    if let Ok(m) = MachineMessage::parse(payload) {
        let again = MachineMessage::parse(&m.encode()).expect("our encoding parses");
        assert_eq!(again, m);
    }
    if let Ok((dict, tag)) = MachineMessage::split_tagged(payload) {
        if let Ok(m) = MachineMessage::parse(dict) {
            let tagged = m.encode_tagged(|_| tag);
            let (d, t) = MachineMessage::split_tagged(&tagged).expect("ours splits");
            assert_eq!(
                (MachineMessage::parse(d).expect("ours parses"), t),
                (m, tag)
            );
        }
    }
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let [c0, c1, stream @ ..] = data else {
            return;
        };
        check_extension_handshake(stream);
        check_metadata(&Bytes::copy_from_slice(stream));
        check_machine(stream);

        let num_pieces = 1 + u32::from(c0 & 0x0f);
        // Small pieces (one block each) keep `piece` messages, and executions, short.
        let piece_length = 256 * (1 + u64::from(c1 & 0x03));
        let last = piece_length - u64::from(c1 >> 2) * 3;
        let total_length = (u64::from(num_pieces) - 1) * piece_length + last;
        let with_handshake = c0 & 0x80 != 0;
        let step = usize::from((c1 >> 2) & 0x07);
        let limits = Limits::for_pieces(num_pieces);
        let new_codec = || {
            if with_handshake {
                PeerCodec::new(limits)
            } else {
                PeerCodec::after_handshake(limits)
            }
        };
        let (whole, err) = frames(&mut new_codec(), stream, 0);
        let (split, split_err) = frames(&mut new_codec(), stream, 1 + step);
        assert_eq!(
            whole,
            split,
            "frames differ with reads of {} bytes",
            1 + step
        );
        assert_eq!(err.is_some(), split_err.is_some());

        let mut picker: PiecePicker<u8> =
            PiecePicker::new(num_pieces, piece_length, total_length, 7).expect("valid layout");
        if c0 & 0x10 != 0 {
            for p in (0..num_pieces).step_by(2) {
                picker.piece_verified(p);
            }
        }
        let mut reserved = Reserved::default()
            .with_fast(c0 & 0x20 != 0)
            .with_extension_protocol(c0 & 0x40 != 0);
        let mut config = SessionConfig {
            pipeline_depth: 8,
            ..SessionConfig::default()
        };
        config.extensions.extensions.insert(UT_METADATA.into(), 3);
        config.extensions.extensions.insert(SB_MACHINE.into(), 7);
        let depth = config.pipeline_depth;
        let mut now = Instant::now();
        let mut session: Option<PeerSession<u8>> = None;
        let mut assembler: Option<MetadataAssembler> = None;
        let mut actions: Vec<Action<u8>> = Vec::new();
        let start = |reserved: Reserved, now: Instant, picker: &PiecePicker<u8>| {
            let common = Reserved::SWARMBAK.common(reserved);
            let mut s = PeerSession::new(1u8, config.clone(), num_pieces, common, now);
            let first = s.start(now, picker);
            (s, first)
        };
        if !with_handshake {
            let (s, first) = start(reserved, now, &picker);
            session = Some(s);
            actions.extend(first);
        }
        for (frame, bytes) in whole {
            let mut again = BytesMut::new();
            new_codec()
                .encode(frame.clone(), &mut again)
                .expect("encoding never fails");
            assert_eq!(&again[..], &bytes[..], "{frame:?} re-encodes differently");
            now += Duration::from_secs(1);
            match frame {
                Frame::Handshake(hs) => {
                    reserved = hs.reserved;
                    let (s, first) = start(reserved, now, &picker);
                    session = Some(s);
                    actions.extend(first);
                }
                Frame::Message(m) => {
                    let Some(s) = session.as_mut() else {
                        unreachable!("the codec yields the handshake first");
                    };
                    let keepalive = m == swarmbak_wire::Message::KeepAlive;
                    actions.extend(s.on_message(now, m, &mut picker));
                    if keepalive {
                        now += Duration::from_secs(40);
                        actions.extend(s.tick(now, &mut picker));
                    }
                    while let Some(b) = s.pop_request() {
                        assert!(picker.have().get(b.piece));
                        s.block_sent(now, b.length as usize);
                    }
                    for a in std::mem::take(&mut actions) {
                        match a {
                            Action::StoreBlock {
                                piece,
                                offset,
                                data,
                            } => {
                                assert!(piece < num_pieces);
                                assert!(
                                    u64::from(offset) + data.len() as u64
                                        <= u64::from(picker.piece_size(piece))
                                );
                            }
                            Action::VerifyPiece(p) => {
                                picker.piece_verified(p);
                                actions.extend(s.we_have(now, p, &mut picker));
                            }
                            Action::ExtensionHandshake(h) => {
                                if let Some(size) = h.metadata_size {
                                    assembler = MetadataAssembler::new([0; 20], size).ok();
                                }
                            }
                            Action::Metadata(MetadataMessage::Data {
                                piece,
                                total_size,
                                data,
                            }) => {
                                if let Some(a) = assembler.as_mut() {
                                    let _ = a.add_piece(piece, total_size, &data);
                                }
                            }
                            _ => {}
                        }
                    }
                    assert!(s.pending_requests().count() <= depth);
                }
            }
        }
    });
}
