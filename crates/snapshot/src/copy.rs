//! The fallback for remapped roots where idmapped mounts are not available: a copy of each
//! layer with every owner shifted through the map (Docker's way), made once per mapping and
//! layer and reused by every container with that mapping.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use berth_idmap::UsernsMaps;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags, CWD};

use crate::error::{Result, SnapshotError};

/// Copies the tree `src` to `dst` (which must not exist), mapping owners through `maps`.
/// Hardlinks stay hardlinks; whiteouts, xattrs (opaque markers, file capabilities), modes and
/// times are kept.
pub fn copy_mapped(src: &Path, dst: &Path, maps: &UsernsMaps) -> Result<()> {
    let mut links = HashMap::new();
    copy_entry(src, dst, maps, &mut links)
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |e| SnapshotError::Io {
        path: path.to_path_buf(),
        op,
        source: e,
    }
}

fn copy_entry(
    src: &Path,
    dst: &Path,
    maps: &UsernsMaps,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let m = fs::symlink_metadata(src).map_err(io(src, "stat"))?;
    let uid = maps
        .uid
        .to_host(m.uid())
        .ok_or_else(|| SnapshotError::Unmappable {
            path: src.display().to_string(),
            kind: "uid",
            id: m.uid(),
            map: maps.uid.to_proc_text().trim().replace('\n', ", "),
        })?;
    let gid = maps
        .gid
        .to_host(m.gid())
        .ok_or_else(|| SnapshotError::Unmappable {
            path: src.display().to_string(),
            kind: "gid",
            id: m.gid(),
            map: maps.gid.to_proc_text().trim().replace('\n', ", "),
        })?;
    let ft = FileType::from_raw_mode(m.mode());
    match ft {
        FileType::Directory => {
            fs::create_dir(dst).map_err(io(dst, "create directory"))?;
            for e in fs::read_dir(src).map_err(io(src, "read directory"))? {
                let e = e.map_err(io(src, "read directory"))?;
                copy_entry(&e.path(), &dst.join(e.file_name()), maps, links)?;
            }
        }
        FileType::RegularFile => {
            if m.nlink() > 1 {
                if let Some(first) = links.get(&(m.dev(), m.ino())) {
                    return fs::hard_link(first, dst).map_err(io(dst, "hardlink"));
                }
                links.insert((m.dev(), m.ino()), dst.to_path_buf());
            }
            let mut from = fs::File::open(src).map_err(io(src, "open"))?;
            let mut to = fs::File::create_new(dst).map_err(io(dst, "create"))?;
            // std uses copy_file_range: a reflink where the filesystem can.
            std::io::copy(&mut from, &mut to).map_err(io(dst, "copy"))?;
        }
        FileType::Symlink => {
            let target = fs::read_link(src).map_err(io(src, "readlink"))?;
            symlink(&target, dst).map_err(io(dst, "symlink"))?;
        }
        FileType::CharacterDevice if m.rdev() == 0 => {
            // An overlayfs whiteout.
            rfs::mknodat(CWD, dst, FileType::CharacterDevice, Mode::empty(), 0)
                .map_err(|e| io(dst, "mknod")(e.into()))?;
        }
        _ => {
            return Err(SnapshotError::Io {
                path: src.to_path_buf(),
                op: "copy",
                source: std::io::Error::other("unexpected file type in a layer"),
            })
        }
    }
    set_meta(src, dst, &m, uid, gid, ft == FileType::Symlink)
}

/// Owner first (chown clears setuid bits and file capabilities), then mode, xattrs, times.
fn set_meta(
    src: &Path,
    dst: &Path,
    m: &fs::Metadata,
    uid: u32,
    gid: u32,
    is_link: bool,
) -> Result<()> {
    let err = |op| move |e: rustix::io::Errno| io(dst, op)(e.into());
    rfs::chownat(
        CWD,
        dst,
        Some(rfs::Uid::from_raw(uid)),
        Some(rfs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(err("chown"))?;
    if !is_link {
        rfs::chmod(dst, Mode::from_raw_mode(m.mode() & 0o7777)).map_err(err("chmod"))?;
        let mut names = vec![0u8; 64 << 10];
        let n = rfs::llistxattr(src, &mut names).map_err(err("list xattrs"))?;
        let mut value = vec![0u8; 64 << 10];
        for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let name = std::ffi::OsStr::new(std::str::from_utf8(name).unwrap_or_default());
            if name.is_empty() {
                continue;
            }
            let len = rfs::lgetxattr(src, name, &mut value).map_err(err("get xattr"))?;
            rfs::lsetxattr(dst, name, &value[..len], XattrFlags::empty())
                .map_err(err("set xattr"))?;
        }
    }
    let ts = |s: i64, ns: i64| Timespec {
        tv_sec: s,
        tv_nsec: ns as _,
    };
    let times = Timestamps {
        last_access: ts(m.atime(), m.atime_nsec()),
        last_modification: ts(m.mtime(), m.mtime_nsec()),
    };
    rfs::utimensat(CWD, dst, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(err("set times"))
}
