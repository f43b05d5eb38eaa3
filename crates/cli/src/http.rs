//! A small blocking HTTP/1.1 client for the Docker Engine API over a unix socket or TCP.
//!
//! Why not hyper: the CLI makes one request at a time and exits; a blocking socket per
//! request needs no runtime, starts in microseconds (the `berth run` path is timed against
//! crun), and the hijacked attach stream is then just the socket, split between two threads.
//! Each request uses its own connection (`Connection: close`).

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Unix(String),
    Tcp(String),
}

impl Host {
    /// `unix:///run/berth.sock`, `/run/berth.sock`, `tcp://127.0.0.1:2375`.
    pub fn parse(s: &str) -> Result<Host, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            return Ok(Host::Unix(path.to_string()));
        }
        if let Some(addr) = s
            .strip_prefix("tcp://")
            .or_else(|| s.strip_prefix("http://"))
        {
            return Ok(Host::Tcp(addr.trim_end_matches('/').to_string()));
        }
        if s.starts_with('/') {
            return Ok(Host::Unix(s.to_string()));
        }
        Err(format!(
            "invalid host {s:?}: use unix:///PATH or tcp://HOST:PORT (set with -H or BERTH_HOST)"
        ))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Unix(p) => write!(f, "unix://{p}"),
            Host::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// One connection to the daemon.
#[derive(Debug)]
pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    pub fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
        })
    }

    /// Half-close: the daemon sees end of input (the container's stdin gets EOF).
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.shutdown(Shutdown::Write),
            Conn::Tcp(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect to the berth daemon at {host}: {cause}. Is `berth daemon` running? (set the address with -H or BERTH_HOST)")]
    Connect { host: Host, cause: io::Error },
    #[error("error talking to the daemon at {host}: {cause}")]
    Io { host: Host, cause: io::Error },
    #[error("bad response from the daemon: {0}")]
    Protocol(String),
    /// The daemon's own error: status and its `message`.
    #[error("Error response from daemon: {message}")]
    Api { status: u16, message: String },
}

/// A request body.
pub enum Body<'a> {
    Empty,
    Json(serde_json::Value),
    /// Sent with chunked transfer encoding (stdin, tarballs).
    Stream(&'a mut dyn Read, &'a str),
}

/// The daemon's response: its status and a reader over the (de-chunked) body.
pub struct Response {
    pub status: u16,
    body: BodyReader,
}

enum BodyReader {
    Length(io::Take<BufReader<Conn>>),
    Chunked {
        conn: BufReader<Conn>,
        left: u64,
        done: bool,
    },
    ToEnd(BufReader<Conn>),
}

impl Response {
    pub fn bytes(mut self) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.read_to_end(&mut v)?;
        Ok(v)
    }

    pub fn json(self) -> Result<serde_json::Value, HttpError> {
        let bytes = self
            .bytes()
            .map_err(|e| HttpError::Protocol(e.to_string()))?;
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| HttpError::Protocol(format!("invalid JSON: {e}")))
    }

    /// The raw connection after a `101 Switching Protocols` (or a 200 without upgrade), with
    /// whatever the reader had already buffered.
    pub fn into_stream(self) -> (Conn, Vec<u8>) {
        let reader = match self.body {
            BodyReader::Length(t) => t.into_inner(),
            BodyReader::Chunked { conn, .. } | BodyReader::ToEnd(conn) => conn,
        };
        let buffered = reader.buffer().to_vec();
        (reader.into_inner(), buffered)
    }
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.body {
            BodyReader::Length(r) => r.read(buf),
            BodyReader::ToEnd(r) => r.read(buf),
            BodyReader::Chunked { conn, left, done } => {
                if *done {
                    return Ok(0);
                }
                if *left == 0 {
                    let mut line = String::new();
                    conn.read_line(&mut line)?;
                    let size = line.trim().split(';').next().unwrap_or("");
                    *left = u64::from_str_radix(size, 16).map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("bad chunk size {line:?}"),
                        )
                    })?;
                    if *left == 0 {
                        // Trailers end with an empty line.
                        loop {
                            line.clear();
                            if conn.read_line(&mut line)? == 0 || line.trim().is_empty() {
                                break;
                            }
                        }
                        *done = true;
                        return Ok(0);
                    }
                }
                let n = buf.len().min(*left as usize);
                let got = conn.read(&mut buf[..n])?;
                if got == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                *left -= got as u64;
                if *left == 0 {
                    let mut crlf = String::new();
                    conn.read_line(&mut crlf)?;
                }
                Ok(got)
            }
        }
    }
}

