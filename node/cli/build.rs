//! Compiles the etcd v3 client (`proto/etcd-v3`, copied from the `etcd-client` crate, see its README) with
//! protox (pure Rust, no protoc): `drakkar bench etcd` drives etcd with the same load generator.

/// The etcd v3 files the KV and Maintenance clients need (their imports are found under the same root).
const ETCD_PROTOS: &[&str] = &["etcd/api/etcdserverpb/rpc.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/etcd-v3");
    let fds = protox::compile(ETCD_PROTOS, ["proto/etcd-v3"])?;
    tonic_prost_build::configure().build_server(false).bytes(".").compile_fds(fds)?;
    Ok(())
}
