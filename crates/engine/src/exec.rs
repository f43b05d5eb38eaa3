//! `docker exec`: a process started in a running container, under a monitor of its own
//! (`berth monitor DIR` with an exec config), so that it is a child of a single-threaded
//! process as the runtime requires, and its output reaches the client that started it.

use crate::events::Event;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::engine::{Engine, MonitorConn, MonitorFailure, Output};
use crate::error::{EngineError, Result};
use crate::monitor::{MonitorConfig, CONFIG_FILE};
use crate::proto::{ExitStatus, Kind};
use crate::{names, spec};

/// What `POST /containers/{id}/exec` asks for.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: String,
    pub working_dir: String,
    pub tty: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub privileged: bool,
    pub console_size: Vec<u64>,
}

/// An exec as `GET /exec/{id}/json` shows it.
#[derive(Debug, Clone)]
pub struct ExecView {
    pub id: String,
    pub container_id: String,
    pub running: bool,
    pub exit_code: Option<i32>,
    pub pid: i32,
    pub request: ExecRequest,
}

#[derive(Debug, Default)]
struct ExecState {
    started: bool,
    running: bool,
    exit_code: Option<i32>,
    pid: i32,
}

pub(crate) struct ExecEntry {
    id: String,
    pub(crate) container_id: String,
    request: ExecRequest,
    state: Mutex<ExecState>,
    conn: Mutex<Option<Arc<MonitorConn>>>,
}

