//! The administrator's side of the tracker over HTTP (tracker.md §10.2, §10.3, §10.5):
//! the admin API's status, history, revoke, alerts and audit endpoints, the dashboard's
//! pages (rendered by [`crate::dashboard`]), its sign-in, sessions and CSRF checks, and
//! `/metrics`.
//!
//! Two ways in: the admin token as `Authorization: Bearer` (scripts; no CSRF question, a
//! browser never sends it by itself), or the dashboard's session cookie, made by signing
//! in with the token once. A request that changes state with a cookie must also carry
//! the session's CSRF token and, when it has an `Origin`, come from the tracker's own
//! host: a page elsewhere cannot make the administrator's browser act.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, COOKIE, HOST, LOCATION, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::admin::{self, Actor};
use crate::dashboard;
use crate::metrics::Gauges;
use crate::server::{
    admin_error, admin_status, blocking, json, json_error, lock_db, read_body, read_dir,
    read_snaps, reload_if_changed, response, storage_error, unix_now, Resp, Shared,
};
use crate::status::{self, Filter, MachineStatus};
use crate::storage::{AlertRow, MachineRow, StorageError};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "swarmbak_session";
/// How long a dashboard session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once (the oldest is dropped beyond).
const MAX_SESSIONS: usize = 1024;
/// Largest form body taken (sign-in, actions).
const MAX_FORM_BYTES: usize = 4096;
/// Alerts cleared this long ago are still listed.
const CLEARED_LISTED: i64 = 7 * status::DAY;

struct Session {
    csrf: String,
    label: String,
    expires: Instant,
}

/// The dashboard's sessions, by the SHA-256 of the cookie (the cookie itself is never
/// kept).
#[derive(Default)]
pub(crate) struct Sessions(Mutex<HashMap<[u8; 32], Session>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session: (cookie value, its label for the audit log).
    fn create(&self) -> (String, String) {
        let cookie = hex::encode(rand::random::<[u8; 32]>());
        let hash = swarmbak_trust::sha256(cookie.as_bytes());
        let label = format!("session:{}", &hex::encode(hash)[..8]);
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            hash,
            Session {
                csrf: hex::encode(rand::random::<[u8; 32]>()),
                label: label.clone(),
                expires: now + SESSION_LIFETIME,
            },
        );
        (cookie, label)
    }

    /// The live session of `cookie`: (CSRF token, label).
    fn get(&self, cookie: &str) -> Option<(String, String)> {
        let hash = swarmbak_trust::sha256(cookie.as_bytes());
        let map = self.lock();
        let s = map.get(&hash)?;
        (s.expires > Instant::now()).then(|| (s.csrf.clone(), s.label.clone()))
    }

    fn remove(&self, cookie: &str) {
        self.lock()
            .remove(&swarmbak_trust::sha256(cookie.as_bytes()));
    }

    /// Ends every session (the admin token was rotated).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}

/// Constant-time equality (tokens).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Is `given` the current admin token?
pub(crate) fn is_token(sh: &Shared, given: &str) -> bool {
    let current = sh.admin_token.read().unwrap_or_else(|p| p.into_inner());
    ct_eq(given.trim().as_bytes(), current.as_bytes())
}

/// Is `header` (an `Authorization` value) `Bearer <admin token>`?
pub(crate) fn is_admin(sh: &Shared, header: Option<&str>) -> bool {
    header
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| is_token(sh, t))
}

/// How an admin request is authorised.
enum Auth {
    /// The admin token.
    Token,
    /// A dashboard session: its CSRF token, its label and its cookie.
    Session {
        csrf: String,
        label: String,
        cookie: String,
    },
    /// Neither.
    No,
}

fn cookie<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn auth(sh: &Shared, req: &Request<Incoming>) -> Auth {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if is_admin(sh, header) {
        return Auth::Token;
    }
    if let Some(c) = cookie(req, SESSION_COOKIE) {
        if let Some((csrf, label)) = sh.sessions.get(c) {
            return Auth::Session {
                csrf,
                label,
                cookie: c.to_owned(),
            };
        }
    }
    Auth::No
}

fn actor(a: &Auth, remote: SocketAddr) -> Actor {
    Actor {
        actor: match a {
            Auth::Session { label, .. } => label.clone(),
            _ => "admin-token".into(),
        },
        from: remote.ip().to_string(),
    }
}

