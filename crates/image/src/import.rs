//! `import`: a root filesystem tarball (plain, gzip or zstd) becomes a one-layer image.
//!
//! The stream is read once: decompressed bytes go both to the layer blob (stored
//! uncompressed, so its digest is the diff id) and to the unpacker.

use std::io::{self, Read, Write};

use oci_spec::image::{Arch, Config, HistoryBuilder, ImageConfiguration, Os, RootFs};

use crate::changes;
use crate::compress;
use crate::error::{ImageError, Result};
use crate::manifest;
use crate::media;
use crate::reference::Reference;
use crate::store::{now_rfc3339, Image, ImageRecord, ImageStore, Layer};

/// Options of [`ImageStore::import`], as `docker import` takes them.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions<'a> {
    /// `repository[:tag]` to give the image; none leaves it untagged.
    pub reference: Option<&'a str>,
    /// `docker import -c` changes (`CMD ["sh"]`, `ENV A=b`, ...).
    pub changes: Vec<String>,
    /// Commit message, recorded in the image history.
    pub message: Option<String>,
}

const CHUNK: usize = 1 << 20;

/// Batches bytes into chunks for the blob writer thread.
struct ChunkSender {
    buf: Vec<u8>,
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(chunk)
            .map_err(|_| io::Error::other("blob writer stopped"))
    }
}

/// Copies everything read through it into `sink`.
struct Tee<R, W> {
    inner: R,
    sink: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sink.write_all(&buf[..n])?;
        Ok(n)
    }
}

impl ImageStore {
    /// Imports a root filesystem tarball as a new image.
    pub fn import(&self, reader: impl Read, opts: ImportOptions<'_>) -> Result<Image> {
        let reference = opts.reference.map(Reference::parse).transpose()?;
        let mut config = Config::default();
        changes::apply(&mut config, &opts.changes)?;

        let _gc = self.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let (_, input) = compress::decompress(reader)
            .map_err(|e| ImageError::Archive(format!("reading the tarball: {e}")))?;
        let blob = self.content.temp_file()?;
        let blob_path = blob.path().to_path_buf();
        // The blob is written by a second thread, so that unpacking (metadata-bound) and
        // writing the blob (bandwidth-bound) overlap.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
        let meta = std::thread::scope(|s| {
            let writer = s.spawn(|| -> io::Result<()> {
                let mut f = blob.as_file();
                for chunk in rx {
                    f.write_all(&chunk)?;
                }
                Ok(())
            });
            let mut tee = Tee {
                inner: input,
                sink: ChunkSender {
                    buf: Vec::with_capacity(CHUNK),
                    tx,
                },
            };
            let unpacked = self.layers.unpack(&mut tee, None, None, &self.limits);
            let flushed = tee.sink.flush();
            drop(tee);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("blob writer panicked")));
            let meta = unpacked?;
            flushed
                .and(written)
                .map_err(|e| ImageError::io(&blob_path, "write blob", e))?;
            Ok::<_, ImageError>(meta)
        })?;
        let size = self.content_size_of(&blob_path)?;
        // The blob is the uncompressed tar, so its digest is the diff id computed while
        // unpacking.
        self.content.adopt(&blob_path, &meta.diff_id)?;
        drop(blob);

        let created = now_rfc3339();
        let mut history = HistoryBuilder::default()
            .created(created.clone())
            .created_by("berth import");
        if let Some(m) = &opts.message {
            history = history.comment(m.clone());
        }
        let history = history
            .build()
            .map_err(|e| ImageError::Archive(format!("building history: {e}")))?;
        let mut rootfs = RootFs::default();
        rootfs.set_diff_ids(vec![meta.diff_id.to_string()]);
        let mut image_config = ImageConfiguration::default();
        image_config
            .set_created(Some(created.clone()))
            .set_architecture(Arch::from(media::host_arch()))
            .set_os(Os::Linux)
            .set_config(Some(config))
            .set_rootfs(rootfs)
            .set_history(Some(vec![history]));
        let config_bytes =
            serde_json::to_vec(&image_config).map_err(|e| ImageError::json("image config", e))?;
        let id = self.content.put_bytes(&config_bytes, None)?;
        let layer = Layer {
            digest: meta.diff_id.clone(),
            media_type: media::OCI_LAYER.to_string(),
            size,
            diff_id: meta.diff_id.clone(),
            chain_id: meta.chain_id.clone(),
            unpacked_size: meta.size,
        };
        let manifest_bytes =
            manifest::oci_manifest(&id, config_bytes.len() as u64, std::slice::from_ref(&layer));
        let manifest = self.content.put_bytes(&manifest_bytes, None)?;
        let rec = ImageRecord {
            manifest,
            layers: vec![layer],
            added: created,
        };
        let refs: Vec<Reference> = reference.into_iter().collect();
        self.commit(&id, rec, &refs)?;
        self.resolve(&id.to_string())
    }

    fn content_size_of(&self, p: &std::path::Path) -> Result<u64> {
        Ok(std::fs::metadata(p)
            .map_err(|e| ImageError::io(p, "stat", e))?
            .len())
    }
}
