//! `drakkar_client::codec` (the bounded decoder of every gRPC request) on arbitrary bytes, decoded as
//! every request type of the client API and of the node-to-node protocol (`drakkar_server::peer`, whose
//! codec holds Raft messages to the same walk with its own bounds). Invariants:
//! - it never panics;
//! - what it accepts respects the count limits, and its repeated fields' elements cost at most the
//!   decoding budget of the message's size (the memory model of the wire check, recomputed here from the
//!   decoded message); the heap the decode actually allocates stays within 3x that budget (a `Vec` grows
//!   by doubling) plus twice the message (its bytes and strings are copied);
//! - what it accepts re-encodes, and prost decodes the re-encoding to the same message; the bounded
//!   decoder accepts that canonical encoding exactly when its cost fits the encoding's own budget.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::mem::size_of;
use std::sync::atomic::{AtomicUsize, Ordering};

use drakkar_client::codec::{self, MAX_MEMBERS, MAX_TXN_COMPARES, MAX_TXN_OPS};
use drakkar_client::pb;
use drakkar_server::peer::{codec::bounds_of, pb as peer};
use tonic::Status;
use prost::Message;

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The memory model of the wire check: what the elements of a message's repeated fields cost.
trait Cost {
    fn cost(&self) -> usize;
    /// Whether the count limits hold.
    fn within_limits(&self) -> bool {
        true
    }
}

macro_rules! flat {
    ($($t:ident),*) => { $(impl Cost for pb::$t { fn cost(&self) -> usize { 0 } })* };
}

flat!(
    PutRequest,
    GetRequest,
    DeleteRequest,
    DeleteRangeRequest,
    ScanRequest,
    CompareAndSwapRequest,
    ProposeRequest,
    ReadRequest,
    OpenSessionRequest,
    CloseSessionRequest,
    ProposeInSessionRequest,
    AddReplicaRequest,
    PromoteReplicaRequest,
    RemoveReplicaRequest,
    TransferLeaderRequest,
    GetMembershipRequest,
    StatusRequest,
    ExportSnapshotRequest,
    StopGroupRequest,
    NodeInfoRequest
);

fn elements<T>(v: &[T]) -> usize {
    v.len() * size_of::<T>()
}

impl Cost for pb::TxnRequest {
    fn cost(&self) -> usize {
        elements(&self.compares) + elements(&self.success) + elements(&self.failure)
    }
    fn within_limits(&self) -> bool {
        self.compares.len() <= MAX_TXN_COMPARES
            && self.success.len() <= MAX_TXN_OPS
            && self.failure.len() <= MAX_TXN_OPS
    }
}

impl Cost for pb::StartGroupRequest {
    fn cost(&self) -> usize {
        elements(&self.initial_members)
    }
    fn within_limits(&self) -> bool {
        self.initial_members.len() <= MAX_MEMBERS
    }
}

impl Cost for pb::ImportSnapshotChunk {
    fn cost(&self) -> usize {
        self.target.as_ref().map_or(0, |t| elements(&t.members))
    }
    fn within_limits(&self) -> bool {
        self.target.as_ref().is_none_or(|t| t.members.len() <= MAX_MEMBERS)
    }
}

fn raft_message(m: &peer::RaftMessage) -> usize {
    let membership = m.snapshot.as_ref().and_then(|s| s.membership.as_ref()).map_or(0, |ms| {
        8 * (ms.voters.len() + ms.non_voters.len() + ms.witnesses.len() + ms.removed.len())
    });
    elements(&m.entries) + membership
}

impl Cost for peer::RaftBatch {
    fn cost(&self) -> usize {
        let inner: usize = self.messages.iter().filter_map(|g| g.message.as_ref()).map(raft_message).sum();
        elements(&self.messages) + inner + elements(&self.reused)
    }
}

impl Cost for peer::RaftSnapshotChunk {
    fn cost(&self) -> usize {
        match &self.part {
            Some(peer::raft_snapshot_chunk::Part::Header(h)) => h.message.as_ref().map_or(0, raft_message),
            _ => 0,
        }
    }
}

/// Decodes a message of the node-to-node protocol as its codec does.
fn peer_decode<T: Message + Default + 'static>(bytes: &[u8]) -> Result<T, Status> {
    codec::decode_with(bounds_of(std::any::TypeId::of::<T>()), bytes)
}

/// Checks the invariants on `data` decoded as `T` by `decode` (the decoder of `T`'s protocol).
fn check_with<T: Message + Default + PartialEq + std::fmt::Debug + Cost + 'static>(
    data: &[u8],
    decode: fn(&[u8]) -> Result<T, Status>,
) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let decoded = decode(data);
    let allocated = PEAK.load(Ordering::Relaxed) - before;
    let budget = codec::decoding_budget(data.len());
    let Ok(m) = decoded else { return };
    let name = std::any::type_name::<T>();
    assert!(m.within_limits(), "{name}: accepted past its count limits");
    let cost = m.cost();
    assert!(cost <= budget, "{name}: accepted with elements costing {cost} bytes, budget {budget}");
    assert!(
        allocated <= 3 * cost + 2 * data.len() + 4096,
        "{name}: decoding {} bytes allocated {allocated} bytes (elements {cost})",
        data.len()
    );
    let again = m.encode_to_vec();
    assert_eq!(T::decode(again.as_slice()).as_ref(), Ok(&m), "{name}: the re-encoding decodes differently");
    let fits = cost <= codec::decoding_budget(again.len());
    let accepted = decode(&again);
    assert_eq!(accepted.is_ok(), fits, "{name}: canonical encoding of cost {cost}: {accepted:?}");
}

/// A request type of the client API.
fn check<T: Message + Default + PartialEq + std::fmt::Debug + Cost + 'static>(data: &[u8]) {
    check_with::<T>(data, codec::decode::<T>);
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check::<pb::PutRequest>(data);
    check::<pb::GetRequest>(data);
    check::<pb::DeleteRequest>(data);
    check::<pb::DeleteRangeRequest>(data);
    check::<pb::ScanRequest>(data);
    check::<pb::CompareAndSwapRequest>(data);
    check::<pb::TxnRequest>(data);
    check::<pb::ProposeRequest>(data);
    check::<pb::ReadRequest>(data);
    check::<pb::OpenSessionRequest>(data);
    check::<pb::CloseSessionRequest>(data);
    check::<pb::ProposeInSessionRequest>(data);
    check::<pb::AddReplicaRequest>(data);
    check::<pb::PromoteReplicaRequest>(data);
    check::<pb::RemoveReplicaRequest>(data);
    check::<pb::TransferLeaderRequest>(data);
    check::<pb::GetMembershipRequest>(data);
    check::<pb::StatusRequest>(data);
    check::<pb::ExportSnapshotRequest>(data);
    check::<pb::ImportSnapshotChunk>(data);
    check::<pb::StartGroupRequest>(data);
    check::<pb::StopGroupRequest>(data);
    check::<pb::NodeInfoRequest>(data);
    check_with::<peer::RaftBatch>(data, peer_decode::<peer::RaftBatch>);
    check_with::<peer::RaftSnapshotChunk>(data, peer_decode::<peer::RaftSnapshotChunk>);
});
