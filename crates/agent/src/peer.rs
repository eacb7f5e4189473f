//! One peer connection's I/O. The protocol is the wire crate's [`PeerSession`] (an
//! I/O-free state machine, protocol-spec/wire.md "State machine" and "Disconnect and
//! ban"); this module only drives it: it dials and exchanges handshakes, reads frames and
//! hands them to the session, carries out the [`Action`]s the session returns (messages
//! written through [`PeerIo`], received blocks assembled in the torrent and completed
//! pieces hashed and written on a blocking thread, endgame cancels routed to the other
//! connection), serves the requests the session queued (blocks read once per piece
//! through the engine-wide [`PieceCache`]), and relays the engine's choke decisions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use swarmbak_wire::{
    Action, Bitfield, BlockRef, CodecError, DisconnectReason, ExtensionHandshake, Frame, Handshake,
    Limits, MachineMessage, Message, MetadataMessage, PeerCodec, PeerSession, PiecePicker,
    Reserved, SessionConfig, SB_MACHINE, UT_METADATA,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use swarmbak_core::MachineKey;

use crate::auth::{Identity, MachineAuth, Member, Tagged};
use crate::cache::PieceCache;
use crate::io::PeerIo;
use crate::torrent::{Inner, PeerKey, PeerView, Torrent};

mod proofs;

/// Our extension ids (what peers send to us).
const OUR_UT_METADATA: u8 = 1;
const OUR_SB_MACHINE: u8 = 2;
/// Requests served in one batch at most before more frames are read (a batch is then
/// flushed once; 64 blocks are the write boundary of [`PeerIo`]).
const SERVE_BATCH: usize = 64;
/// How often the session's timers run (request timeout, idle, keep-alive, refill).
const TICK: Duration = Duration::from_millis(250);
/// An enrolled machine closes a connection whose peer neither authenticated nor was
/// listed by the tracker within this time (wire.md "Authenticated peers").
const STRANGER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an enrolled machine waits for the extension handshake of a peer it did not
/// dial through the tracker before it sends its first messages as to a stranger (wire.md
/// "Deferred availability").
const FIRST_MESSAGE_WAIT: Duration = Duration::from_secs(5);

