//! A fleet of machines made through a running private tracker's real API (tracker.md
//! §7.2, §7.6): the administrator asks for a token (`POST /api/v1/enrollments`), the
//! machine redeems it with its signed enrolment request (`POST /api/v1/enroll`,
//! trust.md §6) and sends signed backup reports (`POST /<passkey>/report`, trust.md §9)
//! backdated to make its history; some announce, which makes them online.
//!
//! The histories are planned first, deterministically from a seed (only the absolute
//! times follow the clock), then sent by a few threads at once. Each machine keeps what
//! a test needs to compute its expected status by the spec's rules (tracker.md §10.1),
//! without asking the tracker's code.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use swarmbak_tracker::trust::{BackupReport, EnrollToken, SigningKey};

pub const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

/// One backup attempt as the tracker took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub start: i64,
    pub end: i64,
    pub ok: bool,
}

/// What a machine's history is meant to show (for messages and for picking machines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum History {
    /// Never reported.
    NoReport,
    /// Only failed attempts.
    FailedOnly,
    /// Last success 0–9 days ago.
    Recent,
    /// Last success 10–29 days ago.
    Weeks,
    /// Last success 30–120 days ago.
    Months,
    /// Failed attempts after an older success (0–60 days).
    FailingSince,
    /// Its last success ends 3 hours after the tracker's clock (a machine whose clock is
    /// ahead: taken, as it ends less than a day ahead).
    ClockAhead,
}

#[derive(Debug, Clone)]
pub struct FleetMachine {
    pub name: String,
    pub user: Option<String>,
    pub vip: bool,
    pub domain: Option<String>,
    pub history: History,
    /// Every attempt the tracker stored (a resent report counts once; refused ones are
    /// not here), oldest first.
    pub attempts: Vec<Attempt>,
    /// Announced at the end of the fleet's making (online for the tracker's peer timeout).
    pub online: bool,
    pub passkey: String,
    pub key: SigningKey,
    /// When the tracker enrolled it (±1 s: the clock around its enrolment request).
    pub enrolled: i64,
}

impl FleetMachine {
    /// `last_success` by tracker.md §10.1 (no snapshots are published here): the end of
    /// its latest successful report (latest by start; attempts here never overlap).
    pub fn last_success(&self) -> Option<i64> {
        self.attempts
            .iter()
            .filter(|a| a.ok)
            .max_by_key(|a| a.start)
            .map(|a| a.end)
    }

    pub fn backed_up(&self) -> bool {
        self.last_success().is_some()
    }

    /// Whole days since the last success at `now` (a success "in the future", from a
    /// machine's clock ahead, is 0 days old).
    pub fn age_days(&self, now: i64) -> Option<i64> {
        self.last_success().map(|t| (now - t).max(0) / DAY)
    }

    /// `overdue=N` (tracker.md §10.2): backed up before, but not within `days` days.
    pub fn overdue(&self, now: i64, days: i64) -> bool {
        self.last_success().is_some_and(|t| now - t >= days * DAY)
    }

    /// The status of tracker.md §10.1 with thresholds `warn` and `alert` days (the age of
    /// a machine never backed up counts from its enrolment). Revocation is the test's.
    pub fn status(&self, now: i64, warn: i64, alert: i64) -> &'static str {
        match self.last_success() {
            None if now - self.enrolled >= alert * DAY => "never",
            None => "new",
            Some(t) if now - t >= alert * DAY => "overdue_alert",
            Some(t) if now - t >= warn * DAY => "overdue_warn",
            Some(_) => "ok",
        }
    }
}

pub struct Fleet {
    pub machines: Vec<FleetMachine>,
    /// The clock the histories were laid out from.
    pub made_at: i64,
    /// How long making it took.
    pub took: Duration,
    /// Requests sent.
    pub requests: usize,
}

impl Fleet {
    pub fn get(&self, name: &str) -> &FleetMachine {
        self.machines
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no machine {name} in the fleet"))
    }
}

/// SplitMix64: a small deterministic generator (the same fleet for the same seed,
/// whatever version of any crate).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        for c in b.chunks_mut(8) {
            let r = self.next().to_le_bytes();
            c.copy_from_slice(&r[..c.len()]);
        }
        b
    }
}

const USERS: &[&str] = &[
    "ana", "ben", "carla", "dev", "emil", "fatima", "goran", "hana", "ivo", "jun", "kofi", "lena",
    "marta", "nils", "olga", "pavel", "qin", "rosa", "sami", "tove", "ugo", "vera", "wim", "xena",
    "yusuf", "zora", "amir", "bea", "chen", "dora", "elif", "finn", "greta", "hugo", "ines",
    "jonas", "kai", "lior", "mei", "noor",
];
const SITES: &[&str] = &["hq", "lab", "north", "depot"];

/// One report to send: its signed bytes and what the tracker must answer.
struct Send {
    body: Vec<u8>,
    expect: u16,
}

