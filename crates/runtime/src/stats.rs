//! What the engine asks of a running container's cgroups after it starts: usage figures
//! (`docker stats`), the process list (`docker top`), freezing (`pause`/`unpause`) and new
//! limits (`docker update`). The runtime owns the cgroup layout; callers name a container.
//!
//! Each function finds the container's directories in its [`Placement`]: on v1 one per
//! controller (`<root>/<ctrl>/...`), on v2 (pure or the hybrid's unified tree) the cgroup2
//! directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use crate::cgroups::{self, Layout, Placement};
use crate::error::{Error, Result};
use crate::state::Record;
use crate::Runtime;

/// A container's usage, read from its cgroups. Times in nanoseconds, sizes in bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    pub cpu_total: u64,
    pub cpu_user: u64,
    pub cpu_system: u64,
    /// Per-cpu usage (v1 only; v2 does not account per cpu).
    pub percpu: Vec<u64>,
    pub memory_usage: u64,
    /// `None`: no limit.
    pub memory_limit: Option<u64>,
    /// memory.stat, as the kernel names its keys.
    pub memory_stat: BTreeMap<String, u64>,
    pub pids_current: u64,
    /// `None`: no limit.
    pub pids_limit: Option<u64>,
}

impl Runtime {
    fn record(&self, id: &str) -> Result<Record> {
        let dir = self.dir(id)?;
        Record::load(&dir, id)
    }

    /// The container's usage figures.
    pub fn stats(&self, id: &str) -> Result<CgroupStats> {
        let rec = self.record(id)?;
        Ok(read_stats(&self.cgroups, &rec.cgroups))
    }

    /// The pids of every process in the container (host pid namespace).
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        Ok(cgroups::procs(&self.record(id)?.cgroups))
    }

    /// Freezes every process of the container (runc's `pause`); returns once frozen.
    pub fn pause(&self, id: &str) -> Result<()> {
        freeze(&self.cgroups, &self.record(id)?.cgroups, true)
    }

    /// Thaws a paused container (runc's `resume`).
    pub fn resume(&self, id: &str) -> Result<()> {
        freeze(&self.cgroups, &self.record(id)?.cgroups, false)
    }

    /// Whether the container's cgroup is frozen.
    pub fn is_paused(&self, id: &str) -> Result<bool> {
        Ok(frozen(&self.cgroups, &self.record(id)?.cgroups))
    }

    /// Writes new limits to the live cgroups (runc's `update`). Only the limits `res` sets
    /// change.
    pub fn update(&self, id: &str, res: &LinuxResources) -> Result<()> {
        update(&self.cgroups, &self.record(id)?.cgroups, res)
    }
}

/// The placement's directory for v1 controller `ctrl`.
fn v1_dir<'a>(root: &Path, pl: &'a Placement, ctrl: &str) -> Option<&'a PathBuf> {
    let base = root.join(ctrl);
    pl.dirs.iter().find(|d| d.starts_with(&base))
}

/// The placement's cgroup2 directory (pure v2, or the hybrid's unified tree).
fn v2_dir<'a>(layout: &Layout, pl: &'a Placement) -> Option<&'a PathBuf> {
    match layout {
        Layout::V2 { root } => pl.dirs.iter().find(|d| d.starts_with(root)),
        Layout::V1 { unified, .. } => {
            let u = unified.as_ref()?;
            pl.dirs.iter().find(|d| d.starts_with(u))
        }
    }
}

fn read(dir: &Path, file: &str) -> Option<String> {
    fs::read_to_string(dir.join(file)).ok()
}

fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    read(dir, file)?.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat, cpuacct.stat).
fn key_values(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// A limit file: "max" or a v1 "unlimited" value (close to i64::MAX) mean none.
fn limit(text: Option<String>) -> Option<u64> {
    let t = text?;
    let v: u64 = t.trim().parse().ok()?;
    (v < (1 << 62)).then_some(v)
}

/// Clock ticks per second of cpuacct.stat (USER_HZ, 100 on Linux).
const USER_HZ: u64 = 100;

fn read_stats(layout: &Layout, pl: &Placement) -> CgroupStats {
    let mut s = CgroupStats::default();
    match layout {
        Layout::V1 { root, .. } => {
            if let Some(d) = v1_dir(root, pl, "cpuacct") {
                s.cpu_total = read_u64(d, "cpuacct.usage").unwrap_or(0);
                let st = key_values(&read(d, "cpuacct.stat").unwrap_or_default());
                let ns = |k: &str| st.get(k).copied().unwrap_or(0) * (1_000_000_000 / USER_HZ);
                s.cpu_user = ns("user");
                s.cpu_system = ns("system");
                s.percpu = read(d, "cpuacct.usage_percpu")
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect();
            }
            if let Some(d) = v1_dir(root, pl, "memory") {
                s.memory_usage = read_u64(d, "memory.usage_in_bytes").unwrap_or(0);
                s.memory_limit = limit(read(d, "memory.limit_in_bytes"));
                s.memory_stat = key_values(&read(d, "memory.stat").unwrap_or_default());
            }
            if let Some(d) = v1_dir(root, pl, "pids") {
                s.pids_current = read_u64(d, "pids.current").unwrap_or(0);
                s.pids_limit = limit(read(d, "pids.max"));
            }
        }
        Layout::V2 { .. } => {
            let Some(d) = v2_dir(layout, pl) else {
                return s;
            };
            let st = key_values(&read(d, "cpu.stat").unwrap_or_default());
            let ns = |k: &str| st.get(k).copied().unwrap_or(0) * 1000;
            s.cpu_total = ns("usage_usec");
            s.cpu_user = ns("user_usec");
            s.cpu_system = ns("system_usec");
            s.memory_usage = read_u64(d, "memory.current").unwrap_or(0);
            s.memory_limit = limit(read(d, "memory.max"));
            s.memory_stat = key_values(&read(d, "memory.stat").unwrap_or_default());
            s.pids_current = read_u64(d, "pids.current").unwrap_or(0);
            s.pids_limit = limit(read(d, "pids.max"));
        }
    }
    if s.pids_current == 0 {
        // No pids controller: count the processes.
        s.pids_current = cgroups::procs(pl).len() as u64;
    }
    s
}

fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(|e| Error::Cgroup {
        reason: format!("write `{value}`: {e}"),
        path,
    })
}

/// How long to wait for the kernel to report the cgroup frozen.
const FREEZE_WAIT: Duration = Duration::from_secs(10);

/// The freezer to use: the v1 freezer controller when the container is in it, else
/// cgroup2's `cgroup.freeze` (pure v2, or the hybrid's unified tree).
enum Freezer<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

fn freezer<'a>(layout: &Layout, pl: &'a Placement) -> Result<Freezer<'a>> {
    if let Layout::V1 { root, .. } = layout {
        if let Some(d) = v1_dir(root, pl, "freezer") {
            return Ok(Freezer::V1(d));
        }
    }
    match v2_dir(layout, pl) {
        Some(d) => Ok(Freezer::V2(d)),
        None => Err(Error::Cgroup {
            path: pl.dirs.first().cloned().unwrap_or_default(),
            reason: "the container is in no freezer cgroup (neither the v1 freezer controller nor cgroup2); it cannot be paused".into(),
        }),
    }
}

fn frozen(layout: &Layout, pl: &Placement) -> bool {
    match freezer(layout, pl) {
        Ok(Freezer::V1(d)) => read(d, "freezer.state").is_some_and(|s| s.trim() == "FROZEN"),
        Ok(Freezer::V2(d)) => {
            read(d, "cgroup.events").is_some_and(|s| s.lines().any(|l| l.trim() == "frozen 1"))
        }
        Err(_) => false,
    }
}

