//! End to end through the real docker CLI against `berth daemon`: `docker events` with
//! since/until replay and filters, a live stream, image events (tag, untag, delete, import,
//! load, save, push and pull from a real registry), and `berth events`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use berth_testkit::registry::TestRegistry;

mod common;
use common::*;

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

fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            e["Actor"]["Attributes"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

const JSON: &str = "{{json .}}";

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
    let out = d.events(&t0, &t1, &["container=ev1"], JSON);
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
    let out = d.events(
        &t0,
        &t1,
        &["event=die", "label=tier=front"],
        "{{.Action}} {{.Actor.Attributes.name}}",
    );
    assert_eq!(out.trim(), "die ev1");
    // A bad filter is refused with the reason.
    let o = d.docker(&["events", "--until", &t1, "--filter", "colour=red"]);
    assert_fails(&o, "invalid filter");
}

#[test]
fn live_stream_sees_a_start_and_images_tag_untag() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    let mut child = Command::new(DOCKER)
        .arg("-H")
        .arg(d.host())
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
    let out = d.events(&t0, &t1, &["type=image"], JSON);
    let evs = json_lines(&out);
    assert_eq!(actions(&evs), ["tag", "untag", "save"], "{out}");
    let id = d.inspect("busybox", "{{.Id}}");
    let id = id.as_str();
    for e in &evs {
        assert_eq!(e["Actor"]["ID"], id, "{e}");
    }
    // As dockerd names them: the new tag for `tag`, the image id for `untag` and `save`.
    assert_eq!(names(&evs), ["ev/tagged:1", id, id], "{out}");
    d.ok(&["rm", "live"]);

    // berth's own client: Docker's default line.
    let out = d.berth_ok(&["events", "--since", &t0, "--until", &t1, "-f", "event=tag"]);
    let line = out.trim();
    assert!(
        line.ends_with(&format!(" image tag {id} (name=ev/tagged:1)")),
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
    let out = d.events(
        &t0,
        &t1,
        &[
            "container=ex",
            "event=exec_create",
            "event=exec_start",
            "event=exec_die",
        ],
        JSON,
    );
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
    let out = d.events(
        &t0,
        &t1,
        &["container=ex", "event=commit"],
        "{{.Actor.Attributes.imageID}}",
    );
    assert_eq!(out.trim(), image_id.trim());
    let out = d.events(
        &t0,
        &t1,
        &["volume=evvol"],
        "{{.Type}} {{.Action}} {{.Actor.ID}}",
    );
    assert_eq!(
        out.trim(),
        "volume create evvol\nvolume mount evvol\nvolume destroy evvol",
        "{out}"
    );
}

/// Every image operation's event comes from the engine, with dockerd's actor and `name`:
/// the image id for most, the reference for push and pull, the image's labels while it
/// exists. `--until` alone replays the buffer too, as in Docker.
#[test]
fn image_events_import_tag_push_untag_pull_save_delete_load() {
    let reg = TestRegistry::start(false);
    let d = Daemon::start(None, None);
    let saved = d.dir.join("saved.tar");
    let remote = format!("{}/evbox:1", reg.addr);
    let repo = format!("{}/evbox", reg.addr);
    let t0 = now();
    d.import_busybox_as("evbox", &["-c", "LABEL tier=front"]);
    let id = d.inspect("evbox", "{{.Id}}");
    let id = id.as_str();
    d.ok(&["tag", "evbox", &remote]);
    d.ok(&["push", &remote]);
    d.ok(&["rmi", &remote]);
    d.ok(&["pull", &remote]);
    d.ok(&["save", "-o", saved.to_str().unwrap(), "evbox"]);
    d.ok(&["rmi", "-f", id]);
    d.ok(&["load", "-i", saved.to_str().unwrap()]);
    let t1 = now();

    let out = d.events(&t0, &t1, &["type=image"], JSON);
    let evs = json_lines(&out);
    let mut acts = actions(&evs);
    // `rmi -f` untags each reference (evbox, the registry tag and its digest) once.
    acts.dedup();
    assert_eq!(
        acts,
        ["tag", "import", "tag", "push", "untag", "pull", "save", "untag", "delete", "load"],
        "{out}"
    );
    for e in &evs {
        assert_eq!(e["Type"], "image", "{e}");
        assert_eq!(e["status"], e["Action"], "{e}");
        assert_eq!(e["id"], e["Actor"]["ID"], "{e}");
        let attrs = &e["Actor"]["Attributes"];
        let (want_id, want_name) = match e["Action"].as_str().unwrap() {
            "tag" if attrs["name"] == "evbox:latest" => (id, "evbox:latest"),
            "tag" => (id, remote.as_str()),
            "push" | "pull" => (remote.as_str(), repo.as_str()),
            _ => (id, id),
        };
        assert_eq!(e["Actor"]["ID"], want_id, "{e}");
        assert_eq!(attrs["name"], want_name, "{e}");
        // The image's labels, except once it is deleted.
        let labelled = e["Action"] != "delete";
        assert_eq!(attrs["tier"] == "front", labelled, "{e}");
    }

    // The image filter takes a repository without its tag, as dockerd's does.
    let out = d.events(&t0, &t1, &[&format!("image={repo}")], "{{.Action}}");
    assert_eq!(out, "tag\npush\npull\n");

    // `--until` alone replays what the buffer holds up to then.
    let out = d.ok(&[
        "events",
        "--until",
        &t1,
        "--filter",
        "type=image",
        "--filter",
        "event=load",
        "--format",
        "{{.Action}} {{.Actor.ID}}",
    ]);
    assert_eq!(out.trim(), format!("load {id}"));
}