/// The client: a host and the API version prefix for paths.
#[derive(Debug, Clone)]
pub struct Client {
    pub host: Host,
}

impl Client {
    pub fn new(host: Host) -> Client {
        Client { host }
    }

    fn connect(&self) -> Result<Conn, HttpError> {
        let conn = match &self.host {
            Host::Unix(p) => UnixStream::connect(p).map(Conn::Unix),
            Host::Tcp(a) => TcpStream::connect(a).map(Conn::Tcp),
        };
        conn.map_err(|cause| HttpError::Connect {
            host: self.host.clone(),
            cause,
        })
    }

    fn io(&self, cause: io::Error) -> HttpError {
        HttpError::Io {
            host: self.host.clone(),
            cause,
        }
    }

    /// Sends a request and reads the status line and headers. The path includes the query.
    /// Error statuses are returned as a `Response` too; see [`Client::call`].
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Body,
        extra: &[(&str, &str)],
    ) -> Result<Response, HttpError> {
        let mut conn = self.connect()?;
        let host = match &self.host {
            Host::Unix(_) => "berth",
            Host::Tcp(a) => a.as_str(),
        };
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: berth/{}\r\n",
            env!("CARGO_PKG_VERSION")
        );
        let upgrade = extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("Upgrade"));
        if !upgrade {
            head.push_str("Connection: close\r\n");
        }
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        match body {
            Body::Empty => {
                if method == "POST" {
                    head.push_str("Content-Length: 0\r\n");
                }
                head.push_str("\r\n");
                conn.write_all(head.as_bytes()).map_err(|e| self.io(e))?;
            }
            Body::Json(v) => {
                let bytes = serde_json::to_vec(&v).expect("JSON value serializes");
                head.push_str(&format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    bytes.len()
                ));
                conn.write_all(head.as_bytes()).map_err(|e| self.io(e))?;
                conn.write_all(&bytes).map_err(|e| self.io(e))?;
            }
            Body::Stream(r, content_type) => {
                head.push_str(&format!(
                    "Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
                ));
                conn.write_all(head.as_bytes()).map_err(|e| self.io(e))?;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = r.read(&mut buf).map_err(|e| self.io(e))?;
                    if n == 0 {
                        break;
                    }
                    conn.write_all(format!("{n:x}\r\n").as_bytes())
                        .map_err(|e| self.io(e))?;
                    conn.write_all(&buf[..n]).map_err(|e| self.io(e))?;
                    conn.write_all(b"\r\n").map_err(|e| self.io(e))?;
                }
                conn.write_all(b"0\r\n\r\n").map_err(|e| self.io(e))?;
            }
        }
        self.read_head(conn, method == "HEAD")
    }

    fn read_head(&self, conn: Conn, head_only: bool) -> Result<Response, HttpError> {
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| self.io(e))?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .filter(|_| line.starts_with("HTTP/1."))
            .ok_or_else(|| HttpError::Protocol(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(|e| self.io(e))? == 0 {
                return Err(HttpError::Protocol(
                    "connection closed in the headers".into(),
                ));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l
                .split_once(':')
                .ok_or_else(|| HttpError::Protocol(format!("bad header {l:?}")))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let body = if head_only || status == 204 || status == 304 {
            BodyReader::Length(reader.take(0))
        } else if status == 101 {
            BodyReader::ToEnd(reader)
        } else if get("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            BodyReader::Chunked {
                conn: reader,
                left: 0,
                done: false,
            }
        } else if let Some(len) = get("Content-Length").and_then(|v| v.parse().ok()) {
            BodyReader::Length(reader.take(len))
        } else {
            BodyReader::ToEnd(reader)
        };
        Ok(Response { status, body })
    }

    /// [`Client::send`], turning 4xx/5xx into [`HttpError::Api`] with the daemon's message.
    pub fn call(&self, method: &str, path: &str, body: Body) -> Result<Response, HttpError> {
        let resp = self.send(method, path, body, &[])?;
        check(resp)
    }

    pub fn get_json(&self, path: &str) -> Result<serde_json::Value, HttpError> {
        self.call("GET", path, Body::Empty)?.json()
    }

    pub fn post_json(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, HttpError> {
        self.call("POST", path, body.map_or(Body::Empty, Body::Json))?
            .json()
    }

    /// Opens a hijacked stream (`Upgrade: tcp`, answered by 101; a plain 200 also works)
    /// with a POST of `body` (exec start takes one; attach none).
    pub fn hijack(&self, path: &str, body: Body) -> Result<(Conn, Vec<u8>), HttpError> {
        let resp = self.send(
            "POST",
            path,
            body,
            &[("Connection", "Upgrade"), ("Upgrade", "tcp")],
        )?;
        let resp = check(resp)?;
        Ok(resp.into_stream())
    }
}

/// Error statuses as [`HttpError::Api`], with the `message` of Docker's JSON error body.
pub fn check(resp: Response) -> Result<Response, HttpError> {
    if resp.status < 400 {
        return Ok(resp);
    }
    let status = resp.status;
    let bytes = resp.bytes().unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
    Err(HttpError::Api { status, message })
}

/// Everything but RFC 3986's unreserved characters.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// As [`QUERY`], keeping `:`, `/` and `@` as Go's URL paths do for the docker CLI.
const PATH: &AsciiSet = &QUERY.remove(b':').remove(b'/').remove(b'@');

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, QUERY).to_string()
}

