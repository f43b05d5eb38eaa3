//! Request routing: the optional `/vX.Y` prefix, then method and path to a handler.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};

use crate::body::{json_response, Body};
use crate::error::{ApiError, ApiResult};
use crate::query::Query;
use crate::{
    archive, attach, commit, containers, events, exec, images, ops, registry, system, volumes, Api,
};

/// The API version berth speaks, and the oldest it accepts.
pub const API_VERSION: (u32, u32) = (1, 47);
pub const MIN_API_VERSION: (u32, u32) = (1, 24);

pub fn version_string(v: (u32, u32)) -> String {
    format!("{}.{}", v.0, v.1)
}

/// Splits `/v1.47/containers/json` into the version and the rest; no prefix means the
/// current version.
pub fn split_version(path: &str) -> ApiResult<((u32, u32), &str)> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok((API_VERSION, path));
    };
    let (ver, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let parsed = ver
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    let Some(v) = parsed else {
        // Not a version (e.g. a path that starts with /v): let routing answer 404.
        return Ok((API_VERSION, path));
    };
    if v > API_VERSION {
        return Err(ApiError::bad_request(format!(
            "client version {ver} is too new. Maximum supported API version is {}",
            version_string(API_VERSION)
        )));
    }
    if v < MIN_API_VERSION {
        return Err(ApiError::bad_request(format!(
            "client version {ver} is too old. Minimum supported API version is {}, please upgrade your client to a newer version",
            version_string(MIN_API_VERSION)
        )));
    }
    Ok((v, tail))
}

/// Everything a handler gets.
pub struct Ctx {
    pub api: Arc<Api>,
    pub version: (u32, u32),
    pub query: Query,
    pub req: Request<Incoming>,
}

