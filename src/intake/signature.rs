//! GitHub's webhook signature: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256
//! of the raw body>`, checked against every configured secret so a secret can
//! be rotated without dropping deliveries.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Why a delivery's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The `X-Hub-Signature-256` header is absent.
    #[error("the X-Hub-Signature-256 header is missing")]
    Missing,
    /// The header is not `sha256=` followed by 64 hex digits.
    #[error("the X-Hub-Signature-256 header is not sha256=<64 hex digits>")]
    Malformed,
    /// No configured secret produces this signature.
    #[error("the signature matches no configured webhook secret")]
    Mismatch,
}

/// The webhook secrets a delivery may be signed with: the current one and,
/// during a rotation, the previous one.
#[derive(Clone, Debug)]
pub struct WebhookSecrets(Vec<SecretString>);

impl WebhookSecrets {
    /// The accepted secrets; empty ones are left out.
    pub fn new(secrets: impl IntoIterator<Item = SecretString>) -> Self {
        Self(
            secrets
                .into_iter()
                .filter(|s| !s.expose_secret().is_empty())
                .collect(),
        )
    }

    /// How many secrets are accepted.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no secret is configured, so that nothing can be accepted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A check of `header` (the value of `X-Hub-Signature-256`) to feed
    /// the body to as it arrives; a missing or malformed header is refused
    /// before any of the body is read.
    pub fn verifier(&self, header: Option<&[u8]>) -> Result<Verifier, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let digest = header
            .strip_prefix(b"sha256=")
            .and_then(|hex_digest| hex::decode(hex_digest).ok())
            .and_then(|digest| <[u8; 32]>::try_from(digest).ok())
            .ok_or(SignatureError::Malformed)?;
        Ok(Verifier {
            digest,
            macs: self.0.iter().map(mac).collect(),
        })
    }

    /// Checks `header` (the value of `X-Hub-Signature-256`) against `body`.
    pub fn verify(&self, header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
        let mut verifier = self.verifier(header)?;
        verifier.update(body);
        verifier.finish()
    }
}

/// A signature checked as the body streams in, so the whole body is never
/// gone over a second time.
pub struct Verifier {
    digest: [u8; 32],
    macs: Vec<Hmac<Sha256>>,
}

impl Verifier {
    /// Feeds the next part of the body.
    pub fn update(&mut self, chunk: &[u8]) {
        for mac in &mut self.macs {
            mac.update(chunk);
        }
    }

    /// Whether the body fed so far carries the signature.
    pub fn finish(self) -> Result<(), SignatureError> {
        // Every secret is tried, so the time taken does not tell which matched.
        let matched = self.macs.into_iter().fold(false, |matched, mac| {
            mac.verify_slice(&self.digest).is_ok() | matched
        });
        if matched {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// The `X-Hub-Signature-256` value GitHub sends for `body` signed with
/// `secret`: what `smolpaws dev comment` and the tests send.
pub fn sign(secret: &SecretString, body: &[u8]) -> String {
    let digest = mac(secret).chain_update(body).finalize().into_bytes();
    format!("sha256={}", hex::encode(digest))
}

fn mac(secret: &SecretString) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC accepts keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s)
    }

    #[test]
    fn matches_githubs_documented_example() {
        // From GitHub's "Validating webhook deliveries" page.
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let key = secret("It's a Secret to Everybody");
        assert_eq!(sign(&key, b"Hello, World!"), expected);
        let secrets = WebhookSecrets::new([key]);
        assert_eq!(
            secrets.verify(Some(expected.as_bytes()), b"Hello, World!"),
            Ok(())
        );
    }

    #[test]
    fn refuses_missing_malformed_and_wrong_signatures() {
        let secrets = WebhookSecrets::new([secret("current")]);
        let body = b"{}";
        let good = sign(&secret("current"), body);
        assert_eq!(secrets.verify(None, body), Err(SignatureError::Missing));
        for garbled in [
            "",
            "sha256=",
            "sha1=abcd",
            "sha256=zz",
            &good[..good.len() - 2],
        ] {
            assert_eq!(
                secrets.verify(Some(garbled.as_bytes()), body),
                Err(SignatureError::Malformed),
                "{garbled:?}"
            );
        }
        let wrong = sign(&secret("other"), body);
        assert_eq!(
            secrets.verify(Some(wrong.as_bytes()), body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            secrets.verify(Some(good.as_bytes()), b"{ }"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn accepts_either_secret_during_rotation() {
        let secrets = WebhookSecrets::new([secret("new"), secret("old")]);
        for key in ["new", "old"] {
            let signature = sign(&secret(key), b"payload");
            assert_eq!(
                secrets.verify(Some(signature.as_bytes()), b"payload"),
                Ok(())
            );
        }
    }

    #[test]
    fn empty_secrets_accept_nothing() {
        let secrets = WebhookSecrets::new([secret("")]);
        assert!(secrets.is_empty());
        let signature = sign(&secret(""), b"payload");
        assert_eq!(
            secrets.verify(Some(signature.as_bytes()), b"payload"),
            Err(SignatureError::Mismatch)
        );
    }
}
