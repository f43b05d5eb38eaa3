//! The engine: the set of containers, their life cycle and the daemon's side of their
//! monitors. Front ends (the Docker API) call these methods; they never touch the files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_idmap::UsernsMaps;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};

use crate::container::{ContainerConfig, ContainerRecord, HostConfig, State, Status, Ulimit};
use crate::error::{EngineError, Result};
use crate::events::Event;
use crate::images::Images;
use crate::logs::{self, Stream};
use crate::monitor::{MonitorConfig, CONFIG_FILE};
use crate::proto::{self, ExitStatus, Kind};
use crate::restart;
use crate::signal::parse_signal;
use crate::store::{self, Paths};
use crate::{filters, mounts, names, policy, setup, spec, timefmt};

/// How the daemon was started.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    /// The maps every container gets under `--userns-remap` (unless `--userns=host`).
    pub userns: Option<UsernsMaps>,
    /// The `--userns-remap` user and group, for `info` (`dockremap:dockremap`).
    pub remap_name: Option<String>,
    pub default_ulimits: Vec<Ulimit>,
    /// The executable started as `berth monitor DIR` for each container (the berth binary,
    /// usually `/proc/self/exe`).
    pub monitor_exe: PathBuf,
    /// The daemon's `--init`: containers that do not say run with an init.
    pub init_default: bool,
    /// The daemon's `--init-path`; else `docker-init` or `tini-static` from `PATH`.
    pub init_path: Option<PathBuf>,
}

/// What a new container asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub name: Option<String>,
    pub config: ContainerConfig,
    pub host_config: HostConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    NotRunning,
    NextExit,
    Removed,
}

/// Who starts a container: what [`Engine::start_entry`] checks and resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartBy {
    User,
    /// The restart policy, after a run ended.
    Policy,
    /// The restart policy, when the daemon starts.
    DaemonStart,
}

/// One chunk of container output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stream: Stream,
    pub data: Vec<u8>,
}

/// What `docker ps` filters on.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub all: bool,
    pub limit: Option<usize>,
    pub filters: BTreeMap<String, Vec<String>>,
}

/// A container as `inspect` shows it: its record and where its files are.
#[derive(Debug, Clone)]
pub struct ContainerView {
    pub record: ContainerRecord,
    pub log_path: PathBuf,
    pub hostname_path: PathBuf,
    pub hosts_path: PathBuf,
    pub resolv_conf_path: PathBuf,
    pub rootfs: PathBuf,
}

/// Facts for `docker info`.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    pub containers: usize,
    pub running: usize,
    pub paused: usize,
    pub stopped: usize,
    pub images: usize,
    pub data_root: PathBuf,
    pub userns: Option<UsernsMaps>,
    pub remap_name: Option<String>,
    pub rootfs_driver: String,
}

#[derive(Debug, Clone, Default)]
struct Phase {
    running: bool,
    exits: u64,
    exit_code: i32,
    removed: bool,
}

enum StdinMsg {
    Data(Vec<u8>),
    Close,
}

pub(crate) struct MonitorConn {
    pub(crate) writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pub(crate) start_reply: Mutex<Option<oneshot::Sender<std::result::Result<(), String>>>>,
}

impl MonitorConn {
    /// Answers the `start` waiting on this monitor (once; later answers are dropped).
    pub(crate) fn reply_start(&self, result: std::result::Result<(), String>) {
        let tx = self
            .start_reply
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(tx) = tx {
            let _ = tx.send(result);
        }
    }

    pub(crate) async fn send(&self, kind: Kind, payload: &[u8]) -> std::io::Result<()> {
        let mut w = self.writer.lock().await;
        w.write_all(&proto::encode(kind, payload)).await
    }

    /// Reads the monitor's frames until it reports the exit or goes away: output goes to
    /// `on_output`, the start answer to the waiting start. The exit status, or None when the
    /// monitor went away without one.
    pub(crate) async fn pump(
        &self,
        rd: &mut tokio::net::unix::OwnedReadHalf,
        mut on_output: impl FnMut(Output),
    ) -> Option<ExitStatus> {
        loop {
            match proto::read_frame_async(rd).await {
                Ok(Some((kind @ (Kind::Stdout | Kind::Stderr), data))) => {
                    let stream = if kind == Kind::Stdout {
                        Stream::Stdout
                    } else {
                        Stream::Stderr
                    };
                    on_output(Output { stream, data });
                }
                Ok(Some((Kind::Started, _))) => self.reply_start(Ok(())),
                Ok(Some((Kind::Error, msg))) => {
                    self.reply_start(Err(String::from_utf8_lossy(&msg).into_owned()))
                }
                Ok(Some((Kind::Exit, json))) => return serde_json::from_slice(&json).ok(),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

#[derive(Default)]
struct Io {
    subscribers: Vec<mpsc::UnboundedSender<Output>>,
    /// Stdin written before the monitor runs (`echo hi | docker run -i`), sent at start.
    pending_stdin: Vec<StdinMsg>,
    monitor: Option<Arc<MonitorConn>>,
}

pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) paths: Paths,
    rec: Mutex<ContainerRecord>,
    /// Serialises start, exit handling and removal of this container.
    pub(crate) op: tokio::sync::Mutex<()>,
    phase: watch::Sender<Phase>,
    io: Mutex<Io>,
    /// A signal from the user cancelled the restart of the current run (moby's
    /// `ExitOnNext`); in memory only, as moby's restart managers are (see [`restart`]).
    restart_cancelled: AtomicBool,
}

impl Entry {
    pub(crate) fn record(&self) -> ContainerRecord {
        self.rec.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes the record and writes it. A change of the run state only (started, exited,
    /// paused...) is not fsynced: that keeps a millisecond per write off every start and
    /// exit, and a power loss makes it moot (see [`store::Durability`]); any other change is.
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut ContainerRecord) -> T) -> Result<T> {
        let mut rec = self.rec.lock().unwrap_or_else(|e| e.into_inner());
        let before = rec.clone();
        let out = f(&mut rec);
        store::save(
            &self.paths,
            &rec,
            store::Durability::of_change(&before, &rec),
        )?;
        Ok(out)
    }

    fn io(&self) -> std::sync::MutexGuard<'_, Io> {
        self.io.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct Inner {
    pub(crate) cfg: EngineConfig,
    containers: Mutex<BTreeMap<String, Arc<Entry>>>,
    pub(crate) images: Images,
    pub(crate) execs: Mutex<BTreeMap<String, Arc<crate::exec::ExecEntry>>>,
    pub(crate) events: crate::events::EventHub,
    /// Held for the daemon's lifetime: one daemon per data root.
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// The engine; cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

fn lock_data_root(data_root: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let path = data_root.join("berth.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| EngineError::io("open", &path, e))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        EngineError::Conflict(format!(
            "data root {} is in use by another berth daemon (lock {} is held: {e}); stop that daemon or use another --data-root",
            data_root.display(),
            path.display()
        ))
    })
}

fn create_dir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| EngineError::io("create directory", p, e))
}

