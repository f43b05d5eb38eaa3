//! `--userns-remap` specs: which host user's subordinate ids container root is mapped to.
//!
//! Follows Docker (daemon `parseRemappedRoot` and `idtools.LoadIdentityMapping`): `default`
//! means the `dockremap` user, created when missing; `root` or uid 0 means remapping is off;
//! both maps come from the user's entries (by name or uid) in `/etc/subuid` and
//! `/etc/subgid`. Unlike Docker 28, `default` picks a range that no user's entry overlaps.

use std::fmt;
use std::io;
use std::process::Command;
use std::str::FromStr;

use crate::atomic::LockedFile;
use crate::etc::{EtcFiles, Group, User};
use crate::map::UsernsMaps;
use crate::subid::{SubIdError, SubIdFile};

/// The user `default` stands for.
pub const DEFAULT_REMAP_USER: &str = "dockremap";
/// Where the `default` user's range starts at the earliest, and its size (Docker's values).
pub const DEFAULT_RANGE_MIN: u32 = 100_000;
pub const DEFAULT_RANGE_SIZE: u32 = 65_536;

/// A user or group as given: a name or a numeric id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSpec {
    Name(String),
    Id(u32),
}

/// A parsed `--userns-remap` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemapSpec {
    /// `default`: the `dockremap` user and group, created when missing.
    Default,
    /// `USER`, `USER:GROUP`, `UID`, `UID:GID` (or a mix).
    User { user: IdSpec, group: Option<IdSpec> },
}

/// The resolved remap user: whose ranges, and the maps every container gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemapUser {
    pub user: String,
    pub uid: u32,
    pub group: String,
    pub gid: u32,
    pub maps: UsernsMaps,
}

impl RemapUser {
    /// `user:group`, the form Docker stores and shows for the setting.
    pub fn remapped_root(&self) -> String {
        format!("{}:{}", self.user, self.group)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemapError {
    #[error(
        "invalid --userns-remap value {0:?}: expected default, USER, USER:GROUP, UID or UID:GID"
    )]
    Spec(String),
    #[error("--userns-remap: no user {0} in {1}; create it or pick another user")]
    NoUser(String, String),
    #[error("--userns-remap: no group {0} in {1}; create it or pick another group")]
    NoGroup(String, String),
    #[error(
        "--userns-remap: user {user} has no subordinate ids in {files}; add them with \
         `usermod {fix} {user}`"
    )]
    NoRanges {
        user: String,
        files: String,
        fix: String,
    },
    #[error(
        "--userns-remap: cannot create the {DEFAULT_REMAP_USER} user: `{command}` failed: {detail}"
    )]
    CreateUser { command: String, detail: String },
    #[error("--userns-remap: cannot read {file}: {cause}")]
    Io { file: String, cause: io::Error },
    #[error("--userns-remap: {0}")]
    SubId(SubIdError),
}

// By hand rather than `#[from]`: the message already holds the cause, and a `source()`
// would make error reporters print it twice.
impl From<SubIdError> for RemapError {
    fn from(e: SubIdError) -> Self {
        RemapError::SubId(e)
    }
}

impl FromStr for RemapSpec {
    type Err = RemapError;

