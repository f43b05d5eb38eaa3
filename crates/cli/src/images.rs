//! Image commands: `images`, `import`, `load`, `save`, `tag`, `rmi`.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

use crate::format::{human_duration, human_size, now_unix, short_id, significant, Row, Template};

/// go-units `HumanSize` (4 significant digits), which docker uses for `VirtualSize`.
fn human_size_4(bytes: f64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let (mut v, mut i) = (bytes, 0);
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    format!("{}{}", significant(v, 4), units[i])
}
use crate::http::{enc, enc_path, Body, Client};

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Show all images (default hides intermediate images)
    #[arg(short = 'a', long)]
    all: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Filter output based on conditions provided (KEY=VALUE)
    #[arg(short = 'f', long = "filter")]
    filters: Vec<String>,
    /// Format output: table, json, or a Go-style template
    #[arg(long)]
    format: Option<String>,
    /// Only images matching REPOSITORY[:TAG]
    reference: Option<String>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change")]
    changes: Vec<String>,
    /// Set commit message for imported image
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// Root filesystem tarball, or - for stdin
    file: String,
    /// REPOSITORY[:TAG] to give the image
    reference: Option<String>,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from tar archive file, instead of STDIN
    #[arg(short = 'i', long)]
    input: Option<String>,
    /// Suppress the load output
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long)]
    output: Option<String>,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    source: String,
    target: String,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Force removal of the image
    #[arg(short = 'f', long)]
    force: bool,
    /// Do not delete untagged parents
    #[arg(long = "no-prune")]
    no_prune: bool,
    #[arg(required = true)]
    images: Vec<String>,
}

/// `repo:tag` → (repo, tag); the tag is what follows the last `:` after the last `/`.
pub fn split_reference(r: &str) -> (&str, Option<&str>) {
    let r = r.split('@').next().unwrap_or(r);
    match r.rfind(':') {
        Some(i) if !r[i..].contains('/') => (&r[..i], Some(&r[i + 1..])),
        _ => (r, None),
    }
}

/// `KEY=VALUE` filters as the API's JSON `{"KEY": ["VALUE", ...]}`, URL-encoded.
pub fn filters_query(filters: &[String]) -> anyhow::Result<String> {
    if filters.is_empty() {
        return Ok(String::new());
    }
    let mut map = serde_json::Map::new();
    for f in filters {
        let (k, v) = f
            .split_once('=')
            .with_context(|| format!("bad format of filter {f:?} (expected name=value)"))?;
        let entry = map
            .entry(k.to_ascii_lowercase())
            .or_insert_with(|| json!([]));
        entry.as_array_mut().expect("array").push(json!(v));
    }
    Ok(format!("&filters={}", enc(&Value::Object(map).to_string())))
}

