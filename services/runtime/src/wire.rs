//! Time conversions to and from protobuf well-known types: they live with the contract
//! (`sneakernet_proto::wire`) so the kiosk agent shares them; re-exported here for services.

pub use sneakernet_proto::wire::*;
