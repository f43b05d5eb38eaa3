//! Confinement: masked and read-only paths, capabilities, seccomp, cgroup limits, the
//! terminal, descriptors, the process's user and environment, mount target resolution.

mod common;

use std::process::Command;

use common::{cid, ok_stdout, Bundle};
use serde_json::json;

#[test]
fn masked_paths_cannot_be_read() {
    let mut b = Bundle::new("brt-mask", true);
    std::fs::write(b.bundle.join("rootfs/etc/secret"), "s3cret\n").unwrap();
    for p in ["/etc/secret", "/root"] {
        b.config["linux"]["maskedPaths"]
            .as_array_mut()
            .unwrap()
            .push(json!(p));
    }
    b.config["linux"]["readonlyPaths"]
        .as_array_mut()
        .unwrap()
        .push(json!("/home"));
    b.script(
        "echo kcore=$(cat /proc/kcore 2>/dev/null | wc -c) keys=$(wc -c < /proc/keys) secret=$(cat /etc/secret | wc -c); \
         echo root=$(ls -A /root | wc -l); touch /root/x 2>/dev/null && echo ROOT_WRITABLE; \
         touch /home/x 2>/dev/null && echo HOME_WRITABLE; touch /etc/x && echo ETC_WRITABLE",
    );
    let out = ok_stdout(&b.run(&cid("mask")));
    assert!(out.contains("kcore=0 keys=0 secret=0"), "{out}");
    assert!(out.contains("root=0"), "{out}");
    assert!(
        !out.contains("ROOT_WRITABLE") && !out.contains("HOME_WRITABLE"),
        "{out}"
    );
    assert!(out.contains("ETC_WRITABLE"), "{out}");
}

#[test]
fn readonly_root() {
    let mut b = Bundle::new("brt-ro", true);
    b.config["root"]["readonly"] = json!(true);
    b.script("touch /x 2>&1; touch /dev/shm/y && echo SHM_OK");
    let out = ok_stdout(&b.run(&cid("ro")));
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("SHM_OK"), "{out}");
}

fn status_caps(out: &str) -> Vec<(String, u64)> {
    out.lines()
        .filter(|l| l.starts_with("Cap"))
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.to_string(), u64::from_str_radix(v.trim(), 16).unwrap())
        })
        .collect()
}

const CHOWN: u64 = 1 << 0;
const KILL: u64 = 1 << 5;
const NET_BIND_SERVICE: u64 = 1 << 10;

#[test]
fn capability_sets_equal_the_config_for_root() {
    let mut b = Bundle::new("brt-caps", true);
    let set = json!(["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    b.config["process"]["capabilities"] = json!({
        "bounding": set, "permitted": set, "effective": set, "inheritable": ["CAP_KILL"], "ambient": []
    });
    b.script("grep ^Cap /proc/self/status");
    let caps = status_caps(&ok_stdout(&b.run(&cid("caps"))));
    let all = CHOWN | KILL | NET_BIND_SERVICE;
    let want = [
        ("CapInh", KILL),
        ("CapPrm", all),
        ("CapEff", all),
        ("CapBnd", all),
        ("CapAmb", 0),
    ];
    let want: Vec<(String, u64)> = want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(caps, want);
}

/// The capability bits of this (the test's) process's bounding set.
fn own_bounding_set() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status_caps(&status)
        .into_iter()
        .find(|(k, _)| k == "CapBnd")
        .unwrap()
        .1
}

const SYS_RESOURCE: u64 = 1 << 24;

/// Without a user namespace, a capability the runtime does not hold itself (this VM
/// withholds CAP_SYS_RESOURCE from every process) cannot be granted: the container still
/// runs, with what the runtime holds. It used to exit 127 (capset: EPERM).
#[test]
fn capabilities_the_runtime_lacks_are_left_out_not_fatal() {
    let mut b = Bundle::new("brt-capsres", false);
    let set = json!(["CAP_KILL", "CAP_SYS_RESOURCE"]);
    b.config["process"]["capabilities"] = json!({
        "bounding": set, "permitted": set, "effective": set, "inheritable": set, "ambient": set
    });
    b.config["process"]["args"] = json!(["true"]);
    let out = b.run(&cid("capsres"));
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    b.script("grep ^Cap /proc/self/status");
    let want = (KILL | SYS_RESOURCE) & own_bounding_set();
    for (k, got) in status_caps(&ok_stdout(&b.run(&cid("capsres2")))) {
        assert_eq!(got, want, "{k}");
    }
}

