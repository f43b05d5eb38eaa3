//! Progress as Docker's JSON message stream carries it: a status, an optional id (a layer's
//! short digest, or the tag), and bytes done of a total.

/// One progress message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The layer's 12-hex-digit short digest, or the tag; None for whole-image lines.
    pub id: Option<String>,
    /// Docker's words: `Pulling fs layer`, `Downloading`, `Pull complete`, `Pushed`, ...
    pub status: String,
    /// Bytes done and total, for `Downloading`, `Extracting` and `Pushing`.
    pub current: Option<u64>,
    pub total: Option<u64>,
}

impl Progress {
    pub(crate) fn line(id: Option<&str>, status: impl Into<String>) -> Progress {
        Progress {
            id: id.map(str::to_string),
            status: status.into(),
            current: None,
            total: None,
        }
    }

    pub(crate) fn bytes(id: &str, status: &str, current: u64, total: u64) -> Progress {
        Progress {
            id: Some(id.to_string()),
            status: status.to_string(),
            current: Some(current),
            total: Some(total),
        }
    }
}

/// Where progress goes; shared by the worker threads.
pub type ProgressSink<'a> = &'a (dyn Fn(Progress) + Sync);

/// Reports at most every this many bytes (and at the end), so a stream of progress messages
/// stays small next to the data.
pub(crate) const PROGRESS_STEP: u64 = 512 << 10;
