//! Dockerfile instructions applied to an image's config, as `docker import -c` and
//! `docker commit -c` take them: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, VOLUME,
//! STOPSIGNAL.

use std::collections::HashMap;

use oci_spec::image::Config;

use crate::error::{ImageError, Result};

const SUPPORTED: &str = "CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL";

/// Applies each change, in order, to `config`. As Docker, a change may hold several
/// instruction lines (a backslash at the end of a line continues it; empty lines and `#`
/// comments are skipped). As a Dockerfile's ENTRYPOINT, an ENTRYPOINT change clears the
/// command unless a CMD change came before it.
pub fn apply(config: &mut Config, changes: &[String]) -> Result<()> {
    let mut cmd_set = false;
    for c in changes.iter().flat_map(|c| instructions(c)) {
        match apply_one(config, &c)? {
            Applied::Cmd => cmd_set = true,
            Applied::Entrypoint if !cmd_set => {
                config.set_cmd(None);
            }
            _ => {}
        }
    }
    Ok(())
}

/// The instructions of one change: its lines, continuations joined.
fn instructions(change: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in change.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                cur.push_str(head);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// Which instruction a change was, where it matters to the ones after it.
enum Applied {
    Cmd,
    Entrypoint,
    Other,
}

fn bad(change: &str, reason: impl Into<String>) -> ImageError {
    ImageError::Change {
        change: change.to_string(),
        reason: reason.into(),
    }
}

fn apply_one(config: &mut Config, change: &str) -> Result<Applied> {
    let change_t = change.trim();
    let (word, rest) = change_t
        .split_once(char::is_whitespace)
        .map(|(w, r)| (w, r.trim()))
        .unwrap_or((change_t, ""));
    if rest.is_empty() {
        return Err(bad(
            change,
            format!("{} needs an argument", word.to_uppercase()),
        ));
    }
    match word.to_ascii_uppercase().as_str() {
        "CMD" => {
            config.set_cmd(Some(exec_or_shell(rest)));
            return Ok(Applied::Cmd);
        }
        "ENTRYPOINT" => {
            config.set_entrypoint(Some(exec_or_shell(rest)));
            return Ok(Applied::Entrypoint);
        }
        "ENV" => {
            // A variable already set keeps its place (Docker's dispatchEnv).
            let mut env = config.env().clone().unwrap_or_default();
            for (k, v) in pairs(change, rest)? {
                let new = format!("{k}={v}");
                match env
                    .iter_mut()
                    .find(|e| e.split_once('=').map_or(e.as_str(), |(ek, _)| ek) == k)
                {
                    Some(e) => *e = new,
                    None => env.push(new),
                }
            }
            config.set_env(Some(env));
        }
        "LABEL" => {
            let mut labels: HashMap<String, String> = config.labels().clone().unwrap_or_default();
            labels.extend(pairs(change, rest)?);
            config.set_labels(Some(labels));
        }
        "WORKDIR" => {
            config.set_working_dir(Some(rest.to_string()));
        }
        "USER" => {
            config.set_user(Some(rest.to_string()));
        }
        "STOPSIGNAL" => {
            config.set_stop_signal(Some(rest.to_string()));
        }
        "EXPOSE" => {
            let mut ports = config.exposed_ports().clone().unwrap_or_default();
            for p in words(change, rest)? {
                let p = port(change, &p)?;
                if !ports.contains(&p) {
                    ports.push(p);
                }
            }
            config.set_exposed_ports(Some(ports));
        }
        "VOLUME" => {
            let list = match json_array(rest) {
                Some(v) => v,
                None => words(change, rest)?,
            };
            let mut vols = config.volumes().clone().unwrap_or_default();
            for v in list {
                if v.is_empty() {
                    return Err(bad(change, "VOLUME with an empty path"));
                }
                if !vols.contains(&v) {
                    vols.push(v);
                }
            }
            config.set_volumes(Some(vols));
        }
        other => {
            return Err(bad(
                change,
                format!("{other} is not a change docker import takes; use one of {SUPPORTED}"),
            ))
        }
    }
    Ok(Applied::Other)
}

fn json_array(s: &str) -> Option<Vec<String>> {
    if s.starts_with('[') {
        serde_json::from_str(s).ok()
    } else {
        None
    }
}

/// `["a","b"]` is exec form; anything else runs through `/bin/sh -c`.
fn exec_or_shell(s: &str) -> Vec<String> {
    json_array(s).unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into(), s.to_string()])
}

