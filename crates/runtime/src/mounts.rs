//! The container's file system view, built by the init inside its new mount namespace:
//! the root bind, the config's mounts in order, /dev, pivot_root (or chroot), masked and
//! read-only paths, the read-only root and the root's propagation.
//!
//! Mount targets are resolved with openat2(RESOLVE_IN_ROOT), so a symlink in the image
//! (`/proc -> /`) never leads a mount out of the root (the CVE-2021-30465 class); mounts
//! are then made on `/proc/self/fd/N` of the resolved target.

use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknodat, Mode, SFlag};
use nix::sys::statvfs::{statvfs, FsFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};
use rustix::fs::{OFlags, ResolveFlags};

use crate::error::{Error, Result};
use crate::syscall::{self, SetAttr};

/// What a mount's `options` ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Flags the options clear (`rw`, `suid`, `dev`, `exec`...), for bind mounts.
    pub clear: MsFlags,
    /// MS_PRIVATE/MS_SLAVE/MS_SHARED/MS_UNBINDABLE, with MS_REC for the r-variants.
    pub propagation: MsFlags,
    pub bind: bool,
    pub recursive: bool,
    pub idmap: bool,
    pub ridmap: bool,
    /// Options the file system itself takes (`size=`, `mode=`, `newinstance`...).
    pub data: String,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            clear: MsFlags::empty(),
            propagation: MsFlags::empty(),
            bind: false,
            recursive: false,
            idmap: false,
            ridmap: false,
            data: String::new(),
        }
    }
}

pub fn parse_options(opts: &[String]) -> MountOptions {
    let mut o = MountOptions::default();
    let mut data: Vec<&str> = Vec::new();
    for opt in opts {
        let (set, clear) = match opt.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => {
                o.bind = true;
                continue;
            }
            "rbind" => {
                o.bind = true;
                o.recursive = true;
                continue;
            }
            "idmap" => {
                o.idmap = true;
                continue;
            }
            "ridmap" => {
                o.idmap = true;
                o.ridmap = true;
                continue;
            }
            p => {
                if let Some(f) = propagation_flag(p) {
                    o.propagation = f;
                } else {
                    data.push(p);
                }
                continue;
            }
        };
        o.flags = (o.flags | set) & !clear;
        o.clear = (o.clear | clear) & !set;
    }
    o.data = data.join(",");
    o
}

/// `private`, `rslave`... as mount flags (MS_REC for the r-variants).
pub fn propagation_flag(p: &str) -> Option<MsFlags> {
    Some(match p {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// The mount_setattr(2) form of a bind mount's flags.
pub fn bind_attr(o: &MountOptions) -> SetAttr {
    let table = [
        (MsFlags::MS_RDONLY, syscall::MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, syscall::MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, syscall::MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, syscall::MOUNT_ATTR_NOEXEC),
    ];
    let mut a = SetAttr::default();
    for (ms, attr) in table {
        if o.flags.contains(ms) {
            a.set |= attr;
        }
        if o.clear.contains(ms) {
            a.clear |= attr;
        }
    }
    // The access time settings are one field: setting one clears the others.
    let atime = if o.flags.contains(MsFlags::MS_NOATIME) {
        Some(syscall::MOUNT_ATTR_NOATIME)
    } else if o.flags.contains(MsFlags::MS_STRICTATIME) {
        Some(syscall::MOUNT_ATTR_STRICTATIME)
    } else if o.flags.contains(MsFlags::MS_RELATIME) {
        Some(syscall::MOUNT_ATTR_RELATIME)
    } else {
        None
    };
    if let Some(t) = atime {
        a.set |= t;
        a.clear |= syscall::MOUNT_ATTR__ATIME;
    }
    a
}

pub fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// Whether the mount asks for an idmapped mount.
pub fn is_idmapped(m: &Mount) -> bool {
    m.uid_mappings().is_some()
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "idmap" || o == "ridmap")
}

/// Where the config's rootfs is (relative to the bundle unless absolute).
pub fn rootfs_path(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::InvalidConfig("`root` is missing".into()))?;
    Ok(bundle.join(root.path()))
}

/// Facts about the container the mount code needs.
pub struct Context<'a> {
    pub spec: &'a Spec,
    pub rootfs: PathBuf,
    /// A new user namespace: no mknod, sysfs only with a new net namespace.
    pub userns: bool,
    pub new_netns: bool,
    pub cgroup_v2: bool,
    /// The container's own cgroup directories on the host (v1 controllers and the
    /// unified hierarchy): what a `cgroup` mount shows on a v1 or hybrid host.
    pub cgroup_dirs: Vec<PathBuf>,
}

