//! The `sb_machine` authentication of one connection (protocol-spec/wire.md
//! "Authenticated peers"), without I/O: the peer's extension handshake and its
//! `sb_machine` messages in, our messages and, at the end, the authenticated [`Member`]
//! out.
//!
//! ```text
//! 1 member      D→A  MAC_D                 (D proves membership first: it dialled)
//! 2 member_ack  A→D  cert_A, flags_A, MAC_A
//! 3 sign        D→A  cert_D, flags_D, SIG_D
//! 4 sign_ack    A→D  SIG_A
//! ```
//!
//! Nobody shows its certificate before the other side proved membership, and nobody
//! signs before it checked the other side's certificate. The bytes are trust.md §10's.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rand::RngCore;
use swarmbak_core::MachineKey;
use swarmbak_trust::{
    check_member_mac, check_tag, member_mac, session_key, tag, Certificate, PublicKey, SessionKey,
    Side, SigningKey, Transcript,
};
use swarmbak_wire::{MachineMessage, FLAG_HOLDER};

/// How long the exchange may take once both extension handshakes are in.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// This machine's membership and identity: what it needs to authenticate to its
/// organisation's other machines, and to check theirs.
pub struct Identity {
    /// The organisation secret (trust.md §10).
    pub org_secret: [u8; 32],
    /// The organisation key certificates must be signed with.
    pub org_key: PublicKey,
    /// Our certificate (the envelope, as the tracker issued it).
    pub certificate: Vec<u8>,
    /// Our machine signing key.
    pub key: SigningKey,
    /// Our failure domain (`SITE/ROOM`), as our certificate names it (swarm.md §3.1).
    pub domain: Option<std::sync::Arc<str>>,
    /// Machines the organisation revoked (trust.md §5), refreshed from the tracker.
    revoked: RwLock<HashSet<PublicKey>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.key.public())
    }
}

impl Identity {
    pub fn new(
        org_secret: [u8; 32],
        org_key: PublicKey,
        certificate: Vec<u8>,
        key: SigningKey,
    ) -> Arc<Identity> {
        let domain = swarmbak_trust::Certificate::parse_unverified(&certificate)
            .ok()
            .and_then(|c| c.fields.domain)
            .filter(|d| !d.is_empty())
            .map(std::sync::Arc::from);
        Arc::new(Identity {
            org_secret,
            org_key,
            certificate,
            key,
            domain,
            revoked: RwLock::new(HashSet::new()),
        })
    }

    /// Replaces the revoked set; returns the keys newly revoked.
    pub fn set_revoked(&self, keys: HashSet<PublicKey>) -> Vec<PublicKey> {
        let mut g = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        let new = keys.difference(&g).copied().collect();
        *g = keys;
        new
    }

    pub fn is_revoked(&self, k: &PublicKey) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(k)
    }

    /// Checks a peer's certificate: signed by our organisation, valid at `now` (Unix
    /// seconds), not revoked.
    pub fn check_certificate(&self, bytes: &[u8], now: i64) -> Result<Certificate, AuthFailure> {
        let c = Certificate::verify(bytes, &self.org_key)
            .map_err(|e| AuthFailure::close(format!("certificate: {e}")))?;
        c.valid_at(now)
            .map_err(|e| AuthFailure::close(format!("certificate: {e}")))?;
        if self.is_revoked(&c.fields.machine) {
            return Err(AuthFailure::ban(format!(
                "{} ({}) is revoked",
                c.fields.name, c.fields.machine
            )));
        }
        Ok(c)
    }

    /// Checks a snapshot owner's publish record and certificate as they travel in the
    /// swarm (wire.md type 5): the chain of trust.md §4 for `infohash`, from a machine
    /// not revoked. Returns the owner's certificate.
    pub fn check_record(
        &self,
        record: &[u8],
        cert: &[u8],
        infohash: &[u8; 20],
    ) -> Result<Certificate, String> {
        let (c, _) = swarmbak_trust::verify_publish(record, cert, &self.org_key, infohash)
            .map_err(|e| e.to_string())?;
        if self.is_revoked(&c.fields.machine) {
            return Err(format!(
                "{} ({}) is revoked",
                c.fields.name, c.fields.machine
            ));
        }
        Ok(c)
    }
}