    fn from_str(s: &str) -> Result<Self, RemapError> {
        let bad = || RemapError::Spec(s.to_string());
        let id = |part: &str| -> Result<IdSpec, RemapError> {
            if part.is_empty() || part.contains(char::is_whitespace) {
                return Err(bad());
            }
            Ok(match part.parse::<u32>() {
                Ok(n) => IdSpec::Id(n),
                Err(_) if part.bytes().all(|b| b.is_ascii_digit()) => return Err(bad()),
                Err(_) => IdSpec::Name(part.to_string()),
            })
        };
        let parts: Vec<&str> = s.split(':').collect();
        match parts[..] {
            ["default"] => Ok(RemapSpec::Default),
            [user] => Ok(RemapSpec::User {
                user: id(user)?,
                group: None,
            }),
            [user, group] => Ok(RemapSpec::User {
                user: id(user)?,
                group: Some(id(group)?),
            }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for IdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdSpec::Name(n) => f.write_str(n),
            IdSpec::Id(n) => write!(f, "{n}"),
        }
    }
}

/// Creates system users and groups. [`SystemTools`] runs shadow's `groupadd`/`useradd`;
/// tests may substitute their own.
pub trait UserCreator {
    fn add_system_group(&self, etc: &EtcFiles, name: &str) -> Result<(), RemapError>;
    fn add_system_user(&self, etc: &EtcFiles, name: &str, group: &str) -> Result<(), RemapError>;
}

/// shadow's `groupadd --system` and `useradd --system`, with `--prefix ROOT` when the etc
/// root is not `/` (so they edit the copies under ROOT/etc).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemTools;

impl SystemTools {
    fn run(etc: &EtcFiles, tool: &str, args: &[&str]) -> Result<(), RemapError> {
        let mut cmd = Command::new(tool);
        if !etc.is_host() {
            cmd.arg("--prefix").arg(&etc.root);
        }
        cmd.args(args);
        let shown = format!("{cmd:?}").replace('"', "");
        let out = cmd.output().map_err(|e| RemapError::CreateUser {
            command: shown.clone(),
            detail: format!("{e} (is the passwd package installed?)"),
        })?;
        if out.status.success() {
            return Ok(());
        }
        Err(RemapError::CreateUser {
            command: shown,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

impl UserCreator for SystemTools {
    fn add_system_group(&self, etc: &EtcFiles, name: &str) -> Result<(), RemapError> {
        SystemTools::run(etc, "groupadd", &["--system", name])
    }

    fn add_system_user(&self, etc: &EtcFiles, name: &str, group: &str) -> Result<(), RemapError> {
        // No home directory, no login shell: the user exists only to own subordinate ids.
        SystemTools::run(
            etc,
            "useradd",
            &[
                "--system",
                "--gid",
                group,
                "--no-create-home",
                "--shell",
                "/bin/false",
                name,
            ],
        )
    }
}

/// Resolves a spec against the account files under `etc`, creating `dockremap` and its
/// ranges for `default`. `Ok(None)` means remapping is off (`root`, uid 0).
pub fn resolve(
    spec: &RemapSpec,
    etc: &EtcFiles,
    creator: &dyn UserCreator,
) -> Result<Option<RemapUser>, RemapError> {
    let (user, group) = match spec {
        RemapSpec::Default => ensure_default_user(etc, creator)?,
        RemapSpec::User { user, group } => {
            let user = find_user(etc, user)?;
            if user.uid == 0 {
                // Docker's message and behaviour: a 1-to-1 map of root is no remap at all.
                tracing::warn!(
                    "User namespaces: root cannot be remapped with itself; user namespaces are OFF"
                );
                return Ok(None);
            }
            let group = match group {
                Some(g) => find_group(etc, g)?,
                // Docker takes the group named like the user; its primary group is the
                // sensible answer when there is none.
                None => match lookup(etc.group_by_name(&user.name), etc.group().display())? {
                    Some(g) => g,
                    None => find_group(etc, &IdSpec::Id(user.gid))?,
                },
            };
            (user, group)
        }
    };
    let (uid, uid_free) = load_map(&etc.subuid(), &user)?;
    let (gid, gid_free) = load_map(&etc.subgid(), &user)?;
    let (uid, gid) = match (uid, gid) {
        (Some(uid), Some(gid)) => (uid, gid),
        (uid, gid) => {
            // Say exactly what is missing, with free ranges to add.
            let mut files = Vec::new();
            let mut fix = Vec::new();
            let span =
                |start: u32| format!("{start}-{}", start as u64 + DEFAULT_RANGE_SIZE as u64 - 1);
            if uid.is_none() {
                files.push(etc.subuid().display().to_string());
                fix.push(format!("--add-subuids {}", span(uid_free)));
            }
            if gid.is_none() {
                files.push(etc.subgid().display().to_string());
                fix.push(format!("--add-subgids {}", span(gid_free)));
            }
            return Err(RemapError::NoRanges {
                user: user.name,
                files: files.join(" and "),
                fix: fix.join(" "),
            });
        }
    };
    tracing::info!(
        "User namespaces: ID ranges will be mapped to subuid/subgid ranges of: {}",
        user.name
    );
    Ok(Some(RemapUser {
        user: user.name,
        uid: user.uid,
        group: group.name,
        gid: group.gid,
        maps: UsernsMaps { uid, gid },
    }))
}

/// [`resolve`] of a spec given as text, with the system's tools.
pub fn resolve_str(spec: &str, etc: &EtcFiles) -> Result<Option<RemapUser>, RemapError> {
    resolve(&spec.parse()?, etc, &SystemTools)
}

fn lookup<T>(r: io::Result<T>, file: impl fmt::Display) -> Result<T, RemapError> {
    r.map_err(|cause| RemapError::Io {
        file: file.to_string(),
        cause,
    })
}

fn find_user(etc: &EtcFiles, spec: &IdSpec) -> Result<User, RemapError> {
    let file = etc.passwd().display().to_string();
    let found = match spec {
        IdSpec::Name(n) => lookup(etc.user_by_name(n), &file)?,
        IdSpec::Id(n) => lookup(etc.user_by_uid(*n), &file)?,
    };
    found.ok_or_else(|| RemapError::NoUser(spec.to_string(), file))
}

fn find_group(etc: &EtcFiles, spec: &IdSpec) -> Result<Group, RemapError> {
    let file = etc.group().display().to_string();
    let found = match spec {
        IdSpec::Name(n) => lookup(etc.group_by_name(n), &file)?,
        IdSpec::Id(n) => lookup(etc.group_by_gid(*n), &file)?,
    };
    found.ok_or_else(|| RemapError::NoGroup(spec.to_string(), file))
}

/// Makes sure the `dockremap` group and user exist and own a range in both files.
/// Each step only happens when missing, so a second run changes nothing.
fn ensure_default_user(
    etc: &EtcFiles,
    creator: &dyn UserCreator,
) -> Result<(User, Group), RemapError> {
    let name = DEFAULT_REMAP_USER;
    let group_file = etc.group().display().to_string();
    let passwd_file = etc.passwd().display().to_string();
    let missing = |etc: &EtcFiles| -> Result<(bool, bool), RemapError> {
        Ok((
            lookup(etc.group_by_name(name), &group_file)?.is_none(),
            lookup(etc.user_by_name(name), &passwd_file)?.is_none(),
        ))
    };
    if missing(etc)? != (false, false) {
        // One creator at a time among berth processes: a second `useradd` running while the
        // first holds shadow's lock would fail. The flock is on the passwd file itself;
        // `useradd` renames a new one into place, which `LockedFile` copes with.
        let _lock = LockedFile::open(&etc.passwd(), None).map_err(|cause| RemapError::Io {
            file: passwd_file.clone(),
            cause,
        })?;
        let (no_group, no_user) = missing(etc)?;
        if no_group {
            tracing::info!("creating system group {name} for --userns-remap=default");
            creator.add_system_group(etc, name)?;
        }
        if no_user {
            tracing::info!("creating system user {name} for --userns-remap=default");
            creator.add_system_user(etc, name, name)?;
        }
    }
    let user = find_user(etc, &IdSpec::Name(name.into()))?;
    let group = find_group(etc, &IdSpec::Name(name.into()))?;
    for path in [etc.subuid(), etc.subgid()] {
        SubIdFile::update(&path, |f| {
            if !f.entries_for(&user.name, user.uid).is_empty() {
                return Ok(((), false));
            }
            let start = f.first_free(DEFAULT_RANGE_MIN, DEFAULT_RANGE_SIZE)?;
            tracing::info!(
                "giving {name} ids {start}+{DEFAULT_RANGE_SIZE} in {}",
                path.display()
            );
            f.add(name, start, DEFAULT_RANGE_SIZE)?;
            Ok(((), true))
        })?;
    }
    Ok((user, group))
}

/// The user's map from one subid file (`None`: no entry), and the first free range there
/// to suggest when there is none. Bad lines and shared ids are logged.
fn load_map(
    path: &std::path::Path,
    user: &User,
) -> Result<(Option<crate::map::IdMap>, u32), RemapError> {
    let file = SubIdFile::read(path)?;
    for bad in file.bad_lines() {
        tracing::warn!("skipping {bad}");
    }
    for (other, mine) in file.overlaps_with_others(&user.name, user.uid) {
        tracing::warn!(
            "{}'s ids {} ({} line {}) are also {}'s ({} line {}): their processes and berth's containers share host ids",
            user.name,
            SubIdFile::span(mine),
            path.display(),
            mine.line,
            other.owner,
            SubIdFile::span(other),
            other.line
        );
    }
    let map = file.id_map_for(&user.name, user.uid)?;
    if let Some(map) = &map {
        if map.len() < DEFAULT_RANGE_SIZE as u64 {
            tracing::warn!(
                "{} has only {} subordinate ids in {}: files owned by ids up to 65535 in images (such as nobody, 65534) will show as unmapped",
                user.name,
                map.len(),
                path.display()
            );
        }
    }
    let free = file
        .first_free(DEFAULT_RANGE_MIN, DEFAULT_RANGE_SIZE)
        .unwrap_or(DEFAULT_RANGE_MIN);
    Ok((map, free))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::fs;

    /// Appends to the copies under the root, and counts its calls.
    #[derive(Default)]
    struct FakeCreator {
        calls: Cell<u32>,
    }

    impl UserCreator for FakeCreator {
        fn add_system_group(&self, etc: &EtcFiles, name: &str) -> Result<(), RemapError> {
            self.calls.set(self.calls.get() + 1);
            let mut g = fs::read_to_string(etc.group()).unwrap();
            g.push_str(&format!("{name}:x:990:\n"));
            fs::write(etc.group(), g).unwrap();
            Ok(())
        }
        fn add_system_user(
            &self,
            etc: &EtcFiles,
            name: &str,
            _group: &str,
        ) -> Result<(), RemapError> {
            self.calls.set(self.calls.get() + 1);
            let mut p = fs::read_to_string(etc.passwd()).unwrap();
            p.push_str(&format!("{name}:x:990:990::/:/bin/false\n"));
            fs::write(etc.passwd(), p).unwrap();
            Ok(())
        }
    }

    fn etc_root(subuid: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:1001::/:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nalice:x:1000:\nbob:x:1001:\nstaff:x:50:\n",
        )
        .unwrap();
        if let Some(s) = subuid {
            fs::write(dir.path().join("etc/subuid"), s).unwrap();
            fs::write(dir.path().join("etc/subgid"), s).unwrap();
        }
        dir
    }

    #[test]
    fn parses_specs() {
        let name = |s: &str| IdSpec::Name(s.into());
        assert_eq!("default".parse::<RemapSpec>().unwrap(), RemapSpec::Default);
        assert_eq!(
            "alice".parse::<RemapSpec>().unwrap(),
            RemapSpec::User {
                user: name("alice"),
                group: None
            }
        );
        assert_eq!(
            "1000:staff".parse::<RemapSpec>().unwrap(),
            RemapSpec::User {
                user: IdSpec::Id(1000),
                group: Some(name("staff"))
            }
        );
        for bad in ["", "a:b:c", ":x", "x:", "99999999999", "a b"] {
            let e = bad.parse::<RemapSpec>().unwrap_err();
            assert!(
                e.to_string().starts_with("invalid --userns-remap value"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn root_means_off() {
        let dir = etc_root(Some("root:100000:65536\n"));
        let etc = EtcFiles::new(dir.path());
        for spec in ["root", "0", "0:0", "root:staff"] {
            assert_eq!(
                resolve(&spec.parse().unwrap(), &etc, &FakeCreator::default()).unwrap(),
                None
            );
        }
    }

    #[test]
    fn named_users_and_groups_resolve() {
        let dir = etc_root(Some("alice:100000:65536\n1000:300000:1000\n"));
        let etc = EtcFiles::new(dir.path());
        let creator = FakeCreator::default();
        let r = resolve(&"alice".parse().unwrap(), &etc, &creator)
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.user.as_str(), r.uid, r.group.as_str(), r.gid),
            ("alice", 1000, "alice", 1000)
        );
        assert_eq!(
            r.maps.uid.to_proc_text(),
            "0 100000 65536\n65536 300000 1000\n"
        );
        assert_eq!(r.maps.gid, r.maps.uid);
        assert_eq!(r.remapped_root(), "alice:alice");
        let r = resolve(&"1000:50".parse().unwrap(), &etc, &creator)
            .unwrap()
            .unwrap();
        assert_eq!((r.user.as_str(), r.group.as_str()), ("alice", "staff"));
        assert_eq!(creator.calls.get(), 0, "only `default` creates users");
    }

    #[test]
    fn user_without_ranges_says_how_to_add_them() {
        let dir = etc_root(Some("alice:100000:65536\n"));
        let etc = EtcFiles::new(dir.path());
        let e = resolve(&"bob".parse().unwrap(), &etc, &FakeCreator::default()).unwrap_err();
        assert!(
            e.to_string().contains(
                "user bob has no subordinate ids in ROOT/etc/subuid and ROOT/etc/subgid; add \
                 them with `usermod --add-subuids 165536-231071 --add-subgids 165536-231071 bob`"
                    .replace("ROOT", &dir.path().display().to_string())
                    .as_str()
            ),
            "{e}"
        );
        // Only what is missing is asked for.
        fs::write(etc.subuid(), "alice:100000:65536\nbob:200000:65536\n").unwrap();
        let e = resolve(&"bob".parse().unwrap(), &etc, &FakeCreator::default()).unwrap_err();
        assert!(
            e.to_string().ends_with(&format!(
                "no subordinate ids in {}; add them with `usermod --add-subgids 165536-231071 bob`",
                etc.subgid().display()
            )),
            "{e}"
        );
        let e = resolve(&"carol".parse().unwrap(), &etc, &FakeCreator::default()).unwrap_err();
        assert!(e.to_string().contains("no user carol in"), "{e}");
        let e = resolve(
            &"alice:nogroup".parse().unwrap(),
            &etc,
            &FakeCreator::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no group nogroup in"), "{e}");
    }

    #[test]
    fn default_with_fake_creator_avoids_other_users_and_is_idempotent() {
        let dir = etc_root(Some("# keep me\nalice:100000:65536\n"));
        let etc = EtcFiles::new(dir.path());
        let creator = FakeCreator::default();
        let r = resolve(&RemapSpec::Default, &etc, &creator)
            .unwrap()
            .unwrap();
        assert_eq!(creator.calls.get(), 2);
        assert_eq!(r.remapped_root(), "dockremap:dockremap");
        assert_eq!(r.maps, UsernsMaps::single(165536, 65536).unwrap());
        let subuid = fs::read(etc.subuid()).unwrap();
        assert_eq!(
            subuid,
            b"# keep me\nalice:100000:65536\ndockremap:165536:65536\n"
        );
        let again = resolve(&RemapSpec::Default, &etc, &creator)
            .unwrap()
            .unwrap();
        assert_eq!(again, r);
        assert_eq!(creator.calls.get(), 2);
        assert_eq!(fs::read(etc.subuid()).unwrap(), subuid);
    }
}
