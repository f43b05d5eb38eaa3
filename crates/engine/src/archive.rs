//! A container's files seen from outside: the archive API (`docker cp`), `export`, `diff`
//! and `commit`.
//!
//! Paths given by a client are resolved inside the container's root with
//! `openat2(RESOLVE_IN_ROOT)`: symlinks (absolute or with `..`) are followed as the container
//! would follow them, never out of its root. Trees are then walked with `*at` calls relative
//! to directory descriptors and `O_NOFOLLOW`, so a running container swapping a directory for
//! a symlink cannot redirect the walk. The merged root on the host shows host ids (the
//! mapped ones under remap): tars going out are translated to the container's view, tars
//! coming in to the host's view.
//!
//! A stopped container's root is mounted for the operation and unmounted after.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use berth_idmap::UsernsMaps;
use berth_image::CommitOptions;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};

use crate::container::ContainerRecord;
use crate::engine::Engine;
use crate::error::{EngineError, Result};

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

/// One entry of `docker diff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    /// 0 modified, 1 added, 2 deleted (Docker's numbering).
    pub kind: u8,
}

/// `POST /commit`.
#[derive(Debug, Clone, Default)]
pub struct CommitRequest {
    pub container: String,
    pub reference: Option<String>,
    pub comment: Option<String>,
    pub author: Option<String>,
    pub changes: Vec<String>,
}

