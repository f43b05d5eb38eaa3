//! `spec` (a default config.json, as `runc spec` writes) and `features` (what this runtime
//! supports, in the runtime-spec features format).

use oci_spec::runtime::{LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Spec};
use serde_json::json;

use crate::state::OCI_VERSION;

/// The default config: busybox's `sh` on a terminal, runc's mounts, masked paths and
/// capabilities. `rootless` adds a user namespace mapping root to the caller.
pub fn default_spec(rootless: bool) -> Spec {
    let mut spec = if rootless {
        // SAFETY: getuid/getgid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Spec::rootless(uid, gid)
    } else {
        Spec::default()
    };
    spec.set_version(OCI_VERSION.into());
    spec.set_hostname(Some("berth".into()));
    if let Some(linux) = spec.linux_mut() {
        if rootless {
            let ns: Vec<_> = [
                LinuxNamespaceType::Pid,
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Uts,
                LinuxNamespaceType::Mount,
                LinuxNamespaceType::Cgroup,
                LinuxNamespaceType::User,
            ]
            .into_iter()
            .map(|t| {
                LinuxNamespaceBuilder::default()
                    .typ(t)
                    .build()
                    .expect("type set")
            })
            .collect();
            linux.set_namespaces(Some(ns));
            linux.set_resources(None);
            // SAFETY: getuid/getgid have no preconditions and cannot fail.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            let m = |host| {
                vec![LinuxIdMappingBuilder::default()
                    .container_id(0u32)
                    .host_id(host)
                    .size(1u32)
                    .build()
                    .expect("all set")]
            };
            linux.set_uid_mappings(Some(m(uid)));
            linux.set_gid_mappings(Some(m(gid)));
        }
    }
    spec
}

/// The runtime-spec features document of this runtime.
pub fn features() -> serde_json::Value {
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "idmap",
            "mand", "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime",
            "nostrictatime", "nosuid", "private", "rbind", "relatime", "remount", "ridmap", "ro",
            "rprivate", "rshared", "rslave", "runbindable", "rw", "shared", "slave",
            "strictatime", "suid", "sync", "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps::all().iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false },
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86_64"],
                "knownFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]
            },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": true } }
        },
        "annotations": {
            "org.opencontainers.runc.checkpoint.enabled": "false"
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_round_trips() {
        let s = default_spec(false);
        let text = serde_json::to_string(&s).unwrap();
        let back: Spec = serde_json::from_str(&text).unwrap();
        assert_eq!(back.hostname().as_deref(), Some("berth"));
        assert!(back
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.destination().to_str() == Some("/proc")));
        let r = default_spec(true);
        assert!(r.linux().as_ref().unwrap().uid_mappings().is_some());
    }

    #[test]
    fn features_declare_idmap() {
        let f = features();
        assert_eq!(f["linux"]["mountExtensions"]["idmap"]["enabled"], true);
        let parsed: oci_spec::runtime::Features = serde_json::from_value(f).unwrap();
        assert_eq!(parsed.oci_version_max(), OCI_VERSION);
    }
}
