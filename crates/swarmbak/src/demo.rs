//! `swarmbak demo`: the whole pipeline on one machine, on a generated tree.
//!
//! Generates an office tree and an edge-case tree, backs them up to an owner machine whose
//! snapshots are also encrypted to an organisation recovery key, deletes `m` shards of
//! every stripe (as if the machines holding them were gone), restores with the recovery
//! key alone, and compares the result byte for byte and by metadata.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use rand::seq::SliceRandom;
use serde_json::json;
use swarmbak_format::restore::{LocalSource, SnapshotMeta};
use swarmbak_format::{backup, restore, Home, Identities, Identity, RestoreOptions};
use swarmbak_node::{InitOptions, NodeConfig};

use crate::failure::Failure;
use crate::ui::Ui;
use crate::Ctx;

pub fn say(ctx: &Ctx, step: &str, msg: String) {
    if ctx.json {
        say!("{}", json!({"event": "demo", "step": step, "message": msg}));
    } else {
        say!("{msg}");
    }
}

pub fn run(
    ctx: &Ctx,
    size: &str,
    tree: Option<PathBuf>,
    keep: bool,
    offline: bool,
) -> Result<(), Failure> {
    let bytes = swarmbak_node::parse_size(size)
        .ok_or_else(|| Failure::usage(format!("--size {size:?}: give a size like 48M or 1G")))?;
    let work = std::env::temp_dir().join(format!(
        "swarmbak-demo-{}",
        hex::encode(rand::random::<[u8; 4]>())
    ));
    fs::create_dir_all(&work)?;
    let r = if offline {
        run_in(ctx, &work, bytes, tree)
    } else {
        crate::demo_swarm::run(ctx, &work, bytes, tree)
    };
    if keep || r.is_err() {
        say(
            ctx,
            "kept",
            format!("working directory kept: {}", work.display()),
        );
    } else {
        let _ = fs::remove_dir_all(&work);
    }
    r
}

pub fn run_in(
    ctx: &Ctx,
    work: &std::path::Path,
    bytes: u64,
    tree: Option<PathBuf>,
) -> Result<(), Failure> {
    let t0 = Instant::now();
    let sources = sample_data(ctx, work, bytes, tree)?;
    run_offline(ctx, work, sources, t0)
}

/// The tree the demo backs up: the one given, or a generated office tree and edge-case tree.
pub fn sample_data(
    ctx: &Ctx,
    work: &std::path::Path,
    bytes: u64,
    tree: Option<PathBuf>,
) -> Result<Vec<PathBuf>, Failure> {
    Ok(match tree {
        Some(t) => vec![t],
        None => {
            let office = work.join("data/office");
            let edge = work.join("data/edge");
            let so = crate::demo_data::office(&office, bytes, 1)?;
            let se = crate::demo_data::edge(&edge, 1)?;
            say(
                ctx,
                "generate",
                format!(
                    "generated an office tree ({} files, {} MB) and an edge-case tree ({} files, {} symlinks) in {}",
                    so.files,
                    so.bytes / 1_000_000,
                    se.files,
                    se.symlinks,
                    work.join("data").display()
                ),
            );
            vec![office, edge]
        }
    })
}

