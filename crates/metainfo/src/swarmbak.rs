//! swarmbak's keys inside the info dictionary.

use swarmbak_bencode::{OwnedValue, Value};

use crate::error::MetainfoError;

/// The newest `swarmbak` format version this build reads and writes (it reads every
/// version from 1 up to this one: protocol-spec/format-v2.md).
pub const SWARMBAK_FORMAT: u32 = 2;

/// The `swarmbak` dictionary of a swarmbak torrent's info dictionary:
///
/// ```text
/// "swarmbak": { "format": 1 or 2, "k": <int>, "m": <int>, "stripes": <int>,
///               "payload length": <int>, "manifest offset": <int>,
///               "manifest length": <int>, "id": <16 raw bytes>,
///               "roots": <32 bytes per piece, format 2 only> }
/// ```
///
/// The torrent's data is `stripes` stripes of `k` data shards then `m` parity shards,
/// one shard per piece, so it has `stripes * (k + m)` pieces, and it is a single file of
/// exactly that many whole pieces. The first `payload length` bytes of the data shards
/// (taken in order) are the encrypted payload; the manifest is at `manifest offset`,
/// `manifest length` bytes long, inside it.
///
/// On parsing: every key is required and must be a non-negative integer in range (`id`
/// a 16-byte string); `format` above [`SWARMBAK_FORMAT`] is refused with a message
/// asking for an upgrade; `k >= 1`, `m >= 1`, `k + m <= 256`, the piece count, the payload and
/// manifest bounds and the single whole-piece file are checked. Format 2 MUST have
/// `roots`, a string of exactly 32 × pieces bytes (the Merkle root of each piece,
/// `swarmbak_core::merkle`); format 1 ignores a `roots` key (never trusted: `None`).
/// Unknown keys are ignored. The builder refuses format 2 without `roots` of one root per
/// piece, and format 1 with `roots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmbakParams {
    /// Format version (1 or 2).
    pub format: u32,
    /// Data shards per stripe.
    pub k: u16,
    /// Parity shards per stripe.
    pub m: u16,
    /// Number of stripes.
    pub stripes: u64,
    /// Bytes of encrypted payload in the data shards.
    pub payload_length: u64,
    /// Where the manifest starts in the payload.
    pub manifest_offset: u64,
    /// Manifest length.
    pub manifest_length: u64,
    /// The backup's random identifier.
    pub id: [u8; 16],
    /// The Merkle root of each piece, in piece order (format 2; always `None` for
    /// format 1, whatever its dictionary holds).
    pub roots: Option<Vec<[u8; 32]>>,
}

fn int_in<T: TryFrom<i64>>(d: &swarmbak_bencode::Dict<'_>, key: &str) -> Result<T, MetainfoError> {
    let bad = |what: String| MetainfoError::BadSwarmbak(format!("`{key}` {what}"));
    match d.get(key.as_bytes()) {
        None => Err(bad("is missing".into())),
        Some(Value::Int(n)) => {
            if *n < 0 {
                return Err(bad(format!("is negative ({n})")));
            }
            T::try_from(*n).map_err(|_| bad(format!("is too large ({n})")))
        }
        Some(v) => Err(bad(format!("is a {}, not an integer", v.type_name()))),
    }
}

impl SwarmbakParams {
    pub(crate) fn parse(
        v: &Value<'_>,
        multi_file: bool,
        piece_length: u64,
        total_length: u64,
        pieces: u64,
    ) -> Result<SwarmbakParams, MetainfoError> {
        let bad = |s: String| MetainfoError::BadSwarmbak(s);
        let d = v.as_dict().ok_or_else(|| {
            bad(format!(
                "`swarmbak` is a {}, not a dictionary",
                v.type_name()
            ))
        })?;
        let format = match d.get(b"format") {
            Some(Value::Int(n)) if *n > i64::from(SWARMBAK_FORMAT) => {
                return Err(MetainfoError::NewerSwarmbakFormat {
                    found: *n,
                    known: SWARMBAK_FORMAT,
                })
            }
            Some(Value::Int(n)) if *n >= 1 => *n as u32,
            Some(Value::Int(n)) => return Err(bad(format!("`format` {n} is not a valid version"))),
            Some(v) => {
                return Err(bad(format!(
                    "`format` is a {}, not an integer",
                    v.type_name()
                )))
            }
            None => return Err(bad("`format` is missing".into())),
        };
        let id = match d.get(b"id") {
            Some(Value::Bytes(b)) => <[u8; 16]>::try_from(*b)
                .map_err(|_| bad(format!("`id` is {} bytes, not 16", b.len())))?,
            Some(v) => return Err(bad(format!("`id` is a {}, not a string", v.type_name()))),
            None => return Err(bad("`id` is missing".into())),
        };
        let roots = if format >= 2 {
            Some(parse_roots(d.get(b"roots"), pieces)?)
        } else {
            None
        };
        let p = SwarmbakParams {
            format,
            k: int_in(d, "k")?,
            m: int_in(d, "m")?,
            stripes: int_in(d, "stripes")?,
            payload_length: int_in(d, "payload length")?,
            manifest_offset: int_in(d, "manifest offset")?,
            manifest_length: int_in(d, "manifest length")?,
            id,
            roots,
        };
        p.check(multi_file, piece_length, total_length, pieces)?;
        Ok(p)
    }

