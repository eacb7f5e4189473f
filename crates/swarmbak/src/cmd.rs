//! The commands that look after this machine: init, seed, snapshots, health, repair,
//! export, agent, tracker. Each parses nothing (main.rs did), calls the node, and
//! renders what comes back.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use swarmbak_core::compact_duration;
use swarmbak_node::config::DEFAULT_EVERY;
use swarmbak_node::seed::{Maker, SeedPlan, Until};
use swarmbak_node::{InitOptions, Node, NodeConfig, SeedError};

use crate::failure::Failure;
use crate::render::{human_bytes, out, print_snapshot, utc};
use crate::ui::Ui;
use crate::Ctx;

type R = Result<(), Failure>;

/// `init`: `opts` as given, with `quota` still text (`50G`).
pub fn init(ctx: &Ctx, mut opts: InitOptions, quota: Option<String>, every: Option<String>) -> R {
    if let Some(q) = quota {
        opts.quota = Some(swarmbak_node::parse_size(&q).ok_or_else(|| {
            Failure::usage(format!("--quota {q:?}: give a size like 50G or 500M"))
        })?);
    }
    if let Some(e) = every {
        opts.every = Some(swarmbak_node::parse_duration(&e).ok_or_else(|| {
            Failure::usage(format!("--every {e:?}: give a duration like 30m, 6h or 1d"))
        })?);
    }
    let token = opts.enroll_token.take();
    let (mut c, created) = NodeConfig::init(
        &ctx.home,
        &InitOptions {
            // The enrolled name and tracker come from the enrolment.
            name: if token.is_some() {
                None
            } else {
                opts.name.clone()
            },
            tracker: if token.is_some() {
                None
            } else {
                opts.tracker.clone()
            },
            ..opts.clone()
        },
    )?;
    if let Some(t) = token {
        let rt = swarmbak_node::runtime()?;
        c = rt.block_on(swarmbak_node::enrol::enroll(&ctx.home, &t, &opts))?;
    }
    // An agent holding this home read its configuration when it started.
    let agent_running = !created
        && matches!(
            swarmbak_format::Home::open(&ctx.home).and_then(|h| h.lock()),
            Err(swarmbak_format::FormatError::Locked(_))
        );
    out(
        ctx,
        json!({"event": "init", "created": created, "home": ctx.home, "name": c.name,
               "agent_running": agent_running,
               "enrolled": c.enrolment.is_some(),
               "public_key": c.public_key, "tracker": c.tracker, "copies": c.copies,
               "k": c.k, "m": c.m, "quota": c.quota, "listen": c.listen, "peer_trackers": c.peer_trackers,
               "recovery_recipients": c.recovery_recipients,
               "backup": {"paths": c.backup.paths, "exclude": c.exclude_patterns(&ctx.home),
                          "default_excludes": c.backup.default_excludes,
                          "every": c.backup.every.unwrap_or(DEFAULT_EVERY.as_secs())},
               "retention": c.retention_policy(), "retention_default": c.retention.is_none()}),
        || {
            format!(
                "{} machine {:?} in {}\npublic key: {}\nrecovery recipients: {}\ntracker: {}{}\ncopies: {}, stripes of {}+{} shards\nquota for other machines' shards: {}",
                if created { "created" } else { "updated" },
                c.name,
                ctx.home.display(),
                c.public_key,
                if c.recovery_recipients.is_empty() {
                    "none (only this machine's key can restore its backups)".to_string()
                } else {
                    c.recovery_recipients.join(", ")
                },
                c.tracker.as_deref().unwrap_or("none (local only)"),
                if c.peer_trackers.is_empty() {
                    String::new()
                } else {
                    format!("\npeer-only trackers: {}", c.peer_trackers.join(", "))
                },
                c.copies,
                c.k,
                c.m,
                match c.quota {
                    Some(q) => format!(
                        "{}{}",
                        crate::render::human_bytes(q),
                        if created && opts.quota.is_none() {
                            " (chosen: a fifth of this disk, at most half of its free space; change it with --quota)"
                        } else {
                            ""
                        }
                    ),
                    None => "unlimited (set one with --quota)".to_string(),
                }
            ) + &backup_set_text(&c, &ctx.home)
                + if agent_running {
                    "\nthe agent running on this home uses these settings once restarted (systemctl restart swarmbak-agent, or stop and start `swarmbak agent`)"
                } else {
                    ""
                }
        },
    );
    Ok(())
}

