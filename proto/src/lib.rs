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

/// `sneakernet.common.v1`: types shared by several services (money, item types, locations).
pub mod common {
    pub mod v1 {
        tonic::include_proto!("sneakernet.common.v1");
    }
}

/// `sneakernet.orders.v1`: offers, rentals, reservations, deposits, the fleet.
pub mod orders {
    pub mod v1 {
        tonic::include_proto!("sneakernet.orders.v1");
    }
}

/// `sneakernet.content.v1`: content packages, uploads, chunk downloads.
pub mod content {
    pub mod v1 {
        tonic::include_proto!("sneakernet.content.v1");
    }
}

/// `sneakernet.gateway.v1`: the kiosk link, device commands, the kiosk event log.
pub mod gateway {
    pub mod v1 {
        tonic::include_proto!("sneakernet.gateway.v1");
    }
}
