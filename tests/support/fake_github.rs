//! A local GitHub REST API speaking the shapes smolpaws uses, recording what
//! it receives: App installation tokens, the App and its bot user,
//! reactions, issue comments and review-thread replies, pull requests and
//! check runs. Tests script failures for the next comment posts, and can
//! take `checks: write` from the App.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

/// A comment as the fake stores it.
#[derive(Clone, Debug)]
pub struct Comment {
    pub id: i64,
    pub repository: String,
    pub number: i64,
    /// `issue` or `review`.
    pub kind: &'static str,
    pub body: String,
    pub in_reply_to: Option<i64>,
    pub at: Instant,
    /// Who wrote it: the App for what it posted, anyone for seeded ones.
    pub author: String,
}

/// A scripted answer to the next comment post.
#[derive(Clone, Debug)]
pub enum Scripted {
    /// Answer with this status, headers and JSON body; store nothing.
    Fail {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Value,
    },
    /// Store the comment, but answer only after this long (a client killed
    /// meanwhile never learns it was posted).
    SlowSuccess(Duration),
}

/// A pull request as the fake stores it.
#[derive(Clone, Debug)]
pub struct Pull {
    pub number: i64,
    pub repository: String,
    pub head: String,
    pub head_sha: String,
    /// Where the head branch lives (`owner/name`).
    pub head_repository: String,
    pub base: String,
    pub title: String,
    pub body: String,
    pub draft: bool,
}

/// The id of the App's bot user, `smolpaws[bot]`.
pub const BOT_USER_ID: u64 = 149_000_001;

/// A check run as the fake stores it.
#[derive(Clone, Debug)]
pub struct CheckRun {
    pub id: i64,
    pub repository: String,
    pub head_sha: String,
    pub name: String,
    pub external_id: Option<String>,
    pub details_url: Option<String>,
    pub title: String,
    pub summary: String,
    pub started_at: String,
    pub completed_at: Option<String>,
    /// Every `status` it had, with its `conclusion`, in order.
    pub states: Vec<(String, Option<String>)>,
}

impl CheckRun {
    /// Its `status` and `conclusion` now.
    pub fn state(&self) -> (&str, Option<&str>) {
        let (status, conclusion) = self.states.last().expect("a check run has a state");
        (status, conclusion.as_deref())
    }
}

#[derive(Default)]
struct State_ {
    check_runs: Vec<CheckRun>,
    checks_forbidden: bool,
    check_delay: Option<Duration>,
    pulls: Vec<Pull>,
    pull_delay: Option<Duration>,
    edits: Vec<(i64, String)>,
    calls: Vec<String>,
    next_id: i64,
    comments: Vec<Comment>,
    reactions: Vec<(i64, String)>,
    token_requests: Vec<(u64, Value)>,
    issued: Vec<String>,
    script: VecDeque<Scripted>,
    post_attempts: Vec<(Instant, u16)>,
    unauthorized: Vec<String>,
    revoked: Vec<String>,
    /// Tokens that answer 401 as if they had expired.
    expired: Vec<String>,
    /// Every how many calls one fails, when chaos is on.
    chaos_every: Option<u64>,
    chaos_count: u64,
    chaos_failures: u64,
}

/// The fake GitHub, serving on loopback until dropped.
#[derive(Clone)]
pub struct FakeGitHub {
    state: Arc<Mutex<State_>>,
    pub url: String,
    notify: Arc<tokio::sync::Notify>,
}

type Shared = Arc<Mutex<State_>>;

