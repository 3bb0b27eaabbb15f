//! The runner's token: every route but `/alive` and `/health` requires it
//! when `SMOLPAWS_RUNNER_TOKEN` is set, as `Authorization: Bearer <token>`,
//! as the `X-Session-API-Key` header OpenHands clients send, or (for
//! websockets, whose browsers cannot set headers) as `session_api_key` in
//! the query.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::Refusal;

/// Routes anyone may call: liveness for probes.
const OPEN: &[&str] = &["/alive", "/health"];

/// The token presented by a request, wherever it carries it.
fn presented<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a [u8]> {
    let header = |name: &str| headers.get(name).map(|v| v.as_bytes());
    header("authorization")
        .and_then(|v| v.strip_prefix(b"Bearer "))
        .or_else(|| header("x-session-api-key"))
        .or_else(|| {
            query?
                .split('&')
                .find_map(|pair| pair.strip_prefix("session_api_key="))
                .map(str::as_bytes)
        })
}

/// Refuses requests without the token (when one is configured).
pub async fn require(
    State(token): State<Arc<Option<SecretString>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token.as_ref() else {
        return next.run(request).await;
    };
    if OPEN.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let expected = token.expose_secret().as_bytes();
    let given = presented(request.headers(), request.uri().query());
    match given {
        Some(given) if bool::from(given.ct_eq(expected)) => next.run(request).await,
        _ => Refusal::new(
            StatusCode::UNAUTHORIZED,
            "a valid token is required: Authorization: Bearer <SMOLPAWS_RUNNER_TOKEN>",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_found_in_any_of_its_places() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented(&headers, None), None);
        assert_eq!(
            presented(&headers, Some("a=1&session_api_key=q")),
            Some(&b"q"[..])
        );
        headers.insert("x-session-api-key", "k".parse().expect("a header"));
        assert_eq!(presented(&headers, None), Some(&b"k"[..]));
        headers.insert("authorization", "Bearer b".parse().expect("a header"));
        assert_eq!(presented(&headers, None), Some(&b"b"[..]));
    }
}
