//! The runner's token: every route but `/alive` and `/health` requires it,
//! as `Authorization: Bearer <token>`, as the `X-Session-API-Key` header
//! OpenHands clients send, or, on the websocket routes only (a browser
//! cannot set their headers), as `session_api_key` in the query. A page a
//! developer visits can send none of these, so it cannot drive the runner.

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

/// Routes that take the token in the query: the websockets.
const SOCKETS: &str = "/sockets/";

/// The token presented by a request, wherever it carries it; `query` only
/// for a websocket route.
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

/// Refuses requests without the token.
pub async fn require(
    State(token): State<Arc<SecretString>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if OPEN.contains(&path) {
        return next.run(request).await;
    }
    let expected = token.expose_secret().as_bytes();
    let query = request.uri().query().filter(|_| path.starts_with(SOCKETS));
    let given = presented(request.headers(), query);
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