fn run_offline(
    ctx: &Ctx,
    work: &std::path::Path,
    sources: Vec<PathBuf>,
    t0: Instant,
) -> Result<(), Failure> {
    // 2. The organisation's recovery key and the owner machine.
    let recovery = Identity::generate();
    let recovery_file = work.join("recovery-key.txt");
    fs::write(&recovery_file, recovery.to_identity_file())?;
    let (cfg, _) = NodeConfig::init(
        &work.join("owner"),
        &InitOptions {
            name: Some("demo-laptop".into()),
            recovery_recipients: vec![recovery.to_public().to_string()],
            ..Default::default()
        },
    )?;
    let home = Home::open(&work.join("owner"))?;
    say(
        ctx,
        "init",
        format!(
            "machine {:?} enrolled; its backups are encrypted to itself ({}) and to the organisation recovery key ({})",
            cfg.name,
            cfg.public_key,
            recovery.to_public()
        ),
    );

    // 3. Back up.
    let ui = Ui::new(ctx.json, "backup");
    let t = Instant::now();
    let r = backup(
        &home,
        &cfg.backup_options(sources.clone(), &work.join("owner"))?,
        &ui,
    );
    ui.finish();
    let r = r?;
    let secs = t.elapsed().as_secs_f64();
    let store = home.store();
    let meta = SnapshotMeta::parse(&r.infohash, &store.torrent_bytes(&r.infohash)?)?;
    let l = meta.layout;
    say(
        ctx,
        "backup",
        format!(
            "snapshot {}: {} files, {} MB read in {:.1}s ({:.0} MB/s); payload {} MB in {} stripes of {}+{} shards of {} KiB",
            r.infohash,
            r.info.files,
            r.info.bytes / 1_000_000,
            secs,
            r.info.bytes as f64 / 1e6 / secs.max(1e-6),
            r.info.payload_bytes / 1_000_000,
            l.stripes,
            l.k,
            l.m,
            l.shard_size >> 10
        ),
    );

    // 4. Lose m shards of every stripe, data and parity alike.
    let mut rng = rand::thread_rng();
    let mut lost = 0;
    for s in 0..l.stripes {
        let mut idx: Vec<usize> = (0..l.n()).collect();
        idx.shuffle(&mut rng);
        for &i in &idx[..l.m] {
            fs::remove_file(store.shard_path(&r.infohash, l.piece(s, i)))?;
            lost += 1;
        }
    }
    say(
        ctx,
        "lose",
        format!(
            "deleted {lost} of {} shards ({} of every stripe of {}), as if the machines holding them were gone",
            l.pieces(),
            l.m,
            l.n()
        ),
    );

    // 5. Restore with the recovery key alone.
    let ids = Identities::parse_file(&fs::read_to_string(&recovery_file)?)?;
    let target = work.join("restored");
    let ui = Ui::new(ctx.json, "restore");
    let t = Instant::now();
    let src = LocalSource {
        store: &store,
        repair: true,
    };
    let rr = restore(
        &src,
        &r.infohash,
        &RestoreOptions {
            target: target.clone(),
            paths: Vec::new(),
            identities: ids,
        },
        &QuietRepairs(&ui),
    );
    ui.finish();
    let rr = rr?;
    let secs = t.elapsed().as_secs_f64();
    say(
        ctx,
        "restore",
        format!(
            "restored {} files ({} MB) with the recovery key only in {:.1}s ({:.0} MB/s); {} lost shards rebuilt from the others",
            rr.files,
            rr.bytes / 1_000_000,
            secs,
            rr.bytes as f64 / 1e6 / secs.max(1e-6),
            rr.repaired.len()
        ),
    );

    // 6. Compare.
    let diffs = compare(&sources, &target)?;
    verdict(ctx, &diffs, t0)
}

/// Every difference between each backed-up tree and its restored copy under `target`.
pub fn compare(sources: &[PathBuf], target: &std::path::Path) -> Result<Vec<String>, Failure> {
    let mut diffs = Vec::new();
    for s in sources {
        let name = swarmbak_format::backup::root_name(s)?;
        let restored = target.join(std::str::from_utf8(&name).unwrap_or("?"));
        diffs.extend(swarmbak::treecmp::diff(s, &restored, true)?);
    }
    Ok(diffs)
}

/// Says plainly whether the restore was checked equal; fails when it was not.
pub fn verdict(ctx: &Ctx, diffs: &[String], t0: Instant) -> Result<(), Failure> {
    if diffs.is_empty() {
        say(
            ctx,
            "verified",
            format!(
                "OK: the restored tree is byte-for-byte identical to the original (contents, names, modes, mtimes, symlinks); demo took {:.1}s",
                t0.elapsed().as_secs_f64()
            ),
        );
        Ok(())
    } else {
        for d in diffs.iter().take(20) {
            say(ctx, "difference", format!("DIFFERENT: {d}"));
        }
        Err(Failure::new(
            1,
            format!(
                "the restored tree differs from the original in {} places",
                diffs.len()
            ),
        ))
    }
}

/// Repairs are expected in the demo (it deleted the shards): report them as a count, not
/// one warning per shard.
struct QuietRepairs<'a>(&'a Ui);
impl swarmbak_format::Progress for QuietRepairs<'_> {
    fn scanned(&self, f: u64, b: u64, u: u64) {
        self.0.scanned(f, b, u)
    }
    fn advance(&self, n: u64) {
        self.0.advance(n)
    }
    fn stage(&self, s: &str) {
        self.0.stage(s)
    }
}
