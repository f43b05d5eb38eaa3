//! Pull: manifest (or index, then the chosen platform's manifest), config and layers from a
//! registry into the image store. Every blob is verified while it streams into the content
//! store (a temporary file renamed into place only when its digest matches), so an
//! interrupted or corrupt pull leaves nothing visible; blobs already stored are not fetched.
//! Layers are fetched a few at a time and each is unpacked as soon as it is complete.

use berth_image::pipe::ChannelReader;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};

use berth_image::layers::PendingLayer;
use berth_image::registry::{IndexDoc, Manifest, Probe};
use berth_image::{
    chain_ids, compress, media, Digest, Image, ImageConfiguration, ImageStore, Reference,
};

use crate::client::{Client, Payload, RegistryOptions};
use crate::error::{RegistryError, Result};
use crate::progress::{Progress, ProgressSink, PROGRESS_STEP};

/// Accepted manifest media types, most wanted first.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Manifests and indexes larger than this are refused (Docker's limit is 4 MiB too).
const MAX_MANIFEST: u64 = 4 << 20;

/// An OS/architecture pair such as `linux/amd64` or `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl PlatformSpec {
    /// The host's platform.
    pub fn host() -> PlatformSpec {
        PlatformSpec {
            os: "linux".into(),
            architecture: media::host_arch().into(),
            variant: None,
        }
    }

    /// Parses `OS/ARCH[/VARIANT]`.
    pub fn parse(s: &str) -> Result<PlatformSpec> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || RegistryError::BadPlatform(s.to_string());
        if parts.iter().any(|p| p.is_empty()) || !(2..=3).contains(&parts.len()) {
            return Err(bad());
        }
        Ok(PlatformSpec {
            os: parts[0].to_ascii_lowercase(),
            architecture: parts[1].to_ascii_lowercase(),
            variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
        })
    }
}

impl std::fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub registry: RegistryOptions,
    /// None: the host's platform.
    pub platform: Option<PlatformSpec>,
    /// Layers fetched at once (Docker: 3).
    pub parallel: usize,
}

impl Default for PullOptions {
    fn default() -> PullOptions {
        PullOptions {
            registry: RegistryOptions::default(),
            platform: None,
            parallel: 3,
        }
    }
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullReport {
    pub image: Image,
    /// The digest of what the reference names (an index's digest when it names an index):
    /// the digest Docker prints and records as the repository digest.
    pub digest: Digest,
    /// False when the reference already named this image ("Image is up to date").
    pub updated: bool,
    /// Blobs fetched (config and layers) and their bytes; zero when everything was present.
    pub blobs_fetched: usize,
    pub bytes_fetched: u64,
}

/// Pulls `reference` into `store`, reporting progress as Docker does.
pub fn pull(
    store: &ImageStore,
    reference: &Reference,
    opts: &PullOptions,
    progress: ProgressSink<'_>,
) -> Result<PullReport> {
    let client = Client::new(reference.domain(), &opts.registry);
    let repo = reference.path();
    let scope = format!("repository:{repo}:pull");
    let tag_or_digest = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    };
    progress(Progress::line(
        Some(&tag_or_digest),
        format!("Pulling from {repo}"),
    ));
    client.ping()?;
    let before = store.resolve(&reference.canonical()).ok().map(|i| i.id);
    let held = store.pull_guard();

