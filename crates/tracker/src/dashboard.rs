//! The administrator's dashboard (tracker.md §10.3): server-rendered HTML, inline styles
//! and one small inline script, no external asset (it works on a network without
//! internet). Pure rendering: the routes, sessions and CSRF checks are in `crate::web`.
//! Every value that comes from a machine or the database is escaped ([`esc`]).

use std::fmt::Write;

use crate::status::{Filter, MachineStatus, Overdue, Sort, Status, Thresholds};
use crate::storage::{AlertRow, AuditRow, ReportRow};
use crate::store::SnapshotRecord;

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Percent-encodes a path segment or query value.
pub fn url_part(s: &str) -> String {
    crate::query::percent_encode(s.as_bytes())
}

fn when(t: Option<i64>) -> String {
    t.map_or_else(
        || "never".to_owned(),
        |t| swarmbak_core::utc(t)[..16].to_owned(),
    )
}

fn size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d232b;background:#f5f6f8}
header{background:#1d3557;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;align-items:center}
header a{color:#fff;text-decoration:none}header b{font-size:1.1em}
header form{margin-left:auto}main{padding:1em 1.2em}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:.35em .6em;border-bottom:1px solid #e3e6ea;text-align:left;white-space:nowrap}
th{background:#eef1f5;position:sticky;top:0}th a{color:inherit}
td.num{text-align:right}
.filters{display:flex;gap:.5em;flex-wrap:wrap;margin:.6em 0 1em}
.filters a{padding:.25em .7em;border:1px solid #9aa5b1;border-radius:1em;color:#1d3557;text-decoration:none;background:#fff}
.filters a.on{background:#1d3557;color:#fff}
.st{padding:.1em .5em;border-radius:.3em;font-size:.9em}
.st-ok{background:#d8f3dc}.st-new{background:#e0ecff}.st-overdue_warn{background:#ffe8a3}
.st-overdue_alert,.st-never{background:#ffc9c9}.st-revoked{background:#ddd}
.vip{font-weight:bold;color:#9d0208}.err{color:#9d0208}.muted{color:#6b7785}
.box{background:#fff;padding:1em;border:1px solid #e3e6ea;margin-bottom:1em}
button{cursor:pointer}
";

/// The page around `body`; `csrf` is the signed-in session's token (`None`: the
/// sign-in page, without navigation).
fn page(title: &str, csrf: Option<&str>, body: &str) -> String {
    let mut o = String::with_capacity(body.len() + 4096);
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{} · swarmbak tracker</title><style>{STYLE}</style></head><body><header>\
         <b>swarmbak</b>",
        esc(title)
    );
    if let Some(csrf) = csrf {
        let _ = write!(
            o,
            "<a id=\"nav-overview\" href=\"/\">Machines</a>\
             <a id=\"nav-alerts\" href=\"/alerts\">Alerts</a>\
             <a id=\"nav-audit\" href=\"/audit\">Audit log</a>\
             <form id=\"logout\" method=\"post\" action=\"/logout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Sign out</button></form>",
            esc(csrf)
        );
    }
    let _ = write!(o, "</header><main>{body}</main>{SCRIPT}</body></html>");
    o
}

/// Sorts the overview's other columns in the browser (age sorting is the server's,
/// `sort=age`, so that a link can be shared), and shows ages relative to the viewer's
/// clock in the cells' titles.
const SCRIPT: &str = "<script>
document.querySelectorAll('th[data-col]').forEach(function(th){
  th.style.cursor='pointer';
  th.addEventListener('click',function(){
    var t=th.closest('table'),b=t.tBodies[0],i=th.cellIndex,n=th.dataset.col==='num';
    var asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
    var rows=Array.prototype.slice.call(b.rows);
    rows.sort(function(x,y){
      var a=x.cells[i].dataset.v||x.cells[i].textContent,c=y.cells[i].dataset.v||y.cells[i].textContent;
      var r=n?(parseFloat(a)||0)-(parseFloat(c)||0):a.localeCompare(c);
      return asc?r:-r;});
    rows.forEach(function(r){b.appendChild(r);});
  });
});
</script>";

/// The sign-in form (every page without a valid session).
pub fn login(error: Option<&str>) -> String {
    let msg = error.map_or_else(String::new, |e| format!("<p class=\"err\">{}</p>", esc(e)));
    page(
        "Sign in",
        None,
        &format!(
            "<div class=\"box\"><h1>Sign in</h1>{msg}\
             <form id=\"login\" method=\"post\" action=\"/login\">\
             <p><label for=\"token\">Admin token (the tracker's <code>DATA/admin-token</code>)</label><br>\
             <input id=\"token\" name=\"token\" type=\"password\" size=\"70\" autocomplete=\"current-password\" autofocus></p>\
             <button id=\"sign-in\" type=\"submit\">Sign in</button></form></div>"
        ),
    )
}

/// The query string of `f` with `sort` replaced (for the header links).
fn query_with(f: &Filter, sort: Option<&str>) -> String {
    let mut parts: Vec<String> = Vec::new();
    match f.overdue {
        Some(Overdue::Days(d)) => parts.push(format!("overdue={d}")),
        Some(Overdue::Never) => parts.push("overdue=never".into()),
        Some(Overdue::DaysOrNever(d)) => parts.push(format!("overdue={d}%2Bnever")),
        None => {}
    }
    if let Some(v) = f.vip {
        parts.push(format!("vip={}", u8::from(v)));
    }
    if let Some(v) = f.online {
        parts.push(format!("online={}", u8::from(v)));
    }
    if let Some(q) = &f.q {
        parts.push(format!("q={}", url_part(q)));
    }
    if f.revoked {
        parts.push("revoked=1".into());
    }
    if let Some(s) = sort {
        parts.push(format!("sort={s}"));
    }
    if parts.is_empty() {
        "/".into()
    } else {
        format!("/?{}", parts.join("&amp;"))
    }
}

fn select(id: &str, current: &str, options: &[(&str, &str)]) -> String {
    let mut o = format!("<select id=\"{id}\" name=\"{id}\">");
    for (v, label) in options {
        let sel = if *v == current { " selected" } else { "" };
        let _ = write!(o, "<option value=\"{v}\"{sel}>{label}</option>");
    }
    o.push_str("</select>");
    o
}

/// The overview: the filtered machines, the filters, the search.
pub fn overview(
    list: &[MachineStatus],
    all: &[MachineStatus],
    f: &Filter,
    th: Thresholds,
    csrf: &str,
    alerts_open: usize,
) -> String {
    let mut o = String::with_capacity(list.len() * 600 + 4096);
    let counts = crate::status::counts(all);
    let n = |s: Status| counts.iter().find(|c| c.0 == s).map_or(0, |c| c.1);
    let _ = write!(
        o,
        "<h1>Machines</h1><p class=\"muted\">{} enrolled · {} backed up within {} days · \
         {} overdue {}+ days · {} overdue {}+ days · {} never backed up ({} of them \
         enrolled in the last {} days) · \
         <a href=\"/alerts\">{} open alert{}</a></p>",
        all.len() - n(Status::Revoked),
        n(Status::Ok),
        th.warn_days,
        n(Status::OverdueWarn),
        th.warn_days,
        n(Status::OverdueAlert),
        th.alert_days,
        n(Status::Never) + n(Status::New),
        n(Status::New),
        th.alert_days,
        alerts_open,
        if alerts_open == 1 { "" } else { "s" },
    );
    let on = |b: bool| if b { " class=\"on\"" } else { "" };
    let plain = f.overdue.is_none() && f.vip.is_none() && f.online.is_none() && f.q.is_none();
    let _ = write!(
        o,
        "<nav class=\"filters\">\
         <a id=\"f-all\" href=\"/\"{}>All</a>\
         <a id=\"f-warn\" href=\"/?overdue={w}\"{}>Not backed up in {w} days</a>\
         <a id=\"f-alert\" href=\"/?overdue={a}\"{}>Not backed up in {a} days</a>\
         <a id=\"f-never\" href=\"/?overdue=never\"{}>Never backed up</a>\
         <a id=\"f-vip\" href=\"/?vip=1\"{}>VIP</a>\
         <a id=\"f-online\" href=\"/?online=1\"{}>Online now</a></nav>",
        on(plain),
        on(f.overdue == Some(Overdue::Days(th.warn_days))),
        on(f.overdue == Some(Overdue::Days(th.alert_days))),
        on(f.overdue == Some(Overdue::Never)),
        on(f.vip == Some(true) && f.overdue.is_none()),
        on(f.online == Some(true) && f.overdue.is_none()),
        w = th.warn_days,
        a = th.alert_days,
    );
    let overdue_now = match f.overdue {
        Some(Overdue::Days(d)) => d.to_string(),
        Some(Overdue::Never) => "never".into(),
        Some(Overdue::DaysOrNever(d)) => format!("{d}+never"),
        None => String::new(),
    };
    let w = th.warn_days.to_string();
    let a = th.alert_days.to_string();
    let wn = format!("{}+never", th.warn_days);
    let overdue_opts: Vec<(&str, String)> = vec![
        ("", "any backup age".into()),
        (&w, format!("not in {w} days")),
        (&a, format!("not in {a} days")),
        ("never", "never".into()),
        (&wn, format!("not in {w} days or never")),
    ];
    let overdue_opts: Vec<(&str, &str)> =
        overdue_opts.iter().map(|(v, l)| (*v, l.as_str())).collect();
    let flag = |v: Option<bool>| match v {
        Some(true) => "1",
        Some(false) => "0",
        None => "",
    };
    let _ = write!(
        o,
        "<form id=\"search\" method=\"get\" action=\"/\" class=\"filters\">\
         <input id=\"q\" name=\"q\" value=\"{}\" placeholder=\"host, user or address (* wildcards)\" size=\"36\">\
         {} {} {}\
         <button id=\"search-go\" type=\"submit\">Search</button></form>",
        esc(f.q.as_deref().unwrap_or("")),
        select("overdue", &overdue_now, &overdue_opts),
        select(
            "vip",
            flag(f.vip),
            &[("", "VIP or not"), ("1", "VIP only"), ("0", "non-VIP only")]
        ),
        select(
            "online",
            flag(f.online),
            &[("", "online or not"), ("1", "online"), ("0", "offline")]
        ),
    );
    let age_link = query_with(
        f,
        Some(if f.sort == Sort::Age {
            "attention"
        } else {
            "age"
        }),
    );
    let _ = write!(
        o,
        "<p><span id=\"count\">{}</span> machine{} listed.</p>\
         <table id=\"machines\"><thead><tr>\
         <th data-col=\"text\">Machine</th><th data-col=\"text\">User</th><th>VIP</th>\
         <th data-col=\"text\">Status</th><th data-col=\"text\">Online</th>\
         <th data-col=\"num\">Last seen</th><th data-col=\"num\">Last success</th>\
         <th><a id=\"sort-age\" href=\"{age_link}\">Age (days){}</a></th>\
         <th data-col=\"num\">Size</th><th data-col=\"num\">Snapshots</th>\
         <th data-col=\"num\">Stored</th><th>Last attempt</th><th data-col=\"num\">Quota</th><th data-col=\"num\" title=\"what its announces say it holds of the others' snapshots\">Holds for others</th>\
         </tr></thead><tbody>",
        list.len(),
        if list.len() == 1 { "" } else { "s" },
        if f.sort == Sort::Age { " ▾" } else { "" },
    );
    for m in list {
        let age = m.age_days.map_or_else(String::new, |d| d.to_string());
        let name = esc(&m.name);
        let attempt = match (m.last_attempt, m.last_attempt_ok) {
            (None, _) => "<span class=\"muted\">none</span>".to_owned(),
            (Some(t), Some(true)) => format!("{} ok", when(Some(t))),
            (Some(t), _) => format!(
                "<span class=\"err\" title=\"{}\">{} failed</span>",
                esc(m.last_error.as_deref().unwrap_or("")),
                when(Some(t))
            ),
        };
        let _ =
            write!(
            o,
            "<tr class=\"machine\" data-name=\"{name}\" data-status=\"{st}\" data-vip=\"{vip}\" \
             data-online=\"{online}\" data-age=\"{age}\">\
             <td><a class=\"machine-link\" href=\"/machines/{href}\">{name}</a>{domain}</td>\
             <td>{user}</td><td>{vipmark}</td>\
             <td><span class=\"st st-{st}\">{st_label}</span></td><td>{online_label}</td>\
             <td data-v=\"{seen_v}\">{seen}</td><td data-v=\"{succ_v}\">{succ}</td>\
             <td class=\"num\">{age_label}</td>\
             <td class=\"num\" data-v=\"{bytes}\">{size}</td><td class=\"num\">{snaps}</td>\
             <td class=\"num\" data-v=\"{stored}\">{stored_h}</td><td>{attempt}</td>\
             <td class=\"num\" data-v=\"{quota_v}\">{quota_h}</td>\
             <td class=\"num\" data-v=\"{held}\">{held_h}</td></tr>",
            st = m.status.as_str(),
            vip = u8::from(m.vip),
            online = u8::from(m.online),
            href = url_part(&m.name),
            domain = m
                .domain
                .as_deref()
                .map_or_else(String::new, |d| format!(" <span class=\"muted\">{}</span>", esc(d))),
            user = esc(m.user.as_deref().unwrap_or("")),
            vipmark = if m.vip { "<span class=\"vip\">VIP</span>" } else { "" },
            st_label = m.status.as_str().replace('_', " "),
            online_label = if m.online { "online" } else { "offline" },
            seen_v = m.last_seen.unwrap_or(0),
            seen = when(m.last_seen),
            succ_v = m.last_success.unwrap_or(0),
            succ = when(m.last_success),
            age_label = if age.is_empty() { "never".to_owned() } else { age.clone() },
            bytes = m.bytes,
            size = size(m.bytes),
            snaps = m.snapshots,
            stored = m.stored_bytes,
            stored_h = size(m.stored_bytes),
            quota_v = m.quota.unwrap_or(0),
            quota_h = m.quota.map_or_else(|| "—".to_owned(), size),
            held = m.held_bytes,
            held_h = size(m.held_bytes),
        );
    }
    o.push_str(
        "</tbody></table><p class=\"muted\">Snapshots at risk (too few copies held) will \
         be listed here with the swarm's health.</p>",
    );
    page("Machines", Some(csrf), &o)
}

/// One machine: its status, its history of attempts, its snapshots, and the revoke action.
pub fn machine(
    m: &MachineStatus,
    attempts: &[ReportRow],
    snapshots: &[SnapshotRecord],
    csrf: &str,
) -> String {
    let mut o = String::with_capacity(attempts.len() * 300 + 4096);
    let name = esc(&m.name);
    let _ = write!(
        o,
        "<h1 id=\"machine-name\">{name}</h1><div class=\"box\"><p>User: {} · {}{} · \
         status <span class=\"st st-{st}\">{st}</span> · {} · last seen {}{}</p>\
         <p>Last success: {} ({}) · size of the latest backup {} · {} snapshot{} ({} stored) · \
         holds {} of the others' snapshots (quota {}) · enrolled {}{}</p>",
        esc(m.user.as_deref().unwrap_or("—")),
        if m.vip {
            "<span class=\"vip\">VIP</span>"
        } else {
            "not VIP"
        },
        m.domain
            .as_deref()
            .map_or_else(String::new, |d| format!(" · {}", esc(d))),
        if m.online { "online" } else { "offline" },
        when(m.last_seen),
        m.address
            .as_deref()
            .map_or_else(String::new, |a| format!(" from {}", esc(a))),
        when(m.last_success),
        m.age_days
            .map_or_else(|| "never".to_owned(), |d| format!("{d} days ago")),
        size(m.bytes),
        m.snapshots,
        if m.snapshots == 1 { "" } else { "s" },
        size(m.stored_bytes),
        size(m.held_bytes),
        m.quota.map_or_else(|| "not given".to_owned(), size),
        when(Some(m.enrolled)),
        m.revoked.map_or_else(String::new, |t| format!(
            " · <b>revoked {}</b>",
            when(Some(t))
        )),
        st = m.status.as_str(),
    );
    if m.revoked.is_none() {
        let _ = write!(
            o,
            "<form id=\"revoke\" method=\"post\" action=\"/machines/{}/revoke\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button id=\"revoke-go\" type=\"submit\">Revoke this machine (its passkey stops working at once)</button></form>",
            url_part(&m.name),
            esc(csrf)
        );
    }
    let _ = write!(
        o,
        "</div><h2>Backup attempts</h2><table id=\"history\"><thead><tr><th>Started</th>\
         <th>Ended</th><th>Duration</th><th>Result</th><th>Read</th><th>Files</th>\
         <th>Snapshot or error</th></tr></thead><tbody>"
    );
    for a in attempts {
        let (ok, what) = match &a.outcome {
            Ok(ih) => (true, format!("<code>{}</code>", hex::encode(ih))),
            Err(e) => (false, format!("<span class=\"err\">{}</span>", esc(e))),
        };
        let _ = write!(
            o,
            "<tr class=\"attempt\" data-ok=\"{}\"><td>{}</td><td>{}</td><td class=\"num\">{} s</td>\
             <td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            u8::from(ok),
            when(Some(a.started)),
            when(Some(a.ended)),
            (a.ended - a.started).max(0),
            if ok { "ok" } else { "failed" },
            size(a.bytes),
            a.files,
            what
        );
    }
    o.push_str("</tbody></table><h2>Snapshots</h2><table id=\"snapshots\"><thead><tr><th>Published</th><th>Info-hash</th><th>Payload</th><th>Copies wanted</th><th>State</th></tr></thead><tbody>");
    for s in snapshots {
        let state = match (s.retired_at, s.retirement_cancelled) {
            (Some(at), _) => format!(
                "<span class=\"st st-revoked\" title=\"holders drop its stripes that no kept snapshot reads once the grace period has passed\">retired {}</span> <span class=\"muted\">holders drop its unreferenced stripes after the grace period</span>",
                when(Some(at))
            ),
            (None, Some(at)) => format!("kept (retirement cancelled {})", when(Some(at))),
            (None, None) => "kept".to_owned(),
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            when(Some(s.published)),
            esc(&s.infohash),
            size(s.payload_length),
            s.copies,
            state
        );
    }
    o.push_str("</tbody></table>");
    page(&m.name, Some(csrf), &o)
}

/// An alert with its machine's name, for the page.
pub struct AlertView<'a> {
    /// The alert.
    pub alert: &'a AlertRow,
    /// Its machine's name.
    pub machine: &'a str,
}

/// The alerts page: open ones first, then those cleared lately.
pub fn alerts(list: &[AlertView<'_>], csrf: &str) -> String {
    let mut o = String::from(
        "<h1>Alerts</h1><table id=\"alerts\"><thead><tr><th>Machine</th><th>Kind</th>\
         <th>Raised</th><th>Last notified</th><th>State</th><th></th></tr></thead><tbody>",
    );
    for v in list {
        let a = v.alert;
        let state = match (a.cleared, a.acked) {
            (Some(t), _) => format!("back to OK {}", when(Some(t))),
            (None, Some(t)) => format!(
                "acknowledged {} by {}",
                when(Some(t)),
                esc(a.acked_by.as_deref().unwrap_or("?"))
            ),
            (None, None) => "<b>open</b>".into(),
        };
        let action = if a.cleared.is_none() && a.acked.is_none() {
            format!(
                "<form class=\"ack\" method=\"post\" action=\"/alerts/{}/ack\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button type=\"submit\">Acknowledge</button></form>",
                a.id,
                esc(csrf)
            )
        } else {
            String::new()
        };
        let _ = write!(
            o,
            "<tr class=\"alert\" data-id=\"{}\" data-machine=\"{m}\" data-kind=\"{k}\">\
             <td><a href=\"/machines/{href}\">{m}</a></td><td>{k}</td><td>{}</td><td>{}</td>\
             <td>{state}</td><td>{action}</td></tr>",
            a.id,
            when(Some(a.raised)),
            when(Some(a.notified)),
            m = esc(v.machine),
            k = esc(&a.kind),
            href = url_part(v.machine),
        );
    }
    o.push_str("</tbody></table>");
    page("Alerts", Some(csrf), &o)
}

/// The audit log.
pub fn audit(rows: &[AuditRow], csrf: &str) -> String {
    let mut o = String::from(
        "<h1>Audit log</h1><table id=\"audit\"><thead><tr><th>When</th><th>Who</th>\
         <th>From</th><th>Action</th><th>On</th><th>Detail</th></tr></thead><tbody>",
    );
    for r in rows {
        let _ = write!(
            o,
            "<tr data-action=\"{a}\" data-target=\"{t}\"><td>{}</td><td>{}</td><td>{}</td>\
             <td>{a}</td><td>{t}</td><td>{}</td></tr>",
            when(Some(r.at)),
            esc(&r.actor),
            esc(&r.from),
            esc(&r.detail),
            a = esc(&r.action),
            t = esc(&r.target),
        );
    }
    o.push_str("</tbody></table>");
    page("Audit log", Some(csrf), &o)
}

/// A short page for an error (404, a refused action), signed in or not.
pub fn message(title: &str, text: &str, csrf: Option<&str>) -> String {
    page(
        title,
        csrf,
        &format!(
            "<h1>{}</h1><p>{}</p><p><a href=\"/\">Back to the machines</a></p>",
            esc(title),
            esc(text)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_a_machine_names() {
        assert_eq!(
            esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
        let m = MachineStatus {
            id: 1,
            name: "a<b".into(),
            user: Some("<img src=x onerror=alert(1)>".into()),
            vip: true,
            domain: Some("\"hq\"".into()),
            online: false,
            last_seen: None,
            address: None,
            last_attempt: Some(10),
            last_attempt_ok: Some(false),
            last_error: Some("\"><script>".into()),
            last_success: None,
            age_days: None,
            status: Status::Never,
            snapshots: 0,
            bytes: 0,
            stored_bytes: 0,
            held_bytes: 0,
            quota: None,
            enrolled: 0,
            revoked: None,
        };
        let html = overview(
            std::slice::from_ref(&m),
            std::slice::from_ref(&m),
            &Filter {
                q: Some("\"><b>".into()),
                ..Filter::default()
            },
            Thresholds::default(),
            "tok",
            0,
        );
        assert!(!html.contains("<img"));
        assert!(!html.contains("\"><script>"));
        assert!(!html.contains("<b>\""));
        assert!(html.contains("data-name=\"a&lt;b\""));
        assert!(html.contains("href=\"/machines/a%3Cb\""));
        assert!(!machine(&m, &[], &[], "tok").contains("<img"));
    }

    #[test]
    fn sizes() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 << 30), "5.0 GiB");
    }
}
