//! Small helpers for descriptor-relative file work (`*at` calls on `O_PATH` descriptors),
//! shared by the archive API, export, diff and commit.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{self as rfs, Mode, OFlags};

use crate::error::EngineError;

pub(crate) fn sys(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(rustix::io::Errno) -> EngineError {
    let path = path.into();
    move |e| EngineError::io(what, path, e.into())
}

pub(crate) fn io_sys(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> EngineError {
    let path = path.into();
    move |e| EngineError::io(what, path, e)
}

pub(crate) fn proc_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Reopens an `O_PATH` descriptor for reading.
pub(crate) fn reopen(fd: BorrowedFd<'_>, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    rfs::open(proc_path(fd), flags | OFlags::CLOEXEC, Mode::empty())
}
