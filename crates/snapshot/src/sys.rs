//! The raw syscalls snapshot needs that no crate wraps: `mount_setattr(MOUNT_ATTR_IDMAP)`, and
//! a user namespace holding an id map, made for idmapped mounts.
//!
//! DESIGN.md puts raw syscalls in the runtime's `syscall` module, but the snapshotter may not
//! depend on the runtime (arrows point down), so it keeps this minimal copy.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use berth_idmap::UsernsMaps;

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Makes the detached mount `tree` (from `open_tree(OPEN_TREE_CLONE)`) show ids through the
/// map of the user namespace `userns`.
pub fn idmap_mount(tree: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr reads `size` bytes from `attr`, a live, properly laid out
    // `struct mount_attr`; the path is an empty NUL-terminated string used with AT_EMPTY_PATH
    // on a valid fd. No memory is written.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Kills and reaps the helper child however `userns_fd` leaves.
struct Child(libc::pid_t);

impl Drop for Child {
    fn drop(&mut self) {
        // SAFETY: kill and waitpid on a child this process created and has not reaped; no
        // memory is involved.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            let mut status = 0;
            while libc::waitpid(self.0, &mut status, 0) < 0
                && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
            {}
        }
    }
}

/// A file descriptor of a new user namespace with `maps`, for `MOUNT_ATTR_IDMAP`.
///
/// A child is cloned straight into a new user namespace (like fork: a copy of this process,
/// so it is safe in a multi-threaded daemon as long as the child only makes async-signal-safe
/// calls: it only sleeps in `pause`). The parent writes the maps, opens the namespace, and
/// kills the child; the namespace lives on in the fd. About a millisecond; callers cache it.
pub fn userns_fd(maps: &UsernsMaps) -> io::Result<OwnedFd> {
    // SAFETY: clone without CLONE_VM and with a null stack behaves as fork: the child runs on
    // a copy-on-write copy of this stack. The child branch below only calls pause and _exit,
    // which are async-signal-safe, and never returns into Rust code.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        loop {
            // SAFETY: pause has no preconditions; the parent ends this child with SIGKILL.
            unsafe { libc::pause() };
        }
    }
    let child = Child(pid as libc::pid_t);
    fs::write(format!("/proc/{pid}/uid_map"), maps.uid.to_proc_text())?;
    fs::write(format!("/proc/{pid}/gid_map"), maps.gid.to_proc_text())?;
    let path = std::ffi::CString::new(format!("/proc/{pid}/ns/user")).expect("no NUL");
    // SAFETY: open on a NUL-terminated path; the returned fd, if valid, is owned by nobody else.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    drop(child);
    // SAFETY: `fd` was just returned by open and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
