//! Route matching as Ray's proxy does it: the longest `route_prefix` that matches on a path
//! segment boundary wins; `/` matches everything no longer prefix claims. The path matched is
//! the percent-decoded one (`/%66ields` is `/fields`, `%2F` a `/`), as uvicorn hands it to Ray's
//! proxy; it is otherwise taken as it came, as Ray takes it (recorded on Ray 2.60 in
//! `tests/fixtures/python/ray-2.60.json`): dot segments stay (`/a/../b` is under `/a`), `//a`
//! is not `/a`, and case matters.

use std::borrow::Cow;

/// `path` with its percent-escapes decoded (invalid UTF-8 replaced, as Python's `unquote`
/// replaces it); the same string when it has none.
pub fn decoded_path(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push(high << 4 | low);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Whether `prefix` matches `path`: `/a` matches `/a`, `/a/` and `/a/b` but not `/ab`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if !path.starts_with(prefix) {
        return false;
    }
    prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'
}

/// Index of the longest matching prefix among `prefixes`, which must be sorted by decreasing
/// length (the router keeps them so).
pub fn longest_match<'a>(prefixes: impl IntoIterator<Item = &'a str>, path: &str) -> Option<usize> {
    prefixes.into_iter().position(|p| prefix_matches(p, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_matched_decoded_and_otherwise_as_they_came() {
        assert_eq!(decoded_path("/plain/path"), "/plain/path");
        assert_eq!(decoded_path("/%66ields/x%20y"), "/fields/x y");
        assert_eq!(decoded_path("/a%2Fb"), "/a/b");
        assert_eq!(decoded_path("/bad%zz%4"), "/bad%zz%4", "escapes that are not two hex digits stay");
        assert_eq!(decoded_path("/%FF"), "/\u{fffd}");
        assert!(prefix_matches("/fields", &decoded_path("/%66ields/x")));
        assert!(prefix_matches("/fields", "/fields/../returns"), "dot segments stay, as in Ray");
        assert!(!prefix_matches("/fields", "//fields/x"));
    }

    #[test]
    fn segment_boundaries() {
        assert!(prefix_matches("/a", "/a"));
        assert!(prefix_matches("/a", "/a/"));
        assert!(prefix_matches("/a", "/a/c"));
        assert!(!prefix_matches("/a", "/ab"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/", "/"));
    }

    #[test]
    fn longest_prefix_wins() {
        let sorted = ["/fruit/special", "/fruit", "/"];
        assert_eq!(longest_match(sorted, "/fruit/special/x"), Some(0));
        assert_eq!(longest_match(sorted, "/fruit/"), Some(1));
        assert_eq!(longest_match(sorted, "/calc"), Some(2));
        assert_eq!(longest_match(["/fruit"], "/calc"), None);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// Any path decodes without panic; one without escapes is its own decoding; matching
        /// never panics, and a prefix always matches itself.
        #[test]
        fn paths_decode_and_match_without_panic(path in "\\PC{0,64}", prefix in "/[a-z%0-9/]{0,12}") {
            let decoded = decoded_path(&path);
            if !path.contains('%') {
                prop_assert_eq!(decoded.as_ref(), path.as_str());
            }
            let _ = prefix_matches(&prefix, &decoded);
            prop_assert!(prefix_matches(&prefix, &prefix));
            let _ = longest_match([prefix.as_str(), "/"], &decoded);
        }
    }
}