/// What the first phase opened: the root, and a detached tree for each bind mount.
pub struct Prepared {
    pub root: OwnedFd,
    /// By index in `spec.mounts`.
    trees: HashMap<usize, OwnedFd>,
    /// For a `cgroup` mount on a v1 host: (directory name, the container's own cgroup).
    cgroup_trees: Vec<(std::ffi::OsString, OwnedFd)>,
}

/// Phase one, while the init still holds the host's credentials (kuid 0, owner of every
/// root-owned host directory, so it can reach a rootfs under a 0700 directory): sets the
/// propagation of `/`, binds the rootfs onto itself and clones every bind source into a
/// detached tree. `idmapped` holds the trees the runtime made for idmapped mounts.
pub fn prepare(cx: &Context, mut idmapped: HashMap<usize, OwnedFd>) -> Result<Prepared> {
    // Nothing the container mounts may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::sys("make / rslave", e))?;
    mount(
        Some(&cx.rootfs),
        &cx.rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        Error::sys(
            format!("bind the rootfs {} onto itself", cx.rootfs.display()),
            e,
        )
    })?;
    let root = rustix::fs::open(
        &cx.rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| Error::io("open rootfs", &cx.rootfs, e.into()))?;
    let mut trees = HashMap::new();
    let mut cgroup_trees = Vec::new();
    for (i, m) in cx.spec.mounts().iter().flatten().enumerate() {
        if let Some(t) = idmapped.remove(&i) {
            trees.insert(i, t);
            continue;
        }
        let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
        let (src, recursive) = if is_bind(m) {
            let src = m.source().clone().ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "bind mount to {} has no source",
                    m.destination().display()
                ))
            })?;
            (src, opts.recursive)
        } else if m.typ().as_deref() == Some("sysfs") && cx.userns && !cx.new_netns {
            // sysfs belongs to a net namespace: a user namespace without its own cannot mount
            // it, so it sees the host's, read-only as sysfs would be.
            (PathBuf::from("/sys"), true)
        } else if m.typ().as_deref() == Some("cgroup") && !cx.cgroup_v2 {
            // v1 hierarchies cannot be mounted fresh from a user namespace, and the host's
            // whole tree is not the container's business: a tmpfs with the container's own
            // cgroups, read-only, as runc shows them.
            for d in &cx.cgroup_dirs {
                let name = d
                    .strip_prefix("/sys/fs/cgroup")
                    .ok()
                    .and_then(|r| r.components().next())
                    .map(|c| c.as_os_str().to_owned());
                let Some(name) = name else { continue };
                let tree = syscall::open_tree_clone(None, d, false)
                    .map_err(|e| Error::sys(format!("open cgroup {}", d.display()), e))?;
                let ro = SetAttr {
                    set: syscall::MOUNT_ATTR_RDONLY
                        | syscall::MOUNT_ATTR_NOSUID
                        | syscall::MOUNT_ATTR_NODEV
                        | syscall::MOUNT_ATTR_NOEXEC,
                    ..SetAttr::default()
                };
                syscall::mount_setattr(tree.as_fd(), false, ro, None)
                    .map_err(|e| Error::sys(format!("make cgroup {} read-only", d.display()), e))?;
                cgroup_trees.push((name, tree));
            }
            continue;
        } else {
            continue;
        };
        let tree = syscall::open_tree_clone(None, &src, recursive)
            .map_err(|e| Error::sys(format!("open mount source {}", src.display()), e))?;
        let mut attr = bind_attr(&opts);
        if !is_bind(m) {
            attr.set |= syscall::MOUNT_ATTR_RDONLY
                | syscall::MOUNT_ATTR_NOSUID
                | syscall::MOUNT_ATTR_NODEV
                | syscall::MOUNT_ATTR_NOEXEC;
        }
        if attr != SetAttr::default() {
            syscall::mount_setattr(tree.as_fd(), recursive, attr, None)
                .map_err(|e| Error::sys(format!("set flags of bind mount {}", src.display()), e))?;
        }
        trees.insert(i, tree);
    }
    Ok(Prepared {
        root,
        trees,
        cgroup_trees,
    })
}

