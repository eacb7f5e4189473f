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
    agent, assert_same_tree, enrol_machine, init_machine, record, regenerate_table, swarmbak_fast,
    swarmbak_tracker, wait_for, OpenTracker,
};
use swarmbak_interop_tests::{age_public_key, require_tool, Cmd};

/// `seed SRC --until published` on `home`, where the publish cannot go through (a tracker
/// that keeps no snapshots, or one that is down); the snapshot is whitelisted on `ot`.
/// Returns the output and the infohash, which seed prints first even so.
fn seed_where_publishing_fails(
    home: &std::path::Path,
    src: &std::path::Path,
    ot: &OpenTracker,
    timeout: &str,
) -> (swarmbak_interop_tests::Output, String) {
    let out = swarmbak_fast(home)
        .arg("seed")
        .arg(src)
        .args(["--until", "published", "--timeout", timeout])
        .run_unchecked();
    let ih = out.first_line();
    assert_eq!(
        ih.len(),
        40,
        "seed prints the infohash first even when publishing fails:\n{}{}",
        out.stdout_str(),
        out.stderr_str()
    );
    ot.allow(&ih);
    (out, ih)
}

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
    let (seed_out, ih) = seed_where_publishing_fails(&home, &src, &ot, "10");
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

/// Enrolled machines with opentracker as a peer-only tracker (`init --peer-tracker`,
/// swarm.md §6.1) while the company tracker is down: the holder finds the snapshot in
/// opentracker's full scrape, authenticates to the owner, takes the metainfo over BEP 9
/// and the owner's signed publish record in the swarm (wire.md type 5), checks it against
/// the organisation key and replicates. A snapshot a machine outside the organisation
/// seeds on the same opentracker is never held (it cannot authenticate, so it sends no
/// record). Before: an enrolled agent took nothing from a tracker that is not swarmbak's.
#[test]
fn enrolled_machines_replicate_through_opentracker_with_the_record_from_the_swarm() {
    require_tool("age-keygen");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let recovery = t.join("recovery.txt");
    Cmd::new("age-keygen").arg("-o").arg(&recovery).run();
    let recovery_pub = age_public_key(&recovery);
    let ot = OpenTracker::start();
    let data = t.join("tracker-data");
    let (mut company, _) = swarmbak_tracker(&data, &recovery_pub);
    let (owner, holder) = (t.join("owner"), t.join("holder"));
    for (home, name) in [(&owner, "owner"), (&holder, "holder")] {
        enrol_machine(home, &data, name);
        Cmd::swarmbak(home)
            .args(["init", "--peer-tracker", &ot.url()])
            .run();
    }
    // The company tracker goes down: nothing can be listed or published there.
    company.kill();

    // A machine of no organisation seeds on the same opentracker.
    let outsider = t.join("outsider");
    init_machine(&outsider, "outsider", &ot.url(), &recovery_pub);
    let (_outsider_agent, _) = agent("outsider agent", &outsider);
    let other_src = t.join("other");
    swarmbak_gentree::office(&other_src, 256 << 10, 5).unwrap();
    let (_, other) = seed_where_publishing_fails(&outsider, &other_src, &ot, "5");

    let (_owner_agent, _) = agent("owner agent", &owner);
    let src = t.join("src");
    swarmbak_gentree::office(&src, 1 << 20, 11).unwrap();
    let (out, ih) = seed_where_publishing_fails(&owner, &src, &ot, "5");
    assert!(
        !out.status.success(),
        "the company tracker is down, so the publish cannot have gone through: {}",
        out.stderr_str()
    );

    let (holder_agent, _) = agent("holder agent", &holder);
    let snap = holder.join("store/snapshots").join(&ih);
    let t0 = Instant::now();
    wait_for(
        "the enrolled holder to replicate shards of the owner's snapshot found on opentracker",
        Duration::from_secs(90),
        || {
            std::fs::read_dir(snap.join("shards"))
                .ok()
                .and_then(|d| (d.count() > 0).then_some(()))
        },
    );
    let took = t0.elapsed();
    // It kept the owner's record and certificate it checked (trust.md §4).
    let record_file = std::fs::read(snap.join("record")).expect("the owner's record is kept");
    assert_eq!(
        record_file,
        std::fs::read(owner.join("store/snapshots").join(&ih).join("record"))
            .expect("the owner keeps its signed record"),
        "the holder keeps exactly the record the owner signed"
    );
    // It looked at every torrent opentracker lists, the outsider's included, and
    // refused that one: the outsider could not authenticate, so nothing vouches for it.
    let refusal = wait_for(
        "the holder agent to refuse the outsider's snapshot",
        Duration::from_secs(30),
        || {
            holder_agent
                .stderr_lines()
                .into_iter()
                .find(|l| l.contains(&format!("not holding {other}")))
        },
    );
    assert!(
        refusal.contains("no member of the organisation sent a publish record that verifies"),
        "{refusal}"
    );
    assert!(
        !holder.join("store/snapshots").join(&other).exists(),
        "the holder kept a snapshot no member of its organisation vouches for"
    );
    eprintln!(
        "enrolled holder replicated through opentracker in {:.1}s; outsider's snapshot refused: {refusal}",
        took.as_secs_f64()
    );
}
