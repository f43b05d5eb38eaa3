//! `-v`/`--mount` requests turned into resolved mount points: bind sources checked (and
//! created for `-v`, as Docker does), named and anonymous volumes created under
//! `volumes/<name>/_data`, owned by the container's root when it is remapped.

use std::os::unix::fs::{chown, DirBuilderExt};
use std::path::{Path, PathBuf};

use crate::container::{ContainerConfig, HostConfig, MountPoint};
use crate::error::{EngineError, Result};
use crate::names;

const PROPAGATIONS: &[&str] = &[
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

/// Parses one `HostConfig.Binds` entry: `SRC:DST[:OPTS]`.
pub fn parse_bind(spec: &str) -> Result<MountPoint> {
    let bad = |why: &str| {
        EngineError::InvalidParameter(format!("invalid volume specification: '{spec}': {why}"))
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opts) = match parts[..] {
        [src, dst] => (src, dst, ""),
        [src, dst, opts] => (src, dst, opts),
        _ => return Err(bad("expected SOURCE:DESTINATION[:OPTIONS]")),
    };
    if src.is_empty() {
        return Err(bad("empty source"));
    }
    check_destination(dst).map_err(|e| bad(&e))?;
    let mut mp = MountPoint {
        kind: "bind".into(),
        name: String::new(),
        source: PathBuf::from(src),
        destination: dst.into(),
        read_only: false,
        mode: opts.into(),
        propagation: "rprivate".into(),
        options: Vec::new(),
    };
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => mp.read_only = true,
            "rw" => mp.read_only = false,
            // SELinux relabelling: nothing to do on a host without SELinux.
            "z" | "Z" => {}
            "nocopy" | "copy" => {}
            p if PROPAGATIONS.contains(&p) => mp.propagation = p.into(),
            other => return Err(bad(&format!("unknown option {other:?}"))),
        }
    }
    if !src.starts_with('/') {
        check_volume_name(src).map_err(|e| bad(&e))?;
        mp.kind = "volume".into();
        mp.name = src.into();
        mp.propagation = String::new();
    }
    Ok(mp)
}

fn check_destination(dst: &str) -> std::result::Result<(), String> {
    if !dst.starts_with('/') {
        return Err(format!("mount path {dst:?} must be absolute"));
    }
    if dst == "/" {
        return Err("the destination cannot be /".into());
    }
    if dst.split('/').any(|c| c == "..") {
        return Err(format!("mount path {dst:?} must not contain .."));
    }
    Ok(())
}

fn check_volume_name(name: &str) -> std::result::Result<(), String> {
    crate::volumes::check_name(name)
}

/// Every mount a new container asks for, in order: binds, `--mount`s, tmpfs, then
/// anonymous volumes for `Config.Volumes` not already covered. Destinations must be unique.
pub fn requested(config: &ContainerConfig, host: &HostConfig) -> Result<Vec<MountPoint>> {
    let mut out = Vec::new();
    for b in &host.binds {
        out.push(parse_bind(b)?);
    }
    for m in &host.mounts {
        let bad = |why: String| {
            EngineError::InvalidParameter(format!(
                "invalid mount config for type {:?}: {why}",
                m.kind
            ))
        };
        check_destination(&m.target).map_err(bad)?;
        let mut mp = MountPoint {
            kind: m.kind.clone(),
            name: String::new(),
            source: PathBuf::from(&m.source),
            destination: m.target.clone(),
            read_only: m.read_only,
            mode: String::new(),
            propagation: String::new(),
            options: Vec::new(),
        };
        match m.kind.as_str() {
            "bind" => {
                if !m.source.starts_with('/') {
                    return Err(bad(format!(
                        "invalid mount path: {:?} mount path must be absolute",
                        m.source
                    )));
                }
                mp.propagation = m
                    .bind_options
                    .as_ref()
                    .map(|o| o.propagation.clone())
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "rprivate".into());
                if !PROPAGATIONS.contains(&mp.propagation.as_str()) {
                    return Err(bad(format!("unknown propagation {:?}", mp.propagation)));
                }
            }
            "volume" => {
                if !m.source.is_empty() {
                    check_volume_name(&m.source).map_err(bad)?;
                }
                mp.name = m.source.clone();
                // Recorded as `-v NAME:/path:nocopy` records it: seeding looks there.
                if m.volume_options.as_ref().is_some_and(|o| o.no_copy) {
                    mp.mode = "nocopy".into();
                }
            }
            "tmpfs" => {
                if !m.source.is_empty() {
                    return Err(bad("source must not be specified".into()));
                }
                if let Some(t) = &m.tmpfs_options {
                    if t.size_bytes > 0 {
                        mp.options.push(format!("size={}", t.size_bytes));
                    }
                    if t.mode != 0 {
                        mp.options.push(format!("mode={:o}", t.mode));
                    }
                }
            }
            other => {
                return Err(EngineError::InvalidParameter(format!(
                    "mount type {other:?} is not supported (use bind, volume or tmpfs)"
                )))
            }
        }
        out.push(mp);
    }
    for (dst, opts) in &host.tmpfs {
        check_destination(dst).map_err(EngineError::InvalidParameter)?;
        out.push(MountPoint {
            kind: "tmpfs".into(),
            name: String::new(),
            source: PathBuf::new(),
            destination: dst.clone(),
            read_only: false,
            mode: opts.clone(),
            propagation: String::new(),
            options: opts
                .split(',')
                .filter(|o| !o.is_empty())
                .map(String::from)
                .collect(),
        });
    }
    for dst in config.volumes.keys() {
        if out.iter().any(|m| &m.destination == dst) {
            continue;
        }
        check_destination(dst).map_err(EngineError::InvalidParameter)?;
        out.push(MountPoint {
            kind: "volume".into(),
            name: String::new(),
            source: PathBuf::new(),
            destination: dst.clone(),
            read_only: false,
            mode: String::new(),
            propagation: String::new(),
            options: Vec::new(),
        });
    }
    for (i, a) in out.iter().enumerate() {
        if out[..i].iter().any(|b| b.destination == a.destination) {
            return Err(EngineError::InvalidParameter(format!(
                "Duplicate mount point: {}",
                a.destination
            )));
        }
    }
    Ok(out)
}

