//! An attached session, shared by `run`, `start -a`, `attach` and `exec`: the hijacked
//! stream, raw terminal mode, the tty's size (sent at start and on SIGWINCH), signals
//! forwarded to a container, and the exit status once the output ends.

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::containers::DAEMON_ERROR;
use crate::http::{check, Body, Client, Conn, Response};
use crate::stream::{self, Outcome, RawTerminal};

/// `--detach-keys`, or docker's default.
pub fn detach_keys(flag: &Option<String>) -> anyhow::Result<Vec<u8>> {
    match flag.as_deref() {
        None | Some("") => Ok(stream::DEFAULT_DETACH_KEYS.to_vec()),
        Some(k) => stream::parse_detach_keys(k).map_err(anyhow::Error::msg),
    }
}

/// What to attach and how.
pub struct AttachSpec {
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// The daemon removes the container at exit: wait for `removed`, not `next-exit`.
    pub auto_remove: bool,
    /// Forward the signals berth gets to the container (never with a tty: there, keys
    /// like ctrl-c reach it as bytes).
    pub sig_proxy: bool,
    pub detach_keys: Vec<u8>,
}

impl AttachSpec {
    /// Attaching to an existing container, from its inspect answer `ct`: stdout and stderr,
    /// and stdin when `stdin` asks for it and the container keeps its stdin open.
    pub fn existing(
        ct: &Value,
        stdin: bool,
        sig_proxy: bool,
        keys: &Option<String>,
    ) -> anyhow::Result<AttachSpec> {
        let flag = |v: &Value| v.as_bool().unwrap_or(false);
        Ok(AttachSpec {
            tty: flag(&ct["Config"]["Tty"]),
            stdin: stdin && flag(&ct["Config"]["OpenStdin"]),
            stdout: true,
            stderr: true,
            auto_remove: flag(&ct["HostConfig"]["AutoRemove"]),
            sig_proxy,
            detach_keys: detach_keys(keys)?,
        })
    }
}

/// What a session is attached to: where its tty's size goes and where its exit status
/// comes from.
enum Target {
    /// A container; `wait` is its pending `POST /containers/{id}/wait`.
    Container { id: String, wait: Response },
    /// An exec; its status is the `ExitCode` of `GET /exec/{id}/json`, which the daemon
    /// records before it ends the output.
    Exec { id: String },
}

impl Target {
    /// `/containers/{id}` or `/exec/{id}`: the resize endpoint's prefix.
    fn base(&self) -> String {
        match self {
            Target::Container { id, .. } => format!("/containers/{id}"),
            Target::Exec { id } => format!("/exec/{id}"),
        }
    }
}

/// An attached container or exec: the hijacked stream, the pending status, raw mode and
/// signals.
pub struct Session {
    conn: Conn,
    early: Vec<u8>,
    target: Target,
    tty: bool,
    stdin: bool,
    detach_keys: Vec<u8>,
    raw: Option<RawTerminal>,
}

impl Session {
    /// Attaches to container `id`, then asks for its exit status (docker's order: the wait
    /// is registered before start so a quick exit is not missed), then sets up the terminal
    /// and signals.
    pub fn open(c: &Client, id: &str, spec: AttachSpec) -> anyhow::Result<Session> {
        let (conn, early) = c.hijack(
            &format!(
                "/containers/{id}/attach?stream=1&stdin={}&stdout={}&stderr={}",
                spec.stdin as u8, spec.stdout as u8, spec.stderr as u8
            ),
            Body::Empty,
        )?;
        let condition = if spec.auto_remove {
            "removed"
        } else {
            "next-exit"
        };
        let wait = check(c.send(
            "POST",
            &format!("/containers/{id}/wait?condition={condition}"),
            Body::Empty,
            &[],
        )?)?;
        // The container starts after this returns: no resize or signal is missed.
        let kill = (spec.sig_proxy && !spec.tty).then(|| format!("/containers/{id}/kill"));
        let raw = terminal_and_signals(c, format!("/containers/{id}"), kill, &spec)?;
        let target = Target::Container {
            id: id.to_string(),
            wait,
        };
        Ok(Session::new(conn, early, target, spec, raw))
    }

