//! The image store: the index of images and references (`<data-root>/images.json`, written
//! atomically), with the content store and the layer trees under it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock};

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use crate::content::ContentStore;
use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::layers::LayerStore;
use crate::reference::Reference;
use crate::unpack::UnpackLimits;

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Digest of the blob as stored (compressed or not).
    pub digest: Digest,
    pub media_type: String,
    /// Size of the blob as stored.
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    pub chain_id: Digest,
    /// Bytes of file data once unpacked.
    pub unpacked_size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    pub manifest: Digest,
    pub layers: Vec<Layer>,
    /// When berth got the image (RFC 3339).
    pub added: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Index {
    /// Image id (config digest) -> record.
    pub images: BTreeMap<Digest, ImageRecord>,
    /// Canonical reference (`docker.io/library/alpine:latest`) -> image id.
    pub refs: BTreeMap<String, Digest>,
}

/// An image, as the engine sees it.
#[derive(Debug, Clone)]
pub struct Image {
    /// The image id: the digest of its config blob, as Docker.
    pub id: Digest,
    pub repo_tags: Vec<Reference>,
    /// `name@sha256:<manifest digest>` references (set for images with a digest reference).
    pub repo_digests: Vec<Reference>,
    /// The config's `created` (RFC 3339), if any.
    pub created: Option<String>,
    /// When berth got the image (RFC 3339).
    pub added: String,
    /// Sum of the layers' unpacked sizes.
    pub size: u64,
    pub manifest_digest: Digest,
    /// The OCI image configuration; `config.config()` holds Docker's Cmd, Entrypoint, Env,
    /// WorkingDir, User, Labels, ExposedPorts, Volumes and StopSignal.
    pub config: ImageConfiguration,
    /// Bottom layer first.
    pub layers: Vec<Layer>,
}

impl Image {
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }

    /// Chain ids, bottom layer first: what the snapshotter stacks.
    pub fn chain_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.chain_id.clone()).collect()
    }
}

/// What `remove` did, in Docker's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    Untagged(Reference),
    Deleted(Digest),
}

/// What `gc` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub blobs: Vec<Digest>,
    pub layers: Vec<Digest>,
}

pub struct ImageStore {
    pub(crate) root: PathBuf,
    pub(crate) content: ContentStore,
    pub(crate) layers: LayerStore,
    pub(crate) index: Mutex<Index>,
    /// Held shared by writers of new content (import, load) and exclusively by gc, so that gc
    /// never removes a blob that a running import has written but not yet indexed.
    pub(crate) gc_lock: RwLock<()>,
    pub(crate) limits: UnpackLimits,
}

