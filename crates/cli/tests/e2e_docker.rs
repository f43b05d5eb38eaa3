//! End to end: the real docker CLI (/usr/local/bin/docker) against `berth daemon` on a
//! temporary socket, data root and exec root, with the busybox fixture imported as `busybox`
//! and `alpine`. The scenario both ways runs on a scratch "log" directory made here, never
//! on the real /var/log.
//!
//! Only `remap_default_scenario_real_etc` uses `--userns-remap=default` against the real
//! /etc (it may create `dockremap`, idempotently); the other remapped daemons read account
//! files from a temporary root (BERTH_ETC_ROOT).

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// A scratch directory shaped like /var/log: files owned by root:root, root:adm, 104:adm.
fn log_dir(parent: &Path) -> PathBuf {
    let d = parent.join("log");
    std::fs::create_dir_all(d.join("apt")).unwrap();
    for (name, uid, gid, mode) in [
        ("bootstrap.log", 0, 0, 0o644),
        ("dmesg", 0, 4, 0o640),
        ("syslog", 104, 4, 0o640),
    ] {
        let p = d.join(name);
        std::fs::write(&p, format!("{name}\n")).unwrap();
        chown(&p, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    d
}

/// The owner and group columns of `ls -l` for `name`.
fn owners(listing: &str, name: &str) -> (String, String) {
    let line = listing
        .lines()
        .find(|l| l.split_whitespace().last() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in listing:\n{listing}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    (cols[2].to_string(), cols[3].to_string())
}

#[test]
fn scenario_without_remap_shows_real_owners_and_rm_works() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    let logs = log_dir(&d.dir);
    let bind = format!("{}:/var/log", logs.display());
    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "--name=demo",
        "alpine",
        "ls",
        "-latr",
        "/var/log/",
    ]);
    assert_eq!(
        owners(&out, "bootstrap.log"),
        ("root".into(), "root".into())
    );
    assert_eq!(owners(&out, "dmesg"), ("root".into(), "adm".into()));
    assert_eq!(owners(&out, "syslog"), ("104".into(), "adm".into()));
    assert_eq!(owners(&out, "apt"), ("root".into(), "root".into()));

    d.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "alpine",
        "rm",
        "/var/log/syslog",
    ]);
    assert!(
        !logs.join("syslog").exists(),
        "root in the container removes host files without remap"
    );
    // --rm removed both containers.
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
}

/// Everything about a remapped daemon, checked on the `default` user with the real /etc
/// (the one test allowed to touch it: creating `dockremap` is idempotent).
#[test]
fn remap_default_scenario_real_etc() {
    let d = Daemon::start(Some("default"), None);
    d.import_busybox();
    let logs = log_dir(&d.dir);
    let bind = format!("{}:/var/log", logs.display());
    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "--name=demo",
        "alpine",
        "ls",
        "-latr",
        "/var/log/",
    ]);
    for name in ["bootstrap.log", "dmesg", "syslog", "apt", "."] {
        assert_eq!(
            owners(&out, name),
            ("nobody".into(), "nobody".into()),
            "{name} in\n{out}"
        );
    }
    // The container's own files (its image) still belong to its root.
    assert_eq!(owners(&out, ".."), ("root".into(), "root".into()), "{out}");

    for (cmd, msg) in [
        ("rm /var/log/syslog", "Permission denied"),
        ("chown 0:0 /var/log/dmesg", "Operation not permitted"),
        (
            "chmod 777 /var/log/bootstrap.log",
            "Operation not permitted",
        ),
        ("touch /var/log/bootstrap.log", "Permission denied"),
    ] {
        let o = d.docker(&["run", "--rm", "-v", &bind, "alpine", "sh", "-c", cmd]);
        assert!(!o.status.success(), "{cmd} succeeded under remap");
        assert!(stderr(&o).contains(msg), "{cmd}: {}", stderr(&o));
    }
    assert!(logs.join("syslog").exists(), "the host file is still there");
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(logs.join("dmesg")).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o777), (0, 4, 0o640));

    let info = d.ok(&["info", "--format", "{{json .SecurityOptions}}"]);
    assert!(info.contains("name=userns"), "{info}");
    let uid_map = d.ok(&["run", "--rm", "busybox", "cat", "/proc/self/uid_map"]);
    let cols: Vec<&str> = uid_map.split_whitespace().collect();
    assert_eq!(cols[0], "0");
    assert_ne!(
        cols[1], "0",
        "container root must not be host root: {uid_map}"
    );
}

