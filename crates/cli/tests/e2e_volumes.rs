//! End to end: volumes through the real docker CLI (/usr/local/bin/docker) against
//! `berth daemon` on a temporary socket, data root and exec root (the daemon helper is the
//! one of e2e_docker.rs). Remapped daemons read account files from a temporary root
//! (BERTH_ETC_ROOT), never the real /etc.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::*;

impl Daemon {
    fn volume_dir(&self, name: &str) -> PathBuf {
        self.dir.join("data").join("volumes").join(name)
    }

    fn volume_names(&self) -> Vec<String> {
        self.ok(&["volume", "ls", "-q"])
            .lines()
            .map(String::from)
            .collect()
    }
}

/// Polls `cond` (container removal finishes in the background); generous, not timed.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn volume_create_ls_inspect_rm_prune() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    assert_eq!(
        d.ok(&["volume", "create", "--label", "env=test", "named1"])
            .trim(),
        "named1"
    );
    let anon = d.ok(&["volume", "create"]).trim().to_string();
    assert!(is_hex64(&anon), "generated name: {anon:?}");

    let mut names = d.volume_names();
    names.sort();
    let mut want = vec![anon.clone(), "named1".to_string()];
    want.sort();
    assert_eq!(names, want);
    let table = d.ok(&["volume", "ls"]);
    assert!(table.starts_with("DRIVER"), "{table}");
    assert!(
        table.contains("local") && table.contains("named1"),
        "{table}"
    );
    assert_eq!(
        d.ok(&["volume", "ls", "-q", "--filter", "label=env=test"])
            .trim(),
        "named1"
    );
    assert_eq!(
        d.ok(&["volume", "ls", "-q", "--filter", "name=named"])
            .trim(),
        "named1"
    );

    let mp = d.ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "named1"]);
    assert_eq!(
        Path::new(mp.trim()),
        d.volume_dir("named1").join("_data").as_path()
    );
    let info = d.ok(&[
        "volume",
        "inspect",
        "-f",
        "{{.Driver}} {{.Scope}} {{.Labels.env}}",
        "named1",
    ]);
    assert_eq!(info.trim(), "local local test");
    let o = d.docker(&["volume", "inspect", "nosuchvol"]);
    assert_fails(&o, "no such volume");
    let o = d.docker(&["volume", "create", "bad/name"]);
    assert_fails(&o, "invalid characters");

    // In use (even by a container that is not running): refused, also with -f.
    d.ok(&[
        "create",
        "--name",
        "user",
        "-v",
        "named1:/data",
        "busybox",
        "true",
    ]);
    for args in [
        &["volume", "rm", "named1"][..],
        &["volume", "rm", "-f", "named1"],
    ] {
        let o = d.docker(args);
        assert!(!o.status.success(), "rm of a volume in use succeeded");
        assert!(stderr(&o).contains("volume is in use"), "{}", stderr(&o));
    }
    assert_eq!(
        d.ok(&["volume", "ls", "-q", "--filter", "dangling=false"])
            .trim(),
        "named1"
    );
    d.ok(&["rm", "user"]);
    assert_eq!(
        d.ok(&["volume", "rm", "named1"]).trim(),
        "named1",
        "rm prints the name"
    );
    assert!(!d.volume_dir("named1").exists());

    // prune: anonymous volumes only, then --all for named ones.
    d.ok(&["volume", "create", "keep"]);
    let out = d.ok(&["volume", "prune", "-f"]);
    assert!(out.contains(&anon), "{out}");
    assert_eq!(d.volume_names(), vec!["keep".to_string()]);
    let out = d.ok(&["volume", "prune", "-f", "--all"]);
    assert!(out.contains("keep"), "{out}");
    assert!(d.volume_names().is_empty());
}

