//! `/etc/subuid` and `/etc/subgid`: subordinate id ranges, one `owner:start:count` a line.
//!
//! The file is kept as its lines, byte for byte: comments, blank lines and lines we cannot
//! parse are written back exactly as read, and only the lines we add are new. A bad line is
//! reported (file and line number) and skipped; it does not stop the rest being read.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::atomic::{LockedFile, ShadowLock};
use crate::map::{IdMap, IdRange, MapError};

/// Mode of a subuid/subgid file we create, as shadow's tools make it.
const NEW_FILE_MODE: u32 = 0o644;

/// How long to wait for shadow's lock, as long as shadow's `lckpwdf` waits for its own.
const SHADOW_LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// One parsed entry: `owner` (a user name or a numeric uid) holds host ids
/// `start..start+count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubIdEntry {
    pub owner: String,
    pub start: u32,
    pub count: u32,
    /// 1-based line number in the file.
    pub line: usize,
}

impl SubIdEntry {
    /// One past the last id, as u64 so it cannot overflow.
    pub fn end(&self) -> u64 {
        self.start as u64 + self.count as u64
    }

    fn overlaps(&self, start: u32, count: u32) -> bool {
        (self.start as u64) < start as u64 + count as u64 && (start as u64) < self.end()
    }
}

/// A line that is neither an entry, a comment nor blank.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} line {line}: {reason}: {text:?}", path.display())]
pub struct BadLine {
    pub path: PathBuf,
    pub line: usize,
    pub text: String,
    pub reason: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum SubIdError {
    #[error("cannot {action} {}: {cause}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    #[error(
        "range {}-{} of {owner} overlaps {other}'s {}-{} in {} line {line}",
        .start, last(*.start, *.count), .other_start, last(*.other_start, *.other_count), .path.display()
    )]
    Overlap {
        owner: String,
        start: u32,
        count: u32,
        other: String,
        other_start: u32,
        other_count: u32,
        path: PathBuf,
        line: usize,
    },
    #[error("range {start}+{count} for {owner} is empty or runs past id 4294967294")]
    BadRange {
        owner: String,
        start: u32,
        count: u32,
    },
    #[error("the subordinate ranges of {owner} in {} do not form a valid id map: {cause}", path.display())]
    Map {
        owner: String,
        path: PathBuf,
        cause: MapError,
    },
    #[error("no free range of {count} ids at or above {min} in {}", path.display())]
    Full { count: u32, min: u32, path: PathBuf },
}

/// The last id of a range, for messages in the `100000-165535` form.
fn last(start: u32, count: u32) -> u64 {
    start as u64 + (count as u64).saturating_sub(1)
}

/// The contents of a subuid or subgid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubIdFile {
    path: PathBuf,
    /// Every line without its `\n`, as read.
    lines: Vec<Vec<u8>>,
    /// Whether the last line ended with `\n` (or the file was empty).
    trailing_newline: bool,
    entries: Vec<SubIdEntry>,
    bad_lines: Vec<BadLine>,
}

impl SubIdFile {
    /// Parses `bytes` read from `path` (the path is only used in messages).
    pub fn parse(path: &Path, bytes: &[u8]) -> SubIdFile {
        let mut lines: Vec<Vec<u8>> = bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
        // `a\n` splits into ["a", ""]: the empty tail is the trailing newline, not a line.
        let trailing_newline = lines.last().is_some_and(Vec::is_empty);
        if trailing_newline {
            lines.pop();
        }
        let mut file = SubIdFile {
            path: path.to_path_buf(),
            lines: Vec::new(),
            trailing_newline: trailing_newline || bytes.is_empty(),
            entries: Vec::new(),
            bad_lines: Vec::new(),
        };
        for raw in lines {
            file.push_line(raw);
        }
        file
    }

    /// Reads `path`; a missing file is an empty one.
    pub fn read(path: &Path) -> Result<SubIdFile, SubIdError> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(SubIdFile::parse(path, &bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(SubIdFile::parse(path, b"")),
            Err(cause) => Err(SubIdError::Io {
                action: "read",
                path: path.into(),
                cause,
            }),
        }
    }

    fn push_line(&mut self, raw: Vec<u8>) {
        let number = self.lines.len() + 1;
        match parse_line(&raw) {
            Ok(None) => {}
            Ok(Some((owner, start, count))) => self.entries.push(SubIdEntry {
                owner,
                start,
                count,
                line: number,
            }),
            Err(reason) => self.bad_lines.push(BadLine {
                path: self.path.clone(),
                line: number,
                text: String::from_utf8_lossy(&raw).into_owned(),
                reason,
            }),
        }
        self.lines.push(raw);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every well-formed entry, in file order.
    pub fn entries(&self) -> &[SubIdEntry] {
        &self.entries
    }

    /// Lines that could not be read, for the caller to report (they are kept in the file).
    pub fn bad_lines(&self) -> &[BadLine] {
        &self.bad_lines
    }

    /// The file's bytes: every line as read, then the lines added.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.lines.join(&b'\n');
        if self.trailing_newline && !self.lines.is_empty() {
            out.push(b'\n');
        }
        out
    }

