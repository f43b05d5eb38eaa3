//! The engine's view of images and root file systems: berth-image's store for images, and
//! berth-snapshot for each container's root. Translates their types and errors into the
//! engine's, so that front ends need neither crate.
//!
//! The image operations a client asks for (tag, rmi, import, load, save, pull, push) are
//! [`Engine`] methods: each does the work and publishes Docker's image event, so that every
//! front end (the Docker API today, a CRI or gRPC one later) gets the same events.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use berth_idmap::UsernsMaps;
use berth_image::{
    ArchiveFormat, Digest, Image, ImageError, ImageStore, ImportOptions, Reference, Removed,
};
use berth_registry::{
    ProgressSink, PullOptions, PullReport, PushOptions, PushReport, RegistryError,
};
use berth_snapshot::{RemapMode, SnapshotError, Snapshotter};

use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::events::Event;

/// The parts of an image's config a container inherits (Docker's `ContainerConfig`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageSettings {
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub labels: BTreeMap<String, String>,
    pub volumes: Vec<String>,
    pub exposed_ports: Vec<String>,
    pub stop_signal: Option<String>,
}

/// An image as the engine and the API see it.
#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    /// `sha256:<config digest>`.
    pub id: String,
    /// `alpine:latest`, as Docker prints them.
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// The image's creation time (RFC 3339), or when berth got it.
    pub created: String,
    pub size: u64,
    pub architecture: String,
    pub os: String,
    pub author: String,
    /// The image made by commit is on top of (`sha256:...`, Docker's `Parent`); empty for
    /// an image pulled, loaded or imported.
    pub parent: String,
    /// The message of the commit or import that made the image (Docker's `Comment`: the
    /// last history entry's comment).
    pub comment: String,
    pub config: ImageSettings,
    /// Uncompressed layer digests, bottom first.
    pub diff_ids: Vec<String>,
    /// Layer chain ids, bottom first.
    pub layers: Vec<String>,
}

/// What `rmi` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRemoval {
    Untagged(String),
    Deleted(String),
}

pub(crate) fn image_error(e: ImageError) -> EngineError {
    match e {
        ImageError::NotFound(name) => EngineError::NotFound(format!("No such image: {name}")),
        e @ (ImageError::InUse { .. } | ImageError::MultipleReferences { .. }) => {
            EngineError::Conflict(e.to_string())
        }
        e @ (ImageError::Reference(_)
        | ImageError::Digest(_)
        | ImageError::Ambiguous(_)
        | ImageError::Change { .. }) => EngineError::InvalidParameter(e.to_string()),
        e
        @ (ImageError::Archive(_) | ImageError::Unpack(_) | ImageError::DigestMismatch { .. }) => {
            EngineError::InvalidParameter(e.to_string())
        }
        e => EngineError::System(e.to_string()),
    }
}

fn snapshot_error(e: SnapshotError) -> EngineError {
    EngineError::System(e.to_string())
}

/// What the engine shows of `img`; `parent` as [`ImageStore::parent_of`] reads it.
fn image_info(img: &Image, parent: Option<Digest>) -> ImageInfo {
    let c = img.config.config().clone().unwrap_or_default();
    let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
    ImageInfo {
        id: img.id.to_string(),
        repo_tags: img.repo_tags.iter().map(|r| r.to_string()).collect(),
        repo_digests: img.repo_digests.iter().map(|r| r.to_string()).collect(),
        created: img.created.clone().unwrap_or_else(|| img.added.clone()),
        size: img.size,
        architecture: img.config.architecture().to_string(),
        os: img.config.os().to_string(),
        author: img.config.author().clone().unwrap_or_default(),
        parent: parent.map(|p| p.to_string()).unwrap_or_default(),
        comment: img
            .config
            .history()
            .as_ref()
            .and_then(|h| h.last())
            .and_then(|h| h.comment().clone())
            .unwrap_or_default(),
        config: ImageSettings {
            cmd: list(c.cmd()),
            entrypoint: list(c.entrypoint()),
            env: list(c.env()),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
            labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
            volumes: list(c.volumes()),
            exposed_ports: list(c.exposed_ports()),
            stop_signal: c.stop_signal().clone(),
        },
        diff_ids: img.layers.iter().map(|l| l.diff_id.to_string()).collect(),
        layers: img.layers.iter().map(|l| l.chain_id.to_string()).collect(),
    }
}

