//! Host devices given to a container (`--device`, `--device-cgroup-rule`) and the device
//! cgroup rules of its spec, as Docker builds them (moby daemon/oci_linux.go `WithDevices`,
//! pkg/devicecgroup): every device denied, then the ones asked for allowed; `--privileged`
//! allows all. The runtime adds the few every container uses (null, zero, tty, ...).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{EngineError, Result};

/// One `--device HOST[:CONTAINER][:PERMISSIONS]` (Docker's `DeviceMapping`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeviceMapping {
    pub path_on_host: String,
    pub path_in_container: String,
    pub cgroup_permissions: String,
}

/// What a container's spec gets: nodes to create (`linux.devices`) and cgroup rules
/// (`linux.resources.devices`).
#[derive(Debug, Default, PartialEq)]
pub struct Devices {
    pub nodes: Vec<Value>,
    pub rules: Vec<Value>,
}

/// The devices and rules for a container. Errors name the device or rule and say why.
pub fn build(
    privileged: bool,
    mappings: &[DeviceMapping],
    cgroup_rules: &[String],
) -> Result<Devices> {
    let mut out = Devices {
        rules: vec![json!({"allow": privileged, "access": "rwm"})],
        ..Devices::default()
    };
    if privileged {
        // Like Docker, a privileged container sees the host's devices.
        for dev in host_devices() {
            let m = DeviceMapping {
                path_on_host: dev.to_string_lossy().into_owned(),
                ..DeviceMapping::default()
            };
            // A node that vanished meanwhile is no reason to refuse the container.
            let _ = add_mapping(&m, &mut out);
        }
    }
    for m in mappings {
        add_mapping(m, &mut out)?;
    }
    for r in cgroup_rules {
        out.rules.push(parse_rule(r)?);
    }
    if privileged {
        // Everything is allowed already; the nodes stay.
        out.rules.truncate(1);
    }
    Ok(out)
}

fn add_mapping(m: &DeviceMapping, out: &mut Devices) -> Result<()> {
    let invalid = |why: String| {
        EngineError::InvalidParameter(format!(
            "error gathering device information while adding custom device {:?}: {why}",
            m.path_on_host
        ))
    };
    let perms = if m.cgroup_permissions.is_empty() {
        "rwm"
    } else {
        m.cgroup_permissions.as_str()
    };
    if !valid_access(perms) {
        return Err(invalid(format!(
            "permissions {perms:?} are not a combination of r, w and m"
        )));
    }
    let host = Path::new(&m.path_on_host);
    let inside = if m.path_in_container.is_empty() {
        m.path_on_host.as_str()
    } else {
        m.path_in_container.as_str()
    };
    if !host.is_absolute() || !inside.starts_with('/') {
        return Err(invalid(format!(
            "{inside:?}: device paths must be absolute"
        )));
    }
    let meta = std::fs::metadata(host).map_err(|e| invalid(e.to_string()))?;
    if meta.is_dir() {
        // Docker adds every device below a directory, at the same place below `inside`.
        let mut entries: Vec<_> = walk_devices(host).map_err(|e| invalid(e.to_string()))?;
        entries.sort();
        for dev in entries {
            let rel = dev.strip_prefix(host).unwrap_or(&dev);
            let sub = DeviceMapping {
                path_on_host: dev.to_string_lossy().into_owned(),
                path_in_container: Path::new(inside).join(rel).to_string_lossy().into_owned(),
                cgroup_permissions: perms.to_string(),
            };
            add_mapping(&sub, out)?;
        }
        return Ok(());
    }
    let ft = meta.file_type();
    let typ = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else {
        return Err(invalid("not a device node".into()));
    };
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    out.nodes.push(json!({
        "path": inside, "type": typ, "major": major, "minor": minor,
        "fileMode": meta.mode() & 0o7777, "uid": meta.uid(), "gid": meta.gid(),
    }));
    out.rules.push(json!({
        "allow": true, "type": typ, "major": major, "minor": minor, "access": perms,
    }));
    Ok(())
}

/// The host's device nodes, as runc's `HostDevices` lists them: /dev without the
/// directories a container gets its own of, and without the console.
fn host_devices() -> Vec<std::path::PathBuf> {
    let mut devs = walk_devices(Path::new("/dev")).unwrap_or_default();
    devs.retain(|d| d != Path::new("/dev/console"));
    devs.sort();
    devs
}

