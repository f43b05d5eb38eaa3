//! Id maps: what `/proc/PID/uid_map` holds, as a checked Rust value.

use std::fmt;

use oci_spec::runtime::{LinuxIdMapping, LinuxIdMappingBuilder};
use serde::{Deserialize, Serialize};

/// The id the kernel shows for an id that has no mapping (`/proc/sys/kernel/overflowuid`).
pub const OVERFLOW_ID: u32 = 65534;

/// The kernel accepts at most this many lines in a uid_map or gid_map.
const MAX_RANGES: usize = 340;

/// One line of a map: container ids `container..container+size` are host ids
/// `host..host+size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

impl IdRange {
    pub const fn new(container: u32, host: u32, size: u32) -> Self {
        IdRange {
            container,
            host,
            size,
        }
    }

    /// One past the last container id, as u64 so that it cannot overflow.
    fn container_end(&self) -> u64 {
        self.container as u64 + self.size as u64
    }

    fn host_end(&self) -> u64 {
        self.host as u64 + self.size as u64
    }
}

impl fmt::Display for IdRange {
    /// The form the kernel takes and shows: `container host size`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.container, self.host, self.size)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("id map is empty: a user namespace needs at least one range")]
    Empty,
    #[error("id map has {0} ranges; the kernel takes at most {MAX_RANGES}")]
    TooManyRanges(usize),
    #[error("id range `{0}` has length 0")]
    ZeroLength(IdRange),
    #[error("id range `{0}` runs past the largest id 4294967295")]
    Overflow(IdRange),
    #[error("id range `{a}` overlaps `{b}` on the {side} side")]
    Overlap {
        a: IdRange,
        b: IdRange,
        side: &'static str,
    },
    #[error("container ids {start}+{size} are not all mapped")]
    NotCovered { start: u32, size: u32 },
    #[error("bad id map line {line:?}: expected `CONTAINER HOST SIZE`")]
    Syntax { line: String },
}

/// A validated uid or gid map: non-overlapping ranges on both sides, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<IdRange>", into = "Vec<IdRange>")]
pub struct IdMap {
    ranges: Vec<IdRange>,
}

