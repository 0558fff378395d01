#![no_main]
// The property is `mxmedia::fuzzing::disposition`'s; see its documentation.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mxmedia::fuzzing::disposition(data));