#[test]
fn remap_refusals_userns_host_and_inspect() {
    let tmp = berth_testkit::tempdir("berth-e2e-etc-");
    let etc = fake_etc(tmp.path());
    let d = Daemon::start(Some("remap"), Some(&etc));
    d.import_busybox();
    for (flag, msg) in [
        (
            "--privileged",
            "privileged mode is incompatible with user namespaces",
        ),
        (
            "--net=host",
            "cannot share the host's network namespace when user namespaces are enabled",
        ),
        (
            "--pid=host",
            "cannot share the host PID namespace when user namespaces are enabled",
        ),
    ] {
        let o = d.docker(&["run", "--rm", flag, "busybox", "true"]);
        assert_eq!(o.status.code(), Some(125), "{flag}");
        assert!(stderr(&o).contains(msg), "{flag}: {}", stderr(&o));
        // Allowed with --userns=host.
        let id = d.ok(&["create", flag, "--userns=host", "busybox", "true"]);
        d.ok(&["rm", id.trim()]);
    }
    // And it runs, with the capabilities the host lets the daemon have.
    d.ok(&[
        "run",
        "--rm",
        "--privileged",
        "--userns=host",
        "busybox",
        "true",
    ]);
    let host_map = d.ok(&[
        "run",
        "--rm",
        "--userns=host",
        "busybox",
        "cat",
        "/proc/self/uid_map",
    ]);
    assert_eq!(
        host_map.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "4294967295"]
    );
    // A bind source the daemon creates belongs to the container's root.
    let fresh = d.dir.join("fresh");
    let bind = format!("{}:/data", fresh.display());
    d.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "busybox",
        "touch",
        "/data/made-inside",
    ]);
    use std::os::unix::fs::MetadataExt;
    for p in [fresh.clone(), fresh.join("made-inside")] {
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!((md.uid(), md.gid()), (100000, 100000), "{}", p.display());
    }
    let map = d.ok(&["run", "--rm", "busybox", "cat", "/proc/self/uid_map"]);
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );

    d.ok(&["create", "--name", "mapped", "busybox", "true"]);
    let maps = d.ok(&["inspect", "-f", "{{json .UsernsMaps}}", "mapped"]);
    assert!(maps.contains("\"HostID\":100000"), "{maps}");
    assert!(d.ok(&["info"]).contains("userns"));
}

