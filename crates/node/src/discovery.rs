//! Where snapshots and their metainfo are found (protocol-spec/swarm.md §6). The tracker
//! is the source today; a BEP 9 request to the peers it names covers trackers that keep
//! no metainfo (opentracker). The internal DHT plugs in as another [`Discovery`], without
//! touching fetch or replication.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use swarmbak_core::placement::Candidate;
use swarmbak_core::{InfoHash, MachineKey, PeerId};
use swarmbak_tracker::{AnnounceEvent, AnnounceRequest, ClientError, Retry, TrackerClient};

use crate::error::FetchError;

/// A boxed future (the trait is used as `dyn Discovery`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A snapshot some machine made available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub infohash: InfoHash,
    /// Its owner, when the source knows it (a tracker's publish record does; a full
    /// scrape does not).
    pub owner: Option<MachineKey>,
    /// The signed publish record and the owner's certificate, verified against the
    /// organisation key (a discovery that trusts one), to keep with the snapshot.
    pub signed: Option<crate::enrol::SignedPublish>,
    /// The owner's retirement of the snapshot as the tracker lists it (tracker.md §7.8),
    /// signed by the owner of the verified publish record and naming as `newest` a
    /// snapshot the same owner published later (swarm.md §16.4); with its bytes.
    pub retirement: Option<(swarmbak_trust::Retirement, Vec<u8>)>,
    /// The administrator cancelled the snapshot's retirement.
    pub retirement_cancelled: bool,
    /// The owner's target copies, from its verified publish record (swarm.md §3.1).
    pub copies: Option<u32>,
}

/// A snapshot's metainfo as a source found it.
#[derive(Debug, Clone)]
pub struct Meta {
    /// The `.torrent` bytes (the info dictionary's hash is the info-hash asked for).
    pub torrent: Vec<u8>,
    /// The owner's signed publish record and certificate, verified against the
    /// organisation key, when the source had to check them itself (a peer-only tracker:
    /// the record came from a member in the swarm).
    pub signed: Option<crate::enrol::SignedPublish>,
}

/// A source of snapshots and metainfo.
pub trait Discovery: Send + Sync {
    /// The snapshots of the organisation's machines (for replication).
    fn snapshots(&self) -> BoxFuture<'_, Result<Vec<Found>, FetchError>>;
    /// A snapshot's metainfo, `None` when this source does not know it.
    fn metainfo<'a>(&'a self, ih: &'a InfoHash) -> BoxFuture<'a, Result<Option<Meta>, FetchError>>;
    /// The placement candidates of the enrolled machines present now, each from a
    /// certificate the organisation key signed (the company tracker's roster, tracker.md
    /// §7.9); `Ok(None)` when this source keeps none (then an agent joins every listed
    /// snapshot: swarm.md §3.5), `Err` when it could not be asked now.
    fn roster(&self) -> BoxFuture<'_, Result<Option<Vec<Candidate>>, FetchError>> {
        Box::pin(async { Ok(None) })
    }
}

/// Several sources as one (the company tracker, peer-only trackers, later the DHT):
/// the snapshots any of them lists (a source that fails is left out while another
/// answers), and the first metainfo found, in order.
pub struct Sources(pub Vec<Box<dyn Discovery>>);