fn freeze(layout: &Layout, pl: &Placement, on: bool) -> Result<()> {
    let f = freezer(layout, pl)?;
    match &f {
        Freezer::V1(d) => write(d, "freezer.state", if on { "FROZEN" } else { "THAWED" })?,
        Freezer::V2(d) => write(d, "cgroup.freeze", if on { "1" } else { "0" })?,
    }
    // Freezing is asynchronous: wait until the kernel says every task is stopped, so that
    // a caller reporting "paused" is telling the truth.
    let deadline = Instant::now() + FREEZE_WAIT;
    while frozen(layout, pl) != on {
        if Instant::now() >= deadline {
            let dir = match f {
                Freezer::V1(d) | Freezer::V2(d) => d.to_path_buf(),
            };
            return Err(Error::Cgroup {
                path: dir,
                reason: format!(
                    "the kernel did not report the cgroup {} within {FREEZE_WAIT:?}",
                    if on { "frozen" } else { "thawed" }
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Thaws the container if it is frozen, ignoring errors: used before killing it, since a
/// task frozen by the v1 freezer does not die of SIGKILL until thawed.
pub(crate) fn thaw_quietly(layout: &Layout, pl: &Placement) {
    if frozen(layout, pl) {
        let _ = freeze(layout, pl, false);
    }
}

fn update(layout: &Layout, pl: &Placement, res: &LinuxResources) -> Result<()> {
    let missing = |what: &str| Error::Cgroup {
        path: pl.dirs.first().cloned().unwrap_or_default(),
        reason: format!(
            "the container is not in a {what} cgroup; recreate it to set {what} limits"
        ),
    };
    match layout {
        Layout::V1 { root, .. } => {
            for (ctrl, writes) in cgroups::v1_writes(res) {
                let d = v1_dir(root, pl, ctrl).ok_or_else(|| missing(ctrl))?;
                for (file, value) in writes {
                    write_v1(d, file, &value)?;
                }
            }
        }
        Layout::V2 { .. } => {
            let writes = cgroups::v2_writes(res);
            if writes.is_empty() {
                return Ok(());
            }
            let d = v2_dir(layout, pl).ok_or_else(|| missing("cgroup2"))?;
            for (file, value) in writes {
                write(d, file, &value)?;
            }
        }
    }
    Ok(())
}

/// A v1 write; memory.limit_in_bytes may not go above memory.memsw.limit_in_bytes, so a
/// raise that the kernel refuses is retried after raising memsw to the same value first
/// (the memsw write that follows in the list then sets the value asked for).
fn write_v1(dir: &Path, file: &str, value: &str) -> Result<()> {
    let r = write(dir, file, value);
    if r.is_err()
        && file == "memory.limit_in_bytes"
        && dir.join("memory.memsw.limit_in_bytes").exists()
    {
        write(dir, "memory.memsw.limit_in_bytes", value)?;
        return write(dir, file, value);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_v1() -> (PathBuf, Layout, Placement) {
        let t = std::env::temp_dir().join(format!(
            "berth-stats-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&t);
        let mut pl = Placement::default();
        for c in ["cpuacct", "memory", "pids", "freezer"] {
            let d = t.join(c).join("berth-runtime/x");
            fs::create_dir_all(&d).unwrap();
            pl.dirs.push(d);
        }
        let l = Layout::V1 {
            root: t.clone(),
            unified: None,
        };
        (t, l, pl)
    }

    #[test]
    fn v1_figures() {
        let (t, l, pl) = fake_v1();
        let d = |c: &str| t.join(c).join("berth-runtime/x");
        fs::write(d("cpuacct").join("cpuacct.usage"), "5000\n").unwrap();
        fs::write(d("cpuacct").join("cpuacct.stat"), "user 2\nsystem 1\n").unwrap();
        fs::write(d("cpuacct").join("cpuacct.usage_percpu"), "3000 2000 \n").unwrap();
        fs::write(d("memory").join("memory.usage_in_bytes"), "4096\n").unwrap();
        fs::write(
            d("memory").join("memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        fs::write(
            d("memory").join("memory.stat"),
            "cache 10\ntotal_inactive_file 7\n",
        )
        .unwrap();
        fs::write(d("pids").join("pids.current"), "3\n").unwrap();
        fs::write(d("pids").join("pids.max"), "max\n").unwrap();
        let s = read_stats(&l, &pl);
        assert_eq!(s.cpu_total, 5000);
        assert_eq!(s.cpu_user, 20_000_000);
        assert_eq!(s.cpu_system, 10_000_000);
        assert_eq!(s.percpu, vec![3000, 2000]);
        assert_eq!(s.memory_usage, 4096);
        assert_eq!(s.memory_limit, None);
        assert_eq!(s.memory_stat.get("total_inactive_file"), Some(&7));
        assert_eq!(s.pids_current, 3);
        assert_eq!(s.pids_limit, None);
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn v2_figures() {
        let t = std::env::temp_dir().join(format!("berth-stats2-{}", std::process::id()));
        let d = t.join("berth-runtime/x");
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("cpu.stat"),
            "usage_usec 7\nuser_usec 5\nsystem_usec 2\n",
        )
        .unwrap();
        fs::write(d.join("memory.current"), "8192\n").unwrap();
        fs::write(d.join("memory.max"), "1048576\n").unwrap();
        fs::write(d.join("pids.current"), "2\n").unwrap();
        fs::write(d.join("pids.max"), "10\n").unwrap();
        let pl = Placement {
            dirs: vec![d.clone()],
            created: vec![],
        };
        let s = read_stats(&Layout::V2 { root: t.clone() }, &pl);
        assert_eq!((s.cpu_total, s.cpu_user, s.cpu_system), (7000, 5000, 2000));
        assert_eq!((s.memory_usage, s.memory_limit), (8192, Some(1048576)));
        assert_eq!((s.pids_current, s.pids_limit), (2, Some(10)));
        fs::remove_dir_all(&t).unwrap();
    }
}
