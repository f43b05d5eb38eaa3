//! The child side: what the container's init (and an exec'd process) does between the fork
//! and the exec of the container's program. Runs in the new process only; it reports
//! failure to the runtime over the handshake channel and exits, never returning.

use std::collections::HashMap;
use std::convert::Infallible;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use oci_spec::runtime::{Process, Spec};

use crate::channel::{Channel, Tag};
use crate::error::{Error, Result};
use crate::hooks;
use crate::mounts;
use crate::process::{self, Confinement};
use crate::seccomp::Filter;
use crate::state::{State, Status, OCI_VERSION};
use crate::terminal;

/// What the init needs, prepared by the runtime before the fork.
pub struct InitArgs<'a> {
    pub id: &'a str,
    /// `tasks` files of the container's v1 cgroups, to join by writing `0` (see
    /// `cgroups::self_join_files`).
    pub cgroup_tasks: Vec<BorrowedFd<'a>>,
    pub spec: &'a Spec,
    pub bundle: &'a Path,
    pub chan: &'a Channel,
    /// The runtime's end of the handshake socket, which the fork copied: closed first, so
    /// that the runtime sees EOF when we die.
    pub runtime_end: RawFd,
    /// The exec fifo, opened read-write: the init blocks reading it until `start` writes.
    pub fifo: BorrowedFd<'a>,
    /// The state directory's INIT_ERROR file: where a failure after `create` returned goes,
    /// for `start` to report (the runtime no longer listens on the handshake socket).
    pub error_file: BorrowedFd<'a>,
    /// A pidfd of the runtime's caller (our parent) when the init is to die with it.
    pub caller: Option<BorrowedFd<'a>>,
    pub console_sock: Option<RawFd>,
    pub stdio: Option<[RawFd; 3]>,
    pub no_pivot: bool,
    pub preserve_fds: u32,
    pub mounts: mounts::Context<'a>,
    pub idmapped: HashMap<usize, OwnedFd>,
    pub seccomp: Option<&'a Filter>,
    /// Whether the runtime has prestart or createRuntime hooks to run once the namespaces
    /// exist.
    pub runtime_hooks: bool,
    /// In a user namespace (new, whose maps the runtime writes, or joined): become its root
    /// once the host-side work is done.
    pub become_ns_root: bool,
    /// Namespaces to unshare after the handshake rather than at clone: the ipc namespace
    /// once we are root of the user namespace (so that its mqueue is container root's),
    /// the cgroup namespace once the runtime has put us in the container's cgroups (so
    /// that they are its root).
    pub late_unshare: nix::sched::CloneFlags,
    /// Join the cgroups and unshare the cgroup namespace before the mounts (for a fresh
    /// cgroup2 mount) rather than after them.
    pub cgroupns_before_mounts: bool,
}

/// Reports `r`'s error (if any) to the runtime and exits: the child never returns into the
/// caller's code. When the runtime no longer listens (the failure came after `create`
/// returned), the message goes to `error_file` (the init's, which `start` reads) or, for an
/// exec'd process, to its stderr.
fn finish(
    chan: &Channel,
    error_file: Option<BorrowedFd>,
    r: std::thread::Result<Result<Infallible>>,
) -> ! {
    let msg = match r {
        Ok(Err(e)) => e.to_string(),
        Err(_) => "the runtime's child panicked".to_string(),
        Ok(Ok(never)) => match never {},
    };
    if chan.send(Tag::Failed, &msg, None).is_err() {
        match error_file {
            Some(f) => {
                let _ = nix::unistd::write(f, msg.as_bytes());
            }
            None => eprintln!("berth-runtime: {msg}"),
        }
    }
    // SAFETY: _exit ends the process without running the caller's atexit handlers or
    // destructors, which belong to the parent's copy of this memory.
    unsafe { libc::_exit(127) }
}

pub fn run(a: InitArgs) -> ! {
    let chan = a.chan;
    let error_file = a.error_file;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init(a)));
    finish(chan, Some(error_file), r)
}

fn set_stdio(stdio: Option<[RawFd; 3]>) -> Result<()> {
    let Some(fds) = stdio else { return Ok(()) };
    // Move them out of the way first: one of them may already sit on 0, 1 or 2.
    let mut tmp = [-1; 3];
    for (i, fd) in fds.iter().enumerate() {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor the caller keeps open.
        tmp[i] = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3) };
        if tmp[i] < 0 {
            return Err(Error::sys("dup stdio", nix::errno::Errno::last()));
        }
    }
    for (i, fd) in tmp.iter().enumerate() {
        // SAFETY: dup2 between descriptors we hold; the copies are closed right after.
        if unsafe { libc::dup2(*fd, i as RawFd) } < 0 {
            return Err(Error::sys("dup stdio", nix::errno::Errno::last()));
        }
        // SAFETY: closing our own temporary copy.
        unsafe { libc::close(*fd) };
    }
    Ok(())
}

