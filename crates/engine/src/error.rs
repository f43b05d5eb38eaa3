//! The engine's error type: each variant says what kind of failure it is, so that a front end
//! (the Docker API) can pick its status code without parsing messages.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No container, image or volume by that name.
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with the current state (name in use, container running...).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong (bad name, bad option, refused by policy).
    #[error("{0}")]
    InvalidParameter(String),
    /// The request would write where the container says nothing may be written (a
    /// read-only volume or root): Docker answers 403.
    #[error("{0}")]
    Forbidden(String),
    /// Nothing to do: already started, already stopped.
    #[error("{0}")]
    NotModified(String),
    /// A known Docker option berth refuses (answered 501, as Docker answers what it lacks).
    #[error("{0}")]
    Unsupported(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Anything else that went wrong on the daemon's side.
    #[error("{0}")]
    System(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub fn no_such_container(name: &str) -> Self {
        EngineError::NotFound(format!("No such container: {name}"))
    }
}
