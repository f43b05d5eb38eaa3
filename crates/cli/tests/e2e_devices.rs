//! End to end through the real docker CLI against `berth daemon`: the device cgroup.
//! Without it, root in a container without user namespace (it holds CAP_MKNOD, as in
//! Docker) could create a node for any host device and use it. Docker's rules: every
//! device denied but the few a container always has; `--privileged` allows all.

mod common;
use common::*;

/// Creates a node for /dev/net/tun (10:200, not one of the defaults) and opens it; opening
/// it changes nothing on the host.
const TRY_TUN: &str = "mknod /tmp/tun c 10 200 && echo MKNOD_OK; \
    (true < /tmp/tun) 2>/dev/null && echo OPENED || echo DENIED";

#[test]
fn devices_outside_the_defaults_are_denied_unless_privileged() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    let out = d.ok(&["run", "--rm", "busybox", "sh", "-c", TRY_TUN]);
    assert_eq!(out, "MKNOD_OK\nDENIED\n");
    // The defaults stay usable.
    let out = d.ok(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo x > /dev/null && head -c1 /dev/zero | wc -c && head -c1 /dev/urandom | wc -c && echo OK",
    ]);
    assert_eq!(out, "1\n1\nOK\n");
    let out = d.ok(&[
        "run",
        "--rm",
        "-t",
        "busybox",
        "sh",
        "-c",
        "tty >/dev/null && echo TTY_OK",
    ]);
    assert_eq!(out.trim(), "TTY_OK");
    let out = d.ok(&[
        "run",
        "--rm",
        "--privileged",
        "busybox",
        "sh",
        "-c",
        TRY_TUN,
    ]);
    assert_eq!(out, "MKNOD_OK\nOPENED\n");
    // And, as in Docker, it sees the host's devices.
    let out = d.ok(&[
        "run",
        "--rm",
        "--privileged",
        "busybox",
        "sh",
        "-c",
        "test -c /dev/net/tun && test -c /dev/null && echo HOST_DEVICES",
    ]);
    assert_eq!(out, "HOST_DEVICES\n");
}

#[test]
fn device_and_device_cgroup_rule_open_what_they_name() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    let out = d.ok(&[
        "run",
        "--rm",
        "--device",
        "/dev/net/tun:/dev/mytun:r",
        "busybox",
        "sh",
        "-c",
        "ls -l /dev/mytun | cut -c1; (true < /dev/mytun) && echo READ_OK; (true > /dev/mytun) 2>/dev/null || echo WRITE_DENIED",
    ]);
    assert_eq!(out, "c\nREAD_OK\nWRITE_DENIED\n");
    let out = d.ok(&[
        "run",
        "--rm",
        "--device-cgroup-rule",
        "c 10:200 rw",
        "busybox",
        "sh",
        "-c",
        TRY_TUN,
    ]);
    assert_eq!(out, "MKNOD_OK\nOPENED\n");
    let o = d.docker(&[
        "run",
        "--rm",
        "--device",
        "/dev/berth-no-such-device",
        "busybox",
        "true",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("/dev/berth-no-such-device") && stderr(&o).contains("No such file"),
        "{}",
        stderr(&o)
    );
    // The same through berth's own CLI.
    let out = d.berth_ok(&[
        "run",
        "--rm",
        "--device",
        "/dev/net/tun:/dev/mytun:r",
        "--device-cgroup-rule",
        "c 1:11 r",
        "busybox",
        "sh",
        "-c",
        "(true < /dev/mytun) && echo READ_OK; (true > /dev/mytun) 2>/dev/null || echo WRITE_DENIED",
    ]);
    assert_eq!(out, "READ_OK\nWRITE_DENIED\n");
    let id = d.ok(&["create", "--device", "/dev/net/tun", "busybox", "true"]);
    let inspect = d.ok(&["inspect", "-f", "{{json .HostConfig.Devices}}", id.trim()]);
    assert!(
        inspect.contains("\"PathOnHost\":\"/dev/net/tun\""),
        "{inspect}"
    );
}
