//! Properties of documents: the YAML configuration with its `MXMEDIA__`
//! overrides, and what URL previews read (HTML pages, oEmbed answers).

use super::Fields;
use crate::{
    config::Config,
    preview::{
        html::{Found, MAX_DESCRIPTION, MAX_PROPERTIES, MAX_VALUE, PageParser},
        oembed::{MAX_FIELD, open_graph},
    },
};

/// `YAML \0 NAME=value \0 …`: a configuration either loads or says what is
/// wrong (never panics); one that loads prints as YAML that loads again
/// to the same configuration.
pub fn config(data: &[u8]) {
    let mut fields = Fields::new(data);
    let yaml = fields.next_text();
    let mut env = Vec::new();
    while let Some(pair) = fields.next_bytes() {
        let pair = String::from_utf8_lossy(pair);
        let (name, value) = pair.split_once('=').unwrap_or((&pair, ""));
        env.push((name.to_owned(), value.to_owned()));
    }
    let Ok(config) = Config::from_yaml(&yaml, env) else {
        return;
    };
    let printed = serde_norway::to_string(&config).expect("a loaded config prints");
    let again = Config::from_yaml(&printed, []).unwrap_or_else(|e| {
        panic!(
            "printed config does not load: {:?}\n{printed}",
            e.problems()
        )
    });
    let reprinted = serde_norway::to_string(&again).expect("prints again");
    assert_eq!(
        printed, reprinted,
        "a config changed by printing and loading"
    );
}

fn parse(pieces: &[&str]) -> Found {
    let mut parser = PageParser::new();
    for piece in pieces {
        if !parser.write(piece) {
            break;
        }
    }
    parser.finish()
}

/// A page: what is found stays within its caps, and does not depend on how
/// the page was cut into network chunks.
pub fn preview_html(data: &[u8]) {
    let (&first, page) = data.split_first().unwrap_or((&0, &[]));
    let page = String::from_utf8_lossy(page);
    let whole = parse(&[&page]);
    assert!(whole.properties.len() <= MAX_PROPERTIES);
    for (name, value) in &whole.properties {
        assert!(
            value.chars().count() <= MAX_VALUE,
            "{name} of {} chars",
            value.chars().count()
        );
    }
    for value in [&whole.title, &whole.image, &whole.oembed, &whole.base]
        .into_iter()
        .flatten()
    {
        assert!(
            value.chars().count() <= MAX_VALUE,
            "a value of {} chars",
            value.chars().count()
        );
    }
    assert!(whole.text.chars().count() <= MAX_DESCRIPTION);
    // Cut every `first`-th character (at least 1): many small chunks.
    let step = usize::from(first % 64) + 1;
    let bounds: Vec<usize> = page
        .char_indices()
        .map(|(at, _)| at)
        .step_by(step)
        .chain([page.len()])
        .collect();
    let pieces: Vec<&str> = bounds.windows(2).map(|w| &page[w[0]..w[1]]).collect();
    let chunked = parse(&pieces);
    assert_eq!(
        whole, chunked,
        "chunks of {step} characters read differently"
    );
}

/// An oEmbed answer: every value taken stays within its cap.
pub fn oembed(data: &[u8]) {
    let Some(said) = open_graph(data) else {
        return;
    };
    for (name, value) in &said.og {
        assert!(name.starts_with("og:"));
        assert!(
            value.chars().count() <= MAX_FIELD.max(MAX_DESCRIPTION),
            "{name}: {value:?}"
        );
    }
    if let Some(image) = &said.image {
        assert!(image.chars().count() <= MAX_FIELD);
    }
}
