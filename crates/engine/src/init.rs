//! `--init`: a small init process (tini, which Docker ships as `docker-init`) as the
//! container's pid 1, reaping zombies and passing signals on to the container's program.
//! As Docker does, the host's binary is bound read-only at `/sbin/docker-init` and the
//! process becomes `/sbin/docker-init -- PROGRAM ARGS...`.

use std::path::{Path, PathBuf};

use crate::container::HostConfig;
use crate::error::{EngineError, Result};

/// Where the init binary appears in the container.
pub const CONTAINER_PATH: &str = "/sbin/docker-init";

/// Names looked up in `PATH` when the daemon has no `--init-path`: Docker's, then Debian's
/// static tini (the container may have no C library).
const CANDIDATES: [&str; 2] = ["docker-init", "tini-static"];

/// Whether the container runs with an init: its own `--init`/`--init=false`, else the
/// daemon's `--init`.
pub fn wanted(host: &HostConfig, daemon_default: bool) -> bool {
    host.init.unwrap_or(daemon_default)
}

/// The init binary on the host: the daemon's `--init-path`, else the first candidate found
/// in `PATH`.
pub fn binary(configured: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = configured {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(EngineError::InvalidParameter(format!(
                "the init binary {} (daemon --init-path) does not exist: install it or fix the option",
                p.display()
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    CANDIDATES
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            EngineError::InvalidParameter(format!(
                "--init needs an init binary and none of {} is in PATH: install tini (apt install tini) or start the daemon with --init-path",
                CANDIDATES.join(", ")
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_containers_choice_wins_over_the_daemons() {
        let host = |init| HostConfig {
            init,
            ..HostConfig::default()
        };
        assert!(wanted(&host(None), true));
        assert!(!wanted(&host(None), false));
        assert!(!wanted(&host(Some(false)), true));
        assert!(wanted(&host(Some(true)), false));
    }

    #[test]
    fn a_configured_binary_must_exist() {
        let err = binary(Some(Path::new("/nonexistent/berth-init"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/berth-init"), "{err}");
        assert_eq!(
            binary(Some(Path::new("/bin/sh"))).unwrap(),
            PathBuf::from("/bin/sh")
        );
    }
}