/// A machine's plan: who it is, its attempts and the reports that make them.
struct Plan {
    machine: FleetMachine,
    sends: Vec<Send>,
}

/// The history of machine `i`: attempts oldest first, laid out back from `now`.
fn plan_history(rng: &mut Rng, i: usize, now: i64) -> (History, Vec<Attempt>) {
    // The first few machines take each kind in turn, so that every kind is there
    // whatever the seed; the rest are drawn.
    let kinds = [
        History::NoReport,
        History::FailedOnly,
        History::Recent,
        History::Weeks,
        History::Months,
        History::FailingSince,
        History::ClockAhead,
    ];
    let history = if i < kinds.len() {
        kinds[i]
    } else {
        match rng.range(0, 99) {
            0..=7 => History::NoReport,
            8..=13 => History::FailedOnly,
            14..=48 => History::Recent,
            49..=66 => History::Weeks,
            67..=81 => History::Months,
            _ => History::FailingSince,
        }
    };
    // The last success ends `days` whole days and 1 to 23 hours ago: whole-day ages and
    // the overdue sets cannot change while the test runs.
    let days = match history {
        History::NoReport | History::FailedOnly | History::ClockAhead => 0,
        History::Recent => rng.range(0, 9),
        History::Weeks => rng.range(10, 29),
        History::Months => rng.range(30, 120),
        History::FailingSince => rng.range(0, 60),
    };
    let last_end = match history {
        History::ClockAhead => now + 3 * HOUR,
        History::FailedOnly => now - rng.range(0, 20) * DAY - rng.range(HOUR, 23 * HOUR),
        _ => now - days * DAY - rng.range(HOUR, 23 * HOUR),
    };
    let mut attempts = Vec::new();
    if history == History::NoReport {
        return (history, attempts);
    }
    let only_failures = history == History::FailedOnly;
    let last = {
        let start = last_end - rng.range(30, HOUR);
        Attempt {
            start,
            end: last_end,
            ok: !only_failures,
        }
    };
    // Earlier attempts, each 1 to 3 days and some hours before the next one started.
    let mut next_start = last.start;
    for _ in 0..rng.range(0, 4) {
        let end = next_start - rng.range(DAY, 3 * DAY) - rng.range(0, 12 * HOUR);
        let start = end - rng.range(30, HOUR);
        attempts.push(Attempt {
            start,
            end,
            ok: !only_failures && rng.chance(80),
        });
        next_start = start;
    }
    attempts.reverse();
    attempts.push(last);
    if history == History::FailingSince {
        // 1 to 3 failures between that success and now, evenly spaced (the room is at
        // least an hour, so each failure of at most 10 minutes fits).
        let m = rng.range(1, 3);
        for j in 1..=m {
            let end = last_end + (now - last_end) * j / (m + 1);
            let start = end - rng.range(5, 600);
            attempts.push(Attempt {
                start,
                end,
                ok: false,
            });
        }
    }
    (history, attempts)
}

fn report(rng: &mut Rng, key: &SigningKey, a: &Attempt) -> Vec<u8> {
    let bytes = rng.range(0, 1 << 32) as u64;
    let files = rng.range(0, 50_000) as u64;
    let id = rng.bytes::<16>();
    let r = if a.ok {
        BackupReport {
            id,
            machine: key.public(),
            start: a.start,
            end: a.end,
            bytes,
            files,
            outcome: Ok(rng.bytes::<20>()),
        }
    } else {
        let err = rng.pick(&[
            "cannot read /home: permission denied",
            "the tracker did not answer",
            "disk full",
            "interrupted: the machine went to sleep",
        ]);
        BackupReport::new_failure(id, key.public(), a.start, a.end, bytes, files, err)
    };
    r.sign(key)
}

fn plan(n: usize, seed: u64, now: i64) -> Vec<Plan> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            // Some lap-01x machines whatever the seed, for a search that finds a few.
            let prefix = if (10..=12).contains(&i) {
                "lap"
            } else {
                rng.pick(&["desk", "lap", "ws"])
            };
            let name = format!("{prefix}-{i:03}");
            let user = (!rng.chance(5)).then(|| rng.pick(USERS).to_owned());
            let vip = rng.chance(15);
            let domain = rng.chance(40).then(|| {
                format!(
                    "{}/{}.{:02}",
                    rng.pick(SITES),
                    rng.range(0, 4),
                    rng.range(1, 30)
                )
            });
            let key = SigningKey::from_seed(rng.bytes::<32>());
            let (history, attempts) = plan_history(&mut rng, i, now);
            let mut sends: Vec<Send> = attempts
                .iter()
                .map(|a| Send {
                    body: report(&mut rng, &key, a),
                    expect: 201,
                })
                .collect();
            // Some machines send their backlog latest first (an outbox emptied out of
            // order); some send a report again (its acknowledgement lost): counted once.
            if i % 5 == 4 {
                sends.reverse();
            }
            if i % 17 == 3 && !sends.is_empty() {
                let again = sends[sends.len() - 1].body.clone();
                sends.push(Send {
                    body: again,
                    expect: 200,
                });
            }
            // One report ending two days ahead of the tracker's clock: refused, and not
            // part of the history.
            if i % 50 == 8 {
                let a = Attempt {
                    start: now + 2 * DAY,
                    end: now + 2 * DAY + 60,
                    ok: true,
                };
                sends.push(Send {
                    body: report(&mut rng, &key, &a),
                    expect: 403,
                });
            }
            let online = rng.chance(25);
            Plan {
                machine: FleetMachine {
                    name,
                    user,
                    vip,
                    domain,
                    history,
                    attempts,
                    online,
                    passkey: String::new(),
                    key,
                    enrolled: 0,
                },
                sends,
            }
        })
        .collect()
}

