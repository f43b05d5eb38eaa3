//! End to end with a real registry: Debian's docker-registry 2.8 on 127.0.0.1, a berth
//! daemon on a temporary socket and roots, and the real docker CLI and `berth` as clients:
//! push, pull, run an image pulled on demand, login and logout.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_testkit::registry::{TestRegistry, PASSWORD, USER};

const DOCKER: &str = "/usr/local/bin/docker";

/// A `berth daemon` on its own socket and roots, killed by pid on drop.
struct Daemon {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        berth_testkit::require_root();
        let tmp = berth_testkit::tempdir("berth-e2e-registry-");
        let dir = tmp.path().to_path_buf();
        let sock = dir.join("docker.sock");
        std::fs::write(dir.join("daemon.json"), "{}").unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("daemon")
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
            .spawn()
            .expect("start berth daemon");
        let mut d = Daemon {
            child,
            dir,
            sock,
            _tmp: tmp,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while UnixStream::connect(&d.sock).is_err() {
            if let Some(s) = d.child.try_wait().unwrap() {
                panic!("berth daemon exited ({s}):\n{}", d.log());
            }
            assert!(Instant::now() < deadline, "no daemon socket:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    fn run(&self, exe: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.arg("120")
            .arg(exe)
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()));
        cmd.args(args)
            .env_remove("DOCKER_HOST")
            .env_remove("BERTH_HOST")
            .env("DOCKER_CONFIG", self.dir.join("docker-config"))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run client");
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    fn ok(&self, exe: &str, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(exe, args, stdin);
        assert!(
            out.status.success(),
            "{exe} {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn docker(&self, args: &[&str]) -> String {
        self.ok(DOCKER, args, None)
    }

    fn berth(&self, args: &[&str]) -> String {
        self.ok(env!("CARGO_BIN_EXE_berth"), args, None)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn docker_push_pull_and_run_through_berth() {
    let reg = TestRegistry::start(false);
    let d = Daemon::start();
    let tar = berth_testkit::busybox_tar();
    d.docker(&["import", tar.to_str().unwrap(), "busybox"]);
    let image = format!("{}/busybox:latest", reg.addr);
    d.docker(&["tag", "busybox", &image]);
    let out = d.docker(&["push", &image]);
    assert!(out.contains("latest: digest: sha256:"), "{out}");
    let id = d.docker(&["inspect", "--format", "{{.Id}}", "busybox"]);

    // Gone locally, pulled back by docker, run.
    d.docker(&["rmi", &image]);
    d.docker(&["rmi", "busybox"]);
    let out = d.docker(&["pull", &image]);
    assert!(out.contains("Pull complete"), "{out}");
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    assert_eq!(d.docker(&["inspect", "--format", "{{.Id}}", &image]), id);
    let out = d.docker(&["run", "--rm", &image, "echo", "pulled"]);
    assert_eq!(out.trim(), "pulled");
    let out = d.docker(&["pull", &image]);
    assert!(out.contains("Image is up to date"), "{out}");

    // `docker run` of an image that is only in the registry pulls it first.
    let other = format!("{}/other/busybox:v2", reg.addr);
    d.docker(&["tag", &image, &other]);
    d.docker(&["push", &other]);
    d.docker(&["rmi", &other]);
    let out = d.docker(&["run", "--rm", &other, "echo", "on demand"]);
    assert_eq!(out.trim(), "on demand");

    // Every tag of a repository.
    let out = d.berth(&["pull", "--all-tags", &format!("{}/other/busybox", reg.addr)]);
    assert!(out.contains("Status: Image is up to date for"), "{out}");

    // berth's own client, by digest.
    let digest = d.docker(&["inspect", "--format", "{{index .RepoDigests 0}}", &image]);
    d.docker(&["rmi", "-f", &image, &other]);
    let out = d.berth(&["pull", digest.trim()]);
    assert!(out.contains("sha256:"), "{out}");
    // `berth run` pulls a missing image too; the progress goes to stderr, not the output.
    let out = d.berth(&["run", "--rm", &other, "echo", "berth pulled"]);
    assert_eq!(out.trim(), "berth pulled");
    let missing = d.run(
        DOCKER,
        &["pull", &format!("{}/no/such:thing", reg.addr)],
        None,
    );
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn login_push_pull_logout_with_basic_auth() {
    let reg = TestRegistry::start(true);
    let d = Daemon::start();
    let tar = berth_testkit::busybox_tar();
    d.docker(&["import", tar.to_str().unwrap(), "busybox"]);
    let image = format!("{}/private/busybox:latest", reg.addr);
    d.docker(&["tag", "busybox", &image]);

    let out = d.run(DOCKER, &["push", &image], None);
    assert!(!out.status.success(), "an anonymous push is refused");

    let bad = d.run(
        env!("CARGO_BIN_EXE_berth"),
        &["login", "-u", USER, "--password-stdin", &reg.addr],
        Some("wrong"),
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("wrong user name or password"), "{err}");
    assert!(!err.contains("wrong\n") && !err.contains(PASSWORD), "{err}");

    let out = d.ok(
        env!("CARGO_BIN_EXE_berth"),
        &["login", "-u", USER, "--password-stdin", &reg.addr],
        Some(PASSWORD),
    );
    assert!(out.contains("Login Succeeded"), "{out}");
    let cfg = std::fs::read_to_string(d.dir.join("docker-config/config.json")).unwrap();
    assert!(cfg.contains(&reg.addr) && !cfg.contains(PASSWORD), "{cfg}");

    // The docker CLI reads the same config.json and sends X-Registry-Auth.
    d.docker(&["push", &image]);
    d.docker(&["rmi", &image]);
    d.berth(&["pull", &image]);
    let out = d.docker(&["run", "--rm", &image, "echo", "private"]);
    assert_eq!(out.trim(), "private");

    let out = d.berth(&["logout", &reg.addr]);
    assert!(out.contains("Removing login credentials"), "{out}");
    // Removing the pulled tag takes its `name@sha256:` too (as dockerd); `busybox` keeps it.
    d.docker(&["rmi", &image]);
    let digests = d.docker(&["inspect", "--format", "{{.RepoDigests}}", "busybox"]);
    assert_eq!(digests.trim(), "[]");
    // (Not `docker pull`: on a 401 the docker CLI prompts for a login, as with dockerd.)
    let out = d.run(env!("CARGO_BIN_EXE_berth"), &["pull", &image], None);
    assert!(!out.status.success(), "logged out: pull refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("berth login"), "{err}");
}