/// Orders the engine gives a connection.
#[derive(Debug, Clone, Copy)]
pub enum Control {
    Choke,
    Unchoke,
    /// Endgame: another connection delivered this block first; send `cancel` and free it.
    Cancel(BlockRef),
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

impl From<DisconnectReason> for End {
    fn from(reason: DisconnectReason) -> End {
        if reason.bans() {
            End::Banned(format!("{reason:?}"))
        } else {
            End::Closed(format!("{reason:?}"))
        }
    }
}

/// Sends an order to another connection of the engine (by its key).
pub type Route = Arc<dyn Fn(PeerKey, Control) + Send + Sync>;

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
    /// Reaches the engine's other connections (endgame cancels).
    pub route: Route,
    /// We dialled the peer (the `sb_machine` dialler speaks first).
    pub outgoing: bool,
    /// We dialled an address the company tracker or the user gave (a listed peer);
    /// not one a peer-only tracker gave.
    pub vouched: bool,
    /// This machine's membership, when it is enrolled: peers must then authenticate to
    /// count, and be authenticated or listed to be served.
    pub identity: Option<Arc<Identity>>,
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

/// Message counts by kind ([`Message::name`]), one direction (kept only while the wire
/// log is on). The first message of each kind is logged as it happens (a short-lived
/// fetch may exit before its connections log their `end`).
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
            let k = m.name();
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

/// Our extension handshake for `t` (BEP 10; the swarmbak keys are wire.md's). An
/// enrolled machine sends its `sb_nonce` and never `sb_key` or `sb_owner` (who it is
/// and whether it owns the snapshot are for authenticated members only).
fn our_extensions(
    t: &Torrent,
    listen_port: u16,
    reqq: usize,
    auth: Option<&MachineAuth>,
) -> ExtensionHandshake {
    let mut eh = ExtensionHandshake::default();
    eh.extensions
        .insert(UT_METADATA.to_string(), OUR_UT_METADATA);
    eh.extensions.insert(SB_MACHINE.to_string(), OUR_SB_MACHINE);
    eh.client = Some(format!("swarmbak {}", env!("CARGO_PKG_VERSION")));
    eh.port = Some(listen_port);
    eh.reqq = Some(reqq as u32);
    eh.metadata_size = Some(t.info.len() as u64);
    if let Some(a) = auth {
        eh.sb_nonce = Some(a.nonce());
        return eh;
    }
    // Not enrolled (an open tracker): the unauthenticated keys of swarm.md §1. Short-lived
    // processes (fetch, health) send no key: they are not holders and must not move
    // placement while they run.
    eh.sb_key = t.me.as_ref().map(|k| k.as_bytes().to_vec());
    eh.sb_owner = t.is_own();
    eh
}

/// Runs a connection whose handshakes were exchanged and which the engine admitted.
pub async fn accepted(conn: Conn, io: PeerIo, theirs: Handshake) -> End {
    let t = conn.torrent.clone();
    let common = reserved().common(theirs.reserved);
    wire_log(serde_json::json!({
        "event": "start",
        "peer": conn.addr.to_string(),
        "infohash": hex::encode(t.ih.0),
        "their_reserved": hex::encode(theirs.reserved.0),
        "their_fast": theirs.reserved.fast(),
        "their_extension_protocol": theirs.reserved.extension_protocol(),
        "their_dht": theirs.reserved.dht(),
        "fast": common.fast(),
        "extension_protocol": common.extension_protocol(),
    }));
    let auth = conn.identity.clone().map(|id| {
        MachineAuth::new(
            id,
            conn.outgoing,
            t.me.is_some(),
            t.ih.0,
            conn.peer_id,
            theirs.peer_id,
        )
    });
    let defaults = SessionConfig::default();
    let config = SessionConfig {
        extensions: our_extensions(
            &t,
            conn.listen_port,
            defaults.max_incoming_requests,
            auth.as_ref(),
        ),
        ..defaults
    };
    let n = t.num_pieces();
    let mut session = PeerSession::new(conn.key, config, n, common, Instant::now());
    // Enrolled, and the peer not one the tracker gave us: what we hold and the snapshot's
    // size wait until we know who it is (wire.md "Deferred availability").
    if conn.identity.is_some() && !conn.vouched {
        session.defer_start();
    }
    t.inner().peers.insert(
        conn.key,
        PeerView {
            addr: conn.addr,
            machine: None,
            has: Bitfield::new(n),
            interested: false,
            downloaded: 0,
            uploaded: 0,
            snubbed: false,
            member: None,
            domain: None,
            // Not enrolled: everyone is served, as any BitTorrent client does.
            servable: conn.identity.is_none(),
        },
    );
    let mut d = Driver {
        t: t.clone(),
        key: conn.key,
        addr: conn.addr,
        their_listen: None,
        session,
        io,
        sent: Counts::new(conn.addr, "sent"),
        received: Counts::new(conn.addr, "received"),
        interest: conn.interest,
        cache: conn.cache,
        route: conn.route,
        completed: Vec::new(),
        auth,
        vouched: conn.vouched,
        since: Instant::now(),
        member: false,
        listed: false,
        outgoing: conn.outgoing,
        their_handshake: false,
        tagged: None,
        member_key: None,
        member_name: None,
        sent_statement: 0,
        asking: None,
        next_challenge: 0,
        challenge_after: Instant::now(),
    };
    let mut control = conn.control;
    let end = match d.run(&mut control).await {
        Ok(()) => End::Closed("done".into()),
        Err(e) => e,
    };
    wire_log(serde_json::json!({
        "event": "end",
        "peer": conn.addr.to_string(),
        "infohash": hex::encode(t.ih.0),
        "end": format!("{end:?}"),
        "sent": d.sent.map,
        "received": d.received.map,
    }));
    {
        let mut g = t.inner();
        g.peers.remove(&conn.key);
        d.session.close(&mut g.picker);
    }
    if let End::Banned(_) = &end {
        t.ban(conn.addr, d.their_listen, theirs.peer_id);
    }
    t.update_wanted();
    end
}

/// What changed in the session that the torrent's view of the peer must follow.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Has {
    Same,
    Piece(u32),
    All,
}