impl Sources {
    async fn list(&self) -> Result<Vec<Found>, FetchError> {
        let mut all: Vec<Found> = Vec::new();
        let mut first_error = None;
        let mut answered = false;
        for d in &self.0 {
            match d.snapshots().await {
                Ok(found) => {
                    answered = true;
                    for f in found {
                        match all.iter_mut().find(|g| g.infohash == f.infohash) {
                            // One that knows the signed record (or the owner) wins.
                            Some(g)
                                if g.signed.is_none()
                                    && (f.signed.is_some() || g.owner.is_none()) =>
                            {
                                *g = f
                            }
                            Some(_) => {}
                            None => all.push(f),
                        }
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match (answered, first_error) {
            (false, Some(e)) => Err(e),
            _ => Ok(all),
        }
    }

    async fn lookup(&self, ih: &InfoHash) -> Result<Option<Meta>, FetchError> {
        let mut error = None;
        for d in &self.0 {
            match d.metainfo(ih).await {
                Ok(Some(m)) => return Ok(Some(m)),
                Ok(None) => {}
                // A refusal says more than a source that could not be reached.
                Err(e @ FetchError::Untrusted { .. }) => error = Some(e),
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }
}

impl Discovery for Sources {
    fn snapshots(&self) -> BoxFuture<'_, Result<Vec<Found>, FetchError>> {
        Box::pin(self.list())
    }
    fn metainfo<'a>(&'a self, ih: &'a InfoHash) -> BoxFuture<'a, Result<Option<Meta>, FetchError>> {
        Box::pin(self.lookup(ih))
    }
    fn roster(&self) -> BoxFuture<'_, Result<Option<Vec<Candidate>>, FetchError>> {
        Box::pin(async {
            let mut error = None;
            for d in &self.0 {
                match d.roster().await {
                    Ok(Some(r)) => return Ok(Some(r)),
                    Ok(None) => {}
                    Err(e) => error = Some(e),
                }
            }
            error.map_or(Ok(None), Err)
        })
    }
}

/// The placement candidates of a roster's machines (tracker.md §7.9) whose certificate
/// the organisation key `org` signed and which is valid at `now`, with the domains their
/// certificates name, sorted by key, each once: a tracker vouches for presence only,
/// never for membership or rooms.
pub fn verified_roster(
    org: &swarmbak_trust::PublicKey,
    roster: &swarmbak_tracker::Roster,
    now: i64,
) -> Vec<Candidate> {
    let mut keys: Vec<Candidate> = roster
        .machines
        .iter()
        .filter_map(|m| {
            let bytes = swarmbak_trust::from_b64(&m.certificate).ok()?;
            let c = swarmbak_trust::Certificate::verify(&bytes, org).ok()?;
            c.valid_at(now).ok()?;
            let key = MachineKey::from_age_recipient(&c.fields.age_recipient).ok()?;
            Some(Candidate::new(key, c.fields.domain.as_deref()))
        })
        .collect();
    keys.sort();
    keys.dedup_by(|a, b| a.key == b.key);
    keys
}

/// A listed snapshot's retirement, when it holds (swarm.md §16.4): signed by `owner` (the
/// machine of the snapshot's verified publish record), for this snapshot, and naming as
/// `newest` a snapshot the same machine published after it (`order`: each listed
/// snapshot's place, newest first, and publisher).
fn listed_retirement(
    order: &HashMap<String, (usize, String)>,
    r: &swarmbak_tracker::SnapshotRecord,
    owner: &swarmbak_trust::PublicKey,
) -> Option<(swarmbak_trust::Retirement, Vec<u8>)> {
    let bytes = r.retirement_record()?;
    let ret = swarmbak_trust::Retirement::verify(&bytes, owner).ok()?;
    if hex::encode(ret.infohash) != r.infohash {
        return None;
    }
    let (here, by) = order.get(&r.infohash)?;
    let (newer, newer_by) = order.get(&hex::encode(ret.newest))?;
    (newer_by == by && newer < here).then_some((ret, bytes))
}

/// Every torrent of a tracker's full scrape, as snapshots of unknown owner.
async fn full_scrape(c: &TrackerClient) -> Result<Vec<Found>, ClientError> {
    Ok(c.scrape(&[])
        .await?
        .keys()
        .map(|ih| Found {
            infohash: *ih,
            owner: None,
            signed: None,
            retirement: None,
            retirement_cancelled: false,
            copies: None,
        })
        .collect())
}

/// A peer-only tracker (`init --peer-tracker URL`, swarm.md §5.1.1): a BitTorrent tracker that
/// is not the company's (opentracker), which lists peers and nothing else. Snapshots are
/// every torrent of its full scrape; a snapshot's metainfo comes over BEP 9 from the
/// peers it lists. An enrolled machine (`identity`) asks members only, and takes a
/// snapshot only with the owner's publish record a member sends in the swarm (wire.md
/// type 5), checked against the organisation key: the tracker vouches for nothing.
pub struct PeerTrackerDiscovery {
    tracker: TrackerRef,
    client: TrackerClient,
    identity: Option<Arc<swarmbak_agent::auth::Identity>>,
}

impl PeerTrackerDiscovery {
    pub fn new(
        url: &str,
        identity: Option<Arc<swarmbak_agent::auth::Identity>>,
    ) -> Result<PeerTrackerDiscovery, FetchError> {
        let tracker = TrackerRef::unpinned(url);
        Ok(PeerTrackerDiscovery {
            client: tracker_client(&tracker)?.with_retry(Retry::none()),
            tracker,
            identity,
        })
    }

    fn failed(&self, e: impl std::fmt::Display) -> FetchError {
        FetchError::Tracker {
            tracker: self.tracker.url.clone(),
            reason: e.to_string(),
        }
    }

    async fn list(&self) -> Result<Vec<Found>, FetchError> {
        full_scrape(&self.client)
            .await
            .map_err(|e| self.failed(format!("full scrape: {e}")))
    }

    async fn lookup(&self, ih: &InfoHash) -> Result<Option<Meta>, FetchError> {
        let peer_id = swarmbak_agent::engine::new_peer_id();
        let Ok(peers) = tracker_peers(ih, &self.tracker, peer_id, Duration::ZERO).await else {
            return Ok(None);
        };
        let announce = format!("{}/announce", self.tracker.url);
        let mut why = Vec::new();
        for p in peers {
            let got = match swarmbak_agent::metadata::from_peer(
                p,
                *ih,
                peer_id,
                Some(&announce),
                self.identity.clone(),
            )
            .await
            {
                Ok(got) => got,
                Err(e @ swarmbak_agent::metadata::MetadataFetchError::NotAMember(_)) => {
                    why.push(format!("{p}: {e}"));
                    continue;
                }
                Err(_) => continue,
            };
            let Some(id) = &self.identity else {
                return Ok(Some(Meta {
                    torrent: got.torrent,
                    signed: None,
                }));
            };
            // A member that has no record, or one that does not verify (a revoked
            // owner): not taken from it.
            match got.record {
                Some((record, cert)) => match id.check_record(&record, &cert, &ih.0) {
                    Ok(_) => {
                        return Ok(Some(Meta {
                            torrent: got.torrent,
                            signed: Some((record, cert)),
                        }))
                    }
                    Err(e) => why.push(format!("{p}: its record does not verify: {e}")),
                },
                None => why.push(format!("{p}: a member, but it sent no publish record")),
            }
        }
        match self.identity {
            // Peers answered and none vouched for it: refused (said once by the agent).
            Some(_) if !why.is_empty() => Err(FetchError::Untrusted {
                infohash: *ih,
                tracker: self.tracker.url.clone(),
                reason: format!(
                    "no member of the organisation sent a publish record that verifies ({})",
                    why.join("; ")
                ),
            }),
            _ => Ok(None),
        }
    }
}

impl Discovery for PeerTrackerDiscovery {
    fn snapshots(&self) -> BoxFuture<'_, Result<Vec<Found>, FetchError>> {
        Box::pin(self.list())
    }
    fn metainfo<'a>(&'a self, ih: &'a InfoHash) -> BoxFuture<'a, Result<Option<Meta>, FetchError>> {
        Box::pin(self.lookup(ih))
    }
}

/// The HTTP status behind a tracker client error, if it was one.
pub fn http_status(e: &ClientError) -> Option<u16> {
    match e {
        ClientError::Http { status, .. } => Some(*status),
        ClientError::GaveUp { last, .. } => http_status(last),
        _ => None,
    }
}

/// A tracker that is not swarmbak's (opentracker) answers these to swarmbak's endpoints.
pub fn not_a_swarmbak_tracker(e: &ClientError) -> bool {
    matches!(http_status(e), Some(400 | 404 | 405))
}

/// A tracker as the node reaches it: its URL (`BASE/<passkey>` when enrolled) and, for
/// an `https://` tracker, the SHA-256 of its TLS certificate that the enrolment token
/// pinned (tracker.md §7.5). Every client the node makes for a tracker is made from one
/// of these ([`tracker_client`]), so the pin goes wherever the URL goes.
#[derive(Clone, PartialEq, Eq)]
pub struct TrackerRef {
    pub url: String,
    pub tls_sha256: Option<[u8; 32]>,
}

impl std::fmt::Debug for TrackerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackerRef")
            .field("url", &self.url)
            .field("tls_sha256", &self.tls_sha256.map(hex::encode))
            .finish()
    }
}

impl TrackerRef {
    /// A tracker known by its URL alone (a magnet's `tr=`, a .torrent's `announce`,
    /// `init --tracker`): no pin, so an `https://` one is refused when first used.
    pub fn unpinned(url: impl Into<String>) -> TrackerRef {
        TrackerRef {
            url: url.into(),
            tls_sha256: None,
        }
    }
}

/// A tracker client for `tracker`, carrying its TLS pin.
pub fn tracker_client(tracker: &TrackerRef) -> Result<TrackerClient, FetchError> {
    let failed = |reason: String| FetchError::Tracker {
        tracker: tracker.url.clone(),
        reason,
    };
    let c = TrackerClient::new(&tracker.url).map_err(|e| failed(e.to_string()))?;
    match tracker.tls_sha256 {
        Some(pin) => Ok(c.with_tls_pin(pin)),
        None if c.is_https() => Err(failed(
            "an https:// tracker is trusted only by the SHA-256 of its TLS certificate, and this machine has none for it: enrol with `swarmbak init --enroll TOKEN` (https tokens carry it), or use the tracker's http:// address".into(),
        )),
        None => Ok(c),
    }
}

/// The company tracker: its publish records (`GET /snapshots`, `GET /metainfo`), or, for
/// a tracker that keeps none, a full scrape and BEP 9 from the peers it names.
pub struct TrackerDiscovery {
    tracker: TrackerRef,
    url: String,
    client: TrackerClient,
    /// When set, metainfo is taken only for snapshots whose signed record verifies with
    /// this organisation key (trust.md §4).
    org: Option<swarmbak_trust::PublicKey>,
}

impl TrackerDiscovery {
    /// Talks to `tracker`, without retrying (callers poll).
    pub fn new(tracker: &TrackerRef) -> Result<TrackerDiscovery, FetchError> {
        Ok(TrackerDiscovery {
            tracker: tracker.clone(),
            url: tracker.url.clone(),
            client: tracker_client(tracker)?.with_retry(Retry::none()),
            org: None,
        })
    }

