//! The per-container monitor: a small process the daemon starts by exec (`berth monitor
//! DIR`), one per running container. It creates and starts the container through the
//! runtime library, so the container's init is its child; owns the container's stdio pipes
//! or pty master; writes the json-file log; reaps the container and records its exit status;
//! and serves the daemon on a unix socket ([`crate::proto`]). It runs in its own session,
//! so a daemon restart does not take the containers down.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::logs::{self, Stream};
use crate::proto::{self, ExitStatus, Kind};
use crate::store::{write_atomic_with, Durability, SocketPath};
use crate::timefmt;

/// What the daemon tells a monitor, in `DIR/monitor.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorConfig {
    pub id: String,
    /// The OCI bundle (config.json inside).
    pub bundle: PathBuf,
    /// The runtime library's state directory.
    pub runtime_root: PathBuf,
    pub socket: PathBuf,
    /// The json-file log; none for an exec'd process, whose output goes to its client only.
    pub log: Option<PathBuf>,
    pub exit_file: PathBuf,
    pub tty: bool,
    pub open_stdin: bool,
    /// Set `lo` up in the container's own network namespace (not with --network=host).
    #[serde(default)]
    pub loopback: bool,
    /// Set for `docker exec`: run this process in the running container instead of
    /// creating the container.
    #[serde(default)]
    pub exec: Option<oci_spec::runtime::Process>,
}

pub const CONFIG_FILE: &str = "monitor.json";

/// What the monitor needs from a low-level runtime. The engine's implementation is
/// [`crate::launcher::RuntimeLauncher`]; tests can supply their own.
pub trait Launcher {
    /// Creates the container as a child of the calling process, stopped before the user's
    /// process, with `stdio` as its fds 0-2 (or a pty when the spec asks for a terminal, whose
    /// master is returned). Returns the init's pid.
    fn create(
        &self,
        cfg: &MonitorConfig,
        stdio: Option<[OwnedFd; 3]>,
    ) -> Result<(i32, Option<OwnedFd>), String>;
    fn start(&self, id: &str, cfg: &MonitorConfig) -> Result<(), String>;
    /// Removes the runtime's state of a stopped container.
    fn delete(&self, id: &str, cfg: &MonitorConfig);
}

/// The daemon's connections, and output kept for the first of them: an exec'd process
/// runs before the daemon connects.
struct Subscribers {
    list: Vec<UnixStream>,
    backlog: Option<Vec<u8>>,
}

struct Shared {
    subscribers: Mutex<Subscribers>,
    log: Option<Mutex<logs::Writer>>,
    /// To the thread that writes the container's stdin (see [`stdin_writer`]); dropped to
    /// close it.
    stdin: Mutex<Option<mpsc::SyncSender<Vec<u8>>>>,
    console: Option<File>,
    pid: i32,
    /// Set, under `reaped`'s lock, once the container is reaped: its pid may be reused.
    reaped: Mutex<bool>,
}

impl Shared {
    fn broadcast(&self, kind: Kind, data: &[u8]) {
        let frame = proto::encode(kind, data);
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        if subs.list.is_empty() {
            if let Some(b) = subs.backlog.as_mut() {
                b.extend_from_slice(&frame);
                return;
            }
        }
        subs.list.retain_mut(|s| s.write_all(&frame).is_ok());
    }

    fn subscribe(&self, mut conn: UnixStream) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = subs.backlog.take() {
            if conn.write_all(&b).is_err() {
                return;
            }
        }
        subs.list.push(conn);
    }

    fn signal(&self, sig: i32) {
        let reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        if !*reaped {
            if let Ok(sig) = Signal::try_from(sig) {
                let _ = kill(Pid::from_raw(self.pid), sig);
            }
        }
    }
}

enum Control {
    Start(UnixStream),
    /// The daemon's first connection closed before asking for a start.
    Abandoned,
}

/// Runs the monitor for the container described in `dir/monitor.json`; returns the
/// monitor's own exit status. Writes `ready PID` or `error MESSAGE` on stdout for the daemon.
pub fn run(dir: &Path, launcher: &dyn Launcher) -> i32 {
    // Our own session: a signal to the daemon's process group does not reach us.
    let _ = nix::unistd::setsid();
    let cfg: MonitorConfig = match std::fs::read(dir.join(CONFIG_FILE))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            return report_error(&format!("reading {}: {e}", dir.join(CONFIG_FILE).display()))
        }
    };
    match serve(&cfg, launcher) {
        Ok(()) => 0,
        Err(e) => report_error(&e),
    }
}

