//! Deployment (issue 10, point 5): the systemd units in `dist/systemd/` pass `systemd-analyze
//! verify` without a word of warning, and README.md's "Deploy the tracker", followed word
//! for word on loopback, ends with the tracker running as its unit runs it, a machine
//! enrolled and backed up by its agent, and the dashboard's address answering to the
//! admin token.
//!
//! How the README is followed without systemd as PID 1, root on other hosts or a second
//! machine (the_readme_deployment_section_followed_word_for_word):
//!
//! - Each ```sh block of the section runs as one `bash -euo pipefail` script, in order, in
//!   one working directory that stands for the administrator's: the repository checkout
//!   (`dist/systemd/` copied from this repository, `target/release/swarmbak` this test's
//!   binary) and root's home on every host alike.
//! - A temporary directory ROOT stands for `/`, with a fresh Debian's `etc/default`,
//!   `etc/systemd/system`, `usr/local/bin`, `var/lib` and a `home/ana` to back up. Before a
//!   block runs, its text is rewritten: the absolute paths under `/etc`, `/var/lib`,
//!   `/usr/local` and `/home` get ROOT in front, `tracker.example.com` and `0.0.0.0` become
//!   `127.0.0.1`, port `6969` a free port, and the placeholders `age1…` and
//!   `swarmbak-enroll-1.…` the first line an earlier block printed that starts with
//!   `age1` (the recovery key's public half) or `swarmbak-enroll-1.` (the token). Nothing
//!   else changes. `PATH` is ROOT/usr/local/bin before the system's directories: the
//!   `swarmbak` the blocks run is the one they installed.
//! - Commands that need root, systemd or another host are shell functions that record
//!   their arguments: `apt-get`, `cargo` and `useradd` do nothing more (the packages are
//!   CI's, the binary is this test's, the user is remembered); `scp FILES... HOST:` copies
//!   FILES into the working directory; `runuser -u USER -- COMMAND...` runs COMMAND when
//!   USER was added with `useradd`; `systemctl` and `journalctl` wait while this test
//!   acts on them, and fail, saying why, where systemd would.
//! - `systemctl enable --now UNIT` starts UNIT as systemd would from the file the README
//!   installed in ROOT/etc/systemd/system: its AssertPathExists= and ConditionPathExists=
//!   must hold, its User= must have been added, its EnvironmentFile= is read (and must
//!   set no `SWARMBAK_*` variable: the test does not pass them on), its StateDirectory= is
//!   made (mode StateDirectoryMode=) and ExecStart= is expanded as systemd.service(5) says
//!   (`${VAR}` one word, `$VAR` split at whitespace), its paths rewritten as above, and
//!   started with this test's binary (which the README's `install` copied to the path
//!   ExecStart= names). An `AGENT_OPTIONS` the environment file does not set is
//!   `--listen 127.0.0.1:0`, so that the agent listens on loopback only, as every test.
//!   The service runs as this test's user, not as its User=. `systemctl status UNIT` and
//!   `journalctl -u UNIT` assert that UNIT was started and still runs; `systemctl
//!   daemon-reload` does nothing.
//!
//! Then this test checks what the section promises: the tracker answers over HTTPS with
//! its own certificate, the machine is listed and its backup published, the admin token
//! the section shows opens the admin API, and the dashboard's address answers.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::procs::{Proc, FAST};
use common::BIN;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const UNITS: &[&str] = &["swarmbak-tracker.service", "swarmbak-agent.service"];

/// Where the units run the binary from (README.md installs it there).
const INSTALLED_BIN: &str = "/usr/local/bin/swarmbak";

/// Runs `program --version`; a missing program fails the test (it does not skip) with
/// the Debian package to install.
fn require(program: &str, package: &str) {
    match Command::new(program).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("`{program} --version` failed: {o:?}"),
        Err(e) => panic!(
            "{program} is needed by this test and cannot be run ({e}): install the `{package}` package (apt-get install {package}, as .ci/run does)"
        ),
    }
}

