//! The Bearer-token flow (Docker Hub's) against a small fake registry and token endpoint on
//! 127.0.0.1: the challenge is followed, the token endpoint gets the credentials and the
//! scope, and the token is sent on the next request.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use berth_image::{ImageStore, Reference};
use berth_registry::{pull, Credentials, PullOptions, RegistryError, RegistryOptions};

/// Serves until dropped with the test; records each request line and Authorization header.
fn fake_registry() -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (a, s) = (addr.clone(), seen.clone());
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut auth = String::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("authorization:") {
                    auth = v.trim().to_string();
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            s.lock().unwrap().push(format!("{path} [{auth}]"));
            let challenge =
                format!("WWW-Authenticate: Bearer realm=\"http://{a}/token\",service=\"fake\"\r\n");
            let (status, extra, body) = if path.starts_with("/token") {
                // base64("u:p") = dTpw
                if auth == "basic dtpw" {
                    ("200 OK", String::new(), r#"{"token":"tok-1"}"#.to_string())
                } else {
                    ("401 Unauthorized", String::new(), "{}".to_string())
                }
            } else if auth != "bearer tok-1" {
                ("401 Unauthorized", challenge, "{}".to_string())
            } else if path == "/v2/" {
                ("200 OK", String::new(), "{}".to_string())
            } else {
                (
                    "404 Not Found",
                    String::new(),
                    r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
                        .to_string(),
                )
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, seen)
}

fn opts(password: &str) -> RegistryOptions {
    RegistryOptions {
        insecure: Vec::new(),
        credentials: Some(Credentials {
            username: "u".into(),
            password: password.into(),
        }),
    }
}

#[test]
fn bearer_token_flow() {
    let (addr, seen) = fake_registry();
    berth_registry::login(&addr, &opts("p")).unwrap();
    let err = berth_registry::login(&addr, &opts("bad")).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    let dir = berth_testkit::tempdir("bearer");
    let store = ImageStore::open(dir.path()).unwrap();
    let r = Reference::parse(&format!("{addr}/team/app:v1")).unwrap();
    let o = PullOptions {
        registry: opts("p"),
        ..Default::default()
    };
    // With the token the registry answers: the manifest is unknown (not "unauthorized").
    let err = pull(&store, &r, &o, &|_| {}).unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|l| l.contains("scope=repository%3Ateam%2Fapp%3Apull")
                && l.contains("service=fake")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.starts_with("/v2/team/app/manifests/v1 [bearer tok-1]")),
        "{seen:?}"
    );
}
