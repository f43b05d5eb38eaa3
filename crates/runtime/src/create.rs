//! The runtime side of `create` and `exec`: reads the config, prepares what must be done
//! with the host's privileges (cgroups, idmapped mount trees, the exec fifo), forks the
//! child straight into its new namespaces, writes its id maps, and waits until it is ready.

use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use berth_idmap::IdMap;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Process, Spec};

use crate::channel::{Channel, Tag};
use crate::error::{Error, Result};
use crate::init::{self, ExecArgs, InitArgs};
use crate::mounts;
use crate::seccomp;
use crate::state::{self, Record, State, Status, EXEC_FIFO, INIT_ERROR, OCI_VERSION};
use crate::syscall::{self, Forked};
use crate::{cgroups, hooks, CreateOptions, Created, ExecOptions, Runtime};

/// Removes what a failed create left: the child, the cgroups, the state directory.
struct Cleanup<'a> {
    dir: &'a Path,
    child: Option<i32>,
    cgroups: Option<cgroups::Placement>,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.child {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        if let Some(pl) = &self.cgroups {
            let _ = cgroups::remove(pl, std::time::Duration::from_secs(2));
        }
        let _ = fs::remove_dir_all(self.dir);
    }
}

fn ns_flag(t: LinuxNamespaceType) -> u64 {
    t as u64
}

/// Namespaces to create (clone flags) and to join (type, path), from `linux.namespaces`.
fn namespaces(spec: &Spec) -> (u64, Vec<(LinuxNamespaceType, PathBuf)>) {
    let mut flags = 0;
    let mut join = Vec::new();
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
    {
        match ns.path() {
            Some(p) => join.push((ns.typ(), p.clone())),
            None => flags |= ns_flag(ns.typ()),
        }
    }
    // The user namespace first: every other one is then owned by it (and joined from it).
    join.sort_by_key(|(t, _)| *t != LinuxNamespaceType::User);
    (flags, join)
}

fn id_map(m: Option<&Vec<LinuxIdMapping>>, what: &str) -> Result<IdMap> {
    let m = m.filter(|m| !m.is_empty()).ok_or_else(|| {
        Error::InvalidConfig(format!(
            "a new user namespace needs linux.{what}Mappings (e.g. 0 100000 65536)"
        ))
    })?;
    IdMap::from_oci(m).map_err(|e| Error::InvalidConfig(format!("linux.{what}Mappings: {e}")))
}

fn write_maps(pid: i32, uid: &IdMap, gid: &IdMap) -> Result<()> {
    // We are root in the parent namespace with CAP_SETGID: the kernel lets us write
    // gid_map without denying setgroups first, so the container keeps setgroups(2)
    // (additionalGids) working, as Docker's remap does.
    for (file, map) in [("gid_map", gid), ("uid_map", uid)] {
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, map.to_proc_text()).map_err(|e| Error::io("write id map", &path, e))?;
    }
    Ok(())
}

/// A user namespace holding `uid`/`gid` maps, for MOUNT_ATTR_IDMAP: a short-lived child
/// creates it, we write its maps and keep a descriptor; the child then exits.
fn helper_userns(uid: &IdMap, gid: &IdMap) -> Result<OwnedFd> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    match syscall::clone3_fork(libc::CLONE_NEWUSER as u64)
        .map_err(|e| Error::sys("clone a user namespace for an idmapped mount", e))?
    {
        Forked::Child => {
            drop(w);
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(&r, &mut b);
            // SAFETY: _exit in the child of a fork, without running the parent's handlers.
            unsafe { libc::_exit(0) }
        }
        Forked::Parent(pid) => {
            drop(r);
            let res = write_maps(pid, uid, gid).and_then(|_| {
                let p = format!("/proc/{pid}/ns/user");
                fs::File::open(&p)
                    .map(OwnedFd::from)
                    .map_err(|e| Error::io("open user namespace", &p, e))
            });
            drop(w);
            let _ = waitpid(Pid::from_raw(pid), None);
            res
        }
    }
}

