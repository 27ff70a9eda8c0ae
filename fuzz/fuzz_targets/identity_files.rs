//! The files a node reads at start, of arbitrary bytes: the data directory's incarnation id
//! (`NODEHOST.id`), the `peers` file and the server's `groups.manifest`: never panic; a bad file is an
//! error naming it; a manifest that parses writes back to one that parses the same.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    drakkar::fuzzing::identity_files(data);
    drakkar_server::fuzzing::manifest(data);
});
