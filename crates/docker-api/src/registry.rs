//! Registry routes: `POST /images/create?fromImage=` (pull), `POST /images/{name}/push` and
//! `POST /auth`, translated to berth-registry. Pull and push stream Docker's JSON progress
//! messages (`status`, `progressDetail`, `id`); a failure before the first layer answers
//! with an HTTP error, a later one with an `errorDetail` message, as dockerd does.

use std::sync::OnceLock;

use berth_image::Reference;
use berth_registry::{
    Credentials, PlatformSpec, Progress, PullOptions, PushOptions, RegistryError, RegistryOptions,
};
use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::body::{channel, json_response, read_json, Body};
use crate::error::{ApiError, ApiResult};
use crate::router::Ctx;

static INSECURE: OnceLock<Vec<String>> = OnceLock::new();

/// Sets the daemon's `--insecure-registry` list (once, at start-up). Kept here rather than
/// in [`crate::Api`] so that every way of building an `Api` stays as it is.
pub fn set_insecure_registries(list: Vec<String>) {
    let _ = INSECURE.set(list);
}

fn registry_options(ctx: &Ctx) -> ApiResult<RegistryOptions> {
    let credentials = match ctx.req.headers().get("x-registry-auth") {
        Some(h) => {
            let h = h
                .to_str()
                .map_err(|_| ApiError::bad_request("X-Registry-Auth is not ASCII"))?;
            Credentials::from_registry_auth_header(h).map_err(ApiError::bad_request)?
        }
        None => None,
    };
    Ok(RegistryOptions {
        insecure: INSECURE.get().cloned().unwrap_or_default(),
        credentials,
    })
}

fn status_of(e: &RegistryError) -> StatusCode {
    match e {
        RegistryError::NotFound { .. } => StatusCode::NOT_FOUND,
        RegistryError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
        RegistryError::BadPlatform(_) | RegistryError::Reference(_) => StatusCode::BAD_REQUEST,
        RegistryError::Image(berth_image::ImageError::NotFound(_)) => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn line(v: Value) -> Bytes {
    let mut b = serde_json::to_vec(&v).unwrap_or_default();
    b.extend_from_slice(b"\r\n");
    Bytes::from(b)
}

fn progress_json(p: &Progress) -> Value {
    let mut v = json!({ "status": p.status });
    if let (Some(c), Some(t)) = (p.current, p.total) {
        v["progressDetail"] = json!({ "current": c, "total": t });
    } else {
        v["progressDetail"] = json!({});
    }
    if let Some(id) = &p.id {
        v["id"] = json!(id);
    }
    v
}

fn error_json(message: &str) -> Value {
    json!({ "errorDetail": { "message": message }, "error": message })
}

enum Msg {
    Line(Value),
    Done(Result<Vec<Value>, RegistryError>),
}

/// Runs `op` on a blocking thread and streams its progress. Messages are held back until
/// `held` of them arrived (the job's header lines), so that an early failure becomes an HTTP
/// error rather than a 200 stream.
async fn stream(
    held: usize,
    op: impl FnOnce(&(dyn Fn(Progress) + Sync)) -> Result<Vec<Value>, RegistryError> + Send + 'static,
) -> ApiResult<Response<Body>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    tokio::task::spawn_blocking(move || {
        let sink = |p: Progress| {
            let _ = tx.send(Msg::Line(progress_json(&p)));
        };
        let r = op(&sink);
        let _ = tx.send(Msg::Done(r));
    });
    let mut first = Vec::new();
    let mut done = None;
    while first.len() <= held {
        match rx.recv().await {
            Some(Msg::Line(v)) => first.push(v),
            Some(Msg::Done(r)) => {
                done = Some(r);
                break;
            }
            None => break,
        }
    }
    if let Some(Err(e)) = &done {
        return Err(ApiError::new(status_of(e), e.to_string()));
    }
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        for v in first {
            if out_tx.send(line(v)).await.is_err() {
                return;
            }
        }
        let mut done = done;
        while done.is_none() {
            match rx.recv().await {
                Some(Msg::Line(v)) => {
                    // A client that went away does not stop the job: it finishes and is kept.
                    let _ = out_tx.send(line(v)).await;
                }
                Some(Msg::Done(r)) => done = Some(r),
                None => break,
            }
        }
        let tail = match done {
            Some(Ok(lines)) => lines,
            Some(Err(e)) => vec![error_json(&e.to_string())],
            None => vec![error_json("the job ended without a result")],
        };
        for v in tail {
            let _ = out_tx.send(line(v)).await;
        }
    });
    let mut resp = Response::new(channel(out_rx));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// `POST /images/create?fromImage=NAME&tag=TAG[&platform=OS/ARCH]`.
