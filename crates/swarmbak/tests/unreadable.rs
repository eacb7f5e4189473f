//! An unreadable file or directory is reported and skipped, never a crash. Tests run as
//! root in CI, and root reads anything, so the backup runs as `nobody` through setpriv.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[test]
fn unreadable_entries_are_reported_and_skipped() {
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let m = machine(t.path());
    let tree = t.path().join("tree");
    fs::create_dir_all(tree.join("locked")).unwrap();
    fs::create_dir_all(tree.join("open")).unwrap();
    fs::write(tree.join("open/a.txt"), b"readable").unwrap();
    fs::write(tree.join("secret.txt"), b"nobody may read this").unwrap();
    fs::write(tree.join("locked/inner.txt"), b"hidden").unwrap();
    fs::set_permissions(tree.join("secret.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(tree.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();

    let mut cmd = if is_root() {
        // Hand the tree and the home to nobody, then back up as nobody.
        let st = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&tree)
            .arg(&m.home)
            .status()
            .expect("chown runs");
        assert!(st.success());
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    let o = cmd
        .arg("--home")
        .arg(&m.home)
        .args(["seed", tree.to_str().unwrap(), "--until", "published"])
        .output()
        .expect("setpriv (util-linux) runs the backup as nobody");
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        err.contains("secret.txt") && err.contains("skipped"),
        "{err}"
    );
    assert!(err.contains("locked"), "{err}");
    let ih = out.lines().next().unwrap().to_string();

    let to = t.path().join("restored");
    fetch_recovery(&m, &ih, &to);
    assert_eq!(fs::read(to.join("tree/open/a.txt")).unwrap(), b"readable");
    assert!(!to.join("tree/secret.txt").exists());
    assert!(!to.join("tree/locked/inner.txt").exists());
}
