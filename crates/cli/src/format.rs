//! Output as docker prints it: aligned tables, `--format` templates (the common subset of
//! Go templates: `{{.Field}}`, `{{json .}}`, `{{json .Field}}`, `{{.Label "key"}}`, `table`),
//! human durations and sizes.

use std::collections::BTreeMap;

use anyhow::bail;
use serde_json::Value;

/// One row of a listing: field name → value, in docker's field names (`ID`, `Names`, ...).
pub type Row = BTreeMap<&'static str, Value>;

/// A `--format` value, parsed.
pub struct Template {
    table: bool,
    parts: Vec<Part>,
}

#[derive(Debug, PartialEq)]
enum Part {
    Text(String),
    /// `{{.A.B}}`; an empty path is `{{.}}`.
    Field(Vec<String>),
    Json(Vec<String>),
    Label(String),
}

impl Template {
    /// `table ...`, `json`, or a plain template. `\t` and `\n` written as two characters
    /// (as typed in a shell) mean tab and newline, as in docker.
    pub fn parse(format: &str) -> anyhow::Result<Template> {
        if format == "json" {
            return Ok(Template {
                table: false,
                parts: vec![Part::Json(vec![])],
            });
        }
        let (table, body) = match format.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (true, rest.trim_start())
            }
            _ => (false, format),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = body.as_str();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let end = rest[start..].find("}}").ok_or_else(|| {
                anyhow::anyhow!("template parsing error: unclosed action in {format:?}")
            })?;
            parts.push(parse_action(rest[start + 2..start + end].trim(), format)?);
            rest = &rest[start + end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { table, parts })
    }

    /// Renders every row; a table gets a header line (from `headers`) and aligned columns.
    pub fn render(&self, rows: &[Row], headers: &[(&str, &str)]) -> String {
        let mut lines = Vec::new();
        if self.table {
            let header: String = self
                .parts
                .iter()
                .map(|p| match p {
                    Part::Text(t) => t.clone(),
                    Part::Field(path) | Part::Json(path) => {
                        let name = path.join(".");
                        headers
                            .iter()
                            .find(|(k, _)| *k == name)
                            .map(|(_, h)| h.to_string())
                            .unwrap_or_else(|| name.to_uppercase())
                    }
                    Part::Label(_) => "LABEL".into(),
                })
                .collect();
            lines.push(header);
        }
        for row in rows {
            lines.push(self.render_row(row));
        }
        if self.table {
            return tabulate(&lines);
        }
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn render_row(&self, row: &Row) -> String {
        self.render_value(&Value::Object(
            row.iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        ))
    }

    /// Renders the template once with `root` as `.` (one `inspect` object, one row).
    pub fn render_value(&self, root: &Value) -> String {
        let lookup = |path: &[String]| -> Value {
            let mut v = root;
            for p in path {
                match v.get(p) {
                    Some(next) => v = next,
                    None => return Value::Null,
                }
            }
            v.clone()
        };
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Field(path) => plain(&lookup(path)),
                Part::Json(path) => go_json(&lookup(path)),
                Part::Label(key) => label(root, key),
            })
            .collect()
    }
}

/// `{{.Label "key"}}`: from a row's `k=v,...` string, or an object's `Labels` map.
fn label(root: &Value, key: &str) -> String {
    match &root["Labels"] {
        Value::String(all) => all
            .split(',')
            .find_map(|kv| {
                kv.split_once('=')
                    .filter(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
            })
            .unwrap_or_default(),
        Value::Object(m) => m.get(key).map(plain).unwrap_or_default(),
        _ => String::new(),
    }
}

fn parse_action(action: &str, format: &str) -> anyhow::Result<Part> {
    let path = |s: &str| -> anyhow::Result<Vec<String>> {
        let s = s.trim();
        if s == "." {
            return Ok(vec![]);
        }
        let Some(p) = s.strip_prefix('.') else {
            bail!(
                "template parsing error in {format:?}: {s:?} is not a field (write {{{{.Name}}}})"
            );
        };
        Ok(p.split('.').map(str::to_string).collect())
    };
    if let Some(arg) = action.strip_prefix("json ") {
        return Ok(Part::Json(path(arg)?));
    }
    if let Some(arg) = action.strip_prefix(".Label ") {
        return Ok(Part::Label(arg.trim().trim_matches('"').to_string()));
    }
    Ok(Part::Field(path(action)?))
}

/// JSON as Go's `json.Marshal` writes it: `<`, `>` and `&` escaped (they can only occur
/// inside strings, so replacing them in the text is exact).
fn go_json(v: &Value) -> String {
    v.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// A value as Go's template prints it: strings bare, null as `<no value>`.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<no value>".into(),
        other => other.to_string(),
    }
}

