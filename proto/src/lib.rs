//! The Sneakernet gRPC contract, generated from the `.proto` files beside this crate.
//!
//! One module per protobuf package (`sneakernet.<service>.v1`). [`FILE_DESCRIPTOR_SET`] holds
//! every file's descriptor, for gRPC server reflection. Beside the generated code, the rules
//! of the contract that both ends of the kiosk link apply: [`ids`] (checked id types),
//! [`wire`] (time conversions), [`link_rules`] (what a kiosk message must be) and [`qr`] (the
//! kiosk QR payload a kiosk's screen shows and orders checks).

pub mod content_rules;
pub mod ids;
pub mod link_rules;
pub mod qr;
pub mod wire;

/// Encoded `FileDescriptorSet` of every Sneakernet `.proto` file (for server reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sneakernet_descriptor.bin"));

/// `sneakernet.auth.v1`: accounts, sessions, kiosk credentials, signing keys.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod auth {
    pub mod v1 {
        tonic::include_proto!("sneakernet.auth.v1");
    }
}

/// `sneakernet.common.v1`: types shared by several services (money, item types, locations).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod common {
    pub mod v1 {
        tonic::include_proto!("sneakernet.common.v1");
    }
}

/// `sneakernet.orders.v1`: offers, rentals, reservations, deposits, the fleet.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod orders {
    pub mod v1 {
        tonic::include_proto!("sneakernet.orders.v1");
    }
}

/// `sneakernet.content.v1`: content packages, uploads, chunk downloads.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod content {
    pub mod v1 {
        tonic::include_proto!("sneakernet.content.v1");
    }
}

/// `sneakernet.gateway.v1`: the kiosk link, device commands, the kiosk event log.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod gateway {
    pub mod v1 {
        tonic::include_proto!("sneakernet.gateway.v1");
    }
}
