//! cgroups: where a container's processes go and the limits put on them.
//!
//! Two layouts:
//! - v1 (and "hybrid", as on these machines: v1 controllers under `/sys/fs/cgroup/<ctrl>`
//!   plus cgroup2 at `/sys/fs/cgroup/unified`). Limits go to the v1 controllers the config
//!   uses; the unified hierarchy, which holds no controllers here, tracks the processes.
//! - pure v2 (cgroup2 at `/sys/fs/cgroup`): one directory, controllers enabled in the
//!   ancestors' `cgroup.subtree_control`. Device rules are an eBPF program attached to the
//!   container's directory (see `devices_bpf`).
//!
//! The root is a parameter so that unit tests can work on a fake tree in a tempdir.

use std::fs;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the cgroup file systems are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// v1 controllers under `root/<controller>`, and cgroup2 at `unified` when hybrid.
    V1 {
        root: PathBuf,
        unified: Option<PathBuf>,
    },
    /// Pure cgroup2 at `root`.
    V2 { root: PathBuf },
}

const CGROUP2_SUPER_MAGIC: i64 = 0x63677270;

impl Layout {
    /// Whether the first directory of a [`Placement`] is in a cgroup2 hierarchy (which
    /// clone3 can put a child into directly).
    pub fn first_is_v2(&self) -> bool {
        matches!(
            self,
            Layout::V2 { .. }
                | Layout::V1 {
                    unified: Some(_),
                    ..
                }
        )
    }

    /// The host's layout, from the file system type of /sys/fs/cgroup.
    pub fn detect() -> Layout {
        let root = PathBuf::from("/sys/fs/cgroup");
        if let Ok(st) = nix::sys::statfs::statfs(&root) {
            if st.filesystem_type().0 == CGROUP2_SUPER_MAGIC {
                return Layout::V2 { root };
            }
        }
        let unified = root.join("unified");
        let unified = unified.join("cgroup.procs").exists().then_some(unified);
        Layout::V1 { root, unified }
    }
}

/// Where a container's processes were put: what `join`, `procs` and `remove` work on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Every cgroup directory the container's processes join.
    pub dirs: Vec<PathBuf>,
    /// Directories this runtime created, parents first; removed (deepest first) on delete.
    pub created: Vec<PathBuf>,
}

