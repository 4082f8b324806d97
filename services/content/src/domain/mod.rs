//! The content service's rules, without I/O: what a valid package declaration, upload header
//! and chunk request are, how files are cut into chunks, and what a page token says.

pub mod hash;
pub mod package;
pub mod page_token;
pub mod request;

pub use hash::ContentHash;
pub use package::{CHUNK_SIZE, DeclaredFile, NewPackage, PackageState};