    /// Believes only snapshots the organisation key vouches for (an enrolled machine).
    pub fn trusting(mut self, org: Option<swarmbak_trust::PublicKey>) -> TrackerDiscovery {
        self.org = org;
        self
    }

    /// Retries each request for up to `d` while the tracker refuses or is down.
    pub fn retrying_for(mut self, d: Duration) -> TrackerDiscovery {
        self.client = self.client.with_retry(Retry::for_duration(d));
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn failed(&self, e: impl std::fmt::Display) -> FetchError {
        FetchError::Tracker {
            tracker: self.url.clone(),
            reason: e.to_string(),
        }
    }

    async fn list(&self) -> Result<Vec<Found>, FetchError> {
        match self.client.snapshots(None).await {
            Ok(recs) => {
                // Newest first: each snapshot's place and publisher, for `newest`.
                let recs_order: HashMap<String, (usize, String)> = recs
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (r.infohash.clone(), (i, r.machine_key.clone())))
                    .collect();
                Ok(recs
                    .into_iter()
                    .filter_map(|r| {
                        let infohash = InfoHash::from_hex(&r.infohash).ok()?;
                        let Some(org) = &self.org else {
                            return Some(Found {
                                infohash,
                                owner: owner_key(&r),
                                signed: None,
                                retirement: None,
                                retirement_cancelled: false,
                                copies: None,
                            });
                        };
                        // An enrolled machine takes part only in snapshots an enrolled
                        // machine signed: a tracker that lists others (or lies) cannot
                        // make it hold them.
                        let v = crate::enrol::verify_listed(org, &r).ok()?;
                        let signed = (
                            swarmbak_trust::from_b64(r.record.as_deref()?).ok()?,
                            swarmbak_trust::from_b64(r.certificate.as_deref()?).ok()?,
                        );
                        Some(Found {
                            infohash,
                            owner: MachineKey::from_age_recipient(
                                &v.certificate.fields.age_recipient,
                            )
                            .ok(),
                            signed: Some(signed),
                            retirement: listed_retirement(
                                &recs_order,
                                &r,
                                &v.certificate.fields.machine,
                            ),
                            retirement_cancelled: r.retirement_cancelled.is_some(),
                            copies: Some(v.record.copies),
                        })
                    })
                    .collect())
            }
            // Not a swarmbak tracker (opentracker) and an enrolled machine: nothing it
            // lists is signed, so nothing is taken here (as a peer-only tracker,
            // `init --peer-tracker`, its snapshots are taken with the owner's record
            // from the swarm: `PeerTrackerDiscovery`).
            Err(e) if not_a_swarmbak_tracker(&e) && self.org.is_some() => Ok(Vec::new()),
            // Not a swarmbak tracker (opentracker): every torrent of a full scrape; which
            // are swarmbak snapshots shows once their metainfo is in.
            Err(e) if not_a_swarmbak_tracker(&e) => full_scrape(&self.client)
                .await
                .map_err(|e| self.failed(format!("full scrape: {e}"))),
            Err(e) => Err(self.failed(e)),
        }
    }

