//! End to end through the real docker CLI against `berth daemon`: `docker commit` (moby's
//! TestUsernsCommit round trip), `docker diff` and `docker export`.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::*;

/// A remapped daemon with busybox, on which container `name` has run `sh -c SCRIPT` (and
/// exited).
fn remapped_after_run(name: &str, script: &str) -> Daemon {
    let d = Daemon::remapped();
    d.import_busybox();
    d.ok(&["run", "--name", name, "busybox", "sh", "-c", script]);
    d
}

#[test]
fn commit_shifts_owners_back_so_the_image_runs_remapped_or_not() {
    let d = remapped_after_run(
        "ctr",
        "mkdir /data && echo x > /data/f && chown -R 1000:1000 /data && rm /etc/group",
    );
    assert_eq!(host_owner(&d.upper("ctr", "/data/f")), (101000, 101000));
    let id = d.ok(&["commit", "-c", "ENV COMMITTED=yes", "ctr", "committed:1"]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    for userns in [None, Some("--userns=host")] {
        let mut args = vec!["run", "--rm"];
        args.extend(userns);
        args.extend([
            "committed:1",
            "sh",
            "-c",
            "stat -c %u:%g /data /data/f; cat /data/f; test -e /etc/group || echo gone; echo $COMMITTED",
        ]);
        assert_eq!(
            d.ok(&args),
            "1000:1000\n1000:1000\nx\ngone\nyes\n",
            "run {userns:?}"
        );
    }
    // One more layer than the parent.
    let layers = |img: &str| {
        d.ok(&["image", "inspect", "-f", "{{len .RootFS.Layers}}", img])
            .trim()
            .to_string()
    };
    assert_eq!(layers("committed:1"), "2");
    assert_eq!(layers("busybox"), "1");
    d.ok(&["rm", "-f", "ctr"]);
}

#[test]
fn diff_and_export() {
    let d = remapped_after_run("ctr", "touch /added && echo more >> /etc/passwd && rm /etc/group && mkdir /newdir && chown 7:7 /added");
    let diff = d.ok(&["diff", "ctr"]);
    for line in [
        "A /added",
        "C /etc",
        "C /etc/passwd",
        "D /etc/group",
        "A /newdir",
    ] {
        assert!(diff.lines().any(|l| l == line), "{line} not in:\n{diff}");
    }
    let tar = d.dir.join("export.tar");
    d.ok(&["export", "-o", tar.to_str().unwrap(), "ctr"]);
    let listing = tar_listing(&tar);
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")) || l.contains(&format!(" {name} -> ")))
            .unwrap_or_else(|| panic!("{name} not in export:\n{listing}"))
            .to_string()
    };
    // Owners in the container's view, not the host's 100000 range.
    assert!(line("added").contains(" 7/7 "), "{}", line("added"));
    assert!(
        line("bin/busybox").contains(" 0/0 "),
        "{}",
        line("bin/busybox")
    );
    assert!(line("bin/sh").contains("-> "), "{}", line("bin/sh"));
    assert!(
        !listing.lines().any(|l| l.ends_with(" etc/group")),
        "{listing}"
    );
    d.ok(&["rm", "-f", "ctr"]);
}

