//! One peer connection's protocol state, without I/O: it consumes received messages and
//! timer ticks and returns [`Action`]s for the engine that owns the socket and the disk.
//!
//! The session starts once the handshake is done and the torrent's piece count is known
//! (a magnet fetch first gets the metadata with [`MetadataAssembler`](crate::MetadataAssembler),
//! keeping any early `bitfield`/`have` messages to replay here afterwards).
//!
//! The rules it implements are `protocol-spec/wire.md` ("State machine", "Disconnect and
//! ban"). Requests the peer makes are queued here ([`PeerSession::pop_request`]); the
//! engine reads and sends the blocks, so a `cancel` or a choke that arrives before a
//! request is served takes it out of the queue.

use std::collections::VecDeque;
use std::hash::Hash;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::bitfield::Bitfield;
use crate::extension::{ExtensionHandshake, EXTENSION_HANDSHAKE_ID, UT_METADATA};
use crate::handshake::Reserved;
use crate::message::{BlockRef, Message, BLOCK_SIZE};
use crate::metadata::MetadataMessage;
use crate::picker::{BlockOutcome, PiecePicker};

/// Session parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Most requests of ours outstanding at once (capped by the peer's `reqq`). Default 64
    /// (1 MiB in flight in 16 KiB blocks).
    pub pipeline_depth: usize,
    /// No block for this long while requests are outstanding: they are all dropped (and
    /// cancelled), and the peer is marked snubbed until it sends a block. Default 30 s.
    pub request_timeout: Duration,
    /// Nothing received for this long closes the connection. Default 120 s.
    pub idle_timeout: Duration,
    /// A keep-alive is sent after this long without sending. Default 60 s (half the idle
    /// timeout, so one late keep-alive still arrives in time).
    pub keepalive_interval: Duration,
    /// Longest block we serve. Default 16 KiB; longer requests are refused.
    pub max_request_len: u32,
    /// Most requests of the peer's we queue. Default 500; advertise it as `reqq`.
    pub max_incoming_requests: usize,
    /// Our extension handshake (sent when both sides set the BEP 10 bit); its `m` also
    /// tells which extended ids we receive under which name.
    pub extensions: ExtensionHandshake,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            pipeline_depth: 64,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            keepalive_interval: Duration::from_secs(60),
            max_request_len: BLOCK_SIZE,
            max_incoming_requests: 500,
            extensions: ExtensionHandshake::default(),
        }
    }
}

/// Why a session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// A message that could not be understood (bad bitfield, bad extension payload).
    Malformed(String),
    /// A message not allowed here (fast messages without BEP 6, a late bitfield, ...).
    ProtocolViolation(&'static str),
    /// A `piece` for a block we never requested.
    UnrequestedBlock(BlockRef),
    /// A piece index at or past the piece count.
    PieceOutOfRange(u32),
    /// The peer alone sent a piece that failed its hash check.
    HashFailed(u32),
    /// Nothing heard from the peer for the idle timeout.
    Idle,
}

impl DisconnectReason {
    /// Should the peer be banned from this torrent? Everything but an idle timeout
    /// (wire.md, "Disconnect and ban").
    pub fn bans(&self) -> bool {
        !matches!(self, DisconnectReason::Idle)
    }
}

/// What the engine should do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action<P> {
    /// Send this message to the peer.
    Send(Message),
    /// Write these bytes (new data for a block we requested).
    StoreBlock {
        /// Piece index.
        piece: u32,
        /// Offset in the piece.
        offset: u32,
        /// The bytes.
        data: Bytes,
    },
    /// Every block of this piece is in: hash it, then tell the picker
    /// (`piece_verified`, or `piece_failed` and [`PeerSession::hash_failed`] for its
    /// senders).
    VerifyPiece(u32),
    /// Cancel this request at another peer's session ([`PeerSession::cancel`]): endgame.
    CancelAt {
        /// The other peer.
        peer: P,
        /// The block.
        block: BlockRef,
    },
    /// The peer's extension handshake arrived (its `sb_key` names its machine).
    ExtensionHandshake(Box<ExtensionHandshake>),
    /// A `ut_metadata` message from the peer.
    Metadata(MetadataMessage),
    /// An extended message for another extension we advertised (e.g. `sb_machine`).
    Extended {
        /// The extension's name.
        name: String,
        /// The payload.
        payload: Bytes,
    },
    /// The peer's DHT port (BEP 5).
    DhtPort(u16),
    /// Close the connection; ban the peer from this torrent if `ban`.
    Disconnect {
        /// Why.
        reason: DisconnectReason,
        /// Report the peer for banning.
        ban: bool,
    },
}

