//! The hardened unpacker against a corpus of hostile tarballs built here. Each case unpacks
//! into `<tmp>/layer` next to `<tmp>/outside`, and checks that nothing outside `layer`
//! changed. Root: owners, device whiteouts and trusted xattrs need it.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_image::{unpack, UnpackError, UnpackLimits};
use tar::{Builder, EntryType, Header};

struct Case {
    _tmp: tempfile::TempDir,
    top: PathBuf,
    layer: PathBuf,
    outside: PathBuf,
}

impl Case {
    fn new() -> Case {
        berth_testkit::require_root();
        let tmp = berth_testkit::tempdir("berth-unpack-");
        let top = tmp.path().to_path_buf();
        let layer = top.join("layer");
        let outside = top.join("outside");
        fs::create_dir(&layer).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), "keep me").unwrap();
        Case {
            _tmp: tmp,
            top,
            layer,
            outside,
        }
    }

    /// Everything under `top` except `layer`: names, kinds, sizes, contents, modes, owners.
    fn outside_state(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        walk(&self.top, &self.layer, &mut out);
        out
    }

    fn run(&self, tar: Vec<u8>, limits: &UnpackLimits) -> Result<(), UnpackError> {
        let before = self.outside_state();
        let r = unpack(&tar[..], &self.layer, limits).map(|_| ());
        assert_eq!(
            before,
            self.outside_state(),
            "something outside the layer changed"
        );
        r
    }
}

fn walk(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, String>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p == skip {
            continue;
        }
        let m = fs::symlink_metadata(&p).unwrap();
        let content = if m.is_file() {
            fs::read_to_string(&p).unwrap_or_default()
        } else {
            String::new()
        };
        out.insert(
            p.clone(),
            format!(
                "{:o} {}:{} {} {}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.len(),
                content
            ),
        );
        if m.is_dir() {
            walk(&p, skip, out);
        }
    }
}

