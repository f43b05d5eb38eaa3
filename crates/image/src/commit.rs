//! `commit`: a container's read-write layer (already a layer tar, in the container's view of
//! owners) becomes a new image on top of the container's image.
//!
//! The new image's config follows moby's daemon/commit.go: it starts from the config sent
//! with the request, or else the container's own (which already holds what the container
//! inherited from its image), the `--change`s apply to it, and what it still lacks comes
//! from the container's config ([`merge`]). As Docker, the config blob also records the
//! container's id (`container`), its full config (`container_config`) and the parent image
//! (`parent`); the history entry's `created_by` is the container's command and its
//! `comment` the commit message.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use oci_spec::image::{Config, HistoryBuilder};

use crate::changes;
use crate::digest::Digest;
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
    /// Dockerfile-style changes (`CMD ["sh"]`, `ENV A=b`, ...).
    pub changes: Vec<String>,
    /// The commit message: the new history entry's comment.
    pub comment: Option<String>,
    pub author: Option<String>,
    /// The container's config (Docker's `container.Config`): the base of the new image's
    /// config. None: the parent image's config.
    pub container_config: Option<Config>,
    /// A config sent with the request (the body of `POST /commit`): used instead of the
    /// container's as the start; what it lacks is then taken from the container's.
    pub config: Option<Config>,
    /// The container's id, recorded as the image's `container`.
    pub container_id: Option<String>,
    /// The container's full config in Docker's JSON shape, recorded as the image's
    /// `container_config`.
    pub container_config_json: Option<serde_json::Value>,
}

/// `user`'s entries followed by those of `base` it lacks (`base`'s alone when `user` has
/// none): moby's merge of ExposedPorts and Volumes.
fn union(user: &Option<Vec<String>>, base: &Option<Vec<String>>) -> Option<Vec<String>> {
    let mut out = user.clone().unwrap_or_default();
    for b in base.iter().flatten() {
        if !out.contains(b) {
            out.push(b.clone());
        }
    }
    if out.is_empty() {
        base.clone()
    } else {
        Some(out)
    }
}

/// Docker's merge (moby daemon/commit.go): completes `user` (the requested config, changes
/// applied) with what it lacks from `base` (the container's config).
pub fn merge(user: &mut Config, base: &Config) {
    let empty = |s: &Option<String>| s.as_deref().unwrap_or_default().is_empty();
    let empty_list = |v: &Option<Vec<String>>| v.as_ref().is_none_or(Vec::is_empty);
    if empty(user.user()) {
        user.set_user(base.user().clone());
    }
    user.set_exposed_ports(union(user.exposed_ports(), base.exposed_ports()));
    if empty_list(user.env()) {
        user.set_env(base.env().clone());
    } else if let Some(base_env) = base.env() {
        let mut env = user.env().clone().unwrap_or_default();
        let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
        for e in base_env {
            if !env.iter().any(|u| key(u) == key(e)) {
                env.push(e.clone());
            }
        }
        user.set_env(Some(env));
    }
    let mut labels: HashMap<String, String> = base.labels().clone().unwrap_or_default();
    labels.extend(user.labels().clone().unwrap_or_default());
    user.set_labels((!labels.is_empty()).then_some(labels));
    // An empty entrypoint with no command takes the container's command; an entrypoint
    // never given (not one given as empty, which resets it) takes the container's.
    if empty_list(user.entrypoint()) {
        if empty_list(user.cmd()) {
            user.set_cmd(base.cmd().clone());
        }
        if user.entrypoint().is_none() {
            user.set_entrypoint(base.entrypoint().clone());
        }
    }
    if empty(user.working_dir()) {
        user.set_working_dir(base.working_dir().clone());
    }
    user.set_volumes(union(user.volumes(), base.volumes()));
    if empty(user.stop_signal()) {
        user.set_stop_signal(base.stop_signal().clone());
    }
}

/// The new image's config: the requested one (else the container's, else the parent
/// image's), the changes applied, completed from the container's.
fn new_config(parent: &Image, opts: &CommitOptions<'_>) -> Result<Config> {
    let base = opts
        .container_config
        .clone()
        .or_else(|| parent.config.config().clone())
        .unwrap_or_default();
    let mut config = opts.config.clone().unwrap_or_else(|| base.clone());
    changes::apply(&mut config, &opts.changes)?;
    merge(&mut config, &base);
    Ok(config)
}

