//! A container's read-write layer: `docker diff` (what changed) and `docker commit` (the
//! layer as a new image, owners shifted back to the container's view).

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

use berth_image::CommitOptions;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use crate::engine::Engine;
use crate::error::Result;
use crate::fsat::{io_sys, sys};
use crate::tarwalk::TarWalk;

/// One entry of `docker diff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    /// 0 modified, 1 added, 2 deleted (Docker's numbering).
    pub kind: u8,
}

/// `POST /commit`.
#[derive(Debug, Clone, Default)]
pub struct CommitRequest {
    pub container: String,
    pub reference: Option<String>,
    pub comment: Option<String>,
    pub author: Option<String>,
    pub changes: Vec<String>,
}

impl Engine {
    /// `GET /containers/{id}/changes`: what the container's read-write layer changed.
    pub fn changes(&self, name_or_id: &str) -> Result<Vec<Change>> {
        let entry = self.lookup(name_or_id)?;
        let rec = entry.record();
        let upper = self.upper_dir(&entry.id);
        let layers_root = self.inner.images.store().layers().root().to_path_buf();
        let lowers: Vec<PathBuf> = rec
            .layers
            .iter()
            .map(|l| {
                layers_root
                    .join(l.strip_prefix("sha256:").unwrap_or(l))
                    .join("diff")
            })
            .collect();
        let mut out = Vec::new();
        let dir = rfs::open(
            &upper,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys("open", &upper))?;
        walk_changes(dir.as_fd(), "", &lowers, &mut out).map_err(io_sys("read", &upper))?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn upper_dir(&self, id: &str) -> PathBuf {
        self.inner
            .cfg
            .data_root
            .join("containers")
            .join(id)
            .join("upper")
    }

    /// `POST /commit`: the container's read-write layer becomes a new image on top of its
    /// image; owners are shifted back to the container's view so the image runs anywhere.
    /// Returns the new image's id.
    pub fn commit(&self, req: &CommitRequest) -> Result<String> {
        let entry = self.lookup(&req.container)?;
        let rec = entry.record();
        let upper = self.upper_dir(&entry.id);
        let data_root = &self.inner.cfg.data_root;
        let tmp = rfs::open(
            data_root,
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(sys("create temporary file in", data_root))?;
        let dir = rfs::open(
            &upper,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys("open", &upper))?;
        let mut walk = TarWalk::new(File::from(tmp), rec.maps.clone(), true);
        let mut file = walk
            .add(dir.as_fd(), OsStr::new(""), "./")
            .and_then(|_| walk.finish())
            .map_err(io_sys("read", &upper))?;
        let opts = CommitOptions {
            reference: req.reference.as_deref(),
            changes: req.changes.clone(),
            comment: req.comment.clone(),
            author: req.author.clone(),
        };
        let img = self
            .inner
            .images
            .store()
            .commit_layer(&rec.image_id, &mut file, opts)
            .map_err(crate::images::image_error)?;
        let ev = crate::events::Event::container(&rec, "commit");
        self.emit(ev.attr("imageID", img.id.to_string()));
        Ok(img.id.to_string())
    }
}

fn walk_changes(
    dir: BorrowedFd<'_>,
    prefix: &str,
    lowers: &[PathBuf],
    out: &mut Vec<Change>,
) -> io::Result<()> {
    let mut names = Vec::new();
    for e in rfs::Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(CString::from(e.file_name()));
        }
    }
    for name in names {
        let name: &CStr = &name;
        let path = format!("{prefix}/{}", name.to_string_lossy());
        let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let ft = FileType::from_raw_mode(st.st_mode);
        let rel = path.trim_start_matches('/');
        let in_lower = lowers
            .iter()
            .any(|l| std::fs::symlink_metadata(l.join(rel)).is_ok());
        let kind = if ft == FileType::CharacterDevice && st.st_rdev == 0 {
            2
        } else if in_lower {
            0
        } else {
            1
        };
        out.push(Change {
            path: path.clone(),
            kind,
        });
        if ft == FileType::Directory {
            let sub = rfs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            walk_changes(sub.as_fd(), &path, lowers, out)?;
        }
    }
    Ok(())
}
