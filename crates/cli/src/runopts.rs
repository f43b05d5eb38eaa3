//! The flags of `berth create` and `berth run`, and their translation into the JSON body of
//! `POST /containers/create` (Docker's `Config` with `HostConfig` inside).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Map, Value};

/// Flags shared by `create` and `run` (docker's names; `-h` is `--hostname`, as in docker).
#[derive(Args, Debug, Default, Clone)]
pub struct ContainerOpts {
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Automatically remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Bind mount a volume (SRC:DST[:OPTS] or DST)
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// Attach a filesystem mount (type=bind|volume|tmpfs,source=...,target=...[,readonly])
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// Set environment variables (KEY=VALUE, or KEY to copy it from here)
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_files: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// User namespace to use (host: no remapping for this container)
    #[arg(long)]
    pub userns: Option<String>,
    /// Give extended privileges to this container
    #[arg(long)]
    pub privileged: bool,
    /// Connect a container to a network (none, host, default)
    #[arg(long = "network", visible_alias = "net")]
    pub network: Option<String>,
    /// Container host name
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Add Linux capabilities
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Security Options
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Add a host device to the container (HOST[:CONTAINER][:PERMISSIONS])
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// Add a rule to the cgroup allowed devices list ('c 1:3 rwm')
    #[arg(long = "device-cgroup-rule")]
    pub device_cgroup_rules: Vec<String>,
    /// Mount the container's root filesystem as read only
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Memory limit (e.g. 512m, 1g)
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Tune container pids limit (-1 for unlimited)
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Swap limit equal to memory plus swap: -1 to enable unlimited swap
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares")]
    pub cpu_shares: Option<i64>,
    /// Limit CPU CFS (Completely Fair Scheduler) period
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<i64>,
    /// Limit CPU CFS (Completely Fair Scheduler) quota (-1 for none)
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// Restart policy to apply when a container exits (no, always, unless-stopped,
    /// on-failure[:MAX-RETRIES])
    #[arg(long)]
    pub restart: Option<String>,
    /// Mount a tmpfs directory (PATH[:OPTIONS], e.g. /run:size=64m,mode=1777)
    #[arg(long = "tmpfs")]
    pub tmpfs: Vec<String>,
    /// PID namespace to use (host, or container:NAME)
    #[arg(long)]
    pub pid: Option<String>,
    /// IPC mode to use (none, private, shareable, host, container:NAME)
    #[arg(long)]
    pub ipc: Option<String>,
    /// UTS namespace to use (host)
    #[arg(long)]
    pub uts: Option<String>,
    /// Ulimit options (NAME=SOFT[:HARD])
    #[arg(long = "ulimit")]
    pub ulimits: Vec<String>,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long)]
    pub init: bool,
    /// Set meta data on a container (KEY=VALUE)
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Signal to stop the container
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Expose a port or a range of ports (PORT[-END][/PROTOCOL])
    #[arg(long = "expose")]
    pub expose: Vec<String>,
    /// Attach to STDIN, STDOUT or STDERR
    #[arg(short = 'a', long = "attach")]
    pub attach: Vec<String>,
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// The image, then the command and its arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "IMAGE [COMMAND] [ARG...]"
    )]
    pub image_and_args: Vec<String>,
}

impl ContainerOpts {
    pub fn image(&self) -> &str {
        &self.image_and_args[0]
    }

    /// Which streams to attach: `-a` if given, else stdout and stderr (and stdin with -i),
    /// none when detached.
    pub fn attach_streams(&self, detach: bool) -> anyhow::Result<(bool, bool, bool)> {
        if detach {
            if !self.attach.is_empty() {
                bail!("conflicting options: cannot specify both --attach and --detach");
            }
            return Ok((false, false, false));
        }
        if self.attach.is_empty() {
            return Ok((self.interactive, true, true));
        }
        let mut s = (false, false, false);
        for a in &self.attach {
            match a.to_ascii_lowercase().as_str() {
                "stdin" => s.0 = true,
                "stdout" => s.1 = true,
                "stderr" => s.2 = true,
                _ => bail!("invalid argument {a:?} for \"-a, --attach\": valid streams are STDIN, STDOUT and STDERR"),
            }
        }
        Ok(s)
    }