/// One peer connection.
#[derive(Debug, Clone)]
pub struct PeerSession<P> {
    key: P,
    config: SessionConfig,
    num_pieces: u32,
    fast: bool,
    extended: bool,
    am_choking: bool,
    am_interested: bool,
    peer_choking: bool,
    peer_interested: bool,
    peer_has: Bitfield,
    pending: Vec<BlockRef>,
    /// Since when we wait for a block (requests outstanding, none answered since).
    waiting_since: Option<Instant>,
    dropped: VecDeque<BlockRef>,
    allowed_fast: Vec<u32>,
    incoming: VecDeque<BlockRef>,
    peer_extensions: Option<ExtensionHandshake>,
    last_received: Instant,
    last_sent: Instant,
    snubbed: bool,
    closed: bool,
    released: bool,
    downloaded: u64,
    uploaded: u64,
    /// Our first messages are out ([`PeerSession::start`] or
    /// [`PeerSession::start_hidden`]); until then what we would send waits in `held`.
    started: bool,
    held: Vec<Message>,
    /// Started hidden and not revealed yet: the peer was told `have none` (or nothing)
    /// and no `metadata_size`, and is sent no `have`.
    hidden: bool,
}

const MAX_ALLOWED_FAST: usize = 64;

/// Most messages held before the first ones are sent ([`PeerSession::defer_start`]); a
/// peer that makes us queue more (requests while choked, each refused) is closed.
pub const MAX_HELD: usize = 1024;

impl<P: Clone + Eq + Hash> PeerSession<P> {
    /// A session after the handshakes: `common` is our reserved bits and the peer's,
    /// anded ([`Reserved::common`]).
    pub fn new(
        key: P,
        config: SessionConfig,
        num_pieces: u32,
        common: Reserved,
        now: Instant,
    ) -> Self {
        PeerSession {
            key,
            config,
            num_pieces,
            fast: common.fast(),
            extended: common.extension_protocol(),
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            peer_has: Bitfield::new(num_pieces),
            pending: Vec::new(),
            waiting_since: None,
            dropped: VecDeque::new(),
            allowed_fast: Vec::new(),
            incoming: VecDeque::new(),
            peer_extensions: None,
            last_received: now,
            last_sent: now,
            snubbed: false,
            closed: false,
            released: false,
            downloaded: 0,
            uploaded: 0,
            started: true,
            held: Vec::new(),
            hidden: false,
        }
    }

    /// Holds what we would send until [`PeerSession::start`] or
    /// [`PeerSession::start_hidden`]: the caller decides what to tell the peer once it
    /// knows who the peer is (wire.md "Deferred availability"), and our availability
    /// message still comes first. Call before anything else.
    pub fn defer_start(&mut self) {
        self.started = false;
    }

    /// Whether both sides speak the extension protocol (BEP 10).
    pub fn extension_protocol(&self) -> bool {
        self.extended
    }

    /// Whether our first messages are out.
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// Whether the peer has been told nothing of what we hold ([`PeerSession::start_hidden`]
    /// and no [`PeerSession::reveal`] since).
    pub fn is_hidden(&self) -> bool {
        self.hidden
    }

