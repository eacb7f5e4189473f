//! One peer connection: handshake, extension handshake, then serve and download blocks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use swarmbak_wire::{
    Bitfield, BlockOutcome, BlockRef, CodecError, ExtensionHandshake, Frame, Handshake, Limits,
    Message, MetadataMessage, PeerCodec, Reserved, BLOCK_SIZE, EXTENSION_HANDSHAKE_ID, SB_MACHINE,
    UT_METADATA,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::cache::PieceCache;
use crate::io::PeerIo;
use crate::torrent::{PeerKey, PeerView, Torrent};

/// Our extension ids (what peers send to us).
const OUR_UT_METADATA: u8 = 1;
const OUR_SB_MACHINE: u8 = 2;
/// Requests kept in flight per peer.
const PIPELINE: usize = 64;
/// Largest block a peer may request.
const MAX_REQUEST: u32 = 128 * 1024;
/// Requests unanswered this long go back to the picker for other peers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A peer silent this long is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Orders the engine gives a connection.
#[derive(Debug, Clone, Copy)]
pub enum Control {
    Choke,
    Unchoke,
    Close,
}

/// Why a connection ended.
#[derive(Debug)]
pub enum End {
    /// Closed normally (by either side, or on our order).
    Closed(String),
    /// The peer misbehaved; it is banned from this torrent.
    Banned(String),
}

pub struct Conn {
    pub key: PeerKey,
    pub addr: SocketAddr,
    pub torrent: Arc<Torrent>,
    pub peer_id: [u8; 20],
    pub listen_port: u16,
    pub control: mpsc::UnboundedReceiver<Control>,
    /// Poked when the peer becomes interested (the engine gives free slots at once).
    pub interest: Arc<tokio::sync::Notify>,
    /// Pieces read to serve peers (the engine's, shared by its connections).
    pub cache: Arc<PieceCache>,
}

/// `SWARMBAK_WIRE_LOG=1`: one stderr line (`swarmbak-wire {json}`) per connection event:
/// the bits negotiated, the peer's extension handshake, and the messages each side sent.
/// The interop tests read it to report what each client negotiated.
fn wire_log_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SWARMBAK_WIRE_LOG").is_some_and(|v| v != "0"))
}

fn wire_log(v: serde_json::Value) {
    if wire_log_on() {
        eprintln!("swarmbak-wire {v}");
    }
}

/// The message's name, for the wire log.
fn kind(m: &Message) -> &'static str {
    match m {
        Message::KeepAlive => "keep_alive",
        Message::Choke => "choke",
        Message::Unchoke => "unchoke",
        Message::Interested => "interested",
        Message::NotInterested => "not_interested",
        Message::Have(_) => "have",
        Message::Bitfield(_) => "bitfield",
        Message::Request(_) => "request",
        Message::Piece { .. } => "piece",
        Message::Cancel(_) => "cancel",
        Message::Port(_) => "port",
        Message::Suggest(_) => "suggest",
        Message::HaveAll => "have_all",
        Message::HaveNone => "have_none",
        Message::Reject(_) => "reject",
        Message::AllowedFast(_) => "allowed_fast",
        Message::Extended { .. } => "extended",
        _ => "unknown",
    }
}

/// Message counts by kind, one direction (kept only while the wire log is on). The first
/// message of each kind is logged as it happens (a short-lived fetch may exit before its
/// connections log their `end`).
struct Counts {
    map: std::collections::BTreeMap<&'static str, u64>,
    peer: SocketAddr,
    dir: &'static str,
}

impl Counts {
    fn new(peer: SocketAddr, dir: &'static str) -> Counts {
        Counts {
            map: Default::default(),
            peer,
            dir,
        }
    }

    fn add(&mut self, m: &Message) {
        if wire_log_on() {
            let k = kind(m);
            let n = self.map.entry(k).or_default();
            *n += 1;
            if *n == 1 {
                wire_log(serde_json::json!({
                    "event": "first",
                    "peer": self.peer.to_string(),
                    "dir": self.dir,
                    "kind": k,
                }));
            }
        }
    }
}

/// The reserved bits swarmbak sets: the fast extension and the extension protocol.
pub fn reserved() -> Reserved {
    Reserved::default()
        .with_fast(true)
        .with_extension_protocol(true)
}

