//! The story of one AgentRun: Pending → Provisioning → Running →
//! Succeeded | Failed | Cancelled, then its reply, then its TTL.
//!
//! Every step looks at what exists (the run's status, its pod, its Secret,
//! the thread on GitHub) and does the next thing, so a reconcile interrupted
//! anywhere is finished by the next one, and nothing happens twice.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, finalizer};
use kube::{Resource, ResourceExt};
use secrecy::SecretString;
use tracing::{info, warn};

use super::admission::{admits, key};
use super::status::{Transition, condition, conditions, now, write};
use super::{Context, Error};
use crate::api::{AgentRun, Phase, PostedComment, SandboxBackend, SandboxRef};
use crate::github::reply::{compose, marker};
use crate::sandbox::SandboxState;
use crate::sandbox::daytona::{self, DaytonaSandboxes, PrepareError, Provisioned};
use crate::sandbox::local::LocalSandboxes;
use crate::sandbox::pod::{self as sandbox, RunCredentials};

/// Holds a run until its sandbox is stopped and its thread told.
pub const FINALIZER: &str = "smolpaws.dev/sandbox";

/// How often a queued run looks for a free slot.
const QUEUE_POLL: Duration = Duration::from_secs(5);

/// Reconciles one AgentRun.
#[tracing::instrument(skip_all, fields(run = %key(&run), repo = %run.spec.github.repository))]
pub async fn reconcile(run: Arc<AgentRun>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = run.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<AgentRun> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, run, |event| async {
        match event {
            finalizer::Event::Apply(run) => apply(&run, &ctx).await,
            finalizer::Event::Cleanup(run) => cleanup(&run, &ctx).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)))
}

/// Requeues a failed reconcile when GitHub or the apiserver says it may work.
pub fn error_policy(run: Arc<AgentRun>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed();
    let retry = error.retry_after();
    warn!(run = %key(&run), %error, ?retry, "reconcile failed; will retry");
    Action::requeue(retry)
}

async fn apply(run: &AgentRun, ctx: &Context) -> Result<Action, Error> {
    let phase = run.phase();
    let unacknowledged = ctx.github.is_some()
        && run.spec.github.comment.is_some()
        && condition(run, conditions::ACKNOWLEDGED).is_none();
    if !phase.is_terminal() && unacknowledged {
        return acknowledge(run, ctx).await;
    }
    match phase {
        Phase::Pending => admit(run, ctx).await,
        Phase::Provisioning => provision(run, ctx).await,
        Phase::Running => supervise(run, ctx).await,
        Phase::Succeeded | Phase::Failed | Phase::Cancelled => finish(run, ctx).await,
    }
}

fn pods(run: &AgentRun, ctx: &Context) -> Api<Pod> {
    Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default())
}

fn secrets(run: &AgentRun, ctx: &Context) -> Api<Secret> {
    Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default())
}

fn runs(run: &AgentRun, ctx: &Context) -> Api<AgentRun> {
    Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default())
}

/// Time since `time`, or zero for a time in the future.
fn since(time: Timestamp) -> Duration {
    Timestamp::now()
        .duration_since(time)
        .try_into()
        .unwrap_or_default()
}

fn age(run: &AgentRun) -> Duration {
    run.metadata
        .creation_timestamp
        .as_ref()
        .map_or(Duration::ZERO, |t| since(t.0))
}

fn human(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs()))
        .to_string()
        .replace(' ', "")
}

/// The App installation that serves the run's repository.
async fn installation(run: &AgentRun, ctx: &Context) -> Result<u64, Error> {
    let github = ctx.github.as_ref().ok_or(Error::GitHubDisabled)?;
    match run.spec.github.installation_id {
        Some(id) => Ok(id.unsigned_abs()),
        None => Ok(github.installation_for(&run.spec.github.repository).await?),
    }
}

