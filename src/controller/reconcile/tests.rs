//! Reconcile steps against a mocked apiserver (kube's `tower-test`
//! pattern), a scripted sandbox backend and, for replies, a GitHub stub on
//! loopback: each scenario asserts the exact calls of one step, in order.
//! The real-apiserver suite in `tests/` stays the proof; these make the
//! state machine cheap to change.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use base64::prelude::{BASE64_STANDARD, Engine as _};
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{reflector, watcher};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use super::{FINALIZER, reconcile};
use crate::api::{
    AgentRun, AgentRunStatus, Outcome, Phase, RunResult, SandboxBackend, TokenUsage, fixtures, now,
};
use crate::controller::admission::Limits;
use crate::controller::metrics::ControllerMetrics;
use crate::controller::run_key::RunKey;
use crate::controller::status::conditions;
use crate::controller::{Context, ControllerConfig};
use crate::github::{GitHub, GitHubConfig};
use crate::sandbox::{Launch, Polls, Provisioned, Sandbox, SandboxError, SandboxState, Sandboxes};

/// What happened, in order: apiserver calls as `METHOD path`, backend
/// calls by name.
type Log = Arc<Mutex<Vec<String>>>;

fn entries(log: &Log) -> Vec<String> {
    log.lock().expect("the log").clone()
}

const NAMESPACE: &str = "ns";
const RUNS: &str = "/apis/smolpaws.dev/v1alpha1/namespaces/ns/agentruns";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";
const SECRETS: &str = "/api/v1/namespaces/ns/secrets";

/// A backend that answers as scripted and logs each call.
struct ScriptedSandbox {
    log: Log,
    provisioned: Provisioned,
    state: Option<SandboxState>,
}

#[async_trait::async_trait]
impl Sandbox for ScriptedSandbox {
    fn planned_name(&self, run: &AgentRun) -> Option<String> {
        run.metadata.name.clone()
    }

    async fn provision(&self, launch: Launch<'_>) -> Result<Provisioned, SandboxError> {
        let secret = launch.secret.metadata.name.as_deref().unwrap_or_default();
        let fresh = if launch.fresh { ", fresh" } else { "" };
        self.log
            .lock()
            .expect("the log")
            .push(format!("provision with {secret}{fresh}"));
        Ok(self.provisioned.clone())
    }

    async fn state(&self, _run: &AgentRun) -> Result<Option<SandboxState>, SandboxError> {
        self.log.lock().expect("the log").push("state".into());
        Ok(self.state.clone())
    }

    async fn stop(&self, _run: &AgentRun) -> Result<(), SandboxError> {
        self.log.lock().expect("the log").push("stop".into());
        Ok(())
    }

    async fn release(&self, _run: &AgentRun) -> Result<(), SandboxError> {
        self.log.lock().expect("the log").push("release".into());
        Ok(())
    }

    fn polls(&self) -> Polls {
        Polls {
            starting: Duration::from_secs(3),
            running: Duration::from_secs(7),
        }
    }
}

fn run(name: &str, status: AgentRunStatus) -> AgentRun {
    let mut run = fixtures::run(name, "octo/hello", Phase::Pending);
    run.metadata.uid = Some(format!("uid-{name}"));
    run.metadata.resource_version = Some("7".into());
    run.metadata.generation = Some(1);
    run.metadata.creation_timestamp = Some(now());
    run.metadata.finalizers = Some(vec![FINALIZER.into()]);
    run.status = Some(status);
    run
}

fn in_phase(phase: Phase) -> AgentRunStatus {
    AgentRunStatus {
        phase: Some(phase),
        ..AgentRunStatus::default()
    }
}

/// One expected apiserver call and its answer.
struct Call {
    method: Method,
    path: String,
    status: StatusCode,
    /// The answer's body; `None` echoes the request's body.
    answer: Option<Value>,
}

fn call(method: Method, path: impl Into<String>, status: StatusCode) -> Call {
    Call {
        method,
        path: path.into(),
        status,
        answer: None,
    }
}

