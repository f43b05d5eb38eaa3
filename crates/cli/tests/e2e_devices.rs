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

/// Opens /dev/mytun for reading, then for writing.
const READ_NOT_WRITE: &str =
    "(true < /dev/mytun) && echo READ_OK; (true > /dev/mytun) 2>/dev/null || echo WRITE_DENIED";

/// `run --rm FLAGS busybox sh -c SCRIPT` through the docker CLI, or berth's.
fn sh(d: &Daemon, berth: bool, flags: &[&str], script: &str) -> String {
    let mut args = vec!["run", "--rm"];
    args.extend(flags);
    args.extend(["busybox", "sh", "-c", script]);
    if berth {
        d.berth_ok(&args)
    } else {
        d.ok(&args)
    }
}

#[test]
fn devices_outside_the_defaults_are_denied_unless_privileged() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    assert_eq!(sh(&d, false, &[], TRY_TUN), "MKNOD_OK\nDENIED\n");
    // The defaults stay usable.
    let defaults = "echo x > /dev/null && head -c1 /dev/zero | wc -c && \
                    head -c1 /dev/urandom | wc -c && echo OK";
    assert_eq!(sh(&d, false, &[], defaults), "1\n1\nOK\n");
    let tty = sh(&d, false, &["-t"], "tty >/dev/null && echo TTY_OK");
    assert_eq!(tty.trim(), "TTY_OK");
    assert_eq!(
        sh(&d, false, &["--privileged"], TRY_TUN),
        "MKNOD_OK\nOPENED\n"
    );
    // And, as in Docker, a privileged container sees the host's devices.
    let host = "test -c /dev/net/tun && test -c /dev/null && echo HOST_DEVICES";
    assert_eq!(sh(&d, false, &["--privileged"], host), "HOST_DEVICES\n");
}

#[test]
fn device_and_device_cgroup_rule_open_what_they_name() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    let mytun = ["--device", "/dev/net/tun:/dev/mytun:r"];
    let out = sh(
        &d,
        false,
        &mytun,
        &format!("ls -l /dev/mytun | cut -c1; {READ_NOT_WRITE}"),
    );
    assert_eq!(out, "c\nREAD_OK\nWRITE_DENIED\n");
    let rule = ["--device-cgroup-rule", "c 10:200 rw"];
    assert_eq!(sh(&d, false, &rule, TRY_TUN), "MKNOD_OK\nOPENED\n");
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
    let flags = [&mytun[..], &["--device-cgroup-rule", "c 1:11 r"]].concat();
    assert_eq!(
        sh(&d, true, &flags, READ_NOT_WRITE),
        "READ_OK\nWRITE_DENIED\n"
    );
    let id = d.ok(&["create", "--device", "/dev/net/tun", "busybox", "true"]);
    let inspect = d.ok(&["inspect", "-f", "{{json .HostConfig.Devices}}", id.trim()]);
    assert!(
        inspect.contains("\"PathOnHost\":\"/dev/net/tun\""),
        "{inspect}"
    );
}
