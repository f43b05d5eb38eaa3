//! End to end: `berth daemon` on a temporary socket, data root and exec root, driven by the
//! `berth` client. Each test starts its own daemon; the guard removes its containers and
//! stops it (by pid) even when the test fails.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// A running `berth daemon` and the paths it owns.
struct Daemon {
    dir: tempfile::TempDir,
    /// Kept short: the engine puts unix sockets under it (108-byte limit).
    _exec: tempfile::TempDir,
    host: String,
    child: Child,
}

impl Daemon {
    /// Starts a daemon with `args` added; `etc_root` points its account files at a copy.
    fn start(args: &[&str], etc_root: Option<&Path>) -> Daemon {
        berth_testkit::require_root();
        let dir = berth_testkit::tempdir("berth-e2e");
        let p = dir.path();
        fs::write(p.join("daemon.json"), "{}").unwrap();
        let exec = tempfile::Builder::new()
            .prefix("b")
            .tempdir_in("/tmp")
            .unwrap();
        let sock = p.join("berth.sock");
        let mut cmd = Command::new(BERTH);
        cmd.arg("daemon")
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .arg("--data-root")
            .arg(p.join("data"))
            .arg("--exec-root")
            .arg(exec.path())
            .arg("--pidfile")
            .arg(p.join("berth.pid"))
            .arg("--config-file")
            .arg(p.join("daemon.json"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(fs::File::create(p.join("daemon.log")).unwrap());
        match etc_root {
            Some(r) => cmd.env("BERTH_ETC_ROOT", r),
            None => cmd.env_remove("BERTH_ETC_ROOT"),
        };
        let child = cmd.spawn().expect("start berth daemon");
        let d = Daemon {
            host: format!("unix://{}", sock.display()),
            dir,
            _exec: exec,
            child,
        };
        // Generous: only to avoid hanging forever on a daemon that never comes up.
        let deadline = Instant::now() + Duration::from_secs(60);
        while UnixStream::connect(&sock).is_err() {
            assert!(
                Instant::now() < deadline,
                "daemon did not come up: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Runs `berth ARGS` against this daemon.
    fn berth(&self, args: &[&str]) -> Output {
        self.berth_in(args, None)
    }

    /// `berth ARGS` with `stdin` piped in (then closed). A generous deadline only keeps a
    /// broken build from hanging the suite; it is not a speed check.
    fn berth_in(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(BERTH)
            .arg("-H")
            .arg(&self.host)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait_with_output()));
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(out) => out.unwrap(),
            Err(_) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                panic!("berth {args:?} did not finish; daemon log:\n{}", self.log());
            }
        }
    }

    /// `berth ARGS` that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.berth(args);
        assert!(
            o.status.success(),
            "berth {args:?} failed ({}): {}\ndaemon log:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn import_busybox(&self, name: &str) {
        let tar = berth_testkit::busybox_tar();
        let out = self.ok(&["import", tar.to_str().unwrap(), name]);
        assert!(out.starts_with("sha256:"), "{out}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Containers run under monitors that outlive the daemon by design: remove them first.
        if let Ok(o) = Command::new(BERTH)
            .args(["-H", &self.host, "ps", "-aq", "--no-trunc"])
            .output()
        {
            for id in String::from_utf8_lossy(&o.stdout).lines() {
                let _ = Command::new(BERTH)
                    .args(["-H", &self.host, "rm", "-f", id])
                    .output();
            }
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn run_exit_codes_stdin_logs_inspect_and_rm() {
    let d = Daemon::start(&[], None);
    d.import_busybox("busybox");

    let o = d.berth(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");

    let o = d.berth_in(
        &["run", "-i", "--rm", "busybox", "cat"],
        Some(b"hi through stdin\n"),
    );
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "hi through stdin\n");

    d.ok(&[
        "run",
        "--name",
        "named",
        "-e",
        "GREETING=hello",
        "busybox",
        "sh",
        "-c",
        "echo $GREETING",
    ]);
    assert_eq!(d.ok(&["logs", "named"]), "hello\n");
    assert_eq!(
        d.ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}} {{.Name}}",
            "named"
        ]),
        "exited 0 /named\n"
    );
    assert_eq!(
        d.ok(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]),
        "named exited\n",
        "--rm containers are gone"
    );
    let o = d.berth(&["run", "--name", "named", "busybox", "true"]);
    assert_eq!(
        o.status.code(),
        Some(125),
        "a name conflict is a daemon error"
    );
    assert_eq!(d.ok(&["rm", "named"]), "named\n");
    assert_eq!(d.ok(&["ps", "-aq"]), "");

