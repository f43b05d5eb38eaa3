//! `berth-runtime`: berth's OCI runtime with runc's command line.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use berth_runtime::{CreateOptions, ExecOptions, Runtime, DEFAULT_ROOT};
use clap::{Args, Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

#[derive(Parser)]
#[command(
    name = "berth-runtime",
    version,
    about = "berth's OCI runtime (runc's command line)"
)]
struct Cli {
    /// Directory for the containers' state.
    #[arg(long, global = true, default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// Also write log messages (and errors) to this file.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Format of the log file.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Log debug messages.
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted for runc compatibility; cgroups are always driven through cgroupfs.
    #[arg(long, global = true, hide = true)]
    systemd_cgroup: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct CreateArgs {
    /// The bundle directory (config.json and rootfs).
    #[arg(long, short, default_value = ".")]
    bundle: PathBuf,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master (process.terminal).
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// chroot instead of pivot_root.
    #[arg(long)]
    no_pivot: bool,
    /// Pass descriptors 3..3+N to the container.
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    id: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a container; it waits for `start`.
    Create(CreateArgs),
    /// Start a created container.
    Start { id: String },
    /// Create and start a container; wait for it unless --detach.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(long, short)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Print a container's state (JSON).
    State { id: String },
    /// Signal a container's init (or all its processes).
    Kill {
        #[arg(long, short)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container.
    Delete {
        #[arg(long, short)]
        force: bool,
        id: String,
    },
    /// List containers.
    List {
        #[arg(long, short, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run a process in a container.
    Exec {
        /// A process.json (runtime-spec `process`) instead of ARGS.
        #[arg(long, short)]
        process: Option<PathBuf>,
        #[arg(long, short)]
        tty: bool,
        #[arg(long)]
        cwd: Option<PathBuf>,
        #[arg(long, short)]
        env: Vec<String>,
        /// UID[:GID]
        #[arg(long, short)]
        user: Option<String>,
        #[arg(long, short)]
        detach: bool,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        preserve_fds: u32,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Write a default config.json.
    Spec {
        #[arg(long, short, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        rootless: bool,
    },
    /// Print the runtime-spec features this runtime supports.
    Features,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let to_file = cli.log.is_some();
    init_logging(&cli);
    match real_main(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let msg = format!("{e:#}");
            if to_file {
                tracing::error!("{msg}");
            }
            eprintln!("berth-runtime: {msg}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(cli: &Cli) {
    let level = if cli.debug { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::new(level);
    let Some(path) = &cli.log else {
        // Without --log, warnings go to stderr (errors are printed by main).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(if cli.debug {
                "debug"
            } else {
                "warn"
            }))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init();
        return;
    };
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        eprintln!("berth-runtime: cannot open log file {}", path.display());
        return;
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false);
    let _ = if cli.log_format == "json" {
        b.json().try_init()
    } else {
        b.try_init()
    };
}

fn real_main(cli: Cli) -> Result<u8> {
    let rt = Runtime::new(cli.root.clone());
    match cli.cmd {
        Cmd::Create(a) => {
            let opts = CreateOptions {
                outlive_caller: true,
                ..create_opts(&a)
            };
            rt.create(&a.id, &opts)?;
            Ok(0)
        }
        Cmd::Start { id } => {
            rt.start(&id)?;
            Ok(0)
        }
        Cmd::Run {
            create,
            detach,
            keep,
        } => run(&rt, &create, detach, keep),
        Cmd::State { id } => {
            println!("{}", serde_json::to_string_pretty(&rt.state(&id)?)?);
            Ok(0)
        }
        Cmd::Kill { all, id, signal } => {
            rt.kill(&id, parse_signal(&signal)?, all)?;
            Ok(0)
        }
        Cmd::Delete { force, id } => {
            rt.delete(&id, force)?;
            Ok(0)
        }
        Cmd::List { format, quiet } => {
            let list = rt.list()?;
            if quiet {
                for s in &list {
                    println!("{}", s.id);
                }
            } else if format == "json" {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                println!("{:<20} {:<8} {:<10} BUNDLE", "ID", "PID", "STATUS");
                for s in &list {
                    println!(
                        "{:<20} {:<8} {:<10} {}",
                        s.id,
                        s.pid,
                        s.status,
                        s.bundle.display()
                    );
                }
            }
            Ok(0)
        }
        Cmd::Exec {
            process,
            tty,
            cwd,
            env,
            user,
            detach,
            pid_file,
            console_socket,
            preserve_fds,
            id,
            args,
        } => {
            let p = exec_process(&rt, &id, process.as_deref(), tty, cwd, env, user, args)?;
            let opts = ExecOptions {
                pid_file,
                console_socket,
                preserve_fds,
                stdio: None,
            };
            let mask = if detach { None } else { Some(block_signals()?) };
            if detach && tty && opts.console_socket.is_none() {
                bail!("--tty with --detach needs --console-socket: nobody would hold the terminal");
            }
            let created = rt.exec(&id, &p, &opts)?;
            if detach {
                return Ok(0);
            }
            wait_foreground(
                created.pid,
                created.console,
                mask.expect("set when not detached"),
            )
        }
        Cmd::Spec { bundle, rootless } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("{} already exists; remove it first", path.display());
            }
            berth_runtime::default_spec(rootless)
                .save(&path)
                .with_context(|| format!("write {}", path.display()))?;
            Ok(0)
        }
        Cmd::Features => {
            println!(
                "{}",
                serde_json::to_string_pretty(&berth_runtime::features())?
            );
            Ok(0)
        }
    }
}

fn create_opts(a: &CreateArgs) -> CreateOptions {
    CreateOptions {
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        no_pivot: a.no_pivot,
        preserve_fds: a.preserve_fds,
        stdio: None,
        outlive_caller: false,
    }
}

fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    let sig: Signal = name
        .parse()
        .with_context(|| format!("unknown signal `{s}`: use a name like SIGTERM or a number"))?;
    Ok(sig as i32)
}