    /// The entries of a user, as Docker matches them: every line whose owner is the user's
    /// name or their uid in decimal, in file order.
    pub fn entries_for(&self, name: &str, uid: u32) -> Vec<&SubIdEntry> {
        let uid = uid.to_string();
        self.entries
            .iter()
            .filter(|e| e.owner == name || e.owner == uid)
            .collect()
    }

    /// Entries of other users that share ids with this user's entries, as (theirs, ours)
    /// pairs: two users whose containers run as the same host ids can reach each other's
    /// files. (Docker 28's `default` can create such an overlap.)
    pub fn overlaps_with_others(&self, name: &str, uid: u32) -> Vec<(&SubIdEntry, &SubIdEntry)> {
        let uid_text = uid.to_string();
        let ours = self.entries_for(name, uid);
        self.entries
            .iter()
            .filter(|e| e.owner != name && e.owner != uid_text)
            .flat_map(|other| {
                ours.iter()
                    .filter(move |mine| mine.overlaps(other.start, other.count))
                    .map(move |mine| (other, *mine))
            })
            .collect()
    }

    /// `100000-165535`: the ids of an entry, for messages.
    pub fn span(e: &SubIdEntry) -> String {
        format!("{}-{}", e.start, last(e.start, e.count))
    }

    /// The user's ranges packed one after another from container id 0, as Docker does.
    /// `None` when the user has no entry.
    pub fn id_map_for(&self, name: &str, uid: u32) -> Result<Option<IdMap>, SubIdError> {
        let mut next = 0u64;
        let mut ranges = Vec::new();
        for e in self.entries_for(name, uid) {
            let container = u32::try_from(next).map_err(|_| SubIdError::Map {
                owner: name.into(),
                path: self.path.clone(),
                cause: MapError::Overflow(IdRange::new(u32::MAX, e.start, e.count)),
            })?;
            ranges.push(IdRange::new(container, e.start, e.count));
            next += e.count as u64;
        }
        if ranges.is_empty() {
            return Ok(None);
        }
        IdMap::new(ranges)
            .map(Some)
            .map_err(|cause| SubIdError::Map {
                owner: name.into(),
                path: self.path.clone(),
                cause,
            })
    }

    /// The first `count` ids at or above `min` that no entry of any user overlaps.
    pub fn first_free(&self, min: u32, count: u32) -> Result<u32, SubIdError> {
        let mut taken: Vec<(u64, u64)> = self
            .entries
            .iter()
            .map(|e| (e.start as u64, e.end()))
            .collect();
        taken.sort_unstable();
        let mut candidate = min as u64;
        for (start, end) in taken {
            if end <= candidate {
                continue;
            }
            if start >= candidate + count as u64 {
                break;
            }
            candidate = end;
        }
        // The largest id is u32::MAX - 1: (u32)-1 means "no id" to the kernel.
        if count == 0 || candidate + count as u64 > u32::MAX as u64 {
            return Err(SubIdError::Full {
                count,
                min,
                path: self.path.clone(),
            });
        }
        Ok(candidate as u32)
    }

    /// Appends `owner:start:count`, refusing a range that overlaps any existing entry.
    pub fn add(&mut self, owner: &str, start: u32, count: u32) -> Result<(), SubIdError> {
        if count == 0 || start as u64 + count as u64 > u32::MAX as u64 {
            return Err(SubIdError::BadRange {
                owner: owner.into(),
                start,
                count,
            });
        }
        if let Some(e) = self.entries.iter().find(|e| e.overlaps(start, count)) {
            return Err(SubIdError::Overlap {
                owner: owner.into(),
                start,
                count,
                other: e.owner.clone(),
                other_start: e.start,
                other_count: e.count,
                path: self.path.clone(),
                line: e.line,
            });
        }
        // A last line without its newline gets one, so the new entry is a line of its own.
        self.trailing_newline = true;
        self.push_line(format!("{owner}:{start}:{count}").into_bytes());
        Ok(())
    }