#[test]
fn capability_sets_equal_the_config_for_a_user_with_ambient() {
    let mut b = Bundle::new("brt-caps2", true);
    let set = json!(["CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    b.config["process"]["capabilities"] = json!({
        "bounding": set, "permitted": set, "effective": set, "inheritable": set, "ambient": set
    });
    b.config["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    b.script("id -u; grep ^Cap /proc/self/status");
    let out = ok_stdout(&b.run(&cid("caps2")));
    assert!(out.starts_with("1000\n"), "{out}");
    let v = KILL | NET_BIND_SERVICE;
    for (k, got) in status_caps(&out) {
        assert_eq!(got, v, "{k}");
    }
}

#[test]
fn seccomp_rule_returns_its_errno() {
    let mut b = Bundle::new("brt-seccomp", true);
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 122},
            {"names": ["fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 100,
             "args": [{"index": 2, "value": 511, "op": "SCMP_CMP_EQ"}]},
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 100,
             "args": [{"index": 1, "value": 511, "op": "SCMP_CMP_EQ"}]}
        ]
    });
    b.script("mkdir /tmp/d 2>&1; touch /tmp/f; chmod 777 /tmp/f 2>&1; chmod 700 /tmp/f && echo CHMOD_700_OK");
    let out = ok_stdout(&b.run(&cid("seccomp")));
    assert!(out.contains("Disk quota exceeded"), "{out}");
    assert!(out.contains("Network is down"), "{out}");
    assert!(out.contains("CHMOD_700_OK"), "{out}");
}

#[test]
fn seccomp_masked_argument_condition() {
    // chmod is refused only when the new mode has the others-write bit (mask 0o002 equals
    // 0o002), on every x86 ABI as Docker's profile lists them.
    let mut b = Bundle::new("brt-seccomp-mask", true);
    let masked = |index: u32| json!([{"index": index, "value": 2, "valueTwo": 2, "op": "SCMP_CMP_MASKED_EQ"}]);
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 100, "args": masked(1)},
            {"names": ["fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 100,
             "args": masked(2)}
        ]
    });
    b.script(
        "touch /tmp/f; chmod 757 /tmp/f 2>&1; chmod 666 /tmp/f 2>&1; \
         chmod 755 /tmp/f && chmod 750 /tmp/f && echo MODES_OK; stat -c %a /tmp/f",
    );
    let out = ok_stdout(&b.run(&cid("seccomp-mask")));
    assert_eq!(out.matches("Network is down").count(), 2, "{out}");
    assert!(out.contains("MODES_OK\n750"), "{out}");
}

#[test]
fn no_new_privileges_with_seccomp() {
    let mut b = Bundle::new("brt-nnp", true);
    b.config["process"]["noNewPrivileges"] = json!(true);
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    b.script("grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status");
    let out = ok_stdout(&b.run(&cid("nnp")));
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
}

#[test]
fn memory_limit_is_enforced() {
    let mut b = Bundle::new("brt-mem", true);
    b.config["linux"]["resources"]["memory"] = json!({"limit": 32 << 20, "swap": 32 << 20});
    // dd's 128M buffer cannot fit: the OOM killer ends it (SIGKILL: 137).
    b.script("dd if=/dev/zero of=/dev/null bs=128M count=1 2>/dev/null; echo dd=$?");
    let out = ok_stdout(&b.run(&cid("mem")));
    assert_eq!(out.trim(), "dd=137", "{out}");
}

