//! Change detection for the agent's scheduled backups (swarm.md §15.3): the backup set is
//! watched (inotify, through the `notify` crate) so that a due backup knows without a
//! scan when nothing changed, and otherwise which paths to look at again. Where watching
//! is not possible (the per-user watch limit, a file system whose changes raise no
//! events, an overflowing event queue) the answer is "unknown" and the backup scans, as
//! `seed` does; the agent says so.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use notify::event::{EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};

/// Most distinct paths remembered between two backups; beyond, a scan is cheaper than
/// the list (a build or an unpacked archive in the backup set).
pub const MAX_DIRTY: usize = 100_000;

/// What changed since the last [`Watch::take`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// At most these paths (files, symlinks or directories, some gone since; for every
    /// changed entry its parent directory too) differ from what the last backup saw.
    /// Empty: nothing changed.
    Known(Vec<PathBuf>),
    /// Changes may have been missed: the backup scans the whole set. Why, for the user.
    Unknown(String),
}

#[derive(Default)]
struct Dirty {
    paths: BTreeSet<PathBuf>,
    /// Changes were missed since the last take (cleared by it).
    lost: Option<String>,
    /// Changes are missed for good (a directory could not be watched): every take is
    /// unknown until the watch is started again.
    broken: Option<String>,
    /// The highest barrier number an event was seen for (see [`Watch::take`]).
    barriers: u64,
    /// The number of the next take's barrier.
    next_barrier: u64,
}

/// How long a take waits for the watch to catch up with the kernel's queue.
pub const BARRIER_WAIT: Duration = Duration::from_secs(10);

/// A running watch over the backup set.
pub struct Watch {
    dirty: Arc<(Mutex<Dirty>, Condvar)>,
    /// A directory of the agent's own, watched by the same inotify instance: a file
    /// written there before each take is seen after every event queued before it.
    barrier: PathBuf,
    // Dropped with the watch: stops the inotify thread.
    _watcher: notify::RecommendedWatcher,
    dirs: usize,
}

fn lock(m: &Mutex<Dirty>) -> std::sync::MutexGuard<'_, Dirty> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// File systems whose changes raise no inotify events when made elsewhere (network and
/// FUSE file systems): `Some(name)` when `path` is on one.
pub fn without_events(path: &Path) -> Option<&'static str> {
    let st = rustix::fs::statfs(path).ok()?;
    // statfs(2) magic numbers.
    match st.f_type as u64 {
        0x6969 => Some("NFS"),
        0xFF53_4D42 => Some("CIFS"),
        0xFE53_4D42 => Some("SMB2"),
        0x517B => Some("SMB"),
        0x6573_5546 => Some("FUSE"),
        0x0102_1997 => Some("9p"),
        0x00C3_6400 => Some("Ceph"),
        0x0BD0_0BD0 => Some("Lustre"),
        _ => None,
    }
}

