//! `/volumes`: create, list, inspect, remove and prune volumes of the local driver
//! (shapes from moby's api/swagger.yaml, `Volume` and `VolumeCreateOptions`).

use std::collections::BTreeMap;

use berth_engine::volumes::{VolumeCreate, VolumeView};
use berth_engine::{Engine, Result as EngineResult};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::{json_response, read_json, status_only, Body};
use crate::error::{ApiError, ApiResult};
use crate::router::Ctx;

/// Runs a volume operation (file system work) off the async threads.
async fn blocking<T: Send + 'static>(
    engine: &Engine,
    f: impl FnOnce(&Engine) -> EngineResult<T> + Send + 'static,
) -> ApiResult<T> {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || f(&engine))
        .await
        .map_err(|e| ApiError::internal(format!("volume task: {e}")))?
        .map_err(ApiError::from)
}

/// Docker's `Volume` object.
pub fn volume_json(v: &VolumeView) -> Value {
    json!({
        "Name": v.record.name,
        "Driver": v.record.driver,
        "Mountpoint": v.mountpoint.to_string_lossy(),
        "CreatedAt": v.record.created_at,
        "Labels": v.record.labels,
        "Scope": "local",
        "Options": if v.record.options.is_empty() { Value::Null } else { json!(v.record.options) },
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: String,
    driver: String,
    driver_opts: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

/// `POST /volumes/create` (201 with the volume; an existing name answers that volume).
pub async fn create(ctx: Ctx) -> ApiResult<Response<Body>> {
    let body: CreateBody = read_json(ctx.req.into_body(), Some(CreateBody::default())).await?;
    let req = VolumeCreate {
        name: body.name,
        driver: body.driver,
        driver_opts: body.driver_opts.unwrap_or_default(),
        labels: body.labels.unwrap_or_default(),
    };
    let v = blocking(&ctx.api.engine, move |e| e.volume_create(req)).await?;
    Ok(json_response(StatusCode::CREATED, &volume_json(&v)))
}

/// `GET /volumes` with filters name, label, dangling, driver.
pub async fn list(ctx: Ctx) -> ApiResult<Response<Body>> {
    let filters = ctx.query.filters()?;
    let vols = blocking(&ctx.api.engine, move |e| e.volume_list(&filters)).await?;
    let list: Vec<Value> = vols.iter().map(volume_json).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "Volumes": list, "Warnings": [] }),
    ))
}

pub async fn inspect(ctx: Ctx, name: &str) -> ApiResult<Response<Body>> {
    let name = name.to_string();
    let v = blocking(&ctx.api.engine, move |e| e.volume_inspect(&name)).await?;
    Ok(json_response(StatusCode::OK, &volume_json(&v)))
}

/// `DELETE /volumes/{name}?force=`: 409 while a container uses the volume.
pub async fn remove(ctx: Ctx, name: &str) -> ApiResult<Response<Body>> {
    let name = name.to_string();
    let force = ctx.query.bool("force");
    blocking(&ctx.api.engine, move |e| e.volume_remove(&name, force)).await?;
    Ok(status_only(StatusCode::NO_CONTENT))
}

/// `POST /volumes/prune`: unused anonymous volumes (all unused ones with `all=true`).
pub async fn prune(ctx: Ctx) -> ApiResult<Response<Body>> {
    let filters = ctx.query.filters()?;
    let (deleted, freed) = blocking(&ctx.api.engine, move |e| e.volume_prune(&filters)).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "VolumesDeleted": deleted, "SpaceReclaimed": freed }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_engine::volumes::VolumeRecord;

    #[test]
    fn volume_shape() {
        let v = VolumeView {
            record: VolumeRecord {
                name: "data".into(),
                driver: "local".into(),
                created_at: "2026-01-01T00:00:00Z".into(),
                labels: [("a".to_string(), "b".to_string())].into(),
                options: BTreeMap::new(),
                anonymous: false,
            },
            mountpoint: "/var/lib/berth/volumes/data/_data".into(),
            ref_count: 0,
        };
        let j = volume_json(&v);
        assert_eq!(j["Name"], "data");
        assert_eq!(j["Mountpoint"], "/var/lib/berth/volumes/data/_data");
        assert_eq!(j["Scope"], "local");
        assert_eq!(j["Labels"]["a"], "b");
        assert!(j["Options"].is_null());
    }

    #[test]
    fn create_body_accepts_nulls() {
        let b: CreateBody = serde_json::from_str(
            r#"{"Name":"x","Driver":"local","DriverOpts":null,"Labels":null}"#,
        )
        .unwrap();
        assert_eq!(b.name, "x");
        assert!(b.labels.is_none());
    }
}