impl FakeGitHub {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> Self {
        let state: Shared = Arc::new(Mutex::new(State_ {
            next_id: 5_000,
            ..State_::default()
        }));
        let notify = Arc::new(tokio::sync::Notify::new());
        let router = Router::new()
            .route("/app/installations/{id}/access_tokens", post(access_token))
            .route("/repos/{owner}/{repo}/installation", get(installation))
            .route("/installation/token", delete(revoke))
            .route("/repos/{owner}/{repo}/issues/{number}", get(issue))
            .route(
                "/repos/{owner}/{repo}/issues/comments/{id}/reactions",
                post(react),
            )
            .route(
                "/repos/{owner}/{repo}/issues/comments/{id}",
                axum::routing::patch(edit_comment),
            )
            .route(
                "/repos/{owner}/{repo}/pulls/comments/{id}/reactions",
                post(react),
            )
            .route(
                "/repos/{owner}/{repo}/issues/{number}/comments",
                get(|state, path, query, headers| {
                    list_comments("issue", state, path, query, headers)
                })
                .post(create_issue_comment),
            )
            .route(
                "/repos/{owner}/{repo}/pulls/{number}/comments",
                get(|state, path, query, headers| {
                    list_comments("review", state, path, query, headers)
                }),
            )
            .route(
                "/repos/{owner}/{repo}/pulls/{number}/comments/{id}/replies",
                post(reply_to_review_comment),
            )
            .route("/repos/{owner}/{repo}/pulls/{number}", get(get_pull))
            .route(
                "/repos/{owner}/{repo}/pulls",
                get(list_pulls).post(create_pull),
            )
            .route("/app", get(app))
            .route("/users/{login}", get(user))
            .route("/repos/{owner}/{repo}/check-runs", post(create_check_run))
            .route(
                "/repos/{owner}/{repo}/check-runs/{id}",
                axum::routing::patch(update_check_run),
            )
            .route(
                "/repos/{owner}/{repo}/commits/{sha}/check-runs",
                get(list_check_runs),
            )
            .layer(axum::middleware::from_fn_with_state(state.clone(), record))
            .layer(axum::middleware::from_fn_with_state(state.clone(), chaos))
            .with_state((state.clone(), notify.clone()));
        let (url, _) = super::serve(router).await;
        Self { state, url, notify }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State_) -> T) -> T {
        f(&mut self.state.lock().expect("fake state"))
    }

    /// The comments posted so far.
    pub fn comments(&self) -> Vec<Comment> {
        self.with(|s| s.comments.clone())
    }

    /// The comment ids that got a reaction, with its content.
    pub fn reactions(&self) -> Vec<(i64, String)> {
        self.with(|s| s.reactions.clone())
    }

    /// The installation-token requests (installation id, body).
    pub fn token_requests(&self) -> Vec<(u64, Value)> {
        self.with(|s| s.token_requests.clone())
    }

    /// Every token the fake handed out.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.with(|s| s.issued.clone())
    }

    /// When each comment post arrived, and its answer's status.
    pub fn post_attempts(&self) -> Vec<(Instant, u16)> {
        self.with(|s| s.post_attempts.clone())
    }

    /// The installation tokens revoked (`DELETE /installation/token`).
    pub fn revoked(&self) -> Vec<String> {
        self.with(|s| s.revoked.clone())
    }

    /// Requests refused for a missing or unknown token.
    pub fn unauthorized(&self) -> Vec<String> {
        self.with(|s| s.unauthorized.clone())
    }

    /// Every token handed out so far answers 401 from now on, as an
    /// expired or revoked one does.
    pub fn expire_tokens(&self) {
        self.with(|s| s.expired = s.issued.clone());
    }

    /// Fails every `every`th call, whatever it is, with a server error or a
    /// secondary rate limit in turn (GitHub's real words and headers).
    pub fn chaos(&self, every: u64) {
        self.with(|s| s.chaos_every = Some(every));
    }

    /// The calls chaos failed.
    pub fn chaos_failures(&self) -> u64 {
        self.with(|s| s.chaos_failures)
    }

    /// Queues answers for the next comment posts.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.with(|s| s.script.extend(answers));
    }

    /// Stores a comment as if someone posted it.
    pub fn seed_comment(&self, repository: &str, number: i64, body: &str) -> i64 {
        self.with(|s| store(s, repository, number, "issue", body.to_owned(), None).id)
    }

    /// Stores a comment by `author`, someone without any association with
    /// the repository.
    pub fn seed_comment_by(&self, repository: &str, number: i64, author: &str, body: &str) {
        self.with(|s| {
            store(s, repository, number, "issue", body.to_owned(), None);
            if let Some(seeded) = s.comments.last_mut() {
                seeded.author = author.to_owned();
            }
        });
    }

    /// Every request, as `METHOD /path`, in order.
    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.clone())
    }

    /// Every comment edit (the comment's id, its new body), in order.
    pub fn edits(&self) -> Vec<(i64, String)> {
        self.with(|s| s.edits.clone())
    }

    /// The pull requests, seeded and opened.
    pub fn pulls(&self) -> Vec<Pull> {
        self.with(|s| s.pulls.clone())
    }

    /// Seeds pull request `number` of `repository`, its head `head` at
    /// `sha` in `head_repository`.
    pub fn seed_pull(
        &self,
        repository: &str,
        number: i64,
        head: &str,
        sha: &str,
        head_repository: &str,
    ) {
        self.with(|s| {
            s.pulls.push(Pull {
                number,
                repository: repository.to_owned(),
                head: head.to_owned(),
                head_sha: sha.to_owned(),
                head_repository: head_repository.to_owned(),
                base: "main".into(),
                title: format!("Pull request {number}"),
                body: String::new(),
                draft: false,
            })
        });
    }

    /// Opened pull requests are stored at once but answered only after
    /// `delay` (a client killed meanwhile never learns of them).
    pub fn delay_pull_answers(&self, delay: Duration) {
        self.with(|s| s.pull_delay = Some(delay));
    }

    /// Whether `token` was minted with `contents: write`, as the git server
    /// asks before it takes a push.
    pub fn may_push(&self, token: &str) -> bool {
        self.with(|s| {
            s.issued
                .iter()
                .zip(&s.token_requests)
                .any(|(issued, (_, body))| {
                    issued == token && body["permissions"]["contents"] == "write"
                })
                && !s.revoked.iter().any(|r| r == token)
        })
    }

    /// The check runs, as they are now.
    pub fn check_runs(&self) -> Vec<CheckRun> {
        self.with(|s| s.check_runs.clone())
    }

    /// Answers every check-run call as GitHub does for an App without
    /// `checks: write`.
    pub fn forbid_checks(&self) {
        self.with(|s| s.checks_forbidden = true);
    }

    /// Created check runs are stored at once but answered only after
    /// `delay` (a client killed meanwhile never learns of them).
    pub fn delay_check_answers(&self, delay: Duration) {
        self.with(|s| s.check_delay = Some(delay));
    }

    /// Waits until a comment post arrives.
    pub async fn comment_posted(&self) {
        self.notify.notified().await;
    }
}

