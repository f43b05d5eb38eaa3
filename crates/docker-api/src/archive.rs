//! A container's files: the archive API (`docker cp`: HEAD, GET and PUT
//! `/containers/{id}/archive`) and `export`.
//! The engine does the work (berth_engine::archive); this translates.

use std::io::Read as _;

use base64::Engine as _;
use berth_engine::archive::PathStat;
use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;
use tokio::sync::{mpsc, oneshot};

use crate::body::{empty, fallible_channel, Body, BodyReader, BodyWriter};
use crate::error::{ApiError, ApiResult};
use crate::router::Ctx;

const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

/// How much of a refused PUT's body is read before answering.
const DRAIN_LIMIT: u64 = 64 << 20;

fn path_param(ctx: &Ctx) -> ApiResult<String> {
    match ctx.query.get("path") {
        Some(p) if !p.is_empty() => Ok(p.to_string()),
        _ => Err(ApiError::bad_request(
            "the path query parameter is required",
        )),
    }
}

fn stat_header(stat: &PathStat) -> ApiResult<HeaderValue> {
    let json = serde_json::to_vec(stat).map_err(|e| ApiError::internal(e.to_string()))?;
    HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(json))
        .map_err(|e| ApiError::internal(e.to_string()))
}

pub(crate) fn join_error(e: tokio::task::JoinError) -> ApiError {
    ApiError::internal(format!("archive task: {e}"))
}

/// `HEAD /containers/{id}/archive?path=`.
pub async fn head(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let path = path_param(&ctx)?;
    let engine = ctx.api.engine.clone();
    let id = id.to_string();
    let stat = tokio::task::spawn_blocking(move || engine.archive_stat(&id, &path))
        .await
        .map_err(join_error)??;
    let mut resp = Response::new(empty());
    resp.headers_mut().insert(STAT_HEADER, stat_header(&stat)?);
    Ok(resp)
}

/// `GET /containers/{id}/archive?path=`: the tar streams while it is made.
pub async fn get(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let path = path_param(&ctx)?;
    let engine = ctx.api.engine.clone();
    let id = id.to_string();
    let (stat_tx, stat_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    let task = tokio::task::spawn_blocking(move || {
        let mut out = BodyWriter::new(tx);
        let res = engine.archive_get(&id, &path, &mut out, |st| {
            let _ = stat_tx.send(st.clone());
        });
        if let Err(e) = &res {
            out.fail(std::io::Error::other(e.to_string()));
        }
        res
    });
    // The stat comes before the first byte; without it the error is the answer.
    let stat = match stat_rx.await {
        Ok(s) => s,
        Err(_) => {
            task.await.map_err(join_error)??;
            return Err(ApiError::internal(
                "archive ended before its path was found",
            ));
        }
    };
    tokio::spawn(async move {
        if let Ok(Err(e)) = task.await {
            tracing::warn!(error = %e, "archive failed midway; cutting the response");
        }
    });
    let mut resp = Response::new(fallible_channel(rx));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    h.insert(STAT_HEADER, stat_header(&stat)?);
    Ok(resp)
}

/// `PUT /containers/{id}/archive?path=&copyUIDGID=`: extracts the request's tar.
pub async fn put(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let path = path_param(&ctx)?;
    let copy_ids = ctx.query.bool("copyUIDGID");
    let engine = ctx.api.engine.clone();
    let id = id.to_string();
    let mut reader = BodyReader::new(ctx.req.into_body());
    tokio::task::spawn_blocking(move || {
        let res = engine.archive_put(&id, &path, &mut reader, copy_ids);
        if res.is_err() {
            // The client is still sending its tar: read the rest (bounded) so that it gets
            // our answer, not a connection reset by closing on unread data.
            let _ = std::io::copy(&mut (&mut reader).take(DRAIN_LIMIT), &mut std::io::sink());
        }
        res
    })
    .await
    .map_err(join_error)??;
    Ok(Response::new(empty()))
}

/// `GET /containers/{id}/export`.
pub async fn export(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let engine = ctx.api.engine.clone();
    let id = id.to_string();
    // Fails early (404) for an unknown container, before the stream starts.
    engine.inspect(&id)?;
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let mut out = BodyWriter::new(tx);
        if let Err(e) = engine.export(&id, &mut out) {
            tracing::warn!(error = %e, "export failed midway; cutting the response");
            out.fail(std::io::Error::other(e.to_string()));
        }
    });
    let mut resp = Response::new(fallible_channel(rx));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    Ok(resp)
}
