//! Shared helpers for interop tests.
//!
//! The tests drive the real `swarmbak` binary (built by `cargo build --workspace`, as the
//! README's test command does) and real third-party programs. Nothing here skips: a missing
//! binary or a missing tool is a test failure that says how to fix it.

pub mod bt;

pub mod clients;

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// `target/<profile>/`, derived from the running test executable, which cargo puts in
/// `target/<profile>/deps/`.
pub fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("cannot find the running test executable");
    let deps = exe
        .parent()
        .expect("test executable has no parent directory");
    let dir = if deps.file_name() == Some(OsStr::new("deps")) {
        deps.parent().expect("deps directory has no parent")
    } else {
        deps
    };
    dir.to_path_buf()
}

/// Path of a workspace binary (`swarmbak`, `gentree`) next to the test executable's profile
/// directory. Panics, saying to build first, when it is missing.
pub fn workspace_bin(name: &str) -> PathBuf {
    let dir = target_profile_dir();
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        panic!(
            "{} is missing: run `cargo build --workspace` first (the README's test command is \
             `cargo build --workspace && cargo test --workspace`)",
            path.display()
        );
    }
    path
}

/// The `swarmbak` binary of the same profile as the running test.
pub fn swarmbak_bin() -> PathBuf {
    workspace_bin("swarmbak")
}

/// Third-party tools the interop tests know: (command, Debian package, version arguments).
const TOOLS: &[(&str, &str, &[&str])] = &[
    ("age", "age", &["--version"]),
    ("age-keygen", "age", &["--version"]),
    ("restic", "restic", &["version"]),
    ("borg", "borgbackup", &["--version"]),
    ("transmission-cli", "transmission-cli", &["--version"]),
    ("transmission-daemon", "transmission-daemon", &["--version"]),
    ("aria2c", "aria2", &["--version"]),
    ("opentracker", "opentracker", &[]),
    ("mktorrent", "mktorrent", &["-v"]),
    ("wrk", "wrk", &["--version"]),
];

fn find_in_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Finds a third-party tool on PATH and prints its version. A missing tool panics with how
/// to install it: interop tests never skip.
pub fn require_tool(name: &str) -> PathBuf {
    let (pkg, version_args) = TOOLS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, p, v)| (*p, *v))
        .unwrap_or((name, &["--version"][..]));
    let Some(path) = find_in_path(name) else {
        panic!("{name} is missing: install it with apt-get install {pkg} (see README)");
    };
    if !version_args.is_empty() {
        let version = Command::new(&path)
            .args(version_args)
            .stdin(Stdio::null())
            .output()
            .map(|o| {
                let mut s = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if s.is_empty() {
                    s = String::from_utf8_lossy(&o.stderr).trim().to_string();
                }
                s.lines().next().unwrap_or("").to_string()
            })
            .unwrap_or_else(|e| format!("(cannot run: {e})"));
        eprintln!("tool {name} ({}): {version}", path.display());
    }
    path
}

/// What a finished command produced.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// The first line of stdout, trimmed.
    pub fn first_line(&self) -> String {
        self.stdout_str()
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    }
}

/// A command to run: `Cmd::new("age").args(["-d", "-i", key]).arg(file).run()`.
/// `run` asserts success and prints the command line, stdout and stderr on failure.
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    dir: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            envs: Vec::new(),
            dir: None,
            stdin: None,
        }
    }

    /// The workspace's `swarmbak` binary with `--home HOME`.
    pub fn swarmbak(home: impl AsRef<Path>) -> Cmd {
        Cmd::new(swarmbak_bin()).arg("--home").arg(home.as_ref())
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Cmd {
        self.envs
            .push((k.as_ref().to_os_string(), v.as_ref().to_os_string()));
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Cmd {
        self.dir = Some(dir.as_ref().to_path_buf());
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(data.into());
        self
    }

    /// The command line, shell-quoted enough to paste.
    pub fn display(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.envs {
            let _ = write!(s, "{}={} ", k.to_string_lossy(), quote(v));
        }
        s.push_str(&quote(&self.program));
        for a in &self.args {
            s.push(' ');
            s.push_str(&quote(a));
        }
        s
    }

    /// Runs to completion, whatever its exit status.
    pub fn run_unchecked(&self) -> Output {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        if let Some(d) = &self.dir {
            c.current_dir(d);
        }
        c.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.display()));
        if let Some(data) = &self.stdin {
            let mut w = child.stdin.take().expect("stdin is piped");
            let data = data.clone();
            // Write from a thread so a child that fills its stdout pipe cannot deadlock us.
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = w.write_all(&data);
            });
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot wait for `{}`: {e}", self.display()));
        Output {
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }

    /// Runs and asserts exit status 0; on failure panics with the command, stdout and stderr.
    pub fn run(&self) -> Output {
        let out = self.run_unchecked();
        if !out.status.success() {
            panic!("{}", self.report("failed", &out));
        }
        out
    }

    /// Runs and asserts a non-zero exit status; panics with the output if it succeeded.
    pub fn run_fail(&self) -> Output {
        let out = self.run_unchecked();
        if out.status.success() {
            panic!("{}", self.report("succeeded but should have failed", &out));
        }
        out
    }

    fn report(&self, what: &str, out: &Output) -> String {
        format!(
            "`{}` {what} ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.display(),
            out.status,
            truncate(&out.stdout_str()),
            truncate(&out.stderr_str())
        )
    }
}

fn truncate(s: &str) -> String {
    const MAX: usize = 8000;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut cut = MAX;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}\n... ({} more bytes)", &s[..cut], s.len() - cut)
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The public key (`age1...`) in an identity file written by `age-keygen` or swarmbak
/// (from its `# public key: age1...` comment).
pub fn age_public_key(identity_file: &Path) -> String {
    let text = std::fs::read_to_string(identity_file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", identity_file.display()));
    for line in text.lines() {
        if let Some(k) = line.trim().strip_prefix("# public key:") {
            return k.trim().to_string();
        }
    }
    panic!("no `# public key:` line in {}", identity_file.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmd_captures_and_reports() {
        let out = Cmd::new("sh").args(["-c", "echo out; echo err >&2"]).run();
        assert_eq!(out.first_line(), "out");
        assert_eq!(out.stderr_str().trim(), "err");
        let out = Cmd::new("sh").args(["-c", "exit 3"]).run_fail();
        assert_eq!(out.status.code(), Some(3));
        let out = Cmd::new("cat").stdin("piped").run();
        assert_eq!(out.stdout_str(), "piped");
    }

    #[test]
    #[should_panic(expected = "is missing: install it with apt-get install")]
    fn missing_tool_fails() {
        require_tool("no-such-tool-swarmbak-test");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(OsStr::new("a b")), "'a b'");
        assert_eq!(quote(OsStr::new("-d")), "-d");
    }
}
