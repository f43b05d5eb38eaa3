//! berth-docker-api: the Docker Engine API over HTTP, on unix sockets, TCP and `fd://`.
//!
//! It translates: requests become calls on [`berth_engine::Engine`], results become Docker's
//! JSON (shapes from moby's api/swagger.yaml), errors become `{"message": ...}` with
//! Docker's status codes. It holds no state of its own. Attach is hijacked (`Upgrade: tcp`)
//! and carries Docker's raw or multiplexed stream.

// The `info` reply is one large json! literal.
#![recursion_limit = "256"]

mod archive;
mod attach;
mod body;
mod commit;
mod containers;
mod error;
mod events;
mod exec;
mod images;
pub mod listen;
mod ops;
mod query;
mod registry;
mod router;
mod system;
mod volumes;

use std::sync::Arc;

use berth_engine::Engine;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

pub use listen::{bind, ListenError, Listener};
pub use registry::set_insecure_registries;
pub use router::{API_VERSION, MIN_API_VERSION};

/// What the handlers share.
pub struct Api {
    pub engine: Engine,
    /// A stable id for `info` (Docker's daemon ID).
    pub daemon_id: String,
    pub debug: bool,
}

/// Serves the API on `listeners` until `shutdown` turns true; then stops accepting and
/// returns (connections in progress are dropped with the runtime).
pub async fn serve(api: Api, listeners: Vec<Listener>, mut shutdown: watch::Receiver<bool>) {
    let api = Arc::new(api);
    let mut tasks = Vec::new();
    for l in listeners {
        let api = api.clone();
        let mut stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped(&mut stop) => break,
                    conn = accept(&l) => match conn {
                        Ok(io) => spawn_connection(api.clone(), io),
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    },
                }
            }
        }));
    }
    stopped(&mut shutdown).await;
    for t in tasks {
        let _ = t.await;
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    // Map the guard away here: it must not live across the caller's awaits.
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn accept(l: &Listener) -> std::io::Result<Conn> {
    match l {
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
        Listener::Tcp(l) => l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            Conn::Tcp(s)
        }),
    }
}

fn spawn_connection(api: Arc<Api>, conn: Conn) {
    tokio::spawn(async move {
        let svc = service_fn(move |req| {
            let api = api.clone();
            async move { Ok::<_, std::convert::Infallible>(router::handle(api, req).await) }
        });
        let builder = hyper::server::conn::http1::Builder::new();
        let res = match conn {
            Conn::Unix(s) => {
                builder
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await
            }
            Conn::Tcp(s) => {
                builder
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await
            }
        };
        if let Err(e) = res {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}
