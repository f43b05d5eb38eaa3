//! berth-idmap: who is who inside a user namespace.
//!
//! - [`IdMap`]: the ranges of a uid or gid map, translation both ways, the overflow id, and
//!   rendering for `/proc/PID/uid_map` and OCI `uidMappings`.
//! - `/etc/subuid` and `/etc/subgid`: parsing and locked, atomic writing.
//! - `--userns-remap` specs and the `dockremap` user.
//! - The per-container range allocator and its ledger.

mod map;

pub use map::{IdMap, IdRange, MapError, UsernsMaps, OVERFLOW_ID};
