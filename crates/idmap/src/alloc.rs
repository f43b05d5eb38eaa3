//! The per-container range allocator (for `--userns=auto`): each container gets its own
//! slice of a pool (the remap user's ids), recorded in a ledger file.
//!
//! The ledger is the state: every call locks it (`flock`, so threads and processes queue),
//! reads it, and writes it back atomically when it changed. A restart therefore sees exactly
//! what was handed out before, and two callers never get overlapping slices.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::LockedFile;
use crate::map::{MapError, UsernsMaps};

/// Docker's and Podman's usual size of one container's range.
pub const DEFAULT_ALLOC_SIZE: u32 = 65_536;

/// One owner's slice: pool ids `offset..offset+size` (container ids of the pool's maps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub owner: String,
    pub offset: u32,
    pub size: u32,
}

impl Allocation {
    fn end(&self) -> u64 {
        self.offset as u64 + self.size as u64
    }
}

/// What the ledger file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Ledger {
    /// Sorted by offset, never overlapping.
    allocations: Vec<Allocation>,
}

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("cannot {action} the id range ledger {}: {cause}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    #[error("the id range ledger {} is damaged ({detail}); move it away to start a new one (running containers keep their ranges, new ones may then overlap them)", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("no free range of {size} ids left in the pool of {pool} ids ({used} in use); free containers or give the remap user more subordinate ids")]
    Full { size: u32, pool: u32, used: u64 },
    #[error("an id range of size 0 was requested")]
    ZeroSize,
    #[error("the pool's maps do not cover ids {offset}+{size}: {cause}")]
    Map {
        offset: u32,
        size: u32,
        cause: MapError,
    },
}

/// Hands out non-overlapping slices of a pool of ids.
#[derive(Debug, Clone)]
pub struct RangeAllocator {
    ledger: PathBuf,
    pool: UsernsMaps,
    pool_len: u32,
}

impl RangeAllocator {
    /// An allocator over `pool` recording into `ledger` (e.g. `DATA_ROOT/userns/ledger.json`).
    /// The ledger's directory is created when missing. The pool is the part of container id
    /// space that both maps cover from 0 (the remap user's packed ranges).
    pub fn new(ledger: impl Into<PathBuf>, pool: UsernsMaps) -> Result<Self, AllocError> {
        let ledger = ledger.into();
        if let Some(dir) = ledger.parent() {
            std::fs::create_dir_all(dir).map_err(|cause| AllocError::Io {
                action: "create the directory of",
                path: ledger.clone(),
                cause,
            })?;
        }
        let pool_len = contiguous_len(&pool);
        Ok(RangeAllocator {
            ledger,
            pool,
            pool_len,
        })
    }

    /// The allocator of a data root: its ledger is `DATA_ROOT/userns/ledger.json` (see
    /// DESIGN.md, "On disk").
    pub fn in_data_root(data_root: &Path, pool: UsernsMaps) -> Result<Self, AllocError> {
        RangeAllocator::new(data_root.join("userns").join("ledger.json"), pool)
    }

    pub fn ledger_path(&self) -> &Path {
        &self.ledger
    }

    /// How many ids the pool holds.
    pub fn pool_len(&self) -> u32 {
        self.pool_len
    }

    /// Gives `owner` a free slice of `size` ids (the lowest that fits). An owner that already
    /// has a slice gets it back unchanged, so a retried call does not leak a range.
    pub fn allocate(&self, owner: &str, size: u32) -> Result<Allocation, AllocError> {
        if size == 0 {
            return Err(AllocError::ZeroSize);
        }
        self.with_ledger(|ledger| {
            if let Some(a) = ledger.allocations.iter().find(|a| a.owner == owner) {
                return Ok((a.clone(), false));
            }
            let mut candidate = 0u64;
            let mut at = ledger.allocations.len();
            for (i, a) in ledger.allocations.iter().enumerate() {
                if a.offset as u64 >= candidate + size as u64 {
                    at = i;
                    break;
                }
                candidate = candidate.max(a.end());
            }
            if candidate + size as u64 > self.pool_len as u64 {
                return Err(AllocError::Full {
                    size,
                    pool: self.pool_len,
                    used: ledger.allocations.iter().map(|a| a.size as u64).sum(),
                });
            }
            let a = Allocation {
                owner: owner.to_string(),
                offset: candidate as u32,
                size,
            };
            ledger.allocations.insert(at, a.clone());
            Ok((a, true))
        })
    }

