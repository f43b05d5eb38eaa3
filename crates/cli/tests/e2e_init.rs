//! End to end through the real docker CLI against `berth daemon`: `--init` (tini as
//! `/sbin/docker-init`, pid 1 of the container) per container and as the daemon's default,
//! with and without remap. Needs tini (scripts/deps installs it).

mod common;
use common::*;

#[test]
fn init_is_pid_1_and_passes_signals_on() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    let out = d.ok(&["run", "--rm", "--init", "busybox", "cat", "/proc/1/comm"]);
    assert_eq!(out.trim(), "docker-init");
    // Without init the shell is pid 1; with it, the shell runs under pid 1.
    let out = d.ok(&["run", "--rm", "busybox", "sh", "-c", "echo $$"]);
    assert_eq!(out.trim(), "1");
    let out = d.ok(&["run", "--rm", "--init", "busybox", "sh", "-c", "echo $$"]);
    assert_ne!(out.trim(), "1");

    // A program that leaves SIGTERM to its default: as pid 1 it would ignore `docker stop`
    // (killed after the timeout: 137); under init it gets the signal and dies of it (143).
    d.ok(&[
        "run", "-d", "--init", "--name", "sl", "busybox", "sleep", "300",
    ]);
    d.ok(&["stop", "-t", "60", "sl"]);
    assert_eq!(d.inspect("sl", "{{.State.ExitCode}}"), "143");
    assert_eq!(d.inspect("sl", "{{.HostConfig.Init}}"), "true");
    d.ok(&["rm", "sl"]);
}

#[test]
fn init_under_remap() {
    let d = Daemon::remapped();
    d.import_busybox();
    let out = d.ok(&[
        "run",
        "--rm",
        "--init",
        "busybox",
        "sh",
        "-c",
        "cat /proc/1/comm; cat /proc/self/uid_map",
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("docker-init"), "{out}");
    assert_eq!(
        lines
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["0", "100000", "65536"])
    );
}

#[test]
fn daemon_init_is_the_default_and_a_container_may_decline() {
    let mut d = Daemon::start(None, None);
    d.config = r#"{"init": true}"#.into();
    d.restart();
    d.import_busybox();
    let comm = |extra: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend(extra);
        args.extend(["busybox", "cat", "/proc/1/comm"]);
        d.ok(&args).trim().to_string()
    };
    assert_eq!(comm(&[]), "docker-init");
    assert_eq!(comm(&["--init=false"]), "cat");

    // A missing --init-path is named when the container starts.
    d.config = r#"{"init-path": "/nonexistent/berth-init"}"#.into();
    d.restart();
    let o = d.docker(&["run", "--rm", "--init", "busybox", "true"]);
    assert_fails(&o, "/nonexistent/berth-init");
}