impl Call {
    fn answering(mut self, answer: Value) -> Self {
        self.answer = Some(answer);
        self
    }
}

fn not_found(what: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "reason": "NotFound", "code": 404,
        "message": format!("{what} not found"),
    })
}

/// A context whose apiserver answers `calls` in order (logging each and
/// keeping the bodies it was sent), with `sandbox` as the pod backend.
fn context(
    log: &Log,
    calls: Vec<Call>,
    sandbox: ScriptedSandbox,
    others: &[AgentRun],
    github: Option<GitHub>,
) -> (Arc<Context>, tokio::task::JoinHandle<Vec<Value>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, NAMESPACE);
    let served = tokio::spawn({
        let log = log.clone();
        async move {
            let mut bodies = Vec::new();
            for expected in calls {
                let (request, respond) = handle
                    .next_request()
                    .await
                    .unwrap_or_else(|| panic!("no {} {} was made", expected.method, expected.path));
                let (parts, body) = request.into_parts();
                let path = parts.uri.path().to_owned();
                log.lock()
                    .expect("the log")
                    .push(format!("{} {path}", parts.method));
                assert_eq!(
                    (&parts.method, path.as_str()),
                    (&expected.method, expected.path.as_str()),
                    "calls so far: {:?}",
                    log.lock().expect("the log")
                );
                let sent = body.collect_bytes().await.expect("a request body");
                let sent: Value = serde_json::from_slice(&sent).unwrap_or(Value::Null);
                let answer = expected.answer.unwrap_or_else(|| sent.clone());
                bodies.push(sent);
                let response = Response::builder()
                    .status(expected.status)
                    .body(Body::from(serde_json::to_vec(&answer).expect("JSON")))
                    .expect("a response");
                respond.send_response(response);
            }
            bodies
        }
    });
    let (store, mut writer) = reflector::store();
    for other in others {
        writer.apply_watcher_event(&watcher::Event::Apply(other.clone()));
    }
    let config = ControllerConfig {
        limits: Limits {
            global: 10,
            per_repository: 1,
            pending_per_repository: 100,
        },
        ..ControllerConfig::default()
    };
    let reporter = Reporter {
        controller: "smolpaws-controller".into(),
        instance: None,
    };
    let context = Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        github,
        sandboxes: Sandboxes::new().with(SandboxBackend::Pod, Arc::new(sandbox)),
        key: Arc::new(test_key()),
        allowed_namespaces: config.allowed_namespaces,
        limits: config.limits,
        pending_timeout: config.pending_timeout,
        run_timeout: config.run_timeout,
        ttl: config.ttl,
        changes: config.changes,
        // Its GitHub calls are told in tests/change_to_pull_request.rs.
        progress: crate::controller::progress::ProgressSettings {
            enabled: false,
            ..config.progress
        },
        runs: store,
        ahead: Mutex::new(crate::controller::admission::Ahead::default()),
        failures: crate::controller::retry::Failures::default(),
        superseded: crate::controller::superseded::Superseded::default(),
        metrics: ControllerMetrics::register(&mut Registry::default()),
        wake: futures::channel::mpsc::unbounded().0,
    };
    (Arc::new(context), served)
}

/// The run key of every test context.
fn test_key() -> RunKey {
    RunKey::new([7; 32])
}

/// Reconciles `run` once in a context from [`context`]: the step's action
/// and the bodies its apiserver was sent.
async fn reconcile_once(
    run: AgentRun,
    (ctx, served): (Arc<Context>, tokio::task::JoinHandle<Vec<Value>>),
) -> (kube::runtime::controller::Action, Vec<Value>) {
    let action = reconcile(Arc::new(run), ctx)
        .await
        .expect("the step succeeds");
    (action, served.await.expect("the apiserver served"))
}

fn scripted(log: &Log, provisioned: Provisioned, state: Option<SandboxState>) -> ScriptedSandbox {
    ScriptedSandbox {
        log: log.clone(),
        provisioned,
        state,
    }
}

fn waiting() -> Provisioned {
    Provisioned::Waiting {
        reason: None,
        created: false,
    }
}