impl Engine {
    /// Opens the engine on its data and exec roots: takes the data root's lock, loads the
    /// containers of earlier runs and reconnects to the monitors still running.
    pub async fn open(cfg: EngineConfig) -> Result<Engine> {
        create_dir(&cfg.data_root.join("containers"))?;
        create_dir(&cfg.exec_root.join("containers"))?;
        let lock = lock_data_root(&cfg.data_root)?;
        let images = Images::open(&cfg.data_root, &cfg.exec_root, cfg.userns.is_some())?;
        let engine = Engine {
            inner: Arc::new(Inner {
                cfg,
                containers: Mutex::new(BTreeMap::new()),
                images,
                execs: Mutex::new(BTreeMap::new()),
                events: Default::default(),
                _lock: lock,
            }),
        };
        engine.sweep();
        for rec in store::load_all(&engine.inner.cfg.data_root)? {
            let entry = engine.insert_entry(rec);
            engine.recover(&entry).await;
        }
        engine.restart_on_daemon_start();
        Ok(engine)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    pub fn images(&self) -> &Images {
        &self.inner.images
    }

    pub fn events(&self) -> &crate::events::EventHub {
        &self.inner.events
    }

    fn paths(&self, id: &str) -> Paths {
        Paths::new(&self.inner.cfg.data_root, &self.inner.cfg.exec_root, id)
    }

    fn insert_entry(&self, rec: ContainerRecord) -> Arc<Entry> {
        let phase = Phase {
            running: rec.is_running(),
            exits: 0,
            exit_code: rec.state.exit_code,
            removed: false,
        };
        let entry = Arc::new(Entry {
            id: rec.id.clone(),
            paths: self.paths(&rec.id),
            rec: Mutex::new(rec),
            op: tokio::sync::Mutex::new(()),
            phase: watch::Sender::new(phase),
            io: Mutex::new(Io::default()),
            restart_cancelled: AtomicBool::new(false),
        });
        self.containers().insert(entry.id.clone(), entry.clone());
        entry
    }

    pub(crate) fn containers(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Entry>>> {
        self.inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A container recorded as running when the daemon starts: reconnect to its monitor,
    /// or, if the monitor is gone, take the exit status it left.
    async fn recover(&self, entry: &Arc<Entry>) {
        let rec = entry.record();
        if !rec.is_running() {
            return;
        }
        match connect_monitor(&entry.paths.socket()).await {
            Ok(stream) => {
                self.attach_monitor(entry, stream);
            }
            Err(_) => {
                // Gone: mark it exited with the status it left (or 255).
                let status = read_exit_file(&entry.paths);
                self.delete_runtime_state(&entry.id).await;
                let _ = self.inner.images.unmount_rootfs(&entry.id);
                let _ = entry.update(|r| {
                    r.state.status = Status::Exited;
                    r.state.pid = 0;
                    r.state.exit_code = status.exit_code;
                    r.state.finished_at = status.finished_at.clone();
                    r.state.error = status.error.clone();
                });
                entry.phase.send_modify(|p| {
                    p.running = false;
                    p.exit_code = status.exit_code;
                });
            }
        }
    }

    /// Starts again, as their restart policies say, the containers that ended while the
    /// daemon was away (or were waiting to restart when it stopped).
    fn restart_on_daemon_start(&self) {
        let entries: Vec<Arc<Entry>> = self.containers().values().cloned().collect();
        for entry in entries {
            let rec = entry.record();
            let s = &rec.state;
            let ended = matches!(s.status, Status::Exited | Status::Restarting)
                && s.started_at != timefmt::ZERO_TIME;
            if !ended {
                continue;
            }
            let policy = &rec.host_config.restart_policy;
            let again =
                restart::on_daemon_start(policy, s.exit_code, s.manually_stopped, s.restart_count);
            if !again && s.status == Status::Exited {
                continue;
            }
            let res = entry.update(|r| {
                r.state.status = if again {
                    Status::Restarting
                } else {
                    Status::Exited
                };
            });
            if again && res.is_ok() {
                self.schedule_restart(entry, Duration::ZERO, StartBy::DaemonStart);
            }
        }
    }

    /// Starts `entry` again after `delay`, unless the user stopped, started or removed it
    /// meanwhile.
    fn schedule_restart(&self, entry: Arc<Entry>, delay: Duration, by: StartBy) {
        let engine = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            tracing::info!(id = %entry.id, "restarting the container (restart policy)");
            if let Err(e) = engine.start_entry(entry.clone(), by).await {
                tracing::warn!(id = %entry.id, error = %e, "restart by policy failed");
            }
        });
    }

    /// The user sends `sig` to the container (kill, stop, rm -f): it is manually stopped,
    /// and the restart of this run is cancelled if `sig` is one that cancels (moby's rules,
    /// see [`restart`]). Returns true if the container was only waiting to restart: there
    /// is no process to signal (and, if cancelled, it is now exited).
    fn user_signal(&self, entry: &Entry, sig: i32) -> Result<bool> {
        let rec = entry.record();
        let cancels = restart::signal_cancels(sig, crate::ops::stop_signal(&rec)?);
        if !matches!(
            rec.state.status,
            Status::Running | Status::Paused | Status::Restarting
        ) {
            return Ok(false);
        }
        entry.update(|r| {
            let waiting = r.state.status == Status::Restarting;
            if !(waiting || r.is_running()) {
                return false;
            }
            r.state.manually_stopped = true;
            if cancels {
                entry.restart_cancelled.store(true, Ordering::SeqCst);
                if waiting {
                    r.state.status = Status::Exited;
                }
            }
            waiting
        })
    }

    /// Removes what the runtime keeps of container `id` (its cgroups and state directory),
    /// killing what is left of it: the job of a monitor that died without doing it.
    async fn delete_runtime_state(&self, id: &str) {
        let rt = berth_runtime::Runtime::new(self.inner.cfg.exec_root.join("runtime"));
        let id2 = id.to_string();
        // The runtime waits (bounded) for the killed processes to leave their cgroups.
        let res = tokio::task::spawn_blocking(move || rt.delete(&id2, true)).await;
        match res {
            Ok(Ok(())) => tracing::debug!(id = %id, "runtime state of a dead monitor removed"),
            Ok(Err(berth_runtime::Error::NotFound { .. })) => {}
            Ok(Err(e)) => tracing::warn!(id = %id, error = %e, "removing the runtime state"),
            Err(e) => tracing::warn!(id = %id, error = %e, "removing the runtime state"),
        }
    }

    /// Finds a container by full id, name (with or without `/`) or unique id prefix.
    pub(crate) fn lookup(&self, name_or_id: &str) -> Result<Arc<Entry>> {
        let map = self.containers();
        if let Some(e) = map.get(name_or_id) {
            return Ok(e.clone());
        }
        let bare = name_or_id.strip_prefix('/').unwrap_or(name_or_id);
        if let Some(e) = map
            .values()
            .find(|e| e.rec.lock().unwrap_or_else(|p| p.into_inner()).name == bare)
        {
            return Ok(e.clone());
        }
        if !name_or_id.is_empty() && name_or_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut hits = map
                .range(name_or_id.to_string()..)
                .take_while(|(k, _)| k.starts_with(name_or_id));
            if let Some((_, e)) = hits.next() {
                if hits.next().is_some() {
                    return Err(EngineError::NotFound(format!(
                        "Multiple IDs found with provided prefix: {name_or_id}"
                    )));
                }
                return Ok(e.clone());
            }
        }
        Err(EngineError::no_such_container(name_or_id))
    }

