//! Container roots over real layers: the merged view (whiteouts, opaque directories), plain
//! and remapped roots (idmapped and the chowned copy), seen from the host and from inside a
//! user namespace, copy-up, and unmappable owners. Root: mounts and namespaces.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use berth_idmap::UsernsMaps;
use berth_image::{Digest, Image, ImageStore};
use berth_snapshot::{RemapMethod, RemapMode, SnapshotError, Snapshotter};

/// Unmounts and removes the container's snapshot even when the test fails.
struct Cleanup<'a>(&'a Snapshotter, &'a str);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.remove(self.1);
    }
}

fn add(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8], uid: u64) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data).unwrap();
}

/// Loads busybox plus `top` as a two-layer image called `name`.
fn two_layer_image(store: &ImageStore, name: &str, top: Vec<u8>) -> Image {
    let l1 = fs::read(berth_testkit::busybox_tar()).unwrap();
    let (d1, d2) = (Digest::of(&l1), Digest::of(&top));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [d1.to_string(), d2.to_string()]},
    }))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "config.json", &config, 0);
    add(&mut b, "l1/layer.tar", &l1, 0);
    add(&mut b, "l2/layer.tar", &top, 0);
    let manifest = format!(
        r#"[{{"Config":"config.json","RepoTags":["{name}"],"Layers":["l1/layer.tar","l2/layer.tar"]}}]"#
    );
    add(&mut b, "manifest.json", manifest.as_bytes(), 0);
    store.load(&b.into_inner().unwrap()[..]).unwrap();
    store.resolve(name).unwrap()
}

fn test_image(store: &ImageStore) -> Image {
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "etc/.wh.hostname", b"", 0);
    add(&mut b, "var/.wh..wh..opq", b"", 0);
    add(&mut b, "var/new", b"new", 0);
    add(&mut b, "home/user/file", b"mine", 1000);
    two_layer_image(store, "test:1", b.into_inner().unwrap())
}

struct Env {
    _tmp: tempfile::TempDir,
    store: ImageStore,
    data: std::path::PathBuf,
    exec: std::path::PathBuf,
}

fn env() -> Env {
    berth_testkit::require_root();
    let tmp = berth_testkit::tempdir("berth-snap-");
    let data = tmp.path().join("data");
    let exec = tmp.path().join("exec");
    let store = ImageStore::open(&data).unwrap();
    Env {
        _tmp: tmp,
        store,
        data,
        exec,
    }
}

fn owner(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

/// Runs `sh -c script` as root of a user namespace mapping 0 to 100000 (65536 ids), stdout
/// and stderr captured. (`unshare --map-users` would need newuidmap; this maps by itself.)
fn in_userns(script: &str) -> String {
    let sh = CString::new("/bin/sh").unwrap();
    let args = [
        c"sh".to_owned(),
        c"-c".to_owned(),
        CString::new(script).unwrap(),
    ];
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let pipe = || {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array it is given.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        (fds[0], fds[1])
    };
    let (ready_r, ready_w) = pipe();
    let (go_r, go_w) = pipe();
    let (out_r, out_w) = pipe();
    // SAFETY: the child only makes async-signal-safe calls (unshare, read, write, setres*id,
    // dup2, execv, _exit) on memory prepared before the fork, then execs or exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: see above; every pointer is to data that lives until execv.
        unsafe {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                libc::_exit(90);
            }
            libc::write(ready_w, b"r".as_ptr().cast(), 1);
            let mut b = 0u8;
            libc::read(go_r, (&mut b as *mut u8).cast(), 1);
            if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
                libc::_exit(91);
            }
            libc::dup2(out_w, 1);
            libc::dup2(out_w, 2);
            libc::execv(sh.as_ptr(), argv.as_ptr());
            libc::_exit(92);
        }
    }
    // SAFETY: these fds were made above and belong to this function alone.
    let (ready_r, go_w, out_r) = unsafe {
        libc::close(ready_w);
        libc::close(go_r);
        libc::close(out_w);
        (
            fs::File::from_raw_fd(ready_r),
            fs::File::from_raw_fd(go_w),
            fs::File::from_raw_fd(out_r),
        )
    };
    let mut b = [0u8; 1];
    (&ready_r)
        .read_exact(&mut b)
        .expect("child entered its user namespace");
    fs::write(format!("/proc/{pid}/uid_map"), "0 100000 65536\n").unwrap();
    fs::write(format!("/proc/{pid}/gid_map"), "0 100000 65536\n").unwrap();
    (&go_w).write_all(b"g").unwrap();
    drop(go_w);
    let mut out = String::new();
    (&out_r).read_to_string(&mut out).unwrap();
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{script}: status {status}: {out}"
    );
    out.trim().to_string()
}

