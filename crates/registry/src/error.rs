//! The errors of berth-registry. Each names the registry or the image, the cause and, where
//! there is one, the fix.

use berth_image::{ImageError, ReferenceError};

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {registry}: {cause}; check that it is running and that the address is right (a registry served over plain HTTP must be listed with --insecure-registry)")]
    Unreachable { registry: String, cause: String },
    #[error("{what} not found in registry {registry}: {message}; check the name and the tag")]
    NotFound {
        registry: String,
        what: String,
        message: String,
    },
    #[error("registry {registry} refused access to {what}: {message}; log in with `berth login {registry}` or check the credentials")]
    Unauthorized {
        registry: String,
        what: String,
        message: String,
    },
    #[error("registry {registry} answered {status} to {what}: {message}")]
    Status {
        registry: String,
        what: String,
        status: u16,
        message: String,
    },
    #[error("registry {registry} sent a bad {what}: {reason}")]
    Protocol {
        registry: String,
        what: String,
        reason: String,
    },
    #[error("{reference}: no image for platform {platform} (the index offers: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("invalid platform {0:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64")]
    BadPlatform(String),
    #[error("credentials file {path}: {reason}")]
    Config { path: String, reason: String },
    #[error("{0}")]
    Cancelled(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}
