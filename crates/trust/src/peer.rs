//! The cryptography of the `sb_machine` peer authentication (protocol-spec/wire.md
//! "Authenticated peers", trust.md §10): the connection transcript, the membership MAC
//! keyed by the organisation secret, and the machine signature over the transcript and
//! both machines' keys. The message exchange itself is the agent's; this module only
//! computes and checks bytes.

use hmac::{KeyInit, Mac};

use crate::{PublicKey, SigningKey, TrustError};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Bytes of a [`Transcript`].
pub const TRANSCRIPT_LEN: usize = 124;
/// Bytes of a [`peer_signing_input`].
pub const PEER_SIGNING_INPUT_LEN: usize = 207;
/// The MAC's domain separation prefix.
pub const MEMBER_PREFIX: &[u8] = b"swarmbak-member-v1\0";
/// The peer signature's domain separation prefix.
pub const PEER_PREFIX: &[u8] = b"swarmbak-peer-v1\0";
/// The session key's domain separation prefix.
pub const SESSION_PREFIX: &[u8] = b"swarmbak-session-v1\0";
/// Bytes of a session [`tag`].
const TAG_LEN: usize = 16;

/// Which side of the TCP connection: the one that dialled, or the one that accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Opened the connection (role byte 0x01).
    Dialler,
    /// Accepted it (role byte 0x02).
    Acceptor,
}

impl Side {
    /// The role byte in MAC and signature inputs.
    pub fn byte(self) -> u8 {
        match self {
            Side::Dialler => 1,
            Side::Acceptor => 2,
        }
    }

    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Dialler => Side::Acceptor,
            Side::Acceptor => Side::Dialler,
        }
    }
}

/// What both sides of one connection agree on: `info_hash ‖ peer_id_D ‖ peer_id_A ‖
/// nonce_D ‖ nonce_A` (124 bytes; D dialled, A accepted). Every MAC and signature covers
/// it, so none can be replayed on another connection.
#[derive(Clone, PartialEq, Eq)]
pub struct Transcript(pub [u8; TRANSCRIPT_LEN]);

impl std::fmt::Debug for Transcript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Transcript({})", hex::encode(self.0))
    }
}

impl Transcript {
    /// Builds the transcript from the handshakes' fields.
    pub fn new(
        info_hash: &[u8; 20],
        peer_id_d: &[u8; 20],
        peer_id_a: &[u8; 20],
        nonce_d: &[u8; 32],
        nonce_a: &[u8; 32],
    ) -> Transcript {
        let mut t = [0u8; TRANSCRIPT_LEN];
        t[..20].copy_from_slice(info_hash);
        t[20..40].copy_from_slice(peer_id_d);
        t[40..60].copy_from_slice(peer_id_a);
        t[60..92].copy_from_slice(nonce_d);
        t[92..].copy_from_slice(nonce_a);
        Transcript(t)
    }
}

fn member_mac_state(org_secret: &[u8; 32], side: Side, t: &Transcript) -> HmacSha256 {
    let mut m = hmac(org_secret);
    m.update(MEMBER_PREFIX);
    m.update(&[side.byte()]);
    m.update(&t.0);
    m
}

/// `HMAC-SHA256(org_secret, "swarmbak-member-v1\0" ‖ role ‖ T)`: proves that `side`
/// knows the organisation secret, and reveals nothing about it.
pub fn member_mac(org_secret: &[u8; 32], side: Side, t: &Transcript) -> [u8; 32] {
    member_mac_state(org_secret, side, t)
        .finalize()
        .into_bytes()
        .into()
}

/// Checks a membership MAC in constant time.
pub fn check_member_mac(org_secret: &[u8; 32], side: Side, t: &Transcript, mac: &[u8]) -> bool {
    member_mac_state(org_secret, side, t)
        .verify_slice(mac)
        .is_ok()
}

/// The key that tags one connection's `sb_machine` messages after authentication
/// (trust.md §11.3). Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey(pub [u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

fn hmac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: this cannot fail.
    <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

/// `HMAC-SHA256(org_secret, "swarmbak-session-v1\0" ‖ T)`: the connection's session
/// key, known only to members of the organisation that saw this transcript.
pub fn session_key(org_secret: &[u8; 32], t: &Transcript) -> SessionKey {
    let mut m = hmac(org_secret);
    m.update(SESSION_PREFIX);
    m.update(&t.0);
    SessionKey(m.finalize().into_bytes().into())
}

fn tag_state(k: &SessionKey, sender: Side, counter: u64, msg: &[u8]) -> HmacSha256 {
    let mut m = hmac(&k.0);
    m.update(&[sender.byte()]);
    m.update(&counter.to_be_bytes());
    m.update(msg);
    m
}

/// The tag of the `counter`-th tagged message `sender` sends on this connection (`msg`:
/// the message's bencoded dictionary): the first 16 bytes of `HMAC-SHA256(k, role ‖
/// BE64(counter) ‖ msg)`.
pub fn tag(k: &SessionKey, sender: Side, counter: u64, msg: &[u8]) -> [u8; TAG_LEN] {
    let full = tag_state(k, sender, counter, msg).finalize().into_bytes();
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(&full[..TAG_LEN]);
    t
}

/// Checks a [`tag`] in constant time.
pub fn check_tag(
    k: &SessionKey,
    sender: Side,
    counter: u64,
    msg: &[u8],
    tag: &[u8; TAG_LEN],
) -> bool {
    tag_state(k, sender, counter, msg)
        .verify_truncated_left(tag)
        .is_ok()
}

