//! A container's files seen from outside: the archive API (`docker cp`) and `export`.
//!
//! Paths given by a client are resolved inside the container's root with
//! `openat2(RESOLVE_IN_ROOT)`: symlinks (absolute or with `..`) are followed as the container
//! would follow them, never out of its root. Trees are then walked with `*at` calls relative
//! to directory descriptors and `O_NOFOLLOW`, so a running container swapping a directory for
//! a symlink cannot redirect the walk. The merged root on the host shows host ids (the
//! mapped ones under remap): tars going out are translated to the container's view, tars
//! coming in to the host's view.
//!
//! `docker cp` sees the container's volumes and bind mounts as the container does, running
//! or stopped (crate::fsview builds that view in a private mount namespace); writing into a
//! read-only mount, or into the root of a `--read-only` container, is refused as Docker
//! refuses it. `export` is the root file system alone, as in Docker.
//!
//! A stopped container's root is mounted for the operation and unmounted after.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};

use crate::container::ContainerRecord;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::fsat::{io_sys, proc_path, sys};
use crate::fsview::{self, ReadOnlyPlace, View, ViewMount, ViewSpec};
use crate::store::Paths;
use crate::tarwalk::TarWalk;

/// `X-Docker-Container-Path-Stat`: what a path in a container is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    /// Go's `os.FileMode` bits (the Docker CLI decides file or directory from them).
    pub mode: u32,
    /// RFC 3339.
    pub mtime: String,
    /// For a symlink, the path it resolves to inside the container.
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

/// Resolves `path` inside `root`; with `follow_last` false a final symlink is not followed.
fn resolve(root: &OwnedFd, path: &str, follow_last: bool) -> Result<OwnedFd> {
    let not_found = |e: rustix::io::Errno| {
        if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::NOTDIR {
            EngineError::NotFound(format!(
                "Could not find the file {path} in container: no such file or directory"
            ))
        } else {
            EngineError::io("resolve", path, e.into())
        }
    };
    let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let rel = path.trim_start_matches('/');
    let (parent, last) = match rel.rsplit_once('/') {
        Some((p, l)) => (p, l),
        None => ("", rel),
    };
    let follow = follow_last || last.is_empty() || last == "." || last == "..";
    if follow {
        let rel = if rel.is_empty() { "." } else { rel };
        return rfs::openat2(
            root,
            rel,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            how,
        )
        .map_err(not_found);
    }
    let parent = if parent.is_empty() { "." } else { parent };
    let dir = rfs::openat2(
        root,
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        how,
    )
    .map_err(not_found)?;
    rfs::openat(
        &dir,
        last,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(not_found)
}

/// Go's `os.FileMode` of a stat.
fn go_mode(st: &Stat) -> u32 {
    let mut m = st.st_mode & 0o777;
    let ft = FileType::from_raw_mode(st.st_mode);
    m |= match ft {
        FileType::Directory => 1 << 31,
        FileType::Symlink => 1 << 27,
        FileType::Fifo => 1 << 25,
        FileType::Socket => 1 << 24,
        FileType::CharacterDevice => (1 << 26) | (1 << 21),
        FileType::BlockDevice => 1 << 26,
        _ => 0,
    };
    if st.st_mode & 0o4000 != 0 {
        m |= 1 << 23;
    }
    if st.st_mode & 0o2000 != 0 {
        m |= 1 << 22;
    }
    if st.st_mode & 0o1000 != 0 {
        m |= 1 << 20;
    }
    m
}

/// The name a path's entry gets in an archive: its last component (`/` for the root).
fn base_name(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/.").unwrap_or(trimmed);
    match trimmed.rsplit('/').next() {
        Some(n) if !n.is_empty() && n != "." => n.to_string(),
        _ => "/".to_string(),
    }
}

/// A root mounted for one operation on a stopped container; unmounted on drop.
struct TempMount<'a> {
    engine: &'a Engine,
    id: String,
}

impl Drop for TempMount<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.engine.inner.images.unmount_rootfs(&self.id) {
            tracing::warn!(id = %self.id, error = %e, "unmounting a stopped container's root");
        }
    }
}

