//! End to end through the real docker CLI (/usr/local/bin/docker) against `berth daemon`:
//! top (with the container's and the host's uid), stats, rename, pause/unpause (the
//! freezer) and update (live limits). The daemon helper is e2e_docker.rs's; the remapped
//! daemon reads account files from a temporary root (BERTH_ETC_ROOT), never the real /etc.

use std::io::{Read, Write};
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
        let tmp = berth_testkit::tempdir("berth-e2e-");
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

    /// A raw HTTP/1.1 request on the socket; returns (status, body).
    fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
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

/// A scratch directory shaped like /var/log: files owned by root:root, root:adm, 104:adm.
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

/// The value of `file` in the container's cgroup for controller `ctrl` (v1) or, on the
/// cgroup2 line, `file2` — whichever layout the host has. Found through /proc/PID/cgroup.
fn cgroup_file(pid: &str, ctrl: &str, file: &str, file2: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        if ctrls.split(',').any(|c| c == ctrl) {
            let p = format!("/sys/fs/cgroup/{ctrl}{path}/{file}");
            return std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
    }
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup2 line");
    let p = format!("/sys/fs/cgroup{path}/{file2}");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn proc_state(pid: &str) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.chars().next().unwrap()
}

#[test]
fn top_under_remap_shows_container_and_host_uids() {
    let tmp = berth_testkit::tempdir("berth-e2e-etc-");
    let etc = fake_etc(tmp.path());
    let d = Daemon::start(Some("remap"), Some(&etc));
    d.import_busybox();
    d.ok(&["run", "-d", "--name", "box", "busybox", "sleep", "1000"]);
    let out = d.ok(&["top", "box"]);
    let mut lines = out.lines();
    let titles: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        titles,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD", "HOST-UID"],
        "{out}"
    );
    let row = lines
        .find(|l| l.contains("sleep 1000"))
        .unwrap_or_else(|| panic!("no sleep in\n{out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[0], "root", "{out}");
    assert_eq!(*cols.last().unwrap(), "100000", "{out}");
    let pid = d.ok(&["inspect", "-f", "{{.State.Pid}}", "box"]);
    assert_eq!(cols[1], pid.trim(), "PID is the host's: {out}");
    // ps_args berth cannot honour are refused with a reason.
    let o = d.docker(&["top", "box", "aux"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("ps_args"), "{}", stderr(&o));
    d.ok(&["rm", "-f", "box"]);
    let o = d.docker(&["top", "box"]);
    assert!(!o.status.success());
}

#[test]
fn stats_rename_pause_and_update() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    d.ok(&[
        "run", "-d", "--name", "s1", "-m", "128m", "busybox", "sleep", "1000",
    ]);
    let pid = d
        .ok(&["inspect", "-f", "{{.State.Pid}}", "s1"])
        .trim()
        .to_string();

    // stats: the CLI's table, and the API's JSON.
    let out = d.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}}|{{.MemUsage}}|{{.PIDs}}|{{.CPUPerc}}",
        "s1",
    ]);
    let cols: Vec<&str> = out.trim().split('|').collect();
    assert_eq!(cols[0], "s1", "{out}");
    assert!(!cols[1].starts_with("0B"), "memory usage > 0: {out}");
    assert!(cols[1].ends_with("128MiB"), "the limit: {out}");
    assert!(cols[2].parse::<u32>().unwrap() >= 1, "{out}");
    assert!(cols[3].ends_with('%'), "{out}");
    let (status, body) = d.http("GET", "/v1.47/containers/s1/stats?stream=false", "");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["memory_stats"]["usage"].as_u64().unwrap() > 0, "{body}");
    assert_eq!(v["memory_stats"]["limit"], 128u64 << 20, "{body}");
    assert!(v["pids_stats"]["current"].as_u64().unwrap() >= 1, "{body}");
    assert!(
        v["precpu_stats"]["system_cpu_usage"].as_u64().unwrap() > 0,
        "{body}"
    );
    assert_eq!(v["name"], "/s1");

    // The stream: a reading a second, the second with the first as its `pre`.
    let mut sock = UnixStream::connect(&d.sock).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        sock,
        "GET /v1.47/containers/s1/stats HTTP/1.1\r\nHost: docker\r\n\r\n"
    )
    .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 8192];
    while seen.matches("\"read\":").count() < 2 {
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert_eq!(
        seen.matches("\"preread\":\"0001-01-01T00:00:00Z\"").count(),
        1,
        "{seen}"
    );
    drop(sock);

    // rename: the new name finds it, the old one does not; a taken name is a conflict.
    d.ok(&["rename", "s1", "s2"]);
    assert_eq!(d.ok(&["inspect", "-f", "{{.Name}}", "s2"]).trim(), "/s2");
    assert!(!d.docker(&["inspect", "s1"]).status.success());
    d.ok(&["create", "--name", "other", "busybox", "true"]);
    let o = d.docker(&["rename", "s2", "other"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already in use"), "{}", stderr(&o));
    let o = d.docker(&["rename", "s2", "bad/name"]);
    assert!(
        stderr(&o).contains("Invalid container name"),
        "{}",
        stderr(&o)
    );

    // pause: the process is frozen by the freezer; unpause resumes it.
    d.ok(&["pause", "s2"]);
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.Status}} {{.State.Paused}}", "s2"])
            .trim(),
        "paused true"
    );
    assert!(d.ok(&["ps", "--filter", "name=s2"]).contains("(Paused)"));
    let frozen = cgroup_file(&pid, "freezer", "freezer.state", "cgroup.events");
    assert!(
        frozen.trim() == "FROZEN" || frozen.lines().any(|l| l == "frozen 1"),
        "{frozen}"
    );
    if frozen.trim() == "FROZEN" {
        // The v1 freezer parks its tasks in uninterruptible sleep.
        assert_eq!(proc_state(&pid), 'D');
    }
    assert!(
        !d.docker(&["pause", "s2"]).status.success(),
        "already paused"
    );
    d.ok(&["unpause", "s2"]);
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.Status}} {{.State.Paused}}", "s2"])
            .trim(),
        "running false"
    );
    let thawed = cgroup_file(&pid, "freezer", "freezer.state", "cgroup.events");
    assert!(
        thawed.trim() == "THAWED" || thawed.lines().any(|l| l == "frozen 0"),
        "{thawed}"
    );
    assert_eq!(proc_state(&pid), 'S');

    // update: a lower memory limit reaches the live cgroup and the HostConfig.
    d.ok(&["update", "-m", "64m", "--pids-limit", "50", "s2"]);
    let limit = cgroup_file(&pid, "memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    let pids = cgroup_file(&pid, "pids", "pids.max", "pids.max");
    assert_eq!(pids.trim(), "50");
    assert_eq!(
        d.ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}",
            "s2"
        ])
        .trim(),
        format!("{} 50", 64u64 << 20)
    );
    // A paused container can be stopped (SIGKILL, then thawed so that it dies), and
    // removed.
    d.ok(&["pause", "s2"]);
    d.ok(&["stop", "s2"]);
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.Status}}", "s2"]).trim(),
        "exited"
    );
    d.ok(&["start", "s2"]);
    d.ok(&["pause", "s2"]);
    d.ok(&["rm", "-f", "s2", "other"]);
}

