#![no_main]
// The property is `mxmedia::fuzzing::key_document`'s; see its documentation.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mxmedia::fuzzing::key_document(data));