impl IdMap {
    /// Checks the ranges as the kernel would, with an error that names the bad range.
    pub fn new(ranges: Vec<IdRange>) -> Result<Self, MapError> {
        if ranges.is_empty() {
            return Err(MapError::Empty);
        }
        if ranges.len() > MAX_RANGES {
            return Err(MapError::TooManyRanges(ranges.len()));
        }
        for r in &ranges {
            if r.size == 0 {
                return Err(MapError::ZeroLength(*r));
            }
            // Ids run from 0 to u32::MAX - 1: (u32)-1 is "no id" to the kernel.
            if r.container_end() > u32::MAX as u64 || r.host_end() > u32::MAX as u64 {
                return Err(MapError::Overflow(*r));
            }
        }
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                if (a.container as u64) < b.container_end()
                    && (b.container as u64) < a.container_end()
                {
                    return Err(MapError::Overlap {
                        a: *a,
                        b: *b,
                        side: "container",
                    });
                }
                if (a.host as u64) < b.host_end() && (b.host as u64) < a.host_end() {
                    return Err(MapError::Overlap {
                        a: *a,
                        b: *b,
                        side: "host",
                    });
                }
            }
        }
        Ok(IdMap { ranges })
    }

    /// A one-range map, e.g. `IdMap::single(0, 100000, 65536)`.
    pub fn single(container: u32, host: u32, size: u32) -> Result<Self, MapError> {
        IdMap::new(vec![IdRange::new(container, host, size)])
    }

    /// The identity map of every id, as the initial user namespace has.
    pub fn identity() -> Self {
        IdMap {
            ranges: vec![IdRange::new(0, 0, u32::MAX)],
        }
    }

    pub fn ranges(&self) -> &[IdRange] {
        &self.ranges
    }

    /// How many ids the map holds.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|r| r.size as u64).sum()
    }

    /// Never true: a map has at least one range of at least one id.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The part of this map for container ids `start..start+size`, moved down to start at
    /// container id 0 (a per-container slice of a larger pool). Ids of the window that this
    /// map does not cover are an error.
    pub fn slice(&self, start: u32, size: u32) -> Result<IdMap, MapError> {
        let (lo, hi) = (start as u64, start as u64 + size as u64);
        let mut ranges: Vec<IdRange> = self
            .ranges
            .iter()
            .filter_map(|r| {
                let from = lo.max(r.container as u64);
                let to = hi.min(r.container_end());
                (from < to).then(|| {
                    IdRange::new(
                        (from - lo) as u32,
                        r.host + (from - r.container as u64) as u32,
                        (to - from) as u32,
                    )
                })
            })
            .collect();
        ranges.sort_by_key(|r| r.container);
        let covered: u64 = ranges.iter().map(|r| r.size as u64).sum();
        if covered != size as u64 {
            return Err(MapError::NotCovered { start, size });
        }
        IdMap::new(ranges)
    }

    /// The host id of container id `id`, if mapped.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        self.ranges.iter().find_map(|r| {
            let off = id.checked_sub(r.container)?;
            (off < r.size).then(|| r.host + off)
        })
    }

    /// The container id of host id `id`, if mapped.
    pub fn to_container(&self, id: u32) -> Option<u32> {
        self.ranges.iter().find_map(|r| {
            let off = id.checked_sub(r.host)?;
            (off < r.size).then(|| r.container + off)
        })
    }

    /// What a process inside sees for host id `id`: the overflow id when unmapped.
    pub fn to_container_or_overflow(&self, id: u32) -> u32 {
        self.to_container(id).unwrap_or(OVERFLOW_ID)
    }

    /// The host id container root runs as, if root is mapped.
    pub fn root(&self) -> Option<u32> {
        self.to_host(0)
    }

    /// The text to write to `/proc/PID/uid_map` (one `container host size` line per range).
    pub fn to_proc_text(&self) -> String {
        self.ranges.iter().map(|r| format!("{r}\n")).collect()
    }

    /// Parses the text of `/proc/PID/uid_map` (whitespace-separated columns).
    pub fn from_proc_text(text: &str) -> Result<Self, MapError> {
        let mut ranges = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let cols: Vec<u32> = line
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|_| MapError::Syntax { line: line.into() })?;
            match cols[..] {
                [c, h, s] => ranges.push(IdRange::new(c, h, s)),
                _ => return Err(MapError::Syntax { line: line.into() }),
            }
        }
        IdMap::new(ranges)
    }

    /// The OCI runtime-spec form (`linux.uidMappings` / `gidMappings`).
    pub fn to_oci(&self) -> Vec<LinuxIdMapping> {
        self.ranges
            .iter()
            .map(|r| {
                LinuxIdMappingBuilder::default()
                    .container_id(r.container)
                    .host_id(r.host)
                    .size(r.size)
                    .build()
                    .expect("all fields set")
            })
            .collect()
    }

    pub fn from_oci(m: &[LinuxIdMapping]) -> Result<Self, MapError> {
        IdMap::new(
            m.iter()
                .map(|m| IdRange::new(m.container_id(), m.host_id(), m.size()))
                .collect(),
        )
    }
}

impl TryFrom<Vec<IdRange>> for IdMap {
    type Error = MapError;
    fn try_from(v: Vec<IdRange>) -> Result<Self, MapError> {
        IdMap::new(v)
    }
}

impl From<IdMap> for Vec<IdRange> {
    fn from(m: IdMap) -> Self {
        m.ranges
    }
}

/// The uid map and gid map of one user namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UsernsMaps {
    pub uid: IdMap,
    pub gid: IdMap,
}

impl UsernsMaps {
    /// Docker's remap of a single range to both uids and gids: `0 host size`.
    pub fn single(host: u32, size: u32) -> Result<Self, MapError> {
        Ok(UsernsMaps {
            uid: IdMap::single(0, host, size)?,
            gid: IdMap::single(0, host, size)?,
        })
    }