/// The mounts `docker cp` sees, in the order the container's spec mounts them
/// (crate::spec): `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` from the container's
/// directory (when written) unless a mount of the user's replaces them, then the container's
/// volumes and binds. tmpfs mounts are left out.
fn view_mounts(rec: &ContainerRecord, paths: &Paths) -> Vec<ViewMount> {
    let etc = [
        ("/etc/hostname", paths.hostname()),
        ("/etc/hosts", paths.hosts()),
        ("/etc/resolv.conf", paths.resolv_conf()),
    ];
    let etc = etc
        .into_iter()
        .filter(|(dst, src)| !rec.mounts.iter().any(|m| m.destination == *dst) && src.exists())
        .map(|(dst, src)| ViewMount {
            source: src,
            destination: dst.to_string(),
            read_only: false,
        });
    let user = rec
        .mounts
        .iter()
        .filter(|m| m.kind != "tmpfs")
        .map(|m| ViewMount {
            source: m.source.clone(),
            destination: m.destination.clone(),
            read_only: m.read_only,
        });
    etc.chain(user).collect()
}

impl Engine {
    /// Runs `f` with the container's root mounted on the host (a stopped container's for
    /// the call only), holding the container's operation lock. Blocking: call from a
    /// blocking thread.
    fn with_mounted_root<T, E: From<EngineError>>(
        &self,
        name_or_id: &str,
        f: impl FnOnce(&std::path::Path, &ContainerRecord, &Paths) -> Result<T, E>,
    ) -> Result<T, E> {
        let entry = self.lookup(name_or_id)?;
        // Held so that the container is not started, stopped or removed meanwhile.
        let _op = entry.op.blocking_lock();
        let rec = entry.record();
        let path = self.inner.images.mount_rootfs(&entry.id)?;
        let _guard = (!rec.is_running()).then(|| TempMount {
            engine: self,
            id: entry.id.clone(),
        });
        f(&path, &rec, &entry.paths)
    }

    /// Runs `f` on the container's root file system alone (an `O_PATH` descriptor of it).
    fn with_root<T>(
        &self,
        name_or_id: &str,
        f: impl FnOnce(&OwnedFd, &ContainerRecord) -> Result<T>,
    ) -> Result<T> {
        self.with_mounted_root(name_or_id, |path, rec, _| {
            let root = rfs::open(
                path,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(sys("open", path))?;
            f(&root, rec)
        })
    }

    /// Runs `f` on the container's files as its processes see them: the root with its
    /// volumes and binds (crate::fsview), on a thread of its own.
    fn with_view<T: Send, E: From<EngineError> + Send>(
        &self,
        name_or_id: &str,
        f: impl FnOnce(&View, &ContainerRecord) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        self.with_mounted_root(name_or_id, |path, rec, paths| {
            let spec = ViewSpec {
                rootfs: path.to_path_buf(),
                read_only_rootfs: rec.host_config.readonly_rootfs,
                mounts: view_mounts(rec, paths),
                owner: rec.maps.as_ref().and_then(|m| m.root()).unwrap_or((0, 0)),
            };
            fsview::run(&spec, |view| f(view, rec))
        })
    }

    fn stat_at(root: &OwnedFd, path: &str) -> Result<(OwnedFd, PathStat)> {
        let fd = resolve(root, path, false)?;
        let st = rfs::statat(&fd, "", AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW)
            .map_err(sys("stat", path))?;
        let mut link_target = String::new();
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            // Where the link leads inside the container (empty when it leads nowhere).
            if let Ok(target) = resolve(root, path, true) {
                let root_host = std::fs::read_link(proc_path(root.as_fd())).unwrap_or_default();
                let host = std::fs::read_link(proc_path(target.as_fd())).unwrap_or_default();
                if let Ok(inside) = host.strip_prefix(&root_host) {
                    link_target = format!("/{}", inside.display());
                }
            }
        }
        let stat = PathStat {
            name: base_name(path),
            size: st.st_size,
            mode: go_mode(&st),
            mtime: crate::timefmt::rfc3339_nano(
                std::time::UNIX_EPOCH
                    + std::time::Duration::new(st.st_mtime.max(0) as u64, st.st_mtime_nsec as u32),
            ),
            link_target,
        };
        Ok((fd, stat))
    }

