//! `load`: `docker save` archives (manifest.json, layer tars) and OCI image layout archives
//! (oci-layout, index.json, blobs/), plain or compressed, from a file or a stream.
//!
//! The archive is a stream and its index may come last, so every member is first staged in
//! `<data-root>/content/tmp/` (hashed while written); staged blobs are then renamed into the
//! content store, not copied. Layers missing from the layer store are unpacked from the
//! stored blobs, several at a time.

use crate::pipe::ChannelReader;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{mpsc, Mutex};

use oci_spec::image::ImageConfiguration;
use sha2::{Digest as _, Sha256};

use crate::compress::{self, Compression};
use crate::digest::{chain_ids, Digest};
use crate::error::{ImageError, Result};
use crate::layers::PendingLayer;
use crate::manifest::{self, Descriptor, IndexDoc, Manifest, Probe};
use crate::media;
use crate::reference::Reference;
use crate::store::{now_rfc3339, ImageRecord, ImageStore, Layer};

/// An image `load` stored, and the references it now has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    pub id: Digest,
    pub references: Vec<Reference>,
}

struct Staged {
    path: PathBuf,
    digest: Digest,
    size: u64,
}

/// The archive's members, staged on disk.
struct Archive {
    _dir: tempfile::TempDir,
    files: HashMap<String, Staged>,
    links: HashMap<String, String>,
    /// Layers unpacked while their member was being staged, by blob digest.
    pending: Mutex<HashMap<Digest, PendingLayer>>,
}

/// At most this many layers are unpacked while the archive is read; others are unpacked
/// from the stored blob afterwards.
const MAX_SPECULATIVE: usize = 4;

/// Does this member look like a layer (a tar, or a compressed stream) worth unpacking while
/// it is read, before the archive's index says what it is?
fn looks_like_layer(name: &str, head: &[u8]) -> bool {
    let named = name.ends_with("layer.tar") || name.starts_with("blobs/");
    let tar = head.len() >= 262 && &head[257..262] == b"ustar";
    let compressed = head.starts_with(&[0x1f, 0x8b]) || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    named && (tar || compressed)
}

/// The diff ids an image config lists, which must be one per layer of its manifest.
pub(crate) fn config_diff_ids(
    id: &Digest,
    config: &ImageConfiguration,
    manifest_layers: usize,
) -> Result<Vec<Digest>> {
    let diff_ids = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| d.parse::<Digest>())
        .collect::<Result<Vec<_>, _>>()?;
    if diff_ids.len() != manifest_layers {
        return Err(bad(format!(
            "image {id}: the config lists {} layers, the manifest {manifest_layers}",
            diff_ids.len()
        )));
    }
    Ok(diff_ids)
}

fn bad(msg: impl Into<String>) -> ImageError {
    ImageError::Archive(msg.into())
}

/// `a/./b/` -> `a/b`; `..` or an absolute name is refused.
fn clean(name: &str) -> Result<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(bad(format!("member {name:?} points outside the archive")));
                }
            }
            c => out.push(c),
        }
    }
    Ok(out.join("/"))
}

