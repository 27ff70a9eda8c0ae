//! The KV codec (`Command`, `Query`, `CommandResult`, `QueryResult` decode) on arbitrary bytes: never
//! panics; what decodes re-encodes to bytes that decode to the same value.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    drakkar_kv::fuzzing::codec(data);
});