    /// Starts exec `id` attached (`POST /exec/{id}/start`, hijacked): the exec's streams
    /// and which of them are wanted were fixed when it was created; `spec` says how to
    /// handle them here. No signals are forwarded, as with docker exec.
    pub fn start_exec(c: &Client, id: &str, spec: AttachSpec) -> anyhow::Result<Session> {
        // Raw mode and the SIGWINCH handler first: the process starts with the request
        // below, and a window change before the handler would be lost.
        let raw = terminal_and_signals(c, format!("/exec/{id}"), None, &spec)?;
        let body = serde_json::json!({"Detach": false, "Tty": spec.tty});
        let (conn, early) = c.hijack(&format!("/exec/{id}/start"), Body::Json(body))?;
        let target = Target::Exec { id: id.to_string() };
        Ok(Session::new(conn, early, target, spec, raw))
    }

    fn new(
        conn: Conn,
        early: Vec<u8>,
        target: Target,
        spec: AttachSpec,
        raw: Option<RawTerminal>,
    ) -> Session {
        Session {
            conn,
            early,
            target,
            tty: spec.tty,
            stdin: spec.stdin,
            detach_keys: spec.detach_keys,
            raw,
        }
    }

    /// Pumps the streams until the output ends, then returns the exit status of the
    /// container or exec (success when the user detached).
    pub fn finish(self, c: &Client) -> anyhow::Result<ExitCode> {
        if self.tty {
            resize(c, &self.target.base());
        }
        let outcome = stream::pump(
            self.conn,
            self.early,
            self.stdin,
            self.tty,
            self.detach_keys,
        )
        .context("attached stream failed")?;
        drop(self.raw);
        if outcome == Outcome::Detached {
            return Ok(ExitCode::SUCCESS);
        }
        let code = match self.target {
            Target::Container { wait, .. } => {
                let status = wait.json().context("waiting for the container to exit")?;
                if let Some(msg) = status["Error"]["Message"]
                    .as_str()
                    .filter(|m| !m.is_empty())
                {
                    bail!("{msg}");
                }
                status["StatusCode"]
                    .as_i64()
                    .unwrap_or(i64::from(DAEMON_ERROR))
            }
            Target::Exec { id } => exec_exit_code(c, &id)?,
        };
        Ok(ExitCode::from((code & 0xff) as u8))
    }
}

/// The terminal in raw mode (a tty fed from ours), and the signal thread: SIGWINCH sends
/// the new size to the tty at `base`; with `kill` (a container's kill endpoint) the other
/// signals berth gets go there.
fn terminal_and_signals(
    c: &Client,
    base: String,
    kill: Option<String>,
    spec: &AttachSpec,
) -> anyhow::Result<Option<RawTerminal>> {
    let raw = if spec.tty && spec.stdin && io::stdin().is_terminal() {
        Some(RawTerminal::enable().context("cannot put the terminal in raw mode")?)
    } else {
        None
    };
    let (client, tty) = (c.clone(), spec.tty);
    stream::watch_signals(kill.is_some(), move |sig| {
        if sig == Signal::SIGWINCH {
            if tty {
                resize(&client, &base);
            }
        } else if let Some(kill) = &kill {
            let path = format!("{kill}?signal={}", sig.as_str());
            let _ = client.call("POST", &path, Body::Empty);
        }
    })?;
    Ok(raw)
}

/// The exit code of a finished exec, from `GET /exec/{id}/json`.
fn exec_exit_code(c: &Client, id: &str) -> anyhow::Result<i64> {
    let v = c.get_json(&format!("/exec/{id}/json"))?;
    v["ExitCode"].as_i64().with_context(|| {
        format!("exec {id}: its output ended but the daemon has no exit code for it (is it still running? see `GET /exec/{id}/json`)")
    })
}

/// Sends the terminal's size to the tty at `base` (`/containers/{id}` or `/exec/{id}`);
/// errors are ignored: the process may have exited.
pub fn resize(c: &Client, base: &str) {
    if let Some((rows, cols)) = stream::terminal_size() {
        let _ = c.call(
            "POST",
            &format!("{base}/resize?h={rows}&w={cols}"),
            Body::Empty,
        );
    }
}
