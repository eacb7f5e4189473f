//! swarmbak machines with Debian's opentracker (whitelist-only) instead of the swarmbak
//! tracker (issue 4, item 3).
//!
//! opentracker tracks peers and nothing else: no `POST /publish`, no `GET /metainfo`, no
//! `GET /snapshots`. What works today: the owner's agent seeds its snapshot and announces
//! it (once the infohash is whitelisted and opentracker reloaded its list with SIGHUP), and
//! a new machine fetches it by infohash alone — the metadata over BEP 9 from the swarmbak
//! peers opentracker lists — and restores it byte-identical with the recovery key.
//! `seed --until published` cannot publish (opentracker answers the POST with HTTP 400):
//! it says so and announces only. Agents, which discover snapshots through the swarmbak
//! tracker's `GET /snapshots`, fall back to opentracker's full scrape and fetch each
//! torrent's metainfo over BEP 9 from the swarmbak peers seeding it, then replicate.

use std::time::{Duration, Instant};

use swarmbak_interop_tests::clients::{
    agent, assert_same_tree, init_machine, record, regenerate_table, swarmbak_fast, wait_for,
    OpenTracker,
};
use swarmbak_interop_tests::{age_public_key, require_tool, Cmd};

struct Setup {
    _tmp: tempfile::TempDir,
    ot: OpenTracker,
    recovery: std::path::PathBuf,
    src: std::path::PathBuf,
    ih: String,
    owner_agent: swarmbak_interop_tests::clients::Bg,
    seed_out: swarmbak_interop_tests::Output,
}

fn setup() -> Setup {
    require_tool("age-keygen");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ot = OpenTracker::start();
    let recovery = t.join("recovery.txt");
    Cmd::new("age-keygen").arg("-o").arg(&recovery).run();
    let home = t.join("owner");
    init_machine(&home, "owner", &ot.url(), &age_public_key(&recovery));
    let (owner_agent, _) = agent("owner agent", &home);
    let src = t.join("src");
    swarmbak_gentree::office(&src, 1 << 20, 11).unwrap();
    let seed_out = swarmbak_fast(&home)
        .arg("seed")
        .arg(&src)
        .args(["--until", "published", "--timeout", "10"])
        .run_unchecked();
    let ih = seed_out.first_line();
    assert_eq!(
        ih.len(),
        40,
        "seed prints the infohash first even when publishing fails:\n{}{}",
        seed_out.stdout_str(),
        seed_out.stderr_str()
    );
    ot.allow(&ih);
    Setup {
        _tmp: tmp,
        ot,
        recovery,
        src,
        ih,
        owner_agent,
        seed_out,
    }
}

#[test]
fn opentracker_seed_and_fetch() {
    let s = setup();
    let t = s._tmp.path();
    let publish = if s.seed_out.status.success() {
        "seed --until published succeeded".to_string()
    } else {
        let err = s.seed_out.stderr_str();
        assert!(
            err.contains("could not publish") && err.contains("local store"),
            "seed failed for another reason than publishing: {err}"
        );
        format!(
            "seed --until published exits {} (POST /publish: {}); snapshot kept and seeded by the agent",
            s.seed_out.status.code().unwrap_or(-1),
            if err.contains("400") { "HTTP 400" } else { "refused" }
        )
    };
    eprintln!("with opentracker: {publish}");

    // A new machine, pointed at opentracker, fetches by infohash only: the metadata comes
    // over BEP 9 from the owner's agent, the shards from it too.
    let home = t.join("new");
    init_machine(&home, "new", &s.ot.url(), &age_public_key(&s.recovery));
    let to = t.join("restored");
    let t0 = Instant::now();
    let out = swarmbak_fast(&home)
        .args(["fetch", &s.ih, "--to"])
        .arg(&to)
        .arg("--identity")
        .arg(&s.recovery)
        .run();
    let took = t0.elapsed();
    assert_same_tree(&s.src, &to.join(s.src.file_name().unwrap()));
    eprintln!("{}", out.stdout_str());
    record(
        "opentracker",
        "Debian opentracker (whitelist)",
        "tracker",
        true,
        &format!(
            "swarmbak seeds, announces and fetches (metadata over BEP 9 from swarmbak peers) in {:.1}s; {publish}; agents replicate by full scrape + BEP 9 (opentracker_replicates)",
            took.as_secs_f64()
        ),
    );
    drop(s.owner_agent);
    regenerate_table();
}

/// Agents discover snapshots on opentracker by full scrape and get their metainfo over
/// BEP 9 from the swarmbak peers seeding them.
#[test]
fn opentracker_replicates() {
    let s = setup();
    let t = s._tmp.path();
    let home = t.join("holder");
    init_machine(&home, "holder", &s.ot.url(), &age_public_key(&s.recovery));
    let (_holder, _) = agent("holder agent", &home);
    let shards = home.join("store/snapshots").join(&s.ih).join("shards");
    wait_for(
        "the holder agent to replicate shards of the snapshot",
        Duration::from_secs(30),
        || {
            std::fs::read_dir(&shards)
                .ok()
                .and_then(|d| (d.count() > 0).then_some(()))
        },
    );
}
