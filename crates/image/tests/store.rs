//! Image store: import, load and save round trips in both archive formats, resolve, tag,
//! remove and gc. Root (unpacking keeps owners).

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::Path;

use berth_image::{ArchiveFormat, Digest, ImageError, ImageStore, ImportOptions, Removed};

fn store(dir: &Path) -> ImageStore {
    berth_testkit::require_root();
    ImageStore::open(dir).unwrap()
}

fn busybox() -> Vec<u8> {
    fs::read(berth_testkit::busybox_tar()).unwrap()
}

fn import(s: &ImageStore, data: &[u8], reference: &str) -> berth_image::Image {
    s.import(
        data,
        ImportOptions {
            reference: Some(reference),
            changes: vec![r#"CMD ["/bin/sh"]"#.into(), "ENV PATH=/bin:/usr/bin".into()],
            message: Some(format!("imported as {reference}")),
        },
    )
    .unwrap()
}

fn blobs(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir.join("content/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn import_plain_gzip_zstd() {
    let tmp = berth_testkit::tempdir("berth-img-");
    let s = store(tmp.path());
    let plain = busybox();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let zs = zstd::encode_all(&plain[..], 3).unwrap();

    let a = import(&s, &plain, "busybox");
    let b = import(&s, &gz, "busybox:gz");
    let c = import(&s, &zs, "localhost:5000/bb:zstd");
    // Same layer whatever the compression: the stored blob is the uncompressed tar.
    assert_eq!(a.layers[0].diff_id, Digest::of(&plain));
    assert_eq!(b.layers[0].diff_id, a.layers[0].diff_id);
    assert_eq!(c.layers[0].digest, a.layers[0].digest);
    assert_eq!(a.chain_ids(), vec![a.layers[0].diff_id.clone()]);

    let cfg = a.config.config().as_ref().unwrap();
    assert_eq!(cfg.cmd().as_deref().unwrap(), ["/bin/sh"]);
    assert_eq!(cfg.env().as_deref().unwrap(), ["PATH=/bin:/usr/bin"]);
    assert!(a.size > 1 << 20);
    assert!(a.created.is_some());

    for name in [
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox:latest",
        &a.id.to_string(),
        a.id.hex(),
        a.id.short(),
    ] {
        assert_eq!(s.resolve(name).unwrap().id, a.id, "{name}");
    }
    assert_eq!(s.resolve("localhost:5000/bb:zstd").unwrap().id, c.id);
    assert!(matches!(s.resolve("nope"), Err(ImageError::NotFound(_))));
    assert_eq!(a.repo_tags[0].to_string(), "busybox:latest");

    let busybox_bin = s
        .layers()
        .diff_path(&a.layers[0].chain_id)
        .join("bin/busybox");
    assert!(busybox_bin.is_file());
    assert_eq!(s.list().unwrap().len(), 3);

    // The index survives a reopen.
    drop(s);
    let s = ImageStore::open(tmp.path()).unwrap();
    assert_eq!(s.resolve("busybox").unwrap().id, a.id);
}

fn round_trip(format: ArchiveFormat) {
    let tmp = berth_testkit::tempdir("berth-img-");
    let s = store(&tmp.path().join("a"));
    let img = import(&s, &busybox(), "busybox");
    s.tag("busybox", "alpine:3").unwrap();
    let mut archive = Vec::new();
    s.save(&["busybox", "alpine:3"], format, &mut archive)
        .unwrap();

    let t = store(&tmp.path().join("b"));
    let loaded = t.load(&archive[..]).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].id, img.id);
    let got = t.resolve("alpine:3").unwrap();
    assert_eq!(got.id, img.id);
    assert_eq!(got.manifest_digest, img.manifest_digest);
    assert_eq!(got.layers, img.layers);
    let mut tags: Vec<String> = got.repo_tags.iter().map(|r| r.to_string()).collect();
    tags.sort();
    assert_eq!(tags, ["alpine:3", "busybox:latest"]);
    assert_eq!(blobs(&tmp.path().join("a")), blobs(&tmp.path().join("b")));

    // Saving the loaded image gives the same archive again.
    let mut again = Vec::new();
    t.save(&["busybox", "alpine:3"], format, &mut again)
        .unwrap();
    assert_eq!(archive, again);
}