fn store(
    s: &mut State_,
    repository: &str,
    number: i64,
    kind: &'static str,
    body: String,
    in_reply_to: Option<i64>,
) -> Comment {
    s.next_id += 1;
    let comment = Comment {
        id: s.next_id,
        repository: repository.to_owned(),
        number,
        kind,
        body,
        in_reply_to,
        at: Instant::now(),
        author: "smolpaws[bot]".to_owned(),
    };
    s.comments.push(comment.clone());
    comment
}

fn comment_json(comment: &Comment) -> Value {
    let anchor = match comment.kind {
        "review" => format!("pull/{}#discussion_r{}", comment.number, comment.id),
        _ => format!("issues/{}#issuecomment-{}", comment.number, comment.id),
    };
    json!({
        "id": comment.id,
        "html_url": format!("https://github.com/{}/{anchor}", comment.repository),
        "body": comment.body,
        "in_reply_to_id": comment.in_reply_to,
        "user": {
            "login": comment.author,
            "type": if comment.author.ends_with("[bot]") { "Bot" } else { "User" },
        },
        "author_association": "NONE",
        // What the App posted carries the App (id 1, the harness's).
        "performed_via_github_app": (comment.author == "smolpaws[bot]")
            .then(|| json!({ "id": 1, "slug": "smolpaws" })),
    })
}