/// Joins the cgroups whose `tasks` files the runtime opened for us (close-on-exec: they go
/// with the exec).
fn join_own_cgroups(tasks: &[BorrowedFd]) -> Result<()> {
    crate::cgroups::join_self(tasks).map_err(|e| Error::sys("join the container's cgroups", e))
}

fn non_dumpable() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

fn hook_state(a: &InitArgs, pid: i32, status: Status) -> State {
    State {
        oci_version: OCI_VERSION.into(),
        id: a.id.into(),
        status,
        pid,
        bundle: a.bundle.into(),
        annotations: a.spec.annotations().clone().unwrap_or_default(),
    }
}

fn close_runtime_end(fd: RawFd) {
    // SAFETY: closing the copy of the runtime's descriptor that fork gave us; nothing in
    // this process uses it.
    unsafe { libc::close(fd) };
}

fn init(mut a: InitArgs) -> Result<Infallible> {
    close_runtime_end(a.runtime_end);
    non_dumpable();
    join_own_cgroups(&a.cgroup_tasks)?;
    set_stdio(a.stdio)?;
    let go = a.chan.expect(Tag::Go).map_err(init_err)?;
    let host_pid: i32 = go.text.parse().unwrap_or(0);
    let mut joined = false;
    if a.runtime_hooks {
        a.chan
            .send(Tag::NeedHooks, "", None)
            .map_err(|e| Error::sys("handshake", e))?;
        loop {
            match a.chan.recv() {
                Ok(Some(m)) if m.tag == Tag::HooksDone => break,
                Ok(Some(m)) if m.tag == Tag::Joined => joined = true,
                Ok(Some(m)) if m.tag == Tag::Failed => return Err(init_err(m.text)),
                Ok(_) => return Err(init_err("handshake: unexpected message or EOF".into())),
                Err(e) => return Err(Error::sys("handshake", e)),
            }
        }
    }
    let cgroup_flag = nix::sched::CloneFlags::CLONE_NEWCGROUP;
    let unshare_cgroupns = a.late_unshare.contains(cgroup_flag);
    let in_cgroups = |joined: &mut bool| -> Result<()> {
        if !*joined {
            a.chan.expect(Tag::Joined).map_err(init_err)?;
            *joined = true;
        }
        if unshare_cgroupns {
            nix::sched::unshare(cgroup_flag)
                .map_err(|e| Error::sys("unshare the cgroup namespace", e))?;
        }
        Ok(())
    };
    let process = a
        .spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::InvalidConfig("`process` is missing".into()))?;
    // rlimits while still privileged in the host's view (raising hard limits needs it).
    process::set_rlimits(process)?;
    let idmapped = std::mem::take(&mut a.idmapped);
    let mut prepared = mounts::prepare(&a.mounts, idmapped)?;
    // Still with the host's credentials: non-dumpable, our /proc/self files belong to host
    // root, which container root could not open for writing.
    let time_flag = nix::sched::CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
    if a.late_unshare.contains(time_flag) {
        time_namespace(a.spec)?;
    }
    if a.become_ns_root {
        // From here on we are root of the container's user namespace (the maps are written).
        let root_gid = nix::unistd::Gid::from_raw(0);
        let root_uid = nix::unistd::Uid::from_raw(0);
        nix::unistd::setresgid(root_gid, root_gid, root_gid)
            .map_err(|e| Error::sys("become root of the user namespace (setresgid 0)", e))?;
        nix::unistd::setresuid(root_uid, root_uid, root_uid)
            .map_err(|e| Error::sys("become root of the user namespace (setresuid 0)", e))?;
    }
    let ipc = a.late_unshare - cgroup_flag - time_flag;
    if !ipc.is_empty() {
        nix::sched::unshare(ipc).map_err(|e| Error::sys("unshare the ipc namespace", e))?;
    }

    if a.cgroupns_before_mounts {
        in_cgroups(&mut joined)?;
    }
    mounts::mount_all(&a.mounts, &mut prepared)?;
    if let Some(h) = a
        .spec
        .hooks()
        .as_ref()
        .and_then(|h| h.create_container().clone())
    {
        hooks::run(
            "createContainer",
            &h,
            &hook_state(&a, host_pid, Status::Creating),
        )?;
    }
    mounts::enter_root(&prepared, a.no_pivot)?;
    drop(prepared);
    let mut console = None;
    if process.terminal().unwrap_or(false) {
        let pty = terminal::open(process)?;
        terminal::bind_console(&pty)?;
        terminal::make_controlling(pty.slave.as_raw_fd())?;
        match a.console_sock {
            Some(sock) => terminal::send_to_socket(sock, pty.master.as_raw_fd())?,
            None => console = Some(pty.master),
        }
    }
    mounts::finish(a.spec)?;
    if let Some(h) = a.spec.hostname() {
        nix::unistd::sethostname(h).map_err(|e| Error::sys(format!("set hostname {h}"), e))?;
    }
    if let Some(d) = a.spec.domainname() {
        // SAFETY: the pointer and length describe d's bytes, which live across the call.
        if unsafe { libc::setdomainname(d.as_ptr() as *const libc::c_char, d.len()) } != 0 {
            return Err(Error::sys(
                format!("set domainname {d}"),
                nix::errno::Errno::last(),
            ));
        }
    }
    let prep = process::prepare(process)?;
    if !a.cgroupns_before_mounts {
        in_cgroups(&mut joined)?;
    }
    a.chan
        .send(Tag::Ready, "", console.as_ref().map(|c| c.as_raw_fd()))
        .map_err(|e| Error::sys("handshake", e))?;
    drop(console);
    // Wait for `start`.
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(a.fifo, &mut b) {
            Ok(1) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {
                return Err(Error::Init {
                    id: a.id.into(),
                    message: "exec fifo closed before start".into(),
                })
            }
            Err(e) => return Err(Error::sys("read exec fifo", e)),
        }
    }
    if let Some(h) = a
        .spec
        .hooks()
        .as_ref()
        .and_then(|h| h.start_container().clone())
    {
        hooks::run(
            "startContainer",
            &h,
            &hook_state(&a, host_pid, Status::Created),
        )?;
    }
    process::exec(
        process,
        &prep,
        &Confinement {
            seccomp: a.seccomp,
            preserve_fds: a.preserve_fds,
            die_with: a.caller,
        },
    )
}