#[test]
fn save_load_round_trip_docker() {
    round_trip(ArchiveFormat::Docker);
}

#[test]
fn save_load_round_trip_oci() {
    round_trip(ArchiveFormat::Oci);
}

fn add(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data).unwrap();
}

fn config_for(diff_ids: &[&Digest]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["A=b"], "Labels": {"k": "v"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        "created": "2024-01-01T00:00:00Z",
    }))
    .unwrap()
}

/// A second layer on top of busybox: a whiteout and an opaque directory.
fn upper_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "etc/.wh.hostname", b"");
    add(&mut b, "var/.wh..wh..opq", b"");
    add(&mut b, "var/new", b"new");
    b.into_inner().unwrap()
}

/// The layout Docker 20.10's `docker save` writes: <id>/layer.tar, <config>.json,
/// manifest.json, repositories; here gzip-compressed as a whole, with a gzip layer.
#[test]
fn load_docker_20_10_archive() {
    let tmp = berth_testkit::tempdir("berth-img-");
    let s = store(tmp.path());
    let l1 = busybox();
    let l2 = upper_layer();
    let (d1, d2) = (Digest::of(&l1), Digest::of(&l2));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&l2).unwrap();
    let l2gz = gz.finish().unwrap();
    let config = config_for(&[&d1, &d2]);
    let id = Digest::of(&config);
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, &format!("{}.json", id.hex()), &config);
    add(&mut b, "aaaa/layer.tar", &l1);
    add(&mut b, "bbbb/layer.tar", &l2gz);
    add(
        &mut b,
        "manifest.json",
        format!(
            r#"[{{"Config":"{}.json","RepoTags":["myimg:1"],"Layers":["aaaa/layer.tar","bbbb/layer.tar"]}}]"#,
            id.hex()
        )
        .as_bytes(),
    );
    add(&mut b, "repositories", br#"{"myimg":{"1":"bbbb"}}"#);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&b.into_inner().unwrap()).unwrap();
    let archive = gz.finish().unwrap();

    let loaded = s.load(&archive[..]).unwrap();
    assert_eq!(loaded[0].id, id);
    assert_eq!(loaded[0].references[0].to_string(), "myimg:1");
    let img = s.resolve("myimg:1").unwrap();
    assert_eq!(img.diff_ids(), vec![d1.clone(), d2.clone()]);
    assert_eq!(
        img.layers[1].media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(img.layers[1].digest, Digest::of(&l2gz));
    let cfg = img.config.config().as_ref().unwrap();
    assert_eq!(cfg.labels().as_ref().unwrap()["k"], "v");
    let top = s.layers().diff_path(&img.layers[1].chain_id);
    assert!(top.join("var/new").is_file());
    assert!(top.join("etc/hostname").exists(), "whiteout device");

    // A layer that is not what the config says is refused, and not kept as a layer.
    let bad_config = config_for(&[&d2]);
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "c.json", &bad_config);
    add(&mut b, "x/layer.tar", &upper_layer()[..1024]);
    add(
        &mut b,
        "manifest.json",
        br#"[{"Config":"c.json","RepoTags":["bad:1"],"Layers":["x/layer.tar"]}]"#,
    );
    let err = s.load(&b.into_inner().unwrap()[..]).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::DigestMismatch { .. } | ImageError::Unpack(_)
        ),
        "{err}"
    );
    assert!(s.resolve("bad:1").is_err());
}

