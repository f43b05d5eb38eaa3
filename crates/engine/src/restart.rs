//! Restart policies (Docker's `--restart`): whether a container that ended starts again,
//! and after how long. The rules are moby's, read from its code:
//!
//! - A signal from the user (`docker kill [-s SIG]`, the signals of `docker stop`, `rm -f`)
//!   marks the container *manually stopped*, whatever the signal; the mark stays until the
//!   user starts the container again (moby's `HasBeenManuallyStopped`, set in
//!   daemon/kill.go `killWithSignal`, cleared by `containerStart` with
//!   `resetRestartManager`).
//! - The signal also cancels the restart of the current run (moby's `ExitOnNext`, which
//!   cancels the restart manager) when it is SIGKILL, when it is the container's
//!   StopSignal, or when the container has no StopSignal. Any other signal (say
//!   `kill -s USR1` on a container created with `--stop-signal=TERM`) leaves the policy
//!   in force: if the process dies of it, `always` and `on-failure` start it again,
//!   `unless-stopped` does not (it is manually stopped).
//! - When a run ends and its restart was not cancelled (restartmanager/restartmanager.go
//!   `ShouldRestart`): `always` restarts; `unless-stopped` restarts unless the container is
//!   manually stopped; `on-failure[:N]` restarts on a non-zero exit, at most N times in a
//!   row (0: no limit), whether manually stopped or not.
//! - Cancellations live in memory, as moby's restart managers do: when the daemon starts
//!   (daemon/daemon.go `restore`), each exited container that ran before is judged by
//!   the same `ShouldRestart` with a fresh manager. So after `docker stop`/`docker kill`,
//!   `always` comes back at the daemon's start, `unless-stopped` never does, and
//!   `on-failure` does if the exit code was not 0. The daemon's start is a start like the
//!   user's: it clears the manual stop and the restart count.
//! - The delay before a restart starts at 100 ms and doubles each time, up to a minute;
//!   a container that ran for 10 s or more starts over at 100 ms.

use std::time::Duration;

use crate::container::RestartPolicy;

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run this long resets the backoff.
const RESET_AFTER: Duration = Duration::from_secs(10);

/// Checks a policy as the create request gives it; the error says what is wrong.
pub fn validate(policy: &RestartPolicy, auto_remove: bool) -> Result<(), String> {
    match policy.name.as_str() {
        "" | "no" | "always" | "unless-stopped" if policy.maximum_retry_count != 0 => {
            return Err(format!(
                "invalid restart policy: maximum retry count can only be used with 'on-failure' (policy is {:?})",
                policy.name
            ))
        }
        "" | "no" => return Ok(()),
        "always" | "unless-stopped" => {}
        "on-failure" if policy.maximum_retry_count < 0 => {
            return Err("invalid restart policy: maximum retry count cannot be negative".into())
        }
        "on-failure" => {}
        other => {
            return Err(format!(
                "invalid restart policy '{other}': use no, always, unless-stopped or on-failure[:N]"
            ))
        }
    }
    if auto_remove {
        // moby's message; the docker CLI itself says "Conflicting options: --restart and --rm".
        return Err("can't create 'AutoRemove' container with restart policy".into());
    }
    Ok(())
}

/// Whether the user's signal `sig` cancels the restart of the current run (moby's
/// `ExitOnNext`): SIGKILL, the container's stop signal, or any signal when the container
/// has none.
pub fn signal_cancels(sig: i32, stop_signal: Option<i32>) -> bool {
    sig == libc::SIGKILL || stop_signal.is_none_or(|s| s == sig)
}

/// Whether a container that just exited with `exit_code` restarts. `cancelled`: a signal
/// from the user cancelled the restart of this run; `restarts`: how many times the policy
/// restarted it since it was last started by the user or the daemon.
pub fn after_exit(
    policy: &RestartPolicy,
    exit_code: i32,
    manually_stopped: bool,
    cancelled: bool,
    restarts: u32,
) -> bool {
    !cancelled && should_restart(policy, exit_code, manually_stopped, restarts)
}

/// Whether a container found exited when the daemon starts is started again.
pub fn on_daemon_start(
    policy: &RestartPolicy,
    exit_code: i32,
    manually_stopped: bool,
    restarts: u32,
) -> bool {
    should_restart(policy, exit_code, manually_stopped, restarts)
}

/// moby's `ShouldRestart`, for a restart manager that was not cancelled.
fn should_restart(
    policy: &RestartPolicy,
    exit_code: i32,
    manually_stopped: bool,
    restarts: u32,
) -> bool {
    match policy.name.as_str() {
        "unless-stopped" if manually_stopped => false,
        _ => wants_restart(policy, exit_code, restarts),
    }
}

