//! A restore cannot be redirected (format-v1.md §11.8): every entry below the target is
//! reached through directory handles opened without following symlinks, so a symlink
//! planted in the target before a (resumed) restore, or swapped in while it runs, by
//! anyone who can rename entries there, never sends a write, a creation or a change of
//! mode outside the target. The restore may fail (that is the right answer); it must
//! not follow.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use swarmbak_format::backup::{NoProgress, Progress};
use swarmbak_format::{
    backup, restore, BackupOptions, FormatError, Home, InfoHash, RestoreOptions, RestoreReport,
};

/// Files in `tree/sub` (enough for the restore to spend a while writing there).
const FILES: usize = 300;

/// A home and a snapshot of `tree/`: `sub/` (mode 0755) with `FILES` small files `f<i>`
/// (0644) and an empty file `empty` (0644).
fn snapshot(root: &Path, files: usize) -> (Home, InfoHash) {
    let (home, _) = Home::create(&root.join("home")).unwrap();
    let tree = root.join("tree");
    let sub = tree.join("sub");
    fs::create_dir_all(&sub).unwrap();
    for i in 0..files {
        let f = sub.join(format!("f{i}"));
        fs::write(&f, format!("file {i} ").repeat(50 + i % 7)).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
    }
    fs::write(sub.join("empty"), b"").unwrap();
    fs::set_permissions(sub.join("empty"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
    let r = backup(&home, &BackupOptions::new(vec![tree]), &NoProgress).unwrap();
    (home, r.infohash)
}

fn restore_into(
    home: &Home,
    ih: &InfoHash,
    to: &Path,
    progress: &dyn Progress,
) -> Result<RestoreReport, FormatError> {
    let store = home.store();
    restore(
        &swarmbak_format::restore::LocalSource {
            store: &store,
            repair: false,
        },
        ih,
        &RestoreOptions {
            target: to.to_path_buf(),
            paths: vec![],
            identities: home.identities().unwrap(),
        },
        progress,
    )
}

/// A directory outside the target (mode 0700) holding files named like the snapshot's
/// (`f0`, `empty`; mode 0600), as an attacker's symlink would find them.
fn outside(root: &Path) -> PathBuf {
    let o = root.join("outside");
    fs::create_dir_all(&o).unwrap();
    for name in ["f0", "empty"] {
        let content: &[u8] = if name == "empty" { b"" } else { b"precious" };
        fs::write(o.join(name), content).unwrap();
        fs::set_permissions(o.join(name), fs::Permissions::from_mode(0o600)).unwrap();
    }
    fs::set_permissions(&o, fs::Permissions::from_mode(0o700)).unwrap();
    o
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Nothing outside was written, created or given another mode.
fn assert_untouched(o: &Path, case: &str) {
    let mut names: Vec<String> = fs::read_dir(o)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["empty", "f0"], "{case}: created outside the target");
    assert_eq!(
        mode(o),
        0o700,
        "{case}: changed the outside directory's mode"
    );
    assert_eq!(
        fs::read(o.join("f0")).unwrap(),
        b"precious",
        "{case}: wrote outside"
    );
    assert_eq!(
        fs::read(o.join("empty")).unwrap(),
        b"",
        "{case}: wrote outside"
    );
    for name in ["f0", "empty"] {
        assert_eq!(mode(&o.join(name)), 0o600, "{case}: changed {name}'s mode");
    }
}

/// What a refusal says: that restore refused, and why.
fn assert_refused(r: Result<RestoreReport, FormatError>, case: &str) {
    match r {
        Err(e @ FormatError::Unsafe(_)) => {
            let msg = e.to_string();
            assert!(msg.contains("symlink"), "{case}: {msg}");
        }
        other => panic!("{case}: expected a refusal, got {other:?}"),
    }
}

/// Replaces `dir` with a symlink to `to` (the real directory moves aside), once.
struct SwapAt {
    when: &'static str,
    dir: PathBuf,
    to: PathBuf,
    done: AtomicBool,
}

impl SwapAt {
    fn new(when: &'static str, dir: PathBuf, to: &Path) -> Self {
        SwapAt {
            when,
            dir,
            to: to.to_path_buf(),
            done: AtomicBool::new(false),
        }
    }
    fn swap(&self, now: &str) {
        if now == self.when && !self.done.swap(true, Ordering::SeqCst) {
            fs::rename(&self.dir, self.dir.with_extension("moved")).unwrap();
            symlink(&self.to, &self.dir).unwrap();
        }
    }
}

impl Progress for SwapAt {
    fn scanned(&self, _: u64, _: u64, _: u64) {
        self.swap("scanned");
    }
    fn stage(&self, name: &str) {
        self.swap(name);
    }
}

/// Holds the restore after its directories are made (before any file is written) until
/// the attacker has swapped at least once, so that no round is a race it did not run.
struct AfterFirstSwap(Arc<AtomicU64>);

impl Progress for AfterFirstSwap {
    fn scanned(&self, _: u64, _: u64, _: u64) {
        let t0 = Instant::now();
        while self.0.load(Ordering::SeqCst) == 0 && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// (a) An attacker who can rename entries in the target swaps `tree/sub` for a symlink to
/// a directory outside, over and over, while the restore writes files there.
#[test]
fn a_directory_swapped_for_a_symlink_during_the_restore_is_never_followed() {
    let t = tempfile::tempdir().unwrap();
    let (home, ih) = snapshot(t.path(), FILES);
    let o = outside(t.path());
    for round in 0..4 {
        let to = t.path().join(format!("to{round}"));
        let sub = to.join("tree/sub");
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let attacker = {
            let (stop, swaps, sub, o) = (stop.clone(), swaps.clone(), sub.clone(), o.clone());
            std::thread::spawn(move || {
                let (aside, link) = (sub.with_extension("real"), sub.with_extension("link"));
                while !stop.load(Ordering::Relaxed) {
                    // Wait for the restore to create the directory, then swap it in and out.
                    if fs::rename(&sub, &aside).is_err() {
                        std::thread::yield_now();
                        continue;
                    }
                    let _ = fs::remove_file(&link);
                    if symlink(&o, &link).is_ok() && fs::rename(&link, &sub).is_ok() {
                        swaps.fetch_add(1, Ordering::SeqCst);
                        std::thread::yield_now();
                        let _ = fs::rename(&sub, &link);
                    }
                    let _ = fs::rename(&aside, &sub);
                }
            })
        };
        let r = restore_into(&home, &ih, &to, &AfterFirstSwap(swaps.clone()));
        stop.store(true, Ordering::Relaxed);
        attacker.join().unwrap();
        let swaps = swaps.load(Ordering::SeqCst);
        assert!(swaps > 0, "round {round}: the attacker never got to swap");
        match &r {
            // Refused (a symlink where a directory was), or the directory was gone at
            // that moment: either way nothing was followed.
            Err(e) => eprintln!("round {round}: {swaps} swaps, restore failed: {e}"),
            Ok(_) => eprintln!("round {round}: {swaps} swaps, restore finished"),
        }
        assert_untouched(&o, &format!("round {round}"));
    }
}

/// (b) A resumed restore whose target holds a symlink (to a directory outside) where the
/// snapshot has a directory refuses it and touches nothing outside.
#[test]
fn a_symlink_planted_at_a_directory_of_a_resumed_restore_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let (home, ih) = snapshot(t.path(), 3);
    let o = outside(t.path());
    let to = t.path().join("to");
    fs::create_dir_all(to.join("tree")).unwrap();
    fs::write(
        to.join(".swarmbak-restore"),
        format!("swarmbak restore {ih} \n"),
    )
    .unwrap();
    symlink(&o, to.join("tree/sub")).unwrap();
    let r = restore_into(&home, &ih, &to, &NoProgress);
    assert_untouched(&o, "planted directory symlink");
    assert_refused(r, "planted directory symlink");
}

/// (c) A resumed restore whose target holds symlinks to files outside where the snapshot
/// has files (one with data, one empty) refuses them: no write, no change of mode.
#[test]
fn a_symlink_planted_at_a_file_of_a_resumed_restore_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let (home, ih) = snapshot(t.path(), 3);
    let o = outside(t.path());
    for name in ["f0", "empty"] {
        let to = t.path().join(format!("to-{name}"));
        fs::create_dir_all(to.join("tree/sub")).unwrap();
        fs::write(
            to.join(".swarmbak-restore"),
            format!("swarmbak restore {ih} \n"),
        )
        .unwrap();
        symlink(o.join(name), to.join("tree/sub").join(name)).unwrap();
        let r = restore_into(&home, &ih, &to, &NoProgress);
        assert_untouched(&o, name);
        assert_refused(r, name);
        assert!(fs::symlink_metadata(to.join("tree/sub").join(name))
            .unwrap()
            .file_type()
            .is_symlink());
    }
}

/// The attacker's swap at a chosen moment (`Progress::scanned`: the directories are made,
/// no file is written yet; `Progress::stage("setting metadata")`: modes and times are
/// about to be set), deterministically.
fn swap_at(when: &'static str) {
    let t = tempfile::tempdir().unwrap();
    let (home, ih) = snapshot(t.path(), 3);
    let o = outside(t.path());
    let to = t.path().join("to");
    let swap = SwapAt::new(when, to.join("tree/sub"), &o);
    let r = restore_into(&home, &ih, &to, &swap);
    assert!(swap.done.load(Ordering::SeqCst), "{when}: never swapped");
    assert_untouched(&o, when);
    assert_refused(r, when);
}

#[test]
fn a_directory_swapped_before_files_are_written_is_not_followed() {
    swap_at("scanned");
}

#[test]
fn a_directory_swapped_before_modes_are_set_is_not_chmodded_through() {
    swap_at("setting metadata");
}
