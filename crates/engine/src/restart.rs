//! Restart policies (Docker's `--restart`): whether a container that ended starts again,
//! and after how long. The rules are moby's restart manager's:
//! - `always` restarts whatever the exit code; `unless-stopped` too, unless the user
//!   stopped the container; `on-failure[:N]` restarts on a non-zero exit, at most N times
//!   (0: no limit).
//! - A stop or kill by the user cancels the policy until the user starts the container
//!   again. When the daemon starts, `always` containers start again even so.
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

/// Whether a container that just exited with `exit_code` restarts. `restarts` is how many
/// times the policy restarted it since the user last started it.
pub fn after_exit(
    policy: &RestartPolicy,
    exit_code: i32,
    stopped_by_user: bool,
    restarts: u32,
) -> bool {
    !stopped_by_user && wants_restart(policy, exit_code, restarts)
}

/// Whether a container found not running when the daemon starts is started again.
pub fn on_daemon_start(
    policy: &RestartPolicy,
    exit_code: i32,
    stopped_by_user: bool,
    restarts: u32,
) -> bool {
    match policy.name.as_str() {
        "always" => true,
        _ => after_exit(policy, exit_code, stopped_by_user, restarts),
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
        assert!(!after_exit(&policy("no", 0), 1, false, 0));
        assert!(after_exit(&policy("always", 0), 0, false, 100));
        assert!(!after_exit(&policy("always", 0), 0, true, 0));
        assert!(after_exit(&policy("unless-stopped", 0), 0, false, 0));
        assert!(!after_exit(&policy("on-failure", 0), 0, false, 0));
        assert!(after_exit(&policy("on-failure", 0), 1, false, 1000));
        assert!(after_exit(&policy("on-failure", 2), 3, false, 1));
        assert!(!after_exit(&policy("on-failure", 2), 3, false, 2));
    }

    #[test]
    fn daemon_start_brings_back_always_even_after_a_stop() {
        assert!(on_daemon_start(&policy("always", 0), 137, true, 0));
        assert!(!on_daemon_start(&policy("unless-stopped", 0), 137, true, 0));
        assert!(on_daemon_start(&policy("unless-stopped", 0), 0, false, 0));
        assert!(on_daemon_start(&policy("on-failure", 0), 1, false, 0));
        assert!(!on_daemon_start(&policy("on-failure", 0), 0, false, 0));
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
