//! `berth volume create|ls|inspect|rm|prune`, with docker's output.

use std::io;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use crate::containers::{answer_text, print_inspected};
use crate::format::{human_size, Row, Template};
use crate::http::{enc_path, Body, Client};
use crate::images::filters_query;

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume
    Create(VolumeCreateArgs),
    /// List volumes
    #[command(alias = "list")]
    Ls(VolumeLsArgs),
    /// Display detailed information on one or more volumes
    Inspect(VolumeInspectArgs),
    /// Remove one or more volumes
    #[command(alias = "remove")]
    Rm(VolumeRmArgs),
    /// Remove unused local volumes
    Prune(VolumePruneArgs),
}

#[derive(Args, Debug)]
pub struct VolumeCreateArgs {
    /// Specify volume driver name
    #[arg(short = 'd', long, default_value = "local")]
    driver: String,
    /// Set metadata for a volume (KEY=VALUE)
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Set driver specific options (KEY=VALUE)
    #[arg(short = 'o', long = "opt")]
    opts: Vec<String>,
    /// Specify volume name
    #[arg(long = "name")]
    name_flag: Option<String>,
    name: Option<String>,
}

#[derive(Args, Debug)]
pub struct VolumeLsArgs {
    /// Provide filter values (e.g. "dangling=true")
    #[arg(short = 'f', long = "filter")]
    filters: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Only display volume names
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(Args, Debug)]
pub struct VolumeInspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    format: Option<String>,
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct VolumeRmArgs {
    /// Force the removal of one or more volumes
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct VolumePruneArgs {
    /// Remove all unused volumes, not just anonymous ones
    #[arg(short = 'a', long)]
    all: bool,
    /// Provide filter values (e.g. "label=<label>")
    #[arg(long = "filter")]
    filters: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
}

pub fn run(c: &Client, cmd: VolumeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        VolumeCommand::Create(a) => create(c, a),
        VolumeCommand::Ls(a) => ls(c, a),
        VolumeCommand::Inspect(a) => inspect(c, a),
        VolumeCommand::Rm(a) => rm(c, a),
        VolumeCommand::Prune(a) => prune(c, a),
    }
}

/// `KEY=VALUE` pairs as a JSON object (a bare `KEY` has an empty value, as in docker).
fn key_values(pairs: &[String]) -> Value {
    let mut m = Map::new();
    for p in pairs {
        let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
        m.insert(k.to_string(), json!(v));
    }
    Value::Object(m)
}

fn create(c: &Client, a: VolumeCreateArgs) -> anyhow::Result<ExitCode> {
    let name = match (&a.name_flag, &a.name) {
        (Some(f), Some(n)) if f != n => {
            anyhow::bail!(
                "conflicting options: either specify --name or provide positional arg, not both"
            )
        }
        (Some(n), _) | (None, Some(n)) => n.clone(),
        (None, None) => String::new(),
    };
    let body = json!({
        "Name": name,
        "Driver": a.driver,
        "DriverOpts": key_values(&a.opts),
        "Labels": key_values(&a.labels),
    });
    let v = c.post_json("/volumes/create", Some(body))?;
    println!("{}", v["Name"].as_str().unwrap_or(""));
    Ok(ExitCode::SUCCESS)
}

fn ls(c: &Client, a: VolumeLsArgs) -> anyhow::Result<ExitCode> {
    let q = filters_query(&a.filters)?;
    let list = c.get_json(&format!("/volumes?{}", q.trim_start_matches('&')))?;
    let vols = list["Volumes"].as_array().cloned().unwrap_or_default();
    if a.quiet {
        for v in &vols {
            println!("{}", v["Name"].as_str().unwrap_or(""));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Row> = vols
        .iter()
        .map(|v| {
            let mut r = Row::new();
            r.insert("Driver", v["Driver"].clone());
            r.insert("Name", v["Name"].clone());
            r.insert("Mountpoint", v["Mountpoint"].clone());
            r.insert("Scope", v["Scope"].clone());
            r.insert("CreatedAt", v["CreatedAt"].clone());
            r.insert("Labels", json!(labels_text(&v["Labels"])));
            r
        })
        .collect();
    let default = "table {{.Driver}}\t{{.Name}}";
    let format = match a.format.as_deref() {
        None | Some("table") => default,
        Some(f) => f,
    };
    let headers = [
        ("Driver", "DRIVER"),
        ("Name", "VOLUME NAME"),
        ("Mountpoint", "MOUNTPOINT"),
        ("Scope", "SCOPE"),
        ("CreatedAt", "CREATED"),
        ("Labels", "LABELS"),
    ];
    print!("{}", Template::parse(format)?.render(&rows, &headers));
    Ok(ExitCode::SUCCESS)
}

/// `a=b,c=d`, as `docker volume ls --format '{{.Labels}}'` prints them.
fn labels_text(labels: &Value) -> String {
    labels
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn inspect(c: &Client, a: VolumeInspectArgs) -> anyhow::Result<ExitCode> {
    let mut found = Vec::new();
    let mut failed = false;
    for n in &a.names {
        match c.call("GET", &format!("/volumes/{}", enc_path(n)), Body::Empty) {
            Ok(resp) => found.push(answer_text(resp)?),
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                failed = true;
            }
        }
    }
    print_inspected(&found, a.format.as_deref())?;
    Ok(ExitCode::from(u8::from(failed)))
}

fn rm(c: &Client, a: VolumeRmArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for n in &a.names {
        let path = format!("/volumes/{}?force={}", enc_path(n), a.force as u8);
        match c.call("DELETE", &path, Body::Empty) {
            Ok(_) => println!("{n}"),
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn prune(c: &Client, a: VolumePruneArgs) -> anyhow::Result<ExitCode> {
    if !a.force {
        let what = if a.all {
            "all volumes not used by at least one container"
        } else {
            "all anonymous local volumes not used by at least one container"
        };
        eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let mut filters = a.filters.clone();
    if a.all {
        filters.push("all=true".into());
    }
    let q = filters_query(&filters)?;
    let r = c.post_json(
        &format!("/volumes/prune?{}", q.trim_start_matches('&')),
        None,
    )?;
    let deleted = r["VolumesDeleted"].as_array().cloned().unwrap_or_default();
    if !deleted.is_empty() {
        println!("Deleted Volumes:");
        for d in &deleted {
            println!("{}", d.as_str().unwrap_or(""));
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        human_size(r["SpaceReclaimed"].as_f64().unwrap_or(0.0))
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_options() {
        let v = key_values(&["a=b".into(), "c".into(), "d=e=f".into()]);
        assert_eq!(v, json!({"a": "b", "c": "", "d": "e=f"}));
        assert_eq!(labels_text(&v), "a=b,c=,d=e=f");
        assert_eq!(labels_text(&Value::Null), "");
    }
}
