//! Pure cgroup v2: in a private mount namespace where /sys/fs/cgroup is a cgroup2 mount
//! (this machine's controllers are bound to v1, so only placement and the cgroup
//! namespace can be checked here; the v2 limit files are unit-tested on a fake tree).

mod common;

use std::process::Command;

use common::{cid, ok_stdout, Bundle};

#[test]
fn pure_v2_layout_places_the_container_and_its_cgroup_namespace() {
    let mut b = Bundle::new("brt-v2", true);
    b.script("cat /proc/self/cgroup; ls /sys/fs/cgroup/cgroup.procs");
    b.write();
    let id = cid("v2");
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t cgroup2 none /sys/fs/cgroup && {} --root {} run --bundle {} {}",
            env!("CARGO_BIN_EXE_berth-runtime"),
            b.state_root.display(),
            b.bundle.display(),
            id
        ))
        .output()
        .unwrap();
    let text = ok_stdout(&out);
    // Its own cgroup is the root of its cgroup namespace, and it sees a fresh cgroup2 mount.
    // (The v1 hierarchies are listed too: they exist kernel-wide, mounted or not.)
    assert!(text.lines().any(|l| l == "0::/"), "{text}");
    assert!(text.contains("/sys/fs/cgroup/cgroup.procs"), "{text}");
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/unified/berth-runtime/{id}")).exists());
}