    /// The caller's key for this peer.
    pub fn key(&self) -> &P {
        &self.key
    }
    /// Are we choking the peer?
    pub fn am_choking(&self) -> bool {
        self.am_choking
    }
    /// Are we interested in the peer?
    pub fn am_interested(&self) -> bool {
        self.am_interested
    }
    /// Is the peer choking us?
    pub fn peer_choking(&self) -> bool {
        self.peer_choking
    }
    /// Is the peer interested in us?
    pub fn peer_interested(&self) -> bool {
        self.peer_interested
    }
    /// The peer's pieces.
    pub fn peer_has(&self) -> &Bitfield {
        &self.peer_has
    }
    /// The peer's extension handshake, once received.
    pub fn peer_extensions(&self) -> Option<&ExtensionHandshake> {
        self.peer_extensions.as_ref()
    }
    /// Requests of ours awaiting an answer.
    pub fn pending_requests(&self) -> impl Iterator<Item = &BlockRef> {
        self.pending.iter()
    }
    /// Requests of the peer's queued, not yet served.
    pub fn queued_requests(&self) -> usize {
        self.incoming.len()
    }
    /// Has a request of ours timed out since the last block arrived?
    pub fn is_snubbed(&self) -> bool {
        self.snubbed
    }
    /// Payload bytes accepted from the peer.
    pub fn downloaded(&self) -> u64 {
        self.downloaded
    }
    /// Payload bytes served to the peer ([`PeerSession::block_sent`]).
    pub fn uploaded(&self) -> u64 {
        self.uploaded
    }
    /// Has the session decided to disconnect?
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn send(&mut self, now: Instant, out: &mut Vec<Action<P>>, m: Message) {
        if !self.started {
            self.held.push(m);
            return;
        }
        self.last_sent = now;
        out.push(Action::Send(m));
    }

    /// The first messages: our pieces (a `have all`/`have none` when the Fast extension
    /// allows and fits, else a `bitfield` unless we have nothing) and our extension
    /// handshake; then anything held since [`PeerSession::defer_start`].
    pub fn start(&mut self, now: Instant, picker: &PiecePicker<P>) -> Vec<Action<P>> {
        let mut out = Vec::new();
        self.started = true;
        self.send_availability(now, picker, &mut out);
        self.send_extension_handshake(now, true, &mut out);
        self.send_held(now, &mut out);
        out
    }

    /// The first messages to a peer we tell nothing of what we hold yet (wire.md
    /// "Deferred availability"): `have none` (nothing without the Fast extension) and our
    /// extension handshake without `metadata_size`; no `have` follows until
    /// [`PeerSession::reveal`].
    pub fn start_hidden(&mut self, now: Instant) -> Vec<Action<P>> {
        let mut out = Vec::new();
        self.started = true;
        self.hidden = true;
        if self.fast {
            self.send(now, &mut out, Message::HaveNone);
        }
        self.send_extension_handshake(now, false, &mut out);
        self.send_held(now, &mut out);
        out
    }

    /// Tells a peer started hidden what we hold: `compact` (a swarmbak member, which
    /// takes a later availability message) as `have all` or a `bitfield`, else one
    /// `have` per piece (what every client takes at any time); then our extension
    /// handshake again, now with `metadata_size`. Nothing when not hidden.
    pub fn reveal(
        &mut self,
        now: Instant,
        picker: &PiecePicker<P>,
        compact: bool,
    ) -> Vec<Action<P>> {
        let mut out = Vec::new();
        if !self.hidden || self.closed {
            return out;
        }
        self.hidden = false;
        if compact {
            self.send_availability(now, picker, &mut out);
        } else {
            for piece in picker.have().iter_ones() {
                self.send(now, &mut out, Message::Have(piece));
            }
        }
        if self.config.extensions.metadata_size.is_some() {
            self.send_extension_handshake(now, true, &mut out);
        }
        out
    }

    fn send_availability(
        &mut self,
        now: Instant,
        picker: &PiecePicker<P>,
        out: &mut Vec<Action<P>>,
    ) {
        let have = picker.have();
        if self.fast && have.has_all() {
            self.send(now, out, Message::HaveAll);
        } else if self.fast && have.has_none() {
            self.send(now, out, Message::HaveNone);
        } else if !have.has_none() {
            let bits = Bytes::copy_from_slice(have.as_bytes());
            self.send(now, out, Message::Bitfield(bits));
        }
    }

    /// Our extension handshake (BEP 10 negotiated), `with_size` or without its
    /// `metadata_size`.
    fn send_extension_handshake(
        &mut self,
        now: Instant,
        with_size: bool,
        out: &mut Vec<Action<P>>,
    ) {
        if self.extended {
            let payload = Bytes::from(
                if with_size || self.config.extensions.metadata_size.is_none() {
                    self.config.extensions.encode()
                } else {
                    let mut eh = self.config.extensions.clone();
                    eh.metadata_size = None;
                    eh.encode()
                },
            );
            self.send(
                now,
                out,
                Message::Extended {
                    id: EXTENSION_HANDSHAKE_ID,
                    payload,
                },
            );
        }
    }