#[test]
fn exit_codes_stdin_names_logs_and_inspect() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    // The default and `none` networks have a working loopback; host shares the host's.
    for net in ["default", "none"] {
        d.ok(&[
            "run",
            "--rm",
            "--network",
            net,
            "busybox",
            "ping",
            "-c1",
            "-W5",
            "127.0.0.1",
        ]);
    }
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(
        d.ok(&["run", "--rm", "--network", "host", "busybox", "hostname"])
            .trim(),
        host
    );

    let o = d.docker(&["run", "--rm", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3));

    let o = d.docker(&["run", "--rm", "busybox", "nosuchcmd"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("executable file not found"),
        "{}",
        stderr(&o)
    );
    // Named volumes outlive their containers; --mount tmpfs and read-only binds work.
    d.ok(&[
        "run",
        "--rm",
        "-v",
        "keep:/data",
        "busybox",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "-v",
            "keep:/data:ro",
            "busybox",
            "cat",
            "/data/f"
        ]),
        "kept\n"
    );
    let o = d.docker(&[
        "run",
        "--rm",
        "-v",
        "keep:/data:ro",
        "busybox",
        "touch",
        "/data/g",
    ]);
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    let mounts = d.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=tmpfs,target=/scratch",
        "busybox",
        "grep",
        " /scratch ",
        "/proc/mounts",
    ]);
    assert!(mounts.starts_with("tmpfs /scratch tmpfs"), "{mounts}");
    let o = d.docker(&[
        "run",
        "--rm",
        "--mount",
        "type=bind,source=/nonexistent-berth-src,target=/x",
        "busybox",
        "true",
    ]);
    assert!(
        stderr(&o).contains("bind source path does not exist"),
        "{}",
        stderr(&o)
    );

    // A missing working directory is created, as Docker does.
    assert_eq!(
        d.ok(&["run", "--rm", "-w", "/new/dir", "busybox", "pwd"]),
        "/new/dir\n"
    );

    let o = d.docker_stdin(&["run", "-i", "--rm", "busybox", "cat"], Some(b"hi\n"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hi\n");

    let out = d.ok(&[
        "run",
        "--name",
        "n1",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert_eq!(out, "out\n");
    let o = d.docker(&["run", "--name", "n1", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("is already in use by container"),
        "{}",
        stderr(&o)
    );
    let o = d.docker(&["create", "--name", "bad name!", "busybox", "true"]);
    assert!(
        stderr(&o).contains("Invalid container name"),
        "{}",
        stderr(&o)
    );

    let o = d.docker(&["logs", "n1"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert_eq!(stderr(&o), "err\n");
    d.ok(&[
        "run",
        "--name",
        "t1",
        "busybox",
        "sh",
        "-c",
        "echo a; echo b",
    ]);
    assert_eq!(d.ok(&["logs", "--tail", "1", "t1"]), "b\n");
    d.ok(&["rm", "t1"]);

    assert_eq!(
        d.ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}} {{.Name}}",
            "n1"
        ])
        .trim(),
        "exited 0 /n1"
    );
    assert_eq!(
        d.ok(&["inspect", "-f", "{{json .Config.Cmd}}", "n1"])
            .trim(),
        r#"["sh","-c","echo out; echo err >&2"]"#
    );
    assert_eq!(d.ok(&["wait", "n1"]).trim(), "0");
    let ps = d.ok(&[
        "ps",
        "-a",
        "--filter",
        "name=n1",
        "--format",
        "{{.Names}} {{.Status}}",
    ]);
    assert!(ps.starts_with("n1 Exited (0)"), "{ps}");
    d.ok(&["rm", "n1"]);
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");

    // A running container: stop, kill and rm -f.
    let id = d
        .ok(&[
            "run",
            "-d",
            "busybox",
            "sh",
            "-c",
            "trap 'exit 9' TERM; while true; do sleep 0.1; done",
        ])
        .trim()
        .to_string();
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.Running}}", &id]).trim(),
        "true"
    );
    let o = d.docker(&["rm", &id]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("container is running"),
        "{}",
        stderr(&o)
    );
    // The stop signal reaches the container's handler.
    d.ok(&["stop", "-t", "60", &id]);
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.ExitCode}}", &id]).trim(),
        "9"
    );
    d.ok(&["start", &id]);
    // `stop -s` picks the signal.
    d.ok(&["stop", "-s", "KILL", &id]);
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.ExitCode}}", &id]).trim(),
        "137"
    );
    d.ok(&["start", &id]);
    d.ok(&["kill", &id]);
    assert_eq!(d.ok(&["wait", &id]).trim(), "137");
    d.ok(&["rm", "-f", &id]);
}

#[test]
fn tty_through_a_pty() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    let cmd = format!(
        "{DOCKER} -H {} run -it --rm busybox sh -c 'test -t 0 && test -t 1 && echo tty-ok; exit 5'",
        d.host()
    );
    let o = d.in_terminal(&cmd).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("tty-ok"), "{out}\n{}", stderr(&o));
    assert_eq!(o.status.code(), Some(5), "{out}");
}

