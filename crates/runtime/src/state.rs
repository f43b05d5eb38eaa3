//! What the runtime keeps on disk per container (`<root>/<id>/state.json`), and the
//! runtime-spec state it reports (`created`, `running`, `stopped`).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::cgroups::Placement;
use crate::error::{Error, Result};

/// The runtime-spec version this runtime implements.
pub const OCI_VERSION: &str = "1.2.0";

/// A container's status, as the runtime spec names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // pad, not write_str: `list` aligns columns with width specifiers.
        f.pad(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        })
    }
}

/// The runtime-spec state of a container (what `berth-runtime state ID` prints, and what
/// hooks read on stdin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    /// The init's pid in the runtime's pid namespace; 0 once stopped.
    pub pid: i32,
    pub bundle: PathBuf,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

/// The record written at create time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub pid: i32,
    /// Start time of the init (field 22 of /proc/PID/stat): tells our init from a later
    /// process that reuses its pid.
    pub start_time: u64,
    pub bundle: PathBuf,
    /// Seconds since the epoch at create.
    pub created: u64,
    pub cgroups: Placement,
    /// The config the container was created from: exec takes its namespaces, seccomp and
    /// no_new_privs from it, delete its poststop hooks.
    pub spec: Spec,
}

pub const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";
/// Where the init writes why it failed after `create` returned (between `start` and the
/// exec of the container's program), for `start` to report.
pub const INIT_ERROR: &str = "init.error";

impl Record {
    pub fn load(dir: &Path, id: &str) -> Result<Record> {
        let path = dir.join(STATE_FILE);
        let data = fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound {
                    id: id.into(),
                    dir: dir.into(),
                }
            } else {
                Error::io("read container state", &path, e)
            }
        })?;
        serde_json::from_slice(&data).map_err(|e| Error::BadState {
            id: id.into(),
            path,
            reason: e.to_string(),
        })
    }

    /// Writes the record atomically (temporary file, then rename).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(".state.json.tmp");
        let data = serde_json::to_vec(self).expect("a record always serializes");
        let mut f =
            fs::File::create(&tmp).map_err(|e| Error::io("write container state", &tmp, e))?;
        f.write_all(&data)
            .map_err(|e| Error::io("write container state", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("write container state", &path, e))
    }

    /// Live status: stopped when the init is gone, a zombie, or another process has its pid;
    /// created while the init still waits on the exec fifo; running otherwise.
    pub fn status(&self, dir: &Path) -> Status {
        match proc_stat(self.pid) {
            Some((state, start)) if start == self.start_time && state != 'Z' && state != 'X' => {
                if dir.join(EXEC_FIFO).exists() {
                    Status::Created
                } else {
                    Status::Running
                }
            }
            _ => Status::Stopped,
        }
    }

    pub fn state(&self, dir: &Path) -> State {
        let status = self.status(dir);
        State {
            oci_version: OCI_VERSION.into(),
            id: self.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            bundle: self.bundle.clone(),
            annotations: self.spec.annotations().clone().unwrap_or_default(),
        }
    }
}

/// The state letter and start time of a process, from /proc/PID/stat.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<(char, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces or parentheses:
    // the fields after it start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 is the state; the start time is field 22, 19 further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let s = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(parse_stat(s), Some(('S', 123456)));
    }

    #[test]
    fn own_stat_parses() {
        let (state, start) = proc_stat(std::process::id() as i32).unwrap();
        assert!("RS".contains(state), "{state}");
        assert!(start > 0);
    }

    #[test]
    fn state_json_names() {
        let s = State {
            oci_version: OCI_VERSION.into(),
            id: "c1".into(),
            status: Status::Created,
            pid: 7,
            bundle: "/b".into(),
            annotations: HashMap::new(),
        };
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["ociVersion"], "1.2.0");
        assert_eq!(j["status"], "created");
        assert_eq!(j["pid"], 7);
    }
}
