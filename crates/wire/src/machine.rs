//! The `sb_machine` extension's messages (protocol-spec/wire.md "Authenticated peers"):
//! the four-step exchange in which two machines of one organisation prove membership
//! (a MAC keyed by the organisation secret) and then their certified signing keys
//! (types 1–4, untagged), and the messages of proven holdings that follow it (types
//! 5–10: publish records, held statements, challenges and their answers), each sent
//! **tagged**: its dictionary followed by a 16-byte session tag. This module only encodes
//! and parses; the bytes the MACs, signatures and tags cover are `swarmbak_trust`'s
//! (trust.md §10, §11) and the exchange is run by the agent.

use swarmbak_bencode::{decode_with, Encoder, Limits as BencodeLimits, List, Value};

use crate::error::ExtensionError;

/// Largest untagged `sb_machine` payload (types 1–4) accepted (bytes); a larger one is
/// malformed.
pub const MAX_MACHINE_MESSAGE: usize = 4096;
/// Bytes of the session tag after a tagged message's dictionary.
pub const TAG_LEN: usize = 16;
/// Largest tagged `sb_machine` payload (dictionary and tag) accepted (bytes).
pub const MAX_TAGGED_MESSAGE: usize = 96 * 1024;
/// Most entries in a mode-0 (blocks) challenge.
pub const MAX_BLOCK_ENTRIES: usize = 64;
/// Most entries in a mode-1 (digest) challenge.
pub const MAX_DIGEST_ENTRIES: usize = 8;
/// Most blocks one digest entry covers (`count`).
pub const MAX_DIGEST_BLOCKS: u32 = 64;
/// Most block answers in one `response`.
pub const MAX_BLOCK_ANSWERS: usize = 4;
/// Most digest answers in one `response`.
pub const MAX_DIGEST_ANSWERS: usize = 8;
/// Most bytes of a block answer's data.
pub const MAX_ANSWER_DATA: usize = 16384;
/// Most hashes in a block answer's path.
pub const MAX_PATH_HASHES: usize = 16;
/// `refuse` reason: the piece is not there.
pub const REFUSE_MISSING: u8 = 1;
/// `refuse` reason: over budget, ask again later.
pub const REFUSE_BUSY: u8 = 2;

/// Values and keys a payload may hold in all (a challenge of 64 entries needs 202).
const MAX_ITEMS: usize = 256;

/// What a `challenge` asks for: its mode and entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Mode 0: whole blocks, each `(piece, block index)`; 1 to 64 entries.
    Blocks(Vec<(u32, u32)>),
    /// Mode 1: keyed digests, each `(piece, first block, count)`; 1 to 8 entries,
    /// `count` 1 to 64.
    Digest(Vec<(u32, u32, u32)>),
}

impl Challenge {
    /// The mode on the wire (0 blocks, 1 digest).
    pub fn mode(&self) -> u8 {
        match self {
            Challenge::Blocks(_) => 0,
            Challenge::Digest(_) => 1,
        }
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        match self {
            Challenge::Blocks(e) => e.len(),
            Challenge::Digest(e) => e.len(),
        }
    }

    /// Whether there are no entries (never, in a parsed challenge).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One answer in a `response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// To a mode-0 entry: the block's bytes (at most 16384) and its Merkle path, lowest
    /// uncle first (at most 16 hashes; none when the snapshot has no roots).
    Block {
        /// The block.
        data: Vec<u8>,
        /// The uncle hashes.
        path: Vec<[u8; 32]>,
    },
    /// To a mode-1 entry: the possession digest (trust.md §11.4).
    Digest([u8; 32]),
}

