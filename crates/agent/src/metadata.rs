//! BEP 9: getting a snapshot's metainfo from swarmbak peers with nothing but its
//! infohash (for trackers that keep no metainfo, like opentracker). Standard clients
//! never serve metadata for private torrents, so only swarmbak peers answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use swarmbak_format::InfoHash;
use swarmbak_wire::{
    ExtensionHandshake, Frame, Handshake, Limits, MachineMessage, Message, MetadataAssembler,
    MetadataMessage, PeerCodec, EXTENSION_HANDSHAKE_ID, SB_MACHINE, UT_METADATA,
};

use crate::auth::{Identity, MachineAuth, Tagged};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const OUR_UT_METADATA: u8 = 1;
const OUR_SB_MACHINE: u8 = 2;

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
    /// An enrolled machine asks only members of its organisation.
    #[error("not a member of our organisation: {0}")]
    NotAMember(String),
    #[error("the peer closed the connection")]
    Closed,
    /// A malformed message, or metadata that does not hash to the infohash.
    #[error("{0}")]
    Protocol(String),
}

fn protocol(e: impl std::fmt::Display) -> MetadataFetchError {
    MetadataFetchError::Protocol(e.to_string())
}

/// What a peer gave us: a .torrent (canonical: the verified info dict, plus `announce`
/// when given) and, from an authenticated member, the owner's signed publish record and
/// certificate (wire.md type 5), not checked yet.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub torrent: Vec<u8>,
    pub record: Option<(Vec<u8>, Vec<u8>)>,
}

/// Asks one peer for the info dictionary of `ih`. An enrolled machine (`identity`)
/// authenticates first (`sb_machine`, wire.md "Authenticated peers": members serve
/// metadata only to members and listed peers) and takes the owner's record the peer
/// sends once the exchange is done; a peer that does not authenticate gives it nothing.
pub async fn from_peer(
    addr: SocketAddr,
    ih: InfoHash,
    peer_id: [u8; 20],
    announce: Option<&str>,
    identity: Option<Arc<Identity>>,
) -> Result<Fetched, MetadataFetchError> {
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
        let mut auth =
            identity.map(|id| MachineAuth::new(id, true, false, ih.0, peer_id, theirs.peer_id));
        let mut eh = ExtensionHandshake::default();
        eh.extensions
            .insert(UT_METADATA.to_string(), OUR_UT_METADATA);
        if let Some(a) = &auth {
            eh.extensions.insert(SB_MACHINE.to_string(), OUR_SB_MACHINE);
            eh.sb_nonce = Some(a.nonce());
        }
        send_extended(&mut f, EXTENSION_HANDSHAKE_ID, eh.encode()).await?;
        let mut asm: Option<MetadataAssembler> = None;
        // Their ut_metadata id, and whether we asked (at once, or after authenticating).
        let mut ut_tid = None;
        let mut asked = false;
        let mut their_sb = None;
        let mut tagged: Option<Tagged> = None;
        let mut record = None;
        while let Some(frame) = f.next().await {
            let Ok(Frame::Message(m)) = frame else {
                return Err(protocol("malformed message"));
            };
            let Message::Extended { id, payload } = m else {
                continue;
            };
            if id == EXTENSION_HANDSHAKE_ID {
                if asm.is_some() {
                    continue;
                }
                let h = ExtensionHandshake::parse(&payload).map_err(protocol)?;
                // An enrolled member tells the size only once we authenticated, in a later
                // handshake (wire.md "Deferred availability"); the first one opens the
                // exchange.
                if let Some(size) = h.metadata_size {
                    asm = Some(MetadataAssembler::new(ih.0, size).map_err(protocol)?);
                }
                if let Some(tid) = ut_tid {
                    if tagged.is_some() && !asked && asm.is_some() {
                        request_all(&mut f, tid, asm.as_ref()).await?;
                        asked = true;
                    }
                    continue;
                }
                let Some(tid) = h.extension_id(UT_METADATA) else {
                    return Err(MetadataFetchError::NoMetadata);
                };
                ut_tid = Some(tid);
                match auth.as_mut() {
                    Some(a) => {
                        let (Some(sb), Some(_)) = (h.extension_id(SB_MACHINE), h.sb_nonce) else {
                            return Err(MetadataFetchError::NotAMember(
                                "it offers no sb_machine exchange".into(),
                            ));
                        };
                        their_sb = Some(sb);
                        let step = a
                            .on_peer_handshake(h.sb_nonce, true, Instant::now())
                            .map_err(|e| MetadataFetchError::NotAMember(e.reason))?;
                        if let Some(m) = step.send {
                            send_extended(&mut f, sb, m.encode()).await?;
                        }
                    }
                    None => {
                        if asm.is_none() {
                            return Err(MetadataFetchError::NoMetadata);
                        }
                        asked = true;
                        request_all(&mut f, tid, asm.as_ref()).await?;
                    }
                }
            } else if id == OUR_SB_MACHINE {
                let (Some(a), Some(sb)) = (auth.as_mut(), their_sb) else {
                    continue;
                };
                if let Some(tg) = tagged.as_mut() {
                    // Held statements and anything else: not for a fetch.
                    if let MachineMessage::Record { record: r, cert } =
                        tg.open(&payload).map_err(protocol)?
                    {
                        record = Some((r, cert));
                    }
                    continue;
                }
                let msg = MachineMessage::parse(&payload).map_err(protocol)?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                let step = a
                    .on_message(msg, now)
                    .map_err(|e| MetadataFetchError::NotAMember(e.reason))?;
                if let Some(m) = step.send {
                    send_extended(&mut f, sb, m.encode()).await?;
                }
                if step.member.is_some() {
                    tagged = Tagged::of(a);
                    // The peer sent its record (if any) right after the exchange, so it
                    // arrives before the metadata we ask for now.
                    // With the size known (an older peer sent it at once), else at its
                    // next handshake.
                    if let (Some(tid), true) = (ut_tid, asm.is_some()) {
                        request_all(&mut f, tid, asm.as_ref()).await?;
                        asked = true;
                    }
                }
            } else if id == OUR_UT_METADATA {
                let (Some(a), true) = (asm.as_mut(), asked) else {
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
                            return Ok((info, record));
                        }
                    }
                    MetadataMessage::Reject { .. } => return Err(MetadataFetchError::Refused),
                    _ => {}
                }
            }
        }
        Err(MetadataFetchError::Closed)
    };
    let (info, record) = tokio::time::timeout(Duration::from_secs(15), work)
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
    Ok(Fetched { torrent: t, record })
}

/// Sends one extended message under the peer's id `id`.
async fn send_extended(
    f: &mut Framed<TcpStream, PeerCodec>,
    id: u8,
    payload: Vec<u8>,
) -> Result<(), MetadataFetchError> {
    f.send(Frame::Message(Message::Extended {
        id,
        payload: Bytes::from(payload),
    }))
    .await
    .map_err(protocol)
}

/// Asks for every metadata piece still missing.
async fn request_all(
    f: &mut Framed<TcpStream, PeerCodec>,
    tid: u8,
    asm: Option<&MetadataAssembler>,
) -> Result<(), MetadataFetchError> {
    let Some(a) = asm else { return Ok(()) };
    for piece in a.missing().collect::<Vec<_>>() {
        send_extended(f, tid, MetadataMessage::Request { piece }.encode()).await?;
    }
    Ok(())
}
