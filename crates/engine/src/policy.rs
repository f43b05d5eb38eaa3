//! What a container may ask for, checked at create time: the user namespace policy under
//! `--userns-remap` (with Docker's messages) and the host options berth supports.

use berth_idmap::UsernsMaps;

use crate::container::HostConfig;
use crate::error::{EngineError, Result};
use crate::spec::parse_capability;

/// Checks `host` and returns the user namespace maps the container runs with: the daemon's
/// when remapping (unless `--userns=host`), none otherwise.
pub fn check(host: &HostConfig, daemon_maps: Option<&UsernsMaps>) -> Result<Option<UsernsMaps>> {
    let invalid = |m: String| Err(EngineError::InvalidParameter(m));
    let userns_host = match host.userns_mode.as_str() {
        "" => false,
        "host" => true,
        other => {
            return invalid(format!(
                "invalid USER mode: {other} (use \"host\" or leave it empty)"
            ))
        }
    };
    let net_host = match host.network_mode.as_str() {
        "" | "default" | "bridge" | "none" => false,
        "host" => true,
        m if m.starts_with("container:") => {
            return Err(EngineError::Unsupported(format!(
                "network mode {m:?} is not supported yet: use none, host or the default"
            )))
        }
        m => return Err(EngineError::NotFound(format!("network {m} not found"))),
    };
    let pid_host = match host.pid_mode.as_str() {
        "" => false,
        "host" => true,
        m => {
            return invalid(format!(
                "invalid PID mode: {m} (use \"host\" or leave it empty)"
            ))
        }
    };
    match host.ipc_mode.as_str() {
        "" | "private" | "shareable" | "host" => {}
        m => {
            return invalid(format!(
                "invalid IPC mode: {m} (use private, shareable or host)"
            ))
        }
    }
    match host.uts_mode.as_str() {
        "" | "host" => {}
        m => {
            return invalid(format!(
                "invalid UTS mode: {m} (use \"host\" or leave it empty)"
            ))
        }
    }
    if let Err(msg) = crate::restart::validate(&host.restart_policy, host.auto_remove) {
        return invalid(msg);
    }
    if host.publish_all_ports || host.port_bindings.values().any(|v| !v.is_null()) {
        return invalid(
            "publishing ports needs bridge networking, which berth does not have yet: use --network=host or none".into(),
        );
    }
    for cap in host.cap_add.iter().chain(&host.cap_drop) {
        if !cap.eq_ignore_ascii_case("ALL") {
            parse_capability(cap)?;
        }
    }
    for opt in &host.security_opt {
        security_opt(opt)?;
    }

    let Some(maps) = daemon_maps else {
        return Ok(None);
    };
    if userns_host {
        return Ok(None);
    }
    // Docker's checks and messages (daemon/daemon_unix.go, verifyPlatformContainerSettings).
    if host.privileged {
        return invalid(PRIVILEGED_USERNS.into());
    }
    if net_host {
        return invalid(
            "cannot share the host's network namespace when user namespaces are enabled".into(),
        );
    }
    if pid_host {
        return invalid(
            "cannot share the host PID namespace when user namespaces are enabled".into(),
        );
    }
    Ok(Some(maps.clone()))
}

/// Docker's refusal of privileged mode under user namespaces (daemon/daemon_unix.go).
const PRIVILEGED_USERNS: &str = "privileged mode is incompatible with user namespaces.  You must run the container in the host namespace when running privileged mode";

/// Checks `docker exec --privileged` in a container running with `maps`: refused in a
/// remapped container, as a privileged container is. The exec would only get every
/// capability inside the container's user namespace; refusing keeps `--privileged`
/// meaning one thing (host privileges) wherever berth accepts it. Docker itself has no
/// such check for exec: its create-time message is reused so that the fix (run the
/// container with `--userns=host`) is the same.
pub fn check_exec(privileged: bool, maps: Option<&UsernsMaps>) -> Result<()> {
    if privileged && maps.is_some() {
        return Err(EngineError::InvalidParameter(PRIVILEGED_USERNS.into()));
    }
    Ok(())
}

/// What a `--security-opt` asks for.
#[derive(Debug, Default, PartialEq)]
pub struct SecurityOpts {
    pub no_new_privileges: bool,
    pub seccomp: Seccomp,
}

/// The seccomp profile a container runs under (`--privileged` aside, which has none).
#[derive(Debug, Default, PartialEq)]
pub enum Seccomp {
    /// Docker's default profile.
    #[default]
    Builtin,
    /// `seccomp=unconfined`.
    Unconfined,
    /// `seccomp=<json>`: the profile's JSON, checked when the option is read.
    Custom(String),
}

enum SecurityOpt {
    NoNewPrivileges(bool),
    Seccomp(Seccomp),
    Ignored,
}

