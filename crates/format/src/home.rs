//! A machine's home: its keys, its settings and its local store.
//!
//! ```text
//! HOME/config.json     settings (name, tracker, copies, k, m, recovery recipients, public key)
//! HOME/identity.txt    the machine's age identity (mode 0600), in age-keygen's format
//! HOME/chunk-key       the keyed-BLAKE3 key that names this machine's chunks (mode 0600)
//! HOME/lock            held (flock) by whoever writes the store
//! HOME/store/...       see `store.rs`
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crypto::{Identities, Identity, Recipient};
use crate::store::Store;
use crate::FormatError;

/// Default number of data shards per stripe (protocol-spec/durability.md).
pub const DEFAULT_K: u16 = 8;
/// Default number of parity shards per stripe.
pub const DEFAULT_M: u16 = 4;
/// Default number of distinct machines other than the owner that hold each shard.
pub const DEFAULT_COPIES: u32 = 2;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    pub version: u32,
    pub name: String,
    pub public_key: String,
    #[serde(default)]
    pub tracker: Option<String>,
    #[serde(default)]
    pub enroll_token: Option<String>,
    pub copies: u32,
    pub k: u16,
    pub m: u16,
    #[serde(default)]
    pub recovery_recipients: Vec<String>,
    /// Most bytes of other machines' shards this machine holds (None: no limit).
    #[serde(default)]
    pub quota: Option<u64>,
}

/// What `swarmbak init` may set; `None` leaves a setting as it is.
#[derive(Clone, Debug, Default)]
pub struct InitOptions {
    pub name: Option<String>,
    pub tracker: Option<String>,
    pub enroll_token: Option<String>,
    pub recovery_recipients: Vec<String>,
    pub copies: Option<u32>,
    pub k: Option<u16>,
    pub m: Option<u16>,
    pub quota: Option<u64>,
}

pub struct Home {
    root: PathBuf,
    config: Config,
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "machine".to_string())
}

impl Home {
    /// Creates the machine's keys the first time; afterwards changes only the options given
    /// and never replaces keys. Returns the home and whether it was created now.
    pub fn init(root: &Path, opts: &InitOptions) -> Result<(Home, bool), FormatError> {
        fs::create_dir_all(root).map_err(|e| FormatError::io(root, e))?;
        let cfg_path = root.join("config.json");
        let created = !cfg_path.exists();
        for r in &opts.recovery_recipients {
            Recipient::parse(r)?;
        }
        if let (Some(k), Some(m)) = (opts.k, opts.m) {
            crate::erasure::check_params(k as usize, m as usize)?;
        }
        let mut config = if created {
            let id = Identity::generate();
            let id_path = root.join("identity.txt");
            if id_path.exists() {
                return Err(FormatError::Invalid(format!(
                    "{} exists but config.json does not: refusing to replace a key; move it away or restore config.json",
                    id_path.display()
                )));
            }
            write_private(&id_path, id.to_identity_file().as_bytes())
                .map_err(|e| FormatError::io(&id_path, e))?;
            let key: [u8; 32] = rand::random();
            let key_path = root.join("chunk-key");
            write_private(&key_path, hex::encode(key).as_bytes())
                .map_err(|e| FormatError::io(&key_path, e))?;
            Config {
                version: 1,
                name: host_name(),
                public_key: id.to_public().to_string(),
                tracker: None,
                enroll_token: None,
                copies: DEFAULT_COPIES,
                k: DEFAULT_K,
                m: DEFAULT_M,
                recovery_recipients: Vec::new(),
                quota: None,
            }
        } else {
            Self::read_config(root)?
        };
        if let Some(n) = &opts.name {
            config.name = n.clone();
        }
        if let Some(t) = &opts.tracker {
            config.tracker = Some(t.trim_end_matches('/').to_string());
        }
        if let Some(t) = &opts.enroll_token {
            config.enroll_token = Some(t.clone());
        }
        if let Some(c) = opts.copies {
            config.copies = c;
        }
        if let Some(k) = opts.k {
            config.k = k;
        }
        if let Some(m) = opts.m {
            config.m = m;
        }
        if let Some(q) = opts.quota {
            config.quota = Some(q);
        }
        for r in &opts.recovery_recipients {
            if !config.recovery_recipients.iter().any(|x| x == r.trim()) {
                config.recovery_recipients.push(r.trim().to_string());
            }
        }
        crate::erasure::check_params(config.k as usize, config.m as usize)?;
        let json = serde_json::to_vec_pretty(&config)
            .map_err(|e| FormatError::Invalid(format!("cannot encode config: {e}")))?;
        write_private(&cfg_path, &json).map_err(|e| FormatError::io(&cfg_path, e))?;
        let home = Home {
            root: root.to_path_buf(),
            config,
        };
        home.store().create()?;
        Ok((home, created))
    }

    fn read_config(root: &Path) -> Result<Config, FormatError> {
        let p = root.join("config.json");
        let data = fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                FormatError::NotInitialised(root.to_path_buf())
            } else {
                FormatError::io(&p, e)
            }
        })?;
        let c: Config = serde_json::from_slice(&data)
            .map_err(|e| FormatError::Invalid(format!("{} is damaged: {e}", p.display())))?;
        if c.version != 1 {
            return Err(FormatError::Invalid(format!(
                "{} has version {}, which this swarmbak does not know",
                p.display(),
                c.version
            )));
        }
        Ok(c)
    }

    /// Opens an initialised home.
    pub fn open(root: &Path) -> Result<Home, FormatError> {
        let config = Self::read_config(root)?;
        Ok(Home {
            root: root.to_path_buf(),
            config,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn store(&self) -> Store {
        Store::new(self.root.join("store"))
    }
    pub fn identity_path(&self) -> PathBuf {
        self.root.join("identity.txt")
    }

    /// The machine's own identity.
    pub fn identities(&self) -> Result<Identities, FormatError> {
        let p = self.identity_path();
        let text = fs::read_to_string(&p).map_err(|e| FormatError::io(&p, e))?;
        Ok(Identities::parse_file(&text)?)
    }

    /// The key that names this machine's chunks.
    pub fn chunk_key(&self) -> Result<[u8; 32], FormatError> {
        let p = self.root.join("chunk-key");
        let text = fs::read_to_string(&p).map_err(|e| FormatError::io(&p, e))?;
        let mut k = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut k)
            .map_err(|_| FormatError::Invalid(format!("{} is damaged", p.display())))?;
        Ok(k)
    }

    /// Everyone a snapshot of this machine is encrypted to: the machine itself and the
    /// organisation's recovery recipients.
    pub fn recipients(&self) -> Result<Vec<Recipient>, FormatError> {
        let mut v = vec![Recipient::parse(&self.config.public_key)?];
        for r in &self.config.recovery_recipients {
            v.push(Recipient::parse(r)?);
        }
        Ok(v)
    }

    /// Takes the store's writer lock, failing at once with a clear message when another
    /// process holds it.
    pub fn lock(&self) -> Result<StoreLock, FormatError> {
        let p = self.root.join("lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| FormatError::io(&p, e))?;
        // flock through libc: the lock lives as long as the file descriptor.
        use std::os::fd::AsRawFd;
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(FormatError::Locked(self.root.clone()));
        }
        let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o600));
        Ok(StoreLock { _file: f })
    }
}

/// Held while a process writes the store; released on drop.
pub struct StoreLock {
    _file: fs::File,
}
