//! The content store: blobs (layers as received, configs, manifests) by sha256 digest under
//! `<data-root>/content/sha256/<hex>`.
//!
//! A blob is written to a private temporary file in `<data-root>/content/tmp/`, hashed while
//! written, and renamed into place only when its digest is known and, if one was expected,
//! matches. A blob that does not match is deleted, never kept. Two writers of the same blob
//! each rename their own identical file, so concurrent writers are safe. Blobs are not
//! fsync'ed (as `tar -x` does not): after a crash, `verify` finds a torn blob.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;

use crate::digest::Digest;
use crate::error::{ImageError, Result};

pub struct ContentStore {
    blobs: PathBuf,
    tmp: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) the store under `data_root/content`.
    pub fn open(data_root: &Path) -> Result<ContentStore> {
        let blobs = data_root.join("content/sha256");
        let tmp = data_root.join("content/tmp");
        for d in [&blobs, &tmp] {
            fs::create_dir_all(d).map_err(|e| ImageError::io(d, "create directory", e))?;
        }
        Ok(ContentStore { blobs, tmp })
    }

    /// Where the blob lives (whether or not it exists).
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.hex())
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// A writer for a new blob; `expected`, if given, is checked on commit.
    pub fn writer(&self, expected: Option<Digest>) -> Result<BlobWriter<'_>> {
        let file = NamedTempFile::new_in(&self.tmp)
            .map_err(|e| ImageError::io(&self.tmp, "create temporary blob", e))?;
        Ok(BlobWriter {
            store: self,
            file: io::BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            size: 0,
            expected,
        })
    }

    /// Stores `bytes`, returning their digest.
    pub fn put_bytes(&self, bytes: &[u8], expected: Option<Digest>) -> Result<Digest> {
        let mut w = self.writer(expected)?;
        w.write_all(bytes)
            .map_err(|e| ImageError::io(&self.tmp, "write blob", e))?;
        Ok(w.commit()?.0)
    }

    /// Stores everything `r` yields, returning its digest and size.
    pub fn put_reader(&self, r: &mut dyn Read, expected: Option<Digest>) -> Result<(Digest, u64)> {
        let mut w = self.writer(expected)?;
        io::copy(r, &mut w).map_err(|e| ImageError::io(&self.tmp, "write blob", e))?;
        w.commit()
    }

    /// Moves an already hashed file (same filesystem) into the store under `digest`.
    /// The caller computed `digest` while writing the file.
    pub(crate) fn adopt(&self, file: &Path, digest: &Digest) -> Result<()> {
        let dest = self.path(digest);
        if dest.is_file() {
            return Ok(());
        }
        fs::rename(file, &dest).map_err(|e| ImageError::io(&dest, "move blob into place", e))
    }

    /// A temporary file in the store's scratch directory, for callers that hash themselves.
    pub(crate) fn temp_file(&self) -> Result<NamedTempFile> {
        NamedTempFile::new_in(&self.tmp)
            .map_err(|e| ImageError::io(&self.tmp, "create temporary blob", e))
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        let p = self.path(d);
        File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::BlobMissing(d.clone()),
            _ => ImageError::io(&p, "open blob", e),
        })
    }

    pub fn read(&self, d: &Digest) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.open_blob(d)?
            .read_to_end(&mut v)
            .map_err(|e| ImageError::io(self.path(d), "read blob", e))?;
        Ok(v)
    }

    pub fn size(&self, d: &Digest) -> Result<u64> {
        let p = self.path(d);
        Ok(fs::metadata(&p)
            .map_err(|e| ImageError::io(&p, "stat blob", e))?
            .len())
    }

    /// Re-hashes a stored blob; false when its bytes no longer match its name.
    pub fn verify(&self, d: &Digest) -> Result<bool> {
        let mut h = Sha256::new();
        let mut f = self.open_blob(d)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => h.update(&buf[..n]),
                Err(e) => return Err(ImageError::io(self.path(d), "read blob", e)),
            }
        }
        Ok(Digest::from_hasher(h) == *d)
    }

    pub fn remove(&self, d: &Digest) -> Result<()> {
        let p = self.path(d);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(ImageError::io(&p, "remove blob", e))
            }
            _ => Ok(()),
        }
    }

    /// Every stored blob. Files whose names are not digests are skipped.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let rd = fs::read_dir(&self.blobs).map_err(|e| ImageError::io(&self.blobs, "list", e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| ImageError::io(&self.blobs, "list", e))?;
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

    /// Removes temporary files left by writers that died. Only call when no writer runs.
    pub(crate) fn clear_tmp(&self) {
        if let Ok(rd) = fs::read_dir(&self.tmp) {
            for ent in rd.flatten() {
                let _ = fs::remove_file(ent.path());
            }
        }
    }
}

/// A blob being written: hashed as it goes, committed (renamed into place) only if whole and
/// matching. Dropped without commit, its temporary file is deleted.
pub struct BlobWriter<'a> {
    store: &'a ContentStore,
    file: io::BufWriter<NamedTempFile>,
    hasher: Sha256,
    size: u64,
    expected: Option<Digest>,
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter<'_> {
    /// Checks the digest and moves the blob into place.
    pub fn commit(self) -> Result<(Digest, u64)> {
        let tmp_dir = self.store.tmp.clone();
        let file = self
            .file
            .into_inner()
            .map_err(|e| ImageError::io(&tmp_dir, "write blob", e.into_error()))?;
        let digest = Digest::from_hasher(self.hasher);
        if let Some(exp) = self.expected {
            if exp != digest {
                // `file` is dropped here, which deletes it: a bad blob is never kept.
                return Err(ImageError::DigestMismatch {
                    what: "blob".into(),
                    expected: exp,
                    actual: digest,
                });
            }
        }
        let dest = self.store.path(&digest);
        if !dest.is_file() {
            file.persist(&dest)
                .map_err(|e| ImageError::io(&dest, "move blob into place", e.error))?;
        }
        Ok((digest, self.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_while_written() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let d = cs.put_bytes(b"hello", None).unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(cs.read(&d).unwrap(), b"hello");
        assert!(cs.verify(&d).unwrap());

        let wrong = Digest::of(b"other");
        let err = cs.put_bytes(b"tampered", Some(wrong.clone())).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(!cs.contains(&wrong));
        assert!(!cs.contains(&Digest::of(b"tampered")));
        assert_eq!(
            fs::read_dir(dir.path().join("content/tmp"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(cs.list().unwrap(), vec![d]);
    }

    #[test]
    fn concurrent_writers_of_one_blob() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let data = vec![7u8; 3 << 20];
        let want = Digest::of(&data);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let d = cs.put_bytes(&data, Some(want.clone())).unwrap();
                    assert_eq!(d, want);
                });
            }
        });
        assert!(cs.verify(&want).unwrap());
        assert_eq!(
            fs::read_dir(dir.path().join("content/tmp"))
                .unwrap()
                .count(),
            0
        );
    }
}
