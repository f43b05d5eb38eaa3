//! The image store's side of a registry pull (the HTTP client is the berth-registry crate):
//! once a manifest, its config and its layer blobs are in the content store, an image is
//! recorded from them. Layers a puller unpacked already are reused; the rest are unpacked here.

use std::collections::HashMap;
use std::sync::{Mutex, RwLockReadGuard};

use oci_spec::image::ImageConfiguration;

use crate::digest::{chain_ids, Digest};
use crate::error::{ImageError, Result};
use crate::reference::Reference;
use crate::store::{now_rfc3339, Image, ImageRecord, ImageStore, Layer};
use crate::unpack::UnpackLimits;

/// The manifest shapes a registry client reads (OCI and Docker, manifests and indexes).
pub use crate::manifest::{Descriptor, IndexDoc, Manifest, Platform, Probe};

/// Held by a puller while it writes blobs and layers that no image refers to yet: image
/// removal and gc wait for it, so they never sweep what a pull is about to record.
pub struct PullGuard<'a>(#[allow(dead_code)] RwLockReadGuard<'a, ()>);

impl ImageStore {
    /// Takes the [`PullGuard`]; hold it from the first blob written to `add_from_content`.
    pub fn pull_guard(&self) -> PullGuard<'_> {
        PullGuard(self.gc_lock.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The limits every layer is unpacked with (a puller unpacking early uses the same).
    pub fn unpack_limits(&self) -> &UnpackLimits {
        &self.limits
    }

    /// Records the image whose manifest (an image manifest, not an index) is the stored blob
    /// `manifest`, pointing `refs` at it. The config and every layer blob must be stored;
    /// layer trees missing from the layer store are unpacked.
    pub fn add_from_content(
        &self,
        _held: &PullGuard<'_>,
        manifest: &Digest,
        refs: &[Reference],
    ) -> Result<Image> {
        let bytes = self.content.read(manifest)?;
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::json(format!("manifest {manifest}"), e))?;
        let id = m.config.digest.clone();
        let config: ImageConfiguration = serde_json::from_slice(&self.content.read(&id)?)
            .map_err(|e| ImageError::json(format!("image config {id}"), e))?;
        let diff_ids = crate::load::config_diff_ids(&id, &config, m.layers.len())?;
        let chains = chain_ids(&diff_ids);
        let mut layers = Vec::with_capacity(m.layers.len());
        for (i, d) in m.layers.iter().enumerate() {
            layers.push(Layer {
                digest: d.digest.clone(),
                media_type: d.media_type.clone(),
                size: self.content.size(&d.digest)?,
                diff_id: diff_ids[i].clone(),
                chain_id: chains[i].clone(),
                unpacked_size: 0,
            });
        }
        self.unpack_missing(&mut layers, &Mutex::new(HashMap::new()))?;
        let rec = ImageRecord {
            manifest: manifest.clone(),
            layers,
            added: now_rfc3339(),
        };
        self.commit(&id, rec, refs)?;
        self.resolve(&id.to_string())
    }
}