fn wants_restart(policy: &RestartPolicy, exit_code: i32, restarts: u32) -> bool {
    match policy.name.as_str() {
        "always" | "unless-stopped" => true,
        "on-failure" => {
            let max = policy.maximum_retry_count;
            exit_code != 0 && (max <= 0 || i64::from(restarts) < max)
        }
        _ => false,
    }
}

/// The delay before the next restart, given the previous one (zero: none yet) and how
/// long the container ran.
pub fn next_delay(previous: Duration, ran_for: Duration) -> Duration {
    if previous.is_zero() || ran_for >= RESET_AFTER {
        FIRST_DELAY
    } else {
        (previous * 2).min(MAX_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, max: i64) -> RestartPolicy {
        RestartPolicy {
            name: name.into(),
            maximum_retry_count: max,
        }
    }

    #[test]
    fn validation_follows_docker() {
        assert!(validate(&policy("", 0), true).is_ok());
        assert!(validate(&policy("no", 0), false).is_ok());
        assert!(validate(&policy("always", 0), false).is_ok());
        assert!(validate(&policy("on-failure", 3), false).is_ok());
        assert!(validate(&policy("always", 2), false).is_err());
        assert!(validate(&policy("on-failure", -1), false).is_err());
        assert!(validate(&policy("sometimes", 0), false).is_err());
        let e = validate(&policy("unless-stopped", 0), true).unwrap_err();
        assert!(e.contains("AutoRemove"), "{e}");
    }

    #[test]
    fn policies_decide_as_moby() {
        assert!(!after_exit(&policy("no", 0), 1, false, false, 0));
        assert!(after_exit(&policy("always", 0), 0, false, false, 100));
        assert!(after_exit(&policy("unless-stopped", 0), 0, false, false, 0));
        assert!(!after_exit(&policy("on-failure", 0), 0, false, false, 0));
        assert!(after_exit(&policy("on-failure", 0), 1, false, false, 1000));
        assert!(after_exit(&policy("on-failure", 2), 3, false, false, 1));
        assert!(!after_exit(&policy("on-failure", 2), 3, false, false, 2));
    }

    #[test]
    fn a_cancelled_run_never_restarts() {
        for p in ["always", "unless-stopped", "on-failure"] {
            assert!(!after_exit(&policy(p, 0), 1, true, true, 0), "{p}");
        }
    }

    #[test]
    fn a_signal_that_does_not_cancel_leaves_the_policy_but_marks_a_manual_stop() {
        // `kill -s USR1` with `--stop-signal=TERM`, and the process dies of it.
        assert!(after_exit(&policy("always", 0), 138, true, false, 0));
        assert!(after_exit(&policy("on-failure", 0), 138, true, false, 0));
        assert!(!after_exit(
            &policy("unless-stopped", 0),
            138,
            true,
            false,
            0
        ));
    }

    #[test]
    fn which_signals_cancel() {
        let (kill, term, usr1) = (libc::SIGKILL, libc::SIGTERM, libc::SIGUSR1);
        assert!(signal_cancels(kill, Some(term)));
        assert!(signal_cancels(term, Some(term)));
        assert!(!signal_cancels(usr1, Some(term)));
        // No stop signal configured: every signal cancels (moby's else branch).
        assert!(signal_cancels(usr1, None));
    }

    #[test]
    fn daemon_start_judges_with_a_fresh_restart_manager() {
        assert!(on_daemon_start(&policy("always", 0), 137, true, 0));
        assert!(!on_daemon_start(&policy("unless-stopped", 0), 137, true, 0));
        assert!(on_daemon_start(&policy("unless-stopped", 0), 0, false, 0));
        assert!(on_daemon_start(&policy("on-failure", 0), 1, false, 0));
        // moby ignores the manual stop for on-failure: a non-zero exit comes back.
        assert!(on_daemon_start(&policy("on-failure", 0), 137, true, 0));
        assert!(!on_daemon_start(&policy("on-failure", 0), 0, false, 0));
        assert!(!on_daemon_start(&policy("on-failure", 2), 1, false, 2));
        assert!(!on_daemon_start(&policy("no", 0), 1, false, 0));
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let short = Duration::from_secs(1);
        assert_eq!(next_delay(Duration::ZERO, short), FIRST_DELAY);
        assert_eq!(next_delay(FIRST_DELAY, short), Duration::from_millis(200));
        assert_eq!(next_delay(Duration::from_secs(50), short), MAX_DELAY);
        assert_eq!(next_delay(Duration::from_secs(8), RESET_AFTER), FIRST_DELAY);
    }
}