#[test]
fn restart_keeps_containers_and_the_lock_refuses_a_second_daemon() {
    let mut d = Daemon::start(None, None);
    d.import_busybox();
    let o = d.docker(&["run", "--name", "old", "busybox", "sh", "-c", "exit 4"]);
    assert_eq!(o.status.code(), Some(4));

    // A second daemon on the same data root is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("daemon")
        .arg("-H")
        .arg(format!("unix://{}", d.dir.join("other.sock").display()))
        .arg("--data-root")
        .arg(d.dir.join("data"))
        .arg("--exec-root")
        .arg(d.dir.join("exec2"))
        .arg("--config-file")
        .arg(d.dir.join("daemon.json"))
        .output()
        .unwrap();
    assert_fails(&out, "in use by another berth daemon");

    // A running container survives the daemon's restart under its monitor.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "busybox",
        "sh",
        "-c",
        "echo before; trap 'exit 9' TERM; while true; do sleep 0.1; done",
    ]);

    d.restart();
    let ps = d.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains("old Exited (4)"), "{ps}");
    assert!(ps.contains("live Up"), "{ps}");
    assert_eq!(d.ok(&["logs", "live"]), "before\n");
    d.ok(&["stop", "-t", "60", "live"]);
    assert_eq!(d.ok(&["wait", "live"]).trim(), "9");
    assert_eq!(d.docker(&["start", "-a", "old"]).status.code(), Some(4));
    assert_eq!(
        d.ok(&["images", "--format", "{{.Repository}}"])
            .lines()
            .count(),
        2
    );
}

#[test]
fn bad_requests_get_json_errors_and_the_daemon_keeps_serving() {
    let d = Daemon::start(None, None);
    let cases = [
        (
            "POST",
            "/v1.47/containers/create",
            "{not json",
            400,
            "invalid JSON",
        ),
        (
            "POST",
            "/containers/create?name=bad%20name",
            r#"{"Image":"busybox"}"#,
            400,
            "Invalid container name",
        ),
        (
            "POST",
            "/containers/create",
            r#"{"Image":"nosuch"}"#,
            404,
            "No such image",
        ),
        (
            "GET",
            "/v1.47/containers/nosuch/json",
            "",
            404,
            "No such container: nosuch",
        ),
        ("GET", "/v1.47/no/such/endpoint", "", 404, "page not found"),
        (
            "GET",
            "/v1.99/info",
            "",
            400,
            "client version 1.99 is too new. Maximum supported API version is 1.47",
        ),
        ("GET", "/v1.12/info", "", 400, "too old"),
        (
            "POST",
            "/containers/nosuch/wait?condition=bogus",
            "",
            400,
            "invalid condition",
        ),
    ];
    for (method, path, body, status, msg) in cases {
        let (got, text) = d.http(method, path, body);
        assert_eq!(got, status, "{method} {path}: {text}");
        let v: serde_json::Value =
            serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{path}: {e}: {text:?}"));
        assert!(
            v["message"].as_str().unwrap().contains(msg),
            "{path}: {text}"
        );
    }
    let (status, body) = d.http("GET", "/_ping", "");
    assert_eq!((status, body.as_str()), (200, "OK"));
    d.ok(&["version"]);
}

/// docker-py (PyPI `docker`) as a client: create, start, wait, logs, remove.
#[test]
fn docker_py_create_start_wait_logs_remove() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    let script = r#"
import sys
import docker
c = docker.DockerClient(base_url="unix://" + sys.argv[1], version="auto")
ct = c.containers.create("busybox", ["sh", "-c", "echo py-out; exit 2"], name="py1")
ct.start()
assert ct.wait()["StatusCode"] == 2
assert ct.logs() == b"py-out\n", ct.logs()
ct.reload()
assert ct.status == "exited", ct.status
ct.remove()
assert not [x for x in c.containers.list(all=True) if x.name == "py1"]
assert c.containers.run("busybox", ["echo", "hello"], remove=True) == b"hello\n"
assert "busybox:latest" in c.images.get("busybox").tags
print("docker-py ok")
"#;
    let out = Command::new("timeout")
        .args([TIMEOUT, "python3", "-c", script])
        .arg(&d.sock)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker-py failed (needs `pip install docker`):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("docker-py ok"));
}

