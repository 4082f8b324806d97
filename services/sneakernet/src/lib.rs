//! The one Sneakernet binary as a library: the command line ([`cli`]) and nodes serving any set
//! of roles ([`node`]), so integration tests start exactly what the binary starts.

pub mod cli;
pub mod node;

pub use node::{Node, NodeRole};
