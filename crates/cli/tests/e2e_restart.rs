//! End to end through the real docker CLI: restart policies (on-failure:N, always,
//! unless-stopped, stop cancels, the daemon's start brings containers back) and live
//! restore (the daemon killed with SIGKILL while containers run, then everything works and
//! nothing of berth is left after `rm -f`).

use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::*;

/// Polls `f` until it gives `Some`; the deadline is generous and only keeps a failure
/// from hanging forever.
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state(d: &Daemon, name: &str) -> String {
    d.inspect(
        name,
        "{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}",
    )
}

#[test]
fn policies_on_failure_always_unless_stopped_and_daemon_start() {
    let mut d = Daemon::start(None, None);
    d.import_busybox();

    // on-failure:2: two restarts, then it stays exited with its code.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "fail",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "exit 3",
    ]);
    poll("on-failure:2 to give up", || {
        (state(&d, "fail") == "exited 2 3").then_some(())
    });

    // always: restarts after each exit, until `docker stop`.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "loop",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "echo run; sleep 0.2",
    ]);
    poll("always to restart twice", || {
        let s = state(&d, "loop");
        let count: u32 = s.split(' ').nth(1)?.parse().ok()?;
        (count >= 2).then_some(())
    });
    d.ok(&["stop", "loop"]);
    let stopped = state(&d, "loop");
    assert!(stopped.starts_with("exited "), "{stopped}");
    // A restart would have come after at most a few seconds of backoff.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(state(&d, "loop"), stopped, "a stopped container restarted");
    let logs = d.ok(&["logs", "loop"]);
    assert!(logs.lines().count() >= 2, "{logs:?} {stopped}");

    // `--rm` with a restart policy is refused (the docker CLI refuses it itself, so ask
    // the API directly).
    let (code, body) = d.http(
        "POST",
        "/containers/create",
        r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"AutoRemove":true,"RestartPolicy":{"Name":"always"}}}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("AutoRemove"), "{body}");
    let o = d.docker(&["create", "--restart", "sometimes", "busybox", "true"]);
    assert!(!o.status.success());

    // The daemon's start: `always` comes back even after a stop, `unless-stopped` does
    // not, and one that was never stopped keeps running.
    for (name, policy) in [
        ("al", "always"),
        ("us", "unless-stopped"),
        ("up", "unless-stopped"),
    ] {
        d.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            policy,
            "busybox",
            "sleep",
            "1000",
        ]);
    }
    d.ok(&["stop", "-t", "1", "al", "us"]);
    d.restart();
    poll("the always container to come back", || {
        state(&d, "al").starts_with("running ").then_some(())
    });
    assert!(
        state(&d, "us").starts_with("exited "),
        "{}",
        state(&d, "us")
    );
    assert!(
        state(&d, "up").starts_with("running "),
        "{}",
        state(&d, "up")
    );
    assert_eq!(state(&d, "fail"), "exited 2 3");
    d.ok(&["rm", "-f", "al", "up"]);
}

#[test]
fn live_restore_after_the_daemon_is_killed() {
    let mut d = Daemon::start(None, None);
    d.import_busybox();
    let out = d.dir.join("out");
    std::fs::create_dir(&out).unwrap();
    let vol = format!("{}:/out", out.display());
    d.ok(&["run", "-d", "-t", "--name", "tty", "busybox", "sh"]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "logger",
        "-v",
        &vol,
        "busybox",
        "sh",
        "-c",
        "i=0; while true; do echo line $i; echo $i >> /out/n; i=$((i+1)); sleep 1; done",
    ]);
    let ids = [d.id("tty"), d.id("logger")];
    let written = || {
        std::fs::read_to_string(out.join("n"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    poll("the logger to write", || (written() >= 1).then_some(()));

    // SIGKILL the daemon; lines keep coming while it is away.
    let mut daemon = d.child.take().unwrap();
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let before = written();
    poll("lines written while the daemon is down", || {
        (written() >= before + 2).then_some(())
    });
    let during = format!("line {}\n", before);
    d.spawn();

    assert!(d.ok(&["logs", "logger"]).contains(&during));
    assert_eq!(d.ok(&["exec", "tty", "echo", "hi"]), "hi\n");
    assert_eq!(d.ok(&["exec", "logger", "cat", "/proc/1/comm"]), "sh\n");
    let ps = d.ok(&["ps", "--format", "{{.Names}}"]);
    assert!(ps.contains("tty") && ps.contains("logger"), "{ps}");

    // sh as the container's init ignores SIGTERM: stop ends in SIGKILL, 137 as Docker.
    d.ok(&["stop", "-t", "1", "logger", "tty"]);
    assert_eq!(state(&d, "logger"), "exited 0 137");
    assert_eq!(state(&d, "tty"), "exited 0 137");
    d.ok(&["start", "logger"]);
    d.ok(&["rm", "-f", "tty", "logger"]);

    // Nothing of berth is left: mounts, monitors, cgroups, exec root files.
    let daemon_pid = d.child.as_ref().unwrap().id() as i32;
    let exec = d.dir.join("exec");
    poll("nothing of the containers to be left", || {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = d.dir.to_string_lossy().into_owned();
        let mounts: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&dir)).collect();
        let monitors: Vec<i32> = pids_mentioning(&exec)
            .into_iter()
            .filter(|p| *p != daemon_pid)
            .collect();
        let mut cgroups = Vec::new();
        for id in &ids {
            let mut dirs = vec![Path::new("/sys/fs/cgroup/berth-runtime").join(id)];
            for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
                dirs.push(h.path().join("berth-runtime").join(id));
            }
            dirs.push(exec.join("containers").join(id));
            dirs.push(exec.join("runtime").join(id));
            cgroups.extend(dirs.into_iter().filter(|p| p.exists()));
        }
        if mounts.is_empty() && monitors.is_empty() && cgroups.is_empty() {
            Some(())
        } else {
            eprintln!("left: {mounts:?} {monitors:?} {cgroups:?}");
            None
        }
    });
}

