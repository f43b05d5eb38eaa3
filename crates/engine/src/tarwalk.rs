//! Walks a tree below a directory descriptor into a tar, owners translated from the host's
//! ids to the container's: the archive API, export and commit write their tars with it.
//!
//! As moby's pkg/archive: a file's second and later names (same device and inode) become
//! hard-link entries, and of the extended attributes only `security.capability` is kept
//! (PAX `SCHILY.xattr.security.capability`), its owner translated like the file's.

use std::collections::HashMap;
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

/// The file capability attribute, and its layout (linux/capability.h): a little-endian
/// `magic_etc` word (revision in the top byte, the effective flag in bit 0), permitted and
/// inheritable sets, and in revision 3 the uid of the namespace root it is valid for.
const CAP_XATTR: &str = "security.capability";
const CAP_PAX_KEY: &str = "SCHILY.xattr.security.capability";
const VFS_CAP_REVISION_MASK: u32 = 0xFF00_0000;
const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
const VFS_CAP_V2_LEN: usize = 20;
const VFS_CAP_V3_LEN: usize = 24;

/// A file capability read on the host, as the container sees it. A revision 3 capability
/// names the host uid of the namespace root it was set for (the mapped root, when set inside
/// a remapped container): that uid goes through the map, and when it is the container's
/// root the capability becomes revision 2 (valid for whichever root runs the image, as a
/// capability set on an unremapped host). `None`: malformed, or set for a namespace the
/// container cannot name; such an attribute is left out.
pub(crate) fn capability_to_container(raw: &[u8], maps: Option<&UsernsMaps>) -> Option<Vec<u8>> {
    let magic = u32::from_le_bytes(raw.get(..4)?.try_into().ok()?);
    if magic & VFS_CAP_REVISION_MASK != VFS_CAP_REVISION_3 {
        // Revisions 1 and 2 carry no owner.
        return Some(raw.to_vec());
    }
    if raw.len() != VFS_CAP_V3_LEN {
        return None;
    }
    let Some(maps) = maps else {
        return Some(raw.to_vec());
    };
    let rootid = u32::from_le_bytes(raw[VFS_CAP_V2_LEN..].try_into().ok()?);
    match maps.uid.to_container(rootid)? {
        0 => {
            let magic = (magic & !VFS_CAP_REVISION_MASK) | VFS_CAP_REVISION_2;
            let mut out = magic.to_le_bytes().to_vec();
            out.extend_from_slice(&raw[4..VFS_CAP_V2_LEN]);
            Some(out)
        }
        id => {
            let mut out = raw[..VFS_CAP_V2_LEN].to_vec();
            out.extend_from_slice(&id.to_le_bytes());
            Some(out)
        }
    }
}

/// The file's `security.capability`, if any, in the container's view.
fn capability(fd: BorrowedFd<'_>, maps: Option<&UsernsMaps>) -> Option<Vec<u8>> {
    let mut buf = [0u8; 64];
    // No attribute (ENODATA), no support for it, or an oversized value: nothing to keep.
    let n = rfs::fgetxattr(fd, CAP_XATTR, &mut buf).ok()?;
    let cap = capability_to_container(&buf[..n], maps);
    if cap.is_none() {
        tracing::warn!(
            "leaving out a security.capability attribute valid for no user of the container"
        );
    }
    cap
}

/// Writes trees into a tar, owners translated.
pub(crate) struct TarWalk<W: Write> {
    tar: tar::Builder<W>,
    maps: Option<UsernsMaps>,
    /// Overlayfs whiteouts become OCI `.wh.` entries (for commit).
    whiteouts: bool,
    /// The first name written of each regular file with more than one link, by (device,
    /// inode): its later names become hard-link entries to it.
    links: HashMap<(u64, u64), String>,
}

