//! `berth cp`, `berth commit`, `berth diff` and `berth export`: a container's files, through
//! the archive API, `/commit`, `/containers/{id}/changes` and `/containers/{id}/export`.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::http::{enc, enc_path, Body, Client};

#[derive(Subcommand, Debug)]
pub enum FilesCommand {
    /// Copy files/folders between a container and the local filesystem
    Cp(CpArgs),
    /// Create a new image from a container's changes
    Commit(CommitArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(DiffArgs),
    /// Export a container's filesystem as a tar archive
    Export(ExportArgs),
}

#[derive(Args, Debug)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information)
    #[arg(short = 'a', long)]
    archive: bool,
    /// CONTAINER:SRC_PATH or SRC_PATH|-
    src: String,
    /// DEST_PATH|- or CONTAINER:DEST_PATH
    dest: String,
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short = 'a', long)]
    author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change")]
    changes: Vec<String>,
    /// Commit message
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// Pause container during commit (`--pause=false` to leave it running)
    #[arg(
        short = 'p',
        long,
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pause: bool,
    container: String,
    /// REPOSITORY[:TAG]
    reference: Option<String>,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    container: String,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long)]
    output: Option<String>,
    container: String,
}

pub fn run(c: &Client, cmd: FilesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FilesCommand::Cp(a) => cp(c, a),
        FilesCommand::Commit(a) => commit(c, a),
        FilesCommand::Diff(a) => diff(c, a),
        FilesCommand::Export(a) => export(c, a),
    }
}

/// `CONTAINER:PATH` → (container, path); a local path (absolute, or with no `:` before a
/// `/`) → None, as docker reads them.
fn split_container(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    let (ctr, path) = arg.split_once(':')?;
    (!ctr.is_empty() && !ctr.contains('/')).then_some((ctr, path))
}

/// The last component of a path, for naming what is copied.
fn base_name(p: &str) -> String {
    Path::new(p.trim_end_matches("/."))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into())
}