type AppState = (Shared, Arc<tokio::sync::Notify>);

/// The token a request presents (`Bearer`, as octocrab sends it, `bearer`
/// or `token`, as octokit does: GitHub reads the scheme in any case);
/// empty without one.
fn presented(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| {
            scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token")
        })
        .map(|(_, token)| token.trim().to_owned())
        .unwrap_or_default()
}

/// Installation routes need a token this fake issued.
fn authorized(state: &Shared, headers: &HeaderMap, path: &str) -> bool {
    let token = presented(headers);
    let mut s = state.lock().expect("fake state");
    let ok = s.issued.contains(&token) && !s.expired.contains(&token);
    if !ok {
        s.unauthorized.push(path.to_owned());
    }
    ok
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "message": "Bad credentials" })),
    )
        .into_response()
}

async fn access_token(
    State((state, _)): State<AppState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    if !is_jwt(&headers) {
        return unauthorized();
    }
    let body = body.map(|Json(b)| b).unwrap_or(Value::Null);
    let mut s = state.lock().expect("fake state");
    let token = format!("ghs_fake{}{}", id, s.issued.len());
    s.issued.push(token.clone());
    s.token_requests.push((id, body.clone()));
    let expires =
        k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_hours(1);
    (
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "permissions": body.get("permissions").cloned().unwrap_or(json!({ "issues": "write" })),
            "repository_selection": "selected",
        })),
    )
        .into_response()
}

/// `GET /repos/{owner}/{repo}/issues/{number}`: every issue is the same
/// short one, opened by the repository's owner.
async fn issue(
    State((state, _)): State<AppState>,
    Path((owner, _repo, number)): Path<(String, String, i64)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers, "read an issue") {
        return unauthorized();
    }
    Json(json!({
        "number": number,
        "title": format!("Issue {number}"),
        "body": "It does not work.",
        "user": { "login": owner, "type": "User" },
        "author_association": "OWNER",
    }))
    .into_response()
}

/// Fails every `chaos_every`th call when chaos is on: a 502, then a 403
/// secondary rate limit with `retry-after`, in turn.
async fn chaos(
    State(state): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let failure = {
        let mut s = state.lock().expect("fake state");
        s.chaos_count += 1;
        let failing = s
            .chaos_every
            .is_some_and(|every| s.chaos_count % every == 0);
        if failing {
            s.chaos_failures += 1;
        }
        failing.then_some(s.chaos_failures % 2)
    };
    match failure {
        None => next.run(request).await,
        Some(0) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({ "message": "Server Error" })),
        )
            .into_response(),
        Some(_) => (
            StatusCode::FORBIDDEN,
            [("retry-after", "1")],
            Json(json!({
                "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
            })),
        )
            .into_response(),
    }
}

/// `DELETE /installation/token`: the token in the Authorization header
/// revokes itself; a token the fake never issued is 401, as on GitHub.
async fn revoke(
    State((state, _)): State<(Shared, Arc<tokio::sync::Notify>)>,
    headers: HeaderMap,
) -> StatusCode {
    let token = presented(&headers);
    let mut state = state.lock().expect("fake state");
    if !state.issued.contains(&token) || state.revoked.contains(&token) {
        return StatusCode::UNAUTHORIZED;
    }
    state.revoked.push(token);
    StatusCode::NO_CONTENT
}

async fn installation(Path((_owner, _repo)): Path<(String, String)>) -> Json<Value> {
    Json(json!({ "id": 1, "app_id": 1 }))
}