/// A peer that proved its certified key on this connection.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its signing key (its identity).
    pub key: PublicKey,
    /// Its certificate, verified.
    pub certificate: Certificate,
    /// Its flags (bit 0: holder).
    pub flags: u8,
}

impl Member {
    /// Is it a holder (a placement candidate, counted for copies)?
    pub fn holder(&self) -> bool {
        self.flags & FLAG_HOLDER != 0
    }

    /// Its placement key (swarm.md §1: the age recipient its certificate binds).
    pub fn placement_key(&self) -> Option<MachineKey> {
        MachineKey::from_age_recipient(&self.certificate.fields.age_recipient).ok()
    }
}

/// Why the exchange failed: the connection closes; `ban` when the peer proved it is
/// hostile (a bad signature under a valid certificate, a revoked key, a message out of
/// order), not when it may merely be of another organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    pub reason: String,
    pub ban: bool,
}

impl AuthFailure {
    fn close(reason: impl Into<String>) -> AuthFailure {
        AuthFailure {
            reason: reason.into(),
            ban: false,
        }
    }
    fn ban(reason: impl Into<String>) -> AuthFailure {
        AuthFailure {
            reason: reason.into(),
            ban: true,
        }
    }
}

#[derive(Debug, Clone)]
enum State {
    /// The peer's extension handshake is not in yet.
    Waiting,
    /// The peer does not offer `sb_machine` (a standard client, or not enrolled).
    NotOffered,
    /// Dialler: sent `member`, waits for `member_ack`.
    AwaitMemberAck,
    /// Acceptor: waits for `member`.
    AwaitMember,
    /// Dialler: sent `sign`, waits for `sign_ack`.
    AwaitSignAck {
        cert: Certificate,
        flags: u8,
    },
    /// Acceptor: sent `member_ack`, waits for `sign`.
    AwaitSign,
    Done,
    Failed,
}

/// One connection's exchange.
#[derive(Debug)]
pub struct MachineAuth {
    id: Arc<Identity>,
    side: Side,
    flags: u8,
    info_hash: [u8; 20],
    my_peer_id: [u8; 20],
    their_peer_id: [u8; 20],
    nonce: [u8; 32],
    transcript: Option<Transcript>,
    started: Option<Instant>,
    state: State,
}

/// What a step produced: a message to send, and the peer once it is authenticated.
#[derive(Debug, Default)]
pub struct Step {
    pub send: Option<MachineMessage>,
    pub member: Option<Member>,
}

impl MachineAuth {
    /// A new exchange on a connection we dialled (`outgoing`) or accepted. `holder`: we
    /// hold shards for others (an agent), so we are a placement candidate.
    pub fn new(
        id: Arc<Identity>,
        outgoing: bool,
        holder: bool,
        info_hash: [u8; 20],
        my_peer_id: [u8; 20],
        their_peer_id: [u8; 20],
    ) -> MachineAuth {
        let mut nonce = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        MachineAuth {
            id,
            side: if outgoing {
                Side::Dialler
            } else {
                Side::Acceptor
            },
            flags: if holder { FLAG_HOLDER } else { 0 },
            info_hash,
            my_peer_id,
            their_peer_id,
            nonce,
            transcript: None,
            started: None,
            state: State::Waiting,
        }
    }

    /// Once authenticated: the session key that tags every later `sb_machine` message
    /// (trust.md §11), and our side of the connection.
    pub fn session(&self) -> Option<(SessionKey, Side)> {
        match (&self.state, &self.transcript) {
            (State::Done, Some(t)) => Some((session_key(&self.id.org_secret, t), self.side)),
            _ => None,
        }
    }

    /// Our `sb_nonce`, for our extension handshake.
    pub fn nonce(&self) -> [u8; 32] {
        self.nonce
    }

