//! Compiles the node-to-node protocol (`proto/drakkar/v1/raft.proto`) with protox (pure Rust, no protoc)
//! and generates its tonic code, decoding with the bounded codec of `peer::codec`.

use prost::Message;

const PROTOS: &[&str] = &["proto/drakkar/v1/raft.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // For server reflection, beside the client API's descriptors.
    std::fs::write(out.join("drakkar_raft_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().bytes(".").codec_path("crate::peer::codec::PeerCodec").compile_fds(fds)?;
    Ok(())
}
