//! URL query strings as the Docker API uses them.

use std::collections::BTreeMap;

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Default, Clone)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let pairs = q
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Query { pairs }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Docker's booleans: `1`, `true`, `True` are true; absent, empty, `0`, `false` are false.
    pub fn bool(&self, key: &str) -> bool {
        matches!(self.get(key), Some(v) if !matches!(v, "" | "0" | "false" | "False" | "FALSE"))
    }

    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.get(key).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid value for {key}: {v:?} is not an integer"))
            }),
        }
    }

    /// The `filters` parameter: `{"key":["v1","v2"]}`, or the old `{"key":{"v1":true}}`.
    pub fn filters(&self) -> ApiResult<BTreeMap<String, Vec<String>>> {
        let Some(raw) = self.get("filters").filter(|v| !v.is_empty()) else {
            return Ok(BTreeMap::new());
        };
        let v: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid filters: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| ApiError::bad_request("invalid filters: expected a JSON object"))?;
        let mut out = BTreeMap::new();
        for (k, vals) in obj {
            let list: Vec<String> = match vals {
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect(),
                serde_json::Value::Object(m) => m
                    .iter()
                    .filter(|(_, on)| on.as_bool() == Some(true))
                    .map(|(s, _)| s.clone())
                    .collect(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid filters: bad value for {k}"
                    )))
                }
            };
            out.insert(k.clone(), list);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_queries() {
        let q = Query::parse(Some(
            "name=demo&all=1&x=%2Fa%20b&filters=%7B%22status%22%3A%5B%22exited%22%5D%7D&bad=%zz",
        ));
        assert_eq!(q.get("name"), Some("demo"));
        assert!(q.bool("all"));
        assert!(!q.bool("missing"));
        assert_eq!(q.get("x"), Some("/a b"));
        assert_eq!(q.get("bad"), Some("%zz"));
        assert_eq!(q.filters().unwrap()["status"], ["exited"]);
        let old = Query::parse(Some("filters=%7B%22label%22%3A%7B%22a%22%3Atrue%7D%7D"));
        assert_eq!(old.filters().unwrap()["label"], ["a"]);
        assert!(Query::parse(Some("t=x")).int("t").is_err());
    }
}