async fn react(
    State((state, _)): State<AppState>,
    Path((owner, repo, id)): Path<(String, String, i64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&state, &headers, &format!("{owner}/{repo} reaction")) {
        return unauthorized();
    }
    let content = body["content"].as_str().unwrap_or_default().to_owned();
    state
        .lock()
        .expect("fake state")
        .reactions
        .push((id, content.clone()));
    (
        StatusCode::CREATED,
        Json(json!({ "id": 1, "content": content })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Listing {
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    per_page: Option<usize>,
}

/// Lists the comments of one kind (`issue` or `review`) in a thread, paged
/// as GitHub pages them.
async fn list_comments(
    kind: &'static str,
    State((state, _)): State<AppState>,
    Path((owner, repo, number)): Path<(String, String, i64)>,
    Query(listing): Query<Listing>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers, &format!("list {kind} comments")) {
        return unauthorized();
    }
    let repository = format!("{owner}/{repo}");
    let s = state.lock().expect("fake state");
    let per_page = listing.per_page.unwrap_or(30);
    let page = listing.page.unwrap_or(1).max(1);
    let matching: Vec<Value> = s
        .comments
        .iter()
        .filter(|c| c.repository == repository && c.number == number && c.kind == kind)
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(comment_json)
        .collect();
    Json(Value::Array(matching)).into_response()
}

/// Where a posted comment goes.
struct Thread {
    repository: String,
    number: i64,
    kind: &'static str,
    in_reply_to: Option<i64>,
}

async fn post_comment(
    state: &Shared,
    notify: &tokio::sync::Notify,
    headers: &HeaderMap,
    thread: Thread,
    body: Value,
) -> Response {
    let Thread {
        repository,
        number,
        kind,
        in_reply_to,
    } = thread;
    if !authorized(state, headers, "post comment") {
        return unauthorized();
    }
    let scripted = state.lock().expect("fake state").script.pop_front();
    let text = body["body"].as_str().unwrap_or_default().to_owned();
    let response = match scripted {
        Some(Scripted::Fail {
            status,
            headers,
            body,
        }) => {
            let mut response =
                (StatusCode::from_u16(status).expect("a status"), Json(body)).into_response();
            for (name, value) in headers {
                response
                    .headers_mut()
                    .insert(name, value.parse().expect("a header value"));
            }
            response
        }
        Some(Scripted::SlowSuccess(delay)) => {
            let comment = store(
                &mut state.lock().expect("fake state"),
                &repository,
                number,
                kind,
                text,
                in_reply_to,
            );
            notify.notify_waiters();
            tokio::time::sleep(delay).await;
            (StatusCode::CREATED, Json(comment_json(&comment))).into_response()
        }
        None => {
            let comment = store(
                &mut state.lock().expect("fake state"),
                &repository,
                number,
                kind,
                text,
                in_reply_to,
            );
            (StatusCode::CREATED, Json(comment_json(&comment))).into_response()
        }
    };
    state
        .lock()
        .expect("fake state")
        .post_attempts
        .push((Instant::now(), response.status().as_u16()));
    notify.notify_waiters();
    response
}

async fn create_issue_comment(
    State((state, notify)): State<AppState>,
    Path((owner, repo, number)): Path<(String, String, i64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    post_comment(
        &state,
        &notify,
        &headers,
        Thread {
            repository: format!("{owner}/{repo}"),
            number,
            kind: "issue",
            in_reply_to: None,
        },
        body,
    )
    .await
}

async fn reply_to_review_comment(
    State((state, notify)): State<AppState>,
    Path((owner, repo, number, id)): Path<(String, String, i64, i64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    post_comment(
        &state,
        &notify,
        &headers,
        Thread {
            repository: format!("{owner}/{repo}"),
            number,
            kind: "review",
            in_reply_to: Some(id),
        },
        body,
    )
    .await
}

async fn record(
    State(state): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let call = format!("{} {}", request.method(), request.uri().path());
    state.lock().expect("fake state").calls.push(call);
    next.run(request).await
}

fn pull_json(pull: &Pull) -> Value {
    let owner = pull.head_repository.split('/').next().unwrap_or_default();
    json!({
        "number": pull.number,
        "html_url": format!("https://github.com/{}/pull/{}", pull.repository, pull.number),
        "title": pull.title,
        "body": pull.body,
        "draft": pull.draft,
        "state": "open",
        "head": {
            "ref": pull.head,
            "sha": pull.head_sha,
            "label": format!("{owner}:{}", pull.head),
            "repo": { "full_name": pull.head_repository },
        },
        "base": { "ref": pull.base, "repo": { "full_name": pull.repository } },
    })
}

async fn get_pull(
    State((state, _)): State<AppState>,
    Path((owner, repo, number)): Path<(String, String, i64)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers, "read a pull request") {
        return unauthorized();
    }
    let repository = format!("{owner}/{repo}");
    let s = state.lock().expect("fake state");
    match s
        .pulls
        .iter()
        .find(|p| p.repository == repository && p.number == number)
    {
        Some(pull) => Json(pull_json(pull)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "message": "Not Found" })),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct PullQuery {
    #[serde(default)]
    head: Option<String>,
}

/// `GET /repos/{owner}/{repo}/pulls?head=owner:branch`.
async fn list_pulls(
    State((state, _)): State<AppState>,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<PullQuery>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers, "list pull requests") {
        return unauthorized();
    }
    let repository = format!("{owner}/{repo}");
    let s = state.lock().expect("fake state");
    let found: Vec<Value> = s
        .pulls
        .iter()
        .filter(|p| p.repository == repository)
        .filter(|p| {
            query.head.as_deref().is_none_or(|head| {
                let owner = p.head_repository.split('/').next().unwrap_or_default();
                head == format!("{owner}:{}", p.head)
            })
        })
        .map(pull_json)
        .collect();
    Json(Value::Array(found)).into_response()
}

/// `POST /repos/{owner}/{repo}/pulls`: a head branch with an open pull
/// request already is refused (422), as GitHub does.
async fn create_pull(
    State((state, _)): State<AppState>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&state, &headers, "open a pull request") {
        return unauthorized();
    }
    let repository = format!("{owner}/{repo}");
    let text = |key: &str| body[key].as_str().unwrap_or_default().to_owned();
    let (pull, delay) = {
        let mut s = state.lock().expect("fake state");
        if s.pulls
            .iter()
            .any(|p| p.repository == repository && p.head == text("head"))
        {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "message": "Validation Failed", "errors": [{ "message": "A pull request already exists" }] })),
            )
                .into_response();
        }
        let pull = Pull {
            number: 100 + s.pulls.len() as i64,
            repository: repository.clone(),
            head: text("head"),
            head_sha: String::new(),
            head_repository: repository.clone(),
            base: text("base"),
            title: text("title"),
            body: text("body"),
            draft: body["draft"].as_bool().unwrap_or(false),
        };
        s.pulls.push(pull.clone());
        (pull, s.pull_delay)
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    (StatusCode::CREATED, Json(pull_json(&pull))).into_response()
}