/// The magic-link path of a descriptor, which mount(2) follows to the resolved target.
fn fd_path(fd: BorrowedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// How many dangling symlinks creating one mount target may follow (the kernel's limit).
const MAX_LINKS: usize = 40;

/// Opens (`O_PATH`) the mount target `dest` inside `root`, creating what is missing as
/// directories, and the last component as an empty file when `file`; never leaving the
/// root. New entries get `owner` when given (else the caller's ids). A dangling symlink on
/// the way is followed inside the root, `..` in its target applied in order: what it points
/// to is created.
pub fn resolve_in_root(
    root: BorrowedFd,
    dest: &Path,
    file: bool,
    owner: Option<(u32, u32)>,
) -> Result<OwnedFd> {
    let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let open = |p: &Path| {
        rustix::fs::openat2(
            root,
            p,
            OFlags::PATH | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
            how,
        )
    };
    let err = |what: &'static str, p: &Path, e: rustix::io::Errno| Error::io(what, p, e.into());
    let mut comps = normalize(dest);
    'retry: for _ in 0..MAX_LINKS {
        let full = join(&comps);
        match open(&full) {
            Ok(fd) => return Ok(fd),
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(err("resolve mount target", dest, e)),
        }
        for i in 0..comps.len() {
            let cur = join(&comps[..=i]);
            match open(&cur) {
                Ok(_) => continue,
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(err("resolve mount target", &cur, e)),
            }
            let parent =
                open(&join(&comps[..i])).map_err(|e| err("resolve mount target", &cur, e))?;
            let name = comps[i].as_os_str();
            let made = if i + 1 == comps.len() && file {
                rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::WRONLY
                        | OFlags::CLOEXEC,
                    rustix::fs::Mode::from_raw_mode(0o644),
                )
                .map(drop)
            } else {
                rustix::fs::mkdirat(&parent, name, rustix::fs::Mode::from_raw_mode(0o755))
            };
            match made {
                Ok(()) => {
                    if let Some((uid, gid)) = owner {
                        rustix::fs::chownat(
                            &parent,
                            name,
                            Some(rustix::fs::Uid::from_raw(uid)),
                            Some(rustix::fs::Gid::from_raw(gid)),
                            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                        )
                        .map_err(|e| err("chown mount target", &cur, e))?;
                    }
                }
                Err(rustix::io::Errno::EXIST) => {
                    // A dangling symlink (or a racing creator): go where it points. An
                    // absolute target replaces the base.
                    if let Ok(target) = rustix::fs::readlinkat(&parent, name, Vec::new()) {
                        let mut next = join(&comps[..i]);
                        next.push(std::ffi::OsStr::from_bytes(target.as_bytes()));
                        next.extend(&comps[i + 1..]);
                        comps = normalize(&next);
                        continue 'retry;
                    }
                }
                Err(e) => return Err(err("create mount target", &cur, e)),
            }
        }
        return open(&full).map_err(|e| err("resolve mount target", dest, e));
    }
    Err(err("resolve mount target", dest, rustix::io::Errno::LOOP))
}

/// `path`'s components with `.` and `..` applied lexically (`..` at the top stays there,
/// as in the container's root).
fn normalize(path: &Path) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_owned()),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn join(comps: &[std::ffi::OsString]) -> PathBuf {
    let mut p = PathBuf::from("/");
    p.extend(comps);
    p
}

