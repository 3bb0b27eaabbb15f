//! A GitHub delivery becomes an AgentRun exactly once, and nothing else gets
//! in: the intake's router against the real test apiserver, fed real payloads
//! signed in the test.

mod support;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use http_body_util::BodyExt;
use kube::api::{Api, ListParams};
use secrecy::SecretString;
use serde_json::{Value, json};
use smolpaws::api::{AgentRun, CommentKind, DiffSide};
use smolpaws::intake::delivery::Rules;
use smolpaws::intake::policy::Policy;
use smolpaws::intake::signature::{WebhookSecrets, sign};
use smolpaws::intake::{DEFAULT_MAX_BODY_BYTES, IntakeConfig, IntakeLimits};
use smolpaws::operator::Operator;
use tower::ServiceExt;

const SECRET: &str = "fixture-secret";

fn rules(actors: &[&str], owners: &[&str], repos: &[&str], installations: &[u64]) -> Rules {
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Rules {
        mention: "@smolpaws".parse().expect("a valid mention"),
        policy: Policy::new(
            strings(actors),
            strings(owners),
            strings(repos),
            installations.to_vec(),
        ),
        app_login: Some("smolpaws[bot]".into()),
        backend: Default::default(),
        max_age: None,
    }
}

fn allow_codertocat() -> Rules {
    rules(&["Codertocat"], &["Codertocat"], &[], &[])
}

fn intake_with(client: kube::Client, ns: &str, rules: Rules, secrets: &[&str]) -> Router {
    intake_limited(client, ns, rules, secrets, IntakeLimits::default())
}

fn intake_limited(
    client: kube::Client,
    ns: &str,
    rules: Rules,
    secrets: &[&str],
    limits: IntakeLimits,
) -> Router {
    let secrets = WebhookSecrets::new(secrets.iter().map(|s| SecretString::from(*s)));
    let config = IntakeConfig {
        rules,
        secrets,
        namespace: Some(ns.to_owned()),
        limits,
    };
    Operator::new(client).intake(config).front()
}

/// A delivery as GitHub sends it.
struct Delivery {
    event: Option<&'static str>,
    id: Option<String>,
    body: Vec<u8>,
    signature: Option<String>,
    content_type: &'static str,
}

impl Delivery {
    fn signed(event: &'static str, id: &str, payload: &Value) -> Self {
        let body = serde_json::to_vec(payload).expect("JSON serializes");
        Self {
            event: Some(event),
            id: Some(id.to_owned()),
            signature: Some(sign(&SecretString::from(SECRET), &body)),
            body,
            content_type: "application/json",
        }
    }

    fn request(self) -> Request<Body> {
        let mut request = Request::post("/webhooks/github")
            .header("content-type", self.content_type)
            .header("user-agent", "GitHub-Hookshot/test");
        if let Some(event) = self.event {
            request = request.header("x-github-event", event);
        }
        if let Some(id) = self.id {
            request = request.header("x-github-delivery", id);
        }
        if let Some(signature) = self.signature {
            request = request.header("x-hub-signature-256", signature);
        }
        request
            .body(Body::from(self.body))
            .expect("a well-formed request")
    }
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the body is readable")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn with_body(mut payload: Value, body: &str) -> Value {
    payload["comment"]["body"] = json!(body);
    payload
}

async fn runs(client: &kube::Client, ns: &str) -> Vec<AgentRun> {
    Api::<AgentRun>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list AgentRuns")
        .items
}