fn status_path(name: &str) -> String {
    format!("{RUNS}/{name}/status")
}

/// Run `name`'s Secret, owned by it.
fn owned_secret(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": format!("{name}-run"),
            "uid": format!("secret-of-{name}"),
            "ownerReferences": [{
                "apiVersion": "smolpaws.dev/v1alpha1", "kind": "AgentRun", "name": name,
                "uid": format!("uid-{name}"), "controller": true,
            }],
        },
    })
}

/// The deletion of run `name`'s Secret.
fn secret_deleted(name: &str) -> Call {
    call(
        Method::DELETE,
        format!("{SECRETS}/{name}-run"),
        StatusCode::OK,
    )
    .answering(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}))
}

/// The calls of one status transition of `run`: the patch, then its Event.
fn transition(run: &AgentRun) -> [Call; 2] {
    let name = run.metadata.name.as_deref().unwrap_or_default();
    let stored = serde_json::to_value(run).expect("JSON");
    [
        call(Method::PATCH, status_path(name), StatusCode::OK).answering(stored),
        call(Method::POST, EVENTS, StatusCode::CREATED),
    ]
}

#[tokio::test]
async fn a_pending_run_without_a_slot_is_queued_and_looked_at_again() {
    let log = Log::default();
    let mut holder = run("holder", in_phase(Phase::Running));
    holder.spec.github.repository = "octo/hello".into();
    let queued = run("run-1", AgentRunStatus::default());
    let calls = Vec::from(transition(&queued));
    let sandbox = scripted(&log, waiting(), None);
    let ctx = context(&log, calls, sandbox, &[holder, queued.clone()], None);
    let (action, bodies) = reconcile_once(queued, ctx).await;
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(super::QUEUE_POLL)
    );
    assert_eq!(
        entries(&log),
        [
            format!("PATCH {}", status_path("run-1")),
            format!("POST {EVENTS}")
        ]
    );
    let patch = &bodies[0];
    assert_eq!(patch["metadata"]["resourceVersion"], "7", "{patch}");
    let condition = &patch["status"]["conditions"][0];
    assert_eq!(condition["type"], conditions::ADMITTED);
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "Queued");
    assert!(
        patch["status"].get("phase").is_none(),
        "a queued run stays Pending: {patch}"
    );
}

#[tokio::test]
async fn a_run_behind_a_full_queue_fails_at_once_and_says_why() {
    let log = Log::default();
    let mut holder = run("holder", in_phase(Phase::Running));
    holder.spec.github.repository = "octo/hello".into();
    let earlier = run("early", AgentRunStatus::default());
    let late = run("run-1", AgentRunStatus::default());
    let mut calls = vec![call(
        Method::GET,
        format!("{SECRETS}/run-1-run"),
        StatusCode::NOT_FOUND,
    )];
    calls.extend(transition(&late));
    let sandbox = scripted(&log, waiting(), None);
    let (mut ctx, served) = context(&log, calls, sandbox, &[holder, earlier, late.clone()], None);
    Arc::get_mut(&mut ctx)
        .expect("one owner")
        .limits
        .pending_per_repository = 1;
    let (_, bodies) = reconcile_once(late, (ctx, served)).await;
    let patch = bodies
        .iter()
        .find(|b| b.get("status").is_some())
        .expect("a status patch");
    assert_eq!(patch["status"]["phase"], "Failed", "{patch}");
    let finished = &patch["status"]["conditions"][0];
    assert_eq!(finished["reason"], "QueueFull");
    assert!(
        finished["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("1 requests in octo/hello are already waiting")),
        "{finished}"
    );
}

/// The condition of a run admitted just now.
fn admitted_now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: conditions::ADMITTED.into(),
        status: "True".into(),
        reason: "Admitted".into(),
        message: String::new(),
        last_transition_time: now(),
        observed_generation: Some(1),
    }
}

