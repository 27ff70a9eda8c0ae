//! The gRPC codec of every `drakkar.v1` service (clients and servers): prost's, with bounded decoding of
//! requests.
//!
//! Decoding a protobuf message materialises every element of its repeated fields: an empty element costs
//! 2 bytes on the wire and 16 to 272 bytes in memory, so a 20 MB request of empty transaction operations
//! would cost gigabytes before any handler could refuse it. [`BoundedCodec`] first walks the wire
//! format of a request (tags, wire types, lengths; nothing is allocated) and refuses it with
//! INVALID_ARGUMENT when a repeated field holds more elements than the request type allows, or when the
//! elements would cost more than [`MAX_INFLATION`] times the message's size (plus [`INFLATION_SLACK`]).
//! Only then does prost decode it. A request that does not decode is INVALID_ARGUMENT too (tonic-prost
//! answers INTERNAL, which `docs/api.md` keeps for storage failures).
//!
//! The limits are per message type, selected by the type's [`TypeId`]: only request types have any, so a
//! client decoding a response (a scan's 10,000 items) is never refused, and a response that does not
//! decode stays INTERNAL (the server's fault, not the caller's).
//!
//! Other protocols reuse the walk with their own [`RequestBounds`] (the node-to-node Raft protocol in
//! `drakkar-server` does): a codec of theirs hands them to [`BoundedDecoder::new`].

use std::any::TypeId;
use std::marker::PhantomData;
use std::mem::size_of;

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
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

/// The request types of a protocol, with their bounds.
pub trait Bounds: Send + 'static {
    /// The bounds of the request type `id`; None for any other type (a response).
    fn of(id: TypeId) -> Option<&'static RequestBounds>;
}

/// The `drakkar.v1` client API's request types.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientApi;

impl Bounds for ClientApi {
    fn of(id: TypeId) -> Option<&'static RequestBounds> {
        request_of(id)
    }
}

/// The codec of the `drakkar.v1` services (the generated code names it).
pub type ApiCodec<T, U> = BoundedCodec<T, U, ClientApi>;

/// A codec for `application/grpc+proto` (prost) whose decoder bounds the requests of protocol `B` (see
/// the module doc).
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U, B = ClientApi> {
    _pd: PhantomData<(T, U, B)>,
}

impl<T, U, B> Default for BoundedCodec<T, U, B> {
    fn default() -> Self {
        BoundedCodec { _pd: PhantomData }
    }
}

impl<T, U, B> Codec for BoundedCodec<T, U, B>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
    B: Bounds,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder::new(B::of(TypeId::of::<U>()))
    }
}

/// Decodes `U`; when `U` is a request type, within its bounds.
#[derive(Debug)]
pub struct BoundedDecoder<U> {
    /// None: `U` is not a request type (a response, decoded by a client).
    request: Option<&'static RequestBounds>,
    _pd: PhantomData<U>,
}

