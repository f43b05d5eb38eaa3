//! The socket between the runtime and a process it is setting up (the container init or an
//! exec'd process): short tagged messages, optionally carrying one file descriptor.
//!
//! A SOCK_SEQPACKET socketpair keeps message boundaries, so one `recv` is one message, and
//! EOF means the other side exited.

use std::io::IoSlice;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

/// Messages of the handshake. Child to parent: `NeedHooks`, `Console`, `Ready`, `Failed`.
/// Parent to child: `Go`, `Joined`, `HooksDone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Tag {
    /// Parent: the id maps are written, the cgroups joined; go on.
    Go = b'G',
    /// Parent: the child is in the container's cgroups (sent after `Go`: moving a task
    /// between v1 cgroups waits for an RCU grace period, which the child's mount work
    /// overlaps).
    Joined = b'J',
    /// Child: the namespaces exist; run prestart and createRuntime hooks now.
    NeedHooks = b'H',
    /// Parent: the hooks ran.
    HooksDone = b'h',
    /// Child: here is the pty master (carried as the descriptor).
    Console = b'T',
    /// Child: set up, waiting for `start` (or, for exec, about to exec).
    Ready = b'R',
    /// Child: setup failed; the payload is the message.
    Failed = b'E',
}

impl Tag {
    fn from_u8(b: u8) -> Option<Tag> {
        Some(match b {
            b'G' => Tag::Go,
            b'J' => Tag::Joined,
            b'H' => Tag::NeedHooks,
            b'h' => Tag::HooksDone,
            b'T' => Tag::Console,
            b'R' => Tag::Ready,
            b'E' => Tag::Failed,
            _ => return None,
        })
    }
}

/// One end of the handshake socket.
pub struct Channel {
    fd: OwnedFd,
}

/// A received message.
pub struct Message {
    pub tag: Tag,
    pub text: String,
    pub fd: Option<OwnedFd>,
}

impl Channel {
    /// A connected pair (close-on-exec on both ends).
    pub fn pair() -> Result<(Channel, Channel), Errno> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn send(&self, tag: Tag, text: &str, fd: Option<RawFd>) -> Result<(), Errno> {
        let mut buf = Vec::with_capacity(1 + text.len());
        buf.push(tag as u8);
        buf.extend_from_slice(text.as_bytes());
        // Messages are small; cap them so one always fits the receiver's buffer.
        buf.truncate(MAX_MSG);
        let iov = [IoSlice::new(&buf)];
        let fds;
        let cmsgs: Vec<ControlMessage> = match fd {
            Some(f) => {
                fds = [f];
                vec![ControlMessage::ScmRights(&fds)]
            }
            None => vec![],
        };
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                &cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Err(Errno::EINTR) => continue,
                r => return r.map(|_| ()),
            }
        }
    }

    /// The next message, or None at EOF (the other side is gone).
    pub fn recv(&self) -> Result<Option<Message>, Errno> {
        self.recv_flags(MsgFlags::empty())
    }

    /// A message already waiting, without blocking (EAGAIN when there is none).
    pub fn try_recv(&self) -> Result<Option<Message>, Errno> {
        self.recv_flags(MsgFlags::MSG_DONTWAIT)
    }

    fn recv_flags(&self, flags: MsgFlags) -> Result<Option<Message>, Errno> {
        let mut buf = vec![0u8; MAX_MSG];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let (n, fd) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC | flags,
            ) {
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
                Ok(msg) => {
                    let mut fd = None;
                    for c in msg.cmsgs()? {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for f in fds {
                                // SAFETY: the kernel just installed this descriptor for us.
                                let owned = unsafe { OwnedFd::from_raw_fd(f) };
                                fd.get_or_insert(owned);
                            }
                        }
                    }
                    break (msg.bytes, fd);
                }
            }
        };
        if n == 0 {
            return Ok(None);
        }
        let tag = Tag::from_u8(buf[0]).ok_or(Errno::EPROTO)?;
        let text = String::from_utf8_lossy(&buf[1..n]).into_owned();
        Ok(Some(Message { tag, text, fd }))
    }

    /// Waits for `want`; a `Failed` message or EOF turns into Err(text).
    pub fn expect(&self, want: Tag) -> Result<Message, String> {
        match self.recv() {
            Ok(Some(m)) if m.tag == want => Ok(m),
            Ok(Some(m)) if m.tag == Tag::Failed => Err(m.text),
            Ok(Some(m)) => Err(format!(
                "protocol error: expected {want:?}, got {:?}",
                m.tag
            )),
            Ok(None) => Err("the other side exited".into()),
            Err(e) => Err(format!("handshake socket: {e}")),
        }
    }
}

const MAX_MSG: usize = 4096;