/// An OCI layout whose index points at a multi-platform index: linux/amd64 is chosen.
/// A tampered blob is refused and not kept.
#[test]
fn load_oci_index_picks_platform_and_checks_digests() {
    let tmp = berth_testkit::tempdir("berth-img-");
    let s = store(tmp.path());
    let layer = busybox();
    let diff = Digest::of(&layer);
    let config = config_for(&[&diff]);
    let cd = Digest::of(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar", "digest": diff.to_string(), "size": layer.len()}],
    }))
    .unwrap();
    let md = Digest::of(&manifest);
    let other = Digest::of(b"arm manifest, never read");
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": other.to_string(), "size": 10, "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": md.to_string(), "size": manifest.len(), "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    }))
    .unwrap();
    let ld = Digest::of(&list);
    let build = |tamper: bool| {
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": ld.to_string(), "size": list.len(),
             "annotations": {"org.opencontainers.image.ref.name": "localhost/multi:v1"}}]});
        add(&mut b, "index.json", &serde_json::to_vec(&index).unwrap());
        add(&mut b, &format!("blobs/sha256/{}", ld.hex()), &list);
        add(&mut b, &format!("blobs/sha256/{}", md.hex()), &manifest);
        let mut cfg = config.clone();
        if tamper {
            cfg[5] ^= 1;
        }
        add(&mut b, &format!("blobs/sha256/{}", cd.hex()), &cfg);
        add(&mut b, &format!("blobs/sha256/{}", diff.hex()), &layer);
        b.into_inner().unwrap()
    };
    let err = s.load(&build(true)[..]).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(
        blobs(tmp.path()).is_empty(),
        "nothing kept from a bad archive"
    );

    let loaded = s.load(&build(false)[..]).unwrap();
    assert_eq!(loaded[0].id, cd);
    let img = s.resolve("localhost/multi:v1").unwrap();
    assert_eq!(img.manifest_digest, md);
    assert_eq!(img.diff_ids(), vec![diff]);
}

#[test]
fn remove_and_gc() {
    let tmp = berth_testkit::tempdir("berth-img-");
    let s = store(tmp.path());
    let a = import(&s, &busybox(), "busybox");
    s.tag("busybox", "second:tag").unwrap();
    let not_used = |_: &Digest| false;
    let used = |d: &Digest| *d == a.id;

    // By id with two names: refused without force.
    let e = s.remove(&a.id.to_string(), false, &not_used).unwrap_err();
    assert!(matches!(e, ImageError::MultipleReferences { .. }), "{e}");
    // By one of two names: untag only (allowed while in use, as Docker).
    let r = s.remove("second:tag", false, &used).unwrap();
    assert!(
        matches!(&r[..], [Removed::Untagged(x)] if x.to_string() == "second:tag"),
        "{r:?}"
    );
    // The last name of an image in use: refused.
    let e = s.remove("busybox", false, &used).unwrap_err();
    assert!(matches!(e, ImageError::InUse { .. }), "{e}");
    assert!(s.resolve("busybox").is_ok());

    // gc removes exactly the unreferenced blobs.
    let before = blobs(tmp.path());
    let stray = s.content().put_bytes(b"stray blob", None).unwrap();
    let report = s.gc().unwrap();
    assert_eq!(report.blobs, vec![stray]);
    assert!(report.layers.is_empty());
    assert_eq!(blobs(tmp.path()), before);

    // Forced while in use: untagged, image kept for its container.
    let r = s.remove("busybox", true, &used).unwrap();
    assert_eq!(r.len(), 1);
    assert!(s.resolve(&a.id.to_string()).is_ok());
    assert!(s.layers().exists(&a.layers[0].chain_id));
    // Not in use any more: deleted with its blobs and layer.
    let r = s.remove(a.id.short(), false, &not_used).unwrap();
    assert_eq!(r, vec![Removed::Deleted(a.id.clone())]);
    assert!(blobs(tmp.path()).is_empty());
    assert!(!s.layers().exists(&a.layers[0].chain_id));
    assert!(s.list().unwrap().is_empty());
}

