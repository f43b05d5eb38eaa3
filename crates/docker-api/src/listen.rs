//! The daemon's sockets: `unix:///PATH`, `tcp://HOST:PORT` and `fd://` (systemd socket
//! activation through LISTEN_FDS / LISTEN_PID).

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("invalid -H address {0:?}: use unix:///PATH, tcp://HOST:PORT or fd://[N]")]
    BadAddress(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no sockets were passed by socket activation (LISTEN_FDS/LISTEN_PID unset or not for this process); start berth through its systemd socket or use unix:// or tcp://")]
    NoActivation(String),
    #[error("fd://{0}: file descriptor {0} was not passed by socket activation")]
    NoSuchFd(RawFd),
}

pub enum Listener {
    Unix(tokio::net::UnixListener, PathBuf),
    Tcp(tokio::net::TcpListener),
}

/// The fds systemd passed us, from 3 on, if LISTEN_PID is our pid.
fn activation_fds() -> Vec<RawFd> {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let n = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    if !pid_ok || n <= 0 {
        return Vec::new();
    }
    (3..3 + n).collect()
}

fn from_fd(fd: RawFd, addr: &str) -> Result<Listener, ListenError> {
    let bind_err = |source| ListenError::Bind {
        addr: addr.to_string(),
        source,
    };
    // SAFETY: `fd` was passed to us by socket activation (checked against LISTEN_PID) and
    // nothing else in the process owns it; we take ownership exactly once.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // Inherited without close-on-exec: keep it out of the monitors the daemon starts.
    nix::fcntl::fcntl(
        &sock,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| bind_err(std::io::Error::from(e)))?;
    let domain = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(fd)
        .map_err(|e| bind_err(std::io::Error::from(e)))?;
    if domain.as_unix_addr().is_some() {
        let l = std::os::unix::net::UnixListener::from(sock);
        l.set_nonblocking(true).map_err(bind_err)?;
        Ok(Listener::Unix(
            tokio::net::UnixListener::from_std(l).map_err(bind_err)?,
            PathBuf::new(),
        ))
    } else {
        let l = std::net::TcpListener::from(sock);
        l.set_nonblocking(true).map_err(bind_err)?;
        Ok(Listener::Tcp(
            tokio::net::TcpListener::from_std(l).map_err(bind_err)?,
        ))
    }
}

/// Opens the listeners for one `-H` address. Must run inside the tokio runtime.
pub async fn bind(addr: &str) -> Result<Vec<Listener>, ListenError> {
    let bind_err = |source| ListenError::Bind {
        addr: addr.to_string(),
        source,
    };
    if let Some(path) = addr.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(ListenError::BadAddress(addr.into()));
        }
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(bind_err)?;
        }
        // A socket file left by a daemon that died; the data root lock guarantees that no
        // other daemon of ours is live on it.
        if std::fs::symlink_metadata(&path)
            .map(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            })
            .unwrap_or(false)
        {
            let _ = std::fs::remove_file(&path);
        }
        let l = tokio::net::UnixListener::bind(&path).map_err(bind_err)?;
        // Docker's socket: root and the docker group; berth has no group, so root only.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
            .map_err(bind_err)?;
        return Ok(vec![Listener::Unix(l, path)]);
    }
    if let Some(hostport) = addr.strip_prefix("tcp://") {
        let hostport = if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:2375")
        };
        let l = tokio::net::TcpListener::bind(&hostport)
            .await
            .map_err(bind_err)?;
        return Ok(vec![Listener::Tcp(l)]);
    }
    if let Some(which) = addr.strip_prefix("fd://") {
        let fds = activation_fds();
        if fds.is_empty() {
            return Err(ListenError::NoActivation(addr.into()));
        }
        if which.is_empty() {
            return fds.into_iter().map(|fd| from_fd(fd, addr)).collect();
        }
        let fd: RawFd = which
            .parse()
            .map_err(|_| ListenError::BadAddress(addr.into()))?;
        if !fds.contains(&fd) {
            return Err(ListenError::NoSuchFd(fd));
        }
        return Ok(vec![from_fd(fd, addr)?]);
    }
    Err(ListenError::BadAddress(addr.into()))
}