/// Phase two, as root of the container's user namespace: every mount of the config, in
/// order, inside the root; then /dev's devices and links.
pub fn mount_all(cx: &Context, p: &mut Prepared) -> Result<()> {
    let mut dev_is_bind = false;
    for (i, m) in cx.spec.mounts().iter().flatten().enumerate() {
        let dest = m.destination();
        if !dest.is_absolute() {
            return Err(Error::InvalidConfig(format!(
                "mount destination `{}` is not absolute",
                dest.display()
            )));
        }
        let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
        if let Some(tree) = p.trees.remove(&i) {
            if dest == Path::new("/dev") {
                dev_is_bind = true;
            }
            // From the tree itself: the source path may not be reachable any more now that
            // we are container root (a 0700 host directory).
            let src_is_file = rustix::fs::fstat(&tree).is_ok_and(|st| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory
            });
            let target = resolve_in_root(p.root.as_fd(), dest, src_is_file, None)?;
            syscall::move_mount(tree.as_fd(), target.as_fd())
                .map_err(|e| Error::sys(format!("attach bind mount at {}", dest.display()), e))?;
            if !opts.propagation.is_empty() {
                let target = resolve_in_root(p.root.as_fd(), dest, src_is_file, None)?;
                mount(
                    None::<&str>,
                    fd_path(target.as_fd()).as_str(),
                    None::<&str>,
                    opts.propagation,
                    None::<&str>,
                )
                .map_err(|e| Error::sys(format!("set propagation of {}", dest.display()), e))?;
            }
            continue;
        }
        let typ = m.typ().clone().unwrap_or_default();
        if typ.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "mount at {} has no type",
                dest.display()
            )));
        }
        if typ == "cgroup" && !cx.cgroup_v2 {
            cgroup_v1_view(p, dest, &opts)?;
            continue;
        }
        let fstype = if typ == "cgroup" {
            "cgroup2".to_string()
        } else {
            typ.clone()
        };
        let source = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
        let target = resolve_in_root(p.root.as_fd(), dest, false, None)?;
        let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
        let tpath = fd_path(target.as_fd());
        let r = mount(
            Some(&source),
            tpath.as_str(),
            Some(fstype.as_str()),
            opts.flags,
            data,
        );
        match r {
            Ok(()) => {}
            // mqueue belongs to an ipc namespace; in a user namespace that shares the host's,
            // show the host's instead.
            Err(Errno::EPERM) if typ == "mqueue" && cx.userns => {
                mount(
                    Some("/dev/mqueue"),
                    tpath.as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| {
                    Error::sys(format!("bind the host's mqueue at {}", dest.display()), e)
                })?;
            }
            Err(e) => {
                return Err(Error::sys(
                    format!(
                        "mount {typ} at {} (options `{}`)",
                        dest.display(),
                        opts.data
                    ),
                    e,
                ))
            }
        }
        if !opts.propagation.is_empty() {
            let target = resolve_in_root(p.root.as_fd(), dest, false, None)?;
            mount(
                None::<&str>,
                fd_path(target.as_fd()).as_str(),
                None::<&str>,
                opts.propagation,
                None::<&str>,
            )
            .map_err(|e| Error::sys(format!("set propagation of {}", dest.display()), e))?;
        }
    }
    if !dev_is_bind {
        setup_dev(cx, p.root.as_fd())?;
    }
    Ok(())
}

/// A `cgroup` mount on a v1 host: tmpfs, a directory per hierarchy the container is in with
/// its own cgroup bound there, then the tmpfs made read-only.
fn cgroup_v1_view(p: &mut Prepared, dest: &Path, opts: &MountOptions) -> Result<()> {
    let target = resolve_in_root(p.root.as_fd(), dest, false, None)?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        fd_path(target.as_fd()).as_str(),
        Some("tmpfs"),
        flags,
        Some("mode=755"),
    )
    .map_err(|e| Error::sys(format!("mount tmpfs for cgroups at {}", dest.display()), e))?;
    for (name, tree) in std::mem::take(&mut p.cgroup_trees) {
        let sub = resolve_in_root(p.root.as_fd(), &dest.join(&name), false, None)?;
        syscall::move_mount(tree.as_fd(), sub.as_fd())
            .map_err(|e| Error::sys(format!("attach cgroup {}", dest.join(&name).display()), e))?;
    }
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        let target = resolve_in_root(p.root.as_fd(), dest, false, None)?;
        mount(
            None::<&str>,
            fd_path(target.as_fd()).as_str(),
            None::<&str>,
            flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| Error::sys(format!("make {} read-only", dest.display()), e))?;
    }
    Ok(())
}