pub async fn handle(api: Arc<Api>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    tracing::debug!(%method, %path, "request");
    let mut resp = match route(api, req).await {
        Ok(r) => r,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(%method, %path, status = %e.status, error = %e.message, "request failed");
            } else {
                tracing::debug!(%method, %path, status = %e.status, error = %e.message, "request refused");
            }
            if e.status == StatusCode::NOT_MODIFIED {
                crate::body::status_only(StatusCode::NOT_MODIFIED)
            } else {
                json_response(e.status, &serde_json::json!({ "message": e.message }))
            }
        }
    };
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static("1.47"));
    h.insert(
        "Server",
        HeaderValue::from_static(concat!("berth/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    resp
}

async fn route(api: Arc<Api>, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let full_path = req.uri().path().to_string();
    let (version, path) = split_version(&full_path)?;
    let path = path.to_string();
    let method = req.method().clone();
    let query = Query::parse(req.uri().query());
    let ctx = Ctx {
        api,
        version,
        query,
        req,
    };
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();

    use Method as M;
    match (&method, segs.as_slice()) {
        (&M::GET | &M::HEAD, ["_ping"]) => Ok(system::ping(&method)),
        (&M::GET, ["version"]) => system::version(ctx).await,
        (&M::GET, ["info"]) => system::info(ctx).await,
        (&M::GET, ["events"]) => events::events(ctx).await,

        (&M::POST, ["containers", "create"]) => containers::create(ctx).await,
        (&M::GET, ["containers", "json"]) => containers::list(ctx).await,
        (&M::GET, ["containers", id, "json"]) => containers::inspect(ctx, id).await,
        (&M::POST, ["containers", id, "start"]) => containers::start(ctx, id).await,
        (&M::POST, ["containers", id, "stop"]) => containers::stop(ctx, id).await,
        (&M::POST, ["containers", id, "restart"]) => containers::restart(ctx, id).await,
        (&M::POST, ["containers", id, "kill"]) => containers::kill(ctx, id).await,
        (&M::POST, ["containers", id, "wait"]) => containers::wait(ctx, id).await,
        (&M::POST, ["containers", id, "resize"]) => containers::resize(ctx, id).await,
        (&M::DELETE, ["containers", id]) => containers::remove(ctx, id).await,
        (&M::GET, ["containers", id, "logs"]) => containers::logs(ctx, id).await,
        (&M::POST, ["containers", id, "attach"]) => attach::attach(ctx, id).await,
        (&M::HEAD, ["containers", id, "archive"]) => archive::head(ctx, id).await,
        (&M::GET, ["containers", id, "archive"]) => archive::get(ctx, id).await,
        (&M::PUT, ["containers", id, "archive"]) => archive::put(ctx, id).await,
        (&M::GET, ["containers", id, "export"]) => archive::export(ctx, id).await,
        (&M::GET, ["containers", id, "changes"]) => commit::changes(ctx, id).await,
        (&M::POST, ["commit"]) => commit::commit(ctx).await,
        (&M::GET, ["containers", id, "top"]) => ops::top(ctx, id).await,
        (&M::GET, ["containers", id, "stats"]) => ops::stats(ctx, id).await,
        (&M::POST, ["containers", id, "rename"]) => ops::rename(ctx, id).await,
        (&M::POST, ["containers", id, "pause"]) => ops::pause(ctx, id).await,
        (&M::POST, ["containers", id, "unpause"]) => ops::unpause(ctx, id).await,
        (&M::POST, ["containers", id, "update"]) => ops::update(ctx, id).await,
        (&M::POST, ["containers", id, "exec"]) => exec::create(ctx, id).await,
        (&M::POST, ["exec", id, "start"]) => exec::start(ctx, id).await,
        (&M::POST, ["exec", id, "resize"]) => exec::resize(ctx, id).await,
        (&M::GET, ["exec", id, "json"]) => exec::inspect(ctx, id).await,

        (&M::GET, ["images", "json"]) => images::list(ctx).await,
        (&M::POST, ["images", "create"]) => match ctx.query.get("fromImage") {
            Some(from) if !from.is_empty() => {
                let from = from.to_string();
                registry::pull(ctx, &from).await
            }
            _ => images::create(ctx).await,
        },
        (&M::POST, ["images", .., "push"]) if segs.len() > 2 => {
            registry::push(ctx, &segs[1..segs.len() - 1].join("/")).await
        }
        (&M::POST, ["auth"]) => registry::auth(ctx).await,
        (&M::POST, ["images", "load"]) => images::load(ctx).await,
        (&M::GET, ["images", "get"]) => images::save(ctx, None).await,
        // Image names may hold slashes and colons: match on the ends of the path.
        (&M::GET, ["images", .., "json"]) => {
            images::inspect(ctx, &segs[1..segs.len() - 1].join("/")).await
        }
        (&M::GET, ["images", .., "get"]) => {
            let name = segs[1..segs.len() - 1].join("/");
            images::save(ctx, Some(name)).await
        }
        (&M::POST, ["images", .., "tag"]) => {
            images::tag(ctx, &segs[1..segs.len() - 1].join("/")).await
        }
        (&M::DELETE, ["images", ..]) if segs.len() > 1 => {
            images::remove(ctx, &segs[1..].join("/")).await
        }

        (&M::POST, ["volumes", "create"]) => volumes::create(ctx).await,
        (&M::POST, ["volumes", "prune"]) => volumes::prune(ctx).await,
        (&M::GET, ["volumes"]) => volumes::list(ctx).await,
        (&M::GET, ["volumes", name]) => volumes::inspect(ctx, name).await,
        (&M::DELETE, ["volumes", name]) => volumes::remove(ctx, name).await,

        _ => Err(ApiError::not_found("page not found")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefixes() {
        assert_eq!(split_version("/v1.47/info").unwrap(), ((1, 47), "/info"));
        assert_eq!(
            split_version("/v1.24/containers/json").unwrap(),
            ((1, 24), "/containers/json")
        );
        assert_eq!(split_version("/info").unwrap(), ((1, 47), "/info"));
        let e = split_version("/v1.50/info").unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(
            e.message,
            "client version 1.50 is too new. Maximum supported API version is 1.47"
        );
        assert!(split_version("/v1.12/info")
            .unwrap_err()
            .message
            .contains("too old"));
        assert_eq!(split_version("/volumes").unwrap(), ((1, 47), "/volumes"));
    }
}
