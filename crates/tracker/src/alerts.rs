//! Alerts (tracker.md §10.4): a VIP machine overdue, or any machine badly overdue, is
//! logged and POSTed to a webhook, repeated at most once per `alert_repeat` until it is
//! acknowledged or the machine is backed up again, which sends a back-to-OK notice.
//! The state (one open alert per machine) is in the database, so a restart neither
//! forgets an alert nor repeats it early.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};
use serde::Serialize;
use tokio::sync::watch;

use crate::server::{blocking, lock_db, Shared};
use crate::status::{MachineStatus, DAY};
use crate::storage::StorageError;

/// What is logged and POSTed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    /// `alert` (raised or repeated) or `ok` (back to OK).
    pub event: &'static str,
    /// `vip_overdue` or `overdue`.
    pub kind: String,
    /// The machine's name.
    pub machine: String,
    /// Its user.
    pub user: Option<String>,
    /// VIP.
    pub vip: bool,
    /// Days since its last success (`None`: never).
    pub age_days: Option<i64>,
    /// Its last success.
    pub last_success: Option<i64>,
    /// Its status (tracker.md §10.1).
    pub status: &'static str,
    /// The alert's id.
    pub alert: i64,
    /// One line for people.
    pub message: String,
}

/// The alert `m` calls for now, if any (`None` for a revoked machine).
fn wanted(m: &MachineStatus, now: i64, sh: &Shared) -> Option<&'static str> {
    if m.revoked.is_some() {
        return None;
    }
    let th = sh.config.overdue;
    let age = now - m.last_success.unwrap_or(m.enrolled);
    if age >= i64::from(th.alert_days) * DAY {
        Some("overdue")
    } else if m.vip && age >= i64::from(th.warn_days) * DAY {
        Some("vip_overdue")
    } else {
        None
    }
}

fn who(m: &MachineStatus) -> String {
    let mut s = m.name.clone();
    let mut extra: Vec<&str> = Vec::new();
    if let Some(u) = &m.user {
        extra.push(u);
    }
    if m.vip {
        extra.push("VIP");
    }
    if !extra.is_empty() {
        s.push_str(&format!(" ({})", extra.join(", ")));
    }
    s
}

fn notice(event: &'static str, kind: &str, m: &MachineStatus, alert: i64, now: i64) -> Notice {
    let message = match (event, m.age_days) {
        ("ok", _) if m.revoked.is_some() => format!("{}: revoked, alert closed", who(m)),
        ("ok", _) => format!("{}: backed up again", who(m)),
        (_, Some(d)) => format!("{}: no backup for {d} days", who(m)),
        (_, None) => format!(
            "{}: never backed up (enrolled {} days ago)",
            who(m),
            (now - m.enrolled).max(0) / DAY
        ),
    };
    Notice {
        event,
        kind: kind.to_owned(),
        machine: m.name.clone(),
        user: m.user.clone(),
        vip: m.vip,
        age_days: m.age_days,
        last_success: m.last_success,
        status: m.status.as_str(),
        alert,
        message,
    }
}

/// One evaluation: raises, repeats and clears alerts in the database and returns what
/// to tell. Blocking.
pub(crate) fn evaluate(sh: &Shared) -> Result<Vec<Notice>, StorageError> {
    let (all, now) = crate::web::statuses(sh)?;
    let repeat = sh.config.alert_repeat.as_secs() as i64;
    let mut db = lock_db(sh);
    let open: HashMap<i64, crate::storage::AlertRow> = db
        .alerts(None)?
        .into_iter()
        .map(|a| (a.machine, a))
        .collect();
    let mut out = Vec::new();
    for m in &all {
        match (wanted(m, now, sh), open.get(&m.id)) {
            (Some(kind), None) => {
                if let Some(a) = db.raise_alert(m.id, kind, now)? {
                    out.push(notice("alert", kind, m, a.id, now));
                }
            }
            (Some(kind), Some(a)) => {
                // A new kind (a VIP's alert that became `overdue`) is news even after an
                // acknowledgement; the same one repeats only when not acknowledged.
                let due = a.kind != kind || (a.acked.is_none() && now - a.notified >= repeat);
                if due {
                    db.alert_notified(a.id, kind, now)?;
                    out.push(notice("alert", kind, m, a.id, now));
                }
            }
            (None, Some(a)) => {
                db.clear_alert(a.id, now)?;
                out.push(notice("ok", &a.kind, m, a.id, now));
            }
            (None, None) => {}
        }
    }
    Ok(out)
}

/// POSTs `body` (JSON) to an `http://` URL; the status, or why it failed.
async fn post_json(url: &str, body: Vec<u8>) -> Result<u16, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// webhooks are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut req = Request::new(Full::new(Bytes::from(body)));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = path.parse().map_err(|e| format!("{url}: {e}"))?;
    let h = req.headers_mut();
    h.insert(
        HOST,
        HeaderValue::from_str(authority).map_err(|_| format!("bad host {authority:?}"))?,
    );
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("swarmbak-tracker/", env!("CARGO_PKG_VERSION"))),
    );
    let (status, _) = crate::client::send(stream, req)
        .await
        .map_err(|e| e.to_string())?;
    Ok(status.as_u16())
}

/// Tells: one log line each, and the webhook when configured.
async fn tell(sh: &Shared, notices: &[Notice]) {
    for n in notices {
        let word = if n.event == "ok" { "OK" } else { "ALERT" };
        eprintln!("swarmbak tracker: {word} {} {}", n.kind, n.message);
        let Some(url) = &sh.config.alert_webhook else {
            continue;
        };
        let body = serde_json::to_vec(n).unwrap_or_default();
        match tokio::time::timeout(Duration::from_secs(10), post_json(url, body)).await {
            Ok(Ok(s)) if (200..300).contains(&s) => {}
            Ok(Ok(s)) => eprintln!("swarmbak tracker: the alert webhook answered {s}"),
            Ok(Err(e)) => eprintln!("swarmbak tracker: the alert webhook failed: {e}"),
            Err(_) => eprintln!("swarmbak tracker: the alert webhook did not answer within 10 s"),
        }
    }
}

/// Evaluates alerts every `alert_every` until `stop`.
pub(crate) async fn run(sh: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(sh.config.alert_every.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match blocking(&sh, evaluate).await {
                    Some(Ok(notices)) => tell(&sh, &notices).await,
                    Some(Err(e)) => eprintln!("swarmbak tracker: alerts not evaluated: {e}"),
                    None => {}
                }
            }
            _ = stop.changed() => break,
        }
    }
}
