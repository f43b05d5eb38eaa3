//! Seccomp profiles as Docker applies them: its default profile unless the container is
//! `--privileged` or runs with `--security-opt seccomp=unconfined`, or a custom profile
//! given as `--security-opt seccomp=<json>` (the docker CLI sends the file's content).
//!
//! A profile is in Docker's format (moby profiles/seccomp): rules may be included or
//! excluded by the container's capabilities, the machine's architecture and the kernel
//! version. [`Profile::resolve`] settles those at spec time into the OCI `linux.seccomp`
//! that the runtime compiles (and caches) as it is.

use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{EngineError, Result};

/// Docker's default profile (moby profiles/seccomp/default.json, same rules and order),
/// kept as data so that it reads like Docker's.
const DEFAULT_PROFILE: &str = include_str!("seccomp_default.json");

/// What `docker info` lists under SecurityOptions.
pub const INFO_OPTION: &str = "name=seccomp,profile=builtin";

/// A seccomp profile in Docker's format.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    /// Explicit architectures (older profiles); `archMap` picks them by the machine's.
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    syscalls: Vec<Rule>,
    #[serde(default)]
    flags: Vec<String>,
    /// Notification listeners are not supported; accepted only when empty.
    #[serde(default)]
    listener_path: String,
    #[serde(default)]
    listener_metadata: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    /// The older single-name form.
    #[serde(default)]
    name: String,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<Value>>,
    /// For the profile's reader only.
    #[serde(default)]
    #[allow(dead_code)]
    comment: String,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

/// When a rule applies (`includes`: all of these hold) or not (`excludes`: any holds).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Filter {
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// What a rule is resolved against.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The container's bounding capabilities (`CAP_SYS_ADMIN`, ...).
    pub caps: &'a [String],
    /// Go's name of the architecture (`amd64`, `arm64`...), as profiles spell it.
    pub arch: &'a str,
    /// The running kernel's major and minor version.
    pub kernel: (u32, u32),
}

impl Target<'_> {
    /// The machine berth runs on, with `caps`.
    pub fn host(caps: &[String]) -> Target<'_> {
        Target {
            caps,
            arch: go_arch(),
            kernel: kernel_version(),
        }
    }
}

impl Profile {
    /// Docker's default profile.
    pub fn builtin() -> &'static Profile {
        static PROFILE: OnceLock<Profile> = OnceLock::new();
        PROFILE.get_or_init(|| {
            serde_json::from_str(DEFAULT_PROFILE).expect("the built-in seccomp profile parses")
        })
    }

    /// A custom profile from `--security-opt seccomp=<json>`.
    pub fn parse(json: &str) -> Result<Profile> {
        let invalid = |why: String| {
            EngineError::InvalidParameter(format!(
                "invalid seccomp profile in --security-opt: {why} (give the profile's JSON, or seccomp=unconfined)"
            ))
        };
        if !json.trim_start().starts_with('{') {
            return Err(invalid(format!(
                "{json:?} is not JSON; the docker CLI reads a profile file for you, other clients must send its content"
            )));
        }
        let p: Profile = serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
        if !p.listener_path.is_empty() || !p.listener_metadata.is_empty() {
            return Err(invalid(
                "seccomp notification listeners are not supported".into(),
            ));
        }
        if !p.architectures.is_empty() && !p.arch_map.is_empty() {
            return Err(invalid(
                "give either architectures or archMap, not both".into(),
            ));
        }
        for r in &p.syscalls {
            if r.names.is_empty() && r.name.is_empty() {
                return Err(invalid("a rule names no system call".into()));
            }
            for k in [&r.includes.min_kernel, &r.excludes.min_kernel]
                .into_iter()
                .flatten()
            {
                parse_kernel(k).ok_or_else(|| invalid(format!("bad minKernel {k:?}")))?;
            }
        }
        // Everything else (actions, operators, architectures) is checked when the
        // resolved profile is read as an OCI spec.
        Ok(p)
    }

    /// The OCI `linux.seccomp` of this profile for `target`: the rules whose includes hold
    /// and whose excludes do not, for the native architecture and its compat ones.
    pub fn resolve(&self, target: &Target) -> Value {
        let mut arches = self.architectures.clone();
        if let Some(native) = seccomp_arch(target.arch) {
            for m in self.arch_map.iter().filter(|m| m.architecture == native) {
                arches.push(m.architecture.clone());
                arches.extend(m.sub_architectures.iter().flatten().cloned());
            }
        }
        let syscalls: Vec<Value> = self
            .syscalls
            .iter()
            .filter(|r| r.applies(target))
            .map(|r| {
                let names = if r.names.is_empty() {
                    vec![r.name.clone()]
                } else {
                    r.names.clone()
                };
                let mut v = json!({"names": names, "action": r.action});
                if let Some(e) = r.errno_ret {
                    v["errnoRet"] = json!(e);
                }
                if let Some(args) = &r.args {
                    v["args"] = json!(args);
                }
                v
            })
            .collect();
        let mut out = json!({
            "defaultAction": self.default_action,
            "architectures": arches,
            "syscalls": syscalls,
        });
        if let Some(e) = self.default_errno_ret {
            out["defaultErrnoRet"] = json!(e);
        }
        if !self.flags.is_empty() {
            out["flags"] = json!(self.flags);
        }
        out
    }
}