/// Aligns tab-separated cells like docker's tabwriter (min width 10, padding 3); the last
/// cell of each line is not padded.
pub fn tabulate(lines: &[String]) -> String {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for r in &rows {
        for (i, c) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            let w = (c.chars().count() + 3).max(10);
            if widths.len() <= i {
                widths.push(w);
            } else {
                widths[i] = widths[i].max(w);
            }
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            out.push_str(c);
            if i + 1 < r.len() {
                out.push_str(&" ".repeat(widths[i] - c.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

/// Re-indents JSON text as Go's `json.Indent` with four spaces (what `docker inspect`
/// prints), keeping the daemon's key order and number spelling. `raw` must be valid JSON.
pub fn indent_json(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = raw.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"    ".repeat(depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            ' ' | '\t' | '\n' | '\r' => {}
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // An empty object or array stays on one line.
                while chars.peek().is_some_and(|n| n.is_ascii_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}') | Some(']')) {
                    out.push(chars.next().expect("peeked"));
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            _ => out.push(c),
        }
    }
    out
}

/// go-units `HumanDuration`: "Less than a second", "5 seconds", "About a minute", ...
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let minutes = s / 60;
    let hours = (s as f64 / 3600.0 + 0.5) as i64;
    match () {
        _ if s < 1 => "Less than a second".into(),
        _ if s == 1 => "1 second".into(),
        _ if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", s / 3600 / 24 / 365),
    }
}

/// go-units `HumanSizeWithPrecision(_, 3)`, as docker lists sizes: decimal units, 3
/// significant digits ("1.99MB", "512kB").
pub fn human_size(bytes: f64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    format!("{}{}", significant(v, 3), units[i])
}

/// go-units `BytesSize`: binary units with up to 4 significant digits ("1.5KiB",
/// "7.763GiB"), as `docker stats` and `docker info` show sizes.
pub fn bytes_size(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{}{}", significant(v, 4), units[i])
}

/// `v` (below 10000) with `n` (3 or 4) significant digits and no trailing zeros, as Go's
/// `%.{n}g`.
pub fn significant(v: f64, n: usize) -> String {
    let int_digits = if v >= 1000.0 {
        4
    } else if v >= 100.0 {
        3
    } else if v >= 10.0 {
        2
    } else {
        1
    };
    let digits = n.saturating_sub(int_digits);
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Seconds since the epoch, now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `"sha256:abcdef..."` → the first 12 hex digits, as docker shows ids.
pub fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.chars().take(12).collect()
}

/// Cuts `s` to `max` characters with an ellipsis, as docker's `Ellipsis`.
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row() -> Row {
        let mut r = Row::new();
        r.insert("ID", json!("0123456789ab"));
        r.insert("Names", json!("demo"));
        r.insert("Labels", json!("a=1,b=two"));
        r
    }

    #[test]
    fn templates() {
        let t = Template::parse("{{.ID}}: {{.Names}}\\t{{.Label \"b\"}} {{json .Names}}").unwrap();
        assert_eq!(
            t.render(&[row()], &[]),
            "0123456789ab: demo\ttwo \"demo\"\n"
        );
        let t = Template::parse("json").unwrap();
        assert_eq!(
            t.render(&[row()], &[]),
            "{\"ID\":\"0123456789ab\",\"Labels\":\"a=1,b=two\",\"Names\":\"demo\"}\n"
        );
        assert_eq!(
            Template::parse("{{.Nope}}").unwrap().render(&[row()], &[]),
            "<no value>\n"
        );
        assert!(Template::parse("{{.ID").is_err());
        assert!(Template::parse("{{ID}}").is_err());
    }

    #[test]
    fn tables_align_like_docker() {
        let t = Template::parse("table {{.ID}}\t{{.Names}}").unwrap();
        assert_eq!(
            t.render(&[row()], &[("ID", "CONTAINER ID"), ("Names", "NAMES")]),
            "CONTAINER ID   NAMES\n0123456789ab   demo\n"
        );
        assert_eq!(
            tabulate(&["A\tB".into(), "x\ty".into()]),
            "A         B\nx         y\n"
        );
    }

    #[test]
    fn indents_like_go() {
        let raw = r#"[{"Id":"x","Args":[],"State":{"Running":false,"Pid":0},"Env":["A=1","B=\"{,}\""],"Cfg":{ }}]"#;
        let want = "[\n    {\n        \"Id\": \"x\",\n        \"Args\": [],\n        \"State\": {\n            \"Running\": false,\n            \"Pid\": 0\n        },\n        \"Env\": [\n            \"A=1\",\n            \"B=\\\"{,}\\\"\"\n        ],\n        \"Cfg\": {}\n    }\n]";
        assert_eq!(indent_json(raw), want);
        let v: Value = serde_json::from_str(&indent_json(raw)).unwrap();
        assert_eq!(v, serde_json::from_str::<Value>(raw).unwrap());
    }

    #[test]
    fn human_units() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_size(2140160.0), "2.14MB");
        assert_eq!(human_size(1986000.0), "1.99MB");
        assert_eq!(human_size(1990000.0), "1.99MB");
        assert_eq!(human_size(512.0), "512B");
        assert_eq!(human_size(123456789.0), "123MB");
        assert_eq!(short_id("sha256:33cf55ad9331ed5da0f6"), "33cf55ad9331");
        assert_eq!(
            ellipsis("\"sh -c 'exit 3' and more\"", 20),
            "\"sh -c 'exit 3' and…"
        );
    }
}