/// Percent-encodes a path part (an image or container name): `:`, `/` and `@` stay as they
/// are (`localhost:5000/x:v1`).
pub fn enc_path(s: &str) -> String {
    utf8_percent_encode(s, PATH).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn parses_hosts() {
        assert_eq!(
            Host::parse("unix:///run/berth.sock"),
            Ok(Host::Unix("/run/berth.sock".into()))
        );
        assert_eq!(
            Host::parse("tcp://1.2.3.4:2375"),
            Ok(Host::Tcp("1.2.3.4:2375".into()))
        );
        assert!(Host::parse("ssh://x").is_err());
        assert_eq!(enc("a b/c:d"), "a%20b%2Fc%3Ad");
        assert_eq!(
            enc_path("localhost:5000/x:v1 ?"),
            "localhost:5000/x:v1%20%3F"
        );
    }

    /// A one-shot server that answers `reply` and hands back what it received.
    fn serve(
        reply: &'static [u8],
    ) -> (Client, std::thread::JoinHandle<Vec<u8>>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the request head (and a short body) before answering.
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(reply).unwrap();
            got
        });
        (
            Client::new(Host::Unix(sock.to_str().unwrap().into())),
            t,
            dir,
        )
    }

    #[test]
    fn reads_chunked_json() {
        let (c, t, _d) = serve(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n\r\n",
        );
        assert_eq!(c.get_json("/x").unwrap(), serde_json::json!({"a": 1}));
        let req = String::from_utf8(t.join().unwrap()).unwrap();
        assert!(req.starts_with("GET /x HTTP/1.1\r\n"), "{req}");
    }

    #[test]
    fn api_errors_carry_the_message() {
        let (c, _t, _d) = serve(b"HTTP/1.1 404 Not Found\r\nContent-Length: 34\r\n\r\n{\"message\":\"No such image: nope\"}\n");
        let e = c.post_json("/images/nope/tag", None).unwrap_err();
        assert!(matches!(e, HttpError::Api { status: 404, .. }));
        assert_eq!(
            e.to_string(),
            "Error response from daemon: No such image: nope"
        );
    }

    #[test]
    fn hijack_keeps_bytes_read_past_the_headers() {
        let (c, _t, _d) =
            serve(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\nhello");
        let (mut conn, early) = c
            .hijack("/containers/x/attach?stream=1", Body::Empty)
            .unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        assert_eq!([early, rest].concat(), b"hello");
    }
}
