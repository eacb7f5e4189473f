//! The signed objects (protocol-spec/trust.md §3–§6) and the enrolment token (§7).

use swarmbak_bencode::Encoder;

use crate::{from_b64, open, sha256, to_b64, Fields, Kind, PublicKey, SigningKey, TrustError};

pub(crate) fn finish(e: Encoder) -> Vec<u8> {
    // The encoder only fails on unbalanced begin/end, which the code below never has.
    e.finish().unwrap_or_default()
}

/// What the organisation vouches for in a [`Certificate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFields {
    /// The machine's signing key: its identity.
    pub machine: PublicKey,
    /// The machine's age recipient (`age1…`), to which its backups are encrypted.
    pub age_recipient: String,
    /// The enrolled name (unique among active machines).
    pub name: String,
    /// Who uses it.
    pub user: Option<String>,
    /// A VIP machine.
    pub vip: bool,
    /// `SITE/ROOM`.
    pub domain: Option<String>,
    /// Issued at, Unix seconds.
    pub issued: i64,
    /// Expires at, Unix seconds (`None`: never).
    pub expires: Option<i64>,
}

/// A machine certificate: [`CertificateFields`] signed by the organisation key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// What it says.
    pub fields: CertificateFields,
    /// The organisation key that signed it.
    pub org: PublicKey,
}

impl Certificate {
    /// The body's bytes (canonical bencode; keys in order).
    fn body(f: &CertificateFields, org: &PublicKey) -> Vec<u8> {
        let mut e = Encoder::with_capacity(256);
        e.begin_dict().key(b"age").str(&f.age_recipient);
        if let Some(d) = &f.domain {
            e.key(b"domain").str(d);
        }
        if let Some(x) = f.expires {
            e.key(b"expires").int(x);
        }
        e.key(b"issued")
            .int(f.issued)
            .key(b"key")
            .bytes(f.machine.as_bytes())
            .key(b"name")
            .str(&f.name)
            .key(b"org")
            .bytes(org.as_bytes());
        if let Some(u) = &f.user {
            e.key(b"user").str(u);
        }
        e.key(b"vip").int(i64::from(f.vip)).end();
        finish(e)
    }

    /// Signs a certificate with the organisation key.
    pub fn issue(org: &SigningKey, fields: &CertificateFields) -> Vec<u8> {
        org.sign(Kind::Certificate, &Certificate::body(fields, &org.public()))
    }

    /// Checks the signature by `org` and reads the certificate. Does not check the time
    /// (see [`Certificate::valid_at`]).
    pub fn verify(bytes: &[u8], org: &PublicKey) -> Result<Certificate, TrustError> {
        let body = open(bytes, Kind::Certificate, org)?;
        let c = Certificate::parse_body(body)?;
        if c.org != *org {
            return Err(TrustError::Mismatch(
                "the certificate names another organisation key than the one that signed it".into(),
            ));
        }
        Ok(c)
    }

    /// Reads a certificate without checking its signature (to show what it claims).
    pub fn parse_unverified(bytes: &[u8]) -> Result<Certificate, TrustError> {
        Certificate::parse_body(crate::split(bytes)?.0)
    }

    fn parse_body(body: &[u8]) -> Result<Certificate, TrustError> {
        let f = Fields::parse(body, "certificate")?;
        Ok(Certificate {
            fields: CertificateFields {
                machine: f.key("key")?,
                age_recipient: f.text("age")?,
                name: f.text("name")?,
                user: f.opt_text("user")?,
                vip: f.int("vip")? != 0,
                domain: f.opt_text("domain")?,
                issued: f.int("issued")?,
                expires: f.opt_int("expires")?,
            },
            org: f.key("org")?,
        })
    }

    /// Is the certificate valid at `t` (Unix seconds)? It is from `issued` minus a day
    /// (clocks differ) until `expires`.
    pub fn valid_at(&self, t: i64) -> Result<(), TrustError> {
        if let Some(x) = self.fields.expires {
            if t > x {
                return Err(TrustError::Expired {
                    name: self.fields.name.clone(),
                    expires: x,
                });
            }
        }
        if t < self.fields.issued.saturating_sub(86_400) {
            return Err(TrustError::Mismatch(format!(
                "a record dated {t} predates the certificate of {} (issued {})",
                self.fields.name, self.fields.issued
            )));
        }
        Ok(())
    }
}

/// A machine's statement that it published a snapshot, signed with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRecord {
    /// The snapshot's torrent info-hash.
    pub infohash: [u8; 20],
    /// The owner machine (the signer).
    pub machine: PublicKey,
    /// The snapshot's target copy count.
    pub copies: u32,
    /// When the machine published it, Unix seconds (its clock).
    pub published: i64,
}