/// `run` as the apiserver stores it once admitted: in Provisioning under a
/// new resourceVersion.
fn in_provisioning(run: &AgentRun) -> AgentRun {
    let mut admitted = run.clone();
    let version: u64 = run
        .metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("a numeric resourceVersion");
    admitted.metadata.resource_version = Some((version + 1).to_string());
    admitted.status = Some(AgentRunStatus {
        conditions: vec![admitted_now()],
        ..in_phase(Phase::Provisioning)
    });
    admitted
}

#[tokio::test]
async fn a_new_run_is_held_admitted_and_given_its_secret_and_sandbox_in_one_pass() {
    let log = Log::default();
    let mut new = run("run-1", AgentRunStatus::default());
    new.metadata.finalizers = None;
    new.status = None;
    let mut held = run("run-1", AgentRunStatus::default());
    held.metadata.resource_version = Some("8".into());
    let admitted = in_provisioning(&held);
    let mut calls = vec![
        call(Method::PATCH, format!("{RUNS}/run-1"), StatusCode::OK)
            .answering(serde_json::to_value(&held).expect("JSON")),
    ];
    calls.extend(transition(&admitted));
    calls.push(call(Method::POST, SECRETS, StatusCode::CREATED));
    let sandbox = scripted(&log, waiting(), None);
    let ctx = context(&log, calls, sandbox, &[], None);
    let shared = ctx.0.clone();
    let (action, bodies) = reconcile_once(new.clone(), ctx).await;

    assert_eq!(
        entries(&log),
        [
            format!("PATCH {RUNS}/run-1"),
            format!("PATCH {}", status_path("run-1")),
            format!("POST {EVENTS}"),
            format!("POST {SECRETS}"),
            "provision with run-1-run, fresh".to_owned(),
        ],
        "no watch awaited between the steps, no lookups of what cannot exist yet"
    );
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(3))
    );
    let finalizer = &bodies[0]["metadata"];
    assert_eq!(finalizer["resourceVersion"], "7", "{finalizer}");
    assert_eq!(finalizer["finalizers"], json!([FINALIZER]));
    let admission = &bodies[1];
    assert_eq!(
        admission["metadata"]["resourceVersion"], "8",
        "admitted on the version the finalizer patch answered: {admission}"
    );
    assert_eq!(admission["status"]["phase"], "Provisioning");

    // The watch brings the versions written past a moment later: each
    // waits for the newest rather than redoing its steps (no call is
    // scripted: one made would fail the reconcile).
    for past in [new, held] {
        let action = reconcile(Arc::new(past), shared.clone())
            .await
            .expect("a stale view waits");
        assert_eq!(action, kube::runtime::controller::Action::await_change());
    }
    assert_eq!(entries(&log).len(), 5, "{:?}", entries(&log));
}

#[tokio::test]
async fn provisioning_makes_the_secret_then_the_sandbox_then_runs() {
    let log = Log::default();
    let provisioning = run("run-1", in_phase(Phase::Provisioning));
    let mut calls = vec![
        call(
            Method::GET,
            format!("{SECRETS}/run-1-run"),
            StatusCode::NOT_FOUND,
        )
        .answering(not_found("secrets \"run-1-run\"")),
        call(Method::POST, SECRETS, StatusCode::CREATED),
    ];
    calls.extend(transition(&provisioning));
    let started = Provisioned::Started {
        at: now(),
        name: None,
        created: true,
    };
    let sandbox = scripted(&log, started, None);
    let (_, bodies) = reconcile_once(provisioning, context(&log, calls, sandbox, &[], None)).await;
    assert_eq!(
        entries(&log),
        [
            format!("GET {SECRETS}/run-1-run"),
            format!("POST {SECRETS}"),
            "provision with run-1-run".to_owned(),
            format!("PATCH {}", status_path("run-1")),
            format!("POST {EVENTS}"),
        ]
    );
    let secret = &bodies[1];
    let token = secret["data"]["SMOLPAWS_REPORT_TOKEN"]
        .as_str()
        .and_then(|token| BASE64_STANDARD.decode(token).ok())
        .expect("the run's report token is minted");
    assert_eq!(
        test_key().verify("ns", "run-1", &token),
        Some("uid-run-1"),
        "the credential is the run's own, under the controller's key"
    );
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["name"], "run-1",
        "the run owns its Secret"
    );
    let patch = &bodies[2]["status"];
    assert_eq!(patch["phase"], "Running");
    assert!(patch["startedAt"].is_string(), "{patch}");
}

