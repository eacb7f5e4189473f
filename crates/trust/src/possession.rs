//! Proofs of possession (protocol-spec/trust.md §11): the holder's signed **held
//! statement** (which pieces of a snapshot it has on disk after a flush), the checker's
//! signed **possession attestation** (the outcome of one proof), and the keyed
//! **possession digest** a holder answers a digest challenge with. The messages that carry
//! them are wire.md's tagged `sb_machine` messages; when to send them is the agent's.

use sha2::Digest;
use swarmbak_bencode::Encoder;

use crate::records::{finish, open_machine_signed};
use crate::{Fields, Kind, PublicKey, SigningKey, TrustError};

/// The largest piece count a held statement may name (2^24).
pub const MAX_HELD_PIECES: u32 = 1 << 24;

/// The possession digest's domain separation prefix.
pub const DIGEST_PREFIX: &[u8] = b"swarmbak-digest-v1\0";

/// The bitfield of `pieces` pieces in BEP 3 order (bit 7 of byte 0 is piece 0), with
/// piece `p` set when `has(p)`; ceil(pieces/8) bytes, spare bits zero.
pub fn bitfield_bytes(pieces: u32, has: impl Fn(u32) -> bool) -> Vec<u8> {
    let mut b = vec![0u8; pieces.div_ceil(8) as usize];
    for p in 0..pieces {
        if has(p) {
            b[(p / 8) as usize] |= 0x80 >> (p % 8);
        }
    }
    b
}

/// A signed integer field that must fit a `u64`/`u32`.
fn ranged<T: TryFrom<i64>>(
    f: &Fields<'_>,
    key: &str,
    ok: impl Fn(&T) -> bool,
) -> Result<T, TrustError> {
    let v = f.int(key)?;
    T::try_from(v)
        .ok()
        .filter(ok)
        .ok_or_else(|| TrustError::Malformed(format!("`{key}` {v} is out of range")))
}

/// A holder's signed statement of the pieces of one snapshot it has on disk after a
/// successful flush (trust.md §11.1). The latest (highest `seq`) replaces earlier ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldStatement {
    /// The snapshot's info-hash.
    pub infohash: [u8; 20],
    /// The holder's signing key (the signer).
    pub key: PublicKey,
    /// The torrent's piece count (1 to [`MAX_HELD_PIECES`]).
    pub pieces: u32,
    /// The pieces held: ceil(pieces/8) bytes, BEP 3 bit order, spare bits zero
    /// ([`bitfield_bytes`]).
    pub have: Vec<u8>,
    /// Strictly increasing per (holder, snapshot), from 1.
    pub seq: u64,
    /// When the flush covering `have` completed, Unix seconds (the holder's clock).
    pub flushed: i64,
}

impl HeldStatement {
    fn body(&self) -> Vec<u8> {
        let mut e = Encoder::with_capacity(self.have.len() + 128);
        e.begin_dict()
            .key(b"flushed")
            .int(self.flushed)
            .key(b"have")
            .bytes(&self.have)
            .key(b"infohash")
            .bytes(&self.infohash)
            .key(b"key")
            .bytes(self.key.as_bytes())
            .key(b"pieces")
            .int(i64::from(self.pieces))
            .key(b"seq")
            .int(i64::try_from(self.seq).unwrap_or(i64::MAX))
            .end();
        finish(e)
    }

    /// Signs the statement with the holder's key (which must be `self.key`): the
    /// envelope.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        key.sign(Kind::Held, &self.body())
    }

    /// Reads a statement and checks it: signed by `key`, naming `key`, `pieces` 1 to
    /// [`MAX_HELD_PIECES`], `have` of ceil(pieces/8) bytes with its spare bits zero,
    /// `seq` ≥ 1.
    pub fn verify(bytes: &[u8], key: &PublicKey) -> Result<HeldStatement, TrustError> {
        open_machine_signed(bytes, Kind::Held, key, HeldStatement::parse_body, |s| {
            &s.key
        })
    }

    fn parse_body(body: &[u8]) -> Result<HeldStatement, TrustError> {
        let f = Fields::parse(body, "held statement")?;
        let pieces: u32 = ranged(&f, "pieces", |p| (1..=MAX_HELD_PIECES).contains(p))?;
        let have = f.bytes("have")?;
        if have.len() != pieces.div_ceil(8) as usize {
            return Err(TrustError::Malformed(format!(
                "the held statement's `have` is {} bytes, not {} for {pieces} pieces",
                have.len(),
                pieces.div_ceil(8)
            )));
        }
        let spare = (8 - pieces % 8) % 8;
        if have.last().is_some_and(|b| b & ((1u8 << spare) - 1) != 0) {
            return Err(TrustError::Malformed(
                "the held statement's `have` sets bits past the last piece".into(),
            ));
        }
        Ok(HeldStatement {
            infohash: f.array("infohash")?,
            key: f.key("key")?,
            pieces,
            have: have.to_vec(),
            seq: ranged(&f, "seq", |s| *s >= 1)?,
            flushed: f.int("flushed")?,
        })
    }

    /// Whether the statement says piece `piece` is held (false past the last piece).
    pub fn holds(&self, piece: u32) -> bool {
        piece < self.pieces
            && self
                .have
                .get((piece / 8) as usize)
                .is_some_and(|b| b & (0x80 >> (piece % 8)) != 0)
    }
}