struct Driver {
    t: Arc<Torrent>,
    key: PeerKey,
    addr: SocketAddr,
    /// The peer's listening address (its address, and the port of its extension
    /// handshake): banned with it.
    their_listen: Option<SocketAddr>,
    session: PeerSession<PeerKey>,
    io: PeerIo,
    sent: Counts,
    received: Counts,
    interest: Arc<tokio::sync::Notify>,
    cache: Arc<PieceCache>,
    route: Route,
    /// Pieces whose every block is in (with each block's sender), to hash and write once
    /// the lock is released.
    completed: Vec<(u32, Vec<Bytes>, Vec<Option<PeerKey>>)>,
    /// The `sb_machine` exchange (enrolled machines only).
    auth: Option<MachineAuth>,
    /// We dialled an address the company tracker or the user gave.
    vouched: bool,
    /// When the connection was admitted.
    since: Instant,
    /// The peer authenticated as a machine of our organisation.
    member: bool,
    /// The tracker listed the peer for this torrent (we dialled an address it gave, or
    /// the peer's listening address is one it gave).
    listed: bool,
    /// We dialled the peer.
    outgoing: bool,
    /// Its (first) extension handshake arrived; later ones change nothing here.
    their_handshake: bool,
    /// Once authenticated: the session that tags every later `sb_machine` message.
    tagged: Option<crate::auth::Tagged>,
    /// The key and name the peer authenticated with.
    member_key: Option<swarmbak_trust::PublicKey>,
    member_name: Option<String>,
    /// The version of our held statement last sent to the peer.
    sent_statement: u64,
    /// Our challenge under way, the last challenge's id, and when we may ask again.
    asking: Option<proofs::Asking>,
    next_challenge: u32,
    challenge_after: Instant,
}

type Actions = Vec<Action<PeerKey>>;

