//! The errors of berth-snapshot.

use std::io;
use std::path::PathBuf;

pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("invalid container id {0:?}: use letters, digits, `_`, `.` and `-` (at most 128)")]
    BadId(String),
    #[error("layer {0} is not unpacked in the image store; load or pull the image again")]
    LayerMissing(String),
    #[error("no snapshot for container {0}: prepare it first")]
    NotPrepared(String),
    #[error("image file {path} is owned by {kind} {id}, which the id map ({map}) cannot hold; fix: give the remapped user a range that covers {kind} {id} (in /etc/subuid and /etc/subgid), or rebuild the image without that owner")]
    Unmappable {
        path: String,
        kind: &'static str,
        id: u32,
        map: String,
    },
    #[error("mounting the overlay for container {container}: {source}{}", if log.is_empty() { String::new() } else { format!(" (kernel: {log})") })]
    Mount {
        container: String,
        source: io::Error,
        log: String,
    },
    #[error(transparent)]
    Image(#[from] berth_image::ImageError),
}