    /// Reads `path` under an exclusive lock, lets `change` edit it, and writes it back
    /// atomically (same mode and owner) if `change` returns true. A missing file is created
    /// (empty, mode 0644) first: the lock needs a file to hold.
    pub fn update<T>(
        path: &Path,
        change: impl FnOnce(&mut SubIdFile) -> Result<(T, bool), SubIdError>,
    ) -> Result<T, SubIdError> {
        let io_err = |action, cause| SubIdError::Io {
            action,
            path: path.into(),
            cause,
        };
        // Our flock (berth's writers), then shadow's lock (`usermod --add-subuids`), then a
        // check that shadow did not replace the file before we got its lock.
        let (mut locked, _shadow) = loop {
            let locked = LockedFile::open(path, Some(NEW_FILE_MODE))
                .map_err(|e| io_err("lock", e))?
                .expect("created when missing");
            let shadow =
                ShadowLock::acquire(path, SHADOW_LOCK_PATIENCE).map_err(|e| io_err("lock", e))?;
            if locked.is_current().map_err(|e| io_err("lock", e))? {
                break (locked, shadow);
            }
        };
        let bytes = locked.read_all().map_err(|e| io_err("read", e))?;
        let mut file = SubIdFile::parse(path, &bytes);
        let (value, changed) = change(&mut file)?;
        if changed {
            locked
                .replace(&file.to_bytes())
                .map_err(|e| io_err("write", e))?;
        }
        Ok(value)
    }
}

impl fmt::Display for SubIdEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.owner, self.start, self.count)
    }
}

