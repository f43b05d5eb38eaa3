//! `docker exec`: `POST /containers/{id}/exec`, `POST /exec/{id}/start` (hijacked like
//! attach), `POST /exec/{id}/resize` and `GET /exec/{id}/json`.

use berth_engine::exec::ExecRequest;
use berth_engine::logs::Stream;
use berth_engine::EngineError;
use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::attach::{stream_response, StdinTarget};
use crate::body::{json_response, read_json, status_only, Body};
use crate::containers::mux_frame;
use crate::error::{ApiError, ApiResult};
use crate::router::Ctx;

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    #[serde(deserialize_with = "null_default")]
    attach_stdin: bool,
    #[serde(deserialize_with = "null_default")]
    attach_stdout: bool,
    #[serde(deserialize_with = "null_default")]
    attach_stderr: bool,
    #[serde(deserialize_with = "null_default")]
    tty: bool,
    #[serde(deserialize_with = "null_default")]
    cmd: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    env: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    working_dir: String,
    #[serde(deserialize_with = "null_default")]
    user: String,
    #[serde(deserialize_with = "null_default")]
    privileged: bool,
    #[serde(deserialize_with = "null_default")]
    console_size: Vec<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct StartBody {
    #[serde(deserialize_with = "null_default")]
    detach: bool,
}

pub async fn create(ctx: Ctx, container: &str) -> ApiResult<Response<Body>> {
    let b: CreateBody = read_json(ctx.req.into_body(), None).await?;
    let req = ExecRequest {
        cmd: b.cmd,
        env: b.env,
        user: b.user,
        working_dir: b.working_dir,
        tty: b.tty,
        attach_stdin: b.attach_stdin,
        attach_stdout: b.attach_stdout,
        attach_stderr: b.attach_stderr,
        privileged: b.privileged,
        console_size: b.console_size,
    };
    let id = ctx.api.engine.exec_create(container, req)?;
    Ok(json_response(StatusCode::CREATED, &json!({"Id": id})))
}

pub async fn start(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let engine = ctx.api.engine.clone();
    let view = engine.exec_inspect(id)?;
    let (parts, body) = ctx.req.into_parts();
    let start: StartBody = read_json(body, Some(StartBody::default())).await?;
    let r = &view.request;
    let (tty, want_out, want_err) = (r.tty, r.attach_stdout, r.attach_stderr);
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let mut output = match engine.exec_start(id).await {
        Ok(o) => o,
        Err(e @ (EngineError::NotFound(_) | EngineError::Conflict(_))) => return Err(e.into()),
        // The process could not start (exit code 126): as Docker, the attached client reads
        // why in its stream.
        Err(e) if !start.detach => {
            let text = format!("{e}\n");
            let chunk = if tty {
                Bytes::from(text)
            } else {
                mux_frame(Stream::Stderr, text.as_bytes())
            };
            let (tx, rx) = mpsc::channel(1);
            let _ = tx.send(chunk).await;
            let req = hyper::Request::from_parts(parts, ());
            return Ok(stream_response(req, content_type, rx, engine, None));
        }
        Err(e) => return Err(e.into()),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        while let Some(o) = output.recv().await {
            let wanted = match o.stream {
                Stream::Stdout => want_out,
                Stream::Stderr => want_err,
            };
            if start.detach || !wanted {
                continue;
            }
            let chunk = if tty {
                Bytes::from(o.data)
            } else {
                mux_frame(o.stream, &o.data)
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    if start.detach {
        return Ok(status_only(StatusCode::OK));
    }
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let stdin = r.attach_stdin.then(|| StdinTarget::Exec(id.to_string()));
    let req = hyper::Request::from_parts(parts, ());
    Ok(stream_response(req, content_type, rx, engine, stdin))
}

pub async fn resize(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let dim = |k: &str| -> ApiResult<u16> {
        let v = ctx.query.int(k)?.unwrap_or(0);
        u16::try_from(v).map_err(|_| ApiError::bad_request(format!("invalid {k}: {v}")))
    };
    let (h, w) = (dim("h")?, dim("w")?);
    ctx.api.engine.exec_resize(id, h, w).await?;
    Ok(status_only(StatusCode::OK))
}

pub async fn inspect(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let v = ctx.api.engine.exec_inspect(id)?;
    let r = &v.request;
    let (entrypoint, args) = r
        .cmd
        .split_first()
        .map_or(("", &[][..]), |(a, b)| (a.as_str(), b));
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "ID": v.id,
            "Running": v.running,
            "ExitCode": v.exit_code,
            "ProcessConfig": {
                "tty": r.tty,
                "entrypoint": entrypoint,
                "arguments": args,
                "privileged": r.privileged,
                "user": r.user,
            },
            "OpenStdin": r.attach_stdin,
            "OpenStderr": r.attach_stderr,
            "OpenStdout": r.attach_stdout,
            "CanRemove": false,
            "ContainerID": v.container_id,
            "DetachKeys": "",
            "Pid": v.pid,
        }),
    ))
}
