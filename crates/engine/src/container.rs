//! What a container is: the configuration it was created with, its state, and the record
//! kept on disk (`containers/<id>/config.json`).
//!
//! The configuration types use Docker's field names: they are what the Docker API sends
//! and what `inspect` shows, and keeping one shape avoids a second copy of every field.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_idmap::UsernsMaps;
use serde::{Deserialize, Serialize};

use crate::serde_util::{null_default, str_or_list};
use crate::timefmt::ZERO_TIME;

/// The process and identity settings (Docker's `Config`), after merging in the image's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerConfig {
    #[serde(deserialize_with = "null_default")]
    pub hostname: String,
    #[serde(deserialize_with = "null_default")]
    pub domainname: String,
    #[serde(deserialize_with = "null_default")]
    pub user: String,
    #[serde(deserialize_with = "null_default")]
    pub attach_stdin: bool,
    #[serde(deserialize_with = "null_default")]
    pub attach_stdout: bool,
    #[serde(deserialize_with = "null_default")]
    pub attach_stderr: bool,
    #[serde(deserialize_with = "null_default")]
    pub tty: bool,
    #[serde(deserialize_with = "null_default")]
    pub open_stdin: bool,
    #[serde(deserialize_with = "null_default")]
    pub stdin_once: bool,
    #[serde(deserialize_with = "null_default")]
    pub env: Vec<String>,
    #[serde(deserialize_with = "str_or_list")]
    pub cmd: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub image: String,
    #[serde(deserialize_with = "null_default")]
    pub working_dir: String,
    #[serde(deserialize_with = "str_or_list")]
    pub entrypoint: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
    #[serde(deserialize_with = "null_default")]
    pub volumes: BTreeMap<String, serde_json::Value>,
    /// The ports the container exposes, Docker's `{"80/tcp": {}}`: the request's (`--expose`,
    /// and `-p`'s, which the docker CLI puts here too) merged with the image's EXPOSE at
    /// create. Always set in a record, even empty; `None` only in records written before
    /// berth kept them, for which [`crate::Engine::exposed_ports`] reads the image's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

/// One entry of `HostConfig.Mounts` (`--mount`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MountRequest {
    #[serde(rename = "Type", deserialize_with = "null_default")]
    pub kind: String,
    #[serde(deserialize_with = "null_default")]
    pub source: String,
    #[serde(deserialize_with = "null_default")]
    pub target: String,
    #[serde(deserialize_with = "null_default")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_options: Option<BindOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs_options: Option<TmpfsOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_options: Option<VolumeOptions>,
}

