//! berth-snapshot: a container's root filesystem.
//!
//! [`Snapshotter`] mounts overlayfs over an image's unpacked layers (the image store's
//! `<data-root>/layers/<chain-id>/diff`, shared by every container and every id mapping) plus
//! the container's own `<data-root>/containers/<id>/upper` and `work`, at
//! `<exec-root>/snapshots/<id>/rootfs`.
//!
//! For a remapped container (a uid/gid map) the layers are seen through an idmapped mount
//! (`open_tree` + `mount_setattr(MOUNT_ATTR_IDMAP)`): files owned by 0 show as the mapped root,
//! with no byte copied and no chown, so the first start costs the same whatever the image
//! size. Where idmapped mounts do not work, or with [`RemapMode::ForceCopy`], each layer is
//! copied once per mapping with shifted owners (Docker's way) and reused.
//!
//! Policy for a layer file whose owner the map cannot hold (uid 200000 in a 65536-id map):
//! `prepare` fails with [`SnapshotError::Unmappable`], naming the file and the fix (a bigger
//! range), as Docker does. The check reads each layer's recorded owners (O(distinct ids)),
//! never the files.

mod copy;
mod error;
mod sys;

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use berth_idmap::UsernsMaps;
use berth_image::Digest;
use rustix::fs::CWD;
use rustix::mount::{
    self as rmount, FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags,
    UnmountFlags,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use error::{Result, SnapshotError};

/// How remapped roots are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemapMode {
    /// Idmapped mounts where the kernel and filesystem allow, else a chowned copy.
    Auto,
    /// Always the chowned copy (for tests and for kernels that misbehave).
    ForceCopy,
}

/// What a remapped root uses; `berth info` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemapMethod {
    Idmapped,
    Copy,
}

impl fmt::Display for RemapMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemapMethod::Idmapped => "idmapped",
            RemapMethod::Copy => "copy",
        })
    }
}

/// What `prepare` recorded for a container (`containers/<id>/snapshot.json`), so that
/// `mount` needs only the id, also after a daemon restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// Chain ids, bottom layer first.
    layers: Vec<Digest>,
    maps: Option<UsernsMaps>,
    method: Option<RemapMethod>,
}

pub struct Snapshotter {
    data_root: PathBuf,
    exec_root: PathBuf,
    layers_dir: PathBuf,
    mode: RemapMode,
    method: OnceLock<RemapMethod>,
    /// One user namespace per distinct mapping, made once.
    userns: Mutex<HashMap<UsernsMaps, Arc<OwnedFd>>>,
    /// Serialises making remapped copies.
    copy_lock: Mutex<()>,
    /// Serialises making, using and unmounting the shared idmapped layer mounts.
    idmap_lock: Mutex<()>,
}

impl Snapshotter {
    /// `data_root` is the image store's (it holds `layers/`); mounts go under
    /// `exec_root/snapshots/`.
    pub fn open(data_root: &Path, exec_root: &Path, mode: RemapMode) -> Result<Snapshotter> {
        let snaps = exec_root.join("snapshots");
        fs::create_dir_all(&snaps).map_err(io_err(&snaps, "create directory"))?;
        let containers = data_root.join("containers");
        fs::create_dir_all(&containers).map_err(io_err(&containers, "create directory"))?;
        // The shared idmapped layer mounts and the remapped copies show the image's files
        // owned by the mapped ids: a host process running as such an id (a subordinate id, or
        // another remapped container's) must not reach them, or it could change every
        // container's image. Only root may enter their directories.
        for d in [snaps.join(".idmapped"), data_root.join("layers-remapped")] {
            private_dir(&d)?;
        }
        Ok(Snapshotter {
            data_root: data_root.to_path_buf(),
            exec_root: exec_root.to_path_buf(),
            layers_dir: data_root.join("layers"),
            mode,
            method: OnceLock::new(),
            userns: Mutex::new(HashMap::new()),
            copy_lock: Mutex::new(()),
            idmap_lock: Mutex::new(()),
        })
    }

    /// How remapped roots are made on this machine: "idmapped" or "copy". Detected once, by
    /// idmapping the layer directory with a throwaway mapping.
    pub fn remap_method(&self) -> RemapMethod {
        *self.method.get_or_init(|| {
            if self.mode == RemapMode::ForceCopy {
                return RemapMethod::Copy;
            }
            let probe = || -> io::Result<()> {
                fs::create_dir_all(&self.layers_dir)?;
                let maps = UsernsMaps::single(100000, 65536).map_err(io::Error::other)?;
                let ns = self.userns_for(&maps)?;
                let tree = rmount::open_tree(
                    CWD,
                    &self.layers_dir,
                    OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
                )?;
                sys::idmap_mount(tree.as_fd(), ns.as_fd())
            };
            match probe() {
                Ok(()) => RemapMethod::Idmapped,
                Err(e) => {
                    tracing::warn!(error = %e, "idmapped mounts unavailable; remapped roots use chowned copies");
                    RemapMethod::Copy
                }
            }
        })
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.data_root.join("containers").join(id)
    }

    fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.exec_root.join("snapshots").join(id)
    }

    /// Where `mount` puts the container's root.
    pub fn rootfs_path(&self, id: &str) -> PathBuf {
        self.snapshot_dir(id).join("rootfs")
    }

    /// Creates the container's upper and work directories (upper owned by the mapped root)
    /// and records its layers. With `maps`, checks that every layer owner fits the map and,
    /// for the copy method, makes (or reuses) the remapped copies.
    pub fn prepare(&self, id: &str, layers: &[Digest], maps: Option<&UsernsMaps>) -> Result<()> {
        check_id(id)?;
        for l in layers {
            if !self.layers_dir.join(l.hex()).join("meta.json").is_file() {
                return Err(SnapshotError::LayerMissing(l.to_string()));
            }
        }
        let method = match maps {
            Some(m) => {
                self.check_owners(layers, m)?;
                let method = self.remap_method();
                if method == RemapMethod::Copy {
                    self.ensure_copies(layers, m)?;
                }
                Some(method)
            }
            None => None,
        };
        let dir = self.container_dir(id);
        let (uid, gid) = maps.and_then(|m| m.root()).unwrap_or((0, 0));
        for (sub, mode) in [("upper", 0o755), ("work", 0o700)] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p, "create directory"))?;
            std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(io_err(&p, "chown"))?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                .map_err(io_err(&p, "chmod"))?;
        }
        let rec = Record {
            layers: layers.to_vec(),
            maps: maps.cloned(),
            method,
        };
        let json = serde_json::to_vec(&rec).expect("a record always serialises");
        let tmp = dir.join("snapshot.json.tmp");
        fs::write(&tmp, json).map_err(io_err(&tmp, "write"))?;
        let path = dir.join("snapshot.json");
        fs::rename(&tmp, &path).map_err(io_err(&path, "rename"))
    }

    fn record(&self, id: &str) -> Result<Record> {
        check_id(id)?;
        let path = self.container_dir(id).join("snapshot.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SnapshotError::NotPrepared(id.to_string()))
            }
            Err(e) => return Err(io_err(&path, "read")(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| SnapshotError::Io {
            path,
            op: "parse",
            source: e.into(),
        })
    }

    /// Mounts the container's root and returns its path (for the OCI bundle's `root.path`).
    /// Mounting a mounted root returns its path again.
    pub fn mount(&self, id: &str) -> Result<PathBuf> {
        let rec = self.record(id)?;
        let target = self.rootfs_path(id);
        fs::create_dir_all(&target).map_err(io_err(&target, "create directory"))?;
        if is_mount_point(&target) {
            return Ok(target);
        }
        let dir = self.container_dir(id);
        // Held while the overlay is built over the shared idmapped mount, so that `remove` of
        // another container cannot unmount it in between.
        let _idmap_guard = self.idmap_lock.lock().unwrap_or_else(|p| p.into_inner());
        let lowers: Vec<PathBuf> = match (&rec.maps, rec.method) {
            (Some(maps), Some(RemapMethod::Idmapped)) => {
                let at = self.idmapped_layers(maps, id)?;
                rec.layers
                    .iter()
                    .map(|l| at.join(l.hex()).join("diff"))
                    .collect()
            }
            (Some(maps), _) => {
                // Cheap when the copies exist; remakes any a prune removed since prepare.
                self.ensure_copies(&rec.layers, maps)?;
                let base = self.copies_dir(maps);
                rec.layers
                    .iter()
                    .map(|l| base.join(l.hex()).join("diff"))
                    .collect()
            }
            (None, _) => rec
                .layers
                .iter()
                .map(|l| self.layers_dir.join(l.hex()).join("diff"))
                .collect(),
        };
        mount_overlay(id, &lowers, &dir.join("upper"), &dir.join("work"), &target)?;
        Ok(target)
    }

    /// `<exec-root>/snapshots/.idmapped/<mapping key>`: the layer directory seen through
    /// `maps`, one mount per mapping shared by every container with it. Made by the first
    /// `mount`, unmounted when the last container with that mapping is removed, so a start
    /// pays neither for it nor for an unmount (which waits for an RCU grace period).
    fn idmapped_layers(&self, maps: &UsernsMaps, id: &str) -> Result<PathBuf> {
        let at = self
            .exec_root
            .join("snapshots/.idmapped")
            .join(mapping_key(maps));
        if is_mount_point(&at) {
            return Ok(at);
        }
        let mount_err = |e: io::Error| SnapshotError::Mount {
            container: id.to_string(),
            source: e,
            log: String::new(),
        };
        fs::create_dir_all(&at).map_err(io_err(&at, "create directory"))?;
        let ns = self.userns_for(maps).map_err(mount_err)?;
        let tree = rmount::open_tree(
            CWD,
            &self.layers_dir,
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
        )
        .map_err(|e| mount_err(e.into()))?;
        sys::idmap_mount(tree.as_fd(), ns.as_fd()).map_err(mount_err)?;
        rmount::move_mount(
            tree.as_fd(),
            "",
            CWD,
            &at,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| mount_err(e.into()))?;
        Ok(at)
    }

    fn userns_for(&self, maps: &UsernsMaps) -> io::Result<Arc<OwnedFd>> {
        let mut cache = self.userns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fd) = cache.get(maps) {
            return Ok(fd.clone());
        }
        let fd = Arc::new(sys::userns_fd(maps)?);
        cache.insert(maps.clone(), fd.clone());
        Ok(fd)
    }

    /// Unmounts the container's root (lazily if busy); unmounting an unmounted root is fine.
    pub fn unmount(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let dir = self.snapshot_dir(id);
        let rootfs = dir.join("rootfs");
        if rootfs.exists() {
            unmount_path(&rootfs)?;
            let _ = fs::remove_dir(&rootfs);
        }
        let _ = fs::remove_dir(&dir);
        Ok(())
    }

    /// Unmounts and deletes the container's upper and work directories and record. Other
    /// files in `containers/<id>/` (the engine's) are left alone.
    pub fn remove(&self, id: &str) -> Result<()> {
        self.unmount(id)?;
        let rec = self.record(id).ok();
        let dir = self.container_dir(id);
        for sub in ["upper", "work"] {
            let p = dir.join(sub);
            match fs::remove_dir_all(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err(&p, "remove")(e))
                }
                _ => {}
            }
        }
        let _ = fs::remove_file(dir.join("snapshot.json"));
        let _ = fs::remove_dir(&dir);
        if let Some(Record {
            maps: Some(maps),
            method: Some(RemapMethod::Idmapped),
            ..
        }) = rec
        {
            self.release_idmapped(&maps)?;
        }
        Ok(())
    }

    /// Unmounts a mapping's shared idmapped layers once no prepared container uses it.
    fn release_idmapped(&self, maps: &UsernsMaps) -> Result<()> {
        let _g = self.idmap_lock.lock().unwrap_or_else(|p| p.into_inner());
        let containers = self.data_root.join("containers");
        let in_use = fs::read_dir(&containers)
            .map_err(io_err(&containers, "list"))?
            .flatten()
            .filter_map(|e| fs::read(e.path().join("snapshot.json")).ok())
            .filter_map(|b| serde_json::from_slice::<Record>(&b).ok())
            .any(|r| r.maps.as_ref() == Some(maps) && r.method == Some(RemapMethod::Idmapped));
        if !in_use {
            let at = self
                .exec_root
                .join("snapshots/.idmapped")
                .join(mapping_key(maps));
            if is_mount_point(&at) {
                unmount_path(&at)?;
            }
            let _ = fs::remove_dir(&at);
        }
        Ok(())
    }

    fn check_owners(&self, layers: &[Digest], maps: &UsernsMaps) -> Result<()> {
        for l in layers {
            let meta =
                berth_image::layers::read_meta(&self.layers_dir.join(l.hex()).join("meta.json"))?;
            for (kind, ids, map) in [
                ("uid", &meta.owners.uids, &maps.uid),
                ("gid", &meta.owners.gids, &maps.gid),
            ] {
                for (&id, path) in ids {
                    if map.to_host(id).is_none() {
                        return Err(SnapshotError::Unmappable {
                            path: path.clone(),
                            kind,
                            id,
                            map: map.to_proc_text().trim().replace('\n', ", "),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// `<data-root>/layers-remapped/<mapping key>/`.
    fn copies_dir(&self, maps: &UsernsMaps) -> PathBuf {
        self.data_root
            .join("layers-remapped")
            .join(mapping_key(maps))
    }

    /// Removes remapped copies (the copy method's cache) of layers not in `live` (the chain
    /// ids of the images still stored); call after the image store's gc. Returns what went.
    pub fn prune_copies(&self, live: &[Digest]) -> Result<Vec<PathBuf>> {
        let _g = self.copy_lock.lock().unwrap_or_else(|p| p.into_inner());
        let base = self.data_root.join("layers-remapped");
        let mut removed = Vec::new();
        let Ok(maps) = fs::read_dir(&base) else {
            return Ok(removed);
        };
        for m in maps.flatten() {
            let Ok(layers) = fs::read_dir(m.path()) else {
                continue;
            };
            for l in layers.flatten() {
                let name = l.file_name().to_string_lossy().into_owned();
                let keep = Digest::from_hex(&name).is_ok_and(|d| live.contains(&d));
                if !keep && name != "maps.json" {
                    let p = l.path();
                    fs::remove_dir_all(&p).map_err(io_err(&p, "remove"))?;
                    removed.push(p);
                }
            }
        }
        Ok(removed)
    }

    /// Makes the remapped copy of each layer that does not have one yet.
    fn ensure_copies(&self, layers: &[Digest], maps: &UsernsMaps) -> Result<()> {
        let _g = self.copy_lock.lock().unwrap_or_else(|p| p.into_inner());
        let base = self.copies_dir(maps);
        fs::create_dir_all(&base).map_err(io_err(&base, "create directory"))?;
        let note = base.join("maps.json");
        if !note.exists() {
            let json = serde_json::to_vec(maps).expect("maps serialise");
            fs::write(&note, json).map_err(io_err(&note, "write"))?;
        }
        for l in layers {
            let dest = base.join(l.hex());
            if dest.exists() {
                continue;
            }
            let tmp = base.join(format!(".tmp-{}", l.hex()));
            let _ = fs::remove_dir_all(&tmp);
            fs::create_dir(&tmp).map_err(io_err(&tmp, "create directory"))?;
            let src = self.layers_dir.join(l.hex()).join("diff");
            if let Err(e) = copy::copy_mapped(&src, &tmp.join("diff"), maps) {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
            fs::rename(&tmp, &dest).map_err(io_err(&dest, "rename"))?;
        }
        Ok(())
    }
}

/// Creates `d` if needed and makes it root-only (0700).
fn private_dir(d: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(d).map_err(io_err(d, "create directory"))?;
    fs::set_permissions(d, fs::Permissions::from_mode(0o700)).map_err(io_err(d, "chmod"))
}

/// A short, stable name for a mapping (directory names of its mounts and copies).
fn mapping_key(maps: &UsernsMaps) -> String {
    let mut h = Sha256::new();
    h.update(maps.uid.to_proc_text().as_bytes());
    h.update(b"|");
    h.update(maps.gid.to_proc_text().as_bytes());
    hex::encode(h.finalize())[..16].to_string()
}

fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::BadId(id.to_string()))
    }
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |e| SnapshotError::Io {
        path: path.to_path_buf(),
        op,
        source: e,
    }
}

/// Is `p` the root of a mount? (statx's STATX_ATTR_MOUNT_ROOT: also right for a bind mount
/// of the same filesystem, where comparing devices is not.)
fn is_mount_point(p: &Path) -> bool {
    use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags};
    match statx(CWD, p, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::BASIC_STATS) {
        Ok(st) if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
        }
        _ => false,
    }
}

fn unmount_path(p: &Path) -> Result<()> {
    match rmount::unmount(p, UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(rustix::io::Errno::BUSY) => {
            rmount::unmount(p, UnmountFlags::DETACH).map_err(|e| io_err(p, "unmount")(e.into()))
        }
        Err(e) => Err(io_err(p, "unmount")(e.into())),
    }
}

/// Mounts overlayfs with the new mount API, one `lowerdir+` per layer (top first), so the
/// number of layers is not limited by the size of a mount option string.
fn mount_overlay(
    id: &str,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<()> {
    let fs_fd = rmount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| {
        SnapshotError::Mount {
            container: id.to_string(),
            source: e.into(),
            log: String::new(),
        }
    })?;
    let fail = |e: rustix::io::Errno| SnapshotError::Mount {
        container: id.to_string(),
        source: e.into(),
        log: kernel_log(&fs_fd),
    };
    rmount::fsconfig_set_string(&fs_fd, "source", "berth").map_err(fail)?;
    for l in lowers.iter().rev() {
        rmount::fsconfig_set_string(&fs_fd, "lowerdir+", l).map_err(fail)?;
    }
    rmount::fsconfig_set_string(&fs_fd, "upperdir", upper).map_err(fail)?;
    rmount::fsconfig_set_string(&fs_fd, "workdir", work).map_err(fail)?;
    rmount::fsconfig_create(&fs_fd).map_err(fail)?;
    let mnt = rmount::fsmount(
        &fs_fd,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::empty(),
    )
    .map_err(fail)?;
    rmount::move_mount(
        mnt.as_fd(),
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(fail)
}

/// The messages the kernel left on an fsopen fd (why a mount failed).
fn kernel_log(fs_fd: &OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    let mut f = fs::File::from(match fs_fd.try_clone() {
        Ok(fd) => fd,
        Err(_) => return String::new(),
    });
    for _ in 0..8 {
        match f.read(&mut buf) {
            Ok(n) if n > 0 => out.push(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            _ => break,
        }
    }
    out.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        assert!(check_id("abc-123_x.y").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", &"a".repeat(129)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }
}