/// `PATCH /repos/{owner}/{repo}/issues/comments/{id}`: a new body.
async fn edit_comment(
    State((state, _)): State<AppState>,
    Path((_owner, _repo, id)): Path<(String, String, i64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&state, &headers, "edit a comment") {
        return unauthorized();
    }
    let text = body["body"].as_str().unwrap_or_default().to_owned();
    let mut s = state.lock().expect("fake state");
    let Some(comment) = s.comments.iter_mut().find(|c| c.id == id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "message": "Not Found" })),
        )
            .into_response();
    };
    comment.body = text.clone();
    let answer = comment_json(comment);
    s.edits.push((id, text));
    Json(answer).into_response()
}

/// The App (id 1, the harness's), as `GET /app` shows it to its own JWT.
fn app_json() -> Value {
    json!({
        "id": 1,
        "slug": "smolpaws",
        "node_id": "MDM6QXBwMQ==",
        "name": "smolpaws",
        "description": "AI coding agent runs from GitHub comments",
        "external_url": "https://smolpaws.example",
        "html_url": "https://github.com/apps/smolpaws",
        "owner": { "login": "octo", "id": 1, "type": "Organization" },
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "permissions": { "checks": "write", "contents": "write", "issues": "write", "pull_requests": "write", "metadata": "read" },
        "events": ["issue_comment", "pull_request_review_comment"],
    })
}