/// What a machine signs to prove its key on this connection: `"swarmbak-peer-v1\0" ‖
/// role ‖ T ‖ key_D ‖ key_A ‖ flags` (207 bytes). Both keys are in it, so a signature
/// made for one peer cannot be relayed to another (no unknown-key share).
pub fn peer_signing_input(
    side: Side,
    t: &Transcript,
    key_d: &PublicKey,
    key_a: &PublicKey,
    flags: u8,
) -> [u8; PEER_SIGNING_INPUT_LEN] {
    let mut b = [0u8; PEER_SIGNING_INPUT_LEN];
    let mut at = 0;
    for part in [
        PEER_PREFIX,
        &[side.byte()],
        &t.0,
        key_d.as_bytes(),
        key_a.as_bytes(),
        &[flags],
    ] {
        b[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    b
}

impl SigningKey {
    /// Signs this connection's [`peer_signing_input`] as `side`.
    pub fn sign_peer(
        &self,
        side: Side,
        t: &Transcript,
        key_d: &PublicKey,
        key_a: &PublicKey,
        flags: u8,
    ) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.0
            .sign(&peer_signing_input(side, t, key_d, key_a, flags))
            .to_bytes()
    }
}

impl PublicKey {
    /// Checks a peer signature made by this key as `side` ([`SigningKey::sign_peer`]).
    pub fn verify_peer(
        &self,
        side: Side,
        t: &Transcript,
        key_d: &PublicKey,
        key_a: &PublicKey,
        flags: u8,
        sig: &[u8; 64],
    ) -> Result<(), TrustError> {
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&self.0)
            .map_err(|_| TrustError::BadSignature("peer challenge"))?;
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        vk.verify_strict(&peer_signing_input(side, t, key_d, key_a, flags), &sig)
            .map_err(|_| TrustError::BadSignature("peer challenge"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Transcript {
        Transcript::new(&[1; 20], &[2; 20], &[3; 20], &[4; 32], &[5; 32])
    }

    /// RFC 4231 test case 2: the HMAC is the standard one.
    #[test]
    fn hmac_is_rfc_4231() {
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn macs_depend_on_side_secret_and_transcript() {
        let s = [9u8; 32];
        let d = member_mac(&s, Side::Dialler, &t());
        assert!(check_member_mac(&s, Side::Dialler, &t(), &d));
        assert!(!check_member_mac(&s, Side::Acceptor, &t(), &d), "reflected");
        assert!(
            !check_member_mac(&[8; 32], Side::Dialler, &t(), &d),
            "other org"
        );
        let other = Transcript::new(&[1; 20], &[2; 20], &[3; 20], &[4; 32], &[6; 32]);
        assert!(!check_member_mac(&s, Side::Dialler, &other, &d), "replayed");
        assert!(
            !check_member_mac(&s, Side::Dialler, &t(), &d[..31]),
            "short"
        );
    }

    #[test]
    fn session_tags_bind_key_side_counter_and_message() {
        let k = session_key(&[9; 32], &t());
        assert_eq!(format!("{k:?}"), "SessionKey(..)");
        let other = Transcript::new(&[1; 20], &[2; 20], &[3; 20], &[4; 32], &[6; 32]);
        assert_ne!(session_key(&[9; 32], &other), k, "another connection");
        assert_ne!(session_key(&[8; 32], &t()), k, "another organisation");
        let msg = b"d4:held3:abc1:ti6ee";
        let tg = tag(&k, Side::Dialler, 7, msg);
        assert!(check_tag(&k, Side::Dialler, 7, msg, &tg));
        assert!(!check_tag(&k, Side::Acceptor, 7, msg, &tg), "reflected");
        assert!(!check_tag(&k, Side::Dialler, 6, msg, &tg), "replayed");
        assert!(!check_tag(
            &k,
            Side::Dialler,
            7,
            b"d4:held3:abd1:ti6ee",
            &tg
        ));
        let other_key = session_key(&[9; 32], &other);
        assert!(!check_tag(&other_key, Side::Dialler, 7, msg, &tg));
        let mut flipped = tg;
        flipped[15] ^= 1;
        assert!(!check_tag(&k, Side::Dialler, 7, msg, &flipped));
        // The tag is the HMAC's first 16 bytes.
        let mut m = hmac(&k.0);
        m.update(&[1]);
        m.update(&7u64.to_be_bytes());
        m.update(msg);
        assert_eq!(m.finalize().into_bytes()[..16], tg);
    }

    #[test]
    fn signatures_bind_side_keys_and_flags() {
        let kd = SigningKey::from_seed([1; 32]);
        let ka = SigningKey::from_seed([2; 32]);
        let (pd, pa) = (kd.public(), ka.public());
        let sig = kd.sign_peer(Side::Dialler, &t(), &pd, &pa, 1);
        assert_eq!(
            pd.verify_peer(Side::Dialler, &t(), &pd, &pa, 1, &sig),
            Ok(())
        );
        assert!(pd
            .verify_peer(Side::Acceptor, &t(), &pd, &pa, 1, &sig)
            .is_err());
        assert!(pd
            .verify_peer(Side::Dialler, &t(), &pd, &pd, 1, &sig)
            .is_err());
        assert!(pd
            .verify_peer(Side::Dialler, &t(), &pd, &pa, 0, &sig)
            .is_err());
        assert!(pa
            .verify_peer(Side::Dialler, &t(), &pd, &pa, 1, &sig)
            .is_err());
        assert_eq!(
            peer_signing_input(Side::Dialler, &t(), &pd, &pa, 1).len(),
            PEER_SIGNING_INPUT_LEN
        );
    }
}