    fn send_held(&mut self, now: Instant, out: &mut Vec<Action<P>>) {
        for m in std::mem::take(&mut self.held) {
            self.send(now, out, m);
        }
    }

    fn disconnect(
        &mut self,
        picker: &mut PiecePicker<P>,
        reason: DisconnectReason,
    ) -> Vec<Action<P>> {
        self.closed = true;
        self.close(picker);
        vec![Action::Disconnect {
            ban: reason.bans(),
            reason,
        }]
    }

    /// Releases this peer's share of the picker (availability and requests). Call once
    /// when the connection ends for any reason; the session calls it itself when it
    /// decides to disconnect. Idempotent.
    pub fn close(&mut self, picker: &mut PiecePicker<P>) {
        self.closed = true;
        if !self.released {
            self.released = true;
            picker.remove_peer(&self.key, &self.peer_has);
            self.pending.clear();
            self.waiting_since = None;
            self.incoming.clear();
        }
    }

    /// Handles one message from the peer.
    pub fn on_message(
        &mut self,
        now: Instant,
        message: Message,
        picker: &mut PiecePicker<P>,
    ) -> Vec<Action<P>> {
        if self.closed {
            return Vec::new();
        }
        self.last_received = now;
        let mut out = Vec::new();
        let fast_only = |m: &Message| {
            matches!(
                m,
                Message::Suggest(_)
                    | Message::HaveAll
                    | Message::HaveNone
                    | Message::Reject(_)
                    | Message::AllowedFast(_)
            )
        };
        if !self.fast && fast_only(&message) {
            return self.disconnect(
                picker,
                DisconnectReason::ProtocolViolation("fast extension message without BEP 6"),
            );
        }
        match message {
            Message::KeepAlive | Message::Suggest(_) | Message::Unknown { .. } => {}
            Message::Choke => {
                self.peer_choking = true;
                if !self.fast {
                    // Without BEP 6 a choke drops every pending request.
                    for b in std::mem::take(&mut self.pending) {
                        picker.request_failed(&self.key, &b);
                        self.remember_dropped(b);
                    }
                    self.waiting_since = None;
                }
            }
            Message::Unchoke => {
                self.peer_choking = false;
                self.fill_into(now, picker, &mut out);
            }
            Message::Interested => self.peer_interested = true,
            Message::NotInterested => self.peer_interested = false,
            Message::Have(piece) => {
                if piece >= self.num_pieces {
                    return self.disconnect(picker, DisconnectReason::PieceOutOfRange(piece));
                }
                if !self.peer_has.set(piece, true) {
                    picker.add_have(piece);
                }
                self.update_interest(now, picker, &mut out);
                self.fill_into(now, picker, &mut out);
            }
            // A later availability message replaces what the peer had (aria2 sends a
            // bitfield after `have none` and `have`s; libtorrent takes it the same way).
            Message::Bitfield(bytes) => {
                match Bitfield::from_bytes(&bytes, self.num_pieces) {
                    Ok(b) => self.set_availability(b, picker),
                    Err(e) => {
                        return self.disconnect(picker, DisconnectReason::Malformed(e.to_string()))
                    }
                }
                self.update_interest(now, picker, &mut out);
            }
            Message::HaveAll | Message::HaveNone => {
                let b = if message == Message::HaveAll {
                    Bitfield::full(self.num_pieces)
                } else {
                    Bitfield::new(self.num_pieces)
                };
                self.set_availability(b, picker);
                self.update_interest(now, picker, &mut out);
            }
            Message::Request(block) => {
                self.on_request(now, block, picker, &mut out);
                if self.held.len() > MAX_HELD {
                    return self.disconnect(
                        picker,
                        DisconnectReason::ProtocolViolation(
                            "too many requests before our first message",
                        ),
                    );
                }
            }
            Message::Cancel(block) => self.incoming.retain(|b| *b != block),
            Message::Piece {
                piece,
                offset,
                data,
            } => {
                if piece >= self.num_pieces {
                    return self.disconnect(picker, DisconnectReason::PieceOutOfRange(piece));
                }
                let block = BlockRef::new(piece, offset, data.len() as u32);
                if let Some(i) = self.pending.iter().position(|b| *b == block) {
                    self.pending.swap_remove(i);
                    self.answered(now);
                } else if let Some(i) = self.dropped.iter().position(|b| *b == block) {
                    // cancelled or timed out, then answered anyway: harmless
                    self.dropped.remove(i);
                    return out;
                } else {
                    return self.disconnect(picker, DisconnectReason::UnrequestedBlock(block));
                }
                self.snubbed = false;
                match picker.block_received(&self.key, &block) {
                    BlockOutcome::Accepted {
                        piece_complete,
                        cancel,
                    } => {
                        self.downloaded += u64::from(block.length);
                        out.push(Action::StoreBlock {
                            piece,
                            offset,
                            data,
                        });
                        out.extend(
                            cancel
                                .into_iter()
                                .map(|peer| Action::CancelAt { peer, block }),
                        );
                        if piece_complete {
                            out.push(Action::VerifyPiece(piece));
                        }
                    }
                    BlockOutcome::Duplicate | BlockOutcome::Unrequested => {}
                }
                self.fill_into(now, picker, &mut out);
            }
            Message::Port(port) => out.push(Action::DhtPort(port)),
            Message::Reject(block) => {
                if let Some(i) = self.pending.iter().position(|b| *b == block) {
                    self.pending.swap_remove(i);
                    self.answered(now);
                    picker.request_failed(&self.key, &block);
                    // not re-requested until the next tick, so a peer that rejects
                    // everything cannot make us spin
                }
            }
            Message::AllowedFast(piece) => {
                if piece < self.num_pieces
                    && self.allowed_fast.len() < MAX_ALLOWED_FAST
                    && !self.allowed_fast.contains(&piece)
                {
                    self.allowed_fast.push(piece);
                    self.fill_into(now, picker, &mut out);
                }
            }
            Message::Extended { id, payload } => {
                if !self.extended {
                    return self.disconnect(
                        picker,
                        DisconnectReason::ProtocolViolation("extended message without BEP 10"),
                    );
                }
                if id == EXTENSION_HANDSHAKE_ID {
                    match ExtensionHandshake::parse(&payload) {
                        Ok(h) => {
                            self.peer_extensions = Some(h.clone());
                            out.push(Action::ExtensionHandshake(Box::new(h)));
                        }
                        Err(e) => {
                            return self
                                .disconnect(picker, DisconnectReason::Malformed(e.to_string()))
                        }
                    }
                } else if let Some(name) = self.our_extension_name(id) {
                    if name == UT_METADATA {
                        match MetadataMessage::parse(&payload) {
                            Ok(m) => out.push(Action::Metadata(m)),
                            Err(e) => {
                                return self
                                    .disconnect(picker, DisconnectReason::Malformed(e.to_string()))
                            }
                        }
                    } else {
                        out.push(Action::Extended { name, payload });
                    }
                }
                // an id we never advertised: ignored
            }
        }
        out
    }

