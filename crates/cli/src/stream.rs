//! Container I/O on the client side: the 8-byte multiplexed frames of non-tty streams, the
//! hijacked attach connection (stdin up, output down), raw terminal mode, window size,
//! detaching with ctrl-p ctrl-q, and signals (SIGWINCH → resize, others forwarded).

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::mpsc;

use nix::sys::signal::{SigSet, Signal};
use rustix::termios::{self, OptionalActions, Termios};

use crate::http::Conn;

/// Copies docker's multiplexed stream: each frame is `[stream, 0, 0, 0, size (u32 BE)]`
/// then `size` bytes; stream 1 is stdout, 2 stderr (0, stdin, is written to stdout as docker
/// does). Ends cleanly at end of input between frames.
pub fn demux(r: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<()> {
    let mut header = [0u8; 8];
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // A clean end is an end before the first byte of a header.
        let mut got = 0;
        while got < 8 {
            match r.read(&mut header[got..])? {
                0 if got == 0 => return Ok(()),
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stream ended inside a frame header",
                    ))
                }
                n => got += n,
            }
        }
        let target: &mut dyn Write = match header[0] {
            0 | 1 => out,
            2 => err,
            s => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown stream {s} in a multiplexed frame (is the container a tty?)"),
                ))
            }
        };
        let mut left = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        while left > 0 {
            let want = left.min(buf.len());
            let n = r.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside a frame",
                ));
            }
            target.write_all(&buf[..n])?;
            left -= n;
        }
        target.flush()?;
    }
}

/// Copies a raw (tty) stream, flushing as it goes so prompts show up.
pub fn copy_raw(r: &mut dyn Read, out: &mut dyn Write) -> io::Result<()> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
}

/// The terminal in raw mode until dropped.
pub struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    pub fn enable() -> io::Result<RawTerminal> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw)?;
        Ok(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(io::stdin().as_fd(), OptionalActions::Now, &self.saved);
    }
}

/// The terminal's size as (rows, columns), if stdout (or stdin) is a terminal.
pub fn terminal_size() -> Option<(u16, u16)> {
    let size = termios::tcgetwinsize(io::stdout().as_fd())
        .or_else(|_| termios::tcgetwinsize(io::stdin().as_fd()));
    size.ok()
        .filter(|w| w.ws_row > 0 && w.ws_col > 0)
        .map(|w| (w.ws_row, w.ws_col))
}

/// Signals berth handles while attached: SIGWINCH, and the ones forwarded to the container.
const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Blocks SIGWINCH (and, with `forward`, the forwarded signals) in this thread and every
/// thread started after, and hands them to `on_signal` on a thread of their own. Call it
/// before starting the I/O threads so they inherit the mask.
pub fn watch_signals(forward: bool, on_signal: impl Fn(Signal) + Send + 'static) -> io::Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGWINCH);
    if forward {
        for s in FORWARDED {
            set.add(*s);
        }
    }
    set.thread_block().map_err(io::Error::from)?;
    std::thread::spawn(move || {
        while let Ok(sig) = set.wait() {
            on_signal(sig);
        }
    });
    Ok(())
}

/// How an attached session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The container's output ended (it exited, or the daemon closed the stream).
    Ended,
    /// The user typed the detach keys.
    Detached,
}

/// Docker's default detach sequence: ctrl-p ctrl-q.
pub const DEFAULT_DETACH_KEYS: &[u8] = &[0x10, 0x11];

/// Parses docker's `--detach-keys` (`ctrl-p,ctrl-q`, `ctrl-a,x`): comma-separated
/// `ctrl-<a-z @ [ \ ] ^ _>` or single characters.
pub fn parse_detach_keys(s: &str) -> Result<Vec<u8>, String> {
    let mut seq = Vec::new();
    for key in s.split(',') {
        let lower = key.to_ascii_lowercase();
        let byte = match lower.strip_prefix("ctrl-") {
            Some(k) if k.len() == 1 => match k.as_bytes()[0] {
                c @ b'a'..=b'z' => c - b'a' + 1,
                b'@' => 0,
                b'[' => 27,
                b'\\' => 28,
                b']' => 29,
                b'^' => 30,
                b'_' => 31,
                _ => return Err(format!("invalid detach keys {s:?}: unknown key {key:?}")),
            },
            None if key.len() == 1 => key.as_bytes()[0],
            _ => {
                return Err(format!(
                    "invalid detach keys {s:?}: unknown key {key:?} (use e.g. ctrl-p,ctrl-q)"
                ))
            }
        };
        seq.push(byte);
    }
    Ok(seq)
}

/// Finds the detach sequence in typed input, across reads.
pub struct DetachKeys {
    seq: Vec<u8>,
    matched: usize,
}

impl DetachKeys {
    pub fn new(seq: Vec<u8>) -> DetachKeys {
        DetachKeys { seq, matched: 0 }
    }

