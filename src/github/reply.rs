//! The text of smolpaws' replies, and the hidden marker that makes posting
//! them idempotent.

/// GitHub's limit on a comment body, in characters.
pub const MAX_COMMENT_CHARS: usize = 65_536;

/// The hidden HTML comment that names the run a reply belongs to. Before
/// posting, the thread is searched for it, so a reply posted by a controller
/// that crashed before recording it is found instead of posted again.
pub fn marker(namespace: &str, name: &str, uid: &str) -> String {
    format!("<!-- smolpaws:run {namespace}/{name} {uid} -->")
}

/// `text` with `marker` appended, cut to fit GitHub's limit with a note
/// saying so.
pub fn compose(text: &str, marker: &str) -> String {
    let suffix = format!("\n\n{marker}");
    let room = MAX_COMMENT_CHARS - suffix.chars().count();
    format!("{}{suffix}", fit(text, room))
}

/// `text` (trailing space trimmed) in at most `limit` characters; a longer
/// one is cut and ends with a note saying so.
pub fn fit(text: &str, limit: usize) -> String {
    const NOTE: &str = "\n\n*(reply truncated: it was longer than a GitHub comment can be)*";
    let text = text.trim_end();
    if text.chars().count() <= limit {
        return text.to_owned();
    }
    let keep = limit.saturating_sub(NOTE.chars().count());
    let cut: String = text.chars().take(keep).collect();
    format!("{cut}{NOTE}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_replies_are_kept_whole_with_the_marker() {
        let marker = marker("ns", "gh-1", "uid-1");
        assert_eq!(marker, "<!-- smolpaws:run ns/gh-1 uid-1 -->");
        let body = compose("The answer.\n", &marker);
        assert_eq!(body, format!("The answer.\n\n{marker}"));
    }

    #[test]
    fn long_replies_are_cut_to_githubs_limit_with_a_note() {
        let marker = marker("ns", "gh-1", "uid-1");
        let long = "é".repeat(MAX_COMMENT_CHARS * 2);
        let body = compose(&long, &marker);
        assert_eq!(body.chars().count(), MAX_COMMENT_CHARS);
        assert!(body.contains("reply truncated"));
        assert!(body.ends_with(&marker));
        let exact = "x".repeat(MAX_COMMENT_CHARS - marker.len() - 2);
        assert_eq!(compose(&exact, &marker).chars().count(), MAX_COMMENT_CHARS);
        assert!(!compose(&exact, &marker).contains("truncated"));
    }
}
