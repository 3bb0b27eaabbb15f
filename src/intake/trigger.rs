//! The trigger mention: whether a comment asks smolpaws for something, and
//! what it asks.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// The login a comment mentions to ask smolpaws, e.g. `@smolpaws`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mention {
    /// The login without `@`, lowercased.
    login: String,
}

/// A mention that is not `@` followed by a GitHub login.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} is not a GitHub mention: use @ followed by letters, digits and single hyphens, e.g. @smolpaws"
)]
pub struct InvalidMention(String);

impl FromStr for Mention {
    type Err = InvalidMention;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let login = s.strip_prefix('@').unwrap_or(s);
        let valid = !login.is_empty()
            && login.len() <= 39
            && login
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !login.starts_with('-');
        if valid {
            Ok(Self {
                login: login.to_ascii_lowercase(),
            })
        } else {
            Err(InvalidMention(s.to_owned()))
        }
    }
}

impl fmt::Display for Mention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.login)
    }
}

/// Characters that continue a login or an e-mail address, so that a mention
/// next to them is part of a longer word (`@smolpawsy`, `me@smolpaws`).
fn continues_word(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_')
}

impl Mention {
    /// The request in `body` when it mentions this login, else `None`.
    ///
    /// The body is read as GitHub renders it (CommonMark): only mentions in
    /// visible text count. Code (fenced, indented or inline), block quotes
    /// (as when replying to an earlier comment) and HTML (comments are
    /// invisible on GitHub) never trigger, so neither a quoted request nor a
    /// hidden one starts a run. The match is case-insensitive and
    /// whole-word. The request is the body with every counted mention
    /// removed, trimmed; a body that is only a mention asks nothing and gives
    /// an empty string.
    pub fn request(&self, body: &str) -> Option<String> {
        let mut counted: Vec<Range<usize>> = Vec::new();
        // Depth inside blocks whose text does not count.
        let mut hidden = 0usize;
        for (event, range) in Parser::new_ext(body, Options::empty()).into_offset_iter() {
            match event {
                Event::Start(Tag::CodeBlock(_) | Tag::BlockQuote(_) | Tag::HtmlBlock) => {
                    hidden += 1;
                }
                Event::End(TagEnd::CodeBlock | TagEnd::BlockQuote(_) | TagEnd::HtmlBlock) => {
                    hidden = hidden.saturating_sub(1);
                }
                Event::Text(_) if hidden == 0 => self.find(body, range, &mut counted),
                _ => {}
            }
        }
        if counted.is_empty() {
            return None;
        }
        let mut request = String::with_capacity(body.len());
        let mut from = 0;
        for cut in counted {
            request.push_str(&body[from..cut.start]);
            from = cut.end;
        }
        request.push_str(&body[from..]);
        Some(request.trim().to_owned())
    }

    /// Adds the spans of this login's whole-word mentions within `within`
    /// (a text node's bytes in `body`) to `spans`, with a `,` or `:` right
    /// after one ("@smolpaws, why ..." asks "why ...").
    fn find(&self, body: &str, within: Range<usize>, spans: &mut Vec<Range<usize>>) {
        let text = &body[within.clone()];
        for (offset, _) in text.match_indices('@') {
            let at = within.start + offset;
            let starts_word = !body[..at].chars().next_back().is_some_and(continues_word);
            let name_end = at + 1 + self.login.len();
            let names_us = body
                .get(at + 1..name_end)
                .is_some_and(|name| name.eq_ignore_ascii_case(&self.login));
            let ends_word = !body
                .get(name_end..)
                .is_some_and(|after| after.starts_with(continues_word));
            if starts_word && names_us && ends_word && name_end <= within.end {
                let end = match body[name_end..].chars().next() {
                    Some(',' | ':') => name_end + 1,
                    _ => name_end,
                };
                spans.push(at..end);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smolpaws() -> Mention {
        "@smolpaws".parse().expect("a valid mention")
    }

    #[test]
    fn finds_the_request_after_a_mention() {
        let cases = [
            (
                "@smolpaws why does the parser drop commas?",
                Some("why does the parser drop commas?"),
            ),
            ("@SmolPaws fix it", Some("fix it")),
            ("hey @smolpaws, look at this", Some("hey  look at this")),
            ("@smolpaws: summarize", Some("summarize")),
            ("please (@smolpaws) help", Some("please () help")),
            ("@smolpaws", Some("")),
            ("ends with @smolpaws.", Some("ends with .")),
            ("line one\n@smolpaws line two", Some("line one\n line two")),
        ];
        for (body, expected) in cases {
            assert_eq!(smolpaws().request(body).as_deref(), expected, "{body:?}");
        }
    }

    #[test]
    fn ignores_what_only_looks_like_a_mention() {
        for body in [
            "no mention here",
            "@smolpawsy is someone else",
            "@smolpaws-bot is someone else",
            "@smolpaws_x too",
            "mail me@smolpaws.dev",
            "> @smolpaws quoted request",
            "```\n@smolpaws in code\n```",
            "<!-- @smolpaws hidden in an HTML comment -->",
            "text <!-- @smolpaws hidden inline --> more",
            "<!--\n@smolpaws hidden across lines\n-->",
            "`@smolpaws in inline code`",
            "    @smolpaws in indented code",
            "```\n@smolpaws in a fence closed by another\n~~~\n@smolpaws still code",
            "<details>\n@smolpaws in raw HTML, where GitHub shows no text node\n</details>",
            "smolpaws without the at",
            "@",
            "@smol",
        ] {
            assert_eq!(smolpaws().request(body), None, "{body:?}");
        }
    }

    #[test]
    fn a_quote_does_not_hide_a_new_request() {
        let body = "> @smolpaws old request\n\n@smolpaws new request";
        assert_eq!(
            smolpaws().request(body).as_deref(),
            Some("> @smolpaws old request\n\n new request")
        );
    }

    #[test]
    fn the_mention_is_configurable_and_validated() {
        let bot: Mention = "paws-bot".parse().expect("valid without @");
        assert_eq!(bot.to_string(), "@paws-bot");
        assert_eq!(bot.request("@Paws-Bot go").as_deref(), Some("go"));
        for invalid in ["", "@", "@-x", "@with space", "@under_score"] {
            assert!(invalid.parse::<Mention>().is_err(), "{invalid:?}");
        }
    }

    #[test]
    fn survives_multibyte_text() {
        assert_eq!(smolpaws().request("é@smolpaws"), None);
        assert_eq!(
            smolpaws().request("👀 @smolpaws ünïcödé").as_deref(),
            Some("👀  ünïcödé")
        );
        assert_eq!(smolpaws().request("@smolpawsé"), None);
    }
}