#[tokio::test]
async fn each_fixture_gets_the_right_answer_and_run() {
    let client = support::client();
    let ns = support::namespace(&client, "fixtures").await;
    let router = intake_with(client.clone(), &ns, allow_codertocat(), &[SECRET]);
    let ask = "@smolpaws why is this line here?";

    let cases: [(&str, &str, Option<&str>, StatusCode); 11] = [
        (
            "installation_created.json",
            "installation",
            None,
            StatusCode::OK,
        ),
        (
            "issue_comment_created.json",
            "issue_comment",
            None,
            StatusCode::OK,
        ),
        (
            "issue_comment_created.json",
            "issue_comment",
            Some(ask),
            StatusCode::ACCEPTED,
        ),
        (
            "issue_comment_created.with-installation.json",
            "issue_comment",
            Some(ask),
            StatusCode::ACCEPTED,
        ),
        (
            "issue_comment_deleted.json",
            "issue_comment",
            Some(ask),
            StatusCode::OK,
        ),
        (
            "issue_comment_edited.json",
            "issue_comment",
            Some(ask),
            StatusCode::OK,
        ),
        ("ping_payload.json", "ping", None, StatusCode::OK),
        ("ping_with-app_id.json", "ping", None, StatusCode::OK),
        (
            "pull_request_review_comment_created.json",
            "pull_request_review_comment",
            None,
            StatusCode::OK,
        ),
        (
            "pull_request_review_comment_created.json",
            "pull_request_review_comment",
            Some(ask),
            StatusCode::ACCEPTED,
        ),
        (
            "pull_request_review_comment_edited.json",
            "pull_request_review_comment",
            Some(ask),
            StatusCode::OK,
        ),
    ];
    for (index, (file, event, body, expected)) in cases.into_iter().enumerate() {
        let mut payload = match body {
            Some(body) => with_body(support::fixture(file), body),
            None => support::fixture(file),
        };
        // Runs are named by the comment: each case comments anew.
        if let Some(comment) = payload.get_mut("comment") {
            comment["id"] = json!(1000 + index);
        }
        let delivery = format!("00000000-0000-0000-0000-{index:012}");
        let (status, text) = send(
            &router,
            Delivery::signed(event, &delivery, &payload).request(),
        )
        .await;
        assert_eq!(status, expected, "{file} ({event}, body {body:?}): {text}");
    }

    let mut stored = runs(&client, &ns).await;
    stored.sort_by_key(|run| run.metadata.name.clone());
    let names: Vec<_> = stored
        .iter()
        .filter_map(|r| r.metadata.name.as_deref())
        .collect();
    assert_eq!(
        names,
        [
            "gh-186853002-ic1002",
            "gh-186853002-ic1003",
            "gh-186853002-rc1009",
        ]
    );

    // An issue comment without an installation in its payload.
    let issue = &stored[0].spec;
    let payload = support::fixture("issue_comment_created.json");
    assert_eq!(issue.prompt, "why is this line here?");
    assert_eq!(issue.github.repository, "Codertocat/Hello-World");
    assert_eq!(
        issue.github.number,
        payload["issue"]["number"].as_i64().expect("a number")
    );
    assert!(!issue.github.pull_request);
    assert_eq!(issue.github.installation_id, None);
    assert_eq!(
        issue.github.delivery_id.as_deref(),
        Some("00000000-0000-0000-0000-000000000002")
    );
    let comment = issue.github.comment.as_ref().expect("the trigger comment");
    assert_eq!(comment.id, 1002);
    assert_eq!(comment.kind, CommentKind::IssueComment);
    assert_eq!(
        comment.html_url,
        payload["comment"]["html_url"].as_str().expect("a url")
    );
    assert_eq!(comment.author, "Codertocat");
    assert!(comment.review.is_none() && issue.github.head.is_none());
    let labels = stored[0].metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["smolpaws.dev/owner"], "Codertocat");
    assert_eq!(labels["smolpaws.dev/repo"], "Hello-World");
    assert_eq!(labels["smolpaws.dev/number"], "1");

    assert_eq!(stored[1].spec.github.installation_id, Some(1));

    // A review comment: the diff position and the head to check out.
    let review = &stored[2].spec;
    let payload = support::fixture("pull_request_review_comment_created.json");
    assert!(review.github.pull_request);
    assert_eq!(
        review.github.number,
        payload["pull_request"]["number"]
            .as_i64()
            .expect("a number")
    );
    assert_eq!(review.github.installation_id, Some(1));
    let head = review.github.head.as_ref().expect("the PR head");
    assert_eq!(
        head.git_ref,
        payload["pull_request"]["head"]["ref"]
            .as_str()
            .expect("a ref")
    );
    assert_eq!(
        head.sha,
        payload["pull_request"]["head"]["sha"]
            .as_str()
            .expect("a sha")
    );
    let comment = review.github.comment.as_ref().expect("the trigger comment");
    assert_eq!(comment.kind, CommentKind::ReviewComment);
    assert_eq!(comment.id, 1009);
    let context = comment.review.as_ref().expect("the review context");
    assert_eq!(
        context.path,
        payload["comment"]["path"].as_str().expect("a path")
    );
    assert_eq!(context.line, payload["comment"]["line"].as_i64());
    assert_eq!(context.side, Some(DiffSide::Right));
    assert_eq!(
        context.diff_hunk,
        payload["comment"]["diff_hunk"].as_str().expect("a hunk")
    );
    assert_eq!(
        context.commit_id,
        payload["comment"]["commit_id"].as_str().expect("a sha")
    );

    // The counters tell the same story.
    let (status, metrics) = send(
        &router,
        Request::get("/metrics")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        r#"smolpaws_intake_deliveries_total{event="issue_comment",outcome="accepted"} 2"#,
        r#"smolpaws_intake_deliveries_total{event="pull_request_review_comment",outcome="accepted"} 1"#,
        r#"smolpaws_intake_deliveries_total{event="ping",outcome="ignored"} 2"#,
        r#"smolpaws_intake_deliveries_total{event="other",outcome="ignored"} 1"#,
        "smolpaws_intake_request_duration_seconds_count 11",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in:\n{metrics}");
    }
}