fn report_error(msg: &str) -> i32 {
    let line = msg.replace('\n', " ");
    let mut out = std::io::stdout();
    let _ = writeln!(out, "error {line}");
    let _ = out.flush();
    eprintln!("berth monitor: {line}");
    1
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

fn serve(cfg: &MonitorConfig, launcher: &dyn Launcher) -> Result<(), String> {
    let log = match &cfg.log {
        Some(p) => Some(Mutex::new(
            logs::Writer::open(p).map_err(|e| format!("opening log {}: {e}", p.display()))?,
        )),
        None => None,
    };

    // Our ends of the container's stdio: (reader, stream) for output, writer for stdin.
    let mut outputs: Vec<(File, Stream)> = Vec::new();
    let mut stdin_w = None;
    let stdio = if cfg.tty {
        None
    } else {
        let stdin_r: OwnedFd = if cfg.open_stdin {
            let (r, w) = pipe()?;
            stdin_w = Some(File::from(w));
            r
        } else {
            File::open("/dev/null")
                .map_err(|e| format!("/dev/null: {e}"))?
                .into()
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        outputs.push((File::from(out_r), Stream::Stdout));
        outputs.push((File::from(err_r), Stream::Stderr));
        Some([stdin_r, out_w, err_w])
    };
    // `stdio` moves into create and its child ends close when it returns.
    let (pid, console) = launcher.create(cfg, stdio)?;
    let console = console.map(File::from);
    if cfg.loopback {
        if let Err(e) = crate::netns::loopback_up(pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
            launcher.delete(&cfg.id, cfg);
            return Err(format!("setting up the loopback interface: {e}"));
        }
    }
    if let Some(c) = &console {
        let reader = c.try_clone().map_err(|e| format!("dup console: {e}"))?;
        outputs.push((reader, Stream::Stdout));
        if cfg.open_stdin {
            stdin_w = Some(c.try_clone().map_err(|e| format!("dup console: {e}"))?);
        }
    }

    let _ = std::fs::remove_file(&cfg.socket);
    let listener = SocketPath::new(&cfg.socket)
        .and_then(|p| UnixListener::bind(p.path()))
        .map_err(|e| format!("listening on {}: {e}", cfg.socket.display()))?;

    let shared = Arc::new(Shared {
        subscribers: Mutex::new(Subscribers {
            list: Vec::new(),
            backlog: cfg.exec.is_some().then(Vec::new),
        }),
        log,
        stdin: Mutex::new(stdin_w.map(stdin_writer)),
        console,
        pid,
        reaped: Mutex::new(false),
    });

    // Tell the daemon, then let go of its pipe so that its death cannot hurt us (SIGPIPE).
    {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ready {pid}");
        let _ = out.flush();
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            let _ = nix::unistd::dup2_stdout(&null);
        }
    }

    let (pumps_done_tx, pumps_done) = mpsc::channel::<()>();
    let n_pumps = outputs.len();
    for (file, stream) in outputs {
        let shared = shared.clone();
        let done = pumps_done_tx.clone();
        std::thread::spawn(move || {
            pump(&shared, file, stream);
            let _ = done.send(());
        });
    }

    let (ctl_tx, ctl_rx) = mpsc::channel::<Control>();
    let started = Arc::new(AtomicBool::new(false));
    {
        let shared = shared.clone();
        let started = started.clone();
        std::thread::spawn(move || accept_loop(listener, shared, ctl_tx, started));
    }

    // Wait for the daemon's Start.
    let mut conn = match ctl_rx.recv() {
        Ok(Control::Start(conn)) => conn,
        Ok(Control::Abandoned) | Err(_) => {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
            launcher.delete(&cfg.id, cfg);
            let _ = std::fs::remove_file(&cfg.socket);
            return Err("the daemon went away before starting the container".into());
        }
    };
    match launcher.start(&cfg.id, cfg) {
        Ok(()) => {
            started.store(true, Ordering::SeqCst);
            let _ = proto::write_frame(&mut conn, Kind::Started, b"");
        }
        Err(e) => {
            let _ = proto::write_frame(&mut conn, Kind::Error, e.as_bytes());
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
            launcher.delete(&cfg.id, cfg);
            let _ = std::fs::remove_file(&cfg.socket);
            return Ok(());
        }
    }

    let exit_code = reap(&shared);
    // Output ends when the last holder of the pipes or pty exits: with its own pid namespace
    // that is when init dies. A process of a --pid=host container could hold them open, so
    // wait only a little.
    for _ in 0..n_pumps {
        if pumps_done.recv_timeout(Duration::from_secs(2)).is_err() {
            break;
        }
    }
    if let Some(log) = &shared.log {
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        let _ = log.flush(Stream::Stdout);
        let _ = log.flush(Stream::Stderr);
    }
    let status = ExitStatus {
        exit_code,
        finished_at: timefmt::now(),
        error: String::new(),
    };
    let json = serde_json::to_vec(&status).map_err(|e| e.to_string())?;
    // Read by a daemon restarted on this boot only; the exec root is usually a tmpfs
    // (/run/berth), and after a power loss the run is gone anyway: no fsync.
    if let Err(e) = write_atomic_with(&cfg.exit_file, &json, Durability::Buffered) {
        eprintln!("berth monitor: writing {}: {e}", cfg.exit_file.display());
    }
    launcher.delete(&cfg.id, cfg);
    shared.broadcast(Kind::Exit, &json);
    let _ = std::fs::remove_file(&cfg.socket);
    for s in shared
        .subscribers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .list
        .iter()
    {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    Ok(())
}

/// Waits for the container's init to exit and returns Docker's exit code (128+N for a
/// signal). The pid stays valid for [`Shared::signal`] until it is reaped under the lock.
fn reap(shared: &Shared) -> i32 {
    let pid = Pid::from_raw(shared.pid);
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    let mut reaped = shared.reaped.lock().unwrap_or_else(|e| e.into_inner());
    let code = loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, c)) => break c,
            Ok(WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => continue,
            Err(_) => break 255,
        }
    };
    *reaped = true;
    code
}