/// Issue 10, point 5: CI checks the units with `systemd-analyze verify`. It checks that
/// ExecStart='s program exists, so each unit is verified as a copy in a temporary
/// directory whose ExecStart= names this test's binary instead of /usr/local/bin/swarmbak,
/// nothing else changed. It often exits 0 while it warns: any output fails the test.
#[test]
fn units_pass_systemd_analyze_verify() {
    require("systemd-analyze", "systemd");
    for unit in UNITS {
        verify(unit, false);
    }
    // The desktop user's unit (issue 12, point 6), verified as a user unit: a user
    // manager needs a runtime directory, which a CI container has not.
    verify("user/swarmbak-agent.service", true);
}

/// `systemd-analyze [--user] verify` on a copy of `dist/systemd/UNIT` whose ExecStart=
/// runs this test's binary; any output fails.
fn verify(unit: &str, user: bool) {
    let t = tempfile::tempdir().unwrap();
    let text = fs::read_to_string(repo().join("dist/systemd").join(unit)).unwrap();
    let exec = format!("ExecStart={INSTALLED_BIN} ");
    assert_eq!(
        text.lines().filter(|l| l.starts_with(&exec)).count(),
        1,
        "{unit}: one ExecStart= that runs {INSTALLED_BIN} (where README.md installs it)"
    );
    let copy: String = text
        .lines()
        .map(|l| match l.strip_prefix(&exec) {
            Some(rest) => format!("ExecStart={BIN} {rest}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    let name = Path::new(unit).file_name().unwrap();
    let path = t.path().join(name);
    fs::write(&path, copy).unwrap();
    let mut cmd = Command::new("systemd-analyze");
    if user {
        let rt = t.path().join("runtime");
        fs::create_dir(&rt).unwrap();
        fs::set_permissions(&rt, fs::Permissions::from_mode(0o700)).unwrap();
        cmd.arg("--user").env("XDG_RUNTIME_DIR", &rt);
    }
    let o = cmd
        .arg("verify")
        .arg(&path)
        .current_dir(t.path())
        .output()
        .expect("systemd-analyze runs");
    let (out, err) = common::text(&o);
    assert!(
        o.status.success() && out.trim().is_empty() && err.trim().is_empty(),
        "systemd-analyze verify {unit}: {:?}\nstdout:\n{out}\nstderr:\n{err}",
        o.status
    );
}

/// The stubs of the commands the test cannot run as they are (see the top of this file).
const STUBS: &str = r#"
record() {
    local a line="$1"; shift
    for a in "$@"; do line+=$'\t'"$a"; done
    printf '%s\n' "$line" >> "$DEPLOY_TEST_CALLS"
}
apt-get() { record apt-get "$@"; }
cargo() { record cargo "$@"; }
# Waits for deploy.rs to act on the call and answer it (empty, or why it failed).
answered() {
    record "$@"
    local n i
    n=$(wc -l < "$DEPLOY_TEST_CALLS")
    for i in $(seq 1200); do
        if [ -e "$DEPLOY_TEST_ANSWERS/$n" ]; then
            if [ -s "$DEPLOY_TEST_ANSWERS/$n" ]; then cat "$DEPLOY_TEST_ANSWERS/$n" >&2; return 1; fi
            return 0
        fi
        sleep 0.05
    done
    echo "deploy.rs did not answer $*" >&2; return 1
}
journalctl() { answered journalctl "$@"; }
systemctl() { answered systemctl "$@"; }
useradd() { record useradd "$@"; printf '%s\n' "${!#}" >> "$DEPLOY_TEST_USERS"; }
scp() {
    record scp "$@"
    local n=$#
    if [ "$n" -lt 2 ] || [ "${!n%:}" = "${!n}" ]; then
        echo "deploy.rs: the test knows scp FILES... HOST: only" >&2; return 1
    fi
    cp -- "${@:1:n-1}" .
}
runuser() {
    record runuser "$@"
    if [ "$#" -lt 4 ] || [ "$1" != -u ] || [ "$3" != -- ]; then
        echo "deploy.rs: the test knows runuser -u USER -- COMMAND... only" >&2; return 1
    fi
    if ! grep -qx -- "$2" "$DEPLOY_TEST_USERS"; then
        echo "runuser: user $2 does not exist (no useradd before)" >&2; return 1
    fi
    shift 3
    "$@"
}
"#;

/// The ```sh blocks of README.md's section `title`.
fn sh_blocks(readme: &str, title: &str) -> Vec<String> {
    let start = readme
        .lines()
        .position(|l| l == title)
        .unwrap_or_else(|| panic!("README.md has no section {title:?}"));
    let mut blocks = Vec::new();
    let mut open: Option<String> = None;
    for l in readme.lines().skip(start + 1) {
        if l.starts_with("## ") && open.is_none() {
            break;
        }
        match (&mut open, l) {
            (None, "```sh") => open = Some(String::new()),
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                open = None;
            }
            (Some(b), _) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(open.is_none(), "{title}: a ```sh block is not closed");
    blocks
}

/// A unit file's `KEY=VALUE` settings in order, continuation lines joined
/// (systemd.syntax(7)); sections are not told apart (no key here is in two).
fn unit_settings(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let t = line.trim();
        if pending.is_empty()
            && (t.is_empty() || t.starts_with('#') || t.starts_with(';') || t.starts_with('['))
        {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(t);
        let (k, v) = pending
            .split_once('=')
            .unwrap_or_else(|| panic!("not KEY=VALUE: {pending:?}"));
        out.push((k.trim().to_owned(), v.trim().to_owned()));
        pending.clear();
    }
    out
}

/// ExecStart='s words as systemd.service(5) makes them: `$VAR` alone is the variable's
/// value split at whitespace (zero or more words), `${VAR}` is replaced within its word.
fn expand(exec: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    assert!(
        !exec.contains(['"', '\'']),
        "the test does not parse quotes in ExecStart=: {exec}"
    );
    let mut words = Vec::new();
    for w in exec.split_whitespace() {
        if let Some(name) = w.strip_prefix('$').filter(|n| !n.starts_with('{')) {
            let v = env.get(name).map(String::as_str).unwrap_or("");
            words.extend(v.split_whitespace().map(str::to_owned));
            continue;
        }
        let mut word = w.to_owned();
        while let Some(at) = word.find("${") {
            let end = at + word[at..].find('}').expect("${VAR} closed");
            let v = env.get(&word[at + 2..end]).cloned().unwrap_or_default();
            word.replace_range(at..=end, &v);
        }
        words.push(word);
    }
    words
}

/// The administrator's world (see the top of this file).
struct World {
    /// The running services (first: they are stopped before the directory goes).
    services: BTreeMap<String, Proc>,
    _dir: tempfile::TempDir,
    root: PathBuf,
    cwd: PathBuf,
    calls: PathBuf,
    answers: PathBuf,
    users: PathBuf,
    port: u16,
    /// Placeholders and what earlier blocks printed for them.
    learnt: BTreeMap<&'static str, String>,
    /// Calls already acted on.
    seen: usize,
}

const PLACEHOLDERS: &[(&str, &str)] = &[
    ("age1…", "age1"),
    ("swarmbak-enroll-1.…", "swarmbak-enroll-1."),
];

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for d in [
            "etc/default",
            "etc/systemd/system",
            "usr/local/bin",
            "var/lib",
            "home/ana/Documents",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(
            root.join("home/ana/Documents/notes.txt"),
            b"what the first backup holds\n",
        )
        .unwrap();
        let cwd = dir.path().join("admin");
        fs::create_dir_all(cwd.join("target/release")).unwrap();
        fs::create_dir_all(cwd.join("dist/systemd")).unwrap();
        std::os::unix::fs::symlink(BIN, cwd.join("target/release/swarmbak")).unwrap();
        for unit in UNITS {
            fs::copy(
                repo().join("dist/systemd").join(unit),
                cwd.join("dist/systemd").join(unit),
            )
            .unwrap();
        }
        let calls = dir.path().join("calls");
        let answers = dir.path().join("answers");
        fs::create_dir(&answers).unwrap();
        let users = dir.path().join("users");
        fs::write(&calls, "").unwrap();
        fs::write(&users, "").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        World {
            services: BTreeMap::new(),
            _dir: dir,
            root,
            cwd,
            calls,
            answers,
            users,
            port,
            learnt: BTreeMap::new(),
            seen: 0,
        }
    }

    /// ROOT in front of the absolute paths under /etc, /var/lib, /usr/local and /home.
    fn rewrite_paths(&self, text: &str) -> String {
        const UNDER: &[&str] = &["/etc", "/var/lib", "/usr/local", "/home"];
        let root = self.root.to_str().unwrap();
        let mut out = String::new();
        let mut prev: Option<char> = None;
        let mut i = 0;
        while i < text.len() {
            let rest = &text[i..];
            let starts_path = prev.is_none_or(|c| c.is_whitespace() || "='\"".contains(c));
            let hit = UNDER.iter().find(|p| {
                rest.starts_with(**p)
                    && rest[p.len()..]
                        .chars()
                        .next()
                        .is_none_or(|c| c == '/' || c.is_whitespace() || "'\"".contains(c))
            });
            if let (true, Some(_)) = (starts_path, hit) {
                out.push_str(root);
            }
            let c = rest.chars().next().unwrap();
            out.push(c);
            prev = Some(c);
            i += c.len_utf8();
        }
        out
    }

    /// A block as it runs here: placeholders, host, port and paths.
    fn rewrite(&self, block: &str) -> String {
        let mut s = block.to_owned();
        for (placeholder, _) in PLACEHOLDERS {
            if s.contains(placeholder) {
                let v = self.learnt.get(placeholder).unwrap_or_else(|| {
                    panic!("this block uses {placeholder} before a block printed it:\n{block}")
                });
                s = s.replace(placeholder, v);
            }
        }
        s = s
            .replace("tracker.example.com", "127.0.0.1")
            .replace("0.0.0.0", "127.0.0.1")
            .replace(":6969", &format!(":{}", self.port));
        self.rewrite_paths(&s)
    }

    /// Runs one block, answering its `systemctl` and `journalctl` calls while it runs;
    /// returns its stdout.
    fn run(&mut self, block: &str) -> String {
        let script = format!("{STUBS}\n{}", self.rewrite(block));
        let (out_path, err_path) = (
            self.calls.with_file_name("stdout"),
            self.calls.with_file_name("stderr"),
        );
        let mut c = Command::new("bash");
        c.arg("-euo")
            .arg("pipefail")
            .arg("-c")
            .arg(&script)
            .current_dir(&self.cwd)
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap())
            .env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.root.join("usr/local/bin").display()
                ),
            )
            .env("HOME", &self.cwd)
            .env("DEPLOY_TEST_CALLS", &self.calls)
            .env("DEPLOY_TEST_ANSWERS", &self.answers)
            .env("DEPLOY_TEST_USERS", &self.users);
        for (k, v) in FAST {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("bash runs");
        let mut failed = None;
        let status = loop {
            let done = child.try_wait().unwrap();
            failed = failed.or(self.answer_calls());
            if let Some(s) = done {
                break s;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let out = fs::read_to_string(&out_path).unwrap();
        let err = fs::read_to_string(&err_path).unwrap();
        eprintln!("--- README block:\n{block}--- stdout:\n{out}--- stderr:\n{err}");
        assert!(
            status.success() && failed.is_none(),
            "this README block failed ({status:?}):\n{block}\nas run here:\n{}\nstdout:\n{out}\nstderr:\n{err}\n{}",
            self.rewrite(block),
            failed.unwrap_or_default()
        );
        for (placeholder, prefix) in PLACEHOLDERS {
            if let Some(l) = out.lines().find(|l| l.starts_with(prefix)) {
                self.learnt
                    .entry(*placeholder)
                    .or_insert_with(|| l.trim().to_owned());
            }
        }
        out
    }

    /// Acts on the calls the stubs recorded since the last time, and answers each (file
    /// ANSWERS/N for the N-th call: empty, or why it failed, which the stub prints and
    /// fails with). Returns the first failure.
    fn answer_calls(&mut self) -> Option<String> {
        let calls = fs::read_to_string(&self.calls).unwrap();
        let new: Vec<Vec<String>> = calls
            .split_inclusive('\n')
            .filter_map(|l| l.strip_suffix('\n'))
            .skip(self.seen)
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect();
        let mut failed = None;
        for call in new {
            self.seen += 1;
            let args: Vec<&str> = call.iter().map(String::as_str).collect();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.act(&args)));
            let why = r.err().map(|e| {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                format!("`{}` failed (deploy.rs): {why}", args.join(" "))
            });
            let tmp = self.answers.join("tmp");
            fs::write(&tmp, why.as_deref().unwrap_or("")).unwrap();
            fs::rename(&tmp, self.answers.join(self.seen.to_string())).unwrap();
            failed = failed.or(why);
        }
        failed
    }

    /// One call of a stub (see the top of this file).
    fn act(&mut self, args: &[&str]) {
        match args {
            ["systemctl", "daemon-reload"] => {}
            ["systemctl", "enable", "--now", unit] => self.start(unit),
            ["systemctl", "status", unit] | ["journalctl", "-u", unit] => {
                let p = self
                    .services
                    .get_mut(&service(unit))
                    .unwrap_or_else(|| panic!("{unit} was not started"));
                assert!(
                    p.child.try_wait().unwrap().is_none(),
                    "{unit} is not running"
                );
            }
            ["systemctl" | "journalctl", ..] => panic!(
                "deploy.rs does not know this call: teach it, or keep to systemctl daemon-reload|enable --now|status and journalctl -u"
            ),
            _ => {}
        }
    }

    /// `systemctl enable --now UNIT`, as the top of this file says.
    fn start(&mut self, unit: &str) {
        let name = service(unit);
        let file = self
            .root
            .join("etc/systemd/system")
            .join(format!("{name}.service"));
        let text = fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "systemctl enable --now {unit}: {} ({e}): the README did not install it",
                file.display()
            )
        });
        let settings = unit_settings(&self.rewrite_paths(&text));
        let all = |key: &str| -> Vec<String> {
            settings
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .collect()
        };
        let one = |key: &str| -> Option<String> {
            let v = all(key);
            assert!(v.len() <= 1, "{unit}: {key}= more than once");
            v.into_iter().next()
        };
        for key in ["AssertPathExists", "ConditionPathExists"] {
            for p in all(key) {
                assert!(
                    Path::new(&p).exists(),
                    "{unit} does not start: {key}={p} does not hold (here)"
                );
            }
        }
        if let Some(user) = one("User").filter(|u| u != "root") {
            let users = fs::read_to_string(&self.users).unwrap();
            assert!(
                users.lines().any(|u| u == user),
                "{unit} runs as User={user}, which the README did not add"
            );
        }
        let mut env = BTreeMap::new();
        for f in all("EnvironmentFile") {
            let (optional, f) = match f.strip_prefix('-') {
                Some(f) => (true, f.to_owned()),
                None => (false, f),
            };
            let text = match fs::read_to_string(&f) {
                Ok(t) => t,
                Err(_) if optional => continue,
                Err(e) => panic!("{unit}: EnvironmentFile={f}: {e}: the README did not write it"),
            };
            for l in text.lines().map(str::trim) {
                if l.is_empty() || l.starts_with('#') {
                    continue;
                }
                let (k, v) = l
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{f}: not KEY=VALUE: {l:?}"));
                assert!(
                    !k.starts_with("SWARMBAK_"),
                    "{f} sets {k}: deploy.rs does not pass the environment file on to the process"
                );
                env.insert(k.to_owned(), v.trim_matches(['"', '\'']).to_owned());
            }
        }
        env.entry("AGENT_OPTIONS".into())
            .or_insert_with(|| "--listen 127.0.0.1:0".into());
        for d in all("StateDirectory") {
            let dir = self.root.join("var/lib").join(&d);
            fs::create_dir_all(&dir).unwrap();
            if let Some(m) = one("StateDirectoryMode") {
                let mode = u32::from_str_radix(&m, 8).unwrap();
                fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
            }
        }
        let exec = one("ExecStart").unwrap_or_else(|| panic!("{unit}: no ExecStart="));
        let words = expand(&exec, &env);
        let program = self.rewrite_paths(INSTALLED_BIN);
        assert_eq!(words[0], program, "{unit}: ExecStart= runs {INSTALLED_BIN}");
        assert_eq!(
            fs::metadata(&program)
                .unwrap_or_else(|e| panic!("{unit}: {program}: {e}: the README did not install it"))
                .len(),
            fs::metadata(BIN).unwrap().len(),
            "{program} is not this build's swarmbak"
        );
        assert!(
            words.iter().all(|w| !w.contains("0.0.0.0")),
            "loopback only in tests: {words:?}"
        );
        let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
        eprintln!("--- {unit}: swarmbak {}", args.join(" "));
        let p = Proc::start(&name, &args);
        self.services.insert(name, p);
    }
}

