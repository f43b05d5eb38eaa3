//! Container commands: `ps`, `create`, `run`, `start`, `attach`, `logs`, `wait`, `stop`,
//! `kill`, `restart`, `rm`, `inspect`.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

use crate::format::{ellipsis, human_duration, now_unix, short_id, Row, Template};
use crate::http::{enc, enc_path, Body, Client, HttpError, Response};
use crate::runopts::ContainerOpts;
use crate::session::{detach_keys, AttachSpec, Session};
use crate::stream;

/// docker's status when the failure is the CLI's or the daemon's, not the container's.
pub const DAEMON_ERROR: u8 = 125;

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    all: bool,
    /// Only display container IDs
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long = "last", allow_hyphen_values = true)]
    last: Option<i64>,
    /// Show the latest created container (includes all states)
    #[arg(short = 'l', long)]
    latest: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Filter output based on conditions provided (KEY=VALUE)
    #[arg(short = 'f', long = "filter")]
    filters: Vec<String>,
    /// Format output: table, json, or a Go-style template
    #[arg(long)]
    format: Option<String>,
    /// Display total file sizes
    #[arg(short = 's', long)]
    size: bool,
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct CreateArgs {
    #[command(flatten)]
    opts: ContainerOpts,
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Run container in background and print container ID
    #[arg(short = 'd', long)]
    detach: bool,
    /// Proxy received signals to the process
    #[arg(long = "sig-proxy", default_value_t = true, action = clap::ArgAction::Set)]
    sig_proxy: bool,
    /// Override the key sequence for detaching a container (default ctrl-p,ctrl-q)
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    #[command(flatten)]
    opts: ContainerOpts,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short = 'a', long)]
    attach: bool,
    /// Attach container's STDIN
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Override the key sequence for detaching a container (default ctrl-p,ctrl-q)
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    no_stdin: bool,
    /// Proxy all received signals to the process
    #[arg(long = "sig-proxy", default_value_t = true, action = clap::ArgAction::Set)]
    sig_proxy: bool,
    /// Override the key sequence for detaching a container (default ctrl-p,ctrl-q)
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    container: String,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short = 'f', long)]
    follow: bool,
    /// Number of lines to show from the end of the logs ("all" for everything)
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps
    #[arg(short = 't', long)]
    timestamps: bool,
    /// Show logs since a timestamp (2013-01-02T13:23:37Z) or relative (42m)
    #[arg(long)]
    since: Option<String>,
    /// Show logs before a timestamp or relative time
    #[arg(long)]
    until: Option<String>,
    container: String,
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "time", visible_alias = "timeout")]
    time: Option<i64>,
    /// Signal to send to the container
    #[arg(short = 's', long)]
    signal: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short = 's', long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short = 'f', long)]
    force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short = 'v', long)]
    volumes: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output using a Go-style template
    #[arg(short = 'f', long)]
    format: Option<String>,
    /// Only container or image
    #[arg(long = "type")]
    kind: Option<String>,
    #[arg(required = true)]
    names: Vec<String>,
}

pub fn ps(c: &Client, a: PsArgs) -> anyhow::Result<ExitCode> {
    let limit = if a.latest {
        Some(1)
    } else {
        a.last.filter(|n| *n > 0)
    };
    let all = a.all || limit.is_some();
    let mut q = format!("/containers/json?all={}&size={}", all as u8, a.size as u8);
    if let Some(n) = limit {
        q.push_str(&format!("&limit={n}"));
    }
    q.push_str(&crate::images::filters_query(&a.filters)?);
    let list = c.get_json(&q)?;
    let now = now_unix();
    let rows: Vec<Row> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|ct| ps_row(ct, !a.no_trunc, now))
        .collect();
    if a.quiet {
        for r in &rows {
            println!("{}", r["ID"].as_str().unwrap_or(""));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let default = if a.size {
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}\t{{.Size}}"
    } else {
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
    };
    let format = match a.format.as_deref() {
        None | Some("table") => default,
        Some(f) => f,
    };
    let headers = [
        ("ID", "CONTAINER ID"),
        ("Image", "IMAGE"),
        ("Command", "COMMAND"),
        ("RunningFor", "CREATED"),
        ("CreatedAt", "CREATED AT"),
        ("Status", "STATUS"),
        ("State", "STATE"),
        ("Ports", "PORTS"),
        ("Names", "NAMES"),
        ("Size", "SIZE"),
        ("Labels", "LABELS"),
        ("Mounts", "MOUNTS"),
        ("Networks", "NETWORKS"),
        ("LocalVolumes", "LOCAL VOLUMES"),
    ];
    print!("{}", Template::parse(format)?.render(&rows, &headers));
    Ok(ExitCode::SUCCESS)
}