/// One `sb_machine` message (a bencoded dictionary; `t` is the type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineMessage {
    /// `t` 1, dialler → acceptor: the dialler's membership MAC.
    Member {
        /// MAC_D.
        mac: [u8; 32],
    },
    /// `t` 2, acceptor → dialler: the acceptor's MAC, certificate and flags.
    MemberAck {
        /// The acceptor's certificate envelope (trust.md §3).
        cert: Vec<u8>,
        /// Flags (bit 0: holder).
        flags: u8,
        /// MAC_A.
        mac: [u8; 32],
    },
    /// `t` 3, dialler → acceptor: the dialler's certificate, flags and signature.
    Sign {
        /// The dialler's certificate envelope.
        cert: Vec<u8>,
        /// Flags (bit 0: holder).
        flags: u8,
        /// SIG_D.
        sig: [u8; 64],
    },
    /// `t` 4, acceptor → dialler: the acceptor's signature.
    SignAck {
        /// SIG_A.
        sig: [u8; 64],
    },
    /// `t` 5 (tagged): the owner's publish record and its certificate (keys `rec`,
    /// `cert`), so a peer can verify who owns the snapshot without the tracker.
    Record {
        /// The publish record envelope (trust.md §4).
        record: Vec<u8>,
        /// The owner's certificate envelope (trust.md §3).
        cert: Vec<u8>,
    },
    /// `t` 6 (tagged): the sender's held statement (key `held`, trust.md §11.1).
    Held {
        /// The statement envelope.
        statement: Vec<u8>,
    },
    /// `t` 7 (tagged): a proof-of-possession challenge.
    Challenge {
        /// The checker's number for it.
        id: u32,
        /// 32 random bytes, present exactly for mode 1 (digest).
        nonce: Option<[u8; 32]>,
        /// The mode and entries (`mode`, `q`).
        entries: Challenge,
    },
    /// `t` 8 (tagged): answers to challenge `id`, the first one to entry `index` (`i`),
    /// the others to the entries after it, in order (key `a`).
    Response {
        /// The challenge's `id`.
        id: u32,
        /// Index in the challenge's entries of the first answer.
        index: u32,
        /// 1 to 4 block answers or 1 to 8 digest answers, all of one kind.
        answers: Vec<Answer>,
    },
    /// `t` 9 (tagged): the holder will not answer challenge `id`.
    Refuse {
        /// The challenge's `id`.
        id: u32,
        /// [`REFUSE_MISSING`] or [`REFUSE_BUSY`].
        why: u8,
        /// Seconds after which asking again may succeed.
        retry: Option<u32>,
    },
    /// `t` 10 (tagged): the checker's verdict on challenge `id`.
    Verdict {
        /// The challenge's `id`.
        id: u32,
        /// Whether every answer verified.
        ok: bool,
        /// Indices of the entries that failed (at most 64, each below 64).
        bad: Vec<u32>,
    },
    /// A type this version does not know (a later version's message).
    Unknown(i64),
}

/// Flag bit 0: the machine is a holder (a placement candidate).
pub const FLAG_HOLDER: u8 = 1;

fn bad(why: impl std::fmt::Display) -> ExtensionError {
    ExtensionError::Bencode(format!("sb_machine: {why}"))
}

fn as_u32(v: &Value<'_>) -> Option<u32> {
    v.as_int().and_then(|i| u32::try_from(i).ok())
}

/// The list's items as exactly `N` integers in `u32` range.
fn u32s<const N: usize>(v: &Value<'_>) -> Option<[u32; N]> {
    let l = v.as_list()?;
    if l.len() != N {
        return None;
    }
    let mut out = [0u32; N];
    for (o, item) in out.iter_mut().zip(l.iter()) {
        *o = as_u32(item)?;
    }
    Some(out)
}