fn sys(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(rustix::io::Errno) -> EngineError {
    let path = path.into();
    move |e| EngineError::io(what, path, e.into())
}

fn io_sys(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> EngineError {
    let path = path.into();
    move |e| EngineError::io(what, path, e)
}

/// Host ids to the container's ids (the overflow id for ids outside the map).
fn to_container(maps: Option<&UsernsMaps>, uid: u32, gid: u32) -> (u32, u32) {
    match maps {
        None => (uid, gid),
        Some(m) => (
            m.uid.to_container_or_overflow(uid),
            m.gid.to_container_or_overflow(gid),
        ),
    }
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

fn proc_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Reopens an `O_PATH` descriptor for reading.
fn reopen(fd: BorrowedFd<'_>, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    rfs::open(proc_path(fd), flags | OFlags::CLOEXEC, Mode::empty())
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

/// Writes trees into a tar, owners translated.
struct TarWalk<W: Write> {
    tar: tar::Builder<W>,
    maps: Option<UsernsMaps>,
    /// Overlayfs whiteouts become OCI `.wh.` entries (for commit).
    whiteouts: bool,
}

impl<W: Write> TarWalk<W> {
    fn new(out: W, maps: Option<UsernsMaps>, whiteouts: bool) -> Self {
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Complete);
        TarWalk {
            tar,
            maps,
            whiteouts,
        }
    }

    fn header(&self, st: &Stat, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        let (uid, gid) = to_container(self.maps.as_ref(), st.st_uid, st.st_gid);
        h.set_uid(uid.into());
        h.set_gid(gid.into());
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(0);
        h
    }

    fn empty(&mut self, st: &Stat, path: &str) -> io::Result<()> {
        let mut h = self.header(st, tar::EntryType::Regular);
        h.set_mode(0o644);
        self.tar.append_data(&mut h, path, io::empty())
    }

    /// Adds the node `name` of `dir` (or `dir` itself when `name` is empty) as `path`.
    fn add(&mut self, dir: BorrowedFd<'_>, name: &OsStr, path: &str) -> io::Result<()> {
        let itself = name.is_empty();
        let flags = if itself {
            AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW
        } else {
            AtFlags::SYMLINK_NOFOLLOW
        };
        let st = rfs::statat(dir, name, flags)?;
        let open = |f: OFlags| -> io::Result<OwnedFd> {
            Ok(if itself {
                reopen(dir, f)?
            } else {
                rfs::openat(
                    dir,
                    name,
                    f | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?
            })
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let mut h = self.header(&st, tar::EntryType::Directory);
                let dpath = if path.ends_with('/') {
                    path.to_string()
                } else {
                    format!("{path}/")
                };
                let fd = open(OFlags::RDONLY | OFlags::DIRECTORY)?;
                if dpath != "/" && dpath != "./" {
                    self.tar.append_data(&mut h, &dpath, io::empty())?;
                }
                let prefix = if dpath == "/" || dpath == "./" {
                    String::new()
                } else {
                    dpath
                };
                if self.whiteouts && is_opaque(fd.as_fd()) {
                    self.empty(&st, &format!("{prefix}.wh..wh..opq"))?;
                }
                let mut names: Vec<Vec<u8>> = Vec::new();
                for e in rfs::Dir::read_from(&fd)? {
                    let e = e?;
                    let n = e.file_name().to_bytes();
                    if n != b"." && n != b".." {
                        names.push(n.to_vec());
                    }
                }
                names.sort();
                for n in names {
                    let child = OsStr::from_bytes(&n);
                    let cpath = format!("{prefix}{}", child.to_string_lossy());
                    self.add(fd.as_fd(), child, &cpath)?;
                }
            }
            FileType::RegularFile => {
                let file = File::from(open(OFlags::RDONLY)?);
                let st = rfs::fstat(&file)?;
                let mut h = self.header(&st, tar::EntryType::Regular);
                h.set_size(st.st_size as u64);
                self.tar
                    .append_data(&mut h, path, file.take(st.st_size as u64))?;
            }
            FileType::Symlink => {
                let target = rfs::readlinkat(dir, name, Vec::new())?;
                let mut h = self.header(&st, tar::EntryType::Symlink);
                let target = OsStr::from_bytes(target.as_bytes()).to_owned();
                self.tar.append_link(&mut h, path, Path::new(&target))?;
            }
            FileType::CharacterDevice if self.whiteouts && st.st_rdev == 0 => {
                let (parent, leaf) = match path.rsplit_once('/') {
                    Some((p, l)) => (format!("{p}/"), l),
                    None => (String::new(), path),
                };
                self.empty(&st, &format!("{parent}.wh.{leaf}"))?;
            }
            ft @ (FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo) => {
                let kind = match ft {
                    FileType::CharacterDevice => tar::EntryType::Char,
                    FileType::BlockDevice => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let mut h = self.header(&st, kind);
                h.set_device_major(rustix::fs::major(st.st_rdev))?;
                h.set_device_minor(rustix::fs::minor(st.st_rdev))?;
                self.tar.append_data(&mut h, path, io::empty())?;
            }
            // Sockets have no place in an archive.
            _ => {}
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        self.tar.finish()?;
        self.tar.into_inner()
    }
}

fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 4];
    matches!(rfs::fgetxattr(dir, "trusted.overlay.opaque", &mut buf), Ok(1) if buf[0] == b'y')
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

impl Engine {
    /// Runs `f` on the container's mounted root (an `O_PATH` descriptor of it). Blocking:
    /// call from a blocking thread.
    fn with_root<T>(
        &self,
        name_or_id: &str,
        f: impl FnOnce(&OwnedFd, &ContainerRecord) -> Result<T>,
    ) -> Result<T> {
        let entry = self.lookup(name_or_id)?;
        // Held so that the container is not started, stopped or removed meanwhile.
        let _op = entry.op.blocking_lock();
        let rec = entry.record();
        let path = self.inner.images.mount_rootfs(&entry.id)?;
        let _guard = (!rec.is_running()).then(|| TempMount {
            engine: self,
            id: entry.id.clone(),
        });
        let root = rfs::open(
            &path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys("open", &path))?;
        f(&root, &rec)
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
        self.with_root(name_or_id, |root, _| Ok(Self::stat_at(root, path)?.1))
    }

    /// `GET /containers/{id}/archive`: the path (a file or a tree) as a tar, rooted at its
    /// last component, owners in the container's view.
    pub fn archive_get(
        &self,
        name_or_id: &str,
        path: &str,
        out: impl Write,
        on_stat: impl FnOnce(&PathStat),
    ) -> Result<()> {
        self.with_root(name_or_id, |root, rec| {
            let (fd, stat) = Self::stat_at(root, path)?;
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
        self.with_root(name_or_id, |root, rec| {
            let dir = resolve(root, path, true)?;
            let st = rfs::fstat(&dir).map_err(sys("stat", path))?;
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                return Err(EngineError::InvalidParameter(format!(
                    "extraction point is not a directory: {path} in container {}",
                    rec.name
                )));
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

    /// `GET /containers/{id}/changes`: what the container's read-write layer changed.
    pub fn changes(&self, name_or_id: &str) -> Result<Vec<Change>> {
        let entry = self.lookup(name_or_id)?;
        let rec = entry.record();
        let upper = self.upper_dir(&entry.id);
        let layers_root = self.inner.images.store().layers().root().to_path_buf();
        let lowers: Vec<PathBuf> = rec
            .layers
            .iter()
            .map(|l| {
                layers_root
                    .join(l.strip_prefix("sha256:").unwrap_or(l))
                    .join("diff")
            })
            .collect();
        let mut out = Vec::new();
        let dir = rfs::open(
            &upper,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys("open", &upper))?;
        walk_changes(dir.as_fd(), "", &lowers, &mut out).map_err(io_sys("read", &upper))?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn upper_dir(&self, id: &str) -> PathBuf {
        self.inner
            .cfg
            .data_root
            .join("containers")
            .join(id)
            .join("upper")
    }

    /// `POST /commit`: the container's read-write layer becomes a new image on top of its
    /// image; owners are shifted back to the container's view so the image runs anywhere.
    /// Returns the new image's id.
    pub fn commit(&self, req: &CommitRequest) -> Result<String> {
        let entry = self.lookup(&req.container)?;
        let rec = entry.record();
        let upper = self.upper_dir(&entry.id);
        let data_root = &self.inner.cfg.data_root;
        let tmp = rfs::open(
            data_root,
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(sys("create temporary file in", data_root))?;
        let dir = rfs::open(
            &upper,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys("open", &upper))?;
        let mut walk = TarWalk::new(File::from(tmp), rec.maps.clone(), true);
        let mut file = walk
            .add(dir.as_fd(), OsStr::new(""), "./")
            .and_then(|_| walk.finish())
            .map_err(io_sys("read", &upper))?;
        let opts = CommitOptions {
            reference: req.reference.as_deref(),
            changes: req.changes.clone(),
            comment: req.comment.clone(),
            author: req.author.clone(),
        };
        let img = self
            .inner
            .images
            .store()
            .commit_layer(&rec.image_id, &mut file, opts)
            .map_err(crate::images::image_error)?;
        let ev = crate::events::Event::container(&rec, "commit");
        self.emit(ev.attr("imageID", img.id.to_string()));
        Ok(img.id.to_string())
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

fn walk_changes(
    dir: BorrowedFd<'_>,
    prefix: &str,
    lowers: &[PathBuf],
    out: &mut Vec<Change>,
) -> io::Result<()> {
    let mut names = Vec::new();
    for e in rfs::Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(CString::from(e.file_name()));
        }
    }
    for name in names {
        let name: &CStr = &name;
        let path = format!("{prefix}/{}", name.to_string_lossy());
        let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let ft = FileType::from_raw_mode(st.st_mode);
        let rel = path.trim_start_matches('/');
        let in_lower = lowers
            .iter()
            .any(|l| std::fs::symlink_metadata(l.join(rel)).is_ok());
        let kind = if ft == FileType::CharacterDevice && st.st_rdev == 0 {
            2
        } else if in_lower {
            0
        } else {
            1
        };
        out.push(Change {
            path: path.clone(),
            kind,
        });
        if ft == FileType::Directory {
            let sub = rfs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            walk_changes(sub.as_fd(), &path, lowers, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