pub fn images(c: &Client, a: ImagesArgs) -> anyhow::Result<ExitCode> {
    let mut filters = a.filters.clone();
    if let Some(r) = &a.reference {
        filters.push(format!("reference={r}"));
    }
    let list = c.get_json(&format!(
        "/images/json?all={}{}",
        a.all as u8,
        filters_query(&filters)?
    ))?;
    let mut list = list.as_array().cloned().unwrap_or_default();
    list.sort_by_key(|i| -i["Created"].as_i64().unwrap_or(0));
    let now = now_unix();
    let mut rows = Vec::new();
    for img in &list {
        let id = img["Id"].as_str().unwrap_or("");
        let tags: Vec<String> = img["RepoTags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let tags = if tags.is_empty() || tags == ["<none>:<none>"] {
            vec!["<none>:<none>".to_string()]
        } else {
            tags
        };
        let created = img["Created"].as_i64().unwrap_or(0);
        for t in tags {
            let (repo, tag) = split_reference(&t);
            let mut r = Row::new();
            r.insert("Repository", json!(repo));
            r.insert("Tag", json!(tag.unwrap_or("<none>")));
            r.insert(
                "ID",
                json!(if a.no_trunc {
                    id.to_string()
                } else {
                    short_id(id)
                }),
            );
            r.insert(
                "CreatedSince",
                json!(format!("{} ago", human_duration(now - created))),
            );
            r.insert("CreatedAt", json!(crate::containers::format_time(created)));
            r.insert(
                "Size",
                json!(human_size(img["Size"].as_f64().unwrap_or(0.0))),
            );
            r.insert(
                "Containers",
                json!(img["Containers"]
                    .as_i64()
                    .map_or("N/A".into(), |n| if n < 0 {
                        "N/A".into()
                    } else {
                        n.to_string()
                    })),
            );
            r.insert("Digest", json!("<none>"));
            r.insert("SharedSize", json!("N/A"));
            r.insert("UniqueSize", json!("N/A"));
            r.insert(
                "VirtualSize",
                json!(human_size_4(img["Size"].as_f64().unwrap_or(0.0))),
            );
            rows.push(r);
        }
    }
    if a.quiet {
        let mut seen = Vec::new();
        for r in &rows {
            let id = r["ID"].as_str().unwrap_or("").to_string();
            if !seen.contains(&id) {
                println!("{id}");
                seen.push(id);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let format = a
        .format
        .as_deref()
        .unwrap_or("table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}");
    let format = if format == "table" {
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        format
    };
    let headers = [
        ("Repository", "REPOSITORY"),
        ("Tag", "TAG"),
        ("ID", "IMAGE ID"),
        ("CreatedSince", "CREATED"),
        ("CreatedAt", "CREATED AT"),
        ("Size", "SIZE"),
        ("Containers", "CONTAINERS"),
        ("Digest", "DIGEST"),
    ];
    print!("{}", Template::parse(format)?.render(&rows, &headers));
    Ok(ExitCode::SUCCESS)
}

/// Prints a stream of JSON messages (`stream`, `status`), failing on `error`.
fn print_messages(resp: impl Read, quiet: bool) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    for msg in serde_json::Deserializer::from_reader(resp).into_iter::<Value>() {
        let msg = msg.context("bad progress message from the daemon")?;
        if let Some(e) = msg.get("error").and_then(Value::as_str) {
            bail!("{e}");
        }
        if quiet {
            continue;
        }
        if let Some(s) = msg.get("stream").and_then(Value::as_str) {
            out.write_all(s.as_bytes())?;
        } else if let Some(s) = msg.get("status").and_then(Value::as_str) {
            if msg
                .get("progressDetail")
                .is_some_and(|p| p.as_object().is_some_and(|o| !o.is_empty()))
            {
                continue;
            }
            match msg.get("id").and_then(Value::as_str) {
                Some(id) => writeln!(out, "{id}: {s}")?,
                None => writeln!(out, "{s}")?,
            }
        }
    }
    Ok(())
}

fn open_input(path: Option<&str>) -> anyhow::Result<Box<dyn Read>> {
    match path {
        None | Some("-") => {
            if io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is empty (a terminal); use -i FILE or redirect a tarball");
            }
            Ok(Box::new(io::stdin()))
        }
        Some(p) => Ok(Box::new(
            File::open(p).with_context(|| format!("cannot open {p}"))?,
        )),
    }
}

pub fn import(c: &Client, a: ImportArgs) -> anyhow::Result<ExitCode> {
    let mut q = String::from("/images/create?fromSrc=-");
    if let Some(r) = &a.reference {
        let (repo, tag) = split_reference(r);
        q.push_str(&format!("&repo={}", enc(repo)));
        if let Some(t) = tag {
            q.push_str(&format!("&tag={}", enc(t)));
        }
    }
    for ch in &a.changes {
        q.push_str(&format!("&changes={}", enc(ch)));
    }
    if let Some(m) = &a.message {
        q.push_str(&format!("&message={}", enc(m)));
    }
    let mut input = open_input(Some(&a.file))?;
    let resp = c.call("POST", &q, Body::Stream(&mut *input, "application/x-tar"))?;
    print_messages(resp, false)?;
    Ok(ExitCode::SUCCESS)
}

pub fn load(c: &Client, a: LoadArgs) -> anyhow::Result<ExitCode> {
    let mut input = open_input(a.input.as_deref())?;
    let resp = c.call(
        "POST",
        &format!("/images/load?quiet={}", a.quiet as u8),
        Body::Stream(&mut *input, "application/x-tar"),
    )?;
    print_messages(resp, a.quiet)?;
    Ok(ExitCode::SUCCESS)
}

pub fn save(c: &Client, a: SaveArgs) -> anyhow::Result<ExitCode> {
    let output = a.output.as_deref();
    check_archive_output(output)?;
    let names: String = a
        .images
        .iter()
        .map(|n| format!("names={}&", enc(n)))
        .collect();
    let resp = c.call(
        "GET",
        &format!("/images/get?{}", names.trim_end_matches('&')),
        Body::Empty,
    )?;
    write_archive(resp, output)?;
    Ok(ExitCode::SUCCESS)
}

/// Refuses to write an archive (`save`, `export`) to stdout when it is a terminal, as docker
/// does; called before asking the daemon for it.
pub fn check_archive_output(output: Option<&str>) -> anyhow::Result<()> {
    if output.is_none() && io::stdout().is_terminal() {
        bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    }
    Ok(())
}

/// Writes an archive to `output` (`-o FILE`) or stdout. A file is written through a
/// temporary one beside it, renamed at the end: never a half-written archive under the
/// name asked for.
pub fn write_archive(mut archive: impl Read, output: Option<&str>) -> anyhow::Result<()> {
    let Some(out) = output else {
        io::copy(&mut archive, &mut io::stdout().lock())
            .context("writing the archive to stdout")?;
        return Ok(());
    };
    let path = Path::new(out);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    io::copy(&mut archive, &mut tmp).with_context(|| format!("writing {out}"))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {out}"))?;
    Ok(())
}

pub fn tag(c: &Client, a: TagArgs) -> anyhow::Result<ExitCode> {
    let (repo, tag) = split_reference(&a.target);
    c.call(
        "POST",
        &format!(
            "/images/{}/tag?repo={}&tag={}",
            enc_path(&a.source),
            enc(repo),
            enc(tag.unwrap_or("latest"))
        ),
        Body::Empty,
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn rmi(c: &Client, a: RmiArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for img in &a.images {
        let path = format!(
            "/images/{}?force={}&noprune={}",
            enc_path(img),
            a.force as u8,
            a.no_prune as u8
        );
        match c
            .call("DELETE", &path, Body::Empty)
            .map_err(anyhow::Error::from)
            .and_then(|r| Ok(r.json()?))
        {
            Ok(list) => {
                for item in list.as_array().into_iter().flatten() {
                    for key in ["Untagged", "Deleted"] {
                        if let Some(v) = item.get(key).and_then(Value::as_str) {
                            println!("{key}: {v}");
                        }
                    }
                }
            }
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    Ok(ExitCode::from(u8::from(failed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_filters() {
        assert_eq!(split_reference("busybox"), ("busybox", None));
        assert_eq!(split_reference("busybox:1.36"), ("busybox", Some("1.36")));
        assert_eq!(
            split_reference("localhost:5000/x"),
            ("localhost:5000/x", None)
        );
        assert_eq!(
            split_reference("localhost:5000/x:v1"),
            ("localhost:5000/x", Some("v1"))
        );
        assert_eq!(
            filters_query(&[
                "status=exited".into(),
                "label=a=b".into(),
                "status=created".into()
            ])
            .unwrap(),
            format!(
                "&filters={}",
                enc(r#"{"label":["a=b"],"status":["exited","created"]}"#)
            )
        );
        assert!(filters_query(&["nope".into()]).is_err());
    }
}
