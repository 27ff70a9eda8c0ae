//! The peer transport's gRPC-to-Raft conversion (`drakkar_server::peer::convert`) of a `RaftBatch` and
//! of a snapshot stream's header, decoded from arbitrary bytes by the peer service's codec: never
//! panics; exactly the messages of known kinds (and entry kinds) convert, keeping every field.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    drakkar_server::fuzzing::raft_batch(data);
    drakkar_server::fuzzing::snapshot_chunk(data);
});