    /// The body of `POST /containers/create`. `lookup_env` resolves `-e KEY` without a value;
    /// `cwd` makes relative bind sources absolute. `console` is the terminal size (rows,
    /// columns) when `-t` on a terminal.
    pub fn to_create_body(
        &self,
        detach: bool,
        lookup_env: &dyn Fn(&str) -> Option<String>,
        cwd: &Path,
        console: Option<(u16, u16)>,
    ) -> anyhow::Result<Value> {
        let (attach_in, attach_out, attach_err) = self.attach_streams(detach)?;
        let env = env_list(&self.env_files, &self.env, lookup_env)?;
        let mut binds = Vec::new();
        let mut volumes = Map::new();
        for v in &self.volumes {
            match parse_volume(v, cwd)? {
                Volume::Bind(b) => binds.push(Value::String(b)),
                Volume::Anonymous(dst) => {
                    volumes.insert(dst, json!({}));
                }
            }
        }
        let mounts = self
            .mounts
            .iter()
            .map(|m| parse_mount(m, cwd))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut labels = BTreeMap::new();
        for l in &self.labels {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            if k.is_empty() {
                bail!("invalid label {l:?}: expected KEY=VALUE");
            }
            labels.insert(k.to_string(), v.to_string());
        }
        let ulimits = self
            .ulimits
            .iter()
            .map(|u| parse_ulimit(u))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut exposed = Map::new();
        for e in &self.expose {
            for port in parse_expose(e)? {
                exposed.insert(port, json!({}));
            }
        }
        let cmd: Vec<&String> = self.image_and_args[1..].iter().collect();
        let entrypoint = self.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                json!([""])
            } else {
                json!([e])
            }
        });

        let mut host = json!({
            "Binds": binds,
            "Mounts": mounts,
            "AutoRemove": self.rm,
            "Privileged": self.privileged,
            "NetworkMode": self.network.as_deref().unwrap_or("default"),
            "CapAdd": self.cap_add,
            "CapDrop": self.cap_drop,
            "SecurityOpt": self.security_opt,
            "ReadonlyRootfs": self.read_only,
            "Ulimits": ulimits,
            "Devices": self.devices.iter().map(|d| parse_device(d)).collect::<Vec<_>>(),
            "DeviceCgroupRules": self.device_cgroup_rules,
        });
        let h = host.as_object_mut().expect("object");
        if let Some(u) = &self.userns {
            h.insert("UsernsMode".into(), json!(u));
        }
        if let Some(m) = &self.memory {
            h.insert("Memory".into(), json!(parse_bytes(m)?));
        }
        if let Some(p) = self.pids_limit {
            h.insert("PidsLimit".into(), json!(p));
        }
        if let Some(c) = self.cpus {
            if !(c > 0.0 && c.is_finite()) {
                bail!("invalid --cpus {c}: must be a positive number");
            }
            h.insert("NanoCpus".into(), json!((c * 1e9).round() as i64));
        }
        if self.init {
            h.insert("Init".into(), json!(true));
        }
        if let Some(m) = &self.memory_swap {
            // -1 is unlimited swap; anything else a size, as docker's MemSwapBytes.
            let bytes = if m == "-1" { -1 } else { parse_bytes(m)? };
            h.insert("MemorySwap".into(), json!(bytes));
        }
        for (key, val) in [
            ("CpuShares", self.cpu_shares),
            ("CpuPeriod", self.cpu_period),
            ("CpuQuota", self.cpu_quota),
        ] {
            if let Some(v) = val {
                h.insert(key.into(), json!(v));
            }
        }
        if let Some(r) = &self.restart {
            let policy = parse_restart(r)?;
            let none = matches!(policy["Name"].as_str(), Some("" | "no"));
            if self.rm && !none {
                bail!("conflicting options: cannot specify both --restart and --rm");
            }
            h.insert("RestartPolicy".into(), policy);
        }
        if !self.tmpfs.is_empty() {
            // PATH[:OPTIONS]; the daemon checks both, as it does for the docker CLI.
            let tmpfs: BTreeMap<&str, &str> = self
                .tmpfs
                .iter()
                .map(|t| t.split_once(':').unwrap_or((t, "")))
                .collect();
            h.insert("Tmpfs".into(), json!(tmpfs));
        }
        if let Some(p) = &self.pid {
            if !(p.is_empty() || p == "host" || is_container_ref(p)) {
                bail!("--pid: invalid PID mode");
            }
            h.insert("PidMode".into(), json!(p));
        }
        if let Some(u) = &self.uts {
            if !(u.is_empty() || u == "host") {
                bail!("--uts: invalid UTS mode");
            }
            h.insert("UTSMode".into(), json!(u));
        }
        if let Some(i) = &self.ipc {
            // The daemon knows the IPC modes (the docker CLI leaves them to it too).
            h.insert("IpcMode".into(), json!(i));
        }
        if let Some((rows, cols)) = console.filter(|_| self.tty) {
            h.insert("ConsoleSize".into(), json!([rows, cols]));
        }

        let mut body = json!({
            "Image": self.image(),
            "Tty": self.tty,
            "OpenStdin": self.interactive,
            "StdinOnce": self.interactive && attach_in,
            "AttachStdin": attach_in,
            "AttachStdout": attach_out,
            "AttachStderr": attach_err,
            "Env": env,
            "Labels": labels,
            "Volumes": volumes,
            "HostConfig": host,
        });
        let b = body.as_object_mut().expect("object");
        if !cmd.is_empty() {
            b.insert("Cmd".into(), json!(cmd));
        }
        if let Some(e) = entrypoint {
            b.insert("Entrypoint".into(), e);
        }
        if !exposed.is_empty() {
            b.insert("ExposedPorts".into(), Value::Object(exposed));
        }
        for (key, val) in [
            ("WorkingDir", &self.workdir),
            ("User", &self.user),
            ("Hostname", &self.hostname),
            ("StopSignal", &self.stop_signal),
        ] {
            if let Some(v) = val {
                b.insert(key.into(), json!(v));
            }
        }
        Ok(body)
    }
}