    async fn lookup(&self, ih: &InfoHash) -> Result<Option<Meta>, FetchError> {
        Ok(self.torrent(ih).await?.map(|torrent| Meta {
            torrent,
            signed: None,
        }))
    }

    async fn torrent(&self, ih: &InfoHash) -> Result<Option<Vec<u8>>, FetchError> {
        if let Some(org) = &self.org {
            // A tracker that lies cannot hand an enrolled machine a snapshot no enrolled
            // machine signed.
            let refuse = |reason: String| FetchError::Metainfo {
                infohash: *ih,
                tracker: self.url.clone(),
                reason,
            };
            let Some(rec) = self
                .client
                .snapshot(ih)
                .await
                .map_err(|e| refuse(e.to_string()))?
            else {
                // Not listed (yet): its machine has not published it.
                return Ok(None);
            };
            crate::enrol::verify_listed(org, &rec).map_err(|why| FetchError::Untrusted {
                infohash: *ih,
                tracker: self.url.clone(),
                reason: format!(
                    "its record does not verify with the organisation key ({why}): refusing it"
                ),
            })?;
        }
        let from_tracker = self.client.metainfo(ih).await;
        if let Ok(Some(b)) = from_tracker {
            return Ok(Some(b));
        }
        // The tracker keeps no metainfo for it (opentracker keeps none at all): ask the
        // swarmbak peers it knows of, over BEP 9.
        match metadata_from_swarm(ih, Some(&self.tracker), &[]).await {
            Ok(b) => Ok(Some(b)),
            Err(_) => match from_tracker {
                Ok(_) => Ok(None),
                Err(e) => Err(FetchError::Metainfo {
                    infohash: *ih,
                    tracker: self.url.clone(),
                    reason: e.to_string(),
                }),
            },
        }
    }
}

impl Discovery for TrackerDiscovery {
    fn snapshots(&self) -> BoxFuture<'_, Result<Vec<Found>, FetchError>> {
        Box::pin(self.list())
    }
    fn metainfo<'a>(&'a self, ih: &'a InfoHash) -> BoxFuture<'a, Result<Option<Meta>, FetchError>> {
        Box::pin(self.lookup(ih))
    }
    fn roster(&self) -> BoxFuture<'_, Result<Option<Vec<Candidate>>, FetchError>> {
        Box::pin(async {
            // Only an enrolled machine's private tracker keeps one (and only an enrolled
            // machine can check its certificates); a tracker of an older version
            // answers 404: no roster, as before.
            let Some(org) = self.org.as_ref() else {
                return Ok(None);
            };
            let roster = match self.client.roster().await {
                Ok(r) => r,
                Err(e) if not_a_swarmbak_tracker(&e) => return Ok(None),
                Err(e) => return Err(self.failed(format!("roster: {e}"))),
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            Ok(Some(verified_roster(org, &roster, now)))
        })
    }
}

