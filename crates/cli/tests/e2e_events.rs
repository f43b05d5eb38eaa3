//! End to end through the real docker CLI against `berth daemon`: `docker events` with
//! since/until replay and filters, a live stream, image tag/untag events, and `berth events`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

mod common;
use common::*;

fn now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn actions(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["Action"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn run_replays_create_attach_start_die_destroy() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    let t0 = now();
    d.ok(&[
        "run",
        "--name",
        "ev1",
        "--label",
        "tier=front",
        "busybox",
        "true",
    ]);
    // Another container's events stay out of the filtered replay.
    d.ok(&["create", "--name", "ev2", "busybox", "true"]);
    d.ok(&["rm", "ev1", "ev2"]);
    let t1 = now();
    let out = d.ok(&[
        "events",
        "--since",
        &t0,
        "--until",
        &t1,
        "--filter",
        "container=ev1",
        "--format",
        "{{json .}}",
    ]);
    let evs = json_lines(&out);
    assert_eq!(
        actions(&evs),
        ["create", "attach", "start", "die", "destroy"],
        "{out}"
    );
    assert!(
        !d.docker(&["inspect", "ev1"]).status.success(),
        "ev1 is gone"
    );
    for e in &evs {
        assert_eq!(e["Type"], "container", "{e}");
        assert_eq!(e["scope"], "local", "{e}");
        assert_eq!(e["Actor"]["Attributes"]["name"], "ev1", "{e}");
        assert_eq!(e["Actor"]["Attributes"]["image"], "busybox", "{e}");
        assert_eq!(e["Actor"]["Attributes"]["tier"], "front", "{e}");
        assert_eq!(e["from"], "busybox", "{e}");
        assert_eq!(e["status"], e["Action"], "{e}");
        assert_eq!(e["id"], e["Actor"]["ID"], "{e}");
        assert!(e["timeNano"].as_i64().unwrap() / 1_000_000_000 == e["time"].as_i64().unwrap());
    }
    assert_eq!(evs[3]["Actor"]["Attributes"]["exitCode"], "0");
    // Filters combine: only the die events, across both containers by label.
    let out = d.ok(&[
        "events",
        "--since",
        &t0,
        "--until",
        &t1,
        "--filter",
        "event=die",
        "--filter",
        "label=tier=front",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
    ]);
    assert_eq!(out.trim(), "die ev1");
    // A bad filter is refused with the reason.
    let o = d.docker(&["events", "--until", &t1, "--filter", "colour=red"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("invalid filter"), "{}", stderr(&o));
}

#[test]
fn live_stream_sees_a_start_and_images_tag_untag() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    let mut child = Command::new(DOCKER)
        .arg("-H")
        .arg(format!("unix://{}", d.sock.display()))
        .args([
            "events",
            "--filter",
            "event=start",
            "--format",
            "{{json .}}",
        ])
        .env_remove("DOCKER_HOST")
        .env("DOCKER_CONFIG", d.dir.join("docker-config"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The stream is subscribed once the daemon answered; a short pause lets docker connect
    // (a miss would show as a failure below, never a false pass).
    std::thread::sleep(Duration::from_secs(1));
    d.ok(&["run", "--name", "live", "busybox", "true"]);
    let line = rx.recv_timeout(Duration::from_secs(60));
    // Kills (by pid) only the docker process this test started.
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("a start event within 60 s").unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["Action"], "start", "{line}");
    assert_eq!(v["Actor"]["Attributes"]["name"], "live", "{line}");

    let t0 = now();
    d.ok(&["tag", "busybox", "ev/tagged:1"]);
    d.ok(&["rmi", "ev/tagged:1"]);
    let saved = d.dir.join("saved.tar");
    d.ok(&["save", "-o", saved.to_str().unwrap(), "busybox"]);
    let t1 = now();
    let out = d.ok(&[
        "events",
        "--since",
        &t0,
        "--until",
        &t1,
        "--filter",
        "type=image",
        "--format",
        "{{json .}}",
    ]);
    let evs = json_lines(&out);
    assert_eq!(actions(&evs), ["tag", "untag", "save"], "{out}");
    let id = d.ok(&["inspect", "-f", "{{.Id}}", "busybox"]);
    for e in &evs {
        assert_eq!(e["Actor"]["ID"], id.trim(), "{e}");
    }
    let names: Vec<&str> = evs
        .iter()
        .map(|e| e["Actor"]["Attributes"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["ev/tagged:1", "ev/tagged:1", "busybox:latest"],
        "{out}"
    );
    d.ok(&["rm", "live"]);

    // berth's own client: Docker's default line.
    let o = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("-H")
        .arg(format!("unix://{}", d.sock.display()))
        .args(["events", "--since", &t0, "--until", &t1, "-f", "event=tag"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.trim();
    assert!(
        line.ends_with(&format!(" image tag {} (name=ev/tagged:1)", id.trim())),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1, "{out}");
}

#[test]
fn exec_and_volume_events() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    let t0 = now();
    d.ok(&["run", "-d", "--name", "ex", "busybox", "sleep", "1000"]);
    let o = d.docker(&["exec", "ex", "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let image_id = d.ok(&["commit", "ex", "evimg"]);
    d.ok(&["rm", "-f", "ex"]);
    d.ok(&["volume", "create", "evvol"]);
    d.ok(&["run", "--rm", "-v", "evvol:/data:ro", "busybox", "true"]);
    d.ok(&["volume", "rm", "evvol"]);
    let t1 = now();
    let out = d.ok(&[
        "events",
        "--since",
        &t0,
        "--until",
        &t1,
        "--filter",
        "container=ex",
        "--filter",
        "event=exec_create",
        "--filter",
        "event=exec_start",
        "--filter",
        "event=exec_die",
        "--format",
        "{{json .}}",
    ]);
    let evs = json_lines(&out);
    assert_eq!(
        actions(&evs),
        [
            "exec_create: sh -c exit 3",
            "exec_start: sh -c exit 3",
            "exec_die"
        ],
        "{out}"
    );
    assert_eq!(evs[2]["Actor"]["Attributes"]["exitCode"], "3", "{out}");
    let exec_id = &evs[0]["Actor"]["Attributes"]["execID"];
    assert!(evs
        .iter()
        .all(|e| &e["Actor"]["Attributes"]["execID"] == exec_id));
    let out = d.ok(&[
        "events",
        "--since",
        &t0,
        "--until",
        &t1,
        "--filter",
        "container=ex",
        "--filter",
        "event=commit",
        "--format",
        "{{.Actor.Attributes.imageID}}",
    ]);
    assert_eq!(out.trim(), image_id.trim());
    let out = d.ok(&[
        "events",
        "--since",
        &t0,
        "--until",
        &t1,
        "--filter",
        "volume=evvol",
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.ID}}",
    ]);
    assert_eq!(
        out.trim(),
        "volume create evvol\nvolume mount evvol\nvolume destroy evvol",
        "{out}"
    );
}