/// What `init` says of the backup set.
fn backup_set_text(c: &NodeConfig, home: &std::path::Path) -> String {
    let kept = format!(
        "\nsnapshots kept: {}{}",
        c.retention_policy(),
        if c.retention.is_none() {
            " (the default)"
        } else {
            ""
        }
    );
    if c.backup.paths.is_empty() {
        return format!("\nbackup set: none (the agent makes no backups by itself; add some with --backup PATH){kept}");
    }
    let every = c.backup.every.map_or_else(
        || {
            format!(
                "{} (the default)",
                compact_duration(DEFAULT_EVERY.as_secs())
            )
        },
        compact_duration,
    );
    format!(
        "\nbackup set: {}\nbacked up by the agent every {every}\nleft out: {}{kept}",
        c.backup
            .paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        c.exclude_patterns(home).join("  ")
    )
}

/// `swarmbak status`: what the running agent is doing.
pub fn status(ctx: &Ctx) -> R {
    let node = Node::open(&ctx.home)?;
    let rt = swarmbak_node::runtime()?;
    let client = swarmbak_node::control::ControlClient::new(&node.control_socket());
    let st = rt.block_on(client.status()).map_err(|e| {
        Failure::new(
            1,
            format!(
                "no agent answers on {} ({e}): start it with `swarmbak agent` (or its systemd unit, README)",
                node.control_socket().display()
            ),
        )
    })?;
    let v = serde_json::to_value(&st).map_err(|e| Failure::new(1, e.to_string()))?;
    out(ctx, v, || crate::render::status_text(&st));
    Ok(())
}

/// `swarmbak forget`: `policy` from the flags (none given: the configuration's).
pub fn forget(ctx: &Ctx, policy: swarmbak_core::retention::Policy, dry_run: bool) -> R {
    let node = Node::open(&ctx.home)?;
    let policy = if policy.is_empty() {
        node.config.retention_policy()
    } else {
        // 0 turns a setting off, as for init.
        let mut p = swarmbak_core::retention::Policy::default();
        p.overlay(&policy);
        p
    };
    let f = swarmbak_node::retention::forget_here_or_by_agent(&node, &policy, dry_run)
        .map_err(|e| Failure::new(1, e.to_string()))?;
    let v = serde_json::to_value(&f).map_err(|e| Failure::new(1, e.to_string()))?;
    out(ctx, v, || crate::render::forgot_text(&f));
    Ok(())
}

pub fn seed(
    ctx: &Ctx,
    paths: Vec<PathBuf>,
    until: Until,
    copies: Option<u32>,
    timeout: Option<u64>,
    listen: Option<&str>,
) -> R {
    let mut node = Node::open(&ctx.home)?;
    if listen.is_some() {
        node.settings.listen = NodeConfig::command_listen(Some(&node.config), listen)?;
    }
    if node.config.tracker.is_none() && until != Until::Published {
        return Err(SeedError::NoTracker.into());
    }
    if node.config.enrolment.is_none() && until == Until::Durable {
        return Err(SeedError::NotEnrolled.into());
    }
    let plan = SeedPlan {
        until,
        copies: copies.unwrap_or(node.config.copies) as usize,
        deadline: timeout.map(|s| Instant::now() + Duration::from_secs(s)),
    };
    let ui = Ui::new(ctx.json, "backup");
    let t0 = Instant::now();
    let started = swarmbak_tracker::server::unix_now();
    let made = swarmbak_node::seed::make(&node, paths, &ui);
    ui.finish();
    let made = match made {
        Ok(m) => m,
        Err(e) => {
            report_attempt(&node, started, (0, 0), Err(e.to_string()));
            return Err(e.into());
        }
    };
    let read = made.info.as_ref().map_or((0, 0), |i| (i.bytes, i.files));
    if until == Until::Forever {
        // Seeding never ends: the attempt is reported once its snapshot exists.
        report_attempt(&node, started, read, Ok(made.infohash.0));
    }
    let secs = match made.by {
        Maker::Here => t0.elapsed().as_secs_f64(),
        Maker::Agent(_) => 0.0,
    };
    // The contract: the infohash is the first line, before any announce.
    print_snapshot(
        ctx,
        &made.infohash,
        made.info.as_ref(),
        secs,
        node.config.tracker.is_some(),
    );
    let ui = Ui::new(ctx.json, "durable");
    let r = swarmbak_node::seed::publish_and_seed(&node, &made, &plan, &ui);
    ui.finish();
    report_attempt(
        &node,
        started,
        read,
        r.as_ref()
            .map(|_| made.infohash.0)
            .map_err(|e| e.to_string()),
    );
    Ok(r?)
}