/// The peers the tracker lists for `ih`, asked with one announce (port 1, then `stopped`)
/// retried for up to `retry`: an error when the tracker cannot be reached or refuses.
pub async fn tracker_peers(
    ih: &InfoHash,
    tracker: &TrackerRef,
    peer_id: [u8; 20],
    retry: Duration,
) -> Result<Vec<SocketAddr>, FetchError> {
    let c = tracker_client(tracker)?.with_retry(Retry::for_duration(retry));
    let r = c
        .announce(&AnnounceRequest::new(*ih, PeerId(peer_id), 1, 1))
        .await
        .map_err(|e| FetchError::Tracker {
            tracker: tracker.url.clone(),
            reason: e.to_string(),
        })?;
    let mut stop = AnnounceRequest::new(*ih, PeerId(peer_id), 1, 1);
    stop.event = Some(AnnounceEvent::Stopped);
    // Leaving is a courtesy: the tracker forgets us after its timeout anyway.
    let _ = tokio::time::timeout(Duration::from_secs(2), c.announce(&stop)).await;
    // Not ourselves (we announced port 1 only to be given peers; some trackers,
    // opentracker among them, return the asker too).
    Ok(r.peers
        .into_iter()
        .map(|p| p.addr)
        .filter(|a| a.port() != 1)
        .collect())
}