/// `--mount type=volume` options berth uses: `volume-nocopy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeOptions {
    #[serde(deserialize_with = "null_default")]
    pub no_copy: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct BindOptions {
    #[serde(deserialize_with = "null_default")]
    pub propagation: String,
    #[serde(deserialize_with = "null_default")]
    pub create_mountpoint: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TmpfsOptions {
    #[serde(deserialize_with = "null_default")]
    pub size_bytes: i64,
    #[serde(deserialize_with = "null_default")]
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    #[serde(deserialize_with = "null_default")]
    pub maximum_retry_count: i64,
}

/// How the container relates to the host (Docker's `HostConfig`), the subset berth reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    #[serde(deserialize_with = "null_default")]
    pub binds: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub mounts: Vec<MountRequest>,
    #[serde(deserialize_with = "null_default")]
    pub auto_remove: bool,
    #[serde(deserialize_with = "null_default")]
    pub privileged: bool,
    #[serde(deserialize_with = "null_default")]
    pub userns_mode: String,
    #[serde(deserialize_with = "null_default")]
    pub network_mode: String,
    #[serde(deserialize_with = "null_default")]
    pub pid_mode: String,
    #[serde(deserialize_with = "null_default")]
    pub ipc_mode: String,
    #[serde(rename = "UTSMode", deserialize_with = "null_default")]
    pub uts_mode: String,
    #[serde(deserialize_with = "null_default")]
    pub cap_add: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub cap_drop: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub security_opt: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub readonly_rootfs: bool,
    #[serde(deserialize_with = "null_default")]
    pub memory: i64,
    /// Memory plus swap (`--memory-swap`); -1: unlimited swap.
    #[serde(deserialize_with = "null_default")]
    pub memory_swap: i64,
    #[serde(deserialize_with = "null_default")]
    pub cpu_quota: i64,
    #[serde(deserialize_with = "null_default")]
    pub cpu_period: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    #[serde(rename = "NanoCpus", deserialize_with = "null_default")]
    pub nano_cpus: i64,
    #[serde(deserialize_with = "null_default")]
    pub cpu_shares: i64,
    #[serde(deserialize_with = "null_default")]
    pub ulimits: Vec<Ulimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(deserialize_with = "null_default")]
    pub console_size: Vec<u64>,
    #[serde(deserialize_with = "null_default")]
    pub restart_policy: RestartPolicy,
    #[serde(deserialize_with = "null_default")]
    pub port_bindings: BTreeMap<String, serde_json::Value>,
    /// `-P`: publish every exposed port (refused: berth has no bridge networking yet).
    #[serde(deserialize_with = "null_default")]
    pub publish_all_ports: bool,
    #[serde(deserialize_with = "null_default")]
    pub tmpfs: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_default")]
    pub devices: Vec<crate::devices::DeviceMapping>,
    #[serde(deserialize_with = "null_default")]
    pub device_cgroup_rules: Vec<String>,
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

/// The state part of the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    pub pid: i32,
    pub exit_code: i32,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
    pub oom_killed: bool,
    /// Restarts by the restart policy since the user last started the container.
    #[serde(default)]
    pub restart_count: u32,
    /// The user stopped or killed it: the restart policy is off (moby's
    /// HasBeenManuallyStopped).
    #[serde(default)]
    pub manually_stopped: bool,
    /// The delay before the last restart (backoff), in milliseconds.
    #[serde(default)]
    pub restart_delay_ms: u64,
}

impl Default for State {
    fn default() -> Self {
        State {
            status: Status::Created,
            pid: 0,
            exit_code: 0,
            error: String::new(),
            started_at: ZERO_TIME.into(),
            finished_at: ZERO_TIME.into(),
            oom_killed: false,
            restart_count: 0,
            manually_stopped: false,
            restart_delay_ms: 0,
        }
    }
}

/// A mount as resolved at create time (what `inspect` lists under `Mounts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountPoint {
    /// "bind", "volume" or "tmpfs".
    pub kind: String,
    /// Volume name, for volumes.
    pub name: String,
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
    /// Docker's mode text (`ro`, `z`...), kept for `inspect`.
    pub mode: String,
    pub propagation: String,
    /// tmpfs options (`size=...`, `mode=...`).
    pub options: Vec<String>,
}

/// Everything kept about one container, written atomically to `containers/<id>/config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    /// Without the leading slash.
    pub name: String,
    pub created: String,
    /// The image as the user named it.
    pub image_ref: String,
    /// `sha256:<config digest>`.
    pub image_id: String,
    pub config: ContainerConfig,
    pub host_config: HostConfig,
    pub state: State,
    /// The container's user namespace maps, when it has one.
    pub maps: Option<UsernsMaps>,
    pub mounts: Vec<MountPoint>,
    /// The image's layer chain ids, bottom first: what the root file system is made of.
    pub layers: Vec<String>,
    /// The command line that runs: entrypoint + cmd.
    pub path: String,
    pub args: Vec<String>,
}

impl ContainerRecord {
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state.status, Status::Running | Status::Paused)
    }

    /// The container's user namespace uses `maps`; `None` means host ids.
    pub fn userns(&self) -> Option<&UsernsMaps> {
        self.maps.as_ref()
    }
}
