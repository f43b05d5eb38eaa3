//! The host's account files, under a root that tests point at temporary copies.

use std::io;
use std::path::{Path, PathBuf};

/// Where the account files live: `ROOT/etc/passwd`, `ROOT/etc/group`, `ROOT/etc/subuid`,
/// `ROOT/etc/subgid`. The host is `EtcFiles::host()` (root `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    pub root: PathBuf,
}

/// A `passwd` entry (the fields berth needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// A `group` entry (the fields berth needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
}

impl EtcFiles {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        EtcFiles { root: root.into() }
    }

    /// The real host files.
    pub fn host() -> Self {
        EtcFiles::new("/")
    }

    pub fn is_host(&self) -> bool {
        self.root == Path::new("/")
    }

    pub fn passwd(&self) -> PathBuf {
        self.root.join("etc/passwd")
    }

    pub fn group(&self) -> PathBuf {
        self.root.join("etc/group")
    }

    pub fn subuid(&self) -> PathBuf {
        self.root.join("etc/subuid")
    }

    pub fn subgid(&self) -> PathBuf {
        self.root.join("etc/subgid")
    }

    pub fn user_by_name(&self, name: &str) -> io::Result<Option<User>> {
        Ok(self.users()?.into_iter().find(|u| u.name == name))
    }

    pub fn user_by_uid(&self, uid: u32) -> io::Result<Option<User>> {
        Ok(self.users()?.into_iter().find(|u| u.uid == uid))
    }

    pub fn group_by_name(&self, name: &str) -> io::Result<Option<Group>> {
        Ok(self.groups()?.into_iter().find(|g| g.name == name))
    }

    pub fn group_by_gid(&self, gid: u32) -> io::Result<Option<Group>> {
        Ok(self.groups()?.into_iter().find(|g| g.gid == gid))
    }

    /// Every well-formed line of the passwd file (`name:pw:uid:gid:...`); others are skipped.
    fn users(&self) -> io::Result<Vec<User>> {
        Ok(read_colon_file(&self.passwd())?
            .into_iter()
            .filter_map(|f| {
                Some(User {
                    name: f.first()?.to_string(),
                    uid: f.get(2)?.parse().ok()?,
                    gid: f.get(3)?.parse().ok()?,
                })
            })
            .collect())
    }

    /// Every well-formed line of the group file (`name:pw:gid:members`).
    fn groups(&self) -> io::Result<Vec<Group>> {
        Ok(read_colon_file(&self.group())?
            .into_iter()
            .filter_map(|f| {
                Some(Group {
                    name: f.first()?.to_string(),
                    gid: f.get(2)?.parse().ok()?,
                })
            })
            .collect())
    }
}

/// The colon-separated fields of each line that is not blank or a comment. A missing file
/// has no lines.
fn read_colon_file(path: &Path) -> io::Result<Vec<Vec<String>>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_users_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbroken\nalice:x:1000:1001::/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nstaff:x:1001:alice\n",
        )
        .unwrap();
        let etc = EtcFiles::new(dir.path());
        assert_eq!(etc.user_by_name("alice").unwrap().unwrap().uid, 1000);
        assert_eq!(etc.user_by_uid(0).unwrap().unwrap().name, "root");
        assert_eq!(etc.user_by_name("bob").unwrap(), None);
        assert_eq!(etc.group_by_gid(1001).unwrap().unwrap().name, "staff");
        assert_eq!(etc.group_by_name("staff").unwrap().unwrap().gid, 1001);
        assert!(!etc.is_host());
        assert!(EtcFiles::host().is_host());
    }
}