/// A new time namespace with the config's offsets. unshare(CLONE_NEWTIME) only prepares it
/// for our children and our next exec, so the offsets can still be written (they cannot
/// once a process is inside); the exec of the container's program enters it.
fn time_namespace(spec: &Spec) -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::from_bits_retain(
        libc::CLONE_NEWTIME,
    ))
    .map_err(|e| Error::sys("unshare the time namespace", e))?;
    let offsets = spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().clone())
        .unwrap_or_default();
    let mut text = String::new();
    for (clock, o) in &offsets {
        if clock != "monotonic" && clock != "boottime" {
            return Err(Error::InvalidConfig(format!(
                "linux.timeOffsets: `{clock}` is not a clock with offsets (monotonic, boottime)"
            )));
        }
        text.push_str(&format!(
            "{clock} {} {}\n",
            o.secs().unwrap_or(0),
            o.nanosecs().unwrap_or(0)
        ));
    }
    if !text.is_empty() {
        std::fs::write("/proc/self/timens_offsets", &text)
            .map_err(|e| Error::io("write time offsets", "/proc/self/timens_offsets", e))?;
    }
    Ok(())
}

fn init_err(msg: String) -> Error {
    Error::Setup(msg)
}

/// What an exec'd process needs.
pub struct ExecArgs<'a> {
    /// As [`InitArgs::cgroup_tasks`].
    pub cgroup_tasks: Vec<BorrowedFd<'a>>,
    pub process: &'a Process,
    pub chan: &'a Channel,
    pub runtime_end: RawFd,
    /// `/proc/<init>/root`, opened before joining: the container's root even when it was
    /// made with chroot (--no-pivot).
    pub root: BorrowedFd<'a>,
    pub console_sock: Option<RawFd>,
    pub stdio: Option<[RawFd; 3]>,
    pub preserve_fds: u32,
    pub seccomp: Option<&'a Filter>,
}

pub fn run_exec(a: ExecArgs) -> ! {
    let chan = a.chan;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exec_child(a)));
    finish(chan, None, r)
}

fn exec_child(a: ExecArgs) -> Result<Infallible> {
    close_runtime_end(a.runtime_end);
    non_dumpable();
    join_own_cgroups(&a.cgroup_tasks)?;
    set_stdio(a.stdio)?;
    a.chan.expect(Tag::Go).map_err(init_err)?;
    nix::unistd::fchdir(a.root).map_err(|e| Error::sys("chdir to the container's root", e))?;
    nix::unistd::chroot(".").map_err(|e| Error::sys("chroot to the container's root", e))?;
    process::set_rlimits(a.process)?;
    let mut console = None;
    if a.process.terminal().unwrap_or(false) {
        let pty = terminal::open(a.process)?;
        terminal::make_controlling(pty.slave.as_raw_fd())?;
        match a.console_sock {
            Some(sock) => terminal::send_to_socket(sock, pty.master.as_raw_fd())?,
            None => console = Some(pty.master),
        }
    }
    let prep = process::prepare(a.process)?;
    a.chan
        .send(Tag::Ready, "", console.as_ref().map(|c| c.as_raw_fd()))
        .map_err(|e| Error::sys("handshake", e))?;
    drop(console);
    process::exec(
        a.process,
        &prep,
        &Confinement {
            seccomp: a.seccomp,
            preserve_fds: a.preserve_fds,
            die_with: None,
        },
    )
}
