//! The runtime's typed errors. Each names the thing it is about and the cause.

use std::path::PathBuf;

use nix::errno::Errno;

/// Everything that can go wrong in the runtime's library calls.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container id `{0}` is invalid: use 1 to 128 letters, digits, `_`, `-`, `+` or `.`, not starting with `.`")]
    InvalidId(String),
    #[error("container `{id}` already exists (state in {dir}); delete it first")]
    Exists { id: String, dir: PathBuf },
    #[error("container `{id}` does not exist (no state in {dir})")]
    NotFound { id: String, dir: PathBuf },
    #[error("container `{id}` is {status}; `{op}` needs it {need}")]
    WrongState {
        id: String,
        status: String,
        op: &'static str,
        need: &'static str,
    },
    #[error("bundle config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}: {errno}")]
    Sys { op: String, errno: Errno },
    #[error("container `{id}` failed to start: {message}")]
    Init { id: String, message: String },
    /// A step of the container's setup, in the child, failed.
    #[error("{0}")]
    Setup(String),
    #[error("hook {kind} `{path}` {reason}")]
    Hook {
        kind: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("cgroup {path}: {reason}")]
    Cgroup { path: PathBuf, reason: String },
    #[error("seccomp: {0}")]
    Seccomp(String),
    #[error(
        "state of container `{id}` in {path} is unreadable: {reason}; `delete --force` removes it"
    )]
    BadState {
        id: String,
        path: PathBuf,
        reason: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sys(op: impl Into<String>, errno: Errno) -> Self {
        Error::Sys {
            op: op.into(),
            errno,
        }
    }
}
