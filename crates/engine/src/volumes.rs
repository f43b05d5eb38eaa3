//! Volumes of the `local` driver: `DATA_ROOT/volumes/<name>/_data` holds the files and
//! `DATA_ROOT/volumes/<name>/opts.json` the record (labels, options, creation time),
//! written atomically. Under `--userns-remap` `_data` is owned by the mapped root.
//!
//! Also the seeding of an empty volume from the image's content at its mount path, as
//! Docker does on first use (owners, modes, times and xattrs kept).

use std::collections::BTreeMap;
use std::os::unix::fs::{lchown, DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::container::MountPoint;
use crate::error::{EngineError, Result};
use crate::filters::label_matches;
use crate::store::write_atomic;
use crate::{names, timefmt, Engine};

/// Serialises create, remove and prune: a volume in use cannot be removed between the
/// check and the deletion by a create of the same name.
static VOLUME_OPS: Mutex<()> = Mutex::new(());

/// What `opts.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub driver: String,
    pub created_at: String,
    pub labels: BTreeMap<String, String>,
    /// The driver options (`DriverOpts`); the local driver keeps them for inspect.
    pub options: BTreeMap<String, String>,
    /// Made for a container (image `VOLUME`, `-v /path`) rather than by name.
    #[serde(default)]
    pub anonymous: bool,
}

/// A volume as `ls`/`inspect` show it.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeView {
    pub record: VolumeRecord,
    pub mountpoint: PathBuf,
    /// Containers (any state) that mount it.
    pub ref_count: usize,
}

/// What `POST /volumes/create` asks for.
#[derive(Debug, Clone, Default)]
pub struct VolumeCreate {
    pub name: String,
    pub driver: String,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// Docker's rule for local volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} includes invalid characters for a local volume name, only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed; if you intended to pass a host directory, use an absolute path"
        ))
    }
}

fn volumes_dir(data_root: &Path) -> PathBuf {
    data_root.join("volumes")
}

fn read_record(data_root: &Path, name: &str) -> Option<VolumeRecord> {
    let dir = volumes_dir(data_root).join(name);
    let data = dir.join("_data");
    if !data.is_dir() {
        return None;
    }
    match std::fs::read(dir.join("opts.json")) {
        Ok(b) => serde_json::from_slice(&b).ok(),
        // A volume made before records existed: describe it from the directory.
        Err(_) => Some(VolumeRecord {
            name: name.into(),
            driver: "local".into(),
            created_at: timefmt::now(),
            anonymous: is_anonymous_name(name),
            ..Default::default()
        }),
    }
}

fn is_anonymous_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether volume `name` was made for a container (removed with it by `rm -v`/`--rm`).
pub fn is_anonymous(data_root: &Path, name: &str) -> bool {
    check_name(name).is_ok() && read_record(data_root, name).is_some_and(|r| r.anonymous)
}

fn write_record(data_root: &Path, rec: &VolumeRecord) -> Result<()> {
    let path = volumes_dir(data_root).join(&rec.name).join("opts.json");
    let json = serde_json::to_vec_pretty(rec)
        .map_err(|e| EngineError::System(format!("encoding volume record: {e}")))?;
    write_atomic(&path, &json).map_err(|e| EngineError::io("write", path, e))
}

/// Makes volume `name` exist (its `_data` owned by `owner`) and returns its `_data`.
/// Used by container create for named (`anonymous` false) and anonymous volumes.
pub fn ensure(data_root: &Path, name: &str, anonymous: bool, owner: (u32, u32)) -> Result<PathBuf> {
    let _g = VOLUME_OPS.lock().unwrap_or_else(|p| p.into_inner());
    ensure_locked(
        data_root,
        VolumeRecord {
            name: name.into(),
            driver: "local".into(),
            created_at: timefmt::now(),
            anonymous,
            ..Default::default()
        },
        owner,
    )
    .map(|v| v.mountpoint)
}

