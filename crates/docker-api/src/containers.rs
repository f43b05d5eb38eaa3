//! `/containers/...`: create, list, inspect, start, stop, restart, kill, wait, resize,
//! remove and logs. Attach lives in [`crate::attach`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_engine::container::{ContainerConfig, ContainerRecord, HostConfig, Status};
use berth_engine::logs::{Filter, Stream};
use berth_engine::{timefmt, ContainerView, CreateRequest, ListOptions, WaitCondition};
use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::body::{channel, json_response, read_json, status_only, Body};
use crate::error::{ApiError, ApiResult};
use crate::router::Ctx;

/// The body of `POST /containers/create`: Docker's `Config` with `HostConfig` inside.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    #[serde(flatten)]
    config: ContainerConfig,
    host_config: Option<HostConfig>,
}

pub async fn create(ctx: Ctx) -> ApiResult<Response<Body>> {
    let name = ctx.query.get("name").map(String::from);
    let body: CreateBody = read_json(ctx.req.into_body(), None).await?;
    let req = CreateRequest {
        name,
        config: body.config,
        host_config: body.host_config.unwrap_or_default(),
    };
    let (id, warnings) = ctx.api.engine.create(req).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"Id": id, "Warnings": warnings}),
    ))
}

fn status_text(rec: &ContainerRecord) -> String {
    match rec.state.status {
        Status::Created => "Created".into(),
        Status::Running => format!(
            "Up {}",
            timefmt::human_duration(timefmt::since(&rec.state.started_at))
        ),
        Status::Paused => format!(
            "Up {} (Paused)",
            timefmt::human_duration(timefmt::since(&rec.state.started_at))
        ),
        Status::Restarting => "Restarting".into(),
        Status::Removing => "Removal In Progress".into(),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            rec.state.exit_code,
            timefmt::human_duration(timefmt::since(&rec.state.finished_at))
        ),
        Status::Dead => "Dead".into(),
    }
}

