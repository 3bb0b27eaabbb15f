//! The trigger mention: whether a comment asks smolpaws for something, and
//! what it asks.

use std::fmt;
use std::str::FromStr;

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
    /// The match is case-insensitive and whole-word. Mentions in quoted lines
    /// (`> ...`, as when replying to an earlier comment) and in fenced code
    /// blocks do not count, so quoting a request does not repeat it. The
    /// request is the body with every counted mention removed, trimmed; a
    /// body that is only a mention asks nothing and gives an empty string.
    pub fn request(&self, body: &str) -> Option<String> {
        let mut mentioned = false;
        let mut request = String::with_capacity(body.len());
        let mut in_fence = false;
        for line in body.split_inclusive('\n') {
            let trimmed = line.trim_start();
            if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
                in_fence = !in_fence;
            }
            if in_fence || trimmed.starts_with('>') {
                request.push_str(line);
                continue;
            }
            mentioned |= self.strip_from_line(line, &mut request);
        }
        mentioned.then(|| request.trim().to_owned())
    }

    /// Appends `line` minus its mentions to `out`; whether it had any.
    fn strip_from_line(&self, line: &str, out: &mut String) -> bool {
        let mut found = false;
        let mut rest = line;
        // The character just before `rest`, which decides whether an `@` at
        // its very start begins a word.
        let mut previous: Option<char> = None;
        while let Some(at) = rest.find('@') {
            let (before, from_at) = rest.split_at(at);
            let name = &from_at[1..];
            let starts_word = !before
                .chars()
                .next_back()
                .or(previous)
                .is_some_and(continues_word);
            let after = name
                .get(..self.login.len())
                .filter(|candidate| candidate.eq_ignore_ascii_case(&self.login))
                .map(|_| &name[self.login.len()..])
                .filter(|after| !after.starts_with(continues_word));
            out.push_str(before);
            match after {
                Some(after) if starts_word => {
                    found = true;
                    // "@smolpaws, why ..." asks "why ...".
                    rest = after.strip_prefix([',', ':']).unwrap_or(after);
                    previous = Some(' ');
                }
                _ => {
                    out.push('@');
                    rest = name;
                    previous = Some('@');
                }
            }
        }
        out.push_str(rest);
        found
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