fn ensure_locked(data_root: &Path, rec: VolumeRecord, owner: (u32, u32)) -> Result<VolumeView> {
    let dir = volumes_dir(data_root).join(&rec.name);
    let data = dir.join("_data");
    if let Some(existing) = read_record(data_root, &rec.name) {
        return Ok(VolumeView {
            record: existing,
            mountpoint: data,
            ref_count: 0,
        });
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&data)
        .map_err(|e| EngineError::io("create directory", &data, e))?;
    std::os::unix::fs::chown(&data, Some(owner.0), Some(owner.1))
        .map_err(|e| EngineError::io("chown", &data, e))?;
    write_record(data_root, &rec)?;
    Ok(VolumeView {
        record: rec,
        mountpoint: data,
        ref_count: 0,
    })
}

/// Whether a volume passes `docker volume ls`/`prune` filters. `used` says whether a
/// container mounts it.
pub fn matches_filters(
    rec: &VolumeRecord,
    used: bool,
    filters: &BTreeMap<String, Vec<String>>,
) -> Result<bool> {
    for (key, values) in filters {
        if values.is_empty() {
            continue;
        }
        let ok = match key.as_str() {
            "name" => values.iter().any(|v| rec.name.contains(v.as_str())),
            "driver" => values.iter().any(|v| v == &rec.driver),
            "dangling" => {
                let want = parse_bool(key, &values[0])?;
                want != used
            }
            "label" => values.iter().all(|v| label_matches(&rec.labels, v)),
            "label!" => !values.iter().any(|v| label_matches(&rec.labels, v)),
            // Prune's `all`: handled by the caller.
            "all" => true,
            other => {
                return Err(EngineError::InvalidParameter(format!(
                    "invalid filter '{other}'"
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "1" | "true" | "True" | "TRUE" => Ok(true),
        "0" | "false" | "False" | "FALSE" => Ok(false),
        _ => Err(EngineError::InvalidParameter(format!(
            "invalid filter '{key}={v}': use true or false"
        ))),
    }
}

impl Engine {
    fn data_root(&self) -> &Path {
        &self.inner.cfg.data_root
    }

    /// Ids of the containers that mount volume `name`.
    fn volume_users(&self, name: &str) -> Vec<String> {
        self.containers()
            .values()
            .filter(|e| {
                e.record()
                    .mounts
                    .iter()
                    .any(|m| m.kind == "volume" && m.name == name)
            })
            .map(|e| e.id.clone())
            .collect()
    }

    /// `POST /volumes/create`: creates the volume, or returns the existing one of that name.
    pub fn volume_create(&self, req: VolumeCreate) -> Result<VolumeView> {
        let driver = if req.driver.is_empty() {
            "local".to_string()
        } else {
            req.driver
        };
        if driver != "local" {
            return Err(EngineError::NotFound(format!(
                "plugin \"{driver}\" not found: berth has only the \"local\" volume driver"
            )));
        }
        // The local driver's mount options (type/device/o) would mount a file system at
        // `_data`; berth does not do that yet, so refuse rather than ignore them.
        if let Some(k) = req.driver_opts.keys().next() {
            return Err(EngineError::Unsupported(format!(
                "volume driver option {k:?} is not supported by berth's local driver yet; create the volume without -o"
            )));
        }
        let anonymous = req.name.is_empty();
        let name = if anonymous {
            names::new_id()?
        } else {
            req.name
        };
        check_name(&name).map_err(EngineError::InvalidParameter)?;
        let owner = self
            .inner
            .cfg
            .userns
            .as_ref()
            .and_then(|m| m.root())
            .unwrap_or((0, 0));
        let _g = VOLUME_OPS.lock().unwrap_or_else(|p| p.into_inner());
        let mut view = ensure_locked(
            self.data_root(),
            VolumeRecord {
                name: name.clone(),
                driver,
                created_at: timefmt::now(),
                labels: req.labels,
                options: req.driver_opts,
                anonymous,
            },
            owner,
        )?;
        view.ref_count = self.volume_users(&name).len();
        let ev = crate::events::Event::new("volume", "create", name.clone());
        self.emit(ev.attr("driver", view.record.driver.clone()));
        Ok(view)
    }

    pub fn volume_inspect(&self, name: &str) -> Result<VolumeView> {
        let rec = (check_name(name).is_ok())
            .then(|| read_record(self.data_root(), name))
            .flatten()
            .ok_or_else(|| EngineError::NotFound(format!("get {name}: no such volume")))?;
        Ok(VolumeView {
            mountpoint: volumes_dir(self.data_root()).join(name).join("_data"),
            ref_count: self.volume_users(name).len(),
            record: rec,
        })
    }

    /// `GET /volumes`, filtered (name, label, dangling, driver).
    pub fn volume_list(&self, filters: &BTreeMap<String, Vec<String>>) -> Result<Vec<VolumeView>> {
        let dir = volumes_dir(self.data_root());
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(EngineError::io("read directory", dir, e)),
        };
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(String::from) else {
                continue;
            };
            if check_name(&name).is_err() {
                continue;
            }
            let Ok(v) = self.volume_inspect(&name) else {
                continue;
            };
            if matches_filters(&v.record, v.ref_count > 0, filters)? {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        Ok(out)
    }

    /// `DELETE /volumes/{name}`: refused while a container uses it, even with `force`
    /// (Docker's force only ignores a missing volume).
    pub fn volume_remove(&self, name: &str, force: bool) -> Result<()> {
        let _g = VOLUME_OPS.lock().unwrap_or_else(|p| p.into_inner());
        if check_name(name).is_err() || read_record(self.data_root(), name).is_none() {
            if force {
                return Ok(());
            }
            return Err(EngineError::NotFound(format!("get {name}: no such volume")));
        }
        let users = self.volume_users(name);
        if !users.is_empty() {
            return Err(EngineError::Conflict(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            )));
        }
        let dir = volumes_dir(self.data_root()).join(name);
        std::fs::remove_dir_all(&dir).map_err(|e| EngineError::io("remove", dir, e))?;
        self.emit(crate::events::Event::new("volume", "destroy", name));
        Ok(())
    }

    /// `POST /volumes/prune`: removes unused volumes — anonymous ones only, unless the
    /// filter `all=true` — that pass the label filters. Returns the names and the bytes
    /// freed.
    pub fn volume_prune(
        &self,
        filters: &BTreeMap<String, Vec<String>>,
    ) -> Result<(Vec<String>, u64)> {
        let all = match filters.get("all").and_then(|v| v.first()) {
            Some(v) => parse_bool("all", v)?,
            None => false,
        };
        for key in filters.keys() {
            if !matches!(key.as_str(), "all" | "label" | "label!") {
                return Err(EngineError::InvalidParameter(format!(
                    "invalid filter '{key}'"
                )));
            }
        }
        let candidates = self.volume_list(filters)?;
        let mut deleted = Vec::new();
        let mut freed = 0u64;
        for v in candidates {
            if v.ref_count > 0 || !(all || v.record.anonymous) {
                continue;
            }
            let dir = volumes_dir(self.data_root()).join(&v.record.name);
            let size = du(&dir);
            // Skips a volume a container took meanwhile (remove checks again).
            if self.volume_remove(&v.record.name, false).is_ok() {
                freed += size;
                deleted.push(v.record.name);
            }
        }
        Ok((deleted, freed))
    }
}

impl Engine {
    /// Seeds each empty volume of a new container from the image's content at its mount
    /// path (unless `nocopy`). The root is mounted for the copy only when a volume needs
    /// it: on disk its files carry the ids the container's root maps to, so the copies do.
    pub(crate) fn seed_volumes(&self, id: &str, mounts: &[MountPoint]) -> Result<()> {
        let wanted: Vec<&MountPoint> = mounts
            .iter()
            .filter(|m| m.kind == "volume")
            .filter(|m| !m.mode.split(',').any(|o| o == "nocopy"))
            .filter(|m| is_empty_dir(&m.source))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let root = self.inner.images.mount_rootfs(id)?;
        let result = wanted.iter().try_for_each(|m| {
            let Some(src) = inside_root(&root, &m.destination) else {
                return Ok(());
            };
            seed(&src, &m.source).map_err(|e| {
                EngineError::System(format!(
                    "copying the image's {} into volume {}: {e}",
                    m.destination, m.name
                ))
            })
        });
        let unmounted = self.inner.images.unmount_rootfs(id);
        result.and(unmounted)
    }
}

/// `dest` (absolute, without `..`) inside `root`, when it is a directory reached without
/// any symlink: a link in an image could point anywhere on the host.
fn inside_root(root: &Path, dest: &str) -> Option<PathBuf> {
    let mut p = root.to_path_buf();
    for c in dest.split('/').filter(|c| !c.is_empty() && *c != ".") {
        p.push(c);
        let md = std::fs::symlink_metadata(&p).ok()?;
        if !md.is_dir() {
            return None;
        }
    }
    Some(p)
}

/// Bytes used by the files under `p` (not following symlinks).
fn du(p: &Path) -> u64 {
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    let mut n = if md.is_file() { md.len() } else { 0 };
    if md.is_dir() {
        if let Ok(rd) = std::fs::read_dir(p) {
            n += rd.flatten().map(|e| du(&e.path())).sum::<u64>();
        }
    }
    n
}

/// Whether directory `data` has no entries.
pub fn is_empty_dir(data: &Path) -> bool {
    std::fs::read_dir(data)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

/// Copies the contents of directory `src` into the existing directory `dst`, keeping
/// owners (as they are on disk), modes, times and xattrs, and gives `dst` the owner and
/// mode of `src` (Docker's copyExistingContents). Symlinks are copied, not followed.
pub fn seed(src: &Path, dst: &Path) -> std::io::Result<()> {
    copy_dir_contents(src, dst)?;
    let md = std::fs::symlink_metadata(src)?;
    copy_meta(src, dst, &md)
}

fn copy_dir_contents(src: &Path, dst: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let s = entry.path();
        let d = dst.join(entry.file_name());
        let md = std::fs::symlink_metadata(&s)?;
        let ft = md.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&d)?;
            copy_dir_contents(&s, &d)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&s)?, &d)?;
        } else if ft.is_file() {
            let mut from = std::fs::File::open(&s)?;
            let mut to = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&d)?;
            std::io::copy(&mut from, &mut to)?;
        } else {
            // Devices, fifos, sockets: the same node.
            nix::sys::stat::mknod(
                &d,
                nix::sys::stat::SFlag::from_bits_truncate(md.mode() & libc::S_IFMT),
                nix::sys::stat::Mode::from_bits_truncate(md.mode() & 0o7777),
                md.rdev(),
            )
            .map_err(std::io::Error::from)?;
        }
        copy_meta(&s, &d, &md)?;
    }
    Ok(())
}