fn service(unit: &str) -> String {
    unit.trim_end_matches(".service").to_owned()
}

/// Issue 10, point 5: the README's deployment section followed word for word (as the top
/// of this file says), then what it promises checked.
#[test]
fn the_readme_deployment_section_followed_word_for_word() {
    require("bash", "bash");
    require("age-keygen", "age");
    require("curl", "curl");
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let blocks = sh_blocks(&readme, "## Deploy the tracker");
    assert!(blocks.len() >= 5, "{blocks:?}");
    let mut w = World::new();
    let mut printed = Vec::new();
    for b in &blocks {
        let out = w.run(b);
        printed.push((b.clone(), out));
    }
    // The section went from nothing to both services running.
    for s in ["swarmbak-tracker", "swarmbak-agent"] {
        assert!(w.services.contains_key(s), "the section never started {s}");
    }
    for (placeholder, _) in PLACEHOLDERS {
        assert!(
            w.learnt.contains_key(placeholder),
            "no block printed {placeholder}"
        );
    }
    let output_of = |command: &str| -> &str {
        &printed
            .iter()
            .find(|(b, _)| b.contains(command))
            .unwrap_or_else(|| panic!("the section no longer runs `{command}`"))
            .1
    };
    let data = w.root.join("var/lib/swarmbak-tracker");
    let tracker_addr = format!("127.0.0.1:{}", w.port);
    assert_eq!(w.services["swarmbak-tracker"].addr, tracker_addr);

    // The tracker made its keys, private, and answered over HTTPS with its certificate.
    for f in ["org.key", "org-secret", "admin-token", "tls.key"] {
        let mode = fs::metadata(data.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let health = output_of("/health");
    assert!(health.contains(r#""status":"ok""#), "{health}");
    // The keys' backup holds what the section says.
    let o = Command::new("tar")
        .arg("-tf")
        .arg(w.cwd.join("swarmbak-tracker-keys.tar"))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&o.stdout);
    for f in ["org.key", "org-secret", "admin-token", "tls.key", "tls.crt"] {
        assert!(
            listed.lines().any(|l| l == f),
            "{f} not in the keys' backup: {listed}"
        );
    }

    // The machine is enrolled at the tracker's public URL, listed, and backed up.
    let home = w.root.join("var/lib/swarmbak");
    let c: serde_json::Value =
        serde_json::from_slice(&fs::read(home.join("config.json")).unwrap()).unwrap();
    assert_eq!(c["name"], "laptop-7", "{c}");
    assert_eq!(c["tracker"], format!("https://{tracker_addr}"), "{c}");
    let machines = output_of("tracker machines");
    assert!(machines.contains("laptop-7"), "{machines}");
    // `seed` prints the infohash first (after what the block's earlier commands printed).
    let seeded = output_of(" seed ");
    let ih = seeded
        .lines()
        .find(|l| l.len() == 40 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no infohash: {seeded}"));
    let listed = common::ok(&home, &["snapshots", "--machine", "laptop-7"]);
    assert!(listed.contains(ih), "{listed}");

    // The admin token the section shows is the tracker's, and opens the admin API; the
    // dashboard's address answers over HTTPS with the tracker's certificate.
    let token = output_of("cat /var/lib/swarmbak-tracker/admin-token")
        .trim()
        .to_owned();
    assert_eq!(
        token,
        fs::read_to_string(data.join("admin-token")).unwrap().trim()
    );
    // curl with the tracker's certificate: `-i` for the whole answer, else the status.
    let curl_with = |out: &[&str], args: &[&str]| -> String {
        let o = Command::new("curl")
            .arg("-sS")
            .args(out)
            .arg("--cacert")
            .arg(data.join("tls.crt"))
            .args(args)
            .output()
            .expect("curl runs");
        let (out, err) = common::text(&o);
        assert!(o.status.success(), "curl {args:?}: {err}");
        out
    };
    let curl = |args: &[&str]| curl_with(&["-o", "/dev/null", "-w", "%{http_code}"], args);
    let page = |args: &[&str]| curl_with(&["-i"], args);
    let base = format!("https://{tracker_addr}");
    let reload = format!("{base}/api/v1/reload");
    let bearer = format!("Authorization: Bearer {token}");
    assert_eq!(curl(&["-X", "POST", &reload]), "401");
    let status = curl(&["-X", "POST", "-H", &bearer, &reload]);
    assert!(status.starts_with('2'), "{status}");
    // The dashboard: the sign-in form, then, signed in with the token the section
    // prints, the overview listing laptop-7 (the session cookie is Secure over TLS).
    let accept = "Accept: text/html";
    let signin = page(&["-H", accept, &format!("{base}/")]);
    assert!(signin.contains("id=\"login\""), "{signin}");
    let jar = w.root.join("cookies.txt");
    let jar = jar.to_str().unwrap();
    let answer = page(&[
        "-c",
        jar,
        "--data-urlencode",
        &format!("token={token}"),
        &format!("{base}/login"),
    ]);
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    let cookie = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("{answer}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("Secure"),
        "{cookie}"
    );
    let overview = page(&["-b", jar, "-H", accept, &format!("{base}/")]);
    assert!(
        overview.contains("id=\"machines\"") && overview.contains("data-name=\"laptop-7\""),
        "{overview}"
    );
    // laptop-7's agent announces the quota the section gave it (--quota 50G), and its
    // backup counts as its last success.
    let api = format!("{base}/api/v1/machines?q=laptop-7");
    let t0 = std::time::Instant::now();
    loop {
        let answer = page(&["-H", &bearer, &api]);
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let m = &v["machines"][0];
        if m["quota"] == 50u64 << 30 {
            assert_eq!(m["status"], "ok", "{m}");
            assert_eq!(m["snapshots"], 1, "{m}");
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(15),
            "the agent's quota never reached the tracker: {answer}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