/// The cgroup path for a container: `linux.cgroupsPath` if set, else `berth-runtime/<id>`;
/// always taken relative to each hierarchy's root.
pub fn container_path(cgroups_path: Option<&Path>, id: &str) -> Result<PathBuf> {
    let Some(p) = cgroups_path else {
        return Ok(PathBuf::from("berth-runtime").join(id));
    };
    let text = p.to_string_lossy();
    if text.contains(':') {
        return Err(Error::InvalidConfig(format!(
            "linux.cgroupsPath `{text}` is a systemd slice path; berth-runtime drives cgroupfs: give a path like /berth/{id}"
        )));
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            _ => {
                return Err(Error::InvalidConfig(format!(
                    "linux.cgroupsPath `{text}` may not contain `..`"
                )))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(Error::InvalidConfig(
            "linux.cgroupsPath is `/`: a container needs its own cgroup".into(),
        ));
    }
    Ok(out)
}

/// Creates the container's cgroups under `layout`, writes the limits of `res`, and returns
/// where its processes go. On error, removes what it created.
pub fn setup(layout: &Layout, rel: &Path, res: Option<&LinuxResources>) -> Result<Placement> {
    let mut pl = Placement::default();
    let r = setup_inner(layout, rel, res, &mut pl);
    if r.is_err() {
        let _ = remove(&pl, Duration::ZERO);
    }
    r.map(|_| pl)
}

fn setup_inner(
    layout: &Layout,
    rel: &Path,
    res: Option<&LinuxResources>,
    pl: &mut Placement,
) -> Result<()> {
    match layout {
        Layout::V1 { root, unified } => {
            if let Some(u) = unified {
                let dir = make_dirs(u, rel, pl, None)?;
                pl.dirs.push(dir);
            }
            let v1 = res.map(v1_writes).unwrap_or_default();
            for (ctrl, writes) in v1 {
                let croot = root.join(ctrl);
                if !croot.exists() {
                    return Err(Error::Cgroup {
                        path: croot,
                        reason: format!("the config sets {ctrl} limits but the {ctrl} controller is not mounted"),
                    });
                }
                let copy: Option<&[&str]> =
                    (ctrl == "cpuset").then_some(&["cpuset.cpus", "cpuset.mems"]);
                let dir = make_dirs(&croot, rel, pl, copy)?;
                for (file, value) in writes {
                    write_file(&dir, file, &value)?;
                }
                pl.dirs.push(dir);
            }
            join_accounting(root, rel, pl)
        }
        Layout::V2 { root } => {
            let writes = res.map(v2_writes).unwrap_or_default();
            let mut ctrls: Vec<&str> = writes
                .iter()
                .map(|(f, _)| f.split('.').next().unwrap_or(""))
                .collect();
            ctrls.sort_unstable();
            ctrls.dedup();
            if !ctrls.is_empty() {
                // Each ancestor must hand the controllers down to its children.
                let enable: String = ctrls.iter().map(|c| format!("+{c} ")).collect();
                let mut dir = root.clone();
                for c in rel.parent().into_iter().flat_map(|p| p.components()) {
                    write_file(&dir, "cgroup.subtree_control", enable.trim_end())?;
                    dir.push(c);
                    if !dir.exists() {
                        create_dir(&dir, pl)?;
                    }
                }
                write_file(&dir, "cgroup.subtree_control", enable.trim_end())?;
            }
            let dir = make_dirs(root, rel, pl, None)?;
            for (file, value) in writes {
                write_file(&dir, file, &value)?;
            }
            pl.dirs.push(dir.clone());
            if let Some(rules) = res.and_then(device_rules) {
                attach_device_program(&dir, &rules)?;
            }
            Ok(())
        }
    }
}

/// v1 controllers a container always joins when mounted, limits or not: they give its
/// usage figures (`stats`), freezing (`pause`) and later limits (`update`).
const V1_ALWAYS: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "freezer"];

fn join_accounting(root: &Path, rel: &Path, pl: &mut Placement) -> Result<()> {
    for ctrl in V1_ALWAYS {
        let croot = root.join(ctrl);
        if pl.dirs.iter().any(|d| d.starts_with(&croot)) || !croot.join("cgroup.procs").exists() {
            continue;
        }
        let dir = make_dirs(&croot, rel, pl, None)?;
        pl.dirs.push(dir);
    }
    Ok(())
}

fn create_dir(dir: &Path, pl: &mut Placement) -> Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => {
            pl.created.push(dir.to_path_buf());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::Cgroup {
            path: dir.into(),
            reason: format!("mkdir: {e}"),
        }),
    }
}

/// mkdir -p `root/rel`, recording what it created. For cpuset, a new directory starts with
/// empty cpus and mems, which refuses tasks: copy the parent's values down.
fn make_dirs(
    root: &Path,
    rel: &Path,
    pl: &mut Placement,
    copy: Option<&[&str]>,
) -> Result<PathBuf> {
    let mut dir = root.to_path_buf();
    for c in rel.components() {
        let parent = dir.clone();
        dir.push(c);
        let before = pl.created.len();
        create_dir(&dir, pl)?;
        if pl.created.len() > before {
            for f in copy.unwrap_or(&[]) {
                let v = fs::read_to_string(parent.join(f)).unwrap_or_default();
                if !v.trim().is_empty() {
                    write_file(&dir, f, v.trim())?;
                }
            }
        }
    }
    Ok(dir)
}

