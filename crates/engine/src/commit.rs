//! A container's read-write layer: `docker diff` (what changed) and `docker commit` (the
//! layer as a new image, owners shifted back to the container's view).

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

use berth_image::{CommitOptions, ImageError, ImageRunConfig as Config, Reference};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use crate::container::{ContainerConfig, Status};
use crate::engine::Engine;
use crate::error::{EngineError, Result};
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
    /// Freeze a running container while its layer is read (Docker's default, `--pause`).
    pub pause: bool,
    /// The config sent as the request body (Docker's `ContainerConfig` shape), if any: the
    /// new image's config starts from it instead of the container's.
    pub config: Option<serde_json::Value>,
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
    /// The image's config is the container's, as Docker's (see berth_image's commit). A
    /// running container is frozen meanwhile when `req.pause` (and thawed after, also on
    /// error); one the user paused stays paused. Returns the new image's id.
    pub async fn commit(&self, req: CommitRequest) -> Result<String> {
        let entry = self.lookup(&req.container)?;
        let rec = entry.record();
        let cannot = |why: &str| {
            Err(EngineError::Conflict(format!(
                "You cannot commit container {} which is {why}",
                rec.id
            )))
        };
        match rec.state.status {
            Status::Dead => return cannot("Dead"),
            Status::Removing => return cannot("being removed"),
            _ => {}
        }
        // Checked before anything is frozen or written.
        if let Some(r) = &req.reference {
            let parsed = Reference::parse(r).map_err(|e| {
                EngineError::InvalidParameter(format!("invalid reference {r:?}: {e}"))
            })?;
            if parsed.digest().is_some() {
                return Err(EngineError::InvalidParameter(format!(
                    "refusing to create a tag with a digest reference ({r}): name the new \
                     image repository[:tag]"
                )));
            }
        }
        let request_config = req
            .config
            .as_ref()
            .map(request_config)
            .transpose()?
            .flatten();
        let parent = self
            .inner
            .images
            .store()
            .resolve(&rec.image_id)
            .map_err(|e| match e {
                ImageError::NotFound(_) => EngineError::NotFound(format!(
                    "No such image: {} (the image of container {} was removed, so its changes \
                     cannot be committed on top of it)",
                    rec.image_id, rec.name
                )),
                e => crate::images::image_error(e),
            })?;

        let pause = req.pause && rec.state.status == Status::Running;
        if pause {
            if let Err(e) = self.pause(&entry.id).await {
                // It may have stopped meanwhile: then there is nothing to freeze.
                if entry.record().state.status == Status::Running {
                    return Err(e);
                }
            }
        }
        let paused_here = pause && entry.record().state.status == Status::Paused;
        // For the events, as dockerd names them.
        let reference = req.reference.as_deref().map(crate::images::familiar);
        let comment = req.comment.clone().unwrap_or_default();
        let this = self.clone();
        let id = entry.id.clone();
        let done = tokio::task::spawn_blocking(move || {
            this.commit_layer(&id, &req, &parent, request_config)
        })
        .await
        .map_err(|e| EngineError::System(format!("commit task: {e}")))
        .and_then(|r| r);
        // As dockerd: the image's `tag` event (with a reference), the commit event, then the
        // thaw.
        if let Ok(img_id) = &done {
            if let Some(r) = &reference {
                self.image_event("tag", img_id, r);
            }
            let ev = crate::events::Event::container(&entry.record(), "commit")
                .attr("comment", comment)
                .attr("imageID", img_id.clone())
                .attr("imageRef", reference.unwrap_or_default());
            self.emit(ev);
        }
        if paused_here {
            if let Err(e) = self.unpause(&entry.id).await {
                tracing::error!(id = %entry.id, error = %e, "thawing the container after commit");
            }
        }
        done
    }

    /// The blocking part of [`Engine::commit`]: the upper directory as a layer tar (a
    /// temporary file that vanishes with its descriptor), then the image. Returns the image
    /// id.
    fn commit_layer(
        &self,
        id: &str,
        req: &CommitRequest,
        parent: &berth_image::Image,
        request_config: Option<Config>,
    ) -> Result<String> {
        let entry = self.lookup(id)?;
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
        // moby's commit merges the container's Config, whose ExposedPorts are the
        // request's and the image's since create.
        let ports = self.exposed_ports(&rec);
        let opts = CommitOptions {
            reference: req.reference.as_deref(),
            changes: req.changes.clone(),
            comment: req.comment.clone(),
            author: req.author.clone(),
            container_config: Some(container_config(&rec.config, &ports)),
            config: request_config,
            container_id: Some(rec.id.clone()),
            container_config_json: Some(container_config_json(&rec.config, &ports)),
        };
        let img = self
            .inner
            .images
            .store()
            .commit_layer(&parent.id.to_string(), &mut file, opts)
            .map_err(crate::images::image_error)?;
        Ok(img.id.to_string())
    }
}

