//! `swarmbak tracker`: the company tracker, and its administration on the data directory
//! (enroll, revoke, machines). The administration commands write the database directly
//! (SQLite in WAL mode lets them while the tracker runs) and then ask a running tracker
//! to reload, so a revocation counts on its next request.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;
use swarmbak_tracker::admin::{self, EnrollOptions};
use swarmbak_tracker::org::Org;
use swarmbak_tracker::sqlite::Sqlite;
use swarmbak_tracker::storage::{MachineKind, Storage};

use crate::cmd::listening;
use crate::failure::Failure;
use crate::render::utc;
use crate::Ctx;

type R = Result<(), Failure>;

#[derive(Subcommand, Debug)]
pub enum Action {
    /// Enrol a machine: prints a one-time token (first line) for `swarmbak init --enroll`.
    Enroll {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        user: Option<String>,
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
        #[arg(long)]
        data: PathBuf,
        /// The machine's enrolled name, its key (hex) or its passkey.
        machine: String,
    },
    /// List the enrolled machines and clients.
    Machines {
        #[arg(long)]
        data: PathBuf,
    },
}

pub struct Serve {
    pub listen: Option<String>,
    pub data: Option<PathBuf>,
    pub interval: Option<u64>,
    pub open: bool,
    pub recovery: Vec<String>,
    pub public_url: Option<String>,
    /// `--udp-listen`: an address, `off`, or the HTTP listener's address by default.
    pub udp_listen: Option<String>,
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
            Err(e) => {
                return Err(Failure::new(
                    1,
                    format!(
                        "cannot serve the UDP tracker on {at}: {e} (choose another port with --udp-listen ADDR, or --udp-listen off)"
                    ),
                ))
            }
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn serve(ctx: &Ctx, s: Serve) -> R {
    let (Some(listen), Some(data)) = (s.listen, s.data) else {
        return Err(Failure::usage(
            "swarmbak tracker needs --listen ADDR and --data DIR (or a subcommand: enroll, revoke, machines)",
        ));
    };
    let addr = swarmbak_node::agent::bind_addr(Some(&listen))?;
    let udp = match s.udp_listen.as_deref() {
        None => UdpListen::Same,
        Some("off") => UdpListen::Off,
        Some(a) => UdpListen::At(a.parse().map_err(|_| {
            Failure::usage(format!(
                "--udp-listen {a:?}: give HOST:PORT, like 0.0.0.0:6969, or `off`"
            ))
        })?),
    };
    let rt = swarmbak_node::runtime()?;
    rt.block_on(async {
        let mut cfg = swarmbak_tracker::TrackerConfig::new(&data);
        if let Some(i) = s.interval {
            cfg.interval = Duration::from_secs(i.max(1));
            cfg.min_interval = Duration::from_secs((i / 2).max(1));
        }
        cfg.open = s.open;
        cfg.recovery_recipients = s.recovery;
        cfg.public_url = s.public_url.map(|u| u.trim_end_matches('/').to_owned());
        let t = tokio::task::spawn_blocking(move || swarmbak_tracker::Tracker::open(cfg))
            .await
            .map_err(|e| Failure::new(1, e.to_string()))?
            .map_err(|e| Failure::new(1, format!("{e}")))?;
        let (listener, udp_socket) = bind_both(addr, &udp).await?;
        let local = listener.local_addr()?;
        t.record_address(local);
        listening(ctx, local);
        let t = match udp_socket {
            Some(sock) => {
                println!("listening-udp {}", sock.local_addr()?);
                t.with_udp(sock)
            }
            None => t,
        };
        eprintln!(
            "swarmbak tracker: {} tracker, data in {}, organisation key {} ({}); {:?}",
            if s.open { "open" } else { "private" },
            data.display(),
            t.org_key(),
            t.org_key().fingerprint(),
            t.load_report()
        );
        t.serve(listener)
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
    let Ok(mut sa) = addr.parse::<std::net::SocketAddr>() else {
        return;
    };
    if sa.ip().is_unspecified() {
        sa.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let Ok(c) = swarmbak_tracker::TrackerClient::new(&format!("http://{sa}")) else {
        return;
    };
    if let Ok(rt) = swarmbak_node::runtime() {
        let c = c.with_timeout(Duration::from_secs(5));
        if let Err(e) = rt.block_on(c.reload(&org.admin_token)) {
            if !matches!(e, swarmbak_tracker::ClientError::Connect { .. }) {
                eprintln!("swarmbak: the running tracker did not reload at once ({e}); it will within a second");
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
                let (row, announce) =
                    admin::create_client(&mut db, url.as_deref(), &name, now()).map_err(fail)?;
                println!("{announce}");
                poke(&mut db, &org);
                if ctx.json {
                    println!(
                        "{}",
                        json!({"event": "enrolled", "client": true, "name": row.name, "announce_url": announce})
                    );
                } else {
                    eprintln!("client {name:?} enrolled: give it the announce URL above (it carries its passkey)");
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
                now(),
            )
            .map_err(fail)?;
            println!("{token}");
            if ctx.json {
                println!(
                    "{}",
                    json!({"event": "token", "name": name, "valid_days": admin::TOKEN_DAYS})
                );
            } else {
                eprintln!(
                    "on {name:?}: swarmbak init --enroll <the token above>   (one use, valid {} days; organisation key {})",
                    admin::TOKEN_DAYS,
                    org.public().fingerprint()
                );
            }
            Ok(())
        }
        Action::Revoke { data, machine } => {
            let (mut db, org) = open_db(&data)?;
            let row = admin::revoke(&mut db, &org, &machine, now()).map_err(fail)?;
            poke(&mut db, &org);
            if ctx.json {
                println!(
                    "{}",
                    json!({"event": "revoked", "name": row.name, "key": row.key.map(hex::encode), "revoked": row.revoked})
                );
            } else {
                println!("revoked {:?}: its passkey no longer works", row.name);
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
                    println!(
                        "{}",
                        json!({"name": m.name, "kind": kind, "key": m.key.map(hex::encode),
                               "user": m.user, "vip": m.vip, "domain": m.domain,
                               "enrolled": m.enrolled, "expires": m.expires, "revoked": m.revoked})
                    );
                } else {
                    println!(
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
                println!(
                    "no machines enrolled yet: swarmbak tracker enroll --data DIR --name NAME"
                );
            }
            Ok(())
        }
    }
}