#[tokio::test]
async fn a_sandbox_still_starting_is_looked_at_by_the_backend_s_poll() {
    let log = Log::default();
    let mut status = in_phase(Phase::Provisioning);
    status.conditions = vec![admitted_now()];
    let provisioning = run("run-1", status);
    let secret = owned_secret("run-1");
    let calls =
        vec![call(Method::GET, format!("{SECRETS}/run-1-run"), StatusCode::OK).answering(secret)];
    let sandbox = scripted(&log, waiting(), None);
    let (action, _) = reconcile_once(provisioning, context(&log, calls, sandbox, &[], None)).await;
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(3))
    );
    assert_eq!(
        entries(&log),
        [
            format!("GET {SECRETS}/run-1-run"),
            "provision with run-1-run".to_owned()
        ]
    );
}

#[tokio::test]
async fn an_agent_killed_for_memory_fails_the_run_and_releases_its_sandbox() {
    let log = Log::default();
    let mut status = in_phase(Phase::Running);
    status.started_at = Some(now());
    let running = run("run-1", status);
    let stored = serde_json::to_value(&running).expect("JSON");
    let mut calls = vec![
        call(Method::GET, format!("{RUNS}/run-1"), StatusCode::OK).answering(stored),
        call(Method::GET, format!("{SECRETS}/run-1-run"), StatusCode::OK)
            .answering(owned_secret("run-1")),
    ];
    calls.extend(transition(&running));
    calls.push(secret_deleted("run-1"));
    let killed = SandboxState::Exited {
        code: 137,
        reason: Some("OOMKilled".into()),
    };
    let sandbox = scripted(&log, waiting(), Some(killed));
    let (_, bodies) = reconcile_once(running, context(&log, calls, sandbox, &[], None)).await;
    assert_eq!(
        entries(&log),
        [
            "state".to_owned(),
            format!("GET {RUNS}/run-1"),
            "release".to_owned(),
            format!("GET {SECRETS}/run-1-run"),
            format!("PATCH {}", status_path("run-1")),
            format!("POST {EVENTS}"),
            format!("DELETE {SECRETS}/run-1-run"),
        ]
    );
    let patch = &bodies[2]["status"];
    assert_eq!(patch["phase"], "Failed");
    let deleted = &bodies[4];
    assert_eq!(
        deleted["preconditions"]["uid"], "secret-of-run-1",
        "only the Secret it read is deleted: {deleted}"
    );
    let finished = &patch["conditions"][0];
    assert_eq!(finished["type"], conditions::FINISHED);
    assert_eq!(finished["reason"], "OutOfMemory");
    assert!(patch["finishedAt"].is_string() && patch["duration"].is_string());
}

#[tokio::test]
async fn an_agent_that_reports_a_failed_llm_fails_the_run_with_its_own_reply() {
    let log = Log::default();
    let mut status = in_phase(Phase::Running);
    status.started_at = Some(now());
    status.result = Some(RunResult {
        reply: "I stopped before finishing: the LLM failed.".into(),
        usage: TokenUsage {
            prompt_tokens: 300,
            completion_tokens: 40,
        },
        model: None,
        outcome: Outcome::LlmFailed,
        change: None,
    });
    let reported = run("run-1", status);
    let mut calls = vec![
        call(Method::GET, format!("{SECRETS}/run-1-run"), StatusCode::OK)
            .answering(owned_secret("run-1")),
    ];
    calls.extend(transition(&reported));
    calls.push(secret_deleted("run-1"));
    let sandbox = scripted(&log, waiting(), Some(SandboxState::Running));
    let (_, bodies) = reconcile_once(reported, context(&log, calls, sandbox, &[], None)).await;
    assert_eq!(
        entries(&log),
        [
            "stop".to_owned(),
            "release".to_owned(),
            format!("GET {SECRETS}/run-1-run"),
            format!("PATCH {}", status_path("run-1")),
            format!("POST {EVENTS}"),
            format!("DELETE {SECRETS}/run-1-run"),
        ]
    );
    let patch = &bodies[1]["status"];
    assert_eq!(patch["phase"], "Failed");
    assert_eq!(patch["conditions"][0]["reason"], "LLMFailed");
}

