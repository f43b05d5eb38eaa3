//! Walks a tree below a directory descriptor into a tar, owners translated from the host's
//! ids to the container's: the archive API, export and commit write their tars with it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use berth_idmap::UsernsMaps;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};

use crate::fsat::reopen;

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

/// Writes trees into a tar, owners translated.
pub(crate) struct TarWalk<W: Write> {
    tar: tar::Builder<W>,
    maps: Option<UsernsMaps>,
    /// Overlayfs whiteouts become OCI `.wh.` entries (for commit).
    whiteouts: bool,
}

impl<W: Write> TarWalk<W> {
    pub(crate) fn new(out: W, maps: Option<UsernsMaps>, whiteouts: bool) -> Self {
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
    pub(crate) fn add(&mut self, dir: BorrowedFd<'_>, name: &OsStr, path: &str) -> io::Result<()> {
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

    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.tar.finish()?;
        self.tar.into_inner()
    }
}

fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 4];
    matches!(rfs::fgetxattr(dir, "trusted.overlay.opaque", &mut buf), Ok(1) if buf[0] == b'y')
}
