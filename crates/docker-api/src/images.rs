//! `/images/...`: list, inspect, remove, tag, import (`create?fromSrc=-`), load and save
//! (`get`). Registry pull (`create?fromImage=`) and push are in registry.rs.

use std::collections::BTreeMap;

use berth_engine::images::{tagged, ImageInfo, ImageRemoval};
use berth_engine::{timefmt, EngineError};
use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::body::{
    channel, fallible_channel, json_response, status_only, Body, BodyReader, BodyWriter,
};
use crate::error::{ApiError, ApiResult};
use crate::router::Ctx;

fn set_map(items: &[String]) -> Value {
    let m: BTreeMap<&str, Value> = items.iter().map(|i| (i.as_str(), json!({}))).collect();
    json!(m)
}

pub async fn list(ctx: Ctx) -> ApiResult<Response<Body>> {
    let images = ctx.api.engine.images().list()?;
    let filters = ctx.query.filters()?;
    let out: Vec<Value> = images
        .iter()
        .filter(|i| {
            filters.get("reference").is_none_or(|refs| {
                refs.is_empty()
                    || refs.iter().any(|r| {
                        i.repo_tags
                            .iter()
                            .any(|t| t == r || t.split(':').next() == Some(r.as_str()))
                    })
            })
        })
        .map(|i| {
            let mut v = json!({
                "Id": i.id,
                "ParentId": i.parent,
                "RepoTags": i.repo_tags,
                "RepoDigests": i.repo_digests,
                "Created": timefmt::unix_seconds(&i.created),
                "Size": i.size,
                "SharedSize": -1,
                "Labels": i.config.labels,
                "Containers": -1,
            });
            if ctx.version < (1, 44) {
                v["VirtualSize"] = json!(i.size);
            }
            v
        })
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(out)))
}

fn inspect_json(i: &ImageInfo) -> Value {
    let c = &i.config;
    json!({
        "Id": i.id,
        "RepoTags": i.repo_tags,
        "RepoDigests": i.repo_digests,
        "Parent": i.parent,
        "Comment": i.comment,
        "Created": i.created,
        "DockerVersion": "",
        "Author": i.author,
        "Config": {
            "Cmd": if c.cmd.is_empty() { Value::Null } else { json!(c.cmd) },
            "Entrypoint": if c.entrypoint.is_empty() { Value::Null } else { json!(c.entrypoint) },
            "Env": c.env,
            "WorkingDir": c.working_dir,
            "User": c.user,
            "Labels": c.labels,
            "Volumes": if c.volumes.is_empty() { Value::Null } else { set_map(&c.volumes) },
            "ExposedPorts": if c.exposed_ports.is_empty() { Value::Null } else { set_map(&c.exposed_ports) },
            "StopSignal": c.stop_signal,
        },
        "Architecture": i.architecture,
        "Os": i.os,
        "Size": i.size,
        "GraphDriver": {"Name": "overlay", "Data": {}},
        "RootFS": {"Type": "layers", "Layers": i.diff_ids},
        "Metadata": {"LastTagTime": timefmt::ZERO_TIME},
    })
}

pub async fn inspect(ctx: Ctx, name: &str) -> ApiResult<Response<Body>> {
    let img = ctx.api.engine.images().resolve(name)?;
    Ok(json_response(StatusCode::OK, &inspect_json(&img)))
}

pub async fn remove(ctx: Ctx, name: &str) -> ApiResult<Response<Body>> {
    let removed = ctx.api.engine.remove_image(name, ctx.query.bool("force"))?;
    let out: Vec<Value> = removed
        .into_iter()
        .map(|r| match r {
            ImageRemoval::Untagged(t) => json!({"Untagged": t}),
            ImageRemoval::Deleted(d) => json!({"Deleted": d}),
        })
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(out)))
}

pub async fn tag(ctx: Ctx, name: &str) -> ApiResult<Response<Body>> {
    let repo = ctx
        .query
        .get("repo")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("repo is required"))?;
    ctx.api.engine.tag_image(name, repo, ctx.query.get("tag"))?;
    Ok(status_only(StatusCode::CREATED))
}

/// Streams one JSON message, as Docker's progress streams carry them.
fn message(v: Value) -> Bytes {
    let mut b = serde_json::to_vec(&v).unwrap_or_default();
    b.extend_from_slice(b"\r\n");
    Bytes::from(b)
}

fn json_stream(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let mut resp = Response::new(channel(rx));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Runs a blocking image operation on the request body and streams its result.
async fn with_body<T: Send + 'static>(
    ctx: Ctx,
    op: impl FnOnce(BodyReader) -> Result<T, EngineError> + Send + 'static,
) -> ApiResult<T> {
    let reader = BodyReader::new(ctx.req.into_body());
    tokio::task::spawn_blocking(move || op(reader))
        .await
        .map_err(|e| ApiError::internal(format!("image task: {e}")))?
        .map_err(ApiError::from)
}

/// `POST /images/create?fromSrc=-`: import. The router sends `fromImage` to registry::pull.
pub async fn create(ctx: Ctx) -> ApiResult<Response<Body>> {
    match ctx.query.get("fromSrc") {
        Some("-") => {}
        Some(src) if !src.is_empty() => {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                format!("importing from {src:?} is not supported: send the tarball in the request body (fromSrc=-)"),
            ))
        }
        _ => return Err(ApiError::bad_request("either fromImage or fromSrc is required")),
    }
    let reference = ctx
        .query
        .get("repo")
        .filter(|r| !r.is_empty())
        .map(|repo| tagged(repo, ctx.query.get("tag")));
    let changes: Vec<String> = ctx
        .query
        .all("changes")
        .into_iter()
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    let msg = ctx
        .query
        .get("message")
        .filter(|m| !m.is_empty())
        .map(String::from);
    let engine = ctx.api.engine.clone();
    let img = with_body(ctx, move |r| {
        let opts = berth_image::ImportOptions {
            reference: reference.as_deref(),
            changes,
            message: msg,
        };
        engine.import_image(r, opts)
    })
    .await?;
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.send(message(json!({"status": img.id}))).await;
    Ok(json_stream(rx))
}

pub async fn load(ctx: Ctx) -> ApiResult<Response<Body>> {
    let engine = ctx.api.engine.clone();
    let loaded = with_body(ctx, move |r| engine.load_images(r)).await?;
    let (tx, rx) = mpsc::channel(loaded.len().max(1) * 2);
    for (id, refs) in loaded {
        if refs.is_empty() {
            let _ = tx
                .send(message(
                    json!({"stream": format!("Loaded image ID: {id}\n")}),
                ))
                .await;
        }
        for r in refs {
            let _ = tx
                .send(message(json!({"stream": format!("Loaded image: {r}\n")})))
                .await;
        }
    }
    Ok(json_stream(rx))
}

pub async fn save(ctx: Ctx, name: Option<String>) -> ApiResult<Response<Body>> {
    let mut names: Vec<String> = ctx
        .query
        .all("names")
        .into_iter()
        .map(String::from)
        .collect();
    names.extend(name);
    if names.is_empty() {
        return Err(ApiError::bad_request("no image names given"));
    }
    let engine = ctx.api.engine.clone();
    // Unknown names are a 404 before the archive starts.
    for n in &names {
        engine.images().resolve(n)?;
    }
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut out = BodyWriter::new(tx);
        if let Err(e) = engine.save_images(&refs, &mut out) {
            tracing::warn!(error = %e, "image save failed midway; cutting the response");
            out.fail(std::io::Error::other(e.to_string()));
        }
    });
    let mut resp = Response::new(fallible_channel(rx));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    Ok(resp)
}
