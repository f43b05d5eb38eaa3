//! Locked, atomic replacement of small files shared with other programs (`/etc/subuid`,
//! the range ledger).
//!
//! The lock is a `flock` on the file itself, so no lock file is left behind: a stale
//! `/etc/subuid.lock` would make shadow's `usermod --add-subuids` refuse to run. Because
//! writers replace the file by rename, a waiter may wake up holding the lock on an inode that
//! is no longer at the path; [`LockedFile::open`] checks for that and locks the new one.
//!
//! shadow's tools (`useradd`, `usermod --add-subuids`) do not use `flock`: they lock
//! `/etc/subuid` by linking a pid file to `/etc/subuid.lock`. [`ShadowLock`] takes that lock
//! too, so berth and an admin's `usermod` never overwrite each other's changes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

    /// Whether the locked file is still the one at the path. Writers that do not `flock`
    /// (shadow's tools) may have renamed a new file over it before we took their lock.
    pub(crate) fn is_current(&self) -> io::Result<bool> {
        let held = self.file.metadata()?;
        match fs::metadata(&self.path) {
            Ok(now) => Ok(now.ino() == held.ino() && now.dev() == held.dev()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
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

/// shadow's lock on a file it edits (`lib/commonio.c`, `do_lock_file`): `PATH.lock` is a
/// hard link to a file holding the owner's pid, made with `link(2)` so that exactly one
/// process succeeds; a lock whose pid is dead is stale and removed. Released on drop.
///
/// Take it while holding the file's [`LockedFile`]: the pid file's name is per process, so
/// only one thread of a process may be acquiring at a time.
pub(crate) struct ShadowLock {
    lock: PathBuf,
}

impl ShadowLock {
    /// Waits up to `patience` for the lock (shadow's own tools give up at once).
    pub(crate) fn acquire(path: &Path, patience: Duration) -> io::Result<ShadowLock> {
        let lock = sibling(path, ".lock");
        let mine = sibling(path, &format!(".{}", std::process::id()));
        let deadline = Instant::now() + patience;
        loop {
            match try_link_lock(&mine, &lock) {
                Ok(true) => return Ok(ShadowLock { lock }),
                Ok(false) => {}
                Err(e) => {
                    let _ = fs::remove_file(&mine);
                    return Err(e);
                }
            }
            if Instant::now() >= deadline {
                let holder = fs::read(&lock).map(|b| {
                    String::from_utf8_lossy(&b)
                        .trim_end_matches('\0')
                        .to_string()
                });
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is held by process {} (shadow's lock, as taken by usermod); try again when it is done",
                        lock.display(),
                        holder.unwrap_or_else(|_| "?".into())
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ShadowLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.lock);
    }
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// One attempt of shadow's protocol. `Ok(false)`: someone alive holds the lock.
fn try_link_lock(mine: &Path, lock: &Path) -> io::Result<bool> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(mine)?;
    // The pid and a NUL, as shadow writes it.
    f.write_all(format!("{}\0", std::process::id()).as_bytes())?;
    drop(f);
    let linked = match fs::hard_link(mine, lock) {
        Ok(()) => fs::metadata(mine)?.nlink() == 2,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let text = match fs::read(lock) {
                Ok(t) => t,
                // Released between our link and our read: try again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e),
            };
            let pid = String::from_utf8_lossy(&text)
                .trim_end_matches('\0')
                .trim()
                .parse::<i32>()
                .ok();
            // EPERM means the process exists (and is not ours to signal).
            let alive = pid.is_some_and(|p| {
                p > 0
                    && !matches!(
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None),
                        Err(nix::errno::Errno::ESRCH)
                    )
            });
            if !text.is_empty() && !alive {
                // A stale lock (its owner died, or it holds no pid): remove it, as shadow does.
                tracing::warn!(
                    "removing stale lock {} (pid {:?} is gone)",
                    lock.display(),
                    pid
                );
                let _ = fs::remove_file(lock);
            }
            false
        }
        Err(e) => return Err(e),
    };
    fs::remove_file(mine)?;
    Ok(linked)
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
    fn shadow_lock_waits_for_a_live_holder_and_breaks_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("subuid");
        let lock = dir.path().join("subuid.lock");
        // Held by a live process (pid 1): we wait, then give up with a message naming it.
        fs::write(&lock, b"1\0").unwrap();
        let e = ShadowLock::acquire(&p, Duration::from_millis(50))
            .err()
            .unwrap();
        assert!(e.to_string().contains("is held by process 1"), "{e}");
        // Held by a dead process: the lock is stale and ours to take.
        fs::write(&lock, format!("{}\0", i32::MAX)).unwrap();
        let held = ShadowLock::acquire(&p, Duration::from_secs(5)).unwrap();
        assert_eq!(
            fs::read(&lock).unwrap(),
            format!("{}\0", std::process::id()).as_bytes()
        );
        drop(held);
        assert!(!lock.exists());
        // Nothing left beside the file.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

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
