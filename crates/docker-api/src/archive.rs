//! A container's files: the archive API (`docker cp`: HEAD, GET and PUT
//! `/containers/{id}/archive`), `export`, `changes` (`docker diff`) and `POST /commit`.
//! The engine does the work (berth_engine::archive); this translates.

use base64::Engine as _;
use berth_engine::archive::PathStat;
use berth_engine::commit::CommitRequest;
use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::body::{empty, fallible_channel, json_response, Body, BodyReader, BodyWriter};
use crate::error::{ApiError, ApiResult};
use crate::router::Ctx;

const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

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

fn join_error(e: tokio::task::JoinError) -> ApiError {
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
    let reader = BodyReader::new(ctx.req.into_body());
    tokio::task::spawn_blocking(move || engine.archive_put(&id, &path, reader, copy_ids))
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

/// `GET /containers/{id}/changes`.
pub async fn changes(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let engine = ctx.api.engine.clone();
    let id = id.to_string();
    let changes = tokio::task::spawn_blocking(move || engine.changes(&id))
        .await
        .map_err(join_error)??;
    let out: Vec<_> = changes
        .iter()
        .map(|c| json!({"Path": c.path, "Kind": c.kind}))
        .collect();
    Ok(json_response(StatusCode::OK, &json!(out)))
}

/// `POST /commit?container=&repo=&tag=&comment=&author=&changes=`.
pub async fn commit(ctx: Ctx) -> ApiResult<Response<Body>> {
    let q = &ctx.query;
    let container = match q.get("container") {
        Some(c) if !c.is_empty() => c.to_string(),
        _ => {
            return Err(ApiError::bad_request(
                "the container query parameter is required",
            ))
        }
    };
    let repo = q.get("repo").unwrap_or("");
    let tag = q.get("tag").unwrap_or("");
    let reference = match (repo.is_empty(), tag.is_empty()) {
        (true, true) => None,
        (true, false) => return Err(ApiError::bad_request("a tag needs a repository")),
        (false, true) => Some(repo.to_string()),
        (false, false) => Some(format!("{repo}:{tag}")),
    };
    let non_empty = |k: &str| q.get(k).filter(|v| !v.is_empty()).map(String::from);
    let req = CommitRequest {
        container,
        reference,
        comment: non_empty("comment"),
        author: non_empty("author"),
        changes: q
            .all("changes")
            .into_iter()
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect(),
    };
    let engine = ctx.api.engine.clone();
    let id = tokio::task::spawn_blocking(move || engine.commit(&req))
        .await
        .map_err(join_error)??;
    Ok(json_response(StatusCode::CREATED, &json!({ "Id": id })))
}
