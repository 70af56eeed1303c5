//! Compiles `proto/` with protox (pure Rust, no `protoc`), generates the tonic
//! services and prost messages, and the proto3 JSON serde impls with pbjson.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/spacet/v1/spacet.proto",
        "proto/spacet/v1/events.proto",
        "proto/spacet/v1/rockets.proto",
    ];
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("spacet_descriptor.bin");
    fs::write(&descriptor_path, fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;

    pbjson_build::Builder::new()
        .register_descriptors(&fs::read(&descriptor_path)?)?
        .emit_fields()
        .build(&[".spacet"])?;
    Ok(())
}
