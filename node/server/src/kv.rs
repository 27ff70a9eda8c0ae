//! The Kv service over the built-in KV state machine.

use drakkar_client::pb::{self, kv_client::KvClient};
use std::sync::Arc;
use tonic::{Request, Response, Status};

use super::ServerState;
use super::kv_proto::{self, meta};
use super::ops::unexpected;
use drakkar_kv::{Command, CommandResult, Query, QueryResult, Txn};

/// The Kv service.
pub(super) struct KvService(pub(super) Arc<ServerState>);

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let (s, call, r, g) = serve_or_forward!(self, req, true, KvClient, put);
        let cmd = Command::Put { key: r.key, value: r.value };
        match s.propose_kv(g, &cmd, r.session, call.timeout).await? {
            CommandResult::Put { prev, new } => {
                Ok(Response::new(pb::PutResponse { prev: prev.map(meta), new: Some(meta(new)) }))
            }
            other => Err(unexpected("put", other)),
        }
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let (s, call, r, g) = serve_or_forward!(self, req, true, KvClient, get);
        match s.query_kv(g, &Query::Get { key: r.key }, r.consistency, call.timeout).await? {
            QueryResult::Get(item) => Ok(Response::new(pb::GetResponse { kv: item.map(kv_proto::kv) })),
            other => Err(unexpected("get", other)),
        }
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let (s, call, r, g) = serve_or_forward!(self, req, true, KvClient, delete);
        match s.propose_kv(g, &Command::Delete { key: r.key }, r.session, call.timeout).await? {
            CommandResult::Delete { prev } => Ok(Response::new(pb::DeleteResponse { prev: prev.map(meta) })),
            other => Err(unexpected("delete", other)),
        }
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let (s, call, r, g) = serve_or_forward!(self, req, true, KvClient, delete_range);
        let cmd = Command::DeleteRange { range: kv_proto::range(r.range)? };
        match s.propose_kv(g, &cmd, r.session, call.timeout).await? {
            CommandResult::DeleteRange { deleted } => Ok(Response::new(pb::DeleteRangeResponse { deleted })),
            other => Err(unexpected("delete_range", other)),
        }
    }

    async fn scan(&self, req: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        let (s, call, r, g) = serve_or_forward!(self, req, true, KvClient, scan);
        let q = Query::Scan { range: kv_proto::range(r.range)?, limit: r.limit, keys_only: r.keys_only };
        match s.query_kv(g, &q, r.consistency, call.timeout).await? {
            QueryResult::Scan { items, more } => Ok(Response::new(pb::ScanResponse {
                items: items.into_iter().map(kv_proto::kv).collect(),
                more,
            })),
            other => Err(unexpected("scan", other)),
        }
    }

    async fn compare_and_swap(
        &self,
        req: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        let (s, call, r, g) = serve_or_forward!(self, req, true, KvClient, compare_and_swap);
        let cmd = Command::CompareAndSwap {
            key: r.key,
            expected: kv_proto::cas_expect(r.expected)?,
            new: kv_proto::cas_new(r.new)?,
        };
        match s.propose_kv(g, &cmd, r.session, call.timeout).await? {
            CommandResult::CompareAndSwap { succeeded, prev } => {
                Ok(Response::new(pb::CompareAndSwapResponse { succeeded, prev: prev.map(kv_proto::kv) }))
            }
            other => Err(unexpected("compare_and_swap", other)),
        }
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let (s, call, r, g) = serve_or_forward!(self, req, true, KvClient, txn);
        let txn = Txn {
            compares: r.compares.into_iter().map(kv_proto::compare).collect::<Result<_, _>>()?,
            success: r.success.into_iter().map(kv_proto::op).collect::<Result<_, _>>()?,
            failure: r.failure.into_iter().map(kv_proto::op).collect::<Result<_, _>>()?,
        };
        match s.propose_kv(g, &Command::Txn(txn), r.session, call.timeout).await? {
            CommandResult::Txn { succeeded, results } => Ok(Response::new(pb::TxnResponse {
                succeeded,
                results: results.into_iter().map(kv_proto::op_result).collect(),
            })),
            other => Err(unexpected("txn", other)),
        }
    }
}
