//! The one Sneakernet binary as a library: the command line ([`cli`]) and nodes serving any set
//! of roles ([`node`]), so integration tests start exactly what the binary starts; the
//! standalone node's simulated kiosks ([`standalone`], laid out in [`simulated_fleet`]); the
//! walk-up story of `demo` ([`demo`]); `audit` ([`audit`]); `content upload|list`
//! ([`content`]); how operator commands log in ([`operator`]); what their gRPC clients
//! share ([`client`]); and the client commands, the phone app's and the operator's
//! ([`cmd`]).

pub mod audit;
pub mod cli;
pub mod client;
pub mod cmd;
pub mod content;
pub mod demo;
pub mod demo_content;
pub mod node;
pub mod operator;
pub mod simulated_fleet;
pub mod standalone;

pub use node::{Node, NodeRole};
