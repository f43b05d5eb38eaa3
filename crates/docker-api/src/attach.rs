//! `POST /containers/{id}/attach`: the connection is hijacked (`Upgrade: tcp` → 101) and
//! carries the container's output (raw for a tty, multiplexed frames otherwise) one way and
//! its stdin the other. Without the upgrade headers, output comes as a streamed body.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_engine::logs::{Filter, Stream};
use berth_engine::Engine;
use bytes::Bytes;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::body::{channel, empty, Body};
use crate::containers::mux_frame;
use crate::error::ApiResult;
use crate::router::Ctx;

pub async fn attach(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let engine = ctx.api.engine.clone();
    let rec = engine.inspect(id)?.record;
    let q = &ctx.query;
    let (want_in, want_out, want_err) = (q.bool("stdin"), q.bool("stdout"), q.bool("stderr"));
    let (stream, logs) = (q.bool("stream"), q.bool("logs"));
    let tty = rec.config.tty;
    let id = rec.id.clone();

    // Subscribe before answering, so that nothing the container prints after the client's
    // start is missed.
    let output = if stream {
        Some(engine.attach(&id)?)
    } else {
        None
    };
    let replay = if logs {
        let f = Filter {
            stdout: want_out,
            stderr: want_err,
            ..Default::default()
        };
        Some(engine.logs(&id, f, false)?)
    } else {
        None
    };
    let wanted = move |s: Stream| match s {
        Stream::Stdout => want_out,
        Stream::Stderr => want_err,
    };
    let encode = move |s: Stream, data: &[u8]| {
        if tty {
            Bytes::copy_from_slice(data)
        } else {
            mux_frame(s, data)
        }
    };
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };

    // The chunks to send, in order: the log replay, then live output.
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        if let Some(mut entries) = replay {
            while let Some(e) = entries.recv().await {
                if tx.send(encode(e.stream, e.log.as_bytes())).await.is_err() {
                    return;
                }
            }
        }
        if let Some(mut out) = output {
            while let Some(o) = out.recv().await {
                if wanted(o.stream) && tx.send(encode(o.stream, &o.data)).await.is_err() {
                    return;
                }
            }
        }
    });

    let stdin = (want_in && rec.config.open_stdin).then(|| StdinTarget::Container {
        id: id.clone(),
        close_on_eof: rec.config.stdin_once,
    });
    Ok(stream_response(ctx.req, content_type, rx, engine, stdin))
}

/// Where a hijacked connection's input goes.
pub(crate) enum StdinTarget {
    /// A container's stdin; closed when the client's input ends if `close_on_eof`
    /// (the container's StdinOnce).
    Container { id: String, close_on_eof: bool },
    /// An exec's stdin, closed when the client's input ends.
    Exec(String),
}

impl StdinTarget {
    async fn write(&self, engine: &Engine, data: Vec<u8>) -> bool {
        match self {
            StdinTarget::Container { id, .. } => engine.write_stdin(id, data).await.is_ok(),
            StdinTarget::Exec(id) => engine.exec_write_stdin(id, data).await.is_ok(),
        }
    }

    async fn end(&self, engine: &Engine) {
        match self {
            StdinTarget::Container {
                id,
                close_on_eof: true,
            } => {
                let _ = engine.close_stdin(id).await;
            }
            StdinTarget::Container { .. } => {}
            StdinTarget::Exec(id) => {
                let _ = engine.exec_close_stdin(id).await;
            }
        }
    }
}

/// Answers with the chunks of `rx`: over the hijacked connection when the client asked for
/// the upgrade (`Upgrade: tcp` → 101), with its input going to `stdin`; otherwise as a
/// streamed body.
pub(crate) fn stream_response<B>(
    req: Request<B>,
    content_type: &'static str,
    mut rx: mpsc::Receiver<Bytes>,
    engine: Engine,
    stdin: Option<StdinTarget>,
) -> Response<Body> {
    let upgrade = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("tcp"));
    if !upgrade {
        let mut resp = Response::new(channel(rx));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        return resp;
    }
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let (rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
        let output_over = Arc::new(AtomicBool::new(false));
        let mut input = tokio::spawn(read_input(rd, stdin, engine, output_over.clone()));
        while let Some(chunk) = rx.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        // The output is over (the process ended and what it wrote is sent). End it with a
        // half-close, so that the client reads EOF, and take what the client still sends
        // until it closes its side: closing a socket with unread input resets the
        // connection, and the client would see "connection reset" instead of the end of the
        // stream. dockerd likewise only half-closes a hijacked connection (CloseWrite).
        output_over.store(true, Ordering::Relaxed);
        let _ = wr.shutdown().await;
        if tokio::time::timeout(DRAIN_TIME, &mut input).await.is_err() {
            input.abort();
        }
    });

    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("tcp"));
    resp
}

/// How long, and how much, a hijacked connection's input is still read (and dropped) after
/// its output ended, waiting for the client to close its side. Bounded, so that a client
/// that never stops cannot hold the connection.
const DRAIN_TIME: Duration = Duration::from_secs(10);
const DRAIN_BYTES: usize = 64 << 20;

/// Reads the client's side of a hijacked connection: to `stdin` while the output lasts and
/// the target takes it, then into the void (up to [`DRAIN_BYTES`]) until the client closes.
async fn read_input<R: AsyncRead + Unpin>(
    mut rd: R,
    stdin: Option<StdinTarget>,
    engine: Engine,
    output_over: Arc<AtomicBool>,
) {
    let mut target = stdin;
    let mut dropped = 0usize;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if output_over.load(Ordering::Relaxed) {
            target = None;
        }
        if let Some(t) = &target {
            if t.write(&engine, buf[..n].to_vec()).await {
                continue;
            }
            // The process no longer takes input (it ended or closed its stdin).
            target = None;
        }
        dropped += n;
        if dropped > DRAIN_BYTES {
            return;
        }
    }
    // The client's input ended: pass that on (an exec's stdin, or a StdinOnce container's)
    // unless the process is gone.
    if let Some(t) = target.filter(|_| !output_over.load(Ordering::Relaxed)) {
        t.end(&engine).await;
    }
}