#[test]
fn anonymous_volumes_go_with_rm_v_and_run_rm() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    d.ok(&["create", "--name", "c1", "-v", "/data", "busybox", "true"]);
    let name = d.ok(&["inspect", "-f", "{{(index .Mounts 0).Name}}", "c1"]);
    let name = name.trim().to_string();
    assert!(is_hex64(&name), "anonymous volume name: {name:?}");
    assert!(d.volume_dir(&name).join("_data").is_dir());
    assert_eq!(d.volume_names(), vec![name.clone()]);
    d.ok(&["rm", "-v", "c1"]);
    eventually("rm -v removes the anonymous volume", || {
        !d.volume_dir(&name).exists()
    });

    // An anonymous volume another container also mounts stays.
    d.ok(&["create", "--name", "c0", "-v", "/data", "busybox", "true"]);
    let shared = d.ok(&["inspect", "-f", "{{(index .Mounts 0).Name}}", "c0"]);
    let shared = shared.trim().to_string();
    let also = format!("{shared}:/other");
    d.ok(&["create", "--name", "c0b", "-v", &also, "busybox", "true"]);
    let c0 = d.ok(&["inspect", "-f", "{{.Id}}", "c0"]).trim().to_string();
    d.ok(&["rm", "-v", "c0"]);
    // The container's directory goes after its volumes: then the volume is still there.
    let c0_dir = d.dir.join("data/containers").join(&c0);
    eventually("c0's cleanup finishes", || !c0_dir.exists());
    assert!(
        d.volume_dir(&shared).exists(),
        "a volume in use was removed"
    );
    d.ok(&["rm", "-v", "c0b"]);
    eventually("the last rm -v removes the shared anonymous volume", || {
        !d.volume_dir(&shared).exists()
    });

    // Without -v it stays (and a named volume never goes with its container).
    d.ok(&[
        "create", "--name", "c2", "-v", "/data", "-v", "named:/n", "busybox", "true",
    ]);
    d.ok(&["rm", "-v", "c2"]);
    eventually("rm -v of c2 finishes", || d.volume_names() == ["named"]);

    // The image's VOLUME: an anonymous volume, seeded from the image, gone with rm -v.
    d.import_busybox_as("withvol", &["--change", "VOLUME [\"/etc\"]"]);
    let out = d.ok(&["run", "--name", "c3", "withvol", "cat", "/etc/passwd"]);
    assert!(out.starts_with("root:"), "{out}");
    let anon = d.ok(&["inspect", "-f", "{{(index .Mounts 0).Name}}", "c3"]);
    let anon = anon.trim().to_string();
    assert!(is_hex64(&anon), "image VOLUME gave {anon:?}");
    assert!(d.volume_dir(&anon).join("_data/passwd").is_file());
    d.ok(&["rm", "-v", "c3"]);
    eventually("rm -v removes the image VOLUME's volume", || {
        !d.volume_dir(&anon).exists()
    });

    // --rm: anonymous volumes go with the container, as in docker.
    d.ok(&[
        "run",
        "--rm",
        "-v",
        "/scratch",
        "busybox",
        "touch",
        "/scratch/x",
    ]);
    eventually("--rm removes the anonymous volume", || {
        d.volume_names() == ["named"]
    });
}

#[test]
fn empty_volume_is_seeded_from_the_image() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        "etcvol:/etc",
        "busybox",
        "cat",
        "/etc/passwd",
    ]);
    assert!(out.starts_with("root:"), "{out}");
    let host = d.volume_dir("etcvol").join("_data").join("passwd");
    let text = std::fs::read_to_string(&host).expect("passwd copied into the volume");
    assert!(text.starts_with("root:"), "{text}");
    // Seeded once: what the container writes stays, and is not copied over again.
    d.ok(&[
        "run",
        "--rm",
        "-v",
        "etcvol:/etc",
        "busybox",
        "sh",
        "-c",
        "rm /etc/passwd; echo hi > /etc/mine",
    ]);
    let ls = d.ok(&["run", "--rm", "-v", "etcvol:/etc", "busybox", "ls", "/etc"]);
    assert!(ls.contains("mine") && !ls.contains("passwd"), "{ls}");
    // nocopy: left empty.
    let ls = d.ok(&[
        "run",
        "--rm",
        "-v",
        "bare:/etc:nocopy",
        "busybox",
        "ls",
        "-A",
        "/etc",
    ]);
    assert_eq!(ls.trim(), "", "nocopy volume not empty");
    let ls = d.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,src=bare2,dst=/etc,volume-nocopy",
        "busybox",
        "ls",
        "-A",
        "/etc",
    ]);
    assert_eq!(ls.trim(), "", "volume-nocopy volume not empty");
    let ls = d.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,src=full,dst=/etc",
        "busybox",
        "ls",
        "/etc",
    ]);
    assert!(ls.contains("passwd"), "--mount volume not seeded: {ls}");
}

/// The `berth` client's own volume commands against the same daemon.
#[test]
fn berth_volume_commands() {
    let d = Daemon::start(None, None);
    assert_eq!(
        d.berth_ok(&["volume", "create", "--label", "a=b", "bv"])
            .trim(),
        "bv"
    );
    let table = d.berth_ok(&["volume", "ls"]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        vec![vec!["DRIVER", "VOLUME", "NAME"], vec!["local", "bv"]]
    );
    assert_eq!(
        d.berth_ok(&["volume", "ls", "-q", "-f", "label=a=c"])
            .trim(),
        ""
    );
    let insp = d.berth_ok(&["volume", "inspect", "bv"]);
    let v: serde_json::Value = serde_json::from_str(&insp).unwrap();
    assert_eq!(v[0]["Name"], "bv");
    assert_eq!(v[0]["Labels"]["a"], "b");
    assert_eq!(d.berth_ok(&["volume", "rm", "bv"]).trim(), "bv");
    let o = d.berth(&["volume", "rm", "bv"]);
    assert_fails(&o, "no such volume");
    d.berth_ok(&["volume", "create"]);
    let out = d.berth_ok(&["volume", "prune", "-f"]);
    assert!(out.contains("Deleted Volumes:"), "{out}");
    assert_eq!(d.berth_ok(&["volume", "ls", "-q"]).trim(), "");
}

