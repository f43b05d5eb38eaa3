//! Pure cgroup v2: in a private mount namespace where /sys/fs/cgroup is a cgroup2 mount
//! (this machine's controllers are bound to v1, so only placement and the cgroup
//! namespace can be checked here; the v2 limit files are unit-tested on a fake tree).

mod common;

use std::process::Command;

use serde_json::json;

use common::{cid, ok_stdout, Bundle};

/// `berth-runtime run` of the bundle in a private mount namespace where /sys/fs/cgroup is
/// a cgroup2 mount (the layout a pure v2 host has).
fn run_on_pure_v2(b: &Bundle, id: &str) -> std::process::Output {
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t cgroup2 none /sys/fs/cgroup && {} --root {} run --bundle {} {}",
            env!("CARGO_BIN_EXE_berth-runtime"),
            b.state_root.display(),
            b.bundle.display(),
            id
        ))
        .output()
        .unwrap()
}

#[test]
fn pure_v2_layout_places_the_container_and_its_cgroup_namespace() {
    let mut b = Bundle::new("brt-v2", true);
    b.script("cat /proc/self/cgroup; ls /sys/fs/cgroup/cgroup.procs");
    b.write();
    let id = cid("v2");
    let out = run_on_pure_v2(&b, &id);
    let text = ok_stdout(&out);
    // Its own cgroup is the root of its cgroup namespace, and it sees a fresh cgroup2 mount.
    // (The v1 hierarchies are listed too: they exist kernel-wide, mounted or not.)
    assert!(text.lines().any(|l| l == "0::/"), "{text}");
    assert!(text.contains("/sys/fs/cgroup/cgroup.procs"), "{text}");
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/unified/berth-runtime/{id}")).exists());
}

/// On cgroup v2 the device rules are a BPF program on the container's cgroup: the rules'
/// last match decides (opening /dev/mytun to read allowed, to write denied), devices no
/// rule allows stay closed (/dev/myloop), the default devices stay open.
#[test]
fn pure_v2_device_rules_are_enforced_by_a_bpf_program() {
    let mut b = Bundle::new("brt-v2dev", false);
    b.config["linux"]["devices"] = json!([
        {"path": "/dev/mytun", "type": "c", "major": 10, "minor": 200, "fileMode": 0o666},
        {"path": "/dev/myloop", "type": "b", "major": 7, "minor": 0, "fileMode": 0o600}
    ]);
    b.config["linux"]["resources"]["devices"] = json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rw"},
        {"allow": false, "type": "c", "major": 10, "minor": 200, "access": "w"}
    ]);
    b.script(
        "true < /dev/mytun && echo READ_OK; \
         true > /dev/mytun || echo WRITE_DENIED; \
         head -c1 /dev/myloop >/dev/null 2>&1 || echo LOOP_DENIED; \
         echo x > /dev/null && echo DEFAULT_OK",
    );
    b.write();
    let id = cid("v2dev");
    let out = run_on_pure_v2(&b, &id);
    let text = ok_stdout(&out);
    for want in ["READ_OK", "WRITE_DENIED", "LOOP_DENIED", "DEFAULT_OK"] {
        assert!(text.lines().any(|l| l == want), "{want} not in:\n{text}");
    }
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/unified/berth-runtime/{id}")).exists());
}
