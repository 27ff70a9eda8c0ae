//! Hot paths of a node outside Raft: applying KV puts to the in-memory KV store, encoding KV commands,
//! and the gRPC messages (a client's `PutRequest`, a peer batch of Raft appends) encoded and decoded.
//! `cargo bench -p drakkar-server --bench host`

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use drakkar::statemachine::{ConcurrentStateMachine, SmEntry};
use drakkar::transport::MessageBatch;
use drakkar_client::pb;
use drakkar_kv::{Command, MemKv};
use drakkar_raft::{Entry, GroupId, LogIndex, Message, MessageKind, ReplicaId, Term};
use drakkar_server::peer::convert::{batch_from_pb, batch_to_pb};
use prost::Message as _;

fn kv_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("kv");
    const BATCH: u64 = 64;
    group.throughput(Throughput::Elements(BATCH));
    let value = Bytes::from_static(b"0123456789abcdef");
    let cmds: Vec<Bytes> = (0..10_000u64)
        .map(|i| {
            Command::Put { key: Bytes::from(format!("key-{i:012}")), value: value.clone() }
                .encode()
                .expect("encode")
        })
        .collect();
    group.bench_function("memkv_apply_64_puts_16B", |b| {
        let kv = MemKv::new();
        let mut index = 0u64;
        b.iter_batched(
            || {
                (0..BATCH)
                    .map(|_| {
                        index += 1;
                        SmEntry {
                            index: LogIndex(index),
                            cmd: cmds[(index % cmds.len() as u64) as usize].clone(),
                            result: Default::default(),
                        }
                    })
                    .collect::<Vec<_>>()
            },
            |mut entries| kv.update(&mut entries).expect("update"),
            BatchSize::SmallInput,
        );
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("kv_command_encode_put_16B", |b| {
        let key = Bytes::from_static(b"key-000000000042");
        b.iter(|| Command::Put { key: key.clone(), value: value.clone() }.encode().expect("encode"));
    });
    group.finish();
}

fn grpc_messages(c: &mut Criterion) {
    let mut group = c.benchmark_group("grpc");
    let put = pb::PutRequest {
        group: 7,
        key: Bytes::from_static(b"key-000000000042"),
        value: Bytes::from_static(b"0123456789abcdef"),
        session: None,
    };
    group.throughput(Throughput::Elements(1));
    group.bench_function("put_request_encode", |b| b.iter(|| put.encode_to_vec()));
    let encoded = Bytes::from(put.encode_to_vec());
    group.bench_function("put_request_decode", |b| {
        b.iter(|| pb::PutRequest::decode(encoded.clone()).expect("decode"))
    });

    // A peer batch as a busy node sends it: 48 groups, each an append of 16 entries of 16 bytes.
    let entries: Vec<Entry> = (1..=16)
        .map(|i| Entry {
            term: Term(2),
            index: LogIndex(100 + i),
            data: Bytes::from_static(b"0123456789abcdef"),
            ..Default::default()
        })
        .collect();
    let messages = (1..=48)
        .map(|g| {
            let mut m = Message::new(MessageKind::Append, ReplicaId(1), ReplicaId(2), Term(2));
            m.log_term = Term(2);
            m.index = LogIndex(100);
            m.commit = LogIndex(100);
            m.entries = entries.clone();
            (GroupId(g), m)
        })
        .collect();
    let batch = MessageBatch { from: "node-1:7000".into(), incarnation: 42, messages, reused: Vec::new() };
    group.throughput(Throughput::Elements(48 * 16));
    group.bench_function("raft_batch_48x16x16B_encode", |b| b.iter(|| batch_to_pb(&batch).encode_to_vec()));
    let wire = Bytes::from(batch_to_pb(&batch).encode_to_vec());
    group.bench_function("raft_batch_48x16x16B_decode", |b| {
        b.iter(|| batch_from_pb(drakkar_server::peer::pb::RaftBatch::decode(wire.clone()).expect("decode")))
    });
    group.finish();
}

criterion_group!(benches, kv_apply, grpc_messages);
criterion_main!(benches);