/// A torrent's metainfo over BEP 9 from the peers the tracker names (or `peers`).
pub async fn metadata_from_swarm(
    ih: &InfoHash,
    tracker: Option<&TrackerRef>,
    peers: &[SocketAddr],
) -> Result<Vec<u8>, FetchError> {
    let peer_id = swarmbak_agent::engine::new_peer_id();
    let mut cands: Vec<SocketAddr> = peers.to_vec();
    if let Some(t) = tracker {
        if let Ok(listed) = tracker_peers(ih, t, peer_id, Duration::from_secs(10)).await {
            cands.extend(listed);
        }
    }
    let announce = tracker.map(|t| format!("{}/announce", t.url));
    let mut why = Vec::new();
    for p in &cands {
        match swarmbak_agent::metadata::from_peer(*p, *ih, peer_id, announce.as_deref(), None).await
        {
            Ok(got) => return Ok(got.torrent),
            Err(e) => why.push(format!("{p}: {e}")),
        }
    }
    Err(FetchError::NoMetadata {
        infohash: *ih,
        tried: cands.len(),
        why: if why.is_empty() {
            String::new()
        } else {
            format!(": {}", why.join("; "))
        },
    })
}

/// The placement key of a listed snapshot's owner (swarm.md §1: its age recipient): from
/// its certificate when the publish was signed, else the key it was published under.
fn owner_key(r: &swarmbak_tracker::SnapshotRecord) -> Option<MachineKey> {
    let from_cert = r
        .certificate
        .as_deref()
        .and_then(|c| swarmbak_trust::from_b64(c).ok())
        .and_then(|c| swarmbak_trust::Certificate::parse_unverified(&c).ok())
        .map(|c| c.fields.age_recipient);
    MachineKey::from_age_recipient(from_cert.as_deref().unwrap_or(&r.machine_key)).ok()
}

#[cfg(test)]
mod retirement_tests {
    use super::*;
    use swarmbak_trust::{Retirement, SigningKey};

    fn rec(ih: u8, machine: &str, retirement: Option<&[u8]>) -> swarmbak_tracker::SnapshotRecord {
        swarmbak_tracker::SnapshotRecord {
            infohash: hex::encode([ih; 20]),
            machine_key: machine.into(),
            machine_name: machine.into(),
            published: 0,
            total_length: 0,
            payload_length: 0,
            name: String::new(),
            copies: 2,
            record: None,
            certificate: None,
            retirement: retirement.map(swarmbak_trust::to_b64),
            retired_at: None,
            retirement_cancelled: None,
        }
    }

    fn retire(key: &SigningKey, ih: u8, newest: u8) -> Vec<u8> {
        Retirement {
            infohash: [ih; 20],
            machine: key.public(),
            retired: 1_800_000_000,
            newest: [newest; 20],
            stripes: 4,
            keep: vec![(1, 2)],
        }
        .sign(key)
    }

