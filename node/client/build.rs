//! Compiles the drakkar.v1 protocol with protox (pure Rust, no protoc) and generates the tonic code.

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/drakkar/v1/common.proto",
    "proto/drakkar/v1/kv.proto",
    "proto/drakkar/v1/statemachine.proto",
    "proto/drakkar/v1/session.proto",
    "proto/drakkar/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // For server reflection.
    std::fs::write(out.join("drakkar_descriptor.bin"), fds.encode_to_vec())?;
    // Every service (client and server side) decodes with the bounded codec (src/codec.rs).
    tonic_prost_build::configure().bytes(".").codec_path("crate::codec::ApiCodec").compile_fds(fds)?;
    Ok(())
}
