//! The harness every end-to-end test file shares: a `berth daemon` on its own temporary
//! socket, data root and exec root, driven through the real docker CLI
//! (/usr/local/bin/docker) or the `berth` client, and cleaned up by pid on drop. Remapped daemons read account
//! files from a temporary root (BERTH_ETC_ROOT), never the real /etc.
//!
//! Each test file is its own crate and uses part of this: hence `dead_code` is allowed.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const DOCKER: &str = "/usr/local/bin/docker";
pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// Generous: only there so that a hang fails instead of blocking CI forever.
pub const TIMEOUT: &str = "120";

/// A `berth daemon` on its own socket and roots; killed by pid and cleaned up on drop.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub etc_root: Option<PathBuf>,
    pub remap: Option<String>,
    pub _tmp: Option<tempfile::TempDir>,
    /// The fake etc root of [`Daemon::remapped`], kept as long as the daemon.
    pub _tmp_etc: Option<tempfile::TempDir>,
    /// The daemon.json each (re)start reads.
    pub config: String,
}

impl Daemon {
    pub fn start(remap: Option<&str>, etc_root: Option<&Path>) -> Daemon {
        berth_testkit::require_root();
        let tmp = berth_testkit::tempdir("berth-e2e-");
        let dir = tmp.path().to_path_buf();
        let mut d = Daemon {
            child: None,
            sock: dir.join("docker.sock"),
            dir,
            etc_root: etc_root.map(Path::to_path_buf),
            remap: remap.map(String::from),
            _tmp: Some(tmp),
            _tmp_etc: None,
            config: "{}".into(),
        };
        d.spawn();
        d
    }

    /// A daemon remapping to 100000:65536 through a fake etc root (user `remap`).
    pub fn remapped() -> Daemon {
        let etc_tmp = berth_testkit::tempdir("berth-e2e-etc-");
        let etc = fake_etc(etc_tmp.path());
        let mut d = Daemon::start(Some("remap"), Some(&etc));
        d._tmp_etc = Some(etc_tmp);
        d
    }

    pub fn spawn(&mut self) {
        let mut cmd = Command::new(BERTH);
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
            .arg(self.write_config())
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
    pub fn write_config(&self) -> PathBuf {
        let p = self.dir.join("daemon.json");
        std::fs::write(&p, &self.config).unwrap();
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// SIGTERM, then wait; SIGKILL if it does not stop.
    pub fn stop(&mut self) {
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

    /// Removes every container through the daemon and waits (bounded) for their monitors to
    /// finish, so that the real cleanup runs (root, runtime state, cgroups) before the test
    /// kills what is left.
    pub fn remove_all_containers(&self) {
        let Some(daemon) = self.child.as_ref().map(Child::id) else {
            return;
        };
        let out = self.docker(&["ps", "-aq"]);
        let ids = String::from_utf8_lossy(&out.stdout).into_owned();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = self.docker(&args);
        }
        let exec = self.dir.join("exec");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline
            && pids_mentioning(&exec).iter().any(|&p| p != daemon as i32)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the daemon with SIGTERM (it must exit cleanly) and starts it again on the same
    /// roots.
    pub fn restart(&mut self) {
        let mut child = self.child.take().expect("daemon running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "daemon exit on SIGTERM: {status}\n{}",
            self.log()
        );
        assert!(!self.sock.exists(), "the daemon removes its socket");
        self.spawn();
    }

    /// `docker ARGS` against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_stdin(args, None)
    }

    pub fn docker_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        self.client(DOCKER, args, stdin)
    }

    /// `berth ARGS` (the client) against this daemon.
    pub fn berth(&self, args: &[&str]) -> Output {
        self.berth_stdin(args, None)
    }

    pub fn berth_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        self.client(BERTH, args, stdin)
    }