impl Rule {
    /// Docker's rule selection (moby profiles/seccomp/seccomp_linux.go).
    fn applies(&self, t: &Target) -> bool {
        let has_cap = |c: &String| t.caps.iter().any(|x| x == c);
        let at_least = |k: &Option<String>| {
            k.as_deref()
                .and_then(parse_kernel)
                .map(|min| t.kernel >= min)
        };
        let ex = &self.excludes;
        if ex.arches.iter().any(|a| a == t.arch)
            || ex.caps.iter().any(has_cap)
            || at_least(&ex.min_kernel) == Some(true)
        {
            return false;
        }
        let inc = &self.includes;
        (inc.arches.is_empty() || inc.arches.iter().any(|a| a == t.arch))
            && inc.caps.iter().all(has_cap)
            && at_least(&inc.min_kernel) != Some(false)
    }
}

/// `4.8` → (4, 8).
fn parse_kernel(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

/// The running kernel's version, from uname (0.0 if unreadable: minKernel rules then drop).
fn kernel_version() -> (u32, u32) {
    static VERSION: OnceLock<(u32, u32)> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let numeric: String = release
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        parse_kernel(&numeric).unwrap_or((0, 0))
    })
}

/// Rust's name of the architecture in Go's spelling, which profiles use.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// libseccomp's name of the native architecture, as `archMap` spells it.
fn seccomp_arch(go_arch: &str) -> Option<&'static str> {
    Some(match go_arch {
        "amd64" => "SCMP_ARCH_X86_64",
        "386" => "SCMP_ARCH_X86",
        "arm64" => "SCMP_ARCH_AARCH64",
        "arm" => "SCMP_ARCH_ARM",
        "mips64" => "SCMP_ARCH_MIPS64",
        "mips64le" => "SCMP_ARCH_MIPSEL64",
        "mips" => "SCMP_ARCH_MIPS",
        "mipsle" => "SCMP_ARCH_MIPSEL",
        "ppc64le" => "SCMP_ARCH_PPC64LE",
        "s390x" => "SCMP_ARCH_S390X",
        "riscv64" => "SCMP_ARCH_RISCV64",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::DEFAULT_CAPS;

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn names(v: &Value) -> Vec<String> {
        v["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|r| r["names"].as_array().unwrap().clone())
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    }

    fn target(caps: &[String]) -> Target<'_> {
        Target {
            caps,
            arch: "amd64",
            kernel: (6, 1),
        }
    }

    #[test]
    fn default_caps_get_the_restricted_rules() {
        let c = caps(DEFAULT_CAPS);
        let v = Profile::builtin().resolve(&target(&c));
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(v["defaultErrnoRet"], 1);
        assert_eq!(
            v["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        let allowed = names(&v);
        for n in [
            "read",
            "execve",
            "chroot",
            "arch_prctl",
            "ptrace",
            "modify_ldt",
        ] {
            assert!(allowed.iter().any(|a| a == n), "{n} allowed");
        }
        for n in [
            "unshare",
            "mount",
            "setns",
            "reboot",
            "keyctl",
            "bpf",
            "s390_runtime_instr",
        ] {
            assert!(!allowed.iter().any(|a| a == n), "{n} not allowed");
        }
        // clone only without namespace flags; clone3 answers ENOSYS.
        let rules = v["syscalls"].as_array().unwrap();
        let clone: Vec<_> = rules
            .iter()
            .filter(|r| r["names"] == json!(["clone"]))
            .collect();
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone[0]["args"][0]["index"], 0);
        assert!(rules
            .iter()
            .any(|r| r["names"] == json!(["clone3"]) && r["errnoRet"] == 38));
    }

    #[test]
    fn capabilities_include_and_exclude_rules() {
        let mut c = caps(DEFAULT_CAPS);
        c.retain(|x| x != "CAP_SYS_CHROOT");
        c.push("CAP_SYS_ADMIN".into());
        c.push("CAP_SYS_TIME".into());
        let v = Profile::builtin().resolve(&target(&c));
        let allowed = names(&v);
        for n in [
            "unshare",
            "mount",
            "setns",
            "clone",
            "clone3",
            "settimeofday",
        ] {
            assert!(allowed.iter().any(|a| a == n), "{n} allowed");
        }
        assert!(!allowed.iter().any(|a| a == "chroot"));
        let rules = v["syscalls"].as_array().unwrap();
        assert!(!rules
            .iter()
            .any(|r| r["names"] == json!(["clone3"]) && r["action"] == "SCMP_ACT_ERRNO"));
        assert!(!rules.iter().any(|r| r["names"] == json!(["clone"])));
    }

    #[test]
    fn arch_and_kernel_select_rules() {
        let c = caps(DEFAULT_CAPS);
        let s390 = Target {
            caps: &c,
            arch: "s390x",
            kernel: (4, 4),
        };
        let v = Profile::builtin().resolve(&s390);
        assert_eq!(
            v["architectures"],
            json!(["SCMP_ARCH_S390X", "SCMP_ARCH_S390"])
        );
        let allowed = names(&v);
        assert!(allowed.iter().any(|a| a == "s390_runtime_instr"));
        assert!(!allowed.iter().any(|a| a == "arch_prctl"));
        // ptrace needs 4.8 without CAP_SYS_PTRACE.
        assert!(!allowed.iter().any(|a| a == "ptrace"));
        let clone: Vec<_> = v["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["names"] == json!(["clone"]))
            .collect();
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0]["args"][0]["index"], 1);
    }

    #[test]
    fn resolved_profiles_are_oci_specs() {
        let c = caps(DEFAULT_CAPS);
        let v = Profile::builtin().resolve(&Target::host(&c));
        let s: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(v).unwrap();
        assert!(!s.syscalls().as_ref().unwrap().is_empty());
    }

    #[test]
    fn custom_profiles_parse_or_say_why_not() {
        let p = Profile::parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"name":"mkdir","action":"SCMP_ACT_ERRNO","includes":{"minKernel":"3.0"}}]}"#,
        )
        .unwrap();
        let c = caps(DEFAULT_CAPS);
        let v = p.resolve(&target(&c));
        assert_eq!(v["syscalls"][0]["names"], json!(["mkdir"]));
        assert_eq!(v["architectures"], json!([]));
        for bad in [
            "/etc/profile.json",
            "{",
            r#"{"defaultAction":"SCMP_ACT_ALLOW","bogus":1}"#,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"action":"SCMP_ACT_ALLOW"}]}"#,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/x.sock"}"#,
        ] {
            let e = Profile::parse(bad).unwrap_err();
            assert!(e.to_string().contains("seccomp profile"), "{e}");
        }
    }
}
