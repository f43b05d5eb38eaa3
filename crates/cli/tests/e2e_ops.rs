//! End to end through the real docker CLI (/usr/local/bin/docker) and the `berth` client
//! against `berth daemon` (the shared harness, tests/common): top (with the container's and
//! the host's uid), stats, rename, pause/unpause (the freezer), kill and stop of a paused
//! container, update (live limits), and exposed ports (inspect, ps, port). The remapped
//! daemon reads account files from a temporary root (BERTH_ETC_ROOT), never the real /etc.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

mod common;
use common::*;

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
    assert_fails(&o, "ps_args");
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
    assert_fails(&o, "already in use");
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
    // A paused container can be stopped (thawed so that SIGTERM reaches it; sleep as pid 1
    // ignores it, so SIGKILL after the timeout), and removed.
    d.ok(&["pause", "s2"]);
    d.ok(&["stop", "-t", "1", "s2"]);
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
    let ok = |args: &[&str]| d.berth_ok(args);
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

/// `docker port` and `berth port` on containers with and without exposed ports: berth
/// publishes none, so Docker's view of a container whose ports are exposed but not
/// published: `{"80/tcp": null}` while it runs on a network of its own, `{}` otherwise.
#[test]
fn port_shows_exposed_but_unpublished_ports() {
    let mut d = Daemon::start(None, None);
    d.import_busybox();
    d.import_busybox_as("web", &["--change", "EXPOSE 80 53/udp"]);
    d.ok(&["run", "-d", "--name", "web", "web", "sleep", "1000"]);
    d.ok(&["run", "-d", "--name", "plain", "busybox", "sleep", "1000"]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "nonet",
        "--network",
        "none",
        "web",
        "sleep",
        "1000",
    ]);
    let ports = |name: &str| inspect_json(&d, ".NetworkSettings.Ports", name);
    assert_eq!(ports("web"), r#"{"53/udp":null,"80/tcp":null}"#);
    assert_eq!(ports("plain"), "{}");
    assert_eq!(ports("nonet"), "{}");
    assert_eq!(
        d.ok(&["inspect", "-f", "{{json .Config.ExposedPorts}}", "web"])
            .trim(),
        r#"{"53/udp":{},"80/tcp":{}}"#
    );
    let ps = d.ok(&["ps", "--format", "{{.Names}} {{.Ports}}"]);
    assert!(ps.lines().any(|l| l == "web 53/udp, 80/tcp"), "{ps}");
    assert!(ps.lines().any(|l| l == "plain "), "{ps}");

    for client in ["docker", "berth"] {
        let run = |args: &[&str]| {
            if client == "docker" {
                d.docker(args)
            } else {
                d.berth(args)
            }
        };
        for name in ["web", "plain"] {
            let o = run(&["port", name]);
            assert!(o.status.success(), "{client} {name}: {}", stderr(&o));
            assert_eq!(String::from_utf8_lossy(&o.stdout), "", "{client}");
            for spec in ["80/tcp", "80", "53/udp"] {
                let o = run(&["port", name, spec]);
                assert_eq!(o.status.code(), Some(1), "{client} {name} {spec}");
                assert_eq!(
                    stderr(&o).trim(),
                    format!("Error: No public port '{spec}' published for {name}"),
                    "{client}"
                );
            }
        }
        for (spec, why) in [
            ("http", "invalid syntax"),
            ("70000/udp", "value out of range"),
        ] {
            let o = run(&["port", "web", spec]);
            assert_eq!(o.status.code(), Some(1), "{client} {spec}");
            let number = spec.split('/').next().unwrap();
            assert_eq!(
                stderr(&o).trim(),
                format!(
                    "Error: invalid port ({number}): strconv.ParseUint: parsing \"{number}\": {why}"
                ),
                "{client}"
            );
        }
        let o = run(&["port", "nosuch"]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("No such container: nosuch"), "{client}");
    }

    // --expose (ranges expanded) is kept with the image's EXPOSE, in the record: inspect,
    // NetworkSettings.Ports and ps show them all, ps grouped as the docker CLI groups them.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "ex",
        "--expose",
        "8080",
        "--expose",
        "53/udp",
        "--expose",
        "9000-9001/udp",
        "web",
        "sleep",
        "1000",
    ]);
    let exposed = |name: &str| inspect_json(&d, ".Config.ExposedPorts", name);
    assert_eq!(
        exposed("ex"),
        r#"{"53/udp":{},"80/tcp":{},"8080/tcp":{},"9000/udp":{},"9001/udp":{}}"#
    );
    assert_eq!(
        ports("ex"),
        r#"{"53/udp":null,"80/tcp":null,"8080/tcp":null,"9000/udp":null,"9001/udp":null}"#
    );
    let ps_ex = [
        "ps",
        "--filter",
        "name=ex",
        "--format",
        "{{.Names}} {{.Ports}}",
    ];
    let want = "ex 80/tcp, 53/udp, 9000-9001/udp, 8080/tcp\n";
    assert_eq!(d.ok(&ps_ex), want);
    assert_eq!(d.berth_ok(&ps_ex), want);
    let table = d.berth_ok(&["ps"]);
    assert!(table.starts_with("CONTAINER ID"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains(" 53/udp, 80/tcp ") && l.ends_with(" web")),
        "{table}"
    );
    // berth's own run --expose, which the docker CLI reads back.
    d.berth_ok(&[
        "run",
        "-d",
        "--name",
        "bex",
        "--expose",
        "7000-7001",
        "busybox",
        "sleep",
        "1000",
    ]);
    assert_eq!(exposed("bex"), r#"{"7000/tcp":{},"7001/tcp":{}}"#);
    assert_eq!(
        d.ok(&["ps", "--filter", "name=bex", "--format", "{{.Ports}}"]),
        "7000-7001/tcp\n"
    );
    // A port that is not one is refused at create, naming it.
    let (status, body) = d.http(
        "POST",
        "/containers/create",
        r#"{"Image":"busybox","Cmd":["true"],"ExposedPorts":{"http/tcp":{}}}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("invalid exposed port") && body.contains("http/tcp"),
        "{body}"
    );

    // A container recorded before berth kept ExposedPorts: its image's are shown.
    d.ok(&["create", "--name", "old", "web", "sleep", "1000"]);
    let record = d
        .dir
        .join("data/containers")
        .join(d.id("old"))
        .join("config.json");
    d.stop();
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert!(rec["config"]["ExposedPorts"].is_object(), "{rec}");
    rec["config"]
        .as_object_mut()
        .unwrap()
        .remove("ExposedPorts");
    std::fs::write(&record, rec.to_string()).unwrap();
    d.spawn();
    let ports = |name: &str| inspect_json(&d, ".NetworkSettings.Ports", name);
    assert_eq!(
        inspect_json(&d, ".Config.ExposedPorts", "old"),
        r#"{"53/udp":{},"80/tcp":{}}"#
    );
    d.ok(&["start", "old"]);
    assert_eq!(ports("old"), r#"{"53/udp":null,"80/tcp":null}"#);
    d.ok(&["rm", "-f", "old", "ex", "bex"]);

    // A stopped container has no network: nothing listed, as Docker's releaseNetwork.
    d.ok(&["stop", "-t", "0", "web"]);
    assert_eq!(ports("web"), "{}");
    assert!(d
        .ok(&["ps", "-a", "--format", "{{.Names}} {{.Ports}}"])
        .lines()
        .any(|l| l == "web "));
    // Publishing stays refused: berth has no bridge to publish from.
    for flag in ["-p=8080:80", "-P"] {
        let o = d.docker(&["run", "--rm", flag, "busybox", "true"]);
        assert!(!o.status.success(), "{flag}");
        assert!(stderr(&o).contains("publishing ports"), "{}", stderr(&o));
    }
}

/// moby's killWithSignal: a signal that ends the container's run (SIGKILL, its stop signal,
/// or any signal when it has none) thaws a paused container so that the signal arrives;
/// another one stays pending until it is unpaused. `docker stop` likewise. Under `--init`,
/// tini forwards the signal to busybox sleep, which dies of it (128 + the signal).
#[test]
fn kill_and_stop_reach_a_paused_container() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    let run = |name: &str, extra: &[&str]| {
        let mut args = vec!["run", "-d", "--init", "--name", name];
        args.extend_from_slice(extra);
        args.extend(["busybox", "sleep", "1000"]);
        d.ok(&args);
        d.ok(&["pause", name]);
    };
    let state = |name: &str| {
        d.ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            name,
        ])
        .trim()
        .to_string()
    };

    // No stop signal of its own: SIGTERM thaws it and kills it, with an unpause event.
    run("pk", &[]);
    let t0 = now();
    d.ok(&["kill", "-s", "TERM", "pk"]);
    assert_eq!(d.ok(&["wait", "pk"]).trim(), "143");
    assert_eq!(state("pk"), "exited 143");
    let actions = d.events(&t0, &now(), &["container=pk"], "{{.Action}}");
    let actions: Vec<&str> = actions.split_whitespace().collect();
    for a in ["kill", "unpause", "die"] {
        assert!(actions.contains(&a), "{a}: {actions:?}");
    }

    // docker stop: SIGTERM arrives (143), not SIGKILL after the timeout (137).
    run("pst", &[]);
    d.ok(&["stop", "-t", "100", "pst"]);
    assert_eq!(state("pst"), "exited 143");

    // Stop signal HUP: SIGTERM waits while it is paused, and arrives when it is unpaused.
    run("ph", &["--stop-signal", "HUP"]);
    d.ok(&["kill", "-s", "TERM", "ph"]);
    assert_eq!(state("ph"), "paused 0");
    d.ok(&["unpause", "ph"]);
    assert_eq!(d.ok(&["wait", "ph"]).trim(), "143");
    // Its stop signal thaws it.
    run("ph2", &["--stop-signal", "HUP"]);
    d.ok(&["kill", "-s", "HUP", "ph2"]);
    assert_eq!(d.ok(&["wait", "ph2"]).trim(), "129");

    // berth's own client.
    run("pb", &[]);
    d.berth_ok(&["kill", "-s", "TERM", "pb"]);
    assert_eq!(d.berth_ok(&["wait", "pb"]).trim(), "143");
}

/// `docker inspect -f '{{json FIELD}}' NAME`.
fn inspect_json(d: &Daemon, field: &str, name: &str) -> String {
    d.inspect(name, &format!("{{{{json {field}}}}}"))
}
