//! `/containers/{id}/...` beyond the life cycle: top, stats, rename, pause, unpause and
//! update. The figures come from the engine; this module gives them Docker's JSON shape.

use std::time::Duration;

use berth_engine::ops::{StatsSample, UpdateRequest};
use berth_engine::timefmt;
use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::body::{channel, json_response, read_json, status_only, Body};
use crate::error::{ApiError, ApiResult};
use crate::router::Ctx;

/// Docker's stats collector ticks once a second; a one-shot-free reading waits a tick so
/// that `precpu_stats` gives the cpu percentage.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

pub async fn top(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let top = ctx
        .api
        .engine
        .top(id, ctx.query.get("ps_args").unwrap_or(""))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"Titles": top.titles, "Processes": top.processes}),
    ))
}

pub async fn rename(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let name = ctx
        .query
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("rename needs a new name: ?name=NEW"))?;
    ctx.api.engine.rename(id, name)?;
    Ok(status_only(StatusCode::NO_CONTENT))
}

pub async fn pause(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    ctx.api.engine.pause(id).await?;
    Ok(status_only(StatusCode::NO_CONTENT))
}

pub async fn unpause(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    ctx.api.engine.unpause(id).await?;
    Ok(status_only(StatusCode::NO_CONTENT))
}

pub async fn update(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let req: UpdateRequest = read_json(ctx.req.into_body(), Some(UpdateRequest::default())).await?;
    let warnings = ctx.api.engine.update(id, req).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"Warnings": warnings}),
    ))
}

/// `GET /containers/{id}/stats`: one object (`stream=false`), or one a second until the
/// container stops or the client goes (the default). `one-shot` skips the wait for a
/// second reading, leaving `precpu_stats` empty, as Docker does.
pub async fn stats(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let stream = ctx
        .query
        .get("stream")
        .is_none_or(|v| v != "0" && v != "false");
    let one_shot = ctx.query.bool("one-shot");
    let engine = ctx.api.engine.clone();
    let first = engine.stats_sample(id).await?;
    if !stream {
        let pre = if one_shot {
            None
        } else {
            tokio::time::sleep(STATS_INTERVAL).await;
            Some(first)
        };
        let now = match &pre {
            Some(p) => engine.stats_sample(&p.id).await?,
            None => engine.stats_sample(id).await?,
        };
        return Ok(json_response(
            StatusCode::OK,
            &stats_json(&now, pre.as_ref()),
        ));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        let mut pre: Option<StatsSample> = None;
        let mut now = first;
        loop {
            let mut line = serde_json::to_vec(&stats_json(&now, pre.as_ref())).unwrap_or_default();
            line.push(b'\n');
            if tx.send(Bytes::from(line)).await.is_err() {
                return;
            }
            tokio::time::sleep(STATS_INTERVAL).await;
            // Stops when the container does (the engine refuses a stopped one).
            let Ok(next) = engine.stats_sample(&now.id).await else {
                return;
            };
            pre = Some(std::mem::replace(&mut now, next));
        }
    });
    let mut resp = Response::new(channel(rx));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn cpu_json(s: Option<&StatsSample>) -> Value {
    let Some(s) = s else {
        return json!({"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}});
    };
    let c = &s.cgroup;
    let mut usage = json!({
        "total_usage": c.cpu_total,
        "usage_in_kernelmode": c.cpu_system,
        "usage_in_usermode": c.cpu_user,
    });
    if !c.percpu.is_empty() {
        usage["percpu_usage"] = json!(c.percpu);
    }
    json!({
        "cpu_usage": usage,
        "system_cpu_usage": s.system_cpu,
        "online_cpus": s.online_cpus,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    })
}

/// One stats object in Docker's shape (moby's api/types/container.StatsResponse).
fn stats_json(now: &StatsSample, pre: Option<&StatsSample>) -> Value {
    let c = &now.cgroup;
    let limit = c
        .memory_limit
        .map_or(now.host_memory, |l| l.min(now.host_memory.max(1)));
    let mut pids = json!({"current": c.pids_current});
    if let Some(l) = c.pids_limit {
        pids["limit"] = json!(l);
    }
    json!({
        "read": timefmt::rfc3339_nano(now.read),
        "preread": pre.map_or(ZERO_TIME.to_string(), |p| timefmt::rfc3339_nano(p.read)),
        "pids_stats": pids,
        "blkio_stats": {},
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu_json(Some(now)),
        "precpu_stats": cpu_json(pre),
        "memory_stats": {
            "usage": c.memory_usage,
            "limit": limit,
            "stats": c.memory_stat,
        },
        "name": now.name,
        "id": now.id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_engine::ops::CgroupStats;

    #[test]
    fn docker_shape() {
        let s = StatsSample {
            read: std::time::SystemTime::now(),
            cgroup: CgroupStats {
                cpu_total: 10,
                memory_usage: 4096,
                memory_limit: None,
                pids_current: 1,
                ..Default::default()
            },
            system_cpu: 100,
            online_cpus: 2,
            host_memory: 1 << 30,
            id: "abc".into(),
            name: "/x".into(),
        };
        let v = stats_json(&s, None);
        assert_eq!(v["memory_stats"]["limit"], 1u64 << 30);
        assert_eq!(v["memory_stats"]["usage"], 4096);
        assert_eq!(v["cpu_stats"]["cpu_usage"]["total_usage"], 10);
        assert_eq!(v["cpu_stats"]["online_cpus"], 2);
        assert_eq!(v["precpu_stats"]["cpu_usage"]["total_usage"], 0);
        assert_eq!(v["preread"], ZERO_TIME);
        assert_eq!(v["pids_stats"]["current"], 1);
        assert!(v["pids_stats"].get("limit").is_none());
        assert_eq!(v["name"], "/x");
    }
}
