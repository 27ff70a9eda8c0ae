//! Recovery of a log of arbitrary records wrapped in valid frames (so payloads pass the checksums and
//! reach replay): must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    drakkar_logdb::fuzzing::recover_records(data);
});