fn digest(s: &str) -> Result<Digest> {
    Digest::from_hex(s.strip_prefix("sha256:").unwrap_or(s))
        .map_err(|e| EngineError::System(format!("bad layer id {s}: {e}")))
}

/// Images and container roots.
pub struct Images {
    store: ImageStore,
    snapshots: Snapshotter,
    /// Whether any container is remapped, for `info`'s driver line.
    remapping: bool,
    /// Held shared while a root is prepared (which may make remapped layer copies) and
    /// exclusively while stale copies are pruned, so that a prune never takes the copy of a
    /// layer a root is being prepared from.
    copies: RwLock<()>,
}

impl Images {
    pub fn open(data_root: &Path, exec_root: &Path, remapping: bool) -> Result<Images> {
        Ok(Images {
            store: ImageStore::open(data_root).map_err(image_error)?,
            snapshots: Snapshotter::open(data_root, exec_root, RemapMode::Auto)
                .map_err(snapshot_error)?,
            remapping,
            copies: RwLock::new(()),
        })
    }

    /// The image store itself, for registry pull and push (berth-registry works on it) and
    /// commit.
    pub(crate) fn store(&self) -> &ImageStore {
        &self.store
    }

    /// What the engine shows of `img`, with its parent read from the store.
    fn info(&self, img: &Image) -> ImageInfo {
        image_info(img, self.store.parent_of(img))
    }

    pub fn resolve(&self, name_or_id: &str) -> Result<ImageInfo> {
        self.store
            .resolve(name_or_id)
            .map(|i| self.info(&i))
            .map_err(image_error)
    }

    pub fn list(&self) -> Result<Vec<ImageInfo>> {
        Ok(self
            .store
            .list()
            .map_err(image_error)?
            .iter()
            .map(|i| self.info(i))
            .collect())
    }

    pub fn count(&self) -> Result<usize> {
        Ok(self.store.list().map_err(image_error)?.len())
    }

    pub(crate) fn tag(&self, src: &str, new_ref: &str) -> Result<()> {
        self.store.tag(src, new_ref).map_err(image_error)
    }

    /// `docker rmi`; `in_use` holds the image ids containers use.
    pub(crate) fn remove(
        &self,
        name_or_id: &str,
        force: bool,
        in_use: &[String],
    ) -> Result<Vec<ImageRemoval>> {
        let removed = self
            .store
            .remove(name_or_id, force, &|d: &Digest| {
                in_use.contains(&d.to_string())
            })
            .map_err(image_error)?;
        if removed.iter().any(|r| matches!(r, Removed::Deleted(_))) {
            self.prune_copies();
        }
        Ok(removed
            .into_iter()
            .map(|r| match r {
                Removed::Untagged(r) => ImageRemoval::Untagged(r.to_string()),
                Removed::Deleted(d) => ImageRemoval::Deleted(d.to_string()),
            })
            .collect())
    }

