//! Memberships from arbitrary bytes: `ConfChange::decode` and the engine's decoding of its context
//! (proposal key, expected conf index, address), and `SnapshotHeader::decode` (a membership with
//! addresses): never panic; what decodes re-encodes to what decodes the same.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    drakkar::fuzzing::membership(data);
});