impl PublishRecord {
    fn body(&self) -> Vec<u8> {
        let mut e = Encoder::with_capacity(128);
        e.begin_dict()
            .key(b"copies")
            .int(i64::from(self.copies))
            .key(b"infohash")
            .bytes(&self.infohash)
            .key(b"key")
            .bytes(self.machine.as_bytes())
            .key(b"published")
            .int(self.published)
            .end();
        finish(e)
    }

    /// Signs the record with the machine's key (which must be `self.machine`).
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        key.sign(Kind::Publish, &self.body())
    }

    /// Reads a record and checks it is signed by `machine`.
    pub fn verify(bytes: &[u8], machine: &PublicKey) -> Result<PublishRecord, TrustError> {
        open_machine_signed(
            bytes,
            Kind::Publish,
            machine,
            PublishRecord::parse_body,
            |r| &r.machine,
        )
    }

    /// Reads a record without checking its signature.
    pub fn parse_unverified(bytes: &[u8]) -> Result<PublishRecord, TrustError> {
        PublishRecord::parse_body(crate::split(bytes)?.0)
    }

    fn parse_body(body: &[u8]) -> Result<PublishRecord, TrustError> {
        let f = Fields::parse(body, "publish record")?;
        let copies = f.int("copies")?;
        Ok(PublishRecord {
            infohash: f.array("infohash")?,
            machine: f.key("key")?,
            copies: u32::try_from(copies)
                .ok()
                .filter(|c| (1..=64).contains(c))
                .ok_or_else(|| TrustError::Malformed(format!("copies {copies} is not 1..=64")))?,
            published: f.int("published")?,
        })
    }
}

/// The whole chain of a published snapshot: `cert` is signed by `org`, `record` by the
/// certificate's machine, the record is for `infohash`, and the certificate was valid
/// when the record says it was made. Returns both, verified.
pub fn verify_publish(
    record: &[u8],
    cert: &[u8],
    org: &PublicKey,
    infohash: &[u8; 20],
) -> Result<(Certificate, PublishRecord), TrustError> {
    let c = Certificate::verify(cert, org)?;
    let r = PublishRecord::verify(record, &c.fields.machine)?;
    if r.infohash != *infohash {
        return Err(TrustError::Mismatch(format!(
            "the publish record is for {}, not {}",
            hex::encode(r.infohash),
            hex::encode(infohash)
        )));
    }
    c.valid_at(r.published)?;
    Ok((c, r))
}

/// The organisation's statement that a machine is shut out, signed by the organisation
/// key: peers and the DHT refuse the machine's key from then on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The revoked machine's key.
    pub machine: PublicKey,
    /// Its enrolled name.
    pub name: String,
    /// When it was revoked, Unix seconds.
    pub revoked: i64,
    /// The organisation key.
    pub org: PublicKey,
}

impl Revocation {
    /// Signs a revocation with the organisation key.
    pub fn issue(org: &SigningKey, machine: PublicKey, name: &str, revoked: i64) -> Vec<u8> {
        let mut e = Encoder::with_capacity(160);
        e.begin_dict()
            .key(b"key")
            .bytes(machine.as_bytes())
            .key(b"name")
            .str(name)
            .key(b"org")
            .bytes(org.public().as_bytes())
            .key(b"revoked")
            .int(revoked)
            .end();
        org.sign(Kind::Revocation, &finish(e))
    }

    /// Reads a revocation and checks it is signed by `org`.
    pub fn verify(bytes: &[u8], org: &PublicKey) -> Result<Revocation, TrustError> {
        let f = Fields::parse(open(bytes, Kind::Revocation, org)?, "revocation")?;
        let r = Revocation {
            machine: f.key("key")?,
            name: f.text("name")?,
            revoked: f.int("revoked")?,
            org: f.key("org")?,
        };
        if r.org != *org {
            return Err(TrustError::Mismatch(
                "the revocation names another organisation key than the one that signed it".into(),
            ));
        }
        Ok(r)
    }
}

/// What a machine sends to enrol: its keys and the token's secret, signed with the key
/// it enrols (so it proves it holds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollRequest {
    /// The machine's signing key.
    pub machine: PublicKey,
    /// The machine's age recipient.
    pub age_recipient: String,
    /// The token's secret.
    pub secret: [u8; 32],
}

