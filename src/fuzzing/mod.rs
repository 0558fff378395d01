//! The properties every parser of untrusted input keeps, one function per
//! parser. Each takes raw bytes, runs the parser the way a request would,
//! and panics when a property fails. The fuzz targets in `fuzz/` call these
//! under libFuzzer; `tests/fuzz_corpus.rs` replays the seed corpora and the
//! inputs that once failed through the same functions on every `cargo
//! test`, so a finding stays fixed without the fuzzer.
//!
//! Inputs with several fields separate them with a NUL byte (`Fields`), so
//! seeds stay readable and every mutation still reaches the parser.

// A failed property is a panic, by design: that is what the fuzzer and the
// corpus replay catch.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::single_match_else
)]

mod federation;
mod media;
mod pages;

pub use self::{
    federation::{key_document, multipart, signing_key, srv, well_known, x_matrix},
    media::{disposition, ids, image_probe, range},
    pages::{config, oembed, preview_html},
};

/// A fuzz target: its name (the directory of its corpus) and its check.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order CI runs them.
pub const TARGETS: &[Target] = &[
    ("range", range),
    ("disposition", disposition),
    ("ids", ids),
    ("x_matrix", x_matrix),
    ("key_document", key_document),
    ("signing_key", signing_key),
    ("well_known", well_known),
    ("srv", srv),
    ("multipart", multipart),
    ("image_probe", image_probe),
    ("config", config),
    ("preview_html", preview_html),
    ("oembed", oembed),
];

/// Seeds written for mxmedia that cannot be typed by hand (signed
/// documents and headers, DNS messages, encoded images): each target's
/// name with its inputs. `tests/fuzz_corpus.rs` keeps `fuzz/corpus/` in
/// step with them.
pub fn generated_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut seeds = federation::seeds();
    seeds.extend(media::seeds());
    seeds
}

/// NUL-separated fields of an input; missing fields are empty.
pub(crate) struct Fields<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { rest: Some(data) }
    }

    /// The next field's bytes; `None` once the input is used up.
    pub(crate) fn next_bytes(&mut self) -> Option<&'a [u8]> {
        let data = self.rest?;
        match data.iter().position(|&b| b == 0) {
            Some(at) => {
                self.rest = Some(&data[at + 1..]);
                Some(&data[..at])
            }
            None => {
                self.rest = None;
                Some(data)
            }
        }
    }

    /// The next field as text (invalid UTF-8 replaced).
    pub(crate) fn next_text(&mut self) -> String {
        String::from_utf8_lossy(self.next_bytes().unwrap_or_default()).into_owned()
    }

    /// The next field as a decimal number, or `default`.
    pub(crate) fn next_number(&mut self, default: u64) -> u64 {
        self.next_text().trim().parse().unwrap_or(default)
    }

    /// Everything left, separators included.
    pub(crate) fn rest(self) -> &'a [u8] {
        self.rest.unwrap_or_default()
    }
}

/// Joins fields the way `Fields` splits them (for seeds).
pub(crate) fn join(fields: &[&[u8]]) -> Vec<u8> {
    fields.join(&0u8)
}
