//! End to end through the real docker CLI (/usr/local/bin/docker) against `berth daemon`:
//! `docker cp` (the archive API) with and without remap, on running and stopped containers,
//! with symlinks that point out of the root; `berth cp/commit/diff/export` (commit and diff
//! through docker are in e2e_commit.rs). The daemon harness is tests/common; remapped daemons
//! read account files from a temporary root (BERTH_ETC_ROOT), never the real /etc.

use std::os::unix::fs::chown;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

#[test]
fn cp_into_a_remapped_container_is_owned_by_the_mapped_root() {
    let d = Daemon::remapped();
    d.import_busybox();
    d.ok(&["run", "-d", "--name", "ctr", "busybox", "sleep", "1000"]);
    let src = d.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let f = src.join("f");
    std::fs::write(&f, "hello\n").unwrap();
    chown(&f, Some(1234), Some(1234)).unwrap();

    // Plain cp: owned by the container's root, 100000 on the host.
    d.ok(&["cp", f.to_str().unwrap(), "ctr:/tmp/"]);
    assert_eq!(host_owner(&d.upper("ctr", "/tmp/f")), (100000, 100000));
    assert_eq!(
        d.ok(&["exec", "ctr", "stat", "-c", "%u:%g", "/tmp/f"])
            .trim(),
        "0:0"
    );
    assert_eq!(d.ok(&["exec", "ctr", "cat", "/tmp/f"]), "hello\n");

    // cp -a: the tar's owner, through the map.
    d.ok(&["cp", "-a", f.to_str().unwrap(), "ctr:/tmp/g"]);
    assert_eq!(host_owner(&d.upper("ctr", "/tmp/g")), (101234, 101234));
    assert_eq!(
        d.ok(&["exec", "ctr", "stat", "-c", "%u:%g", "/tmp/g"])
            .trim(),
        "1234:1234"
    );

    // A directory copied in.
    std::fs::create_dir_all(src.join("dir/sub")).unwrap();
    std::fs::write(src.join("dir/sub/x"), "x").unwrap();
    d.ok(&["cp", src.join("dir").to_str().unwrap(), "ctr:/"]);
    assert_eq!(host_owner(&d.upper("ctr", "/dir/sub/x")), (100000, 100000));

    // cp out: a file, and a directory of the image.
    d.ok(&[
        "exec",
        "ctr",
        "sh",
        "-c",
        "echo out > /tmp/out && chown 1000:1000 /tmp/out",
    ]);
    let dst = d.dir.join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    d.ok(&["cp", "ctr:/tmp/out", dst.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(dst.join("out")).unwrap(), "out\n");
    d.ok(&["cp", "ctr:/etc", dst.to_str().unwrap()]);
    assert!(std::fs::read_to_string(dst.join("etc/passwd"))
        .unwrap()
        .starts_with("root:"));
    // A missing path is a 404 with Docker's message.
    let out = d.docker(&["cp", "ctr:/nonexistent", dst.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Could not find the file /nonexistent"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.ok(&["rm", "-f", "ctr"]);
}

#[test]
fn cp_follows_symlinks_inside_the_root_only() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    // A host directory with the same path as a directory in the container.
    let host_dir = d.dir.join("outside");
    std::fs::create_dir_all(&host_dir).unwrap();
    let hd = host_dir.to_str().unwrap();
    let script = format!("mkdir -p {hd} && ln -s {hd} /abs && ln -s ../../../../../../../../..{hd} /rel && sleep 1000");
    d.ok(&["run", "-d", "--name", "ctr", "busybox", "sh", "-c", &script]);
    // Wait for the links.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !d
        .docker(&["exec", "ctr", "test", "-L", "/rel"])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the container never made its links"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let f = d.dir.join("f");
    std::fs::write(&f, "in\n").unwrap();
    for link in ["/abs/", "/rel/"] {
        d.ok(&["cp", f.to_str().unwrap(), &format!("ctr:{link}")]);
        assert!(
            !host_dir.join("f").exists(),
            "cp through {link} wrote to the host"
        );
        assert_eq!(d.ok(&["exec", "ctr", "cat", &format!("{hd}/f")]), "in\n");
        d.ok(&["exec", "ctr", "rm", &format!("{hd}/f")]);
    }
    // Reading through a link also stays inside.
    std::fs::write(host_dir.join("secret"), "host\n").unwrap();
    d.ok(&[
        "exec",
        "ctr",
        "sh",
        "-c",
        &format!("echo container > {hd}/secret"),
    ]);
    let dst = d.dir.join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    d.ok(&["cp", "ctr:/rel/secret", dst.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(dst.join("secret")).unwrap(),
        "container\n"
    );
    d.ok(&["rm", "-f", "ctr"]);
}

#[test]
fn cp_on_a_stopped_container_mounts_and_unmounts_its_root() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    d.ok(&["create", "--name", "stopped", "busybox", "cat", "/f"]);
    let f = d.dir.join("f");
    std::fs::write(&f, "stopped\n").unwrap();
    d.ok(&["cp", f.to_str().unwrap(), "stopped:/f"]);
    let id = d.id("stopped");
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&id)
    };
    assert!(!mounted(), "the root stays mounted after cp");
    let dst = d.dir.join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    d.ok(&["cp", "stopped:/f", dst.join("g").to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(dst.join("g")).unwrap(), "stopped\n");
    assert!(!mounted(), "the root stays mounted after cp out");
    assert_eq!(d.ok(&["start", "-a", "stopped"]), "stopped\n");
    d.ok(&["rm", "-f", "stopped"]);
}

#[test]
fn berth_cp_commit_diff_export() {
    let d = Daemon::remapped();
    d.import_busybox();
    let berth = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("-H")
            .arg(format!("unix://{}", d.sock.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| -> String {
        let o = berth(args);
        assert!(
            o.status.success(),
            "berth {args:?}: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            d.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    d.ok(&[
        "create",
        "--name",
        "ctr",
        "busybox",
        "sh",
        "-c",
        "cat /in/f /g",
    ]);
    let src = d.dir.join("in");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "f\n").unwrap();
    chown(src.join("f"), Some(5), Some(5)).unwrap();
    ok(&["cp", src.to_str().unwrap(), "ctr:/"]);
    ok(&["cp", "-a", src.join("f").to_str().unwrap(), "ctr:/g"]);
    assert_eq!(host_owner(&d.upper("ctr", "/in/f")), (100000, 100000));
    assert_eq!(host_owner(&d.upper("ctr", "/g")), (100005, 100005));
    assert_eq!(d.ok(&["start", "-a", "ctr"]), "f\nf\n");

    let out = d.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    ok(&["cp", "-a", "ctr:/in", out.to_str().unwrap()]);
    ok(&["cp", "ctr:/g", out.join("renamed").to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(out.join("in/f")).unwrap(), "f\n");
    assert_eq!(host_owner(&out.join("in/f")), (0, 0));
    assert_eq!(std::fs::read_to_string(out.join("renamed")).unwrap(), "f\n");
    let missing = berth(&["cp", "ctr:/nope", out.to_str().unwrap()]);
    assert!(!missing.status.success());

    let diff = ok(&["diff", "ctr"]);
    assert!(diff.lines().any(|l| l == "A /in/f"), "{diff}");
    let tar = d.dir.join("x.tar");
    ok(&["export", "-o", tar.to_str().unwrap(), "ctr"]);
    assert!(std::fs::metadata(&tar).unwrap().len() > 10240);
    let id = ok(&["commit", "-m", "msg", "ctr", "mine:v2"]);
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(
        d.ok(&["run", "--rm", "mine:v2", "stat", "-c", "%u:%g", "/g"])
            .trim(),
        "5:5"
    );
    d.ok(&["rm", "-f", "ctr"]);
}
