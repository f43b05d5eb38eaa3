//! Hardened layer unpacking: a layer tar becomes a directory tree that overlayfs can use as a
//! lower layer, and nothing is ever written outside that directory.
//!
//! The `tar` crate parses; every change is applied here with `*at` syscalls relative to
//! directory file descriptors, so no path is resolved twice and no symlink is ever followed:
//! - names are normalised lexically: a leading `/` or `./` is dropped, `..` is rejected, and
//!   so are names longer than PATH_MAX (4096) or a component longer than NAME_MAX (255);
//! - parent directories are opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS)`, or walked one `O_NOFOLLOW` component at a time when they must be
//!   created: writing through a symlink (planted by an earlier entry, or a directory that was
//!   replaced by a symlink) is rejected with the entry's name;
//! - files are created with `O_CREAT | O_EXCL | O_NOFOLLOW`; a duplicate entry replaces the
//!   earlier one (tar's rule: the last one wins), a directory entry merges with an existing one;
//! - symlinks are stored as given (an absolute target such as `/bin/busybox` is normal in a
//!   root filesystem) and never followed; hardlink targets must be inside the layer;
//! - device nodes and fifos are rejected; setuid/setgid bits are kept;
//! - owners, modes, mtimes, extended attributes (`SCHILY.xattr.*`, including
//!   `security.capability`) are kept; `trusted.overlay.*` attributes in the tar are dropped so
//!   that an image cannot forge overlayfs metadata;
//! - OCI whiteouts become overlayfs whiteouts: `.wh.NAME` a 0/0 character device `NAME`,
//!   `.wh..wh..opq` the `trusted.overlay.opaque=y` attribute on its directory;
//! - size limit: a layer may expand to at most [`UnpackLimits::max_bytes`] bytes (default
//!   64 GiB) in at most [`UnpackLimits::max_entries`] entries (default 4 million); a file whose
//!   declared size would pass the limit (a huge sparse file) is rejected before any byte of it
//!   is written.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags,
};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

const PATH_MAX: usize = 4096;
const NAME_MAX: usize = 255;
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// How much a layer may expand to.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 64 << 30,
            max_entries: 4_000_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {entry:?} rejected: {reason}")]
    Rejected { entry: String, reason: String },
    #[error("layer entry {entry:?}: {op}: {source}")]
    Io {
        entry: String,
        op: &'static str,
        source: io::Error,
    },
    #[error("reading the layer tar: {0}")]
    Read(io::Error),
    #[error("layer entry {entry:?}: the layer would expand past the limit of {limit} bytes (a tar bomb or a huge sparse file?); raise UnpackLimits::max_bytes if the image is genuine")]
    TooLarge { entry: String, limit: u64 },
    #[error("layer has more than {limit} entries (a tar bomb?); raise UnpackLimits::max_entries if the image is genuine")]
    TooManyEntries { limit: u64 },
}

/// Which uids and gids a layer's files have, each with the first path that has it; the
/// snapshotter checks these against an id map in O(distinct ids), not O(files).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerOwners {
    pub uids: BTreeMap<u32, String>,
    pub gids: BTreeMap<u32, String>,
}

impl LayerOwners {
    fn note(&mut self, uid: u32, gid: u32, path: &[u8]) {
        self.uids.entry(uid).or_insert_with(|| display(path));
        self.gids.entry(gid).or_insert_with(|| display(path));
    }
}

/// What an unpack produced.
#[derive(Debug, Clone, Default)]
pub struct UnpackStats {
    pub entries: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    pub owners: LayerOwners,
}

fn display(p: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(p))
}

/// At most this many bytes may pass between two entries: headers, GNU long names, PAX
/// records, and the bodies of entries that have no data (a directory "of" 10 GB). The tar
/// crate reads long names and PAX records into memory, so without this a small compressed
/// stream could make it allocate gigabytes.
pub const MAX_METADATA_BYTES: u64 = 4 << 20;

/// Switches a [`MetaGuard`] between an entry's data (limited by the size limits) and the
/// metadata between entries (limited to [`MAX_METADATA_BYTES`]).
#[derive(Clone)]
pub(crate) struct MetaPhase(Rc<std::cell::Cell<Option<u64>>>);

