//! A "GitHub" for git over HTTP: git's own smart HTTP server
//! (`git http-backend`, run per request as a CGI program) over the bare
//! repositories of a [`super::git_remote::server`] directory, for agents that
//! clone over the network, as in a real pod.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncWriteExt;

/// Serves the repositories under `root` until the test ends; the base URL
/// to give as `GITHUB_SERVER_URL`.
pub async fn serve(root: &Path) -> String {
    let router = axum::Router::new()
        .fallback(backend)
        .with_state(root.to_owned());
    super::serve(router).await.0
}

async fn backend(
    State(root): State<PathBuf>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("git http-backend starts");
    let mut stdin = child.stdin.take().expect("a piped stdin");
    stdin
        .write_all(&body)
        .await
        .expect("the request reaches git");
    drop(stdin);
    let output = child
        .wait_with_output()
        .await
        .expect("git http-backend ends");
    cgi_response(&output.stdout)
}

/// A CGI program's output as an HTTP response: header lines (`Status:` sets
/// the status), a blank line, the body.
fn cgi_response(output: &[u8]) -> Response {
    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, 4))
        .or_else(|| {
            output
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|at| (at, 2))
        });
    let Some((at, gap)) = split else {
        return (StatusCode::BAD_GATEWAY, output.to_vec()).into_response();
    };
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for line in String::from_utf8_lossy(&output[..at]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().and_then(|c| c.parse().ok());
            status = code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY);
        } else if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(name.trim()),
            axum::http::HeaderValue::try_from(value),
        ) {
            headers.append(name, value);
        }
    }
    (status, headers, output[at + gap..].to_vec()).into_response()
}
