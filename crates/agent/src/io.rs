//! A peer connection's byte stream: frames decoded from a read buffer, and frames queued
//! for writing without copying block data.
//!
//! `tokio_util`'s `Framed` encodes every frame into one write buffer, so each 16 KiB block
//! served is copied once more than needed. Here a `piece` message is queued as its
//! 13-byte header and the block's own `Bytes` (a slice of a piece read once from disk),
//! and the queue leaves in vectored writes.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes, BytesMut};
use swarmbak_wire::{encode_piece_header, CodecError, Frame, Message, PeerCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

/// Bytes queued before a `feed` writes them out (fewer, larger writes).
const WRITE_BOUNDARY: usize = 1 << 20;
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 256 * 1024;
/// Most slices handed to one vectored write (Linux takes up to 1024).
const MAX_SLICES: usize = 64;

pub struct PeerIo {
    stream: TcpStream,
    codec: PeerCodec,
    rbuf: BytesMut,
    /// Small frames are encoded here, in order, until a block (or a flush) closes it.
    tail: BytesMut,
    queue: VecDeque<Bytes>,
    /// Bytes in `queue` (the open `tail` not included).
    queued: usize,
}

impl PeerIo {
    pub fn new(stream: TcpStream, codec: PeerCodec) -> PeerIo {
        PeerIo {
            stream,
            codec,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            tail: BytesMut::new(),
            queue: VecDeque::new(),
            queued: 0,
        }
    }

    pub fn codec_mut(&mut self) -> &mut PeerCodec {
        &mut self.codec
    }

    /// Bytes read but not decoded yet.
    pub fn read_buffer(&self) -> &[u8] {
        &self.rbuf
    }

    /// Does the read buffer hold a whole message already (after the handshake)? Then
    /// [`PeerIo::next`] returns at once.
    pub fn has_frame(&self) -> bool {
        match self.rbuf.get(..4) {
            Some(len) => {
                let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                self.rbuf.len() - 4 >= len
            }
            None => false,
        }
    }

    /// The next frame; `None` once the peer closed the connection between frames.
    /// Cancel-safe: bytes read before a cancellation stay in the buffer.
    pub async fn next(&mut self) -> Option<Result<Frame, CodecError>> {
        loop {
            match self.codec.decode(&mut self.rbuf) {
                Ok(Some(f)) => return Some(Ok(f)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                self.rbuf.reserve(READ_CHUNK);
            }
            match self.stream.read_buf(&mut self.rbuf).await {
                Ok(0) if self.rbuf.is_empty() => return None,
                Ok(0) => {
                    return Some(Err(CodecError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in the middle of a message",
                    ))))
                }
                Ok(_) => {}
                Err(e) => return Some(Err(CodecError::Io(e))),
            }
        }
    }

    /// Queues a frame; writes the queue out once it holds more than a megabyte.
    pub async fn feed(&mut self, f: Frame) -> io::Result<()> {
        match f {
            Frame::Message(Message::Piece {
                piece,
                offset,
                data,
            }) => {
                encode_piece_header(piece, offset, data.len(), &mut self.tail);
                self.close_tail();
                self.queued += data.len();
                self.queue.push_back(data);
            }
            other => self
                .codec
                .encode(other, &mut self.tail)
                .map_err(|e| io::Error::other(e.to_string()))?,
        }
        if self.queued + self.tail.len() > WRITE_BOUNDARY {
            self.flush().await?;
        }
        Ok(())
    }

    /// Queues a frame and writes everything queued.
    pub async fn send(&mut self, f: Frame) -> io::Result<()> {
        self.feed(f).await?;
        self.flush().await
    }

    fn close_tail(&mut self) {
        if !self.tail.is_empty() {
            let b = self.tail.split().freeze();
            self.queued += b.len();
            self.queue.push_back(b);
        }
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.close_tail();
        while !self.queue.is_empty() {
            let n = {
                let slices: Vec<IoSlice<'_>> = self
                    .queue
                    .iter()
                    .take(MAX_SLICES)
                    .map(|b| IoSlice::new(b))
                    .collect();
                self.stream.write_vectored(&slices).await?
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.consume(n);
        }
        self.queued = 0;
        Ok(())
    }

    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if front.len() <= n {
                n -= front.len();
                self.queue.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarmbak_wire::{BlockRef, Handshake, Limits};
    use tokio::net::TcpListener;

    /// Frames written through `PeerIo` (blocks as separate slices, small messages batched,
    /// more than the write boundary queued) arrive intact and in order through `PeerIo`.
    #[tokio::test]
    async fn frames_round_trip_over_tcp() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let blocks: Vec<Bytes> = (0..100u32)
            .map(|i| Bytes::from(vec![(i % 251) as u8; 16 * 1024]))
            .collect();
        let sent = blocks.clone();
        let writer = tokio::spawn(async move {
            let s = TcpStream::connect(addr).await.unwrap();
            let mut io = PeerIo::new(s, PeerCodec::new(Limits::for_pieces(10)));
            io.send(Frame::Handshake(Handshake::new([1; 20], [2; 20])))
                .await
                .unwrap();
            for (i, b) in sent.into_iter().enumerate() {
                let i = i as u32;
                io.feed(Frame::Message(Message::Have(i % 10)))
                    .await
                    .unwrap();
                io.feed(Frame::Message(Message::Piece {
                    piece: i % 10,
                    offset: (i / 10) * 16 * 1024,
                    data: b,
                }))
                .await
                .unwrap();
            }
            io.feed(Frame::Message(Message::Request(BlockRef::new(3, 0, 16384))))
                .await
                .unwrap();
            io.flush().await.unwrap();
        });
        let (s, _) = l.accept().await.unwrap();
        let mut io = PeerIo::new(s, PeerCodec::new(Limits::for_pieces(10)));
        match io.next().await {
            Some(Ok(Frame::Handshake(h))) => assert_eq!(h.info_hash, [1; 20]),
            other => panic!("expected the handshake, got {other:?}"),
        }
        for (i, b) in blocks.iter().enumerate() {
            let i = i as u32;
            assert_eq!(
                io.next().await.unwrap().unwrap(),
                Frame::Message(Message::Have(i % 10))
            );
            match io.next().await.unwrap().unwrap() {
                Frame::Message(Message::Piece {
                    piece,
                    offset,
                    data,
                }) => {
                    assert_eq!((piece, offset), (i % 10, (i / 10) * 16 * 1024));
                    assert_eq!(&data, b);
                }
                other => panic!("expected block {i}, got {other:?}"),
            }
        }
        assert_eq!(
            io.next().await.unwrap().unwrap(),
            Frame::Message(Message::Request(BlockRef::new(3, 0, 16384)))
        );
        writer.await.unwrap();
        assert!(io.next().await.is_none(), "a clean close between frames");
    }

    /// A connection that closes in the middle of a message is an I/O error (a close, not
    /// a malformed message).
    #[tokio::test]
    async fn eof_mid_message_is_an_io_error() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let writer = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            // A 13-byte `request` cut after 6 bytes of its body.
            s.write_all(&[0, 0, 0, 13, 6, 0, 0, 0, 1, 0]).await.unwrap();
        });
        let (s, _) = l.accept().await.unwrap();
        let mut io = PeerIo::new(s, PeerCodec::after_handshake(Limits::for_pieces(10)));
        writer.await.unwrap();
        assert!(matches!(io.next().await, Some(Err(CodecError::Io(_)))));
    }
}