impl MetaPhase {
    /// The entry's data is being read: not counted here.
    pub(crate) fn data(&self) {
        self.0.set(None);
    }
    /// Between entries: count from zero.
    pub(crate) fn metadata(&self) {
        self.0.set(Some(0));
    }
}

/// A reader that fails when more than [`MAX_METADATA_BYTES`] are read between two entries.
pub(crate) struct MetaGuard<R> {
    inner: R,
    phase: MetaPhase,
}

impl<R: Read> MetaGuard<R> {
    pub(crate) fn new(inner: R) -> (MetaGuard<R>, MetaPhase) {
        let phase = MetaPhase(Rc::new(std::cell::Cell::new(Some(0))));
        (
            MetaGuard {
                inner,
                phase: phase.clone(),
            },
            phase,
        )
    }
}

impl<R: Read> Read for MetaGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(seen) = self.phase.0.get() {
            let seen = seen + n as u64;
            if seen > MAX_METADATA_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "more than {MAX_METADATA_BYTES} bytes of tar metadata (a long name, PAX \
                         records or the body of an entry without data) before the next entry; \
                         a hostile or corrupt tarball"
                    ),
                ));
            }
            self.phase.0.set(Some(seen));
        }
        Ok(n)
    }
}

/// Unpacks the tar stream `reader` into the existing directory `dest`.
pub fn unpack(
    reader: impl Read,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackStats, UnpackError> {
    let root = rfs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Io {
        entry: dest.display().to_string(),
        op: "open layer directory",
        source: e.into(),
    })?;
    let mut u = Unpacker {
        root: Rc::new(root),
        umask: current_umask(),
        creds: (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        ),
        limits: *limits,
        stats: UnpackStats::default(),
        cache: None,
        dir_times: Vec::new(),
        buf: vec![0u8; 256 << 10],
    };
    let (guarded, phase) = MetaGuard::new(reader);
    let mut ar = tar::Archive::new(guarded);
    for entry in ar.entries().map_err(UnpackError::Read)? {
        let entry = entry.map_err(UnpackError::Read)?;
        phase.data();
        u.stats.entries += 1;
        if u.stats.entries > limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        u.entry(entry)?;
        phase.metadata();
    }
    u.finish_dir_times();
    Ok(u.stats)
}

struct Unpacker {
    root: Rc<OwnedFd>,
    limits: UnpackLimits,
    /// The process umask, and whether files we create are already ours (root, gid 0): then
    /// a file whose wanted mode and owner match what creation gives needs no chmod/chown.
    umask: u32,
    creds: (u32, u32),
    stats: UnpackStats,
    /// The last parent directory opened (its normalised path), reused by the next entry in the
    /// same directory. Cleared whenever anything is removed, so it never names a stale tree.
    cache: Option<(Vec<u8>, Dir)>,
    /// Directory mtimes, applied after all entries (creating children changes them).
    dir_times: Vec<(Vec<u8>, u64)>,
    buf: Vec<u8>,
}

/// Metadata shared by every entry type.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: u64,
    xattrs: Vec<Xattr>,
}

/// An extended attribute: name, value.
type Xattr = (Vec<u8>, Vec<u8>);

fn rejected(entry: &[u8], reason: impl Into<String>) -> UnpackError {
    UnpackError::Rejected {
        entry: String::from_utf8_lossy(entry).into_owned(),
        reason: reason.into(),
    }
}

fn io_err<'a, E: Into<io::Error>>(
    entry: &'a [u8],
    op: &'static str,
) -> impl FnOnce(E) -> UnpackError + 'a {
    move |e: E| UnpackError::Io {
        entry: String::from_utf8_lossy(entry).into_owned(),
        op,
        source: e.into(),
    }
}