/// The process for `exec`: from --process, or the container's own process with ARGS and
/// the flags applied (as runc builds it).
#[allow(clippy::too_many_arguments)]
fn exec_process(
    rt: &Runtime,
    id: &str,
    file: Option<&Path>,
    tty: bool,
    cwd: Option<PathBuf>,
    env: Vec<String>,
    user: Option<String>,
    args: Vec<String>,
) -> Result<oci_spec::runtime::Process> {
    if let Some(f) = file {
        let text = std::fs::read(f).with_context(|| format!("read {}", f.display()))?;
        return serde_json::from_slice(&text)
            .with_context(|| format!("parse process file {}", f.display()));
    }
    if args.is_empty() {
        bail!("exec needs a command (ARGS...) or --process FILE");
    }
    let state = rt.state(id)?;
    let config = state.bundle.join("config.json");
    let spec = oci_spec::runtime::Spec::load(&config)
        .with_context(|| format!("read {}", config.display()))?;
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(args));
    p.set_terminal(Some(tty));
    if let Some(c) = cwd {
        p.set_cwd(c);
    }
    if !env.is_empty() {
        let mut e = p.env().clone().unwrap_or_default();
        e.extend(env);
        p.set_env(Some(e));
    }
    if let Some(u) = user {
        let (uid, gid) = u.split_once(':').unwrap_or((&u, "0"));
        let mut usr = p.user().clone();
        usr.set_uid(
            uid.parse()
                .with_context(|| format!("--user {u}: uid must be a number"))?,
        );
        usr.set_gid(
            gid.parse()
                .with_context(|| format!("--user {u}: gid must be a number"))?,
        );
        p.set_user(usr);
    }
    Ok(p)
}

/// Signals `run` and `exec` pass on to the container (and SIGCHLD, to notice its exit).
fn block_signals() -> Result<SigSet> {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    set.thread_block().context("block signals")?;
    Ok(set)
}

