//! Registry credentials: Docker's config.json (`auths` entries holding base64 `user:password`)
//! and the `WWW-Authenticate` challenges registries answer with (Basic, or Bearer with a
//! token endpoint). Passwords never appear in `Debug` output or messages.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::error::{RegistryError, Result};

/// The key Docker files Docker Hub's credentials under.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A user name and password (or a registry token used as the password).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The `Authorization: Basic` value.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// Decodes Docker's `X-Registry-Auth` header: base64url (padded or not) JSON with
    /// `username` and `password` (`identitytoken` is used as the password when present).
    /// An empty header or `{}` means anonymous.
    pub fn from_registry_auth_header(h: &str) -> Result<Option<Credentials>, String> {
        let h = h.trim();
        if h.is_empty() {
            return Ok(None);
        }
        let bytes = decode_b64(h).ok_or("X-Registry-Auth is not base64")?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("X-Registry-Auth is not JSON: {e}"))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let password = field("identitytoken").or_else(|| field("password"));
        match (field("username"), password) {
            (Some(username), Some(password)) => Ok(Some(Credentials { username, password })),
            _ => Ok(None),
        }
    }
}

impl Credentials {
    /// Encodes Docker's `X-Registry-Auth` header for `server` (base64url JSON).
    pub fn to_registry_auth_header(&self, server: &str) -> String {
        let v = serde_json::json!({
            "username": self.username,
            "password": self.password,
            "serveraddress": server,
        });
        base64::engine::general_purpose::URL_SAFE.encode(v.to_string())
    }
}

/// Standard or URL-safe base64, padded or not (clients differ).
fn decode_b64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [URL_SAFE, URL_SAFE_NO_PAD, STANDARD, STANDARD_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

/// The config.json key for a registry domain, as Docker files it.
pub fn config_key(domain: &str) -> String {
    if domain == "docker.io" || domain == "index.docker.io" || domain == "registry-1.docker.io" {
        DOCKER_HUB_KEY.to_string()
    } else {
        domain.to_string()
    }
}

/// Docker's client config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    pub fn at(path: impl Into<PathBuf>) -> ConfigFile {
        ConfigFile { path: path.into() }
    }

    /// The file Docker's CLI uses.
    pub fn default_location() -> ConfigFile {
        let dir = match std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => {
                let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
                Path::new(&home).join(".docker")
            }
        };
        ConfigFile::at(dir.join("config.json"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, reason: impl Into<String>) -> RegistryError {
        RegistryError::Config {
            path: self.path.display().to_string(),
            reason: reason.into(),
        }
    }

    fn read(&self) -> Result<Map<String, Value>> {
        match fs::read(&self.path) {
            Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(Map::new()),
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(Value::Object(m)) => Ok(m),
                Ok(_) => Err(self.err("not a JSON object")),
                Err(e) => Err(self.err(format!("not valid JSON: {e}"))),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
            Err(e) => Err(self.err(e.to_string())),
        }
    }

    /// The credentials stored for `domain`, if any. Entries written as full URLs
    /// (`https://host/v1/`) match too.
    pub fn get(&self, domain: &str) -> Result<Option<Credentials>> {
        let cfg = self.read()?;
        let Some(Value::Object(auths)) = cfg.get("auths") else {
            return Ok(None);
        };
        let want = config_key(domain);
        for (key, entry) in auths {
            if key != &want && host_of_key(key) != domain {
                continue;
            }
            if let Some(creds) = entry_credentials(entry) {
                return Ok(Some(creds));
            }
        }
        Ok(None)
    }

    /// Stores credentials for `domain` (mode 0600, written atomically), keeping every other
    /// setting in the file.
    pub fn store(&self, domain: &str, creds: &Credentials) -> Result<()> {
        let mut cfg = self.read()?;
        let auths = cfg
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(auths) = auths else {
            return Err(self.err("\"auths\" is not an object"));
        };
        let raw = format!("{}:{}", creds.username, creds.password);
        let mut entry = Map::new();
        entry.insert(
            "auth".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
        );
        auths.insert(config_key(domain), Value::Object(entry));
        self.write(&cfg)
    }

    /// Removes the credentials for `domain`; false when there were none.
    pub fn erase(&self, domain: &str) -> Result<bool> {
        let mut cfg = self.read()?;
        let Some(Value::Object(auths)) = cfg.get_mut("auths") else {
            return Ok(false);
        };
        let want = config_key(domain);
        let keys: Vec<String> = auths
            .keys()
            .filter(|k| **k == want || host_of_key(k) == domain)
            .cloned()
            .collect();
        for k in &keys {
            auths.remove(k);
        }
        if keys.is_empty() {
            return Ok(false);
        }
        self.write(&cfg)?;
        Ok(true)
    }

    fn write(&self, cfg: &Map<String, Value>) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| self.err(format!("create directory: {e}")))?;
        let tmp = self.path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(cfg).map_err(|e| self.err(e.to_string()))?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| self.err(format!("write: {e}")))?;
        f.write_all(&json)
            .and_then(|_| f.write_all(b"\n"))
            .and_then(|_| f.sync_all())
            .map_err(|e| self.err(format!("write: {e}")))?;
        fs::rename(&tmp, &self.path).map_err(|e| self.err(format!("replace: {e}")))
    }
}