/// Runs `--restart POLICY [--stop-signal TERM]` container `name` whose init exits 3 on
/// SIGUSR1 (an init only hears the signals it handles).
fn run_usr1_exits(d: &Daemon, name: &str, policy: &str, stop_signal: Option<&str>) {
    let mut args = vec!["run", "-d", "--name", name, "--restart", policy];
    if let Some(s) = stop_signal {
        args.extend(["--stop-signal", s]);
    }
    args.extend([
        "busybox",
        "sh",
        "-c",
        "trap 'exit 3' USR1; while true; do sleep 0.1; done",
    ]);
    d.ok(&args);
}

/// The container restarted `n` times and runs again.
fn wait_running_after(d: &Daemon, name: &str, n: u32) {
    poll(&format!("{name} to run again after {n} restarts"), || {
        let s = state(d, name);
        let mut f = s.split(' ');
        let (status, count) = (f.next()?, f.next()?.parse::<u32>().ok()?);
        (status == "running" && count == n).then_some(())
    });
}

/// The container stays exited with `code` past the first restart delays (100 ms, 200 ms):
/// a restart would have come by then.
fn stays_exited(d: &Daemon, name: &str, code: i32) {
    poll(&format!("{name} to exit"), || {
        state(d, name).starts_with("exited ").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let s = state(d, name);
    assert!(
        s.starts_with("exited ") && s.ends_with(&format!(" {code}")),
        "{name}: {s}"
    );
}

/// moby's rules (daemon/kill.go): any signal from the user marks the container manually
/// stopped; only SIGKILL, its stop signal, or any signal when it has none cancel the
/// restart of the run. The daemon's start forgets the cancellations.
#[test]
fn kill_signals_and_restart_policies() {
    let mut d = Daemon::start(None, None);
    d.import_busybox();

    // A signal other than the stop signal leaves `always` in force.
    run_usr1_exits(&d, "al", "always", Some("TERM"));
    wait_running_after(&d, "al", 0);
    d.ok(&["kill", "-s", "USR1", "al"]);
    wait_running_after(&d, "al", 1);
    // SIGKILL cancels it: Docker's kill returns once the container stopped.
    d.ok(&["kill", "al"]);
    assert!(
        state(&d, "al").starts_with("exited "),
        "{}",
        state(&d, "al")
    );
    stays_exited(&d, "al", 137);
    let o = d.docker(&["kill", "al"]);
    assert_eq!(
        stderr(&o).trim(),
        format!(
            "Error response from daemon: cannot kill container: al: Container {} is not running",
            d.id("al")
        )
    );

    // Without a stop signal every signal cancels.
    run_usr1_exits(&d, "nosig", "always", None);
    wait_running_after(&d, "nosig", 0);
    d.ok(&["kill", "-s", "USR1", "nosig"]);
    stays_exited(&d, "nosig", 3);

    // on-failure restarts after a signal that does not cancel; unless-stopped does not:
    // the signal marked it manually stopped.
    run_usr1_exits(&d, "of", "on-failure", Some("SIGTERM"));
    run_usr1_exits(&d, "us", "unless-stopped", Some("TERM"));
    wait_running_after(&d, "of", 0);
    wait_running_after(&d, "us", 0);
    d.ok(&["kill", "-s", "USR1", "of", "us"]);
    wait_running_after(&d, "of", 1);
    stays_exited(&d, "us", 3);

    // The stop signal itself cancels (TERM is 15; the init handles only USR1, so the
    // kill -s TERM goes unheard and a SIGKILL ends it).
    d.ok(&["kill", "-s", "15", "of"]);
    d.ok(&["kill", "of"]);
    stays_exited(&d, "of", 137);

    // The daemon's start: `always` comes back whatever cancelled it, with its restart
    // count reset; on-failure after a non-zero exit too; unless-stopped stays stopped.
    d.restart();
    for name in ["al", "nosig", "of"] {
        wait_running_after(&d, name, 0);
    }
    assert!(
        state(&d, "us").starts_with("exited "),
        "{}",
        state(&d, "us")
    );
}

/// moby's daemon/delete.go: `rm` refuses a restarting or paused container without `-f`;
/// `rm -f` cancels the pending restart and leaves nothing.
#[test]
fn rm_of_restarting_and_paused_containers() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "flap",
        "--restart",
        "always",
        "busybox",
        "false",
    ]);
    // From the sixth restart on, the delay is 3.2 s or more: a window to catch.
    poll("flap to wait for a long restart delay", || {
        let s = state(&d, "flap");
        let mut f = s.split(' ');
        let (status, count) = (f.next()?, f.next()?.parse::<u32>().ok()?);
        (status == "restarting" && count >= 6).then_some(())
    });
    let o = d.docker(&["rm", "flap"]);
    assert!(!o.status.success());
    assert_eq!(
        stderr(&o).trim(),
        "Error response from daemon: cannot remove container \"/flap\": container is restarting: stop the container before removing or force remove"
    );
    let id = d.id("flap");
    d.ok(&["rm", "-f", "flap"]);
    // Past the pending delay: nothing started it again.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    assert!(!d.dir.join("data/containers").join(&id).exists());
    assert!(!d.dir.join("exec/containers").join(&id).exists());
    let daemon_pid = d.child.as_ref().unwrap().id() as i32;
    let monitors: Vec<i32> = pids_mentioning(&d.dir.join("exec"))
        .into_iter()
        .filter(|p| *p != daemon_pid)
        .collect();
    assert!(monitors.is_empty(), "monitors left: {monitors:?}");

    d.ok(&["run", "-d", "--name", "frozen", "busybox", "sleep", "1000"]);
    d.ok(&["pause", "frozen"]);
    let o = d.docker(&["rm", "frozen"]);
    assert!(!o.status.success());
    assert_eq!(
        stderr(&o).trim(),
        "Error response from daemon: cannot remove container \"/frozen\": container is paused and must be unpaused first"
    );
    let o = d.docker(&["rm", "sleeping-nowhere"]);
    assert!(!o.status.success());
    d.ok(&["rm", "-f", "frozen"]);
    assert_eq!(d.ok(&["ps", "-aq"]), "");
}

