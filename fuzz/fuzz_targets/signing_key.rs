#![no_main]
// The property is `mxmedia::fuzzing::signing_key`'s; see its documentation.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mxmedia::fuzzing::signing_key(data));
