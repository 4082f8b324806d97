//! Compiles every `.proto` under `sneakernet/` with protox (pure Rust: no system `protoc`) and
//! generates messages, clients and servers with tonic-prost-build. The descriptor set is also
//! written to `OUT_DIR` so the services can serve reflection.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it was compiled: a build script binary can be reused
    // for the same crate checked out elsewhere (another worktree sharing a target directory).
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.as_path();
    let mut files = Vec::new();
    collect_protos(&root.join("sneakernet"), &mut files)?;
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("sneakernet").display()
    );

    let fds = protox::compile(&files, [root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("sneakernet_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        // Unimplemented RPCs answer UNIMPLEMENTED instead of failing to compile, so a service
        // can be served while later issues fill in its RPCs.
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