/// Splits on whitespace, honouring double and single quotes and backslash escapes.
fn words(change: &str, s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                in_word = true;
                match chars.next() {
                    Some(n) => cur.push(n),
                    None => return Err(bad(change, "ends with a lone backslash")),
                }
            }
            (_, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(bad(change, "unterminated quote"));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// `k=v k2="v 2"`, or the legacy `k value with spaces`.
fn pairs(change: &str, s: &str) -> Result<Vec<(String, String)>> {
    let first = s.split_whitespace().next().unwrap_or_default();
    if !first.contains('=') {
        let value = s[first.len()..].trim();
        let v = words(change, value)?.join(" ");
        return Ok(vec![(first.to_string(), v)]);
    }
    let mut out = Vec::new();
    for w in words(change, s)? {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| bad(change, format!("{w:?} is not KEY=VALUE")))?;
        if k.is_empty() {
            return Err(bad(change, "empty key"));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// `80` -> `80/tcp`; `53/udp` kept; the port must be 1-65535.
fn port(change: &str, p: &str) -> Result<String> {
    let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad(
            change,
            format!("port {p:?}: protocol must be tcp, udp or sctp"),
        ));
    }
    match num.parse::<u16>() {
        Ok(n) if n > 0 => Ok(format!("{n}/{proto}")),
        _ => Err(bad(
            change,
            format!("port {p:?} is not a number from 1 to 65535"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(changes: &[&str]) -> Result<Config> {
        let mut c = Config::default();
        apply(
            &mut c,
            &changes.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )?;
        Ok(c)
    }

    #[test]
    fn docker_import_changes() {
        let c = cfg(&[
            r#"CMD ["/bin/sh","-c","echo hi"]"#,
            "ENTRYPOINT /bin/run --x",
            "ENV A=1 B=\"two words\"",
            "ENV C three four",
            "ENV A=replaced",
            "WORKDIR /srv",
            "user daemon",
            "LABEL a=b \"c d\"=e",
            "EXPOSE 80 53/udp 80/tcp",
            r#"VOLUME ["/data", "/logs"]"#,
            "VOLUME /more",
            "STOPSIGNAL SIGINT",
        ])
        .unwrap();
        assert_eq!(c.cmd().as_deref().unwrap(), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(
            c.entrypoint().as_deref().unwrap(),
            ["/bin/sh", "-c", "/bin/run --x"]
        );
        assert_eq!(
            c.env().as_deref().unwrap(),
            ["A=replaced", "B=two words", "C=three four"]
        );
        assert_eq!(c.working_dir().as_deref(), Some("/srv"));
        assert_eq!(c.user().as_deref(), Some("daemon"));
        let labels = c.labels().clone().unwrap();
        assert_eq!(labels["a"], "b");
        assert_eq!(labels["c d"], "e");
        assert_eq!(c.exposed_ports().as_deref().unwrap(), ["80/tcp", "53/udp"]);
        assert_eq!(c.volumes().as_deref().unwrap(), ["/data", "/logs", "/more"]);
        assert_eq!(c.stop_signal().as_deref(), Some("SIGINT"));
    }

    #[test]
    fn one_change_may_hold_several_lines() {
        let c = cfg(&[
            "ENV A=1\n\n# a comment\nCMD [\"/bin/sh\", \\\n  \"-c\", \"true\"]\nUSER daemon",
        ])
        .unwrap();
        assert_eq!(c.env().as_deref().unwrap(), ["A=1"]);
        assert_eq!(c.cmd().as_deref().unwrap(), ["/bin/sh", "-c", "true"]);
        assert_eq!(c.user().as_deref(), Some("daemon"));
    }

    #[test]
    fn entrypoint_clears_the_command_unless_a_cmd_came_first() {
        let mut c = Config::default();
        c.set_cmd(Some(vec!["old".into()]));
        apply(&mut c, &[r#"ENTRYPOINT ["/e"]"#.to_string()]).unwrap();
        assert_eq!(c.cmd(), &None);
        let c = cfg(&[r#"CMD ["a"]"#, r#"ENTRYPOINT ["/e"]"#]).unwrap();
        assert_eq!(c.cmd().as_deref().unwrap(), ["a"]);
        assert_eq!(c.entrypoint().as_deref().unwrap(), ["/e"]);
    }

    #[test]
    fn bad_changes_are_named() {
        for (c, why) in [
            ("RUN echo", "not a change docker import takes"),
            ("CMD", "needs an argument"),
            ("EXPOSE 99999", "1 to 65535"),
            ("EXPOSE 80/icmp", "protocol"),
            ("ENV A=\"open", "unterminated"),
            ("LABEL =x", "empty key"),
        ] {
            let e = cfg(&[c]).unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains(c.split(' ').next().unwrap()),
                "{c}: {e}"
            );
        }
    }
}
