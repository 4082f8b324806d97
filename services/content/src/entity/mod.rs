//! sea-orm entities of the content service's tables. Only this crate reads or writes them.

pub mod chunk;
pub mod file_chunk;
pub mod package;
pub mod package_file;
