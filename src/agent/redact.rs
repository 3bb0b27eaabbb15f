//! Keeps secrets out of everything the agent sends out: its reply, its
//! reports and its logs.

/// The secrets one agent knows, and their replacement.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

/// Secrets shorter than this are not redacted: they would match ordinary
/// text (and real tokens are far longer).
const MIN_SECRET_LEN: usize = 8;

impl Redactor {
    /// A redactor for `secrets`; empty and very short values are ignored.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .map(str::trim)
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .map(str::to_owned)
            .collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// `text` with every known secret replaced by `[REDACTED]`.
    pub fn redact(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_owned(), |text, secret| {
            text.replace(secret.as_str(), "[REDACTED]")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Redactor;

    #[test]
    fn replaces_every_occurrence_of_every_secret() {
        let redactor = Redactor::new(["ghs_abcdefghijklmnop", "sk-live-0123456789"]);
        let text =
            "token ghs_abcdefghijklmnop and key sk-live-0123456789, again ghs_abcdefghijklmnop";
        assert_eq!(
            redactor.redact(text),
            "token [REDACTED] and key [REDACTED], again [REDACTED]"
        );
    }

    #[test]
    fn ignores_empty_and_short_values() {
        let redactor = Redactor::new(["", "abc", "  "]);
        assert_eq!(redactor.redact("abc stays"), "abc stays");
    }

    #[test]
    fn a_secret_containing_another_goes_whole() {
        let redactor = Redactor::new(["secret-12", "secret-12345678"]);
        assert_eq!(redactor.redact("secret-12345678"), "[REDACTED]");
    }
}