impl Watch {
    /// Watches `roots` (absolute paths) and everything under them; paths for which
    /// `ignore` is true (excluded, the swarmbak home) are not remembered. `barrier` is a
    /// directory of the agent's own (made if missing). `Err` says why the set cannot be
    /// watched (the caller scans instead).
    pub fn start(
        roots: &[PathBuf],
        barrier: &Path,
        ignore: impl Fn(&Path) -> bool + Send + Sync + 'static,
    ) -> Result<Watch, String> {
        std::fs::create_dir_all(barrier)
            .map_err(|e| format!("cannot make {}: {e}", barrier.display()))?;
        let barrier = std::fs::canonicalize(barrier).unwrap_or_else(|_| barrier.to_path_buf());
        // Barrier files of an earlier watch (numbers start again at 1): before the watch
        // starts, so their removal raises no event.
        if let Ok(rd) = std::fs::read_dir(&barrier) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        for r in roots {
            if let Some(fs) = without_events(r) {
                return Err(format!(
                    "{} is on {fs}, whose changes made by other machines raise no events",
                    r.display()
                ));
            }
        }
        let dirty = Arc::new((Mutex::new(Dirty::default()), Condvar::new()));
        let d = dirty.clone();
        let b = barrier.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            let ev = match res {
                Ok(ev) if ev.paths.iter().any(|p| p.starts_with(&b)) => {
                    // Only the barrier's own number counts: a late event of an earlier
                    // take's barrier (its write raises several) must not end a later take
                    // before the events queued ahead of that take's barrier are seen.
                    let n = ev
                        .paths
                        .iter()
                        .filter_map(|p| {
                            p.file_name()?
                                .to_str()?
                                .strip_prefix("barrier-")?
                                .parse()
                                .ok()
                        })
                        .max();
                    if let Some(n) = n {
                        let mut g = lock(&d.0);
                        g.barriers = g.barriers.max(n);
                        d.1.notify_all();
                    }
                    return;
                }
                Ok(ev) => ev,
                Err(e) => {
                    let mut g = lock(&d.0);
                    match e.kind {
                        notify::ErrorKind::MaxFilesWatch => g.broken = Some(watch_limit_reached()),
                        _ => g.lost = Some(format!("watching failed: {e}")),
                    }
                    return;
                }
            };
            if ev.need_rescan() {
                lock(&d.0).lost = Some("the kernel's event queue overflowed".into());
                return;
            }
            // Opening, reading and closing a file change nothing (the backup's own reads
            // raise them).
            if matches!(ev.kind, EventKind::Access(_))
                || matches!(ev.kind, EventKind::Modify(ModifyKind::Other)) && ev.paths.is_empty()
            {
                return;
            }
            // Which paths to remember is decided before the lock is taken (`ignore` may
            // stat a path).
            let mut seen = Vec::with_capacity(2 * ev.paths.len());
            for p in ev.paths {
                if ignore(&p) {
                    continue;
                }
                if let Some(parent) = p.parent() {
                    if !ignore(parent) {
                        seen.push(parent.to_path_buf());
                    }
                }
                seen.push(p);
            }
            if seen.is_empty() {
                return;
            }
            let mut g = lock(&d.0);
            g.paths.extend(seen);
            if g.paths.len() > MAX_DIRTY {
                g.paths.clear();
                g.lost = Some(format!(
                    "more than {MAX_DIRTY} paths changed since the last backup"
                ));
            }
        };
        let mut w = notify::recommended_watcher(handler).map_err(|e| e.to_string())?;
        w.watch(&barrier, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", barrier.display()))?;
        for r in roots {
            let mode = if r.is_dir() {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            w.watch(r, mode).map_err(|e| match e.kind {
                notify::ErrorKind::MaxFilesWatch => watch_limit_reached(),
                _ => format!("cannot watch {}: {e}", r.display()),
            })?;
        }
        let dirs = roots.iter().map(|r| count_dirs(r)).sum();
        Ok(Watch {
            dirty,
            barrier,
            _watcher: w,
            dirs,
        })
    }

    /// Directories watched when the watch started.
    pub fn dirs(&self) -> usize {
        self.dirs
    }

    /// Why changes are missed for good, if they are (start the watch again).
    pub fn broken(&self) -> Option<String> {
        lock(&self.dirty.0).broken.clone()
    }

    /// What changed since the last take; starts a new period. Every event the kernel
    /// queued before the call is counted: a file is written in the barrier directory and
    /// the take waits (at most [`BARRIER_WAIT`]) until the watch has seen it, so events
    /// still queued behind a flood (a backup's own reads) are not missed; a watch that
    /// does not catch up in time says so (unknown: the backup scans).
    pub fn take(&self) -> Changes {
        let (m, cv) = &*self.dirty;
        let n = {
            let mut g = lock(m);
            g.next_barrier += 1;
            g.next_barrier
        };
        let mark = self.barrier.join(format!("barrier-{n}"));
        if let Err(e) = std::fs::write(&mark, b"") {
            lock(m).paths.clear();
            return Changes::Unknown(format!("cannot write {}: {e}", mark.display()));
        }
        // The earlier take's barrier file goes (its removal is an event of a lower number).
        let _ = std::fs::remove_file(self.barrier.join(format!("barrier-{}", n - 1)));
        let deadline = std::time::Instant::now() + BARRIER_WAIT;
        let mut g = lock(m);
        while g.barriers < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                g.paths.clear();
                return Changes::Unknown(format!(
                    "the watch did not catch up with the kernel's events within {} s",
                    BARRIER_WAIT.as_secs()
                ));
            }
            g = cv
                .wait_timeout(g, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let paths = std::mem::take(&mut g.paths);
        if let Some(why) = g.broken.clone() {
            return Changes::Unknown(why);
        }
        match g.lost.take() {
            Some(why) => Changes::Unknown(why),
            None => Changes::Known(paths.into_iter().collect()),
        }
    }

    /// Gives back what a take returned, for a backup that did not complete: the next
    /// take includes it.
    pub fn put_back(&self, c: Changes) {
        let mut g = lock(&self.dirty.0);
        match c {
            Changes::Known(v) => g.paths.extend(v),
            Changes::Unknown(why) => {
                g.lost.get_or_insert(why);
            }
        }
    }

    /// Number of paths changed so far in this period (for `status`).
    pub fn pending(&self) -> Option<usize> {
        let g = lock(&self.dirty.0);
        (g.lost.is_none() && g.broken.is_none()).then_some(g.paths.len())
    }
}

fn watch_limit_reached() -> String {
    let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    format!(
        "the per-user inotify watch limit (fs.inotify.max_user_watches = {limit}) is reached: \
         raise it (sysctl fs.inotify.max_user_watches=524288) to let the agent watch every directory"
    )
}

fn count_dirs(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        n += 1;
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_for(w: &Watch, pred: impl Fn(&Changes) -> bool) -> Changes {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut all = Vec::new();
        loop {
            match w.take() {
                Changes::Known(v) => all.extend(v),
                u => return u,
            }
            let c = Changes::Known(all.clone());
            if pred(&c) || Instant::now() > deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn edits_creations_and_removals_are_seen_and_reads_are_not() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("set");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f.txt"), b"one").unwrap();
        std::fs::write(root.join("keep.txt"), b"k").unwrap();
        std::fs::create_dir_all(root.join("home")).unwrap();
        let home = root.join("home");
        let bar = t.path().join("barrier");
        let w = Watch::start(std::slice::from_ref(&root), &bar, move |p| {
            p.starts_with(&home)
        })
        .unwrap();
        assert!(w.dirs() >= 4);
        assert_eq!(w.take(), Changes::Known(vec![]));
        // Reading is not a change; writing in an ignored place is not either.
        std::fs::read(root.join("keep.txt")).unwrap();
        std::fs::write(root.join("home/store.bin"), b"x").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(w.take(), Changes::Known(vec![]));
        // An edit deep down: the file and its directory.
        std::fs::write(root.join("a/b/f.txt"), b"two").unwrap();
        let c = wait_for(
            &w,
            |c| matches!(c, Changes::Known(v) if v.contains(&root.join("a/b/f.txt"))),
        );
        let Changes::Known(v) = c else { panic!() };
        assert!(
            v.contains(&root.join("a/b/f.txt")) && v.contains(&root.join("a/b")),
            "{v:?}"
        );
        assert!(!v.contains(&root.join("keep.txt")));
        // A directory made after the watch started is watched too.
        std::fs::create_dir(root.join("new")).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let _ = w.take();
        std::fs::write(root.join("new/late.txt"), b"late").unwrap();
        let c = wait_for(
            &w,
            |c| matches!(c, Changes::Known(v) if v.contains(&root.join("new/late.txt"))),
        );
        assert!(
            matches!(&c, Changes::Known(v) if v.contains(&root.join("new/late.txt"))),
            "{c:?}"
        );
        // A removal names the removed entry and its parent.
        std::fs::remove_file(root.join("keep.txt")).unwrap();
        let c = wait_for(
            &w,
            |c| matches!(c, Changes::Known(v) if v.contains(&root.join("keep.txt"))),
        );
        assert!(
            matches!(&c, Changes::Known(v) if v.contains(&root)),
            "{c:?}"
        );
        // What a failed backup took comes back with the next take.
        w.put_back(Changes::Known(vec![root.join("x")]));
        assert_eq!(w.take(), Changes::Known(vec![root.join("x")]));
        w.put_back(Changes::Unknown("why".into()));
        assert_eq!(w.take(), Changes::Unknown("why".into()));
        assert_eq!(w.take(), Changes::Known(vec![]));
    }
}
