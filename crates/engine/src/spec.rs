//! The OCI runtime spec of a container, with Docker's defaults: capabilities, masked and
//! read-only paths, the standard mounts, `/etc/hostname`, `/etc/hosts` and
//! `/etc/resolv.conf` bound from the container's directory, the image's user and env.

use std::path::Path;

use oci_spec::runtime::Spec;
use serde_json::{json, Value};

use crate::container::{ContainerRecord, MountPoint, Ulimit};
use crate::error::{EngineError, Result};
use crate::policy;

/// Docker's default capability set (moby oci/caps/defaults.go).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the kernel knows (up to CAP_CHECKPOINT_RESTORE), for `--privileged`
/// and `--cap-add=ALL`.
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `net_admin`, `NET_ADMIN` or `CAP_NET_ADMIN` → `CAP_NET_ADMIN`, if the kernel has it.
pub fn parse_capability(name: &str) -> Result<String> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPS.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(EngineError::InvalidParameter(format!(
            "unknown capability: {name:?}"
        )))
    }
}

/// The capability set after `--privileged`, `--cap-add` and `--cap-drop`.
fn capabilities(rec: &ContainerRecord) -> Result<Vec<String>> {
    let host = &rec.host_config;
    if host.privileged {
        return Ok(ALL_CAPS.iter().map(|s| s.to_string()).collect());
    }
    let all = |l: &[String]| l.iter().any(|c| c.eq_ignore_ascii_case("ALL"));
    let mut caps: Vec<String> = if all(&host.cap_add) {
        ALL_CAPS.iter().map(|s| s.to_string()).collect()
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    if all(&host.cap_drop) {
        caps.clear();
    }
    for c in host
        .cap_drop
        .iter()
        .filter(|c| !c.eq_ignore_ascii_case("ALL"))
    {
        let c = parse_capability(c)?;
        caps.retain(|x| *x != c);
    }
    for c in host
        .cap_add
        .iter()
        .filter(|c| !c.eq_ignore_ascii_case("ALL"))
    {
        let c = parse_capability(c)?;
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    Ok(caps)
}

/// A numeric user, as the runtime needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Reads `rootfs/etc/NAME`, refusing symlinks so that an image cannot make the daemon read
/// a host file.
fn read_etc(rootfs: &Path, name: &str) -> String {
    let etc = rootfs.join("etc");
    let file = etc.join(name);
    let is_link = |p: &Path| {
        p.symlink_metadata()
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(true)
    };
    if is_link(&etc) || is_link(&file) {
        return String::new();
    }
    std::fs::read_to_string(file).unwrap_or_default()
}

/// Resolves Docker's `user[:group]` (names or numbers) against the image's
/// `/etc/passwd` and `/etc/group`, as Docker does at start.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ResolvedUser> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let passwd = read_etc(rootfs, "passwd");
    let groups = read_etc(rootfs, "group");
    // name:x:uid:gid:...
    let pw_entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == user || f[2] == user));
    let (uid, mut gid, name) = match (&pw_entry, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            f[0].to_string(),
        ),
        (None, Ok(n)) => (n, 0, String::new()),
        (None, Err(_)) => {
            return Err(EngineError::InvalidParameter(format!(
                "unable to find user {user}: no matching entries in passwd file"
            )))
        }
    };
    let group_entries: Vec<Vec<&str>> = groups
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 3)
        .collect();
    if let Some(g) = group.filter(|g| !g.is_empty()) {
        gid = match group_entries.iter().find(|f| f[0] == g || f[2] == g) {
            Some(f) => f[2].parse().unwrap_or(0),
            None => g.parse().map_err(|_| {
                EngineError::InvalidParameter(format!(
                    "unable to find group {g}: no matching entries in group file"
                ))
            })?,
        };
    }
    let mut additional_gids = Vec::new();
    if group.is_none() && !name.is_empty() {
        for f in &group_entries {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if g != gid && !additional_gids.contains(&g) {
                        additional_gids.push(g);
                    }
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

/// The process of a `docker exec` in container `rec` (whose root is mounted at `rootfs`):
/// the container's confinement, with the exec's command, env, user and directory.
pub fn exec_process(
    rec: &ContainerRecord,
    rootfs: &Path,
    req: &crate::exec::ExecRequest,
) -> Result<oci_spec::runtime::Process> {
    let user_spec = if req.user.is_empty() {
        &rec.config.user
    } else {
        &req.user
    };
    let user = resolve_user(rootfs, user_spec)?;
    let caps = if req.privileged {
        ALL_CAPS.iter().map(|s| s.to_string()).collect()
    } else {
        capabilities(rec)?
    };
    let secopts = policy::security_opts(&rec.host_config)?;
    let mut env = environment(rec);
    env.extend(req.env.iter().cloned());
    let cwd = [&req.working_dir, &rec.config.working_dir]
        .into_iter()
        .find(|d| !d.is_empty())
        .map_or("/", |d| d.as_str());
    let mut process = json!({
        "terminal": req.tty,
        "user": {"uid": user.uid, "gid": user.gid},
        "args": req.cmd,
        "env": env,
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": secopts.no_new_privileges,
    });
    if !user.additional_gids.is_empty() {
        process["user"]["additionalGids"] = json!(user.additional_gids);
    }
    if let [h, w] = req.console_size[..] {
        if h > 0 && w > 0 {
            process["consoleSize"] = json!({"height": h, "width": w});
        }
    }
    serde_json::from_value(process).map_err(json_err)
}

/// Creates the working directory `dir` inside `rootfs` if it is missing, as Docker does,
/// owned by `owner` (the container's root on the host). Walks one component at a time
/// without following symlinks, so nothing is created outside the root; a path through a
/// symlink is left to the runtime's chdir.
pub fn ensure_workdir(rootfs: &Path, dir: &str, owner: (u32, u32)) -> Result<()> {
    use rustix::fs::{chownat, mkdirat, openat, AtFlags, Gid, Mode, OFlags, Uid};
    use rustix::io::Errno;
    let err = |e: Errno| {
        EngineError::InvalidParameter(format!("cannot create the working directory {dir}: {e}"))
    };
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::PATH | OFlags::CLOEXEC;
    let mut fd = openat(rustix::fs::CWD, rootfs, flags, Mode::empty()).map_err(err)?;
    for comp in dir.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if comp == ".." {
            return Err(EngineError::InvalidParameter(format!(
                "the working directory {dir} must not contain .."
            )));
        }
        fd = match openat(&fd, comp, flags, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::NOENT) => {
                match mkdirat(&fd, comp, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(err(e)),
                }
                let (uid, gid) = (Uid::from_raw(owner.0), Gid::from_raw(owner.1));
                chownat(&fd, comp, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW).map_err(err)?;
                openat(&fd, comp, flags, Mode::empty()).map_err(err)?
            }
            // A symlink (ELOOP) or a file on the way: not ours to resolve.
            Err(_) => return Ok(()),
        };
    }
    Ok(())
}