/// Idmapped bind mounts need CAP_SYS_ADMIN over the source's file system, which only the
/// runtime (host root) has: make the detached, idmapped trees here; the init attaches them.
fn idmapped_trees(spec: &Spec) -> Result<HashMap<usize, OwnedFd>> {
    let mut out = HashMap::new();
    let linux = spec.linux().clone().unwrap_or_default();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if !mounts::is_idmapped(m) {
            continue;
        }
        if !mounts::is_bind(m) {
            return Err(Error::InvalidConfig(format!(
                "mount at {}: idmap is supported on bind mounts only",
                m.destination().display()
            )));
        }
        let (uid, gid) = match m.uid_mappings() {
            Some(u) => (
                id_map(Some(u), "uid")?,
                id_map(m.gid_mappings().as_ref(), "gid")?,
            ),
            None => (
                id_map(linux.uid_mappings().as_ref(), "uid")?,
                id_map(linux.gid_mappings().as_ref(), "gid")?,
            ),
        };
        let ns = helper_userns(&uid, &gid)?;
        let opts = mounts::parse_options(m.options().as_deref().unwrap_or(&[]));
        let src = m.source().clone().unwrap_or_default();
        let tree = syscall::open_tree_clone(None, &src, opts.recursive)
            .map_err(|e| Error::sys(format!("open idmapped mount source {}", src.display()), e))?;
        syscall::mount_setattr(
            tree.as_fd(),
            opts.ridmap,
            mounts::bind_attr(&opts),
            Some(ns.as_fd()),
        )
        .map_err(|e| {
            Error::sys(
                format!(
                    "idmap mount of {} (does its file system support idmapped mounts?)",
                    src.display()
                ),
                e,
            )
        })?;
        out.insert(i, tree);
    }
    Ok(out)
}

fn connect_console(path: &Path) -> Result<UnixStream> {
    UnixStream::connect(path).map_err(|e| Error::io("connect to console socket", path, e))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io("resolve bundle path", p, e))
}