fn cp(c: &Client, a: CpArgs) -> anyhow::Result<ExitCode> {
    match (split_container(&a.src), split_container(&a.dest)) {
        (Some((ctr, src)), None) => copy_out(c, ctr, src, &a.dest, a.archive)?,
        (None, Some((ctr, dest))) => copy_in(c, &a.src, ctr, dest, a.archive)?,
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (None, None) => bail!("must specify at least one container source (CONTAINER:PATH)"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Is `path` in container `ctr` an existing directory? (None: it does not exist.)
fn container_is_dir(c: &Client, ctr: &str, path: &str) -> anyhow::Result<Option<bool>> {
    let q = format!("/containers/{}/archive?path={}", enc_path(ctr), enc(path));
    let resp = c.send("HEAD", &q, Body::Empty, &[])?;
    match resp.status {
        200 => {}
        404 => {
            // A missing container is a 404 too: tell them apart.
            c.get_json(&format!("/containers/{}/json", enc_path(ctr)))?;
            return Ok(None);
        }
        _ => {
            crate::http::check(resp)?;
        }
    }
    // A directory is what `PATH/.` resolves through (the client does not read the stat
    // header).
    let dir = c
        .send(
            "HEAD",
            &format!(
                "/containers/{}/archive?path={}",
                enc_path(ctr),
                enc(&format!("{}/.", path.trim_end_matches('/')))
            ),
            Body::Empty,
            &[],
        )?
        .status
        == 200;
    Ok(Some(dir))
}

fn copy_in(c: &Client, src: &str, ctr: &str, dest: &str, archive: bool) -> anyhow::Result<()> {
    // Where to extract, and the name the copied file or directory gets there.
    let (dir, name) = match container_is_dir(c, ctr, dest)? {
        Some(true) => (dest.to_string(), base_name(src)),
        _ if dest.ends_with('/') => {
            bail!("no such directory {dest} in container {ctr}")
        }
        _ => {
            let p = Path::new(dest);
            let parent = p
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".into());
            (parent, base_name(dest))
        }
    };
    let mut body: Box<dyn Read> = if src == "-" {
        Box::new(io::stdin())
    } else {
        let meta = fs::symlink_metadata(src).with_context(|| format!("cannot read {src}"))?;
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        if meta.is_dir() {
            b.append_dir_all(&name, src)
        } else {
            b.append_path_with_name(src, &name)
        }
        .with_context(|| format!("reading {src}"))?;
        Box::new(io::Cursor::new(b.into_inner()?))
    };
    let q = format!(
        "/containers/{}/archive?path={}&copyUIDGID={}",
        enc_path(ctr),
        enc(&dir),
        archive
    );
    c.call("PUT", &q, Body::Stream(&mut *body, "application/x-tar"))?;
    Ok(())
}

fn copy_out(c: &Client, ctr: &str, src: &str, dest: &str, archive: bool) -> anyhow::Result<()> {
    let q = format!("/containers/{}/archive?path={}", enc_path(ctr), enc(src));
    let mut resp = c.call("GET", &q, Body::Empty)?;
    if dest == "-" {
        io::copy(&mut resp, &mut io::stdout().lock()).context("writing the archive")?;
        return Ok(());
    }
    // Into an existing directory under the source's name, else as `dest` itself.
    let dest = Path::new(dest);
    let (into, rename) = if dest.is_dir() {
        (dest.to_path_buf(), None)
    } else {
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        (parent, dest.file_name().map(PathBuf::from))
    };
    let mut ar = tar::Archive::new(resp);
    ar.set_preserve_ownerships(archive);
    ar.set_preserve_permissions(true);
    for entry in ar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            bail!(
                "refusing the archive entry {}: it leaves the destination",
                path.display()
            );
        }
        let mut parts = path.components();
        let first = parts.next();
        let rest: PathBuf = parts.collect();
        let target = match (&rename, first) {
            (Some(r), Some(_)) if rest.as_os_str().is_empty() => into.join(r),
            (Some(r), Some(_)) => into.join(r).join(rest),
            _ => into.join(&path),
        };
        if let Some(p) = target.parent() {
            fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
        }
        entry
            .unpack(&target)
            .with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}

fn commit(c: &Client, a: CommitArgs) -> anyhow::Result<ExitCode> {
    let mut q = format!("/commit?container={}", enc(&a.container));
    if let Some(r) = &a.reference {
        // The tag is after the last `:` that follows the last `/` (a registry port is not a tag).
        let (repo, tag) = match r.rfind(':') {
            Some(i) if !r[i..].contains('/') => (&r[..i], &r[i + 1..]),
            _ => (r.as_str(), ""),
        };
        q.push_str(&format!("&repo={}&tag={}", enc(repo), enc(tag)));
    }
    if let Some(m) = &a.message {
        q.push_str(&format!("&comment={}", enc(m)));
    }
    if let Some(au) = &a.author {
        q.push_str(&format!("&author={}", enc(au)));
    }
    for ch in &a.changes {
        q.push_str(&format!("&changes={}", enc(ch)));
    }
    if !a.pause {
        q.push_str("&pause=0");
    }
    let v = c.post_json(&q, None)?;
    println!("{}", v["Id"].as_str().unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

fn diff(c: &Client, a: DiffArgs) -> anyhow::Result<ExitCode> {
    let v = c.get_json(&format!("/containers/{}/changes", enc_path(&a.container)))?;
    for ch in v.as_array().into_iter().flatten() {
        let kind = match ch["Kind"].as_u64() {
            Some(0) => "C",
            Some(1) => "A",
            Some(2) => "D",
            _ => "?",
        };
        println!("{kind} {}", ch["Path"].as_str().unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

fn export(c: &Client, a: ExportArgs) -> anyhow::Result<ExitCode> {
    crate::images::check_archive_output(a.output.as_deref())?;
    let resp = c.call(
        "GET",
        &format!("/containers/{}/export", enc_path(&a.container)),
        Body::Empty,
    )?;
    crate::images::write_archive(resp, a.output.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths() {
        assert_eq!(split_container("ctr:/etc"), Some(("ctr", "/etc")));
        assert_eq!(split_container("/tmp/a:b"), None);
        assert_eq!(split_container("./a:b"), None);
        assert_eq!(split_container("file"), None);
        assert_eq!(base_name("/etc/passwd"), "passwd");
        assert_eq!(base_name("dir/."), "dir");
    }
}
