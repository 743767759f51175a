//! Compiles the gRPC contract with protox (pure Rust: no system protoc) and tonic-prost-build.

use std::path::PathBuf;

use protox::prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());
    let fds = protox::compile(["platform/iam/v1/iam_service.proto"], [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Served by gRPC reflection.
    std::fs::write(out_dir.join("iam_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
