//! A small W3C WebDriver client: `chromedriver` and a headless Chromium (Debian's
//! `chromium` and `chromium-driver`), driven over HTTP/1.1 on loopback with
//! [`super::http_exchange`]. Chromedriver runs in its own process group, which Drop
//! kills whole (Chromium included) after deleting the session, also when a test panics.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key of an element reference in the W3C protocol.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long `find` and the waits wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// A headless Chromium session.
pub struct Browser {
    driver: Child,
    /// `127.0.0.1:PORT` of chromedriver.
    addr: String,
    session: String,
    /// Chromium's profile and chromedriver's log.
    dir: tempfile::TempDir,
}

/// An element of the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

/// A cookie as the browser holds it.
#[derive(Debug, Clone)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub http_only: bool,
    pub secure: bool,
    pub same_site: Option<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. Panics (the test fails, it is
    /// never skipped) when either is not installed.
    pub fn start() -> Browser {
        for (bin, what) in [(CHROMIUM, "Chromium"), (CHROMEDRIVER, "chromedriver")] {
            assert!(
                Path::new(bin).exists(),
                "{what} is not installed ({bin} is missing): this test drives a real browser; \
                 install it with `apt-get install chromium chromium-driver`"
            );
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("chromedriver.log");
        // Another process may take the port between the probe and chromedriver's bind:
        // try a few.
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let mut driver = spawn_driver(port, &log);
            if let Err(e) = wait_ready(&addr, &mut driver) {
                last_err = e;
                kill_group(&mut driver);
                continue;
            }
            let profile = dir.path().join("profile");
            let caps = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "pageLoadStrategy": "normal",
                "timeouts": {"implicit": 0, "pageLoad": 30_000, "script": 30_000},
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--window-size=1400,1000",
                        "--no-first-run",
                        "--no-default-browser-check",
                        "--disable-background-networking",
                        "--disable-extensions",
                        format!("--user-data-dir={}", profile.display()),
                    ],
                },
            }}});
            let answer = call(&addr, "POST", "/session", Some(&caps));
            match answer {
                Ok(v) => {
                    let session = v["sessionId"]
                        .as_str()
                        .unwrap_or_else(|| panic!("no session id in {v}"))
                        .to_owned();
                    return Browser {
                        driver,
                        addr,
                        session,
                        dir,
                    };
                }
                Err(e) => {
                    kill_group(&mut driver);
                    panic!(
                        "chromedriver could not start a headless Chromium session: {e}\n\
                         chromedriver's log:\n{}",
                        read_tail(&log)
                    );
                }
            }
        }
        panic!(
            "chromedriver ({CHROMEDRIVER}) did not come up: {last_err}\nits log:\n{}",
            read_tail(&log)
        )
    }

    /// A command of this session: `rest` is the path after `/session/ID`.
    fn cmd(&self, method: &str, rest: &str, body: Option<&Value>) -> Result<Value, String> {
        call(
            &self.addr,
            method,
            &format!("/session/{}{rest}", self.session),
            body,
        )
    }

    fn must(&self, method: &str, rest: &str, body: Option<&Value>) -> Value {
        self.cmd(method, rest, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {rest}: {e}"))
    }

    /// Loads `url` and waits for the page's load event.
    pub fn goto(&self, url: &str) {
        self.must("POST", "/url", Some(&json!({ "url": url })));
    }

    pub fn current_url(&self) -> String {
        str_of(self.must("GET", "/url", None))
    }

    pub fn title(&self) -> String {
        str_of(self.must("GET", "/title", None))
    }

    pub fn page_source(&self) -> String {
        str_of(self.must("GET", "/source", None))
    }

    /// Runs `js` (a function body: `return …`) with `args` (`arguments[i]`).
    pub fn execute(&self, js: &str, args: &[Value]) -> Value {
        self.must(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": js, "args": args })),
        )
    }

    /// The first element matching `css`, waiting up to [`WAIT`] for one to appear.
    pub fn find(&self, css: &str) -> Element<'_> {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.cmd("POST", "/element", Some(&by_css(css))) {
                Ok(v) => return self.element(&v),
                Err(e) if Instant::now() >= deadline => panic!(
                    "no element {css:?} on {} within {WAIT:?}: {e}\npage:\n{}",
                    self.current_url(),
                    self.page_source()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Every element matching `css` now (none is an empty list, at once).
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        match self.must("POST", "/elements", Some(&by_css(css))) {
            Value::Array(v) => v.iter().map(|e| self.element(e)).collect(),
            other => panic!("find_all {css:?}: {other}"),
        }
    }

    /// Whether an element matches `css` now.
    pub fn exists(&self, css: &str) -> bool {
        !self.find_all(css).is_empty()
    }

    fn element(&self, v: &Value) -> Element<'_> {
        let id = v[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("not an element reference: {v}"))
            .to_owned();
        Element { browser: self, id }
    }

    /// Runs `action` (a click, a submit) and waits until it has loaded another page: the
    /// page it started on is marked, and the wait ends when a page without the mark has
    /// finished loading (so following a link to the same URL waits too).
    pub fn navigating<T>(&self, action: impl FnOnce() -> T) -> T {
        self.execute("window.__swarmbak_old_page = true; return null;", &[]);
        let out = action();
        self.wait_until("the next page to load", || {
            self.cmd(
                "POST",
                "/execute/sync",
                Some(&json!({
                    "script": "return !window.__swarmbak_old_page && document.readyState === 'complete';",
                    "args": [],
                })),
            )
            // A page being replaced may not answer: not ready yet.
            .is_ok_and(|v| v == Value::Bool(true))
        });
        out
    }

    /// Polls `cond` until it holds, up to [`WAIT`].
    pub fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} (at {})",
                self.current_url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the viewport, written to `path` (its directory made). Returns its bytes.
    pub fn screenshot(&self, path: &Path) -> Vec<u8> {
        use base64::Engine;
        let b64 = str_of(self.must("GET", "/screenshot", None));
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .expect("the screenshot is base64");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "the screenshot is not a PNG"
        );
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).expect("the screenshot's directory");
        }
        std::fs::write(path, &png).expect("the screenshot is written");
        png
    }

    /// The cookies of the current page's origin.
    pub fn cookies(&self) -> Vec<Cookie> {
        let v = self.must("GET", "/cookie", None);
        v.as_array()
            .unwrap_or_else(|| panic!("cookies: {v}"))
            .iter()
            .map(|c| Cookie {
                name: c["name"].as_str().unwrap_or_default().to_owned(),
                value: c["value"].as_str().unwrap_or_default().to_owned(),
                http_only: c["httpOnly"].as_bool().unwrap_or(false),
                secure: c["secure"].as_bool().unwrap_or(false),
                same_site: c["sameSite"].as_str().map(str::to_owned),
            })
            .collect()
    }

    /// Where chromedriver logs (for a failing test's message).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("chromedriver.log")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromedriver quits Chromium when the session is deleted; then the whole process
        // group goes, whatever is left of it.
        let _ = call(
            &self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        kill_group(&mut self.driver);
    }
}

