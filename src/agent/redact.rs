//! Keeps secrets out of everything the agent sends out: its reply, its
//! reports, its logs and what its tools show the model. A secret is found
//! as itself and as base64 (both alphabets, at every alignment it can take
//! inside a longer encoded text), the encoding a model told to exfiltrate
//! it would reach for first.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

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
            .flat_map(|secret| std::iter::once(secret.to_owned()).chain(encoded_forms(secret)))
            .filter(|s| s.len() >= MIN_SECRET_LEN)
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

/// The characters of `secret`'s base64 encodings that depend on the secret
/// alone, for each of the three byte alignments it can start at within a
/// longer encoded text.
fn encoded_forms(secret: &str) -> Vec<String> {
    let mut forms = Vec::new();
    for offset in 0..3usize {
        let mut bytes = vec![0u8; offset];
        bytes.extend_from_slice(secret.as_bytes());
        // Characters holding a padding bit at the start, or a bit of
        // whatever follows at the end, differ with the surrounding text.
        let first = (4 * offset).div_ceil(3);
        let last = bytes.len() * 8 / 6;
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            if let Some(form) = engine.encode(&bytes).get(first..last) {
                forms.push(form.to_owned());
            }
        }
    }
    forms
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

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

    #[test]
    fn a_secret_in_base64_text_is_found_at_every_alignment() {
        let secret = "ghs_0123456789abcdefghij";
        let redactor = Redactor::new([secret]);
        for prefix in ["", "x", "xy", "GITHUB_TOKEN="] {
            let dump = STANDARD.encode(format!("{prefix}{secret}\nPATH=/usr/bin\n"));
            let redacted = redactor.redact(&dump);
            assert!(
                redacted.contains("[REDACTED]"),
                "prefix {prefix:?}: {dump} became {redacted}"
            );
            // At most a character of the secret's encoding stays on each
            // side of the cut: a few bits, never the secret.
            let cut = dump.len() - (redacted.len() - "[REDACTED]".len());
            assert!(
                cut >= secret.len() * 4 / 3 - 2,
                "prefix {prefix:?}: only {cut} characters were cut from {dump}"
            );
        }
    }
}