    /// The bytes to send for `input`, and whether the detach sequence was typed (bytes after
    /// it are dropped). A partial match is held until the next byte shows it was not one.
    pub fn scan(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len() + self.seq.len());
        if self.seq.is_empty() {
            out.extend_from_slice(input);
            return (out, false);
        }
        for &b in input {
            if b != self.seq[self.matched] && self.matched > 0 {
                // Not the sequence after all: send what was held, then look at `b` afresh.
                out.extend_from_slice(&self.seq[..self.matched]);
                self.matched = 0;
            }
            if b == self.seq[self.matched] {
                self.matched += 1;
                if self.matched == self.seq.len() {
                    return (out, true);
                }
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// Runs an attached session: container output to our stdout/stderr (raw for a tty, demuxed
/// otherwise), and, with `stdin`, our stdin to the container (end of input half-closes the
/// connection). Returns when the output ends or the user types `detach_keys` (tty only).
pub fn pump(
    conn: Conn,
    early: Vec<u8>,
    stdin: bool,
    tty: bool,
    detach_keys: Vec<u8>,
) -> io::Result<Outcome> {
    let (tx, rx) = mpsc::channel::<io::Result<Outcome>>();
    let reader = conn.try_clone()?;
    let out_tx = tx.clone();
    std::thread::spawn(move || {
        let mut r = io::Cursor::new(early).chain(reader);
        let res = if tty {
            copy_raw(&mut r, &mut io::stdout().lock())
        } else {
            demux(&mut r, &mut io::stdout().lock(), &mut io::stderr().lock())
        };
        // When the process ends before reading all the input we sent (say the EOF key a
        // terminal sends as it closes), the daemon closes a socket with unread data and
        // the kernel reports a reset here instead of the end, once all the output sent
        // before it was read. That is the end too: the exit status says how it went.
        let res = match res {
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
            r => r,
        };
        let _ = out_tx.send(res.map(|()| Outcome::Ended));
    });
    if stdin {
        let mut writer = conn;
        std::thread::spawn(move || {
            let mut keys = DetachKeys::new(detach_keys);
            let mut buf = vec![0u8; 32 * 1024];
            let mut input = io::stdin().lock();
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let (send, detach) = if tty {
                    keys.scan(&buf[..n])
                } else {
                    (buf[..n].to_vec(), false)
                };
                if writer.write_all(&send).is_err() {
                    return;
                }
                if detach {
                    let _ = tx.send(Ok(Outcome::Detached));
                    return;
                }
            }
            let _ = writer.shutdown_write();
        });
    }
    rx.recv().unwrap_or(Ok(Outcome::Ended))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, data: &[u8]) -> Vec<u8> {
        let mut f = vec![stream, 0, 0, 0];
        f.extend_from_slice(&(data.len() as u32).to_be_bytes());
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn demuxes_frames() {
        let input = [
            frame(1, b"out1 "),
            frame(2, b"err"),
            frame(1, b"out2"),
            frame(1, b""),
        ]
        .concat();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        demux(&mut &input[..], &mut out, &mut err).unwrap();
        assert_eq!(out, b"out1 out2");
        assert_eq!(err, b"err");
    }

    #[test]
    fn demux_rejects_truncated_and_garbage() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut cut = frame(1, b"hello");
        cut.truncate(10);
        assert!(demux(&mut &cut[..], &mut out, &mut err).is_err());
        assert!(demux(&mut &b"hello wo"[..], &mut out, &mut err).is_err());
        assert!(demux(&mut &[1u8, 0, 0][..], &mut out, &mut err).is_err());
    }

    #[test]
    fn detach_keys_across_reads() {
        let mut k = DetachKeys::new(DEFAULT_DETACH_KEYS.to_vec());
        assert_eq!(k.scan(b"ab\x10"), (b"ab".to_vec(), false));
        assert_eq!(k.scan(b"x"), (b"\x10x".to_vec(), false));
        assert_eq!(k.scan(b"y\x10"), (b"y".to_vec(), false));
        assert_eq!(k.scan(b"\x11zz"), (b"".to_vec(), true));
        let mut k = DetachKeys::new(DEFAULT_DETACH_KEYS.to_vec());
        assert_eq!(k.scan(b"\x10\x10\x11"), (b"\x10".to_vec(), true));
        let mut k = DetachKeys::new(parse_detach_keys("ctrl-a,x,y").unwrap());
        assert_eq!(k.scan(b"\x01xz\x01x"), (b"\x01xz".to_vec(), false));
        assert_eq!(k.scan(b"y"), (b"".to_vec(), true));
    }

    #[test]
    fn parses_detach_keys() {
        assert_eq!(
            parse_detach_keys("ctrl-p,ctrl-q").unwrap(),
            DEFAULT_DETACH_KEYS
        );
        assert_eq!(parse_detach_keys("ctrl-@,ctrl-[,a").unwrap(), [0, 27, b'a']);
        assert!(parse_detach_keys("ctrl-1").is_err());
        assert!(parse_detach_keys("alt-x").is_err());
    }
}
