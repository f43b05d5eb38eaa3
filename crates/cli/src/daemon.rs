//! `berth daemon`: the engine behind the Docker Engine API, with dockerd's flags and
//! daemon.json keys; and the hidden `berth monitor DIR` that the daemon execs per container.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use berth_docker_api::{Api, Listener};
use berth_engine::container::Ulimit;
use berth_engine::{Engine, EngineConfig};
use berth_idmap::EtcFiles;
use clap::Args;

const DEFAULT_CONFIG: &str = "/etc/berth/daemon.json";

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Socket(s) to listen on: unix:///PATH, tcp://HOST:PORT, fd://[N] (default unix:///run/berth.sock)
    #[arg(short = 'H', long = "host", value_name = "ADDR")]
    hosts: Vec<String>,
    /// Run every container in a user namespace: default, USER, USER:GROUP, UID or UID:GID
    #[arg(long = "userns-remap", value_name = "SPEC")]
    userns_remap: Option<String>,
    /// Where images, containers and volumes live (default /var/lib/berth)
    #[arg(long = "data-root", value_name = "DIR")]
    data_root: Option<PathBuf>,
    /// Where sockets, mounts and runtime state live (default /run/berth)
    #[arg(long = "exec-root", value_name = "DIR")]
    exec_root: Option<PathBuf>,
    /// Write the daemon's pid to this file
    #[arg(short = 'p', long = "pidfile", value_name = "FILE")]
    pidfile: Option<PathBuf>,
    /// Daemon configuration file, with dockerd's key names (default /etc/berth/daemon.json)
    #[arg(long = "config-file", value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// debug, info, warn, error or fatal (default info)
    #[arg(short = 'l', long = "log-level", value_name = "LEVEL")]
    log_level: Option<String>,
    /// Debug mode (log level debug)
    #[arg(short = 'D', long = "debug")]
    debug: bool,
    /// Default ulimits for containers, as NAME=SOFT[:HARD]
    #[arg(long = "default-ulimit", value_name = "ULIMIT")]
    default_ulimits: Vec<String>,
    /// Run an init inside containers that do not choose (docker run --init)
    #[arg(long = "init")]
    init: bool,
    /// The init binary bound into containers run with --init (default: docker-init or
    /// tini-static from PATH)
    #[arg(long = "init-path", value_name = "FILE")]
    init_path: Option<PathBuf>,
    /// A registry reached over plain HTTP (HOST[:PORT] or an IPv4 CIDR); loopback always is
    #[arg(long = "insecure-registry", value_name = "REGISTRY")]
    insecure_registries: Vec<String>,
    /// Root of the account files (/etc/passwd, /etc/group, /etc/subuid, /etc/subgid); for tests.
    #[arg(long, env = "BERTH_ETC_ROOT", default_value = "/", hide = true)]
    etc_root: PathBuf,
}

#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// Log level of the monitor's stderr (its monitor.log): the daemon passes its own
    #[arg(long = "log-level", value_name = "LEVEL", default_value = "info")]
    log_level: tracing::level_filters::LevelFilter,
    /// The container's directory in the exec root (holds monitor.json)
    dir: PathBuf,
}

