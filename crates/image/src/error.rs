//! The errors of berth-image. Each names the thing, the cause and, where there is one, the fix.

use std::io;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, DigestError};
use crate::reference::ReferenceError;
use crate::unpack::UnpackError;

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("blob {0} is missing from the content store; remove the image and load it again")]
    BlobMissing(Digest),
    #[error("{what}: content digest is {actual}, expected {expected}: the data is corrupt or was tampered with, and was not kept")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("no such image: {0}")]
    NotFound(String),
    #[error("image id prefix {0:?} matches more than one image; give more digits")]
    Ambiguous(String),
    #[error("unable to remove image {image}: it is in use by a container; remove the container first or force the removal")]
    InUse { image: String },
    #[error("unable to remove image {image}: it is referenced in multiple repositories ({refs}); remove by name, or force the removal")]
    MultipleReferences { image: String, refs: String },
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error("bad image archive: {0}")]
    Archive(String),
    #[error("bad {what}: {source}")]
    Json {
        what: String,
        source: serde_json::Error,
    },
    #[error("bad change {change:?}: {reason}")]
    Change { change: String, reason: String },
}

impl ImageError {
    pub(crate) fn io(path: impl AsRef<Path>, op: &'static str, source: io::Error) -> ImageError {
        ImageError::Io {
            path: path.as_ref().to_path_buf(),
            op,
            source,
        }
    }

    pub(crate) fn json(what: impl Into<String>, source: serde_json::Error) -> ImageError {
        ImageError::Json {
            what: what.into(),
            source,
        }
    }
}