/// A checker's signed record of one proof of possession (trust.md §11.2): who checked
/// whom, on which snapshot, how, and whether it passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// The checking machine (the signer).
    pub checker: PublicKey,
    /// The machine checked.
    pub holder: PublicKey,
    /// The snapshot's info-hash.
    pub infohash: [u8; 20],
    /// The challenge mode (wire.md: 0 blocks, 1 digest).
    pub mode: u8,
    /// How many 16 KiB blocks the proof covered.
    pub blocks: u32,
    /// Whether it passed.
    pub result: bool,
    /// The `seq` of the holder's statement the proof was for.
    pub seq: u64,
    /// When the proof ended, Unix seconds (the checker's clock).
    pub time: i64,
}

impl Attestation {
    fn body(&self) -> Vec<u8> {
        let mut e = Encoder::with_capacity(192);
        e.begin_dict()
            .key(b"blocks")
            .int(i64::from(self.blocks))
            .key(b"checker")
            .bytes(self.checker.as_bytes())
            .key(b"holder")
            .bytes(self.holder.as_bytes())
            .key(b"infohash")
            .bytes(&self.infohash)
            .key(b"mode")
            .int(i64::from(self.mode))
            .key(b"result")
            .int(i64::from(self.result))
            .key(b"seq")
            .int(i64::try_from(self.seq).unwrap_or(i64::MAX))
            .key(b"time")
            .int(self.time)
            .end();
        finish(e)
    }

    /// Signs the attestation with the checker's key (which must be `self.checker`).
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        key.sign(Kind::Attestation, &self.body())
    }

    /// Reads an attestation and checks it is signed by `checker` and names it.
    pub fn verify(bytes: &[u8], checker: &PublicKey) -> Result<Attestation, TrustError> {
        open_machine_signed(
            bytes,
            Kind::Attestation,
            checker,
            Attestation::parse_body,
            |a| &a.checker,
        )
    }

    fn parse_body(body: &[u8]) -> Result<Attestation, TrustError> {
        let f = Fields::parse(body, "possession attestation")?;
        let result: u8 = ranged(&f, "result", |r| *r <= 1)?;
        Ok(Attestation {
            checker: f.key("checker")?,
            holder: f.key("holder")?,
            infohash: f.array("infohash")?,
            mode: ranged(&f, "mode", |_| true)?,
            blocks: ranged(&f, "blocks", |_| true)?,
            result: result == 1,
            seq: ranged(&f, "seq", |_| true)?,
            time: f.int("time")?,
        })
    }
}

/// The possession digest computed as the blocks' bytes arrive (so a holder never needs a
/// whole range in memory): `SHA-256("swarmbak-digest-v1\0" ‖ nonce ‖ info_hash ‖
/// holder ‖ BE32(piece) ‖ BE32(first) ‖ BE32(count) ‖ bytes)`.
#[derive(Clone)]
pub struct DigestState(sha2::Sha256);

impl std::fmt::Debug for DigestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DigestState")
    }
}

impl DigestState {
    /// Starts the digest of blocks `first..first + count` of `piece`, for the challenge
    /// `nonce` to `holder` on the snapshot `info_hash`.
    pub fn new(
        nonce: &[u8; 32],
        info_hash: &[u8; 20],
        holder: &PublicKey,
        piece: u32,
        first: u32,
        count: u32,
    ) -> DigestState {
        let mut h = sha2::Sha256::new();
        h.update(DIGEST_PREFIX);
        h.update(nonce);
        h.update(info_hash);
        h.update(holder.as_bytes());
        h.update(piece.to_be_bytes());
        h.update(first.to_be_bytes());
        h.update(count.to_be_bytes());
        DigestState(h)
    }

