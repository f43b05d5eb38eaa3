//! What a new container gets from its image and from the host: Docker's merge of the
//! image's config into the container's, and the `/etc/hostname`, `/etc/hosts` and
//! `/etc/resolv.conf` files bound into it.

use std::collections::BTreeMap;
use std::os::unix::fs::chown;

use crate::container::{ContainerConfig, ContainerRecord};
use crate::error::{EngineError, Result};
use crate::images::ImageInfo;
use crate::store::Paths;

/// Docker's merge of the image's config into the container's (daemon/create.go): the
/// container's settings win; Cmd comes from the image only when neither Cmd nor Entrypoint
/// is given; Env is the image's with the container's on top; ExposedPorts are both's. An
/// exposed port that is not `PORT[/PROTOCOL]` is refused.
pub(crate) fn merge_image_config(cfg: &mut ContainerConfig, image: &ImageInfo) -> Result<()> {
    let ic = &image.config;
    let mut ports = BTreeMap::new();
    for p in cfg.exposed_ports.iter().flat_map(|m| m.keys()) {
        ports.insert(checked_port(p)?, serde_json::json!({}));
    }
    for p in &ic.exposed_ports {
        ports
            .entry(port_key(p))
            .or_insert_with(|| serde_json::json!({}));
    }
    cfg.exposed_ports = Some(ports);
    if cfg.user.is_empty() {
        cfg.user = ic.user.clone();
    }
    if cfg.working_dir.is_empty() {
        cfg.working_dir = ic.working_dir.clone();
    }
    if cfg.entrypoint.is_empty() {
        cfg.entrypoint = ic.entrypoint.clone();
        if cfg.cmd.is_empty() {
            cfg.cmd = ic.cmd.clone();
        }
    }
    let key = |e: &str| e.split('=').next().unwrap_or("").to_string();
    let mut env: Vec<String> = ic
        .env
        .iter()
        .filter(|ie| !cfg.env.iter().any(|ce| key(ce) == key(ie)))
        .cloned()
        .collect();
    env.append(&mut cfg.env);
    cfg.env = env;
    for (k, v) in &ic.labels {
        cfg.labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for v in &ic.volumes {
        cfg.volumes
            .entry(v.clone())
            .or_insert_with(|| serde_json::json!({}));
    }
    if cfg.stop_signal.is_none() {
        cfg.stop_signal = ic.stop_signal.clone();
    }
    Ok(())
}

/// An exposed port as Docker keys it: `80/tcp` (a bare `80` is tcp), the protocol in
/// lower case.
pub(crate) fn port_key(p: &str) -> String {
    match p.split_once('/') {
        Some((port, proto)) => format!("{port}/{}", proto.to_ascii_lowercase()),
        None => format!("{p}/tcp"),
    }
}

/// [`port_key`] of a port the request exposes, which must be a number and tcp, udp or
/// sctp.
fn checked_port(p: &str) -> Result<String> {
    let key = port_key(p);
    let (port, proto) = key.split_once('/').unwrap_or((&key, "tcp"));
    if port.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
        return Err(EngineError::InvalidParameter(format!(
            "invalid exposed port {p:?}: expected PORT[/PROTOCOL], a port number up to 65535 \
             and tcp, udp or sctp (e.g. 80/tcp)"
        )));
    }
    Ok(key)
}

/// Writes `hostname`, `hosts` and `resolv.conf` for the container, owned by its root.
pub(crate) fn write_etc_files(
    paths: &Paths,
    rec: &ContainerRecord,
    owner: (u32, u32),
) -> Result<()> {
    let host_net = rec.host_config.network_mode == "host";
    let hosts = if host_net {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::\tip6-localnet\nff00::\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n".to_string()
    };
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for (path, text) in [
        (paths.hostname(), format!("{}\n", rec.config.hostname)),
        (paths.hosts(), hosts),
        (paths.resolv_conf(), resolv),
    ] {
        std::fs::write(&path, text).map_err(|e| EngineError::io("write", &path, e))?;
        chown(&path, Some(owner.0), Some(owner.1))
            .map_err(|e| EngineError::io("chown", &path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_config_merges_like_docker() {
        let image = ImageInfo {
            config: crate::images::ImageSettings {
                cmd: vec!["sh".into()],
                entrypoint: vec![],
                env: vec!["PATH=/bin".into(), "A=1".into()],
                working_dir: "/w".into(),
                user: "daemon".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut cfg = ContainerConfig {
            env: vec!["A=2".into()],
            ..Default::default()
        };
        merge_image_config(&mut cfg, &image).unwrap();
        assert_eq!(cfg.cmd, ["sh"]);
        assert_eq!(cfg.env, ["PATH=/bin", "A=2"]);
        assert_eq!(
            (cfg.working_dir.as_str(), cfg.user.as_str()),
            ("/w", "daemon")
        );
        let mut cfg = ContainerConfig {
            entrypoint: vec!["/bin/ls".into()],
            ..Default::default()
        };
        merge_image_config(&mut cfg, &image).unwrap();
        assert!(
            cfg.cmd.is_empty(),
            "an entrypoint given drops the image's cmd"
        );
    }

    #[test]
    fn exposed_ports_are_the_requests_and_the_images() {
        let image = ImageInfo {
            config: crate::images::ImageSettings {
                exposed_ports: vec!["80".into(), "53/UDP".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let keys = |cfg: &ContainerConfig| -> Vec<String> {
            cfg.exposed_ports
                .iter()
                .flat_map(|m| m.keys().cloned())
                .collect()
        };
        // None given: the image's, normalized; the record keeps a map even when empty.
        let mut cfg = ContainerConfig::default();
        merge_image_config(&mut cfg, &image).unwrap();
        assert_eq!(keys(&cfg), ["53/udp", "80/tcp"]);
        let mut cfg = ContainerConfig::default();
        merge_image_config(&mut cfg, &ImageInfo::default()).unwrap();
        assert_eq!(cfg.exposed_ports, Some(BTreeMap::new()));
        // --expose 8080 --expose 80/tcp: both sets, once each.
        let mut cfg = ContainerConfig {
            exposed_ports: Some(
                [
                    ("8080".to_string(), serde_json::json!({})),
                    ("80/tcp".into(), serde_json::json!({})),
                ]
                .into(),
            ),
            ..Default::default()
        };
        merge_image_config(&mut cfg, &image).unwrap();
        assert_eq!(keys(&cfg), ["53/udp", "80/tcp", "8080/tcp"]);
        for bad in ["http", "70000", "80/icmp", "/tcp", "80/"] {
            let mut cfg = ContainerConfig {
                exposed_ports: Some([(bad.to_string(), serde_json::json!({}))].into()),
                ..Default::default()
            };
            let err = merge_image_config(&mut cfg, &image)
                .unwrap_err()
                .to_string();
            assert!(err.contains("invalid exposed port"), "{bad}: {err}");
        }
    }
}
