//! `berth top`, `stats`, `rename`, `pause`, `unpause`, `update` and `port`: docker's
//! commands of the same names. `top` shows the daemon's columns, which include HOST-UID (the uid as the
//! host sees it) next to UID (as the container sees it).

use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Map, Value};

use crate::format::tabulate;
use crate::http::{enc, enc_path, Body, Client};
use crate::runopts::parse_bytes;

#[derive(Args, Debug)]
pub struct TopArgs {
    container: String,
    /// ps options (berth shows `ps -ef` columns; others are refused by the daemon)
    ps_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Disable streaming stats and only pull the first result
    #[arg(long)]
    no_stream: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RenameArgs {
    container: String,
    new_name: String,
}

#[derive(Args, Debug)]
pub struct PauseArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PortArgs {
    container: String,
    /// PRIVATE_PORT[/PROTO] (tcp when no protocol is given)
    port: Option<String>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Memory limit (e.g. 64m)
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// Swap limit equal to memory plus swap: -1 to enable unlimited swap
    #[arg(long, allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    cpus: Option<f64>,
    /// Limit CPU CFS (Completely Fair Scheduler) quota
    #[arg(long, allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    /// Limit CPU CFS (Completely Fair Scheduler) period
    #[arg(long)]
    cpu_period: Option<i64>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long)]
    cpu_shares: Option<i64>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn top(c: &Client, a: TopArgs) -> anyhow::Result<ExitCode> {
    let mut path = format!("/containers/{}/top", enc_path(&a.container));
    if !a.ps_args.is_empty() {
        path.push_str(&format!("?ps_args={}", enc(&a.ps_args.join(" "))));
    }
    let v = c.get_json(&path)?;
    let cells = |row: &Value| -> String {
        row.as_array()
            .map(|r| {
                r.iter()
                    .map(|c| c.as_str().unwrap_or_default().to_string())
                    .collect::<Vec<_>>()
                    .join("\t")
            })
            .unwrap_or_default()
    };
    let mut lines = vec![cells(&v["Titles"])];
    for p in v["Processes"].as_array().into_iter().flatten() {
        lines.push(cells(p));
    }
    print!("{}", tabulate(&lines));
    Ok(ExitCode::SUCCESS)
}