/// A header with raw name and link bytes, so that names the tar crate refuses to write
/// (`..`, absolute) can be built.
fn raw(
    b: &mut Builder<Vec<u8>>,
    kind: EntryType,
    name: &[u8],
    link: &[u8],
    data: &[u8],
    mode: u32,
) {
    let mut h = Header::new_gnu();
    {
        let g = h.as_gnu_mut().unwrap();
        g.name[..name.len()].copy_from_slice(name);
        g.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_000_000);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn tar_of(f: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = Builder::new(Vec::new());
    f(&mut b);
    b.into_inner().unwrap()
}

fn rejected(r: Result<(), UnpackError>, entry: &str) {
    match r {
        Err(e) => assert!(
            e.to_string().contains(entry),
            "error should name {entry:?}: {e}"
        ),
        Ok(()) => panic!("entry {entry:?} was accepted"),
    }
}

#[test]
fn dotdot_is_rejected() {
    let c = Case::new();
    let t = tar_of(|b| {
        raw(
            b,
            EntryType::Regular,
            b"../outside/secret",
            b"",
            b"pwned",
            0o644,
        )
    });
    rejected(c.run(t, &Default::default()), "../outside/secret");
    let t = tar_of(|b| raw(b, EntryType::Regular, b"a/../../escape", b"", b"x", 0o644));
    rejected(c.run(t, &Default::default()), "a/../../escape");
}

#[test]
fn absolute_names_stay_inside() {
    let c = Case::new();
    let name = format!("/{}/abs-file", c.outside.display());
    let t = tar_of(|b| {
        raw(
            b,
            EntryType::Regular,
            name.as_bytes(),
            b"",
            b"inside",
            0o644,
        )
    });
    c.run(t, &Default::default()).unwrap();
    let inside = c.layer.join(name.trim_start_matches('/'));
    assert_eq!(fs::read_to_string(inside).unwrap(), "inside");
}

#[test]
fn writing_through_a_planted_symlink_is_rejected() {
    let c = Case::new();
    let abs = c.outside.to_str().unwrap().as_bytes().to_vec();
    for (i, target) in [b"../outside".to_vec(), abs].into_iter().enumerate() {
        let link = format!("evil{i}");
        let file = format!("evil{i}/pwned");
        let t = tar_of(|b| {
            raw(b, EntryType::Symlink, link.as_bytes(), &target, b"", 0o777);
            raw(b, EntryType::Regular, file.as_bytes(), b"", b"pwned", 0o644);
        });
        rejected(c.run(t, &Default::default()), &file);
    }
}

#[test]
fn directory_replaced_by_symlink_is_rejected() {
    let c = Case::new();
    let t = tar_of(|b| {
        raw(b, EntryType::Directory, b"d/", b"", b"", 0o755);
        raw(b, EntryType::Regular, b"d/ok", b"", b"ok", 0o644);
        raw(b, EntryType::Symlink, b"d", b"../outside", b"", 0o777);
        raw(b, EntryType::Regular, b"d/pwned", b"", b"pwned", 0o644);
    });
    rejected(c.run(t, &Default::default()), "d/pwned");
}

#[test]
fn a_file_over_a_symlink_replaces_the_symlink() {
    let c = Case::new();
    let t = tar_of(|b| {
        raw(
            b,
            EntryType::Symlink,
            b"s",
            b"../outside/secret",
            b"",
            0o777,
        );
        raw(b, EntryType::Regular, b"s", b"", b"mine", 0o644);
    });
    c.run(t, &Default::default()).unwrap();
    let m = fs::symlink_metadata(c.layer.join("s")).unwrap();
    assert!(m.is_file());
    assert_eq!(fs::read_to_string(c.layer.join("s")).unwrap(), "mine");
}

#[test]
fn hardlinks_outside_are_rejected() {
    let c = Case::new();
    let t = tar_of(|b| raw(b, EntryType::Link, b"hl", b"../outside/secret", b"", 0o644));
    rejected(c.run(t, &Default::default()), "hl");
    // An absolute target means the layer's own /etc/passwd, which this layer does not have.
    let t = tar_of(|b| raw(b, EntryType::Link, b"hl2", b"/etc/passwd", b"", 0o644));
    rejected(c.run(t, &Default::default()), "hl2");
    // Through a symlink to outside.
    let t = tar_of(|b| {
        raw(b, EntryType::Symlink, b"out", b"../outside", b"", 0o777);
        raw(b, EntryType::Link, b"hl3", b"out/secret", b"", 0o644);
    });
    rejected(c.run(t, &Default::default()), "hl3");
    // A good one works.
    let t = tar_of(|b| {
        raw(b, EntryType::Regular, b"f", b"", b"data", 0o644);
        raw(b, EntryType::Link, b"g", b"f", b"", 0o644);
    });
    c.run(t, &Default::default()).unwrap();
    let (f, g) = (
        fs::metadata(c.layer.join("f")).unwrap(),
        fs::metadata(c.layer.join("g")).unwrap(),
    );
    assert_eq!(f.ino(), g.ino());
}

#[test]
fn devices_and_fifos_are_rejected() {
    let c = Case::new();
    for (kind, name) in [
        (EntryType::Char, "dev/null"),
        (EntryType::Block, "dev/sda"),
        (EntryType::Fifo, "run/fifo"),
    ] {
        let t = tar_of(|b| raw(b, kind, name.as_bytes(), b"", b"", 0o666));
        rejected(c.run(t, &Default::default()), name);
        assert!(!c.layer.join(name).exists());
    }
}

#[test]
fn size_limits_stop_bombs() {
    let c = Case::new();
    let small = UnpackLimits {
        max_bytes: 1 << 20,
        max_entries: 100,
    };
    // A header that claims a terabyte: refused before a byte is written.
    let mut h = Header::new_gnu();
    h.set_path("huge").unwrap();
    h.set_size(1 << 40);
    h.set_mode(0o644);
    h.set_entry_type(EntryType::Regular);
    h.set_cksum();
    let mut t = h.as_bytes().to_vec();
    t.extend_from_slice(&[0u8; 4096]);
    rejected(c.run(t, &small), "huge");
    assert!(!c.layer.join("huge").exists());
    // Many files add up past the byte limit.
    let t = tar_of(|b| {
        for i in 0..4 {
            raw(
                b,
                EntryType::Regular,
                format!("f{i}").as_bytes(),
                b"",
                &vec![1u8; 400 << 10],
                0o644,
            );
        }
    });
    rejected(c.run(t, &small), "f2");
    // Too many entries.
    let t = tar_of(|b| {
        for i in 0..150 {
            raw(
                b,
                EntryType::Regular,
                format!("n{i}").as_bytes(),
                b"",
                b"",
                0o644,
            );
        }
    });
    let e = c.run(t, &small).unwrap_err();
    assert!(matches!(e, UnpackError::TooManyEntries { .. }), "{e}");
}

#[test]
fn huge_sparse_file_is_refused() {
    let c = Case::new();
    let src = c.top.join("src");
    fs::create_dir(&src).unwrap();
    let f = fs::File::create(src.join("sparse")).unwrap();
    f.set_len(100 << 30).unwrap(); // 100 GiB of holes, past the 64 GiB default limit
    drop(f);
    let out = Command::new("tar")
        .args(["--sparse", "-cf", "-", "-C"])
        .arg(&src)
        .arg("sparse")
        .output()
        .unwrap();
    assert!(out.status.success());
    fs::remove_dir_all(&src).unwrap();
    assert!(
        out.stdout.len() < 1 << 20,
        "GNU tar wrote a small sparse archive"
    );
    rejected(c.run(out.stdout, &Default::default()), "sparse");
    assert!(!c.layer.join("sparse").exists());
}

#[test]
fn long_names_are_rejected() {
    let c = Case::new();
    let long = format!("{}/f", vec!["d".repeat(200); 25].join("/"));
    assert!(long.len() > 4096);
    let t = tar_of(|b| {
        let mut h = Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(EntryType::Regular);
        b.append_data(&mut h, &long, &b"x"[..]).unwrap();
    });
    rejected(c.run(t, &Default::default()), "dddd");
    let t = tar_of(|b| {
        let mut h = Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(EntryType::Regular);
        b.append_data(&mut h, "x".repeat(300), &b"x"[..]).unwrap();
    });
    rejected(c.run(t, &Default::default()), "xxxx");
}

#[test]
fn duplicates_last_one_wins() {
    let c = Case::new();
    let t = tar_of(|b| {
        raw(b, EntryType::Regular, b"dup", b"", b"first", 0o644);
        raw(b, EntryType::Regular, b"dup", b"", b"second", 0o600);
        raw(b, EntryType::Directory, b"dd/", b"", b"", 0o755);
        raw(b, EntryType::Regular, b"dd/child", b"", b"c", 0o644);
        raw(b, EntryType::Regular, b"dd", b"", b"now a file", 0o644);
        raw(b, EntryType::Directory, b"keep/", b"", b"", 0o755);
        raw(b, EntryType::Regular, b"keep/a", b"", b"a", 0o644);
        raw(b, EntryType::Directory, b"keep/", b"", b"", 0o700);
    });
    c.run(t, &Default::default()).unwrap();
    assert_eq!(fs::read_to_string(c.layer.join("dup")).unwrap(), "second");
    assert_eq!(
        fs::metadata(c.layer.join("dup")).unwrap().mode() & 0o7777,
        0o600
    );
    assert_eq!(
        fs::read_to_string(c.layer.join("dd")).unwrap(),
        "now a file"
    );
    assert_eq!(fs::read_to_string(c.layer.join("keep/a")).unwrap(), "a");
    assert_eq!(
        fs::metadata(c.layer.join("keep")).unwrap().mode() & 0o7777,
        0o700
    );
}

#[test]
fn metadata_is_kept() {
    let c = Case::new();
    // cap_net_bind_service=ep, VFS_CAP_REVISION_2.
    let cap: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let t = tar_of(|b| {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Directory);
        h.set_mode(0o750);
        h.set_uid(7);
        h.set_gid(8);
        h.set_mtime(1_234_567);
        h.set_size(0);
        b.append_data(&mut h, "dir/", &b""[..]).unwrap();
        // PAX records apply to the next entry: dir/suid.
        b.append_pax_extensions([
            ("SCHILY.xattr.user.note", &b"hello"[..]),
            ("SCHILY.xattr.security.capability", &cap[..]),
            ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
        ])
        .unwrap();
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o4755);
        h.set_uid(1000);
        h.set_gid(4);
        h.set_mtime(2_000_000);
        h.set_size(3);
        b.append_data(&mut h, "dir/suid", &b"elf"[..]).unwrap();
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o2711);
        h.set_uid(0);
        h.set_gid(50);
        h.set_mtime(2_000_000);
        h.set_size(0);
        b.append_data(&mut h, "dir/sgid", &b""[..]).unwrap();
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_mode(0o777);
        h.set_uid(5);
        h.set_gid(6);
        h.set_mtime(3_000_000);
        h.set_size(0);
        b.append_link(&mut h, "dir/link", "/bin/busybox").unwrap();
    });
    let stats = unpack(&t[..], &c.layer, &Default::default()).unwrap();
    let d = fs::metadata(c.layer.join("dir")).unwrap();
    assert_eq!(
        (d.mode() & 0o7777, d.uid(), d.gid(), d.mtime()),
        (0o750, 7, 8, 1_234_567)
    );
    let s = fs::metadata(c.layer.join("dir/suid")).unwrap();
    assert_eq!(
        (s.mode() & 0o7777, s.uid(), s.gid(), s.mtime()),
        (0o4755, 1000, 4, 2_000_000)
    );
    let g = fs::metadata(c.layer.join("dir/sgid")).unwrap();
    assert_eq!((g.mode() & 0o7777, g.gid()), (0o2711, 50));
    let l = fs::symlink_metadata(c.layer.join("dir/link")).unwrap();
    assert_eq!((l.uid(), l.gid(), l.mtime()), (5, 6, 3_000_000));
    assert_eq!(
        fs::read_link(c.layer.join("dir/link")).unwrap(),
        Path::new("/bin/busybox")
    );
    let x = |name: &str| rustix::fs::getxattr(c.layer.join("dir/suid"), name, &mut [0u8; 64]).ok();
    assert_eq!(x("user.note"), Some(5));
    assert_eq!(x("security.capability"), Some(20));
    assert_eq!(
        x("trusted.overlay.redirect"),
        None,
        "overlay xattrs from a tar are dropped"
    );
    assert_eq!(
        stats.owners.uids.get(&1000).map(String::as_str),
        Some("/dir/suid")
    );
    assert!(stats.owners.gids.contains_key(&50));
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let c = Case::new();
    let t = tar_of(|b| {
        raw(b, EntryType::Directory, b"etc/", b"", b"", 0o755);
        raw(b, EntryType::Regular, b"etc/.wh.motd", b"", b"", 0o644);
        raw(b, EntryType::Directory, b"opq/", b"", b"", 0o755);
        raw(b, EntryType::Regular, b"opq/.wh..wh..opq", b"", b"", 0o644);
        raw(b, EntryType::Regular, b"opq/new", b"", b"n", 0o644);
        raw(b, EntryType::Regular, b"x/.wh..wh.plnk", b"", b"", 0o644);
    });
    c.run(t, &Default::default()).unwrap();
    let w = fs::symlink_metadata(c.layer.join("etc/motd")).unwrap();
    assert!(w.file_type().is_char_device());
    assert_eq!((w.rdev(), w.uid(), w.gid()), (0, 0, 0));
    assert!(!c.layer.join("etc/.wh.motd").exists());
    let mut buf = [0u8; 8];
    let n = rustix::fs::getxattr(c.layer.join("opq"), "trusted.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");
    assert!(!c.layer.join("opq/.wh..wh..opq").exists());
    assert!(!c.layer.join("x/.wh..wh.plnk").exists());
}

