//! The codec of the node-to-node Raft protocol: prost's, with requests walked on the wire against the
//! bounds below before they are decoded (`drakkar_client::codec` explains the walk). Raft batches carry as
//! many messages as the sender merged, so no count limits apply: only the memory budget, which an empty
//! element (2 bytes on the wire, up to 272 in memory) would otherwise blow up.

use std::any::TypeId;
use std::mem::size_of;

use drakkar_client::codec::{BoundedCodec, Bounds, Field, Kind, RequestBounds, Shape};

use super::pb;

/// The generated Raft service's codec (see the module doc).
pub type PeerCodec<T, U> = BoundedCodec<T, U, RaftProtocol>;

/// The Raft service's request types.
#[derive(Debug, Clone, Copy, Default)]
pub struct RaftProtocol;

impl Bounds for RaftProtocol {
    fn of(id: TypeId) -> Option<&'static RequestBounds> {
        bounds_of(id)
    }
}

/// The bounds of a request type of the Raft service; None for any other type (a response).
pub fn bounds_of(id: TypeId) -> Option<&'static RequestBounds> {
    REQUESTS.iter().find(|r| (r.id)() == id)
}

static RAFT_MEMBERSHIP: Shape = Shape::new(&[
    Field { number: 1, name: "voters", kind: Kind::Varints },
    Field { number: 2, name: "non_voters", kind: Kind::Varints },
    Field { number: 3, name: "witnesses", kind: Kind::Varints },
    Field { number: 4, name: "removed", kind: Kind::Varints },
]);

static RAFT_SNAPSHOT: Shape =
    Shape::new(&[Field { number: 3, name: "membership", kind: Kind::Message(&RAFT_MEMBERSHIP) }]);

static RAFT_MESSAGE: Shape = Shape::new(&[
    Field {
        number: 7,
        name: "entries",
        kind: Kind::Messages { max: usize::MAX, size: size_of::<pb::RaftEntry>(), elem: None },
    },
    Field { number: 9, name: "snapshot", kind: Kind::Message(&RAFT_SNAPSHOT) },
]);

static GROUP_MESSAGE: Shape =
    Shape::new(&[Field { number: 2, name: "message", kind: Kind::Message(&RAFT_MESSAGE) }]);

static RAFT_BATCH: Shape = Shape::new(&[
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
]);

static RAFT_SNAPSHOT_HEADER: Shape =
    Shape::new(&[Field { number: 5, name: "message", kind: Kind::Message(&RAFT_MESSAGE) }]);

static RAFT_SNAPSHOT_CHUNK: Shape =
    Shape::new(&[Field { number: 1, name: "header", kind: Kind::Message(&RAFT_SNAPSHOT_HEADER) }]);

/// Every request type of the Raft service, with its bounds.
static REQUESTS: &[RequestBounds] = &[
    RequestBounds { id: TypeId::of::<pb::RaftBatch>, name: "RaftBatch", shape: &RAFT_BATCH },
    RequestBounds {
        id: TypeId::of::<pb::RaftSnapshotChunk>,
        name: "RaftSnapshotChunk",
        shape: &RAFT_SNAPSHOT_CHUNK,
    },
];

#[cfg(test)]
mod tests {
    use drakkar_client::codec::decode_with;
    use prost::Message;

    use super::*;

    fn decode<U: Message + Default + 'static>(bytes: &[u8]) -> Result<U, tonic::Status> {
        decode_with(bounds_of(TypeId::of::<U>()), bytes)
    }

    fn empty_elements(field: u32, n: usize) -> Vec<u8> {
        let tag = (field << 3 | 2) as u8;
        std::iter::repeat_n([tag, 0], n).flatten().collect()
    }

    /// Every input type of the Raft service's methods is bounded, and no output type is.
    #[test]
    fn every_request_type_and_no_response_type_is_listed() {
        let fds = prost_types::FileDescriptorSet::decode(super::super::FILE_DESCRIPTOR_SET).unwrap();
        let methods: Vec<_> = fds.file.iter().flat_map(|f| &f.service).flat_map(|s| &s.method).collect();
        assert_eq!(methods.len(), 2, "{methods:?}");
        let listed: Vec<&str> = REQUESTS.iter().map(|r| r.name).collect();
        for m in &methods {
            let (input, output) = (m.input_type(), m.output_type());
            assert!(listed.iter().any(|l| input.ends_with(&format!(".{l}"))), "{input} is not in REQUESTS");
            assert!(!listed.iter().any(|l| output.ends_with(&format!(".{l}"))), "{output} is a response");
        }
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

    #[test]
    fn responses_are_not_bounded() {
        assert!(bounds_of(TypeId::of::<pb::RaftAck>()).is_none());
        assert!(bounds_of(TypeId::of::<pb::RaftSnapshotAck>()).is_none());
    }
}
