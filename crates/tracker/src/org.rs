//! The organisation's secrets, kept in the tracker's data directory (tracker.md §7.1):
//!
//! ```text
//! DATA/org.key        the organisation's ed25519 signing key (trust.md §1), mode 0600
//! DATA/org-secret     32 random bytes in hex, handed to enrolled machines (handshakes, DHT keys)
//! DATA/admin-token    the bearer token of the admin API (/api/v1/...), mode 0600
//! ```
//!
//! All three are created at the first start (or the first `swarmbak tracker enroll`) and
//! never replaced.

use std::path::{Path, PathBuf};

use swarmbak_trust::{KeyFileError, PublicKey, SigningKey};

/// The organisation's keys and tokens.
#[derive(Clone)]
pub struct Org {
    /// The organisation key.
    pub key: SigningKey,
    /// The shared secret machines get at enrolment.
    pub secret: [u8; 32],
    /// The admin API's bearer token.
    pub admin_token: String,
}

impl std::fmt::Debug for Org {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Org")
            .field("key", &self.key.public())
            .finish_non_exhaustive()
    }
}

/// Why the organisation's files could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum OrgError {
    /// The key file.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// Another file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file that is not what it should be.
    #[error("{0}: malformed (expected 64 hex digits); restore it from your backup")]
    Malformed(PathBuf),
}

/// Reads `path` (one line of hex), or creates it with `make()` (mode 0600, once: see
/// [`swarmbak_trust::create_once`]).
fn load_or_create_secret(path: &Path, make: impl FnOnce() -> String) -> Result<String, OrgError> {
    let io = |source| OrgError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(s) => return Ok(s.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    swarmbak_trust::create_once(path, format!("{}\n", make()).as_bytes(), 0o600).map_err(io)?;
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(io)
}

impl Org {
    /// Loads the organisation's files from `data_dir`, creating what is missing.
    pub fn open(data_dir: &Path) -> Result<Org, OrgError> {
        std::fs::create_dir_all(data_dir).map_err(|source| OrgError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let (key, _) = SigningKey::load_or_create(&data_dir.join("org.key"))?;
        let secret_path = data_dir.join("org-secret");
        let secret =
            load_or_create_secret(&secret_path, || hex::encode(rand::random::<[u8; 32]>()))?;
        let secret: [u8; 32] = hex::decode(&secret)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(OrgError::Malformed(secret_path))?;
        let token_path = data_dir.join("admin-token");
        let admin_token =
            load_or_create_secret(&token_path, || hex::encode(rand::random::<[u8; 32]>()))?;
        if admin_token.len() < 32 {
            return Err(OrgError::Malformed(token_path));
        }
        Ok(Org {
            key,
            secret,
            admin_token,
        })
    }

    /// The organisation's public key.
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }
}

/// Writes a new random admin token to `DATA/admin-token` (mode 0600, written to a
/// temporary file, synced, then renamed over the old one: a crash leaves the old token or
/// the new one, never a torn file). Returns the new token.
pub fn rotate_admin_token(data_dir: &Path) -> Result<String, OrgError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("admin-token");
    let tmp = data_dir.join(".admin-token.new");
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| OrgError::Io { path: p, source }
    };
    let token = hex::encode(rand::random::<[u8; 32]>());
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    if let Ok(d) = std::fs::File::open(data_dir) {
        let _ = d.sync_all();
    }
    Ok(token)
}

/// A new passkey: 16 random bytes as 32 lowercase hex digits.
pub fn new_passkey() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Is `s` shaped like a passkey (32 lowercase hex digits)?
pub fn is_passkey(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// This machine's host name (for the tracker's default public URL).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
