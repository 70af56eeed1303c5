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

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(protos)?;
    let fds = compiler.file_descriptor_set();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("spacet_descriptor.bin");
    // Encoded by protox itself, which keeps the options' extensions (the
    // `google.api.http` rules the gateway and the OpenAPI generator read);
    // prost's `FileDescriptorSet` would drop them.
    fs::write(&descriptor_path, compiler.encode_file_descriptor_set())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_well_known_types(true)
        // Timestamps are written as protojson writes them ("Z", not "+00:00").
        .extern_path(".google.protobuf.Timestamp", "crate::proto::Timestamp")
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;

    pbjson_build::Builder::new()
        .register_descriptors(&fs::read(&descriptor_path)?)?
        .emit_fields()
        // As grpc-gateway v2 by default: unknown fields are discarded (the gateway
        // logs the top-level ones at debug before decoding).
        .ignore_unknown_fields()
        .build(&[".spacet"])?;

    go_compat_client(&out_dir)
}

/// A client generated from the Go service's spacet.v1 contract
/// (`tests/compat/go`), for the compatibility test only: it plays an existing
/// client of the Go service. The library never includes it.
fn go_compat_client(out_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=tests/compat/go");
    let dir = out_dir.join("go_compat");
    fs::create_dir_all(&dir)?;
    let fds = protox::compile(["spacet/v1/spacet.proto"], ["tests/compat/go"])?;
    let descriptor_path = dir.join("descriptor.bin");
    fs::write(&descriptor_path, fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .out_dir(&dir)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&fs::read(&descriptor_path)?)?
        .out_dir(&dir)
        .ignore_unknown_fields()
        .build(&[".spacet"])?;
    Ok(())
}