#[test]
fn several_images_in_one_archive_and_concurrent_imports() {
    let tmp = berth_testkit::tempdir("berth-img-");
    let s = store(&tmp.path().join("a"));
    let data = busybox();
    // Concurrent imports of the same tarball share one blob and one layer.
    let imgs: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let (s, data) = (&s, &data);
                sc.spawn(move || import(s, data, &format!("img{i}")))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(s.list().unwrap().len(), 4);
    assert_eq!(
        s.layers().list().unwrap(),
        vec![imgs[0].layers[0].chain_id.clone()]
    );

    for format in [ArchiveFormat::Docker, ArchiveFormat::Oci] {
        let mut archive = Vec::new();
        s.save(
            &["img0", "img1", &imgs[2].id.to_string()],
            format,
            &mut archive,
        )
        .unwrap();
        let t = store(&tmp.path().join(format!("{format:?}")));
        let loaded = t.load(&archive[..]).unwrap();
        let ids: BTreeSet<_> = loaded.iter().map(|l| l.id.clone()).collect();
        let want: BTreeSet<_> = imgs[..3].iter().map(|i| i.id.clone()).collect();
        assert_eq!(ids, want, "{format:?}");
        assert_eq!(t.resolve("img1").unwrap().id, imgs[1].id);
        // Saved by id: loaded untagged.
        assert!(t
            .resolve(&imgs[2].id.to_string())
            .unwrap()
            .repo_tags
            .is_empty());
    }
}

/// An OCI layout with a zstd layer and a gzip layer (the media types say so) loads, and saves
/// back with the same blobs.
#[test]
fn load_oci_compressed_layers() {
    let tmp = berth_testkit::tempdir("berth-img-");
    let s = store(&tmp.path().join("a"));
    let l1 = busybox();
    let l2 = upper_layer();
    let z1 = zstd::encode_all(&l1[..], 3).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&l2).unwrap();
    let g2 = gz.finish().unwrap();
    let config = config_for(&[&Digest::of(&l1), &Digest::of(&l2)]);
    let cd = Digest::of(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": Digest::of(&z1).to_string(), "size": z1.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": Digest::of(&g2).to_string(), "size": g2.len()},
        ],
    }))
    .unwrap();
    let md = Digest::of(&manifest);
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md.to_string(), "size": manifest.len(),
         "annotations": {"io.containerd.image.name": "docker.io/library/comp:1", "org.opencontainers.image.ref.name": "1"}}]});
    add(&mut b, "index.json", &serde_json::to_vec(&index).unwrap());
    for blob in [&manifest, &config, &z1, &g2] {
        add(
            &mut b,
            &format!("blobs/sha256/{}", Digest::of(blob).hex()),
            blob,
        );
    }
    let loaded = s.load(&b.into_inner().unwrap()[..]).unwrap();
    assert_eq!(loaded[0].id, cd);
    let img = s.resolve("comp:1").unwrap();
    assert_eq!(img.manifest_digest, md);
    assert_eq!(img.layers[0].digest, Digest::of(&z1));
    assert!(s
        .layers()
        .diff_path(&img.layers[0].chain_id)
        .join("bin/busybox")
        .is_file());
    assert!(s
        .layers()
        .diff_path(&img.layers[1].chain_id)
        .join("var/new")
        .is_file());

    let mut out = Vec::new();
    s.save(&["comp:1"], ArchiveFormat::Oci, &mut out).unwrap();
    let t = store(&tmp.path().join("b"));
    t.load(&out[..]).unwrap();
    assert_eq!(t.resolve("comp:1").unwrap().layers, img.layers);
}

