//! The gateway's rules, free of I/O: the command life cycle.

pub mod command;
