//! Where a container's files live, and its record written atomically and read back.
//!
//! - `DATA_ROOT/containers/<id>/config.json`: the record ([`ContainerRecord`])
//! - `DATA_ROOT/containers/<id>/<id>-json.log`, `hostname`, `hosts`, `resolv.conf`
//! - `EXEC_ROOT/containers/<id>/`: bundle, monitor socket and config, exit status

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::container::ContainerRecord;
use crate::error::{EngineError, Result};

/// What a write must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A power loss: the data reaches the disk before the rename (fsync, about a
    /// millisecond here).
    Synced,
    /// Only readers on this boot: atomic for them, left to the page cache. For facts that
    /// a power loss makes moot (a container's run state: after it every container is
    /// stopped, and the daemon works their state out again when it starts).
    Buffered,
}

impl Durability {
    /// How a record changed from `before` to `after` must be written: buffered when only
    /// its run state changed.
    pub fn of_change(before: &ContainerRecord, after: &ContainerRecord) -> Durability {
        let mut b = before.clone();
        b.state = after.state.clone();
        if b == *after {
            Durability::Buffered
        } else {
            Durability::Synced
        }
    }
}

/// Writes `data` to `path` so that a reader sees either the old or the new content, never
/// a mix: a temporary file in the same directory, fsynced, renamed over.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, data, Durability::Synced)
}

/// [`write_atomic`], fsynced or not.
pub fn write_atomic_with(path: &Path, data: &[u8], durability: Durability) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        if durability == Durability::Synced {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// A unix socket path short enough for `sun_path` (108 bytes) however deep the exec root
/// is: `/proc/self/fd/N/NAME` through an open descriptor of the socket's directory. Keep the
/// value alive while binding or connecting.
pub struct SocketPath {
    _dir: std::fs::File,
    path: PathBuf,
}

impl SocketPath {
    pub fn new(socket: &Path) -> std::io::Result<SocketPath> {
        use std::os::fd::AsRawFd;
        let dir = std::fs::File::open(socket.parent().unwrap_or(Path::new("/")))?;
        let name = socket.file_name().unwrap_or_default();
        let path = Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        Ok(SocketPath { _dir: dir, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The paths of one container.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
    pub exec_dir: PathBuf,
}

impl Paths {
    pub fn new(data_root: &Path, exec_root: &Path, id: &str) -> Paths {
        Paths {
            dir: data_root.join("containers").join(id),
            exec_dir: exec_root.join("containers").join(id),
        }
    }
    pub fn record(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    pub fn log(&self) -> PathBuf {
        let id = self
            .dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("container");
        self.dir.join(format!("{id}-json.log"))
    }
    pub fn hostname(&self) -> PathBuf {
        self.dir.join("hostname")
    }
    pub fn hosts(&self) -> PathBuf {
        self.dir.join("hosts")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }
    pub fn bundle(&self) -> PathBuf {
        self.exec_dir.join("bundle")
    }
    pub fn socket(&self) -> PathBuf {
        self.exec_dir.join("monitor.sock")
    }
    pub fn exit_file(&self) -> PathBuf {
        self.exec_dir.join("exit.json")
    }
    pub fn monitor_log(&self) -> PathBuf {
        self.exec_dir.join("monitor.log")
    }
}

pub fn save(paths: &Paths, rec: &ContainerRecord, durability: Durability) -> Result<()> {
    let json = serde_json::to_vec_pretty(rec)
        .map_err(|e| EngineError::System(format!("encoding container record: {e}")))?;
    let path = paths.record();
    write_atomic_with(&path, &json, durability).map_err(|e| EngineError::io("write", path, e))
}

/// Every container record under `data_root/containers`. A record that cannot be read is
/// skipped with a warning naming it, so that one bad file does not stop the daemon.
pub fn load_all(data_root: &Path) -> Result<Vec<ContainerRecord>> {
    let dir = data_root.join("containers");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(EngineError::io("read directory", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path().join("config.json");
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<ContainerRecord>(&b).map_err(|e| e.to_string()))
        {
            Ok(rec) if Some(rec.id.as_str()) == entry.file_name().to_str() => out.push(rec),
            Ok(_) => {
                tracing::warn!(path = %path.display(), "container record does not match its directory; skipped")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable container record; skipped")
            }
        }
    }
    out.sort_by(|a, b| a.created.cmp(&b.created));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.to_string(),
            name: "demo".into(),
            created: crate::timefmt::now(),
            image_ref: "busybox".into(),
            image_id: "sha256:00".into(),
            config: Default::default(),
            host_config: Default::default(),
            state: crate::container::State {
                status: crate::container::Status::Exited,
                exit_code: 3,
                ..Default::default()
            },
            maps: Some(berth_idmap::UsernsMaps::single(100000, 65536).unwrap()),
            mounts: vec![],
            layers: vec!["sha256:11".into()],
            path: "sh".into(),
            args: vec!["-c".into(), "exit 3".into()],
        }
    }

    #[test]
    fn only_run_state_changes_are_buffered() {
        let rec = record(&"ab".repeat(32));
        let mut started = rec.clone();
        started.state.status = crate::container::Status::Running;
        started.state.pid = 42;
        assert_eq!(Durability::of_change(&rec, &started), Durability::Buffered);
        let mut renamed = started.clone();
        renamed.name = "y".into();
        assert_eq!(
            Durability::of_change(&started, &renamed),
            Durability::Synced
        );
        assert_eq!(Durability::of_change(&rec, &rec), Durability::Buffered);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let id = "ab".repeat(32);
        let paths = Paths::new(dir.path(), &dir.path().join("exec"), &id);
        std::fs::create_dir_all(&paths.dir).unwrap();
        let rec = record(&id);
        save(&paths, &rec, Durability::Synced).unwrap();
        let back = load_all(dir.path()).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].state, rec.state);
        assert_eq!(back[0].maps, rec.maps);
        assert_eq!(back[0].args, rec.args);
        assert!(paths.log().ends_with(format!("{id}-json.log")));
    }

    #[test]
    fn socket_paths_stay_short() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a".repeat(100)).join("b".repeat(100));
        std::fs::create_dir_all(&deep).unwrap();
        let p = SocketPath::new(&deep.join("monitor.sock")).unwrap();
        assert!(p.path().as_os_str().len() < 40, "{}", p.path().display());
        let l = std::os::unix::net::UnixListener::bind(p.path()).unwrap();
        drop(l);
        assert!(deep.join("monitor.sock").exists());
    }

    #[test]
    fn bad_records_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("containers/abc");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("config.json"), b"{not json").unwrap();
        assert!(load_all(dir.path()).unwrap().is_empty());
    }
}