/// Does the request's `Origin` (when it has one) name the host it was sent to?
fn same_origin(req: &Request<Incoming>) -> bool {
    let Some(origin) = req.headers().get(ORIGIN) else {
        return true;
    };
    let host = req.headers().get(HOST).and_then(|h| h.to_str().ok());
    let origin = origin.to_str().ok().and_then(|o| {
        o.strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"))
    });
    matches!((origin, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Form or query pairs as text (`+` is a space, as HTML forms send it).
fn form_pairs(raw: &[u8]) -> Vec<(String, String)> {
    let plus: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    crate::query::decoded_pairs(&plus)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect()
}

fn field<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn html(status: StatusCode, body: String) -> Resp {
    let mut r = response(status, "text/html; charset=utf-8", body);
    let h = r.headers_mut();
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
             img-src data:; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    r
}

fn redirect(to: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

fn wants_html(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// Every machine's status now (tracker.md §10.1). Blocking: database reads.
pub(crate) fn statuses(sh: &Shared) -> Result<(Vec<MachineStatus>, i64), StorageError> {
    statuses_and_rows(sh).map(|(_, all, now)| (all, now))
}

/// [`statuses`], and the machine rows they were built from.
fn statuses_and_rows(
    sh: &Shared,
) -> Result<(Vec<MachineRow>, Vec<MachineStatus>, i64), StorageError> {
    let now = unix_now();
    let (machines, activity) = {
        let mut db = lock_db(sh);
        (db.machines()?, db.activity()?)
    };
    let mut live = read_dir(sh).live();
    let snaps = read_snaps(sh);
    // What each machine holds for the others, from the announces in the swarms.
    let id_of: HashMap<String, u64> = machines
        .iter()
        .filter_map(|m| Some((hex::encode(m.key?), m.id as u64)))
        .collect();
    let held = sh.swarms.held_by_owner(|ih| {
        let r = snaps.get(ih)?;
        Some((r.total_length, id_of.get(&r.machine_key).copied()))
    });
    for (owner, bytes) in held {
        if let Ok(id) = i64::try_from(owner) {
            live.entry(id).or_default().held = bytes;
        }
    }
    let window = sh.config.peer_timeout().as_secs() as i64;
    let all = status::build(
        &machines,
        &activity,
        snaps.rows(),
        &live,
        now,
        window,
        sh.config.overdue,
    );
    Ok((machines, all, now))
}

/// How many alerts are open.
fn open_alerts(sh: &Shared) -> Result<usize, StorageError> {
    Ok(lock_db(sh).alerts(None)?.len())
}

/// The machine named `name`: the active one, else the latest revoked one.
fn find<'a>(all: &'a [MachineStatus], name: &str) -> Option<&'a MachineStatus> {
    all.iter()
        .filter(|m| m.name == name)
        .max_by_key(|m| (m.revoked.is_none(), m.id))
}

/// A path segment, percent-decoded.
fn segment(s: &str) -> Option<String> {
    crate::query::percent_decode(s.as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

/// The routes served here; the request is handed back when its path is not one of them.
pub(crate) async fn route(
    sh: &Arc<Shared>,
    remote: SocketAddr,
    tls: bool,
    req: Request<Incoming>,
) -> Result<Resp, Request<Incoming>> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let is_get = matches!(method, Method::GET | Method::HEAD);
    let api = path.strip_prefix("/api/v1");
    match (api, path.as_str()) {
        (None, "/metrics") if is_get => return Ok(metrics(sh).await),
        (None, "/login") if method == Method::POST => return Ok(login(sh, remote, tls, req).await),
        (None, "/") if is_get && wants_html(&req) => {}
        (None, "/logout" | "/alerts" | "/audit") => {}
        (None, p) if p.starts_with("/machines/") || p.starts_with("/alerts/") => {}
        (Some("/machines" | "/alerts" | "/audit" | "/retirements"), _) => {}
        (Some(p), _)
            if p.starts_with("/machines/")
                || p.starts_with("/alerts/")
                || p.starts_with("/retirements/") => {}
        _ => return Err(req),
    }
    let a = auth(sh, &req);
    let is_api = api.is_some();
    if matches!(a, Auth::No) {
        return Ok(if is_api {
            json_error(
                StatusCode::UNAUTHORIZED,
                "the admin API needs `Authorization: Bearer <DATA/admin-token>` (or the dashboard's session)",
            )
        } else if is_get {
            html(StatusCode::OK, dashboard::login(None))
        } else {
            html(
                StatusCode::UNAUTHORIZED,
                dashboard::login(Some("Your session ended: sign in again.")),
            )
        });
    }
    let csrf = match &a {
        Auth::Session { csrf, .. } => csrf.clone(),
        _ => String::new(),
    };
    let query = req.uri().query().unwrap_or("").to_owned();
    if !is_get {
        // An action: with a session, the CSRF token (form field or header) and the same
        // origin, read before the body consumes the request.
        let origin_ok = same_origin(&req);
        let header_csrf = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = match read_body(req, MAX_FORM_BYTES, sh.config.body_timeout).await {
            Ok(b) => b,
            Err(r) => return Ok(r),
        };
        let pairs = form_pairs(&body);
        let given = header_csrf.as_deref().or_else(|| field(&pairs, "csrf"));
        if let Some(r) = check_action(&a, given, origin_ok, is_api) {
            return Ok(r);
        }
        return Ok(action(sh, remote, &a, api.unwrap_or(&path), is_api).await);
    }
    if let Some(p) = api {
        return Ok(api_get(sh, p, &query).await);
    }
    Ok(page(sh, &path, &query, &csrf).await)
}

/// Checks an action's CSRF token and origin (sessions only): the refusal, if refused.
fn check_action(a: &Auth, req_csrf: Option<&str>, origin_ok: bool, is_api: bool) -> Option<Resp> {
    let Auth::Session { csrf, .. } = a else {
        return None;
    };
    let refuse = |msg: &str| {
        if is_api {
            json_error(StatusCode::FORBIDDEN, msg)
        } else {
            html(
                StatusCode::FORBIDDEN,
                dashboard::message("Refused", msg, Some(csrf)),
            )
        }
    };
    if !origin_ok {
        return Some(refuse(
            "refused: the request comes from another site (its Origin is not this tracker)",
        ));
    }
    if !req_csrf.is_some_and(|t| ct_eq(t.as_bytes(), csrf.as_bytes())) {
        return Some(refuse(
            "refused: the form's CSRF token is missing or stale; reload the page and try again",
        ));
    }
    None
}

/// An action, once authorised (`path` without `/api/v1` for the API).
async fn action(sh: &Arc<Shared>, remote: SocketAddr, a: &Auth, path: &str, is_api: bool) -> Resp {
    let by = actor(a, remote);
    let csrf = match a {
        Auth::Session { csrf, .. } => Some(csrf.clone()),
        _ => None,
    };
    let refused = |status: StatusCode, msg: String| {
        if is_api {
            json_error(status, msg)
        } else {
            html(status, dashboard::message("Refused", &msg, csrf.as_deref()))
        }
    };
    if path == "/logout" && !is_api {
        if let Auth::Session { cookie, .. } = a {
            sh.sessions.remove(cookie);
        }
        let _ = blocking(sh, move |sh| {
            admin::audit(
                &mut **lock_db(sh),
                &by,
                "sign-out",
                "dashboard",
                "",
                unix_now(),
            )
        })
        .await;
        let mut r = redirect("/");
        r.headers_mut().insert(
            hyper::header::SET_COOKIE,
            HeaderValue::from_static(
                "swarmbak_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
            ),
        );
        return r;
    }
    if let Some(name) = path
        .strip_prefix("/machines/")
        .and_then(|p| p.strip_suffix("/revoke"))
        .and_then(segment)
    {
        let n = name.clone();
        let r = blocking(sh, move |sh| {
            let out = admin::revoke(&mut **lock_db(sh), &sh.org, &n, &by, unix_now());
            if out.is_ok() {
                let _ = reload_if_changed(sh, true);
            }
            out
        })
        .await;
        return match r {
            Some(Ok(row)) if is_api => json(
                StatusCode::OK,
                &serde_json::json!({"name": row.name, "revoked": row.revoked}),
            ),
            Some(Ok(_)) => redirect(&format!("/machines/{}", dashboard::url_part(&name))),
            Some(Err(e)) if is_api => admin_error(&e),
            Some(Err(e)) => refused(admin_status(&e), e.to_string()),
            None => refused(StatusCode::INTERNAL_SERVER_ERROR, "revoke failed".into()),
        };
    }
    if let Some(id) = path
        .strip_prefix("/alerts/")
        .and_then(|p| p.strip_suffix("/ack"))
        .and_then(|p| p.parse::<i64>().ok())
    {
        let r = blocking(sh, move |sh| {
            let mut db = lock_db(sh);
            let now = unix_now();
            let alert = db.alerts(None)?.into_iter().find(|x| x.id == id);
            let Some(alert) = alert else {
                return Ok(None);
            };
            if !db.ack_alert(id, now, &by.actor)? {
                return Ok(None);
            }
            let name = db
                .machines()?
                .into_iter()
                .find(|m| m.id == alert.machine)
                .map(|m| m.name)
                .unwrap_or_default();
            admin::audit(
                &mut **db,
                &by,
                "ack-alert",
                &name,
                &format!("alert {id} ({})", alert.kind),
                now,
            )?;
            Ok::<_, StorageError>(Some(now))
        })
        .await;
        return match r {
            Some(Ok(Some(at))) if is_api => {
                json(StatusCode::OK, &serde_json::json!({"id": id, "acked": at}))
            }
            Some(Ok(Some(_))) => redirect("/alerts"),
            Some(Ok(None)) => refused(
                StatusCode::NOT_FOUND,
                format!("no open, unacknowledged alert {id}"),
            ),
            Some(Err(e)) if is_api => storage_error(&e),
            Some(Err(e)) => refused(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            None => refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "acknowledge failed".into(),
            ),
        };
    }
    if let Some(ih) = path
        .strip_prefix("/retirements/")
        .and_then(|p| p.strip_suffix("/cancel"))
        .filter(|_| is_api)
        .map(str::to_owned)
    {
        let r = blocking(sh, move |sh| {
            let out = admin::cancel_retirement(&mut **lock_db(sh), &ih, &by, unix_now());
            if out.is_ok() {
                let _ = reload_if_changed(sh, true);
            }
            out
        })
        .await;
        return match r {
            Some(Ok(view)) => json(StatusCode::OK, &view.to_json()),
            Some(Err(e)) => admin_error(&e),
            None => json_error(StatusCode::INTERNAL_SERVER_ERROR, "cancel failed"),
        };
    }
    refused(StatusCode::NOT_FOUND, "no such action".into())
}

#[derive(Serialize)]
struct MachinesAnswer<'a> {
    now: i64,
    overdue_warn_days: u32,
    overdue_alert_days: u32,
    machines: &'a [MachineStatus],
}

fn filter_of(query: &str) -> Result<Filter, status::FilterError> {
    let pairs = form_pairs(query.as_bytes());
    Filter::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

fn limit_of(query: &str, default: usize) -> usize {
    let pairs = form_pairs(query.as_bytes());
    field(&pairs, "limit")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(default)
        .clamp(1, 1000)
}

async fn api_get(sh: &Arc<Shared>, p: &str, query: &str) -> Resp {
    let th = sh.config.overdue;
    match p {
        "/machines" => {
            let f = match filter_of(query) {
                Ok(f) => f,
                Err(e) => return json_error(StatusCode::BAD_REQUEST, e.to_string()),
            };
            match blocking(sh, statuses).await {
                Some(Ok((all, now))) => json(
                    StatusCode::OK,
                    &MachinesAnswer {
                        now,
                        overdue_warn_days: th.warn_days,
                        overdue_alert_days: th.alert_days,
                        machines: &f.apply(&all, now),
                    },
                ),
                Some(Err(e)) => storage_error(&e),
                None => json_error(StatusCode::INTERNAL_SERVER_ERROR, "status failed"),
            }
        }
        "/alerts" => match blocking(sh, alert_views).await {
            Some(Ok(list)) => {
                let v: Vec<serde_json::Value> = list
                    .iter()
                    .map(|(a, name)| {
                        serde_json::json!({"id": a.id, "machine": name, "kind": a.kind,
                            "raised": a.raised, "notified": a.notified, "acked": a.acked,
                            "acked_by": a.acked_by, "cleared": a.cleared})
                    })
                    .collect();
                json(StatusCode::OK, &serde_json::json!({ "alerts": v }))
            }
            Some(Err(e)) => storage_error(&e),
            None => json_error(StatusCode::INTERNAL_SERVER_ERROR, "alerts failed"),
        },
        "/retirements" => match blocking(sh, |sh| admin::retirements(&mut **lock_db(sh))).await {
            Some(Ok(list)) => {
                let v: Vec<serde_json::Value> = list.iter().map(|r| r.to_json()).collect();
                json(StatusCode::OK, &serde_json::json!({ "retirements": v }))
            }
            Some(Err(e)) => admin_error(&e),
            None => json_error(StatusCode::INTERNAL_SERVER_ERROR, "retirements failed"),
        },
        "/audit" => {
            let limit = limit_of(query, 100);
            match blocking(sh, move |sh| lock_db(sh).audit_log(limit)).await {
                Some(Ok(rows)) => {
                    let v: Vec<serde_json::Value> = rows
                        .iter()
                        .map(|r| {
                            serde_json::json!({"id": r.id, "at": r.at, "actor": r.actor,
                                "from": r.from, "action": r.action, "target": r.target,
                                "detail": r.detail})
                        })
                        .collect();
                    json(StatusCode::OK, &serde_json::json!({ "audit": v }))
                }
                Some(Err(e)) => storage_error(&e),
                None => json_error(StatusCode::INTERNAL_SERVER_ERROR, "audit failed"),
            }
        }
        p => {
            let Some(name) = p.strip_prefix("/machines/").and_then(segment) else {
                return json_error(StatusCode::NOT_FOUND, "no such endpoint");
            };
            let limit = limit_of(query, 100);
            match blocking(sh, move |sh| machine_detail(sh, &name, limit)).await {
                Some(Ok(Some((m, attempts, snaps)))) => {
                    let mut v = match serde_json::to_value(&m) {
                        Ok(v) => v,
                        Err(_) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, "json"),
                    };
                    let attempts: Vec<serde_json::Value> = attempts
                        .iter()
                        .map(|a| {
                            serde_json::json!({"started": a.started, "ended": a.ended,
                                "duration": (a.ended - a.started).max(0),
                                "ok": a.outcome.is_ok(), "bytes": a.bytes, "files": a.files,
                                "infohash": a.outcome.as_ref().ok().map(hex::encode),
                                "error": a.outcome.as_ref().err()})
                        })
                        .collect();
                    v["attempts"] = serde_json::Value::Array(attempts);
                    v["snapshots_list"] = serde_json::to_value(&snaps).unwrap_or_default();
                    json(StatusCode::OK, &v)
                }
                Some(Ok(None)) => json_error(StatusCode::NOT_FOUND, "no machine of that name"),
                Some(Err(e)) => storage_error(&e),
                None => json_error(StatusCode::INTERNAL_SERVER_ERROR, "machine failed"),
            }
        }
    }
}

type Detail = (
    MachineStatus,
    Vec<crate::storage::ReportRow>,
    Vec<crate::store::SnapshotRecord>,
);

fn machine_detail(sh: &Shared, name: &str, limit: usize) -> Result<Option<Detail>, StorageError> {
    let (rows, all, _) = statuses_and_rows(sh)?;
    let Some(m) = find(&all, name).cloned() else {
        return Ok(None);
    };
    let attempts = lock_db(sh).reports(m.id, limit)?;
    let key = rows
        .iter()
        .find(|r| r.id == m.id)
        .and_then(|r| r.key)
        .map(hex::encode);
    let snaps = match key {
        Some(k) => read_snaps(sh).list(Some(&k)),
        None => Vec::new(),
    };
    Ok(Some((m, attempts, snaps)))
}

fn alert_views(sh: &Shared) -> Result<Vec<(AlertRow, String)>, StorageError> {
    let mut db = lock_db(sh);
    let names: HashMap<i64, String> = db.machines()?.into_iter().map(|m| (m.id, m.name)).collect();
    let list = db.alerts(Some(unix_now() - CLEARED_LISTED))?;
    Ok(list
        .into_iter()
        .map(|a| {
            let n = names.get(&a.machine).cloned().unwrap_or_default();
            (a, n)
        })
        .collect())
}

async fn page(sh: &Arc<Shared>, path: &str, query: &str, csrf: &str) -> Resp {
    let csrf_owned = csrf.to_owned();
    let failed = |e: &StorageError| {
        html(
            StatusCode::INTERNAL_SERVER_ERROR,
            dashboard::message("Tracker database error", &e.to_string(), Some(csrf)),
        )
    };
    match path {
        "/" => {
            let f = match filter_of(query) {
                Ok(f) => f,
                Err(e) => {
                    return html(
                        StatusCode::BAD_REQUEST,
                        dashboard::message("Bad filter", &e.to_string(), Some(csrf)),
                    )
                }
            };
            let r = blocking(sh, move |sh| {
                let (all, now) = statuses(sh)?;
                let open = open_alerts(sh)?;
                let list = f.apply(&all, now);
                Ok::<_, StorageError>(dashboard::overview(
                    &list,
                    &all,
                    &f,
                    sh.config.overdue,
                    &csrf_owned,
                    open,
                ))
            })
            .await;
            match r {
                Some(Ok(body)) => html(StatusCode::OK, body),
                Some(Err(e)) => failed(&e),
                None => html(StatusCode::INTERNAL_SERVER_ERROR, String::new()),
            }
        }
        "/alerts" => match blocking(sh, alert_views).await {
            Some(Ok(list)) => {
                let views: Vec<dashboard::AlertView<'_>> = list
                    .iter()
                    .map(|(a, n)| dashboard::AlertView {
                        alert: a,
                        machine: n,
                    })
                    .collect();
                html(StatusCode::OK, dashboard::alerts(&views, csrf))
            }
            Some(Err(e)) => failed(&e),
            None => html(StatusCode::INTERNAL_SERVER_ERROR, String::new()),
        },
        "/audit" => match blocking(sh, |sh| lock_db(sh).audit_log(500)).await {
            Some(Ok(rows)) => html(StatusCode::OK, dashboard::audit(&rows, csrf)),
            Some(Err(e)) => failed(&e),
            None => html(StatusCode::INTERNAL_SERVER_ERROR, String::new()),
        },
        p => {
            let Some(name) = p.strip_prefix("/machines/").and_then(segment) else {
                return html(
                    StatusCode::NOT_FOUND,
                    dashboard::message("Not found", "No such page.", Some(csrf)),
                );
            };
            match blocking(sh, move |sh| machine_detail(sh, &name, 100)).await {
                Some(Ok(Some((m, attempts, snaps)))) => html(
                    StatusCode::OK,
                    dashboard::machine(&m, &attempts, &snaps, csrf),
                ),
                Some(Ok(None)) => html(
                    StatusCode::NOT_FOUND,
                    dashboard::message("Not found", "No machine of that name.", Some(csrf)),
                ),
                Some(Err(e)) => failed(&e),
                None => html(StatusCode::INTERNAL_SERVER_ERROR, String::new()),
            }
        }
    }
}

async fn login(sh: &Arc<Shared>, remote: SocketAddr, tls: bool, req: Request<Incoming>) -> Resp {
    if !same_origin(&req) {
        return html(
            StatusCode::FORBIDDEN,
            dashboard::login(Some("Sign in from the tracker's own page.")),
        );
    }
    let body = match read_body(req, MAX_FORM_BYTES, sh.config.body_timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let pairs = form_pairs(&body);
    if !field(&pairs, "token").is_some_and(|t| is_token(sh, t)) {
        eprintln!(
            "swarmbak tracker: a dashboard sign-in from {} with a wrong token",
            remote.ip()
        );
        return html(
            StatusCode::UNAUTHORIZED,
            dashboard::login(Some("That is not the admin token (DATA/admin-token).")),
        );
    }
    let (cookie, label) = sh.sessions.create();
    let by = Actor {
        actor: label,
        from: remote.ip().to_string(),
    };
    let _ = blocking(sh, move |sh| {
        admin::audit(
            &mut **lock_db(sh),
            &by,
            "sign-in",
            "dashboard",
            "",
            unix_now(),
        )
    })
    .await;
    let mut r = redirect("/");
    let set = format!(
        "{SESSION_COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        SESSION_LIFETIME.as_secs(),
        if tls { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&set) {
        r.headers_mut().insert(hyper::header::SET_COOKIE, v);
    }
    r
}

/// `/metrics` (tracker.md §10.5).
async fn metrics(sh: &Arc<Shared>) -> Resp {
    let r = blocking(sh, |sh| {
        let (all, _) = statuses(sh)?;
        let open = open_alerts(sh)?;
        Ok::<_, StorageError>(Gauges {
            machines: status::counts(&all)
                .into_iter()
                .map(|(s, n)| (s.as_str(), n))
                .collect(),
            alerts_open: open,
            peers: sh.swarms.peer_count(),
            torrents: read_snaps(sh).rows().len(),
        })
    })
    .await;
    match r {
        Some(Ok(g)) => response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            sh.metrics.render(&g),
        ),
        Some(Err(e)) => storage_error(&e),
        None => json_error(StatusCode::INTERNAL_SERVER_ERROR, "metrics failed"),
    }
}