/// Whether the uncompressed layer tar holds no entry (its first block is the end marker):
/// as Docker, such a commit adds an empty-layer history entry and no layer.
fn is_empty_tar(layer: &mut File) -> Result<bool> {
    let mut block = [0u8; 512];
    let mut got = 0;
    while got < block.len() {
        match layer.read(&mut block[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::Archive(format!("reading the layer: {e}"))),
        }
    }
    Ok(block[..got].iter().all(|&b| b == 0))
}

impl ImageStore {
    /// Adds the uncompressed layer tar in `layer` on top of image `parent` as a new image.
    /// Nothing is written when the reference, a change or the parent is wrong.
    pub fn commit_layer(
        &self,
        parent: &str,
        layer: &mut File,
        opts: CommitOptions<'_>,
    ) -> Result<Image> {
        let reference = opts.reference.map(Reference::parse).transpose()?;
        // Held from the parent's lookup on, so that a prune cannot take its layers meanwhile.
        let _gc = self.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let parent = self.resolve(parent).map_err(|e| match e {
            ImageError::NotFound(_) => ImageError::NotFound(format!(
                "{parent} (the container's image was removed; its changes cannot be committed \
                 on top of it)"
            )),
            e => e,
        })?;
        let config = new_config(&parent, &opts)?;
        let mut image_config = parent.config.clone();

        let rewind = |f: &mut File| {
            f.seek(SeekFrom::Start(0))
                .map_err(|e| ImageError::Archive(format!("rewinding the layer: {e}")))
        };
        rewind(layer)?;
        let empty_layer = is_empty_tar(layer)?;
        let mut layers = parent.layers.clone();
        let mut rootfs = image_config.rootfs().clone();
        if !empty_layer {
            rewind(layer)?;
            let parent_chain = parent.chain_ids().last().cloned();
            let meta =
                self.layers
                    .unpack(&mut *layer, parent_chain.as_ref(), None, &self.limits)?;
            rewind(layer)?;
            let (digest, size) = self.content.put_reader(layer, Some(meta.diff_id.clone()))?;
            let mut diff_ids = rootfs.diff_ids().clone();
            diff_ids.push(meta.diff_id.to_string());
            rootfs.set_diff_ids(diff_ids);
            layers.push(Layer {
                digest,
                media_type: media::OCI_LAYER.to_string(),
                size,
                diff_id: meta.diff_id.clone(),
                chain_id: meta.chain_id.clone(),
                unpacked_size: meta.size,
            });
        }

        let created = now_rfc3339();
        let created_by = opts
            .container_config
            .as_ref()
            .and_then(|c| c.cmd().as_ref())
            .map(|c| c.join(" "))
            .unwrap_or_default();
        let mut history = HistoryBuilder::default()
            .created(created.clone())
            .created_by(created_by);
        if empty_layer {
            history = history.empty_layer(true);
        }
        if let Some(c) = opts.comment.as_ref().filter(|c| !c.is_empty()) {
            history = history.comment(c.clone());
        }
        if let Some(a) = opts.author.as_ref().filter(|a| !a.is_empty()) {
            history = history.author(a.clone());
        }
        let history = history
            .build()
            .map_err(|e| ImageError::Archive(format!("building history: {e}")))?;
        let mut all_history = image_config.history().clone().unwrap_or_default();
        all_history.push(history);
        image_config
            .set_created(Some(created.clone()))
            .set_config(Some(config))
            .set_rootfs(rootfs)
            .set_history(Some(all_history))
            .set_author(opts.author.clone().filter(|a| !a.is_empty()));
        let config_bytes = config_json(&image_config, &parent, &opts)?;
        let id = self.content.put_bytes(&config_bytes, None)?;
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

impl ImageStore {
    /// The image `image` was committed on top of (Docker's `Parent`, which `inspect` shows),
    /// read from the config blob's `parent`; None for an image not made by commit.
    pub fn parent_of(&self, image: &Image) -> Option<Digest> {
        let raw = self.content.read(&image.id).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
        v.get("parent")?.as_str()?.parse().ok()
    }
}

/// The config blob: the OCI configuration plus Docker's `container`, `container_config`
/// and `parent`, which the OCI type has no place for.
fn config_json(
    image_config: &oci_spec::image::ImageConfiguration,
    parent: &Image,
    opts: &CommitOptions<'_>,
) -> Result<Vec<u8>> {
    let mut v =
        serde_json::to_value(image_config).map_err(|e| ImageError::json("image config", e))?;
    if let Some(obj) = v.as_object_mut() {
        if let Some(id) = &opts.container_id {
            obj.insert("container".into(), id.clone().into());
        }
        if let Some(c) = &opts.container_config_json {
            obj.insert("container_config".into(), c.clone());
        }
        obj.insert("parent".into(), parent.id.to_string().into());
    }
    serde_json::to_vec(&v).map_err(|e| ImageError::json("image config", e))
}

#[cfg(test)]
mod tests {
    use oci_spec::image::ConfigBuilder;

    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn container() -> Config {
        ConfigBuilder::default()
            .user("daemon")
            .env(strings(&["PATH=/bin", "A=1"]))
            .cmd(strings(&["sh", "-c", "echo hi"]))
            .entrypoint(Vec::<String>::new())
            .working_dir("/srv")
            .labels(HashMap::from([("l".to_string(), "c".to_string())]))
            .exposed_ports(strings(&["80/tcp"]))
            .volumes(strings(&["/data"]))
            .stop_signal("SIGINT")
            .build()
            .unwrap()
    }

    #[test]
    fn an_empty_request_takes_everything_from_the_container() {
        let base = container();
        let mut user = Config::default();
        merge(&mut user, &base);
        assert_eq!(user.user().as_deref(), Some("daemon"));
        assert_eq!(user.env(), base.env());
        assert_eq!(user.cmd(), base.cmd());
        assert_eq!(user.working_dir().as_deref(), Some("/srv"));
        assert_eq!(user.labels(), base.labels());
        assert_eq!(user.exposed_ports(), base.exposed_ports());
        assert_eq!(user.volumes(), base.volumes());
        assert_eq!(user.stop_signal().as_deref(), Some("SIGINT"));
    }

    #[test]
    fn the_request_wins_and_lists_are_completed() {
        let base = container();
        let mut user = ConfigBuilder::default()
            .user("root")
            .env(strings(&["A=2", "B=3"]))
            .labels(HashMap::from([
                ("l".to_string(), "u".to_string()),
                ("m".to_string(), "u".to_string()),
            ]))
            .exposed_ports(strings(&["53/udp"]))
            .volumes(strings(&["/logs"]))
            .entrypoint(strings(&["/bin/run"]))
            .build()
            .unwrap();
        merge(&mut user, &base);
        assert_eq!(user.user().as_deref(), Some("root"));
        assert_eq!(
            user.env().as_deref().unwrap(),
            ["A=2", "B=3", "PATH=/bin"],
            "the request's A wins, the container's others are added"
        );
        let labels = user.labels().clone().unwrap();
        assert_eq!((labels["l"].as_str(), labels["m"].as_str()), ("u", "u"));
        assert_eq!(
            user.exposed_ports().as_deref().unwrap(),
            ["53/udp", "80/tcp"]
        );
        assert_eq!(user.volumes().as_deref().unwrap(), ["/logs", "/data"]);
        // An entrypoint given: the container's command is not added to it.
        assert_eq!(user.entrypoint().as_deref().unwrap(), ["/bin/run"]);
        assert_eq!(user.cmd(), &None);
    }

    #[test]
    fn command_and_entrypoint_rules() {
        let base = ConfigBuilder::default()
            .entrypoint(strings(&["/entry"]))
            .cmd(strings(&["arg"]))
            .build()
            .unwrap();
        // A command alone keeps the container's entrypoint.
        let mut user = ConfigBuilder::default()
            .cmd(strings(&["other"]))
            .build()
            .unwrap();
        merge(&mut user, &base);
        assert_eq!(user.entrypoint().as_deref().unwrap(), ["/entry"]);
        assert_eq!(user.cmd().as_deref().unwrap(), ["other"]);
        // An entrypoint given as empty resets it, and takes the container's command.
        let mut user = ConfigBuilder::default()
            .entrypoint(Vec::<String>::new())
            .build()
            .unwrap();
        merge(&mut user, &base);
        assert_eq!(user.entrypoint().as_deref(), Some(&[][..]));
        assert_eq!(user.cmd().as_deref().unwrap(), ["arg"]);
    }

    /// A store in a temporary directory holding the busybox image (the parent).
    fn store_with_busybox() -> (tempfile::TempDir, ImageStore, Image) {
        let tmp = berth_testkit::tempdir("berth-commit-");
        let store = ImageStore::open(tmp.path()).unwrap();
        let tar = berth_testkit::busybox_tar();
        let parent = store
            .import(File::open(&tar).unwrap(), crate::ImportOptions::default())
            .unwrap();
        (tmp, store, parent)
    }

    #[test]
    fn changes_apply_to_the_container_config_not_the_parents() {
        let (tmp, store, parent) = store_with_busybox();
        let empty_tar = tmp.path().join("empty.tar");
        std::fs::write(&empty_tar, [0u8; 1024]).unwrap();
        let opts = CommitOptions {
            reference: Some("committed:1"),
            changes: strings(&["ENV B=2", "CMD [\"/bin/true\"]"]),
            comment: Some("a message".into()),
            container_config: Some(container()),
            container_id: Some("abc".into()),
            container_config_json: Some(serde_json::json!({"Cmd": ["sh"]})),
            ..Default::default()
        };
        let img = store
            .commit_layer(
                &parent.id.to_string(),
                &mut File::open(&empty_tar).unwrap(),
                opts,
            )
            .unwrap();
        let c = img.config.config().clone().unwrap();
        assert_eq!(c.env().as_deref().unwrap(), ["PATH=/bin", "A=1", "B=2"]);
        assert_eq!(c.cmd().as_deref().unwrap(), ["/bin/true"]);
        assert_eq!(c.user().as_deref(), Some("daemon"));
        // Nothing changed: no layer, an empty-layer history entry.
        assert_eq!(img.layers.len(), parent.layers.len());
        let h = img.config.history().clone().unwrap();
        let last = h.last().unwrap();
        assert_eq!(last.empty_layer(), Some(true));
        assert_eq!(last.created_by().as_deref(), Some("sh -c echo hi"));
        assert_eq!(last.comment().as_deref(), Some("a message"));
        let raw: serde_json::Value =
            serde_json::from_slice(&store.content().read(&img.id).unwrap()).unwrap();
        assert_eq!(raw["container"], "abc");
        assert_eq!(raw["container_config"]["Cmd"][0], "sh");
        assert_eq!(raw["parent"], parent.id.to_string());
        assert_eq!(store.parent_of(&img), Some(parent.id.clone()));
        assert_eq!(store.parent_of(&parent), None);
        assert_eq!(store.resolve("committed:1").unwrap().id, img.id, "tagged");
    }

    #[test]
    fn nothing_is_written_for_a_bad_reference_change_or_parent() {
        let (tmp, store, parent) = store_with_busybox();
        let tar = berth_testkit::busybox_tar();
        let layer = tmp.path().join("layer.tar");
        std::fs::copy(&tar, &layer).unwrap();
        let blobs = store.content().list().unwrap().len();
        let pid = parent.id.to_string();
        let gone = format!("sha256:{}", "0".repeat(64));
        for (parent, reference, change, why) in [
            (pid.as_str(), Some("Bad:Ref"), None, "invalid reference"),
            (pid.as_str(), None, Some("RUN x"), "RUN"),
            (
                gone.as_str(),
                None,
                None,
                "the container's image was removed",
            ),
        ] {
            let opts = CommitOptions {
                reference,
                changes: change.map(String::from).into_iter().collect(),
                ..Default::default()
            };
            let e = store
                .commit_layer(parent, &mut File::open(&layer).unwrap(), opts)
                .unwrap_err()
                .to_string();
            assert!(e.to_lowercase().contains(&why.to_lowercase()), "{why}: {e}");
            assert_eq!(store.list().unwrap().len(), 1, "{why}: no image added");
            assert_eq!(
                store.content().list().unwrap().len(),
                blobs,
                "{why}: no blob added"
            );
        }
    }
}
