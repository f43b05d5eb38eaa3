//! Response bodies: whole, or streamed from a channel (wait, logs, import progress, save),
//! and request bodies read as JSON or as a blocking `Read` for image archives.

use std::convert::Infallible;
use std::io::{Read, Write};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A body whose chunks come from `rx`, sent as they arrive.
pub fn channel(rx: mpsc::Receiver<Bytes>) -> Body {
    let stream = tokio_stream(rx).map(|b| Ok::<_, std::io::Error>(Frame::data(b)));
    BodyExt::boxed(StreamBody::new(stream))
}

/// Like [`channel`], but an error item aborts the response (the connection is cut), so a
/// client never mistakes a truncated stream for a whole one.
pub fn fallible_channel(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> Body {
    let stream = tokio_stream(rx).map(|b| b.map(Frame::data));
    BodyExt::boxed(StreamBody::new(stream))
}

fn tokio_stream<T>(rx: mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}

pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub fn status_only(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = status;
    resp
}

/// Largest JSON request body accepted (a container config is a few KiB).
const MAX_JSON: usize = 4 << 20;

/// Reads the request body as JSON of type `T`; an empty body is `T::default()` where given.
pub async fn read_json<T: DeserializeOwned>(body: Incoming, empty_ok: Option<T>) -> ApiResult<T> {
    let limited = http_body_util::Limited::new(body, MAX_JSON);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?
        .to_bytes();
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        if let Some(v) = empty_ok {
            return Ok(v);
        }
        return Err(ApiError::bad_request(
            "invalid JSON: the request body is empty",
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

/// A blocking reader over a request body, for the image crate's `Read`-based import and
/// load; a task feeds it from the async body.
pub struct BodyReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    cur: Bytes,
}

impl BodyReader {
    pub fn new(mut body: Incoming) -> BodyReader {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(frame) = body.frame().await {
                let msg = match frame {
                    Ok(f) => match f.into_data() {
                        Ok(d) => Ok(d),
                        Err(_) => continue,
                    },
                    Err(e) => Err(e.to_string()),
                };
                let stop = msg.is_err();
                if tx.send(msg).await.is_err() || stop {
                    break;
                }
            }
        });
        BodyReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// A blocking writer whose bytes become a streamed response body (for `save`).
pub struct BodyWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl BodyWriter {
    pub fn new(tx: mpsc::Sender<std::io::Result<Bytes>>) -> BodyWriter {
        BodyWriter {
            tx,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    /// Ends the body with an error: the client sees the connection cut.
    pub fn fail(mut self, e: std::io::Error) {
        self.buf.clear();
        let _ = self.tx.blocking_send(Err(e));
    }
}

impl Write for BodyWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = Bytes::from(std::mem::take(&mut self.buf));
            self.tx.blocking_send(Ok(chunk)).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away")
            })?;
        }
        Ok(())
    }
}

impl Drop for BodyWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}
