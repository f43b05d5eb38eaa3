//! The library as the engine's monitor uses it: create with the container's stdio given as
//! descriptors, the init a child of the caller (waitpid gets its exit status), exec with
//! stdio, a terminal whose master comes back from create, and delete.
//!
//! A plain `main` (harness = false): `create` and `exec` fork and want a single-threaded
//! caller, which the test harness's threads are not.

mod common;

use std::io::Read;
use std::os::fd::OwnedFd;

use berth_runtime::{CreateOptions, ExecOptions, Runtime, Status};
use common::{cid, Bundle};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use serde_json::json;

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
}

fn devnull() -> OwnedFd {
    std::fs::File::open("/dev/null").unwrap().into()
}

fn read_all(fd: OwnedFd) -> String {
    let mut s = String::new();
    let _ = std::fs::File::from(fd).read_to_string(&mut s);
    s
}

fn stdio_and_wait() {
    let mut b = Bundle::new("brt-lib", true);
    b.script("echo out; echo err >&2; sleep 0.2; exit 5");
    b.write();
    let rt = Runtime::new(b.state_root.clone());
    let id = cid("lib");
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let opts = CreateOptions {
        bundle: b.bundle.clone(),
        stdio: Some([devnull(), out_w, err_w]),
        ..Default::default()
    };
    let created = rt.create(&id, &opts).expect("create");
    drop(opts);
    assert!(created.console.is_none());
    assert_eq!(rt.state(&id).unwrap().status, Status::Created);
    rt.start(&id).expect("start");

    // exec while it runs: its own stdio, a child of ours too.
    let (x_r, x_w) = pipe();
    let mut p: oci_spec::runtime::Process =
        serde_json::from_value(b.config["process"].clone()).unwrap();
    p.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "cat /proc/self/uid_map; exit 9".into(),
    ]));
    let xo = ExecOptions {
        stdio: Some([devnull(), x_w.try_clone().unwrap(), x_w]),
        ..Default::default()
    };
    let xc = rt.exec(&id, &p, &xo).expect("exec");
    drop(xo);
    assert_eq!(
        waitpid(Pid::from_raw(xc.pid), None).unwrap(),
        WaitStatus::Exited(Pid::from_raw(xc.pid), 9)
    );
    assert!(read_all(x_r).contains("100000"));

    let st = waitpid(Pid::from_raw(created.pid), None).unwrap();
    assert_eq!(st, WaitStatus::Exited(Pid::from_raw(created.pid), 5));
    assert_eq!(read_all(out_r), "out\n");
    assert_eq!(read_all(err_r), "err\n");
    assert_eq!(rt.state(&id).unwrap().status, Status::Stopped);
    rt.delete(&id, false).expect("delete");
    assert!(rt.list().unwrap().is_empty());
}

fn terminal_master_returned() {
    let mut b = Bundle::new("brt-libtty", true);
    b.config["process"]["terminal"] = json!(true);
    b.script("[ -t 0 ] && echo TTY_OK");
    b.write();
    let rt = Runtime::new(b.state_root.clone());
    let id = cid("libtty");
    let created = rt
        .create(
            &id,
            &CreateOptions {
                bundle: b.bundle.clone(),
                ..Default::default()
            },
        )
        .expect("create");
    let master = created.console.expect("the pty master");
    rt.start(&id).expect("start");
    let mut f = std::fs::File::from(master);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    // Reading the master ends with EIO once the last slave is closed.
    while let Ok(n) = f.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    assert!(String::from_utf8_lossy(&buf).contains("TTY_OK"), "{buf:?}");
    waitpid(Pid::from_raw(created.pid), None).unwrap();
    rt.delete(&id, true).expect("delete");
}

fn main() {
    stdio_and_wait();
    println!("test stdio_and_wait ... ok");
    terminal_master_returned();
    println!("test terminal_master_returned ... ok");
}
