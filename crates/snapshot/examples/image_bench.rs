//! The berth side of bench/image.sh: one image operation per run, timed by the script, and
//! the start cost of a container root (prepare + mount), timed here.
//!
//! ```text
//! image_bench import DATA_ROOT TARBALL REF
//! image_bench load   DATA_ROOT ARCHIVE
//! image_bench save   DATA_ROOT REF OUT [docker|oci]
//! image_bench start  DATA_ROOT EXEC_ROOT REF N plain|idmapped|copy
//! ```

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::time::Instant;

use berth_idmap::UsernsMaps;
use berth_image::{ArchiveFormat, ImageStore, ImportOptions};
use berth_snapshot::{RemapMode, Snapshotter};

type Res = Result<(), Box<dyn std::error::Error>>;

fn main() -> Res {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["import", root, tar, reference] => {
            let store = ImageStore::open(Path::new(root))?;
            let img = store.import(
                File::open(tar)?,
                ImportOptions {
                    reference: Some(reference),
                    ..Default::default()
                },
            )?;
            println!("{}", img.id);
        }
        ["load", root, archive] => {
            let store = ImageStore::open(Path::new(root))?;
            for l in store.load(File::open(archive)?)? {
                println!("{}", l.id);
            }
        }
        ["save", root, reference, out, rest @ ..] => {
            let store = ImageStore::open(Path::new(root))?;
            let format = match rest {
                ["oci"] => ArchiveFormat::Oci,
                _ => ArchiveFormat::Docker,
            };
            store.save(&[reference], format, BufWriter::new(File::create(out)?))?;
        }
        ["start", root, exec, reference, n, how] => start(root, exec, reference, n.parse()?, how)?,
        _ => {
            eprintln!("usage: see the comment at the top of examples/image_bench.rs");
            std::process::exit(2);
        }
    }
    Ok(())
}

/// Prints the first prepare+mount time and the median of the next ones, in ms.
fn start(root: &str, exec: &str, reference: &str, n: usize, how: &str) -> Res {
    let store = ImageStore::open(Path::new(root))?;
    let img = store.resolve(reference)?;
    let mode = if how == "copy" {
        RemapMode::ForceCopy
    } else {
        RemapMode::Auto
    };
    let snap = Snapshotter::open(Path::new(root), Path::new(exec), mode)?;
    let maps = UsernsMaps::single(100000, 65536)?;
    let maps = (how != "plain").then_some(&maps);
    let mut times = Vec::new();
    for i in 0..n.max(2) {
        let id = format!("bench-{i}");
        let t0 = Instant::now();
        snap.prepare(&id, &img.chain_ids(), maps)?;
        let rootfs = snap.mount(&id)?;
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert!(rootfs.join("bin/busybox").exists());
        snap.remove(&id)?;
    }
    let first = times.remove(0);
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    println!(
        "{how} method={} first_ms={first:.3} median_ms={median:.3}",
        match how {
            "plain" => "none".to_string(),
            _ => snap.remap_method().to_string(),
        }
    );
    Ok(())
}
