//! Pull and push against a real Docker Registry 2.8 on 127.0.0.1 (Debian's docker-registry).

use std::fs;
use std::sync::Mutex;

use berth_image::{Image, ImageStore, ImportOptions, Reference};
use berth_registry::{
    pull, push, Credentials, Progress, PullOptions, PullReport, PushOptions, PushReport,
    RegistryError, RegistryOptions,
};
use berth_testkit::registry::{TestRegistry, PASSWORD, USER};

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = berth_testkit::tempdir("registry-store");
    let store = ImageStore::open(dir.path()).unwrap();
    (dir, store)
}

fn busybox(store: &ImageStore) -> Image {
    let f = fs::File::open(berth_testkit::busybox_tar()).unwrap();
    store
        .import(
            f,
            ImportOptions {
                reference: Some("busybox:latest"),
                changes: vec![r#"CMD ["sh"]"#.into()],
                message: None,
            },
        )
        .unwrap()
}

/// What most tests start from: a registry (with basic auth or not) and a store of its own
/// holding busybox as `busybox:latest`.
struct Setup {
    reg: TestRegistry,
    src: ImageStore,
    img: Image,
    dir: tempfile::TempDir,
}

impl Setup {
    fn start(auth: bool) -> Setup {
        berth_testkit::require_root();
        let reg = TestRegistry::start(auth);
        let (dir, src) = store();
        let img = busybox(&src);
        Setup { reg, src, img, dir }
    }

    /// `REGISTRY/path`, e.g. `127.0.0.1:5000/test/busybox:v1`.
    fn reference(&self, path: &str) -> Reference {
        Reference::parse(&format!("{}/{path}", self.reg.addr)).unwrap()
    }

    /// Pushes `busybox:latest` as `target`, without progress.
    fn push(&self, target: &Reference, opts: &PushOptions) -> Result<PushReport, RegistryError> {
        push(&self.src, "busybox:latest", target, opts, &quiet)
    }

    /// Pushes `busybox:latest` anonymously as `REGISTRY/path`.
    fn push_busybox(&self, path: &str) -> (Reference, PushReport) {
        let target = self.reference(path);
        let report = self.push(&target, &push_opts(false, None)).unwrap();
        (target, report)
    }
}

fn quiet(_: Progress) {}

/// An anonymous pull without progress.
fn pull_quiet(dst: &ImageStore, r: &Reference) -> Result<PullReport, RegistryError> {
    pull(dst, r, &pull_opts(false), &quiet)
}

fn with_creds(creds: bool) -> RegistryOptions {
    RegistryOptions {
        insecure: Vec::new(),
        credentials: creds.then(|| Credentials {
            username: USER.into(),
            password: PASSWORD.into(),
        }),
    }
}

fn push_opts(creds: bool, chunk: Option<u64>) -> PushOptions {
    PushOptions {
        registry: with_creds(creds),
        chunk_size: chunk,
        ..Default::default()
    }
}

fn pull_opts(creds: bool) -> PullOptions {
    PullOptions {
        registry: with_creds(creds),
        ..Default::default()
    }
}

/// Nothing left behind by a failed pull: no temporary download, no layer, no image.
fn assert_nothing_kept(dir: &tempfile::TempDir, dst: &ImageStore) {
    let tmp = fs::read_dir(dir.path().join("content/tmp")).unwrap();
    assert_eq!(tmp.count(), 0);
    assert!(dst.layers().list().unwrap().is_empty());
    assert!(dst.list().unwrap().is_empty());
}

#[test]
fn push_then_pull_round_trip() {
    let s = Setup::start(false);
    let (reg, src, img) = (&s.reg, &s.src, &s.img);
    let target = s.reference("test/busybox:v1");
    let events = Mutex::new(Vec::new());
    let report = push(
        src,
        "busybox:latest",
        &target,
        &push_opts(false, None),
        &|p| events.lock().unwrap().push(p),
    )
    .unwrap();
    assert_eq!(report.digest, img.manifest_digest);
    assert_eq!(report.tag, "v1");
    assert_eq!(report.uploaded, 2, "{report:?}");
    let events = events.into_inner().unwrap();
    assert!(events.iter().any(|e| e.status == "Pushed"), "{events:?}");

    // A second push uploads nothing.
    let again = s.push(&target, &push_opts(false, None)).unwrap();
    assert_eq!((again.uploaded, again.existed), (0, 2), "{again:?}");

    // Pull into a fresh store: same image id, same manifest digest, runnable layers.
    let (_d2, dst) = store();
    let events = Mutex::new(Vec::new());
    let got = pull(&dst, &target, &pull_opts(false), &|p| {
        events.lock().unwrap().push(p)
    })
    .unwrap();
    assert_eq!(got.image.id, img.id);
    assert_eq!(got.digest, img.manifest_digest);
    assert_eq!(got.image.manifest_digest, img.manifest_digest);
    assert!(got.updated);
    assert_eq!(got.blobs_fetched, 2);
    assert!(dst.layers().exists(&got.image.layers[0].chain_id));
    assert!(dst
        .layers()
        .diff_path(&got.image.layers[0].chain_id)
        .join("bin/busybox")
        .is_file());
    let events = events.into_inner().unwrap();
    assert_eq!(events[0].status, "Pulling from test/busybox");
    assert!(
        events.iter().any(|e| e.status == "Pull complete"),
        "{events:?}"
    );
    // Tag and repository digest resolve.
    let by_tag = dst.resolve(&target.to_string()).unwrap();
    assert_eq!(by_tag.id, img.id);
    let by_digest = format!("{}/test/busybox@{}", reg.addr, img.manifest_digest);
    assert_eq!(dst.resolve(&by_digest).unwrap().id, img.id);

    // A second pull fetches no blob and says the image is up to date.
    let blob = dst.content().path(&img.layers[0].digest);
    let mtime = fs::metadata(&blob).unwrap().modified().unwrap();
    let second = pull_quiet(&dst, &target).unwrap();
    assert_eq!((second.blobs_fetched, second.bytes_fetched), (0, 0));
    assert!(!second.updated);
    assert_eq!(fs::metadata(&blob).unwrap().modified().unwrap(), mtime);

    // By digest, into another store.
    let (_d3, dst2) = store();
    let by_d = Reference::parse(&by_digest).unwrap();
    let got = pull_quiet(&dst2, &by_d).unwrap();
    assert_eq!(got.image.id, img.id);
    assert!(got.image.repo_tags.is_empty());
    assert_eq!(got.image.repo_digests.len(), 1);
}

#[test]
fn chunked_push_and_cross_repository_mount() {
    let s = Setup::start(false);
    let first = s.reference("a/busybox:latest");
    // 64 KiB chunks: the busybox layer (~2 MB) goes as many PATCHes.
    let r = s.push(&first, &push_opts(false, Some(64 << 10))).unwrap();
    assert_eq!(r.uploaded, 2);
    // Tag the image in that repository, then push to another: the blobs are mounted.
    s.src.tag("busybox:latest", &first.to_string()).unwrap();
    let second = s.reference("b/busybox:latest");
    let r = s.push(&second, &push_opts(false, None)).unwrap();
    assert_eq!((r.uploaded, r.mounted), (0, 2), "{r:?}");
    let tags = berth_registry::tags(&second, &with_creds(false)).unwrap();
    assert_eq!(tags, ["latest"]);
    let (_d2, dst) = store();
    let got = pull_quiet(&dst, &second).unwrap();
    assert_eq!(got.image.id, s.img.id);
}

#[test]
fn corrupt_blob_is_caught_and_not_kept() {
    let s = Setup::start(false);
    let (target, _) = s.push_busybox("busybox:latest");
    // Flip one byte of the layer as the registry stores it (same size).
    let layer = &s.img.layers[0].digest;
    let path = s.reg.blob_path(layer.hex());
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&path, bytes).unwrap();

    let (dir, dst) = store();
    let err = pull_quiet(&dst, &target).unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Image(berth_image::ImageError::DigestMismatch { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("not kept"), "{err}");
    assert!(!dst.content().contains(layer));
    assert_nothing_kept(&dir, &dst);
}

#[test]
fn basic_auth_registry() {
    let s = Setup::start(true);
    let target = s.reference("private/busybox:latest");

    // Anonymous: refused, and the message says how to log in.
    let err = s.push(&target, &push_opts(false, None)).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("berth login"), "{err}");

    // Wrong password: refused at once, the password not shown.
    let mut bad = push_opts(true, None);
    bad.registry.credentials.as_mut().unwrap().password = "wrong-pw".into();
    let err = s.push(&target, &bad).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(!err.to_string().contains("wrong-pw"), "{err}");
    assert!(berth_registry::login(&s.reg.addr, &bad.registry).is_err());
    berth_registry::login(&s.reg.addr, &with_creds(true)).unwrap();

    s.push(&target, &push_opts(true, None)).unwrap();
    let (_d2, dst) = store();
    let err = pull_quiet(&dst, &target).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    let got = pull(&dst, &target, &pull_opts(true), &quiet).unwrap();
    assert_eq!(got.image.id, s.img.id);
}