#[test]
fn merged_view_plain_root() {
    let e = env();
    let img = test_image(&e.store);
    let snap = Snapshotter::open(&e.data, &e.exec, RemapMode::Auto).unwrap();
    let _c = Cleanup(&snap, "plain");
    snap.prepare("plain", &img.chain_ids(), None).unwrap();
    let root = snap.mount("plain").unwrap();
    assert_eq!(snap.mount("plain").unwrap(), root, "mount is idempotent");

    assert!(root.join("bin/busybox").is_file());
    assert!(root.join("etc/passwd").is_file());
    assert!(!root.join("etc/hostname").exists(), "whited out");
    let var: Vec<String> = fs::read_dir(root.join("var"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        var,
        ["new"],
        "opaque directory hides the lower var/log and var/tmp"
    );
    assert_eq!(owner(&root.join("bin/busybox")), (0, 0));
    assert_eq!(owner(&root.join("home/user/file")), (1000, 1000));

    fs::write(root.join("written"), "x").unwrap();
    let upper = e.data.join("containers/plain/upper");
    assert!(upper.join("written").is_file());

    snap.unmount("plain").unwrap();
    assert!(!root.join("bin").exists());
    snap.remove("plain").unwrap();
    assert!(!upper.exists());
}

/// Host uid 100000 owns the shared (idmapped or copied) layers' files as they appear there:
/// it must not be able to reach them, or it could change every remapped container's image.
/// `dir` holds one tree of the layers (an idmapped mount or a chowned copy) whose first
/// layer host uid 100000 must not be able to change.
fn mapped_uid_cannot_reach_the_layers(e: &Env, dir: &Path, img: &berth_image::Image) {
    let key = fs::read_dir(dir).unwrap().next().unwrap().unwrap().path();
    let layer = key.join(img.chain_ids()[0].hex());
    mapped_uid_cannot_write(e, &layer.join("diff/etc/passwd"));
}

fn mapped_uid_cannot_write(e: &Env, target: &Path) {
    assert_eq!(owner(target), (100000, 100000));
    // The test's temporary directory is root-only; open it so that only the snapshotter's
    // own permissions stand in the way.
    use std::os::unix::fs::PermissionsExt;
    let top = e.exec.parent().unwrap();
    fs::set_permissions(top, fs::Permissions::from_mode(0o755)).unwrap();
    let data = e.data.metadata().unwrap().permissions();
    fs::set_permissions(&e.data, fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=100000",
            "--regid=100000",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .args(["--bounding-set=-all", "sh", "-c"])
        .arg(format!("echo pwned >> {}", target.display()))
        .output()
        .unwrap();
    fs::set_permissions(&e.data, data).unwrap();
    assert!(!out.status.success(), "uid 100000 wrote to a shared layer");
    assert!(!fs::read_to_string(target).unwrap().contains("pwned"));
}

fn remapped(mode: RemapMode, expect: RemapMethod) {
    let e = env();
    let img = test_image(&e.store);
    let snap = Snapshotter::open(&e.data, &e.exec, mode).unwrap();
    assert_eq!(snap.remap_method(), expect);
    let maps = UsernsMaps::single(100000, 65536).unwrap();
    let _c = Cleanup(&snap, "remapped");
    snap.prepare("remapped", &img.chain_ids(), Some(&maps))
        .unwrap();
    let root = snap.mount("remapped").unwrap();

    // From the host, through the mount: shifted by 100000.
    assert_eq!(owner(&root.join("bin/busybox")), (100000, 100000));
    assert_eq!(owner(&root.join("home/user/file")), (101000, 101000));
    assert_eq!(owner(&root), (100000, 100000));
    // From inside a user namespace with the same map: the image's own owners.
    let r = root.display();
    assert_eq!(
        in_userns(&format!(
            "stat -c %u:%g {r}/bin/busybox {r}/home/user/file | tr '\\n' ' '"
        )),
        "0:0 1000:1000"
    );
    assert!(!root.join("etc/hostname").exists());

    // Copy-up and new files, done as the container's root, keep the mapped owner.
    in_userns(&format!(
        "echo extra >> {r}/etc/passwd && echo new > {r}/created && chown 1000:1000 {r}/created"
    ));
    let upper = e.data.join("containers/remapped/upper");
    assert_eq!(owner(&upper), (100000, 100000));
    assert_eq!(owner(&upper.join("etc/passwd")), (100000, 100000));
    assert_eq!(owner(&upper.join("created")), (101000, 101000));
    assert_eq!(in_userns(&format!("stat -c %u {r}/etc/passwd")), "0");

    // The shared layer is untouched: real owners, no copy-up into it.
    let lower = e.store.layers().diff_path(&img.chain_ids()[0]);
    assert_eq!(owner(&lower.join("bin/busybox")), (0, 0));
    assert!(!fs::read_to_string(lower.join("etc/passwd"))
        .unwrap()
        .contains("extra"));

    // A second container with the same map reuses everything.
    let _c2 = Cleanup(&snap, "second");
    snap.prepare("second", &img.chain_ids(), Some(&maps))
        .unwrap();
    let root2 = snap.mount("second").unwrap();
    assert_eq!(owner(&root2.join("bin/busybox")), (100000, 100000));
    assert!(!fs::read_to_string(root2.join("etc/passwd"))
        .unwrap()
        .contains("extra"));

    let copies = e.data.join("layers-remapped");
    match expect {
        RemapMethod::Idmapped => {
            assert_eq!(
                fs::read_dir(&copies).unwrap().count(),
                0,
                "no copy with idmapped mounts"
            );
            // One idmapped mount of the layers serves both containers; it goes with the last.
            let shared = e.exec.join("snapshots/.idmapped");
            assert_eq!(fs::read_dir(&shared).unwrap().count(), 1);
            // Host uid 100000 owns the shared layers as seen through that mount: it must not
            // be able to reach them.
            mapped_uid_cannot_reach_the_layers(&e, &shared, &img);
            snap.remove("second").unwrap();
            assert_eq!(owner(&root.join("bin/busybox")), (100000, 100000));
            assert_eq!(fs::read_dir(&shared).unwrap().count(), 1);
            snap.remove("remapped").unwrap();
            assert_eq!(fs::read_dir(&shared).unwrap().count(), 0);
        }
        RemapMethod::Copy => {
            assert_eq!(fs::read_dir(&copies).unwrap().count(), 1);
            mapped_uid_cannot_reach_the_layers(&e, &copies, &img);
            let keep = img.chain_ids();
            assert!(snap.prune_copies(&keep).unwrap().is_empty());
            assert_eq!(snap.prune_copies(&keep[..1]).unwrap().len(), 1);
            assert_eq!(snap.prune_copies(&[]).unwrap().len(), 1);
            // A prepared container whose copies were pruned gets them back on mount.
            snap.unmount("second").unwrap();
            let root2 = snap.mount("second").unwrap();
            assert_eq!(owner(&root2.join("bin/busybox")), (100000, 100000));
        }
    }
}

#[test]
fn remapped_root_idmapped() {
    remapped(RemapMode::Auto, RemapMethod::Idmapped);
}

#[test]
fn remapped_root_copy_fallback() {
    remapped(RemapMode::ForceCopy, RemapMethod::Copy);
}

#[test]
fn unmappable_owner_is_a_clear_error() {
    let e = env();
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "opt/odd", b"x", 200000);
    let img = two_layer_image(&e.store, "odd:1", b.into_inner().unwrap());
    let maps = UsernsMaps::single(100000, 65536).unwrap();
    for mode in [RemapMode::Auto, RemapMode::ForceCopy] {
        let snap = Snapshotter::open(&e.data, &e.exec, mode).unwrap();
        let _c = Cleanup(&snap, "odd");
        let err = snap
            .prepare("odd", &img.chain_ids(), Some(&maps))
            .unwrap_err();
        assert!(
            matches!(err, SnapshotError::Unmappable { id: 200000, .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("/opt/odd") && msg.contains("200000") && msg.contains("/etc/subuid"),
            "{msg}"
        );
        // Without a map the same image runs.
        snap.prepare("odd", &img.chain_ids(), None).unwrap();
        assert!(snap.mount("odd").unwrap().join("opt/odd").is_file());
    }
}

#[test]
fn missing_layer_and_unprepared() {
    let e = env();
    let snap = Snapshotter::open(&e.data, &e.exec, RemapMode::Auto).unwrap();
    let err = snap
        .prepare("x", &[Digest::of(b"nothing")], None)
        .unwrap_err();
    assert!(matches!(err, SnapshotError::LayerMissing(_)), "{err}");
    assert!(matches!(
        snap.mount("never"),
        Err(SnapshotError::NotPrepared(_))
    ));
    assert!(matches!(
        snap.prepare("../x", &[], None),
        Err(SnapshotError::BadId(_))
    ));
}
