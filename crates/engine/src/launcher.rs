//! The monitor's runtime: berth-runtime's library, called in the monitor's own process so
//! that the container's init is the monitor's child (no exec of the `berth-runtime` binary
//! on the start path).

use std::os::fd::OwnedFd;

use berth_runtime::{CreateOptions, ExecOptions, Runtime};

use crate::monitor::{Launcher, MonitorConfig};

pub struct RuntimeLauncher;

impl Launcher for RuntimeLauncher {
    fn create(
        &self,
        cfg: &MonitorConfig,
        stdio: Option<[OwnedFd; 3]>,
    ) -> Result<(i32, Option<OwnedFd>), String> {
        let rt = Runtime::new(cfg.runtime_root.clone());
        if let Some(process) = &cfg.exec {
            let opts = ExecOptions {
                stdio,
                ..Default::default()
            };
            let created = rt
                .exec(&cfg.id, process, &opts)
                .map_err(|e| e.to_string())?;
            return Ok((created.pid, created.console));
        }
        // A container of this id left by a crashed monitor would make create fail.
        let _ = rt.delete(&cfg.id, true);
        let opts = CreateOptions {
            bundle: cfg.bundle.clone(),
            stdio,
            ..Default::default()
        };
        let created = rt.create(&cfg.id, &opts).map_err(|e| e.to_string())?;
        Ok((created.pid, created.console))
    }

    fn start(&self, id: &str, cfg: &MonitorConfig) -> Result<(), String> {
        if cfg.exec.is_some() {
            // An exec'd process runs from its creation.
            return Ok(());
        }
        Runtime::new(cfg.runtime_root.clone())
            .start(id)
            .map_err(|e| e.to_string())
    }

    fn delete(&self, id: &str, cfg: &MonitorConfig) {
        if cfg.exec.is_some() {
            // The container is not ours to delete.
            return;
        }
        if let Err(e) = Runtime::new(cfg.runtime_root.clone()).delete(id, true) {
            eprintln!("berth monitor: deleting runtime state of {id}: {e}");
        }
    }
}

/// The monitor's entry point for the `berth monitor DIR` command.
pub fn monitor_main(dir: &std::path::Path) -> i32 {
    crate::monitor::run(dir, &RuntimeLauncher)
}
