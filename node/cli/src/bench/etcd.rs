//! The etcd target: an etcd v3 cluster through its gRPC KV API (the generated tonic clients of
//! `crate::etcd`), every request sent to the leader (etcd's fastest path: no forwarding hop), on
//! `connections` HTTP/2 connections. A put is one `KV.Put`; a linearizable get one `KV.Range`, a stale
//! get one `KV.Range` with `serializable` set.

use std::sync::Arc;
use std::time::Duration;

use crate::etcd::etcdserverpb::{
    PutRequest, RangeRequest, StatusRequest, kv_client::KvClient, maintenance_client::MaintenanceClient,
};
use drakkar_client::connect::{self, Connector};
use drakkar_client::request;
use drakkar_client::tls::ClientTls;
use tonic::transport::Channel;

use super::{BenchError, Consistency, Op, Target, bounded};

/// How to reach etcd.
#[derive(Clone)]
pub struct EtcdOptions {
    /// Member client addresses, `host:port`.
    pub endpoints: Vec<String>,
    /// TLS (None: plaintext).
    pub tls: Option<Arc<dyn ClientTls>>,
    /// HTTP/2 connections to the leader.
    pub connections: usize,
}

/// Connections to the etcd leader.
pub struct EtcdTarget {
    conns: Vec<KvClient<Channel>>,
    /// The leader's address.
    pub leader: String,
}

fn setup(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(e.to_string())
}

impl EtcdTarget {
    /// Finds the leader (Maintenance.Status on every endpoint; at most 30 s) and connects to it.
    pub async fn connect(o: &EtcdOptions) -> Result<EtcdTarget, BenchError> {
        if o.endpoints.is_empty() || o.connections == 0 {
            return Err(setup("at least one endpoint and one connection"));
        }
        let connector = Connector::new(o.tls.clone(), Duration::from_secs(5));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let leader = 'found: loop {
            let mut last = String::from("no answer");
            for e in &o.endpoints {
                let e = connect::host_port(e);
                let ch = connect::channel(e, connector.clone()).map_err(setup)?;
                match MaintenanceClient::new(ch)
                    .status(request(StatusRequest {}, Duration::from_secs(5)))
                    .await
                {
                    Ok(s) => {
                        let s = s.into_inner();
                        let me = s.header.map(|h| h.member_id).unwrap_or_default();
                        if s.leader != 0 && s.leader == me {
                            break 'found e.to_string();
                        }
                    }
                    Err(err) => last = format!("{e}: {err}"),
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(setup(format!("no etcd leader among the endpoints after 30 s ({last})")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut conns = Vec::new();
        for _ in 0..o.connections {
            let ch = connect::channel(&leader, connector.clone()).map_err(setup)?;
            conns.push(KvClient::new(ch).max_decoding_message_size(64 << 20));
        }
        Ok(EtcdTarget { conns, leader })
    }
}

fn status(s: tonic::Status) -> BenchError {
    BenchError::Request(format!("{}: {}", s.code(), s.message()))
}

impl Target for EtcdTarget {
    async fn call(&self, slot: usize, op: Op, timeout: Duration) -> Result<(), BenchError> {
        bounded(timeout, self.send(slot, op, timeout)).await
    }
}

impl EtcdTarget {
    /// One request; the server enforces the deadline sent with it, [`bounded`] the rest.
    async fn send(&self, slot: usize, op: Op, timeout: Duration) -> Result<(), BenchError> {
        let mut c = self.conns[slot % self.conns.len()].clone();
        match op {
            Op::Put { key, value, .. } => {
                let r = PutRequest { key, value, ..PutRequest::default() };
                c.put(request(r, timeout)).await.map_err(status)?;
            }
            Op::Get { key, consistency, .. } => {
                let r = RangeRequest {
                    key,
                    serializable: consistency == Consistency::Stale,
                    ..RangeRequest::default()
                };
                c.range(request(r, timeout)).await.map_err(status)?;
            }
        }
        Ok(())
    }
}
