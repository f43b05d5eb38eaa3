//! berth-image: how an image gets onto the machine.
//!
//! - [`ContentStore`]: blobs by sha256 digest under `<data-root>/content/sha256/`, verified
//!   while written, written atomically.
//! - [`Reference`]: image names parsed and normalised as Docker does.
//! - [`ImageStore`]: the index of images and references (`<data-root>/images.json`),
//!   [`import`](ImageStore::import), [`load`](ImageStore::load), [`save`](ImageStore::save),
//!   resolve, list, tag, remove and gc.
//! - [`LayerStore`]: unpacked layer trees under `<data-root>/layers/<chain-id>/diff`, owned
//!   by the image store and read by berth-snapshot; [`unpack`] is the hardened tar unpacker.

mod changes;
mod commit;
pub mod compress;
mod content;
mod digest;
mod error;
mod import;
pub mod layers;
mod load;
mod manifest;
pub mod media;
pub mod pipe;
mod reference;
pub mod registry;
mod save;
mod store;
pub mod unpack;

pub use commit::CommitOptions;
pub use content::{BlobWriter, ContentStore};
pub use digest::{chain_ids, Digest, DigestError};
pub use error::{ImageError, Result};
pub use import::ImportOptions;
pub use layers::{LayerMeta, LayerStore};
pub use load::LoadedImage;
pub use reference::{Reference, ReferenceError};
pub use save::ArchiveFormat;
pub use store::{GcReport, Image, ImageStore, Layer, Removed};
pub use unpack::{unpack, LayerOwners, UnpackError, UnpackLimits, UnpackStats};

pub use oci_spec::image::{Config as ImageRunConfig, ImageConfiguration};