/// Makes every source exist: `-v` bind sources and volumes are created (owned by `owner`,
/// the container's root on the host); `--mount type=bind` sources must already exist.
pub fn prepare_sources(
    mounts: &mut [MountPoint],
    host: &HostConfig,
    data_root: &Path,
    owner: (u32, u32),
) -> Result<()> {
    for mp in mounts.iter_mut() {
        match mp.kind.as_str() {
            "bind" => {
                if mp.source.exists() {
                    continue;
                }
                let from_mount_flag = host
                    .mounts
                    .iter()
                    .any(|m| m.kind == "bind" && Path::new(&m.source) == mp.source);
                if from_mount_flag {
                    return Err(EngineError::InvalidParameter(format!(
                        "invalid mount config for type \"bind\": bind source path does not exist: {}",
                        mp.source.display()
                    )));
                }
                create_owned(&mp.source, owner)?;
            }
            "volume" => {
                let anonymous = mp.name.is_empty();
                if anonymous {
                    mp.name = names::new_id()?;
                }
                mp.source = crate::volumes::ensure(data_root, &mp.name, anonymous, owner)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Creates `dir` and missing parents; the new leaf is chowned to `owner`.
fn create_owned(dir: &Path, owner: (u32, u32)) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| EngineError::io("create directory", dir, e))?;
    chown(dir, Some(owner.0), Some(owner.1)).map_err(|e| EngineError::io("chown", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_parse() {
        let m = parse_bind("/var/log:/var/log").unwrap();
        assert_eq!((m.kind.as_str(), m.read_only), ("bind", false));
        let m = parse_bind("/a:/b:ro,Z").unwrap();
        assert!(m.read_only);
        let m = parse_bind("data:/data:rw").unwrap();
        assert_eq!((m.kind.as_str(), m.name.as_str()), ("volume", "data"));
        for bad in [
            "/a",
            "/a:b",
            "/a:/",
            "/a:/b:bogus",
            "a b:/x",
            ":/x",
            "/a:/b/../c",
        ] {
            assert!(parse_bind(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn duplicate_destinations_are_refused() {
        let host = HostConfig {
            binds: vec!["/a:/x".into(), "/b:/x".into()],
            ..Default::default()
        };
        let err = requested(&ContainerConfig::default(), &host).unwrap_err();
        assert!(err.to_string().contains("Duplicate mount point"));
    }

    #[test]
    fn volumes_are_created_owned_by_mapped_root() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostConfig {
            binds: vec![
                "vol1:/data".into(),
                format!("{}/new:/new", dir.path().display()),
            ],
            ..Default::default()
        };
        let mut mps = requested(&ContainerConfig::default(), &host).unwrap();
        prepare_sources(&mut mps, &host, dir.path(), (100000, 100000)).unwrap();
        use std::os::unix::fs::MetadataExt;
        for mp in &mps {
            let md = std::fs::metadata(&mp.source).unwrap();
            assert_eq!((md.uid(), md.gid()), (100000, 100000), "{mp:?}");
        }
        assert!(mps[0].source.ends_with("volumes/vol1/_data"));
    }
}