/// The devices every container gets (runtime-spec "Default Devices").
fn default_devices() -> Vec<(&'static str, u64, u64)> {
    vec![
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
}

fn setup_dev(cx: &Context, root: BorrowedFd) -> Result<()> {
    let dev = resolve_in_root(root, Path::new("/dev"), false, None)?;
    let mut devices: Vec<DeviceEntry> = default_devices()
        .into_iter()
        .map(|(n, ma, mi)| {
            (
                PathBuf::from("/dev").join(n),
                SFlag::S_IFCHR,
                ma,
                mi,
                0o666,
                None,
                None,
            )
        })
        .collect();
    for d in cx
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        devices.push(device_entry(d)?);
    }
    for (path, kind, major, minor, mode, uid, gid) in devices {
        if cx.userns {
            // mknod is not allowed in a user namespace: bind the host's node instead.
            let target = resolve_in_root(root, &path, true, None)?;
            mount(
                Some(&path),
                fd_path(target.as_fd()).as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| Error::sys(format!("bind host device {}", path.display()), e))?;
        } else {
            let parent = path.parent().unwrap_or(Path::new("/dev"));
            let pfd = resolve_in_root(root, parent, false, None)?;
            let name = path.file_name().unwrap_or_default();
            let pdir = reopen_dir(pfd.as_fd(), parent)?;
            let _ = nix::unistd::unlinkat(&pdir, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
            mknodat(
                &pdir,
                name,
                kind,
                Mode::from_bits_truncate(mode),
                makedev(major, minor),
            )
            .map_err(|e| Error::sys(format!("mknod {}", path.display()), e))?;
            // mknod applies the umask; devices need the exact mode.
            nix::sys::stat::fchmodat(
                &pdir,
                name,
                Mode::from_bits_truncate(mode),
                nix::sys::stat::FchmodatFlags::NoFollowSymlink,
            )
            .map_err(|e| Error::sys(format!("chmod {}", path.display()), e))?;
            if uid.is_some() || gid.is_some() {
                nix::unistd::fchownat(
                    &pdir,
                    name,
                    uid.map(nix::unistd::Uid::from_raw),
                    gid.map(nix::unistd::Gid::from_raw),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| Error::sys(format!("chown {}", path.display()), e))?;
            }
        }
    }
    let devdir = reopen_dir(dev.as_fd(), Path::new("/dev"))?;
    let links = [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ];
    for (to, name) in links {
        if name == "ptmx" {
            // A regular ptmx (from an image's /dev) would not reach the container's devpts.
            let _ = nix::unistd::unlinkat(&devdir, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
        match nix::unistd::symlinkat(to, &devdir, name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(Error::sys(format!("symlink /dev/{name}"), e)),
        }
    }
    if cx
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false)
    {
        resolve_in_root(root, Path::new("/dev/console"), true, None)?;
    }
    Ok(())
}

type DeviceEntry = (PathBuf, SFlag, u64, u64, u32, Option<u32>, Option<u32>);

fn device_entry(d: &LinuxDevice) -> Result<DeviceEntry> {
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(Error::InvalidConfig(format!(
                "device {} has type `a`, which only device cgroup rules take",
                d.path().display()
            )))
        }
    };
    if !d.path().starts_with("/dev") {
        return Err(Error::InvalidConfig(format!(
            "device {} is not under /dev",
            d.path().display()
        )));
    }
    Ok((
        d.path().clone(),
        kind,
        d.major() as u64,
        d.minor() as u64,
        d.file_mode().unwrap_or(0o666) & 0o7777,
        d.uid(),
        d.gid(),
    ))
}

/// An O_PATH descriptor cannot be used for mknodat and friends on every kernel path: reopen
/// it as a real directory through its magic link.
fn reopen_dir(fd: BorrowedFd, what: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        fd_path(fd).as_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| Error::io("open directory", what, e.into()))
}

/// Makes the prepared root the process's root: pivot_root, or chroot with `no_pivot`.
pub fn enter_root(p: &Prepared, no_pivot: bool) -> Result<()> {
    nix::unistd::fchdir(&p.root).map_err(|e| Error::sys("chdir into the rootfs", e))?;
    if no_pivot {
        // Without pivot_root the host's mounts stay reachable to a process that escapes
        // the chroot; move the root over / so that at least "/" is the container's.
        mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
            .map_err(|e| Error::sys("move the rootfs over /", e))?;
        nix::unistd::chroot(".").map_err(|e| Error::sys("chroot into the rootfs", e))?;
    } else {
        nix::unistd::pivot_root(".", ".")
            .map_err(|e| Error::sys("pivot_root into the rootfs", e))?;
        // The old root is now stacked under the new one at "/": detach it, after making
        // sure its unmount does not propagate to the host.
        mount(
            None::<&str>,
            ".",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| Error::sys("make the old root rslave", e))?;
        umount2(".", MntFlags::MNT_DETACH).map_err(|e| Error::sys("detach the old root", e))?;
    }
    nix::unistd::chdir("/").map_err(|e| Error::sys("chdir /", e))?;
    Ok(())
}

