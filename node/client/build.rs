//! Compiles the drakkar.v1 protocol with protox (pure Rust, no protoc) and generates the tonic code; with
//! the `etcd` feature also the etcd v3 client (proto/etcd-v3, for `drakkar bench`).

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/drakkar/v1/common.proto",
    "proto/drakkar/v1/kv.proto",
    "proto/drakkar/v1/statemachine.proto",
    "proto/drakkar/v1/session.proto",
    "proto/drakkar/v1/admin.proto",
    "proto/drakkar/v1/raft.proto",
];

/// The etcd v3 files the KV and Maintenance clients need (their imports are found under the same root).
const ETCD_PROTOS: &[&str] = &["etcd/api/etcdserverpb/rpc.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // For server reflection.
    std::fs::write(out.join("drakkar_descriptor.bin"), fds.encode_to_vec())?;
    // Every service (client and server side) decodes with the bounded codec (src/codec.rs).
    tonic_prost_build::configure().bytes(".").codec_path("crate::codec::BoundedCodec").compile_fds(fds)?;
    if std::env::var_os("CARGO_FEATURE_ETCD").is_some() {
        println!("cargo:rerun-if-changed=proto/etcd-v3");
        let fds = protox::compile(ETCD_PROTOS, ["proto/etcd-v3"])?;
        tonic_prost_build::configure().build_server(false).bytes(".").compile_fds(fds)?;
    }
    Ok(())
}
