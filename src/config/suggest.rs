//! "Did you mean ...?": the known name closest to a mistyped one, by edit distance.

/// The candidate closest to `word` (case-insensitively), when it is near enough to be a typo
/// of it: at most one edit in three letters, one to three edits. Never `word` itself.
pub(super) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            let d = strsim::damerau_levenshtein(&word, &c.to_ascii_lowercase());
            (d, c)
        })
        .filter(|&(d, c)| d > 0 && d <= (c.chars().count() / 3).clamp(1, 3))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_key_and_other_words_find_nothing() {
        let keys = [
            "listen",
            "upstream",
            "connect_timeout",
            "h2c",
            "upstream_retry",
        ];
        assert_eq!(closest("connect_timout", keys), Some("connect_timeout"));
        assert_eq!(closest("Upstraem", keys), Some("upstream"));
        assert_eq!(closest("h2", keys), Some("h2c"));
        assert_eq!(closest("colour", keys), None);
        assert_eq!(closest("listen", keys), None, "never the word itself");
        assert_eq!(closest("abc", keys), None);
    }
}