/// The committed image's config blob, as stored (Docker's extra fields included).
fn config_blob(d: &Daemon, image: &str) -> serde_json::Value {
    let id = d.ok(&["image", "inspect", "-f", "{{.Id}}", image]);
    let hex = id.trim().trim_start_matches("sha256:").to_string();
    let raw = std::fs::read(d.dir.join("data/content/sha256").join(hex)).unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// The image's top layer in berth's content store (the uncompressed layer's blob digest
/// is its diff id).
fn top_layer(d: &Daemon, image: &str) -> PathBuf {
    let layers = d.ok(&["image", "inspect", "-f", "{{json .RootFS.Layers}}", image]);
    let layers: Vec<String> = serde_json::from_str(layers.trim()).unwrap();
    let hex = layers.last().unwrap().trim_start_matches("sha256:");
    d.dir.join("data/content/sha256").join(hex)
}

/// `tar -tv --numeric-owner` of the archive at `tar`.
fn tar_listing(tar: &Path) -> String {
    let out = Command::new("tar")
        .arg("-tvf")
        .arg(tar)
        .arg("--numeric-owner")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn commit_takes_the_containers_config_then_the_changes() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    d.ok(&[
        "run",
        "--name",
        "cfg",
        "-e",
        "A=1",
        "-w",
        "/tmp",
        "-u",
        "daemon",
        "--label",
        "l=v",
        "--expose",
        "9090/udp",
        "busybox",
        "sh",
        "-c",
        "echo \"$A $(pwd) $(id -un)\"",
    ]);
    let cid = d.id("cfg");
    d.ok(&["commit", "-m", "a message", "-a", "me", "cfg", "img:1"]);
    // No command given: the container's runs, with its environment, directory and user.
    assert_eq!(d.ok(&["run", "--rm", "img:1"]), "1 /tmp daemon\n");
    let show = |f: &str| {
        d.ok(&["image", "inspect", "-f", f, "img:1"])
            .trim()
            .to_string()
    };
    assert_eq!(
        show("{{json .Config.Cmd}}"),
        r#"["sh","-c","echo \"$A $(pwd) $(id -un)\""]"#
    );
    assert_eq!(show("{{.Config.Labels.l}}"), "v");
    // The container's ExposedPorts (its --expose here), as moby's commit merges them.
    assert_eq!(show("{{json .Config.ExposedPorts}}"), r#"{"9090/udp":{}}"#);
    assert_eq!(show("{{.Author}}"), "me");
    let blob = config_blob(&d, "img:1");
    assert_eq!(blob["container"], cid.as_str());
    assert_eq!(blob["container_config"]["Env"][0], "A=1");
    assert_eq!(
        blob["container_config"]["ExposedPorts"],
        serde_json::json!({"9090/udp": {}})
    );
    assert_eq!(
        blob["parent"].as_str(),
        Some(
            d.ok(&["image", "inspect", "-f", "{{.Id}}", "busybox"])
                .trim()
        )
    );
    let history = blob["history"].as_array().unwrap();
    let last = history.last().unwrap();
    assert_eq!(last["comment"], "a message");
    assert_eq!(last["author"], "me");
    assert_eq!(last["created_by"], "sh -c echo \"$A $(pwd) $(id -un)\"");

    // Changes go on top of the container's config.
    d.ok(&[
        "commit",
        "-c",
        "ENV A=2",
        "-c",
        r#"CMD ["sh", "-c", "echo changed $A"]"#,
        "cfg",
        "img:2",
    ]);
    assert_eq!(d.ok(&["run", "--rm", "img:2"]), "changed 2\n");
    assert_eq!(
        d.ok(&["run", "--rm", "img:2", "sh", "-c", "pwd; id -un"]),
        "/tmp\ndaemon\n"
    );

    // A config in the request body is the start; what it lacks comes from the container.
    let (status, body) = d.http(
        "POST",
        "/commit?container=cfg&repo=img&tag=3",
        r#"{"Env":["B=2"],"Cmd":["sh","-c","echo $A$B"]}"#,
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(d.ok(&["run", "--rm", "img:3"]), "12\n");
    // A container of the committed image exposes what the image does.
    d.ok(&["create", "--name", "from3", "img:3"]);
    assert_eq!(
        d.inspect("from3", "{{json .Config.ExposedPorts}}"),
        r#"{"9090/udp":{}}"#
    );
    d.ok(&["rm", "from3"]);
    d.ok(&["rm", "-f", "cfg"]);
}

#[test]
fn commit_pauses_a_running_container_unless_told_not_to() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "busybox",
        "sh",
        "-c",
        "echo up > /up; while true; do sleep 1; done",
    ]);
    let status = || d.inspect("live", "{{.State.Status}}");
    let actions = |t0: &str, t1: &str| {
        d.events(t0, t1, &["container=live"], "{{.Action}}")
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    // The loop has written /up once the container runs its loop (bounded wait).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !d.upper("live", "/up").exists() {
        assert!(std::time::Instant::now() < deadline, "/up never written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let t0 = now();
    d.ok(&["commit", "live", "snap:1"]);
    let t1 = now();
    assert_eq!(actions(&t0, &t1), ["pause", "commit", "unpause"]);
    assert_eq!(status(), "running");
    assert_eq!(d.ok(&["run", "--rm", "snap:1", "cat", "/up"]), "up\n");

    let t0 = now();
    d.ok(&["commit", "--pause=false", "live", "snap:2"]);
    let t1 = now();
    assert_eq!(actions(&t0, &t1), ["commit"]);
    assert_eq!(status(), "running");

    // A container the user paused stays paused.
    d.ok(&["pause", "live"]);
    let t0 = now();
    d.ok(&["commit", "live", "snap:3"]);
    let t1 = now();
    assert_eq!(actions(&t0, &t1), ["commit"]);
    assert_eq!(status(), "paused");
    d.ok(&["unpause", "live"]);

    // berth's own client: --pause=false too.
    let t0 = now();
    d.berth_ok(&["commit", "--pause=false", "live", "snap:4"]);
    let t1 = now();
    assert_eq!(actions(&t0, &t1), ["commit"]);
    d.ok(&["rm", "-f", "live"]);
}

/// A revision 3 file capability (cap_net_bind_service, effective) for namespace root
/// `rootid`: what the kernel stores when root in a remapped container runs setcap.
fn cap_v3(rootid: u32) -> Vec<u8> {
    let mut v = 0x0300_0001u32.to_le_bytes().to_vec();
    v.extend_from_slice(&(1u32 << 10).to_le_bytes());
    v.extend_from_slice(&[0; 12]);
    v.extend_from_slice(&rootid.to_le_bytes());
    v
}

#[test]
fn file_capabilities_survive_commit_under_remap() {
    let d = Daemon::remapped();
    d.import_busybox();
    d.ok(&[
        "run",
        "--name",
        "caps",
        "busybox",
        "cp",
        "/bin/busybox",
        "/busybox-cap",
    ]);
    let upper = d.upper("caps", "/busybox-cap");
    rustix::fs::setxattr(
        &upper,
        "security.capability",
        &cap_v3(100000),
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    d.ok(&["commit", "caps", "caps:1"]);

    // In the layer: revision 2 (no namespace root), the same sets.
    let blob = std::fs::File::open(top_layer(&d, "caps:1")).unwrap();
    let mut ar = tar::Archive::new(blob);
    let mut cap = None;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("busybox-cap") {
            for x in e.pax_extensions().unwrap().into_iter().flatten() {
                let x = x.unwrap();
                if x.key().unwrap() == "SCHILY.xattr.security.capability" {
                    cap = Some(x.value_bytes().to_vec());
                }
            }
        }
    }
    let mut v2 = 0x0200_0001u32.to_le_bytes().to_vec();
    v2.extend_from_slice(&cap_v3(0)[4..20]);
    assert_eq!(
        cap.as_deref(),
        Some(&v2[..]),
        "security.capability in the layer"
    );

    // The kernel honours it when the image runs, remapped or not: a non-root user gets
    // cap_net_bind_service (bit 10) from the file.
    for userns in [None, Some("--userns=host")] {
        let mut args = vec!["run", "--rm", "-u", "1000"];
        args.extend(userns);
        args.extend([
            "caps:1",
            "/busybox-cap",
            "grep",
            "CapEff",
            "/proc/self/status",
        ]);
        let out = d.ok(&args);
        assert!(
            out.trim().ends_with("0000000000000400"),
            "{userns:?}: {out}"
        );
    }
    d.ok(&["rm", "-f", "caps"]);
}

#[test]
fn hard_links_stay_links_in_commit_and_export() {
    let d = remapped_after_run(
        "links",
        "echo data > /h1 && mkdir /d && ln /h1 /d/h2 && ln /h1 /h3",
    );
    d.ok(&["commit", "links", "links:1"]);
    let listing = tar_listing(&top_layer(&d, "links:1"));
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.contains(&format!(" {name}")))
            .unwrap_or_else(|| panic!("{name} not in layer:\n{listing}"))
            .to_string()
    };
    // Names are written sorted: d/h2 comes first and holds the data.
    assert!(line("d/h2").starts_with('-'), "{listing}");
    assert!(line("h1").ends_with("h1 link to d/h2"), "{listing}");
    assert!(line("h3").ends_with("h3 link to d/h2"), "{listing}");
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "links:1",
            "sh",
            "-c",
            "cat /d/h2; stat -c %h /h1"
        ]),
        "data\n3\n"
    );

    let tar = d.dir.join("export.tar");
    d.ok(&["export", "-o", tar.to_str().unwrap(), "links"]);
    let listing = tar_listing(&tar);
    assert!(
        listing.lines().any(|l| l.ends_with("h1 link to d/h2")),
        "{listing}"
    );
    d.ok(&["rm", "-f", "links"]);
}

