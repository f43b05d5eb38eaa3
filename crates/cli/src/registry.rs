//! `berth pull`, `push`, `login`, `logout`: the daemon talks to the registry; the client
//! sends credentials from Docker's config.json (`X-Registry-Auth`), renders the progress
//! stream as bars, and stores or removes credentials on login and logout.

use std::collections::HashMap;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use berth_image::Reference;
use berth_registry::{ConfigFile, Credentials};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::http::{check, enc, enc_path, Body, Client, Response};

#[derive(Args, Debug)]
pub struct PullArgs {
    /// NAME[:TAG|@DIGEST]
    pub name: String,
    /// Download all tagged images in the repository
    #[arg(short = 'a', long = "all-tags")]
    pub all_tags: bool,
    /// Set platform if server is multi-platform capable (OS/ARCH[/VARIANT])
    #[arg(long)]
    pub platform: Option<String>,
    /// Suppress verbose output
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// NAME[:TAG]
    pub name: String,
    /// Push all tags of the repository
    #[arg(short = 'a', long = "all-tags")]
    pub all_tags: bool,
    /// Suppress verbose output
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The registry (default: Docker Hub)
    pub server: Option<String>,
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin: a flag shows in the process list)
    #[arg(short, long)]
    pub password: Option<String>,
    /// Take the password from stdin
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// The registry (default: Docker Hub)
    pub server: Option<String>,
}