impl Element<'_> {
    fn url(&self, rest: &str) -> String {
        format!("/element/{}{rest}", self.id)
    }

    /// Its rendered text.
    pub fn text(&self) -> String {
        str_of(self.browser.must("GET", &self.url("/text"), None))
    }

    /// The attribute `name` as written in the page (`None` when absent).
    pub fn attr(&self, name: &str) -> Option<String> {
        let v = self
            .browser
            .must("GET", &self.url(&format!("/attribute/{name}")), None);
        v.as_str().map(str::to_owned)
    }

    pub fn click(&self) {
        self.browser
            .must("POST", &self.url("/click"), Some(&json!({})));
    }

    pub fn send_keys(&self, text: &str) {
        self.browser
            .must("POST", &self.url("/value"), Some(&json!({ "text": text })));
    }

    pub fn clear(&self) {
        self.browser
            .must("POST", &self.url("/clear"), Some(&json!({})));
    }

    /// The element as a script argument (`arguments[i]` is the DOM element).
    pub fn as_arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }
}

fn by_css(css: &str) -> Value {
    json!({"using": "css selector", "value": css})
}

fn str_of(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => panic!("expected a string from WebDriver, got {other}"),
    }
}

/// One WebDriver command: its `value`, or the error WebDriver answered.
fn call(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let headers = [("Content-Type", "application/json; charset=utf-8".to_owned())];
    let r = super::http_exchange(addr, method, path, &headers, body.as_bytes())
        .ok_or_else(|| format!("chromedriver at {addr} did not answer {method} {path}"))?;
    let v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| format!("{method} {path}: {} answered {e}: {}", r.status, r.text()))?;
    let value = v.get("value").cloned().unwrap_or(Value::Null);
    if r.status == 200 {
        Ok(value)
    } else {
        Err(format!(
            "{} {}: {}",
            r.status,
            value["error"].as_str().unwrap_or("?"),
            value["message"].as_str().unwrap_or_default()
        ))
    }
}

fn spawn_driver(port: u16, log: &Path) -> Child {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("chromedriver's log file");
    let err = out.try_clone().expect("the log file twice");
    Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group, Chromium's processes included: killed whole on Drop.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{CHROMEDRIVER} does not start ({e}): install it with \
                 `apt-get install chromium chromium-driver`"
            )
        })
}

/// Waits until chromedriver's `/status` says it is ready.
fn wait_ready(addr: &str, driver: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(st)) = driver.try_wait() {
            return Err(format!("chromedriver exited: {st}"));
        }
        if let Ok(v) = call(addr, "GET", "/status", None) {
            if v["ready"] == Value::Bool(true) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err("its /status did not answer ready within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the process group `child` leads (chromedriver and what it started).
fn kill_group(child: &mut Child) {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn read_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let start = s.len().saturating_sub(4000);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].to_owned()
}
