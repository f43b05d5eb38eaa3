//! Image references, parsed and normalised as Docker does (distribution/reference):
//! `alpine` is `docker.io/library/alpine:latest`; `localhost:5000/a/b:tag` keeps its
//! registry; `name@sha256:...` pins a digest.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

pub const DEFAULT_DOMAIN: &str = "docker.io";
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A normalised reference: a domain, a path, and a tag and/or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference format {input:?}: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

impl Reference {
    /// Parses and normalises `s`; a reference with neither tag nor digest gets `:latest`.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let mut r = Reference::parse_name_only(s)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_string());
        }
        Ok(r)
    }

    /// Parses without adding the default tag (`docker save busybox` style repository names
    /// use [`Reference::parse`]; this is for callers that need to know no tag was given).
    pub fn parse_name_only(s: &str) -> Result<Reference, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(err("the reference is empty"));
        }
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err("a 64-digit hex string is an image id, not a name"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|e| err(&e.to_string()))?),
            ),
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/' (a ':' before that is a port).
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            check_tag(t).map_err(err)?;
        }
        if name.is_empty() {
            return Err(err("the repository name is empty"));
        }
        // Docker: the first component is a registry if it has a '.' or ':', is `localhost`, or
        // has upper case letters (which a repository path may not).
        let (domain, path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        check_domain(&domain).map_err(err)?;
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err("repository name must be lowercase"));
        }
        for comp in path.split('/') {
            check_path_component(comp).map_err(err)?;
        }
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(err("repository name must not be more than 255 characters"));
        }
        Ok(Reference {
            domain,
            path,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The path within the registry, e.g. `library/alpine`.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The full repository name, e.g. `docker.io/library/alpine`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The repository name as Docker shows it: `alpine`, `user/app`, `localhost:5000/a/b`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            self.path
                .strip_prefix("library/")
                .filter(|p| !p.contains('/'))
                .unwrap_or(&self.path)
                .to_string()
        } else {
            self.name()
        }
    }

    /// The same reference with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        check_tag(tag).map_err(|reason| ReferenceError {
            input: tag.to_string(),
            reason: reason.to_string(),
        })?;
        Ok(Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    /// The full, canonical form: `docker.io/library/alpine:latest`.
    pub fn canonical(&self) -> String {
        let mut s = self.name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }
}

impl fmt::Display for Reference {
    /// The familiar form Docker prints: `alpine:latest`, `localhost:5000/a/b:tag`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.familiar_name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Reference, ReferenceError> {
        Reference::parse(s)
    }
}

fn check_tag(t: &str) -> Result<(), &'static str> {
    let b = t.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    if b.is_empty() {
        return Err("the tag is empty");
    }
    if b.len() > MAX_TAG_LEN {
        return Err("a tag is at most 128 characters");
    }
    if !word(b[0]) || !b.iter().all(|&c| word(c) || c == b'.' || c == b'-') {
        return Err("a tag is letters, digits, `_`, `.` and `-`, not starting with `.` or `-`");
    }
    Ok(())
}

fn check_domain(d: &str) -> Result<(), &'static str> {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err("a registry port is digits");
        }
    }
    for label in host.split('.') {
        let b = label.as_bytes();
        let ok = !b.is_empty()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-';
        if !ok {
            return Err("a registry host is dot-separated letters, digits and inner `-`");
        }
    }
    Ok(())
}

/// A path component: lowercase alphanumerics separated by `.`, `_`, `__` or runs of `-`.
fn check_path_component(c: &str) -> Result<(), &'static str> {
    const BAD: &str = "a repository path component is lowercase letters and digits, separated by `.`, `_`, `__` or `-`";
    let b = c.as_bytes();
    if b.is_empty() {
        return Err("a repository path has an empty component");
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(BAD);
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return Err(BAD);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_table() {
        let d = format!("sha256:{}", "a".repeat(64));
        let ok: &[(&str, &str, &str)] = &[
            ("alpine", "docker.io/library/alpine:latest", "alpine:latest"),
            (
                "alpine:3.19",
                "docker.io/library/alpine:3.19",
                "alpine:3.19",
            ),
            (
                "library/alpine",
                "docker.io/library/alpine:latest",
                "alpine:latest",
            ),
            (
                "docker.io/alpine",
                "docker.io/library/alpine:latest",
                "alpine:latest",
            ),
            (
                "index.docker.io/library/alpine:edge",
                "docker.io/library/alpine:edge",
                "alpine:edge",
            ),
            (
                "user/app:v1.0-rc_1",
                "docker.io/user/app:v1.0-rc_1",
                "user/app:v1.0-rc_1",
            ),
            (
                "localhost/app",
                "localhost/app:latest",
                "localhost/app:latest",
            ),
            (
                "localhost:5000/a/b:tag",
                "localhost:5000/a/b:tag",
                "localhost:5000/a/b:tag",
            ),
            (
                "quay.io/x/y__z.w-v",
                "quay.io/x/y__z.w-v:latest",
                "quay.io/x/y__z.w-v:latest",
            ),
            (
                "ghcr.io/a/b/c/d:1",
                "ghcr.io/a/b/c/d:1",
                "ghcr.io/a/b/c/d:1",
            ),
        ];
        for (input, canonical, familiar) in ok {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.canonical(), *canonical, "{input}");
            assert_eq!(r.to_string(), *familiar, "{input}");
        }
        let pinned = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(pinned.tag(), None);
        assert_eq!(pinned.canonical(), format!("docker.io/library/busybox@{d}"));
        let both = Reference::parse(&format!("localhost:5000/a:t@{d}")).unwrap();
        assert_eq!(both.tag(), Some("t"));
        assert_eq!(both.digest().unwrap().to_string(), d);

        let bad: &[(&str, &str)] = &[
            ("", "empty"),
            ("Alpine", "lowercase"),
            ("docker.io/Alpine", "lowercase"),
            ("alpine:", "tag is empty"),
            ("alpine:-x", "a tag is"),
            ("alpine:a/b", "port is digits"),
            ("a//b", "empty component"),
            ("-a", "repository path component"),
            ("a..b", "repository path component"),
            ("a@sha256:abc", "64 hex"),
            ("a@md5:abc", "only sha256"),
            ("host:port/a", "port is digits"),
            ("-bad.io/a", "registry host"),
            (&"e".repeat(64), "image id"),
        ];
        for (input, reason) in bad {
            let e = Reference::parse(input).expect_err(input);
            assert!(e.to_string().contains(reason), "{input}: {e}");
        }
        let long = format!("a/{}", "b".repeat(260));
        assert!(Reference::parse(&long).is_err());
        assert!(Reference::parse(&format!("a:{}", "t".repeat(129))).is_err());
    }
}
