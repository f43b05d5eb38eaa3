//! A container's files as its processes see them, for the archive API (`docker cp`): its
//! root file system with its volumes and bind mounts on top, built in a private mount
//! namespace of one short-lived thread.
//!
//! The thread unshares its file system context and its mount namespace (a thread of a
//! multithreaded process may leave the mount namespace only together with CLONE_FS) and
//! makes every mount private, so that nothing it mounts reaches the host. It then attaches a
//! clone of the root (alone: nothing mounted below the root's path on the host comes along)
//! and a clone of each mount source on its target, resolved inside the root with
//! `openat2(RESOLVE_IN_ROOT)`, so that a symlink in the root or in a volume never leads
//! out. Missing targets are created as the runtime creates them at start. Read-only mounts,
//! and the root of a `--read-only` container, are read-only in the view too: a copy cannot
//! write through them. When the thread ends, its namespace goes with every mount in it:
//! there is nothing to undo, even after an error.
//!
//! tmpfs mounts are not part of the view: each start gets a fresh one (Docker does not show
//! them to `cp` either).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, StatVfsMountFlags, StatxFlags};
use rustix::io::Errno;
use rustix::mount::{self as rmount, MountPropagationFlags, MoveMountFlags, OpenTreeFlags};
use rustix::thread::UnshareFlags;

use crate::error::{EngineError, Result};
use crate::fsat::{proc_path, sys};

/// One mount of the view: the host path `source` on `destination` in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ViewMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// What a view is made of.
#[derive(Debug, Clone)]
pub(crate) struct ViewSpec {
    /// The container's root file system, mounted on the host.
    pub rootfs: PathBuf,
    pub read_only_rootfs: bool,
    /// In the order the runtime mounts them.
    pub mounts: Vec<ViewMount>,
    /// The owner of mount targets the view creates in the root: the container's root on the
    /// host, as when the runtime creates them at start.
    pub owner: (u32, u32),
}

/// A built view, as an operation gets it.
pub(crate) struct View {
    /// `O_PATH` descriptor of the root; the mounts are below it.
    pub root: OwnedFd,
    root_mount: u64,
}

/// Where a read-only directory of the view is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadOnlyPlace {
    /// On the root file system of a `--read-only` container.
    Rootfs,
    /// On a volume or bind mount (mounted read-only, or of a read-only file system).
    Mount,
}

impl View {
    /// Whether `fd` is on a read-only mount, and which kind.
    pub(crate) fn read_only(&self, fd: BorrowedFd<'_>) -> Result<Option<ReadOnlyPlace>> {
        let vfs = rfs::fstatvfs(fd).map_err(sys("statvfs", proc_path(fd)))?;
        if !vfs.f_flag.contains(StatVfsMountFlags::RDONLY) {
            return Ok(None);
        }
        Ok(Some(if mount_id(fd)? == self.root_mount {
            ReadOnlyPlace::Rootfs
        } else {
            ReadOnlyPlace::Mount
        }))
    }
}