fn write_file(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(|e| Error::Cgroup {
        reason: format!("write `{value}`: {e}"),
        path,
    })
}

/// The v1 files to write, grouped by controller, in the order the kernel needs them.
pub(crate) fn v1_writes(res: &LinuxResources) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let mut out = Vec::new();
    if let Some(m) = res.memory() {
        let mut w = Vec::new();
        if let Some(l) = m.limit() {
            w.push(("memory.limit_in_bytes", l.to_string()));
        }
        if let Some(r) = m.reservation() {
            w.push(("memory.soft_limit_in_bytes", r.to_string()));
        }
        if let Some(s) = m.swap() {
            // OCI's swap is memory+swap, which is what memsw means.
            w.push(("memory.memsw.limit_in_bytes", s.to_string()));
        }
        if let Some(s) = m.swappiness() {
            w.push(("memory.swappiness", s.to_string()));
        }
        if !w.is_empty() {
            out.push(("memory", w));
        }
    }
    if let Some(c) = res.cpu() {
        let mut w = Vec::new();
        if let Some(s) = c.shares() {
            w.push(("cpu.shares", s.to_string()));
        }
        // The period first: a quota is checked against the current period.
        if let Some(p) = c.period() {
            w.push(("cpu.cfs_period_us", p.to_string()));
        }
        if let Some(q) = c.quota() {
            w.push(("cpu.cfs_quota_us", q.to_string()));
        }
        if !w.is_empty() {
            out.push(("cpu", w));
        }
        let mut s = Vec::new();
        if let Some(cpus) = c.cpus() {
            s.push(("cpuset.cpus", cpus.clone()));
        }
        if let Some(mems) = c.mems() {
            s.push(("cpuset.mems", mems.clone()));
        }
        if !s.is_empty() {
            out.push(("cpuset", s));
        }
    }
    if let Some(p) = res.pids() {
        let v = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".into()
        };
        out.push(("pids", vec![("pids.max", v)]));
    }
    if let Some(w) = res.block_io().as_ref().and_then(|b| b.weight()) {
        out.push(("blkio", vec![("blkio.bfq.weight", w.to_string())]));
    }
    if let Some(rules) = device_rules(res) {
        let w = rules
            .iter()
            .map(|d| {
                let file = if d.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                (file, device_rule(d))
            })
            .collect();
        out.push(("devices", w));
    }
    out
}

/// The config's device rules followed by the devices every container may use; none when
/// the config gives no rules (the cgroup then keeps its parent's).
fn device_rules(res: &LinuxResources) -> Option<Vec<LinuxDeviceCgroup>> {
    let devs = res.devices().as_ref().filter(|d| !d.is_empty())?;
    Some(devs.iter().cloned().chain(default_allowed()).collect())
}

/// Loads the device program for `rules` and attaches it to the cgroup2 directory `dir`.
/// The attachment lives as long as the cgroup: the program's descriptor can close.
fn attach_device_program(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let fail = |reason: String| Error::Cgroup {
        path: dir.to_path_buf(),
        reason,
    };
    let prog = crate::syscall::bpf_load_cgroup_device(&crate::devices_bpf::program(rules))
        .map_err(|(errno, log)| {
            fail(format!(
                "loading the device rules as a BPF program: {errno} (the kernel needs CONFIG_CGROUP_BPF; verifier: {log})"
            ))
        })?;
    let cg = fs::File::open(dir).map_err(|e| fail(format!("open: {e}")))?;
    crate::syscall::bpf_attach_cgroup_device(cg.as_fd(), prog.as_fd())
        .map_err(|e| fail(format!("attaching the device rules' BPF program: {e}")))
}

