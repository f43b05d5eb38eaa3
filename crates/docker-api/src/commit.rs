//! A container's read-write layer: `GET /containers/{id}/changes` (`docker diff`) and
//! `POST /commit`. The engine does the work (berth_engine::commit); this translates.

use berth_engine::commit::CommitRequest;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::archive::join_error;
use crate::body::{json_response, read_json, Body};
use crate::error::{ApiError, ApiResult};
use crate::router::Ctx;

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

/// `POST /commit?container=&repo=&tag=&comment=&author=&changes=&pause=`, with an optional
/// container config as the body.
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
    // Docker's rule (API 1.13 on): pause unless `pause` says otherwise.
    let pause = match q.get("pause").map(|v| v.trim().to_ascii_lowercase()) {
        None => true,
        Some(v) => !matches!(v.as_str(), "" | "0" | "no" | "false" | "none"),
    };
    let mut req = CommitRequest {
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
        pause,
        config: None,
    };
    let engine = ctx.api.engine.clone();
    let body: Value = read_json(ctx.req.into_body(), Some(Value::Null)).await?;
    req.config = (!body.is_null()).then_some(body);
    let id = engine.commit(req).await?;
    Ok(json_response(StatusCode::CREATED, &json!({ "Id": id })))
}