async fn acknowledge(run: &AgentRun, ctx: &Context) -> Result<Action, Error> {
    let github = ctx.github.as_ref().ok_or(Error::GitHubDisabled)?;
    let acknowledged = match installation(run, ctx).await {
        Ok(installation) => github
            .acknowledge(installation, &run.spec.github)
            .await
            .map_err(Error::from),
        Err(error) => Err(error),
    };
    let transition = match acknowledged {
        Ok(()) => Transition::new(
            conditions::ACKNOWLEDGED,
            "Reacted",
            "added 👀 to the comment",
        ),
        Err(error) if error.is_transient() => return Err(error),
        Err(error) => Transition::new(
            conditions::ACKNOWLEDGED,
            "ReactionFailed",
            error.to_string(),
        )
        .failing(),
    };
    write(ctx, run, transition).await?;
    Ok(Action::await_change())
}

async fn admit(run: &AgentRun, ctx: &Context) -> Result<Action, Error> {
    if let Err(missing) = backend(run, ctx) {
        return fail(run, ctx, "BackendUnavailable", missing.into()).await;
    }
    let admitted = {
        let store = ctx.runs.state();
        let mut admitted = ctx.admitted.lock().unwrap_or_else(|p| p.into_inner());
        // Runs the store already shows past Pending (or gone) count by
        // their phase from now on.
        admitted.retain(|k| {
            store
                .iter()
                .any(|r| key(r) == *k && r.phase() == Phase::Pending)
        });
        let ok = admits(ctx.limits, &store, &admitted, run);
        if ok {
            admitted.insert(key(run));
        }
        ok
    };
    if !admitted {
        if condition(run, conditions::ADMITTED).is_none() {
            let queued = Transition::new(
                conditions::ADMITTED,
                "Queued",
                format!(
                    "waiting for a sandbox slot (at most {} runs at once, {} per repository)",
                    ctx.limits.global, ctx.limits.per_repository
                ),
            )
            .failing();
            write(ctx, run, queued).await?;
        }
        return Ok(Action::requeue(QUEUE_POLL));
    }
    // A Daytona sandbox is named by Daytona, once it exists.
    let name = match backend(run, ctx) {
        Ok(Backend::Local(local)) => Some(local.directory(run).display().to_string()),
        Ok(Backend::Pod) => Some(sandbox::pod_name(run)),
        Ok(Backend::Daytona(_)) | Err(_) => None,
    };
    let mut transition = Transition::new(
        conditions::ADMITTED,
        "Admitted",
        "a sandbox slot is free; creating the sandbox",
    )
    .to(Phase::Provisioning);
    if let Some(name) = name {
        let sandbox = SandboxRef {
            backend: run.spec.sandbox.backend,
            name,
        };
        transition = transition.with("sandbox", sandbox);
    }
    write(ctx, run, transition).await?;
    Ok(Action::await_change())
}

/// Whether this controller can run `run`'s backend; what is missing if not.
fn backend<'a>(run: &AgentRun, ctx: &'a Context) -> Result<Backend<'a>, &'static str> {
    match run.spec.sandbox.backend {
        SandboxBackend::Pod => Ok(Backend::Pod),
        SandboxBackend::Local => ctx.local.as_deref().map(Backend::Local).ok_or(
            "the local sandbox backend runs only in `smolpaws dev`; use backend pod or daytona",
        ),
        SandboxBackend::Daytona => ctx.daytona.as_ref().map(Backend::Daytona).ok_or(
            "the Daytona sandbox backend is not configured: set DAYTONA_API_KEY for the controller",
        ),
    }
}

