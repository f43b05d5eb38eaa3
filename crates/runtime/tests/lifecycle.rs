//! The container's life through the command line: create, start, state, kill, delete, run,
//! exec, hooks; and what delete leaves behind (nothing).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{cid, ok_stdout, Bundle};
use serde_json::{json, Value};

fn cli_ok(b: &Bundle, args: &[&str]) {
    let out = b.cmd(args).stdout(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "berth-runtime {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn process_gone(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie holds nothing any more: its reaper is not us.
        Ok(s) => s.rsplit(')').next().unwrap().trim_start().starts_with('Z'),
    }
}

/// `create`: the container inherits create's stdio, so stderr goes to a file (a pipe would
/// stay open as long as the container lives).
fn create(b: &Bundle, id: &str) {
    b.write();
    let errf = b.path().join(format!("{id}.stderr"));
    let st = b
        .cmd(&["create", "--bundle", b.bundle.to_str().unwrap(), id])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&errf).unwrap())
        .status()
        .unwrap();
    assert!(
        st.success(),
        "create: {}",
        std::fs::read_to_string(&errf).unwrap()
    );
}

#[test]
fn create_start_kill_delete_leaves_nothing_behind() {
    let mut b = Bundle::new("brt-life", true);
    b.config["process"]["args"] = json!(["sleep", "1000"]);
    b.config["linux"]["resources"]["memory"] = json!({"limit": 64 << 20});
    let id = cid("life");
    create(&b, &id);
    let st = b.state(&id);
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["ociVersion"], "1.2.0");
    let pid = st["pid"].as_i64().unwrap();
    assert!(pid > 0 && Path::new(&format!("/proc/{pid}")).exists());
    let unified = format!("/sys/fs/cgroup/unified/berth-runtime/{id}");
    let memory = format!("/sys/fs/cgroup/memory/berth-runtime/{id}");
    assert!(Path::new(&unified).is_dir() && Path::new(&memory).is_dir());
    let procs = std::fs::read_to_string(format!("{memory}/cgroup.procs")).unwrap();
    assert_eq!(procs.trim(), pid.to_string());
    // In every hierarchy: the v1 ones it joined itself (writing 0 to `tasks`) and cgroup2.
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for ctrl in ["memory", "cpu", "pids", "freezer", ""] {
        let line = cgroups
            .lines()
            .find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|c| c == ctrl))
            })
            .unwrap_or_else(|| panic!("no {ctrl:?} line in {cgroups}"));
        assert!(line.ends_with(&format!("/berth-runtime/{id}")), "{line}");
    }

    cli_ok(&b, &["start", &id]);
    assert_eq!(b.state(&id)["status"], "running");
    // Starting twice is an error that names the state.
    let again = b.cmd(&["start", &id]).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("running"));

    cli_ok(&b, &["kill", &id, "KILL"]);
    wait_for("stopped", || b.state(&id)["status"] == "stopped");
    assert_eq!(b.state(&id)["pid"], 0);
    cli_ok(&b, &["delete", &id]);
    assert!(!b.state_root.join(&id).exists());
    assert!(!b.cmd(&["state", &id]).output().unwrap().status.success());
    wait_for("the init to go", || process_gone(pid));
    assert!(!Path::new(&unified).exists() && !Path::new(&memory).exists());
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mi.contains(b.bundle.to_str().unwrap()),
        "a mount is left:\n{mi}"
    );
}

#[test]
fn delete_running_needs_force_and_delete_of_created_kills() {
    let mut b = Bundle::new("brt-force", true);
    b.config["process"]["args"] = json!(["sleep", "1000"]);
    let id = cid("force");
    create(&b, &id);
    cli_ok(&b, &["start", &id]);
    let pid = b.state(&id)["pid"].as_i64().unwrap();
    let out = b.cmd(&["delete", &id]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    cli_ok(&b, &["delete", "--force", &id]);
    wait_for("the init to go", || process_gone(pid));

    let id2 = cid("created");
    create(&b, &id2);
    let pid2 = b.state(&id2)["pid"].as_i64().unwrap();
    cli_ok(&b, &["delete", &id2]);
    wait_for("the created init to go", || process_gone(pid2));
    let list = ok_stdout(&b.cmd(&["list", "--format", "json"]).output().unwrap());
    assert_eq!(list.trim(), "[]");
}

#[test]
fn run_exits_with_the_container_code_and_128_plus_signal() {
    let mut b = Bundle::new("brt-code", true);
    b.script("exit 7");
    let out = b.run(&cid("code"));
    assert_eq!(out.status.code(), Some(7));
    assert!(
        !b.state_root.join(cid("code")).exists(),
        "run without --keep deletes"
    );

    let id = cid("sig");
    b.config["process"]["args"] = json!(["sleep", "1000"]);
    b.write();
    let bundle = b.bundle.to_str().unwrap().to_string();
    let mut child = b.cmd(&["run", "--bundle", &bundle, &id]).spawn().unwrap();
    wait_for("running", || {
        b.cmd(&["state", &id])
            .output()
            .unwrap()
            .stdout
            .windows(7)
            .any(|w| w == b"running")
    });
    cli_ok(&b, &["kill", &id, "9"]);
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(137));
}

