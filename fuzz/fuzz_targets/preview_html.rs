#![no_main]
// The property is `mxmedia::fuzzing::preview_html`'s; see its documentation.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mxmedia::fuzzing::preview_html(data));
