//! Shared helpers of the runtime's integration tests: a busybox bundle in its own temporary
//! directory, a private state root, and the `berth-runtime` binary to drive.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

/// Host uid/gid that container root maps to in the user namespace tests.
pub const HOST_ROOT: u32 = 100000;

pub struct Bundle {
    pub tmp: tempfile::TempDir,
    pub bundle: PathBuf,
    pub state_root: PathBuf,
    pub config: Value,
    pub userns: bool,
}

/// A unique container id for this test process.
pub fn cid(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

impl Bundle {
    /// A busybox bundle; with `userns`, container root is host 100000 (x65536) and the
    /// rootfs is owned accordingly. The default config of `berth-runtime spec`, with a
    /// writable root and no terminal.
    pub fn new(prefix: &str, userns: bool) -> Bundle {
        berth_testkit::require_root();
        let tmp = berth_testkit::tempdir(prefix);
        let bundle = tmp.path().join("bundle");
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        berth_testkit::unpack_busybox(&rootfs);
        if userns {
            let st = Command::new("chown")
                .args(["-R", &format!("{HOST_ROOT}:{HOST_ROOT}")])
                .arg(&rootfs)
                .status()
                .unwrap();
            assert!(st.success());
        }
        let mut config = serde_json::to_value(berth_runtime::default_spec(false)).unwrap();
        config["root"]["readonly"] = json!(false);
        config["process"]["terminal"] = json!(false);
        if userns {
            config["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "user"}));
            let m = json!([{"containerID": 0, "hostID": HOST_ROOT, "size": 65536}]);
            config["linux"]["uidMappings"] = m.clone();
            config["linux"]["gidMappings"] = m;
        }
        Bundle {
            state_root: tmp.path().join("state"),
            tmp,
            bundle,
            config,
            userns,
        }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// The container runs `sh -c script`.
    pub fn script(&mut self, script: &str) -> &mut Self {
        self.config["process"]["args"] = json!(["sh", "-c", script]);
        self
    }

    pub fn add_mount(&mut self, m: Value) -> &mut Self {
        self.config["mounts"].as_array_mut().unwrap().push(m);
        self
    }

    pub fn write(&self) {
        std::fs::write(
            self.bundle.join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
    }

    /// `berth-runtime --root STATE ARGS...`
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth-runtime"));
        c.arg("--root").arg(&self.state_root).args(args);
        c.stdin(Stdio::null());
        c
    }

    /// Writes the config and runs the container in the foreground.
    pub fn run(&self, id: &str) -> Output {
        self.write();
        let b = self.bundle.to_str().unwrap().to_string();
        self.cmd(&["run", "--bundle", &b, id]).output().unwrap()
    }

    pub fn state(&self, id: &str) -> Value {
        let out = self.cmd(&["state", id]).output().unwrap();
        assert!(
            out.status.success(),
            "state: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Bundle {
    /// Removes every container the test left under its state root (a failed assertion
    /// skips the test's own delete): kills them, removes their cgroups and state.
    fn drop(&mut self) {
        let Ok(rd) = std::fs::read_dir(&self.state_root) else {
            return;
        };
        for ent in rd.flatten() {
            if let Some(id) = ent.file_name().to_str() {
                let _ = self
                    .cmd(&["delete", "--force", id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// Stdout of a run that must succeed.
pub fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "container failed ({}): stdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