/// Builds the view of `spec` on a thread of its own and runs `f` there. Blocking.
pub(crate) fn run<T, E>(
    spec: &ViewSpec,
    f: impl FnOnce(&View) -> Result<T, E> + Send,
) -> Result<T, E>
where
    T: Send,
    E: From<EngineError> + Send,
{
    std::thread::scope(|s| {
        let worker = std::thread::Builder::new()
            .name("berth-fsview".into())
            .spawn_scoped(s, || f(&enter(spec)?))
            .map_err(|e| EngineError::io("start a thread for", &spec.rootfs, e))?;
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Moves the calling thread into a private mount namespace holding the view. The thread
/// must end when the operation does (its namespace goes with it).
fn enter(spec: &ViewSpec) -> Result<View> {
    // SAFETY: CLONE_FS and CLONE_NEWNS change only this thread's root, working directory,
    // umask and mount namespace. The descriptor table stays shared (no CLONE_FILES), which
    // is what unshare_unsafe warns about. The thread is ours and ends with the operation.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS | UnshareFlags::NEWNS) }
        .map_err(sys("unshare the mount namespace to view", &spec.rootfs))?;
    rmount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(sys("make the mounts private to view", &spec.rootfs))?;
    let root = clone_tree(&spec.rootfs, false).map_err(sys("clone the mount", &spec.rootfs))?;
    rmount::move_mount(
        root.as_fd(),
        "",
        rfs::CWD,
        &spec.rootfs,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(sys("attach the view's root at", &spec.rootfs))?;
    let root_mount = mount_id(root.as_fd())?;
    for m in &spec.mounts {
        attach(root.as_fd(), m, spec.owner)?;
    }
    // Last: the mount targets above may have had to be created in it.
    if spec.read_only_rootfs {
        make_read_only(root.as_fd(), false, &spec.rootfs)?;
    }
    Ok(View { root, root_mount })
}

/// A detached copy of the mount tree at `path` (with its submounts when `recursive`).
fn clone_tree(path: &Path, recursive: bool) -> rustix::io::Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    rmount::open_tree(rfs::CWD, path, flags)
}

fn attach(root: BorrowedFd<'_>, m: &ViewMount, owner: (u32, u32)) -> Result<()> {
    // A bind of `-v` is recursive (`rbind`), as in the container. A source removed since
    // the container was made is the container's state, not the request's fault: 409.
    let tree = clone_tree(&m.source, true).map_err(|e| match e {
        Errno::NOENT => EngineError::Conflict(format!(
            "the source {} of the mount on {} is gone: recreate it, or the container",
            m.source.display(),
            m.destination
        )),
        e => EngineError::io("clone the mount", &m.source, e.into()),
    })?;
    let st = rfs::fstat(&tree).map_err(sys("stat", &m.source))?;
    let file = FileType::from_raw_mode(st.st_mode) != FileType::Directory;
    let target = resolve_target(root, &m.destination, file, owner)?;
    rmount::move_mount(
        tree.as_fd(),
        "",
        target.as_fd(),
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| {
        EngineError::io(
            "mount",
            &m.source,
            std::io::Error::other(format!("on {} in the container: {e}", m.destination)),
        )
    })?;
    if m.read_only {
        make_read_only(tree.as_fd(), true, Path::new(&m.destination))?;
    }
    Ok(())
}

/// Makes the mount `fd` refers to read-only, with every mount below it when `recursive`
/// (a read-only bind of a host tree with mounts in it, `-v /:/host:ro`, is read-only all
/// through, as the runtime makes it).
fn make_read_only(fd: BorrowedFd<'_>, recursive: bool, what: &Path) -> Result<()> {
    let attr = berth_runtime::SetAttr {
        set: berth_runtime::MOUNT_ATTR_RDONLY,
        ..Default::default()
    };
    berth_runtime::mount_setattr(fd, recursive, attr, None)
        .map_err(|e| EngineError::io("make read-only", what, e.into()))
}

fn mount_id(fd: BorrowedFd<'_>) -> Result<u64> {
    let st = rfs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)
        .map_err(sys("statx", proc_path(fd)))?;
    Ok(st.stx_mnt_id)
}

/// Opens the mount target `dest` inside `root`, creating what is missing as the runtime
/// does at start, owned by `owner` (the container's root on the host).
fn resolve_target(
    root: BorrowedFd<'_>,
    dest: &str,
    file: bool,
    owner: (u32, u32),
) -> Result<OwnedFd> {
    berth_runtime::resolve_in_root(root, Path::new(dest), file, Some(owner))
        .map_err(|e| EngineError::System(format!("making the mount target {dest}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    use rustix::mount::MountFlags;
    use std::os::unix::fs::MetadataExt;

    fn mounted_under(dir: &Path) -> Vec<String> {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(String::from))
            .filter(|p| Path::new(p).starts_with(dir))
            .collect()
    }

    #[test]
    fn targets_are_created_inside_the_root_owned_by_its_owner() {
        berth_testkit::require_root();
        let tmp = berth_testkit::tempdir("berth-fsview-");
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // Dangling links that point out of the root, absolutely and with `..`.
        let out = outside.to_str().unwrap();
        std::os::unix::fs::symlink(format!("{out}/abs"), root.join("abs")).unwrap();
        std::os::unix::fs::symlink(format!("../../../../../..{out}/rel"), root.join("rel"))
            .unwrap();
        let rootfd = rfs::open(&root, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let owner = (100000, 100000);

        resolve_target(rootfd.as_fd(), "/a/b/../c", false, owner).unwrap();
        assert!(root.join("a/c").is_dir());
        for p in ["a", "a/c"] {
            let md = std::fs::metadata(root.join(p)).unwrap();
            assert_eq!((md.uid(), md.gid()), owner, "{p}");
        }
        resolve_target(rootfd.as_fd(), "/etc/file", true, owner).unwrap();
        assert!(root.join("etc/file").is_file());
        resolve_target(rootfd.as_fd(), "/abs/x", false, owner).unwrap();
        resolve_target(rootfd.as_fd(), "/rel/y", true, owner).unwrap();
        assert!(root
            .join(out.trim_start_matches('/'))
            .join("abs/x")
            .is_dir());
        assert!(root
            .join(out.trim_start_matches('/'))
            .join("rel/y")
            .is_file());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn the_view_mounts_inside_the_root_and_leaves_nothing_behind() {
        berth_testkit::require_root();
        let tmp = berth_testkit::tempdir("berth-fsview-");
        let dir = tmp.path();
        for d in ["root/etc", "vol", "ro"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("hosts"), "hosts\n").unwrap();
        // A link in the volume that climbs out of everything.
        std::os::unix::fs::symlink("../../../../../../..", dir.join("vol/up")).unwrap();
        let m = |src: &str, dst: &str, ro: bool| ViewMount {
            source: dir.join(src),
            destination: dst.into(),
            read_only: ro,
        };
        let spec = ViewSpec {
            rootfs: dir.join("root"),
            read_only_rootfs: true,
            mounts: vec![
                m("hosts", "/etc/hosts", false),
                m("vol", "/data", false),
                m("ro", "/data/ro", true),
            ],
            owner: (0, 0),
        };
        let opened = run(&spec, |view| -> Result<()> {
            let how = ResolveFlags::IN_ROOT;
            let open =
                |p: &str| rfs::openat2(&view.root, p, OFlags::PATH, Mode::empty(), how).unwrap();
            assert_eq!(
                view.read_only(open("/").as_fd())?,
                Some(ReadOnlyPlace::Rootfs)
            );
            assert_eq!(view.read_only(open("/data").as_fd())?, None);
            assert_eq!(
                view.read_only(open("/data/ro").as_fd())?,
                Some(ReadOnlyPlace::Mount)
            );
            // Through the volume's link: still the view's root.
            assert_eq!(view.read_only(open("/data/up/data").as_fd())?, None);
            let data = rfs::openat2(
                &view.root,
                "data/up/data",
                OFlags::RDONLY | OFlags::DIRECTORY,
                Mode::empty(),
                how,
            )
            .unwrap();
            rfs::openat(
                &data,
                "new",
                OFlags::CREATE | OFlags::WRONLY,
                Mode::from_raw_mode(0o644),
            )
            .unwrap();
            let hosts =
                rfs::openat2(&view.root, "etc/hosts", OFlags::RDONLY, Mode::empty(), how).unwrap();
            let mut buf = [0u8; 16];
            let n = rustix::io::read(&hosts, &mut buf).unwrap();
            assert_eq!(&buf[..n], b"hosts\n");
            let ro = rfs::openat2(
                &view.root,
                "data/ro",
                OFlags::RDONLY | OFlags::DIRECTORY,
                Mode::empty(),
                how,
            )
            .unwrap();
            let err = rfs::openat(
                &ro,
                "x",
                OFlags::CREATE | OFlags::WRONLY,
                Mode::from_raw_mode(0o644),
            )
            .unwrap_err();
            assert_eq!(err, Errno::ROFS);
            Ok(())
        });
        opened.unwrap();
        assert!(dir.join("vol/new").is_file(), "written into the volume");
        assert!(dir.join("root/data").is_dir(), "the target was created");
        assert!(dir.join("vol/ro").is_dir(), "the nested target was created");
        assert!(!dir.join("root/data/new").exists());
        assert_eq!(mounted_under(dir), Vec::<String>::new());
    }

    /// Unmounts (lazily) on drop, also when the test fails.
    struct Unmount(PathBuf);

    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = rmount::unmount(&self.0, rmount::UnmountFlags::DETACH);
        }
    }

    #[test]
    fn read_only_binds_are_read_only_all_through() {
        berth_testkit::require_root();
        let tmp = berth_testkit::tempdir("berth-fsview-");
        let dir = tmp.path();
        for d in ["root", "src/sub"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        // A host tree with a mount in it, bound read-only (as `-v /:/host:ro`).
        let sub = dir.join("src/sub");
        rmount::mount(
            "tmpfs",
            &sub,
            "tmpfs",
            MountFlags::empty(),
            Some(c"size=1m"),
        )
        .unwrap();
        let _guard = Unmount(sub.clone());
        let spec = ViewSpec {
            rootfs: dir.join("root"),
            read_only_rootfs: false,
            mounts: vec![ViewMount {
                source: dir.join("src"),
                destination: "/host".into(),
                read_only: true,
            }],
            owner: (0, 0),
        };
        run(&spec, |view| -> Result<()> {
            let how = ResolveFlags::IN_ROOT;
            for p in ["host", "host/sub"] {
                let d = rfs::openat2(&view.root, p, OFlags::RDONLY, Mode::empty(), how).unwrap();
                assert_eq!(
                    view.read_only(d.as_fd())?,
                    Some(ReadOnlyPlace::Mount),
                    "{p}"
                );
                let err = rfs::openat(&d, "x", OFlags::CREATE | OFlags::WRONLY, Mode::empty());
                assert_eq!(err.unwrap_err(), Errno::ROFS, "{p}");
            }
            Ok(())
        })
        .unwrap();
        // The host's own tmpfs is still writable.
        std::fs::write(sub.join("x"), "rw").unwrap();
    }

    #[test]
    fn a_missing_source_is_an_error_naming_it() {
        berth_testkit::require_root();
        let tmp = berth_testkit::tempdir("berth-fsview-");
        std::fs::create_dir_all(tmp.path().join("root")).unwrap();
        let spec = ViewSpec {
            rootfs: tmp.path().join("root"),
            read_only_rootfs: false,
            mounts: vec![ViewMount {
                source: tmp.path().join("gone"),
                destination: "/x".into(),
                read_only: false,
            }],
            owner: (0, 0),
        };
        let err = run(&spec, |_| Ok::<_, EngineError>(())).unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "{} of the mount on /x is gone",
                spec.mounts[0].source.display()
            )),
            "{err}"
        );
        assert_eq!(mounted_under(tmp.path()), Vec::<String>::new());
    }
}