/// `https://index.docker.io/v1/`, `http://h:5000/` -> the registry domain.
fn server_domain(server: Option<&str>) -> String {
    let s = server.unwrap_or("docker.io").trim();
    let s = s
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    match s.split('/').next().unwrap_or(s) {
        "" | "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

fn auth_header(domain: &str) -> anyhow::Result<Vec<(String, String)>> {
    let cf = ConfigFile::default_location();
    Ok(match cf.get(domain)? {
        Some(c) => vec![(
            "X-Registry-Auth".into(),
            c.to_registry_auth_header(&berth_registry::auth::config_key(domain)),
        )],
        None => Vec::new(),
    })
}

pub fn pull(c: &Client, a: PullArgs) -> anyhow::Result<ExitCode> {
    let r = Reference::parse_name_only(&a.name)?;
    let tag = match (r.digest(), r.tag(), a.all_tags) {
        (None, None, true) => String::new(),
        (_, _, true) => bail!("tag can't be used with --all-tags/-a"),
        (Some(d), _, _) => d.to_string(),
        (None, t, _) => t.unwrap_or("latest").to_string(),
    };
    let resp = pull_stream(c, &r, &tag, a.platform.as_deref())?;
    render(resp, a.quiet, Output::Stdout)?;
    // As docker: the full reference last, the only line with -q.
    if a.all_tags {
        println!("{}", r.name());
    } else {
        println!("{}", Reference::parse(&a.name)?.canonical());
    }
    Ok(ExitCode::SUCCESS)
}

/// The pull `run` and `create` do for a missing image: progress on stderr, as docker.
pub fn pull_missing(c: &Client, image: &str) -> anyhow::Result<()> {
    let r = Reference::parse_name_only(image)?;
    let tag = match (r.digest(), r.tag()) {
        (Some(d), _) => d.to_string(),
        (None, t) => t.unwrap_or("latest").to_string(),
    };
    render(pull_stream(c, &r, &tag, None)?, false, Output::Stderr)
}

/// Starts a pull on the daemon (`POST /images/create?fromImage=`) with the credentials from
/// Docker's config.json; the answer is the progress stream.
fn pull_stream(
    c: &Client,
    r: &Reference,
    tag: &str,
    platform: Option<&str>,
) -> anyhow::Result<impl Read> {
    let mut q = format!(
        "/images/create?fromImage={}&tag={}",
        enc(&r.name()),
        enc(tag)
    );
    if let Some(p) = platform {
        q.push_str(&format!("&platform={}", enc(p)));
    }
    post_with_auth(c, r, &q)
}

/// `POST path` with the credentials stored for `r`'s registry (X-Registry-Auth), if any.
fn post_with_auth(c: &Client, r: &Reference, path: &str) -> anyhow::Result<Response> {
    let headers = auth_header(r.domain())?;
    let extra: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Ok(check(c.send("POST", path, Body::Empty, &extra)?)?)
}

pub fn push(c: &Client, a: PushArgs) -> anyhow::Result<ExitCode> {
    let r = Reference::parse_name_only(&a.name)?;
    let tag = match (a.all_tags, r.tag()) {
        (true, Some(_)) => bail!("tag can't be used with --all-tags/-a"),
        (true, None) => String::new(),
        (false, t) => t.unwrap_or("latest").to_string(),
    };
    let q = format!("/images/{}/push?tag={}", enc_path(&r.name()), enc(&tag));
    let resp = post_with_auth(c, &r, &q)?;
    render(resp, a.quiet, Output::Stdout)?;
    Ok(ExitCode::SUCCESS)
}

fn read_line(prompt: &str, echo: bool) -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    eprint!("{prompt}");
    io::stderr().flush()?;
    let stdin = io::stdin();
    let saved = if !echo && stdin.is_terminal() {
        let t = tcgetattr(&stdin).context("read the terminal settings")?;
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turn echo off")?;
        Some(t)
    } else {
        None
    };
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &t);
        eprintln!();
    }
    r?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub fn login(c: &Client, a: LoginArgs) -> anyhow::Result<ExitCode> {
    let domain = server_domain(a.server.as_deref());
    let username = match a.username {
        Some(u) => u,
        None => read_line("Username: ", true)?,
    };
    let password = if a.password_stdin {
        if a.password.is_some() {
            bail!("--password and --password-stdin are mutually exclusive");
        }
        let mut p = String::new();
        io::stdin().read_to_string(&mut p)?;
        p.trim_end_matches(['\n', '\r']).to_string()
    } else {
        match a.password {
            Some(p) => {
                eprintln!(
                    "WARNING! Using --password via the CLI is insecure. Use --password-stdin."
                );
                p
            }
            None => read_line("Password: ", false)?,
        }
    };
    if username.is_empty() || password.is_empty() {
        bail!("a user name and a password are needed to log in to {domain}");
    }
    let body = json!({
        "username": username,
        "password": password,
        "serveraddress": berth_registry::auth::config_key(&domain),
    });
    check(c.send("POST", "/auth", Body::Json(body), &[])?)?;
    let cf = ConfigFile::default_location();
    cf.store(&domain, &Credentials { username, password })?;
    eprintln!(
        "Credentials stored in {} (unencrypted).",
        cf.path().display()
    );
    println!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

pub fn logout(a: LogoutArgs) -> anyhow::Result<ExitCode> {
    let domain = server_domain(a.server.as_deref());
    let cf = ConfigFile::default_location();
    if cf.erase(&domain)? {
        println!("Removing login credentials for {domain}");
    } else {
        println!("Not logged in to {domain}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Where progress goes: stdout for `pull`/`push`, stderr for the pull inside `run`.
#[derive(Clone, Copy, PartialEq)]
enum Output {
    Stdout,
    Stderr,
}

/// Renders a pull or push progress stream: a bar per layer on a terminal, the status lines
/// otherwise; fails on an `error` message.
fn render(resp: impl Read, quiet: bool, to: Output) -> anyhow::Result<()> {
    let tty = !quiet
        && match to {
            Output::Stdout => io::stdout().is_terminal(),
            Output::Stderr => io::stderr().is_terminal(),
        };
    let multi = MultiProgress::with_draw_target(match (tty, to) {
        (false, _) => ProgressDrawTarget::hidden(),
        (true, Output::Stdout) => ProgressDrawTarget::stdout(),
        (true, Output::Stderr) => ProgressDrawTarget::stderr(),
    });
    let style =
        ProgressStyle::with_template("{prefix}: {msg:<12} [{bar:40}] {bytes}/{total_bytes}")
            .expect("valid template")
            .progress_chars("=> ");
    let plain = ProgressStyle::with_template("{prefix}: {msg}").expect("valid template");
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    let mut out: Box<dyn Write> = match to {
        Output::Stdout => Box::new(io::stdout().lock()),
        Output::Stderr => Box::new(io::stderr().lock()),
    };
    for msg in serde_json::Deserializer::from_reader(resp).into_iter::<Value>() {
        let msg = msg.context("bad progress message from the daemon")?;
        if let Some(e) = msg.get("error").and_then(Value::as_str) {
            for b in bars.values() {
                b.abandon();
            }
            bail!("{e}");
        }
        let Some(status) = msg.get("status").and_then(Value::as_str) else {
            continue;
        };
        let detail = msg
            .get("progressDetail")
            .and_then(|d| Some((d.get("current")?.as_u64()?, d.get("total")?.as_u64()?)));
        let id = msg.get("id").and_then(Value::as_str);
        if quiet {
            continue;
        }
        match (id, tty) {
            (Some(id), true) => {
                let bar = bars.entry(id.to_string()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(0));
                    b.set_style(plain.clone());
                    b.set_prefix(id.to_string());
                    b
                });
                match detail {
                    Some((cur, total)) => {
                        bar.set_style(style.clone());
                        bar.set_length(total);
                        bar.set_position(cur);
                        bar.set_message(status.to_string());
                    }
                    None => {
                        bar.set_style(plain.clone());
                        bar.set_message(status.to_string());
                    }
                }
            }
            (Some(id), false) => {
                if detail.is_none() {
                    writeln!(out, "{id}: {status}")?;
                }
            }
            (None, true) => multi.println(status)?,
            (None, false) => writeln!(out, "{status}")?,
        }
    }
    for b in bars.values() {
        b.finish();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_domains() {
        assert_eq!(server_domain(None), "docker.io");
        assert_eq!(
            server_domain(Some("https://index.docker.io/v1/")),
            "docker.io"
        );
        assert_eq!(server_domain(Some("127.0.0.1:5000")), "127.0.0.1:5000");
        assert_eq!(
            server_domain(Some("http://localhost:5000/")),
            "localhost:5000"
        );
    }
}