#[test]
fn pids_limit_is_enforced() {
    let mut b = Bundle::new("brt-pids", true);
    b.config["linux"]["resources"]["pids"] = json!({"limit": 5});
    b.script("for i in 1 2 3 4 5 6 7 8 9 10; do sleep 1 & done; wait; echo finished");
    let out = b.run(&cid("pids"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("can't fork"), "stderr: {stderr}");
}

#[test]
fn terminal_container_has_a_tty() {
    let mut b = Bundle::new("brt-tty", true);
    b.config["process"]["terminal"] = json!(true);
    b.script("[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo IS_A_TTY; tty; ls -l /dev/console");
    let out = ok_stdout(&b.run(&cid("tty")));
    assert!(out.contains("IS_A_TTY"), "{out}");
    assert!(out.contains("/dev/pts/0"), "{out}");
}

/// A descriptor the runtime inherited without close-on-exec never reaches the container.
#[test]
fn no_descriptor_leaks_into_the_container() {
    let mut b = Bundle::new("brt-fds", true);
    b.script("ls /proc/self/fd | tr '\\n' ' '");
    b.write();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec 7</etc/hostname 8>/dev/null; exec {} --root {} run --bundle {} {}",
            env!("CARGO_BIN_EXE_berth-runtime"),
            b.state_root.display(),
            b.bundle.display(),
            cid("fds")
        ))
        .output()
        .unwrap();
    let stdout = ok_stdout(&out);
    assert_eq!(stdout.trim(), "0 1 2 3", "{stdout}");
}

/// The runtime's own working directory (a host path) does not leak in: the process starts
/// in process.cwd, inside the container's root.
#[test]
fn no_host_working_directory_leaks() {
    let mut b = Bundle::new("brt-cwd", true);
    b.config["process"]["cwd"] = json!("/etc");
    b.script("readlink /proc/self/cwd; ls /proc/self/cwd/ | grep -c passwd");
    b.write();
    let out = b
        .cmd(&["run", "--bundle", b.bundle.to_str().unwrap(), &cid("cwd")])
        .current_dir(b.path())
        .output()
        .unwrap();
    let text = ok_stdout(&out);
    assert_eq!(text, "/etc\n1\n", "{text}");
}

#[test]
fn user_cwd_env_umask_rlimits_hostname() {
    let mut b = Bundle::new("brt-proc", true);
    b.config["process"]["user"] =
        json!({"uid": 1000, "gid": 1001, "additionalGids": [4, 27], "umask": 63});
    b.config["process"]["cwd"] = json!("/tmp");
    b.config["process"]["env"] = json!(["PATH=/bin:/sbin", "FOO=bar baz"]);
    b.config["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}]);
    b.config["hostname"] = json!("boxy");
    b.config["domainname"] = json!("example.test");
    b.script("id; pwd; echo \"$FOO\"; umask; ulimit -n; ulimit -Hn; hostname; cat /proc/sys/kernel/domainname");
    let out = ok_stdout(&b.run(&cid("proc")));
    let l: Vec<&str> = out.lines().collect();
    assert!(
        l[0].starts_with("uid=1000 gid=1001") && l[0].contains("groups=4(adm),27"),
        "{out}"
    );
    assert_eq!(
        &l[1..],
        [
            "/tmp",
            "bar baz",
            "0077",
            "123",
            "456",
            "boxy",
            "example.test"
        ],
        "{out}"
    );
}

/// A symlink in the image pointing at a host path does not lead a mount out of the root.
#[test]
fn mount_targets_stay_inside_the_root() {
    let mut b = Bundle::new("brt-escape", false);
    let host = b.path().join("host-target");
    std::fs::create_dir(&host).unwrap();
    std::os::unix::fs::symlink(&host, b.bundle.join("rootfs/evil")).unwrap();
    b.add_mount(json!({"destination": "/evil/sub", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}));
    b.script("grep -c ' /evil/sub\\| .*host-target/sub ' /proc/self/mountinfo; true");
    ok_stdout(&b.run(&cid("escape")));
    assert!(
        !host.join("sub").exists(),
        "the mount target was created on the host"
    );
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains("host-target"), "a mount landed on the host");
    assert!(b
        .bundle
        .join("rootfs")
        .join(host.strip_prefix("/").unwrap())
        .join("sub")
        .is_dir());
}

#[test]
fn without_user_namespace_devices_are_created() {
    let mut b = Bundle::new("brt-nouserns", false);
    b.script("ls -ln /dev/null /dev/zero; id -u; cat /proc/self/uid_map");
    let out = ok_stdout(&b.run(&cid("nouserns")));
    assert!(out.contains("1,   3") && out.contains("1,   5"), "{out}");
    assert!(out.contains("0          0 4294967295"), "{out}");
}