/// `https://host:port/v1/` -> `host:port`; a bare `host:port` stays.
fn host_of_key(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

fn entry_credentials(entry: &Value) -> Option<Credentials> {
    let field = |k: &str| {
        entry
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(auth) = field("auth") {
        let raw = decode_b64(auth)?;
        let raw = String::from_utf8(raw).ok()?;
        let (u, p) = raw.split_once(':')?;
        return Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        });
    }
    match (field("username"), field("password")) {
        (Some(u), Some(p)) => Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        }),
        _ => None,
    }
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer` (lowercased).
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="https://auth/token",service="registry",scope="repository:a:pull"`.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            // A quoted string; `\"` escapes a quote.
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            (v, &q[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, value);
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/busybox:pull,push");
        let b = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(b.scheme, "basic");
        assert_eq!(b.params["realm"], "Registry Realm");
        assert!(parse_challenge("").is_none());
    }

    #[test]
    fn config_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d/config.json");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, r#"{"auths":{},"psFormat":"table {{.ID}}"}"#).unwrap();
        let cf = ConfigFile::at(&path);
        let creds = Credentials {
            username: "alice".into(),
            password: "s3:cret".into(),
        };
        cf.store("127.0.0.1:5000", &creds).unwrap();
        cf.store("docker.io", &creds).unwrap();
        assert_eq!(cf.get("127.0.0.1:5000").unwrap(), Some(creds.clone()));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(DOCKER_HUB_KEY), "{text}");
        assert!(text.contains("psFormat"), "{text}");
        assert!(!text.contains("s3:cret"), "{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(cf.erase("127.0.0.1:5000").unwrap());
        assert!(!cf.erase("127.0.0.1:5000").unwrap());
        assert_eq!(cf.get("127.0.0.1:5000").unwrap(), None);
        assert_eq!(cf.get("docker.io").unwrap(), Some(creds.clone()));
        assert!(!format!("{creds:?}").contains("s3:cret"));
    }

    #[test]
    fn registry_auth_header() {
        use base64::engine::general_purpose::URL_SAFE;
        let h = URL_SAFE.encode(r#"{"username":"u","password":"p","serveraddress":"x"}"#);
        assert_eq!(
            Credentials::from_registry_auth_header(&h).unwrap(),
            Some(Credentials {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(
            Credentials::from_registry_auth_header(&URL_SAFE.encode("{}")).unwrap(),
            None
        );
        assert!(Credentials::from_registry_auth_header("!!!").is_err());
        let c = Credentials {
            username: "a".into(),
            password: "b?>".into(),
        };
        let h = c.to_registry_auth_header("127.0.0.1:5000");
        assert_eq!(Credentials::from_registry_auth_header(&h).unwrap(), Some(c));
    }
}