/// Reports a backup attempt to the tracker (an enrolled machine only; tracker.md §7.6):
/// written to the outbox first, then sent with whatever earlier reports still wait. A
/// tracker that cannot take it now gets it with the next attempt; the user is told.
fn report_attempt(
    node: &Node,
    started: i64,
    (bytes, files): (u64, u64),
    outcome: Result<[u8; 20], String>,
) {
    let attempt = swarmbak_node::outbox::Attempt {
        start: started,
        end: swarmbak_tracker::server::unix_now(),
        bytes,
        files,
        outcome,
    };
    let Ok(rt) = swarmbak_node::runtime() else {
        return;
    };
    let sent = match rt.block_on(swarmbak_node::outbox::report(
        node,
        &attempt,
        Duration::from_secs(3),
    )) {
        Ok(Some(sent)) => sent,
        Ok(None) => return,
        Err(e) => {
            tell!("swarmbak: cannot keep this backup's report for the tracker: {e}");
            return;
        }
    };
    if let Some(why) = sent.error {
        let dir = swarmbak_node::outbox::dir(node);
        if sent.waiting > 0 {
            tell!(
                "swarmbak: {} backup report(s) wait in {} for the tracker ({why}); they are sent with the next backup",
                sent.waiting,
                dir.display()
            );
        }
        if sent.refused > 0 {
            tell!(
                "swarmbak: the tracker refused {} backup report(s) ({why}); kept in {}",
                sent.refused,
                dir.join("refused").display()
            );
        }
    }
}

/// `snapshots`: this machine's, or another machine's from the tracker.
pub fn snapshots(ctx: &Ctx, machine: Option<String>) -> R {
    if let Some(m) = machine {
        return machine_snapshots(ctx, &m);
    }
    let home = swarmbak_format::Home::open(&ctx.home)?;
    let store = home.store();
    let list = store.own_snapshots()?;
    // Not published: the tracker has not acknowledged it yet (format-v1.md §15.2); the
    // next `seed` or the agent publishes it.
    let published = |s: &swarmbak_format::SnapshotInfo| {
        swarmbak_core::InfoHash::from_hex(&s.infohash).map_or(true, |ih| store.is_published(&ih))
    };
    if ctx.json {
        for s in &list {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            v["published"] = json!(published(s));
            say!("{v}");
        }
        return Ok(());
    }
    if list.is_empty() {
        say!("no snapshots yet: `swarmbak seed PATH` makes one");
    }
    let mut pending = 0;
    for s in &list {
        let p = published(s);
        pending += usize::from(!p);
        say!(
            "{}  {}  {:>7} files  {:>10}  {:>10} new  {}{}",
            s.infohash,
            utc(s.time),
            s.files,
            human_bytes(s.bytes),
            human_bytes(s.new_bytes),
            s.paths.join(" "),
            if p { "" } else { "  (not published)" }
        );
    }
    if pending > 0 {
        tell!("swarmbak: {pending} snapshot(s) not published yet (the tracker has not acknowledged them): the running agent or the next `swarmbak seed` publishes them once the tracker answers");
    }
    Ok(())
}