pub fn create(rt: &Runtime, id: &str, dir: &Path, opts: &CreateOptions) -> Result<Created> {
    let bundle = absolute(&opts.bundle)?;
    let config = bundle.join("config.json");
    let spec = Spec::load(&config).map_err(|e| Error::Config {
        path: config.clone(),
        reason: e.to_string(),
    })?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::InvalidConfig("`process` is missing: nothing to run".into()))?;
    let linux = spec.linux().clone().unwrap_or_default();
    let rootfs = mounts::rootfs_path(&spec, &bundle)?;
    if !rootfs.is_dir() {
        return Err(Error::InvalidConfig(format!(
            "root.path {} is not a directory",
            rootfs.display()
        )));
    }
    let (flags, joins) = namespaces(&spec);
    let new_userns = flags & libc::CLONE_NEWUSER as u64 != 0;
    let maps = if new_userns {
        Some((
            id_map(linux.uid_mappings().as_ref(), "uid")?,
            id_map(linux.gid_mappings().as_ref(), "gid")?,
        ))
    } else {
        None
    };
    if flags & libc::CLONE_NEWNS as u64 == 0 {
        return Err(Error::InvalidConfig(
            "the container needs its own mount namespace (linux.namespaces must list `mount` without a path)".into(),
        ));
    }
    let filter = linux
        .seccomp()
        .as_ref()
        .map(|s| seccomp::compile_cached(s, &rt.seccomp_cache()))
        .transpose()?;
    check_unsupported(&spec)?;
    check_sysctls(&spec)?;

    fs::create_dir_all(&rt.root).map_err(|e| Error::io("create state root", &rt.root, e))?;
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Exists {
                id: id.into(),
                dir: dir.into(),
            })
        }
        Err(e) => return Err(Error::io("create container state", dir, e)),
    }
    let mut cleanup = Cleanup {
        dir,
        child: None,
        cgroups: None,
        armed: true,
    };

    let rel = cgroups::container_path(linux.cgroups_path().as_deref(), id)?;
    let placement = cgroups::setup(&rt.cgroups, &rel, linux.resources().as_ref())?;
    cleanup.cgroups = Some(placement.clone());

    let fifo_path = dir.join(EXEC_FIFO);
    nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| Error::sys(format!("mkfifo {}", fifo_path.display()), e))?;
    let fifo = nix::fcntl::open(
        &fifo_path,
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys(format!("open {}", fifo_path.display()), e))?;

    let error_path = dir.join(INIT_ERROR);
    let error_file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&error_path)
        .map_err(|e| Error::io("create", &error_path, e))?;

    // The init dies with us (see CreateOptions::outlive_caller): it watches this pidfd to
    // tell whether we died before it could ask for the signal.
    let caller = if opts.outlive_caller {
        None
    } else {
        Some(
            syscall::pidfd_open(std::process::id() as i32)
                .map_err(|e| Error::sys("pidfd_open of the runtime itself", e))?,
        )
    };

    let idmapped = idmapped_trees(&spec)?;
    let console_sock = match (&opts.console_socket, process.terminal().unwrap_or(false)) {
        (Some(p), true) => Some(connect_console(p)?),
        _ => None,
    };
    let (parent_chan, child_chan) = Channel::pair().map_err(|e| Error::sys("socketpair", e))?;
    let hooks = spec.hooks().clone().unwrap_or_default();
    let runtime_hooks = hooks.prestart().as_ref().is_some_and(|h| !h.is_empty())
        || hooks
            .create_runtime()
            .as_ref()
            .is_some_and(|h| !h.is_empty());
    let joined_userns = joins.iter().any(|(t, _)| *t == LinuxNamespaceType::User);
    if !new_userns && !joined_userns {
        // Without a user namespace (which starts with every capability) the container gets
        // only the capabilities we hold: say here what it misses, in our log.
        crate::process::warn_not_held(process, &crate::process::held_caps()?)?;
    }
    let join_fds = joins
        .iter()
        .map(|(t, p)| {
            fs::File::open(p)
                .map(|f| (*t, OwnedFd::from(f)))
                .map_err(|e| Error::io("open namespace to join", p, e))
        })
        .collect::<Result<Vec<_>>>()?;

    let late = (libc::CLONE_NEWIPC | libc::CLONE_NEWCGROUP | libc::CLONE_NEWTIME) as u64;
    if linux.time_offsets().as_ref().is_some_and(|t| !t.is_empty())
        && flags & libc::CLONE_NEWTIME as u64 == 0
    {
        return Err(Error::InvalidConfig(
            "linux.timeOffsets needs a new time namespace (linux.namespaces: {\"type\": \"time\"})"
                .into(),
        ));
    }
    // Born in the cgroup2 directory when we can: one cgroup write (and its wait) less.
    let v2_dir = (join_fds.is_empty() && rt.cgroups.first_is_v2())
        .then(|| placement.dirs.first())
        .flatten()
        .map(|d| {
            fs::File::open(d)
                .map(OwnedFd::from)
                .map_err(|e| Error::io("open cgroup", d, e))
        })
        .transpose()?;
    // The v1 cgroups the init joins itself; the rest (cgroup2) we join it to.
    let (cgroup_tasks, join_rest) =
        cgroups::self_join_files(&rt.cgroups, &placement, usize::from(v2_dir.is_some()))?;
    let args = InitArgs {
        id,
        cgroup_tasks: cgroup_tasks.iter().map(|f| f.as_fd()).collect(),
        spec: &spec,
        bundle: &bundle,
        chan: &child_chan,
        runtime_end: parent_chan.raw(),
        fifo: fifo.as_fd(),
        error_file: error_file.as_fd(),
        caller: caller.as_ref().map(|f| f.as_fd()),
        console_sock: console_sock.as_ref().map(|s| s.as_raw_fd()),
        stdio: opts
            .stdio
            .as_ref()
            .map(|s| [s[0].as_raw_fd(), s[1].as_raw_fd(), s[2].as_raw_fd()]),
        no_pivot: opts.no_pivot,
        preserve_fds: opts.preserve_fds,
        mounts: mounts::Context {
            spec: &spec,
            rootfs: rootfs.clone(),
            userns: new_userns || joined_userns,
            new_netns: flags & libc::CLONE_NEWNET as u64 != 0,
            cgroup_v2: matches!(rt.cgroups, cgroups::Layout::V2 { .. }),
            cgroup_dirs: placement.dirs.clone(),
        },
        idmapped,
        seccomp: filter.as_ref(),
        runtime_hooks,
        become_ns_root: new_userns || joined_userns,
        late_unshare: nix::sched::CloneFlags::from_bits_retain((flags & late) as i32),
        // A fresh cgroup2 mount shows the cgroup namespace's root: it must exist first.
        cgroupns_before_mounts: matches!(rt.cgroups, cgroups::Layout::V2 { .. })
            && spec
                .mounts()
                .iter()
                .flatten()
                .any(|m| m.typ().as_deref() == Some("cgroup")),
    };
    let clone_flags = flags & !late;
    let pid = spawn(
        clone_flags,
        &join_fds,
        v2_dir.as_ref().map(|f| f.as_fd()),
        move || init::run(args),
    )
    .map_err(|e| with_id(e, id))?;
    cleanup.child = Some(pid);
    drop(child_chan);
    drop(fifo);
    drop(error_file);
    drop(caller);
    drop(console_sock);
    drop(join_fds);
    drop(cgroup_tasks);

    if let Some((uid, gid)) = &maps {
        write_maps(pid, uid, gid)?;
    }
    let fail = |message: String| Error::Init {
        id: id.into(),
        message: child_failure(&parent_chan).unwrap_or(message),
    };
    parent_chan
        .send(Tag::Go, &pid.to_string(), None)
        .map_err(|e| fail(format!("handshake: {e}")))?;
    // While the child mounts, put it in its cgroups; it waits for `Joined` before it
    // unshares its cgroup namespace and before it execs.
    cgroups::join_from(&join_rest, pid, 0)?;
    if let Some(adj) = process.oom_score_adj() {
        let p = format!("/proc/{pid}/oom_score_adj");
        fs::write(&p, adj.to_string()).map_err(|e| Error::io("set oom_score_adj", &p, e))?;
    }
    parent_chan
        .send(Tag::Joined, "", None)
        .map_err(|e| fail(format!("handshake: {e}")))?;
    let creating = State {
        oci_version: OCI_VERSION.into(),
        id: id.into(),
        status: Status::Creating,
        pid,
        bundle: bundle.clone(),
        annotations: spec.annotations().clone().unwrap_or_default(),
    };
    let console;
    loop {
        let msg = parent_chan
            .recv()
            .map_err(|e| fail(format!("handshake: {e}")))?
            .ok_or_else(|| fail("the container's init exited during setup".into()))?;
        match msg.tag {
            Tag::NeedHooks => {
                hooks::run(
                    "prestart",
                    hooks.prestart().as_deref().unwrap_or(&[]),
                    &creating,
                )?;
                hooks::run(
                    "createRuntime",
                    hooks.create_runtime().as_deref().unwrap_or(&[]),
                    &creating,
                )?;
                parent_chan
                    .send(Tag::HooksDone, "", None)
                    .map_err(|e| fail(format!("handshake: {e}")))?;
            }
            Tag::Ready => {
                console = msg.fd;
                break;
            }
            Tag::Failed => return Err(fail(msg.text)),
            t => return Err(fail(format!("protocol error: unexpected {t:?}"))),
        }
    }
    let start_time = state::proc_stat(pid)
        .map(|s| s.1)
        .ok_or_else(|| fail("the container's init exited during setup".into()))?;
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Record {
        id: id.into(),
        pid,
        start_time,
        bundle,
        created,
        cgroups: placement,
        spec: spec.clone(),
    }
    .save(dir)?;
    if let Some(p) = &opts.pid_file {
        fs::write(p, pid.to_string()).map_err(|e| Error::io("write pid file", p, e))?;
    }
    cleanup.armed = false;
    Ok(Created { pid, console })
}