    /// Adds the next bytes of the blocks, in order.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// The possession digest (trust.md §11.4) of `blocks`, the blocks `first..first + count`
/// of `piece` in order: what a holder answers a digest challenge with.
pub fn possession_digest(
    nonce: &[u8; 32],
    info_hash: &[u8; 20],
    holder: &PublicKey,
    piece: u32,
    first: u32,
    count: u32,
    blocks: &[&[u8]],
) -> [u8; 32] {
    let mut d = DigestState::new(nonce, info_hash, holder, piece, first, count);
    for b in blocks {
        d.update(b);
    }
    d.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(k: &SigningKey) -> HeldStatement {
        HeldStatement {
            infohash: [0xab; 20],
            key: k.public(),
            pieces: 12,
            have: bitfield_bytes(12, |p| [0, 1, 2, 5, 11].contains(&p)),
            seq: 3,
            flushed: 1_796_100_100,
        }
    }

    #[test]
    fn bitfields_are_bep3_order() {
        assert_eq!(
            bitfield_bytes(12, |p| [0, 1, 2, 5, 11].contains(&p)),
            [0xe4, 0x10]
        );
        assert_eq!(bitfield_bytes(8, |_| true), [0xff]);
        assert_eq!(bitfield_bytes(9, |_| true), [0xff, 0x80]);
        assert!(bitfield_bytes(0, |_| true).is_empty());
    }

    #[test]
    fn held_statements_round_trip_and_check_everything() {
        let k = SigningKey::from_seed([1; 32]);
        let other = SigningKey::from_seed([2; 32]);
        let s = statement(&k);
        let env = s.sign(&k);
        let got = HeldStatement::verify(&env, &k.public()).unwrap();
        assert_eq!(got, s);
        let held: Vec<u32> = (0..14).filter(|&p| got.holds(p)).collect();
        assert_eq!(held, [0, 1, 2, 5, 11]);
        assert!(!got.holds(u32::MAX));
        // Another key's signature; a body naming another key.
        assert!(matches!(
            HeldStatement::verify(&env, &other.public()),
            Err(TrustError::BadSignature("held statement"))
        ));
        let forged = s.sign(&other);
        assert!(matches!(
            HeldStatement::verify(&forged, &other.public()),
            Err(TrustError::Mismatch(_))
        ));
        // A held signature is not a publish record's, nor the reverse.
        let (body, sig) = crate::split(&env).unwrap();
        assert!(k.public().verify(Kind::Publish, body, &sig).is_err());
        // Every flipped byte is refused.
        for i in 0..env.len() {
            let mut t = env.clone();
            t[i] ^= 1;
            assert!(HeldStatement::verify(&t, &k.public()).is_err(), "byte {i}");
        }
        let bad = |f: &dyn Fn(&mut HeldStatement)| {
            let mut s = statement(&k);
            f(&mut s);
            HeldStatement::verify(&s.sign(&k), &k.public()).is_err()
        };
        assert!(bad(&|s| s.have.push(0)), "long bitfield");
        assert!(
            bad(&|s| {
                s.have.pop();
            }),
            "short bitfield"
        );
        assert!(bad(&|s| s.have[1] |= 0x01), "spare bit");
        assert!(bad(&|s| s.seq = 0), "seq 0");
        assert!(
            bad(&|s| {
                s.pieces = 0;
                s.have.clear();
            }),
            "no pieces"
        );
        assert!(
            bad(&|s| {
                s.pieces = MAX_HELD_PIECES + 1;
                s.have = vec![0; (MAX_HELD_PIECES / 8 + 1) as usize];
            }),
            "too many pieces"
        );
        assert!(
            !bad(&|s| {
                s.pieces = 16;
                s.have = vec![0xff, 0xff];
            }),
            "no spare bits"
        );
    }

    #[test]
    fn attestations_round_trip() {
        let checker = SigningKey::from_seed([2; 32]);
        let a = Attestation {
            checker: checker.public(),
            holder: SigningKey::from_seed([1; 32]).public(),
            infohash: [0xab; 20],
            mode: 1,
            blocks: 16,
            result: true,
            seq: 3,
            time: 1_796_100_200,
        };
        let env = a.sign(&checker);
        assert_eq!(Attestation::verify(&env, &checker.public()), Ok(a.clone()));
        assert!(Attestation::verify(&env, &a.holder).is_err());
        let mut b = a.clone();
        b.result = false;
        assert_eq!(
            Attestation::verify(&b.sign(&checker), &checker.public()),
            Ok(b)
        );
    }

    #[test]
    fn the_streaming_digest_is_the_one_shot_digest() {
        let k = SigningKey::from_seed([1; 32]).public();
        let (b0, b1) = (vec![0u8; 16384], vec![0x11u8; 16384]);
        let one = possession_digest(&[0xc0; 32], &[0xab; 20], &k, 5, 2, 2, &[&b0, &b1]);
        let mut s = DigestState::new(&[0xc0; 32], &[0xab; 20], &k, 5, 2, 2);
        for chunk in b0.chunks(1000).chain(b1.chunks(777)) {
            s.update(chunk);
        }
        assert_eq!(s.finish(), one);
        let mut input = DIGEST_PREFIX.to_vec();
        input.extend([0xc0; 32]);
        input.extend([0xab; 20]);
        input.extend(k.as_bytes());
        input.extend([0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 2]);
        input.extend(&b0);
        input.extend(&b1);
        assert_eq!(crate::sha256(&input), one);
        // The holder's key is in it: another holder's digest differs.
        let k2 = SigningKey::from_seed([2; 32]).public();
        assert_ne!(
            possession_digest(&[0xc0; 32], &[0xab; 20], &k2, 5, 2, 2, &[&b0, &b1]),
            one
        );
    }
}
