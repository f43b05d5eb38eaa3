//! End to end through the real docker CLI (/usr/local/bin/docker) against `berth daemon`:
//! `docker cp` (the archive API) with and without remap, on running and stopped containers,
//! with symlinks that point out of the root, through volumes and bind mounts (read-only ones
//! refused); `berth cp/commit/diff/export` (commit and diff through docker are in
//! e2e_commit.rs). The daemon harness is tests/common; remapped daemons read account files
//! from a temporary root (BERTH_ETC_ROOT), never the real /etc.

use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// Mount points of this (the host's) mount namespace under `dir`, but for the idmapped
/// image layers the snapshotter keeps mounted for the daemon's life.
fn mount_points_under(dir: &Path) -> Vec<String> {
    let layers = dir.join("exec/snapshots/.idmapped");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|p| Path::new(p).starts_with(dir) && !Path::new(p).starts_with(&layers))
        .collect()
}

/// Mounts of the host that show one of `sources` (a bind of it, whatever its mount point):
/// its path from the test's own temporary directory on ends the mount's root or its point.
fn binds_of(d: &Daemon, sources: &[&Path]) -> Vec<String> {
    let base = d.dir.parent().unwrap();
    let tails: Vec<String> = sources
        .iter()
        .map(|s| s.strip_prefix(base).unwrap().display().to_string())
        .collect();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            tails
                .iter()
                .any(|t| f.len() > 4 && (f[3].ends_with(t.as_str()) || f[4].ends_with(t.as_str())))
        })
        .map(String::from)
        .collect()
}

/// The (uid, gid) of each entry of the tar that `docker cp CTR:PATH -` writes.
fn tar_owners(d: &Daemon, src: &str) -> Vec<(String, String)> {
    let out = d.docker(&["cp", src, "-"]);
    assert!(out.status.success(), "docker cp {src} -: {}", stderr(&out));
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "-tvf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    tar.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let listing = tar.wait_with_output().unwrap();
    assert!(listing.status.success());
    // `-rw-r--r-- 65534/65534 5 2026-01-01 00:00 name`
    String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].to_string(), f[5..].join(" "))
        })
        .collect()
}