/// Kills (SIGTERM, then SIGKILL) and reaps a child on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.0.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.0.kill();
                let _ = self.0.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `-H fd://` under systemd's socket activation, and `-H tcp://` beside it.
#[test]
fn socket_activation_and_tcp_listeners() {
    berth_testkit::require_root();
    let tmp = berth_testkit::tempdir("berth-e2e-fd-");
    let dir = tmp.path();
    std::fs::write(dir.join("daemon.json"), "{}").unwrap();
    let sock = dir.join("activated.sock");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tcp = format!("tcp://127.0.0.1:{port}");
    let child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&sock)
        .arg(env!("CARGO_BIN_EXE_berth"))
        .args(["daemon", "-H", "fd://", "-H", &tcp, "--data-root"])
        .arg(dir.join("data"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--config-file")
        .arg(dir.join("daemon.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
        .spawn()
        .expect("run systemd-socket-activate (package systemd)");
    let _guard = Reaped(child);
    let version = |host: &str| {
        Command::new("timeout")
            .args([
                TIMEOUT,
                DOCKER,
                "-H",
                host,
                "version",
                "--format",
                "{{.Server.APIVersion}}",
            ])
            .output()
            .unwrap()
    };
    let unix = format!("unix://{}", sock.display());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = version(&unix);
        if o.status.success() {
            assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1.47");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no answer on the activated socket: {}\n{}",
            stderr(&o),
            std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = version(&tcp);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn images_import_changes_save_load_and_rmi() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    d.import_busybox_as(
        "withcmd:v1",
        &["-c", r#"CMD ["echo", "from-cmd"]"#, "-c", "ENV GREETING=hi"],
    );
    assert_eq!(d.ok(&["run", "--rm", "withcmd:v1"]), "from-cmd\n");
    assert_eq!(
        d.ok(&["run", "--rm", "withcmd:v1", "sh", "-c", "echo $GREETING"]),
        "hi\n"
    );
    assert_eq!(
        d.ok(&[
            "image",
            "inspect",
            "-f",
            "{{json .Config.Cmd}}",
            "withcmd:v1"
        ])
        .trim(),
        r#"["echo","from-cmd"]"#
    );

    // In use: refused; once the container is gone, removed; saved and loaded back.
    d.ok(&["create", "--name", "user", "busybox", "true"]);
    // With another tag left, rmi only untags (as Docker); the last one is refused.
    assert!(d.ok(&["rmi", "alpine"]).contains("Untagged: alpine:latest"));
    let o = d.docker(&["rmi", "busybox"]);
    assert_fails(&o, "in use");
    d.ok(&["rm", "user"]);
    let saved = d.dir.join("saved.tar");
    d.ok(&["save", "-o", saved.to_str().unwrap(), "busybox"]);
    let id = d.ok(&["image", "inspect", "-f", "{{.Id}}", "busybox"]);
    d.ok(&["rmi", "busybox"]);
    assert!(!d.docker(&["image", "inspect", "busybox"]).status.success());
    let loaded = d.ok(&["load", "-i", saved.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: busybox:latest"), "{loaded}");
    assert_eq!(d.ok(&["image", "inspect", "-f", "{{.Id}}", "busybox"]), id);
    d.ok(&["run", "--rm", "busybox", "true"]);
}

#[test]
fn exec_in_a_running_container() {
    let tmp = berth_testkit::tempdir("berth-e2e-etc-");
    let etc = fake_etc(tmp.path());
    let d = Daemon::start(Some("remap"), Some(&etc));
    d.import_busybox();
    d.ok(&["run", "-d", "--name", "box", "busybox", "sleep", "1000"]);
    let o = d.docker(&[
        "exec",
        "box",
        "sh",
        "-c",
        "echo in-exec; cat /proc/self/uid_map; exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("in-exec\n"), "{out}");
    // The exec joins the container's user namespace.
    assert_eq!(
        out.lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );

    let o = d.docker_stdin(&["exec", "-i", "box", "cat"], Some(b"piped\n"));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "piped\n",
        "{}",
        stderr(&o)
    );
    assert_eq!(
        d.ok(&[
            "exec",
            "-u",
            "daemon",
            "-w",
            "/tmp",
            "-e",
            "X=1",
            "box",
            "sh",
            "-c",
            "echo $X $(id -u) $(pwd)"
        ]),
        "1 1 /tmp\n"
    );

    let cmd = format!(
        "{DOCKER} -H {} exec -it box sh -c 'test -t 0 && echo tty-ok'",
        d.host()
    );
    let o = d.in_terminal(&cmd).output().unwrap();
    assert!(stdout(&o).contains("tty-ok"), "{}", stderr(&o));

    let o = d.docker(&["exec", "box", "nosuchcmd"]);
    assert_fails(&o, "executable file not found");
    d.ok(&["stop", "-t", "0", "box"]);
    let o = d.docker(&["exec", "box", "true"]);
    assert_fails(&o, "is not running");
}

/// The CapEff line of /proc/self/status, as a process in container `name` sees it.
fn exec_cap_eff(d: &Daemon, extra: &[&str], name: &str) -> String {
    let mut args = vec!["exec"];
    args.extend(extra);
    args.extend([name, "grep", "CapEff", "/proc/self/status"]);
    d.ok(&args).split_whitespace().nth(1).unwrap().to_string()
}

/// `docker exec --privileged` in a remapped container is refused with the message Docker
/// gives a privileged container under remap; with `--userns=host` it runs with every
/// capability. The exec joins the container's user namespace (uid_map 0 100000 65536).
#[test]
fn privileged_exec_under_remap() {
    let d = Daemon::remapped();
    d.import_busybox();
    d.ok(&["run", "-d", "--name", "mapped", "busybox", "sleep", "1000"]);
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

    let o = d.docker(&["exec", "--privileged", "mapped", "true"]);
    assert!(!o.status.success());
    assert_eq!(
        stderr(&o).trim(),
        "Error response from daemon: privileged mode is incompatible with user namespaces.  You must run the container in the host namespace when running privileged mode"
    );
    let map = d.ok(&["exec", "mapped", "cat", "/proc/self/uid_map"]);
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
    // Docker's default set (CAP_CHOWN ... CAP_AUDIT_WRITE).
    assert_eq!(exec_cap_eff(&d, &[], "mapped"), "00000000a80425fb");

    // Every capability the host gives (this test's bounding set: a host may lack some).
    assert_eq!(
        exec_cap_eff(&d, &["--privileged"], "hostids"),
        host_capabilities()
    );
    assert_eq!(exec_cap_eff(&d, &[], "hostids"), "00000000a80425fb");
    let map = d.ok(&[
        "exec",
        "--privileged",
        "hostids",
        "cat",
        "/proc/self/uid_map",
    ]);
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "4294967295"]
    );
}

/// Docker's default seccomp profile: on unless unconfined or privileged; it refuses
/// `unshare(CLONE_NEWUSER)`, which the default capabilities alone would allow; a custom
/// profile arrives as JSON (as the docker CLI sends a file's content).
#[test]
fn default_seccomp_profile_and_unconfined() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    let info = d.ok(&["info", "--format", "{{json .SecurityOptions}}"]);
    assert!(info.contains("name=seccomp,profile=builtin"), "{info}");
    let warnings = d.ok(&["info", "--format", "{{json .Warnings}}"]);
    assert!(!warnings.contains("seccomp"), "{warnings}");

    let status = "grep Seccomp: /proc/self/status";
    let out = d.ok(&["run", "--rm", "busybox", "sh", "-c", status]);
    assert!(out.contains("Seccomp:\t2"), "{out:?}");
    let o = d.docker(&["run", "--rm", "busybox", "unshare", "-U", "true"]);
    assert!(!o.status.success(), "unshare -U passed the default profile");
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );

    let unconfined = [
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        "busybox",
    ];
    let out = d.ok(&[&unconfined[..], &["sh", "-c", status]].concat());
    assert!(out.contains("Seccomp:\t0"), "{out:?}");
    d.ok(&[&unconfined[..], &["unshare", "-U", "true"]].concat());
    let out = d.ok(&["run", "--rm", "--privileged", "busybox", "sh", "-c", status]);
    assert!(out.contains("Seccomp:\t0"), "{out:?}");

    // A custom profile from a file: everything allowed but mkdir (EACCES).
    let profile = d.dir.join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let o = d.docker(&[
        "run",
        "--rm",
        "--security-opt",
        &opt,
        "busybox",
        "mkdir",
        "/x",
    ]);
    assert_fails(&o, "Permission denied");
    d.ok(&[
        "run",
        "--rm",
        "--security-opt",
        &opt,
        "busybox",
        "unshare",
        "-U",
        "true",
    ]);
}

fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie holds nothing any more: its reaper is not us.
        Ok(s) => s.rsplit(')').next().unwrap().trim_start().starts_with('Z'),
    }
}

/// Capabilities the host withholds from the daemon (this VM: CAP_SYS_RESOURCE) are left
/// out, not fatal (they made --cap-add SYS_RESOURCE and --privileged exit 127); a failure
/// between start and the exec reaches the client; a container dies with its monitor, and
/// survives the daemon.
#[test]
fn caps_the_host_lacks_late_failures_and_dead_monitors() {
    let mut d = Daemon::start(None, None);
    d.import_busybox();
    d.ok(&[
        "run",
        "--rm",
        "--cap-add",
        "SYS_RESOURCE",
        "busybox",
        "true",
    ]);
    d.ok(&["run", "--rm", "--privileged", "busybox", "true"]);

    // Executable to the runtime's checks, refused by execve (after `start`).
    let bad = d.dir.join("bad");
    std::fs::write(&bad, b"\0not a program\n").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
    let vol = format!("{}:/bad", bad.display());
    let o = d.docker(&["run", "--rm", "-v", &vol, "busybox", "/bad"]);
    assert_fails(&o, "exec /bad");
    assert_fails(&o, "Exec format error");

    let init_of = |d: &Daemon, name: &str| -> i32 {
        d.ok(&["inspect", "-f", "{{.State.Pid}}", name])
            .trim()
            .parse()
            .unwrap()
    };
    // The daemon dies (SIGKILL): the container lives on under its monitor.
    d.ok(&[
        "run", "-d", "--name", "survivor", "busybox", "sleep", "1000",
    ]);
    let survivor = init_of(&d, "survivor");
    let mut daemon = d.child.take().unwrap();
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    d.spawn();
    assert!(
        !process_gone(survivor),
        "the container died with the daemon"
    );
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.Running}}", "survivor"])
            .trim(),
        "true"
    );

    // Its monitor dies (SIGKILL): so does the container.
    let id = d
        .ok(&["inspect", "-f", "{{.Id}}", "survivor"])
        .trim()
        .to_string();
    let monitors: Vec<i32> = pids_mentioning(&d.dir.join("exec").join("containers").join(&id))
        .into_iter()
        .filter(|p| *p != survivor)
        .collect();
    assert_eq!(monitors.len(), 1, "one monitor: {monitors:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitors[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Generous: only there so that a failure does not hang forever.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !process_gone(survivor) {
        assert!(
            Instant::now() < deadline,
            "the container outlived its monitor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The daemon notices the dead monitor and removes the container's cgroups and runtime
    // state, which nobody else would.
    let mut dirs = vec![Path::new("/sys/fs/cgroup/berth-runtime").join(&id)];
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        dirs.push(h.path().join("berth-runtime").join(&id));
    }
    dirs.push(d.dir.join("exec").join("runtime").join(&id));
    while let Some(left) = dirs.iter().find(|d| d.exists()) {
        assert!(
            Instant::now() < deadline,
            "{} outlived the monitor",
            left.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.ExitCode}}", "survivor"])
            .trim(),
        "255"
    );
}