/// Whether a request authenticates as the App: with a JWT, three
/// dot-separated parts.
fn is_jwt(headers: &HeaderMap) -> bool {
    presented(headers).split('.').count() == 3
}

/// `GET /app`: only to the App's JWT, as on GitHub.
async fn app(headers: HeaderMap) -> Response {
    if !is_jwt(&headers) {
        return unauthorized();
    }
    Json(app_json()).into_response()
}

/// `GET /users/{login}`: the App's bot user; anyone else is a plain user.
async fn user(
    State((state, _)): State<AppState>,
    Path(login): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers, "read a user") {
        return unauthorized();
    }
    let bot = login == "smolpaws[bot]";
    Json(json!({
        "login": login,
        "id": if bot { BOT_USER_ID } else { 1_000 + login.len() as u64 },
        "node_id": "BOT_kgDOBfake",
        "type": if bot { "Bot" } else { "User" },
        "site_admin": false,
        "html_url": format!("https://github.com/{}", if bot { "apps/smolpaws" } else { &login }),
    }))
    .into_response()
}

/// GitHub's answer to a check-run call by an App without `checks: write`.
fn checks_forbidden(doc: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(json!({
            "message": "Resource not accessible by integration",
            "documentation_url": format!("https://docs.github.com/rest/checks/runs#{doc}"),
            "status": "403",
        })),
    )
        .into_response()
}

fn check_run_json(check: &CheckRun) -> Value {
    let (status, conclusion) = check.state();
    json!({
        "id": check.id,
        "node_id": format!("CR_fake{}", check.id),
        "head_sha": check.head_sha,
        "external_id": check.external_id,
        "url": format!("https://api.github.com/repos/{}/check-runs/{}", check.repository, check.id),
        "html_url": format!("https://github.com/{}/runs/{}", check.repository, check.id),
        "details_url": check.details_url,
        "status": status,
        "conclusion": conclusion,
        "started_at": check.started_at,
        "completed_at": check.completed_at,
        "output": {
            "title": check.title,
            "summary": check.summary,
            "text": null,
            "annotations_count": 0,
            "annotations_url": format!("https://api.github.com/repos/{}/check-runs/{}/annotations", check.repository, check.id),
        },
        "name": check.name,
        "check_suite": { "id": 7_000 + check.id },
        "app": app_json(),
        "pull_requests": [],
    })
}

/// `status` and `conclusion` of a create or update body: a conclusion
/// completes the check, whatever `status` says, as on GitHub.
fn state_of(body: &Value, before: Option<&str>) -> (String, Option<String>) {
    let conclusion = body["conclusion"].as_str().map(str::to_owned);
    let status = match &conclusion {
        Some(_) => "completed".to_owned(),
        None => body["status"]
            .as_str()
            .or(before)
            .unwrap_or("queued")
            .to_owned(),
    };
    (status, conclusion)
}

fn now_iso() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn validation_failed(field: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({
            "message": "Invalid request.",
            "errors": [format!("\"{field}\" wasn't supplied.")],
            "documentation_url": "https://docs.github.com/rest/checks/runs#create-a-check-run",
            "status": "422",
        })),
    )
        .into_response()
}