#[test]
fn unknown_images_and_down_registries() {
    let s = Setup::start(false);
    let (_d, dst) = store();
    let missing = s.reference("nothing/here:latest");
    let err = pull_quiet(&dst, &missing).unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("nothing/here:latest"), "{err}");

    let (target, _) = s.push_busybox("busybox:latest");
    let bad_tag = s.reference("busybox:nope");
    let err = pull_quiet(&dst, &bad_tag).unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");

    drop(s.reg);
    let err = pull_quiet(&dst, &target).unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
    assert!(dst.list().unwrap().is_empty());
}

/// An independent writer: skopeo (Debian's) copies a docker-save archive into the registry,
/// compressing the layer with gzip and writing Docker schema2 media types; berth pulls it.
#[test]
fn pull_what_skopeo_pushed() {
    let s = Setup::start(false);
    let (reg, src, img, dir) = (&s.reg, &s.src, &s.img, &s.dir);
    let archive = dir.path().join("busybox-save.tar");
    src.save(
        &["busybox:latest"],
        berth_image::ArchiveFormat::Docker,
        fs::File::create(&archive).unwrap(),
    )
    .unwrap();
    let dest = format!("{}/skopeo/busybox:latest", reg.addr);
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!("docker://{dest}"))
        .output()
        .expect("run skopeo (Debian's skopeo, see scripts/deps)");
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_d2, dst) = store();
    let got = pull_quiet(&dst, &Reference::parse(&dest).unwrap()).unwrap();
    // Same config (image id) and diff ids; the layer blob is skopeo's gzip of it.
    assert_eq!(got.image.id, img.id);
    assert_eq!(got.image.layers[0].diff_id, img.layers[0].diff_id);
    assert_ne!(got.image.layers[0].digest, img.layers[0].digest);
    assert!(dst
        .layers()
        .diff_path(&got.image.layers[0].chain_id)
        .join("bin/busybox")
        .is_file());
    // And berth pushes it back out to another repository unchanged.
    let again = s.reference("copy/busybox:latest");
    let r = push(&dst, &dest, &again, &push_opts(false, None), &quiet).unwrap();
    assert_eq!(r.digest, got.image.manifest_digest);
}