/// `Ok(None)` for a comment or blank line, the entry for a good one, the reason otherwise.
/// Surrounding whitespace is ignored, as Docker does.
fn parse_line(raw: &[u8]) -> Result<Option<(String, u32, u32)>, &'static str> {
    let text = std::str::from_utf8(raw).map_err(|_| "not UTF-8")?.trim();
    if text.is_empty() || text.starts_with('#') {
        return Ok(None);
    }
    let parts: Vec<&str> = text.split(':').collect();
    let [owner, start, count] = parts[..] else {
        return Err("expected NAME:START:COUNT");
    };
    if owner.is_empty() || owner.contains(char::is_whitespace) {
        return Err("bad user name");
    }
    let start: u32 = start
        .parse()
        .map_err(|_| "start is not a number from 0 to 4294967294")?;
    let count: u32 = count
        .parse()
        .map_err(|_| "count is not a number from 1 to 4294967295")?;
    if count == 0 {
        return Err("count is 0");
    }
    if start as u64 + count as u64 > u32::MAX as u64 {
        return Err("range runs past id 4294967294");
    }
    Ok(Some((owner.to_string(), start, count)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str =
        "# subordinate ids\n\nalice:100000:65536\n1001:300000:10\nbob:x:1\nalice:200000:1000\n  \n";

    #[test]
    fn parses_entries_keeps_comments_and_reports_bad_lines() {
        let f = SubIdFile::parse(Path::new("/etc/subuid"), SAMPLE.as_bytes());
        assert_eq!(f.entries().len(), 3);
        assert_eq!(f.bad_lines().len(), 1);
        assert_eq!(
            f.bad_lines()[0].to_string(),
            "/etc/subuid line 5: start is not a number from 0 to 4294967294: \"bob:x:1\""
        );
        assert_eq!(f.to_bytes(), SAMPLE.as_bytes());
    }

    #[test]
    fn lookup_by_name_and_uid_packs_ranges_from_zero() {
        let f = SubIdFile::parse(Path::new("/etc/subuid"), SAMPLE.as_bytes());
        let m = f.id_map_for("alice", 1001).unwrap().unwrap();
        assert_eq!(
            m.to_proc_text(),
            "0 100000 65536\n65536 300000 10\n65546 200000 1000\n"
        );
        assert_eq!(f.id_map_for("carol", 1002).unwrap(), None);
    }

    #[test]
    fn overlapping_ranges_of_one_user_are_an_error() {
        let f = SubIdFile::parse(Path::new("/etc/subuid"), b"a:100:10\na:105:10\n");
        let e = f.id_map_for("a", 5).unwrap_err();
        assert!(e.to_string().contains("ranges of a in /etc/subuid"), "{e}");
    }

    #[test]
    fn finds_overlaps_with_other_users() {
        let f = SubIdFile::parse(
            Path::new("s"),
            b"alice:100000:65536\ndockremap:100000:65536\n999:160000:10\nbob:300000:5\n",
        );
        let o = f.overlaps_with_others("dockremap", 999);
        assert_eq!(o.len(), 2);
        assert_eq!((o[0].0.owner.as_str(), o[0].1.line), ("alice", 2));
        assert_eq!((o[1].0.owner.as_str(), o[1].1.line), ("alice", 3));
        assert_eq!(SubIdFile::span(o[0].0), "100000-165535");
        assert!(f.overlaps_with_others("bob", 1001).is_empty());
    }

    #[test]
    fn first_free_avoids_every_user() {
        let f = SubIdFile::parse(Path::new("s"), b"alice:100000:65536\nroot:165536:10\n");
        assert_eq!(f.first_free(100000, 65536).unwrap(), 165546);
        let f = SubIdFile::parse(Path::new("s"), b"alice:1:5\n");
        assert_eq!(f.first_free(100000, 65536).unwrap(), 100000);
        let f = SubIdFile::parse(Path::new("s"), b"alice:4294901760:65535\n");
        assert!(matches!(
            f.first_free(4294900000, 65536),
            Err(SubIdError::Full { .. })
        ));
    }

    #[test]
    fn add_refuses_overlap_naming_the_line() {
        let mut f = SubIdFile::parse(Path::new("/etc/subuid"), b"# x\n\nalice:100000:65536\n");
        let e = f.add("dockremap", 100000, 65536).unwrap_err();
        assert_eq!(
            e.to_string(),
            "range 100000-165535 of dockremap overlaps alice's 100000-165535 in /etc/subuid line 3"
        );
        f.add("dockremap", 165536, 65536).unwrap();
        assert_eq!(
            f.to_bytes(),
            b"# x\n\nalice:100000:65536\ndockremap:165536:65536\n"
        );
    }

    #[test]
    fn add_after_last_line_without_newline() {
        let mut f = SubIdFile::parse(Path::new("s"), b"alice:1:2");
        f.add("bob", 10, 5).unwrap();
        assert_eq!(f.to_bytes(), b"alice:1:2\nbob:10:5\n");
        let mut f = SubIdFile::parse(Path::new("s"), b"");
        f.add("bob", 10, 5).unwrap();
        assert_eq!(f.to_bytes(), b"bob:10:5\n");
    }

    #[test]
    fn update_writes_only_on_change_and_keeps_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("subuid");
        let before = b"#c\r\n\nalice:100000:65536\nbroken line\n";
        std::fs::write(&p, before).unwrap();
        SubIdFile::update(&p, |_| Ok(((), false))).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), before);
        SubIdFile::update(&p, |f| f.add("x", 1, 1).map(|()| ((), true))).unwrap();
        let mut after = before.to_vec();
        after.extend_from_slice(b"x:1:1\n");
        assert_eq!(std::fs::read(&p).unwrap(), after);
    }

    #[test]
    fn concurrent_updates_lose_nothing_and_never_overlap() {
        // Each update renames a new file over the old one; writers queued on the old inode
        // must move on to the new one, or their additions would be lost.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("subuid");
        std::fs::write(&p, "# shared\nalice:100000:65536\n").unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for i in 0..5 {
                        SubIdFile::update(&p, |f| {
                            let start = f.first_free(100000, 1000)?;
                            f.add(&format!("u{t}x{i}"), start, 1000)?;
                            Ok(((), true))
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let f = SubIdFile::read(&p).unwrap();
        assert_eq!(f.entries().len(), 41);
        assert!(f.to_bytes().starts_with(b"# shared\nalice:100000:65536\n"));
        let mut ranges: Vec<_> = f.entries().iter().map(|e| (e.start, e.end())).collect();
        ranges.sort();
        for w in ranges.windows(2) {
            assert!(w[0].1 <= w[1].0 as u64, "{w:?} overlap");
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_and_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let f = SubIdFile::parse(Path::new("s"), &bytes);
            prop_assert_eq!(f.to_bytes(), bytes);
        }

        #[test]
        fn random_lines_never_panic(lines in prop::collection::vec("[a-z0-9:# \t-]{0,30}", 0..20)) {
            let text = lines.join("\n");
            let f = SubIdFile::parse(Path::new("s"), text.as_bytes());
            prop_assert_eq!(f.to_bytes(), text.as_bytes());
            prop_assert_eq!(f.entries().len() + f.bad_lines().len() <= lines.len(), true);
        }

        #[test]
        fn well_formed_files_round_trip(entries in prop::collection::vec(("[a-z_][a-z0-9_-]{0,8}", 0u32..4_000_000_000, 1u32..100_000), 0..20), comment in "#[ -~]{0,20}") {
            let mut text = format!("{comment}\n\n");
            for (name, start, count) in &entries {
                text.push_str(&format!("{name}:{start}:{count}\n"));
            }
            let f = SubIdFile::parse(Path::new("s"), text.as_bytes());
            prop_assert!(f.bad_lines().is_empty());
            prop_assert_eq!(f.entries().len(), entries.len());
            for (e, (name, start, count)) in f.entries().iter().zip(&entries) {
                prop_assert_eq!((&e.owner, e.start, e.count), (name, *start, *count));
            }
            prop_assert_eq!(f.to_bytes(), text.as_bytes());
        }
    }
}