    /// `unix://SOCKET`, for `-H`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    /// Runs client `exe` (docker or berth) with `-H` this daemon, its own client config
    /// directory, and `stdin` piped in (then closed). `timeout` only keeps a broken build
    /// from hanging the suite; it is not a speed check.
    pub fn client(&self, exe: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.arg(TIMEOUT)
            .arg(exe)
            .arg("-H")
            .arg(self.host())
            .args(args);
        cmd.env_remove("DOCKER_HOST")
            .env_remove("BERTH_HOST")
            .env("DOCKER_CONFIG", self.dir.join("docker-config"));
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run the client");
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs docker and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.succeeded(&format!("docker {args:?}"), self.docker(args))
    }

    /// Runs berth and insists on success; returns stdout.
    pub fn berth_ok(&self, args: &[&str]) -> String {
        self.succeeded(&format!("berth {args:?}"), self.berth(args))
    }

    /// Insists that `what` (a client run) succeeded; returns its stdout.
    pub fn succeeded(&self, what: &str, out: Output) -> String {
        assert!(
            out.status.success(),
            "{what} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn import_busybox(&self) {
        self.import_busybox_as("busybox", &[]);
        self.ok(&["tag", "busybox", "alpine"]);
    }

    /// `docker import` of the busybox fixture as `name`, with `flags` (`-c CHANGE`,
    /// `-m MESSAGE`) before the tarball; returns the client's output (the image id).
    pub fn import_busybox_as(&self, name: &str, flags: &[&str]) -> String {
        let tar = berth_testkit::busybox_tar();
        let mut args = vec!["import"];
        args.extend(flags);
        args.extend([tar.to_str().unwrap(), name]);
        self.ok(&args)
    }

    /// The value of Go template `format` in `docker inspect NAME`, trimmed.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "-f", format, name]).trim().to_string()
    }

    /// The full id of container `name`.
    pub fn id(&self, name: &str) -> String {
        self.inspect(name, "{{.Id}}")
    }

    /// `docker events --since SINCE --until UNTIL --filter F... --format FORMAT`: the events
    /// the daemon buffered in that time.
    pub fn events(&self, since: &str, until: &str, filters: &[&str], format: &str) -> String {
        let mut args = vec!["events", "--since", since, "--until", until];
        for f in filters {
            args.extend(["--filter", f]);
        }
        args.extend(["--format", format]);
        self.ok(&args)
    }

    /// `sh -c CMD` under script(1), so that the clients it runs have a terminal; with this
    /// daemon's client config and no stdin (set another before spawning if needed).
    /// `timeout` only keeps a hang from blocking the suite.
    pub fn in_terminal(&self, cmd: &str) -> Command {
        let mut c = Command::new("timeout");
        c.args([TIMEOUT, "script", "-qec", cmd, "/dev/null"])
            .env_remove("DOCKER_HOST")
            .env_remove("BERTH_HOST")
            .env("DOCKER_CONFIG", self.dir.join("docker-config"))
            .stdin(Stdio::null());
        c
    }

    /// The host path of `path` in container `name`'s read-write layer.
    pub fn upper(&self, name: &str, path: &str) -> PathBuf {
        self.dir
            .join("data/containers")
            .join(self.id(name))
            .join("upper")
            .join(path.trim_start_matches('/'))
    }

    /// A raw HTTP/1.1 request on the socket; returns (status, body).
    pub fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let status = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.remove_all_containers();
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

pub fn pids_mentioning(path: &Path) -> Vec<i32> {
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

pub fn unmount_under(dir: &Path) {
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

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Insists that client run `o` failed and that its stderr says `want`.
pub fn assert_fails(o: &Output, want: &str) {
    assert!(!o.status.success(), "succeeded: {}", stdout(o));
    assert!(stderr(o).contains(want), "{want:?} not in: {}", stderr(o));
}

/// The capability bounding set of this (the test's) process, as /proc shows it (hex):
/// every capability a privileged container can have on this host.
pub fn host_capabilities() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_string()
}

/// Unix time with nanoseconds, for `events --since/--until`.
pub fn now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Account files for a remap user `remap` with 100000:65536, under a temporary root.
pub fn fake_etc(parent: &Path) -> PathBuf {
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

/// The owner of `p` on the host (not following a last symlink).
pub fn host_owner(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid())
}