    fn our_extension_name(&self, id: u8) -> Option<String> {
        self.config
            .extensions
            .extensions
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| k.clone())
    }

    fn set_availability(&mut self, b: Bitfield, picker: &mut PiecePicker<P>) {
        picker.remove_pieces(&self.peer_has);
        picker.add_peer(&b);
        self.peer_has = b;
    }

    /// A request of ours was answered (or withdrawn): the wait for the next block starts
    /// now, or there is none.
    fn answered(&mut self, now: Instant) {
        self.waiting_since = if self.pending.is_empty() {
            None
        } else {
            Some(now)
        };
    }

    /// Remembers a request we gave up (cancelled, timed out, choked away), so that its
    /// block, if the peer sends it anyway, is dropped without a ban.
    fn remember_dropped(&mut self, b: BlockRef) {
        if self.dropped.len() >= 4 * self.config.pipeline_depth.max(16) {
            self.dropped.pop_front();
        }
        self.dropped.push_back(b);
    }

    fn on_request(
        &mut self,
        now: Instant,
        block: BlockRef,
        picker: &PiecePicker<P>,
        out: &mut Vec<Action<P>>,
    ) {
        let size = picker.piece_size(block.piece);
        let fits = block.length > 0
            && block.length <= self.config.max_request_len
            && u64::from(block.offset) + u64::from(block.length) <= u64::from(size);
        let ok = !self.am_choking
            && fits
            && picker.have().get(block.piece)
            && self.incoming.len() < self.config.max_incoming_requests
            && !self.incoming.contains(&block);
        if ok {
            self.incoming.push_back(block);
        } else if self.fast {
            self.send(now, out, Message::Reject(block));
        }
    }

    /// The next block the peer asked for, to read and send as `piece` (then
    /// [`PeerSession::block_sent`]).
    pub fn pop_request(&mut self) -> Option<BlockRef> {
        self.incoming.pop_front()
    }

    /// The engine sent a block of `len` bytes (a `piece` it built from a popped request).
    pub fn block_sent(&mut self, now: Instant, len: usize) {
        self.last_sent = now;
        self.uploaded += len as u64;
    }

    /// The engine could not read a popped request's block after all: refuse it (a
    /// `reject` under BEP 6, nothing otherwise).
    pub fn refuse(&mut self, now: Instant, block: BlockRef) -> Vec<Action<P>> {
        let mut out = Vec::new();
        if self.fast && !self.closed {
            self.send(now, &mut out, Message::Reject(block));
        }
        out
    }

    /// An extended message for extension `name`, sent under the id the peer advertised
    /// for it; nothing if the peer did not advertise it.
    pub fn extended(&mut self, now: Instant, name: &str, payload: Bytes) -> Vec<Action<P>> {
        let mut out = Vec::new();
        let id = self
            .peer_extensions
            .as_ref()
            .and_then(|e| e.extension_id(name));
        if let (Some(id), false) = (id, self.closed) {
            self.send(now, &mut out, Message::Extended { id, payload });
        }
        out
    }

    /// The choker's decision. Choking drops the peer's queued requests (each rejected
    /// under BEP 6).
    pub fn set_choking(&mut self, now: Instant, choke: bool) -> Vec<Action<P>> {
        let mut out = Vec::new();
        if self.closed || self.am_choking == choke {
            return out;
        }
        self.am_choking = choke;
        if choke {
            self.send(now, &mut out, Message::Choke);
            for b in std::mem::take(&mut self.incoming) {
                if self.fast {
                    self.send(now, &mut out, Message::Reject(b));
                }
            }
        } else {
            self.send(now, &mut out, Message::Unchoke);
        }
        out
    }

    /// We verified `piece`: announce it and reconsider interest.
    pub fn we_have(
        &mut self,
        now: Instant,
        piece: u32,
        picker: &mut PiecePicker<P>,
    ) -> Vec<Action<P>> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        // Not started: the first availability message will include it; hidden: the peer
        // is told nothing until revealed.
        if self.started && !self.hidden {
            self.send(now, &mut out, Message::Have(piece));
        }
        self.update_interest(now, picker, &mut out);
        self.fill_into(now, picker, &mut out);
        out
    }

    /// Cancels our request for `block` (another peer delivered it first, or the piece is
    /// no longer wanted).
    pub fn cancel(
        &mut self,
        now: Instant,
        block: BlockRef,
        picker: &mut PiecePicker<P>,
    ) -> Vec<Action<P>> {
        let mut out = Vec::new();
        if let Some(i) = self.pending.iter().position(|b| *b == block) {
            self.pending.swap_remove(i);
            self.answered(now);
            picker.request_failed(&self.key, &block);
            self.remember_dropped(block);
            self.send(now, &mut out, Message::Cancel(block));
        }
        out
    }

    /// `piece`, to which this peer contributed, failed its hash check. `sole_sender`: the
    /// peer sent every block of it (the picker refetches failed pieces from one peer, so
    /// a liar is caught the second time at the latest). A sole sender is disconnected and
    /// banned.
    pub fn hash_failed(
        &mut self,
        piece: u32,
        sole_sender: bool,
        picker: &mut PiecePicker<P>,
    ) -> Vec<Action<P>> {
        if sole_sender && !self.closed {
            return self.disconnect(picker, DisconnectReason::HashFailed(piece));
        }
        Vec::new()
    }

    /// Requests more blocks if the pipeline has room.
    pub fn fill_requests(&mut self, now: Instant, picker: &mut PiecePicker<P>) -> Vec<Action<P>> {
        let mut out = Vec::new();
        self.fill_into(now, picker, &mut out);
        out
    }

    /// What we want changed (the engine re-ranked wanted pieces): reconsider interest and
    /// fill the pipeline.
    pub fn refresh(&mut self, now: Instant, picker: &mut PiecePicker<P>) -> Vec<Action<P>> {
        let mut out = Vec::new();
        if !self.closed {
            self.update_interest(now, picker, &mut out);
            self.fill_into(now, picker, &mut out);
        }
        out
    }

    fn fill_into(&mut self, now: Instant, picker: &mut PiecePicker<P>, out: &mut Vec<Action<P>>) {
        if self.closed || !self.am_interested {
            return;
        }
        let allowed = if self.peer_choking {
            if !self.fast || self.allowed_fast.is_empty() {
                return;
            }
            Some(self.allowed_fast.as_slice())
        } else {
            None
        };
        let depth = match self.peer_extensions.as_ref().and_then(|e| e.reqq) {
            Some(q) => self.config.pipeline_depth.min(q.max(1) as usize),
            None => self.config.pipeline_depth,
        };
        let room = depth.saturating_sub(self.pending.len());
        if room == 0 {
            return;
        }
        let blocks = picker.pick(&self.key, &self.peer_has, room, allowed);
        for b in blocks {
            if self.pending.is_empty() {
                self.waiting_since = Some(now);
            }
            self.pending.push(b);
            self.send(now, out, Message::Request(b));
        }
    }

    fn update_interest(&mut self, now: Instant, picker: &PiecePicker<P>, out: &mut Vec<Action<P>>) {
        let want = picker.is_interesting(&self.peer_has);
        if want != self.am_interested {
            self.am_interested = want;
            let m = if want {
                Message::Interested
            } else {
                Message::NotInterested
            };
            self.send(now, out, m);
        }
    }

    /// Timer tick (every second or so): request timeouts, idle timeout, keep-alive,
    /// refilling the pipeline.
    pub fn tick(&mut self, now: Instant, picker: &mut PiecePicker<P>) -> Vec<Action<P>> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        if now.saturating_duration_since(self.last_received) >= self.config.idle_timeout {
            return self.disconnect(picker, DisconnectReason::Idle);
        }
        // No block for the request timeout while requests are outstanding: every one is
        // given back to the picker (and cancelled), and the peer is snubbed until it sends
        // a block. Measured from the last answer, not from each request, so a deep
        // pipeline to a slow but steady peer does not time out.
        let timed_out = self
            .waiting_since
            .is_some_and(|w| now.saturating_duration_since(w) >= self.config.request_timeout);
        if timed_out {
            self.snubbed = true;
            self.waiting_since = None;
            for b in std::mem::take(&mut self.pending) {
                picker.request_failed(&self.key, &b);
                self.remember_dropped(b);
                self.send(now, &mut out, Message::Cancel(b));
            }
        }
        self.update_interest(now, picker, &mut out);
        // after a timeout, wait a tick so other peers may take the freed blocks first
        if !timed_out {
            self.fill_into(now, picker, &mut out);
        }
        if now.saturating_duration_since(self.last_sent) >= self.config.keepalive_interval {
            self.send(now, &mut out, Message::KeepAlive);
        }
        out
    }
}

/// Of two connections between the same two peers for one torrent (each dialled the
/// other, having learnt of it from the tracker), does the new one stay and the old one
/// close? The one dialled by the side with the bytewise smaller peer id stays, so both
/// sides keep the same connection; of two dialled the same way, the old one
/// (protocol-spec/swarm.md §5.3).
pub fn new_connection_stays(
    mine: &[u8; 20],
    theirs: &[u8; 20],
    new_outgoing: bool,
    old_outgoing: bool,
) -> bool {
    let keep_outgoing = mine < theirs;
    new_outgoing == keep_outgoing && old_outgoing != keep_outgoing
}