    let (top_digest, bytes, media_type) =
        fetch_manifest(&client, repo, &tag_or_digest, reference.digest(), &scope)?;
    let platform = opts.platform.clone().unwrap_or_else(PlatformSpec::host);
    let (manifest_digest, manifest_bytes) = if is_index(&media_type, &bytes)? {
        let idx: IndexDoc =
            serde_json::from_slice(&bytes).map_err(|e| client.protocol("image index", e))?;
        let chosen = choose(&idx, &platform).ok_or_else(|| RegistryError::NoPlatform {
            reference: reference.to_string(),
            platform: platform.to_string(),
            available: idx
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let d = chosen.digest.clone();
        let (_, b, mt) = fetch_manifest(&client, repo, &d.to_string(), Some(&d), &scope)?;
        if is_index(&mt, &b)? {
            return Err(client.protocol("image index", "an index entry is itself an index"));
        }
        (d, b)
    } else {
        (top_digest.clone(), bytes)
    };
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| client.protocol(&format!("manifest {manifest_digest}"), e))?;

    let fetched = AtomicUsize::new(0);
    let fetched_bytes = AtomicU64::new(0);
    // The config first: it names the layers' diff ids, which unpacking checks.
    let config_d = &manifest.config.digest;
    if !store.content().contains(config_d) {
        let n = fetch_blob(
            store,
            &client,
            repo,
            &scope,
            config_d,
            manifest.config.size,
            None,
            &|_| {},
            None,
        )?;
        fetched.fetch_add(1, Ordering::Relaxed);
        fetched_bytes.fetch_add(n, Ordering::Relaxed);
    }
    let config: ImageConfiguration = serde_json::from_slice(&store.content().read(config_d)?)
        .map_err(|e| client.protocol(&format!("image config {config_d}"), e))?;
    let diff_ids = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| d.parse::<Digest>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| client.protocol(&format!("image config {config_d}"), e))?;
    if diff_ids.len() != manifest.layers.len() {
        return Err(client.protocol(
            &format!("manifest {manifest_digest}"),
            format!(
                "it lists {} layers, its config {}",
                manifest.layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let chains = chain_ids(&diff_ids);

    let mut todo = Vec::new();
    for (i, l) in manifest.layers.iter().enumerate() {
        let id = l.digest.short();
        if store.content().contains(&l.digest) {
            progress(Progress::line(Some(id), "Already exists"));
        } else {
            progress(Progress::line(Some(id), "Pulling fs layer"));
            todo.push(i);
        }
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
    let workers = opts.parallel.max(1).min(todo.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    return;
                }
                let Some(&i) = todo.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return;
                };
                let l = &manifest.layers[i];
                let id = l.digest.short();
                let step = |done: u64| {
                    progress(Progress::bytes(id, "Downloading", done, l.size));
                };
                let parent = i.checked_sub(1).map(|p| &chains[p]);
                let unpack = !store.layers().exists(&chains[i]);
                // The layer is unpacked while it downloads (a second thread reads what the
                // download writes); the unpacked tree is kept only once the blob's digest
                // and the tree's diff id both check out.
                let r = std::thread::scope(|s| -> Result<()> {
                    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(32);
                    let unpacker = unpack.then(|| {
                        s.spawn(move || -> Result<PendingLayer> {
                            let reader = ChannelReader::new(rx);
                            let (_, tar) = compress::decompress(reader).map_err(|e| {
                                berth_image::ImageError::Archive(format!("layer {}: {e}", l.digest))
                            })?;
                            Ok(store
                                .layers()
                                .unpack_pending(tar, store.unpack_limits(), true)?)
                        })
                    });
                    let tee = unpacker.is_some().then_some(tx);
                    let fetched_blob = fetch_blob(
                        store,
                        &client,
                        repo,
                        &scope,
                        &l.digest,
                        l.size,
                        Some(&failed),
                        &step,
                        tee,
                    );
                    let pending = unpacker.map(|u| {
                        u.join().unwrap_or_else(|_| {
                            Err(RegistryError::Cancelled(
                                "an unpacking thread panicked".into(),
                            ))
                        })
                    });
                    let n = fetched_blob?;
                    fetched.fetch_add(1, Ordering::Relaxed);
                    fetched_bytes.fetch_add(n, Ordering::Relaxed);
                    progress(Progress::line(Some(id), "Download complete"));
                    if let Some(p) = pending {
                        p?.commit(store.layers(), parent, Some(&diff_ids[i]))?;
                    }
                    progress(Progress::line(Some(id), "Pull complete"));
                    Ok(())
                });
                if let Err(e) = r {
                    failed.store(true, Ordering::Relaxed);
                    first_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                    return;
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }

    store
        .content()
        .put_bytes(&manifest_bytes, Some(manifest_digest.clone()))?;
    // The repository digest is recorded as Docker does (`name@sha256:...`), with the tag
    // when the reference has one.
    let name = Reference::parse(&reference.name())?;
    let mut refs = vec![Reference::parse(&format!("{}@{top_digest}", name.name()))?];
    if reference.digest().is_none() {
        refs.push(reference.clone());
    }
    let image = store.add_from_content(&held, &manifest_digest, &refs)?;
    drop(held);
    Ok(PullReport {
        updated: before.as_ref() != Some(&image.id),
        image,
        digest: top_digest,
        blobs_fetched: fetched.into_inner(),
        bytes_fetched: fetched_bytes.into_inner(),
    })
}

fn is_index(media_type: &str, bytes: &[u8]) -> Result<bool> {
    if media::is_index(media_type) {
        return Ok(true);
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| {
        RegistryError::Image(berth_image::ImageError::Archive(format!(
            "the registry sent a manifest that is not JSON: {e}"
        )))
    })?;
    Ok(probe.is_index())
}

fn choose<'a>(
    idx: &'a IndexDoc,
    want: &PlatformSpec,
) -> Option<&'a berth_image::registry::Descriptor> {
    let matches = |variant: bool| {
        idx.manifests.iter().find(|d| {
            d.platform.as_ref().is_some_and(|p| {
                p.os == want.os
                    && p.architecture == want.architecture
                    && (!variant || want.variant.is_none() || p.variant == want.variant)
            })
        })
    };
    matches(true).or_else(|| {
        if want.variant.is_some() {
            None
        } else {
            matches(false)
        }
    })
}

/// GETs a manifest by tag or digest. Returns its digest (checked against `expected` and the
/// registry's Docker-Content-Digest), bytes and media type.
fn fetch_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
    expected: Option<&Digest>,
    scope: &str,
) -> Result<(Digest, Vec<u8>, String)> {
    let what = format!("manifest for {}/{repo}:{reference}", client.registry);
    let what = what.replace(":sha256:", "@sha256:");
    let mut resp = client.send(
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Accept", MANIFEST_ACCEPT)],
        Payload::None,
        scope,
    )?;
    if resp.status() != 200 {
        return Err(client.status_error(&what, resp));
    }
    let media_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let header_digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(MAX_MANIFEST)
        .read_to_vec()
        .map_err(|e| client.protocol(&what, e))?;
    let actual = Digest::of(&bytes);
    for want in expected.into_iter().chain(header_digest.as_ref()) {
        if *want != actual {
            return Err(berth_image::ImageError::DigestMismatch {
                what,
                expected: want.clone(),
                actual,
            }
            .into());
        }
    }
    Ok((actual, bytes, media_type))
}

/// Streams a blob into the content store, verified; returns its size. `step` hears the bytes
/// done every [`PROGRESS_STEP`]. A `cancel` flag set by another worker stops it early.
#[allow(clippy::too_many_arguments)]
fn fetch_blob(
    store: &ImageStore,
    client: &Client,
    repo: &str,
    scope: &str,
    digest: &Digest,
    size: u64,
    cancel: Option<&AtomicBool>,
    step: &dyn Fn(u64),
    mut tee: Option<mpsc::SyncSender<Vec<u8>>>,
) -> Result<u64> {
    let what = format!("blob {digest} of {}/{repo}", client.registry);
    let mut resp = client.send(
        "GET",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        Payload::None,
        scope,
    )?;
    if resp.status() != 200 {
        return Err(client.status_error(&what, resp));
    }
    let mut w = store.content().writer(Some(digest.clone()))?;
    let mut body = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 256 << 10];
    let mut done = 0u64;
    let mut reported = 0u64;
    loop {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(RegistryError::Cancelled(format!(
                "download of {digest} stopped: another layer failed"
            )));
        }
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(RegistryError::Unreachable {
                    registry: client.registry.clone(),
                    cause: format!("reading {what}: {e}"),
                })
            }
        };
        done += n as u64;
        if done > size {
            return Err(client.protocol(
                &what,
                format!("it is larger than the {size} bytes its descriptor says"),
            ));
        }
        w.write_all(&buf[..n])
            .map_err(|e| client.protocol(&what, format!("storing it: {e}")))?;
        // An unpacker that stopped (a bad layer) reports its own error; the download goes on.
        if tee
            .as_ref()
            .is_some_and(|t| t.send(buf[..n].to_vec()).is_err())
        {
            tee = None;
        }
        if done - reported >= PROGRESS_STEP {
            reported = done;
            step(done);
        }
    }
    if done != size {
        return Err(client.protocol(
            &what,
            format!("it is {done} bytes, its descriptor says {size}"),
        ));
    }
    step(done);
    // Checks the digest: a blob that does not match is deleted, never kept.
    w.commit()?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        let p = PlatformSpec::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.architecture, "arm64");
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(PlatformSpec::parse("linux").is_err());
        assert!(PlatformSpec::parse("linux//").is_err());
    }
}
