#![no_main]
// The property is `mxmedia::fuzzing::ids`'s; see its documentation.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mxmedia::fuzzing::ids(data));