impl EnrollRequest {
    /// Signs the request with the machine's key (`self.machine` is its public half).
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        let mut e = Encoder::with_capacity(160);
        e.begin_dict()
            .key(b"age")
            .str(&self.age_recipient)
            .key(b"key")
            .bytes(self.machine.as_bytes())
            .key(b"secret")
            .bytes(&self.secret)
            .end();
        key.sign(Kind::Enroll, &finish(e))
    }

    /// Reads a request and checks it is signed by the key it names.
    pub fn verify(bytes: &[u8]) -> Result<EnrollRequest, TrustError> {
        let (body, _) = crate::split(bytes)?;
        let f = Fields::parse(body, "enrolment request")?;
        let machine = f.key("key")?;
        open(bytes, Kind::Enroll, &machine)?;
        Ok(EnrollRequest {
            machine,
            age_recipient: f.text("age")?,
            secret: f.array("secret")?,
        })
    }
}

/// The prefix of an enrolment token's text.
pub const TOKEN_PREFIX: &str = "swarmbak-enroll-1.";

/// What `swarmbak tracker enroll` prints: where the tracker is, which organisation key it
/// must prove (certificates it returns are checked against it), the one-time secret, and
/// the SHA-256 of the tracker's TLS certificate when it serves HTTPS.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollToken {
    /// The tracker's base URL.
    pub url: String,
    /// The organisation key.
    pub org: PublicKey,
    /// The one-time secret.
    pub secret: [u8; 32],
    /// SHA-256 of the tracker's TLS certificate (DER), pinned by `init`.
    pub tls: Option<[u8; 32]>,
}

impl std::fmt::Debug for EnrollToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollToken")
            .field("url", &self.url)
            .field("org", &self.org)
            .finish_non_exhaustive()
    }
}

impl EnrollToken {
    /// The signed enrolment request (trust.md) that redeems this token for the machine
    /// whose signing key is `key` and whose age recipient is `age_recipient`.
    pub fn request(&self, key: &SigningKey, age_recipient: impl Into<String>) -> Vec<u8> {
        EnrollRequest {
            machine: key.public(),
            age_recipient: age_recipient.into(),
            secret: self.secret,
        }
        .sign(key)
    }

    /// The token's text: [`TOKEN_PREFIX`] and base64url of a bencoded dictionary.
    pub fn to_text(&self) -> String {
        let mut e = Encoder::with_capacity(160);
        e.begin_dict()
            .key(b"org")
            .bytes(self.org.as_bytes())
            .key(b"secret")
            .bytes(&self.secret);
        if let Some(t) = &self.tls {
            e.key(b"tls").bytes(t);
        }
        e.key(b"url").str(&self.url).end();
        format!("{TOKEN_PREFIX}{}", to_b64(&finish(e)))
    }

    /// Parses [`EnrollToken::to_text`].
    pub fn parse(text: &str) -> Result<EnrollToken, TrustError> {
        let bad = || {
            TrustError::Malformed(
                "not an enrolment token (it starts with swarmbak-enroll-1.; ask the administrator for a new one)"
                    .into(),
            )
        };
        let rest = text.trim().strip_prefix(TOKEN_PREFIX).ok_or_else(bad)?;
        let raw = from_b64(rest).map_err(|_| bad())?;
        let f = Fields::parse(&raw, "enrolment token")?;
        let tls = match f.opt_bytes("tls")? {
            None => None,
            Some(b) => Some(b.try_into().map_err(|_| bad())?),
        };
        Ok(EnrollToken {
            url: f.text("url")?,
            org: f.key("org")?,
            secret: f.array("secret")?,
            tls,
        })
    }

    /// What the tracker stores instead of the secret.
    pub fn secret_hash(secret: &[u8; 32]) -> [u8; 32] {
        sha256(secret)
    }
}

/// Opens an object of `kind` signed by `machine`, parses its body, and checks the body
/// names that machine (a signature by one machine over a body naming another is refused).
pub(crate) fn open_machine_signed<T>(
    bytes: &[u8],
    kind: Kind,
    machine: &PublicKey,
    parse: fn(&[u8]) -> Result<T, TrustError>,
    named: fn(&T) -> &PublicKey,
) -> Result<T, TrustError> {
    let r = parse(open(bytes, kind, machine)?)?;
    if named(&r) != machine {
        return Err(TrustError::Mismatch(format!(
            "the {} names another machine than its signer",
            kind.name()
        )));
    }
    Ok(r)
}

/// The longest error text a backup report carries (bytes); longer text is cut at a
/// character boundary by [`BackupReport::new_failure`].
pub const MAX_REPORT_ERROR: usize = 2048;