impl ImageStore {
    /// Opens the store under `data_root` (`content/sha256/`, `layers/`, `images.json`),
    /// creating what is missing and clearing temporary files left by a crash.
    pub fn open(data_root: &Path) -> Result<ImageStore> {
        fs::create_dir_all(data_root).map_err(|e| ImageError::io(data_root, "create", e))?;
        let content = ContentStore::open(data_root)?;
        let layers = LayerStore::open(data_root)?;
        let index_path = data_root.join("images.json");
        let index = match fs::read(&index_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| ImageError::json(index_path.display().to_string(), e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(ImageError::io(&index_path, "read", e)),
        };
        Ok(ImageStore {
            root: data_root.to_path_buf(),
            content,
            layers,
            index: Mutex::new(index),
            gc_lock: RwLock::new(()),
            limits: UnpackLimits::default(),
        })
    }

    /// Replaces the unpack limits (tests use small ones).
    pub fn set_unpack_limits(&mut self, limits: UnpackLimits) {
        self.limits = limits;
    }

    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    pub fn layers(&self) -> &LayerStore {
        &self.layers
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes images.json atomically (temporary file, fsync, rename). Called with the lock.
    pub(crate) fn save_index(&self, idx: &Index) -> Result<()> {
        let path = self.root.join("images.json");
        let tmp = self.root.join("images.json.tmp");
        let json = serde_json::to_vec_pretty(idx).map_err(|e| ImageError::json("index", e))?;
        let mut f = fs::File::create(&tmp).map_err(|e| ImageError::io(&tmp, "create", e))?;
        f.write_all(&json)
            .and_then(|_| f.sync_all())
            .map_err(|e| ImageError::io(&tmp, "write", e))?;
        fs::rename(&tmp, &path).map_err(|e| ImageError::io(&path, "replace", e))
    }

    fn image_from(&self, idx: &Index, id: &Digest) -> Result<Image> {
        let rec = idx
            .images
            .get(id)
            .ok_or_else(|| ImageError::NotFound(id.to_string()))?;
        let bytes = self.content.read(id)?;
        let config: ImageConfiguration = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::json(format!("image config {id}"), e))?;
        let mut repo_tags = Vec::new();
        let mut repo_digests = Vec::new();
        for (r, target) in &idx.refs {
            if target == id {
                let r = Reference::parse(r)?;
                if r.digest().is_some() {
                    repo_digests.push(r);
                } else {
                    repo_tags.push(r);
                }
            }
        }
        Ok(Image {
            id: id.clone(),
            repo_tags,
            repo_digests,
            created: config.created().clone(),
            added: rec.added.clone(),
            size: rec.layers.iter().map(|l| l.unpacked_size).sum(),
            manifest_digest: rec.manifest.clone(),
            config,
            layers: rec.layers.clone(),
        })
    }

    /// Finds an image by reference (`alpine`, `alpine:3`, `name@sha256:...`), full or short id
    /// (`sha256:` prefix optional).
    pub fn resolve(&self, name_or_id: &str) -> Result<Image> {
        let idx = self.lock();
        let id = find(&idx, name_or_id)?;
        self.image_from(&idx, &id)
    }

    /// Every image, newest added first.
    pub fn list(&self) -> Result<Vec<Image>> {
        let idx = self.lock();
        let mut out = idx
            .images
            .keys()
            .map(|id| self.image_from(&idx, id))
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| b.added.cmp(&a.added).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Points `new_ref` at the image `src` names (`docker tag`).
    pub fn tag(&self, src: &str, new_ref: &str) -> Result<()> {
        let r = Reference::parse(new_ref)?;
        let mut idx = self.lock();
        let id = find(&idx, src)?;
        idx.refs.insert(r.canonical(), id);
        self.save_index(&idx)
    }

    /// Removes an image or one of its references, as `docker rmi` (moby's
    /// daemon/images/image_delete.go):
    /// - by a reference: that reference goes. If it was a tag and no other tag of the same
    ///   repository is left, the digest references (`repo@sha256:...`) of that repository go
    ///   too: a pulled image has both, and `docker pull x; docker rmi x` deletes it. If other
    ///   references are left, that is all; otherwise the image is deleted;
    /// - by id: refused unless `force` when its references are more than one tag or span
    ///   several repositories; otherwise all go and the image is deleted;
    /// - deleting takes the blobs and layers no other image uses;
    /// - while `in_use(id)` is true (a container uses it): removing its last references (or
    ///   by id) is refused unless `force`; forced, the references are removed but the image
    ///   is kept (dangling) so that the container's layers stay. The engine refuses a running
    ///   container's image before calling this.
    pub fn remove(
        &self,
        name_or_id: &str,
        force: bool,
        in_use: &dyn Fn(&Digest) -> bool,
    ) -> Result<Vec<Removed>> {
        let _gc = self.gc_lock.write().unwrap_or_else(|p| p.into_inner());
        let mut idx = self.lock();
        let by_ref = Reference::parse(name_or_id)
            .ok()
            .filter(|r| idx.refs.contains_key(&r.canonical()));
        let id = match &by_ref {
            Some(r) => idx.refs[&r.canonical()].clone(),
            None => find(&idx, name_or_id)?,
        };
        let refs = refs_to(&idx, &id)?;
        let single = is_single_reference(&refs);
        let mut out = Vec::new();
        let mut untag = |idx: &mut Index, r: &Reference| {
            idx.refs.remove(&r.canonical());
            out.push(Removed::Untagged(r.clone()));
        };
        if let Some(r) = &by_ref {
            // Removing it would leave the image dangling under a container: must force.
            if single && !force && in_use(&id) {
                return Err(ImageError::InUse {
                    image: name_or_id.to_string(),
                });
            }
            untag(&mut idx, r);
            let mut left: Vec<Reference> = refs.into_iter().filter(|x| x != r).collect();
            let same_repo_tag_left = left
                .iter()
                .any(|x| x.digest().is_none() && x.name() == r.name());
            if r.digest().is_none() && !same_repo_tag_left {
                let (digests, rest) = left
                    .into_iter()
                    .partition(|x| x.digest().is_some() && x.name() == r.name());
                for d in &digests {
                    untag(&mut idx, d);
                }
                left = rest;
            }
            if !left.is_empty() || in_use(&id) {
                self.save_index(&idx)?;
                return Ok(out);
            }
        } else {
            if refs.len() > 1 && !single && !force {
                return Err(ImageError::MultipleReferences {
                    image: id.short().to_string(),
                    refs: refs
                        .iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            if in_use(&id) && !force {
                return Err(ImageError::InUse {
                    image: name_or_id.to_string(),
                });
            }
            for r in &refs {
                untag(&mut idx, r);
            }
            if in_use(&id) {
                self.save_index(&idx)?;
                return Ok(out);
            }
        }
        idx.images.remove(&id);
        self.save_index(&idx)?;
        out.push(Removed::Deleted(id));
        self.sweep(&idx)?;
        Ok(out)
    }

    /// Removes every blob and layer tree no image refers to, and temporary files left by
    /// crashes.
    pub fn gc(&self) -> Result<GcReport> {
        let _gc = self.gc_lock.write().unwrap_or_else(|p| p.into_inner());
        let idx = self.lock();
        self.content.clear_tmp();
        self.layers.clear_tmp();
        self.sweep(&idx)
    }

    /// gc's work; the caller holds the gc lock exclusively and the index lock.
    fn sweep(&self, idx: &Index) -> Result<GcReport> {
        let mut live_blobs = BTreeSet::new();
        let mut live_layers = BTreeSet::new();
        for (id, rec) in &idx.images {
            live_blobs.insert(id.clone());
            live_blobs.insert(rec.manifest.clone());
            for l in &rec.layers {
                live_blobs.insert(l.digest.clone());
                live_layers.insert(l.chain_id.clone());
            }
        }
        let mut report = GcReport::default();
        for d in self.content.list()? {
            if !live_blobs.contains(&d) {
                self.content.remove(&d)?;
                report.blobs.push(d);
            }
        }
        for c in self.layers.list()? {
            if !live_layers.contains(&c) {
                self.layers.remove(&c)?;
                report.layers.push(c);
            }
        }
        Ok(report)
    }

    /// Adds (or replaces) an image and points `refs` at it. A reference that pointed at
    /// another image moves; that image stays, untagged, as Docker does.
    pub(crate) fn commit(&self, id: &Digest, rec: ImageRecord, refs: &[Reference]) -> Result<()> {
        let mut idx = self.lock();
        idx.images.insert(id.clone(), rec);
        for r in refs {
            idx.refs.insert(r.canonical(), id.clone());
        }
        self.save_index(&idx)
    }
}

/// The references pointing at `id`.
fn refs_to(idx: &Index, id: &Digest) -> Result<Vec<Reference>> {
    idx.refs
        .iter()
        .filter(|(_, t)| *t == id)
        .map(|(r, _)| Ok(Reference::parse(r)?))
        .collect()
}

/// Whether `refs` are one repository's: at most one tag, and digest references of that
/// repository only (moby's isSingleReference). False for none.
fn is_single_reference(refs: &[Reference]) -> bool {
    let tags: Vec<&Reference> = refs.iter().filter(|r| r.digest().is_none()).collect();
    let Some(first) = tags.first().copied().or(refs.first()) else {
        return false;
    };
    tags.len() <= 1 && refs.iter().all(|r| r.name() == first.name())
}

/// Looks `s` up: `sha256:` digest or prefix, reference, then bare hex id prefix.
pub(crate) fn find(idx: &Index, s: &str) -> Result<Digest> {
    let not_found = || ImageError::NotFound(s.to_string());
    if let Some(hex) = s.strip_prefix("sha256:") {
        return by_prefix(idx, hex, s);
    }
    if let Ok(r) = Reference::parse(s) {
        if let Some(id) = idx.refs.get(&r.canonical()) {
            return Ok(id.clone());
        }
        if let Some(d) = r.digest() {
            // `name@sha256:<manifest>`: the image with that manifest and that repository.
            let name = r.name();
            let hit = idx.images.iter().find(|(id, rec)| {
                rec.manifest == *d
                    && idx.refs.iter().any(|(rr, t)| {
                        t == *id
                            && Reference::parse(rr)
                                .map(|x| x.name() == name)
                                .unwrap_or(false)
                    })
            });
            if let Some((id, _)) = hit {
                return Ok(id.clone());
            }
        }
    }
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return by_prefix(idx, s, s);
    }
    Err(not_found())
}

fn by_prefix(idx: &Index, hex: &str, input: &str) -> Result<Digest> {
    if hex.is_empty() {
        return Err(ImageError::NotFound(input.to_string()));
    }
    let mut hits = idx.images.keys().filter(|id| id.hex().starts_with(hex));
    match (hits.next(), hits.next()) {
        (Some(id), None) => Ok(id.clone()),
        (Some(_), Some(_)) => Err(ImageError::Ambiguous(input.to_string())),
        _ => Err(ImageError::NotFound(input.to_string())),
    }
}

/// Now, RFC 3339 in UTC with second precision.
pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn rfc3339(secs: u64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(fmt).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn single_reference_is_one_repository_with_at_most_one_tag() {
        let d = format!("sha256:{}", "a".repeat(64));
        let refs = |v: &[&str]| -> Vec<Reference> {
            v.iter()
                .map(|s| Reference::parse(&s.replace("D", &d)).unwrap())
                .collect()
        };
        assert!(!is_single_reference(&[]));
        assert!(is_single_reference(&refs(&["a"])));
        assert!(is_single_reference(&refs(&["a@D"])));
        assert!(is_single_reference(&refs(&["a:1", "a@D"])));
        assert!(!is_single_reference(&refs(&["a:1", "a:2"])));
        assert!(!is_single_reference(&refs(&["a:1", "b@D"])));
        assert!(!is_single_reference(&refs(&["a@D", "b@D"])));
    }
}
