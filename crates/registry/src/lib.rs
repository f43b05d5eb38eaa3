//! berth-registry: pull and push images over the OCI distribution API (Docker Registry v2).
//!
//! - [`pull`]: resolves a reference, fetches the manifest or index (picking the platform),
//!   then the config and layers a few at a time, verified while they stream into
//!   berth-image's content store, and records the image.
//! - [`push`]: uploads layers (monolithic or chunked, mounted from another repository or
//!   skipped when the registry has them), the config and the manifest.
//! - [`auth`]: Docker's config.json credentials and `WWW-Authenticate` challenges; the
//!   client handles anonymous, Basic and Bearer-token registries.
//!
//! Kept apart from berth-image so that the image crate (used on the container start path)
//! carries no HTTP or TLS stack.

pub mod auth;
mod client;
mod error;
mod progress;
mod pull;
mod push;

pub use auth::{ConfigFile, Credentials};
pub use client::{is_insecure, RegistryOptions, DOCKER_HUB_HOST};
pub use error::{RegistryError, Result};
pub use progress::{Progress, ProgressSink};
pub use pull::{pull, PlatformSpec, PullOptions, PullReport};
pub use push::{push, PushOptions, PushReport};

/// The tags of a repository (`GET /v2/NAME/tags/list`), sorted: for `pull --all-tags`.
pub fn tags(repo: &berth_image::Reference, opts: &RegistryOptions) -> Result<Vec<String>> {
    let c = client::Client::new(repo.domain(), opts);
    c.ping()?;
    c.tags(repo.path())
}

/// Checks credentials against a registry (`docker login`): Ok when it accepts them.
pub fn login(registry: &str, opts: &RegistryOptions) -> Result<()> {
    client::Client::new(registry, opts).login()
}
