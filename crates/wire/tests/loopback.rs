//! Two peers over a real TCP connection on 127.0.0.1 with `Framed<TcpStream, PeerCodec>`:
//! handshake, extension handshake, ut_metadata, bitfield, request/piece of a few blocks.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sha1::{Digest, Sha1};
use swarmbak_bencode::Encoder;
use swarmbak_wire::{
    Action, ExtensionHandshake, Frame, Handshake, Message, MetadataAssembler, MetadataMessage,
    PeerCodec, PeerSession, PiecePicker, SessionConfig, SB_MACHINE, UT_METADATA,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

const PIECE_LEN: u64 = 32 * 1024;

struct Torrent {
    data: Vec<u8>,
    info: Vec<u8>,
    info_hash: [u8; 20],
    hashes: Vec<[u8; 20]>,
}

fn torrent() -> Torrent {
    let data: Vec<u8> = (0..2 * PIECE_LEN as usize + 1000)
        .map(|i| (i * 31 % 253) as u8)
        .collect();
    let hashes: Vec<[u8; 20]> = data
        .chunks(PIECE_LEN as usize)
        .map(|c| Sha1::digest(c).into())
        .collect();
    let mut e = Encoder::new();
    e.begin_dict()
        .key(b"length")
        .int(data.len() as i64)
        .key(b"name")
        .str("loop")
        .key(b"piece length")
        .int(PIECE_LEN as i64)
        .key(b"pieces")
        .bytes(&hashes.concat())
        .key(b"private")
        .int(1)
        .end();
    let info = e.finish().unwrap();
    let info_hash = Sha1::digest(&info).into();
    Torrent {
        data,
        info,
        info_hash,
        hashes,
    }
}

fn config(key: &[u8]) -> SessionConfig {
    let mut ext = ExtensionHandshake::default();
    ext.extensions.insert(UT_METADATA.into(), 2);
    ext.extensions.insert(SB_MACHINE.into(), 3);
    ext.client = Some("swarmbak-test".into());
    ext.sb_key = Some(key.to_vec());
    ext.reqq = Some(500);
    SessionConfig {
        extensions: ext,
        ..SessionConfig::default()
    }
}

type Conn = Framed<TcpStream, PeerCodec>;

async fn send_actions(conn: &mut Conn, actions: &[Action<u8>]) {
    for a in actions {
        if let Action::Send(m) = a {
            conn.send(Frame::Message(m.clone())).await.unwrap();
        }
    }
}

async fn seeder(listener: TcpListener, t: Torrent) -> Vec<u8> {
    let (stream, addr) = listener.accept().await.unwrap();
    assert!(addr.ip().is_loopback());
    let mut conn = Framed::new(stream, PeerCodec::default());
    let Some(Ok(Frame::Handshake(theirs))) = conn.next().await else {
        panic!("no handshake");
    };
    assert_eq!(theirs.info_hash, t.info_hash);
    let ours = Handshake::new(t.info_hash, *b"-SB0100-seeder......");
    conn.send(Frame::Handshake(ours)).await.unwrap();
    let n = t.hashes.len() as u32;
    conn.codec_mut().limits_mut().num_pieces = Some(n);
    let mut picker: PiecePicker<u8> =
        PiecePicker::new(n, PIECE_LEN, t.data.len() as u64, 1).unwrap();
    for p in 0..n {
        picker.piece_verified(p);
    }
    let mut cfg = config(b"seeder-machine-key");
    cfg.extensions.metadata_size = Some(t.info.len() as u64);
    let mut s = PeerSession::new(
        1u8,
        cfg,
        n,
        ours.reserved.common(theirs.reserved),
        Instant::now(),
    );
    let start = s.start(Instant::now(), &picker);
    send_actions(&mut conn, &start).await;
    let mut their_key = Vec::new();
    while let Some(frame) = conn.next().await {
        let Frame::Message(m) = frame.unwrap() else {
            panic!("second handshake");
        };
        let actions = s.on_message(Instant::now(), m, &mut picker);
        send_actions(&mut conn, &actions).await;
        for a in actions {
            match a {
                Action::ExtensionHandshake(h) => their_key = h.sb_key.clone().unwrap_or_default(),
                Action::Metadata(MetadataMessage::Request { piece }) => {
                    let id = s
                        .peer_extensions()
                        .and_then(|e| e.extension_id(UT_METADATA))
                        .unwrap();
                    let reply = MetadataMessage::data_for(&t.info, piece)
                        .unwrap_or(MetadataMessage::Reject { piece });
                    let payload = Bytes::from(reply.encode());
                    conn.send(Frame::Message(Message::Extended { id, payload }))
                        .await
                        .unwrap();
                }
                Action::Disconnect { reason, .. } => panic!("seeder disconnects: {reason:?}"),
                _ => {}
            }
        }
        if s.peer_interested() && s.am_choking() {
            let a = s.set_choking(Instant::now(), false);
            send_actions(&mut conn, &a).await;
        }
        while let Some(b) = s.pop_request() {
            let start = (u64::from(b.piece) * PIECE_LEN + u64::from(b.offset)) as usize;
            let data = Bytes::copy_from_slice(&t.data[start..start + b.length as usize]);
            conn.send(Frame::Message(Message::Piece {
                piece: b.piece,
                offset: b.offset,
                data,
            }))
            .await
            .unwrap();
        }
    }
    their_key
}

async fn leecher(addr: std::net::SocketAddr, info_hash: [u8; 20]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut conn = Framed::new(stream, PeerCodec::default());
    let ours = Handshake::new(info_hash, *b"-SB0100-leecher.....");
    conn.send(Frame::Handshake(ours)).await.unwrap();
    let Some(Ok(Frame::Handshake(theirs))) = conn.next().await else {
        panic!("no handshake");
    };
    assert_eq!(theirs.info_hash, info_hash);
    assert!(theirs.reserved.fast() && theirs.reserved.extension_protocol());

    // Phase 1: metadata, from the info-hash alone. Early availability messages are kept
    // to replay once the piece count is known.
    let ext = config(b"leecher-machine-key").extensions;
    conn.send(Frame::Message(Message::Extended {
        id: 0,
        payload: Bytes::from(ext.encode()),
    }))
    .await
    .unwrap();
    let mut early = Vec::new();
    let mut assembler: Option<MetadataAssembler> = None;
    let mut their_key = Vec::new();
    let info = loop {
        let Some(Ok(Frame::Message(m))) = conn.next().await else {
            panic!("connection ended during metadata");
        };
        match m {
            Message::Extended { id: 0, payload } => {
                let h = ExtensionHandshake::parse(&payload).unwrap();
                their_key = h.sb_key.clone().unwrap();
                let size = h.metadata_size.unwrap();
                let a = MetadataAssembler::new(info_hash, size).unwrap();
                let id = h.extension_id(UT_METADATA).unwrap();
                for piece in a.missing() {
                    let payload = Bytes::from(MetadataMessage::Request { piece }.encode());
                    conn.send(Frame::Message(Message::Extended { id, payload }))
                        .await
                        .unwrap();
                }
                assembler = Some(a);
            }
            Message::Extended { id: 2, payload } => {
                let Ok(MetadataMessage::Data {
                    piece,
                    total_size,
                    data,
                }) = MetadataMessage::parse(&payload)
                else {
                    panic!("expected metadata data");
                };
                if let Some(info) = assembler
                    .as_mut()
                    .unwrap()
                    .add_piece(piece, total_size, &data)
                    .unwrap()
                {
                    break info;
                }
            }
            other => early.push(other),
        }
    };
    let root = swarmbak_bencode::decode(&info).unwrap();
    let d = root.as_dict().unwrap();
    let length = d.get(b"length").unwrap().as_int().unwrap() as u64;
    let piece_len = d.get(b"piece length").unwrap().as_int().unwrap() as u64;
    let hashes: Vec<u8> = d.get(b"pieces").unwrap().as_bytes().unwrap().to_vec();
    let n = (hashes.len() / 20) as u32;
    conn.codec_mut().limits_mut().num_pieces = Some(n);

    // Phase 2: pieces.
    let mut picker: PiecePicker<u8> = PiecePicker::new(n, piece_len, length, 2).unwrap();
    let mut cfg = config(b"leecher-machine-key");
    cfg.pipeline_depth = 3; // exercise refilling
    let mut s = PeerSession::new(
        9u8,
        cfg,
        n,
        ours.reserved.common(theirs.reserved),
        Instant::now(),
    );
    let start = s.start(Instant::now(), &picker);
    // our extension handshake went out already: send only the availability message
    for a in &start {
        if let Action::Send(m @ (Message::HaveNone | Message::Bitfield(_))) = a {
            conn.send(Frame::Message(m.clone())).await.unwrap();
        }
    }
    let mut data = vec![0u8; length as usize];
    let mut queue: std::collections::VecDeque<Message> = early.into();
    loop {
        let m = match queue.pop_front() {
            Some(m) => m,
            None => match conn.next().await {
                Some(Ok(Frame::Message(m))) => m,
                other => panic!("unexpected {other:?}"),
            },
        };
        let actions = s.on_message(Instant::now(), m, &mut picker);
        send_actions(&mut conn, &actions).await;
        for a in actions {
            match a {
                Action::StoreBlock {
                    piece,
                    offset,
                    data: bytes,
                } => {
                    let at = (u64::from(piece) * piece_len + u64::from(offset)) as usize;
                    data[at..at + bytes.len()].copy_from_slice(&bytes);
                }
                Action::VerifyPiece(piece) => {
                    let at = (u64::from(piece) * piece_len) as usize;
                    let end = (at + piece_len as usize).min(data.len());
                    let h: [u8; 20] = Sha1::digest(&data[at..end]).into();
                    assert_eq!(
                        &h[..],
                        &hashes[piece as usize * 20..piece as usize * 20 + 20]
                    );
                    picker.piece_verified(piece);
                    let more = s.we_have(Instant::now(), piece, &mut picker);
                    send_actions(&mut conn, &more).await;
                }
                Action::Disconnect { reason, .. } => panic!("leecher disconnects: {reason:?}"),
                _ => {}
            }
        }
        if picker.is_complete() {
            break;
        }
    }
    (data, info, their_key)
}

#[tokio::test]
async fn two_peers_over_loopback() {
    let t = torrent();
    let expected = t.data.clone();
    let expected_info = t.info.clone();
    let info_hash = t.info_hash;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    assert!(addr.ip().is_loopback());
    let seed = tokio::spawn(seeder(listener, t));
    let leech = tokio::spawn(leecher(addr, info_hash));
    let (data, info, seeder_key) = tokio::time::timeout(Duration::from_secs(30), leech)
        .await
        .expect("leecher finished in time")
        .unwrap();
    assert_eq!(
        info, expected_info,
        "metadata fetched with ut_metadata and verified"
    );
    assert_eq!(data, expected, "every block arrived and verified");
    assert_eq!(seeder_key, b"seeder-machine-key");
    // the leecher's connection dropped: the seeder's loop ends
    let leecher_key = tokio::time::timeout(Duration::from_secs(10), seed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leecher_key, b"leecher-machine-key");
}
