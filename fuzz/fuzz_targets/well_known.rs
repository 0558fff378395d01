#![no_main]
// The property is `mxmedia::fuzzing::well_known`'s; see its documentation.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mxmedia::fuzzing::well_known(data));
