//! `GET /events`: the engine's events as a stream of JSON lines in Docker's
//! `EventMessage` shape, replayed from `since`, closed at `until`.

use std::time::{SystemTime, UNIX_EPOCH};

use berth_engine::events::{parse_time, Event, EventFilter};
use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::body::{channel, Body};
use crate::error::ApiResult;
use crate::router::Ctx;

pub async fn events(ctx: Ctx) -> ApiResult<Response<Body>> {
    let filter = EventFilter::new(ctx.query.filters()?)?;
    let since = ctx
        .query
        .get("since")
        .filter(|s| !s.is_empty())
        .map(parse_time)
        .transpose()?;
    let until = ctx
        .query
        .get("until")
        .filter(|s| !s.is_empty())
        .map(parse_time)
        .transpose()?;
    let (past, mut rx) = ctx.api.engine.events().subscribe(since, until);
    let (tx, body) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let send = |ev: &Event| {
            // Replayed events are already within since..=until; live ones may come after.
            let keep = filter.matches(ev) && until.is_none_or(|u| ev.time_nano <= u);
            keep.then(|| line(ev))
        };
        for ev in &past {
            if let Some(l) = send(ev) {
                if tx.send(l).await.is_err() {
                    return;
                }
            }
        }
        loop {
            let next = match until {
                Some(u) => {
                    let left = u - now_nano();
                    if left <= 0 {
                        return;
                    }
                    let wait = std::time::Duration::from_nanos(left as u64);
                    match tokio::time::timeout(wait, rx.recv()).await {
                        Ok(r) => r,
                        Err(_) => return,
                    }
                }
                None => tokio::select! {
                    r = rx.recv() => r,
                    // Ends with the client.
                    _ = tx.closed() => return,
                },
            };
            match next {
                Ok(ev) => {
                    if let Some(l) = send(&ev) {
                        if tx.send(l).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "an events client fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let mut resp = Response::new(channel(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

fn now_nano() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Docker's `EventMessage`, with the legacy `status`, `id` and `from` of container and
/// image events.
pub fn message(ev: &Event) -> Value {
    let mut v = json!({
        "Type": ev.typ,
        "Action": ev.action,
        "Actor": {"ID": ev.actor_id, "Attributes": ev.attributes},
        "scope": "local",
        "time": ev.time_nano / 1_000_000_000,
        "timeNano": ev.time_nano,
    });
    if matches!(ev.typ, "container" | "image") {
        v["status"] = json!(ev.action);
        v["id"] = json!(ev.actor_id);
        if let Some(from) = ev.attributes.get("image").filter(|_| ev.typ == "container") {
            v["from"] = json!(from);
        }
    }
    v
}

fn line(ev: &Event) -> Bytes {
    let mut b = serde_json::to_vec(&message(ev)).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_has_docker_shape() {
        let ev = Event::new("container", "die", "abc")
            .attr("image", "busybox")
            .attr("name", "web")
            .attr("exitCode", "0");
        let v = message(&ev);
        assert_eq!(v["Type"], "container");
        assert_eq!(v["Action"], "die");
        assert_eq!(v["Actor"]["ID"], "abc");
        assert_eq!(v["Actor"]["Attributes"]["exitCode"], "0");
        assert_eq!(v["status"], "die");
        assert_eq!(v["id"], "abc");
        assert_eq!(v["from"], "busybox");
        assert_eq!(v["scope"], "local");
        assert_eq!(v["time"], ev.time_nano / 1_000_000_000);
        let vol = message(&Event::new("volume", "create", "data"));
        assert!(vol.get("status").is_none());
    }
}
