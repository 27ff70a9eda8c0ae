//! The gRPC codec of every `drakkar.v1` service (clients and servers): prost's, with bounded decoding of
//! requests.
//!
//! Decoding a protobuf message materialises every element of its repeated fields: an empty element costs
//! 2 bytes on the wire and 16 to 272 bytes in memory, so a 20 MB request of empty transaction operations
//! used to cost gigabytes before any handler could refuse it. [`BoundedCodec`] first walks the wire
//! format of a request (tags, wire types, lengths; nothing is allocated) and refuses it with
//! INVALID_ARGUMENT when a repeated field holds more elements than the request type allows, or when the
//! elements would cost more than [`MAX_INFLATION`] times the message's size (plus [`INFLATION_SLACK`]).
//! Only then does prost decode it. A request that does not decode is INVALID_ARGUMENT too (tonic-prost
//! answers INTERNAL, which `docs/api.md` keeps for storage failures).
//!
//! The limits are per message type, selected by the type's [`TypeId`]: only request types have any, so a
//! client decoding a response (a scan's 10,000 items) is never refused, and a response that does not
//! decode stays INTERNAL (the server's fault, not the caller's).

use std::any::TypeId;
use std::marker::PhantomData;
use std::mem::size_of;

use bytes::Buf;
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::metadata::MetadataValue;
use tonic_prost::ProstEncoder;

use crate::pb;
use crate::{REASON_HEADER, reason};

/// Most compares in one transaction (`TxnRequest.compares`).
pub const MAX_TXN_COMPARES: usize = 256;
/// Most operations in each branch of a transaction (`TxnRequest.success`, `TxnRequest.failure`).
pub const MAX_TXN_OPS: usize = 1024;
/// Most members in a membership a request lists (`StartGroupRequest.initial_members`,
/// `ImportSnapshotTarget.members`).
pub const MAX_MEMBERS: usize = 1024;
/// Most bytes of memory the elements of a request's repeated fields may cost per byte of the message.
/// Legitimate requests stay below: a Raft heartbeat costs 17 (272 bytes for 16), a batch of the smallest
/// Raft messages about 23.
pub const MAX_INFLATION: usize = 32;
/// Bytes of element memory every request may cost on top of [`MAX_INFLATION`] per byte: covers every
/// request within the count limits above (a transaction at its limits costs 165 KiB).
pub const INFLATION_SLACK: usize = 1 << 20;

/// A codec for `application/grpc+proto` (prost) whose decoder bounds requests (see the module doc).
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        BoundedCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder { request: request_of(TypeId::of::<U>()), _pd: PhantomData }
    }
}

/// Decodes `U`; when `U` is a request type, within its bounds.
#[derive(Debug)]
pub struct BoundedDecoder<U> {
    /// None: `U` is not a request type (a response, decoded by a client).
    request: Option<&'static Request>,
    _pd: PhantomData<U>,
}

impl<U: Message + Default> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        decode_as(self.request, buf).map(Some)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// Decodes a `U` from `buf`, which holds exactly one message; `request`: `U`'s bounds, if a request type.
fn decode_as<U: Message + Default>(request: Option<&Request>, mut buf: impl Buf) -> Result<U, Status> {
    let Some(req) = request else {
        // As tonic-prost does: a response that does not decode is the server's fault.
        return U::decode(buf).map_err(|e| Status::internal(e.to_string()));
    };
    let undecodable = |e: prost::DecodeError| invalid(format!("undecodable {}: {e}", req.name));
    if req.shape.fields.is_empty() {
        return U::decode(buf).map_err(undecodable);
    }
    // tonic's DecodeBuf is one contiguous buffer; the copy only guards against a change of that.
    if buf.chunk().len() == buf.remaining() {
        check(buf.chunk(), req)?;
        return U::decode(buf).map_err(undecodable);
    }
    let whole = buf.copy_to_bytes(buf.remaining());
    check(&whole, req)?;
    U::decode(whole).map_err(undecodable)
}

/// INVALID_ARGUMENT with `drakkar-reason: invalid`.
fn invalid(message: String) -> Status {
    let mut s = Status::invalid_argument(message);
    s.metadata_mut().insert(REASON_HEADER, MetadataValue::from_static(reason::INVALID));
    s
}

/// The bounded fields of a message type. Invariant: at most [`MAX_FIELDS`] fields (a unit test checks).
#[derive(Debug)]
struct Shape {
    fields: &'static [Field],
}

const MAX_FIELDS: usize = 4;

