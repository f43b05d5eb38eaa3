//! The range allocator across processes: several processes allocate from one ledger at once
//! and never get overlapping ranges (the ledger's `flock` is what keeps them apart).

use std::process::Command;

use berth_idmap::{Allocation, RangeAllocator, UsernsMaps};

const CHILDREN: usize = 4;
const PER_CHILD: usize = 10;
const SIZE: u32 = 1000;

fn pool() -> UsernsMaps {
    UsernsMaps::single(100_000, (CHILDREN * PER_CHILD) as u32 * SIZE).unwrap()
}

/// The child's part, run by `processes_never_get_overlapping_ranges` in separate processes
/// (this test binary, re-executed with `--ignored --exact`).
#[test]
#[ignore = "helper: runs only as a child process of processes_never_get_overlapping_ranges"]
fn child_allocates() {
    let ledger =
        std::env::var("BERTH_TEST_LEDGER").expect("BERTH_TEST_LEDGER is set by the parent test");
    let who = std::env::var("BERTH_TEST_CHILD").unwrap();
    let a = RangeAllocator::new(ledger, pool()).unwrap();
    for i in 0..PER_CHILD {
        a.allocate(&format!("p{who}-{i}"), SIZE).unwrap();
    }
}

#[test]
fn processes_never_get_overlapping_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("userns/ledger.json");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..CHILDREN)
        .map(|n| {
            Command::new(&exe)
                .args([
                    "--ignored",
                    "--exact",
                    "child_allocates",
                    "--test-threads",
                    "1",
                ])
                .env("BERTH_TEST_LEDGER", &ledger)
                .env("BERTH_TEST_CHILD", n.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a child allocation failed");
    }
    let mut got: Vec<Allocation> = RangeAllocator::new(&ledger, pool())
        .unwrap()
        .allocations()
        .unwrap();
    assert_eq!(got.len(), CHILDREN * PER_CHILD);
    got.sort_by_key(|a| a.offset);
    for w in got.windows(2) {
        assert!(w[0].offset + w[0].size <= w[1].offset, "{w:?} overlap");
    }
}
