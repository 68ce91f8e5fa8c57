//! Route matching as Ray's proxy does it: the longest `route_prefix` that matches on a path
//! segment boundary wins; `/` matches everything no longer prefix claims.

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