#[test]
fn exec_joins_the_container() {
    let mut b = Bundle::new("brt-exec", true);
    b.config["process"]["args"] = json!(["sleep", "1000"]);
    let id = cid("exec");
    create(&b, &id);
    cli_ok(&b, &["start", &id]);
    let out = b
        .cmd(&["exec", &id, "sh", "-c", "cat /proc/self/uid_map; [ $(readlink /proc/self/ns/pid) = $(readlink /proc/1/ns/pid) ] && echo SAME_PID_NS; [ $(readlink /proc/self/ns/mnt) = $(readlink /proc/1/ns/mnt) ] && echo SAME_MNT_NS; [ \"$(cat /proc/self/cgroup)\" = \"$(cat /proc/1/cgroup)\" ] && echo SAME_CGROUPS; cat /proc/1/cmdline; echo; ls /proc/self/fd | tr '\\n' ' '"])
        .output()
        .unwrap();
    let text = ok_stdout(&out);
    assert!(
        text.starts_with("         0     100000      65536"),
        "{text}"
    );
    assert!(
        text.contains("SAME_PID_NS")
            && text.contains("SAME_MNT_NS")
            && text.contains("SAME_CGROUPS"),
        "{text}"
    );
    assert!(text.contains("sleep"), "{text}");
    assert!(text.trim_end().ends_with("0 1 2 3"), "{text}");
    let code = b
        .cmd(&["exec", &id, "sh", "-c", "exit 3"])
        .output()
        .unwrap();
    assert_eq!(code.status.code(), Some(3));
    cli_ok(&b, &["delete", "--force", &id]);
}

fn hook(name: &str, log: &Path) -> Value {
    json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} $(cat) >> {}", log.display())],
           "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]})
}

#[test]
fn hooks_run_in_order_with_the_state() {
    let mut b = Bundle::new("brt-hooks", false);
    let logdir = b.path().join("hooklog");
    std::fs::create_dir(&logdir).unwrap();
    let log = logdir.join("log");
    // startContainer runs inside the container: give it the log at the same path.
    b.add_mount(
        json!({"destination": logdir, "type": "bind", "source": logdir, "options": ["rbind"]}),
    );
    let names = [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ];
    for n in names {
        b.config["hooks"][n] = json!([hook(n, &log)]);
    }
    b.script("true");
    let id = cid("hooks");
    ok_stdout(&b.run(&id));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<(&str, Value)> = text
        .lines()
        .map(|l| {
            let (n, j) = l.split_once(' ').unwrap();
            (n, serde_json::from_str(j).unwrap())
        })
        .collect();
    let order: Vec<&str> = lines.iter().map(|(n, _)| *n).collect();
    assert_eq!(order, names, "{text}");
    for (n, st) in &lines {
        assert_eq!(st["id"], id.as_str(), "{n}: {st}");
        assert_eq!(st["bundle"], b.bundle.to_str().unwrap(), "{n}: {st}");
    }
    assert_eq!(lines[1].1["status"], "creating");
    assert_eq!(lines[3].1["status"], "created");
    assert_eq!(lines[5].1["status"], "stopped");
    assert!(lines[0].1["pid"].as_i64().unwrap() > 0);
}

#[test]
fn failing_hook_fails_create_and_cleans_up() {
    let mut b = Bundle::new("brt-hookfail", true);
    b.config["hooks"]["createRuntime"] = json!([{"path": "/bin/false"}]);
    b.config["process"]["args"] = json!(["sleep", "1000"]);
    let id = cid("hookfail");
    b.write();
    // The create fails, so no container keeps the stderr pipe open.
    let out = b
        .cmd(&["create", "--bundle", b.bundle.to_str().unwrap(), &id])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("createRuntime") && err.contains("/bin/false"),
        "{err}"
    );
    assert!(!b.state_root.join(&id).exists());
    assert!(!Path::new(&format!("/sys/fs/cgroup/unified/berth-runtime/{id}")).exists());
}

