//! End to end through the real docker CLI against `berth daemon`: `docker commit` (moby's
//! TestUsernsCommit round trip), `docker diff` and `docker export`.

use std::process::Command;

mod common;
use common::*;

#[test]
fn commit_shifts_owners_back_so_the_image_runs_remapped_or_not() {
    let d = Daemon::remapped();
    d.import_busybox();
    d.ok(&[
        "run",
        "--name",
        "ctr",
        "busybox",
        "sh",
        "-c",
        "mkdir /data && echo x > /data/f && chown -R 1000:1000 /data && rm /etc/group",
    ]);
    assert_eq!(host_owner(&d.upper("ctr", "/data/f")), (101000, 101000));
    let id = d.ok(&["commit", "-c", "ENV COMMITTED=yes", "ctr", "committed:1"]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    for userns in [None, Some("--userns=host")] {
        let mut args = vec!["run", "--rm"];
        args.extend(userns);
        args.extend([
            "committed:1",
            "sh",
            "-c",
            "stat -c %u:%g /data /data/f; cat /data/f; test -e /etc/group || echo gone; echo $COMMITTED",
        ]);
        assert_eq!(
            d.ok(&args),
            "1000:1000\n1000:1000\nx\ngone\nyes\n",
            "run {userns:?}"
        );
    }
    // One more layer than the parent.
    let layers = |img: &str| {
        d.ok(&["image", "inspect", "-f", "{{len .RootFS.Layers}}", img])
            .trim()
            .to_string()
    };
    assert_eq!(layers("committed:1"), "2");
    assert_eq!(layers("busybox"), "1");
    d.ok(&["rm", "-f", "ctr"]);
}

#[test]
fn diff_and_export() {
    let d = Daemon::remapped();
    d.import_busybox();
    d.ok(&[
        "run",
        "--name",
        "ctr",
        "busybox",
        "sh",
        "-c",
        "touch /added && echo more >> /etc/passwd && rm /etc/group && mkdir /newdir && chown 7:7 /added",
    ]);
    let diff = d.ok(&["diff", "ctr"]);
    for line in [
        "A /added",
        "C /etc",
        "C /etc/passwd",
        "D /etc/group",
        "A /newdir",
    ] {
        assert!(diff.lines().any(|l| l == line), "{line} not in:\n{diff}");
    }
    let tar = d.dir.join("export.tar");
    d.ok(&["export", "-o", tar.to_str().unwrap(), "ctr"]);
    let listing = Command::new("tar")
        .arg("-tvf")
        .arg(&tar)
        .arg("--numeric-owner")
        .output()
        .unwrap();
    assert!(listing.status.success());
    let listing = String::from_utf8_lossy(&listing.stdout);
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")) || l.contains(&format!(" {name} -> ")))
            .unwrap_or_else(|| panic!("{name} not in export:\n{listing}"))
            .to_string()
    };
    // Owners in the container's view, not the host's 100000 range.
    assert!(line("added").contains(" 7/7 "), "{}", line("added"));
    assert!(
        line("bin/busybox").contains(" 0/0 "),
        "{}",
        line("bin/busybox")
    );
    assert!(line("bin/sh").contains("-> "), "{}", line("bin/sh"));
    assert!(
        !listing.lines().any(|l| l.ends_with(" etc/group")),
        "{listing}"
    );
    d.ok(&["rm", "-f", "ctr"]);
}