    /// Returns `owner`'s slice to the pool; false when it had none.
    pub fn free(&self, owner: &str) -> Result<bool, AllocError> {
        self.with_ledger(|ledger| {
            let before = ledger.allocations.len();
            ledger.allocations.retain(|a| a.owner != owner);
            let freed = ledger.allocations.len() != before;
            Ok((freed, freed))
        })
    }

    /// Every slice handed out, by offset.
    pub fn allocations(&self) -> Result<Vec<Allocation>, AllocError> {
        self.with_ledger(|ledger| Ok((ledger.allocations.clone(), false)))
    }

    /// The uid and gid maps of an allocation: container ids `0..size` onto the pool's
    /// host ids for `offset..offset+size`.
    pub fn maps(&self, a: &Allocation) -> Result<UsernsMaps, AllocError> {
        let err = |cause| AllocError::Map {
            offset: a.offset,
            size: a.size,
            cause,
        };
        Ok(UsernsMaps {
            uid: self.pool.uid.slice(a.offset, a.size).map_err(err)?,
            gid: self.pool.gid.slice(a.offset, a.size).map_err(err)?,
        })
    }

    /// Runs `f` on the ledger under its lock; writes it back when `f` says it changed.
    fn with_ledger<T>(
        &self,
        f: impl FnOnce(&mut Ledger) -> Result<(T, bool), AllocError>,
    ) -> Result<T, AllocError> {
        let io_err = |action, cause| AllocError::Io {
            action,
            path: self.ledger.clone(),
            cause,
        };
        let mut locked = LockedFile::open(&self.ledger, Some(0o600))
            .map_err(|e| io_err("lock", e))?
            .expect("created when missing");
        let bytes = locked.read_all().map_err(|e| io_err("read", e))?;
        let mut ledger = self.parse(&bytes)?;
        let (value, changed) = f(&mut ledger)?;
        if changed {
            let mut json = serde_json::to_vec_pretty(&ledger).expect("ledger serializes");
            json.push(b'\n');
            locked.replace(&json).map_err(|e| io_err("write", e))?;
        }
        Ok(value)
    }

    /// A ledger as read: empty file is an empty ledger; anything inconsistent is refused
    /// rather than silently repaired, since repairing could hand out a range in use.
    fn parse(&self, bytes: &[u8]) -> Result<Ledger, AllocError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Ledger::default());
        }
        let corrupt = |detail: String| AllocError::Corrupt {
            path: self.ledger.clone(),
            detail,
        };
        let mut ledger: Ledger =
            serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        ledger.allocations.sort_by_key(|a| a.offset);
        for w in ledger.allocations.windows(2) {
            if w[0].end() > w[1].offset as u64 {
                return Err(corrupt(format!(
                    "ranges of {} and {} overlap",
                    w[0].owner, w[1].owner
                )));
            }
        }
        if let Some(a) = ledger
            .allocations
            .iter()
            .find(|a| a.size == 0 || a.end() > u32::MAX as u64)
        {
            return Err(corrupt(format!(
                "range of {} is empty or too large",
                a.owner
            )));
        }
        Ok(ledger)
    }
}

