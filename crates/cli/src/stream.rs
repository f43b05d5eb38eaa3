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

const CTRL_P: u8 = 0x10;
const CTRL_Q: u8 = 0x11;

/// Finds ctrl-p ctrl-q in typed input, across reads.
#[derive(Default)]
pub struct DetachKeys {
    pending_p: bool,
}

impl DetachKeys {
    /// The bytes to send for `input`, and whether the detach sequence was typed (bytes after
    /// it are dropped). A lone ctrl-p is held until the next byte shows it was not a detach.
    pub fn scan(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len() + 1);
        for &b in input {
            if self.pending_p {
                self.pending_p = false;
                if b == CTRL_Q {
                    return (out, true);
                }
                out.push(CTRL_P);
            }
            if b == CTRL_P {
                self.pending_p = true;
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// Runs an attached session: container output to our stdout/stderr (raw for a tty, demuxed
/// otherwise), and, with `stdin`, our stdin to the container (end of input half-closes the
/// connection). Returns when the output ends or the user detaches (tty only).
pub fn pump(conn: Conn, early: Vec<u8>, stdin: bool, tty: bool) -> io::Result<Outcome> {
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
        let _ = out_tx.send(res.map(|()| Outcome::Ended));
    });
    if stdin {
        let mut writer = conn;
        std::thread::spawn(move || {
            let mut keys = DetachKeys::default();
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
        let mut k = DetachKeys::default();
        assert_eq!(k.scan(b"ab\x10"), (b"ab".to_vec(), false));
        assert_eq!(k.scan(b"x"), (b"\x10x".to_vec(), false));
        assert_eq!(k.scan(b"y\x10"), (b"y".to_vec(), false));
        assert_eq!(k.scan(b"\x11zz"), (b"".to_vec(), true));
        let mut k = DetachKeys::default();
        assert_eq!(k.scan(b"\x10\x10\x11"), (b"\x10".to_vec(), true));
    }
}