/// An OCI index (as Docker Hub serves for multi-platform images): the host's platform is
/// chosen, the index digest is the repository digest, and a platform it lacks is a clear
/// error.
#[test]
fn index_picks_the_platform() {
    let s = Setup::start(false);
    let (reg, src, img) = (&s.reg, &s.src, &s.img);
    s.push_busybox("multi/busybox:single");
    let size = src.content().size(&img.manifest_digest).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": img.manifest_digest.to_string(), "size": size,
             "platform": {"os": "linux", "architecture": "riscv64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": img.manifest_digest.to_string(), "size": size,
             "platform": {"os": "linux", "architecture": berth_image::media::host_arch()}},
        ],
    })
    .to_string();
    let index_digest = berth_image::Digest::of(index.as_bytes());
    let out = std::process::Command::new("curl")
        .args(["-sf", "-X", "PUT", "-H"])
        .arg("Content-Type: application/vnd.oci.image.index.v1+json")
        .arg("--data-binary")
        .arg(&index)
        .arg(format!(
            "http://{}/v2/multi/busybox/manifests/latest",
            reg.addr
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "PUT index: {out:?}");

    let (_d2, dst) = store();
    let r = s.reference("multi/busybox:latest");
    let got = pull_quiet(&dst, &r).unwrap();
    assert_eq!(got.image.id, img.id);
    assert_eq!(got.digest, index_digest);
    assert_eq!(got.image.manifest_digest, img.manifest_digest);
    let by_index = format!("{}/multi/busybox@{index_digest}", reg.addr);
    assert_eq!(dst.resolve(&by_index).unwrap().id, img.id);

    let mut o = pull_opts(false);
    o.platform = Some(berth_registry::PlatformSpec::parse("linux/s390x").unwrap());
    let err = pull(&dst, &r, &o, &quiet).unwrap_err();
    assert!(matches!(err, RegistryError::NoPlatform { .. }), "{err}");
    assert!(err.to_string().contains("riscv64"), "{err}");
}

/// A proxy in front of the registry that cuts the first download of blob `cut` after 64 KiB.
fn cutting_proxy(upstream: String, cut: String) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut cut_done = false;
        for conn in l.incoming() {
            let Ok(client) = conn else { return };
            let mut r = BufReader::new(client.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if !line.to_ascii_lowercase().starts_with("connection:") {
                    head.push_str(&line);
                }
            }
            head.push_str("Connection: close\r\n\r\n");
            let cut_this = !cut_done && head.starts_with("GET") && head.contains(&cut);
            cut_done |= cut_this;
            let Ok(mut up) = std::net::TcpStream::connect(&upstream) else {
                return;
            };
            up.write_all(head.as_bytes()).unwrap();
            let mut out = client;
            if cut_this {
                let mut buf = vec![0u8; 64 << 10];
                let _ = up.read_exact(&mut buf);
                let _ = out.write_all(&buf);
            } else {
                let _ = std::io::copy(&mut up, &mut out);
            }
        }
    });
    addr
}