#[test]
fn berth_client_top_stats_rename_pause_update() {
    let tmp = berth_testkit::tempdir("berth-e2e-etc-");
    let etc = fake_etc(tmp.path());
    let d = Daemon::start(Some("remap"), Some(&etc));
    d.import_busybox();
    let ok = |args: &[&str]| -> String {
        let o = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("-H")
            .arg(format!("unix://{}", d.sock.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "berth {args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(&["run", "-d", "--name", "c1", "busybox", "sleep", "1000"]);
    let top = ok(&["top", "c1"]);
    assert!(top.starts_with("UID"), "{top}");
    let row = top.lines().find(|l| l.contains("sleep 1000")).unwrap();
    assert!(
        row.starts_with("root ") && row.ends_with(" 100000"),
        "{top}"
    );

    let stats = ok(&["stats", "--no-stream", "c1"]);
    let line = stats.lines().nth(1).unwrap_or_else(|| panic!("{stats}"));
    assert!(line.contains(" c1 "), "{stats}");
    assert!(!line.contains(" 0B / "), "memory usage > 0: {stats}");

    ok(&["rename", "c1", "c2"]);
    assert_eq!(ok(&["inspect", "-f", "{{.Name}}", "c2"]).trim(), "/c2");
    ok(&["pause", "c2"]);
    assert_eq!(
        ok(&["inspect", "-f", "{{.State.Status}}", "c2"]).trim(),
        "paused"
    );
    ok(&["unpause", "c2"]);
    assert_eq!(
        ok(&["inspect", "-f", "{{.State.Status}}", "c2"]).trim(),
        "running"
    );
    ok(&["update", "--memory", "32m", "c2"]);
    let pid = ok(&["inspect", "-f", "{{.State.Pid}}", "c2"]);
    let limit = cgroup_file(pid.trim(), "memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(limit.trim(), (32u64 << 20).to_string());
    ok(&["rm", "-f", "c2"]);
}