fn volume_dir(d: &Daemon, name: &str) -> PathBuf {
    PathBuf::from(
        d.ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", name])
            .trim(),
    )
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `docker cp ctr:LINK/secret` out of container `ctr`, where LINK leads to `dir`, a path
/// that both the host and the container have, each with its own `secret`: the container's
/// comes out.
fn cp_out_through_a_link_reads_the_container(d: &Daemon, dir: &Path, link: &str) {
    write_file(dir, "secret", "host\n");
    let write = format!("echo container > {}/secret", dir.display());
    d.ok(&["exec", "ctr", "sh", "-c", &write]);
    let dst = d.dir.join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    d.ok(&["cp", &format!("ctr:{link}/secret"), dst.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(dst.join("secret")).unwrap(),
        "container\n"
    );
}

#[test]
fn cp_through_a_named_volume_of_a_stopped_and_a_running_container() {
    let d = Daemon::remapped();
    d.import_busybox();
    d.ok(&["volume", "create", "vol"]);
    let vol = volume_dir(&d, "vol");
    let src = d.dir.join("src");
    let f = write_file(&src, "f", "into the volume\n");
    chown(&f, Some(1234), Some(1234)).unwrap();

    // Stopped (never started): the volume's target does not even exist in the root yet.
    d.ok(&[
        "create",
        "--name",
        "stopped",
        "-v",
        "vol:/data",
        "busybox",
        "sleep",
        "1000",
    ]);
    d.ok(&["cp", f.to_str().unwrap(), "stopped:/data/"]);
    assert_eq!(
        std::fs::read_to_string(vol.join("f")).unwrap(),
        "into the volume\n"
    );
    assert_eq!(host_owner(&vol.join("f")), (100000, 100000));
    assert!(
        !d.upper("stopped", "/data/f").exists(),
        "written under the mount point"
    );
    d.ok(&["cp", "-a", f.to_str().unwrap(), "stopped:/data/g"]);
    assert_eq!(host_owner(&vol.join("g")), (101234, 101234));
    let dst = d.dir.join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    d.ok(&["cp", "stopped:/data/f", dst.join("out").to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(dst.join("out")).unwrap(),
        "into the volume\n"
    );
    assert_eq!(
        tar_owners(&d, "stopped:/data/g"),
        [("1234/1234".to_string(), "g".to_string())]
    );
    // The root is not left mounted, and nothing of the view reached the host.
    let id = d.id("stopped");
    assert!(!std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&id));
    assert_eq!(mount_points_under(&d.dir), Vec::<String>::new());

    // Running: the same volume, seen by the container and by cp.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "running",
        "-v",
        "vol:/data",
        "busybox",
        "sleep",
        "1000",
    ]);
    let f2 = write_file(&src, "f2", "while running\n");
    d.ok(&["cp", f2.to_str().unwrap(), "running:/data/"]);
    assert_eq!(host_owner(&vol.join("f2")), (100000, 100000));
    assert_eq!(
        d.ok(&["exec", "running", "cat", "/data/f2"]),
        "while running\n"
    );
    d.ok(&["exec", "running", "sh", "-c", "echo from inside > /data/h"]);
    d.ok(&["cp", "running:/data/h", dst.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(dst.join("h")).unwrap(),
        "from inside\n"
    );
    // A whole directory out, the volume's files in it.
    d.ok(&["cp", "running:/data", dst.join("all").to_str().unwrap()]);
    assert!(dst.join("all/f2").is_file() && dst.join("all/h").is_file());
    assert_eq!(binds_of(&d, &[&vol]), Vec::<String>::new());

    d.ok(&["rm", "-f", "stopped", "running"]);
    assert_eq!(mount_points_under(&d.dir), Vec::<String>::new());
}

#[test]
fn cp_through_bind_mounts_and_read_only_mounts_are_refused() {
    let d = Daemon::remapped();
    d.import_busybox();
    let host = d.dir.join("hostdir");
    let hostro = d.dir.join("hostro");
    write_file(&host, "rootfile", "owned by the host's root\n");
    let mapped = write_file(&host, "mapped", "owned by container uid 5\n");
    chown(&mapped, Some(100005), Some(100005)).unwrap();
    write_file(&hostro, "keep", "unchanged\n");
    d.ok(&["volume", "create", "rovol"]);
    let rovol = volume_dir(&d, "rovol");
    let bind = format!("{}:/mnt", host.display());
    let bind_ro = format!("{}:/ro:ro", hostro.display());
    d.ok(&[
        "run",
        "-d",
        "--name",
        "binds",
        "-v",
        &bind,
        "-v",
        &bind_ro,
        "-v",
        "rovol:/vro:ro",
        "busybox",
        "sleep",
        "1000",
    ]);

    // Out of a bind: owners in the container's view (host root is outside the map).
    let owners = tar_owners(&d, "binds:/mnt");
    assert!(
        owners.contains(&("65534/65534".into(), "mnt/rootfile".into())),
        "{owners:?}"
    );
    assert!(
        owners.contains(&("5/5".into(), "mnt/mapped".into())),
        "{owners:?}"
    );
    let dst = d.dir.join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    d.ok(&["cp", "binds:/mnt/rootfile", dst.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(dst.join("rootfile")).unwrap(),
        "owned by the host's root\n"
    );

    // The container's own /etc/hostname (bound from its directory), not the image's.
    d.ok(&["cp", "binds:/etc/hostname", dst.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(dst.join("hostname")).unwrap(),
        format!("{}\n", &d.id("binds")[..12])
    );

    // Into a bind: the file appears in the host directory, owned by the mapped root.
    let f = write_file(&d.dir.join("src"), "f", "copied in\n");
    d.ok(&["cp", f.to_str().unwrap(), "binds:/mnt/"]);
    assert_eq!(
        std::fs::read_to_string(host.join("f")).unwrap(),
        "copied in\n"
    );
    assert_eq!(host_owner(&host.join("f")), (100000, 100000));
    assert_eq!(d.ok(&["exec", "binds", "cat", "/mnt/f"]), "copied in\n");

    // Into read-only mounts: refused with Docker's message (403), nothing written.
    for dest in ["binds:/ro/", "binds:/vro/", "binds:/ro/keep"] {
        let out = d.docker(&["cp", f.to_str().unwrap(), dest]);
        assert!(!out.status.success(), "cp into {dest} succeeded");
        assert!(
            stderr(&out).contains("mounted volume is marked read-only"),
            "{dest}: {}",
            stderr(&out)
        );
    }
    let (status, body) = d.http("PUT", "/containers/binds/archive?path=/ro", "");
    assert_eq!(status, 403, "{body}");
    assert_eq!(std::fs::read_dir(&hostro).unwrap().count(), 1);
    assert_eq!(
        std::fs::read_to_string(hostro.join("keep")).unwrap(),
        "unchanged\n"
    );
    assert_eq!(std::fs::read_dir(&rovol).unwrap().count(), 0);
    // Reading from them works.
    d.ok(&["cp", "binds:/ro/keep", dst.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(dst.join("keep")).unwrap(),
        "unchanged\n"
    );

    // --read-only root: refused there, allowed in a writable volume under it.
    d.ok(&[
        "create",
        "--name",
        "rofs",
        "--read-only",
        "-v",
        "wvol:/w",
        "busybox",
        "true",
    ]);
    let out = d.docker(&["cp", f.to_str().unwrap(), "rofs:/tmp/"]);
    assert!(
        stderr(&out).contains("container rootfs is marked read-only"),
        "{}",
        stderr(&out)
    );
    assert!(!d.upper("rofs", "/tmp/f").exists());
    d.ok(&["cp", f.to_str().unwrap(), "rofs:/w/"]);
    assert_eq!(
        std::fs::read_to_string(volume_dir(&d, "wvol").join("f")).unwrap(),
        "copied in\n"
    );

    assert_eq!(
        binds_of(&d, &[&host, &hostro, &rovol]),
        Vec::<String>::new()
    );
    d.ok(&["rm", "-f", "binds", "rofs"]);
    assert_eq!(mount_points_under(&d.dir), Vec::<String>::new());
}

#[test]
fn symlinks_in_a_volume_do_not_lead_out_of_the_root() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    d.ok(&["volume", "create", "links"]);
    let vol = volume_dir(&d, "links");
    // A host directory with the same path as a directory in the container.
    let outside = d.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let hd = outside.to_str().unwrap();
    std::os::unix::fs::symlink("/", vol.join("up")).unwrap();
    std::os::unix::fs::symlink("../../..", vol.join("rel")).unwrap();
    std::os::unix::fs::symlink(hd, vol.join("abs")).unwrap();
    d.ok(&[
        "create",
        "--name",
        "ctr",
        "-v",
        "links:/data",
        "busybox",
        "sleep",
        "1000",
    ]);
    let f = write_file(&d.dir.join("src"), "escaped", "inside\n");

    // `/` and `../../..` from /data are the container's root.
    for link in ["ctr:/data/up/", "ctr:/data/rel/"] {
        d.ok(&["cp", f.to_str().unwrap(), link]);
        assert_eq!(
            std::fs::read_to_string(d.upper("ctr", "/escaped")).unwrap(),
            "inside\n",
            "{link}"
        );
        std::fs::remove_file(d.upper("ctr", "/escaped")).unwrap();
    }
    // An absolute host path is a path in the container: created there, not on the host.
    let out = d.docker(&["cp", f.to_str().unwrap(), "ctr:/data/abs/"]);
    assert!(
        !out.status.success(),
        "the link's target does not exist in the container"
    );
    assert!(
        !outside.join("escaped").exists(),
        "cp through a link wrote to the host"
    );
    d.ok(&["start", "ctr"]);
    d.ok(&["exec", "ctr", "mkdir", "-p", hd]);
    d.ok(&["cp", f.to_str().unwrap(), "ctr:/data/abs/"]);
    assert!(
        !outside.join("escaped").exists(),
        "cp through a link wrote to the host"
    );
    assert_eq!(
        d.ok(&["exec", "ctr", "cat", &format!("{hd}/escaped")]),
        "inside\n"
    );
    // Reading through the links stays inside too.
    cp_out_through_a_link_reads_the_container(&d, &outside, "/data/abs");
    d.ok(&["rm", "-f", "ctr"]);
    assert_eq!(mount_points_under(&d.dir), Vec::<String>::new());
}

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
    assert_fails(&out, "Could not find the file /nonexistent");
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
    cp_out_through_a_link_reads_the_container(&d, &host_dir, "/rel");
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
    d.berth_ok(&["cp", src.to_str().unwrap(), "ctr:/"]);
    d.berth_ok(&["cp", "-a", src.join("f").to_str().unwrap(), "ctr:/g"]);
    assert_eq!(host_owner(&d.upper("ctr", "/in/f")), (100000, 100000));
    assert_eq!(host_owner(&d.upper("ctr", "/g")), (100005, 100005));
    assert_eq!(d.ok(&["start", "-a", "ctr"]), "f\nf\n");

    let out = d.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    d.berth_ok(&["cp", "-a", "ctr:/in", out.to_str().unwrap()]);
    d.berth_ok(&["cp", "ctr:/g", out.join("renamed").to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(out.join("in/f")).unwrap(), "f\n");
    assert_eq!(host_owner(&out.join("in/f")), (0, 0));
    assert_eq!(std::fs::read_to_string(out.join("renamed")).unwrap(), "f\n");
    let missing = d.berth(&["cp", "ctr:/nope", out.to_str().unwrap()]);
    assert!(!missing.status.success());

    let diff = d.berth_ok(&["diff", "ctr"]);
    assert!(diff.lines().any(|l| l == "A /in/f"), "{diff}");
    let tar = d.dir.join("x.tar");
    d.berth_ok(&["export", "-o", tar.to_str().unwrap(), "ctr"]);
    let exported = std::fs::read(&tar).unwrap();
    assert!(exported.len() > 10240);
    // To stdout (a pipe here): the same archive.
    let o = d.berth(&["export", "ctr"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout.len(), exported.len());
    let id = d.berth_ok(&["commit", "-m", "msg", "ctr", "mine:v2"]);
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(
        d.ok(&["run", "--rm", "mine:v2", "stat", "-c", "%u:%g", "/g"])
            .trim(),
        "5:5"
    );
    d.ok(&["rm", "-f", "ctr"]);
}
