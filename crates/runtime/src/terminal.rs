//! The container's terminal: a pty opened inside the container (on its own devpts), whose
//! slave becomes the process's stdio, controlling terminal and /dev/console, and whose
//! master goes to the caller: over the console socket (SCM_RIGHTS, as runc does) or back to
//! the runtime (returned by `create`/`exec`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, PtyMaster};
use oci_spec::runtime::Process;

use crate::error::{Error, Result};

/// A pty opened inside the container's mount namespace.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub slave_path: String,
}

pub fn open(p: &Process) -> Result<Pty> {
    let master: PtyMaster = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("open /dev/ptmx in the container", e))?;
    grantpt(&master).map_err(|e| Error::sys("grantpt", e))?;
    unlockpt(&master).map_err(|e| Error::sys("unlockpt", e))?;
    let slave_path = ptsname_r(&master).map_err(|e| Error::sys("ptsname", e))?;
    let slave = nix::fcntl::open(
        slave_path.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys(format!("open {slave_path}"), e))?;
    if let Some(size) = p.console_size() {
        let ws = libc::winsize {
            ws_row: size.height() as u16,
            ws_col: size.width() as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize that lives across the call.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    let raw = master.as_raw_fd();
    std::mem::forget(master);
    // SAFETY: we took the descriptor out of the PtyMaster, which no longer owns it.
    let master = unsafe { OwnedFd::from_raw_fd(raw) };
    Ok(Pty {
        master,
        slave,
        slave_path,
    })
}

/// Binds the slave over /dev/console (which mounts::setup_dev created).
pub fn bind_console(pty: &Pty) -> Result<()> {
    mount(
        Some(pty.slave_path.as_str()),
        "/dev/console",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::sys("bind the pty over /dev/console", e))
}

/// Makes the slave the controlling terminal and stdio of a new session.
pub fn make_controlling(slave: RawFd) -> Result<()> {
    nix::unistd::setsid().map_err(|e| Error::sys("setsid", e))?;
    // SAFETY: TIOCSCTTY with an integer argument on a descriptor we own.
    if unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) } < 0 {
        return Err(Error::sys(
            "make the pty the controlling terminal",
            nix::errno::Errno::last(),
        ));
    }
    for fd in 0..3 {
        // SAFETY: dup2 of a descriptor we hold onto stdio.
        if unsafe { libc::dup2(slave, fd) } < 0 {
            return Err(Error::sys(
                "dup the pty to stdio",
                nix::errno::Errno::last(),
            ));
        }
    }
    Ok(())
}

/// Sends the master over a connected console socket, as runc does.
pub fn send_to_socket(sock: RawFd, master: RawFd) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let name = b"/dev/ptmx";
    let iov = [std::io::IoSlice::new(name)];
    let fds = [master];
    sendmsg::<()>(
        sock,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| Error::sys("send the pty master over the console socket", e))?;
    Ok(())
}
