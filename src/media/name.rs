//! Upload names: what we keep of a client-supplied file name. Path parts are
//! dropped (they leak local paths), as are control and bidi-override
//! characters (header injection, spoofed extensions). Encoding for headers is
//! `http::headers`' job.

/// Longest kept name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

fn is_unwanted(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// The cleaned name, or `None` when nothing usable is left.
pub fn clean_filename(raw: &str) -> Option<String> {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let kept: String = base.chars().filter(|&c| !is_unwanted(c)).collect();
    let mut name = kept.trim().to_owned();
    if name.len() > MAX_NAME_BYTES {
        let mut cut = MAX_NAME_BYTES;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    match name.as_str() {
        "" | "." | ".." => None,
        _ => Some(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a client sends, the kept name has no path separator, no
        /// control character and fits the length bound.
        #[test]
        fn cleaned_names_are_safe(raw in "\\PC{0,300}|[\\x00-\\x7f]{0,300}") {
            if let Some(name) = clean_filename(&raw) {
                prop_assert!(!name.contains(['/', '\\']));
                prop_assert!(!name.chars().any(is_unwanted));
                prop_assert!(name.len() <= MAX_NAME_BYTES);
                prop_assert!(!name.is_empty() && name != "..");
            }
        }

        /// Plain names are kept exactly.
        #[test]
        fn plain_names_are_kept(raw in "[A-Za-z0-9][A-Za-z0-9 ._()-]{0,60}[A-Za-z0-9]") {
            prop_assert_eq!(clean_filename(&raw), Some(raw.clone()));
        }
    }

    /// synapse#2887: a path in the upload name is never kept.
    #[test]
    fn path_parts_and_injection_are_stripped() {
        assert_eq!(
            clean_filename("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            clean_filename("C:\\Users\\me\\cat.png").as_deref(),
            Some("cat.png")
        );
        assert_eq!(
            clean_filename("a\r\nSet-Cookie: x").as_deref(),
            Some("aSet-Cookie: x")
        );
        assert_eq!(
            clean_filename("evil\u{202E}gnp.exe").as_deref(),
            Some("evilgnp.exe")
        );
        assert_eq!(clean_filename("dir/"), None);
        assert_eq!(clean_filename(" .. "), None);
    }
}