/// Device nodes below `dir` (following no symlinks).
fn walk_devices(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    const SKIP: [&str; 6] = [
        "/dev/pts",
        "/dev/shm",
        "/dev/fd",
        "/dev/mqueue",
        "/dev/.lxc",
        "/dev/.udev",
    ];
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let ft = e.file_type()?;
        if ft.is_dir() && SKIP.iter().any(|s| e.path() == Path::new(s)) {
            continue;
        }
        if ft.is_dir() {
            out.extend(walk_devices(&e.path())?);
        } else if ft.is_char_device() || ft.is_block_device() {
            out.push(e.path());
        }
    }
    Ok(out)
}

fn valid_access(a: &str) -> bool {
    !a.is_empty() && a.len() <= 3 && a.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
}

/// A `--device-cgroup-rule`: `TYPE MAJOR:MINOR ACCESS`, e.g. `c 1:3 rwm` or `a *:* m`.
fn parse_rule(rule: &str) -> Result<Value> {
    let invalid = || {
        EngineError::InvalidParameter(format!(
            "invalid device cgroup rule {rule:?}: use TYPE MAJOR:MINOR ACCESS, e.g. 'c 1:3 rwm' or 'b 8:* r' (TYPE a, b or c; ACCESS of r, w, m)"
        ))
    };
    let parts: Vec<&str> = rule.split_whitespace().collect();
    let [typ, numbers, access] = parts[..] else {
        return Err(invalid());
    };
    if !matches!(typ, "a" | "b" | "c") || !valid_access(access) {
        return Err(invalid());
    }
    let (major, minor) = numbers.split_once(':').ok_or_else(invalid)?;
    let number = |n: &str| -> Result<Value> {
        if n == "*" {
            Ok(Value::Null)
        } else {
            n.parse::<u32>().map(|n| json!(n)).map_err(|_| invalid())
        }
    };
    let mut v = json!({"allow": true, "type": typ, "access": access});
    for (key, n) in [("major", major), ("minor", minor)] {
        let n = number(n)?;
        if !n.is_null() {
            v[key] = n;
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_like_docker() {
        assert_eq!(
            parse_rule("c 1:3 rwm").unwrap(),
            json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"})
        );
        assert_eq!(
            parse_rule("b 8:* r").unwrap(),
            json!({"allow": true, "type": "b", "major": 8, "access": "r"})
        );
        assert_eq!(
            parse_rule("a *:* m").unwrap(),
            json!({"allow": true, "type": "a", "access": "m"})
        );
        for bad in [
            "",
            "c 1:3",
            "x 1:3 r",
            "c 1-3 r",
            "c a:3 r",
            "c 1:3 rx",
            "c 1:3 rwmr",
        ] {
            let err = parse_rule(bad).unwrap_err().to_string();
            assert!(err.contains("invalid device cgroup rule"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_device_gives_a_node_and_an_allow_rule() {
        let d = build(
            false,
            &[DeviceMapping {
                path_on_host: "/dev/null".into(),
                path_in_container: "/dev/mynull".into(),
                cgroup_permissions: "rw".into(),
            }],
            &["c 10:200 r".into()],
        )
        .unwrap();
        assert_eq!(d.rules[0], json!({"allow": false, "access": "rwm"}));
        assert_eq!(
            d.rules[1],
            json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"})
        );
        assert_eq!(d.rules[2]["major"], 10);
        assert_eq!(d.nodes.len(), 1);
        assert_eq!(d.nodes[0]["path"], "/dev/mynull");
        assert_eq!(d.nodes[0]["type"], "c");
    }

    #[test]
    fn privileged_allows_all_and_sees_the_host_devices() {
        let d = build(true, &[], &["c 1:3 r".into()]).unwrap();
        assert_eq!(d.rules, vec![json!({"allow": true, "access": "rwm"})]);
        assert!(
            d.nodes.iter().any(|n| n["path"] == "/dev/null"),
            "{:?}",
            d.nodes
        );
        assert!(!d
            .nodes
            .iter()
            .any(|n| n["path"].as_str().unwrap().starts_with("/dev/pts/")));
    }

    #[test]
    fn bad_devices_are_named() {
        let m = |host: &str, perms: &str| DeviceMapping {
            path_on_host: host.into(),
            path_in_container: String::new(),
            cgroup_permissions: perms.into(),
        };
        for (mapping, want) in [
            (m("/dev/does-not-exist", ""), "No such file"),
            (m("/etc/passwd", ""), "not a device node"),
            (m("/dev/null", "rx"), "not a combination"),
            (m("dev/null", ""), "must be absolute"),
        ] {
            let err = build(false, &[mapping], &[]).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}
