//! OCI hooks: programs the config names for points of the container's life, each given the
//! container's state JSON on stdin and killed when it runs past its timeout.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::error::{Error, Result};
use crate::state::State;

/// Runs `hooks` in order; the first failure stops the rest and is returned.
pub fn run(kind: &'static str, hooks: &[Hook], state: &State) -> Result<()> {
    let json = serde_json::to_vec(state).expect("state always serializes");
    for h in hooks {
        run_one(kind, h, &json)?;
    }
    Ok(())
}

fn run_one(kind: &'static str, h: &Hook, state: &[u8]) -> Result<()> {
    let err = |reason: String| Error::Hook {
        kind,
        path: h.path().clone(),
        reason,
    };
    let mut cmd = Command::new(h.path());
    let args = h.args().clone().unwrap_or_default();
    if let Some(a0) = args.first() {
        cmd.arg0(a0);
    }
    cmd.args(args.iter().skip(1));
    cmd.env_clear();
    for e in h.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| err(format!("could not start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(state);
    }
    let deadline = h
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => return Err(err(format!("wait: {e}"))),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err(format!(
                "timed out after {}s",
                h.timeout().unwrap_or(0)
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    if !status.success() {
        return Err(err(format!("failed: {status}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Status, OCI_VERSION};
    use oci_spec::runtime::HookBuilder;

    fn state() -> State {
        State {
            oci_version: OCI_VERSION.into(),
            id: "hooked".into(),
            status: Status::Created,
            pid: 1,
            bundle: "/b".into(),
            annotations: Default::default(),
        }
    }

    #[test]
    fn state_on_stdin_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let hook = HookBuilder::default()
            .path("/bin/sh")
            .args(vec![
                "sh".into(),
                "-c".into(),
                format!("cat > {}; echo \"$X\" >> {}", out.display(), out.display()),
            ])
            .env(vec!["X=42".into()])
            .build()
            .unwrap();
        run("poststart", &[hook], &state()).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains(r#""id":"hooked""#), "{text}");
        assert!(text.ends_with("42\n"));
    }

    #[test]
    fn failure_and_timeout_are_errors() {
        let fail = HookBuilder::default().path("/bin/false").build().unwrap();
        let e = run("prestart", &[fail], &state()).unwrap_err().to_string();
        assert!(e.contains("prestart") && e.contains("/bin/false"), "{e}");
        let slow = HookBuilder::default()
            .path("/bin/sleep")
            .args(vec!["sleep".into(), "30".into()])
            .timeout(1i64)
            .build()
            .unwrap();
        let e = run("poststop", &[slow], &state()).unwrap_err().to_string();
        assert!(e.contains("timed out"), "{e}");
    }
}