    let o = d.berth(&["run", "--rm", "no-such-image"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("Unable to find image 'no-such-image:latest' locally"));
}

#[test]
fn detached_containers_stop_wait_and_rm() {
    let d = Daemon::start(&[], None);
    d.import_busybox("busybox");
    let id = d.ok(&["run", "-d", "--name", "sleeper", "busybox", "sleep", "1000"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    assert_eq!(
        d.ok(&["ps", "--format", "{{.Names}}\t{{.State}}"]),
        "sleeper\trunning\n"
    );
    assert_eq!(d.ok(&["kill", "sleeper"]), "sleeper\n");
    assert_eq!(d.ok(&["wait", "sleeper"]), "137\n");
    assert_eq!(d.ok(&["rm", "-f", "sleeper"]), "sleeper\n");
}

#[test]
fn create_start_attach_logs_tail_and_restart() {
    let d = Daemon::start(&[], None);
    d.import_busybox("busybox");
    let id = d.ok(&[
        "create",
        "--name",
        "job",
        "busybox",
        "sh",
        "-c",
        "echo one; echo two; echo three; echo four >&2; exit 4",
    ]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let o = d.berth(&["start", "-a", "job"]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(stdout(&o), "one\ntwo\nthree\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "four\n");
    // The order of stdout and stderr lines in the log is not defined: look at stdout only.
    let o = d.berth(&["logs", "--tail", "all", "job"]);
    assert_eq!(stdout(&o), "one\ntwo\nthree\n");
    let tail = stdout(&d.berth(&["logs", "--tail", "2", "job"]));
    assert!(tail == "two\nthree\n" || tail == "three\n", "{tail}");
    let o = d.berth(&["logs", "-t", "--since", "1h", "job"]);
    assert!(
        stdout(&o)
            .lines()
            .all(|l| l.len() > 30 && l.contains('T') && l.ends_with(['e', 'o', 'r'])),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        d.ok(&["logs", "--since", "2100-01-01T00:00:00Z", "job"]),
        ""
    );

    // stdin through start -a -i: StdinOnce closes the container's stdin at our end of input.
    d.ok(&["create", "-i", "--name", "echoer", "busybox", "cat"]);
    let o = d.berth_in(&["start", "-a", "-i", "echoer"], Some(b"typed line\n"));
    assert_eq!(
        stdout(&o),
        "typed line\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0));

    // Attach to a running container that waits for a line: berth's exit code is its.
    d.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "reader",
        "busybox",
        "sh",
        "-c",
        "read line; echo got $line; exit 2",
    ]);
    let o = d.berth_in(&["attach", "reader"], Some(b"hello\n"));
    assert_eq!(
        stdout(&o),
        "got hello\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(2));

    assert_eq!(d.ok(&["restart", "-t", "0", "job"]), "job\n");
    assert_eq!(d.ok(&["wait", "job"]), "4\n");
}

#[test]
fn images_tag_save_load_rmi() {
    let d = Daemon::start(&[], None);
    d.import_busybox("busybox");
    d.ok(&["tag", "busybox", "alpine:3"]);
    let list = d.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut names: Vec<&str> = list.lines().collect();
    names.sort();
    assert_eq!(names, ["alpine:3", "busybox:latest"]);
    let archive = d.dir.path().join("saved.tar");
    d.ok(&["save", "-o", archive.to_str().unwrap(), "alpine:3"]);
    assert!(fs::metadata(&archive).unwrap().len() > 0);
    assert_eq!(d.ok(&["rmi", "alpine:3"]), "Untagged: alpine:3\n");
    assert!(d
        .ok(&["load", "-i", archive.to_str().unwrap()])
        .contains("alpine:3"));
    assert!(d.ok(&["images", "-q"]).lines().count() >= 1);
    let o = d.berth(&["rmi", "nope"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn run_it_gets_a_terminal_of_the_callers_size() {
    let d = Daemon::start(&[], None);
    d.import_busybox("busybox");
    // `script` (util-linux) gives berth a pseudo-terminal as its stdin and stdout.
    let inner = format!(
        "stty cols 100 rows 30; {BERTH} -H {} run -it --rm busybox sh -c 'tty; stty size; exit 5'",
        d.host
    );
    let o = Command::new("script")
        .args(["-qfec", &inner, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script(1) from bsdutils");
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(5), "{out}");
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("30 100"), "{out}");
}

/// The scenario: with `--userns-remap=default` (on copies of the account files, where alice
/// already holds 100000-165535), host files bind-mounted in show as nobody and container
/// root cannot delete them.
#[test]
fn remap_default_hides_host_owners_and_protects_host_files() {
    let etc = berth_testkit::tempdir("berth-e2e-etc");
    fs::create_dir(etc.path().join("etc")).unwrap();
    fs::write(
        etc.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        etc.path().join("etc/group"),
        "root:x:0:\nadm:x:4:\nalice:x:1000:\n",
    )
    .unwrap();
    fs::write(etc.path().join("etc/subuid"), "alice:100000:65536\n").unwrap();
    fs::write(etc.path().join("etc/subgid"), "alice:100000:65536\n").unwrap();
    let d = Daemon::start(&["--userns-remap", "default"], Some(etc.path()));
    d.import_busybox("alpine");
    assert!(d.ok(&["info"]).contains("  userns\n"));

    let logs: PathBuf = d.dir.path().join("log");
    fs::create_dir(&logs).unwrap();
    fs::set_permissions(&logs, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(logs.join("syslog"), "host data\n").unwrap();
    nix::unistd::chown(&logs.join("syslog"), Some(0.into()), Some(4.into())).unwrap();

    let bind = format!("{}:/var/log", logs.display());
    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "alpine",
        "sh",
        "-c",
        "ls -ln /var/log; cat /proc/self/uid_map; rm -f /var/log/syslog && echo REMOVED; true",
    ]);
    assert!(out.contains(" 65534    65534 "), "{out}");
    assert!(out.contains("0     165536      65536"), "{out}");
    assert!(!out.contains("REMOVED"), "{out}");
    assert_eq!(
        fs::read_to_string(logs.join("syslog")).unwrap(),
        "host data\n"
    );

    // `berth userns show` agrees with what the container got.
    let show = Command::new(BERTH)
        .args(["userns", "show", "--userns-remap", "default"])
        .env("BERTH_ETC_ROOT", etc.path())
        .output()
        .unwrap();
    assert!(
        stdout(&show).contains("uid_map:      0 165536 65536"),
        "{}",
        stdout(&show)
    );
}