/// `docker pull x; docker rmi x`: a pulled image has `x:tag` and `x@sha256:...`; removing the
/// last tag of a repository takes that repository's digest references too (moby's
/// image_delete.go), but not another repository's.
#[test]
fn remove_by_tag_takes_digest_references_of_the_same_repository() {
    let tmp = berth_testkit::tempdir("berth-img-");
    let s = store(tmp.path());
    let not_used = |_: &Digest| false;
    let a = import(&s, &busybox(), "busybox");
    let by_digest = format!("busybox@{}", a.manifest_digest);
    s.tag("busybox", &by_digest).unwrap();
    assert_eq!(s.resolve("busybox").unwrap().repo_digests.len(), 1);

    // In use, its last tag: refused (the digest reference alone would not keep a name).
    let used = |d: &Digest| *d == a.id;
    let e = s.remove("busybox", false, &used).unwrap_err();
    assert!(matches!(e, ImageError::InUse { .. }), "{e}");

    // Another tag of the same repository left: untag only, the digest reference stays.
    s.tag("busybox", "busybox:2").unwrap();
    let r = s.remove("busybox", false, &not_used).unwrap();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(s.resolve(&by_digest).unwrap().id, a.id);

    // The last tag: the digest reference goes too and the image is deleted.
    let r = s.remove("busybox:2", false, &not_used).unwrap();
    let untagged: BTreeSet<String> = r
        .iter()
        .filter_map(|x| match x {
            Removed::Untagged(r) => Some(r.canonical()),
            Removed::Deleted(_) => None,
        })
        .collect();
    let want: BTreeSet<String> = [
        "docker.io/library/busybox:2".to_string(),
        format!("docker.io/library/busybox@{}", a.manifest_digest),
    ]
    .into();
    assert_eq!(untagged, want);
    assert_eq!(r.last(), Some(&Removed::Deleted(a.id.clone())));
    assert!(s.list().unwrap().is_empty());
    assert!(blobs(tmp.path()).is_empty());
    assert!(!s.layers().exists(&a.layers[0].chain_id));
}

#[test]
fn remove_by_tag_keeps_digest_reference_of_another_repository() {
    let tmp = berth_testkit::tempdir("berth-img-");
    let s = store(tmp.path());
    let not_used = |_: &Digest| false;
    let a = import(&s, &busybox(), "busybox");
    let other = format!("localhost:5000/other@{}", a.manifest_digest);
    s.tag("busybox", &other).unwrap();

    // By id: a tag and another repository's digest reference need force.
    let e = s.remove(a.id.short(), false, &not_used).unwrap_err();
    assert!(matches!(e, ImageError::MultipleReferences { .. }), "{e}");

    let r = s.remove("busybox", false, &not_used).unwrap();
    assert!(
        matches!(&r[..], [Removed::Untagged(x)] if x.to_string() == "busybox:latest"),
        "{r:?}"
    );
    let img = s.resolve(&other).unwrap();
    assert_eq!(img.id, a.id);
    assert!(img.repo_tags.is_empty());

    // `rmi repo@sha256:...` removes that digest reference; the last one deletes the image.
    let r = s.remove(&other, false, &not_used).unwrap();
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[1], Removed::Deleted(a.id.clone()));
    assert!(blobs(tmp.path()).is_empty());
}

/// By id, one tag plus digest references of its own repository is a single reference, as
/// Docker: no force needed.
#[test]
fn remove_by_id_with_tag_and_own_digest_reference() {
    let tmp = berth_testkit::tempdir("berth-img-");
    let s = store(tmp.path());
    let not_used = |_: &Digest| false;
    let a = import(&s, &busybox(), "localhost:5000/app:v1");
    s.tag(
        "localhost:5000/app:v1",
        &format!("localhost:5000/app@{}", a.manifest_digest),
    )
    .unwrap();
    let r = s.remove(&a.id.to_string(), false, &not_used).unwrap();
    assert_eq!(r.len(), 3, "{r:?}");
    assert_eq!(r[2], Removed::Deleted(a.id.clone()));
    assert!(s.list().unwrap().is_empty());
}
