//! Conversions between the KV protocol messages and the KV state machine's commands and results.

use drakkar_client::pb;
use tonic::Status;

use super::status::invalid;
use drakkar_kv::{
    CasExpect, CasNew, Compare, CompareOp, CompareTarget, KeyMeta, KeyRange, KeyValue, Op, OpResult,
};

pub(super) fn meta(m: KeyMeta) -> pb::KeyMeta {
    pb::KeyMeta { version: m.version, mod_index: m.mod_index, create_index: m.create_index }
}

pub(super) fn kv(k: KeyValue) -> pb::KeyValue {
    pb::KeyValue { key: k.key, value: k.value, meta: Some(meta(k.meta)) }
}

pub(super) fn range(r: Option<pb::KeyRange>) -> Result<KeyRange, Status> {
    match r.and_then(|r| r.kind) {
        Some(pb::key_range::Kind::Prefix(p)) => Ok(KeyRange::Prefix(p)),
        Some(pb::key_range::Kind::Span(s)) => Ok(KeyRange::Span { start: s.start, end: s.end }),
        None => Err(invalid("a key range (prefix or span) is required")),
    }
}

pub(super) fn cas_expect(e: Option<pb::compare_and_swap_request::Expected>) -> Result<CasExpect, Status> {
    use pb::compare_and_swap_request::Expected;
    match e {
        Some(Expected::ExpectedValue(v)) => Ok(CasExpect::Value(v)),
        Some(Expected::ExpectedVersion(v)) => Ok(CasExpect::Version(v)),
        Some(Expected::ExpectedAbsent(_)) => Ok(CasExpect::Absent),
        None => Err(invalid("compare-and-swap needs an expectation (value, version or absent)")),
    }
}

pub(super) fn cas_new(n: Option<pb::compare_and_swap_request::New>) -> Result<CasNew, Status> {
    use pb::compare_and_swap_request::New;
    match n {
        Some(New::PutValue(v)) => Ok(CasNew::Put(v)),
        Some(New::Delete(_)) => Ok(CasNew::Delete),
        None => Err(invalid("compare-and-swap needs a new state (put_value or delete)")),
    }
}

pub(super) fn compare(c: pb::Compare) -> Result<Compare, Status> {
    use pb::compare::Target;
    let op = match pb::CompareOp::try_from(c.op) {
        Ok(pb::CompareOp::Equal) => CompareOp::Eq,
        Ok(pb::CompareOp::NotEqual) => CompareOp::Ne,
        Ok(pb::CompareOp::Less) => CompareOp::Lt,
        Ok(pb::CompareOp::Greater) => CompareOp::Gt,
        Err(_) => return Err(invalid(format!("unknown compare operator {}", c.op))),
    };
    let target = match c.target {
        Some(Target::Value(v)) => CompareTarget::Value(v),
        Some(Target::Version(v)) => CompareTarget::Version(v),
        Some(Target::ModIndex(v)) => CompareTarget::ModIndex(v),
        Some(Target::CreateIndex(v)) => CompareTarget::CreateIndex(v),
        Some(Target::Exists(v)) => CompareTarget::Exists(v),
        None => return Err(invalid("a compare needs a target")),
    };
    Ok(Compare { key: c.key, op, target })
}

pub(super) fn op(o: pb::TxnOp) -> Result<Op, Status> {
    use pb::txn_op::Op as P;
    match o.op {
        Some(P::Put(p)) => Ok(Op::Put { key: p.key, value: p.value }),
        Some(P::Delete(key)) => Ok(Op::Delete { key }),
        Some(P::DeleteRange(r)) => Ok(Op::DeleteRange { range: range(Some(r))? }),
        Some(P::Get(key)) => Ok(Op::Get { key }),
        None => Err(invalid("an empty transaction operation")),
    }
}

pub(super) fn op_result(r: OpResult) -> pb::TxnOpResult {
    use pb::txn_op_result::Result as R;
    let result = match r {
        OpResult::Put { prev, new } => R::Put(pb::PutResponse { prev: prev.map(meta), new: Some(meta(new)) }),
        OpResult::Delete { prev } => R::Delete(pb::DeleteResponse { prev: prev.map(meta) }),
        OpResult::DeleteRange { deleted } => R::DeleteRange(pb::DeleteRangeResponse { deleted }),
        OpResult::Get(k) => R::Get(pb::GetResponse { kv: k.map(kv) }),
    };
    pb::TxnOpResult { result: Some(result) }
}
