#![no_main]
// The property is `mxmedia::fuzzing::oembed`'s; see its documentation.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mxmedia::fuzzing::oembed(data));