fn post_json(addr: &str, target: &str, auth: Option<&str>, body: &[u8]) -> (u16, String) {
    let mut headers = vec![("Content-Type", "application/json".to_owned())];
    if let Some(a) = auth {
        headers.push(("Authorization", format!("Bearer {a}")));
    }
    super::try_http(addr, "POST", target, &headers, body)
        .unwrap_or_else(|| panic!("the tracker at {addr} did not answer POST {target}"))
}

fn pct(b: &[u8]) -> String {
    b.iter().map(|x| format!("%{x:02X}")).collect()
}

/// Enrols `p`'s machine, sends its reports, and announces when it is to be online.
/// Returns the requests sent.
fn realise(addr: &str, admin: &str, p: &mut Plan, rng_seed: u64) -> usize {
    let m = &mut p.machine;
    let ask = serde_json::json!({
        "name": m.name, "user": m.user, "vip": m.vip, "domain": m.domain,
    });
    let (st, body) = post_json(
        addr,
        "/api/v1/enrollments",
        Some(admin),
        ask.to_string().as_bytes(),
    );
    assert_eq!(st, 201, "POST /api/v1/enrollments for {}: {body}", m.name);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = EnrollToken::parse(v["token"].as_str().expect("a token")).expect("a token");
    let age = swarmbak_format::Identity::generate()
        .to_public()
        .to_string();
    let request = token.request(&m.key, age);
    let before = swarmbak_tracker::server::unix_now();
    let (st, body) = post_json(addr, "/api/v1/enroll", None, &request);
    assert_eq!(st, 201, "POST /api/v1/enroll for {}: {body}", m.name);
    m.enrolled = before;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["name"], m.name.as_str(), "{body}");
    m.passkey = v["passkey"].as_str().expect("a passkey").to_owned();
    let target = format!("/{}/report", m.passkey);
    for s in &p.sends {
        let (st, body) = post_json(addr, &target, None, &s.body);
        assert_eq!(
            st, s.expect,
            "report of {} ({:?}): {body}",
            m.name, m.history
        );
    }
    let mut n = 2 + p.sends.len();
    if m.online {
        // An announce with the machine's passkey marks it seen, even for a torrent the
        // tracker does not know (it answers `unknown torrent`).
        let mut rng = Rng(rng_seed);
        let q = format!(
            "/{}/announce?info_hash={}&peer_id={}&port=6881&left=0&compact=1",
            m.passkey,
            pct(&rng.bytes::<20>()),
            pct(&rng.bytes::<20>()),
        );
        let (st, body) = super::try_http(addr, "GET", &q, &[], b"").expect("an announce answer");
        assert_eq!(st, 200, "{body}");
        assert!(
            !body.contains("passkey"),
            "the announce of {} was refused for its passkey: {body}",
            m.name
        );
        n += 1;
    }
    n
}

/// Makes `n` machines at the tracker at `addr` (admin token `admin`), their histories
/// drawn from `seed`, with `threads` clients at once.
pub fn make(addr: &str, admin: &str, n: usize, seed: u64, threads: usize) -> Fleet {
    let t0 = Instant::now();
    let now = swarmbak_tracker::server::unix_now();
    let mut plans = plan(n, seed, now);
    let requests = std::sync::atomic::AtomicUsize::new(0);
    let threads = threads.max(1);
    std::thread::scope(|s| {
        // Machine i goes to thread i % threads: enrolment order is not the name order.
        let mut buckets: Vec<Vec<(usize, &mut Plan)>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, p) in plans.iter_mut().enumerate() {
            buckets[i % threads].push((i, p));
        }
        for bucket in buckets {
            let requests = &requests;
            s.spawn(move || {
                for (i, p) in bucket {
                    let sent = realise(addr, admin, p, seed ^ ((i as u64) << 32));
                    requests.fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    Fleet {
        machines: plans.into_iter().map(|p| p.machine).collect(),
        made_at: now,
        took: t0.elapsed(),
        requests: requests.into_inner(),
    }
}
