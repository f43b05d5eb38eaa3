//! `berth userns show` run as a binary against temporary copies of the account files.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn etc_root() -> tempfile::TempDir {
    let dir = berth_testkit::tempdir("berth-cli-etc");
    let etc = dir.path().join("etc");
    fs::create_dir(&etc).unwrap();
    fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:1001::/:/bin/sh\n",
    )
    .unwrap();
    fs::write(etc.join("group"), "root:x:0:\nalice:x:1000:\nbob:x:1001:\n").unwrap();
    fs::write(etc.join("subuid"), "alice:100000:65536\n").unwrap();
    fs::write(etc.join("subgid"), "alice:100000:65536\n").unwrap();
    dir
}

fn berth(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["userns", "show"])
        .args(args)
        .env("BERTH_ETC_ROOT", root)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "berth failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn show_default_creates_dockremap_past_alice() {
    berth_testkit::require_root();
    let dir = etc_root();
    let out = stdout(&berth(dir.path(), &["--userns-remap", "default"]));
    assert!(out.contains("user:         dockremap (uid "), "{out}");
    assert!(
        out.contains("subuid:       dockremap:165536:65536"),
        "{out}"
    );
    assert!(
        out.contains("uid_map:      0 165536 65536\ngid_map:      0 165536 65536\n"),
        "{out}"
    );
    // A second run prints the same and changes nothing.
    let subuid = fs::read(dir.path().join("etc/subuid")).unwrap();
    assert_eq!(
        stdout(&berth(dir.path(), &["--userns-remap", "default"])),
        out
    );
    assert_eq!(fs::read(dir.path().join("etc/subuid")).unwrap(), subuid);
}

#[test]
fn show_named_user_and_off_cases() {
    let dir = etc_root();
    let out = stdout(&berth(dir.path(), &["--userns-remap", "alice"]));
    assert!(out.contains("uid_map:      0 100000 65536\n"), "{out}");
    let out = stdout(&berth(dir.path(), &["--userns-remap", "0"]));
    assert!(out.starts_with("user namespaces: off"), "{out}");
    let out = stdout(&berth(dir.path(), &[]));
    assert!(
        out.starts_with("user namespaces: off (no --userns-remap)"),
        "{out}"
    );
    fs::create_dir_all(dir.path().join("etc/berth")).unwrap();
    fs::write(
        dir.path().join("etc/berth/daemon.json"),
        r#"{"userns-remap": "1000"}"#,
    )
    .unwrap();
    let out = stdout(&berth(dir.path(), &[]));
    assert!(out.contains("user:         alice (uid 1000)"), "{out}");
}

#[test]
fn show_warns_about_ranges_shared_with_other_users() {
    let dir = etc_root();
    // What Docker 28's `default` can produce: a remap user handed another user's range.
    for f in ["etc/subuid", "etc/subgid"] {
        fs::write(dir.path().join(f), "alice:100000:65536\nbob:100000:65536\n").unwrap();
    }
    let out = stdout(&berth(dir.path(), &["--userns-remap", "bob"]));
    assert!(
        out.contains(
            "warning:      100000-165535 of line 2 is also alice's (100000-165535 line 1)"
        ),
        "{out}"
    );
}

#[test]
fn show_user_without_ranges_fails_with_the_fix() {
    let dir = etc_root();
    let o = berth(dir.path(), &["--userns-remap", "bob"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("user bob has no subordinate ids")
            && err.contains("usermod --add-subuids 165536-231071 --add-subgids 165536-231071 bob"),
        "{err}"
    );
}