/// One backup attempt, as the machine reports it to the tracker (trust.md §9): signed by
/// the machine key; `id` makes a report sent twice (a lost acknowledgement) count once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// Random, per attempt.
    pub id: [u8; 16],
    /// The machine (the signer).
    pub machine: PublicKey,
    /// When the attempt started, Unix seconds (the machine's clock).
    pub start: i64,
    /// When it ended (not before `start`).
    pub end: i64,
    /// Bytes the backup read (on failure: as far as it got).
    pub bytes: u64,
    /// Files the backup read.
    pub files: u64,
    /// Success: the snapshot's info-hash. Failure: what went wrong.
    pub outcome: Result<[u8; 20], String>,
}

impl BackupReport {
    /// Whether the attempt succeeded.
    pub fn ok(&self) -> bool {
        self.outcome.is_ok()
    }

    /// Seconds the attempt took.
    pub fn duration(&self) -> i64 {
        self.end - self.start
    }

    /// A failed attempt's report, its error text cut to [`MAX_REPORT_ERROR`] bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn new_failure(
        id: [u8; 16],
        machine: PublicKey,
        start: i64,
        end: i64,
        bytes: u64,
        files: u64,
        error: &str,
    ) -> BackupReport {
        let mut cut = error.len().min(MAX_REPORT_ERROR);
        while !error.is_char_boundary(cut) {
            cut -= 1;
        }
        let text = if error[..cut].trim().is_empty() {
            "unknown error".to_owned()
        } else {
            error[..cut].to_owned()
        };
        BackupReport {
            id,
            machine,
            start,
            end,
            bytes,
            files,
            outcome: Err(text),
        }
    }

    fn body(&self) -> Vec<u8> {
        let mut e = Encoder::with_capacity(192);
        e.begin_dict()
            .key(b"bytes")
            .int(i64::try_from(self.bytes).unwrap_or(i64::MAX))
            .key(b"end")
            .int(self.end);
        if let Err(msg) = &self.outcome {
            e.key(b"error").str(msg);
        }
        e.key(b"files")
            .int(i64::try_from(self.files).unwrap_or(i64::MAX))
            .key(b"id")
            .bytes(&self.id);
        if let Ok(ih) = &self.outcome {
            e.key(b"infohash").bytes(ih);
        }
        e.key(b"key")
            .bytes(self.machine.as_bytes())
            .key(b"start")
            .int(self.start)
            .end();
        finish(e)
    }

    /// Signs the report with the machine's key (which must be `self.machine`).
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        key.sign(Kind::Report, &self.body())
    }

    /// Reads a report and checks it is signed by `machine`.
    pub fn verify(bytes: &[u8], machine: &PublicKey) -> Result<BackupReport, TrustError> {
        open_machine_signed(
            bytes,
            Kind::Report,
            machine,
            BackupReport::parse_body,
            |r| &r.machine,
        )
    }

    fn parse_body(body: &[u8]) -> Result<BackupReport, TrustError> {
        let f = Fields::parse(body, "backup report")?;
        let count = |k: &str| {
            let v = f.int(k)?;
            u64::try_from(v).map_err(|_| TrustError::Malformed(format!("`{k}` {v} is negative")))
        };
        let (start, end) = (f.int("start")?, f.int("end")?);
        if end < start {
            return Err(TrustError::Malformed(format!(
                "the backup report ends ({end}) before it starts ({start})"
            )));
        }
        let outcome = match (f.opt_bytes("infohash")?, f.opt_text("error")?) {
            (Some(_), None) => Ok(f.array("infohash")?),
            (None, Some(e)) if !e.is_empty() && e.len() <= MAX_REPORT_ERROR => Err(e),
            _ => {
                return Err(TrustError::Malformed(format!(
                    "a backup report has either `infohash` (success) or `error` (failure: 1 to {MAX_REPORT_ERROR} bytes)"
                )))
            }
        };
        Ok(BackupReport {
            id: f.array("id")?,
            machine: f.key("key")?,
            start,
            end,
            bytes: count("bytes")?,
            files: count("files")?,
            outcome,
        })
    }
}

/// Most stripe ranges a retirement keeps (a snapshot of 2^18 pieces has at most 2^18
/// stripes; ranges merge neighbours, so this many is already a pathological mix).
pub const MAX_RETIRE_RANGES: usize = 1 << 16;