impl ExecEntry {
    fn state(&self) -> std::sync::MutexGuard<'_, ExecState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Engine {
    fn exec_entry(&self, exec_id: &str) -> Result<Arc<ExecEntry>> {
        self.inner
            .execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(exec_id)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("No such exec instance: {exec_id}")))
    }

    /// Registers an exec in running container `container`; returns its id.
    pub fn exec_create(&self, container: &str, request: ExecRequest) -> Result<String> {
        let entry = self.lookup(container)?;
        let rec = entry.record();
        if !rec.is_running() {
            return Err(EngineError::Conflict(format!(
                "container {} is not running",
                rec.id
            )));
        }
        if request.cmd.is_empty() {
            return Err(EngineError::InvalidParameter(
                "no exec command specified".into(),
            ));
        }
        crate::policy::check_exec(request.privileged, rec.maps.as_ref())?;
        let id = names::new_id()?;
        let action = format!("exec_create: {}", request.cmd.join(" "));
        self.emit(Event::container(&rec, action).attr("execID", id.clone()));
        let exec = Arc::new(ExecEntry {
            id: id.clone(),
            container_id: rec.id,
            request,
            state: Mutex::new(ExecState::default()),
            conn: Mutex::new(None),
        });
        self.inner
            .execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), exec);
        Ok(id)
    }

    /// Starts the exec; the receiver carries its output and ends once its exit code is
    /// recorded.
    pub async fn exec_start(&self, exec_id: &str) -> Result<mpsc::UnboundedReceiver<Output>> {
        let exec = self.exec_entry(exec_id)?;
        {
            let mut st = exec.state();
            if st.started {
                return Err(EngineError::Conflict(format!(
                    "exec {exec_id} has already been started"
                )));
            }
            st.started = true;
        }
        let result = self.run_exec(&exec).await;
        if result.is_err() {
            // Docker's code for a process that could not be started.
            let mut st = exec.state();
            st.running = false;
            st.exit_code = Some(126);
        }
        result
    }

    async fn run_exec(&self, exec: &Arc<ExecEntry>) -> Result<mpsc::UnboundedReceiver<Output>> {
        let exec_id = exec.id.as_str();
        let entry = self.lookup(&exec.container_id)?;
        let rec = entry.record();
        if !rec.is_running() {
            return Err(EngineError::Conflict(format!(
                "container {} is not running",
                rec.id
            )));
        }
        let rootfs = self.inner.images.rootfs_path(&rec.id);
        let process = spec::exec_process(&rec, &rootfs, &exec.request)?;
        let dir = entry
            .paths
            .exec_dir
            .join(format!("exec-{}", &exec.id[..12]));
        std::fs::create_dir_all(&dir).map_err(|e| EngineError::io("create directory", &dir, e))?;
        let mon = MonitorConfig {
            id: rec.id.clone(),
            bundle: entry.paths.bundle(),
            runtime_root: self.inner.cfg.exec_root.join("runtime"),
            socket: dir.join("monitor.sock"),
            log: None,
            exit_file: dir.join("exit.json"),
            tty: exec.request.tty,
            open_stdin: exec.request.attach_stdin,
            loopback: false,
            exec: Some(process),
        };
        let json = serde_json::to_vec(&mon)
            .map_err(|e| EngineError::System(format!("encoding the monitor config: {e}")))?;
        let cfg_path = dir.join(CONFIG_FILE);
        std::fs::write(&cfg_path, json).map_err(|e| EngineError::io("write", &cfg_path, e))?;

        let (pid, stream) = self
            .spawn_monitor(&dir, &mon.socket, &dir.join("monitor.log"))
            .await
            .map_err(|e| match e {
                MonitorFailure::Reported(msg) => start_error(&msg),
                MonitorFailure::Other(e) => e,
            })?;
        let (mut rd, wr) = stream.into_split();
        let conn = Arc::new(MonitorConn {
            writer: tokio::sync::Mutex::new(wr),
            start_reply: Mutex::new(None),
        });
        let (reply_tx, reply_rx) = oneshot::channel();
        *conn.start_reply.lock().unwrap_or_else(|e| e.into_inner()) = Some(reply_tx);
        *exec.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());

        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let exec2 = exec.clone();
        let conn2 = conn.clone();
        let exit_file = mon.exit_file.clone();
        let (engine, rec2) = (self.clone(), rec.clone());
        tokio::spawn(async move {
            let status = conn2
                .pump(&mut rd, |out| {
                    let _ = out_tx.send(out);
                })
                .await;
            let code = status
                .or_else(|| {
                    std::fs::read(&exit_file)
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok())
                })
                .map_or(255, |s: ExitStatus| s.exit_code);
            // The exit code is recorded before the output ends: the client asks for it then.
            {
                let mut st = exec2.state();
                st.running = false;
                st.exit_code = Some(code);
            }
            let die = Event::container(&rec2, "exec_die").attr("execID", exec2.id.clone());
            engine.emit(die.attr("exitCode", code.to_string()));
            *exec2.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
            drop(out_tx);
        });

        let action = format!("exec_start: {}", exec.request.cmd.join(" "));
        self.emit(Event::container(&rec, action).attr("execID", exec_id));
        conn.send(Kind::Start, b"")
            .await
            .map_err(|e| EngineError::System(format!("talking to the exec monitor: {e}")))?;
        match reply_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err(EngineError::System(format!("exec failed: {msg}"))),
            Err(_) => return Err(EngineError::System("the exec monitor went away".into())),
        }
        {
            let mut st = exec.state();
            // A very short process may have finished already.
            if st.exit_code.is_none() {
                st.running = true;
            }
            st.pid = pid;
        }
        if !exec.request.console_size.is_empty() {
            if let [h, w] = exec.request.console_size[..] {
                let _ = self.exec_resize(exec_id, h as u16, w as u16).await;
            }
        }
        Ok(out_rx)
    }

    fn exec_conn(&self, exec_id: &str) -> Result<Arc<MonitorConn>> {
        let exec = self.exec_entry(exec_id)?;
        let conn = exec.conn.lock().unwrap_or_else(|e| e.into_inner()).clone();
        conn.ok_or_else(|| EngineError::Conflict(format!("exec {exec_id} is not running")))
    }

    pub async fn exec_write_stdin(&self, exec_id: &str, data: Vec<u8>) -> Result<()> {
        let conn = self.exec_conn(exec_id)?;
        conn.send(Kind::Stdin, &data)
            .await
            .map_err(|e| EngineError::System(format!("writing to the exec's stdin: {e}")))
    }

    pub async fn exec_close_stdin(&self, exec_id: &str) -> Result<()> {
        let conn = self.exec_conn(exec_id)?;
        conn.send(Kind::CloseStdin, b"")
            .await
            .map_err(|e| EngineError::System(format!("closing the exec's stdin: {e}")))
    }

    pub async fn exec_resize(&self, exec_id: &str, height: u16, width: u16) -> Result<()> {
        let conn = self.exec_conn(exec_id)?;
        let mut p = height.to_be_bytes().to_vec();
        p.extend_from_slice(&width.to_be_bytes());
        conn.send(Kind::Resize, &p)
            .await
            .map_err(|e| EngineError::System(format!("resizing the exec's terminal: {e}")))
    }

    pub fn exec_inspect(&self, exec_id: &str) -> Result<ExecView> {
        let exec = self.exec_entry(exec_id)?;
        let st = exec.state();
        Ok(ExecView {
            id: exec.id.clone(),
            container_id: exec.container_id.clone(),
            running: st.running,
            exit_code: st.exit_code,
            pid: st.pid,
            request: exec.request.clone(),
        })
    }
}

/// Why an exec's process did not start, worded as Docker's (`OCI runtime exec failed: ...`)
/// with the runtime's cause (runc's words: `exec: "x": executable file not found in $PATH`,
/// `... permission denied`, `chdir to cwd ("/x") set in config.json failed: ...`). The
/// runtime says "container `ID` failed to start: CAUSE": for an exec only the cause is true.
fn start_error(msg: &str) -> EngineError {
    let cause = msg
        .split_once("failed to start: ")
        .map_or(msg, |(_, cause)| cause);
    EngineError::System(format!(
        "OCI runtime exec failed: exec failed: unable to start container process: {cause}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_errors_keep_the_runtime_cause() {
        let e = start_error(
            "container `abc` failed to start: chdir to cwd (\"/nonexistent\") set in config.json failed: no such file or directory",
        );
        assert_eq!(
            e.to_string(),
            "OCI runtime exec failed: exec failed: unable to start container process: chdir to cwd (\"/nonexistent\") set in config.json failed: no such file or directory"
        );
        let e = start_error("the monitor died");
        assert!(e.to_string().ends_with("process: the monitor died"), "{e}");
    }
}