/// Connects out and exchanges handshakes; the engine then admits the connection (or
/// not: a second one to the same peer) and runs it with [`accepted`].
pub async fn dial(conn: &Conn) -> Result<(PeerIo, Handshake), End> {
    let stream =
        match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(conn.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(End::Closed(format!("connect: {e}"))),
            Err(_) => return Err(End::Closed("connect: timed out".into())),
        };
    let _ = stream.set_nodelay(true);
    let limits = Limits::for_pieces(conn.torrent.num_pieces());
    let mut framed = PeerIo::new(stream, PeerCodec::new(limits));
    let mut hs = Handshake::new(conn.torrent.ih.0, conn.peer_id);
    hs.reserved = reserved();
    if let Err(e) = framed.send(Frame::Handshake(hs)).await {
        return Err(End::Closed(format!("send handshake: {e}")));
    }
    let theirs = match tokio::time::timeout(Duration::from_secs(10), framed.next()).await {
        Ok(Some(Ok(Frame::Handshake(h)))) => h,
        Ok(Some(Err(e))) => return Err(End::Closed(format!("handshake: {e}"))),
        _ => return Err(End::Closed("no handshake".into())),
    };
    if theirs.info_hash != conn.torrent.ih.0 {
        return Err(End::Closed("handshake for another torrent".into()));
    }
    if theirs.peer_id == conn.peer_id {
        return Err(End::Closed("connected to ourselves".into()));
    }
    Ok((framed, theirs))
}

/// Runs a connection whose handshakes were exchanged and which the engine admitted.
pub async fn accepted(conn: Conn, framed: PeerIo, theirs: Reserved) -> End {
    run(conn, framed, theirs).await
}

struct State {
    fast: bool,
    ext: bool,
    their_ut_metadata: Option<u8>,
    am_choking: bool,
    am_interested: bool,
    peer_choking: bool,
    in_flight: Vec<BlockRef>,
    /// When the oldest outstanding request was sent (None: nothing outstanding).
    waiting_since: Option<Instant>,
    allowed_fast: Vec<u32>,
    last_heard: Instant,
    last_sent: Instant,
    /// Messages sent and received, by kind (for the wire log).
    sent: Counts,
    received: Counts,
    /// The peer's address (bans are by address).
    addr: SocketAddr,
    /// Poked when the peer becomes interested.
    interest: Arc<tokio::sync::Notify>,
    cache: Arc<PieceCache>,
}