/// One container of `GET /containers/json` as the fields docker's templates know.
fn ps_row(ct: &Value, trunc: bool, now: i64) -> Row {
    let s = |k: &str| ct[k].as_str().unwrap_or("").to_string();
    let id = s("Id");
    let command = s("Command");
    let names: Vec<String> = ct["Names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|n| n.trim_start_matches('/').to_string())
        .filter(|n| !trunc || !n.contains('/'))
        .collect();
    let labels: Vec<String> = ct["Labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    let mounts: Vec<String> = ct["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let name = m["Name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .or(m["Source"].as_str())
                .unwrap_or("");
            if trunc {
                ellipsis(name, 15)
            } else {
                name.to_string()
            }
        })
        .collect();
    let networks: Vec<String> = ct["NetworkSettings"]["Networks"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    let created = ct["Created"].as_i64().unwrap_or(0);
    let mut r = Row::new();
    r.insert("ID", json!(if trunc { short_id(&id) } else { id }));
    r.insert("Image", json!(s("Image")));
    r.insert(
        "Command",
        json!(json!(if trunc {
            ellipsis(&command, 20)
        } else {
            command
        })
        .to_string()),
    );
    r.insert("CreatedAt", json!(format_time(created)));
    r.insert(
        "RunningFor",
        json!(format!("{} ago", human_duration(now - created))),
    );
    r.insert("Ports", json!(displayable_ports(&ct["Ports"])));
    r.insert("Platform", Value::Null);
    r.insert("State", json!(s("State")));
    r.insert("Status", json!(s("Status")));
    r.insert("Names", json!(names.join(",")));
    r.insert("Labels", json!(labels.join(",")));
    r.insert("Mounts", json!(mounts.join(",")));
    r.insert("Networks", json!(networks.join(",")));
    r.insert(
        "LocalVolumes",
        json!(ct["Mounts"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|m| m["Type"] == "volume").count())
            .to_string()),
    );
    let size = match (ct["SizeRw"].as_f64(), ct["SizeRootFs"].as_f64()) {
        (Some(rw), Some(root)) => format!(
            "{} (virtual {})",
            crate::format::human_size(rw),
            crate::format::human_size(root)
        ),
        (Some(rw), None) => crate::format::human_size(rw),
        _ => "0B".into(),
    };
    r.insert("Size", json!(size));
    r
}

/// The API's `Ports` list as docker's `ps` shows it (the CLI's DisplayablePorts): sorted
/// by container port; consecutive ports of one protocol (and host address) grouped into
/// ranges (`7000-7002/tcp, 53/udp`); a port published on another host port last, as
/// `0.0.0.0:8080->80/tcp`.
pub fn displayable_ports(ports: &Value) -> String {
    struct Port {
        private: u16,
        ip: String,
        public: u16,
        kind: String,
    }
    let num = |v: &Value| v.as_u64().and_then(|n| u16::try_from(n).ok()).unwrap_or(0);
    let mut list: Vec<Port> = ports
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| Port {
            private: num(&p["PrivatePort"]),
            ip: p["IP"].as_str().unwrap_or("").to_string(),
            public: num(&p["PublicPort"]),
            kind: p["Type"].as_str().unwrap_or("").to_string(),
        })
        .collect();
    list.sort_by(|a, b| {
        (a.private, &a.ip, a.public, &a.kind).cmp(&(b.private, &b.ip, b.public, &b.kind))
    });
    // An IPv6 host address is bracketed, as Go's net.JoinHostPort does.
    let host = |ip: &str| {
        if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        }
    };
    let group = |(ip, kind): &(String, String), first: u16, last: u16| {
        let mut g = first.to_string();
        if first != last {
            g = format!("{g}-{last}");
        }
        if !ip.is_empty() {
            g = format!("{}:{g}->{g}", host(ip));
        }
        format!("{g}/{kind}")
    };
    // Groups by (host address, protocol), in the order they were first seen.
    let mut groups: Vec<((String, String), u16, u16)> = Vec::new();
    let mut out = Vec::new();
    let mut mappings = Vec::new();
    for p in list {
        if !p.ip.is_empty() && p.public != p.private {
            mappings.push(format!(
                "{}:{}->{}/{}",
                host(&p.ip),
                p.public,
                p.private,
                p.kind
            ));
            continue;
        }
        let key = (p.ip, p.kind);
        match groups.iter_mut().find(|g| g.0 == key) {
            None => groups.push((key, p.private, p.private)),
            Some(g) if g.2.checked_add(1) == Some(p.private) => g.2 = p.private,
            Some(g) => {
                out.push(group(&g.0, g.1, g.2));
                (g.1, g.2) = (p.private, p.private);
            }
        }
    }
    out.extend(
        groups
            .iter()
            .map(|(k, first, last)| group(k, *first, *last)),
    );
    out.extend(mappings);
    out.join(", ")
}

