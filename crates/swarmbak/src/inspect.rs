//! `inspect`: print a torrent's metainfo, or say clearly why it is not valid.

use std::fs;
use std::path::Path;

use serde_json::json;

use crate::failure::Failure;
use crate::render::out;
use crate::Ctx;

type R = Result<(), Failure>;

fn load_torrent(ctx: &Ctx, what: &str) -> Result<(Vec<u8>, String), Failure> {
    let p = Path::new(what);
    if p.is_file() {
        let b = fs::read(p).map_err(|e| Failure::new(1, format!("{what}: {e}")))?;
        return Ok((b, what.to_string()));
    }
    let store = swarmbak_format::Store::new(ctx.home.join("store"));
    let ih = store.resolve(what).map_err(|e| {
        Failure::new(
            1,
            format!("{what} is neither a file nor a snapshot in the local store: {e}"),
        )
    })?;
    Ok((store.torrent_bytes(&ih)?, ih.to_hex()))
}

pub fn inspect(ctx: &Ctx, what: &str) -> R {
    let (bytes, _) = load_torrent(ctx, what)?;
    let mi = swarmbak_metainfo::Metainfo::from_bytes(&bytes)
        .map_err(|e| Failure::new(1, format!("{what}: not valid metainfo: {e}")))?;
    let files: Vec<serde_json::Value> = mi
        .files()
        .iter()
        .map(|f| {
            json!({"path": f.path.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("/"),
                   "length": f.length, "padding": f.is_padding()})
        })
        .collect();
    let unsafe_paths: Vec<String> = mi
        .unsafe_paths()
        .iter()
        .map(|u| {
            format!(
                "{} {}: component {:?} ({:?})",
                match u.file {
                    Some(i) => format!("file {i}"),
                    None => "the torrent's name".to_string(),
                },
                if u.in_symlink_target {
                    "symlink target"
                } else {
                    "path"
                },
                String::from_utf8_lossy(&u.component),
                u.problem
            )
        })
        .collect();
    let sb = mi.swarmbak().map(|p| {
        json!({"format": p.format, "k": p.k, "m": p.m, "stripes": p.stripes,
               "payload_length": p.payload_length, "manifest_offset": p.manifest_offset,
               "manifest_length": p.manifest_length, "id": hex::encode(p.id)})
    });
    let v = json!({
        "infohash": mi.info_hash_hex(),
        "name": String::from_utf8_lossy(mi.name()),
        "piece_length": mi.piece_length(),
        "pieces": mi.pieces().len(),
        "total_length": mi.total_length(),
        "private": mi.is_private(),
        "announce": mi.announce(),
        "files": files,
        "unsafe_paths": unsafe_paths,
        "swarmbak": sb,
    });
    out(ctx, v, || {
        let mut s = format!(
            "infohash:     {}\nname:         {}\npiece length: {}\npieces:       {}\ntotal length: {}\nprivate:      {}\nannounce:     {}\n",
            mi.info_hash_hex(),
            String::from_utf8_lossy(mi.name()),
            mi.piece_length(),
            mi.pieces().len(),
            mi.total_length(),
            if mi.is_private() { "yes" } else { "no" },
            mi.announce().unwrap_or("-"),
        );
        s.push_str(&format!("files:        {}\n", mi.files().len()));
        for f in mi.files().iter().take(20) {
            s.push_str(&format!(
                "  {} ({} bytes){}\n",
                f.path
                    .iter()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join("/"),
                f.length,
                if f.is_padding() { " [padding]" } else { "" }
            ));
        }
        if mi.files().len() > 20 {
            s.push_str(&format!("  ... and {} more\n", mi.files().len() - 20));
        }
        for u in &unsafe_paths {
            s.push_str(&format!("UNSAFE PATH (never written by fetch): {u}\n"));
        }
        match mi.swarmbak() {
            Some(p) => s.push_str(&format!(
                "swarmbak:     format {}, stripes of {}+{} shards, {} stripes, payload {} bytes, manifest at {}+{}",
                p.format, p.k, p.m, p.stripes, p.payload_length, p.manifest_offset, p.manifest_length
            )),
            None => s.push_str("swarmbak:     - (a plain torrent)"),
        }
        s
    });
    Ok(())
}
