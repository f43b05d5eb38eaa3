//! End to end through the `berth` client against `berth daemon` (the shared harness,
//! tests/common), checked against the real docker CLI on the same daemon: `berth exec`
//! (user namespace, -u, -w, -e, --env-file, -i, -t, -d, exit codes, --privileged refused
//! under remap, errors) and the `berth run`/`create` flags --restart, --tmpfs, --pid,
//! --ipc, --uts, --memory-swap, --cpu-shares, --cpu-period and --cpu-quota. The remapped
//! daemon reads account files from a temporary root (BERTH_ETC_ROOT), never the real /etc.

use std::time::{Duration, Instant};

mod common;
use common::*;

/// `berth ARGS` run under `script`, so that the client has a terminal; returns its output
/// (without the CRs the terminals add) and its exit code.
fn berth_in_terminal(d: &Daemon, args: &str) -> (String, Option<i32>) {
    let o = d
        .in_terminal(&format!("{BERTH} -H {} {args}", d.host()))
        .output()
        .unwrap();
    (stdout(&o).replace('\r', ""), o.status.code())
}

#[test]
fn berth_exec_under_remap() {
    let d = Daemon::remapped();
    d.import_busybox();
    d.ok(&["run", "-d", "--name", "ctr", "busybox", "sleep", "1000"]);

    // The exec joins the container's user namespace.
    let map = d.berth_ok(&["exec", "ctr", "cat", "/proc/self/uid_map"]);
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
    assert_eq!(
        d.berth_ok(&["exec", "-u", "1000", "ctr", "id", "-u"]),
        "1000\n"
    );
    assert_eq!(
        d.berth_ok(&["exec", "-u", "daemon:adm", "ctr", "id", "-g"]),
        "4\n"
    );
    assert_eq!(d.berth_ok(&["exec", "-w", "/tmp", "ctr", "pwd"]), "/tmp\n");
    assert_eq!(
        d.berth_ok(&["exec", "-e", "A=1", "ctr", "sh", "-c", "echo $A"]),
        "1\n"
    );
    let env_file = d.dir.join("exec.env");
    std::fs::write(&env_file, "# a comment\nB=from-file\n\nA=overridden\n").unwrap();
    assert_eq!(
        d.berth_ok(&[
            "exec",
            "--env-file",
            env_file.to_str().unwrap(),
            "-e",
            "A=1",
            "ctr",
            "sh",
            "-c",
            "echo $A $B",
        ]),
        "1 from-file\n"
    );
    // Flags after the container are the command's.
    assert_eq!(
        d.berth_ok(&["exec", "ctr", "sh", "-c", "echo $0 $1", "-d", "-i"]),
        "-d -i\n"
    );
    // stdout and stderr stay apart without a tty.
    let o = d.berth(&["exec", "ctr", "sh", "-c", "echo out; echo err >&2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!((stdout(&o), stderr(&o)), ("out\n".into(), "err\n".into()));

    // -i: stdin piped in, its end reaches the command.
    let o = d.berth_stdin(&["exec", "-i", "ctr", "cat"], Some(b"piped\nin\n"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "piped\nin\n");
    // Without -i the command's stdin is empty.
    let o = d.berth_stdin(&["exec", "ctr", "cat"], Some(b"not sent\n"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");

    // -d: nothing printed, the command runs in the background.
    let o = d.berth(&["exec", "-d", "ctr", "sh", "-c", "echo bg > /tmp/marker"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = d.berth(&["exec", "ctr", "cat", "/tmp/marker"]);
        if o.status.success() {
            assert_eq!(stdout(&o), "bg\n");
            break;
        }
        assert!(Instant::now() < deadline, "the detached exec never ran");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Exit codes: the command's, and docker's for a command that cannot run.
    let o = d.berth(&["exec", "ctr", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let o = d.berth(&["exec", "ctr", "nosuchcmd"]);
    let docker = d.docker(&["exec", "ctr", "nosuchcmd"]);
    assert!(
        matches!(o.status.code(), Some(126 | 127)),
        "{:?} {}",
        o.status,
        stderr(&o)
    );
    assert_eq!(o.status.code(), docker.status.code(), "{}", stderr(&docker));
    assert_fails(&o, "executable file not found");

    // -t: a terminal inside, raw output, the exit code still comes through.
    let (out, code) = berth_in_terminal(
        &d,
        "exec -it ctr sh -c 'test -t 0 && test -t 1 && echo tty-ok; exit 3'",
    );
    assert!(out.contains("tty-ok"), "{out}");
    assert_eq!(code, Some(3), "{out}");
    let (out, _) = berth_in_terminal(&d, "exec -t ctr sh -c 'echo out; echo err >&2'");
    assert!(out.contains("out\nerr\n"), "{out:?}");
    // -it without a terminal is refused before anything is created, as docker does.
    let o = d.berth(&["exec", "-it", "ctr", "true"]);
    assert_fails(&o, "the input device is not a TTY");

    // --privileged is refused under remap, with the daemon's message, as docker shows it.
    let o = d.berth(&["exec", "--privileged", "ctr", "true"]);
    let docker = d.docker(&["exec", "--privileged", "ctr", "true"]);
    let msg = "Error response from daemon: privileged mode is incompatible with user namespaces.";
    assert_fails(&o, msg);
    assert!(
        stderr(&o).contains(stderr(&docker).trim()),
        "berth: {}\ndocker: {}",
        stderr(&o),
        stderr(&docker)
    );

    // Errors like docker's.
    let o = d.berth(&["exec", "nope", "true"]);
    assert_fails(&o, "Error response from daemon: No such container: nope");
    d.ok(&["stop", "-t", "0", "ctr"]);
    let o = d.berth(&["exec", "ctr", "true"]);
    assert_fails(&o, "Error response from daemon:");
    assert_fails(&o, "is not running");
}

/// `-t`: the exec's tty starts at the terminal's size and follows it (SIGWINCH → resize),
/// under `script`'s terminal, resized with stty.
#[test]
fn berth_exec_tty_follows_the_terminal_size() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    d.ok(&["run", "-d", "--name", "ctr", "busybox", "sleep", "1000"]);
    let script = d.dir.join("resize.sh");
    let b = format!("{BERTH} -H {}", d.host());
    std::fs::write(
        &script,
        format!(
            r#"stty rows 30 cols 100
{b} exec -t ctr stty size
{b} exec -t ctr sh -c 'touch /tmp/ready; until [ "$(stty size)" = "40 120" ]; do sleep 0.05; done; echo resized' &
until {b} exec ctr test -e /tmp/ready; do sleep 0.05; done
stty rows 40 cols 120
wait $!
"#
        ),
    )
    .unwrap();
    let o = d
        .in_terminal(&format!("sh {}", script.display()))
        .output()
        .unwrap();
    let out = stdout(&o).replace('\r', "");
    assert_eq!(out, "30 100\nresized\n", "{}", stderr(&o));
}

/// `--privileged` works in a container that keeps the host's ids (`--userns=host`) on a
/// remapped daemon: every capability the host gives.
#[test]
fn berth_exec_privileged_with_host_userns() {
    let d = Daemon::remapped();
    d.import_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "hostids",
        "--userns=host",
        "busybox",
        "sleep",
        "1000",
    ]);
    let all = host_capabilities();
    let out = d.berth_ok(&[
        "exec",
        "--privileged",
        "hostids",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert_eq!(out.split_whitespace().nth(1), Some(all.as_str()), "{out}");
}

#[test]
fn berth_run_restart_tmpfs_namespaces_and_cpu() {
    let d = Daemon::start(None, None);
    d.import_busybox();

    d.berth_ok(&[
        "run",
        "-d",
        "--name",
        "onfail",
        "--restart",
        "on-failure:2",
        "busybox",
        "sleep",
        "1000",
    ]);
    assert_eq!(
        d.inspect("onfail", "{{json .HostConfig.RestartPolicy}}"),
        r#"{"Name":"on-failure","MaximumRetryCount":2}"#
    );
    d.berth_ok(&[
        "create",
        "--name",
        "always",
        "--restart",
        "always",
        "busybox",
        "true",
    ]);
    assert_eq!(
        d.inspect("always", "{{.HostConfig.RestartPolicy.Name}}"),
        "always"
    );
    // Refused as docker refuses them: by the CLI, or by the daemon.
    let o = d.berth(&["run", "--rm", "--restart", "always", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert_fails(
        &o,
        "conflicting options: cannot specify both --restart and --rm",
    );
    let o = d.berth(&["create", "--restart", "sometimes", "busybox", "true"]);
    assert_fails(&o, "Error response from daemon: invalid restart policy");

    // --tmpfs PATH[:OPTS] is mounted, with its options.
    let out = d.berth_ok(&[
        "run",
        "--rm",
        "--tmpfs",
        "/x:size=1m",
        "--tmpfs",
        "/y",
        "busybox",
        "sh",
        "-c",
        "grep -E ' /(x|y) ' /proc/mounts",
    ]);
    let x = out
        .lines()
        .find(|l| l.contains(" /x "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        x.starts_with("tmpfs /x tmpfs") && x.contains("size=1024k"),
        "{out}"
    );
    assert!(out.contains("tmpfs /y tmpfs"), "{out}");

    // --uts host: the host's name; --pid host: the host's processes.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let out = d.berth_ok(&["run", "--rm", "--uts", "host", "busybox", "hostname"]);
    assert_eq!(out.trim(), host.trim());
    let me = std::process::id().to_string();
    let out = d.berth_ok(&["run", "--rm", "--pid=host", "busybox", "ls", "/proc"]);
    assert!(out.split_whitespace().any(|p| p == me), "{out}");

    d.berth_ok(&[
        "create",
        "--name",
        "limits",
        "--pid",
        "host",
        "--ipc",
        "private",
        "--uts",
        "host",
        "-m",
        "64m",
        "--memory-swap",
        "128m",
        "-c",
        "512",
        "--cpu-period",
        "100000",
        "--cpu-quota",
        "50000",
        "busybox",
        "true",
    ]);
    assert_eq!(
        d.inspect("limits",
            "{{.HostConfig.PidMode}} {{.HostConfig.IpcMode}} {{.HostConfig.UTSMode}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.CpuShares}} {{.HostConfig.CpuPeriod}} {{.HostConfig.CpuQuota}}"
        ),
        "host private host 67108864 134217728 512 100000 50000"
    );
    d.berth_ok(&[
        "create",
        "--name",
        "unlimited",
        "--memory-swap",
        "-1",
        "busybox",
        "true",
    ]);
    assert_eq!(d.inspect("unlimited", "{{.HostConfig.MemorySwap}}"), "-1");
    let o = d.berth(&["create", "--pid", "bogus", "busybox", "true"]);
    assert_fails(&o, "--pid: invalid PID mode");
}