fn command_line(rec: &ContainerRecord) -> String {
    std::iter::once(rec.path.as_str())
        .chain(rec.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

fn mounts_json(rec: &ContainerRecord) -> Value {
    rec.mounts
        .iter()
        .map(|m| {
            let mut v = json!({
                "Type": m.kind,
                "Source": m.source,
                "Destination": m.destination,
                "Mode": m.mode,
                "RW": !m.read_only,
                "Propagation": m.propagation,
            });
            if m.kind == "volume" {
                v["Name"] = json!(m.name);
                v["Driver"] = json!("local");
            }
            v
        })
        .collect()
}

fn network_mode(rec: &ContainerRecord) -> &str {
    match rec.host_config.network_mode.as_str() {
        "" => "default",
        m => m,
    }
}

pub async fn list(ctx: Ctx) -> ApiResult<Response<Body>> {
    let opts = ListOptions {
        all: ctx.query.bool("all"),
        limit: ctx
            .query
            .int("limit")?
            .filter(|n| *n > 0)
            .map(|n| n as usize),
        filters: ctx.query.filters()?,
    };
    let recs = ctx.api.engine.list(&opts)?;
    let out: Vec<Value> = recs
        .iter()
        .map(|rec| {
            json!({
                "Id": rec.id,
                "Names": [format!("/{}", rec.name)],
                "Image": rec.image_ref,
                "ImageID": rec.image_id,
                "Command": command_line(rec),
                "Created": timefmt::unix_seconds(&rec.created),
                "Ports": list_ports(&ctx.api.engine.network_ports(rec)),
                "Labels": rec.config.labels,
                "State": rec.state.status.as_str(),
                "Status": status_text(rec),
                "HostConfig": {"NetworkMode": network_mode(rec)},
                "NetworkSettings": {"Networks": {}},
                "Mounts": mounts_json(rec),
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(out)))
}

/// `ps`'s Ports: `{"PrivatePort": 80, "Type": "tcp"}` for each unpublished port.
fn list_ports(ports: &[String]) -> Value {
    ports
        .iter()
        .filter_map(|p| {
            let (port, proto) = p.split_once('/')?;
            Some(json!({"PrivatePort": port.parse::<u16>().ok()?, "Type": proto}))
        })
        .collect()
}

/// A JSON object with `ports` as keys, each with `value` (Docker's port maps and sets).
fn port_map(ports: &[String], value: Value) -> Value {
    Value::Object(ports.iter().map(|p| (p.clone(), value.clone())).collect())
}

/// The `inspect` answer; `exposed` and `network` are the engine's exposed and network ports.
fn inspect_json(view: &ContainerView, exposed: &[String], network: &[String]) -> Value {
    let rec = &view.record;
    let st = &rec.state;
    let mut v = json!({
        "Id": rec.id,
        "Created": rec.created,
        "Path": rec.path,
        "Args": rec.args,
        "State": {
            "Status": st.status.as_str(),
            "Running": matches!(st.status, Status::Running | Status::Paused),
            "Paused": st.status == Status::Paused,
            "Restarting": st.status == Status::Restarting,
            "OOMKilled": st.oom_killed,
            "Dead": st.status == Status::Dead,
            "Pid": st.pid,
            "ExitCode": st.exit_code,
            "Error": st.error,
            "StartedAt": st.started_at,
            "FinishedAt": st.finished_at,
        },
        "Image": rec.image_id,
        "ResolvConfPath": view.resolv_conf_path,
        "HostnamePath": view.hostname_path,
        "HostsPath": view.hosts_path,
        "LogPath": view.log_path,
        "Name": format!("/{}", rec.name),
        "RestartCount": st.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": rec.host_config,
        "GraphDriver": {
            "Name": "overlay",
            "Data": {"MergedDir": view.rootfs, "Layers": rec.layers.join(":")},
        },
        "Mounts": mounts_json(rec),
        "Config": rec.config,
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": "",
            "SandboxKey": "",
            "Ports": port_map(network, Value::Null),
            "Networks": {},
        },
    });
    // The engine's list: the record's, or the image's for a container created before berth
    // kept them. Docker leaves an empty set out.
    if let Some(config) = v["Config"].as_object_mut() {
        config.remove("ExposedPorts");
        if !exposed.is_empty() {
            config.insert("ExposedPorts".into(), port_map(exposed, json!({})));
        }
    }
    // Logs are always kept in Docker's json-file format; clients (docker-py's run) read this.
    v["HostConfig"]["LogConfig"] = json!({"Type": "json-file", "Config": {}});
    if rec.host_config.network_mode.is_empty() {
        v["HostConfig"]["NetworkMode"] = json!("default");
    }
    // Docker shows no maps; berth says who container root is on the host.
    if let Some(maps) = &rec.maps {
        let ranges = |m: &berth_idmap::IdMap| {
            m.ranges()
                .iter()
                .map(|r| json!({"ContainerID": r.container, "HostID": r.host, "Size": r.size}))
                .collect::<Vec<_>>()
        };
        v["UsernsMaps"] = json!({"UidMap": ranges(&maps.uid), "GidMap": ranges(&maps.gid)});
    }
    v
}

pub async fn inspect(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let engine = &ctx.api.engine;
    let view = engine.inspect(id)?;
    let exposed = engine.exposed_ports(&view.record);
    let network = engine.network_ports(&view.record);
    let v = inspect_json(&view, &exposed, &network);
    Ok(json_response(StatusCode::OK, &v))
}

pub async fn start(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    ctx.api.engine.start(id).await?;
    Ok(status_only(StatusCode::NO_CONTENT))
}

fn stop_timeout(ctx: &Ctx) -> ApiResult<Option<i64>> {
    ctx.query.int("t")
}

pub async fn stop(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let t = stop_timeout(&ctx)?;
    ctx.api.engine.stop(id, t, ctx.query.get("signal")).await?;
    Ok(status_only(StatusCode::NO_CONTENT))
}

pub async fn restart(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let t = stop_timeout(&ctx)?;
    ctx.api.engine.restart(id, t).await?;
    Ok(status_only(StatusCode::NO_CONTENT))
}

pub async fn kill(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let res = ctx.api.engine.kill(id, ctx.query.get("signal")).await;
    // moby's router wraps every kill error so (postContainersKill).
    res.map_err(|e| {
        let mut err = ApiError::from(e);
        err.message = format!("cannot kill container: {id}: {}", err.message);
        err
    })?;
    Ok(status_only(StatusCode::NO_CONTENT))
}

pub async fn remove(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    ctx.api
        .engine
        .remove(id, ctx.query.bool("force"), ctx.query.bool("v"))
        .await?;
    Ok(status_only(StatusCode::NO_CONTENT))
}

pub async fn resize(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let dim = |k: &str| -> ApiResult<u16> {
        let v = ctx.query.int(k)?.unwrap_or(0);
        u16::try_from(v).map_err(|_| ApiError::bad_request(format!("invalid {k}: {v}")))
    };
    let (h, w) = (dim("h")?, dim("w")?);
    ctx.api.engine.resize(id, h, w).await?;
    Ok(status_only(StatusCode::OK))
}

/// `POST /containers/{id}/wait`: the headers go out at once; the body, at the condition.
pub async fn wait(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let condition = match ctx.query.get("condition").unwrap_or("") {
        "" | "not-running" => WaitCondition::NotRunning,
        "next-exit" => WaitCondition::NextExit,
        "removed" => WaitCondition::Removed,
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid condition: {other:?} (use not-running, next-exit or removed)"
            )))
        }
    };
    let engine = ctx.api.engine.clone();
    // Unknown containers get a 404 before any header is sent.
    let full_id = engine.inspect(id)?.record.id;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let body = match engine.wait(&full_id, condition).await {
            Ok(code) => json!({"StatusCode": code, "Error": null}),
            Err(e) => json!({"StatusCode": -1, "Error": {"Message": e.to_string()}}),
        };
        let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
        bytes.push(b'\n');
        let _ = tx.send(Bytes::from(bytes)).await;
    });
    let mut resp = Response::new(channel(rx));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// Docker sends times as Unix seconds with an optional fraction (`1700000000.123456789`).