/// The environment Docker gives a process: PATH (unless set), HOSTNAME, TERM for a tty,
/// then the container's own.
pub fn environment(rec: &ContainerRecord) -> Vec<String> {
    let mut env = Vec::new();
    if !rec.config.env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    env.push(format!("HOSTNAME={}", rec.config.hostname));
    if rec.config.tty {
        env.push("TERM=xterm".into());
    }
    env.extend(rec.config.env.iter().cloned());
    env
}

fn rlimit(u: &Ulimit) -> Result<Value> {
    const NAMES: &[&str] = &[
        "cpu",
        "fsize",
        "data",
        "stack",
        "core",
        "rss",
        "nproc",
        "nofile",
        "memlock",
        "as",
        "locks",
        "sigpending",
        "msgqueue",
        "nice",
        "rtprio",
        "rttime",
    ];
    if !NAMES.contains(&u.name.as_str()) {
        return Err(EngineError::InvalidParameter(format!(
            "invalid ulimit type: {}",
            u.name
        )));
    }
    if u.soft > u.hard {
        return Err(EngineError::InvalidParameter(format!(
            "ulimit soft limit must be less than or equal to hard limit: {} > {}",
            u.soft, u.hard
        )));
    }
    let v = |n: i64| if n < 0 { u64::MAX } else { n as u64 };
    Ok(
        json!({"type": format!("RLIMIT_{}", u.name.to_ascii_uppercase()), "soft": v(u.soft), "hard": v(u.hard)}),
    )
}