    /// What a tracker lists (or a tracker that lies): only a retirement the snapshot's
    /// owner signed, of that snapshot, naming a later snapshot of the same machine as
    /// newest, is acted on (swarm.md §16.4).
    #[test]
    fn only_the_owner_s_retirement_naming_a_later_snapshot_of_it_holds() {
        let owner = SigningKey::generate();
        let other = SigningKey::generate();
        // Listed newest first: 3 (owner), 9 (other), 2 (owner), 1 (owner).
        let listed = |r: &swarmbak_tracker::SnapshotRecord| {
            let all = [
                rec(3, "o", None),
                rec(9, "x", None),
                rec(2, "o", None),
                r.clone(),
            ];
            all.iter()
                .enumerate()
                .map(|(i, r)| (r.infohash.clone(), (i, r.machine_key.clone())))
                .collect::<HashMap<_, _>>()
        };
        let check = |bytes: &[u8]| {
            let r = rec(1, "o", Some(bytes));
            listed_retirement(&listed(&r), &r, &owner.public()).map(|(ret, _)| ret)
        };
        let good = check(&retire(&owner, 1, 3)).expect("the owner's, naming a later one");
        assert!(good.keeps(1) && !good.keeps(0));
        assert!(check(&retire(&owner, 1, 2)).is_some());
        // Signed by another key (a forged or foreign record).
        assert!(check(&retire(&other, 1, 3)).is_none());
        // Of another snapshot, listed here.
        assert!(check(&retire(&owner, 2, 3)).is_none());
        // Naming another machine's snapshot, an unlisted one, or itself as newest.
        assert!(check(&retire(&owner, 1, 9)).is_none());
        assert!(check(&retire(&owner, 1, 7)).is_none());
        // Bytes altered after signing.
        let mut bad = retire(&owner, 1, 3);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(check(&bad).is_none());
        // Naming as newest a snapshot listed before it (older).
        let r = rec(3, "o", Some(&retire(&owner, 3, 1)));
        let order: HashMap<_, _> = [rec(3, "o", None), rec(1, "o", None)]
            .iter()
            .enumerate()
            .map(|(i, x)| (x.infohash.clone(), (i, x.machine_key.clone())))
            .collect();
        assert!(listed_retirement(&order, &r, &owner.public()).is_none());
    }
}

#[cfg(test)]
mod roster_tests {
    use super::*;
    use swarmbak_trust::{Certificate, CertificateFields, SigningKey};

    fn cert(org: &SigningKey, age: &str, expires: Option<i64>) -> String {
        let fields = CertificateFields {
            machine: SigningKey::generate().public(),
            age_recipient: age.into(),
            name: age.into(),
            user: None,
            vip: false,
            domain: None,
            issued: 1_000,
            expires,
        };
        swarmbak_trust::to_b64(&Certificate::issue(org, &fields))
    }

    /// A roster is believed only for certificates the organisation key signed and valid
    /// now (swarm.md §3.5): another organisation's, an expired one, a tampered one and
    /// bytes that are no certificate are left out; the rest sorted, each once.
    #[test]
    fn only_the_organisations_valid_certificates_count() {
        let org = SigningKey::generate();
        let other = SigningKey::generate();
        let entry = |certificate: String| swarmbak_tracker::RosterEntry {
            certificate,
            last_seen: 5_000,
        };
        let good_b = cert(&org, "age1bbbb", None);
        let mut tampered = swarmbak_trust::from_b64(&cert(&org, "age1dddd", None)).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let roster = swarmbak_tracker::Roster {
            window: 300,
            now: 5_000,
            machines: vec![
                entry(good_b.clone()),
                entry(cert(&org, "age1aaaa", Some(10_000))),
                entry(good_b),
                entry(cert(&other, "age1eeee", None)),
                entry(cert(&org, "age1cccc", Some(4_000))),
                entry(swarmbak_trust::to_b64(&tampered)),
                entry("not base64url!".into()),
            ],
        };
        let keys: Vec<MachineKey> = verified_roster(&org.public(), &roster, 5_000)
            .into_iter()
            .map(|c| c.key)
            .collect();
        let want: Vec<MachineKey> = ["age1aaaa", "age1bbbb"]
            .iter()
            .map(|a| MachineKey::from_age_recipient(a).unwrap())
            .collect();
        assert_eq!(keys, want);
    }
}