/// Lexical normalisation: the components of `raw`, without `/`, `.` and empty ones.
fn normalise(raw: &[u8]) -> Result<Vec<&[u8]>, UnpackError> {
    if raw.len() >= PATH_MAX {
        return Err(rejected(
            &raw[..64],
            format!("name is {} bytes long, PATH_MAX is {PATH_MAX}", raw.len()),
        ));
    }
    if raw.contains(&0) {
        return Err(rejected(raw, "name contains a NUL byte"));
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(rejected(raw, "name contains `..`")),
            c if c.len() > NAME_MAX => {
                return Err(rejected(
                    raw,
                    format!("a component is longer than NAME_MAX ({NAME_MAX})"),
                ))
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

impl Unpacker {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let comps = normalise(&raw)?;
        let xattrs = xattrs(&mut entry, &raw)?;
        let h = entry.header();
        let meta = Meta {
            uid: u32::try_from(h.uid().map_err(|e| self.bad_header(&raw, e))?)
                .map_err(|_| rejected(&raw, "uid does not fit 32 bits"))?,
            gid: u32::try_from(h.gid().map_err(|e| self.bad_header(&raw, e))?)
                .map_err(|_| rejected(&raw, "gid does not fit 32 bits"))?,
            mode: h.mode().map_err(|e| self.bad_header(&raw, e))? & 0o7777,
            mtime: h.mtime().map_err(|e| self.bad_header(&raw, e))?,
            xattrs,
        };
        let kind = h.entry_type();

        let Some((&name, parent)) = comps.split_last() else {
            // The layer's root itself (`./`).
            if kind.is_dir() {
                let root = self.root.clone();
                self.apply_meta(&*root, &raw, &meta)?;
                self.dir_times.push((Vec::new(), meta.mtime));
            }
            return Ok(());
        };
        let rel = join(&comps);

        if name.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(&raw, parent, name);
        }

        use tar::EntryType as T;
        match kind {
            T::Directory => {
                let pfd = self.parent(&raw, parent)?;
                let fd = self.make_dir(&pfd.fd, &raw, name)?;
                self.stats.owners.note(meta.uid, meta.gid, &rel);
                self.apply_meta(&fd, &raw, &meta)?;
                self.dir_times.push((rel, meta.mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                let size = entry.size();
                if self.stats.bytes.saturating_add(size) > self.limits.max_bytes {
                    return Err(UnpackError::TooLarge {
                        entry: String::from_utf8_lossy(&raw).into_owned(),
                        limit: self.limits.max_bytes,
                    });
                }
                let pfd = self.parent(&raw, parent)?;
                let create_mode = meta.mode & 0o777;
                let fd = self.create_file(&pfd.fd, &raw, name, create_mode)?;
                let mut file = File::from(fd);
                let written = self.copy_data(&mut entry, &mut file, &raw)?;
                self.stats.bytes += written;
                self.stats.owners.note(meta.uid, meta.gid, &rel);
                // Creation already gave the file our owner (unless the parent is setgid) and
                // `mode & !umask`: skip the syscalls that would change nothing.
                let owner_ok = (meta.uid, meta.gid) == self.creds && !pfd.setgid;
                let mode_ok = meta.mode == create_mode && meta.mode & self.umask == 0;
                self.apply_meta_with(&file, &raw, &meta, !owner_ok, !mode_ok)?;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| rejected(&raw, "symlink without a target"))?
                    .into_owned();
                if target.is_empty() || target.len() >= PATH_MAX || target.contains(&0) {
                    return Err(rejected(
                        &raw,
                        "symlink target is empty, too long or has a NUL",
                    ));
                }
                let pfd = self.parent(&raw, parent)?;
                self.replace_if_exists(&pfd.fd, &raw, name, |pfd| {
                    rfs::symlinkat(os(&target), pfd, os(name))
                })?;
                // As for files: a new symlink already has our owner unless the parent is setgid.
                if (meta.uid, meta.gid) != self.creds || pfd.setgid {
                    rfs::chownat(
                        &*pfd.fd,
                        os(name),
                        Some(rfs_uid(meta.uid)),
                        Some(rfs_gid(meta.gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(io_err(&raw, "chown symlink"))?;
                }
                let t = times(meta.mtime);
                rfs::utimensat(&*pfd.fd, os(name), &t, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io_err(&raw, "set symlink times"))?;
                self.stats.owners.note(meta.uid, meta.gid, &rel);
            }
            T::Link => {
                let target_raw = entry
                    .link_name_bytes()
                    .ok_or_else(|| rejected(&raw, "hardlink without a target"))?
                    .into_owned();
                let target = normalise(&target_raw)
                    .map_err(|e| rejected(&raw, format!("hardlink target: {e}")))?;
                let Some((&tname, tparent)) = target.split_last() else {
                    return Err(rejected(&raw, "hardlink to the layer root"));
                };
                let tpfd = self.parent_no_create(&raw, tparent)?;
                let st =
                    rfs::statat(&*tpfd.fd, os(tname), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
                        rejected(
                            &raw,
                            format!(
                                "hardlink target {:?} is not an earlier entry of this layer ({e})",
                                String::from_utf8_lossy(&target_raw)
                            ),
                        )
                    })?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    return Err(rejected(&raw, "hardlink to a directory"));
                }
                let pfd = self.parent(&raw, parent)?;
                self.replace_if_exists(&pfd.fd, &raw, name, |pfd| {
                    rfs::linkat(&*tpfd.fd, os(tname), pfd, os(name), AtFlags::empty())
                })?;
            }
            T::Char | T::Block | T::Fifo => {
                return Err(rejected(
                    &raw,
                    "device nodes and fifos are not allowed in image layers",
                ));
            }
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
            other => {
                return Err(rejected(
                    &raw,
                    format!("unsupported tar entry type {:?}", other.as_byte() as char),
                ));
            }
        }
        Ok(())
    }

    fn bad_header(&self, raw: &[u8], e: io::Error) -> UnpackError {
        rejected(raw, format!("bad tar header: {e}"))
    }

    /// `.wh..wh..opq` marks its directory opaque; `.wh.NAME` deletes NAME from lower layers.
    fn whiteout(&mut self, raw: &[u8], parent: &[&[u8]], name: &[u8]) -> Result<(), UnpackError> {
        if name == OPAQUE_MARKER {
            let dir = self.parent(raw, parent)?;
            return rfs::fsetxattr(&*dir.fd, OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(io_err(raw, "set the opaque attribute"));
        }
        if name.starts_with(b".wh..wh.") {
            // Other AUFS metadata (`.wh..wh.plnk`, `.wh..wh.aufs`) means nothing to overlayfs.
            return Ok(());
        }
        let target = &name[WHITEOUT_PREFIX.len()..];
        if target.is_empty() || target == b"." || target == b".." {
            return Err(rejected(raw, "whiteout of an empty name, `.` or `..`"));
        }
        let pfd = self.parent(raw, parent)?;
        self.replace_if_exists(&pfd.fd, raw, target, |pfd| {
            rfs::mknodat(pfd, os(target), FileType::CharacterDevice, Mode::empty(), 0)
        })?;
        Ok(())
    }

    /// Opens (creating as needed) the directory `comps` beneath the root, never following a
    /// symlink.
    fn parent(&mut self, raw: &[u8], comps: &[&[u8]]) -> Result<Dir, UnpackError> {
        self.open_dir(raw, comps, true)
    }

    fn parent_no_create(&mut self, raw: &[u8], comps: &[&[u8]]) -> Result<Dir, UnpackError> {
        self.open_dir(raw, comps, false)
    }

    fn open_dir(&mut self, raw: &[u8], comps: &[&[u8]], create: bool) -> Result<Dir, UnpackError> {
        let path = join(comps);
        if let Some((p, dir)) = &self.cache {
            if *p == path {
                return Ok(dir.clone());
            }
        }
        if comps.is_empty() {
            let dir = Dir::new(self.root.clone(), raw)?;
            self.cache = Some((path, dir.clone()));
            return Ok(dir);
        }
        let how = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let fd = match rfs::openat2(&self.root, os(&path), how, Mode::empty(), resolve) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create => self.walk_create(raw, comps)?,
            Err(Errno::LOOP) | Err(Errno::NOTDIR) | Err(Errno::XDEV) => {
                return Err(rejected(
                    raw,
                    format!(
                        "parent {:?} is a symlink or not a directory; refusing to write through it",
                        String::from_utf8_lossy(&path)
                    ),
                ))
            }
            Err(e) => return Err(io_err(raw, "open parent directory")(e)),
        };
        let dir = Dir::new(Rc::new(fd), raw)?;
        self.cache = Some((path, dir.clone()));
        Ok(dir)
    }

    /// Walks `comps` one `O_NOFOLLOW` step at a time, creating missing directories (0755,
    /// root-owned, as Docker does for parents a layer does not list).
    fn walk_create(&mut self, raw: &[u8], comps: &[&[u8]]) -> Result<OwnedFd, UnpackError> {
        let mut cur = self.make_dir_with_mode(&self.root.clone(), raw, comps[0], 0o755)?;
        for c in &comps[1..] {
            cur = self.make_dir_with_mode(&cur, raw, c, 0o755)?;
        }
        Ok(cur)
    }

    fn make_dir(&mut self, pfd: &OwnedFd, raw: &[u8], name: &[u8]) -> Result<OwnedFd, UnpackError> {
        self.make_dir_with_mode(pfd, raw, name, 0o700)
    }

    /// mkdir that merges with an existing directory and replaces anything else.
    fn make_dir_with_mode(
        &mut self,
        pfd: &OwnedFd,
        raw: &[u8],
        name: &[u8],
        mode: u32,
    ) -> Result<OwnedFd, UnpackError> {
        let open = |pfd: &OwnedFd| {
            rfs::openat(
                pfd,
                os(name),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
            )
        };
        match rfs::mkdirat(pfd, os(name), Mode::from_raw_mode(mode)) {
            Ok(()) => {}
            Err(Errno::EXIST) => match open(pfd) {
                Ok(fd) => return Ok(fd),
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                    self.remove_at(pfd, raw, name)?;
                    rfs::mkdirat(pfd, os(name), Mode::from_raw_mode(mode))
                        .map_err(io_err(raw, "create directory"))?;
                }
                Err(e) => return Err(io_err(raw, "open directory")(e)),
            },
            Err(e) => return Err(io_err(raw, "create directory")(e)),
        }
        open(pfd).map_err(io_err(raw, "open directory"))
    }

    fn create_file(
        &mut self,
        pfd: &OwnedFd,
        raw: &[u8],
        name: &[u8],
        mode: u32,
    ) -> Result<OwnedFd, UnpackError> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rfs::openat(pfd, os(name), flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => Ok(fd),
            Err(Errno::EXIST) => {
                self.remove_at(pfd, raw, name)?;
                rfs::openat(pfd, os(name), flags, Mode::from_raw_mode(mode))
                    .map_err(io_err(raw, "create file"))
            }
            Err(e) => Err(io_err(raw, "create file")(e)),
        }
    }

    /// Runs `make`; if the name exists, removes what is there and runs it again.
    fn replace_if_exists(
        &mut self,
        pfd: &OwnedFd,
        raw: &[u8],
        name: &[u8],
        make: impl Fn(&OwnedFd) -> rustix::io::Result<()>,
    ) -> Result<(), UnpackError> {
        match make(pfd) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => {
                self.remove_at(pfd, raw, name)?;
                make(pfd).map_err(io_err(raw, "create"))
            }
            Err(e) => Err(io_err(raw, "create")(e)),
        }
    }

    /// Removes `name` in `pfd`, recursively if it is a directory, never following symlinks.
    fn remove_at(&mut self, pfd: &OwnedFd, raw: &[u8], name: &[u8]) -> Result<(), UnpackError> {
        self.cache = None;
        remove_tree_at(pfd, name).map_err(io_err(raw, "remove the existing entry"))
    }

    fn copy_data(
        &mut self,
        src: &mut impl Read,
        dst: &mut File,
        raw: &[u8],
    ) -> Result<u64, UnpackError> {
        let mut total = 0u64;
        loop {
            let n = match src.read(&mut self.buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(UnpackError::Read(e)),
            };
            total += n as u64;
            if self.stats.bytes + total > self.limits.max_bytes {
                return Err(UnpackError::TooLarge {
                    entry: String::from_utf8_lossy(raw).into_owned(),
                    limit: self.limits.max_bytes,
                });
            }
            dst.write_all(&self.buf[..n]).map_err(|e| UnpackError::Io {
                entry: String::from_utf8_lossy(raw).into_owned(),
                op: "write file",
                source: e,
            })?;
        }
    }

    /// Owner, then mode (chown clears setuid bits), then xattrs (chown clears
    /// security.capability), then times.
    fn apply_meta(&mut self, fd: &impl AsFd, raw: &[u8], m: &Meta) -> Result<(), UnpackError> {
        self.apply_meta_with(fd, raw, m, true, true)
    }

    fn apply_meta_with(
        &mut self,
        fd: &impl AsFd,
        raw: &[u8],
        m: &Meta,
        chown: bool,
        chmod: bool,
    ) -> Result<(), UnpackError> {
        if chown {
            rfs::fchown(fd, Some(rfs_uid(m.uid)), Some(rfs_gid(m.gid)))
                .map_err(io_err(raw, "chown"))?;
        }
        if chmod || chown {
            rfs::fchmod(fd, Mode::from_raw_mode(m.mode)).map_err(io_err(raw, "chmod"))?;
        }
        for (k, v) in &m.xattrs {
            rfs::fsetxattr(fd, os(k), v, XattrFlags::empty()).map_err(io_err(raw, "set xattr"))?;
        }
        rfs::futimens(fd, &times(m.mtime)).map_err(io_err(raw, "set times"))?;
        Ok(())
    }

    fn finish_dir_times(&mut self) {
        // Deepest first does not matter: setting a directory's times does not touch its parent.
        for (path, mtime) in std::mem::take(&mut self.dir_times) {
            let fd = if path.is_empty() {
                self.root.try_clone().ok()
            } else {
                rfs::openat2(
                    &self.root,
                    os(&path),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                    Mode::empty(),
                    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
                )
                .ok()
            };
            // A directory a later entry removed has no times to set.
            if let Some(fd) = fd {
                let _ = rfs::futimens(&fd, &times(mtime));
            }
        }
    }
}