/// Only sysctls that belong to a namespace the container has of its own: any other would
/// change the host (runc keeps the same list).
fn check_sysctls(spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    let has = |t: LinuxNamespaceType| linux.namespaces().iter().flatten().any(|n| n.typ() == t);
    for k in linux.sysctl().iter().flatten().map(|(k, _)| k) {
        if !sysctl_allowed(
            k,
            has(LinuxNamespaceType::Ipc),
            has(LinuxNamespaceType::Network),
            has(LinuxNamespaceType::Uts),
        ) {
            return Err(Error::InvalidConfig(format!(
                "sysctl `{k}` is not namespaced (or the container does not have its namespace): it would change the host"
            )));
        }
    }
    Ok(())
}

fn sysctl_allowed(k: &str, ipc: bool, net: bool, uts: bool) -> bool {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if k.contains("..") || k.contains('/') || k.starts_with('.') {
        return false;
    }
    (ipc && (IPC.contains(&k) || k.starts_with("fs.mqueue.")))
        || (net && k.starts_with("net."))
        || (uts && (k == "kernel.hostname" || k == "kernel.domainname"))
}

/// Config fields this runtime does not implement: refused when ignoring them would change
/// what the container can do or see, warned about otherwise.
fn check_unsupported(spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    let mut ignored = Vec::new();
    if linux.intel_rdt().is_some() {
        ignored.push("linux.intelRdt");
    }
    if linux.memory_policy().is_some() {
        ignored.push("linux.memoryPolicy");
    }
    if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
        ignored.push("linux.netDevices");
    }
    if linux.personality().is_some() {
        ignored.push("linux.personality");
    }
    if let Some(p) = spec.process() {
        if p.scheduler().is_some() {
            ignored.push("process.scheduler");
        }
        if p.io_priority().is_some() {
            ignored.push("process.ioPriority");
        }
        if p.exec_cpu_affinity().is_some() {
            ignored.push("process.execCPUAffinity");
        }
    }
    for f in ignored {
        tracing::warn!("{f} is not supported by berth-runtime and is ignored");
    }
    Ok(())
}