async fn run(mut conn: Conn, mut framed: PeerIo, theirs: Reserved) -> End {
    let t = conn.torrent.clone();
    let n = t.num_pieces();
    let common = reserved().common(theirs);
    let mut st = State {
        fast: common.fast(),
        ext: common.extension_protocol(),
        their_ut_metadata: None,
        am_choking: true,
        am_interested: false,
        peer_choking: true,
        in_flight: Vec::new(),
        waiting_since: None,
        allowed_fast: Vec::new(),
        last_heard: Instant::now(),
        last_sent: Instant::now(),
        sent: Counts::new(conn.addr, "sent"),
        received: Counts::new(conn.addr, "received"),
        addr: conn.addr,
        interest: conn.interest.clone(),
        cache: conn.cache.clone(),
    };
    wire_log(serde_json::json!({
        "event": "start",
        "peer": conn.addr.to_string(),
        "infohash": hex::encode(t.ih.0),
        "their_reserved": hex::encode(theirs.0),
        "their_fast": theirs.fast(),
        "their_extension_protocol": theirs.extension_protocol(),
        "their_dht": theirs.dht(),
        "fast": st.fast,
        "extension_protocol": st.ext,
    }));
    let mut haves = t.haves.subscribe();
    t.inner().peers.insert(
        conn.key,
        PeerView {
            addr: conn.addr,
            machine: None,
            has: Bitfield::new(n),
            interested: false,
            downloaded: 0,
            uploaded: 0,
        },
    );
    let end = async {
        // Extension handshake, then what we have.
        if st.ext {
            let mut eh = ExtensionHandshake::default();
            eh.extensions.insert(UT_METADATA.to_string(), OUR_UT_METADATA);
            eh.extensions.insert(SB_MACHINE.to_string(), OUR_SB_MACHINE);
            eh.client = Some(format!("swarmbak {}", env!("CARGO_PKG_VERSION")));
            eh.port = Some(conn.listen_port);
            eh.reqq = Some(512);
            eh.metadata_size = Some(t.info.len() as u64);
            // Short-lived processes (fetch, health) send no key: they are not holders and
            // must not move placement while they run.
            eh.sb_key = if t.me.is_empty() { None } else { Some(t.me.clone()) };
            eh.sb_owner = !t.me.is_empty() && t.is_own();
            send(&mut framed, &mut st.sent, Message::Extended { id: EXTENSION_HANDSHAKE_ID, payload: Bytes::from(eh.encode()) }).await?;
        }
        let have = t.have();
        if st.fast && have.has_all() {
            send(&mut framed, &mut st.sent, Message::HaveAll).await?;
        } else if st.fast && have.has_none() {
            send(&mut framed, &mut st.sent, Message::HaveNone).await?;
        } else if !have.has_none() {
            send(&mut framed, &mut st.sent, Message::Bitfield(Bytes::copy_from_slice(have.as_bytes()))).await?;
        }
        update_interest(&t, conn.key, &mut st, &mut framed).await?;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                frame = framed.next() => {
                    let msg = match frame {
                        Some(Ok(Frame::Message(m))) => m,
                        Some(Ok(Frame::Handshake(_))) => return Err(End::Banned("a second handshake".into())),
                        Some(Err(CodecError::Io(e))) => return Err(End::Closed(format!("connection: {e}"))),
                        Some(Err(e)) => return Err(End::Banned(format!("malformed message: {e}"))),
                        None => return Err(End::Closed("peer closed the connection".into())),
                    };
                    st.last_heard = Instant::now();
                    st.received.add(&msg);
                    on_message(&t, conn.key, &mut st, &mut framed, msg).await?;
                }
                have = haves.recv() => {
                    match have {
                        Ok(p) => {
                            send(&mut framed, &mut st.sent, Message::Have(p)).await?;
                            st.last_sent = Instant::now();
                            update_interest(&t, conn.key, &mut st, &mut framed).await?;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return Err(End::Closed("torrent closed".into())),
                    }
                }
                c = conn.control.recv() => {
                    match c {
                        Some(Control::Choke) if !st.am_choking => {
                            st.am_choking = true;
                            send(&mut framed, &mut st.sent, Message::Choke).await?;
                        }
                        Some(Control::Unchoke) if st.am_choking => {
                            st.am_choking = false;
                            send(&mut framed, &mut st.sent, Message::Unchoke).await?;
                        }
                        Some(Control::Close) | None => return Err(End::Closed("closed by us".into())),
                        _ => {}
                    }
                }
                _ = tick.tick() => {
                    flush(&mut framed).await?;
                    if t.inner().kick.remove(&conn.key) {
                        return Err(End::Banned("sent a piece that failed its SHA-1 check".into()));
                    }
                    if st.last_heard.elapsed() > IDLE_TIMEOUT {
                        return Err(End::Closed("peer idle".into()));
                    }
                    if st.last_sent.elapsed() > Duration::from_secs(60) {
                        send(&mut framed, &mut st.sent, Message::KeepAlive).await?;
                        st.last_sent = Instant::now();
                    }
                    // A peer that leaves requests unanswered gives them back to the picker.
                    if st.waiting_since.is_some_and(|w| w.elapsed() > REQUEST_TIMEOUT) {
                        let mut g = t.inner();
                        for b in st.in_flight.drain(..) {
                            g.picker.request_failed(&conn.key, &b);
                        }
                        st.waiting_since = None;
                    }
                    update_interest(&t, conn.key, &mut st, &mut framed).await?;
                    request_more(&t, conn.key, &mut st, &mut framed).await?;
                }
            }
        }
    }
    .await;
    let end = match end {
        Ok(()) => End::Closed("done".into()),
        Err(e) => e,
    };
    wire_log(serde_json::json!({
        "event": "end",
        "peer": conn.addr.to_string(),
        "infohash": hex::encode(t.ih.0),
        "end": format!("{end:?}"),
        "sent": st.sent.map,
        "received": st.received.map,
    }));
    let mut g = t.inner();
    if let Some(v) = g.peers.remove(&conn.key) {
        g.picker.remove_peer(&conn.key, &v.has);
    }
    if let End::Banned(_) = &end {
        g.banned_addrs.insert(conn.addr);
    }
    drop(g);
    t.update_wanted();
    end
}

type F = PeerIo;

/// Queues a message without flushing (flush once after a batch).
async fn feed(framed: &mut F, sent: &mut Counts, m: Message) -> Result<(), End> {
    sent.add(&m);
    framed
        .feed(Frame::Message(m))
        .await
        .map_err(|e| End::Closed(format!("send: {e}")))
}

async fn flush(framed: &mut F) -> Result<(), End> {
    framed
        .flush()
        .await
        .map_err(|e| End::Closed(format!("send: {e}")))
}