/// A GitHub stub on loopback: an installation token, the thread's comments
/// (`existing`), and posts, each logged.
async fn github(log: &Log, existing: Value) -> GitHub {
    #[derive(Clone)]
    struct Stub {
        log: Log,
        existing: Value,
    }
    let stub = Stub {
        log: log.clone(),
        existing,
    };
    let router = axum::Router::new()
        .route(
            "/app/installations/1/access_tokens",
            post(|| async {
                (
                    StatusCode::CREATED,
                    Json(json!({
                        "token": "ghs_stub",
                        "expires_at": "2099-01-01T00:00:00Z",
                        "permissions": {"issues": "write"},
                        "repository_selection": "selected",
                    })),
                )
            }),
        )
        // GitHub in an outage, for reactions.
        .route(
            "/repos/octo/hello/issues/comments/{id}/reactions",
            post(|| async { StatusCode::SERVICE_UNAVAILABLE }),
        )
        .route(
            "/repos/octo/hello/issues/7/comments",
            get(|State(stub): State<Stub>| async move {
                stub.log.lock().expect("the log").push("list comments".into());
                Json(stub.existing)
            })
            .post(|State(stub): State<Stub>, Json(body): Json<Value>| async move {
                let text = body["body"].as_str().unwrap_or_default().to_owned();
                stub.log
                    .lock()
                    .expect("the log")
                    .push(format!("post comment: {text}"));
                (
                    StatusCode::CREATED,
                    Json(json!({"id": 99, "html_url": "https://github.com/octo/hello/issues/7#issuecomment-99"})),
                )
            }),
        )
        .with_state(stub);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    GitHub::new(&GitHubConfig {
        app_id: 1,
        app_private_key: None,
        app_private_key_file: Some(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/github-app-test-key.pem"
            )
            .into(),
        ),
        api_url: url,
    })
    .expect("a GitHub client")
}

fn succeeded(name: &str) -> AgentRun {
    let mut status = in_phase(Phase::Succeeded);
    status.result = Some(RunResult {
        reply: "They are dropped in lexer.rs.".into(),
        usage: TokenUsage::default(),
        model: None,
        outcome: Outcome::Finished,
        change: None,
    });
    status.finished_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::now(),
    ));
    run(name, status)
}

#[tokio::test]
async fn a_finished_run_posts_its_reply_once_and_records_it() {
    let log = Log::default();
    let finished = succeeded("run-1");
    let calls = Vec::from(transition(&finished));
    let github = github(&log, json!([])).await;
    let sandbox = scripted(&log, waiting(), None);
    let (_, bodies) =
        reconcile_once(finished, context(&log, calls, sandbox, &[], Some(github))).await;
    let log = entries(&log);
    assert_eq!(log.len(), 4, "{log:?}");
    assert_eq!(log[0], "list comments");
    assert!(
        log[1].starts_with("post comment: They are dropped in lexer.rs.")
            && log[1].contains("<!-- smolpaws:run ns/run-1 uid-run-1 -->"),
        "the reply carries its marker: {log:?}"
    );
    assert_eq!(log[2], format!("PATCH {}", status_path("run-1")));
    assert_eq!(bodies[0]["status"]["reply"]["id"], 99);
}