/// The mount flags a bind remount must keep (a user namespace may not clear locked ones).
fn kept_flags(path: &str) -> MsFlags {
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (sf, mf) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(sf) {
            out |= mf;
        }
    }
    out
}

/// After the pivot: maskedPaths, readonlyPaths, sysctl, readonly root, rootfsPropagation.
pub fn finish(spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    for (k, v) in linux.sysctl().iter().flatten() {
        // Names were checked against the namespaced ones before the fork.
        let path = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
        fs::write(&path, v).map_err(|e| Error::io("set sysctl", &path, e))?;
    }
    for p in linux.readonly_paths().iter().flatten() {
        match mount(
            Some(p.as_str()),
            p.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => {}
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(Error::sys(format!("bind read-only path {p}"), e)),
        }
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_REC
            | kept_flags(p);
        mount(None::<&str>, p.as_str(), None::<&str>, flags, None::<&str>)
            .map_err(|e| Error::sys(format!("make {p} read-only"), e))?;
    }
    for p in linux.masked_paths().iter().flatten() {
        let r = match fs::metadata(p) {
            Err(_) => continue,
            Ok(md) if md.is_dir() => mount(
                Some("tmpfs"),
                p.as_str(),
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0,mode=000"),
            ),
            Ok(_) => mount(
                Some("/dev/null"),
                p.as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ),
        };
        r.map_err(|e| Error::sys(format!("mask {p}"), e))?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept_flags("/");
        mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
            .map_err(|e| Error::sys("make the root read-only", e))?;
    }
    if let Some(p) = linux.rootfs_propagation() {
        let f = propagation_flag(p).ok_or_else(|| {
            Error::InvalidConfig(format!("rootfsPropagation `{p}` is not a propagation mode"))
        })?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            f | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| Error::sys(format!("set rootfsPropagation {p}"), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &[&str]) -> MountOptions {
        parse_options(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let o = opts(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data, "mode=755,size=65536k");
        let o = opts(&["rbind", "ro", "rprivate", "idmap"]);
        assert!(o.bind && o.recursive && o.idmap && !o.ridmap);
        assert_eq!(o.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(o.flags, MsFlags::MS_RDONLY);
    }

    #[test]
    fn later_options_win() {
        let o = opts(&["ro", "rw"]);
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        assert!(o.clear.contains(MsFlags::MS_RDONLY));
        let a = bind_attr(&o);
        assert_eq!(
            a.clear & syscall::MOUNT_ATTR_RDONLY,
            syscall::MOUNT_ATTR_RDONLY
        );
    }

    #[test]
    fn bind_attr_atime() {
        let a = bind_attr(&opts(&["bind", "noatime", "nodev"]));
        assert_eq!(
            a.set,
            syscall::MOUNT_ATTR_NOATIME | syscall::MOUNT_ATTR_NODEV
        );
        assert_eq!(a.clear, syscall::MOUNT_ATTR__ATIME);
    }

    #[test]
    fn targets_follow_dangling_links_inside_the_root_with_dotdot_in_order() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir(root.join("x")).unwrap();
        std::os::unix::fs::symlink("../c", root.join("x/l")).unwrap();
        std::os::unix::fs::symlink("/../../etc-escape", root.join("out")).unwrap();
        let fd = fs::File::open(root).unwrap();
        resolve_in_root(fd.as_fd(), Path::new("/x/l/d"), true, None).unwrap();
        assert!(root.join("c/d").is_file());
        assert!(!root.join("x/c").exists());
        // An absolute target with `..` stays in the root.
        resolve_in_root(fd.as_fd(), Path::new("/out"), false, None).unwrap();
        assert!(root.join("etc-escape").is_dir());
    }
}
