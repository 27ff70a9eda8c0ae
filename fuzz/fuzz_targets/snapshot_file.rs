//! A snapshot file of arbitrary bytes, as is and with a valid checksum appended, opened as a recovering
//! replica does (`verify_snapshot`, `open_snapshot`, `Sessions::load`, `read_through`): never panics,
//! never allocates without bound (`-rss_limit_mb`); a file that verifies opens with the same header.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    drakkar::fuzzing::snapshot_file(data);
});