/// `secs` since the epoch as docker's `CreatedAt`: `2006-01-02 15:04:05 +0000 UTC`.
pub fn format_time(secs: i64) -> String {
    let fmt = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] +0000 UTC");
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(fmt).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// `--since`/`--until` as the API's unix seconds: a unix time, an RFC 3339 time
/// (`2013-01-02T13:23:37Z`, or a date), or a duration before `now` (`42m`, `1h30m`, `10s`).
pub fn parse_since(s: &str, now: i64) -> anyhow::Result<String> {
    let bad = || {
        anyhow::anyhow!(
            "invalid time {s:?}: use a unix time, 2013-01-02T13:23:37Z, or a duration such as 42m"
        )
    };
    if s.chars().all(|c| c.is_ascii_digit() || c == '.') && !s.is_empty() {
        return Ok(s.to_string());
    }
    if s.ends_with(|c: char| c.is_ascii_alphabetic())
        && s.starts_with(|c: char| c.is_ascii_digit())
        && !s.contains('-')
    {
        let mut total = 0f64;
        let mut num = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
                continue;
            }
            let mut unit = c.to_string();
            if c == 'm' && chars.peek() == Some(&'s') {
                unit.push(chars.next().expect("peeked"));
            }
            let n: f64 = num.parse().map_err(|_| bad())?;
            num.clear();
            total += n * match unit.as_str() {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 0.001,
                _ => return Err(bad()),
            };
        }
        if !num.is_empty() {
            return Err(bad());
        }
        return Ok((now - total as i64).to_string());
    }
    // RFC 3339 (UTC `Z` or ±hh:mm), a time without a zone (taken as UTC), or a bare date.
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| {
            PrimitiveDateTime::parse(
                s,
                format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
            )
            .map(PrimitiveDateTime::assume_utc)
        })
        .or_else(|_| {
            Date::parse(s, format_description!("[year]-[month]-[day]"))
                .map(|d| d.midnight().assume_utc())
        })
        .map_err(|_| bad())?;
    Ok(t.unix_timestamp().to_string())
}

/// Creates the container; a missing image is pulled first, as docker does.
fn create_container(c: &Client, opts: &ContainerOpts, detach: bool) -> anyhow::Result<String> {
    let cwd = std::env::current_dir().context("cannot find the current directory")?;
    let console = if opts.tty {
        stream::terminal_size()
    } else {
        None
    };
    let body = opts.to_create_body(detach, &|k| std::env::var(k).ok(), &cwd, console)?;
    let path = match &opts.name {
        Some(n) => format!("/containers/create?name={}", enc(n)),
        None => "/containers/create".to_string(),
    };
    let created = match c.post_json(&path, Some(body.clone())) {
        Ok(v) => v,
        Err(HttpError::Api {
            status: 404,
            message,
        }) if message.contains("No such image") => {
            let image = opts.image();
            let shown = if crate::images::split_reference(image).1.is_some() {
                image.to_string()
            } else {
                format!("{image}:latest")
            };
            eprintln!("Unable to find image '{shown}' locally");
            crate::registry::pull_missing(c, image)?;
            c.post_json(&path, Some(body))?
        }
        Err(e) => return Err(e.into()),
    };
    for w in created["Warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        eprintln!("WARNING: {w}");
    }
    created["Id"]
        .as_str()
        .map(str::to_string)
        .context("the daemon's create answer has no Id")
}

