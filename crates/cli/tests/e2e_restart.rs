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
    d.ok(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}",
        name,
    ])
    .trim()
    .to_string()
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

fn container_id(d: &Daemon, name: &str) -> String {
    d.ok(&["inspect", "-f", "{{.Id}}", name]).trim().to_string()
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
    let ids = [container_id(&d, "tty"), container_id(&d, "logger")];
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