/// Devices every container may use (runc allows the same set): creating any device node
/// (using one is another matter), null, zero, full, random, urandom, tty, console, ptmx and
/// the pty slaves.
fn default_allowed() -> Vec<LinuxDeviceCgroup> {
    let rule = |major: i64, minor: Option<i64>| {
        let mut d = LinuxDeviceCgroup::default();
        d.set_allow(true);
        d.set_typ(Some(LinuxDeviceType::C));
        d.set_major(Some(major));
        d.set_minor(minor);
        d.set_access(Some("rwm".into()));
        d
    };
    let mknod = |typ| {
        let mut d = LinuxDeviceCgroup::default();
        d.set_allow(true);
        d.set_typ(Some(typ));
        d.set_access(Some("m".into()));
        d
    };
    vec![
        mknod(LinuxDeviceType::C),
        mknod(LinuxDeviceType::B),
        rule(1, Some(3)),
        rule(1, Some(5)),
        rule(1, Some(7)),
        rule(1, Some(8)),
        rule(1, Some(9)),
        rule(5, Some(0)),
        rule(5, Some(1)),
        rule(5, Some(2)),
        rule(136, None),
    ]
}

/// A devices.allow/deny line: `type major:minor access`.
fn device_rule(d: &LinuxDeviceCgroup) -> String {
    let t = match d.typ() {
        Some(LinuxDeviceType::B) => "b",
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => "c",
        _ => "a",
    };
    let num = |n: Option<i64>| {
        n.filter(|n| *n >= 0)
            .map_or("*".to_string(), |n| n.to_string())
    };
    let access = d.access().clone().unwrap_or_else(|| "rwm".into());
    format!("{t} {}:{} {access}", num(d.major()), num(d.minor()))
}

/// The v2 files to write.
pub(crate) fn v2_writes(res: &LinuxResources) -> Vec<(&'static str, String)> {
    let mut w = Vec::new();
    if let Some(m) = res.memory() {
        let limit = m.limit();
        if let Some(l) = limit {
            w.push(("memory.max", max_or(l)));
        }
        if let Some(r) = m.reservation() {
            w.push(("memory.low", max_or(r)));
        }
        if let Some(s) = m.swap() {
            // v2 limits swap alone; OCI's value is memory+swap.
            let v = match limit {
                _ if s < 0 => "max".to_string(),
                Some(l) if l > 0 => (s - l).max(0).to_string(),
                _ => s.to_string(),
            };
            w.push(("memory.swap.max", v));
        }
    }
    if let Some(c) = res.cpu() {
        if let Some(s) = c.shares() {
            // The conversion runc and crun use from shares (2..262144) to weight (1..10000).
            let s = s.clamp(2, 262144);
            w.push(("cpu.weight", (1 + ((s - 2) * 9999) / 262142).to_string()));
        }
        if c.quota().is_some() || c.period().is_some() {
            let q = c
                .quota()
                .filter(|q| *q > 0)
                .map_or("max".into(), |q| q.to_string());
            w.push(("cpu.max", format!("{q} {}", c.period().unwrap_or(100000))));
        }
        if let Some(cpus) = c.cpus() {
            w.push(("cpuset.cpus", cpus.clone()));
        }
        if let Some(mems) = c.mems() {
            w.push(("cpuset.mems", mems.clone()));
        }
    }
    if let Some(p) = res.pids() {
        w.push((
            "pids.max",
            if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            },
        ));
    }
    if let Some(wt) = res.block_io().as_ref().and_then(|b| b.weight()) {
        let wt = wt.clamp(10, 1000) as u64;
        w.push((
            "io.weight",
            format!("default {}", 1 + (wt - 10) * 9999 / 990),
        ));
    }
    w
}