    /// Host uid and gid of container root.
    pub fn root(&self) -> Option<(u32, u32)> {
        Some((self.uid.root()?, self.gid.root()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn docker_default_map() {
        let m = IdMap::single(0, 100000, 65536).unwrap();
        assert_eq!(m.to_host(0), Some(100000));
        assert_eq!(m.to_host(65535), Some(165535));
        assert_eq!(m.to_host(65536), None);
        assert_eq!(m.to_container(99999), None);
        assert_eq!(m.to_container_or_overflow(0), OVERFLOW_ID);
        assert_eq!(m.to_proc_text(), "0 100000 65536\n");
        assert_eq!(
            IdMap::from_proc_text("         0     100000      65536\n").unwrap(),
            m
        );
        assert_eq!(IdMap::from_oci(&m.to_oci()).unwrap(), m);
    }

    #[test]
    fn slices_a_pool() {
        let m = IdMap::new(vec![
            IdRange::new(0, 100_000, 10),
            IdRange::new(10, 200_000, 10),
        ])
        .unwrap();
        assert_eq!(
            m.slice(5, 10).unwrap().to_proc_text(),
            "0 100005 5\n5 200000 5\n"
        );
        assert_eq!(
            m.slice(0, 10).unwrap(),
            IdMap::single(0, 100_000, 10).unwrap()
        );
        assert_eq!(
            m.slice(15, 10),
            Err(MapError::NotCovered {
                start: 15,
                size: 10
            })
        );
    }

    #[test]
    fn rejects_bad_maps_naming_the_range() {
        assert_eq!(IdMap::new(vec![]), Err(MapError::Empty));
        let e = IdMap::single(0, 1, 0).unwrap_err();
        assert_eq!(e.to_string(), "id range `0 1 0` has length 0");
        assert!(matches!(
            IdMap::single(0, u32::MAX - 1, 2),
            Err(MapError::Overflow(_))
        ));
        let e = IdMap::new(vec![IdRange::new(0, 1000, 10), IdRange::new(5, 5000, 10)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "id range `0 1000 10` overlaps `5 5000 10` on the container side"
        );
        let e = IdMap::new(vec![IdRange::new(0, 1000, 10), IdRange::new(50, 1009, 1)]).unwrap_err();
        assert!(matches!(e, MapError::Overlap { side: "host", .. }));
        let many = (0..341).map(|i| IdRange::new(i, 1000 + i, 1)).collect();
        assert_eq!(IdMap::new(many), Err(MapError::TooManyRanges(341)));
        assert!(IdMap::from_proc_text("0 100000").is_err());
    }

    fn arb_map() -> impl Strategy<Value = IdMap> {
        // Up to 4 ranges laid out without overlap: sorted starts with gaps on both sides.
        prop::collection::vec((0u32..5000, 1u32..5000, 0u32..5000), 1..5).prop_map(|parts| {
            let (mut c, mut h) = (0u32, 100_000u32);
            let ranges = parts
                .into_iter()
                .map(|(gap_c, size, gap_h)| {
                    let r = IdRange::new(c + gap_c, h + gap_h, size);
                    c += gap_c + size;
                    h += gap_h + size;
                    r
                })
                .collect();
            IdMap::new(ranges).unwrap()
        })
    }

    proptest! {
        #[test]
        fn translation_round_trips(m in arb_map(), probe in 0u32..200_000) {
            for r in m.ranges() {
                for id in [r.container, r.container + r.size / 2, r.container + r.size - 1] {
                    let h = m.to_host(id).unwrap();
                    prop_assert_eq!(m.to_container(h), Some(id));
                }
            }
            match m.to_container(probe) {
                Some(c) => prop_assert_eq!(m.to_host(c), Some(probe)),
                None => prop_assert_eq!(m.to_container_or_overflow(probe), OVERFLOW_ID),
            }
            prop_assert_eq!(IdMap::from_proc_text(&m.to_proc_text()).unwrap(), m);
        }
    }
}
