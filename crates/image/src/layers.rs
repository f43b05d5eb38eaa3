//! Unpacked layer trees: `<data-root>/layers/<chain-id hex>/diff` (the tree overlayfs uses as
//! a lower layer, holding only that layer's changes, with overlayfs whiteouts) and
//! `<data-root>/layers/<chain-id hex>/meta.json` ([`LayerMeta`]). The image store is the one
//! owner of this directory: it unpacks on import/load and removes on gc; the snapshotter only
//! reads. One tree serves every id mapping.
//!
//! A layer is unpacked into `layers/.tmp-*`, then renamed into place whole, so a layer
//! directory that exists is complete.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::unpack::{self, LayerOwners, UnpackLimits};

/// What berth knows about one unpacked layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerMeta {
    pub chain_id: Digest,
    pub diff_id: Digest,
    /// Bytes of file data in the layer.
    pub size: u64,
    pub entries: u64,
    pub owners: LayerOwners,
}

pub struct LayerStore {
    dir: PathBuf,
}

impl LayerStore {
    pub fn open(data_root: &Path) -> Result<LayerStore> {
        let dir = data_root.join("layers");
        fs::create_dir_all(&dir).map_err(|e| ImageError::io(&dir, "create directory", e))?;
        // Layers hold setuid files with real owners: keep other users out.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| ImageError::io(&dir, "chmod", e))?;
        Ok(LayerStore { dir })
    }

    /// `<data-root>/layers`.
    pub fn root(&self) -> &Path {
        &self.dir
    }

    /// The tree to use as an overlayfs lower directory.
    pub fn diff_path(&self, chain_id: &Digest) -> PathBuf {
        self.dir.join(chain_id.hex()).join("diff")
    }

    pub fn exists(&self, chain_id: &Digest) -> bool {
        self.dir.join(chain_id.hex()).join("meta.json").is_file()
    }

    pub fn meta(&self, chain_id: &Digest) -> Result<LayerMeta> {
        read_meta(&self.dir.join(chain_id.hex()).join("meta.json"))
    }

    /// Every complete layer's chain id.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let rd = fs::read_dir(&self.dir).map_err(|e| ImageError::io(&self.dir, "list", e))?;
        let mut out = Vec::new();
        for ent in rd.flatten() {
            if let Some(d) = ent
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn remove(&self, chain_id: &Digest) -> Result<()> {
        let p = self.dir.join(chain_id.hex());
        match fs::remove_dir_all(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(ImageError::io(&p, "remove layer", e))
            }
            _ => Ok(()),
        }
    }

    /// Removes half-unpacked layers left by a crash. Only call when nothing unpacks.
    pub(crate) fn clear_tmp(&self) {
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for ent in rd.flatten() {
                if ent.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = fs::remove_dir_all(ent.path());
                }
            }
        }
    }

    /// Unpacks the uncompressed layer tar `reader` on top of the chain `parent`. Its diff id
    /// is computed while reading and checked against `expected_diff_id` if given; on a
    /// mismatch nothing is kept.
    pub fn unpack(
        &self,
        reader: impl Read,
        parent: Option<&Digest>,
        expected_diff_id: Option<&Digest>,
        limits: &UnpackLimits,
    ) -> Result<LayerMeta> {
        self.unpack_pending(reader, limits, true)?
            .commit(self, parent, expected_diff_id)
    }

    /// Unpacks into a temporary directory; [`PendingLayer::commit`] moves it into place once
    /// the caller knows where the layer goes (its parent) and what it must be.
    /// With `hash` false the diff id is not computed (the caller hashed the same bytes already
    /// and sets it with [`PendingLayer::set_diff_id`]).
    pub fn unpack_pending(
        &self,
        reader: impl Read,
        limits: &UnpackLimits,
        hash: bool,
    ) -> Result<PendingLayer> {
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&self.dir)
            .map_err(|e| ImageError::io(&self.dir, "create temporary layer directory", e))?;
        let diff = tmp.path().join("diff");
        fs::create_dir(&diff).map_err(|e| ImageError::io(&diff, "create directory", e))?;
        let mut hashing = HashingReader {
            inner: reader,
            hasher: hash.then(Sha256::new),
        };
        let stats = unpack::unpack(&mut hashing, &diff, limits)?;
        // The tar reader stops at the end-of-archive marker; the diff id covers every byte.
        io::copy(&mut hashing, &mut io::sink()).map_err(unpack::UnpackError::Read)?;
        Ok(PendingLayer {
            tmp,
            diff_id: hashing.hasher.map(Digest::from_hasher),
            size: stats.bytes,
            entries: stats.entries,
            owners: stats.owners,
        })
    }
}

/// An unpacked layer not yet in the store. Dropped without commit, it is removed.
pub struct PendingLayer {
    tmp: tempfile::TempDir,
    diff_id: Option<Digest>,
    size: u64,
    entries: u64,
    owners: LayerOwners,
}

impl PendingLayer {
    /// The diff id, when known.
    pub fn diff_id(&self) -> Option<&Digest> {
        self.diff_id.as_ref()
    }

    /// Sets the diff id of a layer unpacked without hashing.
    pub fn set_diff_id(&mut self, d: Digest) {
        self.diff_id = Some(d);
    }

    /// Checks the diff id and moves the layer to `layers/<chain id>`. If that layer exists
    /// already (unpacked meanwhile by someone else) this copy is dropped.
    pub fn commit(
        self,
        store: &LayerStore,
        parent: Option<&Digest>,
        expected_diff_id: Option<&Digest>,
    ) -> Result<LayerMeta> {
        let diff_id = self.diff_id.ok_or_else(|| {
            ImageError::Archive("an unpacked layer has no diff id (not hashed, not set)".into())
        })?;
        if let Some(exp) = expected_diff_id {
            if *exp != diff_id {
                return Err(ImageError::DigestMismatch {
                    what: "layer (uncompressed)".into(),
                    expected: exp.clone(),
                    actual: diff_id,
                });
            }
        }
        let chain_id = match parent {
            None => diff_id.clone(),
            Some(p) => Digest::of(format!("{p} {diff_id}").as_bytes()),
        };
        let meta = LayerMeta {
            chain_id: chain_id.clone(),
            diff_id,
            size: self.size,
            entries: self.entries,
            owners: self.owners,
        };
        let tmp = self.tmp;
        let meta_path = tmp.path().join("meta.json");
        let json = serde_json::to_vec(&meta).map_err(|e| ImageError::json("layer meta", e))?;
        fs::write(&meta_path, json).map_err(|e| ImageError::io(&meta_path, "write", e))?;
        let dest = store.dir.join(chain_id.hex());
        if store.exists(&chain_id) {
            return Ok(meta);
        }
        let tmp_path = tmp.keep();
        if let Err(e) = fs::rename(&tmp_path, &dest) {
            let _ = fs::remove_dir_all(&tmp_path);
            if !store.exists(&chain_id) {
                return Err(ImageError::io(&dest, "move layer into place", e));
            }
        }
        Ok(meta)
    }
}

pub fn read_meta(path: &Path) -> Result<LayerMeta> {
    let bytes = fs::read(path).map_err(|e| ImageError::io(path, "read", e))?;
    serde_json::from_slice(&bytes).map_err(|e| ImageError::json(path.display().to_string(), e))
}

struct HashingReader<R> {
    inner: R,
    hasher: Option<Sha256>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}
