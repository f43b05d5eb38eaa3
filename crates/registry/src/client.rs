//! One registry, as seen through the OCI distribution API: where it is (HTTPS, or plain HTTP
//! for insecure registries), how it wants to be authenticated, and requests with that
//! authentication applied and refreshed when a `WWW-Authenticate` challenge asks for it.

use std::collections::HashMap;
use std::io::Read;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::{Request, Response};

use crate::auth::{parse_challenge, Challenge, Credentials};
use crate::error::{RegistryError, Result};

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries reached over plain HTTP when HTTPS fails (`--insecure-registry`): `host`,
    /// `host:port` or an IPv4 CIDR. Loopback (`localhost`, 127.0.0.0/8, `::1`) always is, as
    /// in Docker.
    pub insecure: Vec<String>,
    /// Credentials for the registry. None: anonymous.
    pub credentials: Option<Credentials>,
}

/// Where Docker Hub's API lives (`docker.io` names the registry, not the host).
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

/// Whether `domain` (`host` or `host:port`) may be reached over plain HTTP.
pub fn is_insecure(domain: &str, insecure: &[String]) -> bool {
    let host = host_part(domain);
    if host == "localhost" || host == "::1" || host == "[::1]" {
        return true;
    }
    let ip = host.parse::<Ipv4Addr>().ok();
    if ip.is_some_and(|ip| ip.is_loopback()) {
        return true;
    }
    insecure.iter().any(|e| {
        let e = e.trim();
        if e == domain || e == host {
            return true;
        }
        match (e.split_once('/'), ip) {
            (Some((net, bits)), Some(ip)) => match (net.parse::<Ipv4Addr>(), bits.parse::<u32>()) {
                (Ok(net), Ok(bits)) if bits <= 32 => {
                    let mask = if bits == 0 {
                        0
                    } else {
                        u32::MAX << (32 - bits)
                    };
                    u32::from(ip) & mask == u32::from(net) & mask
                }
                _ => false,
            },
            _ => false,
        }
    })
}

fn host_part(domain: &str) -> &str {
    if domain.starts_with('[') {
        return domain.split(']').next().map_or(domain, |h| &h[1..]);
    }
    domain.rsplit_once(':').map_or(domain, |(h, _)| h)
}

/// A request body. Only `Bytes` and `None` can be sent twice (after a new token).
pub(crate) enum Payload<'a> {
    None,
    Bytes(&'a [u8]),
    Reader(Box<dyn Read + 'a>, u64),
}

enum Auth {
    /// Not asked yet (before the ping).
    Unknown,
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        /// Scope -> token.
        tokens: HashMap<String, String>,
    },
}

pub(crate) struct Client {
    agent: ureq::Agent,
    /// The registry as references name it (`docker.io`, `127.0.0.1:5000`).
    pub(crate) registry: String,
    host: String,
    insecure: bool,
    base: Mutex<Option<String>>,
    creds: Option<Credentials>,
    auth: Mutex<Auth>,
}

pub(crate) type Resp = Response<ureq::Body>;

