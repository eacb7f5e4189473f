//! `swarmbak tracker`: the company tracker, and its administration on the data directory
//! (enroll, revoke, machines). The administration commands write the database directly
//! (SQLite in WAL mode lets them while the tracker runs) and then ask a running tracker
//! to reload, so a revocation counts on its next request.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;
use swarmbak_tracker::admin::{self, EnrollOptions};
use swarmbak_tracker::org::Org;
use swarmbak_tracker::server::unix_now;
use swarmbak_tracker::sqlite::Sqlite;
use swarmbak_tracker::storage::{MachineKind, Storage};

use crate::failure::Failure;
use crate::render::utc;
use crate::Ctx;

type R = Result<(), Failure>;

#[derive(Subcommand, Debug)]
pub enum Action {
    /// Enrol a machine: prints a one-time token (first line) for `swarmbak init --enroll`.
    Enroll {
        /// The tracker's data directory (its database, organisation key and admin token).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The machine's name (its host name, say), as the dashboard shows it.
        #[arg(long)]
        name: String,
        /// Whose machine it is (shown and searched on the dashboard).
        #[arg(long)]
        user: Option<String>,
        /// A VIP machine: listed first, alerted after --overdue-warn days without a backup.
        #[arg(long)]
        vip: bool,
        /// Where the machine is, SITE/ROOM.
        #[arg(long)]
        domain: Option<String>,
        /// The certificate's lifetime in days (default: it does not expire).
        #[arg(long, value_name = "DAYS")]
        expires: Option<u32>,
        /// A standard BitTorrent client: prints its announce URL (passkey included).
        #[arg(long)]
        client: bool,
        /// The tracker's URL to write into the token (default: where it last listened).
        #[arg(long)]
        url: Option<String>,
    },
    /// Shut a machine out at once (its passkey stops working; a signed revocation is kept).
    Revoke {
        /// The tracker's data directory (its database, organisation key and admin token).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The machine's enrolled name, its key (hex) or its passkey.
        machine: String,
    },
    /// List the enrolled machines and clients.
    Machines {
        /// The tracker's data directory (its database, organisation key and admin token).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
    /// Show or change when machines back up on their own: the organisation's default
    /// interval, the VIP machines' one, one machine's (and whether a machine's own
    /// interval may win), or ask one machine to back up now. Without a change, lists
    /// the settings.
    Schedule {
        /// The tracker's data directory (its database, organisation key and admin token).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Change this machine (its enrolled name, key or passkey).
        #[arg(long, value_name = "NAME")]
        machine: Option<String>,
        /// Change the VIP machines' interval (without --machine).
        #[arg(long, conflicts_with = "machine")]
        vip: bool,
        /// The backup interval, like 30m, 6h, 1d; `default` removes the setting.
        #[arg(long, value_name = "DURATION|default")]
        every: Option<String>,
        /// May the machine's own interval (`init --every`) win over the administrator's:
        /// yes, no, or default (the organisation's; for the organisation: yes).
        #[arg(long, value_name = "yes|no|default")]
        machine_may_override: Option<String>,
        /// Ask the machine (--machine) to back up at once.
        #[arg(long, requires = "machine")]
        now: bool,
    },
    /// List the snapshots machines retired (forgot): when, which stripes stay, and
    /// whether the administrator cancelled the retirement.
    Retirements {
        /// The tracker's data directory (its database, organisation key and admin token).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
    /// Cancel a snapshot's retirement: holders keep all its shards (a retirement signed
    /// by a stolen or compromised machine key must not destroy the backup).
    Unretire {
        /// The tracker's data directory (its database, organisation key and admin token).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The snapshot's info-hash (40 hex digits).
        infohash: String,
    },
    /// Replace DATA/admin-token: the old token stops working and every dashboard session
    /// ends (a running tracker reads the new one within a second).
    RotateAdminToken {
        /// The tracker's data directory (its database, organisation key and admin token).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
}

/// `swarmbak tracker`'s serving options (clap flattens them into the command).
#[derive(clap::Args, Debug)]
pub struct Serve {
    /// Serve plain HTTP here (tests, standard clients on a trusted LAN).
    #[arg(long)]
    pub listen: Option<String>,
    /// Serve HTTPS here with the tracker's own certificate (DATA/tls.crt, made at the
    /// first start), pinned by enrolment tokens: passkeys, tokens and the admin token
    /// never cross the network in clear.
    #[arg(long, value_name = "ADDR")]
    pub tls_listen: Option<String>,
    /// Your own TLS certificate (PEM) instead of DATA/tls.crt; tokens pin its SHA-256.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The tracker's data directory (its database, organisation key, admin token, TLS
    /// key); created at the first start.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Announce interval handed to peers, in seconds (default 60).
    #[arg(long, value_name = "SECONDS")]
    pub interval: Option<u64>,
    /// Threads that serve requests (default: one per CPU). `--threads 1` serves every
    /// connection on one thread with no hand-over between threads, the fastest on a
    /// machine whose other cores are busy (a tracker sharing a small server).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// An open tracker, as before enrolment existed: no passkeys, unsigned publishes.
    #[arg(long)]
    pub open: bool,
    /// The organisation's recovery key (age1...), handed to every enrolled machine;
    /// repeat for several. Stored: needed once.
    #[arg(long = "recovery-recipient", value_name = "AGE_PUBKEY")]
    pub recovery: Vec<String>,
    /// The URL machines reach this tracker at (default: https:// and the --tls-listen
    /// address, else http:// and the --listen address).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Serve the UDP tracker (BEP 15; the passkey as BEP 41 URL data) here, or `off`.
    /// Default: the --listen address and port; off when there is only --tls-listen (UDP
    /// carries passkeys in clear).
    #[arg(long, value_name = "ADDR|off")]
    pub udp_listen: Option<String>,
    /// A machine not backed up for this many days is overdue (a VIP's alert).
    #[arg(long, value_name = "DAYS", default_value_t = 10)]
    pub overdue_warn: u32,
    /// A machine not backed up for this many days raises an alert, VIP or not.
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub overdue_alert: u32,
    /// POST each alert and back-to-OK notice as JSON to this http:// URL.
    #[arg(long, value_name = "URL")]
    pub alert_webhook: Option<String>,
    /// How often alerts are evaluated, like 5m (default 5m).
    #[arg(long, value_name = "DURATION")]
    pub alert_every: Option<String>,
    /// An open alert is told again at most this often, like 1d (default 1d).
    #[arg(long, value_name = "DURATION")]
    pub alert_repeat: Option<String>,
    /// An enrolled machine is on the roster (the machines present, which agents place
    /// backups on) while its latest announce or roster request is at most this old, like
    /// 5m (default 5m).
    #[arg(long, value_name = "DURATION")]
    pub roster_window: Option<String>,
}

/// Where the UDP tracker listens.
enum UdpListen {
    /// On the HTTP listener's address and port.
    Same,
    /// Here.
    At(std::net::SocketAddr),
    /// Not at all.
    Off,
}

/// Binds the HTTP listener and, unless `udp` is off, the UDP socket. With the default
/// (the same address and port as HTTP), a UDP port that is taken is an error; when the
/// port was 0 (any), another pair is tried a few times first.
async fn bind_both(
    addr: std::net::SocketAddr,
    udp: &UdpListen,
) -> Result<(tokio::net::TcpListener, Option<tokio::net::UdpSocket>), Failure> {
    let mut tries = 0;
    loop {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Failure::new(1, format!("cannot listen on {addr}: {e}")))?;
        let local = listener.local_addr()?;
        let at = match udp {
            UdpListen::Off => return Ok((listener, None)),
            UdpListen::At(a) => *a,
            UdpListen::Same => local,
        };
        match tokio::net::UdpSocket::bind(at).await {
            Ok(s) => return Ok((listener, Some(s))),
            Err(e)
                if matches!(udp, UdpListen::Same)
                    && addr.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && tries < 8 =>
            {
                tries += 1;
            }
            Err(e) => return Err(udp_bind_failure(at, e)),
        }
    }
}

fn udp_bind_failure(at: SocketAddr, e: std::io::Error) -> Failure {
    Failure::new(
        1,
        format!(
            "cannot serve the UDP tracker on {at}: {e} (choose another port with --udp-listen ADDR, or --udp-listen off)"
        ),
    )
}

/// Prints where the tracker listens, in one write (a reader that stops after the first
/// line must not make the second fail): `listening HOST:PORT` first (the plain address
/// when there is one, else the TLS one), then `listening-tls HOST:PORT` when both, then
/// `listening-udp HOST:PORT` when the UDP tracker runs.
fn print_listening(
    ctx: &Ctx,
    plain: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    udp: Option<SocketAddr>,
) {
    let mut out = String::new();
    let first = plain.or(tls);
    if ctx.json {
        if let Some(a) = first {
            out.push_str(&format!(
                "{}\n",
                json!({"event": "listening", "addr": a.to_string(), "tls": plain.is_none()})
            ));
        }
        if let (Some(_), Some(t)) = (plain, tls) {
            out.push_str(&format!(
                "{}\n",
                json!({"event": "listening", "addr": t.to_string(), "tls": true})
            ));
        }
        if let Some(u) = udp {
            out.push_str(&format!(
                "{}\n",
                json!({"event": "listening", "addr": u.to_string(), "udp": true})
            ));
        }
    }
    if let Some(a) = first {
        out.push_str(&format!("listening {a}\n"));
    }
    if let (Some(_), Some(t)) = (plain, tls) {
        out.push_str(&format!("listening-tls {t}\n"));
    }
    if let Some(u) = udp {
        out.push_str(&format!("listening-udp {u}\n"));
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

pub fn serve(ctx: &Ctx, s: Serve) -> R {
    let Some(data) = s.data else {
        return Err(Failure::usage(
            "swarmbak tracker needs --listen ADDR and/or --tls-listen ADDR, and --data DIR (or a subcommand: enroll, revoke, machines)",
        ));
    };
    if s.listen.is_none() && s.tls_listen.is_none() {
        return Err(Failure::usage(
            "swarmbak tracker needs --tls-listen ADDR (HTTPS: passkeys, tokens and the admin token never cross the network in clear) and/or --listen ADDR (plain HTTP)",
        ));
    }
    let own_tls = match (s.tls_cert, s.tls_key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(Failure::usage(
                "--tls-cert FILE and --tls-key FILE go together (the certificate and its private key, PEM)",
            ))
        }
    };
    if own_tls.is_some() && s.tls_listen.is_none() {
        return Err(Failure::usage(
            "--tls-cert and --tls-key are for --tls-listen ADDR: add it",
        ));
    }
    let addr = match &s.listen {
        Some(l) => Some(swarmbak_node::parse_listen(l)?),
        None => None,
    };
    let tls_addr = match &s.tls_listen {
        Some(l) => Some(swarmbak_node::parse_listen(l)?),
        None => None,
    };
    let udp = match s.udp_listen.as_deref() {
        None if addr.is_some() => UdpListen::Same,
        None | Some("off") => UdpListen::Off,
        Some(a) => UdpListen::At(a.parse().map_err(|_| {
            Failure::usage(format!(
                "--udp-listen {a:?}: give HOST:PORT, like 0.0.0.0:6969, or `off`"
            ))
        })?),
    };
    if s.public_url.as_deref().is_some_and(|u| {
        let u = u.trim();
        !(u.starts_with("http://") || u.starts_with("https://")) || u.len() < "http://x".len()
    }) {
        return Err(Failure::usage(
            "--public-url: give the URL machines reach this tracker at, like https://tracker.example.com:6969 (an empty value is what an unset variable in a unit's EnvironmentFile gives)",
        ));
    }
    if s.overdue_warn == 0 || s.overdue_alert < s.overdue_warn {
        return Err(Failure::usage(
            "--overdue-warn DAYS and --overdue-alert DAYS: at least 1 day, and the alert no sooner than the warning",
        ));
    }
    let thresholds = swarmbak_tracker::status::Thresholds {
        warn_days: s.overdue_warn,
        alert_days: s.overdue_alert,
    };
    if let Some(u) = &s.alert_webhook {
        if !u.starts_with("http://") {
            return Err(Failure::usage(format!(
                "--alert-webhook {u:?}: give an http:// URL (https is not supported for webhooks yet)"
            )));
        }
    }
    let duration = |flag: &str, v: &Option<String>| match v {
        None => Ok(None),
        Some(t) => swarmbak_core::parse_duration(t).map(Some).ok_or_else(|| {
            Failure::usage(format!("--{flag} {t:?}: write a duration like 30s, 5m, 1d"))
        }),
    };
    let alert_every = duration("alert-every", &s.alert_every)?;
    let alert_repeat = duration("alert-repeat", &s.alert_repeat)?;
    let roster_window = duration("roster-window", &s.roster_window)?;
    let rt = match s.threads {
        None => swarmbak_node::runtime()?,
        Some(0) => return Err(Failure::usage("--threads N: at least 1")),
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    rt.block_on(async {
        let mut cfg = swarmbak_tracker::TrackerConfig::new(&data);
        if let Some(i) = s.interval {
            cfg.interval = Duration::from_secs(i.max(1));
            cfg.min_interval = Duration::from_secs((i / 2).max(1));
        }
        cfg.open = s.open;
        cfg.recovery_recipients = s.recovery;
        cfg.public_url = s.public_url.map(|u| u.trim_end_matches('/').to_owned());
        cfg.overdue = thresholds;
        cfg.alert_webhook = s.alert_webhook;
        if let Some(d) = alert_every {
            cfg.alert_every = d;
        }
        if let Some(d) = alert_repeat {
            cfg.alert_repeat = d;
        }
        if let Some(d) = roster_window {
            cfg.roster_window = d;
        }
        let t = tokio::task::spawn_blocking(move || swarmbak_tracker::Tracker::open(cfg))
            .await
            .map_err(|e| Failure::new(1, e.to_string()))?
            .map_err(|e| Failure::new(1, format!("{e}")))?;
        let bind = |a: SocketAddr| async move {
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| Failure::new(1, format!("cannot listen on {a}: {e}")))
        };
        let mut listeners = Vec::new();
        let mut plain_local = None;
        let mut udp_socket = None;
        if let Some(a) = addr {
            let (l, u) = bind_both(a, &udp).await?;
            plain_local = Some(l.local_addr()?);
            udp_socket = u;
            listeners.push(swarmbak_tracker::Listener::plain(l));
        } else if let UdpListen::At(at) = udp {
            udp_socket = Some(
                tokio::net::UdpSocket::bind(at)
                    .await
                    .map_err(|e| udp_bind_failure(at, e))?,
            );
        }
        let mut tls_local = None;
        let mut pin = None;
        if let Some(a) = tls_addr {
            let l = bind(a).await?;
            let local = l.local_addr()?;
            let id = t
                .tls_identity(
                    own_tls.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
                    local,
                )
                .map_err(|e| Failure::new(1, e.to_string()))?;
            let cfg = id
                .server_config()
                .map_err(|e| Failure::new(1, e.to_string()))?;
            pin = Some(id.sha256_hex());
            tls_local = Some(local);
            listeners.push(swarmbak_tracker::Listener::tls(l, cfg));
        }
        t.record_addresses(plain_local, tls_local);
        let udp_local = match &udp_socket {
            Some(u) => Some(u.local_addr()?),
            None => None,
        };
        print_listening(ctx, plain_local, tls_local, udp_local);
        let t = match udp_socket {
            Some(sock) => t.with_udp(sock),
            None => t,
        };
        tell!(
            "swarmbak tracker: {} tracker, data in {}, organisation key {} ({}){}{}",
            if s.open { "open" } else { "private" },
            data.display(),
            t.org_key(),
            t.org_key().fingerprint(),
            pin.map(|p| format!(", TLS certificate SHA-256 {p}"))
                .unwrap_or_default(),
            t.load_report().summary()
        );
        t.serve_listeners_until(listeners, std::future::pending())
            .await
            .map_err(|e| Failure::new(1, e.to_string()))
    })
}

fn open_db(data: &Path) -> Result<(Sqlite, Org), Failure> {
    let org = Org::open(data).map_err(|e| Failure::new(1, e.to_string()))?;
    let (db, _) =
        Sqlite::open(data).map_err(|e| Failure::new(1, format!("{}: {e}", data.display())))?;
    Ok((db, org))
}

/// Asks a running tracker on `data` to reload its machines now (nothing when none runs:
/// it reads them when it starts).
fn poke(db: &mut Sqlite, org: &Org) {
    let Ok(Some(addr)) = db.setting(admin::LISTEN_SETTING) else {
        return;
    };
    // `https://ADDR` when the tracker serves TLS: the admin token goes over it, to the
    // certificate the tracker recorded.
    let (https, addr) = match addr.strip_prefix("https://") {
        Some(a) => (true, a.to_owned()),
        None => (false, addr),
    };
    let Ok(mut sa) = addr.parse::<SocketAddr>() else {
        return;
    };
    if sa.ip().is_unspecified() {
        sa.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let scheme = if https { "https" } else { "http" };
    let Ok(mut c) = swarmbak_tracker::TrackerClient::new(&format!("{scheme}://{sa}")) else {
        return;
    };
    if https {
        let pin = db
            .setting(admin::TLS_SETTING)
            .ok()
            .flatten()
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        match pin {
            Some(p) => c = c.with_tls_pin(p),
            None => return,
        }
    }
    if let Ok(rt) = swarmbak_node::runtime() {
        let c = c.with_timeout(Duration::from_secs(5));
        if let Err(e) = rt.block_on(c.reload(&org.admin_token)) {
            if !matches!(e, swarmbak_tracker::ClientError::Connect { .. }) {
                tell!("swarmbak: the running tracker did not reload at once ({e}); it will within a second");
            }
        }
    }
}

pub fn admin(ctx: &Ctx, a: Action) -> R {
    let fail = |e: admin::AdminError| Failure::new(1, e.to_string());
    match a {
        Action::Enroll {
            data,
            name,
            user,
            vip,
            domain,
            expires,
            client,
            url,
        } => {
            let (mut db, org) = open_db(&data)?;
            if client {
                let (row, announce) = admin::create_client(
                    &mut db,
                    url.as_deref(),
                    &name,
                    &admin::Actor::cli(),
                    unix_now(),
                )
                .map_err(fail)?;
                say!("{announce}");
                poke(&mut db, &org);
                if ctx.json {
                    say!(
                        "{}",
                        json!({"event": "enrolled", "client": true, "name": row.name, "announce_url": announce})
                    );
                } else {
                    tell!("client {name:?} enrolled: give it the announce URL above (it carries its passkey)");
                }
                return Ok(());
            }
            let token = admin::create_token(
                &mut db,
                &org,
                url.as_deref(),
                &EnrollOptions {
                    name: name.clone(),
                    user,
                    vip,
                    domain,
                    cert_days: expires,
                },
                &admin::Actor::cli(),
                unix_now(),
            )
            .map_err(fail)?;
            say!("{token}");
            if ctx.json {
                say!(
                    "{}",
                    json!({"event": "token", "name": name, "valid_days": admin::TOKEN_DAYS})
                );
            } else {
                tell!(
                    "on {name:?}: swarmbak init --enroll <the token above>   (one use, valid {} days; organisation key {})",
                    admin::TOKEN_DAYS,
                    org.public().fingerprint()
                );
            }
            Ok(())
        }
        Action::Revoke { data, machine } => {
            let (mut db, org) = open_db(&data)?;
            let row = admin::revoke(&mut db, &org, &machine, &admin::Actor::cli(), unix_now())
                .map_err(fail)?;
            poke(&mut db, &org);
            if ctx.json {
                say!(
                    "{}",
                    json!({"event": "revoked", "name": row.name, "key": row.key.map(hex::encode), "revoked": row.revoked})
                );
            } else {
                say!("revoked {:?}: its passkey no longer works", row.name);
            }
            Ok(())
        }
        Action::RotateAdminToken { data } => {
            let (mut db, _) = open_db(&data)?;
            swarmbak_tracker::org::rotate_admin_token(&data)
                .map_err(|e| Failure::new(1, e.to_string()))?;
            let now = unix_now();
            // The setting moves the database's data_version: a running tracker reads the
            // new token on its next poll.
            db.set_setting("admin_token_rotated", &now.to_string())
                .and_then(|()| {
                    admin::audit(
                        &mut db,
                        &admin::Actor::cli(),
                        "rotate-admin-token",
                        "admin-token",
                        "",
                        now,
                    )
                })
                .map_err(|e| Failure::new(1, e.to_string()))?;
            if ctx.json {
                say!(
                    "{}",
                    json!({"event": "rotated", "file": data.join("admin-token")})
                );
            } else {
                say!(
                    "the admin token in {} was replaced: the old one no longer works and dashboard sessions ended",
                    data.join("admin-token").display()
                );
            }
            Ok(())
        }
        Action::Schedule {
            data,
            machine,
            vip,
            every,
            machine_may_override,
            now,
        } => schedule(
            ctx,
            &data,
            machine.as_deref(),
            vip,
            every.as_deref(),
            machine_may_override.as_deref(),
            now,
        ),
        Action::Retirements { data } => {
            let (mut db, _) = open_db(&data)?;
            let list = admin::retirements(&mut db).map_err(fail)?;
            for r in &list {
                if ctx.json {
                    say!("{}", r.to_json());
                } else {
                    say!("{}", retirement_line(r));
                }
            }
            if list.is_empty() && !ctx.json {
                say!("no snapshot is retired at this tracker");
            }
            Ok(())
        }
        Action::Unretire { data, infohash } => {
            let (mut db, org) = open_db(&data)?;
            let view =
                admin::cancel_retirement(&mut db, &infohash, &admin::Actor::cli(), unix_now())
                    .map_err(fail)?;
            poke(&mut db, &org);
            if ctx.json {
                let mut v = view.to_json();
                v["event"] = json!("unretired");
                say!("{v}");
            } else {
                say!(
                    "the retirement of {} ({}) is cancelled: holders keep all its shards",
                    hex::encode(view.row.infohash),
                    view.machine
                );
            }
            Ok(())
        }
        Action::Machines { data } => {
            let (mut db, _) = open_db(&data)?;
            let rows = db.machines().map_err(|e| Failure::new(1, e.to_string()))?;
            for m in &rows {
                let kind = if m.kind == MachineKind::Client {
                    "client"
                } else {
                    "machine"
                };
                if ctx.json {
                    say!(
                        "{}",
                        json!({"name": m.name, "kind": kind, "key": m.key.map(hex::encode),
                               "user": m.user, "vip": m.vip, "domain": m.domain,
                               "enrolled": m.enrolled, "expires": m.expires, "revoked": m.revoked})
                    );
                } else {
                    say!(
                        "{:<20} {:<7} {:<12} {:<4} {:<12} enrolled {}{}",
                        m.name,
                        kind,
                        m.user.as_deref().unwrap_or("-"),
                        if m.vip { "VIP" } else { "" },
                        m.domain.as_deref().unwrap_or("-"),
                        utc(m.enrolled),
                        m.revoked
                            .map(|r| format!(", REVOKED {}", utc(r)))
                            .unwrap_or_default()
                    );
                }
            }
            if rows.is_empty() && !ctx.json {
                say!("no machines enrolled yet: swarmbak tracker enroll --data DIR --name NAME");
            }
            Ok(())
        }
    }
}

/// One retirement for `swarmbak tracker retirements`: info-hash, machine, signed and
/// received times, the stripes kept, whether it stands.
fn retirement_line(r: &admin::RetirementView) -> String {
    format!(
        "{} {:<20} retired {} received {} keeps {} of {} stripes{}",
        hex::encode(r.row.infohash),
        r.machine,
        utc(r.row.retired),
        utc(r.row.received),
        r.keep_text(),
        r.stripes,
        match (r.row.cancelled, &r.row.cancelled_by) {
            (Some(at), by) => format!(
                ", CANCELLED {} by {}",
                utc(at),
                by.as_deref().unwrap_or("?")
            ),
            (None, _) => String::new(),
        }
    )
}

/// `--every DURATION|default`.
fn every_flag(v: Option<&str>) -> Result<Option<Option<u64>>, Failure> {
    match v {
        None => Ok(None),
        Some("default") => Ok(Some(None)),
        Some(t) => swarmbak_core::parse_duration(t)
            .map(|d| Some(Some(d.as_secs())))
            .ok_or_else(|| {
                Failure::usage(format!(
                    "--every {t:?}: write a duration like 30m, 6h, 1d, or `default`"
                ))
            }),
    }
}

/// `--machine-may-override yes|no|default`.
fn yes_no_flag(v: Option<&str>) -> Result<Option<Option<bool>>, Failure> {
    match v {
        None => Ok(None),
        Some("yes") => Ok(Some(Some(true))),
        Some("no") => Ok(Some(Some(false))),
        Some("default") => Ok(Some(None)),
        Some(t) => Err(Failure::usage(format!(
            "--machine-may-override {t:?}: yes, no or default"
        ))),
    }
}

fn every_text(e: Option<u64>) -> String {
    e.map_or_else(|| "-".to_owned(), swarmbak_core::compact_duration)
}

/// `swarmbak tracker schedule` (with the global `--json`, JSON).
fn schedule(
    ctx: &Ctx,
    data: &Path,
    machine: Option<&str>,
    vip: bool,
    every: Option<&str>,
    may: Option<&str>,
    now: bool,
) -> R {
    let change = admin::ScheduleChange {
        every: every_flag(every)?,
        may_override: yes_no_flag(may)?,
        backup_now: now,
    };
    let json_out = ctx.json;
    let fail = |e: admin::AdminError| Failure::new(1, e.to_string());
    let (mut db, org) = open_db(data)?;
    if change.is_empty() {
        if machine.is_some() || vip {
            return Err(Failure::usage(
                "swarmbak tracker schedule: say what to change (--every, --machine-may-override, --now), or drop --machine/--vip to list the settings",
            ));
        }
        return print_schedules(&mut db, json_out);
    }
    let at = unix_now();
    let by = admin::Actor::cli();
    match machine {
        Some(m) => {
            let row = admin::set_machine_schedule(&mut db, m, &change, &by, at).map_err(fail)?;
            poke(&mut db, &org);
            if json_out {
                say!(
                    "{}",
                    json!({"event": "schedule", "machine": row.name, "every": row.schedule.every,
                           "machine_may_override": row.schedule.may_override,
                           "backup_requested": row.schedule.requested})
                );
            } else {
                say!("{}: {}", row.name, change.describe());
            }
        }
        None => {
            let s = admin::set_org_schedule(&mut db, vip, &change, &by, at).map_err(fail)?;
            poke(&mut db, &org);
            if json_out {
                say!(
                    "{}",
                    json!({"event": "schedule", "target": if vip { "vip" } else { "organisation" },
                           "every": s.every, "vip_every": s.vip_every,
                           "machine_may_override": s.machine_may_override})
                );
            } else {
                say!(
                    "{}: {}",
                    if vip {
                        "VIP machines"
                    } else {
                        "the organisation"
                    },
                    change.describe()
                );
            }
        }
    }
    Ok(())
}

/// The organisation's schedule settings, then each machine's (clients and revoked
/// machines left out).
fn print_schedules(db: &mut Sqlite, json_out: bool) -> R {
    let err = |e: swarmbak_tracker::storage::StorageError| Failure::new(1, e.to_string());
    let org = db.org_schedule().map_err(err)?;
    let rows: Vec<_> = db
        .machines()
        .map_err(err)?
        .into_iter()
        .filter(|m| m.kind == MachineKind::Machine && m.revoked.is_none())
        .collect();
    if json_out {
        let machines: Vec<_> = rows
            .iter()
            .map(|m| {
                json!({"name": m.name, "vip": m.vip, "every": m.schedule.every,
                       "admin_every": swarmbak_tracker::schedule::admin_every(&org, m.vip, &m.schedule),
                       "machine_may_override": m.schedule.may_override,
                       "effective_may_override": swarmbak_tracker::schedule::may_override(&org, &m.schedule),
                       "backup_requested": m.schedule.requested})
            })
            .collect();
        say!(
            "{}",
            json!({"every": org.every, "vip_every": org.vip_every,
                   "machine_may_override": org.machine_may_override, "machines": machines})
        );
        return Ok(());
    }
    say!(
        "organisation: every {}, VIP every {}, machines may override: {}",
        every_text(org.every),
        every_text(org.vip_every),
        if org.machine_may_override {
            "yes"
        } else {
            "no"
        }
    );
    say!(
        "{:<20} {:<4} {:<10} {:<10} {:<14} requested",
        "machine",
        "vip",
        "every",
        "admin",
        "may override"
    );
    for m in &rows {
        let may = match m.schedule.may_override {
            Some(true) => "yes".to_owned(),
            Some(false) => "no".to_owned(),
            None => format!(
                "({})",
                if org.machine_may_override {
                    "yes"
                } else {
                    "no"
                }
            ),
        };
        say!(
            "{:<20} {:<4} {:<10} {:<10} {:<14} {}",
            m.name,
            if m.vip { "VIP" } else { "" },
            every_text(m.schedule.every),
            every_text(swarmbak_tracker::schedule::admin_every(
                &org,
                m.vip,
                &m.schedule
            )),
            may,
            m.schedule.requested.map_or_else(|| "-".to_owned(), utc)
        );
    }
    Ok(())
}