impl Driver {
    async fn run(&mut self, control: &mut mpsc::UnboundedReceiver<Control>) -> Result<(), End> {
        let mut haves = self.t.haves.subscribe();
        let now = Instant::now();
        let a = if self.session.is_started() {
            self.step(Has::Same, |s, p| s.start(now, p))?
        } else if !self.session.extension_protocol() || self.outgoing {
            // No listening port will come (listed or not by its IP alone), or we dialled
            // an address no tracker of ours vouched for (the peer, if it is swarmbak, waits
            // for our handshake): now.
            self.refresh_listed();
            self.begin(now)?
        } else {
            // At its extension handshake, or after FIRST_MESSAGE_WAIT.
            Vec::new()
        };
        self.act(a).await?;
        self.flush().await?;
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                frame = self.io.next() => {
                    let msg = match frame {
                        Some(Ok(Frame::Message(m))) => m,
                        Some(Ok(Frame::Handshake(_))) => {
                            return Err(DisconnectReason::Malformed("a second handshake".into()).into())
                        }
                        Some(Err(CodecError::Io(e))) => return Err(End::Closed(format!("connection: {e}"))),
                        Some(Err(e)) => return Err(DisconnectReason::Malformed(e.to_string()).into()),
                        None => return Err(End::Closed("peer closed the connection".into())),
                    };
                    self.on_message(msg).await?;
                    // Frames already read (more requests, cancels) are handled before the
                    // queue is served and everything written in one flush.
                    let more = self.io.has_frame();
                    if !more || self.session.queued_requests() >= SERVE_BATCH {
                        self.serve().await?;
                    }
                    if !more {
                        self.flush().await?;
                    }
                }
                have = haves.recv() => {
                    match have {
                        Ok(piece) => {
                            let now = Instant::now();
                            let a = self.step(Has::Same, |s, p| s.we_have(now, piece, p))?;
                            self.act(a).await?;
                            self.flush().await?;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return Err(End::Closed("torrent closed".into())),
                    }
                }
                c = control.recv() => {
                    let now = Instant::now();
                    let a = match c {
                        Some(Control::Choke) => self.step(Has::Same, |s, _| s.set_choking(now, true))?,
                        Some(Control::Unchoke) => self.step(Has::Same, |s, _| s.set_choking(now, false))?,
                        Some(Control::Cancel(b)) => self.step(Has::Same, |s, p| {
                            let mut a = s.cancel(now, b, p);
                            a.extend(s.refresh(now, p));
                            a
                        })?,
                        Some(Control::Close) | None => return Err(End::Closed("closed by us".into())),
                    };
                    self.act(a).await?;
                    self.flush().await?;
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    let a = self.check_standing(now)?;
                    self.act(a).await?;
                    self.t.update_wanted_if_stale();
                    let key = self.key;
                    let mut a = self.step(Has::Same, |s, p| s.tick(now, p))?;
                    a.extend(self.proof_tick(now));
                    self.act(a).await?;
                    // A piece this peer alone sent failed its hash check (wire.md).
                    let failed = self.t.inner().kick.remove(&key);
                    if let Some(piece) = failed {
                        let a = self.step(Has::Same, |s, p| s.hash_failed(piece, true, p))?;
                        self.act(a).await?;
                    }
                    self.flush().await?;
                }
            }
        }
    }

    /// Hands a received message to the session.
    async fn on_message(&mut self, msg: Message) -> Result<(), End> {
        self.received.add(&msg);
        let has = match &msg {
            Message::Have(p) => Has::Piece(*p),
            Message::Bitfield(_) | Message::HaveAll | Message::HaveNone => Has::All,
            _ => Has::Same,
        };
        let now = Instant::now();
        let a = self.step(has, |s, p| s.on_message(now, msg, p))?;
        self.act(a).await?;
        if has != Has::Same && !self.session.is_closed() {
            // What the peer has changes what a fetch wants (any k shards of a stripe,
            // among those some peer has): re-ranked at the next tick, once however many
            // `have`s arrive meanwhile (each recomputation walks every piece).
            self.t.wanted_is_stale();
        }
        Ok(())
    }

    /// Runs `f` on the session with the torrent's picker, and under the same lock does
    /// what the resulting actions need of the torrent: received blocks filed, completed
    /// pieces taken out for hashing, the torrent's view of the peer brought up to date.
    /// Returns the other actions; pieces completed are handed to a blocking thread once
    /// the lock is released.
    fn step(
        &mut self,
        has: Has,
        f: impl FnOnce(&mut PeerSession<PeerKey>, &mut PiecePicker<PeerKey>) -> Actions,
    ) -> Result<Actions, End> {
        let t = self.t.clone();
        let mut rest = Vec::new();
        let newly_interested = {
            let mut g = t.inner();
            let actions = f(&mut self.session, &mut g.picker);
            rest.reserve(actions.len());
            for a in actions {
                match a {
                    Action::StoreBlock {
                        piece,
                        offset,
                        data,
                    } => {
                        let size = t.piece_size(piece);
                        Torrent::add_block(&mut g, size, piece, offset, data)
                            .map_err(|e| End::from(DisconnectReason::Malformed(e.to_string())))?;
                        Torrent::note_sender(&mut g, size, piece, offset, self.key);
                    }
                    Action::VerifyPiece(piece) => {
                        let blocks = Torrent::take_piece(&mut g, piece)
                            .map_err(|e| End::from(DisconnectReason::Malformed(e.to_string())))?;
                        let senders = Torrent::take_senders(&mut g, piece);
                        self.completed.push((piece, blocks, senders));
                    }
                    other => rest.push(other),
                }
            }
            self.update_view(&mut g, has)
        };
        if newly_interested {
            self.interest.notify_one();
        }
        for (piece, blocks, senders) in self.completed.drain(..) {
            // Hashing and writing 1 MiB takes about a millisecond: done on a blocking
            // thread while this connection goes on reading.
            t.complete_in_background(piece, blocks, senders);
        }
        Ok(rest)
    }

    /// Copies the session's view of the peer into the torrent's (placement, holder
    /// counts and the choker read it). Returns whether the peer just became interested.
    fn update_view(&self, g: &mut Inner, has: Has) -> bool {
        let s = &self.session;
        let Some(v) = g.peers.get_mut(&self.key).filter(|_| !s.is_closed()) else {
            return false;
        };
        match has {
            Has::Same => {}
            Has::Piece(p) => {
                v.has.set(p, s.peer_has().get(p));
            }
            Has::All => v.has = s.peer_has().clone(),
        }
        v.downloaded = s.downloaded();
        v.uploaded = s.uploaded();
        v.snubbed = s.is_snubbed();
        let newly = s.peer_interested() && !v.interested;
        v.interested = s.peer_interested();
        newly
    }

    /// Carries out the actions that need no lock: messages queued for writing, cancels
    /// routed, the peer's extension handshake and metadata requests answered.
    async fn act(&mut self, actions: Actions) -> Result<(), End> {
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(a) = queue.pop_front() {
            match a {
                Action::Send(m) => self.feed(m).await?,
                Action::CancelAt { peer, block } => (self.route)(peer, Control::Cancel(block)),
                Action::ExtensionHandshake(h) => {
                    queue.extend(self.on_extension_handshake(*h)?);
                }
                Action::Metadata(MetadataMessage::Request { piece }) => {
                    // BEP 9: we serve the info dictionary of every torrent we take part
                    // in, to peers we serve at all (wire.md "Authenticated peers").
                    let reply = if self.servable() {
                        MetadataMessage::data_for(&self.t.info, piece)
                            .unwrap_or(MetadataMessage::Reject { piece })
                    } else {
                        MetadataMessage::Reject { piece }
                    };
                    let payload = Bytes::from(reply.encode());
                    queue.extend(self.session.extended(Instant::now(), UT_METADATA, payload));
                }
                Action::Extended { name, payload } if name == SB_MACHINE => {
                    let more = if self.tagged.is_some() {
                        self.on_tagged(&payload).await?
                    } else {
                        self.on_machine_message(&payload)?
                    };
                    queue.extend(more);
                }
                Action::Disconnect { reason, .. } => return Err(reason.into()),
                // Metadata answers (we never ask over an open connection), sb_machine
                // (reserved), the DHT port (no DHT yet).
                _ => {}
            }
        }
        Ok(())
    }

    /// The peer's extension handshake: its machine key (placement, holder counts), the
    /// owner's claim, its listening port.
    fn on_extension_handshake(&mut self, eh: ExtensionHandshake) -> Result<Actions, End> {
        wire_log(serde_json::json!({
            "event": "extension_handshake",
            "peer": self.addr.to_string(),
            "infohash": hex::encode(self.t.ih.0),
            "client": eh.client,
            "m": eh.extensions,
            "metadata_size": eh.metadata_size,
            "reqq": eh.reqq,
            "sb_key": eh.sb_key.is_some(),
        }));
        // A later handshake (a peer revealing `metadata_size`, wire.md "Deferred
        // availability") changes nothing here: its port, nonce and keys were the first's.
        if std::mem::replace(&mut self.their_handshake, true) {
            return Ok(Vec::new());
        }
        self.their_listen = eh.port.map(|p| SocketAddr::new(self.addr.ip(), p));
        if let Some(auth) = self.auth.as_mut() {
            // Enrolled: `sb_key` and `sb_owner` are ignored; the peer authenticates or is
            // a standard client.
            let offers = eh.extension_id(SB_MACHINE).is_some();
            let step = auth
                .on_peer_handshake(eh.sb_nonce, offers, Instant::now())
                .map_err(auth_end)?;
            self.refresh_listed();
            let now = Instant::now();
            // Our first messages before anything of the exchange.
            let mut out = if self.session.is_started() {
                self.reveal_if_served(now)?
            } else {
                self.begin(now)?
            };
            out.extend(self.send_machine(step.send));
            return Ok(out);
        }
        // A key that is empty or too long is no machine (swarm.md §1).
        let Some(k) = eh.sb_key.and_then(|k| MachineKey::from_bytes(&k).ok()) else {
            return Ok(Vec::new());
        };
        if eh.sb_owner {
            self.t.learn_owner(&k);
        }
        if let Some(v) = self.t.inner().peers.get_mut(&self.key) {
            v.machine = Some(k);
        }
        // A machine joined the placement: what we want may change.
        self.t.update_wanted();
        let now = Instant::now();
        self.step(Has::Same, |s, p| s.refresh(now, p))
    }

    /// Is the peer one we serve (unchoke, metadata)? Everyone when we are not enrolled;
    /// else authenticated members and peers the tracker listed.
    fn servable(&self) -> bool {
        self.auth.is_none() || self.member || self.listed
    }

    /// Whether the company tracker listed the peer: an address we dialled that it or the
    /// user gave (not a peer-only tracker), or its listening address in the torrent's
    /// last announce answers; a peer that gives no listening port (no BEP 10) by its IP
    /// alone.
    fn refresh_listed(&mut self) {
        self.listed = self.vouched
            || match self.their_listen {
                Some(a) => self.t.is_listed(&a),
                None => self.t.is_listed_ip(self.addr.ip()),
            };
        let servable = self.servable();
        if let Some(v) = self.t.inner().peers.get_mut(&self.key) {
            v.servable = servable;
        }
    }

    /// Our first messages, once we know whether the peer is served: what we hold and the
    /// snapshot's size to a served peer, `have none` and no size to anyone else (wire.md
    /// "Deferred availability").
    fn begin(&mut self, now: Instant) -> Result<Actions, End> {
        if self.servable() {
            self.step(Has::Same, |s, p| s.start(now, p))
        } else {
            self.step(Has::Same, |s, _| s.start_hidden(now))
        }
    }

    /// Tells a peer that was a stranger when we started, and is served now, what we hold:
    /// a member in one message, a listed standard client a `have` per piece.
    fn reveal_if_served(&mut self, now: Instant) -> Result<Actions, End> {
        if !self.session.is_hidden() || !self.servable() {
            return Ok(Vec::new());
        }
        let compact = self.member;
        self.step(Has::Same, |s, p| s.reveal(now, p, compact))
    }

    /// Timer duties of an enrolled machine: our first messages to a peer whose extension
    /// handshake did not come in time; availability to a peer the tracker has listed
    /// since; an exchange that stalls, and a peer that neither authenticated nor was listed
    /// for [`STRANGER_TIMEOUT`], are closed (no ban: they may be honest and slow, or of
    /// another organisation).
    fn check_standing(&mut self, now: Instant) -> Result<Actions, End> {
        let Some(auth) = &self.auth else {
            return Ok(Vec::new());
        };
        if auth.timed_out(now) {
            return Err(End::Closed("sb_machine: the exchange stalled".into()));
        }
        let mut out = Vec::new();
        if !self.member {
            self.refresh_listed();
            if !self.listed && now.saturating_duration_since(self.since) >= STRANGER_TIMEOUT {
                return Err(End::Closed(
                    "neither authenticated nor listed by the tracker".into(),
                ));
            }
            if !self.session.is_started() {
                if now.saturating_duration_since(self.since) >= FIRST_MESSAGE_WAIT {
                    out = self.begin(now)?;
                }
            } else {
                out = self.reveal_if_served(now)?;
            }
        }
        Ok(out)
    }

    /// The `sb_machine` message to send, under the id the peer gave it.
    fn send_machine(&mut self, m: Option<MachineMessage>) -> Actions {
        match m {
            Some(m) => self
                .session
                .extended(Instant::now(), SB_MACHINE, Bytes::from(m.encode())),
            None => Vec::new(),
        }
    }

    /// One `sb_machine` message from the peer.
    fn on_machine_message(&mut self, payload: &[u8]) -> Result<Actions, End> {
        let Some(auth) = self.auth.as_mut() else {
            // Not enrolled: nothing to authenticate with; ignored.
            return Ok(Vec::new());
        };
        let msg =
            MachineMessage::parse(payload).map_err(|e| End::Banned(format!("sb_machine: {e}")))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let step = auth.on_message(msg, now).map_err(auth_end)?;
        let mut out = self.send_machine(step.send);
        if let Some(m) = step.member {
            out.extend(self.on_member(m)?);
        }
        Ok(out)
    }

    /// The peer proved it is a machine of our organisation: it is served, and, when it
    /// is a holder, it counts and takes part in placement under its certificate's key.
    fn on_member(&mut self, m: Member) -> Result<Actions, End> {
        wire_log(serde_json::json!({
            "event": "authenticated",
            "peer": self.addr.to_string(),
            "infohash": hex::encode(self.t.ih.0),
            "machine": m.certificate.fields.name,
            "holder": m.holder(),
        }));
        self.member = true;
        self.member_key = Some(m.key);
        self.member_name = Some(m.certificate.fields.name.clone());
        self.tagged = self.auth.as_ref().and_then(Tagged::of);
        let placement = m.holder().then(|| m.placement_key()).flatten();
        if let Some(v) = self.t.inner().peers.get_mut(&self.key) {
            v.member = Some(m.key);
            v.servable = true;
            v.machine = placement;
            v.domain = m
                .certificate
                .fields
                .domain
                .as_deref()
                .filter(|d| !d.is_empty())
                .map(Arc::from);
        }
        self.interest.notify_one();
        self.t.update_wanted();
        let now = Instant::now();
        let mut a = self.reveal_if_served(now)?;
        a.extend(self.step(Has::Same, |s, p| s.refresh(now, p))?);
        // The owner's signed record first (wire.md type 5): a member that found this
        // snapshot without a tracker's record (a peer-only tracker, the DHT) checks who
        // owns it from this (trust.md §4).
        if let Some((record, cert)) = self.t.signed_record() {
            a.extend(self.send_tagged(MachineMessage::Record { record, cert }));
        }
        a.extend(self.proof_tick(now));
        Ok(a)
    }

    /// Serves the requests the session queued: each block a slice of its piece, read once
    /// through the cache, queued for writing without a copy.
    async fn serve(&mut self) -> Result<(), End> {
        let mut served = false;
        let relaying = self.counted_holder();
        let mut last_piece = None;
        while let Some(b) = self.session.pop_request() {
            let now = Instant::now();
            // A holder fetching from us a shard it says it holds: its claim on it stops
            // counting here (swarm.md §14.6, relaying from the checker). Looked at once
            // per shard of a batch, not per block.
            let first_of_piece = last_piece.replace(b.piece) != Some(b.piece);
            if let (true, Some(h), Some(p)) = (first_of_piece, &relaying, self.t.proofs()) {
                if p.possession.requested(h, &self.t.ih, b.piece) {
                    eprintln!(
                        "swarmbak: {} asked for shard {} of {}, which it states it holds: that claim stops counting until it is proven again",
                        self.member_name.as_deref().unwrap_or("a holder"),
                        b.piece,
                        self.t.ih
                    );
                }
            }
            match self
                .t
                .read_block(&self.cache, b.piece, b.offset, b.length)
                .await
            {
                Some(data) => {
                    self.session.block_sent(now, data.len());
                    served = true;
                    self.feed(Message::Piece {
                        piece: b.piece,
                        offset: b.offset,
                        data,
                    })
                    .await?;
                }
                None => {
                    let a = self.session.refuse(now, b);
                    self.act(a).await?;
                }
            }
        }
        if served {
            let t = self.t.clone();
            let mut g = t.inner();
            self.update_view(&mut g, Has::Same);
        }
        Ok(())
    }

    /// Queues a message without flushing (flush once after a batch).
    async fn feed(&mut self, m: Message) -> Result<(), End> {
        self.sent.add(&m);
        self.io
            .feed(Frame::Message(m))
            .await
            .map_err(|e| End::Closed(format!("send: {e}")))
    }

    async fn flush(&mut self) -> Result<(), End> {
        self.io
            .flush()
            .await
            .map_err(|e| End::Closed(format!("send: {e}")))
    }
}

/// How a failed `sb_machine` exchange ends the connection.
fn auth_end(f: crate::auth::AuthFailure) -> End {
    let why = format!("sb_machine: {}", f.reason);
    if f.ban {
        End::Banned(why)
    } else {
        End::Closed(why)
    }
}