/// `POST /repos/{owner}/{repo}/check-runs`.
async fn create_check_run(
    State((state, _)): State<AppState>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&state, &headers, "create a check run") {
        return unauthorized();
    }
    let text = |key: &str| body[key].as_str().map(str::to_owned);
    let (check, delay) = {
        let mut s = state.lock().expect("fake state");
        if s.checks_forbidden {
            return checks_forbidden("create-a-check-run");
        }
        let (Some(name), Some(head_sha)) = (text("name"), text("head_sha")) else {
            return validation_failed(if text("name").is_none() {
                "name"
            } else {
                "head_sha"
            });
        };
        let state = state_of(&body, None);
        s.next_id += 1;
        let check = CheckRun {
            id: s.next_id,
            repository: format!("{owner}/{repo}"),
            head_sha,
            name,
            external_id: text("external_id"),
            details_url: text("details_url"),
            title: body["output"]["title"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            summary: body["output"]["summary"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            started_at: text("started_at").unwrap_or_else(now_iso),
            completed_at: state
                .1
                .as_ref()
                .map(|_| text("completed_at").unwrap_or_else(now_iso)),
            states: vec![state],
        };
        s.check_runs.push(check.clone());
        (check, s.check_delay)
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    (StatusCode::CREATED, Json(check_run_json(&check))).into_response()
}

/// `PATCH /repos/{owner}/{repo}/check-runs/{id}`.
async fn update_check_run(
    State((state, _)): State<AppState>,
    Path((owner, repo, id)): Path<(String, String, i64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&state, &headers, "update a check run") {
        return unauthorized();
    }
    let repository = format!("{owner}/{repo}");
    let mut s = state.lock().expect("fake state");
    if s.checks_forbidden {
        return checks_forbidden("update-a-check-run");
    }
    let Some(check) = s
        .check_runs
        .iter_mut()
        .find(|c| c.id == id && c.repository == repository)
    else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "message": "Not Found" })),
        )
            .into_response();
    };
    let text = |key: &str| body[key].as_str().map(str::to_owned);
    let state = state_of(&body, Some(check.state().0));
    if let Some(title) = body["output"]["title"].as_str() {
        check.title = title.to_owned();
    }
    if let Some(summary) = body["output"]["summary"].as_str() {
        check.summary = summary.to_owned();
    }
    check.details_url = text("details_url").or(check.details_url.take());
    check.external_id = text("external_id").or(check.external_id.take());
    check.started_at = text("started_at").unwrap_or(check.started_at.clone());
    if state.1.is_some() {
        check.completed_at = Some(text("completed_at").unwrap_or_else(now_iso));
    }
    check.states.push(state);
    Json(check_run_json(check)).into_response()
}

#[derive(Deserialize)]
struct CheckQuery {
    #[serde(default)]
    check_name: Option<String>,
    #[serde(default)]
    app_id: Option<u64>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    per_page: Option<usize>,
}

/// `GET /repos/{owner}/{repo}/commits/{sha}/check-runs`: the check runs on
/// a commit, newest first, filtered and paged as GitHub does.
async fn list_check_runs(
    State((state, _)): State<AppState>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    Query(query): Query<CheckQuery>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers, "list check runs") {
        return unauthorized();
    }
    let repository = format!("{owner}/{repo}");
    let s = state.lock().expect("fake state");
    if s.checks_forbidden {
        return checks_forbidden("list-check-runs-for-a-git-reference");
    }
    let matching: Vec<&CheckRun> = s
        .check_runs
        .iter()
        .rev()
        .filter(|c| c.repository == repository && c.head_sha == sha)
        .filter(|c| query.check_name.as_ref().is_none_or(|n| *n == c.name))
        // Every check run here is the one App's (id 1).
        .filter(|_| query.app_id.is_none_or(|id| id == 1))
        .filter(|c| query.status.as_deref().is_none_or(|st| st == c.state().0))
        .collect();
    let per_page = query.per_page.unwrap_or(30);
    let page = query.page.unwrap_or(1).max(1);
    let shown: Vec<Value> = matching
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|c| check_run_json(c))
        .collect();
    Json(json!({ "total_count": matching.len(), "check_runs": shown })).into_response()
}