    /// `HEAD /containers/{id}/archive`.
    pub fn archive_stat(&self, name_or_id: &str, path: &str) -> Result<PathStat> {
        self.with_view(name_or_id, |view, _| Ok(Self::stat_at(&view.root, path)?.1))
    }

    /// `GET /containers/{id}/archive`: the path (a file or a tree) as a tar, rooted at its
    /// last component, owners in the container's view.
    pub fn archive_get(
        &self,
        name_or_id: &str,
        path: &str,
        out: impl Write + Send,
        on_stat: impl FnOnce(&PathStat) + Send,
    ) -> Result<()> {
        self.with_view(name_or_id, |view, rec| {
            let (fd, stat) = Self::stat_at(&view.root, path)?;
            on_stat(&stat);
            let mut walk = TarWalk::new(out, rec.maps.clone(), false);
            let name = if stat.name == "/" { "." } else { &stat.name };
            walk.add(fd.as_fd(), OsStr::new(""), name)
                .and_then(|_| walk.finish().map(drop))
                .map_err(io_sys("archive", path))
        })
    }

    /// `GET /containers/{id}/export`: the whole root as a tar, owners in the container's view.
    pub fn export(&self, name_or_id: &str, out: impl Write) -> Result<()> {
        self.with_root(name_or_id, |root, rec| {
            let mut walk = TarWalk::new(out, rec.maps.clone(), false);
            walk.add(root.as_fd(), OsStr::new(""), "./")
                .and_then(|_| walk.finish().map(drop))
                .map_err(io_sys("export", "/"))
        })
    }

    /// `PUT /containers/{id}/archive`: extracts the tar `input` into the directory `path`.
    /// Files are owned by the container's root, or with `copy_uid_gid` by the tar's owners
    /// (container ids, mapped to the host).
    pub fn archive_put(
        &self,
        name_or_id: &str,
        path: &str,
        input: impl Read + Send,
        copy_uid_gid: bool,
    ) -> Result<()> {
        self.with_view(name_or_id, |view, rec| {
            let dir = resolve(&view.root, path, true)?;
            let st = rfs::fstat(&dir).map_err(sys("stat", path))?;
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                return Err(EngineError::InvalidParameter(format!(
                    "extraction point is not a directory: {path} in container {}",
                    rec.name
                )));
            }
            // Docker's words first: clients match them.
            match view.read_only(dir.as_fd())? {
                None => {}
                Some(ReadOnlyPlace::Mount) => {
                    return Err(EngineError::Forbidden(format!(
                        "mounted volume is marked read-only: {path} in container {} is on a \
                         read-only mount; copy into a writable path or mount it read-write",
                        rec.name
                    )))
                }
                Some(ReadOnlyPlace::Rootfs) => {
                    return Err(EngineError::Forbidden(format!(
                        "container rootfs is marked read-only: {path} in container {} is on \
                         its root file system (--read-only); copy into a writable volume",
                        rec.name
                    )))
                }
            }
            let maps = rec.maps.clone();
            let to_host = move |uid: u64, gid: u64| -> Option<(u32, u32)> {
                let (uid, gid) = if copy_uid_gid {
                    (u32::try_from(uid).ok()?, u32::try_from(gid).ok()?)
                } else {
                    (0, 0)
                };
                match &maps {
                    None => Some((uid, gid)),
                    Some(m) => Some((m.uid.to_host(uid)?, m.gid.to_host(gid)?)),
                }
            };
            let (r, w) = io::pipe().map_err(io_sys("create pipe", path))?;
            let dest = proc_path(dir.as_fd());
            let limits = berth_image::UnpackLimits::default();
            std::thread::scope(|s| {
                let rewriter = s.spawn(move || rewrite_owners(input, w, to_host));
                let unpacked = berth_image::unpack(r, &dest, &limits);
                let rewritten = rewriter
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("tar rewriter panicked")));
                // The rewriter's error (a bad tar, an id outside the map) explains an unpack
                // error caused by the pipe closing, so it goes first.
                rewritten.map_err(|e| {
                    EngineError::InvalidParameter(format!("copying into {path}: {e}"))
                })?;
                unpacked.map_err(|e| {
                    EngineError::InvalidParameter(format!("copying into {path}: {e}"))
                })?;
                Ok(())
            })
        })
    }
}

