//! End to end: how a hijacked attach or exec-start connection ends, and the exit codes and
//! messages of a process that cannot start, through the real docker CLI, the `berth`
//! client and a raw socket against `berth daemon` (the shared harness, tests/common).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// Runs client `exe` against `d` while a thread writes to its stdin without pause (up to
/// 64 MiB, stopping when the client no longer reads): the client still has input in
/// flight when the process ends.
fn client_with_endless_stdin(d: &Daemon, exe: &str, args: &[&str]) -> Output {
    // -k: a client stuck on a hang may ignore the TERM.
    let mut child = Command::new("timeout")
        .args(["-k", "10", TIMEOUT])
        .arg(exe)
        .arg("-H")
        .arg(d.host())
        .args(args)
        .env_remove("DOCKER_HOST")
        .env_remove("BERTH_HOST")
        .env("DOCKER_CONFIG", d.dir.join("docker-config"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..1024 {
            // The client exits (EPIPE) once the process's end reached it: that is the end.
            if stdin.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn assert_clean(what: &str, o: &Output) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(0), "{what}: {}\n{err}", o.status);
    assert!(
        !err.to_lowercase().contains("reset") && !err.to_lowercase().contains("error"),
        "{what}: {err}"
    );
}

#[test]
fn stdin_still_in_flight_when_the_process_ends_is_no_error() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    d.ok(&["run", "-d", "--name", "ctr", "busybox", "sleep", "1000"]);
    for _ in 0..3 {
        let o = client_with_endless_stdin(&d, DOCKER, &["exec", "-i", "ctr", "true"]);
        assert_clean("docker exec -i ctr true", &o);
        let o = client_with_endless_stdin(&d, BERTH, &["exec", "-i", "ctr", "true"]);
        assert_clean("berth exec -i ctr true", &o);
    }
    let o = client_with_endless_stdin(&d, DOCKER, &["run", "-i", "--rm", "busybox", "true"]);
    assert_clean("docker run -i --rm busybox true", &o);
    // Input that the process does read still gets there.
    let o = d.docker_stdin(&["exec", "-i", "ctr", "wc", "-c"], Some(&[b'y'; 100_000]));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "100000");
}

/// Reads an HTTP response head (up to the blank line) byte by byte, so that nothing of
/// the stream after it is consumed.
fn read_head(s: &mut UnixStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "EOF in the response head");
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn raw_exec_start_ends_with_eof_not_reset() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    d.ok(&["run", "-d", "--name", "ctr", "busybox", "sleep", "1000"]);
    let (code, body) = d.http(
        "POST",
        "/containers/ctr/exec",
        r#"{"AttachStdin":true,"AttachStdout":true,"AttachStderr":true,"Cmd":["true"]}"#,
    );
    assert_eq!(code, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = v["Id"].as_str().unwrap().to_string();

    let mut s = UnixStream::connect(&d.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let start = r#"{"Detach":false,"Tty":false}"#;
    write!(
        s,
        "POST /exec/{id}/start HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: {}\r\n\r\n{start}",
        start.len()
    )
    .unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    // Wait for the process to end, then keep sending.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = d.http("GET", &format!("/exec/{id}/json"), "");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["Running"] == false && v["ExitCode"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the exec never ended: {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let input = vec![b'z'; 256 * 1024];
    s.write_all(&input)
        .expect("the daemon still takes input after the process ended");
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "`true` printed nothing: {rest:?}"),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {
            panic!("the daemon reset the connection instead of ending the stream")
        }
        Err(e) => panic!("reading the stream: {e}"),
    }
    // The daemon's side ended with a half-close: our input is still taken.
    s.write_all(&input).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
}

/// Docker's exit codes for a process that cannot start: `docker exec` always 126 (the
/// daemon's code for a failed exec start), `docker run` 127 for a missing program and 126
/// for one that cannot be executed; the message says which path and why.
#[test]
fn processes_that_cannot_start() {
    let d = Daemon::start(None, None);
    d.import_busybox();
    d.ok(&["run", "-d", "--name", "ctr", "busybox", "sleep", "1000"]);

    let o = d.docker(&["exec", "-w", "/nonexistent", "ctr", "pwd"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    let msg = String::from_utf8_lossy(&o.stdout).to_string() + &stderr(&o);
    assert!(msg.contains("OCI runtime exec failed: "), "{msg}");
    assert!(
        msg.contains(
            "chdir to cwd (\"/nonexistent\") set in config.json failed: no such file or directory"
        ),
        "{msg}"
    );
    let o = d.berth(&["exec", "-w", "/nonexistent", "ctr", "pwd"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(stderr(&o).contains("\"/nonexistent\""), "{}", stderr(&o));

    let o = d.docker(&["exec", "ctr", "/etc/passwd"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    let msg = String::from_utf8_lossy(&o.stdout).to_string() + &stderr(&o);
    assert!(
        msg.contains("exec: \"/etc/passwd\": permission denied"),
        "{msg}"
    );
    let o = d.docker(&["exec", "ctr", "nosuchcmd"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    let msg = String::from_utf8_lossy(&o.stdout).to_string() + &stderr(&o);
    assert!(
        msg.contains("exec: \"nosuchcmd\": executable file not found in $PATH"),
        "{msg}"
    );
    // The exec still works with a directory that exists.
    assert_eq!(d.ok(&["exec", "-w", "/etc", "ctr", "pwd"]), "/etc\n");

    let o = d.docker(&["run", "--rm", "busybox", "/etc/passwd"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(stderr(&o).contains("permission denied"), "{}", stderr(&o));
    let o = d.docker(&["run", "--rm", "busybox", "/no/such/program"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("exec: \"/no/such/program\": no such file or directory"),
        "{}",
        stderr(&o)
    );
    let o = d.docker(&["run", "--rm", "busybox", "nosuchcmd"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("executable file not found in $PATH"),
        "{}",
        stderr(&o)
    );
}
