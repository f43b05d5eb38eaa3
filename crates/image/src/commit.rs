//! `commit`: a container's read-write layer (already a layer tar, in the container's view of
//! owners) becomes a new image on top of the container's image.

use std::fs::File;
use std::io::{Seek, SeekFrom};

use oci_spec::image::HistoryBuilder;

use crate::changes;
use crate::error::{ImageError, Result};
use crate::manifest;
use crate::media;
use crate::reference::Reference;
use crate::store::{now_rfc3339, Image, ImageRecord, ImageStore, Layer};

/// What `docker commit` records besides the layer.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions<'a> {
    /// `repository[:tag]` to give the image; none leaves it untagged.
    pub reference: Option<&'a str>,
    /// Dockerfile-style changes (`CMD ["sh"]`, `ENV A=b`, ...) applied to the parent's config.
    pub changes: Vec<String>,
    pub comment: Option<String>,
    pub author: Option<String>,
}

impl ImageStore {
    /// Adds the uncompressed layer tar in `layer` on top of image `parent` as a new image.
    pub fn commit_layer(
        &self,
        parent: &str,
        layer: &mut File,
        opts: CommitOptions<'_>,
    ) -> Result<Image> {
        let reference = opts.reference.map(Reference::parse).transpose()?;
        let parent = self.resolve(parent)?;
        let mut image_config = parent.config.clone();
        let mut config = image_config.config().clone().unwrap_or_default();
        changes::apply(&mut config, &opts.changes)?;

        let _gc = self.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let rewind = |f: &mut File| {
            f.seek(SeekFrom::Start(0))
                .map_err(|e| ImageError::Archive(format!("rewinding the layer: {e}")))
        };
        rewind(layer)?;
        let parent_chain = parent.chain_ids().last().cloned();
        let meta = self
            .layers
            .unpack(&mut *layer, parent_chain.as_ref(), None, &self.limits)?;
        rewind(layer)?;
        let (digest, size) = self.content.put_reader(layer, Some(meta.diff_id.clone()))?;

        let created = now_rfc3339();
        let mut history = HistoryBuilder::default()
            .created(created.clone())
            .created_by("berth commit");
        if let Some(c) = &opts.comment {
            history = history.comment(c.clone());
        }
        if let Some(a) = &opts.author {
            history = history.author(a.clone());
        }
        let history = history
            .build()
            .map_err(|e| ImageError::Archive(format!("building history: {e}")))?;
        let mut all_history = image_config.history().clone().unwrap_or_default();
        all_history.push(history);
        let mut rootfs = image_config.rootfs().clone();
        let mut diff_ids = rootfs.diff_ids().clone();
        diff_ids.push(meta.diff_id.to_string());
        rootfs.set_diff_ids(diff_ids);
        image_config
            .set_created(Some(created.clone()))
            .set_config(Some(config))
            .set_rootfs(rootfs)
            .set_history(Some(all_history));
        if let Some(a) = &opts.author {
            image_config.set_author(Some(a.clone()));
        }
        let config_bytes =
            serde_json::to_vec(&image_config).map_err(|e| ImageError::json("image config", e))?;
        let id = self.content.put_bytes(&config_bytes, None)?;
        let mut layers = parent.layers.clone();
        layers.push(Layer {
            digest,
            media_type: media::OCI_LAYER.to_string(),
            size,
            diff_id: meta.diff_id.clone(),
            chain_id: meta.chain_id.clone(),
            unpacked_size: meta.size,
        });
        let manifest_bytes = manifest::oci_manifest(&id, config_bytes.len() as u64, &layers);
        let manifest = self.content.put_bytes(&manifest_bytes, None)?;
        let rec = ImageRecord {
            manifest,
            layers,
            added: created,
        };
        let refs: Vec<Reference> = reference.into_iter().collect();
        self.commit(&id, rec, &refs)?;
        self.resolve(&id.to_string())
    }
}