    /// Is the exchange under way (both offered it) and not finished?
    pub fn pending(&self) -> bool {
        !matches!(
            self.state,
            State::Waiting | State::NotOffered | State::Done | State::Failed
        )
    }

    /// Did the exchange start and not finish within [`AUTH_TIMEOUT`]?
    pub fn timed_out(&self, now: Instant) -> bool {
        self.pending()
            && self
                .started
                .is_some_and(|s| now.saturating_duration_since(s) >= AUTH_TIMEOUT)
    }

    fn keys(&self, theirs: &PublicKey) -> (PublicKey, PublicKey) {
        let mine = self.id.key.public();
        match self.side {
            Side::Dialler => (mine, *theirs),
            Side::Acceptor => (*theirs, mine),
        }
    }

    /// The peer's extension handshake arrived (the first one; later ones change
    /// nothing here). The dialler opens the exchange when the peer offers it.
    pub fn on_peer_handshake(
        &mut self,
        their_nonce: Option<[u8; 32]>,
        offers: bool,
        now: Instant,
    ) -> Result<Step, AuthFailure> {
        if !matches!(self.state, State::Waiting) {
            return Ok(Step::default());
        }
        let (Some(n), true) = (their_nonce, offers) else {
            self.state = State::NotOffered;
            return Ok(Step::default());
        };
        if n == self.nonce {
            self.state = State::Failed;
            return Err(AuthFailure::close("the peer echoed our nonce"));
        }
        let (d_pid, a_pid, d_n, a_n) = match self.side {
            Side::Dialler => (&self.my_peer_id, &self.their_peer_id, &self.nonce, &n),
            Side::Acceptor => (&self.their_peer_id, &self.my_peer_id, &n, &self.nonce),
        };
        let t = Transcript::new(&self.info_hash, d_pid, a_pid, d_n, a_n);
        self.started = Some(now);
        let mut step = Step::default();
        match self.side {
            Side::Dialler => {
                step.send = Some(MachineMessage::Member {
                    mac: member_mac(&self.id.org_secret, Side::Dialler, &t),
                });
                self.state = State::AwaitMemberAck;
            }
            Side::Acceptor => self.state = State::AwaitMember,
        }
        self.transcript = Some(t);
        Ok(step)
    }

    /// One `sb_machine` message from the peer; `now` is Unix seconds (certificate
    /// validity).
    pub fn on_message(&mut self, msg: MachineMessage, now: i64) -> Result<Step, AuthFailure> {
        let r = self.step(msg, now);
        if r.is_err() {
            self.state = State::Failed;
        }
        r
    }