/// The child's own failure message, if it sent one before the handshake broke (a write
/// to a child that just failed and exited meets EPIPE or ECONNRESET before its message).
fn child_failure(chan: &Channel) -> Option<String> {
    match chan.try_recv() {
        Ok(Some(m)) if m.tag == Tag::Failed => Some(m.text),
        _ => None,
    }
}

/// Names the container in an error from the forking helpers, which do not know it.
fn with_id(e: Error, id: &str) -> Error {
    match e {
        Error::Init { message, .. } => Error::Init {
            id: id.into(),
            message,
        },
        e => e,
    }
}

/// Ends a forked child whose work function returned (it execs or exits on its own; this is
/// the backstop that keeps it out of the caller's code).
fn child_exit() -> ! {
    // SAFETY: _exit in a forked child, without running the caller's handlers.
    unsafe { libc::_exit(127) }
}

/// Forks `child` into new namespaces `flags`, after joining `joins` (user first). Without
/// namespaces to join, one clone3 does it; with them, an intermediate process joins and
/// clones with CLONE_PARENT, so that the child is still the caller's.
fn spawn(
    flags: u64,
    joins: &[(LinuxNamespaceType, OwnedFd)],
    cgroup: Option<BorrowedFd>,
    child: impl FnOnce(),
) -> Result<i32> {
    if joins.is_empty() {
        return match syscall::clone3_fork_into(flags, cgroup)
            .map_err(|e| Error::sys("clone3 into the new namespaces", e))?
        {
            Forked::Child => {
                child();
                child_exit()
            }
            Forked::Parent(pid) => Ok(pid),
        };
    }
    via_intermediate(
        |_| {
            for (t, fd) in joins {
                nix::sched::setns(fd, nix::sched::CloneFlags::from_bits_truncate(*t as i32))
                    .map_err(|e| format!("join {t} namespace: {e}"))?;
            }
            Ok(())
        },
        flags,
        child,
    )
}

/// Forks an intermediate that runs `join`, then clones (CLONE_PARENT | flags) the real
/// child and reports its pid over a pipe. Returns the child's pid.
fn via_intermediate(
    join: impl FnOnce(()) -> std::result::Result<(), String>,
    flags: u64,
    child: impl FnOnce(),
) -> Result<i32> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    match syscall::clone3_fork(0).map_err(|e| Error::sys("fork", e))? {
        Forked::Child => {
            drop(r);
            let msg = match join(()) {
                Ok(()) => match syscall::clone3_fork(flags | libc::CLONE_PARENT as u64) {
                    Ok(Forked::Child) => {
                        drop(w);
                        child();
                        child_exit()
                    }
                    Ok(Forked::Parent(pid)) => format!("ok {pid}"),
                    Err(e) => format!("clone3 into the container's namespaces: {e}"),
                },
                Err(e) => e,
            };
            let _ = nix::unistd::write(&w, msg.as_bytes());
            // SAFETY: _exit in the intermediate child, without the parent's handlers.
            unsafe { libc::_exit(0) }
        }
        Forked::Parent(mid) => {
            drop(w);
            let mut buf = [0u8; 512];
            let n = nix::unistd::read(&r, &mut buf).unwrap_or(0);
            let _ = waitpid(Pid::from_raw(mid), None);
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            match text.strip_prefix("ok ").and_then(|p| p.parse().ok()) {
                Some(pid) => Ok(pid),
                None => Err(Error::Init {
                    id: String::new(),
                    message: if text.is_empty() {
                        "the intermediate process died".into()
                    } else {
                        text
                    },
                }),
            }
        }
    }
}

