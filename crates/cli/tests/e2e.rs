//! End to end: `berth daemon` on a temporary socket, data root and exec root, driven by the
//! `berth` client. Each test starts its own daemon (the shared harness in common/mod.rs);
//! its guard removes its containers and stops it (by pid) even when the test fails.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

mod common;
use common::*;

/// `berth import` of the busybox fixture as `name`: the client prints the new image's id.
fn berth_import_busybox(d: &Daemon, name: &str) {
    let tar = berth_testkit::busybox_tar();
    let out = d.berth_ok(&["import", tar.to_str().unwrap(), name]);
    assert!(out.starts_with("sha256:"), "{out}");
}

#[test]
fn run_exit_codes_stdin_logs_inspect_and_rm() {
    let d = Daemon::start(None, None);
    berth_import_busybox(&d, "busybox");

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

    let o = d.berth_stdin(
        &["run", "-i", "--rm", "busybox", "cat"],
        Some(b"hi through stdin\n"),
    );
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "hi through stdin\n");

    d.berth_ok(&[
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
    assert_eq!(d.berth_ok(&["logs", "named"]), "hello\n");
    assert_eq!(
        d.berth_ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}} {{.Name}}",
            "named"
        ]),
        "exited 0 /named\n"
    );
    assert_eq!(
        d.berth_ok(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]),
        "named exited\n",
        "--rm containers are gone"
    );
    let o = d.berth(&["run", "--name", "named", "busybox", "true"]);
    assert_eq!(
        o.status.code(),
        Some(125),
        "a name conflict is a daemon error"
    );
    assert_eq!(d.berth_ok(&["rm", "named"]), "named\n");
    assert_eq!(d.berth_ok(&["ps", "-aq"]), "");

    let o = d.berth(&["run", "--rm", "no-such-image"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("Unable to find image 'no-such-image:latest' locally"));
}

#[test]
fn detached_containers_stop_wait_and_rm() {
    let d = Daemon::start(None, None);
    berth_import_busybox(&d, "busybox");
    let id = d.berth_ok(&["run", "-d", "--name", "sleeper", "busybox", "sleep", "1000"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    assert_eq!(
        d.berth_ok(&["ps", "--format", "{{.Names}}\t{{.State}}"]),
        "sleeper\trunning\n"
    );
    let inspected: serde_json::Value =
        serde_json::from_str(&d.berth_ok(&["inspect", "sleeper"])).unwrap();
    assert_eq!(inspected[0]["Name"], "/sleeper", "{inspected}");
    assert_eq!(d.berth_ok(&["kill", "sleeper"]), "sleeper\n");
    assert_eq!(d.berth_ok(&["wait", "sleeper"]), "137\n");
    // A missing name fails the command, the others are still done and printed.
    let o = d.berth(&["wait", "nope", "sleeper"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(1), "137\n".into()));
    let o = d.berth(&["stop", "-t", "0", "sleeper", "nope"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(1), "sleeper\n".into()));
    assert_eq!(d.berth_ok(&["rm", "-f", "sleeper"]), "sleeper\n");
}

#[test]
fn create_start_attach_logs_tail_and_restart() {
    let d = Daemon::start(None, None);
    berth_import_busybox(&d, "busybox");
    let id = d.berth_ok(&[
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
        d.berth_ok(&["logs", "--since", "2100-01-01T00:00:00Z", "job"]),
        ""
    );

    // stdin through start -a -i: StdinOnce closes the container's stdin at our end of input.
    d.berth_ok(&["create", "-i", "--name", "echoer", "busybox", "cat"]);
    let o = d.berth_stdin(&["start", "-a", "-i", "echoer"], Some(b"typed line\n"));
    assert_eq!(
        stdout(&o),
        "typed line\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0));

    // Attach to a running container that waits for a line: berth's exit code is its.
    d.berth_ok(&[
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
    let o = d.berth_stdin(&["attach", "reader"], Some(b"hello\n"));
    assert_eq!(
        stdout(&o),
        "got hello\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(2));

    assert_eq!(d.berth_ok(&["restart", "-t", "0", "job"]), "job\n");
    assert_eq!(d.berth_ok(&["wait", "job"]), "4\n");
}

#[test]
fn images_tag_save_load_rmi() {
    let d = Daemon::start(None, None);
    berth_import_busybox(&d, "busybox");
    d.berth_ok(&["tag", "busybox", "alpine:3"]);
    let list = d.berth_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut names: Vec<&str> = list.lines().collect();
    names.sort();
    assert_eq!(names, ["alpine:3", "busybox:latest"]);
    let archive = d.dir.join("saved.tar");
    d.berth_ok(&["save", "-o", archive.to_str().unwrap(), "alpine:3"]);
    assert!(fs::metadata(&archive).unwrap().len() > 0);
    assert_eq!(d.berth_ok(&["rmi", "alpine:3"]), "Untagged: alpine:3\n");
    assert!(d
        .ok(&["load", "-i", archive.to_str().unwrap()])
        .contains("alpine:3"));
    assert!(d.berth_ok(&["images", "-q"]).lines().count() >= 1);
    let o = d.berth(&["rmi", "nope"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn run_it_gets_a_terminal_of_the_callers_size() {
    let d = Daemon::start(None, None);
    berth_import_busybox(&d, "busybox");
    // `script` (util-linux) gives berth a pseudo-terminal as its stdin and stdout.
    let inner = format!(
        "stty cols 100 rows 30; {BERTH} -H {} run -it --rm busybox sh -c 'tty; stty size; exit 5'",
        d.host()
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
    let d = Daemon::start(Some("default"), Some(etc.path()));
    berth_import_busybox(&d, "alpine");
    assert!(d.berth_ok(&["info"]).contains("  userns\n"));

    let logs: PathBuf = d.dir.join("log");
    fs::create_dir(&logs).unwrap();
    fs::set_permissions(&logs, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(logs.join("syslog"), "host data\n").unwrap();
    nix::unistd::chown(&logs.join("syslog"), Some(0.into()), Some(4.into())).unwrap();

    let bind = format!("{}:/var/log", logs.display());
    let out = d.berth_ok(&[
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
