//! End to end: volumes through the real docker CLI (/usr/local/bin/docker) against
//! `berth daemon` on a temporary socket, data root and exec root (the daemon helper is the
//! one of e2e_docker.rs). Remapped daemons read account files from a temporary root
//! (BERTH_ETC_ROOT), never the real /etc.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DOCKER: &str = "/usr/local/bin/docker";

/// Generous: only there so that a hang fails instead of blocking CI forever.
const TIMEOUT: &str = "120";

/// A `berth daemon` on its own socket and roots; killed by pid and cleaned up on drop.
struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
    sock: PathBuf,
    etc_root: Option<PathBuf>,
    remap: Option<String>,
    _tmp: Option<tempfile::TempDir>,
}

impl Daemon {
    fn start(remap: Option<&str>, etc_root: Option<&Path>) -> Daemon {
        berth_testkit::require_root();
        let tmp = berth_testkit::tempdir("berth-e2e-vol-");
        let dir = tmp.path().to_path_buf();
        let mut d = Daemon {
            child: None,
            sock: dir.join("docker.sock"),
            dir,
            etc_root: etc_root.map(Path::to_path_buf),
            remap: remap.map(String::from),
            _tmp: Some(tmp),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("daemon")
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("berth.pid"))
            .arg("--config-file")
            .arg(self.empty_config())
            .arg("--log-level")
            .arg("debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("daemon.log")).unwrap());
        if let Some(r) = &self.remap {
            cmd.arg(format!("--userns-remap={r}"));
        }
        match &self.etc_root {
            Some(root) => cmd.env("BERTH_ETC_ROOT", root),
            None => cmd.env_remove("BERTH_ETC_ROOT"),
        };
        self.child = Some(cmd.spawn().expect("start berth daemon"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while UnixStream::connect(&self.sock).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("berth daemon exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon socket never came up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon reads /etc/berth/daemon.json by default: give it an empty one of its own.
    fn empty_config(&self) -> PathBuf {
        let p = self.dir.join("daemon.json");
        std::fs::write(&p, "{}").unwrap();
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// SIGTERM, then wait; SIGKILL if it does not stop.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn docker(&self, args: &[&str]) -> Output {
        self.docker_stdin(args, None)
    }

    fn docker_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let host = format!("unix://{}", self.sock.display());
        let mut cmd = Command::new("timeout");
        cmd.arg(TIMEOUT).arg(DOCKER).arg("-H").arg(&host).args(args);
        cmd.env_remove("DOCKER_HOST")
            .env("DOCKER_CONFIG", self.dir.join("docker-config"));
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run docker");
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs docker and insists on success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn import_busybox(&self) {
        let tar = berth_testkit::busybox_tar();
        self.ok(&["import", tar.to_str().unwrap(), "busybox"]);
        self.ok(&["tag", "busybox", "alpine"]);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        // Monitors outlive the daemon by design: stop the ones this daemon started (their
        // command line names our exec root), then unmount what is left under our directory.
        let exec = self.dir.join("exec");
        for pid in pids_mentioning(&exec) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        unmount_under(&self.dir);
    }
}

fn pids_mentioning(path: &Path) -> Vec<i32> {
    let needle = path.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            out.push(pid);
        }
    }
    out
}

fn unmount_under(dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Account files for a remap user `remap` with 100000:65536, under a temporary root.
fn fake_etc(parent: &Path) -> PathBuf {
    let root = parent.join("etc-root");
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nremap:x:999:999::/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\nremap:x:999:\n").unwrap();
    std::fs::write(etc.join("subuid"), "remap:100000:65536\n").unwrap();
    std::fs::write(etc.join("subgid"), "remap:100000:65536\n").unwrap();
    root
}

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
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no such volume"), "{}", stderr(&o));
    let o = d.docker(&["volume", "create", "bad/name"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("invalid characters"), "{}", stderr(&o));

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
    let tar = berth_testkit::busybox_tar();
    d.ok(&[
        "import",
        "--change",
        "VOLUME [\"/etc\"]",
        tar.to_str().unwrap(),
        "withvol",
    ]);
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
        assert!(o.status.success(), "berth {args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(
        ok(&["volume", "create", "--label", "a=b", "bv"]).trim(),
        "bv"
    );
    let table = ok(&["volume", "ls"]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        vec![vec!["DRIVER", "VOLUME", "NAME"], vec!["local", "bv"]]
    );
    assert_eq!(ok(&["volume", "ls", "-q", "-f", "label=a=c"]).trim(), "");
    let insp = ok(&["volume", "inspect", "bv"]);
    let v: serde_json::Value = serde_json::from_str(&insp).unwrap();
    assert_eq!(v[0]["Name"], "bv");
    assert_eq!(v[0]["Labels"]["a"], "b");
    assert_eq!(ok(&["volume", "rm", "bv"]).trim(), "bv");
    let o = berth(&["volume", "rm", "bv"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no such volume"), "{}", stderr(&o));
    ok(&["volume", "create"]);
    let out = ok(&["volume", "prune", "-f"]);
    assert!(out.contains("Deleted Volumes:"), "{out}");
    assert_eq!(ok(&["volume", "ls", "-q"]).trim(), "");
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