impl Archive {
    fn stage(store: &ImageStore, reader: impl Read) -> Result<Archive> {
        let dir = tempfile::Builder::new()
            .prefix("load-")
            .tempdir_in(store.root.join("content/tmp"))
            .map_err(|e| ImageError::io(store.root.join("content/tmp"), "create", e))?;
        let (_, input) =
            compress::decompress(reader).map_err(|e| bad(format!("reading the archive: {e}")))?;
        let (guarded, phase) = crate::unpack::MetaGuard::new(input);
        let mut ar = tar::Archive::new(guarded);
        let mut files = HashMap::new();
        let mut links = HashMap::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let mut pending = HashMap::new();
        std::thread::scope(|scope| -> Result<()> {
            let mut spec: Vec<(
                String,
                std::thread::ScopedJoinHandle<'_, Result<PendingLayer>>,
            )> = Vec::new();
            for (n, entry) in ar.entries().map_err(|e| bad(e.to_string()))?.enumerate() {
                let mut entry = entry.map_err(|e| bad(format!("reading the archive: {e}")))?;
                phase.data();
                let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                if raw.starts_with('/') {
                    return Err(bad(format!("member {raw:?} has an absolute name")));
                }
                let name = clean(&raw)?;
                let kind = entry.header().entry_type();
                if kind.is_file() {
                    let path = dir.path().join(n.to_string());
                    let mut f = io::BufWriter::with_capacity(
                        1 << 20,
                        File::create(&path).map_err(|e| ImageError::io(&path, "create", e))?,
                    );
                    let mut h = Sha256::new();
                    let mut size = 0u64;
                    // Read the head first: if the member looks like a layer, it is also streamed
                    // to an unpacker thread while it is staged.
                    let mut head_len = 0;
                    while head_len < 512 {
                        let k = entry
                            .read(&mut buf[head_len..])
                            .map_err(|e| bad(format!("reading member {raw:?}: {e}")))?;
                        if k == 0 {
                            break;
                        }
                        head_len += k;
                    }
                    let running = spec.iter().filter(|(_, j)| !j.is_finished()).count();
                    let mut tx = None;
                    if running < MAX_SPECULATIVE && looks_like_layer(&name, &buf[..head_len]) {
                        let (t, rx) = mpsc::sync_channel::<Vec<u8>>(16);
                        tx = Some(t);
                        let reader = ChannelReader::new(rx);
                        spec.push((
                            name.clone(),
                            scope.spawn(move || {
                                let (c, tar) =
                                    compress::decompress(reader).map_err(|e| bad(e.to_string()))?;
                                // An uncompressed layer's diff id is the digest the stager
                                // computes anyway: hash it once.
                                let hash = c != Compression::None;
                                store.layers.unpack_pending(tar, &store.limits, hash)
                            }),
                        ));
                    }
                    let mut first = Some(head_len);
                    loop {
                        let k = match first.take() {
                            Some(k) => k,
                            None => entry
                                .read(&mut buf)
                                .map_err(|e| bad(format!("reading member {raw:?}: {e}")))?,
                        };
                        if k == 0 {
                            break;
                        }
                        if let Some(t) = &tx {
                            // An unpacker that gave up (a bad layer) is not an error yet: the
                            // layer may be unused, and is unpacked again from its blob if used.
                            if t.send(buf[..k].to_vec()).is_err() {
                                tx = None;
                            }
                        }
                        size += k as u64;
                        total += k as u64;
                        if total > store.limits.max_bytes {
                            return Err(bad(format!(
                                "the archive is larger than the limit of {} bytes",
                                store.limits.max_bytes
                            )));
                        }
                        h.update(&buf[..k]);
                        f.write_all(&buf[..k])
                            .map_err(|e| ImageError::io(&path, "write", e))?;
                    }
                    f.flush().map_err(|e| ImageError::io(&path, "write", e))?;
                    drop(tx);
                    let digest = Digest::from_hasher(h);
                    files.insert(name, Staged { path, digest, size });
                } else if kind.is_symlink() || kind.is_hard_link() {
                    // Old `docker save` links a repeated layer to its first copy.
                    let target = entry
                        .link_name()
                        .map_err(|e| bad(e.to_string()))?
                        .ok_or_else(|| bad(format!("link {raw:?} without a target")))?
                        .to_string_lossy()
                        .into_owned();
                    let base = if kind.is_symlink() {
                        name.rsplit_once('/')
                            .map(|(d, _)| d)
                            .unwrap_or("")
                            .to_string()
                    } else {
                        String::new()
                    };
                    links.insert(name, clean(&format!("{base}/{target}"))?);
                }
                phase.metadata();
            }
            for (name, job) in spec {
                if let (Ok(Ok(mut layer)), Some(staged)) = (job.join(), files.get(&name)) {
                    if layer.diff_id().is_none() {
                        layer.set_diff_id(staged.digest.clone());
                    }
                    pending.entry(staged.digest.clone()).or_insert(layer);
                }
            }
            Ok(())
        })?;
        Ok(Archive {
            _dir: dir,
            files,
            links,
            pending: Mutex::new(pending),
        })
    }

    fn get(&self, name: &str) -> Result<&Staged> {
        let mut name = clean(name)?;
        for _ in 0..16 {
            if let Some(s) = self.files.get(&name) {
                return Ok(s);
            }
            match self.links.get(&name) {
                Some(t) => name = t.clone(),
                None => break,
            }
        }
        Err(bad(format!("the archive has no member {name:?}")))
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let s = self.get(name)?;
        fs::read(&s.path).map_err(|e| ImageError::io(&s.path, "read", e))
    }

