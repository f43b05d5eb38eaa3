//! berth-runtime: the low-level part of berth. An OCI bundle (config.json + rootfs) in, a
//! running, confined process out: namespaces with the user namespace first, idmapped bind
//! mounts, pivot_root, /dev, masked and read-only paths, capabilities, seccomp, rlimits,
//! cgroups v1 and v2, pty and console socket, hooks.
//!
//! Used as a library by the engine (through [`Runtime`]) and as the `berth-runtime` binary,
//! which has runc's command line.
//!
//! # Processes
//! [`Runtime::create`] and [`Runtime::exec`] fork: the container's init (and an exec'd
//! process) is a **child of the process that calls them**, so that the caller (berth's
//! per-container monitor) can `waitpid()` it and read its exit status. They must therefore
//! be called from a single-threaded process (the monitor is one: it is started by exec and
//! runs no threads); the child runs on a copy of the caller's memory until it execs.
//!
//! # Safety of the host
//! - No host descriptor reaches the container: everything above 2 (and the preserved ones)
//!   is close-on-exec before the final execve (the CVE-2024-21626 class), and the working
//!   directory is set inside the container's root after pivot_root.
//! - The container never sees this binary: the init is a fork of the caller that execs the
//!   container's program directly, without re-executing `/proc/self/exe`, and it is
//!   non-dumpable until that exec, so no process of the container can open
//!   `/proc/<init>/exe` while it still points at the runtime (the CVE-2019-5736 class).
//!   An exec'd process is the same: forked, non-dumpable, then exec of the container's
//!   program.

mod cgroups;
mod channel;
mod create;
mod devices_bpf;
mod error;
mod hooks;
mod init;
mod mounts;
mod process;
mod seccomp;
mod spec;
mod state;
mod stats;
mod syscall;
mod terminal;

use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cgroups::{Layout as CgroupLayout, Placement as CgroupPlacement};
pub use error::{Error, Result};
pub use mounts::resolve_in_root;
pub use spec::{default_spec, features};
pub use state::{State, Status, OCI_VERSION};
pub use stats::CgroupStats;
/// For the engine's view of a container's mounts (`docker cp`).
pub use syscall::{mount_setattr, SetAttr, MOUNT_ATTR_RDONLY};

use state::{Record, EXEC_FIFO, INIT_ERROR};

/// Options of [`Runtime::create`] (runc's `create` flags).
#[derive(Debug, Default)]
pub struct CreateOptions {
    /// The bundle directory: `config.json` and (unless `root.path` is absolute) the rootfs.
    pub bundle: PathBuf,
    /// Where to write the init's pid (as runc's `--pid-file`).
    pub pid_file: Option<PathBuf>,
    /// A unix socket to send the pty master to when `process.terminal` is set.
    pub console_socket: Option<PathBuf>,
    /// chroot instead of pivot_root (for a root on ramfs, where pivot_root fails).
    pub no_pivot: bool,
    /// Descriptors 3..3+N of the caller stay open in the container.
    pub preserve_fds: u32,
    /// The container's stdin, stdout and stderr when it has no terminal; `None` inherits
    /// the caller's.
    pub stdio: Option<[OwnedFd; 3]>,
    /// Let the container's init outlive the caller. By default it gets SIGKILL when the
    /// caller (its parent: the engine's monitor) dies, so that no container runs untracked;
    /// the `create` command, which exits before `start`, sets this. The kernel watches the
    /// calling thread (PR_SET_PDEATHSIG): call create from a thread that outlives the
    /// container (the monitor's main thread).
    pub outlive_caller: bool,
}

/// Options of [`Runtime::exec`].
#[derive(Debug, Default)]
pub struct ExecOptions {
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: u32,
    pub stdio: Option<[OwnedFd; 3]>,
}

/// What [`Runtime::create`] and [`Runtime::exec`] return.
#[derive(Debug)]
pub struct Created {
    /// The process's pid in the caller's pid namespace; it is the caller's child.
    pub pid: i32,
    /// The pty master, when `process.terminal` is set and no console socket was given.
    pub console: Option<OwnedFd>,
}

