//! The Sneakernet gRPC contract, generated from the `.proto` files beside this crate.
//!
//! One module per protobuf package (`sneakernet.<service>.v1`). [`FILE_DESCRIPTOR_SET`] holds
//! every file's descriptor, for gRPC server reflection.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// Encoded `FileDescriptorSet` of every Sneakernet `.proto` file (for server reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sneakernet_descriptor.bin"));

/// `sneakernet.auth.v1`: accounts, sessions, kiosk credentials, signing keys.
pub mod auth {
    pub mod v1 {
        tonic::include_proto!("sneakernet.auth.v1");
    }
}