/// A list of `1..=max` entries, each read by `entry`.
fn entries<T>(
    l: &List<'_>,
    max: usize,
    what: &str,
    entry: impl Fn(&Value<'_>) -> Option<T>,
) -> Result<Vec<T>, ExtensionError> {
    if l.is_empty() || l.len() > max {
        return Err(bad(format_args!(
            "{what} has {} entries (1 to {max})",
            l.len()
        )));
    }
    l.iter()
        .map(|v| entry(v).ok_or_else(|| bad(format_args!("a malformed entry in {what}"))))
        .collect()
}

fn block_answer(v: &Value<'_>) -> Option<Answer> {
    let l = v.as_list()?;
    let [data, path] = l.items() else {
        return None;
    };
    let (data, path) = (data.as_bytes()?, path.as_bytes()?);
    if data.len() > MAX_ANSWER_DATA || path.len() % 32 != 0 || path.len() > 32 * MAX_PATH_HASHES {
        return None;
    }
    Some(Answer::Block {
        data: data.to_vec(),
        path: path
            .chunks_exact(32)
            .filter_map(|h| h.try_into().ok())
            .collect(),
    })
}

fn digest_answer(v: &Value<'_>) -> Option<Answer> {
    v.as_bytes()?.try_into().ok().map(Answer::Digest)
}

impl MachineMessage {
    /// The message type (`t`).
    pub fn kind(&self) -> i64 {
        match self {
            MachineMessage::Member { .. } => 1,
            MachineMessage::MemberAck { .. } => 2,
            MachineMessage::Sign { .. } => 3,
            MachineMessage::SignAck { .. } => 4,
            MachineMessage::Record { .. } => 5,
            MachineMessage::Held { .. } => 6,
            MachineMessage::Challenge { .. } => 7,
            MachineMessage::Response { .. } => 8,
            MachineMessage::Refuse { .. } => 9,
            MachineMessage::Verdict { .. } => 10,
            MachineMessage::Unknown(t) => *t,
        }
    }

    /// The canonical bencoded dictionary: the whole payload of an untagged message
    /// (types 1–4), the part before the tag of a tagged one ([`Self::encode_tagged`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.begin_dict();
        match self {
            MachineMessage::Member { mac } => {
                e.key(b"mac").bytes(mac);
            }
            MachineMessage::MemberAck { cert, flags, mac } => {
                e.key(b"cert")
                    .bytes(cert)
                    .key(b"f")
                    .int(i64::from(*flags))
                    .key(b"mac")
                    .bytes(mac);
            }
            MachineMessage::Sign { cert, flags, sig } => {
                e.key(b"cert")
                    .bytes(cert)
                    .key(b"f")
                    .int(i64::from(*flags))
                    .key(b"sig")
                    .bytes(sig);
            }
            MachineMessage::SignAck { sig } => {
                e.key(b"sig").bytes(sig);
            }
            MachineMessage::Record { record, cert } => {
                e.key(b"cert").bytes(cert).key(b"rec").bytes(record);
            }
            MachineMessage::Held { statement } => {
                e.key(b"held").bytes(statement);
            }
            MachineMessage::Challenge { id, nonce, entries } => {
                e.key(b"id")
                    .int(i64::from(*id))
                    .key(b"mode")
                    .int(i64::from(entries.mode()));
                if let Some(n) = nonce {
                    e.key(b"nonce").bytes(n);
                }
                e.key(b"q").begin_list();
                match entries {
                    Challenge::Blocks(q) => {
                        for &(piece, block) in q {
                            e.begin_list()
                                .int(i64::from(piece))
                                .int(i64::from(block))
                                .end();
                        }
                    }
                    Challenge::Digest(q) => {
                        for &(piece, first, count) in q {
                            e.begin_list()
                                .int(i64::from(piece))
                                .int(i64::from(first))
                                .int(i64::from(count))
                                .end();
                        }
                    }
                }
                e.end();
            }
            MachineMessage::Response { id, index, answers } => {
                e.key(b"a").begin_list();
                for a in answers {
                    match a {
                        Answer::Block { data, path } => {
                            e.begin_list().bytes(data).bytes(&path.concat()).end();
                        }
                        Answer::Digest(d) => {
                            e.bytes(d);
                        }
                    }
                }
                e.end()
                    .key(b"i")
                    .int(i64::from(*index))
                    .key(b"id")
                    .int(i64::from(*id));
            }
            MachineMessage::Refuse { id, retry, .. } => {
                e.key(b"id").int(i64::from(*id));
                if let Some(r) = retry {
                    e.key(b"retry").int(i64::from(*r));
                }
            }
            MachineMessage::Verdict { id, ok, bad } => {
                if !bad.is_empty() {
                    e.key(b"bad").begin_list();
                    for &i in bad {
                        e.int(i64::from(i));
                    }
                    e.end();
                }
                e.key(b"id")
                    .int(i64::from(*id))
                    .key(b"ok")
                    .int(i64::from(*ok));
            }
            MachineMessage::Unknown(_) => {}
        }
        e.key(b"t").int(self.kind());
        if let MachineMessage::Refuse { why, .. } = self {
            e.key(b"why").int(i64::from(*why));
        }
        e.end();
        // Keys are written in sorted order and every container is closed.
        e.finish().unwrap_or_else(|_| b"de".to_vec())
    }

    /// The tagged payload: the dictionary ([`Self::encode`]), then the 16 bytes `tag`
    /// computes over it (the agent's `swarmbak_trust::tag` with its session key, side and
    /// counter).
    pub fn encode_tagged(&self, tag: impl FnOnce(&[u8]) -> [u8; TAG_LEN]) -> Vec<u8> {
        let mut out = self.encode();
        let t = tag(&out);
        out.extend_from_slice(&t);
        out
    }

    /// Splits a tagged payload into its dictionary and its tag, checking only the size
    /// (at most [`MAX_TAGGED_MESSAGE`], at least a tag and a 2-byte dictionary). Check
    /// the tag before [`Self::parse`]-ing the dictionary.
    pub fn split_tagged(payload: &[u8]) -> Result<(&[u8], [u8; TAG_LEN]), ExtensionError> {
        if payload.len() > MAX_TAGGED_MESSAGE || payload.len() < TAG_LEN + 2 {
            return Err(bad(format_args!(
                "a tagged message of {} bytes ({} to {MAX_TAGGED_MESSAGE})",
                payload.len(),
                TAG_LEN + 2
            )));
        }
        let (dict, tag) = payload.split_at(payload.len() - TAG_LEN);
        let tag = tag.try_into().map_err(|_| bad("no tag"))?;
        Ok((dict, tag))
    }

    /// Parses a message's dictionary: the whole payload of an untagged message, the
    /// dictionary [`Self::split_tagged`] returns of a tagged one. Unknown keys are
    /// ignored; a known type with a missing, wrong-sized or out-of-range field, too many
    /// or too few entries, a type 1–4 over [`MAX_MACHINE_MESSAGE`] or any dictionary over
    /// [`MAX_TAGGED_MESSAGE`] − [`TAG_LEN`], or one that is not a dictionary with an
    /// integer `t`, is an error.
    pub fn parse(payload: &[u8]) -> Result<MachineMessage, ExtensionError> {
        if payload.len() > MAX_TAGGED_MESSAGE - TAG_LEN {
            return Err(bad(format_args!(
                "a message of {} bytes (at most {})",
                payload.len(),
                MAX_TAGGED_MESSAGE - TAG_LEN
            )));
        }
        // Depth 4: the dictionary, a list (`q`, `a`), its entries (lists of integers or
        // of two strings). Items: a challenge of 64 entries has 2 + 3 × 64 values and
        // its 8 other keys and values.
        let limits = BencodeLimits {
            max_depth: 4,
            max_items: MAX_ITEMS,
        };
        let v = decode_with(payload, limits).map_err(|e| ExtensionError::Bencode(e.to_string()))?;
        let d = v
            .as_dict()
            .ok_or_else(|| ExtensionError::NotADict(v.type_name()))?;
        let field = |k: &str| -> Result<&[u8], ExtensionError> {
            d.get(k.as_bytes())
                .and_then(Value::as_bytes)
                .ok_or_else(|| bad(format_args!("no valid `{k}`")))
        };
        let fixed = |k: &str| -> Result<Vec<u8>, ExtensionError> { field(k).map(<[u8]>::to_vec) };
        let array = |k: &str, len: usize| -> Result<&[u8], ExtensionError> {
            field(k)
                .ok()
                .filter(|b| b.len() == len)
                .ok_or_else(|| bad(format_args!("`{k}` is {len} bytes")))
        };
        let mac = || -> Result<[u8; 32], ExtensionError> {
            array("mac", 32)?.try_into().map_err(|_| bad("`mac`"))
        };
        let sig = || -> Result<[u8; 64], ExtensionError> {
            array("sig", 64)?.try_into().map_err(|_| bad("`sig`"))
        };
        let flags = || -> Result<u8, ExtensionError> {
            d.get(b"f")
                .and_then(Value::as_int)
                .and_then(|f| u8::try_from(f).ok())
                .ok_or_else(|| bad("`f` is 0..=255"))
        };
        let int_in =
            |k: &str, range: std::ops::RangeInclusive<i64>| -> Result<i64, ExtensionError> {
                d.get(k.as_bytes())
                    .and_then(Value::as_int)
                    .filter(|i| range.contains(i))
                    .ok_or_else(|| bad(format_args!("`{k}` is an integer in {range:?}")))
            };
        let u32_of = |k: &str| -> Result<u32, ExtensionError> {
            d.get(k.as_bytes())
                .and_then(as_u32)
                .ok_or_else(|| bad(format_args!("`{k}` is an integer in 0..=4294967295")))
        };
        let opt_u32 = |k: &str| -> Result<Option<u32>, ExtensionError> {
            match d.get(k.as_bytes()) {
                None => Ok(None),
                Some(_) => u32_of(k).map(Some),
            }
        };
        let list = |k: &str| -> Result<&List<'_>, ExtensionError> {
            d.get(k.as_bytes())
                .and_then(Value::as_list)
                .ok_or_else(|| bad(format_args!("no valid `{k}` list")))
        };
        let t = d
            .get(b"t")
            .and_then(Value::as_int)
            .ok_or_else(|| bad("no integer `t`"))?;
        if (1..=4).contains(&t) && payload.len() > MAX_MACHINE_MESSAGE {
            return Err(bad(format_args!(
                "a message of type {t} of {} bytes (at most {MAX_MACHINE_MESSAGE})",
                payload.len()
            )));
        }
        Ok(match t {
            1 => MachineMessage::Member { mac: mac()? },
            2 => MachineMessage::MemberAck {
                cert: fixed("cert")?,
                flags: flags()?,
                mac: mac()?,
            },
            3 => MachineMessage::Sign {
                cert: fixed("cert")?,
                flags: flags()?,
                sig: sig()?,
            },
            4 => MachineMessage::SignAck { sig: sig()? },
            5 => MachineMessage::Record {
                record: fixed("rec")?,
                cert: fixed("cert")?,
            },
            6 => MachineMessage::Held {
                statement: fixed("held")?,
            },
            7 => {
                let id = u32_of("id")?;
                let mode = int_in("mode", 0..=1)?;
                let nonce = match d.get(b"nonce") {
                    None => None,
                    Some(_) => Some(array("nonce", 32)?.try_into().map_err(|_| bad("`nonce`"))?),
                };
                let q = list("q")?;
                let entries = if mode == 0 {
                    if nonce.is_some() {
                        return Err(bad("a mode-0 challenge has no `nonce`"));
                    }
                    Challenge::Blocks(entries(q, MAX_BLOCK_ENTRIES, "`q`", |v| {
                        u32s::<2>(v).map(|[p, b]| (p, b))
                    })?)
                } else {
                    if nonce.is_none() {
                        return Err(bad("a mode-1 challenge needs a 32-byte `nonce`"));
                    }
                    Challenge::Digest(entries(q, MAX_DIGEST_ENTRIES, "`q`", |v| {
                        u32s::<3>(v)
                            .filter(|&[_, first, count]| {
                                (1..=MAX_DIGEST_BLOCKS).contains(&count)
                                    && first.checked_add(count).is_some()
                            })
                            .map(|[p, f, c]| (p, f, c))
                    })?)
                };
                MachineMessage::Challenge { id, nonce, entries }
            }
            8 => {
                let id = u32_of("id")?;
                let index = u32_of("i")?;
                let a = list("a")?;
                let answers = match a.get(0) {
                    Some(Value::Bytes(_)) => entries(a, MAX_DIGEST_ANSWERS, "`a`", digest_answer)?,
                    _ => entries(a, MAX_BLOCK_ANSWERS, "`a`", block_answer)?,
                };
                if u64::from(index) + answers.len() as u64 > MAX_BLOCK_ENTRIES as u64 {
                    return Err(bad(format_args!(
                        "answers {index}.. past the {MAX_BLOCK_ENTRIES} entries a challenge has at most"
                    )));
                }
                MachineMessage::Response { id, index, answers }
            }
            9 => MachineMessage::Refuse {
                id: u32_of("id")?,
                why: u8::try_from(int_in("why", 1..=2)?).map_err(|_| bad("`why`"))?,
                retry: opt_u32("retry")?,
            },
            10 => {
                let bad_entries = match d.get(b"bad") {
                    None => Vec::new(),
                    Some(_) => {
                        let l = list("bad")?;
                        if l.len() > MAX_BLOCK_ENTRIES {
                            return Err(bad(format_args!(
                                "`bad` has {} entries (at most {MAX_BLOCK_ENTRIES})",
                                l.len()
                            )));
                        }
                        l.iter()
                            .map(|v| {
                                as_u32(v)
                                    .filter(|&i| (i as usize) < MAX_BLOCK_ENTRIES)
                                    .ok_or_else(|| bad("`bad` lists entry indices below 64"))
                            })
                            .collect::<Result<_, _>>()?
                    }
                };
                MachineMessage::Verdict {
                    id: u32_of("id")?,
                    ok: int_in("ok", 0..=1)? == 1,
                    bad: bad_entries,
                }
            }
            other => MachineMessage::Unknown(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(n: usize) -> Challenge {
        Challenge::Blocks((0..n as u32).map(|i| (i, i % 4)).collect())
    }

    fn block(len: usize, hashes: usize) -> Answer {
        Answer::Block {
            data: vec![7; len],
            path: vec![[9; 32]; hashes],
        }
    }

    fn all() -> Vec<MachineMessage> {
        vec![
            MachineMessage::Member { mac: [1; 32] },
            MachineMessage::MemberAck {
                cert: b"cert".to_vec(),
                flags: 1,
                mac: [2; 32],
            },
            MachineMessage::Sign {
                cert: b"c".to_vec(),
                flags: 0,
                sig: [3; 64],
            },
            MachineMessage::SignAck { sig: [4; 64] },
            MachineMessage::Record {
                record: b"record".to_vec(),
                cert: b"certificate".to_vec(),
            },
            MachineMessage::Held {
                statement: vec![0; 50_000],
            },
            MachineMessage::Challenge {
                id: u32::MAX,
                nonce: None,
                entries: blocks(MAX_BLOCK_ENTRIES),
            },
            MachineMessage::Challenge {
                id: 0,
                nonce: Some([5; 32]),
                entries: Challenge::Digest(vec![(u32::MAX, 0, 64); MAX_DIGEST_ENTRIES]),
            },
            MachineMessage::Response {
                id: 1,
                index: 60,
                answers: vec![block(MAX_ANSWER_DATA, MAX_PATH_HASHES); MAX_BLOCK_ANSWERS],
            },
            MachineMessage::Response {
                id: 1,
                index: 0,
                answers: vec![block(0, 0)],
            },
            MachineMessage::Response {
                id: 2,
                index: 56,
                answers: vec![Answer::Digest([6; 32]); MAX_DIGEST_ANSWERS],
            },
            MachineMessage::Refuse {
                id: 3,
                why: REFUSE_MISSING,
                retry: None,
            },
            MachineMessage::Refuse {
                id: 3,
                why: REFUSE_BUSY,
                retry: Some(u32::MAX),
            },
            MachineMessage::Verdict {
                id: 4,
                ok: true,
                bad: vec![],
            },
            MachineMessage::Verdict {
                id: 4,
                ok: false,
                bad: (0..64).collect(),
            },
        ]
    }

    #[test]
    fn round_trips_and_is_canonical() {
        for m in all() {
            let dict = m.encode();
            assert_eq!(MachineMessage::parse(&dict), Ok(m.clone()), "{}", m.kind());
            let tagged = m.encode_tagged(|d| {
                assert_eq!(d, &dict[..]);
                [0xee; 16]
            });
            if m.kind() >= 5 {
                let (d, tag) = MachineMessage::split_tagged(&tagged).unwrap();
                assert_eq!((d, tag), (&dict[..], [0xee; 16]));
                assert_eq!(MachineMessage::parse(d), Ok(m.clone()));
            }
        }
        let member = MachineMessage::Member { mac: [0xab; 32] }.encode();
        let mut want = b"d3:mac32:".to_vec();
        want.extend([0xab; 32]);
        want.extend(b"1:ti1ee");
        assert_eq!(member, want);
        for (payload, t) in [
            (&b"d1:ti99e5:extrai1ee"[..], 99),
            (b"d1:ti11ee", 11),
            (b"d1:ti0ee", 0),
        ] {
            assert_eq!(
                MachineMessage::parse(payload),
                Ok(MachineMessage::Unknown(t))
            );
        }
        // Unknown keys are ignored.
        assert_eq!(
            MachineMessage::parse(b"d2:idi3e1:xi5e1:ti9e3:whyi1ee"),
            Ok(MachineMessage::Refuse {
                id: 3,
                why: 1,
                retry: None
            })
        );
    }

    #[test]
    fn wrong_sizes_and_shapes_are_errors() {
        for bad in [
            &b"d3:mac31:01234567890123456789012345678901:ti1ee"[..],
            b"d1:ti4ee",
            b"d1:ti2e3:mac32:01234567890123456789012345678901e",
            b"le",
            b"d3:mac32:01234567890123456789012345678901e",
            b"d4:cert1:x1:fi256e3:mac32:012345678901234567890123456789011:ti2ee",
        ] {
            assert!(MachineMessage::parse(bad).is_err(), "{bad:?}");
        }
        let huge = vec![b'x'; MAX_TAGGED_MESSAGE];
        assert!(MachineMessage::parse(&huge).is_err());
        // Types 1-4 stay at most 4 KiB; the tagged types may be larger.
        let big_cert = MachineMessage::MemberAck {
            cert: vec![0; MAX_MACHINE_MESSAGE],
            flags: 0,
            mac: [0; 32],
        };
        assert!(MachineMessage::parse(&big_cert.encode()).is_err());
        let held = |n| MachineMessage::Held {
            statement: vec![0; n],
        };
        let fits = MAX_TAGGED_MESSAGE - TAG_LEN - b"d4:held98277:1:ti6ee".len();
        assert_eq!(held(fits).encode().len(), MAX_TAGGED_MESSAGE - TAG_LEN);
        assert_eq!(MachineMessage::parse(&held(fits).encode()), Ok(held(fits)));
        assert!(MachineMessage::parse(&held(fits + 1).encode()).is_err());
    }

    /// Every limit of types 5-10, one at a time: each variant is an error.
    #[test]
    fn every_limit_is_enforced() {
        let n32 = format!("32:{}", "n".repeat(32));
        let d32 = format!("32:{}", "d".repeat(32));
        let list = |n: usize, item: &str| format!("l{}e", item.repeat(n));
        let ok = [
            "d4:cert1:c3:rec1:r1:ti5ee".to_owned(),
            "d4:held1:h1:ti6ee".to_owned(),
            format!("d2:idi1e4:modei0e1:q{}1:ti7ee", list(64, "li1ei2ee")),
            format!(
                "d2:idi1e4:modei1e5:nonce{n32}1:q{}1:ti7ee",
                list(8, "li1ei2ei64ee")
            ),
            format!("d1:a{}1:ii0e2:idi1e1:ti8ee", list(4, "l1:x0:e")),
            format!("d1:a{}1:ii56e2:idi1e1:ti8ee", list(8, &d32)),
            "d2:idi4294967295e5:retryi4294967295e1:ti9e3:whyi2ee".to_owned(),
            format!("d3:bad{}2:idi1e2:oki0e1:ti10ee", list(64, "i63e")),
        ];
        for m in &ok {
            assert!(MachineMessage::parse(m.as_bytes()).is_ok(), "{m}");
        }
        let bad = [
            // record, held: missing or not strings
            "d4:cert1:c1:ti5ee".to_owned(),
            "d3:rec1:r1:ti5ee".to_owned(),
            "d4:certi1e3:rec1:r1:ti5ee".to_owned(),
            "d1:ti6ee".to_owned(),
            "d4:heldle1:ti6ee".to_owned(),
            // challenge: counts
            format!("d2:idi1e4:modei0e1:q{}1:ti7ee", list(65, "li1ei2ee")),
            "d2:idi1e4:modei0e1:qle1:ti7ee".to_owned(),
            format!(
                "d2:idi1e4:modei1e5:nonce{n32}1:q{}1:ti7ee",
                list(9, "li1ei2ei1ee")
            ),
            format!("d2:idi1e4:modei1e5:nonce{n32}1:qle1:ti7ee"),
            // challenge: entry shapes and ranges
            "d2:idi1e4:modei0e1:qli1ee1:ti7ee".to_owned(),
            "d2:idi1e4:modei0e1:qlli1eee1:ti7ee".to_owned(),
            "d2:idi1e4:modei0e1:qlli1ei2ei3eee1:ti7ee".to_owned(),
            "d2:idi1e4:modei0e1:qlli-1ei2eee1:ti7ee".to_owned(),
            "d2:idi1e4:modei0e1:qlli4294967296ei2eee1:ti7ee".to_owned(),
            "d2:idi1e4:modei0e1:qll1:xi2eee1:ti7ee".to_owned(),
            format!("d2:idi1e4:modei1e5:nonce{n32}1:qlli1ei2eee1:ti7ee"),
            format!("d2:idi1e4:modei1e5:nonce{n32}1:qlli1ei2ei0eee1:ti7ee"),
            format!("d2:idi1e4:modei1e5:nonce{n32}1:qlli1ei2ei65eee1:ti7ee"),
            format!("d2:idi1e4:modei1e5:nonce{n32}1:qlli1ei4294967295ei2eee1:ti7ee"),
            // challenge: mode, nonce, id
            "d2:idi1e4:modei2e1:qlli1ei2eee1:ti7ee".to_owned(),
            "d2:idi1e1:qlli1ei2eee1:ti7ee".to_owned(),
            format!("d2:idi1e4:modei0e5:nonce{n32}1:qlli1ei2eee1:ti7ee"),
            "d2:idi1e4:modei1e1:qlli1ei2ei1eee1:ti7ee".to_owned(),
            "d2:idi1e4:modei1e5:nonce31:nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn1:qlli1ei2ei1eee1:ti7ee"
                .to_owned(),
            "d2:idi-1e4:modei0e1:qlli1ei2eee1:ti7ee".to_owned(),
            "d4:modei0e1:qlli1ei2eee1:ti7ee".to_owned(),
            "d2:idi1e4:modei0e1:q0:1:ti7ee".to_owned(),
            // response: counts, shapes, sizes
            format!("d1:a{}1:ii0e2:idi1e1:ti8ee", list(5, "l1:x0:e")),
            format!("d1:a{}1:ii0e2:idi1e1:ti8ee", list(9, &d32)),
            "d1:ale1:ii0e2:idi1e1:ti8ee".to_owned(),
            format!("d1:al{d32}l1:x0:ee1:ii0e2:idi1e1:ti8ee"),
            format!("d1:all1:x0:e{d32}e1:ii0e2:idi1e1:ti8ee"),
            "d1:al31:ddddddddddddddddddddddddddddddde1:ii0e2:idi1e1:ti8ee".to_owned(),
            "d1:all1:xee1:ii0e2:idi1e1:ti8ee".to_owned(),
            "d1:all1:x0:0:ee1:ii0e2:idi1e1:ti8ee".to_owned(),
            "d1:all1:x1:pee1:ii0e2:idi1e1:ti8ee".to_owned(),
            format!(
                "d1:all1:x{}:{}ee1:ii0e2:idi1e1:ti8ee",
                32 * 17,
                "p".repeat(32 * 17)
            ),
            format!("d1:all16385:{}0:ee1:ii0e2:idi1e1:ti8ee", "x".repeat(16385)),
            "d1:alli1e0:ee1:ii0e2:idi1e1:ti8ee".to_owned(),
            format!("d1:a{}1:ii57e2:idi1e1:ti8ee", list(8, &d32)),
            format!("d1:a{}1:ii4294967295e2:idi1e1:ti8ee", list(1, &d32)),
            format!("d1:a{}2:idi1e1:ti8ee", list(1, &d32)),
            format!("d1:a{}1:ii0e1:ti8ee", list(1, &d32)),
            // refuse
            "d2:idi1e1:ti9e3:whyi0ee".to_owned(),
            "d2:idi1e1:ti9e3:whyi3ee".to_owned(),
            "d2:idi1e1:ti9ee".to_owned(),
            "d2:idi1e5:retryi-1e1:ti9e3:whyi2ee".to_owned(),
            "d2:idi1e5:retry1:x1:ti9e3:whyi2ee".to_owned(),
            "d1:ti9e3:whyi2ee".to_owned(),
            // verdict
            format!("d3:bad{}2:idi1e2:oki0e1:ti10ee", list(65, "i1e")),
            "d3:badli64ee2:idi1e2:oki0e1:ti10ee".to_owned(),
            "d3:badli-1ee2:idi1e2:oki0e1:ti10ee".to_owned(),
            "d3:badi1e2:idi1e2:oki0e1:ti10ee".to_owned(),
            "d2:idi1e2:oki2e1:ti10ee".to_owned(),
            "d2:idi1e1:ti10ee".to_owned(),
            "d2:oki1e1:ti10ee".to_owned(),
        ];
        for m in &bad {
            assert!(MachineMessage::parse(m.as_bytes()).is_err(), "{m}");
        }
    }

    #[test]
    fn tagged_split_limits() {
        assert!(MachineMessage::split_tagged(&[]).is_err());
        assert!(MachineMessage::split_tagged(&[0; TAG_LEN + 1]).is_err());
        let (d, t) = MachineMessage::split_tagged(b"de0123456789abcdef").unwrap();
        assert_eq!((d, &t), (&b"de"[..], b"0123456789abcdef"));
        assert!(MachineMessage::split_tagged(&vec![0; MAX_TAGGED_MESSAGE]).is_ok());
        assert!(MachineMessage::split_tagged(&vec![0; MAX_TAGGED_MESSAGE + 1]).is_err());
        // The largest response fits a tagged message.
        let biggest = MachineMessage::Response {
            id: u32::MAX,
            index: 0,
            answers: vec![block(MAX_ANSWER_DATA, MAX_PATH_HASHES); MAX_BLOCK_ANSWERS],
        };
        assert_eq!(biggest.encode().len(), 67_667, "wire.md says so");
        assert!(biggest.encode().len() + TAG_LEN <= MAX_TAGGED_MESSAGE);
    }
}
