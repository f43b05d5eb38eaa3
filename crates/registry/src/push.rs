//! Push: an image from the store to a registry. Each blob (layers, then the config) is
//! checked with HEAD and skipped when the registry has it, mounted from another repository
//! of the same registry the image is tagged in when the registry allows, else uploaded:
//! in one PUT, or in PATCH chunks for blobs larger than the chunk size. The manifest goes
//! last, byte for byte as stored, so its digest is the same on both sides.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use berth_image::{media, Digest, ImageStore, Reference};

use crate::client::{encode, Client, Payload, RegistryOptions, Resp};
use crate::error::{RegistryError, Result};
use crate::progress::{Progress, ProgressSink, PROGRESS_STEP};

#[derive(Debug, Clone)]
pub struct PushOptions {
    pub registry: RegistryOptions,
    /// Blobs larger than this are sent in PATCH chunks of this size; None: one PUT each.
    pub chunk_size: Option<u64>,
    /// Blobs uploaded at once (Docker: 5).
    pub parallel: usize,
}

impl Default for PushOptions {
    fn default() -> PushOptions {
        PushOptions {
            registry: RegistryOptions::default(),
            chunk_size: None,
            parallel: 5,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// The tag pushed (or the digest, for a push by digest).
    pub tag: String,
    pub digest: Digest,
    /// The manifest's size.
    pub size: u64,
    pub uploaded: usize,
    pub mounted: usize,
    pub existed: usize,
}

enum Outcome {
    Existed,
    Mounted(String),
    Uploaded,
}

/// Pushes the local image `local` (a name or id) as `target`.
pub fn push(
    store: &ImageStore,
    local: &str,
    target: &Reference,
    opts: &PushOptions,
    progress: ProgressSink<'_>,
) -> Result<PushReport> {
    let image = store.resolve(local)?;
    let client = Client::new(target.domain(), &opts.registry);
    let repo = target.path();
    progress(Progress::line(
        None,
        format!("The push refers to repository [{}]", target.familiar_name()),
    ));
    client.ping()?;
    // Other repositories of this registry holding the image: blobs can be mounted from them.
    let sources: Vec<String> = image
        .repo_tags
        .iter()
        .chain(&image.repo_digests)
        .filter(|r| r.domain() == target.domain() && r.path() != repo)
        .map(|r| r.path().to_string())
        .collect();
    let mut blobs: Vec<(Digest, u64, bool)> = image
        .layers
        .iter()
        .rev()
        .map(|l| (l.digest.clone(), l.size, true))
        .collect();
    blobs.push((image.id.clone(), store.content().size(&image.id)?, false));
    for (d, _, layer) in &blobs {
        if *layer {
            progress(Progress::line(Some(d.short()), "Preparing"));
        }
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let counts = Mutex::new((0usize, 0usize, 0usize));
    let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..opts.parallel.max(1).min(blobs.len()) {
            s.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    return;
                }
                let Some((d, size, layer)) = blobs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return;
                };
                let id = d.short();
                let r = push_blob(store, &client, repo, &sources, d, *size, opts, &|done| {
                    if *layer {
                        progress(Progress::bytes(id, "Pushing", done, *size));
                    }
                });
                match r {
                    Ok(o) => {
                        let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
                        let status = match o {
                            Outcome::Existed => {
                                c.2 += 1;
                                "Layer already exists".to_string()
                            }
                            Outcome::Mounted(from) => {
                                c.1 += 1;
                                format!("Mounted from {from}")
                            }
                            Outcome::Uploaded => {
                                c.0 += 1;
                                "Pushed".to_string()
                            }
                        };
                        if *layer {
                            progress(Progress::line(Some(id), status));
                        }
                    }
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }

    let manifest = store.content().read(&image.manifest_digest)?;
    let media_type = serde_json::from_slice::<serde_json::Value>(&manifest)
        .ok()
        .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
    let tag = match (target.tag(), target.digest()) {
        (Some(t), _) => t.to_string(),
        (None, Some(d)) => {
            if *d != image.manifest_digest {
                return Err(client.protocol(
                    "push by digest",
                    format!("{local}'s manifest is {}, not {d}", image.manifest_digest),
                ));
            }
            d.to_string()
        }
        (None, None) => "latest".to_string(),
    };
    let resp = client.send(
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", media_type.as_str())],
        Payload::Bytes(&manifest),
        &push_scope(repo, &[]),
    )?;
    if resp.status() != 201 && resp.status() != 200 {
        return Err(client.status_error(&format!("manifest {repo}:{tag}"), resp));
    }
    if let Some(d) = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok())
    {
        if d != image.manifest_digest {
            return Err(client.protocol(
                "manifest upload",
                format!(
                    "the registry computed {d}, berth sent {}",
                    image.manifest_digest
                ),
            ));
        }
    }
    let (uploaded, mounted, existed) = counts.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(PushReport {
        tag,
        digest: image.manifest_digest,
        size: manifest.len() as u64,
        uploaded,
        mounted,
        existed,
    })
}

fn push_scope(repo: &str, sources: &[String]) -> String {
    let mut s = format!("repository:{repo}:pull,push");
    for src in sources {
        s.push_str(&format!(" repository:{src}:pull"));
    }
    s
}

#[allow(clippy::too_many_arguments)]
fn push_blob(
    store: &ImageStore,
    client: &Client,
    repo: &str,
    sources: &[String],
    digest: &Digest,
    size: u64,
    opts: &PushOptions,
    step: &dyn Fn(u64),
) -> Result<Outcome> {
    let scope = push_scope(repo, sources);
    let what = format!("blob {digest} for {}/{repo}", client.registry);
    let head = client.send(
        "HEAD",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        Payload::None,
        &scope,
    )?;
    match head.status().as_u16() {
        200 => return Ok(Outcome::Existed),
        404 => {}
        _ => return Err(client.status_error(&what, head)),
    }
    // Mount from a repository that has it (one try, as Docker); a 202 means "no, upload
    // here" (the session it opened is used for the upload).
    let mut session = None;
    if let Some(src) = sources.first() {
        let resp = client.send(
            "POST",
            &format!(
                "/v2/{repo}/blobs/uploads/?mount={}&from={}",
                encode(&digest.to_string()),
                encode(src)
            ),
            &[],
            Payload::None,
            &scope,
        )?;
        match resp.status().as_u16() {
            201 => return Ok(Outcome::Mounted(src.clone())),
            202 => session = Some(location(client, &resp, &what)?),
            _ => return Err(client.status_error(&what, resp)),
        }
    }
    let mut loc = match session {
        Some(l) => l,
        None => {
            let resp = client.send(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Payload::None,
                &scope,
            )?;
            if resp.status() != 202 {
                return Err(client.status_error(&what, resp));
            }
            location(client, &resp, &what)?
        }
    };
    let path = store.content().path(digest);
    let open = || -> Result<File> { Ok(store.content().open_blob(digest)?) };
    let io_err = |e: std::io::Error| {
        RegistryError::Image(berth_image::ImageError::Io {
            path: path.clone(),
            op: "read blob",
            source: e,
        })
    };
    let chunk = opts.chunk_size.filter(|c| *c > 0 && size > *c);
    let final_body = match chunk {
        None => {
            let f = open()?;
            Payload::Reader(Box::new(Counting::new(f, 0, step)), size)
        }
        Some(c) => {
            let mut f = open()?;
            let mut off = 0u64;
            while off < size {
                let n = c.min(size - off);
                f.seek(SeekFrom::Start(off)).map_err(io_err)?;
                let part = (&mut f).take(n);
                let range = format!("{}-{}", off, off + n - 1);
                let resp = client.send(
                    "PATCH",
                    &loc,
                    &[
                        ("Content-Type", "application/octet-stream"),
                        ("Content-Range", range.as_str()),
                    ],
                    Payload::Reader(Box::new(Counting::new(part, off, step)), n),
                    &scope,
                )?;
                if resp.status() != 202 {
                    return Err(client.status_error(&what, resp));
                }
                loc = location(client, &resp, &what)?;
                off += n;
            }
            Payload::None
        }
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    let put = format!("{loc}{sep}digest={}", encode(&digest.to_string()));
    let resp = client.send(
        "PUT",
        &put,
        &[("Content-Type", "application/octet-stream")],
        final_body,
        &scope,
    )?;
    if resp.status() != 201 {
        return Err(client.status_error(&what, resp));
    }
    Ok(Outcome::Uploaded)
}

fn location(client: &Client, resp: &Resp, what: &str) -> Result<String> {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(|l| client.url(l))
        .ok_or_else(|| client.protocol(what, "an upload answer without a Location"))
}

/// Counts bytes read, reporting every [`PROGRESS_STEP`] and at the end.
struct Counting<'a, R> {
    inner: R,
    done: u64,
    reported: u64,
    step: &'a dyn Fn(u64),
}

impl<'a, R> Counting<'a, R> {
    fn new(inner: R, start: u64, step: &'a dyn Fn(u64)) -> Self {
        Counting {
            inner,
            done: start,
            reported: start,
            step,
        }
    }
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if n == 0 || self.done - self.reported >= PROGRESS_STEP {
            self.reported = self.done;
            (self.step)(self.done);
        }
        Ok(n)
    }
}