    /// The blob `blobs/sha256/<hex>`, checked against its descriptor.
    fn blob(&self, d: &Descriptor) -> Result<&Staged> {
        let s = self.get(&format!("blobs/sha256/{}", d.digest.hex()))?;
        if s.digest != d.digest {
            return Err(ImageError::DigestMismatch {
                what: format!("archive blob blobs/sha256/{}", d.digest.hex()),
                expected: d.digest.clone(),
                actual: s.digest.clone(),
            });
        }
        if s.size != d.size {
            return Err(bad(format!(
                "blob {} is {} bytes, its descriptor says {}",
                d.digest, s.size, d.size
            )));
        }
        Ok(s)
    }
}

/// One image found in an archive, before it is stored.
struct Found<'a> {
    config: &'a Staged,
    /// The archive's own manifest (OCI layouts); docker-save archives get one made.
    manifest: Option<&'a Staged>,
    layers: Vec<(&'a Staged, String)>,
    refs: Vec<Reference>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl ImageStore {
    /// Loads every image of a `docker save` or OCI layout archive.
    pub fn load(&self, reader: impl Read) -> Result<Vec<LoadedImage>> {
        let _gc = self.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let ar = Archive::stage(self, reader)?;
        let found = if ar.files.contains_key("oci-layout") && ar.files.contains_key("index.json") {
            self.find_oci(&ar)?
        } else if ar.files.contains_key("manifest.json") {
            self.find_docker(&ar)?
        } else {
            return Err(bad(
                "neither manifest.json (docker save) nor oci-layout and index.json (OCI image layout) found",
            ));
        };
        // Merge entries of the same image (an OCI index lists one manifest once per tag).
        let mut merged: Vec<Found<'_>> = Vec::new();
        for f in found {
            match merged
                .iter_mut()
                .find(|m| m.config.digest == f.config.digest)
            {
                Some(m) => m.refs.extend(f.refs),
                None => merged.push(f),
            }
        }
        let mut out = Vec::new();
        for f in merged {
            out.push(self.store_found(&ar, f)?);
        }
        Ok(out)
    }

    fn find_docker<'a>(&self, ar: &'a Archive) -> Result<Vec<Found<'a>>> {
        let entries: Vec<DockerEntry> = serde_json::from_slice(&ar.read("manifest.json")?)
            .map_err(|e| ImageError::json("manifest.json", e))?;
        let mut out = Vec::new();
        for e in entries {
            let config = ar.get(&e.config)?;
            let layers = e
                .layers
                .iter()
                .map(|l| Ok((ar.get(l)?, String::new())))
                .collect::<Result<Vec<_>>>()?;
            let refs = e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|r| Reference::parse(r))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(Found {
                config,
                manifest: None,
                layers,
                refs,
            });
        }
        Ok(out)
    }

    fn find_oci<'a>(&self, ar: &'a Archive) -> Result<Vec<Found<'a>>> {
        let index: IndexDoc = serde_json::from_slice(&ar.read("index.json")?)
            .map_err(|e| ImageError::json("index.json", e))?;
        let mut out = Vec::new();
        for desc in &index.manifests {
            let refs = refs_from_annotations(&desc.annotations)?;
            let mut d = desc.clone();
            // Follow indexes (OCI index, Docker manifest list) to the host's platform.
            for depth in 0.. {
                if depth > 4 {
                    return Err(bad("indexes nested too deep"));
                }
                let staged = ar.blob(&d)?;
                let bytes =
                    fs::read(&staged.path).map_err(|e| ImageError::io(&staged.path, "read", e))?;
                let probe: Probe = serde_json::from_slice(&bytes)
                    .map_err(|e| ImageError::json(format!("manifest {}", d.digest), e))?;
                if probe.is_index() || media::is_index(&d.media_type) {
                    let idx: IndexDoc = serde_json::from_slice(&bytes)
                        .map_err(|e| ImageError::json(format!("index {}", d.digest), e))?;
                    d = manifest::choose_platform(&idx)
                        .ok_or_else(|| {
                            bad(format!(
                                "index {} has no linux/{} image",
                                d.digest,
                                media::host_arch()
                            ))
                        })?
                        .clone();
                    continue;
                }
                let m: Manifest = serde_json::from_slice(&bytes)
                    .map_err(|e| ImageError::json(format!("manifest {}", d.digest), e))?;
                let config = ar.blob(&m.config)?;
                let layers = m
                    .layers
                    .iter()
                    .map(|l| Ok((ar.blob(l)?, l.media_type.clone())))
                    .collect::<Result<Vec<_>>>()?;
                out.push(Found {
                    config,
                    manifest: Some(staged),
                    layers,
                    refs,
                });
                break;
            }
        }
        Ok(out)
    }

    /// Stores one image: blobs into the content store, missing layers unpacked, index updated.
    fn store_found(&self, ar: &Archive, f: Found<'_>) -> Result<LoadedImage> {
        let id = f.config.digest.clone();
        let config_bytes =
            fs::read(&f.config.path).map_err(|e| ImageError::io(&f.config.path, "read", e))?;
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| ImageError::json(format!("image config {id}"), e))?;
        let diff_ids = config_diff_ids(&id, &config, f.layers.len())?;
        let chains = chain_ids(&diff_ids);
        self.content.adopt(&f.config.path, &id)?;
        let mut layers = Vec::new();
        for (i, (staged, media_type)) in f.layers.iter().enumerate() {
            self.content.adopt(&staged.path, &staged.digest)?;
            let media_type = if media_type.is_empty() {
                let mut file = self.content.open_blob(&staged.digest)?;
                let mut head = io::BufReader::new(&mut file);
                compress::detect(&mut head)
                    .map_err(|e| bad(format!("layer {}: {e}", staged.digest)))?
                    .layer_media_type()
                    .to_string()
            } else {
                media_type.clone()
            };
            layers.push(Layer {
                digest: staged.digest.clone(),
                media_type,
                size: staged.size,
                diff_id: diff_ids[i].clone(),
                chain_id: chains[i].clone(),
                unpacked_size: 0,
            });
        }
        self.unpack_missing(&mut layers, &ar.pending)?;
        let manifest = match f.manifest {
            Some(m) => {
                self.content.adopt(&m.path, &m.digest)?;
                m.digest.clone()
            }
            None => {
                let bytes = manifest::oci_manifest(&id, config_bytes.len() as u64, &layers);
                self.content.put_bytes(&bytes, None)?
            }
        };
        let rec = ImageRecord {
            manifest,
            layers,
            added: now_rfc3339(),
        };
        self.commit(&id, rec, &f.refs)?;
        Ok(LoadedImage {
            id,
            references: f.refs,
        })
    }

    /// Unpacks the layers not yet in the layer store, in parallel (each layer is its own tree),
    /// and fills in every layer's unpacked size.
    pub(crate) fn unpack_missing(
        &self,
        layers: &mut [Layer],
        pending: &Mutex<HashMap<Digest, PendingLayer>>,
    ) -> Result<()> {
        // Layers unpacked while the archive was read only need moving into place.
        for i in 0..layers.len() {
            if self.layers.exists(&layers[i].chain_id) {
                continue;
            }
            let p = pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&layers[i].digest);
            if let Some(p) = p {
                let parent = i.checked_sub(1).map(|p| layers[p].chain_id.clone());
                p.commit(&self.layers, parent.as_ref(), Some(&layers[i].diff_id))?;
            }
        }
        let todo: Vec<usize> = (0..layers.len())
            .filter(|&i| !self.layers.exists(&layers[i].chain_id))
            .collect();
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(todo.len())
            .max(1);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let snapshot: Vec<Layer> = layers.to_vec();
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        loop {
                            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(&i) = todo.get(k) else {
                                return Ok(());
                            };
                            let l = &snapshot[i];
                            let parent = i.checked_sub(1).map(|p| &snapshot[p].chain_id);
                            let blob = self.content.open_blob(&l.digest)?;
                            let (_, tar) = compress::decompress(blob)
                                .map_err(|e| bad(format!("layer {}: {e}", l.digest)))?;
                            self.layers
                                .unpack(tar, parent, Some(&l.diff_id), &self.limits)?;
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(bad("an unpacking thread panicked")))
                })
                .collect()
        });
        for r in results {
            r?;
        }
        for l in layers.iter_mut() {
            l.unpacked_size = self.layers.meta(&l.chain_id)?.size;
        }
        Ok(())
    }
}

/// `io.containerd.image.name` (a full reference), else `org.opencontainers.image.ref.name`
/// when it is a full reference (a bare tag names no repository).
fn refs_from_annotations(a: &BTreeMap<String, String>) -> Result<Vec<Reference>> {
    if let Some(n) = a.get("io.containerd.image.name") {
        return Ok(vec![Reference::parse(n)?]);
    }
    if let Some(n) = a.get("org.opencontainers.image.ref.name") {
        if n.contains('/') || n.contains(':') {
            if let Ok(r) = Reference::parse(n) {
                return Ok(vec![r]);
            }
        }
    }
    Ok(Vec::new())
}
