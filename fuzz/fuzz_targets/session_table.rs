//! `Sessions::load` on arbitrary bytes (the session table of a snapshot): never panics; a table that
//! loads saves and loads back the same, and the bytes after it, applied as session operations, keep the
//! table's invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    drakkar::fuzzing::session_table(data);
});