#[test]
fn huge_metadata_entries_are_refused_without_reading_them_into_memory() {
    let c = Case::new();
    // A GNU long-name entry of 64 MiB: the tar crate would read it all into memory.
    let mut t = Vec::new();
    let mut h = Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(EntryType::GNULongName);
    h.set_size(64 << 20);
    h.set_mode(0o644);
    h.set_cksum();
    t.extend_from_slice(h.as_bytes());
    t.resize(t.len() + (64 << 20), b'a');
    let e = c.run(t, &Default::default()).unwrap_err();
    assert!(e.to_string().contains("tar metadata"), "{e}");
    // A directory entry that carries a body.
    let t = tar_of(|b| {
        raw(
            b,
            EntryType::Directory,
            b"d/",
            b"",
            &vec![0u8; 5 << 20],
            0o755,
        )
    });
    let e = c.run(t, &Default::default()).unwrap_err();
    assert!(e.to_string().contains("tar metadata"), "{e}");
}

#[test]
fn owners_are_exact_under_a_setgid_directory() {
    let c = Case::new();
    let t = tar_of(|b| {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Directory);
        h.set_mode(0o2775);
        h.set_uid(0);
        h.set_gid(50);
        h.set_mtime(0);
        h.set_size(0);
        b.append_data(&mut h, "sg/", &b""[..]).unwrap();
        raw(b, EntryType::Regular, b"sg/f", b"", b"x", 0o644);
        raw(b, EntryType::Symlink, b"sg/l", b"f", b"", 0o777);
    });
    c.run(t, &Default::default()).unwrap();
    // New entries in a setgid directory inherit its group; the tar says 0:0.
    assert_eq!(fs::metadata(c.layer.join("sg")).unwrap().gid(), 50);
    assert_eq!(fs::metadata(c.layer.join("sg/f")).unwrap().gid(), 0);
    assert_eq!(fs::symlink_metadata(c.layer.join("sg/l")).unwrap().gid(), 0);
}
