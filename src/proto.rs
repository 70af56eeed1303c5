//! Generated protobuf code, nothing else: conversions to and from domain types live
//! at the edges (`api::convert`) and, for the events, in `booking::events`.

#![allow(clippy::all, missing_docs)]

/// `google.api` (HTTP annotations).
pub mod google_api {
    include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
}

mod generated {
    include!(concat!(env!("OUT_DIR"), "/spacet.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/spacet.v1.serde.rs"));
}

pub use generated::*;

/// Encoded descriptors of every proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/spacet_descriptor.bin"));