/// How many ids from container id 0 both maps cover without a gap.
fn contiguous_len(maps: &UsernsMaps) -> u32 {
    let covered = |m: &crate::map::IdMap| {
        let mut ranges: Vec<_> = m.ranges().to_vec();
        ranges.sort_by_key(|r| r.container);
        let mut end = 0u64;
        for r in ranges {
            if r.container as u64 != end {
                break;
            }
            end += r.size as u64;
        }
        end
    };
    covered(&maps.uid)
        .min(covered(&maps.gid))
        .min(u32::MAX as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{IdMap, IdRange};
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    fn pool(size: u32) -> UsernsMaps {
        UsernsMaps::single(100_000, size).unwrap()
    }

    #[test]
    fn allocates_first_fit_frees_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("userns/ledger.json");
        let a = RangeAllocator::new(&path, pool(4 * 65536)).unwrap();
        let x = a.allocate("x", DEFAULT_ALLOC_SIZE).unwrap();
        let y = a.allocate("y", DEFAULT_ALLOC_SIZE).unwrap();
        assert_eq!((x.offset, y.offset), (0, 65536));
        assert_eq!(
            a.allocate("x", 10).unwrap(),
            x,
            "same owner gets its slice back"
        );
        assert_eq!(a.maps(&y).unwrap().uid.to_proc_text(), "0 165536 65536\n");
        assert!(a.free("x").unwrap());
        assert!(!a.free("x").unwrap());
        assert_eq!(
            a.allocate("z", 1000).unwrap().offset,
            0,
            "freed space is reused"
        );
        let before = a.allocations().unwrap();
        let reopened = RangeAllocator::in_data_root(dir.path(), pool(4 * 65536)).unwrap();
        assert_eq!(reopened.ledger_path(), path);
        assert_eq!(reopened.allocations().unwrap(), before);
        assert!(matches!(
            a.allocate("big", 3 * 65536),
            Err(AllocError::Full { .. })
        ));
        assert!(matches!(a.allocate("zero", 0), Err(AllocError::ZeroSize)));
    }

    #[test]
    fn maps_follow_a_pool_of_several_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let uid = IdMap::new(vec![
            IdRange::new(0, 100_000, 100),
            IdRange::new(100, 500_000, 100),
        ])
        .unwrap();
        let a = RangeAllocator::new(
            dir.path().join("l.json"),
            UsernsMaps {
                uid: uid.clone(),
                gid: uid,
            },
        )
        .unwrap();
        assert_eq!(a.pool_len(), 200);
        a.allocate("a", 50).unwrap();
        let b = a.allocate("b", 100).unwrap();
        assert_eq!(
            a.maps(&b).unwrap().uid.to_proc_text(),
            "0 100050 50\n50 500000 50\n"
        );
    }

    #[test]
    fn damaged_ledger_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        std::fs::write(&path, "{not json").unwrap();
        let a = RangeAllocator::new(&path, pool(65536)).unwrap();
        let e = a.allocate("x", 10).unwrap_err();
        assert!(e.to_string().contains("is damaged"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{not json");
    }

    #[test]
    fn concurrent_allocations_never_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                // Each thread has its own allocator, as separate processes would.
                let a = Arc::new(RangeAllocator::new(&path, pool(64 * 1000)).unwrap());
                std::thread::spawn(move || {
                    (0..8)
                        .map(|i| a.allocate(&format!("c{t}-{i}"), 1000).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut got: Vec<Allocation> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(got.len(), 64);
        got.sort_by_key(|a| a.offset);
        for w in got.windows(2) {
            assert!(w[0].end() <= w[1].offset as u64, "{w:?} overlap");
        }
        let a = RangeAllocator::new(&path, pool(64 * 1000)).unwrap();
        assert_eq!(a.allocations().unwrap(), got);
        assert!(matches!(
            a.allocate("one-more", 1),
            Err(AllocError::Full { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_alloc_free_never_overlaps_and_reloads(ops in prop::collection::vec((any::<bool>(), 0u8..12, 1u32..30_000), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ledger.json");
            let a = RangeAllocator::new(&path, pool(100_000)).unwrap();
            let mut owners = HashSet::new();
            for (alloc, who, size) in ops {
                let owner = format!("c{who}");
                if alloc {
                    match a.allocate(&owner, size) {
                        Ok(got) => {
                            prop_assert!(got.end() <= 100_000);
                            owners.insert(owner);
                        }
                        Err(AllocError::Full { .. }) => {}
                        Err(e) => return Err(TestCaseError::fail(e.to_string())),
                    }
                } else {
                    prop_assert_eq!(a.free(&owner).unwrap(), owners.remove(&owner));
                }
                let now = a.allocations().unwrap();
                for w in now.windows(2) {
                    prop_assert!(w[0].end() <= w[1].offset as u64);
                }
                let names: HashSet<_> = now.iter().map(|x| x.owner.clone()).collect();
                prop_assert_eq!(&names, &owners);
            }
            let before = a.allocations().unwrap();
            let reloaded = RangeAllocator::new(&path, pool(100_000)).unwrap();
            prop_assert_eq!(reloaded.allocations().unwrap(), before);
        }
    }
}