/// An OCI runtime keeping its state under one directory (runc's `--root`).
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
    cgroups: cgroups::Layout,
}

/// runc's default for `--root`, under berth's name.
pub const DEFAULT_ROOT: &str = "/run/berth-runtime";

/// How long `delete --force` and `delete` of a created container wait for processes to go.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl Runtime {
    /// A runtime whose container state lives under `state_root` (created if missing).
    pub fn new(state_root: PathBuf) -> Runtime {
        Runtime {
            root: state_root,
            cgroups: cgroups::Layout::detect(),
        }
    }

    /// The same, with a given cgroup layout (tests, or a host with cgroups elsewhere).
    pub fn with_cgroups(state_root: PathBuf, layout: cgroups::Layout) -> Runtime {
        Runtime {
            root: state_root,
            cgroups: layout,
        }
    }

    pub fn state_root(&self) -> &Path {
        &self.root
    }

    /// Compiled seccomp programs (see the seccomp module). No container id starts with a dot.
    fn seccomp_cache(&self) -> PathBuf {
        self.root.join(".seccomp")
    }

    fn dir(&self, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        Ok(self.root.join(id))
    }

    /// Creates container `id` from a bundle: namespaces, mounts, cgroups, everything but
    /// the final exec. The init (a child of the caller; see the crate docs) then waits for
    /// [`Runtime::start`]. Runs the prestart, createRuntime and createContainer hooks.
    pub fn create(&self, id: &str, opts: &CreateOptions) -> Result<Created> {
        let dir = self.dir(id)?;
        create::create(self, id, &dir, opts)
    }

    /// Lets a created container's init exec its program; runs startContainer (in the
    /// container) and poststart hooks.
    pub fn start(&self, id: &str) -> Result<()> {
        let dir = self.dir(id)?;
        let rec = Record::load(&dir, id)?;
        let status = rec.status(&dir);
        if status != Status::Created {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                op: "start",
                need: "created",
            });
        }
        let fifo = dir.join(EXEC_FIFO);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&fifo)
            .map_err(|e| Error::io("open exec fifo", &fifo, e))?;
        use std::io::Write;
        (&f).write_all(&[0])
            .map_err(|e| Error::io("write exec fifo", &fifo, e))?;
        std::fs::remove_file(&fifo).map_err(|e| Error::io("remove exec fifo", &fifo, e))?;
        // The init holds the fifo open (close-on-exec) until it execs the container's
        // program: when it is gone, the fifo has no reader and our end reports POLLERR. So
        // start returns, and poststart runs, once the program runs (or the init died).
        use std::os::fd::AsFd;
        let mut pfd = [nix::poll::PollFd::new(
            f.as_fd(),
            nix::poll::PollFlags::empty(),
        )];
        loop {
            match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("wait for the container's program to start", e)),
                Ok(_) => break,
            }
        }
        drop(f);
        // The init failed between the fifo and the exec (user, capabilities, cwd...): it
        // said why in INIT_ERROR before it exited, which is what woke us.
        let why = std::fs::read_to_string(dir.join(INIT_ERROR)).unwrap_or_default();
        if !why.is_empty() {
            return Err(Error::Init {
                id: id.into(),
                message: why,
            });
        }
        if let Some(h) = rec
            .spec
            .hooks()
            .as_ref()
            .and_then(|h| h.poststart().clone())
        {
            // A failing poststart hook is logged, not fatal (runtime-spec).
            if let Err(e) = hooks::run("poststart", &h, &rec.state(&dir)) {
                tracing::warn!("{e}");
            }
        }
        Ok(())
    }

    /// The runtime-spec state of container `id`.
    pub fn state(&self, id: &str) -> Result<State> {
        let dir = self.dir(id)?;
        Ok(Record::load(&dir, id)?.state(&dir))
    }

    /// Sends `signal` to the init, or with `all` to every process in the container's cgroup.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        let dir = self.dir(id)?;
        let rec = Record::load(&dir, id)?;
        let status = rec.status(&dir);
        if status == Status::Stopped {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                op: "kill",
                need: "created or running",
            });
        }
        if all {
            for pid in cgroups::procs(&rec.cgroups) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::try_from(signal).ok(),
                );
            }
        }
        signal_init(&rec, signal)
    }

    /// Removes container `id`: its cgroups and state; runs poststop hooks. A running
    /// container needs `force` (which kills it); a created one is killed, as runc does.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let dir = self.dir(id)?;
        let rec = match Record::load(&dir, id) {
            Ok(r) => r,
            // A create that died half-way leaves a directory without a record.
            Err(Error::BadState { .. } | Error::NotFound { .. }) if force && dir.is_dir() => {
                return std::fs::remove_dir_all(&dir)
                    .map_err(|e| Error::io("remove container state", &dir, e))
            }
            Err(e) => return Err(e),
        };
        let status = rec.status(&dir);
        if status == Status::Running && !force {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                op: "delete",
                need: "stopped (or use --force)",
            });
        }
        if status != Status::Stopped {
            for pid in cgroups::procs(&rec.cgroups) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::SIGKILL,
                );
            }
            let _ = signal_init(&rec, libc::SIGKILL);
            // A paused container's processes die only once thawed (v1 freezer).
            stats::thaw_quietly(&self.cgroups, &rec.cgroups);
            let deadline = std::time::Instant::now() + KILL_WAIT;
            while rec.status(&dir) != Status::Stopped && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        cgroups::remove(&rec.cgroups, KILL_WAIT)?;
        let mut state = rec.state(&dir);
        state.status = Status::Stopped;
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io("remove container state", &dir, e))?;
        if let Some(h) = rec.spec.hooks().as_ref().and_then(|h| h.poststop().clone()) {
            // Poststop failures are logged and do not stop the delete (runtime-spec).
            if let Err(e) = hooks::run("poststop", &h, &state) {
                tracing::warn!("{e}");
            }
        }
        Ok(())
    }

    /// The state of every container under the root.
    pub fn list(&self) -> Result<Vec<State>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("list containers in", &self.root, e)),
        };
        for ent in rd.flatten() {
            let Some(id) = ent.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Ok(rec) = Record::load(&ent.path(), &id) {
                out.push(rec.state(&ent.path()));
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Runs `process` in container `id` (created or running): in all its namespaces
    /// (the user namespace included), its cgroups, with the process's capabilities and the
    /// container's seccomp filter. The new process is a child of the caller.
    pub fn exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        opts: &ExecOptions,
    ) -> Result<Created> {
        let dir = self.dir(id)?;
        let rec = Record::load(&dir, id)?;
        let status = rec.status(&dir);
        if status == Status::Stopped {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                op: "exec",
                need: "created or running",
            });
        }
        create::exec(self, &rec, process, opts)
    }
}

fn signal_init(rec: &Record, signal: i32) -> Result<()> {
    // Through a pidfd, after checking the start time, so that a recycled pid is never hit.
    let pidfd = syscall::pidfd_open(rec.pid)
        .map_err(|e| Error::sys(format!("pidfd_open {}", rec.pid), e))?;
    if state::proc_stat(rec.pid).map(|s| s.1) != Some(rec.start_time) {
        return Err(Error::WrongState {
            id: rec.id.clone(),
            status: "stopped".into(),
            op: "kill",
            need: "created or running",
        });
    }
    use std::os::fd::AsFd;
    syscall::pidfd_send_signal(pidfd.as_fd(), signal)
        .map_err(|e| Error::sys(format!("signal {signal} to pid {}", rec.pid), e))
}

/// Container ids: what runc accepts, so that an id is always one safe path component.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-+.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for good in ["a", "c-1", "x_y.z", "A+B"] {
            validate_id(good).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", &"x".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }
}