pub fn create(c: &Client, a: CreateArgs) -> anyhow::Result<ExitCode> {
    let id = create_container(c, &a.opts, false)?;
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

pub fn run(c: &Client, a: RunArgs) -> anyhow::Result<ExitCode> {
    match run_container(c, &a) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("berth: {e:#}");
            eprintln!("See 'berth run --help'.");
            Ok(ExitCode::from(DAEMON_ERROR))
        }
    }
}

fn run_container(c: &Client, a: &RunArgs) -> anyhow::Result<ExitCode> {
    let o = &a.opts;
    if o.tty && o.interactive && !io::stdin().is_terminal() {
        bail!("the input device is not a TTY");
    }
    let id = create_container(c, o, a.detach)?;
    if a.detach {
        c.call("POST", &format!("/containers/{id}/start"), Body::Empty)?;
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let (stdin, stdout, stderr) = o.attach_streams(false)?;
    let spec = AttachSpec {
        tty: o.tty,
        stdin,
        stdout,
        stderr,
        auto_remove: o.rm,
        sig_proxy: a.sig_proxy,
        detach_keys: detach_keys(&a.detach_keys)?,
    };
    let session = Session::open(c, &id, spec)?;
    c.call("POST", &format!("/containers/{id}/start"), Body::Empty)?;
    session.finish(c)
}

pub fn start(c: &Client, a: StartArgs) -> anyhow::Result<ExitCode> {
    if a.attach || a.interactive {
        if a.containers.len() > 1 {
            bail!("you cannot start and attach multiple containers at once");
        }
        let ct = c.get_json(&format!("/containers/{}/json", enc_path(&a.containers[0])))?;
        let id = container_id(&ct)?;
        let spec = AttachSpec::existing(&ct, a.interactive, true, &a.detach_keys)?;
        let session = Session::open(c, &id, spec)?;
        c.call("POST", &format!("/containers/{id}/start"), Body::Empty)?;
        return session.finish(c);
    }
    call_each(c, "POST", &a.containers, "/start")
}

pub fn attach(c: &Client, a: AttachArgs) -> anyhow::Result<ExitCode> {
    let ct = c.get_json(&format!("/containers/{}/json", enc_path(&a.container)))?;
    if !ct["State"]["Running"].as_bool().unwrap_or(false) {
        bail!("You cannot attach to a stopped container, start it first");
    }
    let id = container_id(&ct)?;
    let spec = AttachSpec::existing(&ct, !a.no_stdin, a.sig_proxy, &a.detach_keys)?;
    // finish() sends the terminal's size first.
    Session::open(c, &id, spec)?.finish(c)
}

/// The `Id` of a container's inspect answer.
fn container_id(ct: &Value) -> anyhow::Result<String> {
    ct["Id"]
        .as_str()
        .map(str::to_string)
        .context("inspect answer has no Id")
}

pub fn logs(c: &Client, a: LogsArgs) -> anyhow::Result<ExitCode> {
    let ct = c.get_json(&format!("/containers/{}/json", enc_path(&a.container)))?;
    let tty = ct["Config"]["Tty"].as_bool().unwrap_or(false);
    let now = now_unix();
    let mut q = format!(
        "/containers/{}/logs?stdout=1&stderr=1&follow={}&timestamps={}&tail={}",
        enc_path(&a.container),
        a.follow as u8,
        a.timestamps as u8,
        enc(&a.tail)
    );
    if let Some(s) = &a.since {
        q.push_str(&format!("&since={}", parse_since(s, now)?));
    }
    if let Some(u) = &a.until {
        q.push_str(&format!("&until={}", parse_since(u, now)?));
    }
    let mut resp = c.call("GET", &q, Body::Empty)?;
    if tty {
        stream::copy_raw(&mut resp, &mut io::stdout().lock())?;
    } else {
        stream::demux(
            &mut resp,
            &mut io::stdout().lock(),
            &mut io::stderr().lock(),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `f` on each name, printing what it returns on success and the error otherwise
/// (docker's way for stop, kill, rm, wait, ...); fails if any failed.
fn for_each(
    names: &[String],
    mut f: impl FnMut(&str) -> anyhow::Result<String>,
) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for n in names {
        match f(n) {
            Ok(out) => println!("{out}"),
            Err(e) => {
                eprintln!("{e:#}");
                failed = true;
            }
        }
    }
    Ok(ExitCode::from(u8::from(failed)))
}

/// `METHOD /containers/{name}{rest}` for each name, printing the names (see [`for_each`]).
fn call_each(c: &Client, method: &str, names: &[String], rest: &str) -> anyhow::Result<ExitCode> {
    for_each(names, |n| {
        let path = format!("/containers/{}{rest}", enc_path(n));
        c.call(method, &path, Body::Empty)?;
        Ok(n.to_string())
    })
}

pub fn wait(c: &Client, a: NamesArgs) -> anyhow::Result<ExitCode> {
    for_each(&a.containers, |n| {
        let v = c.post_json(&format!("/containers/{}/wait", enc_path(n)), None)?;
        Ok(v["StatusCode"].as_i64().unwrap_or(-1).to_string())
    })
}

fn stop_query(time: Option<i64>, signal: &Option<String>) -> String {
    let mut q = Vec::new();
    if let Some(t) = time {
        q.push(format!("t={t}"));
    }
    if let Some(s) = signal {
        q.push(format!("signal={}", enc(s)));
    }
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

pub fn stop(c: &Client, a: StopArgs) -> anyhow::Result<ExitCode> {
    let rest = format!("/stop{}", stop_query(a.time, &a.signal));
    call_each(c, "POST", &a.containers, &rest)
}

pub fn restart(c: &Client, a: StopArgs) -> anyhow::Result<ExitCode> {
    let rest = format!("/restart{}", stop_query(a.time, &a.signal));
    call_each(c, "POST", &a.containers, &rest)
}

pub fn kill(c: &Client, a: KillArgs) -> anyhow::Result<ExitCode> {
    let rest = format!("/kill?signal={}", enc(&a.signal));
    call_each(c, "POST", &a.containers, &rest)
}

pub fn rm(c: &Client, a: RmArgs) -> anyhow::Result<ExitCode> {
    let rest = format!("?force={}&v={}", a.force as u8, a.volumes as u8);
    call_each(c, "DELETE", &a.containers, &rest)
}

pub fn inspect(c: &Client, a: InspectArgs) -> anyhow::Result<ExitCode> {
    // Kept as the daemon's text, so the output keeps its key order (as docker's does).
    let mut found: Vec<String> = Vec::new();
    let mut failed = false;
    for n in &a.names {
        let mut paths = Vec::new();
        if a.kind.as_deref() != Some("image") {
            paths.push(format!("/containers/{}/json", enc_path(n)));
        }
        if a.kind.as_deref() != Some("container") {
            paths.push(format!("/images/{}/json", enc_path(n)));
        }
        let mut got = None;
        for p in paths {
            match c.call("GET", &p, Body::Empty) {
                Ok(resp) => {
                    got = Some(answer_text(resp)?);
                    break;
                }
                Err(HttpError::Api { status: 404, .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        match got {
            Some(v) => found.push(v),
            None => {
                eprintln!("Error: No such object: {n}");
                failed = true;
            }
        }
    }
    print_inspected(&found, a.format.as_deref())?;
    Ok(ExitCode::from(u8::from(failed)))
}

/// An inspect answer's text, kept as the daemon wrote it (so that its keys keep their
/// order, as docker's do); an answer that is not JSON is an error here, not when printed.
pub fn answer_text(resp: Response) -> anyhow::Result<String> {
    let bytes = resp.bytes().context("reading the daemon's answer")?;
    let text = String::from_utf8(bytes).context("the daemon's answer is not UTF-8")?;
    serde_json::from_str::<Value>(&text).context("the daemon's answer is not JSON")?;
    Ok(text)
}

/// Prints the inspect answers `found` (the daemon's JSON texts, kept as they are so that
/// the keys keep their order, as docker's do): through the `--format` template, one line
/// each, or as one indented JSON array.
pub fn print_inspected(found: &[String], format: Option<&str>) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match format {
        Some(f) => {
            let t = Template::parse(f)?;
            for text in found {
                let v: Value =
                    serde_json::from_str(text).context("the daemon's answer is not JSON")?;
                writeln!(out, "{}", t.render_value(&v))?;
            }
        }
        None => {
            let texts: Vec<&str> = found.iter().map(|t| t.trim()).collect();
            let joined = format!("[{}]", texts.join(","));
            writeln!(out, "{}", crate::format::indent_json(&joined))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(format_time(1_795_881_904), "2026-11-28 16:05:04 +0000 UTC");
        assert_eq!(
            parse_since("2026-11-28T16:05:04Z", 0).unwrap(),
            "1795881904"
        );
        assert_eq!(
            parse_since("2026-11-28T17:05:04+01:00", 0).unwrap(),
            "1795881904"
        );
        assert_eq!(parse_since("1970-01-02", 0).unwrap(), "86400");
        assert_eq!(parse_since("1795881904", 0).unwrap(), "1795881904");
        assert_eq!(parse_since("10m", 1000).unwrap(), "400");
        assert_eq!(parse_since("1h30s", 4000).unwrap(), "370");
        assert!(parse_since("yesterday", 0).is_err());
        assert!(parse_since("10x", 0).is_err());
    }

    #[test]
    fn ports_as_docker_ps_shows_them() {
        let p = |v: Value| displayable_ports(&v);
        assert_eq!(p(json!(null)), "");
        assert_eq!(p(json!([])), "");
        assert_eq!(
            p(json!([
                {"PrivatePort": 80, "Type": "tcp"},
                {"PrivatePort": 53, "Type": "udp"}
            ])),
            "53/udp, 80/tcp"
        );
        assert_eq!(
            p(json!([
                {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                {"PrivatePort": 443, "Type": "tcp"}
            ])),
            "443/tcp, 0.0.0.0:8080->80/tcp, [::]:8080->80/tcp"
        );
        // Consecutive ports of one protocol and address become a range.
        assert_eq!(
            p(json!([
                {"PrivatePort": 7002, "Type": "tcp"},
                {"PrivatePort": 7000, "Type": "tcp"},
                {"PrivatePort": 7001, "Type": "tcp"},
                {"PrivatePort": 7001, "Type": "udp"},
                {"PrivatePort": 9000, "Type": "tcp"},
                {"IP": "0.0.0.0", "PrivatePort": 22, "PublicPort": 22, "Type": "tcp"}
            ])),
            "7000-7002/tcp, 0.0.0.0:22->22/tcp, 9000/tcp, 7001/udp"
        );
    }

    #[test]
    fn ps_rows_match_docker() {
        let ct = json!({
            "Id": "0123456789abcdef0123", "Names": ["/demo"], "Image": "busybox",
            "Command": "sh -c 'exit 3' with a long tail", "Created": 100, "State": "exited",
            "Status": "Exited (3) 2 seconds ago", "Labels": {"a": "1"}, "Mounts": [],
            "NetworkSettings": {"Networks": {"none": {}}}
        });
        let r = ps_row(&ct, true, 160);
        assert_eq!(r["ID"], "0123456789ab");
        assert_eq!(r["Command"], "\"sh -c 'exit 3' with…\"");
        assert_eq!(r["RunningFor"], "About a minute ago");
        assert_eq!(r["Names"], "demo");
        assert_eq!(r["Labels"], "a=1");
        assert_eq!(r["Networks"], "none");
        let r = ps_row(&ct, false, 160);
        assert_eq!(r["ID"], "0123456789abcdef0123");
        assert_eq!(r["Command"], "\"sh -c 'exit 3' with a long tail\"");
    }
}