async fn send(framed: &mut F, sent: &mut Counts, m: Message) -> Result<(), End> {
    sent.add(&m);
    framed
        .send(Frame::Message(m))
        .await
        .map_err(|e| End::Closed(format!("send: {e}")))
}

async fn update_interest(
    t: &Torrent,
    key: PeerKey,
    st: &mut State,
    framed: &mut F,
) -> Result<(), End> {
    let want = {
        let g = t.inner();
        g.peers
            .get(&key)
            .map(|v| g.picker.is_interesting(&v.has))
            .unwrap_or(false)
    };
    if want != st.am_interested {
        st.am_interested = want;
        send(
            framed,
            &mut st.sent,
            if want {
                Message::Interested
            } else {
                Message::NotInterested
            },
        )
        .await?;
    }
    Ok(())
}

async fn request_more(
    t: &Torrent,
    key: PeerKey,
    st: &mut State,
    framed: &mut F,
) -> Result<(), End> {
    if !st.am_interested || st.in_flight.len() >= PIPELINE {
        return Ok(());
    }
    if st.peer_choking && (!st.fast || st.allowed_fast.is_empty()) {
        return Ok(());
    }
    let blocks = {
        let mut g = t.inner();
        let Some(has) = g.peers.get(&key).map(|v| v.has.clone()) else {
            return Ok(());
        };
        let allowed = if st.peer_choking {
            Some(st.allowed_fast.as_slice())
        } else {
            None
        };
        g.picker
            .pick(&key, &has, PIPELINE - st.in_flight.len(), allowed)
    };
    let any = !blocks.is_empty();
    for b in blocks {
        if st.in_flight.is_empty() {
            st.waiting_since = Some(Instant::now());
        }
        st.in_flight.push(b);
        feed(framed, &mut st.sent, Message::Request(b)).await?;
    }
    if any {
        flush(framed).await?;
    }
    Ok(())
}

fn forget(st: &mut State, b: &BlockRef) {
    if let Some(i) = st.in_flight.iter().position(|x| x == b) {
        st.in_flight.swap_remove(i);
        // The peer answers: measure the next wait from now.
        st.waiting_since = if st.in_flight.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
    }
}

