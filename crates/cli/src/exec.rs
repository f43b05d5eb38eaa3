//! `berth exec`: runs a command in a running container, as `docker exec` does — create the
//! exec, then start it attached (or detached with `-d`), and exit with its exit code.

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

use crate::http::{enc_path, Body, Client};
use crate::runopts::env_list;
use crate::session::{detach_keys, AttachSpec, Session};
use crate::stream;

#[derive(Args, Debug, Default)]
pub struct ExecArgs {
    /// Detached mode: run command in the background
    #[arg(short = 'd', long)]
    detach: bool,
    /// Override the key sequence for detaching a container (default ctrl-p,ctrl-q)
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to copy it from here)
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    env_files: Vec<String>,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Give extended privileges to the command
    #[arg(long)]
    privileged: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    tty: bool,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// The container, then the command and its arguments (flags after the container
    /// belong to the command)
    #[arg(
        required = true,
        num_args = 2..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CONTAINER COMMAND [ARG...]"
    )]
    container_and_command: Vec<String>,
}

impl ExecArgs {
    /// The body of `POST /containers/{id}/exec`, as the docker CLI fills it: without `-d`
    /// stdout and stderr are attached, and stdin with `-i`. `console` is the terminal's
    /// size (rows, columns), sent with `-t`.
    fn create_body(
        &self,
        lookup_env: &dyn Fn(&str) -> Option<String>,
        console: Option<(u16, u16)>,
    ) -> anyhow::Result<Value> {
        let attached = !self.detach;
        let mut body = json!({
            "User": self.user.as_deref().unwrap_or(""),
            "Privileged": self.privileged,
            "Tty": self.tty,
            "AttachStdin": attached && self.interactive,
            "AttachStdout": attached,
            "AttachStderr": attached,
            "Detach": self.detach,
            "DetachKeys": self.detach_keys.as_deref().unwrap_or(""),
            "Env": env_list(&self.env_files, &self.env, lookup_env)?,
            "WorkingDir": self.workdir.as_deref().unwrap_or(""),
            "Cmd": self.container_and_command[1..],
        });
        if let Some((rows, cols)) = console.filter(|_| self.tty) {
            body["ConsoleSize"] = json!([rows, cols]);
        }
        Ok(body)
    }
}

pub fn exec(c: &Client, a: ExecArgs) -> anyhow::Result<ExitCode> {
    let container = &a.container_and_command[0];
    // As docker: a missing container is reported before anything else, and the tty is
    // checked before the exec is created (an exec that is never started stays behind).
    c.get_json(&format!("/containers/{}/json", enc_path(container)))?;
    if !a.detach && a.tty && a.interactive && !io::stdin().is_terminal() {
        bail!("the input device is not a TTY");
    }
    let keys = detach_keys(&a.detach_keys)?;
    let console = if a.tty { stream::terminal_size() } else { None };
    let body = a.create_body(&|k| std::env::var(k).ok(), console)?;
    let created = c.post_json(
        &format!("/containers/{}/exec", enc_path(container)),
        Some(body),
    )?;
    let id = created["Id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .context("the daemon's exec create answer has no Id")?
        .to_string();
    if a.detach {
        let start = json!({"Detach": true, "Tty": a.tty});
        c.call("POST", &format!("/exec/{id}/start"), Body::Json(start))?;
        return Ok(ExitCode::SUCCESS);
    }
    let spec = AttachSpec {
        tty: a.tty,
        stdin: a.interactive,
        stdout: true,
        stderr: true,
        auto_remove: false,
        sig_proxy: false,
        detach_keys: keys,
    };
    Session::start_exec(c, &id, spec)?.finish(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: ExecArgs,
    }

    fn parse(args: &[&str]) -> Result<ExecArgs, clap::Error> {
        T::try_parse_from([&["exec"], args].concat()).map(|t| t.a)
    }

    #[test]
    fn exec_flags_become_docker_json() {
        let a = parse(&[
            "-it",
            "-u",
            "1000:4",
            "-w",
            "/tmp",
            "-e",
            "A=1",
            "-e",
            "HOME",
            "-e",
            "UNSET",
            "--privileged",
            "ctr",
            "sh",
            "-c",
            "echo $A",
            "-d",
        ])
        .unwrap();
        assert_eq!(
            a.container_and_command,
            ["ctr", "sh", "-c", "echo $A", "-d"]
        );
        let env = |k: &str| (k == "HOME").then(|| "/root".to_string());
        let b = a.create_body(&env, Some((24, 80))).unwrap();
        assert_eq!(
            b,
            json!({
                "User": "1000:4", "Privileged": true, "Tty": true, "AttachStdin": true,
                "AttachStdout": true, "AttachStderr": true, "Detach": false, "DetachKeys": "",
                "Env": ["A=1", "HOME=/root"], "WorkingDir": "/tmp",
                "Cmd": ["sh", "-c", "echo $A", "-d"], "ConsoleSize": [24, 80]
            })
        );
    }

    #[test]
    fn detached_exec_attaches_nothing() {
        let a = parse(&["-d", "-i", "ctr", "sleep", "1"]).unwrap();
        let b = a.create_body(&|_| None, Some((24, 80))).unwrap();
        assert_eq!(b["AttachStdin"], false);
        assert_eq!(b["AttachStdout"], false);
        assert_eq!(b["Detach"], true);
        assert_eq!(b.get("ConsoleSize"), None, "no tty, no console size");
    }

    #[test]
    fn exec_needs_a_container_and_a_command() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["ctr"]).is_err());
        assert!(parse(&["-e", "=x", "ctr", "true"])
            .unwrap()
            .create_body(&|_| None, None)
            .is_err());
    }
}