    // ----- create -------------------------------------------------------------------

    pub async fn create(&self, req: CreateRequest) -> Result<(String, Vec<String>)> {
        let engine = self.clone();
        tokio::task::spawn_blocking(move || engine.create_blocking(req))
            .await
            .map_err(|e| EngineError::System(format!("create task: {e}")))?
    }

    fn create_blocking(&self, req: CreateRequest) -> Result<(String, Vec<String>)> {
        let CreateRequest {
            name,
            mut config,
            host_config,
        } = req;
        let name = match name.as_deref().filter(|n| !n.is_empty()) {
            Some(n) => Some(names::validate(n)?),
            None => None,
        };
        if config.image.is_empty() {
            return Err(EngineError::InvalidParameter(
                "no image given: config.Image is required".into(),
            ));
        }
        let image = self.inner.images.resolve(&config.image)?;
        setup::merge_image_config(&mut config, &image)?;
        let maps = policy::check(&host_config, self.inner.cfg.userns.as_ref())?;
        let mut mount_points = mounts::requested(&config, &host_config)?;
        let mut argv: Vec<String> = config
            .entrypoint
            .iter()
            .chain(config.cmd.iter())
            .cloned()
            .collect();
        if argv.is_empty() {
            return Err(EngineError::InvalidParameter("no command specified".into()));
        }
        let path = argv.remove(0);
        let id = names::new_id()?;
        if config.hostname.is_empty() {
            config.hostname = if host_config.network_mode == "host" {
                nix::unistd::gethostname()
                    .ok()
                    .and_then(|h| h.into_string().ok())
                    .unwrap_or_default()
            } else {
                id[..12].to_string()
            };
        }
        let warnings = Vec::new();
        let rec = ContainerRecord {
            id: id.clone(),
            name: String::new(),
            created: timefmt::now(),
            image_ref: config.image.clone(),
            image_id: image.id.clone(),
            config,
            host_config,
            state: State::default(),
            maps,
            mounts: Vec::new(),
            layers: image.layers.clone(),
            path,
            args: argv,
        };

        // Claim the name and the id in one step so two creates cannot both get a name.
        let entry = {
            let mut map = self.containers();
            let taken = |n: &str| {
                map.values()
                    .find(|e| e.rec.lock().unwrap_or_else(|p| p.into_inner()).name == n)
                    .map(|e| e.id.clone())
            };
            let name = match name {
                Some(n) => {
                    if let Some(other) = taken(&n) {
                        return Err(EngineError::Conflict(format!(
                            "Conflict. The container name \"/{n}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
                        )));
                    }
                    n
                }
                None => (0..)
                    .map(|i| names::generate(&id, i))
                    .find(|n| taken(n).is_none())
                    .unwrap_or_else(|| id.clone()),
            };
            let mut rec = rec;
            rec.name = name;
            let entry = Arc::new(Entry {
                id: id.clone(),
                paths: self.paths(&id),
                rec: Mutex::new(rec),
                op: tokio::sync::Mutex::new(()),
                phase: watch::Sender::new(Phase::default()),
                io: Mutex::new(Io::default()),
                restart_cancelled: AtomicBool::new(false),
            });
            map.insert(id.clone(), entry.clone());
            entry
        };

        let setup = (|| -> Result<()> {
            // Named volumes count as in use from here on: `volume rm` refuses them while
            // this container is being set up (the record is saved with them below).
            entry.rec.lock().unwrap_or_else(|e| e.into_inner()).mounts = mount_points.clone();
            let rec = entry.record();
            let owner = rec.maps.as_ref().and_then(|m| m.root()).unwrap_or((0, 0));
            mounts::prepare_sources(
                &mut mount_points,
                &rec.host_config,
                &self.inner.cfg.data_root,
                owner,
            )?;
            create_dir(&entry.paths.dir)?;
            setup::write_etc_files(&entry.paths, &rec, owner)?;
            self.inner
                .images
                .prepare_rootfs(&id, &rec.layers, rec.maps.as_ref())?;
            self.seed_volumes(&id, &mount_points)?;
            entry.rec.lock().unwrap_or_else(|e| e.into_inner()).mounts = mount_points;
            // The container exists from its first write on: that one is fsynced.
            let rec = entry.record();
            store::save(&entry.paths, &rec, store::Durability::Synced)?;
            Ok(())
        })();
        if let Err(e) = setup {
            self.containers().remove(&id);
            let _ = self.inner.images.remove_rootfs(&id);
            let _ = std::fs::remove_dir_all(&entry.paths.dir);
            return Err(e);
        }
        tracing::info!(id = %id, name = %entry.record().name, "container created");
        self.emit(Event::container(&entry.record(), "create"));
        Ok((id, warnings))
    }