/// A backend this controller runs.
enum Backend<'a> {
    Pod,
    Local(&'a LocalSandboxes),
    Daytona(&'a DaytonaSandboxes),
}

/// The agent's credentials, minted once per run.
async fn ensure_secret(run: &AgentRun, ctx: &Context) -> Result<Option<Action>, Error> {
    let api = secrets(run, ctx);
    if api.get_opt(&sandbox::secret_name(run)).await?.is_some() {
        return Ok(None);
    }
    let github_token = match &ctx.github {
        None => None,
        Some(github) => {
            let repository = &run.spec.github.repository;
            let minted = match installation(run, ctx).await {
                Ok(installation) => github
                    .run_token(installation, repository)
                    .await
                    .map_err(Error::from),
                Err(error) => Err(error),
            };
            match minted {
                Ok(token) => Some(token.token),
                Err(error) if error.is_transient() => return Err(error),
                Err(error) => {
                    let message = format!("could not get a GitHub token for {repository}: {error}");
                    return fail(run, ctx, "GitHubTokenFailed", message).await.map(Some);
                }
            }
        }
    };
    let credentials = RunCredentials {
        github_token,
        report_token: SecretString::from(crate::random::token()),
    };
    let secret = sandbox::secret(run, &credentials, &ctx.settings);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
        Err(error) => Err(error.into()),
    }
}

async fn provision(run: &AgentRun, ctx: &Context) -> Result<Action, Error> {
    if let Some(action) = ensure_secret(run, ctx).await? {
        return Ok(action);
    }
    match backend(run, ctx) {
        Ok(Backend::Pod) => provision_pod(run, ctx).await,
        Ok(Backend::Local(local)) => provision_local(run, ctx, local).await,
        Ok(Backend::Daytona(daytona)) => provision_daytona(run, ctx, daytona).await,
        Err(missing) => fail(run, ctx, "BackendUnavailable", missing.into()).await,
    }
}

/// The agent's environment for a backend that runs it as a process rather
/// than a pod: the pod's variables, with the run's Secret read in.
async fn process_env(run: &AgentRun, ctx: &Context) -> Result<Vec<(String, String)>, Error> {
    let secret = secrets(run, ctx).get(&sandbox::secret_name(run)).await?;
    Ok(crate::sandbox::resolve_env(
        sandbox::agent_env(run, &ctx.settings, &ctx.result_url),
        &secret,
    ))
}

async fn provision_local(
    run: &AgentRun,
    ctx: &Context,
    local: &LocalSandboxes,
) -> Result<Action, Error> {
    let env = process_env(run, ctx).await?;
    if let Err(error) = local.start(run, env) {
        let message = format!("the local sandbox could not start: {error}");
        return fail(run, ctx, "SandboxFailed", message).await;
    }
    ctx.metrics.sandbox_created(age(run).as_secs_f64());
    started(run, ctx, now(), None).await
}

async fn provision_daytona(
    run: &AgentRun,
    ctx: &Context,
    daytona: &DaytonaSandboxes,
) -> Result<Action, Error> {
    let mut env = process_env(run, ctx).await?;
    // The agent prints its report, which the controller reads from the
    // sandbox: Daytona need not reach the result endpoint.
    env.retain(|(name, _)| name != "SMOLPAWS_RESULT_URL" && name != sandbox::keys::REPORT_TOKEN);
    let (cpu, memory) = run
        .spec
        .sandbox
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .map_or(
            (ctx.settings.cpu.clone(), ctx.settings.memory.clone()),
            |limits| {
                let get = |key: &str, default: &str| {
                    limits.get(key).map_or(default.to_owned(), |q| q.0.clone())
                };
                (
                    get("cpu", &ctx.settings.cpu),
                    get("memory", &ctx.settings.memory),
                )
            },
        );
    let provisioned = daytona
        .provision(run, daytona::cores_and_gib(&cpu, &memory), &env)
        .await;
    match provisioned {
        Ok(Provisioned::Started(id)) => {
            ctx.metrics.sandbox_created(age(run).as_secs_f64());
            let sandbox = SandboxRef {
                backend: SandboxBackend::Daytona,
                name: id,
            };
            started(run, ctx, now(), Some(sandbox)).await
        }
        Ok(Provisioned::Waiting(state)) => {
            pending(run, ctx, Some(format!("the Daytona sandbox is {state}"))).await
        }
        Ok(Provisioned::Failed(message)) => {
            stop_sandbox(run, ctx).await?;
            fail(run, ctx, "SandboxFailed", message).await
        }
        Err(PrepareError::Daytona(error)) if error.is_transient() => Err(error.into()),
        Err(error) => {
            stop_sandbox(run, ctx).await?;
            let message = format!("the Daytona sandbox could not be prepared: {error}");
            fail(run, ctx, "SandboxFailed", message).await
        }
    }
}

