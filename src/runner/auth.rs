//! The runner's token: every route but the probes (`/alive`, `/health`,
//! `/ready`, `/server_info`) requires it, as `Authorization: Bearer <token>`
//! or as the `X-Session-API-Key` header OpenHands clients send. A page a
//! developer visits can send neither, so it cannot drive the runner.
//!
//! The websockets check it themselves, after the upgrade, as the
//! agent-server does: from a header, from `session_api_key` in the query (a
//! browser cannot set a websocket's headers), or from the client's first
//! frame, `{"type": "auth", "session_api_key": ...}`, which SDK clients send.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::Refusal;

/// Routes anyone may call: probes, and what the server is.
const OPEN: &[&str] = &["/alive", "/health", "/ready", "/server_info"];

/// Routes that check the token themselves: the websockets.
const SOCKETS: &str = "/sockets/";

/// Whether `given` is the token.
pub fn valid(token: &SecretString, given: &[u8]) -> bool {
    bool::from(given.ct_eq(token.expose_secret().as_bytes()))
}

/// The token presented by a request, wherever it carries it; `query` only
/// for a websocket route.
pub fn presented<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a [u8]> {
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
    if OPEN.contains(&path) || path.starts_with(SOCKETS) {
        return next.run(request).await;
    }
    match presented(request.headers(), None) {
        Some(given) if valid(&token, given) => next.run(request).await,
        _ => Refusal::new(
            StatusCode::UNAUTHORIZED,
            "a valid token is required: Authorization: Bearer <SMOLPAWS_RUNNER_TOKEN>",
        )
        .into_response(),
    }
}

/// The browser origins allowed to call the runner; none by default.
pub type Origins = Arc<[String]>;

/// Refuses what a browser sends on a web page's behalf. Browsers mark every
/// cross-site request and every websocket with `Origin`; the SDK clients
/// and curl send none. So a page the developer visits, including one that
/// rebinds its own DNS name to 127.0.0.1, is refused before anything runs,
/// token or not, unless its origin is allowed.
pub async fn no_foreign_origin(
    State(allowed): State<Origins>,
    request: Request,
    next: Next,
) -> Response {
    let foreign = request.headers().get("origin").is_some_and(|origin| {
        !allowed
            .iter()
            .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
    });
    if foreign {
        return Refusal::new(
            StatusCode::FORBIDDEN,
            "requests from web pages are refused: allow the page's origin with SMOLPAWS_RUNNER_ALLOWED_ORIGINS",
        )
        .into_response();
    }
    next.run(request).await
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