/// `--restart NAME[:MAX-RETRIES]` as the docker CLI reads it: the name is the daemon's to
/// judge (no, always, unless-stopped, on-failure); the count must be a number.
fn parse_restart(r: &str) -> anyhow::Result<Value> {
    let (name, count) = r.split_once(':').unwrap_or((r, ""));
    if name.is_empty() && r.contains(':') {
        bail!("invalid restart policy format: no policy provided before colon");
    }
    let count: i64 = if count.is_empty() {
        0
    } else {
        count.parse().map_err(|_| {
            anyhow::anyhow!("invalid restart policy format: maximum retry count must be an integer")
        })?
    };
    Ok(json!({"Name": name, "MaximumRetryCount": count}))
}

/// `container:NAME`, docker's way to share another container's namespace.
fn is_container_ref(mode: &str) -> bool {
    mode.strip_prefix("container:")
        .is_some_and(|n| !n.is_empty())
}

/// `--expose PORT[-END][/PROTOCOL]` as the docker CLI reads it: each port of the range as
/// `PORT/PROTOCOL` (tcp when none is given).
fn parse_expose(e: &str) -> anyhow::Result<Vec<String>> {
    if e.contains(':') {
        bail!("invalid port format for --expose: {e}: publish ports with -p; --expose takes PORT[-END][/PROTOCOL]");
    }
    let (ports, proto) = match e.split_once('/') {
        Some((p, proto)) if !proto.is_empty() => (p, proto),
        Some((p, _)) => (p, "tcp"),
        None => (e, "tcp"),
    };
    let bad = || {
        anyhow::anyhow!(
            "invalid range format for --expose: {e}: expected PORT[-END][/PROTOCOL] with ports up to 65535 (e.g. 80, 7000-7010/udp)"
        )
    };
    let port = |p: &str| p.parse::<u16>().map_err(|_| bad());
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(ports)?, port(ports)?),
    };
    if end < start {
        return Err(bad());
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// The environment of `--env-file`s then `-e`s, as the docker CLI reads it: files first,
/// a line each (blank lines and `#` comments skipped); see [`env_entry`] for each entry.
pub fn env_list(
    files: &[String],
    env: &[String],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read env file {file}"))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.extend(env_entry(line, lookup).with_context(|| format!("{file} line {}", n + 1))?);
        }
    }
    for e in env {
        out.extend(env_entry(e, lookup)?);
    }
    Ok(out)
}