/// `docker attach NAME` through a pseudo-terminal (script(1)), the way a user types into
/// it: returns its stdin and what it has printed so far.
struct TtyAttach {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    out: std::sync::Arc<std::sync::Mutex<String>>,
}

impl TtyAttach {
    fn start(d: &Daemon, name: &str) -> TtyAttach {
        use std::io::Read;
        let mut child = d
            .in_terminal(&format!("{DOCKER} -H {} attach {name}", d.host()))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (mut stdout, out2) = (child.stdout.take().unwrap(), out.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out2.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        TtyAttach {
            stdin: child.stdin.take(),
            child,
            out,
        }
    }

    fn type_in(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }
}

/// Live restore and attach: the daemon is killed with SIGKILL while an `-i` and a `-t -i`
/// container run; the restarted daemon finds their monitors again, `docker attach` sends
/// input and shows output, and the exit codes are right.
#[test]
fn attach_after_the_daemon_is_killed() {
    let mut d = Daemon::start(None, None);
    d.import_busybox();
    d.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "reader",
        "busybox",
        "sh",
        "-c",
        "while read l; do echo got $l; [ \"$l\" = quit ] && exit 7; done",
    ]);
    d.ok(&["run", "-d", "-t", "-i", "--name", "tty", "busybox", "sh"]);

    let mut daemon = d.child.take().unwrap();
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    d.spawn();
    assert_eq!(state(&d, "reader"), "running 0 0");
    assert_eq!(state(&d, "tty"), "running 0 0");

    // -i: the input reaches the container, its answers come back, and its exit code is
    // attach's.
    let o = d.docker_stdin(&["attach", "reader"], Some(b"hello\nquit\n"));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "got hello\ngot quit\n",
        "{}",
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert_eq!(state(&d, "reader"), "exited 0 7");

    // -t: a command typed into the attached terminal runs in the container's shell; the
    // detach keys (ctrl-p ctrl-q) leave it running.
    let mut tty = TtyAttach::start(&d, "tty");
    tty.type_in(b"echo hi-$((6*7))\r");
    poll("the command's output through the terminal", || {
        tty.output().contains("hi-42").then_some(())
    });
    tty.type_in(b"\x10\x11");
    let status = tty.child.wait().unwrap();
    assert!(
        tty.output().contains("read escape sequence"),
        "{status}: {:?}",
        tty.output()
    );
    assert_eq!(state(&d, "tty"), "running 0 0");
    // sh as the container's init ignores SIGTERM: stop ends in SIGKILL, 137 as Docker.
    d.ok(&["stop", "-t", "1", "tty"]);
    assert_eq!(state(&d, "tty"), "exited 0 137");
    assert_eq!(d.ok(&["wait", "tty"]), "137\n");
}