impl Client {
    pub(crate) fn new(registry: &str, opts: &RegistryOptions) -> Client {
        let host = if registry == "docker.io" || registry == "index.docker.io" {
            DOCKER_HUB_HOST.to_string()
        } else {
            registry.to_string()
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .timeout_per_read(Some(Duration::from_secs(300)))
            .max_idle_connections_per_host(8)
            .build();
        Client {
            agent: ureq::Agent::new_with_config(config),
            registry: registry.to_string(),
            insecure: is_insecure(registry, &opts.insecure),
            host,
            base: Mutex::new(None),
            creds: opts.credentials.clone(),
            auth: Mutex::new(Auth::Unknown),
        }
    }

    fn unreachable(&self, e: impl ToString) -> RegistryError {
        RegistryError::Unreachable {
            registry: self.registry.clone(),
            cause: e.to_string(),
        }
    }

    /// `GET /v2/`: finds the scheme (HTTPS, or HTTP for an insecure registry) and how the
    /// registry authenticates. With credentials, checks them (a refused login fails here).
    pub(crate) fn ping(&self) -> Result<()> {
        let schemes: &[&str] = if self.insecure {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut last = None;
        for scheme in schemes {
            let base = format!("{scheme}://{}", self.host);
            let req = Request::get(format!("{base}/v2/"))
                .body(())
                .expect("valid request");
            match self.agent.run(req) {
                Ok(resp) => {
                    *self.base.lock().unwrap_or_else(|p| p.into_inner()) = Some(base);
                    let auth = match resp.status().as_u16() {
                        401 => match challenge(&resp) {
                            Some(c) if c.scheme == "bearer" => Auth::Bearer {
                                realm: c.params.get("realm").cloned().unwrap_or_default(),
                                service: c.params.get("service").cloned(),
                                tokens: HashMap::new(),
                            },
                            _ => Auth::Basic,
                        },
                        _ => Auth::Anonymous,
                    };
                    let basic = matches!(auth, Auth::Basic);
                    *self.auth.lock().unwrap_or_else(|p| p.into_inner()) = auth;
                    if basic && self.creds.is_some() {
                        let resp = self.send("GET", "/v2/", &[], Payload::None, "")?;
                        if resp.status() == 401 {
                            return Err(self.denied("the registry", resp));
                        }
                    }
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(self.unreachable(last.map(|e| e.to_string()).unwrap_or_default()))
    }

    /// `docker login`: pings, and for a token registry asks for a token with the credentials
    /// (no scope), so refused credentials fail here.
    pub(crate) fn login(&self) -> Result<()> {
        self.ping()?;
        let auth = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        if let Auth::Bearer { realm, service, .. } = &*auth {
            if self.creds.is_some() {
                self.fetch_token(realm, service.as_deref(), "")?;
            }
        }
        Ok(())
    }

    /// A repository's tags (first 10000; registries page beyond that).
    pub(crate) fn tags(&self, repo: &str) -> Result<Vec<String>> {
        let what = format!("tags of {}/{repo}", self.registry);
        let mut resp = self.send(
            "GET",
            &format!("/v2/{repo}/tags/list?n=10000"),
            &[],
            Payload::None,
            &format!("repository:{repo}:pull"),
        )?;
        if resp.status() != 200 {
            return Err(self.status_error(&what, resp));
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_vec()
            .map_err(|e| self.protocol(&what, e))?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| self.protocol(&what, e))?;
        let mut tags: Vec<String> = v
            .get("tags")
            .and_then(|t| t.as_array())
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        tags.sort();
        Ok(tags)
    }

    pub(crate) fn base(&self) -> String {
        self.base
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| format!("https://{}", self.host))
    }

    /// An absolute URL for a path (`/v2/...`) or a `Location` header (absolute or not).
    pub(crate) fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base())
        }
    }

    /// The `Authorization` header for `scope`, fetching a token first if the registry wants
    /// one. `scope` is space-separated token scopes (`repository:a/b:pull`).
    fn authorization(&self, scope: &str) -> Result<Option<String>> {
        let mut auth = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *auth {
            Auth::Unknown | Auth::Anonymous => Ok(None),
            Auth::Basic => Ok(self.creds.as_ref().map(Credentials::basic_header)),
            Auth::Bearer {
                realm,
                service,
                tokens,
            } => {
                if let Some(t) = tokens.get(scope) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let t = self.fetch_token(realm, service.as_deref(), scope)?;
                tokens.insert(scope.to_string(), t.clone());
                Ok(Some(format!("Bearer {t}")))
            }
        }
    }

    /// Asks the token endpoint for a token covering `scope` (with the credentials, if any).
    fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String> {
        let mut url = realm.to_string();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        let mut add = |k: &str, v: &str| {
            url.push(sep);
            url.push_str(k);
            url.push('=');
            url.push_str(&encode(v));
            sep = '&';
        };
        if let Some(s) = service {
            add("service", s);
        }
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            add("scope", s);
        }
        let mut req = Request::get(&url);
        if let Some(c) = &self.creds {
            req = req.header("Authorization", c.basic_header());
        }
        let mut resp = self
            .agent
            .run(req.body(()).expect("valid request"))
            .map_err(|e| self.unreachable(format!("token endpoint {realm}: {e}")))?;
        match resp.status().as_u16() {
            200 => {}
            401 | 403 => {
                return Err(RegistryError::Unauthorized {
                    registry: self.registry.clone(),
                    what: format!("a token for {scope}"),
                    message: format!(
                        "the token endpoint {realm} refused the {}",
                        if self.creds.is_some() {
                            "credentials (wrong user name or password?)"
                        } else {
                            "anonymous request (credentials needed?)"
                        }
                    ),
                })
            }
            s => {
                return Err(RegistryError::Status {
                    registry: self.registry.clone(),
                    what: format!("the token request to {realm}"),
                    status: s,
                    message: error_text(&mut resp),
                })
            }
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| self.protocol("token response", e))?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| self.protocol("token response", e))?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| self.protocol("token response", "no token in it"))
    }

    pub(crate) fn protocol(&self, what: &str, reason: impl ToString) -> RegistryError {
        RegistryError::Protocol {
            registry: self.registry.clone(),
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Sends a request with the authorization for `scope`. On a 401 whose challenge asks for
    /// a token (perhaps for another scope), fetches it and sends once more if the body can
    /// be sent again.
    pub(crate) fn send(
        &self,
        method: &str,
        path_or_url: &str,
        headers: &[(&str, &str)],
        body: Payload<'_>,
        scope: &str,
    ) -> Result<Resp> {
        let url = self.url(path_or_url);
        let replay: Option<&[u8]> = match &body {
            Payload::None => Some(&[]),
            Payload::Bytes(b) => Some(b),
            Payload::Reader(..) => None,
        };
        let auth = self.authorization(scope)?;
        let resp = self.run(method, &url, headers, auth.as_deref(), body)?;
        if resp.status() != 401 {
            return Ok(resp);
        }
        let Some(bytes) = replay else {
            return Ok(resp);
        };
        let Some(c) = challenge(&resp).filter(|c| c.scheme == "bearer") else {
            return Ok(resp);
        };
        let want = match c.params.get("scope") {
            Some(s) if !scope.split(' ').any(|x| x == s) => format!("{scope} {s}"),
            _ => scope.to_string(),
        };
        {
            let mut auth = self.auth.lock().unwrap_or_else(|p| p.into_inner());
            match &mut *auth {
                Auth::Bearer { tokens, .. } => {
                    tokens.remove(&want);
                }
                other => {
                    *other = Auth::Bearer {
                        realm: c.params.get("realm").cloned().unwrap_or_default(),
                        service: c.params.get("service").cloned(),
                        tokens: HashMap::new(),
                    }
                }
            }
        }
        let auth = self.authorization(&want)?;
        let body = if method == "GET" || method == "HEAD" {
            Payload::None
        } else {
            Payload::Bytes(bytes)
        };
        self.run(method, &url, headers, auth.as_deref(), body)
    }

    fn run(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        auth: Option<&str>,
        body: Payload<'_>,
    ) -> Result<Resp> {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let res = match body {
            Payload::None if method == "GET" || method == "HEAD" || method == "DELETE" => self
                .agent
                .run(req.body(()).map_err(|e| self.protocol("request", e))?),
            Payload::None => self.agent.run(
                req.header("Content-Length", "0")
                    .body(&[][..])
                    .map_err(|e| self.protocol("request", e))?,
            ),
            Payload::Bytes(b) => self.agent.run(
                req.header("Content-Length", b.len().to_string())
                    .body(b)
                    .map_err(|e| self.protocol("request", e))?,
            ),
            Payload::Reader(mut r, len) => self.agent.run(
                req.header("Content-Length", len.to_string())
                    .body(ureq::SendBody::from_reader(&mut r))
                    .map_err(|e| self.protocol("request", e))?,
            ),
        };
        res.map_err(|e| self.unreachable(e))
    }

    /// The error for a response that is not what was wanted, in the registry's words.
    pub(crate) fn status_error(&self, what: &str, mut resp: Resp) -> RegistryError {
        let status = resp.status().as_u16();
        let (codes, message) = error_parts(&mut resp);
        match status {
            401 | 403 => RegistryError::Unauthorized {
                registry: self.registry.clone(),
                what: what.to_string(),
                message,
            },
            404 => RegistryError::NotFound {
                registry: self.registry.clone(),
                what: what.to_string(),
                message,
            },
            _ if codes
                .iter()
                .any(|c| c == "NAME_UNKNOWN" || c == "MANIFEST_UNKNOWN") =>
            {
                RegistryError::NotFound {
                    registry: self.registry.clone(),
                    what: what.to_string(),
                    message,
                }
            }
            _ => RegistryError::Status {
                registry: self.registry.clone(),
                what: what.to_string(),
                status,
                message,
            },
        }
    }

    fn denied(&self, what: &str, resp: Resp) -> RegistryError {
        let mut e = self.status_error(what, resp);
        if let RegistryError::Unauthorized { message, .. } = &mut e {
            *message = if self.creds.is_some() {
                format!("{message} (wrong user name or password?)")
            } else {
                format!("{message} (the registry needs credentials)")
            };
        }
        e
    }
}

fn challenge(resp: &Resp) -> Option<Challenge> {
    resp.headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(parse_challenge)
        .max_by_key(|c| c.scheme == "bearer")
}

/// The registry's error codes and a message from its JSON error body (or the status text).
fn error_parts(resp: &mut Resp) -> (Vec<String>, String) {
    let status = resp.status();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 << 10)
        .read_to_string()
        .unwrap_or_default();
    let mut codes = Vec::new();
    let mut msgs = Vec::new();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
        for e in v
            .get("errors")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
        {
            let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
            let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
            codes.push(code.to_string());
            msgs.push(if msg.is_empty() {
                code.to_string()
            } else {
                msg.to_string()
            });
        }
    }
    let message = if msgs.is_empty() {
        let t = text.trim();
        if t.is_empty() || t.len() > 200 {
            status.to_string()
        } else {
            format!("{status}: {t}")
        }
    } else {
        msgs.join("; ")
    };
    (codes, message)
}

fn error_text(resp: &mut Resp) -> String {
    error_parts(resp).1
}

/// Everything but RFC 3986's unreserved characters.
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a query value.
pub(crate) fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_registries() {
        let none: Vec<String> = Vec::new();
        assert!(is_insecure("localhost:5000", &none));
        assert!(is_insecure("127.0.0.1:5000", &none));
        assert!(is_insecure("127.3.2.1", &none));
        assert!(is_insecure("[::1]:5000", &none));
        assert!(!is_insecure("docker.io", &none));
        assert!(!is_insecure("10.1.2.3:5000", &none));
        let list = vec!["10.0.0.0/8".to_string(), "myreg:5000".to_string()];
        assert!(is_insecure("10.1.2.3:5000", &list));
        assert!(is_insecure("myreg:5000", &list));
        assert!(!is_insecure("myreg:6000", &list));
        assert!(!is_insecure("11.1.2.3", &list));
    }

    #[test]
    fn query_encoding() {
        assert_eq!(encode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }
}
