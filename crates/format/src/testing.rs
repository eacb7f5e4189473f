//! Test helpers (feature `test-utils`): ways to make snapshots the normal pipeline never
//! makes, to check that readers refuse them.

use std::fs;
use std::os::unix::fs::FileExt;

use crate::backup::{build_torrent, commit};
use crate::home::Home;
use crate::manifest::{self, Manifest};
use crate::{crypto, FormatError, InfoHash};

/// Publishes a snapshot whose payload is `packs` followed by `manifest` (sealed and
/// encrypted to the home's own recipient, in stripes of `opts.k`+`opts.m`) WITHOUT
/// validating the manifest.
pub fn publish_raw(
    home: &Home,
    opts: &crate::BackupOptions,
    packs: &[u8],
    manifest: &Manifest,
) -> Result<InfoHash, FormatError> {
    let _lock = home.lock()?;
    let store = home.store();
    let build = store
        .tmp_dir()
        .join(format!("raw-{}", hex::encode(rand::random::<[u8; 8]>())));
    fs::create_dir_all(&build).map_err(|e| FormatError::io(&build, e))?;
    let sealed = manifest::seal(&manifest.encode())?;
    let ct = crypto::encrypt(&home.recipients(&opts.recovery)?, &sealed)?;
    let payload_path = build.join("payload");
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&payload_path)
        .map_err(|e| FormatError::io(&payload_path, e))?;
    f.write_all_at(packs, 0)
        .map_err(|e| FormatError::io(&payload_path, e))?;
    f.write_all_at(&ct, packs.len() as u64)
        .map_err(|e| FormatError::io(&payload_path, e))?;
    let len = (packs.len() + ct.len()) as u64;
    let built = build_torrent(
        &f,
        &build,
        len,
        packs.len() as u64,
        (opts.k, opts.m),
        None,
        0,
    )?;
    drop(f);
    fs::remove_file(&payload_path).map_err(|e| FormatError::io(&payload_path, e))?;
    commit(&store, &build, &built.infohash, &built.torrent, None)?;
    Ok(built.infohash)
}
