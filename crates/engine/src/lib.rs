//! berth-engine: the daemon's core, behind a typed Rust interface.
//!
//! - [`Engine`]: containers and their life cycle (create, start, attach, wait, stop, kill,
//!   remove), persistence of their records, logs, images through berth-image.
//! - [`policy`]: the user namespace policy of `--userns-remap` (and Docker's refusals).
//! - [`spec`]: the OCI runtime spec of a container, with Docker's defaults.
//! - [`monitor`]: the per-container monitor process (`berth monitor DIR`), which owns the
//!   container's stdio, writes its log and records its exit, so the daemon can restart.

pub mod archive;
pub mod commit;
pub mod container;
pub mod devices;
mod engine;
pub mod error;
pub mod events;
pub mod exec;
mod filters;
mod fsat;
mod fsview;
pub mod images;
pub mod init;
pub mod launcher;
pub mod logs;
pub mod monitor;
pub mod mounts;
pub mod names;
mod netns;
pub mod ops;
pub mod policy;
pub mod proto;
pub mod restart;
pub mod seccomp;
mod serde_util;
mod setup;
pub mod signal;
pub mod spec;
pub mod store;
mod tarwalk;
pub mod timefmt;
pub mod top;
pub mod volumes;

pub use engine::{
    ContainerView, CreateRequest, Engine, EngineConfig, EngineInfo, ListOptions, Output,
    WaitCondition,
};
pub use error::{EngineError, Result};
pub use signal::parse_signal;