#[test]
fn bad_config_is_a_clear_error() {
    let mut b = Bundle::new("brt-bad", true);
    b.config["process"]["args"] = json!(["no-such-program"]);
    b.write();
    let id = cid("bad");
    let out = b
        .cmd(&["create", "--bundle", b.bundle.to_str().unwrap(), &id])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-program") && err.contains("not found"),
        "{err}"
    );
    assert!(!b.state_root.join(&id).exists());
    let out = b
        .cmd(&["create", "--bundle", "/nonexistent", "x"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/config.json"));
    let out = b.cmd(&["state", "../etc"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid"));
}

/// A failure between `start` and the exec of the program (here: chdir to a missing
/// process.cwd) is reported by `start` and `run`, not only as an exit code.
#[test]
fn failure_after_start_is_reported_by_start() {
    let mut b = Bundle::new("brt-late", true);
    // A missing cwd is refused by `create`; one the user may not enter is only known after
    // the switch of user, after `start`.
    let private = b.bundle.join("rootfs/private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    b.config["process"]["cwd"] = json!("/private");
    b.config["process"]["user"] = json!({"uid": 65534, "gid": 65534});
    b.config["process"]["args"] = json!(["true"]);
    let id = cid("late");
    create(&b, &id);
    let out = b.cmd(&["start", &id]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("chdir") && err.contains("/private") && err.contains(&id),
        "{err}"
    );
    cli_ok(&b, &["delete", "--force", &id]);
    let out = b.run(&cid("late2"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("chdir") && err.contains("/private") && err.contains("permission denied"),
        "{err}"
    );
}

/// The pty master goes to --console-socket over SCM_RIGHTS, as runc sends it.
#[test]
fn console_socket_receives_the_pty_master() {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut b = Bundle::new("brt-console", true);
    b.config["process"]["terminal"] = json!(true);
    b.script("[ -t 1 ] && echo ON_A_TTY; sleep 1");
    let sock = b.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let id = cid("console");
    b.write();
    let mut child = b
        .cmd(&[
            "create",
            "--console-socket",
            sock.to_str().unwrap(),
            "--bundle",
            b.bundle.to_str().unwrap(),
            &id,
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 64];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .unwrap();
    let mut master = None;
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the descriptor was just received and is owned by nobody else.
            master = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        }
    }
    let master = master.expect("no descriptor received");
    assert!(child.wait().unwrap().success());
    cli_ok(&b, &["start", &id]);
    let mut f = std::fs::File::from(master);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&got).contains("ON_A_TTY") && Instant::now() < deadline {
        let mut chunk = [0u8; 256];
        match std::io::Read::read(&mut f, &mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    assert!(
        String::from_utf8_lossy(&got).contains("ON_A_TTY"),
        "{got:?}"
    );
    cli_ok(&b, &["delete", "--force", &id]);
}

#[test]
fn kill_all_signals_every_process() {
    let mut b = Bundle::new("brt-killall", true);
    b.script("sleep 1000 & sleep 1000 & wait");
    let id = cid("killall");
    create(&b, &id);
    cli_ok(&b, &["start", &id]);
    let cg = format!("/sys/fs/cgroup/unified/berth-runtime/{id}/cgroup.procs");
    wait_for("three processes", || {
        std::fs::read_to_string(&cg).unwrap().lines().count() == 3
    });
    let pids: Vec<i64> = std::fs::read_to_string(&cg)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    cli_ok(&b, &["kill", "--all", &id, "SIGKILL"]);
    for p in pids {
        wait_for("every process to go", || process_gone(p));
    }
    cli_ok(&b, &["delete", &id]);
}

#[test]
fn spec_and_features() {
    let b = Bundle::new("brt-spec", false);
    let dir = b.path().join("newbundle");
    std::fs::create_dir(&dir).unwrap();
    cli_ok(&b, &["spec", "--bundle", dir.to_str().unwrap()]);
    let spec: Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["ociVersion"], "1.2.0");
    let again = b
        .cmd(&["spec", "--bundle", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success(), "spec must not overwrite a config");
    let f = ok_stdout(&b.cmd(&["features"]).output().unwrap());
    let f: Value = serde_json::from_str(&f).unwrap();
    assert_eq!(f["linux"]["mountExtensions"]["idmap"]["enabled"], true);
}

/// Namespaces given by path are joined (the user namespace first, the new ones are then
/// owned by it): a second container shares the first one's user and network namespaces.
#[test]
fn joins_namespaces_by_path() {
    let mut a = Bundle::new("brt-joina", true);
    a.config["process"]["args"] = json!(["sleep", "1000"]);
    let ida = cid("joina");
    create(&a, &ida);
    let pid = a.state(&ida)["pid"].as_i64().unwrap();

    let mut b = Bundle::new("brt-joinb", true);
    let ns = b.config["linux"]["namespaces"].as_array_mut().unwrap();
    for n in ns.iter_mut() {
        let t = n["type"].as_str().unwrap().to_string();
        if t == "user" || t == "network" {
            let file = if t == "network" { "net" } else { "user" };
            n["path"] = json!(format!("/proc/{pid}/ns/{file}"));
        }
    }
    b.config["linux"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| k != "uidMappings" && k != "gidMappings");
    b.script("readlink /proc/self/ns/user; readlink /proc/self/ns/net; cat /proc/self/uid_map");
    let out = ok_stdout(&b.run(&cid("joinb")));
    let user = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
    let net = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], user.to_str().unwrap(), "{out}");
    assert_eq!(l[1], net.to_str().unwrap(), "{out}");
    assert!(
        l[2].split_whitespace().eq(["0", "100000", "65536"]),
        "{out}"
    );
    cli_ok(&a, &["delete", "--force", &ida]);
}
