//! `swarmbak demo`: a whole organisation on loopback. A private tracker and five machines
//! run as real processes, each machine enrolled by the administrator (`swarmbak tracker
//! enroll`, then `swarmbak init --enroll` on the machine); one machine backs up until
//! durable; it is stolen (and revoked) and some other machines are switched off; a new
//! machine, enrolled in its place, restores it with the organisation's recovery key; the
//! result is compared byte for byte; everything is shut down.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use swarmbak_format::Identity;
use swarmbak_node::NodeConfig;

use crate::demo::{compare, sample_data, say, verdict};
use crate::failure::Failure;
use crate::Ctx;

/// Quick reactions for a demo on one machine (the defaults suit an office).
const FAST: &[(&str, &str)] = &[
    ("SWARMBAK_POLL_SECS", "0.5"),
    ("SWARMBAK_ANNOUNCE_SECS", "0.5"),
    ("SWARMBAK_HEALTH_SECS", "1.5"),
    ("SWARMBAK_TAKEOVER_SECS", "2"),
];

/// Child processes, killed when dropped (so an error anywhere still shuts down).
struct Procs(Vec<(String, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn exe() -> Result<PathBuf, Failure> {
    std::env::current_exe()
        .map_err(|e| Failure::new(1, format!("cannot find the swarmbak executable: {e}")))
}

fn cmd(args: &[&str]) -> Result<Command, Failure> {
    let mut c = Command::new(exe()?);
    c.args(args);
    for (k, v) in FAST {
        c.env(k, v);
    }
    Ok(c)
}

/// Starts a listening command and returns it with its address.
fn spawn_listening(name: &str, args: &[&str], log: &Path) -> Result<(Child, String), Failure> {
    let err = fs::File::create(log)?;
    let mut child = cmd(args)?
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|e| Failure::new(1, format!("cannot start {name}: {e}")))?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| Failure::new(1, "no stdout"))?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .ok_or_else(|| Failure::new(1, format!("{name} did not start (see {})", log.display())))?
        .to_string();
    Ok((child, addr))
}

/// What the administrator sees: every machine's backup status from the admin API (the
/// same as the dashboard at `http://ADDR/`, which signs in with `DATA/admin-token`).
fn dashboard(ctx: &Ctx, data: &Path, taddr: &str) -> Result<(), Failure> {
    let token_file = data.join("admin-token");
    let token = fs::read_to_string(&token_file)?.trim().to_owned();
    let client = swarmbak_tracker::TrackerClient::new(&format!("http://{taddr}"))
        .map_err(|e| Failure::new(1, e.to_string()))?;
    let v = swarmbak_node::runtime()?
        .block_on(client.admin_get(&token, "machines?revoked=1&sort=name"))
        .map_err(|e| Failure::new(1, format!("the admin API: {e}")))?;
    let mut lines = Vec::new();
    for m in v["machines"].as_array().into_iter().flatten() {
        let success = match m["age_days"].as_i64() {
            Some(d) => format!("last backup {d} days ago"),
            None => "never backed up".to_owned(),
        };
        let seen = match (m["last_seen"].as_i64(), v["now"].as_i64()) {
            (Some(t), Some(now)) => format!("seen {}s ago", (now - t).max(0)),
            _ => "never seen".to_owned(),
        };
        lines.push(format!(
            "  {:<12} {:<6} {:<8} {seen:<13} {success}, {} snapshot(s)",
            m["name"].as_str().unwrap_or("?"),
            m["user"].as_str().unwrap_or("-"),
            m["status"].as_str().unwrap_or("?"),
            m["snapshots"],
        ));
    }
    say(
        ctx,
        "dashboard",
        format!(
            "the administrator's view (GET /api/v1/machines; the dashboard is http://{taddr}/, signed in with the token in {}):\n{}",
            token_file.display(),
            lines.join("\n")
        ),
    );
    Ok(())
}