fn unix_time(s: &str) -> ApiResult<Option<SystemTime>> {
    if s.is_empty() || s == "0" {
        return Ok(None);
    }
    if let Some(t) = timefmt::parse_rfc3339(s) {
        return Ok(Some(t));
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: u64 = secs
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid time {s:?}")))?;
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}")[..9]
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid time {s:?}")))?
    };
    Ok(Some(UNIX_EPOCH + Duration::new(secs, nanos)))
}

/// A chunk of output in the multiplexed stream format: `[stream, 0, 0, 0, len (u32 BE)]`.
pub fn mux_frame(stream: Stream, data: &[u8]) -> Bytes {
    let kind = match stream {
        Stream::Stdout => 1u8,
        Stream::Stderr => 2u8,
    };
    let len = (data.len() as u32).to_be_bytes();
    let mut v = Vec::with_capacity(8 + data.len());
    v.extend_from_slice(&[kind, 0, 0, 0]);
    v.extend_from_slice(&len);
    v.extend_from_slice(data);
    Bytes::from(v)
}

pub async fn logs(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let q = &ctx.query;
    let filter = Filter {
        stdout: q.bool("stdout"),
        stderr: q.bool("stderr"),
        since: unix_time(q.get("since").unwrap_or(""))?,
        until: unix_time(q.get("until").unwrap_or(""))?,
        tail: match q.get("tail") {
            None | Some("") | Some("all") => None,
            Some(n) => Some(
                n.parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("invalid tail: {n:?}")))?,
            ),
        },
    };
    if !filter.stdout && !filter.stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let timestamps = q.bool("timestamps");
    let tty = ctx.api.engine.inspect(id)?.record.config.tty;
    let mut entries = ctx.api.engine.logs(id, filter, q.bool("follow"))?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(e) = entries.recv().await {
            let mut text = e.log.into_bytes();
            if timestamps {
                let mut t = format!("{} ", e.time).into_bytes();
                t.append(&mut text);
                text = t;
            }
            let chunk = if tty {
                Bytes::from(text)
            } else {
                mux_frame(e.stream, &text)
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Response::new(channel(rx));
    let ct = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_reads_docker_cli_json() {
        let body = r#"{"Hostname":"","User":"","AttachStdin":true,"Tty":true,"OpenStdin":true,"StdinOnce":true,
            "Env":null,"Cmd":["ls","-latr","/var/log/"],"Image":"alpine","Volumes":{},"WorkingDir":"","Entrypoint":null,"ExposedPorts":{"53/udp":{},"80/tcp":{}},
            "Labels":{},"HostConfig":{"Binds":["/tmp/x:/var/log"],"NetworkMode":"default","PortBindings":{},
            "RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":true,"CapAdd":null,"CapDrop":null,
            "ConsoleSize":[40,120],"Privileged":false,"UsernsMode":"","Mounts":null,"PidsLimit":null,"Ulimits":null},
            "NetworkingConfig":{"EndpointsConfig":{}}}"#;
        let b: CreateBody = serde_json::from_str(body).unwrap();
        assert_eq!(b.config.cmd, ["ls", "-latr", "/var/log/"]);
        assert!(b.config.tty && b.config.open_stdin);
        let ports = b.config.exposed_ports.unwrap();
        assert_eq!(ports.keys().collect::<Vec<_>>(), ["53/udp", "80/tcp"]);
        let h = b.host_config.unwrap();
        assert!(h.auto_remove);
        assert_eq!(h.binds, ["/tmp/x:/var/log"]);
        assert_eq!(h.console_size, [40, 120]);
    }

    #[test]
    fn unix_times() {
        assert_eq!(unix_time("").unwrap(), None);
        assert_eq!(
            unix_time("10.5").unwrap(),
            Some(UNIX_EPOCH + Duration::new(10, 500_000_000))
        );
        assert!(unix_time("x").is_err());
    }

    #[test]
    fn frames() {
        assert_eq!(
            &mux_frame(Stream::Stderr, b"hi")[..],
            &[2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']
        );
    }
}