pub async fn pull(ctx: Ctx, from_image: &str) -> ApiResult<Response<Body>> {
    let tag = ctx.query.get("tag").filter(|t| !t.is_empty());
    let name = match tag {
        Some(t) if t.starts_with("sha256:") => format!("{from_image}@{t}"),
        Some(t) => format!("{from_image}:{t}"),
        None => from_image.to_string(),
    };
    let named =
        Reference::parse_name_only(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    // No tag at all: every tag of the repository (`docker pull --all-tags`).
    let all_tags = named.tag().is_none() && named.digest().is_none();
    let reference = Reference::parse(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let platform = match ctx.query.get("platform").filter(|p| !p.is_empty()) {
        Some(p) => Some(PlatformSpec::parse(p).map_err(|e| ApiError::bad_request(e.to_string()))?),
        None => None,
    };
    let opts = PullOptions {
        registry: registry_options(&ctx)?,
        platform,
        ..Default::default()
    };
    let engine = ctx.api.engine.clone();
    stream(1, move |progress| {
        let targets = if all_tags {
            let tags = berth_registry::tags(&reference, &opts.registry)?;
            tags.iter()
                .map(|t| reference.with_tag(t))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            vec![reference.clone()]
        };
        let mut updated = false;
        for t in &targets {
            let r = engine.pull_image(t, &opts, progress)?;
            updated |= r.updated;
            progress(Progress {
                id: None,
                status: format!("Digest: {}", r.digest),
                current: None,
                total: None,
            });
        }
        let status = if updated {
            "Downloaded newer image for"
        } else {
            "Image is up to date for"
        };
        let shown = if all_tags {
            named.familiar_name()
        } else {
            reference.to_string()
        };
        Ok(vec![
            json!({ "status": format!("Status: {status} {shown}") }),
        ])
    })
    .await
}

/// `POST /images/{name}/push?tag=TAG`; no tag pushes every tag of the repository.
pub async fn push(ctx: Ctx, name: &str) -> ApiResult<Response<Body>> {
    let engine = ctx.api.engine.clone();
    let targets = engine.push_targets(name, ctx.query.get("tag"))?;
    let opts = PushOptions {
        registry: registry_options(&ctx)?,
        ..Default::default()
    };
    stream(1, move |progress| {
        let mut tail = Vec::new();
        for t in &targets {
            let r = engine.push_image(t, &opts, progress)?;
            progress(Progress {
                id: None,
                status: format!("{}: digest: {} size: {}", r.tag, r.digest, r.size),
                current: None,
                total: None,
            });
            tail = vec![json!({
                "progressDetail": {},
                "aux": { "Tag": r.tag, "Digest": r.digest.to_string(), "Size": r.size },
            })];
        }
        Ok(tail)
    })
    .await
}

#[derive(serde::Deserialize, Default)]
struct AuthBody {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default, rename = "serveraddress")]
    server_address: String,
}

/// `https://index.docker.io/v1/` -> `docker.io`; `http://host:5000/` -> `host:5000`.
fn registry_of(address: &str) -> String {
    let a = address
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = a.split('/').next().unwrap_or(a);
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

/// `POST /auth`: checks credentials against the registry (the client stores them).
pub async fn auth(ctx: Ctx) -> ApiResult<Response<Body>> {
    let body: AuthBody = read_json(ctx.req.into_body(), None).await?;
    let registry = registry_of(&body.server_address);
    let opts = RegistryOptions {
        insecure: INSECURE.get().cloned().unwrap_or_default(),
        credentials: Some(Credentials {
            username: body.username,
            password: body.password,
        }),
    };
    let r = tokio::task::spawn_blocking(move || berth_registry::login(&registry, &opts))
        .await
        .map_err(|e| ApiError::internal(format!("login task: {e}")))?;
    match r {
        Ok(()) => Ok(json_response(
            StatusCode::OK,
            &json!({ "Status": "Login Succeeded", "IdentityToken": "" }),
        )),
        Err(e) => Err(ApiError::new(status_of(&e), e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        assert_eq!(registry_of("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(registry_of("http://localhost:5000/v2/"), "localhost:5000");
    }

    #[test]
    fn progress_shape() {
        let p = Progress {
            id: Some("abcdef012345".into()),
            status: "Downloading".into(),
            current: Some(10),
            total: Some(20),
        };
        assert_eq!(
            progress_json(&p),
            json!({"status":"Downloading","progressDetail":{"current":10,"total":20},"id":"abcdef012345"})
        );
    }
}
