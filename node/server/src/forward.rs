//! Forwarding: a node that does not run a replica of a group passes the request to a node that does.
//!
//! Candidates, in order: the node that answered for the group last time, the configured peers, then every
//! address in the memberships of the groups this node runs. A candidate answering NOT_FOUND (or not
//! reachable) is skipped. Forwarded requests carry `drakkar-forwarded` and are never forwarded again, so
//! a request crosses at most one extra hop.
//!
//! A dead candidate costs little of the request's deadline: connecting gives up after 1 s, and a
//! connection that went silent is closed by HTTP/2 keepalive within 1.5 s (the peer settings,
//! [`crate::peer::PEER_KEEPALIVE`]), failing the call with UNAVAILABLE; the next candidate is then tried,
//! and the failed channel is dropped from the cache, so the next request to that node connects afresh.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use drakkar_client::connect::{self, Connector};
use drakkar_client::{FORWARDED_HEADER, reason};
use drakkar_raft::GroupId;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::status::with_reason;
use crate::NodeHost;
use crate::peer::{PEER_CONNECT_TIMEOUT, PEER_KEEPALIVE};

/// Forwards requests for groups this node does not run.
pub struct Forwarder {
    connector: Connector,
    peers: Vec<String>,
    channels: Mutex<HashMap<String, Channel>>,
    hints: Mutex<HashMap<GroupId, String>>,
}

/// A request marked as forwarded, with a deadline.
pub fn forwarded<M>(msg: M, timeout: Duration) -> tonic::Request<M> {
    let mut r = drakkar_client::request(msg, timeout);
    r.metadata_mut().insert(FORWARDED_HEADER, tonic::metadata::MetadataValue::from_static("1"));
    r
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Forwarder {
    /// Forwards through `connector` (the node's client TLS identity), its connection deadline capped at
    /// [`PEER_CONNECT_TIMEOUT`]; `peers` are tried for groups no local membership mentions.
    pub fn new(connector: Connector, peers: Vec<String>) -> Self {
        let peers = peers.iter().map(|p| connect::host_port(p).to_string()).collect();
        let timeout = connector.timeout().min(PEER_CONNECT_TIMEOUT);
        Forwarder {
            connector: connector.with_timeout(timeout),
            peers,
            channels: Mutex::new(HashMap::new()),
            hints: Mutex::new(HashMap::new()),
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut chans = lock(&self.channels);
        if let Some(c) = chans.get(addr) {
            return Ok(c.clone());
        }
        let c = connect::channel_with(addr, self.connector.clone(), PEER_KEEPALIVE)
            .map_err(|e| Status::unavailable(format!("forwarding to {addr}: {e}")))?;
        chans.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn candidates(&self, host: &NodeHost, group: GroupId) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let me = host.info().address;
        let mut push = |a: &str| {
            if a != me && !out.iter().any(|o| o == a) {
                out.push(a.to_string());
            }
        };
        if let Some(h) = lock(&self.hints).get(&group) {
            push(h);
        }
        for p in &self.peers {
            push(p);
        }
        for g in host.groups() {
            if let Ok(m) = host.membership(g) {
                for a in m.addresses.values() {
                    push(a);
                }
            }
        }
        out
    }

    /// Calls `f` on candidate nodes until one runs the group (answers anything but NOT_FOUND). When none
    /// does: NOT_FOUND `group-not-found` if every candidate answered that it does not run the group;
    /// UNAVAILABLE (no reason) if some could not be reached, as they may run it (a cluster restarting).
    pub async fn forward<T, F, Fut>(&self, host: &NodeHost, group: GroupId, mut f: F) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut unreachable = 0usize;
        for addr in self.candidates(host, group) {
            // An address that cannot be used (stored before addresses were validated) is skipped: it
            // must never turn requests for other groups into errors.
            let ch = match self.channel(&addr) {
                Ok(ch) => ch,
                Err(e) => {
                    tracing::warn!(%addr, group = group.0, error = %e, "forwarding: unusable address");
                    continue;
                }
            };
            match f(ch).await {
                Ok(r) => {
                    lock(&self.hints).insert(group, addr);
                    return Ok(r.into_inner());
                }
                Err(s) if s.code() == Code::NotFound => continue,
                // Not reachable (no reason given by a node): try the next one.
                Err(s) if s.code() == Code::Unavailable && !s.metadata().contains_key("drakkar-reason") => {
                    tracing::debug!(%addr, group = group.0, error = %s, "forwarding: node unreachable");
                    lock(&self.channels).remove(&addr);
                    unreachable += 1;
                    continue;
                }
                Err(s) => {
                    lock(&self.hints).insert(group, addr);
                    return Err(s);
                }
            }
        }
        lock(&self.hints).remove(&group);
        if unreachable > 0 {
            return Err(Status::unavailable(format!(
                "group {group} runs on no node that answered; {unreachable} node(s) that may run it could not be reached"
            )));
        }
        Err(with_reason(
            Code::NotFound,
            format!("group {group} runs neither on this node nor on any node it knows"),
            reason::GROUP_NOT_FOUND,
        ))
    }
}
