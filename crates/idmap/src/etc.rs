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

    /// On the host, users and groups the files do not hold are looked up through NSS
    /// (`getent`, so LDAP or sssd accounts work), as Docker does; a copy under another root
    /// is only its files.
    pub fn user_by_name(&self, name: &str) -> io::Result<Option<User>> {
        let found = self.users()?.into_iter().find(|u| u.name == name);
        Ok(found.or_else(|| self.getent("passwd", name).and_then(|f| parse_user(&f))))
    }

    pub fn user_by_uid(&self, uid: u32) -> io::Result<Option<User>> {
        let found = self.users()?.into_iter().find(|u| u.uid == uid);
        Ok(found.or_else(|| {
            self.getent("passwd", &uid.to_string())
                .and_then(|f| parse_user(&f))
        }))
    }

    pub fn group_by_name(&self, name: &str) -> io::Result<Option<Group>> {
        let found = self.groups()?.into_iter().find(|g| g.name == name);
        Ok(found.or_else(|| self.getent("group", name).and_then(|f| parse_group(&f))))
    }

    pub fn group_by_gid(&self, gid: u32) -> io::Result<Option<Group>> {
        let found = self.groups()?.into_iter().find(|g| g.gid == gid);
        Ok(found.or_else(|| {
            self.getent("group", &gid.to_string())
                .and_then(|f| parse_group(&f))
        }))
    }

    /// The fields of `getent DB KEY`'s first line, on the host only. Any failure (no such
    /// entry, no getent) is "not found".
    fn getent(&self, db: &str, key: &str) -> Option<Vec<String>> {
        if !self.is_host() || key.is_empty() || key.starts_with('-') {
            return None;
        }
        let out = std::process::Command::new("getent")
            .args([db, key])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().next()?;
        Some(line.split(':').map(str::to_string).collect())
    }

    /// Every well-formed line of the passwd file (`name:pw:uid:gid:...`); others are skipped.
    fn users(&self) -> io::Result<Vec<User>> {
        Ok(read_colon_file(&self.passwd())?
            .iter()
            .filter_map(|f| parse_user(f))
            .collect())
    }

    /// Every well-formed line of the group file (`name:pw:gid:members`).
    fn groups(&self) -> io::Result<Vec<Group>> {
        Ok(read_colon_file(&self.group())?
            .iter()
            .filter_map(|f| parse_group(f))
            .collect())
    }
}

fn parse_user(f: &[String]) -> Option<User> {
    Some(User {
        name: f.first().filter(|n| !n.is_empty())?.to_string(),
        uid: f.get(2)?.parse().ok()?,
        gid: f.get(3)?.parse().ok()?,
    })
}

fn parse_group(f: &[String]) -> Option<Group> {
    Some(Group {
        name: f.first().filter(|n| !n.is_empty())?.to_string(),
        gid: f.get(2)?.parse().ok()?,
    })
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
        // A copy never asks NSS: what its files lack does not exist.
        assert_eq!(etc.user_by_name("nobody").unwrap(), None);
        assert!(EtcFiles::host().is_host());
        assert_eq!(parse_user(&["x".into(), "x".into(), "5".into()]), None);
        assert_eq!(parse_group(&["".into(), "x".into(), "5".into()]), None);
    }
}