fn pump(shared: &Shared, mut file: File, stream: Stream) {
    let kind = match stream {
        Stream::Stdout => Kind::Stdout,
        Stream::Stderr => Kind::Stderr,
    };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(log) = &shared.log {
                    let _ = log
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .write(stream, &buf[..n]);
                }
                shared.broadcast(kind, &buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO from a pty master once the last slave fd is closed.
            Err(_) => break,
        }
    }
}

fn accept_loop(
    listener: UnixListener,
    shared: Arc<Shared>,
    ctl: mpsc::Sender<Control>,
    started: Arc<AtomicBool>,
) {
    let mut first = true;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let Ok(writer) = conn.try_clone() else {
            continue;
        };
        shared.subscribe(writer);
        let shared = shared.clone();
        let ctl = ctl.clone();
        let started = started.clone();
        let is_first = std::mem::replace(&mut first, false);
        std::thread::spawn(move || handle_conn(conn, &shared, &ctl, &started, is_first));
    }
}

/// Chunks of input queued for the container's stdin before this connection waits.
const STDIN_QUEUE: usize = 1024;

/// Writes the container's stdin from a thread of its own, fed through a queue: a write
/// blocks while the container does not read (it has not started yet, or never reads), and
/// the connection that carried the input must still read the daemon's next frames (the
/// `Start` of a `run -i` whose client sent input first). The file closes once the sender
/// is dropped and what was queued is written, or when the container's end is gone.
fn stdin_writer(mut f: File) -> mpsc::SyncSender<Vec<u8>> {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(STDIN_QUEUE);
    std::thread::spawn(move || {
        for data in rx {
            if f.write_all(&data).is_err() {
                return;
            }
        }
    });
    tx
}

fn handle_conn(
    mut conn: UnixStream,
    shared: &Shared,
    ctl: &mpsc::Sender<Control>,
    started: &AtomicBool,
    first: bool,
) {
    let mut start_sent = false;
    while let Ok(Some((kind, payload))) = proto::read_frame(&mut conn) {
        match kind {
            Kind::Start if !start_sent => {
                if let Ok(c) = conn.try_clone() {
                    start_sent = true;
                    let _ = ctl.send(Control::Start(c));
                }
            }
            Kind::Stdin => {
                let mut stdin = shared.stdin.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(tx) = stdin.as_ref() {
                    if tx.send(payload).is_err() {
                        *stdin = None;
                    }
                }
            }
            // A pty has no separate stdin to close: its master also carries the output.
            Kind::CloseStdin if shared.console.is_none() => {
                *shared.stdin.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
            Kind::Resize if payload.len() == 4 => {
                if let Some(c) = &shared.console {
                    let ws = rustix::termios::Winsize {
                        ws_row: u16::from_be_bytes([payload[0], payload[1]]),
                        ws_col: u16::from_be_bytes([payload[2], payload[3]]),
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    let _ = rustix::termios::tcsetwinsize(c, ws);
                }
            }
            Kind::Signal if payload.len() == 4 => {
                shared.signal(i32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]));
            }
            _ => {}
        }
    }
    if first && !start_sent && !started.load(Ordering::SeqCst) {
        let _ = ctl.send(Control::Abandoned);
    }
}