pub fn exec(rt: &Runtime, rec: &Record, process: &Process, opts: &ExecOptions) -> Result<Created> {
    let pidfd = syscall::pidfd_open(rec.pid)
        .map_err(|e| Error::sys(format!("pidfd_open {}", rec.pid), e))?;
    if state::proc_stat(rec.pid).map(|s| s.1) != Some(rec.start_time) {
        return Err(Error::WrongState {
            id: rec.id.clone(),
            status: "stopped".into(),
            op: "exec",
            need: "running",
        });
    }
    let linux = rec.spec.linux().clone().unwrap_or_default();
    let mut flags = 0i32;
    for ns in linux.namespaces().iter().flatten() {
        flags |= ns.typ() as i32;
    }
    let root_path = format!("/proc/{}/root", rec.pid);
    let root =
        fs::File::open(&root_path).map_err(|e| Error::io("open container root", &root_path, e))?;
    let filter = linux
        .seccomp()
        .as_ref()
        .map(|s| seccomp::compile_cached(s, &rt.seccomp_cache()))
        .transpose()?;
    let console_sock = match (&opts.console_socket, process.terminal().unwrap_or(false)) {
        (Some(p), true) => Some(connect_console(p)?),
        _ => None,
    };
    let (parent_chan, child_chan) = Channel::pair().map_err(|e| Error::sys("socketpair", e))?;
    // As the init does: the v1 cgroups it joins itself, cgroup2 we join it to.
    let (cgroup_tasks, join_rest) = cgroups::self_join_files(&rt.cgroups, &rec.cgroups, 0)?;
    let args = ExecArgs {
        cgroup_tasks: cgroup_tasks.iter().map(|f| f.as_fd()).collect(),
        process,
        chan: &child_chan,
        runtime_end: parent_chan.raw(),
        root: root.as_fd(),
        console_sock: console_sock.as_ref().map(|s| s.as_raw_fd()),
        stdio: opts
            .stdio
            .as_ref()
            .map(|s| [s[0].as_raw_fd(), s[1].as_raw_fd(), s[2].as_raw_fd()]),
        preserve_fds: opts.preserve_fds,
        seccomp: filter.as_ref(),
    };
    let pidfd_raw: RawFd = pidfd.as_raw_fd();
    let pid = via_intermediate(
        |_| {
            // SAFETY: setns with a live pidfd and namespace flags: joins them all at once.
            if unsafe { libc::setns(pidfd_raw, flags) } != 0 {
                return Err(format!(
                    "join the container's namespaces: {}",
                    nix::errno::Errno::last()
                ));
            }
            Ok(())
        },
        0,
        move || init::run_exec(args),
    )
    .map_err(|e| with_id(e, &rec.id))?;
    drop(child_chan);
    drop(root);
    drop(cgroup_tasks);
    let kill = |e: Error| {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid), None);
        e
    };
    cgroups::join(&join_rest, pid).map_err(kill)?;
    let fail = |message: String| Error::Init {
        id: rec.id.clone(),
        message,
    };
    parent_chan
        .send(Tag::Go, &pid.to_string(), None)
        .map_err(|e| kill(fail(format!("handshake: {e}"))))?;
    let msg = parent_chan.expect(Tag::Ready).map_err(|m| kill(fail(m)))?;
    if let Some(p) = &opts.pid_file {
        fs::write(p, pid.to_string()).map_err(|e| Error::io("write pid file", p, e))?;
    }
    Ok(Created {
        pid,
        console: msg.fd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_namespaced_sysctls() {
        assert!(sysctl_allowed("net.ipv4.ip_forward", false, true, false));
        assert!(!sysctl_allowed("net.ipv4.ip_forward", true, false, true));
        assert!(sysctl_allowed("kernel.shmmax", true, false, false));
        assert!(sysctl_allowed("fs.mqueue.msg_max", true, false, false));
        assert!(!sysctl_allowed("kernel.panic", true, true, true));
        assert!(!sysctl_allowed("vm.overcommit_memory", true, true, true));
        assert!(sysctl_allowed("kernel.hostname", false, false, true));
        assert!(!sysctl_allowed("net/../../kernel/panic", true, true, true));
    }

    #[test]
    fn namespaces_split_into_new_and_joined() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.2.0",
            "linux": {"namespaces": [
                {"type": "pid"}, {"type": "network", "path": "/proc/1/ns/net"},
                {"type": "user", "path": "/proc/1/ns/user"}, {"type": "mount"}
            ]}
        }))
        .unwrap();
        let (flags, joins) = namespaces(&spec);
        assert_eq!(flags, (libc::CLONE_NEWPID | libc::CLONE_NEWNS) as u64);
        assert_eq!(
            joins[0].0,
            LinuxNamespaceType::User,
            "the user namespace is joined first"
        );
        assert_eq!(joins.len(), 2);
    }
}