#[tokio::test]
async fn a_reply_posted_before_a_crash_is_found_not_posted_again() {
    let log = Log::default();
    let finished = succeeded("run-1");
    let calls = Vec::from(transition(&finished));
    let posted = json!([{
        "id": 42,
        "html_url": "https://github.com/octo/hello/issues/7#issuecomment-42",
        "body": "They are dropped.\n\n<!-- smolpaws:run ns/run-1 uid-run-1 -->",
        "performed_via_github_app": { "id": 1, "slug": "smolpaws" },
    }]);
    let github = github(&log, posted).await;
    let sandbox = scripted(&log, waiting(), None);
    let (_, bodies) =
        reconcile_once(finished, context(&log, calls, sandbox, &[], Some(github))).await;
    assert_eq!(
        entries(&log),
        [
            "list comments".to_owned(),
            format!("PATCH {}", status_path("run-1")),
            format!("POST {EVENTS}"),
        ]
    );
    assert_eq!(bodies[0]["status"]["reply"]["id"], 42);
}

#[tokio::test]
async fn a_secret_someone_else_made_under_the_run_s_name_is_never_adopted() {
    let log = Log::default();
    let provisioning = run("run-1", in_phase(Phase::Provisioning));
    let planted = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": "run-1-run", "uid": "planted" },
        "data": { "SMOLPAWS_REPORT_TOKEN": "a25vd24tdG8tdGhlLXBsYW50ZXI=" },
    });
    let mut calls = vec![
        call(Method::GET, format!("{SECRETS}/run-1-run"), StatusCode::OK)
            .answering(planted.clone()),
        call(Method::GET, format!("{SECRETS}/run-1-run"), StatusCode::OK).answering(planted),
    ];
    calls.extend(transition(&provisioning));
    let sandbox = scripted(&log, waiting(), None);
    let (_, bodies) = reconcile_once(provisioning, context(&log, calls, sandbox, &[], None)).await;
    assert_eq!(
        entries(&log),
        [
            format!("GET {SECRETS}/run-1-run"),
            "release".to_owned(),
            format!("GET {SECRETS}/run-1-run"),
            format!("PATCH {}", status_path("run-1")),
            format!("POST {EVENTS}"),
        ],
        "no sandbox is made with it, and it is not deleted"
    );
    let finished = &bodies[2]["status"]["conditions"][0];
    assert_eq!(finished["reason"], "SecretConflict");
}

#[tokio::test]
async fn a_marker_pasted_by_someone_else_does_not_silence_the_reply() {
    let log = Log::default();
    let finished = succeeded("run-1");
    let calls = Vec::from(transition(&finished));
    let pasted = json!([{
        "id": 43,
        "html_url": "https://github.com/octo/hello/issues/7#issuecomment-43",
        "body": "<!-- smolpaws:run ns/run-1 uid-run-1 -->",
        "user": { "login": "mallory", "type": "User" },
    }]);
    let github = github(&log, pasted).await;
    let sandbox = scripted(&log, waiting(), None);
    let (_, bodies) =
        reconcile_once(finished, context(&log, calls, sandbox, &[], Some(github))).await;

    let log = entries(&log);
    assert_eq!(log[0], "list comments");
    assert!(log[1].starts_with("post comment: "), "{log:?}");
    assert_eq!(bodies[0]["status"]["reply"]["id"], 99);
}

/// The comment that asked for a run, on issue 7 of octo/hello.
fn trigger_comment() -> crate::api::TriggerComment {
    crate::api::TriggerComment {
        id: 4242,
        kind: crate::api::CommentKind::IssueComment,
        html_url: "https://github.com/octo/hello/issues/7#issuecomment-4242".into(),
        author: "maintainer".into(),
        review: None,
    }
}

#[tokio::test]
async fn a_github_outage_does_not_hold_a_run_at_its_acknowledgement() {
    let log = Log::default();
    let mut pending = run("run-1", AgentRunStatus::default());
    pending.spec = crate::api::fixtures::spec("octo/hello");
    pending.spec.github.comment = Some(trigger_comment());
    let mut acknowledged = pending.clone();
    acknowledged.metadata.resource_version = Some("8".into());
    let mut calls = Vec::from(transition(&acknowledged));
    calls.extend(transition(&in_provisioning(&acknowledged)));
    calls.push(call(Method::POST, SECRETS, StatusCode::CREATED));
    let github = github(&log, json!([])).await;
    let sandbox = scripted(&log, waiting(), None);
    let (action, bodies) =
        reconcile_once(pending, context(&log, calls, sandbox, &[], Some(github))).await;

    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(3)),
        "on to its sandbox in the same pass"
    );
    let condition = &bodies[0]["status"]["conditions"][0];
    assert_eq!(condition["type"], conditions::ACKNOWLEDGED);
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "ReactionFailed");
    assert_eq!(
        bodies[2]["metadata"]["resourceVersion"], "8",
        "admitted on the acknowledged version: {}",
        bodies[2]
    );
}