impl<W: Write> TarWalk<W> {
    pub(crate) fn new(out: W, maps: Option<UsernsMaps>, whiteouts: bool) -> Self {
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Complete);
        TarWalk {
            tar,
            maps,
            whiteouts,
            links: HashMap::new(),
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
                if st.st_nlink > 1 {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(first) = self.links.get(&key) {
                        let mut h = self.header(&st, tar::EntryType::Link);
                        let first = first.clone();
                        return self.tar.append_link(&mut h, path, Path::new(&first));
                    }
                    self.links.insert(key, path.to_string());
                }
                if let Some(cap) = capability(file.as_fd(), self.maps.as_ref()) {
                    self.tar
                        .append_pax_extensions([(CAP_PAX_KEY, cap.as_slice())])?;
                }
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

#[cfg(test)]
mod tests {
    use std::io::Read;

    use berth_idmap::UsernsMaps;

    use super::*;

    /// cap_net_bind_service (bit 10), effective, revision 3 for namespace root `rootid`.
    fn v3(rootid: u32) -> Vec<u8> {
        let mut v = (VFS_CAP_REVISION_3 | 1).to_le_bytes().to_vec();
        v.extend_from_slice(&(1u32 << 10).to_le_bytes());
        v.extend_from_slice(&[0; 12]);
        v.extend_from_slice(&rootid.to_le_bytes());
        v
    }

    fn remap() -> UsernsMaps {
        UsernsMaps::single(100000, 65536).unwrap()
    }

    #[test]
    fn capability_of_the_mapped_root_becomes_revision_2() {
        let m = remap();
        let v2 = capability_to_container(&v3(100000), Some(&m)).unwrap();
        assert_eq!(v2.len(), VFS_CAP_V2_LEN);
        assert_eq!(
            u32::from_le_bytes(v2[..4].try_into().unwrap()),
            VFS_CAP_REVISION_2 | 1,
            "revision 2, effective flag kept"
        );
        assert_eq!(v2[4..], v3(100000)[4..VFS_CAP_V2_LEN]);
        // Another id of the container: revision 3 naming it as the container sees it.
        assert_eq!(
            capability_to_container(&v3(101000), Some(&m)).unwrap(),
            v3(1000)
        );
        // Outside the map: nobody in the container could use it.
        assert_eq!(capability_to_container(&v3(5), Some(&m)), None);
        // Not remapped, or no owner in it: unchanged.
        assert_eq!(capability_to_container(&v3(7), None).unwrap(), v3(7));
        let v2_in = capability_to_container(&v3(100000), Some(&m)).unwrap();
        assert_eq!(capability_to_container(&v2_in, Some(&m)).unwrap(), v2_in);
        // Malformed.
        assert_eq!(capability_to_container(&[1, 2], Some(&m)), None);
        assert_eq!(capability_to_container(&v3(0)[..22], Some(&m)), None);
    }

    #[test]
    fn hard_links_and_capabilities_in_the_tar() {
        berth_testkit::require_root();
        let tmp = berth_testkit::tempdir("berth-tarwalk-");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("a"), b"content").unwrap();
        std::fs::hard_link(root.join("a"), root.join("d/b")).unwrap();
        std::fs::write(root.join("ping"), b"elf").unwrap();
        std::os::unix::fs::chown(root.join("ping"), Some(100000), Some(100000)).unwrap();
        rfs::setxattr(
            root.join("ping"),
            CAP_XATTR,
            &v3(100000),
            rfs::XattrFlags::empty(),
        )
        .unwrap();
        let dir = rfs::open(
            &root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let mut walk = TarWalk::new(Vec::new(), Some(remap()), true);
        walk.add(dir.as_fd(), OsStr::new(""), "./").unwrap();
        let bytes = walk.finish().unwrap();

        let mut ar = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let kind = e.header().entry_type();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let mut cap = None;
            if let Some(exts) = e.pax_extensions().unwrap() {
                for x in exts {
                    let x = x.unwrap();
                    if x.key().unwrap() == CAP_PAX_KEY {
                        cap = Some(x.value_bytes().to_vec());
                    }
                }
            }
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            seen.push((path, kind, link, cap, data, e.header().uid().unwrap()));
        }
        let find = |p: &str| seen.iter().find(|s| s.0 == p).unwrap().clone();
        let a = find("a");
        assert_eq!(
            (a.1, a.4.as_slice()),
            (tar::EntryType::Regular, &b"content"[..])
        );
        let b = find("d/b");
        assert_eq!(b.1, tar::EntryType::Link, "{seen:?}");
        assert_eq!(b.2.as_deref(), Some("a"));
        assert!(b.4.is_empty());
        let ping = find("ping");
        assert_eq!(ping.5, 0, "owner in the container's view");
        let cap = ping.3.expect("security.capability in the tar");
        assert_eq!(
            cap,
            capability_to_container(&v3(100000), Some(&remap())).unwrap()
        );
        assert_eq!(a.3, None, "no capability where there was none");
    }
}
