//! The wire protocol between the daemon and a container's monitor, over the monitor's unix
//! socket: frames with Docker's 8-byte stream header, `[kind, 0, 0, 0, len (u32, big
//! endian)]`, then `len` bytes. Kinds 0-2 are stdin/stdout/stderr, as in Docker's
//! multiplexed attach stream, so output frames pass through unchanged.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// daemon → monitor: bytes for the container's stdin.
    Stdin = 0,
    /// monitor → daemon: container output.
    Stdout = 1,
    Stderr = 2,
    /// monitor → daemon: the container exited; payload is an [`ExitStatus`] as JSON.
    Exit = 3,
    /// daemon → monitor: start the created container.
    Start = 4,
    /// daemon → monitor: close the container's stdin.
    CloseStdin = 5,
    /// daemon → monitor: terminal size, `height: u16, width: u16`, big endian.
    Resize = 6,
    /// daemon → monitor: send signal `i32` (big endian) to the container's init.
    Signal = 7,
    /// monitor → daemon: the container runs (answer to Start).
    Started = 8,
    /// monitor → daemon: an operation failed; payload is the message.
    Error = 9,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0 => Kind::Stdin,
            1 => Kind::Stdout,
            2 => Kind::Stderr,
            3 => Kind::Exit,
            4 => Kind::Start,
            5 => Kind::CloseStdin,
            6 => Kind::Resize,
            7 => Kind::Signal,
            8 => Kind::Started,
            9 => Kind::Error,
            _ => return None,
        })
    }
}

/// Frames above this are a protocol error, not an allocation.
const MAX_FRAME: u32 = 1 << 20;

/// How the container ended, as the monitor records it in its exit file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub exit_code: i32,
    pub finished_at: String,
    #[serde(default)]
    pub error: String,
}

pub fn header(kind: Kind, len: usize) -> [u8; 8] {
    let l = (len as u32).to_be_bytes();
    [kind as u8, 0, 0, 0, l[0], l[1], l[2], l[3]]
}

pub fn encode(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + payload.len());
    v.extend_from_slice(&header(kind, payload.len()));
    v.extend_from_slice(payload);
    v
}

fn parse_header(h: &[u8; 8]) -> io::Result<(Kind, u32)> {
    let kind = Kind::from_u8(h[0]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown frame kind {}", h[0]),
        )
    })?;
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    Ok((kind, len))
}

/// Reads one frame; `None` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(Kind, Vec<u8>)>> {
    let mut h = [0u8; 8];
    match r.read_exact(&mut h) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (kind, len) = parse_header(&h)?;
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    Ok(Some((kind, buf)))
}

pub fn write_frame(w: &mut impl Write, kind: Kind, payload: &[u8]) -> io::Result<()> {
    w.write_all(&encode(kind, payload))
}

/// The async reader the daemon uses.
pub async fn read_frame_async(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
) -> io::Result<Option<(Kind, Vec<u8>)>> {
    use tokio::io::AsyncReadExt;
    let mut h = [0u8; 8];
    match r.read_exact(&mut h).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (kind, len) = parse_header(&h)?;
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).await?;
    Ok(Some((kind, buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Kind::Stdout, b"hello").unwrap();
        write_frame(&mut buf, Kind::Start, b"").unwrap();
        assert_eq!(&buf[..8], &[1, 0, 0, 0, 0, 0, 0, 5]);
        let mut r = &buf[..];
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((Kind::Stdout, b"hello".to_vec()))
        );
        assert_eq!(read_frame(&mut r).unwrap(), Some((Kind::Start, vec![])));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        let bad = [42u8, 0, 0, 0, 0, 0, 0, 0];
        assert!(read_frame(&mut &bad[..]).is_err());
        let huge = [1u8, 0, 0, 0, 0xff, 0, 0, 0];
        assert!(read_frame(&mut &huge[..]).is_err());
    }
}
