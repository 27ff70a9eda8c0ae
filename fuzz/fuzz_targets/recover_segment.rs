//! Recovery of a log whose only segment holds arbitrary bytes: must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    drakkar_logdb::fuzzing::recover_bytes(data);
});