#[tokio::test]
async fn the_policy_decides_who_may_ask() {
    let client = support::client();
    let ns = support::namespace(&client, "policy").await;
    let ask = "@smolpaws please look";
    let issue = || {
        with_body(
            support::fixture("issue_comment_created.with-installation.json"),
            ask,
        )
    };
    let from = |login: &str, kind: &str| {
        let mut payload = issue();
        payload["sender"]["login"] = json!(login);
        payload["sender"]["type"] = json!(kind);
        payload["comment"]["user"]["login"] = json!(login);
        payload["comment"]["user"]["type"] = json!(kind);
        payload
    };

    let cases: Vec<(&str, Rules, Value, &str)> = vec![
        ("allowed", allow_codertocat(), issue(), "accepted"),
        (
            "logins ignore case",
            rules(
                &["CODERTOCAT"],
                &["codertocat"],
                &["CODERTOCAT/hello-world"],
                &[1],
            ),
            issue(),
            "accepted",
        ),
        (
            "no actors configured",
            rules(&[], &["Codertocat"], &[], &[]),
            issue(),
            "denied: ALLOWED_ACTORS is empty",
        ),
        (
            "no owners configured",
            rules(&["Codertocat"], &[], &[], &[]),
            issue(),
            "denied: ALLOWED_OWNERS is empty",
        ),
        (
            "actor not listed",
            rules(&["hubot"], &["Codertocat"], &[], &[]),
            issue(),
            "denied: actor Codertocat",
        ),
        (
            "owner not listed",
            rules(&["Codertocat"], &["octo-org"], &[], &[]),
            issue(),
            "denied: owner Codertocat",
        ),
        (
            "repository not listed",
            rules(&["Codertocat"], &["Codertocat"], &["Codertocat/Other"], &[]),
            issue(),
            "denied: repository",
        ),
        (
            "installation not listed",
            rules(&["Codertocat"], &["Codertocat"], &[], &[99]),
            issue(),
            "denied: installation 1",
        ),
        (
            "a bot",
            rules(
                &["Codertocat", "dependabot[bot]"],
                &["Codertocat"],
                &[],
                &[],
            ),
            from("dependabot[bot]", "Bot"),
            "ignored: comments by bots",
        ),
        (
            "smolpaws itself",
            rules(&["smolpaws[bot]"], &["Codertocat"], &[], &[]),
            from("smolpaws[bot]", "Bot"),
            "ignored: comments by smolpaws itself",
        ),
        (
            "no mention",
            allow_codertocat(),
            with_body(issue(), "just a comment"),
            "ignored: the comment does not mention",
        ),
        (
            "a longer login",
            allow_codertocat(),
            with_body(issue(), "@smolpawsy please look"),
            "ignored: the comment does not mention",
        ),
        (
            "a mention alone",
            allow_codertocat(),
            with_body(issue(), "@smolpaws"),
            "ignored: the mention asks nothing",
        ),
    ];
    let mut expected_runs = Vec::new();
    for (index, (name, rules, mut payload, expected)) in cases.into_iter().enumerate() {
        let router = intake_with(client.clone(), &ns, rules, &[SECRET]);
        let delivery = format!("10000000-0000-0000-0000-{index:012}");
        // Runs are named by the comment: each case comments anew.
        payload["comment"]["id"] = json!(2000 + index);
        let (status, text) = send(
            &router,
            Delivery::signed("issue_comment", &delivery, &payload).request(),
        )
        .await;
        assert!(
            status.is_success(),
            "{name}: a policy answer is 2xx so GitHub does not retry, got {status}"
        );
        assert!(
            text.starts_with(expected),
            "{name}: expected {expected:?}, got {text:?}"
        );
        if expected == "accepted" {
            expected_runs.push(format!("gh-186853002-ic{}", 2000 + index));
        }
    }
    let mut names: Vec<String> = runs(&client, &ns)
        .await
        .into_iter()
        .filter_map(|r| r.metadata.name)
        .collect();
    names.sort();
    assert_eq!(names, expected_runs, "only allowed requests made runs");
}

