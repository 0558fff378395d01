#![no_main]
// The property is `mxmedia::fuzzing::config`'s; see its documentation.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mxmedia::fuzzing::config(data));