/// Waits (at most a minute) for desk-anna's agent to have made its first scheduled backup,
/// and says what `swarmbak status` shows of it.
fn scheduled(ctx: &Ctx, home: &Path) -> Result<(), Failure> {
    let home_s = home.to_str().unwrap_or(".");
    let t = Instant::now();
    loop {
        let st: serde_json::Value =
            serde_json::from_str(run_cmd(&["--home", home_s, "--json", "status"])?.trim())
                .unwrap_or_default();
        let b = &st["backup"];
        if let Some(ih) = b["last_success"]["infohash"].as_str() {
            say(
                ctx,
                "scheduled",
                format!(
                    "desk-anna backed itself up ({}; {}): snapshot {ih}, {} files read; next backup in an hour (`swarmbak status`)",
                    b["last_success"]["why"].as_str().unwrap_or("?"),
                    b["last_success"]["how"].as_str().unwrap_or("?"),
                    b["last_success"]["files_read"],
                ),
            );
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(60) {
            return Err(Failure::new(
                1,
                format!("desk-anna made no scheduled backup within a minute: {st}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn run_cmd(args: &[&str]) -> Result<String, Failure> {
    let o = cmd(args)?.output()?;
    if !o.status.success() {
        return Err(Failure::new(
            1,
            format!(
                "`swarmbak {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn held(home: &Path, ih: &str) -> Vec<usize> {
    fs::read_dir(home.join("store/snapshots").join(ih).join("shards"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The administrator enrols `name` (`swarmbak tracker enroll`, a one-time token) and the
/// machine redeems the token (`swarmbak init --enroll`): keys, certificate, passkey and the
/// organisation's recovery recipients, in `home`.
fn enrol(
    ctx: &Ctx,
    data: &str,
    home: &Path,
    name: &str,
    user: Option<&str>,
    vip: bool,
    domain: &str,
) -> Result<(), Failure> {
    let mut args = vec![
        "tracker", "enroll", "--data", data, "--name", name, "--domain", domain,
    ];
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    if vip {
        args.push("--vip");
    }
    let out = run_cmd(&args)?;
    let token = out.lines().next().unwrap_or("").trim().to_string();
    run_cmd(&[
        "--home",
        home.to_str().unwrap_or("."),
        "init",
        "--enroll",
        &token,
    ])?;
    let c = NodeConfig::load(home)?;
    if c.name != name || c.enrolment.is_none() {
        return Err(Failure::new(
            1,
            format!(
                "{name}: init --enroll left it unenrolled (see {})",
                home.display()
            ),
        ));
    }
    say(
        ctx,
        "enrol",
        format!(
            "enrolled {name}{}{}, {domain}: a one-time token from `swarmbak tracker enroll`, redeemed by `swarmbak init --enroll` for its certificate, passkey and the recovery key",
            user.map(|u| format!(" (user {u})")).unwrap_or_default(),
            if vip { ", VIP" } else { "" },
        ),
    );
    Ok(())
}

pub fn run(ctx: &Ctx, work: &Path, bytes: u64, tree: Option<PathBuf>) -> Result<(), Failure> {
    let t0 = Instant::now();
    let sources = sample_data(ctx, work, bytes, tree)?;
    let mut procs = Procs(Vec::new());

    // The organisation: a recovery key kept offline, a private tracker that hands its
    // public half to every machine it enrols, five machines enrolled by the administrator.
    let recovery = Identity::generate();
    let recovery_file = work.join("recovery-key.txt");
    fs::write(&recovery_file, recovery.to_identity_file())?;
    let recovery_pub = recovery.to_public().to_string();
    let data = work.join("tracker");
    let data_s = data.to_str().unwrap_or(".");
    let (tracker, taddr) = spawn_listening(
        "tracker",
        &[
            "tracker",
            "--listen",
            "127.0.0.1:0",
            "--data",
            data_s,
            "--interval",
            "2",
            "--recovery-recipient",
            &recovery_pub,
        ],
        &work.join("tracker.log"),
    )?;
    procs.0.push(("tracker".into(), tracker));
    say(
        ctx,
        "tracker",
        format!(
            "private tracker listening on {taddr}: only machines the administrator enrols may announce or publish; organisation recovery key {recovery_pub} (kept offline)"
        ),
    );
    // (name, user, VIP, SITE/ROOM)
    let machines: [(&str, Option<&str>, bool, &str); 5] = [
        ("demo-laptop", Some("dana"), true, "hq/board"),
        ("desk-anna", Some("anna"), false, "hq/2.14"),
        ("desk-ben", Some("ben"), false, "hq/2.15"),
        ("desk-chloe", Some("chloe"), false, "annex/1.02"),
        ("desk-dev", None, false, "annex/lab"),
    ];
    let names: Vec<&str> = machines.iter().map(|m| m.0).collect();
    let mut homes = Vec::new();
    for (n, user, vip, domain) in machines {
        let h = work.join(n);
        enrol(ctx, data_s, &h, n, user, vip, domain)?;
        homes.push(h);
    }
    let list = run_cmd(&["tracker", "machines", "--data", data_s])?;
    say(
        ctx,
        "machines",
        format!("the administrator's list:\n{}", list.trim_end()),
    );
    // anna's desktop backs itself up: its backup set and interval, then its agent.
    let anna_docs = work.join("anna-documents");
    fs::create_dir_all(anna_docs.join("minutes"))?;
    for i in 1..=12 {
        fs::write(
            anna_docs
                .join("minutes")
                .join(format!("meeting-{i:02}.txt")),
            format!("Minutes of meeting {i}: budget approved, next review in spring.\n").repeat(40),
        )?;
    }
    let anna_docs_s = anna_docs.to_str().unwrap_or(".");
    run_cmd(&[
        "--home",
        homes[1].to_str().unwrap_or("."),
        "init",
        "--backup",
        anna_docs_s,
        "--every",
        "1h",
    ])?;
    say(
        ctx,
        "schedule",
        format!("desk-anna: `swarmbak init --backup {anna_docs_s} --every 1h`: its agent backs that up by itself, at once the first time, then hourly"),
    );
    let mut agents = Vec::new();
    for (n, h) in names.iter().zip(&homes).skip(1) {
        let (c, addr) = spawn_listening(
            n,
            &[
                "--home",
                h.to_str().unwrap_or("."),
                "agent",
                "--listen",
                "127.0.0.1:0",
            ],
            &work.join(format!("{n}.log")),
        )?;
        say(
            ctx,
            "agent",
            format!("machine {n} runs its agent on {addr}"),
        );
        agents.push(procs.0.len());
        procs.0.push((n.to_string(), c));
    }

    // The laptop backs up until every shard is held by 2 other machines.
    let owner = &homes[0];
    let mut args: Vec<String> = vec!["--home".into(), owner.display().to_string(), "seed".into()];
    args.extend(sources.iter().map(|s| s.display().to_string()));
    args.extend(["--timeout".into(), "180".into()]);
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let t = Instant::now();
    let out = run_cmd(&a)?;
    let ih = out.lines().next().unwrap_or("").to_string();
    for l in out.lines().skip(1) {
        say(ctx, "seed", format!("demo-laptop: {l}"));
    }
    say(
        ctx,
        "durable",
        format!(
            "snapshot {ih} backed up, published and durable in {:.1}s",
            t.elapsed().as_secs_f64()
        ),
    );
    for (n, h) in names.iter().zip(&homes).skip(1) {
        say(
            ctx,
            "holders",
            format!("  {n} holds {} shards", held(h, &ih).len()),
        );
    }
    scheduled(ctx, &homes[1])?;

    // The laptop is stolen, and some desktops are switched off.
    fs::remove_dir_all(owner)?;
    let j: serde_json::Value = serde_json::from_str(
        run_cmd(&[
            "--home",
            homes[1].to_str().unwrap_or("."),
            "--json",
            "inspect",
            &ih,
        ])?
        .lines()
        .next()
        .unwrap_or("{}"),
    )
    .unwrap_or_default();
    let k = j["swarmbak"]["k"].as_u64().unwrap_or(1) as usize;
    let n = k + j["swarmbak"]["m"].as_u64().unwrap_or(0) as usize;
    let pieces = j["pieces"].as_u64().unwrap_or(0) as usize;
    let holders: Vec<Vec<usize>> = homes[1..].iter().map(|h| held(h, &ih)).collect();
    let mut off = Vec::new();
    for cand in 0..holders.len() {
        if off.len() == 2 {
            break;
        }
        let mut trial = off.clone();
        trial.push(cand);
        let mut have = vec![false; pieces];
        for (a, hs) in holders.iter().enumerate() {
            if !trial.contains(&a) {
                for &p in hs {
                    have[p] = true;
                }
            }
        }
        if (0..pieces / n.max(1)).all(|s| (0..n).filter(|&i| have[s * n + i]).count() >= k) {
            off = trial;
        }
    }
    for a in &off {
        let (name, c) = &mut procs.0[agents[*a]];
        let _ = c.kill();
        let _ = c.wait();
        say(ctx, "off", format!("{name} is switched off"));
    }
    say(
        ctx,
        "lost",
        "demo-laptop is stolen: its disk and keys are gone".to_string(),
    );
    run_cmd(&["tracker", "revoke", "--data", data_s, "demo-laptop"])?;
    say(
        ctx,
        "revoke",
        "the administrator revokes demo-laptop (swarmbak tracker revoke): its passkey stops working at once; its snapshots stay listed and restorable".to_string(),
    );
    dashboard(ctx, &data, &taddr)?;

    // A new laptop for dana: enrolled with a fresh token; the recovery key restores.
    let newh = work.join("new-laptop");
    enrol(
        ctx,
        data_s,
        &newh,
        "new-laptop",
        Some("dana"),
        true,
        "hq/board",
    )?;
    let list = run_cmd(&[
        "--home",
        newh.to_str().unwrap_or("."),
        "snapshots",
        "--machine",
        "demo-laptop",
    ])?;
    say(
        ctx,
        "find",
        format!(
            "the tracker lists demo-laptop's snapshots:\n{}",
            list.trim_end()
        ),
    );
    let health = run_cmd(&["--home", newh.to_str().unwrap_or("."), "health", &ih])
        .unwrap_or_else(|f| f.message);
    say(ctx, "health", health.trim_end().to_string());
    let target = work.join("restored");
    let t = Instant::now();
    let out = run_cmd(&[
        "--home",
        newh.to_str().unwrap_or("."),
        "fetch",
        &ih,
        "--to",
        target.to_str().unwrap_or("."),
        "--identity",
        recovery_file.to_str().unwrap_or("."),
    ])?;
    say(
        ctx,
        "fetch",
        format!(
            "new-laptop: {} ({:.1}s)",
            out.lines().next().unwrap_or("").trim(),
            t.elapsed().as_secs_f64()
        ),
    );

    let diffs = compare(&sources, &target)?;
    drop(procs);
    say(ctx, "shutdown", "tracker and agents stopped".to_string());
    verdict(ctx, &diffs, t0)
}
