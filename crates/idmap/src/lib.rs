//! berth-idmap: who is who inside a user namespace.
//!
//! - [`IdMap`]: the ranges of a uid or gid map, translation both ways, the overflow id, and
//!   rendering for `/proc/PID/uid_map` and OCI `uidMappings`.
//! - `/etc/subuid` and `/etc/subgid`: parsing and locked, atomic writing.
//! - `--userns-remap` specs and the `dockremap` user.
//! - The per-container range allocator and its ledger.

mod alloc;
mod atomic;
mod etc;
mod map;
mod remap;
mod subid;

pub use alloc::{AllocError, Allocation, RangeAllocator, DEFAULT_ALLOC_SIZE};
pub use etc::{EtcFiles, Group, User};
pub use map::{IdMap, IdRange, MapError, UsernsMaps, OVERFLOW_ID};
pub use remap::{
    resolve, resolve_str, IdSpec, RemapError, RemapSpec, RemapUser, SystemTools, UserCreator,
    DEFAULT_RANGE_MIN, DEFAULT_RANGE_SIZE, DEFAULT_REMAP_USER,
};
pub use subid::{BadLine, SubIdEntry, SubIdError, SubIdFile};
