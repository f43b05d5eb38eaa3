//! `--userns-remap=default` with shadow's real `groupadd`/`useradd`, run with `--prefix` on
//! temporary copies of the account files (never the host's /etc).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use berth_idmap::{resolve, EtcFiles, RemapSpec, SystemTools, UsernsMaps};

/// A fresh etc root with a few users; `subids` goes into both subuid and subgid when given.
fn etc_root(subids: Option<&str>) -> tempfile::TempDir {
    let dir = berth_testkit::tempdir("berth-idmap-etc");
    let etc = dir.path().join("etc");
    fs::create_dir(&etc).unwrap();
    fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
         alice:x:1000:1000:Alice:/home/alice:/bin/bash\n",
    )
    .unwrap();
    fs::write(etc.join("group"), "root:x:0:\ndaemon:x:1:\nalice:x:1000:\n").unwrap();
    fs::write(
        etc.join("shadow"),
        "root:*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\nalice:!:20000:0:99999:7:::\n",
    )
    .unwrap();
    fs::write(etc.join("gshadow"), "root:*::\ndaemon:*::\nalice:!::\n").unwrap();
    for f in ["shadow", "gshadow"] {
        fs::set_permissions(etc.join(f), fs::Permissions::from_mode(0o640)).unwrap();
    }
    if let Some(s) = subids {
        fs::write(etc.join("subuid"), s).unwrap();
        fs::write(etc.join("subgid"), s).unwrap();
    }
    dir
}

/// Every file under ROOT/etc with its bytes and mode.
fn snapshot(root: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    fs::read_dir(root.join("etc"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let mode = e.metadata().unwrap().permissions().mode();
            (
                e.file_name().to_string_lossy().into_owned(),
                (fs::read(e.path()).unwrap(), mode),
            )
        })
        .collect()
}

#[test]
fn default_creates_dockremap_past_another_users_range() {
    berth_testkit::require_root();
    let dir = etc_root(Some("# subordinate ids\n\nalice:100000:65536\n"));
    let etc = EtcFiles::new(dir.path());
    let r = resolve(&RemapSpec::Default, &etc, &SystemTools)
        .unwrap()
        .unwrap();
    assert_eq!(r.user, "dockremap");
    assert_eq!(r.group, "dockremap");
    assert_eq!(r.maps, UsernsMaps::single(165536, 65536).unwrap());
    assert_eq!(r.maps.uid.to_proc_text(), "0 165536 65536\n");
    let user = etc.user_by_name("dockremap").unwrap().unwrap();
    assert_eq!(user.uid, r.uid);
    assert!(user.uid < 1000, "a system user: {user:?}");
    assert_eq!(etc.group_by_name("dockremap").unwrap().unwrap().gid, r.gid);
    for f in [etc.subuid(), etc.subgid()] {
        assert_eq!(
            fs::read_to_string(f).unwrap(),
            "# subordinate ids\n\nalice:100000:65536\ndockremap:165536:65536\n"
        );
    }
    // Nothing written outside the copy's etc (no home directory, no stray files).
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn default_is_idempotent_byte_for_byte() {
    berth_testkit::require_root();
    let dir = etc_root(Some("alice:100000:65536\n"));
    let etc = EtcFiles::new(dir.path());
    let first = resolve(&RemapSpec::Default, &etc, &SystemTools).unwrap();
    let before = snapshot(dir.path());
    let second = resolve(&RemapSpec::Default, &etc, &SystemTools).unwrap();
    assert_eq!(first, second);
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn default_creates_missing_subid_files() {
    berth_testkit::require_root();
    let dir = etc_root(None);
    let etc = EtcFiles::new(dir.path());
    let r = resolve(&RemapSpec::Default, &etc, &SystemTools)
        .unwrap()
        .unwrap();
    assert_eq!(r.maps, UsernsMaps::single(100000, 65536).unwrap());
    for f in [etc.subuid(), etc.subgid()] {
        assert_eq!(fs::read_to_string(&f).unwrap(), "dockremap:100000:65536\n");
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
            0o644
        );
    }
}

#[test]
fn default_keeps_an_existing_dockremap_and_adds_only_missing_ranges() {
    berth_testkit::require_root();
    // dockremap exists with a uid range but no gid range; alice holds 100000+ in subgid.
    let dir = etc_root(None);
    let etc = EtcFiles::new(dir.path());
    fs::write(etc.subuid(), "dockremap:500000:65536\n").unwrap();
    fs::write(etc.subgid(), "alice:100000:65536\n").unwrap();
    let r = resolve(&RemapSpec::Default, &etc, &SystemTools)
        .unwrap()
        .unwrap();
    assert_eq!(r.maps.uid.to_proc_text(), "0 500000 65536\n");
    assert_eq!(r.maps.gid.to_proc_text(), "0 165536 65536\n");
    assert_eq!(
        fs::read_to_string(etc.subuid()).unwrap(),
        "dockremap:500000:65536\n"
    );
}

#[test]
fn default_from_many_threads_creates_one_user_and_one_range() {
    berth_testkit::require_root();
    let dir = etc_root(Some("alice:100000:65536\n"));
    let root = dir.path().to_path_buf();
    let results: Vec<_> = (0..4)
        .map(|_| {
            let etc = EtcFiles::new(&root);
            std::thread::spawn(move || resolve(&RemapSpec::Default, &etc, &SystemTools).unwrap())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert_eq!(
        passwd
            .lines()
            .filter(|l| l.starts_with("dockremap:"))
            .count(),
        1
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/subuid")).unwrap(),
        "alice:100000:65536\ndockremap:165536:65536\n"
    );
}
