//! A machine's home as the format sees it: its keys and its local store. The node's
//! settings (name, tracker, copies, ...) live with the node (crates/node), in the same
//! directory.
//!
//! ```text
//! HOME/identity.txt    the machine's age identity (mode 0600), in age-keygen's format
//! HOME/chunk-key       the keyed-BLAKE3 key that names this machine's chunks (mode 0600)
//! HOME/lock            held (flock) by whoever writes the store
//! HOME/store/...       see `store.rs`
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::crypto::{Identities, Identity, Recipient};
use crate::store::Store;
use crate::FormatError;

pub struct Home {
    root: PathBuf,
}

/// Writes `data` to `path` readable by its owner only, atomically (temporary file,
/// fsync, rename).
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
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

/// Appends one line (a newline is added) to the log at `path`, made if absent, in one
/// write: with `O_APPEND` the kernel appends it whole, so processes and threads writing
/// at once never interleave their lines (`writeln!` writes each formatted piece apart).
pub fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let line = format!("{line}\n");
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
}

impl Home {
    /// Creates the machine's keys and store the first time; afterwards leaves them as
    /// they are (keys are never replaced). Returns the home and whether the keys were
    /// made now.
    pub fn create(root: &Path) -> Result<(Home, bool), FormatError> {
        fs::create_dir_all(root).map_err(|e| FormatError::io(root, e))?;
        let id_path = root.join("identity.txt");
        let key_path = root.join("chunk-key");
        let created = !id_path.exists();
        if created {
            if key_path.exists() {
                return Err(FormatError::Invalid(format!(
                    "{} exists but identity.txt does not: refusing to replace a key; move it away or restore identity.txt",
                    key_path.display()
                )));
            }
            let id = Identity::generate();
            write_private(&id_path, id.to_identity_file().as_bytes())
                .map_err(|e| FormatError::io(&id_path, e))?;
            let key: [u8; 32] = rand::random();
            write_private(&key_path, hex::encode(key).as_bytes())
                .map_err(|e| FormatError::io(&key_path, e))?;
            // A new home is this user's alone: keys, the manifests it keeps unencrypted
            // and what it holds for others.
            fs::set_permissions(root, fs::Permissions::from_mode(0o700))
                .map_err(|e| FormatError::io(root, e))?;
        }
        let home = Home {
            root: root.to_path_buf(),
        };
        home.store().create()?;
        Ok((home, created))
    }

    /// Opens a home made by [`Home::create`]. The keys are read when needed: repair and
    /// scrub need none, so a home whose identity is gone can still mend its store.
    pub fn open(root: &Path) -> Result<Home, FormatError> {
        if !root.join("identity.txt").exists() && !root.join("store").is_dir() {
            return Err(FormatError::NotInitialised(root.to_path_buf()));
        }
        Ok(Home {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
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

    /// This machine's own recipient (the public half of its identity).
    pub fn recipient(&self) -> Result<Recipient, FormatError> {
        let ids = self.identities()?;
        ids.recipients().into_iter().next().ok_or_else(|| {
            FormatError::Invalid(format!(
                "{} holds no identity",
                self.identity_path().display()
            ))
        })
    }

    /// Everyone a snapshot of this machine is encrypted to: the machine itself (first)
    /// and the organisation's recovery recipients.
    pub fn recipients(&self, recovery: &[Recipient]) -> Result<Vec<Recipient>, FormatError> {
        let mut v = vec![self.recipient()?];
        v.extend(recovery.iter().cloned());
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