    /// Drops the remapped copies (data-root/layers-remapped) of layers no stored image has
    /// any more. Logged rather than returned: the image is gone either way, and the next
    /// deletion prunes again.
    fn prune_copies(&self) {
        let _g = self.copies.write().unwrap_or_else(|p| p.into_inner());
        // Listed under the lock: an image stored before it is seen, and a root prepared
        // after it cannot have used a copy this prune removes.
        let live: Vec<Digest> = match self.store.list() {
            Ok(images) => images.iter().flat_map(|i| i.chain_ids()).collect(),
            Err(e) => {
                // Never prune from an incomplete list.
                tracing::warn!(error = %e, "listing images to prune remapped layer copies");
                return;
            }
        };
        match self.snapshots.prune_copies(&live) {
            Ok(gone) if !gone.is_empty() => {
                tracing::debug!(count = gone.len(), "pruned remapped layer copies")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning remapped layer copies"),
        }
    }

    /// `docker import`: a root file system tarball becomes an image.
    pub(crate) fn import(&self, reader: impl Read, opts: ImportOptions) -> Result<ImageInfo> {
        self.store
            .import(reader, opts)
            .map(|i| self.info(&i))
            .map_err(image_error)
    }

    /// `docker load`: returns the references (or ids, for untagged images) loaded.
    pub(crate) fn load(&self, reader: impl Read) -> Result<Vec<(String, Vec<String>)>> {
        let loaded = self.store.load(reader).map_err(image_error)?;
        Ok(loaded
            .into_iter()
            .map(|l| {
                (
                    l.id.to_string(),
                    l.references.iter().map(|r| r.to_string()).collect(),
                )
            })
            .collect())
    }

    /// `docker save`, in Docker's archive format.
    pub(crate) fn save(&self, names: &[&str], out: impl Write) -> Result<()> {
        self.store
            .save(names, ArchiveFormat::Docker, out)
            .map_err(image_error)
    }

    // ----- container roots -----

    pub fn prepare_rootfs(
        &self,
        id: &str,
        layers: &[String],
        maps: Option<&UsernsMaps>,
    ) -> Result<()> {
        let chain = layers
            .iter()
            .map(|l| digest(l))
            .collect::<Result<Vec<_>>>()?;
        let _g = self.copies.read().unwrap_or_else(|p| p.into_inner());
        self.snapshots
            .prepare(id, &chain, maps)
            .map_err(snapshot_error)
    }

    /// Mounts the root prepared for container `id` and returns where.
    pub fn mount_rootfs(&self, id: &str) -> Result<PathBuf> {
        self.snapshots.mount(id).map_err(snapshot_error)
    }

    pub fn unmount_rootfs(&self, id: &str) -> Result<()> {
        self.snapshots.unmount(id).map_err(snapshot_error)
    }

    pub fn remove_rootfs(&self, id: &str) -> Result<()> {
        self.snapshots.remove(id).map_err(snapshot_error)
    }

    pub fn rootfs_path(&self, id: &str) -> PathBuf {
        self.snapshots.rootfs_path(id)
    }

    /// `overlay`, and how remapped roots are made, for `info`.
    pub fn driver_name(&self) -> String {
        if self.remapping {
            format!(
                "overlay ({} remapped layers)",
                self.snapshots.remap_method()
            )
        } else {
            "overlay".into()
        }
    }
}

/// A reference as Docker shows it in events and answers: `alpine:latest`, `user/app:1`,
/// `localhost:5000/a@sha256:...`. Anything that does not parse is shown as given.
pub(crate) fn familiar(r: &str) -> String {
    Reference::parse(r).map_or_else(|_| r.to_string(), |p| p.to_string())
}

/// `repo` with `tag` (none or empty: as given, so `:latest` by default).
pub fn tagged(repo: &str, tag: Option<&str>) -> String {
    match tag.filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_string(),
    }
}

impl Engine {
    /// The labels of image `id`, for its events (none once it is deleted, as in Docker).
    fn image_labels(&self, id: &str) -> BTreeMap<String, String> {
        self.inner
            .images
            .resolve(id)
            .map(|i| i.config.labels)
            .unwrap_or_default()
    }

    /// Publishes an image event as moby's `LogImageEvent` does: the actor is `id`, the
    /// attributes the image's labels and `name`. (Also for commit: dockerd's commit with a
    /// reference logs `tag` (`name` the reference) before the container's `commit`.)
    pub(crate) fn image_event(&self, action: &str, id: &str, name: &str) {
        self.emit(Event::image(action, id, name, self.image_labels(id)));
    }