#[derive(Debug)]
struct Field {
    number: u64,
    name: &'static str,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// A repeated message field: at most `max` elements on one occurrence of the enclosing message, each
    /// `size` bytes in memory, each itself walked against `elem`.
    Messages { max: usize, size: usize, elem: Option<&'static Shape> },
    /// A repeated varint field (packed or not), 8 bytes in memory per element.
    Varints,
    /// A singular message field, walked against its shape (its memory is part of its parent's).
    Message(&'static Shape),
}

/// A request type.
#[derive(Debug)]
struct Request {
    id: fn() -> TypeId,
    /// The protobuf name (for messages, and for the test that every request type is listed).
    name: &'static str,
    shape: &'static Shape,
}

const NONE: Shape = Shape { fields: &[] };

static TXN: Shape = Shape {
    fields: &[
        Field {
            number: 2,
            name: "compares",
            kind: Kind::Messages { max: MAX_TXN_COMPARES, size: size_of::<pb::Compare>(), elem: None },
        },
        Field {
            number: 3,
            name: "success",
            kind: Kind::Messages { max: MAX_TXN_OPS, size: size_of::<pb::TxnOp>(), elem: None },
        },
        Field {
            number: 4,
            name: "failure",
            kind: Kind::Messages { max: MAX_TXN_OPS, size: size_of::<pb::TxnOp>(), elem: None },
        },
    ],
};

static START_GROUP: Shape = Shape {
    fields: &[Field {
        number: 3,
        name: "initial_members",
        kind: Kind::Messages { max: MAX_MEMBERS, size: size_of::<pb::Member>(), elem: None },
    }],
};

static IMPORT_TARGET: Shape = Shape {
    fields: &[Field {
        number: 3,
        name: "members",
        kind: Kind::Messages { max: MAX_MEMBERS, size: size_of::<pb::Member>(), elem: None },
    }],
};

static IMPORT_CHUNK: Shape =
    Shape { fields: &[Field { number: 1, name: "target", kind: Kind::Message(&IMPORT_TARGET) }] };

// The Raft service (peers only): no count limits (a batch carries as many messages as the sender
// merged), only the memory budget.
static RAFT_MEMBERSHIP: Shape = Shape {
    fields: &[
        Field { number: 1, name: "voters", kind: Kind::Varints },
        Field { number: 2, name: "non_voters", kind: Kind::Varints },
        Field { number: 3, name: "witnesses", kind: Kind::Varints },
        Field { number: 4, name: "removed", kind: Kind::Varints },
    ],
};

static RAFT_SNAPSHOT: Shape =
    Shape { fields: &[Field { number: 3, name: "membership", kind: Kind::Message(&RAFT_MEMBERSHIP) }] };

static RAFT_MESSAGE: Shape = Shape {
    fields: &[
        Field {
            number: 7,
            name: "entries",
            kind: Kind::Messages { max: usize::MAX, size: size_of::<pb::RaftEntry>(), elem: None },
        },
        Field { number: 9, name: "snapshot", kind: Kind::Message(&RAFT_SNAPSHOT) },
    ],
};

static GROUP_MESSAGE: Shape =
    Shape { fields: &[Field { number: 2, name: "message", kind: Kind::Message(&RAFT_MESSAGE) }] };

static RAFT_BATCH: Shape = Shape {
    fields: &[
        Field {
            number: 4,
            name: "messages",
            kind: Kind::Messages {
                max: usize::MAX,
                size: size_of::<pb::GroupMessage>(),
                elem: Some(&GROUP_MESSAGE),
            },
        },
        Field {
            number: 5,
            name: "reused",
            kind: Kind::Messages { max: usize::MAX, size: size_of::<pb::GroupReplica>(), elem: None },
        },
    ],
};

static RAFT_SNAPSHOT_HEADER: Shape =
    Shape { fields: &[Field { number: 5, name: "message", kind: Kind::Message(&RAFT_MESSAGE) }] };

static RAFT_SNAPSHOT_CHUNK: Shape =
    Shape { fields: &[Field { number: 1, name: "header", kind: Kind::Message(&RAFT_SNAPSHOT_HEADER) }] };

macro_rules! requests {
    ($($ty:ident => $shape:expr),* $(,)?) => {
        /// Every request type of the `drakkar.v1` services, with its bounds.
        static REQUESTS: &[Request] = &[
            $(Request { id: TypeId::of::<pb::$ty>, name: stringify!($ty), shape: $shape }),*
        ];
    };
}

requests! {
    PutRequest => &NONE,
    GetRequest => &NONE,
    DeleteRequest => &NONE,
    DeleteRangeRequest => &NONE,
    ScanRequest => &NONE,
    CompareAndSwapRequest => &NONE,
    TxnRequest => &TXN,
    ProposeRequest => &NONE,
    ReadRequest => &NONE,
    OpenSessionRequest => &NONE,
    CloseSessionRequest => &NONE,
    ProposeInSessionRequest => &NONE,
    AddReplicaRequest => &NONE,
    PromoteReplicaRequest => &NONE,
    RemoveReplicaRequest => &NONE,
    TransferLeaderRequest => &NONE,
    GetMembershipRequest => &NONE,
    StatusRequest => &NONE,
    ExportSnapshotRequest => &NONE,
    ImportSnapshotChunk => &IMPORT_CHUNK,
    StartGroupRequest => &START_GROUP,
    StopGroupRequest => &NONE,
    NodeInfoRequest => &NONE,
    RaftBatch => &RAFT_BATCH,
    RaftSnapshotChunk => &RAFT_SNAPSHOT_CHUNK,
}

fn request_of(id: TypeId) -> Option<&'static Request> {
    REQUESTS.iter().find(|r| (r.id)() == id)
}

/// Why a request was refused before decoding.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// Not valid protobuf framing (a varint or a length past the end, an unknown wire type).
    Malformed,
    /// A repeated field with more elements than allowed.
    TooMany { field: &'static str, max: usize },
    /// The elements would cost more memory than the budget.
    TooCostly { budget: usize },
}

/// Memory the walked elements would cost, against its limit.
struct Budget {
    cost: usize,
    limit: usize,
}

impl Budget {
    fn add(&mut self, bytes: usize) -> Result<(), Refusal> {
        self.cost = self.cost.saturating_add(bytes);
        if self.cost > self.limit { Err(Refusal::TooCostly { budget: self.limit }) } else { Ok(()) }
    }
}

/// Walks the wire format of a `req` message in `b` (see the module doc).
fn check(b: &[u8], req: &Request) -> Result<(), Status> {
    let limit = b.len().saturating_mul(MAX_INFLATION).saturating_add(INFLATION_SLACK);
    let mut budget = Budget { cost: 0, limit };
    walk(b, req.shape, &mut budget).map_err(|r| {
        invalid(match r {
            Refusal::Malformed => format!("undecodable {}: malformed protobuf", req.name),
            Refusal::TooMany { field, max } => {
                format!("{}.{field} holds more than {max} elements", req.name)
            }
            Refusal::TooCostly { budget } => format!(
                "{}: its repeated fields would take over {budget} bytes of memory for a {}-byte message",
                req.name,
                b.len()
            ),
        })
    })
}

/// A varint at `*pos` (advanced past it); None when it runs past the end or over 10 bytes.
fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// `*pos` advanced by `n`, or Malformed past the end.
fn skip(b: &[u8], pos: &mut usize, n: u64) -> Result<(), Refusal> {
    let end = usize::try_from(n).ok().and_then(|n| pos.checked_add(n)).filter(|e| *e <= b.len());
    *pos = end.ok_or(Refusal::Malformed)?;
    Ok(())
}

/// Walks one occurrence of a message of `shape`. Counts are per occurrence; repeated occurrences of a
/// singular field (which protobuf merges) are bounded by the budget. Recursion follows the static shapes,
/// which are not recursive, so its depth is bounded.
fn walk(b: &[u8], shape: &Shape, budget: &mut Budget) -> Result<(), Refusal> {
    let mut counts = [0usize; MAX_FIELDS];
    let mut pos = 0;
    // Nesting of (deprecated) groups: their content is skipped, as prost skips unknown fields.
    let mut groups = 0usize;
    while pos < b.len() {
        let key = varint(b, &mut pos).ok_or(Refusal::Malformed)?;
        let (number, wire) = (key >> 3, key & 7);
        if number == 0 {
            return Err(Refusal::Malformed);
        }
        let field = if groups == 0 {
            shape.fields.iter().enumerate().find(|(_, f)| f.number == number)
        } else {
            None
        };
        match wire {
            0 => {
                varint(b, &mut pos).ok_or(Refusal::Malformed)?;
                if let Some((i, Field { kind: Kind::Varints, .. })) = field {
                    count(&mut counts, i, 1, usize::MAX, "")?;
                    budget.add(size_of::<u64>())?;
                }
            }
            1 => skip(b, &mut pos, 8)?,
            2 => {
                let len = varint(b, &mut pos).ok_or(Refusal::Malformed)?;
                let start = pos;
                skip(b, &mut pos, len)?;
                if let Some((i, f)) = field {
                    element(&b[start..pos], i, f, &mut counts, budget)?;
                }
            }
            3 => groups += 1,
            4 => groups = groups.checked_sub(1).ok_or(Refusal::Malformed)?,
            5 => skip(b, &mut pos, 4)?,
            _ => return Err(Refusal::Malformed),
        }
    }
    if groups == 0 { Ok(()) } else { Err(Refusal::Malformed) }
}

/// Accounts for one length-delimited occurrence `payload` of field `f` (index `i` of its shape).
fn element(
    payload: &[u8],
    i: usize,
    f: &Field,
    counts: &mut [usize; MAX_FIELDS],
    budget: &mut Budget,
) -> Result<(), Refusal> {
    match &f.kind {
        Kind::Messages { max, size, elem } => {
            count(counts, i, 1, *max, f.name)?;
            budget.add(*size)?;
            if let Some(e) = elem {
                walk(payload, e, budget)?;
            }
            Ok(())
        }
        Kind::Varints => {
            // Packed: every byte without the continuation bit ends one element.
            let n = payload.iter().filter(|&&x| x < 0x80).count();
            count(counts, i, n, usize::MAX, f.name)?;
            budget.add(n.saturating_mul(size_of::<u64>()))
        }
        Kind::Message(sub) => walk(payload, sub, budget),
    }
}

fn count(
    counts: &mut [usize; MAX_FIELDS],
    i: usize,
    n: usize,
    max: usize,
    field: &'static str,
) -> Result<(), Refusal> {
    let Some(c) = counts.get_mut(i) else { return Ok(()) };
    *c = c.saturating_add(n);
    if *c > max { Err(Refusal::TooMany { field, max }) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn shapes() -> Vec<&'static Shape> {
        let mut out: Vec<&'static Shape> = REQUESTS.iter().map(|r| r.shape).collect();
        let mut i = 0;
        while i < out.len() {
            for f in out[i].fields {
                match &f.kind {
                    Kind::Messages { elem: Some(e), .. } | Kind::Message(e) => out.push(e),
                    _ => {}
                }
            }
            i += 1;
        }
        out
    }

    #[test]
    fn shapes_fit_the_count_array() {
        for s in shapes() {
            assert!(s.fields.len() <= MAX_FIELDS, "{s:?}");
        }
    }

    /// The `rpc` lines of the .proto files: (service, method, input type, client streaming, output type).
    fn rpcs() -> Vec<(String, String, String, bool, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/drakkar/v1");
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            let mut service = String::new();
            for line in text.lines().map(str::trim) {
                if let Some(s) = line.strip_prefix("service ") {
                    service = s.trim_end_matches('{').trim().to_string();
                }
                let Some(rest) = line.strip_prefix("rpc ") else { continue };
                let parts: Vec<&str> =
                    rest.split(['(', ')']).map(str::trim).filter(|p| !p.is_empty()).collect();
                let (method, input, output) = (parts[0], parts[1], parts[3]);
                let streaming = input.starts_with("stream ");
                let input = input.trim_start_matches("stream ").to_string();
                let output = output.trim_start_matches("stream ").to_string();
                out.push((service.clone(), method.to_string(), input, streaming, output));
            }
        }
        out
    }

