//! Operations on a created container that change neither its process nor its files:
//! rename, pause/unpause (the freezer), update (live limits) and the usage figures of
//! `stats`. The cgroup work is the runtime's ([`berth_runtime::Runtime`]); this module keeps
//! the container's record in step.

use std::time::SystemTime;

pub use berth_runtime::CgroupStats;
use berth_runtime::Runtime;
use serde::Deserialize;

use crate::container::{ContainerRecord, Status};
use crate::engine::Entry;
use crate::error::{EngineError, Result};
use crate::serde_util::null_default;
use crate::signal::parse_signal;
use crate::{names, restart, Engine};

/// One reading of a container's usage (what one `stats` JSON object is made of).
#[derive(Debug, Clone)]
pub struct StatsSample {
    pub read: SystemTime,
    pub cgroup: CgroupStats,
    /// The host's cpu time (all cpus, all states) in nanoseconds, as Docker's
    /// `system_cpu_usage`: the denominator of the cpu percentage.
    pub system_cpu: u64,
    pub online_cpus: u32,
    /// The host's memory: the limit shown when the container has none.
    pub host_memory: u64,
    pub id: String,
    /// With the leading slash, as Docker's `name`.
    pub name: String,
}

/// The body of `POST /containers/{id}/update`: the limits berth applies (Docker's names).
/// Zero means "leave as is", as in Docker.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateRequest {
    #[serde(deserialize_with = "null_default")]
    pub memory: i64,
    #[serde(deserialize_with = "null_default")]
    pub memory_swap: i64,
    #[serde(rename = "NanoCpus", deserialize_with = "null_default")]
    pub nano_cpus: i64,
    #[serde(deserialize_with = "null_default")]
    pub cpu_quota: i64,
    #[serde(deserialize_with = "null_default")]
    pub cpu_period: i64,
    #[serde(deserialize_with = "null_default")]
    pub cpu_shares: i64,
    pub pids_limit: Option<i64>,
}

/// The cfs period berth uses for `--cpus` (Docker's).
const NANO_CPU_PERIOD: i64 = 100_000;

impl UpdateRequest {
    /// The OCI resources to write, or an error naming the bad value.
    fn resources(&self) -> Result<oci_spec::runtime::LinuxResources> {
        use oci_spec::runtime::{
            LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
        };
        let bad = |e: oci_spec::OciSpecError| EngineError::System(e.to_string());
        if self.nano_cpus > 0 && (self.cpu_quota > 0 || self.cpu_period > 0) {
            return Err(EngineError::InvalidParameter(
                "Conflicting options: Nano CPUs and CPU Period/Quota cannot both be set".into(),
            ));
        }
        if self.memory != 0 && self.memory < 6 * 1024 * 1024 {
            return Err(EngineError::InvalidParameter(
                "Minimum memory limit allowed is 6MB".into(),
            ));
        }
        if self.memory_swap > 0 && self.memory > 0 && self.memory_swap < self.memory {
            return Err(EngineError::InvalidParameter(
                "Minimum memoryswap limit should be larger than memory limit, see usage".into(),
            ));
        }
        let mut res = LinuxResourcesBuilder::default();
        if self.memory > 0 || self.memory_swap != 0 {
            let mut m = LinuxMemoryBuilder::default();
            if self.memory > 0 {
                m = m.limit(self.memory);
            }
            if self.memory_swap != 0 {
                m = m.swap(self.memory_swap);
            }
            res = res.memory(m.build().map_err(bad)?);
        }
        let mut cpu = LinuxCpuBuilder::default();
        let mut cpu_set = false;
        if self.cpu_shares > 0 {
            cpu = cpu.shares(self.cpu_shares as u64);
            cpu_set = true;
        }
        if self.nano_cpus > 0 {
            cpu = cpu
                .period(NANO_CPU_PERIOD as u64)
                .quota(self.nano_cpus * NANO_CPU_PERIOD / 1_000_000_000);
            cpu_set = true;
        }
        if self.cpu_period > 0 {
            cpu = cpu.period(self.cpu_period as u64);
            cpu_set = true;
        }
        if self.cpu_quota != 0 {
            cpu = cpu.quota(self.cpu_quota);
            cpu_set = true;
        }
        if cpu_set {
            res = res.cpu(cpu.build().map_err(bad)?);
        }
        if let Some(p) = self.pids_limit.filter(|p| *p != 0) {
            res = res.pids(LinuxPidsBuilder::default().limit(p).build().map_err(bad)?);
        }
        res.build().map_err(bad)
    }
}