    /// `docker tag SRC REPO[:TAG]`; event `tag` (the image's id, name `REPO:TAG`).
    pub fn tag_image(&self, src: &str, repo: &str, tag: Option<&str>) -> Result<()> {
        let new_ref = tagged(repo, tag);
        self.inner.images.tag(src, &new_ref)?;
        let id = self.inner.images.resolve(&new_ref)?.id;
        self.image_event("tag", &id, &familiar(&new_ref));
        Ok(())
    }

    /// `docker rmi`: refused for an image a container uses unless `force`. Events: `untag`
    /// for each reference removed and `delete` when the image goes, both named by the image's
    /// id as Docker names them.
    pub fn remove_image(&self, name_or_id: &str, force: bool) -> Result<Vec<ImageRemoval>> {
        let img = self.inner.images.resolve(name_or_id)?;
        let in_use = self.images_in_use();
        let removed = self.inner.images.remove(name_or_id, force, &in_use)?;
        for r in &removed {
            // Built from the labels read before: untag events precede the deletion in
            // Docker, so they carry them.
            let ev = match r {
                ImageRemoval::Untagged(_) => {
                    Event::image("untag", &img.id, &img.id, img.config.labels.clone())
                }
                ImageRemoval::Deleted(d) => Event::image("delete", d, d, BTreeMap::new()),
            };
            self.emit(ev);
        }
        Ok(removed)
    }

    /// `docker import`: a root file system tarball becomes an image, tagged `reference` if
    /// given. Events: `tag` (with a reference), then `import` (named by the id).
    pub fn import_image(&self, reader: impl Read, opts: ImportOptions) -> Result<ImageInfo> {
        let reference = opts.reference;
        let img = self.inner.images.import(reader, opts)?;
        if let Some(r) = reference {
            self.image_event("tag", &img.id, &familiar(r));
        }
        self.image_event("import", &img.id, &img.id);
        Ok(img)
    }

    /// `docker load`: each image loaded, with its references (none for an untagged image).
    /// Event: `load` for each (named by the id).
    pub fn load_images(&self, reader: impl Read) -> Result<Vec<(String, Vec<String>)>> {
        let loaded = self.inner.images.load(reader)?;
        for (id, _) in &loaded {
            self.image_event("load", id, id);
        }
        Ok(loaded)
    }

    /// `docker save`, in Docker's archive format. Event: `save` for each image written
    /// (named by the id), once the archive is complete.
    pub fn save_images(&self, names: &[&str], out: impl Write) -> Result<()> {
        let ids = names
            .iter()
            .map(|n| self.inner.images.resolve(n).map(|i| i.id))
            .collect::<Result<Vec<_>>>()?;
        self.inner.images.save(names, out)?;
        let mut seen = Vec::new();
        for id in ids {
            if !seen.contains(&id) {
                self.image_event("save", &id, &id);
                seen.push(id);
            }
        }
        Ok(())
    }

    /// `docker pull` of one reference from its registry. Event: `pull`, as moby's
    /// distribution.Pull logs it: the actor is the reference (`host:5000/app:1`), the name
    /// its repository (`host:5000/app`).
    pub fn pull_image(
        &self,
        reference: &Reference,
        opts: &PullOptions,
        progress: ProgressSink<'_>,
    ) -> Result<PullReport, RegistryError> {
        let report = berth_registry::pull(self.inner.images.store(), reference, opts, progress)?;
        self.registry_event("pull", reference);
        Ok(report)
    }

