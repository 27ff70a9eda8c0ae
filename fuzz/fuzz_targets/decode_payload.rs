//! Record payload decoders (batch, checkpoint, entry) on arbitrary bytes: must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    drakkar_logdb::fuzzing::decode_payloads(data);
});