/// Owner, then mode (a chown clears set-id bits), xattrs, then times.
fn copy_meta(src: &Path, dst: &Path, md: &std::fs::Metadata) -> std::io::Result<()> {
    lchown(dst, Some(md.uid()), Some(md.gid()))?;
    let is_link = md.file_type().is_symlink();
    if !is_link {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    }
    copy_xattrs(src, dst)?;
    let atime = nix::sys::time::TimeSpec::new(md.atime(), md.atime_nsec());
    let mtime = nix::sys::time::TimeSpec::new(md.mtime(), md.mtime_nsec());
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        dst,
        &atime,
        &mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(std::io::Error::from)
}

fn copy_xattrs(src: &Path, dst: &Path) -> std::io::Result<()> {
    let len = match rustix::fs::llistxattr_query(src) {
        Ok(n) => n,
        Err(e) if e == rustix::io::Errno::NOTSUP => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if len == 0 {
        return Ok(());
    }
    let mut list = vec![0u8; len];
    let n = rustix::fs::llistxattr(src, &mut list[..])?;
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
        let vlen = rustix::fs::lgetxattr_query(src, name.as_c_str())?;
        let mut value = vec![0u8; vlen];
        let vn = rustix::fs::lgetxattr(src, name.as_c_str(), &mut value[..])?;
        match rustix::fs::lsetxattr(
            dst,
            name.as_c_str(),
            &value[..vn],
            rustix::fs::XattrFlags::empty(),
        ) {
            Ok(()) => {}
            // The volume's file system may not take that namespace (e.g. trusted.*).
            Err(e) if e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::PERM => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["ab", "vol1", "my_vol.2-x", "0a"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "_a", "-a", ".a", "a/b", "a b", "../x", "a:b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    fn rec(name: &str, labels: &[(&str, &str)]) -> VolumeRecord {
        VolumeRecord {
            name: name.into(),
            driver: "local".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn f(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in pairs {
            m.entry(k.to_string()).or_default().push(v.to_string());
        }
        m
    }

    #[test]
    fn filters() {
        let r = rec("data-vol", &[("env", "prod"), ("team", "")]);
        assert!(matches_filters(&r, false, &f(&[])).unwrap());
        assert!(matches_filters(&r, false, &f(&[("name", "data")])).unwrap());
        assert!(!matches_filters(&r, false, &f(&[("name", "other")])).unwrap());
        assert!(
            matches_filters(&r, false, &f(&[("label", "env=prod"), ("label", "team")])).unwrap()
        );
        assert!(!matches_filters(&r, false, &f(&[("label", "env=dev")])).unwrap());
        assert!(!matches_filters(&r, false, &f(&[("label!", "env")])).unwrap());
        assert!(matches_filters(&r, false, &f(&[("dangling", "true")])).unwrap());
        assert!(!matches_filters(&r, true, &f(&[("dangling", "true")])).unwrap());
        assert!(matches_filters(&r, true, &f(&[("dangling", "false")])).unwrap());
        assert!(matches_filters(&r, true, &f(&[("driver", "local")])).unwrap());
        assert!(!matches_filters(&r, true, &f(&[("driver", "nfs")])).unwrap());
        assert!(matches_filters(&r, true, &f(&[("dangling", "maybe")])).is_err());
        assert!(matches_filters(&r, true, &f(&[("colour", "red")])).is_err());
    }

    #[test]
    fn ensure_writes_a_record_and_keeps_an_existing_one() {
        let root = tempfile::tempdir().unwrap();
        let data = ensure(root.path(), "v1", false, (0, 0)).unwrap();
        assert!(data.is_dir() && is_empty_dir(&data));
        let rec = read_record(root.path(), "v1").unwrap();
        assert_eq!((rec.name.as_str(), rec.anonymous), ("v1", false));
        ensure(root.path(), "v1", true, (0, 0)).unwrap();
        assert!(!read_record(root.path(), "v1").unwrap().anonymous);
    }

    #[test]
    fn seed_copies_files_links_modes_and_owners() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("sub")).unwrap();
        std::fs::write(src.path().join("sub/f"), b"hello").unwrap();
        std::os::unix::fs::symlink("sub/f", src.path().join("link")).unwrap();
        let am_root = nix::unistd::geteuid().is_root();
        if am_root {
            lchown(src.path().join("sub/f"), Some(1234), Some(5678)).unwrap();
        }
        // After the chown, which clears set-id bits.
        std::fs::set_permissions(
            src.path().join("sub/f"),
            std::fs::Permissions::from_mode(0o4750),
        )
        .unwrap();
        seed(src.path(), dst.path()).unwrap();
        let f = dst.path().join("sub/f");
        assert_eq!(std::fs::read(&f).unwrap(), b"hello");
        let md = std::fs::metadata(&f).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o4750);
        if am_root {
            assert_eq!((md.uid(), md.gid()), (1234, 5678));
        }
        assert_eq!(
            std::fs::read_link(dst.path().join("link")).unwrap(),
            Path::new("sub/f")
        );
    }
}