#[test]
fn sysctl_oom_score_adj_no_pivot_and_propagation() {
    let mut b = Bundle::new("brt-misc", true);
    b.config["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    b.config["process"]["oomScoreAdj"] = json!(500);
    b.config["linux"]["rootfsPropagation"] = json!("rshared");
    b.script("cat /proc/sys/net/ipv4/ip_forward /proc/self/oom_score_adj; awk '$5 == \"/\"' /proc/self/mountinfo");
    let out = ok_stdout(&b.run(&cid("misc")));
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(&l[..2], ["1", "500"], "{out}");
    assert!(l[2].contains("shared:"), "root is not shared: {out}");

    // --no-pivot: chroot; the container still sees its own root.
    b.script("ls /; cat /proc/self/uid_map");
    b.write();
    let id = cid("nopivot");
    let bundle = b.bundle.to_str().unwrap().to_string();
    let out = b
        .cmd(&["run", "--no-pivot", "--bundle", &bundle, &id])
        .output()
        .unwrap();
    let text = ok_stdout(&out);
    assert!(
        text.contains("linuxrc") && text.contains("100000"),
        "{text}"
    );
}

/// linux.devices are created (mknod without a user namespace) and the v1 devices cgroup
/// denies what the rules do not allow.
#[test]
fn devices_and_device_cgroup_rules() {
    let mut b = Bundle::new("brt-devices", false);
    b.config["linux"]["devices"] = json!([
        {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640, "uid": 0, "gid": 6},
        {"path": "/dev/myloop", "type": "b", "major": 7, "minor": 0, "fileMode": 0o600}
    ]);
    b.config["linux"]["resources"]["devices"] = json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"}
    ]);
    b.script("ls -ln /dev/mynull; echo hi > /dev/mynull && echo NULL_OK; head -c1 /dev/myloop >/dev/null 2>&1 || echo LOOP_DENIED");
    let out = ok_stdout(&b.run(&cid("devices")));
    let cols: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        (cols[0], cols[2], cols[3]),
        ("crw-r-----", "0", "6"),
        "{out}"
    );
    assert!(
        out.contains("NULL_OK") && out.contains("LOOP_DENIED"),
        "{out}"
    );
}

/// On this v1/hybrid host a `cgroup` mount shows the container's own cgroups only.
#[test]
fn cgroup_mount_shows_only_the_containers_cgroups() {
    let mut b = Bundle::new("brt-cgmount", true);
    let has_cgroup_mount = b.config["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["type"] == "cgroup");
    if !has_cgroup_mount {
        b.add_mount(
            json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                           "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        );
    }
    b.config["linux"]["resources"]["memory"] = json!({"limit": 48 << 20});
    b.script("ls /sys/fs/cgroup | tr '\\n' ' '; echo; cat /sys/fs/cgroup/memory/memory.limit_in_bytes; ls /sys/fs/cgroup/unified/cgroup.procs; touch /sys/fs/cgroup/x 2>/dev/null && echo WRITABLE; true");
    let out = ok_stdout(&b.run(&cid("cgmount")));
    let l: Vec<&str> = out.lines().collect();
    // The limits' controller and those every container joins for stats, pause and update.
    assert_eq!(
        l[0].trim(),
        "cpu cpuacct freezer memory pids unified",
        "{out}"
    );
    assert_eq!(l[1], (48u64 << 20).to_string(), "{out}");
    assert!(!out.contains("WRITABLE"), "{out}");
}

/// sysfs belongs to a network namespace: a user-namespaced container sharing the host's
/// network gets the host's sysfs bound read-only instead of a mount it may not make.
#[test]
fn sysfs_without_a_network_namespace() {
    let mut b = Bundle::new("brt-sysfs", true);
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "network");
    b.script("ls /sys/class/net | grep -c lo; touch /sys/kernel/x 2>/dev/null || echo READ_ONLY");
    let out = ok_stdout(&b.run(&cid("sysfs")));
    assert_eq!(out, "1\nREAD_ONLY\n", "{out}");
}

#[test]
fn time_namespace_offsets() {
    let mut b = Bundle::new("brt-time", true);
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "time"}));
    b.config["linux"]["timeOffsets"] = json!({"boottime": {"secs": 864000, "nanosecs": 0}});
    b.script("cut -d. -f1 /proc/uptime");
    let out = ok_stdout(&b.run(&cid("time")));
    let up: u64 = out.trim().parse().unwrap();
    assert!(up >= 864000, "uptime {up} has no 10-day offset");
}
