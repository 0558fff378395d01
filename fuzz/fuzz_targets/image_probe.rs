#![no_main]
// The property is `mxmedia::fuzzing::image_probe`'s; see its documentation.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mxmedia::fuzzing::image_probe(data));