#[tokio::test]
async fn unsigned_oversize_and_malformed_deliveries_create_nothing() {
    let client = support::client();
    let ns = support::namespace(&client, "refused").await;
    let router = intake_with(
        client.clone(),
        &ns,
        allow_codertocat(),
        &["current", SECRET],
    );
    let payload = with_body(
        support::fixture("issue_comment_created.json"),
        "@smolpaws hi",
    );
    let signed = || {
        Delivery::signed(
            "issue_comment",
            "20000000-0000-0000-0000-000000000000",
            &payload,
        )
    };

    let mut wrong_secret = signed();
    wrong_secret.signature = Some(sign(
        &SecretString::from("not-the-secret"),
        &wrong_secret.body,
    ));
    let mut unsigned = signed();
    unsigned.signature = None;
    let mut garbled = signed();
    garbled.signature = Some("sha256=not-hex".into());
    let mut tampered = signed();
    tampered.body.extend_from_slice(b" ");
    let malformed_body = b"{\"action\": \"created\", \"comment\": ".to_vec();
    let mut malformed = signed();
    malformed.signature = Some(sign(&SecretString::from(SECRET), &malformed_body));
    malformed.body = malformed_body;
    let mut no_delivery = signed();
    no_delivery.id = None;
    let mut no_event = signed();
    no_event.event = None;
    let mut form_encoded = signed();
    form_encoded.content_type = "application/x-www-form-urlencoded";
    let mut unknown_event = signed();
    unknown_event.event = Some("star");

    let cases = [
        ("wrong secret", wrong_secret, StatusCode::UNAUTHORIZED),
        ("no signature", unsigned, StatusCode::UNAUTHORIZED),
        ("garbled signature", garbled, StatusCode::UNAUTHORIZED),
        (
            "body changed after signing",
            tampered,
            StatusCode::UNAUTHORIZED,
        ),
        ("malformed JSON", malformed, StatusCode::BAD_REQUEST),
        ("no delivery id", no_delivery, StatusCode::BAD_REQUEST),
        ("no event", no_event, StatusCode::BAD_REQUEST),
        ("form-encoded", form_encoded, StatusCode::BAD_REQUEST),
        ("unknown event", unknown_event, StatusCode::OK),
    ];
    for (name, delivery, expected) in cases {
        let (status, text) = send(&router, delivery.request()).await;
        assert_eq!(status, expected, "{name}: {text}");
    }

    // Declared oversize: refused from the headers alone.
    let oversize = vec![b' '; DEFAULT_MAX_BODY_BYTES + 1];
    let mut declared = signed();
    declared.signature = Some(sign(&SecretString::from(SECRET), &oversize));
    declared.body = oversize.clone();
    let (status, _) = send(&router, declared.request()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Undeclared (streamed) oversize: reading stops at the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        oversize.chunks(1 << 20).map(|c| Ok(c.to_vec())).collect();
    let streamed = Request::post("/webhooks/github")
        .header("content-type", "application/json")
        .header("x-github-event", "issue_comment")
        .header("x-github-delivery", "20000000-0000-0000-0000-000000000001")
        .header("x-hub-signature-256", WELL_FORMED)
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .expect("a well-formed request");
    let (status, _) = send(&router, streamed).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    assert!(
        runs(&client, &ns).await.is_empty(),
        "nothing refused was stored"
    );

    // The second secret of a rotation is as good as the first.
    let mut rotated = signed();
    rotated.signature = Some(sign(&SecretString::from("current"), &rotated.body));
    let (status, text) = send(&router, rotated.request()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    assert_eq!(runs(&client, &ns).await.len(), 1);
}

#[tokio::test]
async fn an_edit_is_ignored_whatever_else_its_payload_lacks() {
    let client = support::client();
    let ns = support::namespace(&client, "lenient").await;
    let router = intake_with(client.clone(), &ns, allow_codertocat(), &[SECRET]);
    let mut payload = with_body(
        support::fixture("issue_comment_edited.json"),
        "@smolpaws an edited request",
    );
    // As test tools and some GitHub Enterprise versions send it.
    payload["installation"] = json!({ "id": 1 });
    let delivery = Delivery::signed(
        "issue_comment",
        "40000000-0000-0000-0000-000000000001",
        &payload,
    );
    let (status, text) = send(&router, delivery.request()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("edited"), "{text}");
    assert!(runs(&client, &ns).await.is_empty());
}

/// A signature header of the right form whose digest no body has: what a
/// client without the secret can send to get its body read.
const WELL_FORMED: &str = "sha256=0000000000000000000000000000000000000000000000000000000000000000";

/// A body that sends `first` and then never ends, as a client holding its
/// connection open would, under a signature header if `signed`.
fn trickle(first: &'static [u8], signed: bool) -> Request<Body> {
    let stream = futures::stream::iter([Ok::<_, std::io::Error>(first.to_vec())])
        .chain(futures::stream::pending());
    let mut request = Request::post("/webhooks/github")
        .header("content-type", "application/json")
        .header("x-github-event", "issue_comment")
        .header("x-github-delivery", "30000000-0000-0000-0000-000000000001");
    if signed {
        request = request.header("x-hub-signature-256", WELL_FORMED);
    }
    request
        .body(Body::from_stream(stream))
        .expect("a well-formed request")
}

#[tokio::test]
async fn unsigned_clients_cannot_hold_the_intake() {
    let client = support::client();
    let ns = support::namespace(&client, "holders").await;
    let limits = IntakeLimits {
        body_timeout: Duration::from_millis(300),
        max_in_flight: 1,
        ..IntakeLimits::default()
    };
    let router = intake_limited(client.clone(), &ns, allow_codertocat(), &[SECRET], limits);

    // Without a signature header nothing of the body is read.
    let unsigned =
        tokio::time::timeout(Duration::from_secs(1), send(&router, trickle(b"{", false)))
            .await
            .expect("an unsigned delivery is refused at once");
    assert_eq!(unsigned.0, StatusCode::UNAUTHORIZED, "{unsigned:?}");

    // A stalled body, and one dripping a byte every 100 ms (never pausing
    // as long as the timeout), are both cut off at the body's deadline.
    let cut = tokio::time::timeout(Duration::from_secs(10), send(&router, trickle(b"{", true)))
        .await
        .expect("a stalled body is answered, not waited on forever");
    assert_eq!(cut.0, StatusCode::REQUEST_TIMEOUT, "{cut:?}");
    let drip = futures::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Ok::<_, std::io::Error>(vec![b' ']), ()))
    });
    let dripping = Request::post("/webhooks/github")
        .header("content-type", "application/json")
        .header("x-github-event", "issue_comment")
        .header("x-github-delivery", "30000000-0000-0000-0000-000000000003")
        .header("x-hub-signature-256", WELL_FORMED)
        .body(Body::from_stream(drip))
        .expect("a well-formed request");
    let cut = tokio::time::timeout(Duration::from_secs(10), send(&router, dripping))
        .await
        .expect("a dripping body is answered, not waited on forever");
    assert_eq!(cut.0, StatusCode::REQUEST_TIMEOUT, "{cut:?}");

    // While one delivery holds the only place, the next is shed at once.
    let holder = tokio::spawn({
        let router = router.clone();
        async move { send(&router, trickle(b"{", true)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let delivery = Delivery::signed(
        "issue_comment",
        "30000000-0000-0000-0000-000000000002",
        &with_body(
            support::fixture("issue_comment_created.json"),
            "@smolpaws hi",
        ),
    );
    let (status, text) = send(&router, delivery.request()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    holder.await.expect("the holder ends");
    assert!(runs(&client, &ns).await.is_empty());
}

#[tokio::test]
async fn ten_concurrent_redeliveries_make_one_run() {
    let client = support::client();
    let ns = support::namespace(&client, "redelivery").await;
    let router = intake_with(client.clone(), &ns, allow_codertocat(), &[SECRET]);
    let payload = with_body(
        support::fixture("issue_comment_created.json"),
        "@smolpaws once",
    );
    let sends = (0..10).map(|_| {
        let router = router.clone();
        let request = Delivery::signed(
            "issue_comment",
            "30000000-0000-0000-0000-000000000000",
            &payload,
        )
        .request();
        tokio::spawn(async move { send(&router, request).await })
    });
    let answers = futures::future::join_all(sends).await;
    let statuses: Vec<StatusCode> = answers
        .into_iter()
        .map(|a| a.expect("the task ran").0)
        .collect();
    assert!(statuses.iter().all(|s| s.is_success()), "{statuses:?}");
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::ACCEPTED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(runs(&client, &ns).await.len(), 1);
}

#[tokio::test]
async fn an_apiserver_outage_answers_503_and_the_redelivery_creates_the_run() {
    let mut plane = support::private_control_plane().await;
    let client = plane.client().expect("a client");
    let ns = support::namespace(&client, "outage").await;
    let router = intake_with(client.clone(), &ns, allow_codertocat(), &[SECRET]);
    let payload = with_body(
        support::fixture("issue_comment_created.json"),
        "@smolpaws survive this",
    );
    let delivery = || {
        Delivery::signed(
            "issue_comment",
            "40000000-0000-0000-0000-000000000000",
            &payload,
        )
        .request()
    };
    let ready = || {
        Request::get("/readyz")
            .body(Body::empty())
            .expect("request")
    };

    assert_eq!(send(&router, ready()).await.0, StatusCode::OK);
    plane.stop_apiserver();
    let (status, text) = send(&router, delivery()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert_eq!(
        send(&router, ready()).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        send(
            &router,
            Request::get("/healthz")
                .body(Body::empty())
                .expect("request")
        )
        .await
        .0,
        StatusCode::OK,
        "the process itself is fine"
    );

    plane
        .start_apiserver()
        .await
        .expect("the apiserver restarts");
    let (status, text) = send(&router, delivery()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    assert_eq!(runs(&client, &ns).await.len(), 1);
}

#[tokio::test]
async fn a_signed_body_replayed_under_new_delivery_ids_makes_one_run() {
    let client = support::client();
    let ns = support::namespace(&client, "replay").await;
    let router = intake_with(client.clone(), &ns, allow_codertocat(), &[SECRET]);
    let payload = with_body(
        support::fixture("issue_comment_created.json"),
        "@smolpaws only once",
    );
    let mut accepted = 0;
    for attempt in 0..20 {
        let delivery = format!("50000000-0000-0000-0000-{attempt:012}");
        let (status, text) = send(
            &router,
            Delivery::signed("issue_comment", &delivery, &payload).request(),
        )
        .await;
        assert!(status.is_success(), "{status}: {text}");
        if status == StatusCode::ACCEPTED {
            accepted += 1;
        } else {
            assert!(
                text.starts_with("duplicate: agentrun gh-186853002-ic492700400"),
                "{text}"
            );
        }
    }
    assert_eq!(accepted, 1);
    assert_eq!(runs(&client, &ns).await.len(), 1);
}

#[tokio::test]
async fn a_comment_older_than_the_window_starts_no_run() {
    let client = support::client();
    let ns = support::namespace(&client, "stale").await;
    let mut rules = allow_codertocat();
    rules.max_age = Some(std::time::Duration::from_secs(3600));
    let router = intake_with(client.clone(), &ns, rules, &[SECRET]);
    let stamp = |ago: i64| {
        k8s_openapi::jiff::Timestamp::now()
            .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(ago))
            .expect("a time")
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let comment = |id: i64, ago: i64| {
        let mut payload = with_body(
            support::fixture("issue_comment_created.json"),
            "@smolpaws look",
        );
        payload["comment"]["id"] = json!(id);
        payload["comment"]["created_at"] = json!(stamp(ago));
        payload
    };
    let cases = [
        (1, 3 * 3600, "ignored: the comment is 3h old"),
        (2, 3600 + 60, "accepted"),
        (3, -600, "accepted"),
    ];
    for (id, ago, expected) in cases {
        let delivery = format!("60000000-0000-0000-0000-{id:012}");
        let (_, text) = send(
            &router,
            Delivery::signed("issue_comment", &delivery, &comment(id, ago)).request(),
        )
        .await;
        assert!(
            text.starts_with(expected),
            "{ago} s old: expected {expected:?}, got {text:?}"
        );
    }
    assert_eq!(
        runs(&client, &ns).await.len(),
        2,
        "within the window and the clock's slack"
    );
}

#[tokio::test]
async fn an_author_past_the_hour_s_runs_is_throttled() {
    let client = support::client();
    let ns = support::namespace(&client, "throttle").await;
    let limits = IntakeLimits {
        rates: smolpaws::intake::throttle::RunRates {
            per_actor: 2,
            per_repository: 100,
        },
        ..IntakeLimits::default()
    };
    let router = intake_limited(client.clone(), &ns, allow_codertocat(), &[SECRET], limits);
    let mut answers = Vec::new();
    for id in 1..=3 {
        let mut payload = with_body(
            support::fixture("issue_comment_created.json"),
            "@smolpaws once more",
        );
        payload["comment"]["id"] = json!(7000 + id);
        let delivery = format!("70000000-0000-0000-0000-{id:012}");
        answers.push(
            send(
                &router,
                Delivery::signed("issue_comment", &delivery, &payload).request(),
            )
            .await,
        );
    }
    let statuses: Vec<StatusCode> = answers.iter().map(|(status, _)| *status).collect();
    assert_eq!(
        statuses,
        [
            StatusCode::ACCEPTED,
            StatusCode::ACCEPTED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert!(
        answers[2]
            .1
            .starts_with("throttled: Codertocat started 2 runs"),
        "{}",
        answers[2].1
    );
    assert_eq!(runs(&client, &ns).await.len(), 2);

    // A redelivery of a comment that has its run adds no run: it is a
    // duplicate even for an author past their hour's runs.
    let mut payload = with_body(
        support::fixture("issue_comment_created.json"),
        "@smolpaws once more",
    );
    payload["comment"]["id"] = json!(7001);
    let delivery = "70000000-0000-0000-0000-000000000001";
    let (status, text) = send(
        &router,
        Delivery::signed("issue_comment", delivery, &payload).request(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.starts_with("duplicate: agentrun"), "{text}");
}