/// A sandbox still starting: wait, up to the pending timeout.
async fn pending(run: &AgentRun, ctx: &Context, reason: Option<String>) -> Result<Action, Error> {
    let admitted = condition(run, conditions::ADMITTED)
        .map(|c| c.last_transition_time.0)
        .unwrap_or_else(Timestamp::now);
    let waited = since(admitted);
    if waited < ctx.pending_timeout {
        let poll = match run.spec.sandbox.backend {
            SandboxBackend::Pod => Duration::from_secs(10),
            SandboxBackend::Daytona | SandboxBackend::Local => Duration::from_secs(2),
        };
        return Ok(Action::requeue((ctx.pending_timeout - waited).min(poll)));
    }
    stop_sandbox(run, ctx).await?;
    let message = format!(
        "the sandbox did not start within {}: {}",
        human(ctx.pending_timeout),
        reason.as_deref().unwrap_or("Kubernetes gave no reason")
    );
    fail(run, ctx, "PendingTimeout", message).await
}

/// Moves a run whose sandbox started at `at` to Running; `sandbox` names
/// the sandbox when its backend named it only now.
async fn started(
    run: &AgentRun,
    ctx: &Context,
    at: Time,
    sandbox: Option<SandboxRef>,
) -> Result<Action, Error> {
    ctx.metrics.running(age(run).as_secs_f64());
    let name = sandbox
        .as_ref()
        .or_else(|| run.status.as_ref().and_then(|s| s.sandbox.as_ref()))
        .map_or_else(|| run.name_any(), |s| s.name.clone());
    let mut transition = Transition::new(
        conditions::SANDBOX_RUNNING,
        "SandboxStarted",
        format!("sandbox {name} runs the agent"),
    )
    .to(Phase::Running)
    .with("startedAt", at);
    if let Some(sandbox) = sandbox {
        transition = transition.with("sandbox", sandbox);
    }
    write(ctx, run, transition).await?;
    Ok(Action::await_change())
}