#[test]
fn remapped_volumes_are_owned_by_the_mapped_root() {
    let tmp = berth_testkit::tempdir("berth-e2e-vol-etc-");
    let etc = fake_etc(tmp.path());
    let d = Daemon::start(Some("remap"), Some(&etc));
    d.import_busybox();
    d.ok(&["volume", "create", "rv"]);
    let md = std::fs::metadata(d.volume_dir("rv").join("_data")).unwrap();
    assert_eq!((md.uid(), md.gid()), (100000, 100000));

    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        "seeded:/etc",
        "busybox",
        "sh",
        "-c",
        "ls -ln /etc/passwd; touch /etc/new; ls -ln /etc/new",
    ]);
    for line in out.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((cols[2], cols[3]), ("0", "0"), "inside: {out}");
    }
    let data = d.volume_dir("seeded").join("_data");
    for p in [data.clone(), data.join("passwd"), data.join("new")] {
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(
            (md.uid(), md.gid()),
            (100000, 100000),
            "host owner of {}",
            p.display()
        );
    }
}

/// `--tmpfs /run:size=1m,mode=1777` and `--mount type=tmpfs,...,tmpfs-size,tmpfs-mode`:
/// mounted with their size and mode, writable by the container's root and owned by it
/// (on the host: the mapped root under remap), empty again after a restart, and listed
/// in inspect as Docker lists them.
fn tmpfs_mounts(d: &Daemon, host_root: u32) {
    d.import_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "tm",
        "--tmpfs",
        "/run:size=1m,mode=1777",
        "--mount",
        "type=tmpfs,dst=/x,tmpfs-size=1048576,tmpfs-mode=0700",
        "busybox",
        "sleep",
        "1000",
    ]);
    let sh = |script: &str| d.ok(&["exec", "tm", "sh", "-c", script]);
    let mounts = d.ok(&["exec", "tm", "cat", "/proc/mounts"]);
    for (dst, mode) in [("/run", "1777"), ("/x", "700")] {
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(dst))
            .unwrap_or_else(|| panic!("no {dst} in\n{mounts}"));
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[2], "tmpfs", "{line}");
        let opts: Vec<&str> = f[3].split(',').collect();
        for want in ["rw", "nosuid", "nodev", "noexec", "size=1024k"] {
            assert!(opts.contains(&want), "{want} missing: {line}");
        }
        // The kernel shows a mode other than its default, 1777 (stat checks both below).
        if mode != "1777" {
            assert!(opts.contains(&format!("mode={mode}").as_str()), "{line}");
        }
    }
    assert_eq!(
        sh("stat -c '%u:%g %a' /run /x; echo a > /run/f && echo b > /x/f && cat /run/f /x/f"),
        "0:0 1777\n0:0 700\na\nb\n"
    );
    // On the host, through the container's root: owned by the container's root.
    let pid = d.inspect("tm", "{{.State.Pid}}");
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    for p in ["run", "x", "x/f"] {
        let m = std::fs::metadata(root.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (host_root, host_root), "{p}");
    }
    assert_eq!(
        d.inspect("tm", "{{json .HostConfig.Tmpfs}}"),
        r#"{"/run":"size=1m,mode=1777"}"#
    );
    let hc_mounts = d.ok(&["inspect", "-f", "{{json .HostConfig.Mounts}}", "tm"]);
    assert!(
        hc_mounts.contains(r#""TmpfsOptions":{"SizeBytes":1048576,"Mode":448}"#),
        "{hc_mounts}"
    );
    let m = d.ok(&["inspect", "-f", "{{json .Mounts}}", "tm"]);
    assert!(
        m.contains(r#""Type":"tmpfs""#) && m.contains(r#""Destination":"/x""#),
        "{m}"
    );

    // A tmpfs lives as long as the run: empty after a restart, gone after rm.
    d.ok(&["restart", "-t", "0", "tm"]);
    assert_eq!(sh("ls -A /run /x | tr -d '\\n'; echo"), "/run:/x:\n");
    d.ok(&["rm", "-f", "tm"]);
    eventually("the container's mounts to go", || {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        !info.contains(d.dir.to_str().unwrap())
    });
}

#[test]
fn tmpfs_mounts_without_remap() {
    let d = Daemon::start(None, None);
    tmpfs_mounts(&d, 0);
}

#[test]
fn tmpfs_mounts_under_remap() {
    let d = Daemon::remapped();
    tmpfs_mounts(&d, 100000);
}
