//! The `berth` client driven against a scripted fake daemon on a unix socket: checks the
//! requests docker's flow makes (create → attach → wait → start), the hijacked stream, the
//! multiplexed frames and the exit code, without needing a real daemon.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

/// One request as the fake daemon saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: Vec<u8>,
}

fn read_request(r: &mut BufReader<UnixStream>) -> Option<Seen> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let (mut len, mut chunked) = (0usize, false);
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
        if lower == "transfer-encoding: chunked" {
            chunked = true;
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Some(Seen { method, path, body })
}

fn frame(stream: u8, data: &[u8]) -> Vec<u8> {
    let mut f = vec![stream, 0, 0, 0];
    f.extend_from_slice(&(data.len() as u32).to_be_bytes());
    f.extend_from_slice(data);
    f
}

fn json_reply(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A fake daemon for `run`: the attach stream echoes what stdin sends as stdout frames and
/// adds one stderr frame; the wait answers at once with headers, and with exit status 3 once
/// the stream is over.
fn fake_daemon(sock: &Path) -> Arc<Mutex<Vec<Seen>>> {
    let listener = UnixListener::bind(sock).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let done_rx = Arc::new(Mutex::new(done_rx));
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let log = log.clone();
            let done_tx = done_tx.clone();
            let done_rx = done_rx.clone();
            thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                let Some(req) = read_request(&mut r) else {
                    return;
                };
                log.lock().unwrap().push(req.clone());
                let p = req.path.as_str();
                if p.starts_with("/containers/create") {
                    w.write_all(&json_reply(
                        "201 Created",
                        r#"{"Id":"c0ffee","Warnings":[]}"#,
                    ))
                    .unwrap();
                } else if p.starts_with("/containers/c0ffee/attach") {
                    w.write_all(b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n").unwrap();
                    w.write_all(&frame(2, b"from stderr\n")).unwrap();
                    let mut input = Vec::new();
                    r.read_to_end(&mut input).unwrap();
                    w.write_all(&frame(1, &input)).unwrap();
                    drop(w);
                    done_tx.send(()).unwrap();
                } else if p.starts_with("/containers/c0ffee/wait") {
                    w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
                    done_rx.lock().unwrap().recv().unwrap();
                    let body = r#"{"StatusCode":3,"Error":null}"#;
                    w.write_all(format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()).as_bytes())
                        .unwrap();
                } else if p.starts_with("/containers/c0ffee/start") {
                    w.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
                } else {
                    w.write_all(&json_reply(
                        "404 Not Found",
                        r#"{"message":"page not found"}"#,
                    ))
                    .unwrap();
                }
            });
        }
    });
    seen
}

#[test]
fn run_follows_dockers_flow_and_exits_with_the_containers_status() {
    let dir = berth_testkit::tempdir("berth-cli-flow");
    let sock = dir.path().join("fake.sock");
    let seen = fake_daemon(&sock);
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["-H", &format!("unix://{}", sock.display())])
        .args([
            "run",
            "-i",
            "--rm",
            "--name",
            "demo",
            "-v",
            "/var/log:/var/log",
            "-e",
            "A=1",
            "busybox",
            "cat",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello through stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello through stdin\n"
    );
    assert_eq!(stderr, "from stderr\n");

    let seen = seen.lock().unwrap().clone();
    let order: Vec<String> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        order,
        [
            "POST /containers/create?name=demo",
            "POST /containers/c0ffee/attach?stream=1&stdin=1&stdout=1&stderr=1",
            "POST /containers/c0ffee/wait?condition=removed",
            "POST /containers/c0ffee/start",
        ]
    );
    let create: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(create["Image"], "busybox");
    assert_eq!(create["Cmd"], serde_json::json!(["cat"]));
    assert_eq!(create["Env"], serde_json::json!(["A=1"]));
    assert_eq!(create["OpenStdin"], true);
    assert_eq!(
        create["HostConfig"]["Binds"],
        serde_json::json!(["/var/log:/var/log"])
    );
    assert_eq!(create["HostConfig"]["AutoRemove"], true);
}

#[test]
fn daemon_errors_are_shown_with_dockers_wording() {
    let dir = berth_testkit::tempdir("berth-cli-flow");
    let sock = dir.path().join("fake.sock");
    fake_daemon(&sock);
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .env("BERTH_HOST", format!("unix://{}", sock.display()))
        .args(["rm", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error response from daemon: page not found\n"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "-H",
            &format!("unix://{}", dir.path().join("missing.sock").display()),
            "ps",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to the berth daemon at unix://")
            && err.contains("Is `berth daemon` running?"),
        "{err}"
    );
}