#[tokio::test]
async fn a_finalizer_put_on_by_a_run_s_maker_does_not_pass_the_namespace_check() {
    let log = Log::default();
    // Made with the controller's finalizer already on it, as anyone who may
    // create an AgentRun can; no status, which only the controller writes.
    let mut forged = run("run-1", AgentRunStatus::default());
    forged.status = None;
    forged.spec.github.comment = Some(trigger_comment());
    assert!(
        kube::ResourceExt::finalizers(&forged)
            .iter()
            .any(|f| f == super::FINALIZER)
    );
    let stored = serde_json::to_value(&forged).expect("JSON");
    let calls =
        vec![call(Method::PATCH, format!("{RUNS}/run-1"), StatusCode::OK).answering(stored)];
    let stub = github(&log, json!([])).await;
    let sandbox = scripted(&log, waiting(), None);
    let (ctx, served) = context(&log, calls, sandbox, &[], Some(stub));
    let mut ctx = Arc::into_inner(ctx).expect("the only reference");
    ctx.allowed_namespaces = vec!["smolpaws".into()];
    let (_, bodies) = reconcile_once(forged, (Arc::new(ctx), served)).await;

    assert_eq!(
        entries(&log),
        [format!("PATCH {RUNS}/run-1")],
        "no GitHub call, no sandbox: only the forged finalizer goes"
    );
    assert_eq!(bodies[0]["metadata"]["finalizers"], json!([]));
}

#[tokio::test]
async fn a_run_outside_the_served_namespaces_is_failed_before_anything_acts_on_it() {
    let log = Log::default();
    let mut outsider = run("run-1", AgentRunStatus::default());
    outsider.metadata.finalizers = None;
    outsider.spec.github.comment = Some(trigger_comment());
    let calls = Vec::from(transition(&outsider));
    // GitHub and the backend log any call; none may come.
    let stub = github(&log, json!([])).await;
    let sandbox = scripted(&log, waiting(), None);
    let (ctx, served) = context(&log, calls, sandbox, &[], Some(stub));
    let mut ctx = Arc::into_inner(ctx).expect("the only reference");
    ctx.allowed_namespaces = vec!["smolpaws".into(), "team-a".into()];
    let (action, bodies) = reconcile_once(outsider.clone(), (Arc::new(ctx), served)).await;

    assert_eq!(action, kube::runtime::controller::Action::await_change());
    assert_eq!(
        entries(&log),
        [
            format!("PATCH {}", status_path("run-1")),
            format!("POST {EVENTS}")
        ],
        "no finalizer, no GitHub call, no sandbox"
    );
    let patch = &bodies[0];
    assert_eq!(patch["status"]["phase"], "Failed");
    let condition = &patch["status"]["conditions"][0];
    assert_eq!(condition["reason"], "NamespaceNotServed");
    assert!(
        condition["message"]
            .as_str()
            .is_some_and(|m| m.contains("namespace ns")),
        "{condition}"
    );

    // Once failed, it is left alone: no reply to the thread it named.
    let mut failed = outsider;
    failed.status = Some(in_phase(Phase::Failed));
    let stub = github(&log, json!([])).await;
    let sandbox = scripted(&log, waiting(), None);
    let (ctx, served) = context(&log, Vec::new(), sandbox, &[], Some(stub));
    let mut ctx = Arc::into_inner(ctx).expect("the only reference");
    ctx.allowed_namespaces = vec!["smolpaws".into()];
    let before = entries(&log).len();
    let (action, _) = reconcile_once(failed, (Arc::new(ctx), served)).await;
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    assert_eq!(entries(&log).len(), before, "{:?}", entries(&log));
}