/// `berth monitor DIR`: runs one container's monitor. Must stay single-threaded until the
/// container is created (the runtime forks it), so it sets up nothing that starts a thread:
/// a plain fmt subscriber on stderr, which the daemon points at the container's monitor.log.
pub fn monitor(args: MonitorArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_max_level(args.log_level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    ExitCode::from(berth_engine::launcher::monitor_main(&args.dir) as u8)
}

/// The daemon's settings after merging flags and the config file.
#[derive(Debug)]
struct Settings {
    hosts: Vec<String>,
    userns_remap: Option<String>,
    data_root: PathBuf,
    exec_root: PathBuf,
    pidfile: Option<PathBuf>,
    log_level: String,
    debug: bool,
    default_ulimits: Vec<Ulimit>,
    insecure_registries: Vec<String>,
    init: bool,
    init_path: Option<PathBuf>,
}

const FILE_KEYS: &[&str] = &[
    "hosts",
    "userns-remap",
    "data-root",
    "exec-root",
    "pidfile",
    "log-level",
    "debug",
    "default-ulimits",
    "insecure-registries",
    "init",
    "init-path",
];

fn parse_ulimit(s: &str) -> anyhow::Result<Ulimit> {
    let (name, vals) = s
        .split_once('=')
        .with_context(|| format!("invalid ulimit {s:?}: expected NAME=SOFT[:HARD]"))?;
    let (soft, hard) = vals.split_once(':').unwrap_or((vals, vals));
    let num = |v: &str| {
        v.parse::<i64>()
            .with_context(|| format!("invalid ulimit {s:?}: {v:?} is not a number"))
    };
    Ok(Ulimit {
        name: name.to_string(),
        soft: num(soft)?,
        hard: num(hard)?,
    })
}

/// Merges flags with the config file; a setting in both is an error, as with dockerd.
fn settings(args: &DaemonArgs) -> anyhow::Result<Settings> {
    let path = args
        .config_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let file: BTreeMap<String, serde_json::Value> = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a valid JSON object", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && args.config_file.is_none() => {
            BTreeMap::new()
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read the config file {}", path.display()))
        }
    };
    let unknown: Vec<&str> = file
        .keys()
        .map(String::as_str)
        .filter(|k| !FILE_KEYS.contains(k))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "the following directives don't match any configuration option: {} (in {}; berth knows {})",
            unknown.join(", "),
            path.display(),
            FILE_KEYS.join(", ")
        );
    }
    let flag_set: Vec<(&str, bool)> = vec![
        ("hosts", !args.hosts.is_empty()),
        ("userns-remap", args.userns_remap.is_some()),
        ("data-root", args.data_root.is_some()),
        ("exec-root", args.exec_root.is_some()),
        ("pidfile", args.pidfile.is_some()),
        ("log-level", args.log_level.is_some()),
        ("debug", args.debug),
        ("default-ulimits", !args.default_ulimits.is_empty()),
        ("insecure-registries", !args.insecure_registries.is_empty()),
        ("init", args.init),
        ("init-path", args.init_path.is_some()),
    ];
    let both: Vec<&str> = flag_set
        .iter()
        .filter(|(k, set)| *set && file.contains_key(*k))
        .map(|(k, _)| *k)
        .collect();
    if !both.is_empty() {
        bail!(
            "the following directives are specified both as a flag and in the configuration file: {} (in {}): remove one of them",
            both.join(", "),
            path.display()
        );
    }
    let s = |k: &str| -> anyhow::Result<Option<String>> {
        match file.get(k) {
            None => Ok(None),
            Some(serde_json::Value::String(v)) => Ok(Some(v.clone())),
            Some(other) => bail!("{}: {k} must be a string, not {other}", path.display()),
        }
    };
    let hosts = match file.get("hosts") {
        Some(v) => serde_json::from_value::<Vec<String>>(v.clone())
            .with_context(|| format!("{}: hosts must be a list of strings", path.display()))?,
        None => args.hosts.clone(),
    };
    let flag = |k: &str, arg: bool| -> anyhow::Result<bool> {
        match file.get(k) {
            Some(v) => v
                .as_bool()
                .with_context(|| format!("{}: {k} must be true or false", path.display())),
            None => Ok(arg),
        }
    };
    let debug = flag("debug", args.debug)?;
    let init = flag("init", args.init)?;
    let mut default_ulimits = Vec::new();
    if let Some(v) = file.get("default-ulimits") {
        let m: BTreeMap<String, Ulimit> = serde_json::from_value(v.clone()).with_context(|| {
            format!(
                "{}: default-ulimits must map names to {{\"Name\", \"Soft\", \"Hard\"}}",
                path.display()
            )
        })?;
        default_ulimits.extend(m.into_values());
    }
    for u in &args.default_ulimits {
        default_ulimits.push(parse_ulimit(u)?);
    }
    let insecure_registries = match file.get("insecure-registries") {
        Some(v) => serde_json::from_value::<Vec<String>>(v.clone()).with_context(|| {
            format!(
                "{}: insecure-registries must be a list of strings",
                path.display()
            )
        })?,
        None => args.insecure_registries.clone(),
    };
    let log_level = s("log-level")?
        .or_else(|| args.log_level.clone())
        .unwrap_or_else(|| "info".into());
    Ok(Settings {
        hosts: if hosts.is_empty() {
            vec!["unix:///run/berth.sock".into()]
        } else {
            hosts
        },
        userns_remap: s("userns-remap")?
            .or_else(|| args.userns_remap.clone())
            .filter(|v| !v.is_empty()),
        data_root: s("data-root")?
            .map(PathBuf::from)
            .or_else(|| args.data_root.clone())
            .unwrap_or_else(|| "/var/lib/berth".into()),
        exec_root: s("exec-root")?
            .map(PathBuf::from)
            .or_else(|| args.exec_root.clone())
            .unwrap_or_else(|| "/run/berth".into()),
        pidfile: s("pidfile")?
            .map(PathBuf::from)
            .or_else(|| args.pidfile.clone()),
        log_level,
        debug,
        default_ulimits,
        insecure_registries,
        init,
        init_path: s("init-path")?
            .map(PathBuf::from)
            .or_else(|| args.init_path.clone()),
    })
}