#[test]
fn bad_references_and_changes_write_nothing() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    d.ok(&["run", "--name", "bad", "busybox", "touch", "/x"]);
    let images = || d.ok(&["images", "-aq"]);
    let before = images();
    for (query, why) in [
        ("repo=Bad&tag=x", "invalid reference"),
        (
            "repo=a%40sha256%3A1111111111111111111111111111111111111111111111111111111111111111",
            "digest",
        ),
        ("repo=ok&changes=RUN%20x", "RUN"),
        ("repo=ok&changes=EXPOSE%20999999", "65535"),
    ] {
        let (status, body) = d.http("POST", &format!("/commit?container=bad&{query}"), "");
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(why), "{query}: {body}");
    }
    let (status, body) = d.http("POST", "/commit?container=bad", r#"{"Cmd": 5}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Cmd"), "{body}");
    let (status, body) = d.http("POST", "/commit?container=nope", "");
    assert_eq!(status, 404, "{body}");
    assert_eq!(images(), before, "no image was added");
    let o = d.docker(&["commit", "bad", "Not:Valid:ref"]);
    assert!(!o.status.success());
    assert_eq!(images(), before, "no image was added");
    // As Docker, a forced rmi of a container's image only untags it: commit still works.
    d.ok(&["rmi", "-f", "busybox", "alpine"]);
    d.ok(&["commit", "bad", "after-rmi:1"]);
    assert_eq!(d.ok(&["run", "--rm", "after-rmi:1", "ls", "/x"]), "/x\n");
    d.ok(&["rm", "-f", "bad"]);
}