/// A download cut midway leaves no blob and no temporary file; the next pull fetches only
/// what is missing and finishes.
#[test]
fn interrupted_pull_resumes() {
    let s = Setup::start(false);
    s.push_busybox("busybox:latest");
    let img = &s.img;
    let layer = img.layers[0].digest.clone();
    let proxy = cutting_proxy(s.reg.addr.clone(), layer.hex().to_string());
    let via = Reference::parse(&format!("{proxy}/busybox:latest")).unwrap();

    let (dir, dst) = store();
    let err = pull_quiet(&dst, &via).unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Unreachable { .. } | RegistryError::Protocol { .. }
        ),
        "{err}"
    );
    assert!(!dst.content().contains(&layer));
    assert!(
        dst.content().contains(&img.id),
        "the whole config blob is kept"
    );
    assert_nothing_kept(&dir, &dst);

    let got = pull_quiet(&dst, &via).unwrap();
    assert_eq!(got.image.id, img.id);
    assert_eq!(got.blobs_fetched, 1, "only the layer is fetched again");
}

fn tar_add(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data).unwrap();
}

/// A docker-save archive of busybox plus one small layer holding `file`, tagged `reference`.
fn two_layer_archive(file: &str, reference: &str) -> Vec<u8> {
    let base = fs::read(berth_testkit::busybox_tar()).unwrap();
    let mut upper = tar::Builder::new(Vec::new());
    tar_add(&mut upper, file, file.as_bytes());
    let upper = upper.into_inner().unwrap();
    let (d1, d2) = (
        berth_image::Digest::of(&base),
        berth_image::Digest::of(&upper),
    );
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": berth_image::media::host_arch(), "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [d1.to_string(), d2.to_string()]},
    }))
    .unwrap();
    let id = berth_image::Digest::of(&config);
    let mut b = tar::Builder::new(Vec::new());
    tar_add(&mut b, &format!("{}.json", id.hex()), &config);
    tar_add(&mut b, "base/layer.tar", &base);
    tar_add(&mut b, "upper/layer.tar", &upper);
    let manifest = serde_json::json!([{
        "Config": format!("{}.json", id.hex()),
        "RepoTags": [reference],
        "Layers": ["base/layer.tar", "upper/layer.tar"],
    }]);
    tar_add(&mut b, "manifest.json", manifest.to_string().as_bytes());
    b.into_inner().unwrap()
}

/// Several layers: fetched in parallel, stacked by chain id; a layer shared with an image
/// already pulled is not fetched again.
#[test]
fn multi_layer_images_share_layers() {
    let s = Setup::start(false);
    let (reg, src) = (&s.reg, &s.src);
    let a = format!("{}/layers/a:latest", reg.addr);
    let b = format!("{}/layers/b:latest", reg.addr);
    src.load(&two_layer_archive("etc/a", &a)[..]).unwrap();
    src.load(&two_layer_archive("etc/b", &b)[..]).unwrap();
    for r in [&a, &b] {
        let t = Reference::parse(r).unwrap();
        push(src, r, &t, &push_opts(false, None), &quiet).unwrap();
    }

    let (_d2, dst) = store();
    let got = pull_quiet(&dst, &Reference::parse(&a).unwrap()).unwrap();
    assert_eq!(got.image.layers.len(), 2);
    assert_eq!(got.blobs_fetched, 3);
    let want = src.resolve(&a).unwrap();
    assert_eq!(got.image.chain_ids(), want.chain_ids());
    let upper = dst.layers().diff_path(&got.image.layers[1].chain_id);
    assert_eq!(fs::read_to_string(upper.join("etc/a")).unwrap(), "etc/a");
    assert!(
        !upper.join("bin/busybox").exists(),
        "a layer holds only its changes"
    );

    let events = Mutex::new(Vec::new());
    let got_b = pull(
        &dst,
        &Reference::parse(&b).unwrap(),
        &pull_opts(false),
        &|p| events.lock().unwrap().push(p),
    )
    .unwrap();
    assert_eq!(got_b.blobs_fetched, 2, "config and the upper layer only");
    let events = events.into_inner().unwrap();
    assert!(
        events.iter().any(|e| e.status == "Already exists"),
        "{events:?}"
    );
    assert_eq!(got_b.image.layers[0].chain_id, got.image.layers[0].chain_id);
}