/// An open directory of the layer, shared without dup'ing the fd.
#[derive(Clone)]
struct Dir {
    fd: Rc<OwnedFd>,
    /// New files in a setgid directory take its group, not ours.
    setgid: bool,
}

impl Dir {
    fn new(fd: Rc<OwnedFd>, raw: &[u8]) -> Result<Dir, UnpackError> {
        let st = rfs::fstat(&*fd).map_err(io_err(raw, "stat parent directory"))?;
        Ok(Dir {
            setgid: st.st_mode & libc::S_ISGID != 0,
            fd,
        })
    }
}

/// The process umask, read without changing it (`Umask:` in /proc/self/status); if unknown,
/// assume the strictest so that modes are always set explicitly.
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o777)
}

fn rfs_uid(v: u32) -> rfs::Uid {
    rfs::Uid::from_raw(v)
}

fn rfs_gid(v: u32) -> rfs::Gid {
    rfs::Gid::from_raw(v)
}

fn times(mtime: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime.min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// The entry's `SCHILY.xattr.*` PAX records, minus overlayfs' own attributes.
fn xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, raw: &[u8]) -> Result<Vec<Xattr>, UnpackError> {
    let mut out = Vec::new();
    let Some(exts) = entry.pax_extensions().map_err(UnpackError::Read)? else {
        return Ok(out);
    };
    for ext in exts {
        let ext = ext.map_err(|e| rejected(raw, format!("bad PAX record: {e}")))?;
        if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
            if name.starts_with(b"trusted.overlay.") {
                tracing::warn!(entry = %String::from_utf8_lossy(raw), "dropping overlayfs xattr from layer");
                continue;
            }
            out.push((name.to_vec(), ext.value_bytes().to_vec()));
        }
    }
    Ok(out)
}

/// Removes `name` under `dir` (a tree if it is a directory), never following symlinks.
pub(crate) fn remove_tree_at(dir: &impl AsFd, name: &[u8]) -> rustix::io::Result<()> {
    match rfs::unlinkat(dir, os(name), AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    let sub = rfs::openat(
        dir,
        os(name),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for ent in rfs::Dir::read_from(&sub)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    for n in names {
        remove_tree_at(&sub, &n)?;
    }
    rfs::unlinkat(dir, os(name), AtFlags::REMOVEDIR)
}