async fn provision_pod(run: &AgentRun, ctx: &Context) -> Result<Action, Error> {
    let api = pods(run, ctx);
    let name = sandbox::pod_name(run);
    let pod = match api.get_opt(&name).await? {
        Some(pod) => pod,
        None => {
            let pod = sandbox::pod(
                run,
                &ctx.settings,
                &ctx.result_url,
                timeout(run, ctx).as_secs() as i64,
            );
            match api.create(&PostParams::default(), &pod).await {
                Ok(pod) => {
                    ctx.metrics.sandbox_created(age(run).as_secs_f64());
                    info!(pod = %name, "created the sandbox pod");
                    pod
                }
                Err(kube::Error::Api(status)) if status.code == 409 => api.get(&name).await?,
                Err(kube::Error::Api(status)) if matches!(status.code, 400 | 403 | 422) => {
                    let message = format!("Kubernetes refused the sandbox pod: {}", status.message);
                    return fail(run, ctx, "SandboxRejected", message).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    };
    match sandbox::state(&pod) {
        SandboxState::Waiting { reason } => pending(run, ctx, reason).await,
        SandboxState::Running | SandboxState::Exited { .. } => {
            let at = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.clone())
                .unwrap_or_else(now);
            started(run, ctx, at, None).await
        }
    }
}

fn timeout(run: &AgentRun, ctx: &Context) -> Duration {
    run.spec
        .sandbox
        .timeout_seconds
        .map_or(ctx.run_timeout, |s| Duration::from_secs(s.unsigned_abs()))
}

async fn supervise(run: &AgentRun, ctx: &Context) -> Result<Action, Error> {
    if run.status.as_ref().is_some_and(|s| s.result.is_some()) {
        return succeed(run, ctx).await;
    }
    let name = run.name_any();
    let state = sandbox_state(run, ctx).await?;
    if let (Some(SandboxState::Exited { code: 0, .. }), Ok(Backend::Daytona(daytona))) =
        (&state, backend(run, ctx))
        && let Some(id) = sandbox_name(run)
        && let Some(report) = daytona.report(run, id).await?
    {
        super::report::store(&runs(run, ctx), &name, report).await?;
        return Ok(Action::await_change());
    }
    if let None | Some(SandboxState::Exited { .. }) = state {
        // The result may have landed after this reconcile's view was taken:
        // the agent reports before it exits.
        let fresh = runs(run, ctx).get(&run.name_any()).await?;
        if fresh.status.as_ref().is_some_and(|s| s.result.is_some()) {
            return succeed(&fresh, ctx).await;
        }
    }
    match state {
        None => {
            let message = format!("the sandbox of {name} disappeared before the agent reported");
            fail(run, ctx, "SandboxLost", message).await
        }
        Some(SandboxState::Exited { code, reason }) => {
            let (reason, message) = match (code, reason.as_deref()) {
                (_, Some("OOMKilled")) => (
                    "OutOfMemory",
                    "the agent ran out of memory; give the run more memory in spec.sandbox.resources".to_owned(),
                ),
                (_, Some("DeadlineExceeded")) => (
                    "RunTimeout",
                    format!(
                        "the agent did not finish within {}",
                        human(timeout(run, ctx))
                    ),
                ),
                (0, _) => (
                    "NoReply",
                    "the agent exited without reporting a reply".to_owned(),
                ),
                (code, _) => (
                    "AgentFailed",
                    format!(
                        "the agent exited with code {code}; its log: smolpaws logs -n {} {name}",
                        run.namespace().unwrap_or_default()
                    ),
                ),
            };
            fail(run, ctx, reason, message).await
        }
        Some(SandboxState::Running | SandboxState::Waiting { .. }) => {
            let started = run
                .status
                .as_ref()
                .and_then(|s| s.started_at.as_ref())
                .map_or_else(Timestamp::now, |t| t.0);
            let ran = since(started);
            let limit = timeout(run, ctx);
            if ran < limit {
                return Ok(Action::requeue((limit - ran).min(poll_interval(run))));
            }
            stop_sandbox(run, ctx).await?;
            let message = format!("the agent did not finish within {}", human(limit));
            fail(run, ctx, "RunTimeout", message).await
        }
    }
}

/// Deletes `name`; an object already gone counts as deleted.
async fn delete_if_present<K>(
    api: &Api<K>,
    name: &str,
    params: &DeleteParams,
) -> Result<(), kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// What the run's sandbox is doing; `None` when it is gone.
async fn sandbox_state(run: &AgentRun, ctx: &Context) -> Result<Option<SandboxState>, Error> {
    Ok(match backend(run, ctx) {
        Ok(Backend::Local(local)) => local.state(run),
        Ok(Backend::Daytona(daytona)) => match sandbox_name(run) {
            Some(id) => daytona.state(run, id).await?,
            None => None,
        },
        Ok(Backend::Pod) | Err(_) => pods(run, ctx)
            .get_opt(&sandbox::pod_name(run))
            .await?
            .as_ref()
            .map(sandbox::state),
    })
}

/// The name the backend gave the run's sandbox.
fn sandbox_name(run: &AgentRun) -> Option<&str> {
    run.status
        .as_ref()
        .and_then(|s| s.sandbox.as_ref())
        .map(|s| s.name.as_str())
}

/// How often a running sandbox is looked at besides its events: pods are
/// watched, local processes and Daytona sandboxes are not.
fn poll_interval(run: &AgentRun) -> Duration {
    match run.spec.sandbox.backend {
        SandboxBackend::Local => Duration::from_secs(1),
        SandboxBackend::Daytona => Duration::from_secs(2),
        SandboxBackend::Pod => Duration::from_secs(30),
    }
}

/// Stops the run's sandbox; one already gone counts as stopped.
async fn stop_sandbox(run: &AgentRun, ctx: &Context) -> Result<(), Error> {
    match backend(run, ctx) {
        Ok(Backend::Local(local)) => {
            local.stop(run);
            Ok(())
        }
        Ok(Backend::Daytona(daytona)) => match daytona.release(run).await {
            Ok(()) => Ok(()),
            Err(error) if error.is_transient() => Err(error.into()),
            // Retrying cannot help (a revoked key, say): the run still ends.
            Err(error) => {
                warn!(%error, "could not release the Daytona sandbox; it may be left in Daytona");
                Ok(())
            }
        },
        Ok(Backend::Pod) | Err(_) => {
            let pod = sandbox::pod_name(run);
            Ok(delete_if_present(&pods(run, ctx), &pod, &DeleteParams::background()).await?)
        }
    }
}

/// Whether the run's thread hears from it: GitHub is configured and the run
/// did not ask to keep its reply off GitHub.
fn posts_reply(run: &AgentRun, ctx: &Context) -> bool {
    ctx.github.is_some() && run.spec.github.post_reply
}

/// Whether the run's reply was posted, or posting it was given up.
fn reply_settled(run: &AgentRun) -> bool {
    run.status.as_ref().is_some_and(|s| s.reply.is_some())
        || condition(run, conditions::REPLIED).is_some()
}

/// The `Finished` transition, with the end time and duration.
fn ended(run: &AgentRun, reason: &'static str, message: String) -> Transition {
    let finished = Timestamp::now();
    let began = run
        .status
        .as_ref()
        .and_then(|s| s.started_at.as_ref())
        .or(run.metadata.creation_timestamp.as_ref())
        .map_or(finished, |t| t.0);
    let took = human(
        finished
            .duration_since(began)
            .try_into()
            .unwrap_or_default(),
    );
    Transition::new(conditions::FINISHED, reason, message)
        .with("finishedAt", Time(finished))
        .with("duration", took)
}

/// Moves the run to its terminal `phase`, then deletes its Secret: the
/// agent is done with its tokens. Deleting is best effort; the owner
/// reference removes the Secret with the run anyway.
async fn end(
    run: &AgentRun,
    ctx: &Context,
    phase: Phase,
    reason: &'static str,
    message: String,
) -> Result<Action, Error> {
    if let Ok(Backend::Daytona(_)) = backend(run, ctx) {
        // Before the run is final: a later reconcile of a finished run
        // would not release it.
        stop_sandbox(run, ctx).await?;
    }
    let mut transition = ended(run, reason, message).to(phase);
    if let Some(started) = run.status.as_ref().and_then(|s| s.started_at.as_ref()) {
        let held = since(started.0);
        ctx.metrics
            .held(run.spec.sandbox.backend, held.as_secs_f64());
        transition = transition.with("sandboxSeconds", held.as_secs());
    }
    write(ctx, run, transition).await?;
    let secret = sandbox::secret_name(run);
    if let Err(error) =
        delete_if_present(&secrets(run, ctx), &secret, &DeleteParams::default()).await
    {
        warn!(%error, "could not delete the run's Secret; its owner reference will");
    }
    Ok(Action::await_change())
}

async fn succeed(run: &AgentRun, ctx: &Context) -> Result<Action, Error> {
    end(
        run,
        ctx,
        Phase::Succeeded,
        "Succeeded",
        "the agent replied".into(),
    )
    .await
}

async fn fail(
    run: &AgentRun,
    ctx: &Context,
    reason: &'static str,
    message: String,
) -> Result<Action, Error> {
    warn!(%reason, %message, "the run failed");
    end(run, ctx, Phase::Failed, reason, message).await
}

/// What to say in the thread about how the run ended.
fn reply_text(run: &AgentRun) -> String {
    let finished = condition(run, conditions::FINISHED);
    let why = finished.map_or("no reason was recorded", |c| c.message.as_str());
    match (
        run.phase(),
        run.status.as_ref().and_then(|s| s.result.as_ref()),
    ) {
        (Phase::Succeeded, Some(result)) => result.reply.clone(),
        (Phase::Cancelled, _) => {
            format!("This request was cancelled before smolpaws finished it: {why}.")
        }
        _ => format!(
            "smolpaws could not finish this request: {why}.\n\nAsk again with a new comment once that is fixed (reason: `{}`).",
            finished.map_or("Unknown", |c| c.reason.as_str())
        ),
    }
}

/// Posts `text` in the run's thread unless a reply of this run is already
/// there: the marker finds a reply whose recording a crash interrupted.
async fn post_once(
    run: &AgentRun,
    ctx: &Context,
    text: &str,
) -> Result<Result<PostedComment, crate::github::Error>, Error> {
    let github = ctx.github.as_ref().ok_or(Error::GitHubDisabled)?;
    let installation = installation(run, ctx).await?;
    let marker = marker(
        &run.namespace().unwrap_or_default(),
        &run.name_any(),
        run.meta().uid.as_deref().unwrap_or_default(),
    );
    let since = run
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or_else(Timestamp::now, |t| t.0)
        .checked_sub(SignedDuration::from_secs(60))
        .unwrap_or_else(|_| Timestamp::now());
    let since = since.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let thread = &run.spec.github;
    if let Some(found) = github
        .find_reply(installation, thread, &marker, &since)
        .await?
    {
        return Ok(Ok(found));
    }
    match github
        .post_reply(installation, thread, &compose(text, &marker))
        .await
    {
        Ok(posted) => Ok(Ok(posted)),
        Err(error) if error.is_transient() => Err(error.into()),
        Err(error) => Ok(Err(error)),
    }
}

async fn finish(run: &AgentRun, ctx: &Context) -> Result<Action, Error> {
    if posts_reply(run, ctx) && !reply_settled(run) {
        let transition = match post_once(run, ctx, &reply_text(run)).await? {
            Ok(posted) => {
                ctx.metrics.replied(age(run).as_secs_f64());
                Transition::new(
                    conditions::REPLIED,
                    "Replied",
                    format!("replied at {}", posted.html_url),
                )
                .with("reply", posted)
            }
            Err(error) => {
                Transition::new(conditions::REPLIED, "ReplyFailed", error.to_string()).failing()
            }
        };
        write(ctx, run, transition).await?;
        return Ok(Action::await_change());
    }
    let finished = run
        .status
        .as_ref()
        .and_then(|s| s.finished_at.as_ref())
        .map_or_else(Timestamp::now, |t| t.0);
    let kept = since(finished);
    if kept < ctx.ttl {
        return Ok(Action::requeue(ctx.ttl - kept));
    }
    info!(ttl = %human(ctx.ttl), "deleting the finished run after its TTL");
    delete_if_present(
        &runs(run, ctx),
        &run.name_any(),
        &DeleteParams::background(),
    )
    .await?;
    Ok(Action::await_change())
}

/// A run being deleted: stop its sandbox and tell its thread.
async fn cleanup(run: &AgentRun, ctx: &Context) -> Result<Action, Error> {
    ctx.admitted
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key(run));
    if run.phase().is_terminal() {
        // A run deleted before its reply went out still answers its thread.
        if posts_reply(run, ctx)
            && !reply_settled(run)
            && let Err(error) = post_once(run, ctx, &reply_text(run)).await?
        {
            warn!(%error, "could not post the reply of a deleted run");
        }
        return Ok(Action::await_change());
    }
    stop_sandbox(run, ctx).await?;
    // Told before the status changes: a retry of this cleanup sees the run
    // still unfinished and looks for the same marked comment.
    if posts_reply(run, ctx) {
        let text =
            "This request was cancelled before smolpaws finished it: the AgentRun was deleted.";
        if let Err(error) = post_once(run, ctx, text).await? {
            warn!(%error, "could not say in the thread that the run was cancelled");
        }
    }
    let message = "the AgentRun was deleted before the agent finished".into();
    end(run, ctx, Phase::Cancelled, "Cancelled", message).await
}