fn run(rt: &Runtime, a: &CreateArgs, detach: bool, keep: bool) -> Result<u8> {
    // Blocked before the fork, so that no signal is lost between create and the wait loop
    // (the child unblocks them before exec).
    let mask = if detach { None } else { Some(block_signals()?) };
    let opts = CreateOptions {
        outlive_caller: detach,
        ..create_opts(a)
    };
    let created = rt.create(&a.id, &opts)?;
    if detach && created.console.is_some() {
        let _ = rt.delete(&a.id, true);
        bail!(
            "process.terminal with --detach needs --console-socket: nobody would hold the terminal"
        );
    }
    if let Err(e) = rt.start(&a.id) {
        let _ = rt.delete(&a.id, true);
        return Err(e.into());
    }
    if detach {
        return Ok(0);
    }
    let code = wait_foreground(
        created.pid,
        created.console,
        mask.expect("set when not detached"),
    );
    if !keep {
        rt.delete(&a.id, true)?;
    }
    code
}

/// Waits for our child `pid`, forwarding signals, and copying between our stdio and the pty
/// master when there is one. Returns its exit code (128+N when killed by signal N).
fn wait_foreground(pid: i32, console: Option<OwnedFd>, mask: SigSet) -> Result<u8> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).context("signalfd")?;
    let _raw = console.as_ref().map(|c| RawMode::enable(c.as_fd()));
    let stdin = std::io::stdin();
    let mut stdin_open = console.is_some();
    loop {
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(c) = &console {
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => bail!("poll: {e}"),
            Ok(_) => {}
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            if let Ok(Some(info)) = sfd.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig != libc::SIGCHLD {
                    if sig == libc::SIGWINCH {
                        if let Some(c) = &console {
                            copy_winsize(c.as_fd());
                        }
                    }
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::try_from(sig).ok());
                }
            }
            loop {
                match waitpid(
                    Pid::from_raw(pid),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                ) {
                    Ok(WaitStatus::Exited(_, code)) => {
                        if let Some(c) = &console {
                            drain(c.as_fd());
                        }
                        return Ok(code as u8);
                    }
                    Ok(WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as u8),
                    Ok(WaitStatus::StillAlive) => break,
                    Ok(_) => continue,
                    // Another child of ours (not the container) or none at all.
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => bail!("wait for the container's process {pid}: {e}"),
                }
            }
        }
        if let Some(c) = &console {
            if ready.get(1) == Some(&true) && !copy(c.as_fd(), std::io::stdout().as_fd()) {
                // EIO: the pty's last slave is closed; the exit comes through SIGCHLD.
            }
            if ready.get(2) == Some(&true) && !copy(stdin.as_fd(), c.as_fd()) {
                stdin_open = false;
            }
        }
    }
}

fn copy(from: BorrowedFd, to: BorrowedFd) -> bool {
    let mut buf = [0u8; 8192];
    match nix::unistd::read(from, &mut buf) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            let mut off = 0;
            while off < n {
                match nix::unistd::write(to, &buf[off..n]) {
                    Ok(w) => off += w,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return false,
                }
            }
            true
        }
    }
}

/// Copies what is left in the pty after the process exited.
fn drain(master: BorrowedFd) {
    let _ = nix::fcntl::fcntl(
        master,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    while copy(master, std::io::stdout().as_fd()) {}
}

fn copy_winsize(master: BorrowedFd) {
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ read and write a winsize living across the calls.
    unsafe {
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Puts our terminal (if stdin is one) in raw mode while a container's pty is attached,
/// and restores it on drop.
struct RawMode {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawMode {
    fn enable(master: BorrowedFd) -> RawMode {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(stdin.as_fd()) else {
            return RawMode { saved: None };
        };
        copy_winsize(master);
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(s) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                s,
            );
        }
    }
}