impl<U> BoundedDecoder<U> {
    /// A decoder of `U` held to `bounds`, which must be `U`'s (None: `U` is a response, decoded as prost
    /// does).
    pub fn new(bounds: Option<&'static RequestBounds>) -> Self {
        BoundedDecoder { request: bounds, _pd: PhantomData }
    }
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
fn decode_as<U: Message + Default>(request: Option<&RequestBounds>, mut buf: impl Buf) -> Result<U, Status> {
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

/// Decodes `bytes` as the message `U` exactly as this codec's decoder does: a request type within its
/// bounds (INVALID_ARGUMENT past them, or when it does not decode), any other type as plain prost
/// (INTERNAL when it does not decode). For fuzzing and tests of the bounds.
pub fn decode<U: Message + Default + 'static>(bytes: &[u8]) -> Result<U, Status> {
    decode_as(request_of(TypeId::of::<U>()), bytes)
}

/// Decodes `bytes` as the message `U` held to `bounds` (`U`'s; None: a response), as a
/// [`BoundedDecoder::new`] with them does. For fuzzing and tests of other protocols' bounds.
pub fn decode_with<U: Message + Default>(bounds: Option<&RequestBounds>, bytes: &[u8]) -> Result<U, Status> {
    decode_as(bounds, bytes)
}

/// The most memory, in bytes, the elements of a request's repeated fields may cost when the message is
/// `len` bytes long: [`MAX_INFLATION`] per byte plus [`INFLATION_SLACK`].
pub fn decoding_budget(len: usize) -> usize {
    len.saturating_mul(MAX_INFLATION).saturating_add(INFLATION_SLACK)
}

/// INVALID_ARGUMENT with `drakkar-reason: invalid`.
fn invalid(message: String) -> Status {
    let mut s = Status::invalid_argument(message);
    s.metadata_mut().insert(REASON_HEADER, MetadataValue::from_static(reason::INVALID));
    s
}

/// The bounded fields of a message type. Invariants, checked by [`Shape::new`] when the program is
/// compiled (a shape is a constant): at most [`MAX_FIELDS`] fields, and singular message fields nested
/// less than [`MAX_DEPTH`] deep.
#[derive(Debug)]
pub struct Shape {
    fields: &'static [Field],
}

impl Shape {
    /// A shape of these fields (fields of the message not listed are not bounded). Panics, at compile
    /// time in a constant, past [`MAX_FIELDS`] fields or [`MAX_DEPTH`] levels of nesting.
    pub const fn new(fields: &'static [Field]) -> Shape {
        assert!(fields.len() <= MAX_FIELDS, "a shape holds at most MAX_FIELDS fields");
        let shape = Shape { fields };
        assert!(shape.depth() < MAX_DEPTH, "singular message fields nest deeper than MAX_DEPTH");
        shape
    }

