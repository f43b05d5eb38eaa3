//! `berth events`: docker's command of that name. Prints the daemon's events as they come,
//! one a line, from `--since` (replay) until `--until` (or Ctrl-C).

use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use berth_engine::timefmt::rfc3339_nano;
use clap::Args;
use serde_json::Value;

use crate::format::Template;
use crate::http::{enc, Body, Client};

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Show all events created since timestamp (unix seconds, RFC 3339, or a duration like 10m)
    #[arg(long)]
    since: Option<String>,
    /// Stream events until this timestamp
    #[arg(long)]
    until: Option<String>,
    /// Filter output based on conditions provided (type, container, image, event, label, volume)
    #[arg(short = 'f', long = "filter")]
    filters: Vec<String>,
    /// Format output using a Go template ('{{json .}}' prints each event as JSON)
    #[arg(long)]
    format: Option<String>,
}

pub fn events(c: &Client, a: EventsArgs) -> anyhow::Result<ExitCode> {
    let mut q = String::new();
    for (key, value) in [("since", &a.since), ("until", &a.until)] {
        if let Some(v) = value {
            q.push_str(&format!("&{key}={}", enc(&timestamp(v)?)));
        }
    }
    q.push_str(&crate::images::filters_query(&a.filters)?);
    let template = a.format.as_deref().map(Template::parse).transpose()?;
    let resp = c
        .call(
            "GET",
            &format!("/events?{}", q.trim_start_matches('&')),
            Body::Empty,
        )
        .context("events")?;
    let mut out = std::io::stdout();
    for line in BufReader::new(resp).lines() {
        let line = line.context("reading the events stream")?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).context("an event is not JSON")?;
        let text = match &template {
            Some(t) => t.render_value(&v),
            None => plain_line(&v),
        };
        writeln!(out, "{text}")?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A `--since`/`--until` value as the daemon takes it: a duration (`10m`, `1h30m`) is
/// counted back from now, as docker does; anything else goes as given.
fn timestamp(v: &str) -> anyhow::Result<String> {
    if v.is_empty() {
        bail!("empty timestamp: give unix seconds, RFC 3339 or a duration like 10m");
    }
    match parse_duration(v) {
        Some(d) => {
            let t = SystemTime::now()
                .checked_sub(d)
                .unwrap_or(UNIX_EPOCH)
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            Ok(format!("{}.{:09}", t.as_secs(), t.subsec_nanos()))
        }
        None => Ok(v.to_string()),
    }
}

/// Go's durations with units h, m, s, ms (e.g. `1h30m`, `90s`).
fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest
            .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
            .filter(|&n| n > 0)?;
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|ch: char| ch.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..u] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[u..];
    }
    Some(Duration::from_secs_f64(total))
}

/// Docker's default line: `TIME TYPE ACTION ID (key=value, ...)`, attributes by key.
fn plain_line(v: &Value) -> String {
    let nanos = v["timeNano"].as_i64().unwrap_or(0).max(0) as u64;
    let time = rfc3339_nano(UNIX_EPOCH + Duration::from_nanos(nanos));
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let mut line = format!("{time} {} {} {}", s("/Type"), s("/Action"), s("/Actor/ID"));
    if let Some(attrs) = v["Actor"]["Attributes"]
        .as_object()
        .filter(|m| !m.is_empty())
    {
        let mut pairs: Vec<String> = attrs
            .iter()
            .map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or_default()))
            .collect();
        pairs.sort();
        line.push_str(&format!(" ({})", pairs.join(", ")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_line_is_dockers() {
        let v = json!({"Type": "container", "Action": "start", "timeNano": 1_000_000_001i64,
            "Actor": {"ID": "abc", "Attributes": {"name": "web", "image": "busybox"}}});
        assert_eq!(
            plain_line(&v),
            "1970-01-01T00:00:01.000000001Z container start abc (image=busybox, name=web)"
        );
    }

    #[test]
    fn durations_count_back_and_timestamps_pass() {
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1700000000"), None);
        assert_eq!(timestamp("1700000000").unwrap(), "1700000000");
        let t: f64 = timestamp("10s").unwrap().parse().unwrap();
        assert!(t > 1_700_000_000.0);
    }
}