async fn on_message(
    t: &Arc<Torrent>,
    key: PeerKey,
    st: &mut State,
    framed: &mut F,
    msg: Message,
) -> Result<(), End> {
    let n = t.num_pieces();
    match msg {
        Message::KeepAlive | Message::Port(_) | Message::Suggest(_) | Message::Unknown { .. } => {}
        Message::Choke => {
            st.peer_choking = true;
            if !st.fast {
                // Without the fast extension a choke drops every outstanding request.
                let mut g = t.inner();
                for b in st.in_flight.drain(..) {
                    g.picker.request_failed(&key, &b);
                }
            }
        }
        Message::Unchoke => {
            st.peer_choking = false;
            request_more(t, key, st, framed).await?;
        }
        Message::Interested | Message::NotInterested => {
            let on = matches!(msg, Message::Interested);
            let newly = t.inner().peers.get_mut(&key).is_some_and(|v| {
                let was = v.interested;
                v.interested = on;
                on && !was
            });
            if newly {
                st.interest.notify_one();
            }
        }
        Message::Have(p) => {
            if p >= n {
                return Err(End::Banned(format!("have for piece {p} of {n}")));
            }
            {
                let mut g = t.inner();
                let newly = g.peers.get_mut(&key).map(|v| {
                    !v.has.get(p) && {
                        v.has.set(p, true);
                        true
                    }
                });
                if newly == Some(true) {
                    g.picker.add_have(p);
                }
            }
            t.update_wanted();
            update_interest(t, key, st, framed).await?;
        }
        Message::Bitfield(b) => {
            let bf = Bitfield::from_bytes(&b, n)
                .map_err(|e| End::Banned(format!("bad bitfield: {e}")))?;
            set_has(t, key, bf);
            update_interest(t, key, st, framed).await?;
        }
        Message::HaveAll | Message::HaveNone => {
            let bf = if matches!(msg, Message::HaveAll) {
                Bitfield::full(n)
            } else {
                Bitfield::new(n)
            };
            set_has(t, key, bf);
            update_interest(t, key, st, framed).await?;
        }
        Message::AllowedFast(p) if p < n && !st.allowed_fast.contains(&p) => {
            st.allowed_fast.push(p);
        }
        Message::Request(b) => {
            let valid = b.piece < n
                && b.length > 0
                && b.length <= MAX_REQUEST
                && (b.offset as u64 + b.length as u64) <= t.layout().shard_size as u64;
            if !valid {
                return Err(End::Banned(format!("invalid request {b:?}")));
            }
            let data = if st.am_choking {
                None
            } else {
                t.read_block(&st.cache, b.piece, b.offset, b.length).await
            };
            match data {
                Some(d) => {
                    if let Some(v) = t.inner().peers.get_mut(&key) {
                        v.uploaded += d.len() as u64;
                    }
                    feed(
                        framed,
                        &mut st.sent,
                        Message::Piece {
                            piece: b.piece,
                            offset: b.offset,
                            data: d,
                        },
                    )
                    .await?;
                    // More requests already read: answer them before flushing, so many
                    // blocks leave in one write.
                    if framed.read_buffer().len() < 17 {
                        flush(framed).await?;
                    }
                    st.last_sent = Instant::now();
                }
                None if st.fast => send(framed, &mut st.sent, Message::Reject(b)).await?,
                None => {}
            }
        }
        Message::Piece {
            piece,
            offset,
            data,
        } => {
            let b = BlockRef::new(piece, offset, data.len() as u32);
            forget(st, &b);
            let outcome = t.inner().picker.block_received(&key, &b);
            match outcome {
                BlockOutcome::Accepted {
                    piece_complete,
                    cancel,
                } => {
                    let done = {
                        let mut g = t.inner();
                        if let Some(v) = g.peers.get_mut(&key) {
                            v.downloaded += data.len() as u64;
                        }
                        Torrent::add_block(
                            &mut g,
                            t.piece_size(piece),
                            piece,
                            offset,
                            data,
                            piece_complete,
                        )
                        .map_err(End::Banned)?
                    };
                    let _ = cancel;
                    if let Some(blocks) = done {
                        // Hashing and writing 1 MiB takes about a millisecond: done on a
                        // blocking thread while this connection goes on reading.
                        t.complete_in_background(piece, blocks, key, st.addr);
                    }
                    request_more(t, key, st, framed).await?;
                }
                BlockOutcome::Duplicate => {}
                _ => {
                    // A block nobody asked for: tolerated once a request was cancelled or
                    // timed out, but a peer that sends blocks out of range is lying.
                    if piece >= n
                        || offset as u64 + data.len() as u64 > t.layout().shard_size as u64
                    {
                        return Err(End::Banned(format!("unrequested block {b:?}")));
                    }
                }
            }
        }
        Message::Cancel(_) => {}
        Message::Reject(b) => {
            forget(st, &b);
            t.inner().picker.request_failed(&key, &b);
        }
        Message::Extended { id, payload } => {
            if id == EXTENSION_HANDSHAKE_ID {
                let eh = ExtensionHandshake::parse(&payload)
                    .map_err(|e| End::Banned(format!("bad extension handshake: {e}")))?;
                wire_log(serde_json::json!({
                    "event": "extension_handshake",
                    "peer": st.sent.peer.to_string(),
                    "infohash": hex::encode(t.ih.0),
                    "client": eh.client,
                    "m": eh.extensions,
                    "metadata_size": eh.metadata_size,
                    "reqq": eh.reqq,
                    "sb_key": eh.sb_key.is_some(),
                }));
                st.their_ut_metadata = eh.extension_id(UT_METADATA);
                if let Some(k) = eh.sb_key {
                    if eh.sb_owner {
                        t.learn_owner(&k);
                    }
                    if let Some(v) = t.inner().peers.get_mut(&key) {
                        v.machine = Some(k);
                    }
                    t.update_wanted();
                }
            } else if id == OUR_UT_METADATA {
                if let Ok(MetadataMessage::Request { piece }) = MetadataMessage::parse(&payload) {
                    if let Some(their) = st.their_ut_metadata {
                        let reply = MetadataMessage::data_for(&t.info, piece)
                            .unwrap_or(MetadataMessage::Reject { piece });
                        send(
                            framed,
                            &mut st.sent,
                            Message::Extended {
                                id: their,
                                payload: Bytes::from(reply.encode()),
                            },
                        )
                        .await?;
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn set_has(t: &Torrent, key: PeerKey, bf: Bitfield) {
    {
        let mut g = t.inner();
        let old = g.peers.get(&key).map(|v| v.has.clone());
        if let Some(old) = old {
            g.picker.remove_peer(&key, &old);
        }
        g.picker.add_peer(&bf);
        if let Some(v) = g.peers.get_mut(&key) {
            v.has = bf;
        }
    }
    t.update_wanted();
}

/// Block size used for requests.
pub const REQUEST_SIZE: u32 = BLOCK_SIZE;