fn machine_snapshots(ctx: &Ctx, machine: &str) -> R {
    let node = Node::open(&ctx.home)?;
    let (Some(tracker), Some(base)) = (node.config.tracker_ref(), node.config.tracker.clone())
    else {
        return Err(Failure::usage("listing another machine's snapshots needs the tracker: `swarmbak init --tracker http://HOST:PORT`"));
    };
    let rt = swarmbak_node::runtime()?;
    let mut recs = rt.block_on(async {
        swarmbak_node::discovery::tracker_client(&tracker)?
            .snapshots(Some(machine))
            .await
            .map_err(|e| Failure::new(1, format!("tracker {base}: {e}")))
    })?;
    // An enrolled machine believes only what the organisation key vouches for
    // (trust.md §4): a tracker that lies cannot add a snapshot to a machine's list.
    if let Some(e) = &node.config.enrolment {
        let org = e.org()?;
        recs.retain_mut(|r| match swarmbak_node::enrol::verify_listed(&org, r) {
            Ok(v) => {
                r.machine_name = v.certificate.fields.name.clone();
                r.machine_key = v.certificate.fields.machine.to_hex();
                r.copies = v.record.copies;
                true
            }
            Err(why) => {
                tell!(
                    "swarmbak: warning: ignoring snapshot {} the tracker lists for {:?}: {why}",
                    r.infohash,
                    r.machine_name
                );
                false
            }
        });
        recs.retain(|r| r.machine_name == machine || r.machine_key == machine);
    }
    if recs.is_empty() {
        return Err(Failure::new(
            1,
            format!("the tracker knows no snapshot of a machine named or keyed {machine:?}"),
        ));
    }
    for r in &recs {
        if ctx.json {
            say!("{}", serde_json::to_string(r).unwrap_or_default());
        } else {
            say!(
                "{}  {}  {:>10}  {}",
                r.infohash,
                utc(r.published),
                human_bytes(r.payload_length),
                r.machine_name
            );
        }
    }
    Ok(())
}

pub fn health(ctx: &Ctx, infohash: &str, listen: Option<&str>) -> R {
    let Ok(mut node) = Node::open(&ctx.home) else {
        return scrub(ctx, infohash, false);
    };
    if listen.is_some() {
        node.settings.listen = NodeConfig::command_listen(Some(&node.config), listen)?;
    }
    let Some(tracker) = node.config.tracker_ref() else {
        return scrub(ctx, infohash, false);
    };
    let ih = crate::fetch::parse_target(infohash, &ctx.home)?;
    let membership = swarmbak_node::membership::Membership::of(&node)?;
    let sh = swarmbak_node::health::swarm_health(
        &node.home.store(),
        &ih,
        &tracker,
        membership.as_ref(),
        &node.settings,
    )?;
    let h = &sh.health;
    let mut v = serde_json::to_value(h).unwrap_or_default();
    v["infohash"] = json!(ih.to_hex());
    v["scope"] = json!("swarm");
    v["tracker_peers"] = json!(sh.tracker_peers);
    // Recoverable only with every snapshot it builds on (swarm.md §8).
    v["recoverable"] = json!(sh.recoverable());
    v["shards_recoverable"] = json!(h.recoverable);
    v["chain"] = sh
        .chain
        .iter()
        .map(|(p, why)| json!({"infohash": p.to_hex(), "recoverable": why.is_none(), "why": why}))
        .collect();
    let missing = sh
        .missing_link()
        .map(|(p, why)| format!("it builds on the earlier snapshot {p}, which {why}; "));
    out(ctx, v, || {
        let online = if sh.tracker_peers == 0 {
            // Not "0 machines online": the tracker may just have restarted.
            "the tracker lists no peer for it (if it just restarted, machines announce again within their announce interval: run health again in a minute)".to_string()
        } else {
            format!("{} machines online hold its shards", h.machines_online)
        };
        format!(
            "{ih}: {} now; {}{online}; {} stripes of {}+{}; fewest reachable shards in a stripe: {} (need {}); fewest holders of a shard: {}",
            if sh.recoverable() { "recoverable" } else { "NOT recoverable" },
            missing.as_deref().unwrap_or(""),
            h.stripes,
            h.k,
            h.m,
            h.worst_stripe(),
            h.k,
            h.fewest_holders()
        )
    });
    match sh.missing_link() {
        _ if !h.recoverable => Err(swarmbak_node::HealthError::NotRecoverable(ih).into()),
        Some((p, why)) => Err(swarmbak_node::HealthError::MissingLink {
            infohash: ih,
            parent: *p,
            why: why.to_string(),
        }
        .into()),
        None => Ok(()),
    }
}

pub fn repair(ctx: &Ctx, infohash: &str) -> R {
    scrub(ctx, infohash, true)
}

