//! The `swarmbak` command. Contract: MISSION.md's command line contract, restated in
//! README.md.

/// A line on stdout. A closed stdout (`swarmbak seed DIR | head -1`) is ignored: what
/// a command prints is best effort, the work it does (a backup, its publish) is not.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, $($t)*);
        let _ = o.flush();
    }};
}

/// A line on stderr; a closed stderr is ignored, as for [`say!`].
macro_rules! tell {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

mod cmd;
mod demo;
mod demo_data;
mod demo_swarm;
mod failure;
mod fetch;
mod inspect;
mod render;
mod tracker_cmd;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "swarmbak",
    version,
    about = "Peer-to-peer backup over private BitTorrent"
)]
struct Cli {
    /// Node state directory (default: $SWARMBAK_HOME, else $XDG_DATA_HOME/swarmbak).
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Machine-readable output: one JSON object per line on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Until {
    Published,
    Durable,
    Forever,
}

impl From<Until> for swarmbak_node::seed::Until {
    fn from(u: Until) -> Self {
        match u {
            Until::Published => swarmbak_node::seed::Until::Published,
            Until::Durable => swarmbak_node::seed::Until::Durable,
            Until::Forever => swarmbak_node::seed::Until::Forever,
        }
    }
}

// Parsed once per process: the size of the largest variant (the tracker's options) costs
// nothing worth a Box.
#[allow(clippy::large_enum_variant)]
/// A retention policy's settings (`forget`, `init`: swarm.md §16.1).
#[derive(clap::Args, Debug, Default)]
struct Keep {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N last hours that have one.
    #[arg(long, value_name = "N")]
    keep_hourly: Option<u32>,
    /// ... of each of the N last days.
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    /// ... of each of the N last weeks (Monday to Sunday).
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    /// ... of each of the N last months.
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    /// ... of each of the N last years.
    #[arg(long, value_name = "N")]
    keep_yearly: Option<u32>,
    /// Keep every snapshot taken within DURATION (like 30d) of the newest.
    #[arg(long, value_name = "DURATION")]
    keep_within: Option<String>,
}

impl Keep {
    /// The settings given (an empty policy when none is).
    fn policy(&self) -> Result<swarmbak_core::retention::Policy, failure::Failure> {
        let within = match &self.keep_within {
            None => None,
            Some(w) if w.trim() == "0" => Some(0),
            Some(w) => Some(
                swarmbak_core::parse_duration(w)
                    .ok_or_else(|| {
                        failure::Failure::usage(format!(
                            "--keep-within {w:?}: give a duration like 12h, 30d, 2w"
                        ))
                    })?
                    .as_secs(),
            ),
        };
        Ok(swarmbak_core::retention::Policy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within,
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create this machine's keys and settings (run again: change only the options given).
    Init {
        /// The machine's label (default: the host name); machines are known by their key.
        #[arg(long)]
        name: Option<String>,
        /// The tracker's base URL, e.g. http://tracker.example:6969
        #[arg(long)]
        tracker: Option<String>,
        /// Enrol with the organisation's private tracker: the one-time token the
        /// administrator made (`swarmbak tracker enroll`).
        #[arg(long, value_name = "TOKEN")]
        enroll: Option<String>,
        /// An organisation recovery key (age1...); repeat for several.
        #[arg(long = "recovery-recipient", value_name = "AGE_PUBKEY")]
        recovery_recipient: Vec<String>,
        /// Distinct machines other than the owner that should hold each shard.
        #[arg(long)]
        copies: Option<u32>,
        /// Most bytes of other machines' shards this machine holds (e.g. 50G).
        #[arg(long, value_name = "SIZE")]
        quota: Option<String>,
        /// Data shards per stripe (organisation setting).
        #[arg(long, hide = true)]
        k: Option<u16>,
        /// Parity shards per stripe (organisation setting).
        #[arg(long, hide = true)]
        m: Option<u16>,
        /// Where this machine listens for peers, HOST:PORT (default 0.0.0.0:0, any port on
        /// every interface; 127.0.0.1:PORT for loopback only). The agent binds it as
        /// given; seed, fetch and health bind its host on any port.
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<String>,
        /// A peer-only tracker: a BitTorrent tracker that is not the company's
        /// (opentracker), given as its base URL (http://HOST:PORT). Snapshots are
        /// announced to it too, and the agent replicates the snapshots it lists whose
        /// owner's signed record a member of the organisation sends in the swarm. Repeat
        /// for several; the list given replaces the last one; `none` removes them.
        #[arg(long = "peer-tracker", value_name = "URL")]
        peer_tracker: Vec<String>,
        /// A file or directory the agent backs up on its own, when due. Repeat for
        /// several; the list given replaces the last one; `none` removes them (the agent
        /// then makes no backups by itself).
        #[arg(long = "backup", value_name = "PATH")]
        backup: Vec<PathBuf>,
        /// Leave out what matches PATTERN: a name (`*.iso`, `node_modules/`) at any
        /// depth, an absolute path pattern (`/home/*/Videos`), `DIR/` for directories
        /// only. Repeat for several; the list given replaces the last one; `none`
        /// removes them. Caches and trash are left out by default (README).
        #[arg(long = "exclude", value_name = "PATTERN")]
        exclude: Vec<String>,
        /// Back up caches and trash too (turns the default excludes off).
        #[arg(long = "no-default-excludes", conflicts_with = "default_excludes")]
        no_default_excludes: bool,
        /// Leave caches and trash out again (the default).
        #[arg(long = "default-excludes")]
        default_excludes: bool,
        /// How often the agent backs up: 30m, 6h, 1d (default 1d; the administrator may
        /// set it at the tracker, and decide whether this setting wins).
        #[arg(long, value_name = "DURATION")]
        every: Option<String>,
        /// The retention policy the agent applies after each backup, and `forget`
        /// without --keep-*: each --keep-* given replaces that setting (0 turns it off).
        #[command(flatten)]
        keep: Keep,
        /// Go back to the default retention policy (10 last, 48 hourly, 7 daily, 4
        /// weekly, 24 monthly, 3 yearly) before any --keep-* given.
        #[arg(long)]
        keep_default: bool,
    },
    /// Back up PATHs as a new snapshot, publish it and seed it.
    Seed {
        /// Files and directories to back up; each is a top-level entry of the snapshot,
        /// named by its base name.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// When to exit: once the tracker has the snapshot (published), once every shard
        /// is held by --copies other machines (durable), or never (forever).
        #[arg(long, value_enum, default_value = "durable")]
        until: Until,
        /// Distinct machines other than this one that must hold each shard for durable
        /// (default: init --copies, 2).
        #[arg(long)]
        copies: Option<u32>,
        /// Give up after SECONDS with exit status 3 (default: wait as long as it takes;
        /// the snapshot is kept and published later).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// Listen for peers on HOST:PORT (default: `init --listen`'s host, any port).
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<String>,
    },
    /// Restore a snapshot (or part of it) into DIR.
    Fetch {
        /// INFOHASH, magnet link or .torrent file.
        snapshot: String,
        /// Where to restore: a new or empty directory (or one holding an unfinished
        /// restore of the same snapshot, which resumes).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Restore only this path (relative to the snapshot's root); repeatable.
        #[arg(long = "path", value_name = "SUBPATH")]
        paths: Vec<String>,
        /// Decrypt with this age identity file only (e.g. the organisation's recovery key).
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Also connect to this peer (HOST:PORT); repeatable.
        #[arg(long = "peer", value_name = "HOST:PORT")]
        peers: Vec<std::net::SocketAddr>,
        /// Listen for peers on HOST:PORT (default: `init --listen`'s host, any port).
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<String>,
        /// How long to wait for the tracker and peers to know the snapshot and serve its
        /// shards, like 90s, 10m (default 5m); what it waits for is said every few seconds.
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
    },
    /// Print a torrent's metainfo (a .torrent file or a snapshot in the store).
    Inspect {
        /// A .torrent file, or a snapshot's infohash (or its first hex digits).
        what: String,
    },
    /// Write a snapshot's metainfo as a .torrent file.
    Export {
        /// The snapshot's infohash (or its first hex digits).
        infohash: String,
        /// The .torrent file to write.
        file: PathBuf,
        /// The announce URL to write into it instead of the tracker's bare one: for a
        /// standard client, its own passkey URL (`swarmbak tracker enroll --client`).
        /// The info-hash does not change.
        #[arg(long, value_name = "URL")]
        announce: Option<String>,
    },
    /// List this machine's snapshots (or another machine's, from the tracker).
    Snapshots {
        /// Another machine's snapshots, by its name or key, as the tracker lists them.
        #[arg(long, value_name = "NAME|KEY")]
        machine: Option<String>,
    },
    /// Is a snapshot recoverable now? Shards per stripe, copies per shard.
    Health {
        /// The snapshot's infohash (or its first hex digits).
        infohash: String,
        /// Listen for peers on HOST:PORT (default: `init --listen`'s host, any port).
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<String>,
    },
    /// Check every shard of a snapshot in the local store and rebuild the missing or
    /// damaged ones from the others (no decryption key needed).
    Repair {
        /// The snapshot's infohash (or its first hex digits).
        infohash: String,
    },
    /// The long-running peer.
    Agent {
        /// Listen for peers on HOST:PORT (default: init --listen, else 0.0.0.0:0).
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<String>,
    },
    /// What the agent is doing: a backup and its progress, the last one and when the
    /// next is due, what it holds for other machines, its peers, the tracker.
    Status,
    /// Forget this machine's old snapshots by a retention policy (without --keep-*: the
    /// configuration's, else 10 last, 48 hourly, 7 daily, 4 weekly, 24 monthly, 3
    /// yearly). Each set of backed-up paths is kept on its own; its newest snapshot
    /// always stays. Holders let go of what no kept snapshot reads after a grace period.
    Forget {
        #[command(flatten)]
        keep: Keep,
        /// Say what would be forgotten and freed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The company tracker (private: enrolled machines only), or its administration.
    #[command(args_conflicts_with_subcommands = true)]
    Tracker {
        #[command(subcommand)]
        action: Option<tracker_cmd::Action>,
        #[command(flatten)]
        serve: tracker_cmd::Serve,
    },
    /// An end-to-end run on a generated tree: back up, lose shards, restore with the
    /// recovery key, compare byte for byte.
    Demo {
        /// Size of the generated office tree.
        #[arg(long, default_value = "48M")]
        size: String,
        /// Back up this tree instead of a generated one.
        #[arg(long)]
        tree: Option<PathBuf>,
        /// Keep the demo's working directory.
        #[arg(long)]
        keep: bool,
        /// One machine only: back up, delete shards, restore from its own store.
        #[arg(long)]
        offline: bool,
    },
}

pub struct Ctx {
    pub home: PathBuf,
    pub json: bool,
}

fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("SWARMBAK_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(x).join("swarmbak");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".local/share/swarmbak")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Listings piped into `head` end quietly, as for other Unix tools. Commands that talk
    // to peers keep SIGPIPE ignored: a peer hanging up must be an error on that
    // connection, not the end of the process.
    if matches!(
        cli.command,
        Command::Snapshots { .. } | Command::Inspect { .. }
    ) {
        // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let ctx = Ctx {
        home: cli.home.clone().unwrap_or_else(default_home),
        json: cli.json,
    };
    let r = match cli.command {
        Command::Init {
            name,
            tracker,
            enroll,
            recovery_recipient,
            copies,
            quota,
            k,
            m,
            listen,
            peer_tracker,
            backup,
            exclude,
            no_default_excludes,
            default_excludes,
            every,
            keep,
            keep_default,
        } => match keep.policy() {
            Err(e) => Err(e),
            Ok(retention) => cmd::init(
                &ctx,
                swarmbak_node::InitOptions {
                    name,
                    tracker,
                    enroll_token: enroll,
                    recovery_recipients: recovery_recipient,
                    copies,
                    k,
                    m,
                    quota: None,
                    listen,
                    peer_trackers: match peer_tracker.as_slice() {
                        [] => None,
                        [none] if none == "none" => Some(Vec::new()),
                        _ => Some(peer_tracker),
                    },
                    backup: match backup.as_slice() {
                        [] => None,
                        [none] if none.as_os_str() == "none" => Some(Vec::new()),
                        _ => Some(backup),
                    },
                    exclude: match exclude.as_slice() {
                        [] => None,
                        [none] if none == "none" => Some(Vec::new()),
                        _ => Some(exclude),
                    },
                    default_excludes: match (no_default_excludes, default_excludes) {
                        (true, _) => Some(false),
                        (_, true) => Some(true),
                        _ => None,
                    },
                    every: None,
                    retention,
                    retention_default: keep_default,
                },
                quota,
                every,
            ),
        },
        Command::Seed {
            paths,
            until,
            copies,
            timeout,
            listen,
        } => cmd::seed(
            &ctx,
            paths,
            until.into(),
            copies,
            timeout,
            listen.as_deref(),
        ),
        Command::Fetch {
            snapshot,
            to,
            paths,
            identity,
            peers,
            listen,
            timeout,
        } => fetch::fetch(
            &ctx,
            &snapshot,
            &to,
            fetch::Options {
                paths,
                identity,
                peers,
                listen,
                timeout,
            },
        ),
        Command::Inspect { what } => inspect::inspect(&ctx, &what),
        Command::Export {
            infohash,
            file,
            announce,
        } => cmd::export(&ctx, &infohash, &file, announce.as_deref()),
        Command::Snapshots { machine } => cmd::snapshots(&ctx, machine),
        Command::Health { infohash, listen } => cmd::health(&ctx, &infohash, listen.as_deref()),
        Command::Repair { infohash } => cmd::repair(&ctx, &infohash),
        Command::Agent { listen } => cmd::agent(&ctx, listen.as_deref()),
        Command::Status => cmd::status(&ctx),
        Command::Forget { keep, dry_run } => match keep.policy() {
            Ok(policy) => cmd::forget(&ctx, policy, dry_run),
            Err(e) => Err(e),
        },
        Command::Tracker {
            action: Some(a), ..
        } => tracker_cmd::admin(&ctx, a),
        Command::Tracker {
            action: None,
            serve,
        } => tracker_cmd::serve(&ctx, serve),
        Command::Demo {
            size,
            tree,
            keep,
            offline,
        } => demo::run(&ctx, &size, tree, keep, offline),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if ctx.json {
                say!(
                    "{}",
                    serde_json::json!({"event": "error", "error": f.message})
                );
            }
            tell!("swarmbak: error: {}", f.message);
            ExitCode::from(f.status)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument and every command says what it is for (`--help`).
    #[test]
    fn every_option_and_command_has_help_text() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments() {
                if a.is_hide_set() || ["help", "version"].contains(&a.get_id().as_str()) {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} <{}>", a.get_id()));
                }
            }
            for s in c.get_subcommands() {
                let p = format!("{path} {}", s.get_name());
                if s.get_name() != "help" && s.get_about().is_none() {
                    missing.push(p.clone());
                }
                walk(s, &p, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "swarmbak", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