/// `KEY=VALUE` as is; `KEY` alone takes the value from here, or is left out when unset.
fn env_entry(e: &str, lookup: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Option<String>> {
    let key = e.split('=').next().unwrap_or("");
    if key.is_empty() || key.contains(char::is_whitespace) {
        bail!("invalid environment variable {e:?}: expected KEY=VALUE");
    }
    if e.contains('=') {
        return Ok(Some(e.to_string()));
    }
    Ok(lookup(e).map(|v| format!("{e}={v}")))
}

enum Volume {
    /// A `Binds` entry: `SRC:DST[:OPTS]` with SRC a host path or volume name.
    Bind(String),
    /// `-v /dst`: an anonymous volume, listed in `Config.Volumes`.
    Anonymous(String),
}

const VOLUME_OPTS: &[&str] = &[
    "ro",
    "rw",
    "z",
    "Z",
    "nocopy",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "private",
    "rprivate",
    "consistent",
    "cached",
    "delegated",
];

fn parse_volume(v: &str, cwd: &Path) -> anyhow::Result<Volume> {
    let parts: Vec<&str> = v.split(':').collect();
    let bad = |why: &str| anyhow::anyhow!("invalid volume specification {v:?}: {why}");
    let check_dst = |dst: &str| {
        if dst.starts_with('/') {
            Ok(())
        } else {
            Err(bad("the container path must be absolute"))
        }
    };
    match parts[..] {
        [dst] => {
            check_dst(dst)?;
            Ok(Volume::Anonymous(dst.to_string()))
        }
        [src, dst] | [src, dst, _] => {
            check_dst(dst)?;
            if src.is_empty() {
                return Err(bad("empty source"));
            }
            if let [_, _, opts] = parts[..] {
                for o in opts.split(',') {
                    if !VOLUME_OPTS.contains(&o) {
                        return Err(bad(&format!("unknown option {o:?}")));
                    }
                }
            }
            // Docker 23+ takes `./dir` and `../dir` as host paths relative to here.
            let src = if src.starts_with('.') {
                absolute(cwd, src)
            } else if !src.starts_with('/')
                && !src
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            {
                return Err(bad(&format!(
                    "{src:?} includes invalid characters for a local volume name"
                )));
            } else {
                src.to_string()
            };
            let rest = parts[1..].join(":");
            Ok(Volume::Bind(format!("{src}:{rest}")))
        }
        _ => Err(bad("too many colons")),
    }
}

/// `rel` made absolute against `cwd`, with `.` and `..` resolved as text (as Go's
/// `filepath.Abs`; symlinks are left to the daemon).
fn absolute(cwd: &Path, rel: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in cwd.join(rel).components() {
        match c {
            std::path::Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

/// `--mount type=bind,source=/a,target=/b,readonly` → a `HostConfig.Mounts` entry.
fn parse_mount(m: &str, cwd: &Path) -> anyhow::Result<Value> {
    let bad = |why: String| anyhow::anyhow!("invalid argument {m:?} for \"--mount\" flag: {why}");
    let mut out = Map::new();
    let (mut kind, mut source, mut target) = ("volume".to_string(), None, None);
    let mut readonly = false;
    let mut bind = Map::new();
    let mut vol = Map::new();
    let mut tmpfs = Map::new();
    for field in m.split(',') {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let val =
            || v.ok_or_else(|| bad(format!("invalid field '{field}' must be a key=value pair")));
        let flag = || match v {
            None | Some("1") | Some("true") => Ok(true),
            Some("0") | Some("false") => Ok(false),
            Some(o) => Err(bad(format!("invalid value for {k}: {o}"))),
        };
        match k.as_str() {
            "type" => kind = val()?.to_string(),
            "source" | "src" => source = Some(val()?.to_string()),
            "target" | "destination" | "dst" => target = Some(val()?.to_string()),
            "readonly" | "ro" => readonly = flag()?,
            "consistency" => {}
            "bind-propagation" => {
                bind.insert("Propagation".into(), json!(val()?));
            }
            "volume-nocopy" => {
                vol.insert("NoCopy".into(), json!(flag()?));
            }
            "tmpfs-size" => {
                tmpfs.insert("SizeBytes".into(), json!(parse_bytes(val()?)?));
            }
            "tmpfs-mode" => {
                let mode = u32::from_str_radix(val()?, 8)
                    .map_err(|_| bad("tmpfs-mode must be octal".into()))?;
                tmpfs.insert("Mode".into(), json!(mode));
            }
            _ => return Err(bad(format!("unexpected key '{k}' in '{field}'"))),
        }
    }
    let target = target.ok_or_else(|| bad("target is required".into()))?;
    match kind.as_str() {
        "bind" => {
            let src = source
                .ok_or_else(|| bad("source is required when specifying bind mount".into()))?;
            let src = if src.starts_with('/') {
                src
            } else {
                absolute(cwd, &src)
            };
            out.insert("Source".into(), json!(src));
            if !bind.is_empty() {
                out.insert("BindOptions".into(), Value::Object(bind));
            }
        }
        "volume" => {
            if let Some(s) = source {
                out.insert("Source".into(), json!(s));
            }
            if !vol.is_empty() {
                out.insert("VolumeOptions".into(), Value::Object(vol));
            }
        }
        "tmpfs" => {
            if source.is_some() {
                return Err(bad("source must not be specified for tmpfs mounts".into()));
            }
            if !tmpfs.is_empty() {
                out.insert("TmpfsOptions".into(), Value::Object(tmpfs));
            }
        }
        other => {
            return Err(bad(format!(
                "unsupported mount type {other:?} (bind, volume or tmpfs)"
            )))
        }
    }
    out.insert("Type".into(), json!(kind));
    out.insert("Target".into(), json!(target));
    if readonly {
        out.insert("ReadOnly".into(), json!(true));
    }
    Ok(Value::Object(out))
}

/// `--device HOST[:CONTAINER][:PERMISSIONS]` as the docker CLI reads it: a second field
/// made only of r, w and m is the permissions.
fn parse_device(spec: &str) -> Value {
    let is_perms = |p: &str| !p.is_empty() && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'));
    let parts: Vec<&str> = spec.splitn(3, ':').collect();
    let (host, inside, perms) = match parts[..] {
        [h, d, p] => (h, d, p),
        [h, p] if is_perms(p) => (h, h, p),
        [h, d] => (h, d, "rwm"),
        _ => (spec, spec, "rwm"),
    };
    json!({"PathOnHost": host, "PathInContainer": inside, "CgroupPermissions": perms})
}

/// `nofile=1024:2048` or `nofile=1024` → `{"Name","Soft","Hard"}`.
fn parse_ulimit(u: &str) -> anyhow::Result<Value> {
    let bad = || anyhow::anyhow!("invalid ulimit {u:?}: expected NAME=SOFT[:HARD]");
    let (name, vals) = u.split_once('=').ok_or_else(bad)?;
    let (soft, hard) = vals.split_once(':').unwrap_or((vals, vals));
    let soft: i64 = soft.parse().map_err(|_| bad())?;
    let hard: i64 = hard.parse().map_err(|_| bad())?;
    if name.is_empty() || soft > hard && hard != -1 {
        return Err(bad());
    }
    Ok(json!({"Name": name, "Soft": soft, "Hard": hard}))
}

/// `512m`, `1g`, `1024k`, `100` (bytes): binary units, as docker's RAMInBytes.
pub fn parse_bytes(s: &str) -> anyhow::Result<i64> {
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower
        .strip_suffix('b')
        .filter(|r| r.ends_with(|c: char| "kmgt".contains(c)))
        .unwrap_or(&lower);
    let (num, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1i64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        Some('t') => (&lower[..lower.len() - 1], 1 << 40),
        Some('b') => (&lower[..lower.len() - 1], 1),
        _ => (lower, 1),
    };
    let n: f64 = num.trim().parse().map_err(|_| {
        anyhow::anyhow!(
            "invalid size {s:?}: expected a number with an optional unit b, k, m, g or t"
        )
    })?;
    if n.is_nan() || n < 0.0 {
        bail!("invalid size {s:?}: must not be negative");
    }
    Ok((n * mult as f64) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    #[command(disable_help_flag = true)]
    struct T {
        #[command(flatten)]
        o: ContainerOpts,
        #[arg(short = 'd', long)]
        detach: bool,
    }

    fn body(args: &[&str]) -> anyhow::Result<Value> {
        let t = T::try_parse_from([&["run"], args].concat())?;
        let env = |k: &str| (k == "HOME").then(|| "/root".to_string());
        t.o.to_create_body(t.detach, &env, Path::new("/here"), Some((24, 80)))
    }

    #[test]
    fn devices_as_the_docker_cli_reads_them() {
        let d = |s| parse_device(s);
        assert_eq!(
            d("/dev/fuse"),
            json!({"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rwm"})
        );
        assert_eq!(d("/dev/fuse:r")["PathInContainer"], "/dev/fuse");
        assert_eq!(d("/dev/fuse:r")["CgroupPermissions"], "r");
        assert_eq!(d("/dev/fuse:/dev/f")["PathInContainer"], "/dev/f");
        assert_eq!(d("/dev/fuse:/dev/f:rw")["CgroupPermissions"], "rw");
    }

    #[test]
    fn run_flags_become_docker_json() {
        let b = body(&[
            "-it",
            "--rm",
            "--name",
            "demo",
            "-v",
            "/var/log:/var/log:ro",
            "-v",
            "./data:/data",
            "-v",
            "/anon",
            "-e",
            "A=1",
            "-e",
            "HOME",
            "-e",
            "UNSET",
            "-w",
            "/tmp",
            "-u",
            "1000:1000",
            "--userns",
            "host",
            "--privileged",
            "--net",
            "none",
            "-h",
            "box",
            "--cap-add",
            "NET_ADMIN",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--read-only",
            "-m",
            "512m",
            "--pids-limit",
            "-1",
            "--cpus",
            "1.5",
            "--ulimit",
            "nofile=1024:2048",
            "--init",
            "--expose",
            "80",
            "--expose",
            "53/udp",
            "--expose",
            "7000-7001/tcp",
            "--label",
            "a=b",
            "-l",
            "flag",
            "alpine",
            "ls",
            "-latr",
            "/var/log/",
        ])
        .unwrap();
        assert_eq!(b["Image"], "alpine");
        assert_eq!(b["Cmd"], json!(["ls", "-latr", "/var/log/"]));
        assert_eq!(
            (
                b["Tty"].clone(),
                b["OpenStdin"].clone(),
                b["StdinOnce"].clone()
            ),
            (json!(true), json!(true), json!(true))
        );
        assert_eq!(b["AttachStdin"], true);
        assert_eq!(b["Env"], json!(["A=1", "HOME=/root"]));
        assert_eq!(b["WorkingDir"], "/tmp");
        assert_eq!(b["User"], "1000:1000");
        assert_eq!(b["Hostname"], "box");
        assert_eq!(b["Labels"], json!({"a": "b", "flag": ""}));
        assert_eq!(b["Volumes"], json!({"/anon": {}}));
        assert_eq!(
            b["ExposedPorts"],
            json!({"80/tcp": {}, "53/udp": {}, "7000/tcp": {}, "7001/tcp": {}})
        );
        let h = &b["HostConfig"];
        assert_eq!(
            h["Binds"],
            json!(["/var/log:/var/log:ro", "/here/data:/data"])
        );
        assert_eq!(h["AutoRemove"], true);
        assert_eq!(h["UsernsMode"], "host");
        assert_eq!(h["NetworkMode"], "none");
        assert_eq!(h["Privileged"], true);
        assert_eq!(h["CapAdd"], json!(["NET_ADMIN"]));
        assert_eq!(h["CapDrop"], json!(["ALL"]));
        assert_eq!(h["SecurityOpt"], json!(["no-new-privileges"]));
        assert_eq!(h["ReadonlyRootfs"], true);
        assert_eq!(h["Memory"], 512 << 20);
        assert_eq!(h["PidsLimit"], -1);
        assert_eq!(h["NanoCpus"], 1_500_000_000i64);
        assert_eq!(
            h["Ulimits"],
            json!([{"Name": "nofile", "Soft": 1024, "Hard": 2048}])
        );
        assert_eq!(h["Init"], true);
        assert_eq!(h["ConsoleSize"], json!([24, 80]));
    }

    #[test]
    fn defaults_and_detach() {
        let b = body(&["-d", "busybox"]).unwrap();
        assert_eq!(b.get("Cmd"), None);
        assert_eq!(b.get("ExposedPorts"), None);
        assert_eq!(b["AttachStdout"], false);
        assert_eq!(b["HostConfig"]["NetworkMode"], "default");
        assert_eq!(b["HostConfig"].get("ConsoleSize"), None);
        let b = body(&["--entrypoint", "", "busybox"]).unwrap();
        assert_eq!(b["Entrypoint"], json!([""]));
        assert_eq!(b["AttachStdout"], true);
        assert_eq!(b["AttachStdin"], false);
        assert!(body(&["-d", "-a", "stdout", "busybox"]).is_err());
    }

    #[test]
    fn bad_flags_are_clear_errors() {
        for (args, msg) in [
            (&["-v", "rel:/x:bogus", "b"][..], "unknown option \"bogus\""),
            (
                &["-v", "/a:rel", "b"][..],
                "container path must be absolute",
            ),
            (&["-v", "a b:/x", "b"][..], "invalid characters"),
            (&["--ulimit", "nofile", "b"][..], "invalid ulimit"),
            (&["-m", "lots", "b"][..], "invalid size"),
            (&["-e", "=x", "b"][..], "invalid environment variable"),
            (
                &["--mount", "type=bind,target=/x", "b"][..],
                "source is required",
            ),
            (
                &["--mount", "type=nfs,target=/x", "b"][..],
                "unsupported mount type",
            ),
            (
                &["--expose", "8080:80", "b"][..],
                "invalid port format for --expose",
            ),
            (&["--expose", "http", "b"][..], "invalid range format"),
            (&["--expose", "90-80", "b"][..], "invalid range format"),
            (&["--expose", "70000", "b"][..], "invalid range format"),
            (
                &["--rm", "--restart", "always", "b"][..],
                "conflicting options: cannot specify both --restart and --rm",
            ),
            (
                &["--restart", "on-failure:x", "b"][..],
                "maximum retry count must be an integer",
            ),
            (
                &["--restart", ":3", "b"][..],
                "no policy provided before colon",
            ),
            (&["--pid", "bogus", "b"][..], "--pid: invalid PID mode"),
            (&["--pid", "container:", "b"][..], "--pid: invalid PID mode"),
            (
                &["--uts", "container:x", "b"][..],
                "--uts: invalid UTS mode",
            ),
            (&["--memory-swap", "lots", "b"][..], "invalid size"),
        ] {
            let e = body(args).unwrap_err().to_string();
            assert!(e.contains(msg), "{args:?}: {e}");
        }
    }

    #[test]
    fn restart_tmpfs_namespaces_and_cpu() {
        let b = body(&[
            "--restart",
            "on-failure:2",
            "--tmpfs",
            "/x:size=1m,mode=1777",
            "--tmpfs",
            "/y",
            "--pid",
            "host",
            "--ipc",
            "shareable",
            "--uts=host",
            "--memory-swap",
            "1g",
            "-c",
            "512",
            "--cpu-period",
            "100000",
            "--cpu-quota",
            "-1",
            "busybox",
        ])
        .unwrap();
        let h = &b["HostConfig"];
        assert_eq!(
            h["RestartPolicy"],
            json!({"Name": "on-failure", "MaximumRetryCount": 2})
        );
        assert_eq!(h["Tmpfs"], json!({"/x": "size=1m,mode=1777", "/y": ""}));
        assert_eq!(
            (&h["PidMode"], &h["IpcMode"], &h["UTSMode"]),
            (&json!("host"), &json!("shareable"), &json!("host"))
        );
        assert_eq!(h["MemorySwap"], 1i64 << 30);
        assert_eq!(h["CpuShares"], 512);
        assert_eq!(h["CpuPeriod"], 100_000);
        assert_eq!(h["CpuQuota"], -1);

        let b = body(&["--restart", "always", "--memory-swap=-1", "busybox"]).unwrap();
        assert_eq!(
            b["HostConfig"]["RestartPolicy"],
            json!({"Name": "always", "MaximumRetryCount": 0})
        );
        assert_eq!(b["HostConfig"]["MemorySwap"], -1);
        let b = body(&["--pid", "container:web", "--rm", "--restart", "no", "b"]).unwrap();
        assert_eq!(b["HostConfig"]["PidMode"], "container:web");
        assert_eq!(b["HostConfig"]["RestartPolicy"]["Name"], "no");
        // Unset flags leave the daemon's defaults.
        let b = body(&["busybox"]).unwrap();
        for k in [
            "RestartPolicy",
            "Tmpfs",
            "PidMode",
            "IpcMode",
            "UTSMode",
            "MemorySwap",
        ] {
            assert_eq!(b["HostConfig"].get(k), None, "{k}");
        }
        for k in ["CpuShares", "CpuPeriod", "CpuQuota"] {
            assert_eq!(b["HostConfig"].get(k), None, "{k}");
        }
    }

    #[test]
    fn mounts() {
        let m = parse_mount(
            "type=bind,src=/a,dst=/b,readonly,bind-propagation=rslave",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(
            m,
            json!({"Type": "bind", "Source": "/a", "Target": "/b", "ReadOnly": true, "BindOptions": {"Propagation": "rslave"}})
        );
        let m = parse_mount(
            "type=tmpfs,target=/t,tmpfs-size=64m,tmpfs-mode=1777",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(
            m,
            json!({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 64 << 20, "Mode": 0o1777}})
        );
        let m = parse_mount("source=vol,target=/v,ro=false", Path::new("/")).unwrap();
        assert_eq!(
            m,
            json!({"Type": "volume", "Source": "vol", "Target": "/v"})
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert_eq!(parse_bytes("1k").unwrap(), 1024);
        assert_eq!(parse_bytes("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("2MB").unwrap(), 2 << 20);
        assert!(parse_bytes("-1").is_err());
    }

    #[test]
    fn flags_after_the_image_belong_to_the_command() {
        let t = T::try_parse_from(["run", "-d", "busybox", "sh", "-c", "exit 3", "-d"]).unwrap();
        assert!(t.detach);
        assert_eq!(t.o.image_and_args, ["busybox", "sh", "-c", "exit 3", "-d"]);
    }
}