/// The container's own stop signal (`--stop-signal`, or the image's STOPSIGNAL), if any.
pub(crate) fn stop_signal(rec: &ContainerRecord) -> Result<Option<i32>> {
    match rec.config.stop_signal.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Ok(Some(parse_signal(s)?)),
        None => Ok(None),
    }
}

impl Engine {
    pub(crate) fn runtime(&self) -> Runtime {
        Runtime::new(self.inner.cfg.exec_root.join("runtime"))
    }

    /// The entry of a running (or, with `paused_ok`, paused) container.
    fn running_entry(&self, name_or_id: &str, paused_ok: bool) -> Result<std::sync::Arc<Entry>> {
        let entry = self.lookup(name_or_id)?;
        let st = entry.record().state.status;
        match st {
            Status::Running => Ok(entry),
            Status::Paused if paused_ok => Ok(entry),
            Status::Paused => Err(EngineError::Conflict(format!(
                "Container {} is paused, unpause the container first",
                entry.id
            ))),
            _ => Err(EngineError::Conflict(format!(
                "Container {} is not running",
                entry.id
            ))),
        }
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> berth_runtime::Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| EngineError::System(e.to_string()))?
            .map_err(|e| EngineError::System(e.to_string()))
    }

    /// Whether signal `sig`, sent to the container, must thaw it (moby's killWithSignal):
    /// when it is paused and `sig` is one that ends its run (SIGKILL, its stop signal, or any
    /// signal when it has none; [`restart::signal_cancels`]). Another signal stays pending
    /// in the frozen processes until the user unpauses them.
    pub(crate) fn signal_thaws(&self, rec: &ContainerRecord, sig: i32) -> Result<bool> {
        if rec.state.status != Status::Paused {
            return Ok(false);
        }
        Ok(restart::signal_cancels(sig, stop_signal(rec)?))
    }

    /// Thaws a paused container just sent a signal that ends it, so that the signal is
    /// delivered (a frozen process sees none, SIGKILL included under the v1 freezer). As
    /// moby on the runtime's resume: running again, with an `unpause` event.
    pub(crate) async fn thaw_for_signal(&self, entry: &Entry) {
        let (rt, id) = (self.runtime(), entry.id.clone());
        if let Err(e) = Self::blocking(move || rt.resume(&id)).await {
            tracing::warn!(id = %entry.id, error = %e, "thawing a signalled paused container");
            return;
        }
        // It may have exited meanwhile: then it stays exited.
        let thawed = entry.update(|r| {
            let paused = r.state.status == Status::Paused;
            if paused {
                r.state.status = Status::Running;
            }
            paused
        });
        if matches!(thawed, Ok(true)) {
            self.emit(crate::events::Event::container(&entry.record(), "unpause"));
        }
    }

    /// Renames a container; Docker's name rules, and a conflict if the name is taken.
    pub fn rename(&self, name_or_id: &str, new_name: &str) -> Result<()> {
        let new = names::validate(new_name)?;
        let entry = self.lookup(name_or_id)?;
        // Hold the map so that a create cannot claim the name meanwhile.
        let map = self.containers();
        let old = entry.record().name;
        if old == new {
            return Err(EngineError::InvalidParameter(
                "Renaming a container with the same name as its current name".into(),
            ));
        }
        if let Some(other) = map
            .values()
            .find(|e| e.id != entry.id && e.record().name == new)
        {
            return Err(EngineError::Conflict(format!(
                "Conflict. The container name \"/{new}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                other.id
            )));
        }
        entry.update(|r| r.name = new)?;
        let ev = crate::events::Event::container(&entry.record(), "rename");
        self.emit(ev.attr("oldName", format!("/{old}")));
        Ok(())
    }

    /// Freezes every process of a running container.
    pub async fn pause(&self, name_or_id: &str) -> Result<()> {
        let entry = self.running_entry(name_or_id, false)?;
        let (rt, id) = (self.runtime(), entry.id.clone());
        Self::blocking(move || rt.pause(&id)).await?;
        entry.update(|r| r.state.status = Status::Paused)?;
        self.emit(crate::events::Event::container(&entry.record(), "pause"));
        Ok(())
    }

    /// Thaws a paused container.
    pub async fn unpause(&self, name_or_id: &str) -> Result<()> {
        let entry = self.lookup(name_or_id)?;
        if entry.record().state.status != Status::Paused {
            return Err(EngineError::Conflict(format!(
                "Container {} is not paused",
                entry.id
            )));
        }
        let (rt, id) = (self.runtime(), entry.id.clone());
        Self::blocking(move || rt.resume(&id)).await?;
        entry.update(|r| {
            if r.state.status == Status::Paused {
                r.state.status = Status::Running;
            }
        })?;
        self.emit(crate::events::Event::container(&entry.record(), "unpause"));
        Ok(())
    }

    /// Writes new limits to a running container's cgroups and keeps them in its
    /// HostConfig; a stopped container gets them at its next start. Returns warnings.
    pub async fn update(&self, name_or_id: &str, req: UpdateRequest) -> Result<Vec<String>> {
        let res = req.resources()?;
        let entry = self.lookup(name_or_id)?;
        if entry.record().is_running() {
            let (rt, id) = (self.runtime(), entry.id.clone());
            Self::blocking(move || rt.update(&id, &res)).await?;
        }
        entry.update(|r| {
            let h = &mut r.host_config;
            if req.memory > 0 {
                h.memory = req.memory;
            }
            if req.memory_swap != 0 {
                h.memory_swap = req.memory_swap;
            }
            if req.nano_cpus > 0 {
                h.nano_cpus = req.nano_cpus;
                h.cpu_quota = 0;
                h.cpu_period = 0;
            }
            if req.cpu_quota != 0 {
                h.cpu_quota = req.cpu_quota;
                h.nano_cpus = 0;
            }
            if req.cpu_period > 0 {
                h.cpu_period = req.cpu_period;
                h.nano_cpus = 0;
            }
            if req.cpu_shares > 0 {
                h.cpu_shares = req.cpu_shares;
            }
            if let Some(p) = req.pids_limit.filter(|p| *p != 0) {
                h.pids_limit = Some(p);
            }
        })?;
        Ok(Vec::new())
    }

    /// One reading of a running container's usage.
    pub async fn stats_sample(&self, name_or_id: &str) -> Result<StatsSample> {
        let entry = self.running_entry(name_or_id, true)?;
        let rec = entry.record();
        let (rt, id) = (self.runtime(), entry.id.clone());
        let cgroup = Self::blocking(move || rt.stats(&id)).await?;
        Ok(StatsSample {
            read: SystemTime::now(),
            cgroup,
            system_cpu: host_cpu_ns().unwrap_or(0),
            online_cpus: online_cpus(),
            host_memory: host_memory().unwrap_or(0),
            id: rec.id.clone(),
            name: format!("/{}", rec.name),
        })
    }
}

/// The host's cpu time in nanoseconds: the `cpu` line of /proc/stat (ticks of USER_HZ).
fn host_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: u64 = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    Some(ticks * (1_000_000_000 / 100))
}

fn online_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// MemTotal of /proc/meminfo, in bytes.
fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_resources() {
        let r = UpdateRequest {
            memory: 64 << 20,
            nano_cpus: 500_000_000,
            pids_limit: Some(10),
            ..Default::default()
        }
        .resources()
        .unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
        let cpu = r.cpu().as_ref().unwrap();
        assert_eq!((cpu.quota(), cpu.period()), (Some(50_000), Some(100_000)));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 10);
        let conflict = UpdateRequest {
            nano_cpus: 1,
            cpu_quota: 1,
            ..Default::default()
        };
        assert!(conflict.resources().is_err());
        let small = UpdateRequest {
            memory: 1024,
            ..Default::default()
        };
        assert!(small.resources().is_err());
    }

    #[test]
    fn host_figures() {
        assert!(host_cpu_ns().unwrap() > 0);
        assert!(host_memory().unwrap() > 0);
        assert!(online_cpus() >= 1);
    }
}
