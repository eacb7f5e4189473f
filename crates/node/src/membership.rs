//! This machine's membership in its organisation, as its peer connections use it
//! (protocol-spec/wire.md "Authenticated peers", trust.md §10): the organisation secret
//! and key, its certificate and signing key from enrolment, and the organisation's
//! revocations, cached in `HOME/revocations` and refreshed from the tracker.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use swarmbak_agent::{Engine, Identity};
use swarmbak_trust::{PublicKey, Revocation};

use crate::config::{signing_key, Node, NodeConfig};
use crate::discovery::{tracker_client, TrackerRef};
use crate::error::ConfigError;

/// The revocation cache: one verified revocation envelope per line, base64url.
pub const REVOCATIONS_FILE: &str = "revocations";
/// The checker's record of proofs of possession (swarm.md §14).
pub const POSSESSION_LOG: &str = "possession.log";
/// How often a running process asks the tracker for revocations.
pub const REVOCATION_REFRESH: Duration = Duration::from_secs(30);

/// An enrolled machine's membership.
#[derive(Clone, Debug)]
pub struct Membership {
    pub identity: Arc<Identity>,
    pub org: PublicKey,
    root: PathBuf,
}

impl Membership {
    /// The node's membership; `None` when it is not enrolled (an open tracker: its peers
    /// cannot authenticate, so nothing they claim is proven).
    pub fn of(node: &Node) -> Result<Option<Membership>, ConfigError> {
        Membership::load(&node.root, &node.config)
    }

    /// Where this home records the proofs of possession its processes checked.
    pub fn possession_log(&self) -> PathBuf {
        self.root.join(POSSESSION_LOG)
    }

    /// The membership of the home at `root` with configuration `config`.
    pub fn load(root: &Path, config: &NodeConfig) -> Result<Option<Membership>, ConfigError> {
        let Some(e) = &config.enrolment else {
            return Ok(None);
        };
        let secret = hex::decode(&e.org_secret)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                ConfigError::Invalid(
                    "config.json: enrolment.org_secret is not 64 hex digits: enrol again (swarmbak init --enroll TOKEN)".into(),
                )
            })?;
        let org = e.org()?;
        let identity = Identity::new(secret, org, e.certificate()?, signing_key(root)?);
        let m = Membership {
            identity,
            org,
            root: root.to_path_buf(),
        };
        m.identity.set_revoked(m.cached());
        Ok(Some(m))
    }

    fn path(&self) -> PathBuf {
        self.root.join(REVOCATIONS_FILE)
    }

    /// The revoked keys of the cache (each envelope checked again).
    fn cached(&self) -> HashSet<PublicKey> {
        let text = std::fs::read_to_string(self.path()).unwrap_or_default();
        text.lines()
            .filter_map(|l| swarmbak_trust::from_b64(l).ok())
            .filter_map(|b| Revocation::verify(&b, &self.org).ok())
            .map(|r| r.machine)
            .collect()
    }

    /// Asks the tracker for its revocations, keeps those signed by the organisation key
    /// (in memory and in the cache), and returns the keys newly revoked. With the tracker
    /// unreachable, what is known stands.
    pub async fn refresh(
        &self,
        tracker: &TrackerRef,
        timeout: Duration,
    ) -> Result<Vec<PublicKey>, String> {
        let c = tracker_client(tracker).map_err(|e| e.to_string())?;
        let list = tokio::time::timeout(timeout, c.revocations())
            .await
            .map_err(|_| "the tracker did not answer in time".to_string())?
            .map_err(|e| e.to_string())?;
        let mut keys = HashSet::new();
        let mut lines = String::new();
        for b in list {
            // A revocation the organisation key did not sign is the tracker's word only.
            if let Ok(r) = Revocation::verify(&b, &self.org) {
                keys.insert(r.machine);
                lines.push_str(&swarmbak_trust::to_b64(&b));
                lines.push('\n');
            }
        }
        let new = self.identity.set_revoked(keys);
        if !new.is_empty() {
            write_atomically(&self.path(), lines.as_bytes()).map_err(|e| e.to_string())?;
        }
        Ok(new)
    }

    /// Refreshes the revocations now and then every [`REVOCATION_REFRESH`] while
    /// `engine` runs, closing the connections of machines newly revoked.
    pub fn watch(&self, tracker: &TrackerRef, engine: &Engine) {
        let (m, t, e) = (self.clone(), tracker.clone(), engine.downgrade());
        tokio::spawn(async move {
            loop {
                let Some(engine) = e.upgrade() else { return };
                if let Ok(new) = m.refresh(&t, Duration::from_secs(5)).await {
                    engine.revoke(&new);
                }
                drop(engine);
                tokio::time::sleep(REVOCATION_REFRESH).await;
            }
        });
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}
