//! The container's network namespace: loopback up. Docker's `none` and default networks
//! give a container a working `lo`; a fresh network namespace has it down, and the OCI
//! runtime leaves it so. The monitor, root on the host, enters the container's namespace
//! for the one ioctl, then returns.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use nix::sched::{setns, CloneFlags};

/// Sets `lo` up in the network namespace of process `pid`.
pub fn loopback_up(pid: i32) -> io::Result<()> {
    let own = File::open("/proc/thread-self/ns/net")?;
    let target = File::open(format!("/proc/{pid}/ns/net"))?;
    setns(&target, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    let result = set_up("lo");
    // Back to ours whatever happened: the monitor's later sockets are host ones.
    setns(&own, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    result
}

fn set_up(name: &str) -> io::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    // SAFETY: ifreq is a plain C struct for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the interface name from `req` and writes its flags into
    // `req.ifr_ifru`; `req` is a valid, exclusively borrowed ifreq for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the flags member of the union is the initialised one.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads the name and flags from the valid ifreq `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brings_up_loopback_of_a_new_namespace() {
        berth_testkit::require_root();
        // A child in a new network namespace, waiting on a pipe while we configure it.
        let mut child = std::process::Command::new("unshare")
            .args([
                "--net",
                "sh",
                "-c",
                "read x; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run unshare");
        let pid = child.id() as i32;
        // unshare execs sh in the new namespace; wait until it has.
        let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() == Some(host_ns.clone()) {
            assert!(
                std::time::Instant::now() < deadline,
                "child never entered its namespace"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        loopback_up(pid).unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let flags =
            u32::from_str_radix(text.lines().nth(1).unwrap().trim_start_matches("0x"), 16).unwrap();
        assert_eq!(flags & libc::IFF_UP as u32, libc::IFF_UP as u32, "{text}");
        // Our own namespace is unchanged.
        assert_eq!(std::fs::read_link("/proc/self/ns/net").unwrap(), host_ns);
    }
}
