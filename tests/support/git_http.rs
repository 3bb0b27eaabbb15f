//! A git server over HTTP, as GitHub serves repositories: `git
//! http-backend` (git's own smart-HTTP CGI program) behind a loopback
//! server that takes an installation token as GitHub does (basic auth,
//! user `x-access-token`). Anyone may fetch; only tokens `may_push` allows
//! may push, and every refused push is recorded.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine;
use tokio::io::AsyncWriteExt;

type MayPush = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Clone)]
struct Server {
    root: PathBuf,
    may_push: MayPush,
    refused: Arc<Mutex<Vec<String>>>,
    pushes: Arc<Mutex<usize>>,
}

/// The git server; serves until the test ends.
pub struct GitHttp {
    pub url: String,
    refused: Arc<Mutex<Vec<String>>>,
    pushes: Arc<Mutex<usize>>,
}

impl GitHttp {
    /// Serves the bare repositories under `root` (`owner/name.git`).
    pub async fn start(
        root: PathBuf,
        may_push: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        let refused = Arc::new(Mutex::new(Vec::new()));
        let pushes = Arc::new(Mutex::new(0));
        let server = Server {
            root,
            may_push: Arc::new(may_push),
            refused: refused.clone(),
            pushes: pushes.clone(),
        };
        let router = axum::Router::new().fallback(serve).with_state(server);
        let (url, _) = super::serve(router).await;
        Self {
            url,
            refused,
            pushes,
        }
    }

    /// How many pushes were sent (a push of what the server already has
    /// sends none).
    pub fn pushes(&self) -> usize {
        *self.pushes.lock().expect("the count")
    }

    /// The tokens refused a push, in order.
    pub fn refused_pushes(&self) -> Vec<String> {
        self.refused.lock().expect("the log").clone()
    }
}

/// The token of a basic `x-access-token:<token>` header.
fn token(headers: &HeaderMap) -> Option<String> {
    let basic = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.strip_prefix("x-access-token:").map(str::to_owned)
}

async fn serve(
    State(server): State<Server>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = uri.query().unwrap_or_default().to_owned();
    let pushing =
        uri.path().ends_with("/git-receive-pack") || query.contains("service=git-receive-pack");
    if pushing {
        match token(&headers) {
            None => {
                return Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header("www-authenticate", "Basic realm=\"git\"")
                    .body(Body::empty())
                    .expect("a response");
            }
            Some(token) if !(server.may_push)(&token) => {
                server.refused.lock().expect("the log").push(token);
                return Response::builder()
                    .status(StatusCode::FORBIDDEN)
                    .body(Body::from("Permission denied: the token cannot push"))
                    .expect("a response");
            }
            Some(_) => {}
        }
        if method == Method::POST {
            *server.pushes.lock().expect("the count") += 1;
        }
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &server.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("REMOTE_USER", "x-access-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", &query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("git http-backend starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let writing = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let output = child
        .wait_with_output()
        .await
        .expect("git http-backend runs");
    let _ = writing.await;
    cgi_response(&output.stdout)
}

/// An HTTP response from a CGI program's output: headers (with `Status`),
/// a blank line, the body.
fn cgi_response(output: &[u8]) -> Response {
    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, gap)) = split else {
        return Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Body::from(output.to_vec()))
            .expect("a response");
    };
    let head = String::from_utf8_lossy(&output[..end]);
    let mut response = Response::builder().status(StatusCode::OK);
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(500);
            response = response.status(code);
        } else {
            response = response.header(name.trim(), value);
        }
    }
    response
        .body(Body::from(output[end + gap..].to_vec()))
        .expect("a response")
}
