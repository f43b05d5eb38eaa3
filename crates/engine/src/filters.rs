//! `docker ps --filter`: which containers a filter set keeps.

use std::collections::BTreeMap;

use crate::container::{ContainerRecord, Status};
use crate::error::{EngineError, Result};
use crate::images::Images;

pub(crate) fn matches_filters(
    rec: &ContainerRecord,
    filters: &BTreeMap<String, Vec<String>>,
    images: &Images,
) -> Result<bool> {
    for (key, values) in filters {
        if values.is_empty() {
            continue;
        }
        let ok = match key.as_str() {
            "id" => values.iter().any(|v| rec.id.starts_with(v.as_str())),
            "name" => values
                .iter()
                .any(|v| rec.name.contains(v.trim_start_matches('/'))),
            "status" => values.iter().any(|v| v == rec.state.status.as_str()),
            "exited" => {
                rec.state.status == Status::Exited
                    && values.iter().any(|v| v.parse() == Ok(rec.state.exit_code))
            }
            "label" => values.iter().all(|v| label_matches(&rec.config.labels, v)),
            "ancestor" => values.iter().any(|v| {
                v == &rec.image_ref
                    || images
                        .resolve(v)
                        .map(|i| i.id == rec.image_id)
                        .unwrap_or(false)
            }),
            other => {
                return Err(EngineError::InvalidParameter(format!(
                    "invalid filter '{other}'"
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A `label=KEY` or `label=KEY=VALUE` filter value against a set of labels.
pub(crate) fn label_matches(labels: &BTreeMap<String, String>, want: &str) -> bool {
    match want.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(want),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::State;

    fn rec(name: &str, status: Status, code: i32, label: Option<(&str, &str)>) -> ContainerRecord {
        ContainerRecord {
            id: format!("{name:0>64}"),
            name: name.into(),
            created: String::new(),
            image_ref: "busybox".into(),
            image_id: "sha256:00".into(),
            config: crate::container::ContainerConfig {
                labels: label
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .into_iter()
                    .collect(),
                ..Default::default()
            },
            host_config: Default::default(),
            state: State {
                status,
                exit_code: code,
                ..Default::default()
            },
            maps: None,
            mounts: vec![],
            layers: vec![],
            path: "true".into(),
            args: vec![],
        }
    }

    #[test]
    fn filters_like_docker_ps() {
        let dir = tempfile::tempdir().unwrap();
        let images = Images::open(dir.path(), &dir.path().join("exec"), false).unwrap();
        let f = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<String>> {
            let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, v) in pairs {
                m.entry(k.to_string()).or_default().push(v.to_string());
            }
            m
        };
        let web = rec("web", Status::Running, 0, Some(("app", "shop")));
        let job = rec("job", Status::Exited, 3, None);
        let keep = |r: &ContainerRecord, pairs: &[(&str, &str)]| {
            matches_filters(r, &f(pairs), &images).unwrap()
        };
        assert!(keep(&web, &[("status", "running"), ("label", "app=shop")]));
        assert!(!keep(&web, &[("label", "app=other")]));
        assert!(keep(&job, &[("exited", "3"), ("name", "jo")]));
        assert!(!keep(&job, &[("status", "running"), ("status", "created")]));
        assert!(keep(&job, &[("ancestor", "busybox")]));
        assert!(matches_filters(&job, &f(&[("bogus", "x")]), &images).is_err());
    }
}