    fn step(&mut self, msg: MachineMessage, now: i64) -> Result<Step, AuthFailure> {
        // Before both nonces are known (or when the peer did not offer the exchange),
        // any message is out of order.
        let Some(t) = self.transcript.clone() else {
            return Err(AuthFailure::ban("sb_machine message before the handshakes"));
        };
        let state = std::mem::replace(&mut self.state, State::Failed);
        match (state, msg) {
            (State::AwaitMember, MachineMessage::Member { mac }) => {
                if !check_member_mac(&self.id.org_secret, Side::Dialler, &t, &mac) {
                    // Another organisation, or a stranger: nothing revealed, no ban.
                    return Err(AuthFailure::close("not a member of our organisation"));
                }
                self.state = State::AwaitSign;
                Ok(Step {
                    send: Some(MachineMessage::MemberAck {
                        cert: self.id.certificate.clone(),
                        flags: self.flags,
                        mac: member_mac(&self.id.org_secret, Side::Acceptor, &t),
                    }),
                    member: None,
                })
            }
            (State::AwaitMemberAck, MachineMessage::MemberAck { cert, flags, mac }) => {
                if !check_member_mac(&self.id.org_secret, Side::Acceptor, &t, &mac) {
                    return Err(AuthFailure::close("not a member of our organisation"));
                }
                let c = self.id.check_certificate(&cert, now)?;
                let (kd, ka) = self.keys(&c.fields.machine);
                let sig = self
                    .id
                    .key
                    .sign_peer(Side::Dialler, &t, &kd, &ka, self.flags);
                self.state = State::AwaitSignAck { cert: c, flags };
                Ok(Step {
                    send: Some(MachineMessage::Sign {
                        cert: self.id.certificate.clone(),
                        flags: self.flags,
                        sig,
                    }),
                    member: None,
                })
            }
            (State::AwaitSign, MachineMessage::Sign { cert, flags, sig }) => {
                let c = self.id.check_certificate(&cert, now)?;
                let (kd, ka) = self.keys(&c.fields.machine);
                c.fields
                    .machine
                    .verify_peer(Side::Dialler, &t, &kd, &ka, flags, &sig)
                    .map_err(|_| AuthFailure::ban("a bad signature under a valid certificate"))?;
                let answer = self
                    .id
                    .key
                    .sign_peer(Side::Acceptor, &t, &kd, &ka, self.flags);
                self.state = State::Done;
                Ok(Step {
                    send: Some(MachineMessage::SignAck { sig: answer }),
                    member: Some(Member {
                        key: c.fields.machine,
                        certificate: c,
                        flags,
                    }),
                })
            }
            (State::AwaitSignAck { cert, flags }, MachineMessage::SignAck { sig }) => {
                let (kd, ka) = self.keys(&cert.fields.machine);
                cert.fields
                    .machine
                    .verify_peer(Side::Acceptor, &t, &kd, &ka, flags, &sig)
                    .map_err(|_| AuthFailure::ban("a bad signature under a valid certificate"))?;
                self.state = State::Done;
                Ok(Step {
                    send: None,
                    member: Some(Member {
                        key: cert.fields.machine,
                        certificate: cert,
                        flags,
                    }),
                })
            }
            // A later version's message after authentication: ignored.
            (State::Done, MachineMessage::Unknown(_)) => {
                self.state = State::Done;
                Ok(Step::default())
            }
            (_, m) => Err(AuthFailure::ban(format!(
                "sb_machine message type {} out of order",
                m.kind()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarmbak_trust::CertificateFields;

    const NOW: i64 = 1_800_000_000;

    fn org() -> SigningKey {
        SigningKey::from_seed([0x0a; 32])
    }

    fn machine(seed: u8, org: &SigningKey, secret: [u8; 32]) -> Arc<Identity> {
        let key = SigningKey::from_seed([seed; 32]);
        let cert = Certificate::issue(
            org,
            &CertificateFields {
                machine: key.public(),
                age_recipient: "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
                    .into(),
                name: format!("m{seed}"),
                user: None,
                vip: false,
                domain: None,
                issued: NOW - 10,
                expires: None,
            },
        );
        Identity::new(secret, org.public(), cert, key)
    }

    fn pair(d: Arc<Identity>, a: Arc<Identity>) -> (MachineAuth, MachineAuth) {
        let ih = [7u8; 20];
        (
            MachineAuth::new(d, true, true, ih, [1; 20], [2; 20]),
            MachineAuth::new(a, false, false, ih, [2; 20], [1; 20]),
        )
    }

    /// Exchanges nonces; returns the dialler's `member`.
    fn open(dd: &mut MachineAuth, aa: &mut MachineAuth, now: Instant) -> MachineMessage {
        aa.on_peer_handshake(Some(dd.nonce()), true, now).unwrap();
        dd.on_peer_handshake(Some(aa.nonce()), true, now)
            .unwrap()
            .send
            .unwrap()
    }

    /// Runs the exchange; returns (dialler's view of A, acceptor's view of D) or the
    /// first failure.
    fn run(dd: &mut MachineAuth, aa: &mut MachineAuth) -> Result<(Member, Member), AuthFailure> {
        let now = Instant::now();
        let (nd, na) = (dd.nonce(), aa.nonce());
        aa.on_peer_handshake(Some(nd), true, now)?;
        let m1 = dd.on_peer_handshake(Some(na), true, now)?.send.unwrap();
        let m2 = aa.on_message(m1, NOW)?.send.unwrap();
        let m3 = dd.on_message(m2, NOW)?.send.unwrap();
        let s4 = aa.on_message(m3, NOW)?;
        let seen_d = s4.member.unwrap();
        let seen_a = dd.on_message(s4.send.unwrap(), NOW)?.member.unwrap();
        Ok((seen_a, seen_d))
    }

    #[test]
    fn two_members_authenticate_each_other() {
        let o = org();
        let (d, a) = (machine(1, &o, [3; 32]), machine(2, &o, [3; 32]));
        let (mut dd, mut aa) = pair(d.clone(), a.clone());
        let (seen_a, seen_d) = run(&mut dd, &mut aa).unwrap();
        assert_eq!(seen_a.key, a.key.public());
        assert_eq!(seen_d.key, d.key.public());
        assert!(seen_d.holder() && !seen_a.holder());
    }

    #[test]
    fn another_organisation_secret_is_refused_without_a_ban_or_a_certificate() {
        let o = org();
        let (mut dd, mut aa) = pair(machine(1, &o, [3; 32]), machine(2, &o, [4; 32]));
        let now = Instant::now();
        let m1 = open(&mut dd, &mut aa, now);
        let e = aa.on_message(m1, NOW).unwrap_err();
        assert!(!e.ban, "{e:?}");
    }

    #[test]
    fn a_certificate_of_another_organisation_key_is_refused() {
        let other = SigningKey::from_seed([0x0c; 32]);
        let (mut dd, mut aa) = pair(machine(1, &org(), [3; 32]), machine(2, &other, [3; 32]));
        assert!(run(&mut dd, &mut aa).is_err());
    }

    #[test]
    fn a_revoked_machine_is_banned() {
        let o = org();
        let (d, a) = (machine(1, &o, [3; 32]), machine(2, &o, [3; 32]));
        a.set_revoked([d.key.public()].into_iter().collect());
        let (mut dd, mut aa) = pair(d, a);
        let e = run(&mut dd, &mut aa).unwrap_err();
        assert!(e.ban, "{e:?}");
    }

    #[test]
    fn replayed_reflected_and_out_of_order_messages_fail() {
        let o = org();
        let (d, a) = (machine(1, &o, [3; 32]), machine(2, &o, [3; 32]));
        // Replay: a `member` recorded on one connection, offered on another.
        let (mut dd, mut aa) = pair(d.clone(), a.clone());
        let now = Instant::now();
        let m1 = open(&mut dd, &mut aa, now);
        let (_, mut aa2) = pair(d.clone(), a.clone());
        aa2.on_peer_handshake(Some(dd.nonce()), true, now).unwrap();
        assert!(aa2.on_message(m1.clone(), NOW).is_err(), "replayed member");
        // Reflection: our own nonce echoed.
        let (mut dd3, _) = pair(d.clone(), a.clone());
        let own = dd3.nonce();
        assert!(dd3.on_peer_handshake(Some(own), true, now).is_err());
        // Out of order: `sign` before `member`.
        let (_, mut aa4) = pair(d.clone(), a.clone());
        aa4.on_peer_handshake(Some([9; 32]), true, now).unwrap();
        let e = aa4
            .on_message(
                MachineMessage::Sign {
                    cert: d.certificate.clone(),
                    flags: 1,
                    sig: [0; 64],
                },
                NOW,
            )
            .unwrap_err();
        assert!(e.ban);
    }

    /// A member E in the middle of D and A (relaying both handshakes, so the
    /// transcripts match) swaps D's `sign` for its own: A then talks to E (and knows
    /// it), and D refuses A's answer, which covers E's key instead of D's.
    #[test]
    fn a_signature_made_for_another_key_is_refused() {
        let o = org();
        let (d, a, e) = (
            machine(1, &o, [3; 32]),
            machine(2, &o, [3; 32]),
            machine(5, &o, [3; 32]),
        );
        let (mut dd, mut aa) = pair(d.clone(), a.clone());
        let now = Instant::now();
        let m1 = open(&mut dd, &mut aa, now);
        let m2 = aa.on_message(m1, NOW).unwrap().send.unwrap();
        let _dropped = dd.on_message(m2, NOW).unwrap().send.unwrap();
        let t = Transcript::new(&[7; 20], &[1; 20], &[2; 20], &dd.nonce(), &aa.nonce());
        let (pe, pa) = (e.key.public(), a.key.public());
        let forged = MachineMessage::Sign {
            cert: e.certificate.clone(),
            flags: 1,
            sig: e.key.sign_peer(Side::Dialler, &t, &pe, &pa, 1),
        };
        let s4 = aa.on_message(forged, NOW).unwrap();
        assert_eq!(s4.member.unwrap().key, pe, "A sees E, not D");
        let err = dd.on_message(s4.send.unwrap(), NOW).unwrap_err();
        assert!(err.ban, "{err:?}");
    }

    #[test]
    fn a_peer_that_does_not_offer_is_a_standard_client() {
        let o = org();
        let (mut dd, _) = pair(machine(1, &o, [3; 32]), machine(2, &o, [3; 32]));
        let s = dd.on_peer_handshake(None, true, Instant::now()).unwrap();
        assert!(s.send.is_none() && !dd.pending());
        assert!(dd
            .on_message(MachineMessage::Member { mac: [0; 32] }, NOW)
            .is_err());
    }

    #[test]
    fn a_stalled_exchange_times_out() {
        let o = org();
        let (mut dd, _) = pair(machine(1, &o, [3; 32]), machine(2, &o, [3; 32]));
        let now = Instant::now();
        dd.on_peer_handshake(Some([9; 32]), true, now).unwrap();
        assert!(!dd.timed_out(now + Duration::from_secs(9)));
        assert!(dd.timed_out(now + AUTH_TIMEOUT));
    }
}

/// The session of an authenticated connection (trust.md §11.3): its key and each
/// direction's message counter. Every `sb_machine` message after the exchange is sealed
/// and opened here.
pub struct Tagged {
    key: SessionKey,
    side: Side,
    sent: u64,
    received: u64,
}

/// Why a tagged message was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TagError {
    /// Its tag or number does not verify: it may have been forged on the path (close
    /// the connection, no ban).
    #[error("{0}")]
    Forged(String),
    /// Its tag verified but the peer sent a malformed message (ban).
    #[error("{0}")]
    Malformed(String),
}

impl Tagged {
    pub fn new(key: SessionKey, side: Side) -> Tagged {
        Tagged {
            key,
            side,
            sent: 0,
            received: 0,
        }
    }

    /// The session of a finished exchange.
    pub fn of(auth: &MachineAuth) -> Option<Tagged> {
        auth.session().map(|(k, side)| Tagged::new(k, side))
    }

    /// `m` as its `sb_machine` payload: the dictionary and its tag (wire.md "Tagged
    /// messages"); counts it.
    pub fn seal(&mut self, m: &MachineMessage) -> Vec<u8> {
        let (key, side, n) = (&self.key, self.side, self.sent);
        let payload = m.encode_tagged(|dict| tag(key, side, n, dict));
        self.sent += 1;
        payload
    }

    /// The peer's next tagged message: its tag and number are checked before anything in
    /// it is read.
    pub fn open(&mut self, payload: &[u8]) -> Result<MachineMessage, TagError> {
        let (dict, t) =
            MachineMessage::split_tagged(payload).map_err(|e| TagError::Forged(e.to_string()))?;
        if !check_tag(&self.key, self.side.other(), self.received, dict, &t) {
            return Err(TagError::Forged(
                "a message whose session tag does not verify".into(),
            ));
        }
        self.received += 1;
        MachineMessage::parse(dict).map_err(|e| TagError::Malformed(e.to_string()))
    }
}
