//! The gRPC target: Drakkar nodes over the network with the generated tonic clients (no retries, no
//! sessions: a put is one `Kv.Put`, a get one `Kv.Get`), each group's requests sent to its leader, so no
//! request pays a forwarding hop. `connections` HTTP/2 connections are opened to every node.

use std::sync::Arc;
use std::time::Duration;

use drakkar_client::connect::{self, Connector};
use drakkar_client::pb::{self, kv_client::KvClient};
use drakkar_client::tls::ClientTls;
use drakkar_client::{Client, ClientConfig, request};
use tonic::transport::Channel;

use super::{BenchError, Consistency, Op, Target, bounded};

/// How to reach the nodes.
#[derive(Clone)]
pub struct GrpcOptions {
    /// Node addresses, `host:port`.
    pub endpoints: Vec<String>,
    /// TLS (None: plaintext).
    pub tls: Option<Arc<dyn ClientTls>>,
    /// HTTP/2 connections per node.
    pub connections: usize,
    /// Groups used (1..=groups).
    pub groups: u64,
    /// Move leadership so that group `g` is led by endpoint `(g - 1) % endpoints` first.
    pub spread_leaders: bool,
}

/// Connections to every node and the leader of every group.
pub struct GrpcTarget {
    /// `conns[e][c]`: connection `c` to endpoint `e`.
    conns: Vec<Vec<KvClient<Channel>>>,
    /// `leader[g - 1]`: the endpoint index leading group `g`.
    leader: Vec<usize>,
}

fn setup(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(e.to_string())
}

/// Every group's leader address as the nodes report it (`""` where none is known yet, or no node
/// answered).
async fn leaders(client: &Client, endpoints: &[String], groups: u64) -> Vec<String> {
    let mut out = vec![String::new(); groups as usize];
    for e in endpoints {
        match client.status(e).await {
            Ok(s) => {
                for g in s.groups {
                    if (1..=groups).contains(&g.group) && !g.leader_address.is_empty() {
                        out[(g.group - 1) as usize] = g.leader_address;
                    }
                }
            }
            Err(err) => tracing::debug!(endpoint = %e, error = %err, "status"),
        }
    }
    out
}

/// The replica id endpoint `e` runs for every group.
async fn replicas(client: &Client, endpoint: &str) -> Result<Vec<(u64, u64)>, BenchError> {
    let s = client.status(endpoint).await.map_err(|err| setup(format!("status of {endpoint}: {err}")))?;
    Ok(s.groups.into_iter().map(|g| (g.group, g.replica)).collect())
}

impl GrpcTarget {
    /// Connects, finds (and with `spread_leaders` places) every group's leader. Waits at most 30 s for
    /// every group to have a leader among `endpoints`.
    pub async fn connect(o: &GrpcOptions) -> Result<GrpcTarget, BenchError> {
        if o.endpoints.is_empty() || o.connections == 0 || o.groups == 0 {
            return Err(setup("at least one endpoint, one connection and one group"));
        }
        let endpoints: Vec<String> = o.endpoints.iter().map(|e| connect::host_port(e).to_string()).collect();
        let mut cfg = ClientConfig::new(endpoints.clone());
        cfg.tls = o.tls.clone();
        cfg.exactly_once = false;
        cfg.request_timeout = Duration::from_secs(5);
        let client = Client::new(cfg).map_err(setup)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        if o.spread_leaders {
            spread(&client, &endpoints, o.groups, deadline).await?;
        }
        let leader = loop {
            let addrs = leaders(&client, &endpoints, o.groups).await;
            let found: Vec<Option<usize>> =
                addrs.iter().map(|a| endpoints.iter().position(|e| e == connect::host_port(a))).collect();
            if found.iter().all(Option::is_some) {
                break found.into_iter().flatten().collect::<Vec<_>>();
            }
            if tokio::time::Instant::now() > deadline {
                return Err(setup(format!(
                    "not every group has a leader among the endpoints after 30 s: {addrs:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let connector = Connector::new(o.tls.clone(), Duration::from_secs(5));
        let mut conns = Vec::new();
        for e in &endpoints {
            let mut per = Vec::new();
            for _ in 0..o.connections {
                // One channel is one HTTP/2 connection.
                let ch = connect::channel(e, connector.clone()).map_err(setup)?;
                per.push(KvClient::new(ch).max_decoding_message_size(64 << 20));
            }
            conns.push(per);
        }
        Ok(GrpcTarget { conns, leader })
    }
}

/// Asks for leadership of group `g` on endpoint `(g - 1) % n`; waits until it holds (best effort: a
/// group that does not move within 10 s keeps its leader). Nodes that do not answer yet are asked again
/// until `deadline`.
async fn spread(
    client: &Client,
    endpoints: &[String],
    groups: u64,
    deadline: tokio::time::Instant,
) -> Result<(), BenchError> {
    let mut ids = Vec::new();
    for e in endpoints {
        loop {
            match replicas(client, e).await {
                Ok(r) => break ids.push(r),
                Err(err) if tokio::time::Instant::now() > deadline => return Err(err),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    for g in 1..=groups {
        let home = ((g - 1) % endpoints.len() as u64) as usize;
        let Some(&(_, to)) = ids[home].iter().find(|(grp, _)| *grp == g) else { continue };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let l = leaders(client, endpoints, groups).await;
            if connect::host_port(&l[(g - 1) as usize]) == endpoints[home] {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                tracing::warn!(group = g, "leadership did not move; the group keeps its leader");
                break;
            }
            if let Err(e) = client.transfer_leader(g, to).await {
                tracing::debug!(group = g, error = %e, "transfer refused; retrying");
            }
            // A transfer takes a few heartbeats; asking again at once would only restart it.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

fn status(s: tonic::Status) -> BenchError {
    BenchError::Request(format!("{}: {}", s.code(), s.message()))
}

impl Target for GrpcTarget {
    async fn call(&self, slot: usize, op: Op, timeout: Duration) -> Result<(), BenchError> {
        bounded(timeout, self.send(slot, op, timeout)).await
    }
}

impl GrpcTarget {
    /// One request; the server enforces the deadline sent with it, [`bounded`] the rest.
    async fn send(&self, slot: usize, op: Op, timeout: Duration) -> Result<(), BenchError> {
        let group = match &op {
            Op::Put { group, .. } | Op::Get { group, .. } => *group,
        };
        let per = &self.conns[self.leader[((group - 1) as usize) % self.leader.len()]];
        let mut c = per[slot % per.len()].clone();
        match op {
            Op::Put { group, key, value } => {
                c.put(request(pb::PutRequest { group, key, value, session: None }, timeout))
                    .await
                    .map_err(status)?;
            }
            Op::Get { group, key, consistency } => {
                let consistency = match consistency {
                    Consistency::Linearizable => pb::Consistency::Linearizable,
                    Consistency::Stale => pb::Consistency::Stale,
                } as i32;
                c.get(request(pb::GetRequest { group, key, consistency }, timeout)).await.map_err(status)?;
            }
        }
        Ok(())
    }
}
