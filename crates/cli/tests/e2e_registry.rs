//! End to end with a real registry: Debian's docker-registry 2.8 on 127.0.0.1, a berth
//! daemon on a temporary socket and roots, and the real docker CLI and `berth` as clients:
//! push, pull, run an image pulled on demand, login and logout.

use berth_testkit::registry::{TestRegistry, PASSWORD, USER};

mod common;
use common::*;

#[test]
fn docker_push_pull_and_run_through_berth() {
    let reg = TestRegistry::start(false);
    let d = Daemon::start(None, None);
    let tar = berth_testkit::busybox_tar();
    d.ok(&["import", tar.to_str().unwrap(), "busybox"]);
    let image = format!("{}/busybox:latest", reg.addr);
    d.ok(&["tag", "busybox", &image]);
    let out = d.ok(&["push", &image]);
    assert!(out.contains("latest: digest: sha256:"), "{out}");
    let id = d.ok(&["inspect", "--format", "{{.Id}}", "busybox"]);

    // Gone locally, pulled back by docker, run.
    d.ok(&["rmi", &image]);
    d.ok(&["rmi", "busybox"]);
    let out = d.ok(&["pull", &image]);
    assert!(out.contains("Pull complete"), "{out}");
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    assert_eq!(d.ok(&["inspect", "--format", "{{.Id}}", &image]), id);
    let out = d.ok(&["run", "--rm", &image, "echo", "pulled"]);
    assert_eq!(out.trim(), "pulled");
    let out = d.ok(&["pull", &image]);
    assert!(out.contains("Image is up to date"), "{out}");

    // `docker run` of an image that is only in the registry pulls it first.
    let other = format!("{}/other/busybox:v2", reg.addr);
    d.ok(&["tag", &image, &other]);
    d.ok(&["push", &other]);
    d.ok(&["rmi", &other]);
    let out = d.ok(&["run", "--rm", &other, "echo", "on demand"]);
    assert_eq!(out.trim(), "on demand");

    // Every tag of a repository.
    let out = d.berth_ok(&["pull", "--all-tags", &format!("{}/other/busybox", reg.addr)]);
    assert!(out.contains("Status: Image is up to date for"), "{out}");

    // berth's own client, by digest.
    let digest = d.ok(&["inspect", "--format", "{{index .RepoDigests 0}}", &image]);
    d.ok(&["rmi", "-f", &image, &other]);
    let out = d.berth_ok(&["pull", digest.trim()]);
    assert!(out.contains("sha256:"), "{out}");
    // `berth run` pulls a missing image too; the progress goes to stderr, not the output.
    let out = d.berth_ok(&["run", "--rm", &other, "echo", "berth pulled"]);
    assert_eq!(out.trim(), "berth pulled");
    let missing = d.docker(&["pull", &format!("{}/no/such:thing", reg.addr)]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn login_push_pull_logout_with_basic_auth() {
    let reg = TestRegistry::start(true);
    let d = Daemon::start(None, None);
    let tar = berth_testkit::busybox_tar();
    d.ok(&["import", tar.to_str().unwrap(), "busybox"]);
    let image = format!("{}/private/busybox:latest", reg.addr);
    d.ok(&["tag", "busybox", &image]);

    let out = d.docker(&["push", &image]);
    assert!(!out.status.success(), "an anonymous push is refused");

    let login = ["login", "-u", USER, "--password-stdin", &reg.addr];
    let bad = d.berth_stdin(&login, Some(b"wrong"));
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("wrong user name or password"), "{err}");
    assert!(!err.contains("wrong\n") && !err.contains(PASSWORD), "{err}");

    let out = d.succeeded(
        "berth login",
        d.berth_stdin(&login, Some(PASSWORD.as_bytes())),
    );
    assert!(out.contains("Login Succeeded"), "{out}");
    let cfg = std::fs::read_to_string(d.dir.join("docker-config/config.json")).unwrap();
    assert!(cfg.contains(&reg.addr) && !cfg.contains(PASSWORD), "{cfg}");

    // The docker CLI reads the same config.json and sends X-Registry-Auth.
    d.ok(&["push", &image]);
    d.ok(&["rmi", &image]);
    d.berth_ok(&["pull", &image]);
    let out = d.ok(&["run", "--rm", &image, "echo", "private"]);
    assert_eq!(out.trim(), "private");

    let out = d.berth_ok(&["logout", &reg.addr]);
    assert!(out.contains("Removing login credentials"), "{out}");
    // Removing the pulled tag takes its `name@sha256:` too (as dockerd); `busybox` keeps it.
    d.ok(&["rmi", &image]);
    let digests = d.ok(&["inspect", "--format", "{{.RepoDigests}}", "busybox"]);
    assert_eq!(digests.trim(), "[]");
    // (Not `docker pull`: on a 401 the docker CLI prompts for a login, as with dockerd.)
    let out = d.berth(&["pull", &image]);
    assert!(!out.status.success(), "logged out: pull refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("berth login"), "{err}");
}