/// Checks every shard of a snapshot in the local store; with `repair`, rebuilds missing
/// and damaged ones from the rest of their stripe (no key needed; format-v1.md §14).
fn scrub(ctx: &Ctx, infohash: &str, repair: bool) -> R {
    let store = swarmbak_format::Store::new(ctx.home.join("store"));
    let ih = store.resolve(infohash)?;
    let _lock = if repair {
        Some(swarmbak_format::Home::open(&ctx.home)?.lock()?)
    } else {
        None
    };
    let src = swarmbak_format::restore::LocalSource {
        store: &store,
        repair,
    };
    let reader = swarmbak_format::restore::SnapshotReader::open(
        &src,
        &ih,
        &swarmbak_format::backup::NoProgress,
    )?;
    let l = reader.meta.layout;
    let sc = reader.scrub(repair)?;
    let worst = sc.good_per_stripe.iter().copied().min().unwrap_or(0);
    out(
        ctx,
        json!({"infohash": ih.to_hex(), "recoverable": sc.recoverable, "k": l.k, "m": l.m,
               "stripes": l.stripes, "local_shards_per_stripe": sc.good_per_stripe,
               "problems": sc.problems, "repaired": repair && sc.recoverable && !sc.problems.is_empty(),
               "scope": "local store"}),
        || {
            let mut s = format!(
                "{ih}: {} from the local store; {} stripes of {}+{} shards; fewest good shards in a stripe: {} (need {})",
                if sc.recoverable { "recoverable now" } else { "NOT recoverable" },
                l.stripes, l.k, l.m, worst, l.k
            );
            for p in &sc.problems {
                s.push_str(&format!("\n  {p}"));
            }
            s
        },
    );
    if sc.recoverable {
        Ok(())
    } else {
        Err(Failure::new(
            1,
            format!("snapshot {ih} cannot be restored from this store: a stripe has only {worst} of the {} good shards it needs", l.k),
        ))
    }
}

/// `export`: the snapshot's torrent as stored (its `announce` the tracker's bare URL, never
/// a passkey), or with `announce` in its place: a recipient's own passkey URL.
pub fn export(ctx: &Ctx, infohash: &str, file: &Path, announce: Option<&str>) -> R {
    let store = swarmbak_format::Store::new(ctx.home.join("store"));
    let ih = store.resolve(infohash)?;
    let mut bytes = store.torrent_bytes(&ih)?;
    if let Some(url) = announce {
        if !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with("udp://"))
        {
            return Err(Failure::usage(format!(
                "--announce {url:?}: give a tracker URL, like http://HOST:PORT/<passkey>/announce"
            )));
        }
        // The torrent is for someone else: it must not carry this machine's passkey.
        let own = NodeConfig::load(&ctx.home)
            .ok()
            .and_then(|c| c.enrolment)
            .is_some_and(|e| url.contains(&e.passkey));
        if own {
            return Err(Failure::usage(
                "--announce carries this machine's own passkey: give the recipient's (swarmbak tracker enroll --client --name NAME)",
            ));
        }
        let m = swarmbak_metainfo::Metainfo::from_bytes(&bytes)
            .map_err(|e| Failure::new(1, format!("the stored torrent of {ih}: {e}")))?;
        bytes = m.with_announce(Some(url));
    }
    let tmp = file.with_extension("torrent.tmp");
    std::fs::write(&tmp, &bytes).map_err(|e| Failure::new(1, format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, file).map_err(|e| Failure::new(1, format!("{}: {e}", file.display())))?;
    out(
        ctx,
        json!({"event": "exported", "infohash": ih.to_hex(), "file": file, "announce": announce}),
        || {
            format!(
                "wrote {} ({} bytes) for {}",
                file.display(),
                bytes.len(),
                ih
            )
        },
    );
    Ok(())
}

/// The contract: the first line of stdout of a listening command.
pub fn listening(ctx: &Ctx, addr: SocketAddr) {
    if ctx.json {
        say!(
            "{}",
            json!({"event": "listening", "addr": addr.to_string()})
        );
    }
    say!("listening {addr}");
}

pub fn agent(ctx: &Ctx, listen: Option<&str>) -> R {
    let node = Node::open(&ctx.home)?;
    swarmbak_node::agent::bind_addr(listen, &node)?;
    Ok(swarmbak_node::agent::run(node, listen, |a| {
        listening(ctx, a)
    })?)
}