    // ----- start --------------------------------------------------------------------

    pub async fn start(&self, name_or_id: &str) -> Result<()> {
        let entry = self.lookup(name_or_id)?;
        self.start_entry(entry, StartBy::User).await
    }

    /// Starts `entry` for the user or the daemon's start (which forget earlier restarts and
    /// the manual stop, as moby's `containerStart` with `resetRestartManager`) or for its
    /// restart policy. The last two only if it still waits to restart and the user did not
    /// cancel that meanwhile.
    async fn start_entry(&self, entry: Arc<Entry>, by: StartBy) -> Result<()> {
        let op = entry.op.lock().await;
        let rec = entry.record();
        if by != StartBy::User
            && (rec.state.status != Status::Restarting
                || entry.restart_cancelled.load(Ordering::SeqCst))
        {
            return Ok(());
        }
        if by != StartBy::Policy {
            entry.update(|r| {
                r.state.manually_stopped = false;
                r.state.restart_count = 0;
                r.state.restart_delay_ms = 0;
            })?;
        }
        match rec.state.status {
            Status::Running | Status::Paused => {
                return Err(EngineError::NotModified("container already started".into()))
            }
            Status::Removing | Status::Dead => {
                return Err(EngineError::Conflict(format!(
                    "cannot start container {}: it is being removed",
                    rec.name
                )))
            }
            _ => {}
        }
        // A new run: its restart is not cancelled.
        entry.restart_cancelled.store(false, Ordering::SeqCst);
        let result = self.launch(&entry, &rec).await;
        drop(op);
        if let Err(e) = &result {
            tracing::warn!(id = %entry.id, error = %e, "start failed");
            let msg = e.to_string();
            let _ = entry.update(|r| {
                r.state.error = msg;
                if matches!(r.state.status, Status::Running | Status::Restarting) {
                    r.state.status = Status::Exited;
                }
            });
            let _ = self.inner.images.unmount_rootfs(&entry.id);
            if rec.host_config.auto_remove {
                // Docker's --rm also removes the container's anonymous volumes.
                let _ = self.remove(&entry.id, true, true).await;
            }
        }
        result
    }