    /// The consistency rules, shared by the parser and the builder.
    pub(crate) fn check(
        &self,
        multi_file: bool,
        piece_length: u64,
        total_length: u64,
        pieces: u64,
    ) -> Result<(), MetainfoError> {
        let bad = |s: String| Err(MetainfoError::BadSwarmbak(s));
        let (k, m) = (u64::from(self.k), u64::from(self.m));
        if k == 0 {
            return bad("`k` is 0; a stripe needs at least one data shard".into());
        }
        if m == 0 {
            return bad("`m` is 0; a stripe needs at least one parity shard".into());
        }
        if k + m > 256 {
            return bad(format!(
                "`k` + `m` is {}; at most 256 shards per stripe",
                k + m
            ));
        }
        if multi_file {
            return bad("a swarmbak torrent must be a single file".into());
        }
        if self.stripes.checked_mul(k + m) != Some(pieces) {
            return bad(format!(
                "{} stripes of {} shards make {} pieces, but the torrent has {pieces}",
                self.stripes,
                k + m,
                self.stripes.saturating_mul(k + m)
            ));
        }
        if pieces.checked_mul(piece_length) != Some(total_length) {
            return bad(format!(
                "the torrent is {total_length} bytes, not {pieces} whole pieces of {piece_length} bytes"
            ));
        }
        // Cannot overflow: stripes * k <= pieces, and pieces * piece_length fits.
        let capacity = self.stripes * k * piece_length;
        if self.payload_length > capacity {
            return bad(format!(
                "`payload length` {} is more than the {capacity} bytes the data shards hold",
                self.payload_length
            ));
        }
        match self.manifest_offset.checked_add(self.manifest_length) {
            Some(end) if end <= self.payload_length => {}
            _ => {
                return bad(format!(
                    "the manifest ({} bytes at offset {}) does not lie within the {}-byte payload",
                    self.manifest_length, self.manifest_offset, self.payload_length
                ))
            }
        }
        match (self.format, &self.roots) {
            (1, None) => Ok(()),
            (1, Some(_)) => {
                bad("format 1 has no `roots` (a format 1 reader would ignore them)".into())
            }
            (_, None) => bad(format!(
                "format {} must have `roots` (one Merkle root per piece)",
                self.format
            )),
            (_, Some(r)) if r.len() as u64 != pieces => bad(format!(
                "`roots` holds {} roots, but the torrent has {pieces} pieces",
                r.len()
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn to_value(&self) -> OwnedValue {
        OwnedValue::dict()
            .with("format", self.format)
            .with("k", self.k)
            .with("m", self.m)
            .with("stripes", clamp(self.stripes))
            .with("payload length", clamp(self.payload_length))
            .with("manifest offset", clamp(self.manifest_offset))
            .with("manifest length", clamp(self.manifest_length))
            .with("id", self.id)
            .with_opt("roots", self.roots.as_ref().map(|r| r.concat()))
            .build()
    }
}

/// `roots` of a format 2 torrent: a string of exactly 32 bytes per piece.
fn parse_roots(v: Option<&Value<'_>>, pieces: u64) -> Result<Vec<[u8; 32]>, MetainfoError> {
    let bad = |s: String| Err(MetainfoError::BadSwarmbak(s));
    let b = match v {
        Some(Value::Bytes(b)) => *b,
        Some(v) => return bad(format!("`roots` is a {}, not a string", v.type_name())),
        None => return bad("`roots` is missing; format 2 requires a Merkle root per piece".into()),
    };
    if pieces.checked_mul(32) != Some(b.len() as u64) {
        return bad(format!(
            "`roots` is {} bytes, not 32 per piece ({pieces} pieces: {} bytes)",
            b.len(),
            pieces.saturating_mul(32)
        ));
    }
    Ok(b.chunks_exact(32)
        .map(|c| {
            let mut r = [0u8; 32];
            r.copy_from_slice(c);
            r
        })
        .collect())
}

/// Values above `i64::MAX` cannot be bencoded; they fail the checks anyway.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
