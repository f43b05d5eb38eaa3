//! `save`: images to an archive that `load` (berth's, Docker's, skopeo's) reads back.
//!
//! Both formats are an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`), blobs
//! stored as they are in the content store, so a saved image loads back with the same
//! digests. [`ArchiveFormat::Docker`] adds `manifest.json` and `repositories` pointing at the
//! same blobs, as Docker 25 writes them, which Docker 20.10 also loads.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::media;
use crate::reference::Reference;
use crate::store::{find, Image, ImageStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save`: manifest.json + repositories, plus the OCI layout.
    Docker,
    /// An OCI image layout only.
    Oci,
}

impl ImageStore {
    /// Writes the images `refs` name to `out`. A name with a tag (or an id) saves that image;
    /// a repository name without a tag saves every tag of it. Images asked for by id carry no
    /// tags, as with `docker save`.
    pub fn save(&self, refs: &[&str], format: ArchiveFormat, out: impl Write) -> Result<()> {
        // (image, tags to record), in the order asked, each image once.
        let mut wanted: Vec<(Image, Vec<Reference>)> = Vec::new();
        {
            let idx = self.lock();
            for s in refs {
                let mut hits: Vec<(Digest, Option<Reference>)> = Vec::new();
                match Reference::parse_name_only(s) {
                    Ok(r) if r.tag().is_none() && r.digest().is_none() => {
                        let name = r.name();
                        for (rr, id) in &idx.refs {
                            let p = Reference::parse(rr)?;
                            if p.name() == name && p.tag().is_some() {
                                hits.push((id.clone(), Some(p)));
                            }
                        }
                    }
                    Ok(r) if idx.refs.contains_key(&r.canonical()) => {
                        hits.push((idx.refs[&r.canonical()].clone(), Some(r)));
                    }
                    _ => {}
                }
                if hits.is_empty() {
                    hits.push((find(&idx, s)?, None));
                }
                for (id, r) in hits {
                    match wanted.iter_mut().find(|(i, _)| i.id == id) {
                        Some((_, tags)) => tags.extend(r),
                        None => wanted.push((placeholder(&id), r.into_iter().collect())),
                    }
                }
            }
        }
        for (img, _) in wanted.iter_mut() {
            *img = self.resolve(&img.id.to_string())?;
        }

        let mut tar = tar::Builder::new(out);
        let mut written = BTreeSet::new();
        let mut index_entries = Vec::new();
        let mut docker_entries = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (img, tags) in &wanted {
            let mut blobs = vec![img.id.clone(), img.manifest_digest.clone()];
            blobs.extend(img.layers.iter().map(|l| l.digest.clone()));
            for b in blobs {
                if written.insert(b.clone()) {
                    self.append_blob(&mut tar, &b)?;
                }
            }
            let manifest_size = self.content.size(&img.manifest_digest)?;
            let desc = |tag: Option<&Reference>| {
                let mut d = serde_json::json!({
                    "mediaType": media::OCI_MANIFEST,
                    "digest": img.manifest_digest.to_string(),
                    "size": manifest_size,
                });
                if let Some(r) = tag {
                    d["annotations"] = serde_json::json!({
                        "io.containerd.image.name": r.canonical(),
                        "org.opencontainers.image.ref.name": r.tag().unwrap_or(""),
                    });
                }
                d
            };
            if tags.is_empty() {
                index_entries.push(desc(None));
            }
            for t in tags {
                index_entries.push(desc(Some(t)));
                if let (Some(tag), Some(top)) = (t.tag(), img.layers.last()) {
                    repositories
                        .entry(t.familiar_name())
                        .or_default()
                        .insert(tag.to_string(), top.digest.hex().to_string());
                }
            }
            docker_entries.push(serde_json::json!({
                "Config": format!("blobs/sha256/{}", img.id.hex()),
                "RepoTags": tags.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                "Layers": img.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
            }));
        }
        append_json(
            &mut tar,
            "oci-layout",
            &serde_json::json!({"imageLayoutVersion": "1.0.0"}),
        )?;
        append_json(
            &mut tar,
            "index.json",
            &serde_json::json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_INDEX,
                "manifests": index_entries,
            }),
        )?;
        if format == ArchiveFormat::Docker {
            append_json(
                &mut tar,
                "manifest.json",
                &serde_json::Value::from(docker_entries),
            )?;
            append_json(
                &mut tar,
                "repositories",
                &serde_json::to_value(&repositories).unwrap_or_default(),
            )?;
        }
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(|e| ImageError::io("archive", "write", e))
    }

    fn append_blob<W: Write>(&self, tar: &mut tar::Builder<W>, d: &Digest) -> Result<()> {
        let file = self.content.open_blob(d)?;
        let size = self.content.size(d)?;
        let mut h = header(size);
        tar.append_data(&mut h, format!("blobs/sha256/{}", d.hex()), file)
            .map_err(|e| ImageError::io(self.content.path(d), "write to archive", e))
    }
}

/// Filled in by `resolve` once the index lock is released.
fn placeholder(id: &Digest) -> Image {
    Image {
        id: id.clone(),
        repo_tags: Vec::new(),
        repo_digests: Vec::new(),
        created: None,
        added: String::new(),
        size: 0,
        manifest_digest: id.clone(),
        config: Default::default(),
        layers: Vec::new(),
    }
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn append_json<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    v: &serde_json::Value,
) -> Result<()> {
    let bytes = serde_json::to_vec(v).map_err(|e| ImageError::json(name, e))?;
    let mut h = header(bytes.len() as u64);
    tar.append_data(&mut h, name, &bytes[..])
        .map_err(|e| ImageError::io(name, "write to archive", e))
}