fn security_opt(opt: &str) -> Result<SecurityOpt> {
    let (key, value) = opt.split_once(['=', ':']).unwrap_or((opt, ""));
    match (key, value) {
        ("no-new-privileges", "" | "true") => Ok(SecurityOpt::NoNewPrivileges(true)),
        ("no-new-privileges", "false") => Ok(SecurityOpt::NoNewPrivileges(false)),
        ("seccomp", "unconfined") => Ok(SecurityOpt::Seccomp(Seccomp::Unconfined)),
        ("seccomp", json) => {
            crate::seccomp::Profile::parse(json)?;
            Ok(SecurityOpt::Seccomp(Seccomp::Custom(json.to_string())))
        }
        // No AppArmor profile is applied, so unconfined is what runs.
        ("apparmor", "unconfined") => Ok(SecurityOpt::Ignored),
        // SELinux labels: the host has no SELinux, so there is nothing to label.
        ("label", _) => Ok(SecurityOpt::Ignored),
        _ => Err(EngineError::InvalidParameter(format!(
            "invalid --security-opt {opt:?}: berth supports no-new-privileges, seccomp=unconfined, seccomp=<profile JSON>, apparmor=unconfined and label=..."
        ))),
    }
}

pub fn security_opts(host: &HostConfig) -> Result<SecurityOpts> {
    let mut out = SecurityOpts::default();
    for opt in &host.security_opt {
        match security_opt(opt)? {
            SecurityOpt::NoNewPrivileges(v) => out.no_new_privileges = v,
            SecurityOpt::Seccomp(s) => out.seccomp = s,
            SecurityOpt::Ignored => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps() -> UsernsMaps {
        UsernsMaps::single(100000, 65536).unwrap()
    }

    #[test]
    fn remap_gives_every_container_the_daemon_maps() {
        let host = HostConfig::default();
        assert_eq!(check(&host, Some(&maps())).unwrap(), Some(maps()));
        assert_eq!(check(&host, None).unwrap(), None);
        let host = HostConfig {
            userns_mode: "host".into(),
            ..Default::default()
        };
        assert_eq!(check(&host, Some(&maps())).unwrap(), None);
    }

    #[test]
    fn remap_refuses_host_namespaces_and_privileged() {
        let cases = [
            (
                HostConfig {
                    privileged: true,
                    ..Default::default()
                },
                "privileged mode is incompatible",
            ),
            (
                HostConfig {
                    network_mode: "host".into(),
                    ..Default::default()
                },
                "host's network namespace",
            ),
            (
                HostConfig {
                    pid_mode: "host".into(),
                    ..Default::default()
                },
                "host PID namespace",
            ),
        ];
        for (mut host, msg) in cases {
            let err = check(&host, Some(&maps())).unwrap_err();
            assert!(matches!(err, EngineError::InvalidParameter(_)));
            assert!(err.to_string().contains(msg), "{err}");
            // Allowed without remap, and with --userns=host.
            assert!(check(&host, None).is_ok());
            host.userns_mode = "host".into();
            assert_eq!(check(&host, Some(&maps())).unwrap(), None);
        }
    }

    #[test]
    fn privileged_exec_needs_host_ids() {
        let err = check_exec(true, Some(&maps())).unwrap_err();
        assert!(matches!(err, EngineError::InvalidParameter(_)));
        assert_eq!(err.to_string(), PRIVILEGED_USERNS);
        assert!(check_exec(true, None).is_ok());
        assert!(check_exec(false, Some(&maps())).is_ok());
    }

    #[test]
    fn unsupported_options_are_errors() {
        for host in [
            HostConfig {
                userns_mode: "private".into(),
                ..Default::default()
            },
            HostConfig {
                network_mode: "mynet".into(),
                ..Default::default()
            },
            HostConfig {
                publish_all_ports: true,
                ..Default::default()
            },
            HostConfig {
                cap_add: vec!["NOT_A_CAP".into()],
                ..Default::default()
            },
            HostConfig {
                security_opt: vec!["seccomp=/x.json".into()],
                ..Default::default()
            },
        ] {
            assert!(check(&host, None).is_err(), "{host:?}");
        }
        let host = HostConfig {
            security_opt: vec!["no-new-privileges".into()],
            ..Default::default()
        };
        assert!(security_opts(&host).unwrap().no_new_privileges);
        assert_eq!(security_opts(&host).unwrap().seccomp, Seccomp::Builtin);
        let host = HostConfig {
            security_opt: vec!["seccomp=unconfined".into()],
            ..Default::default()
        };
        assert_eq!(security_opts(&host).unwrap().seccomp, Seccomp::Unconfined);
        let json = r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#;
        let host = HostConfig {
            security_opt: vec![format!("seccomp={json}")],
            ..Default::default()
        };
        assert_eq!(
            security_opts(&host).unwrap().seccomp,
            Seccomp::Custom(json.into())
        );
    }
}
