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

fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie holds nothing any more: its reaper is not us.
        Ok(s) => s.rsplit(')').next().unwrap().trim_start().starts_with('Z'),
    }
}

/// The caller of create stands for the engine's monitor: when it is killed (SIGKILL, no
/// cleanup), the container's init gets SIGKILL too instead of running on untracked.
fn init_dies_with_its_caller() {
    let mut b = Bundle::new("brt-libdeath", true);
    b.config["process"]["args"] = json!(["sleep", "1000"]);
    b.write();
    let id = cid("libdeath");
    let (r, w) = pipe();
    // SAFETY: this test's main is single-threaded; the child only calls the runtime (as the
    // monitor does), writes to a pipe and sleeps.
    let monitor = match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            drop(r);
            let rt = Runtime::new(b.state_root.clone());
            let opts = CreateOptions {
                bundle: b.bundle.clone(),
                stdio: Some([devnull(), devnull(), devnull()]),
                ..Default::default()
            };
            let pid = rt.create(&id, &opts).map(|c| c.pid).unwrap_or(0);
            if pid != 0 && rt.start(&id).is_err() {
                // SAFETY: ends the forked child without the parent's handlers.
                unsafe { libc::_exit(1) };
            }
            let _ = nix::unistd::write(&w, pid.to_string().as_bytes());
            drop(w);
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(w);
    let init: i32 = read_all(r)
        .parse()
        .expect("the child reports the init's pid");
    assert!(init > 0, "create failed in the child");
    assert!(!process_gone(init), "the container runs");
    nix::sys::signal::kill(monitor, nix::sys::signal::SIGKILL).unwrap();
    waitpid(monitor, None).unwrap();
    // Generous: only there so that a failure does not hang forever.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !process_gone(init) {
        if std::time::Instant::now() > deadline {
            let _ = nix::sys::signal::kill(Pid::from_raw(init), nix::sys::signal::SIGKILL);
            panic!("the container's init {init} outlived its caller");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Runtime::new(b.state_root.clone())
        .delete(&id, true)
        .expect("delete");
}

fn main() {
    init_dies_with_its_caller();
    println!("test init_dies_with_its_caller ... ok");
    stdio_and_wait();
    println!("test stdio_and_wait ... ok");
    terminal_master_returned();
    println!("test terminal_master_returned ... ok");
}