/// Copies a tar, giving every entry the owner `to_host` says.
fn rewrite_owners(
    input: impl Read,
    out: impl Write,
    to_host: impl Fn(u64, u64) -> Option<(u32, u32)>,
) -> io::Result<()> {
    let mut ar = tar::Archive::new(input);
    let mut b = tar::Builder::new(out);
    for e in ar.entries()? {
        let mut e = e?;
        let mut h = e.header().clone();
        let path = e.path()?.into_owned();
        let (uid, gid) = (e.header().uid()?, e.header().gid()?);
        let (huid, hgid) = to_host(uid, gid).ok_or_else(|| {
            io::Error::other(format!(
                "{}: owner {uid}:{gid} is outside the container's id map",
                path.display()
            ))
        })?;
        h.set_uid(huid.into());
        h.set_gid(hgid.into());
        match h.entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = e
                    .link_name()?
                    .ok_or_else(|| {
                        io::Error::other(format!("{}: link without a target", path.display()))
                    })?
                    .into_owned();
                b.append_link(&mut h, &path, &target)?;
            }
            tar::EntryType::XGlobalHeader => {}
            _ => b.append_data(&mut h, &path, &mut e)?,
        }
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{ContainerConfig, HostConfig};

    #[test]
    fn the_view_has_the_etc_files_then_volumes_and_binds_but_no_tmpfs() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            dir: dir.path().to_path_buf(),
            exec_dir: dir.path().join("exec"),
        };
        for f in ["hostname", "hosts"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let host = HostConfig {
            binds: vec!["/srv/a:/a:ro".into(), "/srv/hosts:/etc/hosts".into()],
            tmpfs: [("/run".to_string(), String::new())].into(),
            ..Default::default()
        };
        let mounts = crate::mounts::requested(&ContainerConfig::default(), &host).unwrap();
        let rec = ContainerRecord {
            id: "a".repeat(64),
            name: "demo".into(),
            created: crate::timefmt::now(),
            image_ref: "busybox".into(),
            image_id: "sha256:00".into(),
            config: ContainerConfig::default(),
            host_config: host,
            state: Default::default(),
            maps: None,
            mounts,
            layers: vec![],
            path: "true".into(),
            args: vec![],
        };
        let got: Vec<(String, String, bool)> = view_mounts(&rec, &paths)
            .into_iter()
            .map(|m| (m.destination, m.source.display().to_string(), m.read_only))
            .collect();
        let hostname = dir.path().join("hostname").display().to_string();
        assert_eq!(
            got,
            [
                ("/etc/hostname".into(), hostname, false),
                ("/a".into(), "/srv/a".into(), true),
                ("/etc/hosts".into(), "/srv/hosts".into(), false),
            ]
        );
    }

    #[test]
    fn base_names() {
        assert_eq!(base_name("/etc/passwd"), "passwd");
        assert_eq!(base_name("/etc/"), "etc");
        assert_eq!(base_name("/etc/."), "etc");
        assert_eq!(base_name("/"), "/");
    }

    #[test]
    fn rewrite_gives_mapped_owners_and_refuses_unmapped() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mode(0o644);
        b.append_data(&mut h, "a", &b"hi"[..]).unwrap();
        let input = b.into_inner().unwrap();
        let mut out = Vec::new();
        rewrite_owners(&input[..], &mut out, |u, g| {
            Some((u as u32 + 100000, g as u32 + 100000))
        })
        .unwrap();
        let mut ar = tar::Archive::new(&out[..]);
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(
            (e.header().uid().unwrap(), e.header().gid().unwrap()),
            (101000, 101000)
        );
        let err = rewrite_owners(&input[..], io::sink(), |_, _| None).unwrap_err();
        assert!(
            err.to_string().contains("outside the container's id map"),
            "{err}"
        );
    }
}