fn user_mount(m: &MountPoint) -> Value {
    match m.kind.as_str() {
        "tmpfs" => {
            let mut opts = vec!["nosuid".to_string(), "nodev".into(), "noexec".into()];
            opts.extend(m.options.iter().cloned());
            if m.read_only {
                opts.push("ro".into());
            }
            json!({"destination": m.destination, "type": "tmpfs", "source": "tmpfs", "options": opts})
        }
        _ => {
            let propagation = if m.propagation.is_empty() {
                "rprivate"
            } else {
                &m.propagation
            };
            let mut opts = vec!["rbind".to_string(), propagation.to_string()];
            if m.read_only {
                opts.push("ro".into());
            }
            json!({"destination": m.destination, "type": "bind", "source": m.source, "options": opts})
        }
    }
}

/// Files of the container directory bound over the image's `/etc` files.
pub struct EtcFiles<'a> {
    pub hostname: &'a Path,
    pub hosts: &'a Path,
    pub resolv_conf: &'a Path,
}

/// Builds the OCI spec of `rec`, whose root file system is mounted at `rootfs`; `init` is
/// the host's init binary when the container runs with `--init`.
pub fn build(
    rec: &ContainerRecord,
    rootfs: &Path,
    etc: &EtcFiles,
    default_ulimits: &[Ulimit],
    init: Option<&Path>,
) -> Result<Spec> {
    let host = &rec.host_config;
    let cfg = &rec.config;
    let init_args = init.map(|_| [crate::init::CONTAINER_PATH.to_string(), "--".into()]);
    let args: Vec<String> = init_args
        .into_iter()
        .flatten()
        .chain(std::iter::once(rec.path.clone()))
        .chain(rec.args.iter().cloned())
        .collect();
    let user = resolve_user(rootfs, &cfg.user)?;
    let caps = capabilities(rec)?;
    let secopts = policy::security_opts(host)?;

    let mut rlimits = Vec::new();
    for u in default_ulimits
        .iter()
        .filter(|d| !host.ulimits.iter().any(|u| u.name == d.name))
    {
        rlimits.push(rlimit(u)?);
    }
    for u in &host.ulimits {
        rlimits.push(rlimit(u)?);
    }

    let mut namespaces = vec![json!({"type": "mount"})];
    if host.pid_mode != "host" {
        namespaces.push(json!({"type": "pid"}));
    }
    if host.ipc_mode != "host" {
        namespaces.push(json!({"type": "ipc"}));
    }
    if host.uts_mode != "host" {
        namespaces.push(json!({"type": "uts"}));
    }
    if host.network_mode != "host" {
        namespaces.push(json!({"type": "network"}));
    }
    if rec.maps.is_some() {
        namespaces.push(json!({"type": "user"}));
    }

    let sys_opts = if host.privileged {
        json!(["nosuid", "noexec", "nodev"])
    } else {
        json!(["nosuid", "noexec", "nodev", "ro"])
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_opts}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
    ];
    if host.ipc_mode == "host" {
        mounts.push(json!({"destination": "/dev/shm", "type": "bind", "source": "/dev/shm", "options": ["rbind", "rprivate"]}));
    } else {
        mounts.push(json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}));
    }
    for (dst, src) in [
        ("/etc/hostname", etc.hostname),
        ("/etc/hosts", etc.hosts),
        ("/etc/resolv.conf", etc.resolv_conf),
    ] {
        if !rec.mounts.iter().any(|m| m.destination == dst) {
            mounts.push(json!({"destination": dst, "type": "bind", "source": src, "options": ["rbind", "rprivate"]}));
        }
    }
    mounts.extend(rec.mounts.iter().map(user_mount));
    if let Some(init) = init {
        mounts.push(json!({"destination": crate::init::CONTAINER_PATH, "type": "bind", "source": init, "options": ["bind", "ro"]}));
    }

    let mut resources = serde_json::Map::new();
    if host.memory > 0 {
        resources.insert("memory".into(), json!({"limit": host.memory}));
        if host.memory_swap != 0 {
            resources["memory"]["swap"] = json!(host.memory_swap);
        }
    }
    if let Some(p) = host.pids_limit.filter(|p| *p != 0) {
        resources.insert("pids".into(), json!({"limit": p}));
    }
    let mut cpu = serde_json::Map::new();
    if host.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(host.cpu_shares));
    }
    if host.nano_cpus > 0 {
        const PERIOD: i64 = 100_000;
        cpu.insert("period".into(), json!(PERIOD));
        cpu.insert(
            "quota".into(),
            json!(host.nano_cpus * PERIOD / 1_000_000_000),
        );
    }
    if host.cpu_period > 0 {
        cpu.insert("period".into(), json!(host.cpu_period));
    }
    if host.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(host.cpu_quota));
    }
    if !cpu.is_empty() {
        resources.insert("cpu".into(), Value::Object(cpu));
    }
    // Without device rules root in a container without user namespace could mknod and
    // open any host device.
    let devices = crate::devices::build(host.privileged, &host.devices, &host.device_cgroup_rules)?;
    resources.insert("devices".into(), json!(devices.rules));

    let mut linux = json!({
        "namespaces": namespaces,
        "maskedPaths": if host.privileged { json!([]) } else { json!(MASKED_PATHS) },
        "readonlyPaths": if host.privileged { json!([]) } else { json!(READONLY_PATHS) },
    });
    linux["resources"] = Value::Object(resources);
    if !devices.nodes.is_empty() {
        linux["devices"] = json!(devices.nodes);
    }
    if let Some(seccomp) = seccomp(host.privileged, &secopts.seccomp, &caps)? {
        linux["seccomp"] = seccomp;
    }
    if let Some(maps) = &rec.maps {
        linux["uidMappings"] = serde_json::to_value(maps.uid.to_oci()).map_err(json_err)?;
        linux["gidMappings"] = serde_json::to_value(maps.gid.to_oci()).map_err(json_err)?;
    }

    let mut process = json!({
        "terminal": cfg.tty,
        "user": {"uid": user.uid, "gid": user.gid},
        "args": args,
        "env": environment(rec),
        "cwd": if cfg.working_dir.is_empty() { "/" } else { &cfg.working_dir },
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": secopts.no_new_privileges,
    });
    if !user.additional_gids.is_empty() {
        process["user"]["additionalGids"] = json!(user.additional_gids);
    }
    if !rlimits.is_empty() {
        process["rlimits"] = json!(rlimits);
    }
    if let [h, w] = host.console_size[..] {
        if h > 0 && w > 0 {
            process["consoleSize"] = json!({"height": h, "width": w});
        }
    }

    let mut spec = json!({
        "ociVersion": "1.2.0",
        "root": {"path": rootfs, "readonly": host.readonly_rootfs},
        "process": process,
        "mounts": mounts,
        "linux": linux,
    });
    if host.uts_mode != "host" {
        spec["hostname"] = json!(cfg.hostname);
        if !cfg.domainname.is_empty() {
            spec["domainname"] = json!(cfg.domainname);
        }
    }
    serde_json::from_value(spec).map_err(json_err)
}