    /// What `docker push NAME[:TAG]` sends: that tag, or with no tag (nor digest) every tag
    /// of the repository. Errs as Docker does when there is nothing to push.
    pub fn push_targets(&self, name: &str, tag: Option<&str>) -> Result<Vec<Reference>> {
        let bad = |e: berth_image::ReferenceError| EngineError::InvalidParameter(e.to_string());
        let base = Reference::parse_name_only(name).map_err(bad)?;
        let targets = match (tag.filter(|t| !t.is_empty()), base.tag(), base.digest()) {
            (Some(t), _, _) => vec![base.with_tag(t).map_err(bad)?],
            (None, Some(_), _) | (None, _, Some(_)) => vec![base.clone()],
            (None, None, None) => {
                let repo = base.name();
                let images = self.inner.images.store().list().map_err(image_error)?;
                images
                    .iter()
                    .flat_map(|i| i.repo_tags.iter())
                    .filter(|r| r.name() == repo)
                    .cloned()
                    .collect()
            }
        };
        let missing = |what: String| {
            EngineError::NotFound(format!(
                "An image does not exist locally with the tag: {what}"
            ))
        };
        let Some(first) = targets.first() else {
            return Err(missing(base.familiar_name()));
        };
        if self
            .inner
            .images
            .store()
            .resolve(&first.canonical())
            .is_err()
        {
            return Err(missing(first.to_string()));
        }
        Ok(targets)
    }

    /// `docker push` of one local reference to its registry. Event: `push`, named as `pull`.
    pub fn push_image(
        &self,
        target: &Reference,
        opts: &PushOptions,
        progress: ProgressSink<'_>,
    ) -> Result<PushReport, RegistryError> {
        let store = self.inner.images.store();
        let report = berth_registry::push(store, &target.canonical(), target, opts, progress)?;
        self.registry_event("push", target);
        Ok(report)
    }

    fn registry_event(&self, action: &str, reference: &Reference) {
        let labels = self.image_labels(&reference.canonical());
        let ev = Event::image(
            action,
            reference.to_string(),
            reference.familiar_name(),
            labels,
        );
        self.emit(ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_as_events_name_them() {
        assert_eq!(familiar("alpine"), "alpine:latest");
        assert_eq!(familiar("docker.io/library/alpine:3"), "alpine:3");
        assert_eq!(familiar("localhost:5000/a/b:1"), "localhost:5000/a/b:1");
        assert_eq!(familiar("Not A Reference"), "Not A Reference");
        assert_eq!(tagged("app", Some("1")), "app:1");
        assert_eq!(tagged("app", Some("")), "app");
        assert_eq!(tagged("app", None), "app");
    }

    /// Deleting an image drops the remapped copies of its layers and keeps those of the
    /// images still stored; untagging alone prunes nothing.
    fn named(reference: &str) -> ImportOptions<'_> {
        ImportOptions {
            reference: Some(reference),
            ..Default::default()
        }
    }

    #[test]
    fn deleting_an_image_prunes_its_remapped_layer_copies() {
        berth_testkit::require_root();
        let dir = berth_testkit::tempdir("berth-engine-images-");
        let images = Images::open(dir.path(), &dir.path().join("exec"), true).unwrap();
        let busybox = std::fs::File::open(berth_testkit::busybox_tar()).unwrap();
        let kept = images.import(busybox, named("kept")).unwrap();
        // An empty tarball: an image with another layer.
        let empty = [0u8; 1024];
        let gone = images.import(&empty[..], named("gone")).unwrap();
        images.tag("gone", "gone:2").unwrap();
        assert_ne!(kept.layers, gone.layers);

        // Copies as the copy method leaves them, under one mapping's directory.
        let copies = dir.path().join("layers-remapped/0123456789abcdef");
        let copy = |layer: &str| copies.join(layer.strip_prefix("sha256:").unwrap());
        for l in kept.layers.iter().chain(&gone.layers) {
            std::fs::create_dir_all(copy(l).join("diff")).unwrap();
        }

        let r = images.remove("gone:2", false, &[]).unwrap();
        assert_eq!(r, vec![ImageRemoval::Untagged("gone:2".into())]);
        assert!(copy(&gone.layers[0]).exists());

        let r = images.remove("gone", false, &[]).unwrap();
        assert_eq!(r.last(), Some(&ImageRemoval::Deleted(gone.id.clone())));
        assert!(!copy(&gone.layers[0]).exists());
        assert!(copy(&kept.layers[0]).join("diff").is_dir());
    }
}