    async fn launch(&self, entry: &Arc<Entry>, rec: &ContainerRecord) -> Result<()> {
        let paths = &entry.paths;
        let engine = self.clone();
        let (rec2, paths2) = (rec.clone(), paths.clone());
        // Mounting and writing the bundle touch the disk: off the async threads.
        tokio::task::spawn_blocking(move || engine.write_bundle(&rec2, &paths2))
            .await
            .map_err(|e| EngineError::System(format!("start task: {e}")))??;

        tracing::debug!(id = %entry.id, "root mounted, bundle written");
        let (pid, stream) = self
            .spawn_monitor(&paths.exec_dir, &paths.socket(), &paths.monitor_log())
            .await
            .map_err(|e| match e {
                MonitorFailure::Reported(msg) => runtime_error(&rec.path, &msg),
                MonitorFailure::Other(e) => e,
            })?;
        tracing::debug!(id = %entry.id, pid, "monitor ready, container created");
        let conn = self.attach_monitor(entry, stream);
        let (tx, rx) = oneshot::channel();
        *conn.start_reply.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        // Stdin that arrived before the monitor existed goes first.
        let pending = std::mem::take(&mut entry.io().pending_stdin);
        for msg in pending {
            let _ = match msg {
                StdinMsg::Data(d) => conn.send(Kind::Stdin, &d).await,
                StdinMsg::Close => conn.send(Kind::CloseStdin, b"").await,
            };
        }
        conn.send(Kind::Start, b"")
            .await
            .map_err(|e| EngineError::System(format!("talking to the monitor: {e}")))?;
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err(runtime_error(&rec.path, &msg)),
            Err(_) => {
                return Err(EngineError::System(
                    "the container monitor exited before starting the container".into(),
                ))
            }
        }
        entry.update(|r| {
            r.state.status = Status::Running;
            r.state.pid = pid;
            r.state.started_at = timefmt::now();
            r.state.finished_at = timefmt::ZERO_TIME.into();
            r.state.exit_code = 0;
            r.state.error.clear();
        })?;
        entry.phase.send_modify(|p| p.running = true);
        tracing::info!(id = %entry.id, pid, "container started");
        let rec = entry.record();
        for m in rec.mounts.iter().filter(|m| m.kind == "volume") {
            let ev = Event::new("volume", "mount", m.name.clone())
                .attr("container", rec.id.clone())
                .attr("destination", m.destination.clone())
                .attr("driver", "local")
                .attr("propagation", m.propagation.clone())
                .attr("read/write", (!m.read_only).to_string());
            self.emit(ev);
        }
        self.emit(Event::container(&rec, "start"));
        Ok(())
    }

    /// Execs `berth monitor DIR` and waits for it to say `ready PID`; returns the pid and a
    /// connection to the monitor's socket.
    pub(crate) async fn spawn_monitor(
        &self,
        dir: &Path,
        socket: &Path,
        log: &Path,
    ) -> std::result::Result<(i32, UnixStream), MonitorFailure> {
        let other = |m: String| MonitorFailure::Other(EngineError::System(m));
        let log_file = std::fs::File::create(log)
            .map_err(|e| MonitorFailure::Other(EngineError::io("create", log, e)))?;
        let mut child = tokio::process::Command::new(&self.inner.cfg.monitor_exe)
            .arg0("berth")
            .arg("monitor")
            // The monitor logs (the runtime's warnings) to monitor.log at the daemon's level.
            .arg("--log-level")
            .arg(tracing::level_filters::LevelFilter::current().to_string())
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| {
                other(format!(
                    "starting the monitor {}: {e}",
                    self.inner.cfg.monitor_exe.display()
                ))
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| other("monitor has no stdout".into()))?;
        // Reap the monitor whenever it ends; the process's exit comes over the socket.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .await
            .map_err(|e| other(format!("reading from the monitor: {e}")))?;
        let pid: i32 = match line.trim_end().split_once(' ') {
            Some(("ready", pid)) => pid.parse().unwrap_or(0),
            Some(("error", msg)) => return Err(MonitorFailure::Reported(msg.to_string())),
            _ => {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                return Err(other(format!("the monitor failed: {}", text.trim())));
            }
        };
        let stream = connect_monitor(socket).await.map_err(|e| {
            other(format!(
                "connecting to the monitor at {}: {e}",
                socket.display()
            ))
        })?;
        Ok((pid, stream))
    }

    fn write_bundle(&self, rec: &ContainerRecord, paths: &Paths) -> Result<()> {
        let _ = std::fs::remove_dir_all(&paths.exec_dir);
        create_dir(&paths.bundle())?;
        let rootfs = self.inner.images.mount_rootfs(&rec.id)?;
        if !rec.config.working_dir.is_empty() {
            let owner = rec.maps.as_ref().and_then(|m| m.root()).unwrap_or((0, 0));
            spec::ensure_workdir(&rootfs, &rec.config.working_dir, owner)?;
        }
        let etc = spec::EtcFiles {
            hostname: &paths.hostname(),
            hosts: &paths.hosts(),
            resolv_conf: &paths.resolv_conf(),
        };
        let cfg = &self.inner.cfg;
        let init = crate::init::wanted(&rec.host_config, cfg.init_default)
            .then(|| crate::init::binary(cfg.init_path.as_deref()))
            .transpose()?;
        let oci = spec::build(rec, &rootfs, &etc, &cfg.default_ulimits, init.as_deref())?;
        let json = serde_json::to_vec(&oci)
            .map_err(|e| EngineError::System(format!("encoding the OCI spec: {e}")))?;
        let cfg_path = paths.bundle().join("config.json");
        std::fs::write(&cfg_path, json).map_err(|e| EngineError::io("write", cfg_path, e))?;
        let mon = MonitorConfig {
            id: rec.id.clone(),
            bundle: paths.bundle(),
            runtime_root: self.inner.cfg.exec_root.join("runtime"),
            socket: paths.socket(),
            log: Some(paths.log()),
            exit_file: paths.exit_file(),
            tty: rec.config.tty,
            open_stdin: rec.config.open_stdin,
            loopback: rec.host_config.network_mode != "host",
            exec: None,
        };
        let json = serde_json::to_vec(&mon)
            .map_err(|e| EngineError::System(format!("encoding the monitor config: {e}")))?;
        let mon_path = paths.exec_dir.join(CONFIG_FILE);
        std::fs::write(&mon_path, json).map_err(|e| EngineError::io("write", mon_path, e))
    }

    /// Starts the task that reads the monitor's frames; returns the connection for writing.
    fn attach_monitor(&self, entry: &Arc<Entry>, stream: UnixStream) -> Arc<MonitorConn> {
        let (mut rd, wr) = stream.into_split();
        let conn = Arc::new(MonitorConn {
            writer: tokio::sync::Mutex::new(wr),
            start_reply: Mutex::new(None),
        });
        entry.io().monitor = Some(conn.clone());
        let engine = self.clone();
        let entry = entry.clone();
        let conn2 = conn.clone();
        tokio::spawn(async move {
            let status = conn2
                .pump(&mut rd, |out| {
                    entry
                        .io()
                        .subscribers
                        .retain(|s| s.send(out.clone()).is_ok());
                })
                .await;
            // Dropping the reply sender tells a waiting start that the monitor is gone.
            conn2
                .start_reply
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            // No exit frame: the monitor died (killed) and left the container to us.
            let monitor_died = status.is_none();
            let status = status.unwrap_or_else(|| read_exit_file(&entry.paths));
            engine
                .handle_exit(entry, &conn2, status, monitor_died)
                .await;
        });
        conn
    }

    /// The monitor's connection `conn` ended: record the exit (when the container had
    /// started; a failed start cleans up after itself) and auto-remove.
    async fn handle_exit(
        &self,
        entry: Arc<Entry>,
        conn: &Arc<MonitorConn>,
        status: ExitStatus,
        monitor_died: bool,
    ) {
        let op = entry.op.lock().await;
        {
            let mut io = entry.io();
            if !io.monitor.as_ref().is_some_and(|m| Arc::ptr_eq(m, conn)) {
                // A newer start owns the container now.
                return;
            }
            io.monitor = None;
            // Running or paused (a paused container killed by `rm -f`).
            if !entry.record().is_running() {
                return;
            }
            io.subscribers.clear();
        }
        let cancelled = entry.restart_cancelled.load(Ordering::SeqCst);
        let restart_delay = restart_delay(&entry.record(), status.exit_code, cancelled);
        let set_exited = |r: &mut ContainerRecord| {
            r.state.status = Status::Exited;
            if let Some(delay) = restart_delay {
                r.state.status = Status::Restarting;
                r.state.restart_count += 1;
                r.state.restart_delay_ms = delay.as_millis() as u64;
            }
            r.state.pid = 0;
            r.state.exit_code = status.exit_code;
            r.state.finished_at = status.finished_at.clone();
            r.state.error = status.error.clone();
        };
        // An auto-removed container's record is about to go: no need to write it first.
        let auto_remove = entry.record().host_config.auto_remove;
        if auto_remove {
            set_exited(&mut entry.rec.lock().unwrap_or_else(|e| e.into_inner()));
        } else if let Err(e) = entry.update(set_exited) {
            tracing::error!(id = %entry.id, error = %e, "saving the container's exit");
        }
        self.emit(
            Event::container(&entry.record(), "die").attr("exitCode", status.exit_code.to_string()),
        );
        entry.phase.send_modify(|p| {
            p.running = false;
            p.exits += 1;
            p.exit_code = status.exit_code;
        });
        tracing::info!(id = %entry.id, code = status.exit_code, "container exited");
        if monitor_died {
            self.delete_runtime_state(&entry.id).await;
        }
        // After telling the waiters: unmounting flushes the upper layer, which takes a while.
        // An auto-removed container's root goes with the rest of it.
        if !auto_remove {
            if let Err(e) = self.inner.images.unmount_rootfs(&entry.id) {
                tracing::warn!(id = %entry.id, error = %e, "unmounting the container's root");
            }
        }
        drop(op);
        if let Some(delay) = restart_delay {
            self.schedule_restart(entry.clone(), delay, StartBy::Policy);
        }
        if auto_remove {
            if let Err(e) = self.remove(&entry.id, true, true).await {
                tracing::warn!(id = %entry.id, error = %e, "auto-removing the container");
            }
        }
    }

    // ----- attach, stdin, resize, signals --------------------------------------------

    /// Subscribes to the container's output from now on; the receiver ends when the
    /// container exits (or is not running and never starts).
    pub fn attach(&self, name_or_id: &str) -> Result<mpsc::UnboundedReceiver<Output>> {
        let entry = self.lookup(name_or_id)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let rec = entry.record();
        if matches!(rec.state.status, Status::Removing | Status::Dead) {
            return Err(EngineError::Conflict(format!(
                "container {} is being removed",
                rec.name
            )));
        }
        entry.io().subscribers.push(tx);
        self.emit(Event::container(&rec, "attach"));
        Ok(rx)
    }

    /// Sends bytes to the container's stdin (queued until it starts).
    pub async fn write_stdin(&self, name_or_id: &str, data: Vec<u8>) -> Result<()> {
        self.stdin_msg(name_or_id, StdinMsg::Data(data)).await
    }

    /// Closes the container's stdin (for `StdinOnce` when the attached client's input ends).
    pub async fn close_stdin(&self, name_or_id: &str) -> Result<()> {
        self.stdin_msg(name_or_id, StdinMsg::Close).await
    }

    async fn stdin_msg(&self, name_or_id: &str, msg: StdinMsg) -> Result<()> {
        let entry = self.lookup(name_or_id)?;
        let conn = {
            let mut io = entry.io();
            match io.monitor.clone() {
                Some(c) => c,
                None => {
                    io.pending_stdin.push(msg);
                    return Ok(());
                }
            }
        };
        let res = match msg {
            StdinMsg::Data(d) => conn.send(Kind::Stdin, &d).await,
            StdinMsg::Close => conn.send(Kind::CloseStdin, b"").await,
        };
        res.map_err(|e| EngineError::System(format!("writing to the container's stdin: {e}")))
    }

    pub async fn resize(&self, name_or_id: &str, height: u16, width: u16) -> Result<()> {
        let entry = self.lookup(name_or_id)?;
        let conn = entry.io().monitor.clone();
        let Some(conn) = conn else {
            return Err(EngineError::Conflict(format!(
                "Container {} is not running",
                entry.id
            )));
        };
        let mut p = height.to_be_bytes().to_vec();
        p.extend_from_slice(&width.to_be_bytes());
        conn.send(Kind::Resize, &p)
            .await
            .map_err(|e| EngineError::System(format!("resizing the terminal: {e}")))
    }

    pub async fn kill(&self, name_or_id: &str, signal: Option<&str>) -> Result<()> {
        let entry = self.lookup(name_or_id)?;
        let sig = match signal.filter(|s| !s.is_empty()) {
            Some(s) => parse_signal(s)?,
            None => libc::SIGKILL,
        };
        if self.user_signal(&entry, sig)? {
            return Ok(());
        }
        let mut phase = entry.phase.subscribe();
        self.signal(&entry, sig).await?;
        self.emit(Event::container(&entry.record(), "kill").attr("signal", sig.to_string()));
        if sig == libc::SIGKILL {
            // Docker's kill with SIGKILL returns once the container stopped (daemon/kill.go
            // `Kill`, bounded at 10 s): a following inspect sees it exited.
            let stopped = phase.wait_for(|p| !p.running);
            let _ = tokio::time::timeout(Duration::from_secs(10), stopped).await;
        }
        Ok(())
    }

    async fn signal(&self, entry: &Entry, sig: i32) -> Result<()> {
        let conn = entry.io().monitor.clone();
        match conn {
            Some(c) if entry.record().is_running() => {
                let thaw = self.signal_thaws(&entry.record(), sig)?;
                c.send(Kind::Signal, &sig.to_be_bytes())
                    .await
                    .map_err(|e| EngineError::System(format!("signalling the container: {e}")))?;
                if thaw {
                    self.thaw_for_signal(entry).await;
                }
                Ok(())
            }
            _ => Err(EngineError::Conflict(format!(
                "Container {} is not running",
                entry.id
            ))),
        }
    }

    /// `docker stop`: `signal` (else the container's StopSignal, else SIGTERM), then
    /// SIGKILL after `timeout` seconds (else its StopTimeout, else 10; -1 waits forever).
    pub async fn stop(
        &self,
        name_or_id: &str,
        timeout: Option<i64>,
        signal: Option<&str>,
    ) -> Result<()> {
        let entry = self.lookup(name_or_id)?;
        let rec = entry.record();
        let sig = match signal.filter(|s| !s.is_empty()).or(rec
            .config
            .stop_signal
            .as_deref()
            .filter(|s| !s.is_empty()))
        {
            Some(s) => parse_signal(s)?,
            None => libc::SIGTERM,
        };
        if self.user_signal(&entry, sig)? {
            // Only waiting to restart: stopping it cancels that, whatever the signal (moby
            // ends such a stop with SIGKILL, which cancels).
            self.user_signal(&entry, libc::SIGKILL)?;
            return Ok(());
        }
        if !entry.record().is_running() {
            return Err(EngineError::NotModified("container already stopped".into()));
        }
        let timeout = timeout.or(rec.config.stop_timeout).unwrap_or(10);
        self.emit(Event::container(&rec, "kill").attr("signal", sig.to_string()));
        self.stop_entry(&entry, sig, timeout).await?;
        self.emit(Event::container(&entry.record(), "stop"));
        Ok(())
    }

    async fn stop_entry(&self, entry: &Entry, sig: i32, timeout: i64) -> Result<()> {
        let mut rx = entry.phase.subscribe();
        // A signal that could not be sent leaves 2 s before SIGKILL, as Docker does.
        let timeout = match self.signal(entry, sig).await {
            Ok(()) => timeout,
            Err(_) => 2,
        };
        let stopped = |p: &Phase| !p.running;
        let waited = if timeout < 0 {
            rx.wait_for(stopped).await.map(|_| ()).map_err(|_| ())
        } else {
            match tokio::time::timeout(Duration::from_secs(timeout as u64), rx.wait_for(stopped))
                .await
            {
                Ok(r) => r.map(|_| ()).map_err(|_| ()),
                Err(_) => Err(()),
            }
        };
        if waited.is_err() && entry.phase.borrow().running {
            let _ = self.user_signal(entry, libc::SIGKILL);
            let _ = self.signal(entry, libc::SIGKILL).await;
            let _ = rx.wait_for(stopped).await;
        }
        Ok(())
    }

    pub async fn restart(&self, name_or_id: &str, timeout: Option<i64>) -> Result<()> {
        match self.stop(name_or_id, timeout, None).await {
            Ok(()) | Err(EngineError::NotModified(_)) => {}
            Err(e) => return Err(e),
        }
        self.start(name_or_id).await
    }

    /// Waits for `condition`; returns the exit code.
    pub async fn wait(&self, name_or_id: &str, condition: WaitCondition) -> Result<i32> {
        let entry = self.lookup(name_or_id)?;
        let mut rx = entry.phase.subscribe();
        let start = rx.borrow().clone();
        drop(entry);
        let done = |p: &Phase| match condition {
            WaitCondition::NotRunning => !p.running || p.removed,
            WaitCondition::NextExit => p.exits > start.exits || p.removed,
            WaitCondition::Removed => p.removed,
        };
        let p = rx
            .wait_for(done)
            .await
            .map(|p| p.clone())
            .map_err(|_| EngineError::System("the container went away".into()))?;
        Ok(p.exit_code)
    }

    // ----- remove -------------------------------------------------------------------

    pub async fn remove(&self, name_or_id: &str, force: bool, volumes: bool) -> Result<()> {
        let entry = self.lookup(name_or_id)?;
        // A restart by policy may start it again while it is killed: then kill it again.
        let mut attempts = 0;
        let _op = loop {
            let rec = entry.record();
            // Docker's refusals (daemon/delete.go `cleanupContainer`).
            let refusal = match rec.state.status {
                Status::Paused => Some("container is paused and must be unpaused first".into()),
                s @ (Status::Running | Status::Restarting) => Some(format!(
                    "container is {}: stop the container before removing or force remove",
                    s.as_str()
                )),
                _ => None,
            };
            if let Some(why) = refusal {
                if !force {
                    return Err(EngineError::Conflict(format!(
                        "cannot remove container \"/{}\": {why}",
                        rec.name
                    )));
                }
                // SIGKILL cancels a pending restart too (the container is then exited).
                if !self.user_signal(&entry, libc::SIGKILL)? {
                    self.stop_entry(&entry, libc::SIGKILL, -1).await?;
                }
            }
            let op = entry.op.lock().await;
            if !self.containers().contains_key(&entry.id) {
                // Removed meanwhile (auto-remove racing an explicit rm).
                return Ok(());
            }
            if !entry.record().is_running() {
                break op;
            }
            attempts += 1;
            if !force || attempts == 3 {
                return Err(EngineError::Conflict(format!(
                    "container {} started again while being removed",
                    entry.id
                )));
            }
        };
        let rec = entry.record();
        {
            let mut r = entry.rec.lock().unwrap_or_else(|e| e.into_inner());
            r.state.status = Status::Removing;
        }
        // The record goes first: without it the container no longer exists, also for a
        // restarted daemon, which sweeps whatever is left (see `sweep`).
        let record = entry.paths.record();
        match std::fs::remove_file(&record) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EngineError::io("remove", record, e)),
        }
        self.containers().remove(&entry.id);
        self.inner
            .execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, x| x.container_id != entry.id);
        entry.phase.send_modify(|p| p.removed = true);
        tracing::info!(id = %entry.id, "container removed");
        self.emit(Event::container(&rec, "destroy"));

        // Unmounting and deleting files is cleanup nobody waits for.
        let volumes: Vec<String> = if volumes {
            rec.mounts
                .iter()
                .filter(|m| {
                    m.kind == "volume"
                        && crate::volumes::is_anonymous(&self.inner.cfg.data_root, &m.name)
                })
                .map(|m| m.name.clone())
                .collect()
        } else {
            Vec::new()
        };
        let engine = self.clone();
        let id = entry.id.clone();
        tokio::task::spawn_blocking(move || engine.clean_up(&id, &volumes));
        Ok(())
    }

    /// Deletes what is left of a removed container: its root, directories and anonymous
    /// volumes (when asked).
    fn clean_up(&self, id: &str, volumes: &[String]) {
        let paths = self.paths(id);
        if let Err(e) = self.inner.images.remove_rootfs(id) {
            tracing::warn!(id, error = %e, "removing the container's root");
        }
        for v in volumes {
            // Kept when another container mounts it too (as docker does).
            if let Err(e) = self.volume_remove(v, false) {
                tracing::info!(id, volume = %v, error = %e, "anonymous volume kept");
            }
        }
        let _ = std::fs::remove_dir_all(&paths.exec_dir);
        if let Err(e) = std::fs::remove_dir_all(&paths.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(id, error = %e, "removing the container's directory");
            }
        }
    }

    /// Cleans up containers whose removal a previous daemon did not finish: a directory
    /// under `containers/` without its record.
    fn sweep(&self) {
        let dir = self.inner.cfg.data_root.join("containers");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let Some(id) = e.file_name().to_str().map(String::from) else {
                continue;
            };
            let is_container_id = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
            if is_container_id && !e.path().join("config.json").exists() {
                tracing::info!(id = %id, "finishing the removal of a container");
                self.clean_up(&id, &[]);
            }
        }
    }

    // ----- queries ------------------------------------------------------------------

    pub fn inspect(&self, name_or_id: &str) -> Result<ContainerView> {
        let entry = self.lookup(name_or_id)?;
        let rec = entry.record();
        let rootfs = self.inner.images.rootfs_path(&rec.id);
        Ok(ContainerView {
            log_path: entry.paths.log(),
            hostname_path: entry.paths.hostname(),
            hosts_path: entry.paths.hosts(),
            resolv_conf_path: entry.paths.resolv_conf(),
            rootfs,
            record: rec,
        })
    }

    /// The container's exposed ports (`80/tcp`, `53/udp`), sorted: Docker's
    /// `Config.ExposedPorts`, kept in the record at create. A record written before berth
    /// kept them has none: then its image's EXPOSE (what was exposed without `--expose`),
    /// or nothing if the image was removed (`rmi -f`).
    pub fn exposed_ports(&self, rec: &ContainerRecord) -> Vec<String> {
        if let Some(ports) = &rec.config.exposed_ports {
            return ports.keys().cloned().collect();
        }
        let Ok(image) = self.inner.images.resolve(&rec.image_id) else {
            return Vec::new();
        };
        let mut ports: Vec<String> = image
            .config
            .exposed_ports
            .iter()
            .map(|p| setup::port_key(p))
            .collect();
        ports.sort();
        ports.dedup();
        ports
    }

    /// The ports Docker lists under `NetworkSettings.Ports` (and `ps` under PORTS): while
    /// the container runs in a network namespace of its own, each exposed port, with no
    /// host binding since berth publishes none (Docker's `{"80/tcp": null}`). None with
    /// `--network=host` or `none`, or when it is not running (moby's releaseNetwork clears
    /// them).
    pub fn network_ports(&self, rec: &ContainerRecord) -> Vec<String> {
        let own_network = matches!(
            rec.host_config.network_mode.as_str(),
            "" | "default" | "bridge"
        );
        if own_network && rec.is_running() {
            self.exposed_ports(rec)
        } else {
            Vec::new()
        }
    }

    /// Containers, newest first, filtered as `docker ps` does.
    pub fn list(&self, opts: &ListOptions) -> Result<Vec<ContainerRecord>> {
        let mut recs: Vec<ContainerRecord> =
            self.containers().values().map(|e| e.record()).collect();
        recs.sort_by(|a, b| b.created.cmp(&a.created));
        let images = &self.inner.images;
        let mut out = Vec::new();
        for rec in recs {
            if !opts.all
                && !rec.is_running()
                && !opts.filters.contains_key("status")
                && !opts.filters.contains_key("exited")
            {
                continue;
            }
            if filters::matches_filters(&rec, &opts.filters, images)? {
                out.push(rec);
            }
        }
        if let Some(n) = opts.limit.filter(|n| *n > 0) {
            out.truncate(n);
        }
        Ok(out)
    }

    /// Reads the container's log; with `follow`, keeps sending new entries until the
    /// container stops. The receiver ends when there is nothing more.
    pub fn logs(
        &self,
        name_or_id: &str,
        filter: logs::Filter,
        follow: bool,
    ) -> Result<mpsc::Receiver<logs::Entry>> {
        let entry = self.lookup(name_or_id)?;
        let path = entry.paths.log();
        let (tx, rx) = mpsc::channel(256);
        let mut phase = entry.phase.subscribe();
        tokio::spawn(async move {
            let mut reader = logs::Reader::open(&path).ok();
            let mut filter = filter;
            loop {
                let running = phase.borrow().running;
                if reader.is_none() {
                    reader = logs::Reader::open(&path).ok();
                }
                if let Some(r) = reader.as_mut() {
                    for e in r.read_new(&filter).unwrap_or_default() {
                        if tx.send(e).await.is_err() {
                            return;
                        }
                    }
                }
                filter.tail = None;
                if !follow || !running {
                    return;
                }
                // New output, exit or removal wakes us; poll anyway for output.
                let _ = tokio::time::timeout(Duration::from_millis(100), phase.changed()).await;
            }
        });
        Ok(rx)
    }

    pub fn info(&self) -> Result<EngineInfo> {
        let recs: Vec<ContainerRecord> = self.containers().values().map(|e| e.record()).collect();
        let running = recs
            .iter()
            .filter(|r| r.state.status == Status::Running)
            .count();
        let paused = recs
            .iter()
            .filter(|r| r.state.status == Status::Paused)
            .count();
        Ok(EngineInfo {
            containers: recs.len(),
            running,
            paused,
            stopped: recs.len() - running - paused,
            images: self.inner.images.count()?,
            data_root: self.inner.cfg.data_root.clone(),
            userns: self.inner.cfg.userns.clone(),
            remap_name: self.inner.cfg.remap_name.clone(),
            rootfs_driver: self.inner.images.driver_name(),
        })
    }

    /// Image ids used by any container (for `rmi`).
    pub fn images_in_use(&self) -> Vec<String> {
        self.containers()
            .values()
            .map(|e| e.record().image_id)
            .collect()
    }

    /// Stops talking to monitors; containers keep running under them.
    pub fn shutdown(&self) {
        for e in self.containers().values() {
            e.io().monitor = None;
        }
    }
}