fn max_or(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// Moves `pid` into every cgroup of the placement.
pub fn join(pl: &Placement, pid: i32) -> Result<()> {
    join_from(pl, pid, 0)
}

/// [`join`] for every directory but the first `skip` (those the process was born in).
/// The v1 directories of `pl` from `skip` on, split off for the process to join itself:
/// their `tasks` files, opened for writing, and the directories left for [`join_from`].
///
/// Writing another process's pid to `cgroup.procs` takes the kernel's global
/// threadgroup lock for writing, which waits for an RCU grace period: 2 to 8 ms on these
/// machines, on every container start. A process writing `0` (itself) to a v1 `tasks` file
/// is moved without that lock (kernel/cgroup: `cgroup_procs_write_start`), and a new
/// container's init is a single thread: so the runtime opens the files and the init
/// writes. The kernel checks permission against the opener (root), so the init may do it
/// from inside its user namespace. cgroup2 has no such file: its directories stay with
/// the runtime.
pub fn self_join_files(
    layout: &Layout,
    pl: &Placement,
    skip: usize,
) -> Result<(Vec<fs::File>, Placement)> {
    let unified = match layout {
        Layout::V1 { unified, .. } => unified.as_deref(),
        Layout::V2 { .. } => return Ok((Vec::new(), tail(pl, skip))),
    };
    let mut files = Vec::new();
    let mut rest = Placement::default();
    for d in pl.dirs.iter().skip(skip) {
        if unified.is_some_and(|u| d.starts_with(u)) {
            rest.dirs.push(d.clone());
            continue;
        }
        let path = d.join("tasks");
        let f = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::Cgroup {
                reason: format!("open for the container's init: {e}"),
                path,
            })?;
        files.push(f);
    }
    Ok((files, rest))
}

fn tail(pl: &Placement, skip: usize) -> Placement {
    Placement {
        dirs: pl.dirs.iter().skip(skip).cloned().collect(),
        created: Vec::new(),
    }
}

/// Moves the calling thread (a single-threaded process: the whole process) into the cgroup
/// of each `tasks` file (see [`self_join_files`]). The init calls it between clone and
/// exec: a plain write(2) each.
pub fn join_self(tasks: &[BorrowedFd]) -> std::result::Result<(), nix::errno::Errno> {
    for fd in tasks {
        nix::unistd::write(fd, b"0\n")?;
    }
    Ok(())
}

pub fn join_from(pl: &Placement, pid: i32, skip: usize) -> Result<()> {
    for d in pl.dirs.iter().skip(skip) {
        write_file(d, "cgroup.procs", &pid.to_string())?;
    }
    Ok(())
}

