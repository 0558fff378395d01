#![no_main]
// The property is `mxmedia::fuzzing::x_matrix`'s; see its documentation.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mxmedia::fuzzing::x_matrix(data));