    #[test]
    fn every_request_type_and_no_response_type_is_listed() {
        let rpcs = rpcs();
        assert!(rpcs.len() > 20, "{rpcs:?}");
        let listed: Vec<&str> = REQUESTS.iter().map(|r| r.name).collect();
        for (svc, method, input, _, output) in &rpcs {
            assert!(listed.contains(&input.as_str()), "{svc}.{method}: {input} is not in REQUESTS");
            assert!(!listed.contains(&output.as_str()), "{svc}.{method}: {output} is a response");
        }
        for name in listed {
            assert!(rpcs.iter().any(|r| r.2 == name), "{name} is no request type");
        }
    }

    fn decode<U: Message + Default + Send + 'static>(bytes: &[u8]) -> Result<U, Status> {
        let dec = BoundedCodec::<pb::PutResponse, U>::default().decoder();
        decode_as(dec.request, bytes)
    }

    fn empty_elements(field: u32, n: usize) -> Vec<u8> {
        let tag = (field << 3 | 2) as u8;
        std::iter::repeat_n([tag, 0], n).flatten().collect()
    }

    #[test]
    fn transactions_over_the_count_limits_are_refused() {
        let ok = [
            empty_elements(2, MAX_TXN_COMPARES),
            empty_elements(3, MAX_TXN_OPS),
            empty_elements(4, MAX_TXN_OPS),
        ]
        .concat();
        decode::<pb::TxnRequest>(&ok).unwrap();
        for (field, max) in [(2, MAX_TXN_COMPARES), (3, MAX_TXN_OPS), (4, MAX_TXN_OPS)] {
            let e = decode::<pb::TxnRequest>(&empty_elements(field, max + 1)).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains(&format!("more than {max}")), "{e:?}");
        }
        // Split across the message: the count is the field's total.
        let split = [empty_elements(3, 600), empty_elements(2, 1), empty_elements(3, 600)].concat();
        assert_eq!(decode::<pb::TxnRequest>(&split).unwrap_err().code(), Code::InvalidArgument);
    }

    #[test]
    fn responses_are_never_bounded() {
        let items = empty_elements(1, 100_000);
        let r = decode::<pb::ScanResponse>(&items).unwrap();
        assert_eq!(r.items.len(), 100_000);
        // A response that does not decode is INTERNAL; a request, INVALID_ARGUMENT.
        assert_eq!(decode::<pb::ScanResponse>(&[0x0a, 5, 1]).unwrap_err().code(), Code::Internal);
        assert_eq!(decode::<pb::PutRequest>(&[0x12, 5, 1]).unwrap_err().code(), Code::InvalidArgument);
    }

    #[test]
    fn nested_members_and_malformed_framing_are_refused() {
        let members = empty_elements(3, MAX_MEMBERS + 1);
        let mut chunk = vec![0x0a];
        let mut len = members.len();
        while len >= 0x80 {
            chunk.push((len as u8) | 0x80);
            len >>= 7;
        }
        chunk.push(len as u8);
        chunk.extend_from_slice(&members);
        let e = decode::<pb::ImportSnapshotChunk>(&chunk).unwrap_err();
        assert!(e.message().contains("members"), "{e:?}");
        assert_eq!(decode::<pb::StartGroupRequest>(&members).unwrap_err().code(), Code::InvalidArgument);
        // A length past the end, a truncated varint, wire types 6 and 7, an unclosed group.
        for bad in [&[0x12u8, 9, 1][..], &[0x08, 0x80], &[0x0e], &[0x0f], &[0x0b]] {
            let e = decode::<pb::TxnRequest>(bad).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
        }
        // Unknown fields (and groups) are skipped, as prost does.
        decode::<pb::TxnRequest>(&[0x78, 1, 0x7b, 0x08, 1, 0x7c]).unwrap();
    }

    #[test]
    fn raft_batches_are_held_to_the_memory_budget() {
        // A realistic batch of heartbeats passes.
        let hb = pb::GroupMessage {
            group: 1,
            message: Some(pb::RaftMessage {
                kind: 7,
                from: 1,
                to: 2,
                term: 1,
                commit: 5,
                ..Default::default()
            }),
        };
        let batch = pb::RaftBatch { messages: vec![hb; 100_000], ..Default::default() };
        let r = decode::<pb::RaftBatch>(&batch.encode_to_vec()).unwrap();
        assert_eq!(r.messages.len(), 100_000);
        // Empty messages, 2 bytes each, do not.
        let e = decode::<pb::RaftBatch>(&empty_elements(4, 1_000_000)).unwrap_err();
        assert!(e.message().contains("memory"), "{e:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// The wire walk never panics on any body, and agrees with prost: a transaction it lets through
        /// decodes within the count limits.
        #[test]
        fn arbitrary_bodies_never_panic_and_accepted_ones_keep_the_limits(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
            flips in proptest::collection::vec((0usize..8192, 0u8..8), 0..8),
        ) {
            // Random bytes, and a valid transaction with bits flipped and cut short.
            let mut txn = pb::TxnRequest {
                group: 1,
                compares: vec![pb::Compare::default(); 3],
                success: vec![pb::TxnOp::default(); 5],
                failure: vec![pb::TxnOp::default(); 2],
                session: None,
            }
            .encode_to_vec();
            for (at, bit) in &flips {
                let i = at % txn.len();
                txn[i] ^= 1 << bit;
            }
            txn.truncate(txn.len().saturating_sub(data.len() % 4));
            for body in [&data, &txn] {
                if let Ok(t) = decode::<pb::TxnRequest>(body) {
                    proptest::prop_assert!(t.compares.len() <= MAX_TXN_COMPARES);
                    proptest::prop_assert!(t.success.len() <= MAX_TXN_OPS && t.failure.len() <= MAX_TXN_OPS);
                }
                let _ = decode::<pb::StartGroupRequest>(body);
                let _ = decode::<pb::ImportSnapshotChunk>(body);
                let _ = decode::<pb::RaftBatch>(body);
                let _ = decode::<pb::PutRequest>(body);
            }
        }
    }
}