fn tracing_level(level: &str, debug: bool) -> anyhow::Result<&'static str> {
    if debug {
        return Ok("debug");
    }
    Ok(match level {
        "debug" => "debug",
        "info" => "info",
        "warn" => "warn",
        "error" | "fatal" => "error",
        other => bail!("invalid --log-level {other:?}: use debug, info, warn, error or fatal"),
    })
}

/// A stable id for `docker info`, kept in the data root.
fn daemon_id(data_root: &Path) -> anyhow::Result<String> {
    let path = data_root.join("engine-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_string());
        }
    }
    let id = berth_engine::names::new_id()?;
    std::fs::write(&path, &id).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

fn write_pidfile(path: &Path) -> anyhow::Result<()> {
    if let Ok(old) = std::fs::read_to_string(path) {
        if let Ok(pid) = old.trim().parse::<i32>() {
            if pid != std::process::id() as i32 && Path::new(&format!("/proc/{pid}")).exists() {
                bail!("pid file {} names the running process {pid}: is a daemon already running? Stop it or use another --pidfile", path.display());
            }
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(path, format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write the pid file {}", path.display()))
}

pub fn run(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    let settings = settings(&args)?;
    crate::init_logging(tracing_level(&settings.log_level, settings.debug)?);

    let remap = match &settings.userns_remap {
        None => None,
        Some(spec) => berth_idmap::resolve_str(spec, &EtcFiles::new(&args.etc_root))
            .with_context(|| format!("--userns-remap={spec}"))?,
    };
    for dir in [&settings.data_root, &settings.exec_root] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let cfg = EngineConfig {
        data_root: settings.data_root.clone(),
        exec_root: settings.exec_root.clone(),
        userns: remap.as_ref().map(|r| r.maps.clone()),
        remap_name: remap.as_ref().map(|r| r.remapped_root()),
        default_ulimits: settings.default_ulimits.clone(),
        // This very binary, even if the file is replaced (an upgrade) while the daemon runs:
        // monitor and daemon must speak the same protocol.
        monitor_exe: PathBuf::from("/proc/self/exe"),
        init_default: settings.init,
        init_path: settings.init_path.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(settings, cfg))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(settings: Settings, cfg: EngineConfig) -> anyhow::Result<()> {
    let remap = cfg.remap_name.clone();
    let engine = Engine::open(cfg).await.context("cannot start the engine")?;
    let mut listeners: Vec<Listener> = Vec::new();
    for h in &settings.hosts {
        listeners.extend(berth_docker_api::bind(h).await?);
    }
    let sockets: Vec<PathBuf> = listeners
        .iter()
        .filter_map(|l| match l {
            Listener::Unix(_, p) if !p.as_os_str().is_empty() => Some(p.clone()),
            _ => None,
        })
        .collect();
    if let Some(p) = &settings.pidfile {
        write_pidfile(p)?;
    }
    berth_docker_api::set_insecure_registries(settings.insecure_registries.clone());
    let api = Api {
        engine: engine.clone(),
        daemon_id: daemon_id(&settings.data_root)?,
        debug: settings.debug,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        let _ = stop_tx.send(true);
    });
    tracing::info!(
        hosts = ?settings.hosts,
        data_root = %settings.data_root.display(),
        userns_remap = remap.as_deref().unwrap_or("off"),
        "berth daemon ready"
    );
    berth_docker_api::serve(api, listeners, stop_rx).await;
    // Containers keep running under their monitors; the next daemon reconnects to them.
    engine.shutdown();
    for s in sockets {
        let _ = std::fs::remove_file(s);
    }
    if let Some(p) = &settings.pidfile {
        let _ = std::fs::remove_file(p);
    }
    tracing::info!("berth daemon stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: DaemonArgs,
    }

    fn args(cli: &[&str]) -> DaemonArgs {
        T::parse_from(std::iter::once("daemon").chain(cli.iter().copied())).args
    }

    #[test]
    fn flags_and_file_merge_and_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("daemon.json");
        std::fs::write(&cfg, r#"{"userns-remap": "default", "data-root": "/srv/berth", "default-ulimits": {"nofile": {"Name": "nofile", "Soft": 1024, "Hard": 2048}}}"#).unwrap();
        let c = cfg.to_str().unwrap();
        let s = settings(&args(&["--config-file", c, "-H", "unix:///tmp/b.sock"])).unwrap();
        assert_eq!(s.userns_remap.as_deref(), Some("default"));
        assert_eq!(s.data_root, PathBuf::from("/srv/berth"));
        assert_eq!(s.hosts, ["unix:///tmp/b.sock"]);
        assert_eq!(s.default_ulimits[0].hard, 2048);
        let err = settings(&args(&["--config-file", c, "--userns-remap", "default"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("both as a flag and in the configuration file: userns-remap"),
            "{err}"
        );
        std::fs::write(&cfg, r#"{"bogus": 1}"#).unwrap();
        let err = settings(&args(&["--config-file", c]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("don't match any configuration option: bogus"),
            "{err}"
        );
        let missing = dir.path().join("nope.json");
        assert!(settings(&args(&["--config-file", missing.to_str().unwrap()])).is_err());
    }

    #[test]
    fn insecure_registries_from_flags_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("daemon.json");
        std::fs::write(
            &cfg,
            r#"{"insecure-registries": ["10.0.0.0/8", "myreg:5000"]}"#,
        )
        .unwrap();
        let c = cfg.to_str().unwrap();
        let s = settings(&args(&["--config-file", c])).unwrap();
        assert_eq!(s.insecure_registries, ["10.0.0.0/8", "myreg:5000"]);
        let err = settings(&args(&["--config-file", c, "--insecure-registry", "x:1"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("insecure-registries"), "{err}");
        std::fs::write(&cfg, "{}").unwrap();
        let s = settings(&args(&["--config-file", c, "--insecure-registry", "x:1"])).unwrap();
        assert_eq!(s.insecure_registries, ["x:1"]);
    }

    #[test]
    fn ulimits_and_levels() {
        assert_eq!(
            parse_ulimit("nofile=10:20").unwrap(),
            Ulimit {
                name: "nofile".into(),
                soft: 10,
                hard: 20
            }
        );
        assert_eq!(parse_ulimit("nproc=5").unwrap().hard, 5);
        assert!(parse_ulimit("nofile").is_err());
        assert_eq!(tracing_level("fatal", false).unwrap(), "error");
        assert_eq!(tracing_level("info", true).unwrap(), "debug");
        assert!(tracing_level("loud", false).is_err());
    }
}