/// Every name in turn; prints each on success (as docker), errors on stderr.
fn each(names: &[String], mut f: impl FnMut(&str) -> anyhow::Result<()>) -> ExitCode {
    let mut failed = false;
    for n in names {
        match f(n) {
            Ok(()) => println!("{n}"),
            Err(e) => {
                eprintln!("{e:#}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

pub fn rename(c: &Client, a: RenameArgs) -> anyhow::Result<ExitCode> {
    c.call(
        "POST",
        &format!(
            "/containers/{}/rename?name={}",
            enc_path(&a.container),
            enc(&a.new_name)
        ),
        Body::Empty,
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn pause(c: &Client, a: PauseArgs, action: &str) -> anyhow::Result<ExitCode> {
    Ok(each(&a.containers, |n| {
        c.call(
            "POST",
            &format!("/containers/{}/{action}", enc_path(n)),
            Body::Empty,
        )?;
        Ok(())
    }))
}

impl UpdateArgs {
    fn body(&self) -> anyhow::Result<Value> {
        let mut b = Map::new();
        if let Some(m) = &self.memory {
            b.insert("Memory".into(), json!(parse_bytes(m)?));
        }
        if let Some(s) = &self.memory_swap {
            let v = if s == "-1" { -1 } else { parse_bytes(s)? };
            b.insert("MemorySwap".into(), json!(v));
        }
        if let Some(c) = self.cpus {
            if c.is_nan() || c <= 0.0 {
                bail!("invalid --cpus {c}: must be a positive number");
            }
            b.insert("NanoCpus".into(), json!((c * 1e9) as i64));
        }
        for (key, v) in [
            ("CpuQuota", self.cpu_quota),
            ("CpuPeriod", self.cpu_period),
            ("CpuShares", self.cpu_shares),
            ("PidsLimit", self.pids_limit),
        ] {
            if let Some(v) = v {
                b.insert(key.into(), json!(v));
            }
        }
        if b.is_empty() {
            bail!("you must provide one or more flags when using this command (see `berth update --help`)");
        }
        Ok(Value::Object(b))
    }
}

pub fn update(c: &Client, a: UpdateArgs) -> anyhow::Result<ExitCode> {
    let body = a.body()?;
    Ok(each(&a.containers, |n| {
        let v = c.post_json(
            &format!("/containers/{}/update", enc_path(n)),
            Some(body.clone()),
        )?;
        for w in v["Warnings"].as_array().into_iter().flatten() {
            eprintln!("WARNING: {}", w.as_str().unwrap_or_default());
        }
        Ok(())
    }))
}

/// `berth stats`: a table like docker's. With --no-stream one reading per container; else
/// the first container's stream, one table a second, until it stops or Ctrl-C.
pub fn stats(c: &Client, a: StatsArgs) -> anyhow::Result<ExitCode> {
    if a.no_stream {
        let mut lines = vec![HEADER.to_string()];
        for n in &a.containers {
            let v = c
                .get_json(&format!("/containers/{}/stats?stream=false", enc_path(n)))
                .with_context(|| format!("stats of {n}"))?;
            lines.push(stats_line(&v));
        }
        print!("{}", tabulate(&lines));
        return Ok(ExitCode::SUCCESS);
    }
    if a.containers.len() > 1 {
        bail!("berth stats streams one container at a time: name one, or use --no-stream");
    }
    let resp = c.call(
        "GET",
        &format!(
            "/containers/{}/stats?stream=true",
            enc_path(&a.containers[0])
        ),
        Body::Empty,
    )?;
    let mut out = std::io::stdout();
    for line in BufReader::new(resp).lines() {
        let line = line.context("reading the stats stream")?;
        let v: Value = serde_json::from_str(&line).context("a stats line is not JSON")?;
        // Clear the screen and print the table again, as docker does.
        write!(
            out,
            "\x1b[2J\x1b[H{}",
            tabulate(&[HEADER.to_string(), stats_line(&v)])
        )?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

const HEADER: &str = "CONTAINER ID\tNAME\tCPU %\tMEM USAGE / LIMIT\tMEM %\tPIDS";

/// One row: the same figures docker computes (cpu % over the interval against the host's
/// cpu time; memory without the inactive file cache).
fn stats_line(v: &Value) -> String {
    let u = |p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let cpu_delta = u("/cpu_stats/cpu_usage/total_usage") as f64
        - u("/precpu_stats/cpu_usage/total_usage") as f64;
    let sys_delta =
        u("/cpu_stats/system_cpu_usage") as f64 - u("/precpu_stats/system_cpu_usage") as f64;
    let cpus = u("/cpu_stats/online_cpus").max(1) as f64;
    let cpu = if cpu_delta > 0.0 && sys_delta > 0.0 {
        cpu_delta / sys_delta * cpus * 100.0
    } else {
        0.0
    };
    let stats = &v["memory_stats"]["stats"];
    let inactive = stats["total_inactive_file"]
        .as_u64()
        .or(stats["inactive_file"].as_u64())
        .unwrap_or(0);
    let usage = u("/memory_stats/usage").saturating_sub(inactive);
    let limit = u("/memory_stats/limit");
    let mem_pct = if limit > 0 {
        usage as f64 / limit as f64 * 100.0
    } else {
        0.0
    };
    let id = v["id"].as_str().unwrap_or_default();
    format!(
        "{}\t{}\t{cpu:.2}%\t{} / {}\t{mem_pct:.2}%\t{}",
        &id[..id.len().min(12)],
        v["name"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches('/'),
        crate::format::bytes_size(usage as f64),
        crate::format::bytes_size(limit as f64),
        u("/pids_stats/current"),
    )
}

/// `berth port CTR [PORT[/PROTO]]`: the host addresses the container's ports are published
/// on, read from `NetworkSettings.Ports` of inspect, with docker's output and errors.
pub fn port(c: &Client, a: PortArgs) -> anyhow::Result<ExitCode> {
    let v = c.get_json(&format!("/containers/{}/json", enc_path(&a.container)))?;
    let empty = Map::new();
    let ports = v["NetworkSettings"]["Ports"].as_object().unwrap_or(&empty);
    match port_lines(ports, &a.container, a.port.as_deref()) {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(msg) => {
            eprintln!("{msg}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// What `port` prints: with `port`, that port's host addresses (an error if it has none);
/// without, `PORT/PROTO -> HOST:PORT` for every binding. Sorted as docker sorts them.
fn port_lines(
    ports: &Map<String, Value>,
    container: &str,
    port: Option<&str>,
) -> Result<Vec<String>, String> {
    let addr = |b: &Value| {
        let ip = b["HostIp"].as_str().unwrap_or("");
        let port = b["HostPort"].as_str().unwrap_or("");
        // Go's net.JoinHostPort: an IPv6 address goes in brackets.
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    };
    let mut out = Vec::new();
    match port {
        Some(spec) => {
            let (number, proto) = spec.split_once('/').unwrap_or((spec, ""));
            let proto = if proto.is_empty() { "tcp" } else { proto };
            if number.parse::<u16>().is_err() {
                // docker's words (its Go parser's).
                let why = if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
                    "value out of range"
                } else {
                    "invalid syntax"
                };
                return Err(format!(
                    "Error: invalid port ({number}): strconv.ParseUint: parsing {number:?}: {why}"
                ));
            }
            let bindings = ports
                .get(&format!("{number}/{proto}"))
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    format!("Error: No public port '{spec}' published for {container}")
                })?;
            out.extend(bindings.iter().map(addr));
        }
        None => {
            for (from, bindings) in ports {
                for b in bindings.as_array().into_iter().flatten() {
                    out.push(format!("{from} -> {}", addr(b)));
                }
            }
        }
    }
    out.sort_by(|a, b| natural_cmp(a, b));
    Ok(out)
}

/// Natural order (docker's sortorder.NaturalLess): runs of digits compare as numbers.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (digits(a), digits(b));
                let trim = |s: &[u8]| {
                    let z = s.iter().take_while(|c| **c == b'0').count();
                    s[z.min(s.len().saturating_sub(1))..].to_vec()
                };
                let (da, db) = (trim(&a[..na]), trim(&b[..nb]));
                let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(&db));
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_row_like_docker() {
        let v = json!({
            "id": "0123456789abcdef", "name": "/web",
            "cpu_stats": {"cpu_usage": {"total_usage": 300}, "system_cpu_usage": 2000, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 100}, "system_cpu_usage": 1000},
            "memory_stats": {"usage": 3 << 20, "limit": 1u64 << 30, "stats": {"total_inactive_file": 1 << 20}},
            "pids_stats": {"current": 3},
        });
        assert_eq!(
            stats_line(&v),
            "0123456789ab\tweb\t40.00%\t2MiB / 1GiB\t0.20%\t3"
        );
        assert_eq!(crate::format::bytes_size(1536.0), "1.5KiB");
    }

    #[test]
    fn update_body() {
        let a = UpdateArgs {
            memory: Some("64m".into()),
            memory_swap: Some("-1".into()),
            cpus: Some(0.5),
            cpu_quota: None,
            cpu_period: None,
            cpu_shares: None,
            pids_limit: Some(10),
            containers: vec!["x".into()],
        };
        assert_eq!(
            a.body().unwrap(),
            json!({"Memory": 64 << 20, "MemorySwap": -1, "NanoCpus": 500_000_000, "PidsLimit": 10})
        );
    }

    fn ports(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn unpublished_ports_give_docker_errors() {
        let p = ports(json!({"80/tcp": null}));
        assert_eq!(port_lines(&p, "web", None).unwrap(), Vec::<String>::new());
        assert_eq!(
            port_lines(&p, "web", Some("80/tcp")).unwrap_err(),
            "Error: No public port '80/tcp' published for web"
        );
        assert_eq!(
            port_lines(&p, "web", Some("80")).unwrap_err(),
            "Error: No public port '80' published for web"
        );
        let e = port_lines(&p, "web", Some("http")).unwrap_err();
        assert!(e.starts_with("Error: invalid port (http): "), "{e}");
        let e = port_lines(&p, "web", Some("70000/udp")).unwrap_err();
        assert!(e.contains("value out of range"), "{e}");
    }

    #[test]
    fn published_ports_print_as_docker_prints_them() {
        let p = ports(json!({
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
            "9/udp": [{"HostIp": "127.0.0.1", "HostPort": "9"}],
        }));
        assert_eq!(
            port_lines(&p, "web", None).unwrap(),
            [
                "9/udp -> 127.0.0.1:9",
                "80/tcp -> 0.0.0.0:8080",
                "80/tcp -> [::]:8080"
            ]
        );
        assert_eq!(
            port_lines(&p, "web", Some("80")).unwrap(),
            ["0.0.0.0:8080", "[::]:8080"]
        );
        assert!(natural_cmp("9/udp", "80/tcp").is_lt());
    }
}
