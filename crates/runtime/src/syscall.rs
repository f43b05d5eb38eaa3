//! Raw Linux system calls that no crate we use wraps (or wraps in a form we can use):
//! `clone3`, `open_tree`, `move_mount`, `mount_setattr`, `pidfd_open`, `pidfd_send_signal`,
//! `close_range`, `seccomp` and `bpf` (device programs). Every other module calls them from here, so the `unsafe`
//! surface for system calls is this one file.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;

/// `struct clone_args` of clone3(2) (the fields this runtime uses, in kernel order).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What [`clone3_fork`] returned in the calling process.
pub enum Forked {
    /// We are the new child.
    Child,
    /// We are the caller; the child has this pid (in our pid namespace).
    Parent(i32),
}

/// Forks like fork(2) (no new stack: the child continues on a copy of ours) but with
/// `flags` (CLONE_NEW*, CLONE_PARENT...), so that the child is created
/// directly inside its new namespaces, including a new pid namespace as its pid 1.
///
/// The caller must be single-threaded: the child runs on a copy of the caller's memory
/// and must not meet a lock held by a thread that does not exist in it.
pub fn clone3_fork(flags: u64) -> Result<Forked, Errno> {
    clone3_fork_into(flags, None)
}

/// [`clone3_fork`], with the child born in the cgroup2 directory `cgroup` (CLONE_INTO_CGROUP):
/// no migration afterwards, so none of the RCU grace period a cgroup write costs.
pub fn clone3_fork_into(flags: u64, cgroup: Option<BorrowedFd>) -> Result<Forked, Errno> {
    // With CLONE_PARENT the kernel wants exit_signal 0: the child then takes its creator's
    // (SIGCHLD here, as our children are all created with it).
    let parent = flags & libc::CLONE_PARENT as u64 != 0;
    let mut args = CloneArgs {
        flags,
        exit_signal: if parent { 0 } else { libc::SIGCHLD as u64 },
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        // CLONE_INTO_CGROUP (0x200000000); libc's constant is an i32 that cannot hold it.
        args.flags |= 0x2_0000_0000;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: args is a valid clone_args of the size we pass; with stack 0 the child gets
    // a copy-on-write copy of our stack, exactly as with fork(2).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as i32)),
    }
}

fn cpath(p: &Path) -> Result<CString, Errno> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

pub const OPEN_TREE_CLONE: u32 = 1;
pub const OPEN_TREE_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;

/// open_tree(2): a detached copy (`OPEN_TREE_CLONE`) of the mount at `path`, recursive
/// when `recursive` (an rbind), as a file descriptor that [`move_mount`] can attach.
pub fn open_tree_clone(
    dirfd: Option<BorrowedFd>,
    path: &Path,
    recursive: bool,
) -> Result<OwnedFd, Errno> {
    let c = cpath(path)?;
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    let dfd = dirfd.map(|d| d.as_raw_fd()).unwrap_or(libc::AT_FDCWD);
    if path.as_os_str().is_empty() {
        flags |= libc::AT_EMPTY_PATH as u32;
    }
    // SAFETY: c is a valid NUL-terminated string for the duration of the call.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, dfd, c.as_ptr(), flags) };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// move_mount(2): attaches the detached mount `from` on top of the directory or file that
/// `to` refers to (an O_PATH descriptor resolved inside the container's root).
pub fn move_mount(from: BorrowedFd, to: BorrowedFd) -> Result<(), Errno> {
    let empty = c"";
    // SAFETY: both paths are valid empty C strings; the descriptors are borrowed and live.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            empty.as_ptr(),
            to.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
#[derive(Default)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR__ATIME: u64 = 0x70;
pub const MOUNT_ATTR_RELATIME: u64 = 0x0;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_IDMAP: u64 = 0x100000;

/// What mount_setattr(2) changes on a mount (tree).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SetAttr {
    pub set: u64,
    pub clear: u64,
    /// MS_PRIVATE, MS_SLAVE, MS_SHARED or MS_UNBINDABLE; 0 leaves propagation alone.
    pub propagation: u64,
}

/// mount_setattr(2) on the mount `fd` refers to (the whole tree when `recursive`), with
/// `userns` the user namespace whose id map an idmapped mount takes (MOUNT_ATTR_IDMAP).
pub fn mount_setattr(
    fd: BorrowedFd,
    recursive: bool,
    attr: SetAttr,
    userns: Option<BorrowedFd>,
) -> Result<(), Errno> {
    let mut a = MountAttr {
        attr_set: attr.set,
        attr_clr: attr.clear,
        propagation: attr.propagation,
        userns_fd: 0,
    };
    if let Some(ns) = userns {
        a.attr_set |= MOUNT_ATTR_IDMAP;
        a.userns_fd = ns.as_raw_fd() as u64;
    }
    let mut flags = libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    let empty = c"";
    // SAFETY: a is a valid mount_attr of the size passed; the path is an empty C string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            flags,
            &mut a as *mut MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// pidfd_open(2).
pub fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: plain integer arguments.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// pidfd_send_signal(2): signals exactly the process the pidfd refers to (no pid reuse race).
pub fn pidfd_send_signal(pidfd: BorrowedFd, sig: i32) -> Result<(), Errno> {
    // SAFETY: a borrowed live descriptor, a null siginfo (as kill(2)), flags 0.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;

/// Marks every descriptor from `first` up close-on-exec, so that nothing of the runtime's
/// (state directory, host root, sockets) survives into the container's process.
pub fn cloexec_from(first: u32) -> Result<(), Errno> {
    // SAFETY: plain integer arguments.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// seccomp(SECCOMP_SET_MODE_FILTER) with a compiled classic BPF program.
pub fn seccomp_set_filter(prog: &[libc::sock_filter], flags: u32) -> Result<(), Errno> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points at prog, which lives across the call; the kernel copies it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// One eBPF instruction, as the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    /// Destination register in the low nibble, source register in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to `expected_attach_type`; the kernel
/// takes a shorter attr and zeroes the rest.
#[repr(C)]
#[derive(Default)]
struct BpfProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BpfProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// bpf(BPF_PROG_LOAD) of a `BPF_PROG_TYPE_CGROUP_DEVICE` program. On failure the error
/// carries the verifier's log, which says which instruction it refused.
pub fn bpf_load_cgroup_device(insns: &[BpfInsn]) -> Result<OwnedFd, (Errno, String)> {
    let license = c"Apache";
    let mut log = vec![0u8; 16 * 1024];
    let mut attr = BpfProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    attr.prog_name[..7].copy_from_slice(b"devices");
    // SAFETY: attr points at live memory of the size given; insns, license and log outlive
    // the call, and the kernel writes at most log_size bytes into log.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &mut attr as *mut BpfProgLoadAttr,
            std::mem::size_of::<BpfProgLoadAttr>(),
        )
    };
    if ret < 0 {
        let errno = Errno::last();
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        return Err((errno, String::from_utf8_lossy(&log[..end]).into_owned()));
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// bpf(BPF_PROG_ATTACH) of a device program to a cgroup2 directory, alongside the programs
/// already there (BPF_F_ALLOW_MULTI: a device is usable only if every program allows it).
pub fn bpf_attach_cgroup_device(cgroup: BorrowedFd, prog: BorrowedFd) -> Result<(), Errno> {
    let attr = BpfProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: attr is live memory of the size given; the descriptors are borrowed live ones.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const BpfProgAttachAttr,
            std::mem::size_of::<BpfProgAttachAttr>(),
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(())
}