/// `image inspect` shows what made an image as Docker does: the commit's message
/// (`Comment`, from the last history entry) and the image committed on (`Parent`); an
/// imported image has its import message and no parent. A commit with a reference logs the
/// image's `tag` before the container's `commit`, as dockerd does.
#[test]
fn committed_image_shows_comment_and_parent_and_is_tagged_before_the_commit_event() {
    let d = Daemon::start(None, None);
    d.import_busybox_as("busybox", &["-m", "from a tarball"]);
    let base = d
        .ok(&["image", "inspect", "-f", "{{.Id}}", "busybox"])
        .trim()
        .to_string();
    d.ok(&["run", "--name", "src", "busybox", "touch", "/x"]);
    let cid = d.id("src");

    let t0 = now();
    let id = d.ok(&["commit", "-m", "the message", "src", "child:1"]);
    let t1 = now();
    let id = id.trim();
    let show = |img: &str| d.ok(&["image", "inspect", "-f", "{{.Comment}}|{{.Parent}}", img]);
    assert_eq!(show("child:1"), format!("the message|{base}\n"));
    assert_eq!(show("busybox"), "from a tarball|\n");
    // No message: no comment, whatever the parent's was.
    d.ok(&["commit", "src", "child:2"]);
    assert_eq!(show("child:2"), format!("|{base}\n"));
    // The list (API) gives the parent too.
    let (status, body) = d.http("GET", "/images/json", "");
    assert_eq!(status, 200, "{body}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let parent_of = |img: &str| {
        list.iter()
            .find(|i| i["Id"] == img)
            .unwrap_or_else(|| panic!("{img} not in {body}"))["ParentId"]
            .clone()
    };
    assert_eq!(parent_of(id), base.as_str());
    assert_eq!(parent_of(&base), "");

    let events = d.events(
        &t0,
        &t1,
        &[],
        "{{.Type}} {{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}}",
    );
    assert_eq!(
        events.lines().collect::<Vec<_>>(),
        [
            format!("image tag {id} child:1"),
            format!("container commit {cid} src"),
        ],
        "{events}"
    );
    d.ok(&["rm", "-f", "src"]);
}