/// The pids in the container's cgroup (every process of the container).
pub fn procs(pl: &Placement) -> Vec<i32> {
    let Some(d) = pl.dirs.first() else {
        return Vec::new();
    };
    fs::read_to_string(d.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Removes the directories the runtime created, deepest first, retrying while exiting
/// processes leave them (up to `wait`). Parents still used by others stay.
pub fn remove(pl: &Placement, wait: Duration) -> Result<()> {
    let deadline = Instant::now() + wait;
    for dir in pl.created.iter().rev() {
        loop {
            match fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                // A parent shared with other containers: not ours to remove.
                Err(e)
                    if e.raw_os_error() == Some(libc::ENOTEMPTY)
                        || e.raw_os_error() == Some(libc::EBUSY) =>
                {
                    if pl.dirs.contains(dir) {
                        return Err(Error::Cgroup {
                            path: dir.clone(),
                            reason: format!("rmdir: {e} (processes still in it)"),
                        });
                    }
                    break;
                }
                Err(e) => {
                    return Err(Error::Cgroup {
                        path: dir.clone(),
                        reason: format!("rmdir: {e}"),
                    })
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };

    fn resources() -> LinuxResources {
        LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 << 20)
                    .swap(128 << 20)
                    .reservation(32 << 20)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .quota(50000i64)
                    .period(100000u64)
                    .cpus("0")
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(20).build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn paths() {
        assert_eq!(
            container_path(None, "c").unwrap(),
            PathBuf::from("berth-runtime/c")
        );
        assert_eq!(
            container_path(Some(Path::new("/a/b")), "c").unwrap(),
            PathBuf::from("a/b")
        );
        assert!(container_path(Some(Path::new("/a/../b")), "c").is_err());
        assert!(container_path(Some(Path::new("system.slice:x:y")), "c").is_err());
        assert!(container_path(Some(Path::new("/")), "c").is_err());
    }

    #[test]
    fn v2_fake_tree() {
        let t = tempfile::tempdir().unwrap();
        let layout = Layout::V2 {
            root: t.path().into(),
        };
        let pl = setup(&layout, Path::new("a/b"), Some(&resources())).unwrap();
        let dir = t.path().join("a/b");
        assert_eq!(pl.dirs, vec![dir.clone()]);
        assert_eq!(pl.created, vec![t.path().join("a"), dir.clone()]);
        let rd = |f: &str| fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(rd("memory.max"), (64u64 << 20).to_string());
        assert_eq!(rd("memory.low"), (32u64 << 20).to_string());
        assert_eq!(rd("memory.swap.max"), (64u64 << 20).to_string());
        assert_eq!(rd("cpu.weight"), "39");
        assert_eq!(rd("cpu.max"), "50000 100000");
        assert_eq!(rd("pids.max"), "20");
        let enabled = fs::read_to_string(t.path().join("a/cgroup.subtree_control")).unwrap();
        for c in ["cpu", "cpuset", "memory", "pids"] {
            assert!(enabled.contains(&format!("+{c}")), "{enabled}");
        }
        assert!(fs::read_to_string(t.path().join("cgroup.subtree_control"))
            .unwrap()
            .contains("+memory"));
    }

    #[test]
    fn v1_fake_tree() {
        let t = tempfile::tempdir().unwrap();
        for c in ["memory", "cpu", "cpuset", "pids", "devices"] {
            fs::create_dir(t.path().join(c)).unwrap();
        }
        fs::write(t.path().join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
        fs::write(t.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
        let mut res = resources();
        let mut deny = LinuxDeviceCgroup::default();
        deny.set_allow(false);
        deny.set_access(Some("rwm".into()));
        res.set_devices(Some(vec![deny]));
        let layout = Layout::V1 {
            root: t.path().into(),
            unified: None,
        };
        let pl = setup(&layout, Path::new("x"), Some(&res)).unwrap();
        assert_eq!(pl.dirs.len(), 5);
        assert_eq!(
            fs::read_to_string(t.path().join("memory/x/memory.limit_in_bytes")).unwrap(),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            fs::read_to_string(t.path().join("memory/x/memory.memsw.limit_in_bytes")).unwrap(),
            (128u64 << 20).to_string()
        );
        assert_eq!(
            fs::read_to_string(t.path().join("cpu/x/cpu.cfs_quota_us")).unwrap(),
            "50000"
        );
        assert_eq!(
            fs::read_to_string(t.path().join("pids/x/pids.max")).unwrap(),
            "20"
        );
        // The last write to a fake file wins: the last default allow rule.
        assert_eq!(
            fs::read_to_string(t.path().join("devices/x/devices.allow")).unwrap(),
            "c 136:* rwm"
        );
        assert_eq!(
            fs::read_to_string(t.path().join("devices/x/devices.deny")).unwrap(),
            "a *:* rwm"
        );
        // cpuset was set from the config, over the copied parent values.
        assert_eq!(
            fs::read_to_string(t.path().join("cpuset/x/cpuset.cpus")).unwrap(),
            "0"
        );
        assert_eq!(
            fs::read_to_string(t.path().join("cpuset/x/cpuset.mems")).unwrap(),
            "0"
        );
    }

    #[test]
    fn v1_missing_controller_is_named() {
        let t = tempfile::tempdir().unwrap();
        let layout = Layout::V1 {
            root: t.path().into(),
            unified: None,
        };
        let err = setup(&layout, Path::new("x"), Some(&resources())).unwrap_err();
        assert!(
            err.to_string().contains("memory controller is not mounted"),
            "{err}"
        );
    }
}