/// A runtime failure as Docker words the common one, so that clients map it as they do
/// Docker's (the docker CLI exits 127 on "executable file not found").
pub(crate) fn runtime_error(program: &str, msg: &str) -> EngineError {
    if msg.contains("executable") && msg.contains("not found") {
        return EngineError::InvalidParameter(format!(
            "failed to create task for container: exec: {program:?}: executable file not found in $PATH ({msg})"
        ));
    }
    EngineError::System(msg.to_string())
}

/// Why a monitor did not come up.
pub(crate) enum MonitorFailure {
    /// The monitor said why (usually the runtime's error).
    Reported(String),
    Other(EngineError),
}

async fn connect_monitor(socket: &Path) -> std::io::Result<UnixStream> {
    let p = store::SocketPath::new(socket)?;
    UnixStream::connect(p.path()).await
}

/// How long to wait before the restart policy starts `rec` again after it exited with
/// `exit_code`; `None`: it stays exited.
fn restart_delay(rec: &ContainerRecord, exit_code: i32, cancelled: bool) -> Option<Duration> {
    let s = &rec.state;
    let policy = &rec.host_config.restart_policy;
    if !restart::after_exit(
        policy,
        exit_code,
        s.manually_stopped,
        cancelled,
        s.restart_count,
    ) {
        return None;
    }
    let previous = Duration::from_millis(s.restart_delay_ms);
    Some(restart::next_delay(previous, timefmt::since(&s.started_at)))
}

fn read_exit_file(paths: &Paths) -> ExitStatus {
    std::fs::read(paths.exit_file())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| ExitStatus {
            exit_code: 255,
            finished_at: timefmt::now(),
            error: "the container's monitor ended without recording an exit status".into(),
        })
}