/// The container's config in the image config's shape: the base of the committed image's.
fn container_config(c: &ContainerConfig, ports: &[String]) -> Config {
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let list = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
    let mut o = Config::default();
    o.set_user(text(&c.user))
        .set_env(list(&c.env))
        .set_cmd(list(&c.cmd))
        .set_entrypoint(list(&c.entrypoint))
        .set_working_dir(text(&c.working_dir))
        .set_labels((!c.labels.is_empty()).then(|| {
            c.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }))
        .set_exposed_ports(list(ports))
        .set_volumes(list(&c.volumes.keys().cloned().collect::<Vec<_>>()))
        .set_stop_signal(c.stop_signal.clone().filter(|s| !s.is_empty()));
    o
}

/// The container's config as Docker records it in the image (`container_config`).
fn container_config_json(c: &ContainerConfig, ports: &[String]) -> serde_json::Value {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        // Docker leaves an empty ExposedPorts out.
        obj.remove("ExposedPorts");
        if !ports.is_empty() {
            let ports: serde_json::Map<String, serde_json::Value> = ports
                .iter()
                .map(|p| (p.clone(), serde_json::json!({})))
                .collect();
            obj.insert("ExposedPorts".into(), ports.into());
        }
    }
    v
}

/// The request body's config (Docker's `ContainerConfig` JSON) in the image config's
/// shape; `None` for a `null` body. Fields an image config has no place for are ignored, as
/// Docker's commit ignores them. A field absent or null stays unset (so that the
/// container's is taken); an empty Entrypoint list resets it.
fn request_config(v: &serde_json::Value) -> Result<Option<Config>> {
    use serde_json::Value;
    let obj = match v {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        _ => {
            return Err(EngineError::InvalidParameter(
                "the commit request's body must be a container config (a JSON object) or empty"
                    .into(),
            ))
        }
    };
    let bad = |k: &str, what: &str| {
        EngineError::InvalidParameter(format!("invalid commit config: {k} must be {what}"))
    };
    let text = |k: &str| -> Result<Option<String>> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(k, "a string")),
        }
    };
    // Cmd and Entrypoint may be a string (Docker's strslice); Env a list only.
    let list = |k: &str, one_ok: bool| -> Result<Option<Vec<String>>> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if one_ok => Ok(Some(vec![s.clone()])),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(String::from)
                        .ok_or_else(|| bad(k, "a list of strings"))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(_) => Err(bad(k, "a list of strings")),
        }
    };
    let keys = |k: &str| -> Result<Option<Vec<String>>> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.keys().cloned().collect())),
            Some(_) => Err(bad(k, "an object")),
        }
    };
    let labels = match obj.get("Labels") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(
            m.iter()
                .map(|(k, v)| {
                    v.as_str()
                        .map(|v| (k.clone(), v.to_string()))
                        .ok_or_else(|| bad("Labels", "an object of strings"))
                })
                .collect::<Result<std::collections::HashMap<_, _>>>()?,
        ),
        Some(_) => return Err(bad("Labels", "an object of strings")),
    };
    let mut c = Config::default();
    c.set_user(text("User")?)
        .set_env(list("Env", false)?)
        .set_cmd(list("Cmd", true)?)
        .set_entrypoint(list("Entrypoint", true)?)
        .set_working_dir(text("WorkingDir")?)
        .set_labels(labels)
        .set_exposed_ports(keys("ExposedPorts")?)
        .set_volumes(keys("Volumes")?)
        .set_stop_signal(text("StopSignal")?);
    Ok(Some(c))
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
