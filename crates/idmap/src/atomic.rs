//! Locked, atomic replacement of small files shared with other programs (`/etc/subuid`,
//! the range ledger).
//!
//! The lock is a `flock` on the file itself, so no lock file is left behind: a stale
//! `/etc/subuid.lock` would make shadow's `usermod --add-subuids` refuse to run. Because
//! writers replace the file by rename, a waiter may wake up holding the lock on an inode that
//! is no longer at the path; [`LockedFile::open`] checks for that and locks the new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

/// An open file with an exclusive `flock`, released on drop.
pub(crate) struct LockedFile {
    file: Flock<File>,
    path: PathBuf,
}

impl LockedFile {
    /// Opens and locks `path`. When the file is missing it is created with `create_mode`,
    /// or `Ok(None)` is returned when `create_mode` is `None`.
    pub(crate) fn open(path: &Path, create_mode: Option<u32>) -> io::Result<Option<LockedFile>> {
        loop {
            let file = match open_rw(path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => match create_mode {
                    None => return Ok(None),
                    Some(mode) => match create(path, mode) {
                        Ok(f) => f,
                        // Someone else created it first: lock theirs.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(e),
                    },
                },
                Err(e) => return Err(e),
            };
            let file =
                Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
            // Still the file at `path`? A writer may have renamed a new one over it while we
            // waited for the lock.
            let held = file.metadata()?;
            match fs::metadata(path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(Some(LockedFile {
                        file,
                        path: path.to_path_buf(),
                    }));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        (&*self.file).read_to_end(&mut buf)?;
        Ok(buf)
    }

    /// Replaces the file's contents atomically: a temporary file beside it with the same mode
    /// and owner, synced, then renamed over it. Readers see the old or the new file, never a
    /// mix. The lock stays held (on the old inode) until `self` is dropped, and
    /// [`LockedFile::open`] makes later lockers move on to the new inode.
    pub(crate) fn replace(&mut self, contents: &[u8]) -> io::Result<()> {
        let meta = self.file.metadata()?;
        write_atomic(
            &self.path,
            contents,
            meta.permissions().mode() & 0o7777,
            Some((meta.uid(), meta.gid())),
        )
    }
}

fn open_rw(path: &Path) -> io::Result<File> {
    // Read-only is enough for flock, and leaves files we may not write readable.
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

fn create(path: &Path, mode: u32) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    // The umask may have taken bits off.
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(f)
}

/// Writes `contents` to `path` through a temporary file and a rename, with `mode` and
/// (when given) owner `uid:gid`.
pub(crate) fn write_atomic(
    path: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(contents)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        // After fchown: chown clears set-id bits.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_keeps_mode_and_creates_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("subuid");
        assert!(LockedFile::open(&p, None).unwrap().is_none());
        let mut l = LockedFile::open(&p, Some(0o644)).unwrap().unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o644
        );
        assert_eq!(l.read_all().unwrap(), b"");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        l.replace(b"a:1:2\n").unwrap();
        drop(l);
        assert_eq!(fs::read(&p).unwrap(), b"a:1:2\n");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        // No temporary or lock files left beside it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