    /// How deep singular message fields nest in this shape.
    const fn depth(&self) -> usize {
        let (mut i, mut max) = (0, 0);
        while i < self.fields.len() {
            let d = match &self.fields[i].kind {
                Kind::Message(s) => 1 + s.depth(),
                Kind::Messages { elem: Some(e), .. } => e.depth(),
                _ => 0,
            };
            if d > max {
                max = d;
            }
            i += 1;
        }
        max
    }
}

/// Most bounded fields in one [`Shape`].
pub const MAX_FIELDS: usize = 4;

/// A bounded field of a message.
#[derive(Debug)]
pub struct Field {
    /// The protobuf field number.
    pub number: u64,
    /// Its name (for messages).
    pub name: &'static str,
    /// What it holds, and its limits.
    pub kind: Kind,
}

/// What a bounded field holds.
#[derive(Debug)]
pub enum Kind {
    /// A repeated message field: at most `max` elements on one occurrence of the enclosing message, each
    /// `size` bytes in memory, each itself walked against `elem`.
    Messages {
        /// Most elements.
        max: usize,
        /// Bytes of memory one element costs (`size_of` the generated type).
        size: usize,
        /// The bounds of each element, if any.
        elem: Option<&'static Shape>,
    },
    /// A repeated varint field (packed or not), 8 bytes in memory per element.
    Varints,
    /// A singular message field, walked against its shape (its memory is part of its parent's).
    Message(&'static Shape),
}

/// The bounds of a request type.
#[derive(Debug)]
pub struct RequestBounds {
    /// The type's id (`TypeId::of::<T>`).
    pub id: fn() -> TypeId,
    /// The protobuf name (for messages, and for the tests that every request type is listed).
    pub name: &'static str,
    /// Its bounded fields.
    pub shape: &'static Shape,
}

const NONE: Shape = Shape::new(&[]);

static TXN: Shape = Shape::new(&[
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
]);

static START_GROUP: Shape = Shape::new(&[Field {
    number: 3,
    name: "initial_members",
    kind: Kind::Messages { max: MAX_MEMBERS, size: size_of::<pb::Member>(), elem: None },
}]);

static IMPORT_TARGET: Shape = Shape::new(&[Field {
    number: 3,
    name: "members",
    kind: Kind::Messages { max: MAX_MEMBERS, size: size_of::<pb::Member>(), elem: None },
}]);

static IMPORT_CHUNK: Shape =
    Shape::new(&[Field { number: 1, name: "target", kind: Kind::Message(&IMPORT_TARGET) }]);

macro_rules! requests {
    ($($ty:ident => $shape:expr),* $(,)?) => {
        /// Every request type of the `drakkar.v1` services, with its bounds.
        static REQUESTS: &[RequestBounds] = &[
            $(RequestBounds { id: TypeId::of::<pb::$ty>, name: stringify!($ty), shape: $shape }),*
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
}

fn request_of(id: TypeId) -> Option<&'static RequestBounds> {
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
fn check(b: &[u8], req: &RequestBounds) -> Result<(), Status> {
    let mut budget = Budget { cost: 0, limit: decoding_budget(b.len()) };
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

/// Deepest nesting of singular message fields a [`Shape`] may have, plus one (4 in the Raft protocol: a
/// snapshot chunk's header.message.snapshot.membership).
pub const MAX_DEPTH: usize = 8;

/// One field's value on the wire, as [`fields`] hands it over.
enum Value<'a> {
    Varint,
    /// A length-delimited payload.
    Bytes(&'a [u8]),
    /// A fixed32 or fixed64.
    Fixed,
}

/// Calls `f` with every top-level field of the message `b` (number, value), in wire order; the content of
/// (deprecated) groups is skipped, as prost skips unknown fields. Malformed when the framing is not valid
/// protobuf (a varint or a length past the end, field number 0, wire type 6 or 7, unbalanced groups).
fn fields<'a>(b: &'a [u8], mut f: impl FnMut(u64, Value<'a>) -> Result<(), Refusal>) -> Result<(), Refusal> {
    let mut pos = 0;
    let mut groups = 0usize;
    while pos < b.len() {
        let key = varint(b, &mut pos).ok_or(Refusal::Malformed)?;
        let (number, wire) = (key >> 3, key & 7);
        if number == 0 {
            return Err(Refusal::Malformed);
        }
        let value = match wire {
            0 => {
                varint(b, &mut pos).ok_or(Refusal::Malformed)?;
                Value::Varint
            }
            1 => {
                skip(b, &mut pos, 8)?;
                Value::Fixed
            }
            2 => {
                let len = varint(b, &mut pos).ok_or(Refusal::Malformed)?;
                let start = pos;
                skip(b, &mut pos, len)?;
                Value::Bytes(&b[start..pos])
            }
            3 => {
                groups += 1;
                continue;
            }
            4 => {
                groups = groups.checked_sub(1).ok_or(Refusal::Malformed)?;
                continue;
            }
            5 => {
                skip(b, &mut pos, 4)?;
                Value::Fixed
            }
            _ => return Err(Refusal::Malformed),
        };
        if groups == 0 {
            f(number, value)?;
        }
    }
    if groups == 0 { Ok(()) } else { Err(Refusal::Malformed) }
}

/// Calls `f` with every occurrence of the singular message field at `path` (field numbers from `b`'s
/// top level down) in the message `b`: the occurrences prost merges into one message.
fn occurrences(
    b: &[u8],
    path: &[u64],
    f: &mut dyn FnMut(&[u8]) -> Result<(), Refusal>,
) -> Result<(), Refusal> {
    let Some((&first, rest)) = path.split_first() else { return f(b) };
    fields(b, |number, value| match value {
        Value::Bytes(p) if number == first => occurrences(p, rest, f),
        _ => Ok(()),
    })
}

/// Walks a message of `shape` in `b`.
fn walk(b: &[u8], shape: &Shape, budget: &mut Budget) -> Result<(), Refusal> {
    walk_at(b, &[], shape, budget)
}

/// Walks the message of `shape` at `path` in `root`: all its occurrences together, since prost merges
/// them into one message (their repeated fields concatenated), so a count limit holds for the merged
/// message, not per occurrence. The elements of a repeated field are separate messages, each walked on
/// its own. Recursion follows the static shapes, which are not recursive, so its depth is bounded.
fn walk_at(root: &[u8], path: &[u64], shape: &Shape, budget: &mut Budget) -> Result<(), Refusal> {
    let mut counts = [0usize; MAX_FIELDS];
    occurrences(root, path, &mut |msg| {
        fields(msg, |number, value| {
            let Some((i, f)) = shape.fields.iter().enumerate().find(|(_, f)| f.number == number) else {
                return Ok(());
            };
            match (value, &f.kind) {
                (Value::Varint, Kind::Varints) => {
                    count(&mut counts, i, 1, usize::MAX, f.name)?;
                    budget.add(size_of::<u64>())
                }
                (Value::Bytes(p), Kind::Varints) => {
                    // Packed: every byte without the continuation bit ends one element.
                    let n = p.iter().filter(|&&x| x < 0x80).count();
                    count(&mut counts, i, n, usize::MAX, f.name)?;
                    budget.add(n.saturating_mul(size_of::<u64>()))
                }
                (Value::Bytes(p), Kind::Messages { max, size, elem }) => {
                    count(&mut counts, i, 1, *max, f.name)?;
                    budget.add(*size)?;
                    match elem {
                        Some(e) => walk(p, e, budget),
                        None => Ok(()),
                    }
                }
                // A singular message: walked below, with its other occurrences. Any other wire type for a
                // known field is prost's to refuse.
                _ => Ok(()),
            }
        })
    })?;
    for f in shape.fields {
        if let Kind::Message(sub) = &f.kind {
            let mut deeper = [0u64; MAX_DEPTH];
            // The static shapes nest at most MAX_DEPTH deep (a unit test checks).
            let Some(slot) = deeper.get_mut(path.len()) else { return Err(Refusal::Malformed) };
            *slot = f.number;
            deeper[..path.len()].copy_from_slice(path);
            walk_at(root, &deeper[..=path.len()], sub, budget)?;
        }
    }
    Ok(())
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

/// A codec sending and receiving message bodies as they are (bytes in, bytes out): for tools and tests
/// that speak gRPC with bodies they build or mutate themselves, such as the hostile-input suites.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

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
        // The client API only: the node-to-node protocol lives with the server (drakkar_server::peer).
        let services: std::collections::BTreeSet<&str> = rpcs.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(services, ["Admin", "Kv", "Session", "StateMachine"].into(), "{services:?}");
        let listed: Vec<&str> = REQUESTS.iter().map(|r| r.name).collect();
        for (svc, method, input, _, output) in &rpcs {
            assert!(listed.contains(&input.as_str()), "{svc}.{method}: {input} is not in REQUESTS");
            assert!(!listed.contains(&output.as_str()), "{svc}.{method}: {output} is a response");
        }
        for name in listed {
            assert!(rpcs.iter().any(|r| r.2 == name), "{name} is no request type");
        }
    }

    #[test]
    fn the_codec_decodes_as_decode_does() {
        let put = pb::PutRequest { group: 3, key: "k".into(), value: "v".into(), session: None };
        let mut dec = BoundedCodec::<pb::PutResponse, pb::PutRequest>::default().decoder();
        let via_codec: pb::PutRequest =
            decode_as(dec.request.take(), put.encode_to_vec().as_slice()).unwrap();
        assert_eq!(via_codec, decode::<pb::PutRequest>(&put.encode_to_vec()).unwrap());
    }

    fn length_delimited(field: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3 | 2) as u8];
        let mut len = payload.len();
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(payload);
        out
    }

    /// Regression: the limits were counted per occurrence of a singular message field, but prost merges
    /// the occurrences (concatenating their repeated fields): two `target`s of 1,024 members each decoded
    /// as one target of 2,048 members.
    #[test]
    fn limits_hold_across_merged_occurrences_of_a_message() {
        let half = length_delimited(1, &empty_elements(3, MAX_MEMBERS / 2 + 1));
        let e = decode::<pb::ImportSnapshotChunk>(&[half.clone(), half.clone()].concat()).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("members"), "{e:?}");
        // One occurrence within the limit, and two whose sum is, pass; prost merges them.
        let quarter = length_delimited(1, &empty_elements(3, MAX_MEMBERS / 4));
        let ok = decode::<pb::ImportSnapshotChunk>(&[quarter.clone(), quarter].concat()).unwrap();
        assert_eq!(ok.target.unwrap().members.len(), MAX_MEMBERS / 2);
        decode::<pb::ImportSnapshotChunk>(&half).unwrap();
        // Interleaved with other fields too.
        let data = length_delimited(2, b"chunk");
        let e = decode::<pb::ImportSnapshotChunk>(&[half.clone(), data, half].concat()).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
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
                let _ = decode::<pb::PutRequest>(body);
            }
        }
    }
}
