//! HTTP `Range` requests (RFC 9110 §14) resolved against an object's length.
//! Syntax errors and other units mean "ignore the header" (a full 200), ranges
//! past the end are dropped, and 416 only when none is satisfiable. Overlapping
//! and adjacent ranges are coalesced, and too many ranges are ignored, so one
//! request cannot make us open the object thousands of times.

use std::ops::Range;

/// What to send for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// The whole object (no header, an unusable header, or too many ranges).
    Full,
    /// One or more disjoint, ascending, non-empty byte ranges (end exclusive).
    Partial(Vec<Range<u64>>),
    /// A valid header of which no range overlaps the object: 416.
    Unsatisfiable,
}

enum Spec {
    From(u64, Option<u64>),
    Suffix(u64),
}

fn parse_spec(s: &str) -> Option<Spec> {
    let (first, last) = s.split_once('-')?;
    let number = |t: &str| -> Option<u64> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    if first.is_empty() {
        return number(last).map(Spec::Suffix);
    }
    let first = number(first)?;
    if last.is_empty() {
        return Some(Spec::From(first, None));
    }
    let last = number(last)?;
    (first <= last).then_some(Spec::From(first, Some(last)))
}

/// Resolves a `Range` header value against an object of `size` bytes.
pub fn resolve(header: Option<&str>, size: u64, max_ranges: usize) -> RangeRequest {
    let Some(value) = header else {
        return RangeRequest::Full;
    };
    let Some((unit, set)) = value.split_once('=') else {
        return RangeRequest::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeRequest::Full;
    }
    let mut specs = Vec::new();
    for part in set.split(',') {
        let part = part.trim_matches([' ', '\t']);
        if part.is_empty() {
            continue;
        }
        // Bound the work before resolving anything.
        if specs.len() >= max_ranges.saturating_mul(4).max(16) {
            return RangeRequest::Full;
        }
        match parse_spec(part) {
            Some(spec) => specs.push(spec),
            None => return RangeRequest::Full,
        }
    }
    if specs.is_empty() {
        return RangeRequest::Full;
    }
    let mut ranges: Vec<Range<u64>> = specs
        .into_iter()
        .filter_map(|spec| match spec {
            Spec::From(first, _) if first >= size => None,
            Spec::From(first, last) => {
                let end = last.map_or(size, |l| l.saturating_add(1).min(size));
                Some(first..end)
            }
            Spec::Suffix(0) => None,
            Spec::Suffix(_) if size == 0 => None,
            Spec::Suffix(n) => Some(size - n.min(size)..size),
        })
        .collect();
    if ranges.is_empty() {
        return RangeRequest::Unsatisfiable;
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(prev) if r.start <= prev.end => prev.end = prev.end.max(r.end),
            _ => merged.push(r),
        }
    }
    if merged.len() > max_ranges {
        return RangeRequest::Full;
    }
    RangeRequest::Partial(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn partial(v: &[(u64, u64)]) -> RangeRequest {
        RangeRequest::Partial(v.iter().map(|&(a, b)| a..b).collect())
    }

    /// RFC 9110 §14.1.2 examples and edge cases.
    #[test]
    fn resolves_the_rfc_forms() {
        let r = |h: &str| resolve(Some(h), 10_000, 16);
        assert_eq!(r("bytes=0-499"), partial(&[(0, 500)]));
        assert_eq!(r("bytes=500-999"), partial(&[(500, 1000)]));
        assert_eq!(r("bytes=-500"), partial(&[(9500, 10_000)]));
        assert_eq!(r("bytes=9500-"), partial(&[(9500, 10_000)]));
        assert_eq!(r("bytes=0-0,-1"), partial(&[(0, 1), (9999, 10_000)]));
        assert_eq!(r("bytes= 0-0 , -1"), partial(&[(0, 1), (9999, 10_000)]));
        assert_eq!(r("bytes=500-600,601-999"), partial(&[(500, 1000)]));
        assert_eq!(r("bytes=500-700,601-999"), partial(&[(500, 1000)]));
        assert_eq!(r("bytes=0-99999"), partial(&[(0, 10_000)]));
        assert_eq!(r("bytes=-99999"), partial(&[(0, 10_000)]));
        assert_eq!(r("BYTES=1-2"), partial(&[(1, 3)]));
        assert_eq!(r("bytes=10000-"), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=-0"), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=5-1"), RangeRequest::Full);
        assert_eq!(r("bytes=abc"), RangeRequest::Full);
        assert_eq!(r("items=0-1"), RangeRequest::Full);
        assert_eq!(r("bytes="), RangeRequest::Full);
        assert_eq!(r("bytes=+1-2"), RangeRequest::Full);
        assert_eq!(
            resolve(Some("bytes=0-1"), 0, 16),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(resolve(None, 10, 16), RangeRequest::Full);
    }

    /// Many small ranges are ignored rather than served.
    #[test]
    fn too_many_ranges_fall_back_to_full() {
        let many: Vec<String> = (0..40)
            .map(|i| format!("{}-{}", i * 10, i * 10 + 1))
            .collect();
        let header = format!("bytes={}", many.join(","));
        assert_eq!(resolve(Some(&header), 10_000, 16), RangeRequest::Full);
    }

    proptest! {
        /// Whatever the header, partial answers are in bounds, non-empty,
        /// ascending and disjoint, and never more than the cap.
        #[test]
        fn partial_ranges_are_well_formed(header in "(bytes|BYTES|x)=[0-9,\\- ]{0,40}", size in 0u64..5000) {
            if let RangeRequest::Partial(ranges) = resolve(Some(&header), size, 8) {
                prop_assert!(!ranges.is_empty() && ranges.len() <= 8);
                for r in &ranges {
                    prop_assert!(r.start < r.end && r.end <= size);
                }
                for w in ranges.windows(2) {
                    prop_assert!(w[0].end < w[1].start);
                }
            }
        }

        /// A single valid first-last range inside the object is served exactly.
        #[test]
        fn single_ranges_are_exact(a in 0u64..1000, len in 1u64..1000, size in 1u64..3000) {
            let b = a + len - 1;
            let got = resolve(Some(&format!("bytes={a}-{b}")), size, 8);
            if a >= size {
                prop_assert_eq!(got, RangeRequest::Unsatisfiable);
            } else {
                prop_assert_eq!(got, partial(&[(a, (b + 1).min(size))]));
            }
        }
    }
}
