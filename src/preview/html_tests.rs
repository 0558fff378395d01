use super::*;
use crate::preview::charset::encoding_of;

fn parse(page: &str, chunk: usize) -> Found {
    let mut parser = PageParser::new();
    let bytes = page.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        let mut end = (at + chunk).min(bytes.len());
        while !page.is_char_boundary(end) {
            end += 1;
        }
        parser.write(&page[at..end]);
        at = end;
    }
    parser.finish()
}

const ARTICLE: &str = r#"<!doctype html><html><head>
<meta charset="utf-8"><title>  An article
 about things </title>
<meta property="og:title" content="The article's title">
<meta property="og:description" content="What it is about">
<meta property="og:image" content="/images/lead.jpg">
<meta name="twitter:card" content="summary">
<meta name="description" content="Plain description">
<link rel="alternate" type="application/json+oembed" href="https://example.org/oembed?url=x">
<base href="https://cdn.example.org/">
</head><body><img src="pixel.gif" width="1" height="1"><img src="data:image/png;base64,xx">
<img src="/big.png" width="600"><p>First   paragraph
text.</p><p>Second.</p></body></html>"#;

#[test]
fn an_article_gives_its_properties_whatever_the_chunking() {
    for chunk in [1, 7, 64, 100_000] {
        let found = parse(ARTICLE, chunk);
        assert_eq!(
            found.property("og:title"),
            Some("The article's title"),
            "{chunk}"
        );
        assert_eq!(found.property("og:description"), Some("What it is about"));
        assert_eq!(found.property("og:image"), Some("/images/lead.jpg"));
        assert_eq!(found.property("twitter:card"), Some("summary"));
        assert_eq!(found.property("description"), Some("Plain description"));
        assert_eq!(found.title.as_deref(), Some("An article\n about things"));
        assert_eq!(found.image.as_deref(), Some("/big.png"));
        assert_eq!(
            found.oembed.as_deref(),
            Some("https://example.org/oembed?url=x")
        );
        assert_eq!(found.base.as_deref(), Some("https://cdn.example.org/"));
        assert_eq!(found.text, "First paragraph text. Second.");
        assert!(found.head_done && found.complete());
    }
}

#[test]
fn a_page_with_only_a_title_gives_the_title() {
    let found = parse("<title>Just this</title>", 3);
    assert_eq!(found.title.as_deref(), Some("Just this"));
    assert!(found.properties.is_empty() && found.image.is_none());
}

#[test]
fn values_and_counts_are_capped() {
    use std::fmt::Write;
    let mut page = String::from("<head>");
    for i in 0..500 {
        let _ = write!(
            page,
            "<meta property=\"og:x{i}\" content=\"{}\">",
            "v".repeat(5000)
        );
    }
    let _ = write!(page, "<title>{}</title>", "t".repeat(100_000));
    let found = parse(&page, 4096);
    assert_eq!(found.properties.len(), MAX_PROPERTIES);
    assert!(
        found
            .properties
            .iter()
            .all(|(_, v)| v.chars().count() <= MAX_VALUE)
    );
    assert!(found.title.unwrap().chars().count() <= MAX_VALUE);
}

#[test]
fn deep_nesting_and_huge_tags_end_the_parse_without_harm() {
    let deep = format!("<title>deep</title>{}", "<div>".repeat(200_000));
    let found = parse(&deep, 8192);
    assert_eq!(found.title.as_deref(), Some("deep"));
    // One attribute far larger than the parser's memory budget.
    let huge = format!(
        "<meta property=\"og:title\" content=\"kept\"><img src=\"{}\"><p>after</p>",
        "a".repeat(4 * 1024 * 1024)
    );
    let found = parse(&huge, 65536);
    assert_eq!(found.property("og:title"), Some("kept"));
}

#[test]
fn the_encoding_comes_from_bom_header_meta_or_the_bytes() {
    assert_eq!(
        encoding_of(b"\xEF\xBB\xBF<html>", Some("iso-8859-1")),
        encoding_rs::UTF_8
    );
    assert_eq!(encoding_of(b"\xFF\xFE<\0h\0", None), encoding_rs::UTF_16LE);
    assert_eq!(
        encoding_of(b"<html>", Some("Shift_JIS")),
        encoding_rs::SHIFT_JIS
    );
    assert_eq!(
        encoding_of(b"<meta charset='koi8-r'><title>x</title>", None),
        encoding_rs::KOI8_R
    );
    assert_eq!(
        encoding_of(
            b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=euc-jp\">",
            None
        ),
        encoding_rs::EUC_JP
    );
    assert_eq!(
        encoding_of(b"<meta charset=utf-16>", None),
        encoding_rs::UTF_8
    );
    assert_eq!(
        encoding_of("<title>caf\u{e9}</title>".as_bytes(), None),
        encoding_rs::UTF_8
    );
    assert_eq!(
        encoding_of(b"<title>caf\xE9</title>", None),
        encoding_rs::WINDOWS_1252
    );
    assert_eq!(
        encoding_of(b"<html>", Some("no-such-charset")),
        encoding_rs::UTF_8
    );
}

#[test]
fn entities_are_decoded_in_values_titles_and_text() {
    let found = parse(
        "<title>Fish &amp; chips &#8212; caf&eacute;</title><meta property='og:title' content='It&#39;s &quot;here&quot;'><p>a &lt;b&gt; c</p>",
        5,
    );
    assert_eq!(found.title.as_deref(), Some("Fish & chips \u{2014} café"));
    assert_eq!(found.property("og:title"), Some("It's \"here\""));
    assert_eq!(found.text, "a <b> c");
}
