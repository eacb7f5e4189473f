//! BEP 9: getting a snapshot's metainfo from swarmbak peers with nothing but its
//! infohash (for trackers that keep no metainfo, like opentracker). Standard clients
//! never serve metadata for private torrents, so only swarmbak peers answer.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use swarmbak_format::InfoHash;
use swarmbak_wire::{
    ExtensionHandshake, Frame, Handshake, Limits, Message, MetadataAssembler, MetadataMessage,
    PeerCodec, EXTENSION_HANDSHAKE_ID, UT_METADATA,
};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const OUR_UT_METADATA: u8 = 1;

/// Why a peer did not give us a torrent's metadata.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataFetchError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("timed out")]
    TimedOut,
    #[error("no handshake")]
    NoHandshake,
    #[error("the peer does not speak the extension protocol for this torrent")]
    NoExtensionProtocol,
    #[error("the peer serves no metadata")]
    NoMetadata,
    #[error("the peer refused the metadata")]
    Refused,
    #[error("the peer closed the connection")]
    Closed,
    /// A malformed message, or metadata that does not hash to the infohash.
    #[error("{0}")]
    Protocol(String),
}

fn protocol(e: impl std::fmt::Display) -> MetadataFetchError {
    MetadataFetchError::Protocol(e.to_string())
}

/// Asks one peer for the info dictionary of `ih`; returns a .torrent (canonical: the
/// info dict verbatim, plus `announce` when given) whose infohash is checked.
pub async fn from_peer(
    addr: SocketAddr,
    ih: InfoHash,
    peer_id: [u8; 20],
    announce: Option<&str>,
) -> Result<Vec<u8>, MetadataFetchError> {
    let s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| MetadataFetchError::TimedOut)?
        .map_err(MetadataFetchError::Connect)?;
    let mut f = Framed::new(s, PeerCodec::new(Limits::default()));
    let mut hs = Handshake::new(ih.0, peer_id);
    hs.reserved = crate::peer::reserved();
    f.send(Frame::Handshake(hs)).await.map_err(protocol)?;
    let work = async {
        let theirs = match f.next().await {
            Some(Ok(Frame::Handshake(h))) => h,
            _ => return Err(MetadataFetchError::NoHandshake),
        };
        if theirs.info_hash != ih.0 || !theirs.reserved.extension_protocol() {
            return Err(MetadataFetchError::NoExtensionProtocol);
        }
        let mut eh = ExtensionHandshake::default();
        eh.extensions
            .insert(UT_METADATA.to_string(), OUR_UT_METADATA);
        f.send(Frame::Message(Message::Extended {
            id: EXTENSION_HANDSHAKE_ID,
            payload: Bytes::from(eh.encode()),
        }))
        .await
        .map_err(protocol)?;
        let mut asm: Option<MetadataAssembler> = None;
        let mut their_id = None;
        while let Some(frame) = f.next().await {
            let Ok(Frame::Message(m)) = frame else {
                return Err(protocol("malformed message"));
            };
            let Message::Extended { id, payload } = m else {
                continue;
            };
            if id == EXTENSION_HANDSHAKE_ID {
                let h = ExtensionHandshake::parse(&payload).map_err(protocol)?;
                let (Some(tid), Some(size)) = (h.extension_id(UT_METADATA), h.metadata_size) else {
                    return Err(MetadataFetchError::NoMetadata);
                };
                let a = MetadataAssembler::new(ih.0, size).map_err(protocol)?;
                for piece in a.missing().collect::<Vec<_>>() {
                    let req = MetadataMessage::Request { piece };
                    f.send(Frame::Message(Message::Extended {
                        id: tid,
                        payload: Bytes::from(req.encode()),
                    }))
                    .await
                    .map_err(protocol)?;
                }
                their_id = Some(tid);
                asm = Some(a);
            } else if id == OUR_UT_METADATA {
                let (Some(a), Some(_)) = (asm.as_mut(), their_id) else {
                    continue;
                };
                match MetadataMessage::parse(&payload).map_err(protocol)? {
                    MetadataMessage::Data {
                        piece,
                        total_size,
                        data,
                    } => {
                        if let Some(info) =
                            a.add_piece(piece, total_size, &data).map_err(protocol)?
                        {
                            return Ok(info);
                        }
                    }
                    MetadataMessage::Reject { .. } => return Err(MetadataFetchError::Refused),
                    _ => {}
                }
            }
        }
        Err(MetadataFetchError::Closed)
    };
    let info = tokio::time::timeout(Duration::from_secs(15), work)
        .await
        .map_err(|_| MetadataFetchError::TimedOut)??;
    // A .torrent around the verified info dict (keys sorted: announce < info).
    let mut t = b"d".to_vec();
    if let Some(a) = announce {
        t.extend_from_slice(format!("8:announce{}:{a}", a.len()).as_bytes());
    }
    t.extend_from_slice(b"4:info");
    t.extend_from_slice(&info);
    t.push(b'e');
    Ok(t)
}
