//! Test support shared by berth's crates (dev-dependency only).
//!
//! It builds the busybox root filesystem fixture once per test run and hands out its path,
//! so that every test that needs an image works from the same reproducible tarball.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub mod registry;

/// The repository's top directory (where `scripts/` lives).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("testkit lives at crates/testkit")
        .to_path_buf()
}

/// Path of the busybox rootfs tarball built by `scripts/busybox-rootfs`.
///
/// `scripts/test` builds it once and passes it in `BERTH_BUSYBOX_TAR`; a plain `cargo test`
/// builds it on first use into the target directory.
pub fn busybox_tar() -> PathBuf {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        if let Some(p) = std::env::var_os("BERTH_BUSYBOX_TAR") {
            let p = PathBuf::from(p);
            if p.is_file() {
                return p;
            }
        }
        let dir = repo_root().join("target").join("fixtures");
        std::fs::create_dir_all(&dir).expect("create target/fixtures");
        // One file per process, renamed into place, so concurrent test binaries never read a
        // half-written tarball.
        let out = dir.join("busybox.tar");
        if out.is_file() {
            return out;
        }
        let tmp = dir.join(format!("busybox.tar.{}", std::process::id()));
        let status = Command::new(repo_root().join("scripts/busybox-rootfs"))
            .arg(&tmp)
            .status()
            .expect("run scripts/busybox-rootfs");
        assert!(status.success(), "scripts/busybox-rootfs failed ({status})");
        std::fs::rename(&tmp, &out).expect("rename busybox fixture into place");
        out
    })
    .clone()
}

/// Unpacks the busybox fixture into `dir` (which must exist) with its owners (0:0).
pub fn unpack_busybox(dir: &Path) {
    let status = Command::new("tar")
        .arg("-xf")
        .arg(busybox_tar())
        .arg("-C")
        .arg(dir)
        .arg("--numeric-owner")
        .status()
        .expect("run tar");
    assert!(status.success(), "tar -x of the busybox fixture failed");
}

/// True when the test runs as root. Tests that need root call [`require_root`] instead of
/// skipping silently: CI runs as root, so a skip there would hide a failure.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Panics with a clear message unless running as root.
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root (mounts, namespaces); run the suite as root, as CI does"
    );
}

/// A fresh temporary directory under /tmp, removed on drop.
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create temporary directory")
}
