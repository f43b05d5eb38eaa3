//! `berth version` and `berth info`.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value};

use crate::format::{bytes_size, Template};
use crate::http::Client;

#[derive(Args, Debug)]
pub struct FormatArgs {
    /// Format output using a Go-style template, or json
    #[arg(short = 'f', long)]
    format: Option<String>,
}

fn client_info() -> Value {
    json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "Os": std::env::consts::OS,
        "Arch": go_arch(),
    })
}

/// Go's names for the architecture, as the API reports them.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub fn version(c: &Client, a: FormatArgs) -> anyhow::Result<ExitCode> {
    let client = client_info();
    let server = c.get_json("/version");
    if let Some(f) = &a.format {
        let server = server?;
        let v = json!({"Client": client, "Server": server});
        let t = Template::parse(if f == "json" { "{{json .}}" } else { f })?;
        println!("{}", t.render_value(&v));
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    writeln!(out, "Client:")?;
    writeln!(
        out,
        " Version:           {}",
        client["Version"].as_str().unwrap_or("")
    )?;
    writeln!(
        out,
        " OS/Arch:           {}/{}",
        client["Os"].as_str().unwrap_or(""),
        client["Arch"].as_str().unwrap_or("")
    )?;
    print!("{out}");
    let server = server?;
    let s = |k: &str| server[k].as_str().unwrap_or("").to_string();
    let mut out = String::new();
    writeln!(
        out,
        "\nServer:{}",
        server["Platform"]["Name"]
            .as_str()
            .map(|n| format!(" {n}"))
            .unwrap_or_default()
    )?;
    writeln!(out, " Engine:")?;
    writeln!(out, "  Version:          {}", s("Version"))?;
    writeln!(
        out,
        "  API version:      {} (minimum version {})",
        s("ApiVersion"),
        s("MinAPIVersion")
    )?;
    if !s("GitCommit").is_empty() {
        writeln!(out, "  Git commit:       {}", s("GitCommit"))?;
    }
    writeln!(out, "  OS/Arch:          {}/{}", s("Os"), s("Arch"))?;
    writeln!(out, "  Kernel Version:   {}", s("KernelVersion"))?;
    writeln!(
        out,
        "  Experimental:     {}",
        server["Experimental"].as_bool().unwrap_or(false)
    )?;
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

pub fn info(c: &Client, a: FormatArgs) -> anyhow::Result<ExitCode> {
    let i = c.get_json("/info")?;
    if let Some(f) = &a.format {
        let t = Template::parse(if f == "json" { "{{json .}}" } else { f })?;
        println!("{}", t.render_value(&i));
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render_info(&i));
    Ok(ExitCode::SUCCESS)
}

/// The server part of `docker info`'s text.
fn render_info(i: &Value) -> String {
    let s = |k: &str| match &i[k] {
        Value::String(v) => v.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut out = String::from("Server:\n");
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, " {label}: {value}");
    };
    line("Containers", s("Containers"));
    line(" Running", s("ContainersRunning"));
    line(" Paused", s("ContainersPaused"));
    line(" Stopped", s("ContainersStopped"));
    line("Images", s("Images"));
    line("Server Version", s("ServerVersion"));
    line("Storage Driver", s("Driver"));
    line("Cgroup Driver", s("CgroupDriver"));
    line("Cgroup Version", s("CgroupVersion"));
    let opts: Vec<String> = i["SecurityOptions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    if !opts.is_empty() {
        out.push_str(" Security Options:\n");
        for o in opts {
            // "name=seccomp,profile=builtin" → " seccomp\n  Profile: builtin", as docker.
            let mut fields = o.split(',');
            let name = fields.next().unwrap_or("").trim_start_matches("name=");
            let _ = writeln!(out, "  {name}");
            for f in fields {
                if let Some((k, v)) = f.split_once('=') {
                    let mut k = k.to_string();
                    if let Some(first) = k.get_mut(0..1) {
                        first.make_ascii_uppercase();
                    }
                    let _ = writeln!(out, "   {k}: {v}");
                }
            }
        }
    }
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, " {label}: {value}");
    };
    line("Kernel Version", s("KernelVersion"));
    line("Operating System", s("OperatingSystem"));
    line("OSType", s("OSType"));
    line("Architecture", s("Architecture"));
    line("CPUs", s("NCPU"));
    line(
        "Total Memory",
        bytes_size(i["MemTotal"].as_f64().unwrap_or(0.0)),
    );
    line("Name", s("Name"));
    line("ID", s("ID"));
    line("Docker Root Dir", s("DockerRootDir"));
    line("Debug Mode", s("Debug"));
    if let Some(w) = i["Warnings"].as_array() {
        for w in w.iter().filter_map(Value::as_str) {
            let _ = writeln!(out, "{w}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_text_shows_userns() {
        let i = json!({
            "Containers": 2, "ContainersRunning": 1, "ContainersPaused": 0, "ContainersStopped": 1,
            "Images": 3, "ServerVersion": "0.1.0", "Driver": "overlay2",
            "SecurityOptions": ["name=seccomp,profile=builtin", "name=userns"],
            "MemTotal": 8_335_622_144u64, "NCPU": 2
        });
        let text = render_info(&i);
        assert!(text.contains(" Containers: 2\n  Running: 1\n"), "{text}");
        assert!(
            text.contains(" Security Options:\n  seccomp\n   Profile: builtin\n  userns\n"),
            "{text}"
        );
        assert!(text.contains(" Total Memory: 7.763GiB\n"), "{text}");
        assert!(text.contains(" CPUs: 2\n"), "{text}");
    }
}
