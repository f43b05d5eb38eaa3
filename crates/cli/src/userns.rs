//! `berth userns show`: the remap user, its ranges, and the maps containers get.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use berth_idmap::{EtcFiles, RemapUser, SubIdFile};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum Command {
    /// Show the remap user and group, their subordinate ranges and the uid_map/gid_map lines
    /// containers would get. For `default`, creates `dockremap` first, as the daemon does.
    Show(ShowArgs),
}

#[derive(Args)]
pub struct ShowArgs {
    /// default, USER, USER:GROUP, UID or UID:GID. Without it, the `userns-remap` of
    /// ROOT/etc/berth/daemon.json, if any.
    #[arg(long = "userns-remap", value_name = "SPEC")]
    userns_remap: Option<String>,

    /// Root of the account files (/etc/passwd, /etc/group, /etc/subuid, /etc/subgid); for tests.
    #[arg(long, env = "BERTH_ETC_ROOT", default_value = "/", hide = true)]
    etc_root: PathBuf,
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Show(args) => show(args),
    }
}

fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let etc = EtcFiles::new(&args.etc_root);
    let spec = match args.userns_remap {
        Some(s) => Some(s),
        None => spec_from_config(&args.etc_root.join("etc/berth/daemon.json"))?,
    };
    let Some(spec) = spec else {
        println!("user namespaces: off (no --userns-remap); container root is host root");
        return Ok(ExitCode::SUCCESS);
    };
    match berth_idmap::resolve_str(&spec, &etc)? {
        None => println!("user namespaces: off (--userns-remap={spec} maps root to itself)"),
        Some(r) => print!("{}", describe(&spec, &r, &etc)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// The `userns-remap` key of a Docker-style daemon.json, if the file and key exist.
fn spec_from_config(path: &Path) -> anyhow::Result<Option<String>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let json: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    match json.get("userns-remap") {
        None => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => anyhow::bail!(
            "{}: userns-remap must be a string such as \"default\", not {other}",
            path.display()
        ),
    }
}

fn describe(spec: &str, r: &RemapUser, etc: &EtcFiles) -> anyhow::Result<String> {
    let mut out = format!(
        "userns-remap: {spec}\nuser:         {} (uid {})\ngroup:        {} (gid {})\n",
        r.user, r.uid, r.group, r.gid
    );
    for (label, path) in [("subuid", etc.subuid()), ("subgid", etc.subgid())] {
        let file = SubIdFile::read(&path)?;
        for e in file.entries_for(&r.user, r.uid) {
            out.push_str(&format!(
                "{label}:       {e}  ({} line {})\n",
                path.display(),
                e.line
            ));
        }
        for (other, mine) in file.overlaps_with_others(&r.user, r.uid) {
            out.push_str(&format!(
                "warning:      {} of line {} is also {}'s ({} line {}): their processes share these host ids\n",
                SubIdFile::span(mine),
                mine.line,
                other.owner,
                SubIdFile::span(other),
                other.line
            ));
        }
    }
    for (label, map) in [("uid_map", &r.maps.uid), ("gid_map", &r.maps.gid)] {
        for line in map.to_proc_text().lines() {
            out.push_str(&format!("{label}:      {line}\n"));
        }
    }
    Ok(out)
}
