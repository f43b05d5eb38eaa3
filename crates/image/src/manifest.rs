//! Manifests and indexes as berth reads them (OCI image manifest and index, Docker schema2
//! manifest and manifest list: the same shape) and the OCI manifest berth writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::media;
use crate::store::Layer;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexDoc {
    pub manifests: Vec<Descriptor>,
}

/// Just enough of any manifest-like document to tell what it is.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    #[serde(default)]
    pub media_type: String,
    #[serde(default)]
    pub manifests: Option<serde_json::Value>,
}

impl Probe {
    pub fn is_index(&self) -> bool {
        media::is_index(&self.media_type)
            || (self.media_type.is_empty() && self.manifests.is_some())
    }
}

/// Picks the host's platform (linux/amd64 on these machines) from an index.
pub fn choose_platform(index: &IndexDoc) -> Option<&Descriptor> {
    let arch = media::host_arch();
    index
        .manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        // An index without platforms (an OCI layout of one image) means the only image.
        .or_else(|| {
            (index.manifests.len() == 1 && index.manifests[0].platform.is_none())
                .then(|| &index.manifests[0])
        })
}

/// The OCI manifest of an image; the same inputs always give the same bytes (and digest).
pub fn oci_manifest(config: &Digest, config_size: u64, layers: &[Layer]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "mediaType": l.media_type,
                "digest": l.digest.to_string(),
                "size": l.size,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {
            "mediaType": media::OCI_CONFIG,
            "digest": config.to_string(),
            "size": config_size,
        },
        "layers": layers,
    });
    serde_json::to_vec(&doc).expect("a JSON value always serialises")
}