/// The OCI seccomp section: Docker's default profile, or the custom one, resolved for the
/// container's capabilities; none when privileged or unconfined.
fn seccomp(privileged: bool, opt: &policy::Seccomp, caps: &[String]) -> Result<Option<Value>> {
    let target = crate::seccomp::Target::host(caps);
    Ok(match opt {
        _ if privileged => None,
        policy::Seccomp::Unconfined => None,
        policy::Seccomp::Builtin => Some(crate::seccomp::Profile::builtin().resolve(&target)),
        policy::Seccomp::Custom(json) => {
            Some(crate::seccomp::Profile::parse(json)?.resolve(&target))
        }
    })
}

fn json_err(e: serde_json::Error) -> EngineError {
    EngineError::System(format!("building the OCI spec: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{ContainerConfig, HostConfig, State};
    use berth_idmap::UsernsMaps;

    fn record(host: HostConfig) -> ContainerRecord {
        ContainerRecord {
            id: "a".repeat(64),
            name: "demo".into(),
            created: crate::timefmt::now(),
            image_ref: "busybox".into(),
            image_id: "sha256:00".into(),
            config: ContainerConfig {
                hostname: "aaaaaaaaaaaa".into(),
                env: vec!["FOO=bar".into()],
                tty: true,
                ..Default::default()
            },
            host_config: host,
            state: State::default(),
            maps: None,
            mounts: vec![crate::mounts::parse_bind("/srv/logs:/var/log:ro").unwrap()],
            layers: vec![],
            path: "ls".into(),
            args: vec!["-l".into()],
        }
    }

    fn etc() -> EtcFiles<'static> {
        EtcFiles {
            hostname: Path::new("/c/hostname"),
            hosts: Path::new("/c/hosts"),
            resolv_conf: Path::new("/c/resolv.conf"),
        }
    }

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1::/:/bin/false\nnobody:x:65534:65534::/:/bin/false\n").unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\ndaemon:x:1:\nadm:x:4:daemon\nnogroup:x:65534:\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn docker_defaults() {
        let root = rootfs();
        let mut rec = record(HostConfig::default());
        rec.maps = Some(UsernsMaps::single(100000, 65536).unwrap());
        let spec = build(&rec, root.path(), &etc(), &[], None).unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["process"]["args"], json!(["ls", "-l"]));
        assert_eq!(
            v["process"]["env"][0],
            json!(format!("PATH={DEFAULT_PATH}"))
        );
        assert_eq!(v["process"]["env"][2], json!("TERM=xterm"));
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["mount", "pid", "ipc", "uts", "network", "user"]);
        assert_eq!(v["linux"]["uidMappings"][0]["hostID"], json!(100000));
        assert!(v["linux"]["maskedPaths"]
            .as_array()
            .unwrap()
            .contains(&json!("/proc/kcore")));
        let dsts: Vec<&str> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dsts,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/dev/mqueue",
                "/dev/shm",
                "/etc/hostname",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/var/log"
            ]
        );
        assert_eq!(
            v["mounts"][9]["options"],
            json!(["rbind", "rprivate", "ro"])
        );
        assert_eq!(v["hostname"], json!("aaaaaaaaaaaa"));
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    }

    #[test]
    fn host_namespaces_and_privileged() {
        let root = rootfs();
        let rec = record(HostConfig {
            network_mode: "host".into(),
            pid_mode: "host".into(),
            privileged: true,
            cap_drop: vec!["ALL".into()],
            ..Default::default()
        });
        let v = serde_json::to_value(build(&rec, root.path(), &etc(), &[], None).unwrap()).unwrap();
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["mount", "ipc", "uts"]);
        assert!(
            v["linux"]["seccomp"].is_null(),
            "privileged runs unconfined"
        );
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            ALL_CAPS.len()
        );
        assert!(v["linux"]["maskedPaths"]
            .as_array()
            .is_none_or(|a| a.is_empty()));
    }

    #[test]
    fn caps_add_and_drop() {
        let rec = record(HostConfig {
            cap_add: vec!["net_admin".into()],
            cap_drop: vec!["CAP_CHOWN".into(), "kill".into()],
            ..Default::default()
        });
        let caps = capabilities(&rec).unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(
            !caps.contains(&"CAP_CHOWN".to_string()) && !caps.contains(&"CAP_KILL".to_string())
        );
    }

    #[test]
    fn workdirs_are_created_inside_the_root_only() {
        let root = rootfs();
        let r = root.path();
        ensure_workdir(r, "/srv/app/data", (100000, 100000)).unwrap();
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(r.join("srv/app/data")).unwrap();
        assert!(md.is_dir());
        assert_eq!((md.uid(), md.gid()), (100000, 100000));
        // A symlink pointing out of the root is not followed.
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("escape")).unwrap();
        ensure_workdir(r, "/escape/made", (0, 0)).unwrap();
        assert!(!outside.path().join("made").exists());
        assert!(ensure_workdir(r, "/a/../b", (0, 0)).is_err());
    }

    #[test]
    fn users_resolve_against_the_image() {
        let root = rootfs();
        let r = root.path();
        assert_eq!(
            resolve_user(r, "").unwrap(),
            ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            resolve_user(r, "daemon").unwrap(),
            ResolvedUser {
                uid: 1,
                gid: 1,
                additional_gids: vec![4]
            }
        );
        assert_eq!(resolve_user(r, "nobody:adm").unwrap().gid, 4);
        assert_eq!(
            resolve_user(r, "1234:5678").unwrap(),
            ResolvedUser {
                uid: 1234,
                gid: 5678,
                additional_gids: vec![]
            }
        );
        assert!(resolve_user(r, "ghost")
            .unwrap_err()
            .to_string()
            .contains("unable to find user ghost"));
    }
}
