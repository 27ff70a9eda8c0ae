//! # drakkar-cli
//!
//! The `drakkar` binary's library: the command line ([`cli`]: `serve`, `dev`, `kv`, `admin`, `cert`,
//! `bench`, `check`) and the load generator behind `drakkar bench` ([`bench`]: gRPC, embedded and etcd
//! targets).

pub mod bench;
pub mod cli;

/// The etcd v3 protocol (client side only), compiled from `proto/etcd-v3` (copied from the `etcd-client`
/// crate, see its README): lets `drakkar bench` drive etcd with the same load generator.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod etcd {
    /// `etcdserverpb`: the KV, Watch, Lease, Cluster, Maintenance and Auth services.
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    /// `mvccpb`: key-value pairs and events.
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// `authpb`: users and roles.
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
}