/// A machine forgets one of its snapshots (trust.md §12, swarm.md §16): signed by the
/// owner. Holders may drop the snapshot's shards of every stripe outside `keep` once the
/// grace period since `retired` has passed and the retirement still stands; `keep` is the
/// stripes the owner's kept snapshots still read (their chunks live there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retirement {
    /// The snapshot retired.
    pub infohash: [u8; 20],
    /// The owner (the signer).
    pub machine: PublicKey,
    /// When the owner retired it, Unix seconds (its clock).
    pub retired: i64,
    /// The owner's newest snapshot then (never retired by a remote record: a holder and
    /// the tracker refuse a retirement naming a snapshot newer than or equal to this).
    pub newest: [u8; 20],
    /// The snapshot's number of stripes.
    pub stripes: u32,
    /// Stripe ranges `[start, end)` that stay, sorted, disjoint, not touching, within
    /// `stripes`. Empty: nothing stays.
    pub keep: Vec<(u32, u32)>,
}

impl Retirement {
    fn body(&self) -> Vec<u8> {
        let mut keep = Vec::with_capacity(self.keep.len() * 8);
        for (a, b) in &self.keep {
            keep.extend_from_slice(&a.to_be_bytes());
            keep.extend_from_slice(&b.to_be_bytes());
        }
        let mut e = Encoder::with_capacity(160 + keep.len());
        e.begin_dict()
            .key(b"infohash")
            .bytes(&self.infohash)
            .key(b"keep")
            .bytes(&keep)
            .key(b"key")
            .bytes(self.machine.as_bytes())
            .key(b"newest")
            .bytes(&self.newest)
            .key(b"retired")
            .int(self.retired)
            .key(b"stripes")
            .int(i64::from(self.stripes))
            .end();
        finish(e)
    }

    /// Signs the retirement with the machine's key (which must be `self.machine`).
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        key.sign(Kind::Retire, &self.body())
    }

    /// Reads a retirement and checks it is signed by `machine`.
    pub fn verify(bytes: &[u8], machine: &PublicKey) -> Result<Retirement, TrustError> {
        open_machine_signed(bytes, Kind::Retire, machine, Retirement::parse_body, |r| {
            &r.machine
        })
    }

    /// Reads a retirement without checking its signature.
    pub fn parse_unverified(bytes: &[u8]) -> Result<Retirement, TrustError> {
        Retirement::parse_body(crate::split(bytes)?.0)
    }

    /// Whether stripe `s` stays.
    pub fn keeps(&self, s: u32) -> bool {
        let i = self.keep.partition_point(|&(_, end)| end <= s);
        self.keep.get(i).is_some_and(|&(a, _)| a <= s)
    }

    /// Stripes that stay.
    pub fn kept_stripes(&self) -> u64 {
        self.keep.iter().map(|(a, b)| u64::from(b - a)).sum()
    }

    fn parse_body(body: &[u8]) -> Result<Retirement, TrustError> {
        let f = Fields::parse(body, "retirement")?;
        let stripes = f.int("stripes")?;
        let stripes = u32::try_from(stripes)
            .ok()
            .filter(|&s| s >= 1)
            .ok_or_else(|| TrustError::Malformed(format!("stripes {stripes} is not ≥ 1")))?;
        let raw = f.bytes("keep")?;
        if raw.len() % 8 != 0 || raw.len() / 8 > MAX_RETIRE_RANGES {
            return Err(TrustError::Malformed(format!(
                "keep is {} bytes: give at most {MAX_RETIRE_RANGES} pairs of 4-byte stripe numbers",
                raw.len()
            )));
        }
        let mut keep = Vec::with_capacity(raw.len() / 8);
        let mut prev_end: Option<u32> = None;
        for p in raw.chunks_exact(8) {
            let a = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
            let b = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            if a >= b || b > stripes || prev_end.is_some_and(|e| a <= e) {
                return Err(TrustError::Malformed(format!(
                    "keep range [{a}, {b}) is empty, beyond the {stripes} stripes, or not after the last range"
                )));
            }
            prev_end = Some(b);
            keep.push((a, b));
        }
        let infohash: [u8; 20] = f.array("infohash")?;
        let newest: [u8; 20] = f.array("newest")?;
        if newest == infohash {
            return Err(TrustError::Malformed(
                "a machine's newest snapshot is never retired".into(),
            ));
        }
        Ok(Retirement {
            infohash,
            machine: f.key("key")?,
            retired: f.int("retired")?,
            newest,
            stripes,
            keep,
        })
    }
}

/// Stripe ranges `[start, end)` of the stripes `wanted` says stay (`wanted(s)` for
/// `s < stripes`), merged.
pub fn stripe_ranges(stripes: u32, mut wanted: impl FnMut(u32) -> bool) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for s in 0..stripes {
        if !wanted(s) {
            continue;
        }
        match out.last_mut() {
            Some((_, end)) if *end == s => *end = s + 1,
            _ => out.push((s, s + 1)),
        }
    }
    out
}
