//! The story of one AgentRun: Pending → Provisioning → Running →
//! Succeeded | Failed | Cancelled, then its reply, then its TTL.
//!
//! Every step looks at what exists (the run's status, its sandbox, its Secret,
//! the thread on GitHub) and does the next thing, so a reconcile interrupted
//! anywhere is finished by the next one, and nothing happens twice.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, finalizer};
use kube::{Resource, ResourceExt};
use secrecy::SecretString;
use tracing::{info, warn};

use super::admission::{admits, key, waiting_ahead};
use super::decide::{
    PENDING_TIMEOUT, RUN_TIMEOUT, exit_outcome, human, next_look, reply_text, since,
};
use super::status::{Transition, condition, conditions, write};
use super::{Context, Error};
use super::{change, check, progress};
use crate::api::contract::{CommitAuthor, env};
use crate::api::{
    AgentRun, ChangeRef, ChangesMode, DeliveryOutcome, Outcome, Phase, PostedComment, SandboxRef,
};
use crate::github::reply::{compose, marker};
use crate::sandbox::owned::is_owned_by;
use crate::sandbox::secret::{RunCredentials, secret, secret_name, value};
use crate::sandbox::{Launch, Provisioned, Sandbox, SandboxState};

/// Holds a run until its sandbox is stopped and its thread told.
pub const FINALIZER: &str = "smolpaws.dev/sandbox";

/// How often a queued run looks for a free slot.
const QUEUE_POLL: Duration = Duration::from_secs(5);

/// Reconciles one AgentRun.
#[tracing::instrument(skip_all, fields(run = %key(&run), repo = %run.spec.github.repository))]
pub async fn reconcile(run: Arc<AgentRun>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let namespace = run.namespace().ok_or(Error::NoNamespace)?;
    // A run already held was taken under the settings of its time, and is
    // finished as usual. Held means this controller's finalizer and a
    // status: whoever creates a run can put the finalizer on it, but only
    // the controller writes status.
    let held = run.finalizers().iter().any(|f| f == FINALIZER) && run.status.is_some();
    if !ctx.serves(&namespace) && !held {
        return refuse(&run, &ctx, &namespace).await;
    }
    if ctx.superseded.is_stale(&run) {
        return Ok(Action::await_change());
    }
    let run_key = key(&run);
    let outcome = if untaken(&run) {
        match hold(&run, &ctx).await {
            Ok(held) => apply(&held, &ctx).await,
            Err(error) => Err(error),
        }
    } else {
        let api: Api<AgentRun> = Api::namespaced(ctx.client.clone(), &namespace);
        finalizer(&api, FINALIZER, run, |event| async {
            match event {
                finalizer::Event::Apply(run) => apply(&run, &ctx).await,
                finalizer::Event::Cleanup(run) => cleanup(&run, &ctx).await,
            }
        })
        .await
        .map_err(|error| Error::Finalizer(Box::new(error)))
    };
    ctx.metrics.reconciled(started.elapsed().as_secs_f64());
    if outcome.is_ok() {
        ctx.failures.succeeded(&run_key);
    }
    outcome
}

/// A run this controller has not put its finalizer on yet, and that is not
/// being deleted.
fn untaken(run: &AgentRun) -> bool {
    run.metadata.deletion_timestamp.is_none() && !run.finalizers().iter().any(|f| f == FINALIZER)
}

/// Puts the controller's finalizer on `run` and answers the run as stored.
/// kube's `finalizer` helper does the same but ends the pass there, to wait
/// for the watch to bring the change back; a new run goes on with the
/// apiserver's answer instead. Guarded by the version read, as the
/// helper's own patch is by the finalizers it read.
async fn hold(run: &AgentRun, ctx: &Context) -> Result<AgentRun, Error> {
    let mut finalizers = run.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": run.metadata.resource_version,
            "finalizers": finalizers,
        }
    });
    let held = runs(run, ctx)
        .patch(
            &run.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    ctx.superseded.wrote_past(run);
    Ok(held)
}

/// A run in a namespace this controller does not serve: failed as it
/// stands, before anything acts on what it names (the installation whose
/// token would be minted, the repository's thread, the image), and left
/// alone after.
async fn refuse(run: &AgentRun, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    ctx.failures.succeeded(&key(run));
    if run.finalizers().iter().any(|f| f == FINALIZER) {
        // Put there by whoever made the run, not by this controller: it
        // would hold the run's deletion on a cleanup that never comes.
        let others: Vec<&String> = run
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .collect();
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": run.metadata.resource_version,
                "finalizers": others,
            }
        });
        runs(run, ctx)
            .patch(
                &run.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        return Ok(Action::await_change());
    }
    if !run.phase().is_terminal() {
        let message = format!(
            "the controller does not serve namespace {namespace} (SMOLPAWS_ALLOWED_NAMESPACES, \
             the chart's sandboxNamespaces): create the run in a namespace it serves"
        );
        warn!(%namespace, "refused a run in a namespace this controller does not serve");
        let transition = finished_condition(run, "NamespaceNotServed", message).to(Phase::Failed);
        write(ctx, run, transition).await?;
    }
    Ok(Action::await_change())
}

/// Requeues a failed reconcile when GitHub or the apiserver says it may
/// work, later each time it fails again.
pub fn error_policy(run: Arc<AgentRun>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error.kind());
    let retry = ctx.failures.failed(key(&run), error.retry_after());
    warn!(run = %key(&run), %error, ?retry, "reconcile failed; will retry");
    Action::requeue(retry)
}

async fn apply(run: &AgentRun, ctx: &Context) -> Result<Action, Error> {
    let unacknowledged = ctx.github.is_some()
        && run.spec.github.comment.is_some()
        && condition(run, conditions::ACKNOWLEDGED).is_none();
    // The acknowledgement is recorded, and the run goes on in the same pass
    // from the status the apiserver answered.
    let acknowledged;
    let run = if !run.phase().is_terminal() && unacknowledged {
        acknowledged = acknowledge(run, ctx).await?;
        &acknowledged
    } else {
        run
    };
    if let Some(action) = progress::sync(run, ctx).await? {
        return Ok(action);
    }
    if let Some(action) = check::sync(run, ctx).await? {
        return Ok(action);
    }
    match run.phase() {
        Phase::Pending => admit(run, ctx).await,
        Phase::Provisioning => provision(run, ctx, Admitted::Before).await,
        Phase::Running => supervise(run, ctx).await,
        Phase::Succeeded | Phase::Failed | Phase::Cancelled => reply_then_expire(run, ctx).await,
    }
}

fn secrets(run: &AgentRun, ctx: &Context) -> Api<Secret> {
    Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default())
}

fn runs(run: &AgentRun, ctx: &Context) -> Api<AgentRun> {
    Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default())
}

fn age(run: &AgentRun) -> Duration {
    run.metadata
        .creation_timestamp
        .as_ref()
        .map_or(Duration::ZERO, |t| since(t.0))
}

/// The App installation that serves the run's repository.
pub(super) async fn installation(run: &AgentRun, ctx: &Context) -> Result<u64, Error> {
    let github = ctx.github.as_ref().ok_or(Error::GitHubDisabled)?;
    match run.spec.github.installation_id {
        Some(id) => Ok(id.unsigned_abs()),
        None => Ok(github.installation_for(&run.spec.github.repository).await?),
    }
}

/// Reacts to the run's comment and records it; answers the run as stored,
/// for the next step to go on with.
async fn acknowledge(run: &AgentRun, ctx: &Context) -> Result<AgentRun, Error> {
    let github = ctx.github.as_ref().ok_or(Error::GitHubDisabled)?;
    let acknowledged = match installation(run, ctx).await {
        Ok(installation) => github
            .acknowledge(installation, &run.spec.github)
            .await
            .map_err(Error::from),
        Err(error) => Err(error),
    };
    let mut transition = match acknowledged {
        Ok(()) => Transition::new(
            conditions::ACKNOWLEDGED,
            "Reacted",
            "added 👀 to the comment",
        ),
        // A courtesy: a GitHub outage must not hold the run here, so even
        // an error that a retry might fix is recorded and the run goes on.
        Err(error) => Transition::new(
            conditions::ACKNOWLEDGED,
            "ReactionFailed",
            error.to_string(),
        )
        .failing(),
    };
    if let Some(head) = pin_head(run, ctx, github).await {
        transition = transition.head(head);
    }
    write(ctx, run, transition).await
}

/// The head of the run's pull request now, when its webhook did not carry
/// it (a conversation comment's does not): read as the run is first seen,
/// so the agent works on the commit the commenter saw rather than on
/// whatever is pushed while the run waits. Best effort, as the reaction: if
/// GitHub cannot say, the agent checks out the pull request's head ref.
async fn pin_head(
    run: &AgentRun,
    ctx: &Context,
    github: &crate::github::GitHub,
) -> Option<crate::api::PullRequestHead> {
    let thread = &run.spec.github;
    if !thread.pull_request || thread.head.is_some() {
        return None;
    }
    let installation = installation(run, ctx).await.ok()?;
    match github
        .pull_request_head(installation, &thread.repository, thread.number)
        .await
    {
        Ok(head) => Some(head),
        Err(error) => {
            warn!(%error, "could not pin the pull request's head; the agent takes its head ref");
            None
        }
    }
}

async fn admit(run: &AgentRun, ctx: &Context) -> Result<Action, Error> {
    let sandbox = match ctx.sandboxes.for_run(run) {
        Ok(sandbox) => sandbox,
        Err(missing) => return fail(run, ctx, "BackendUnavailable", missing.into()).await,
    };
    let admitted = {
        let store = ctx.runs.state();
        let mut ahead = ctx.ahead.lock().unwrap_or_else(|p| p.into_inner());
        ahead.settle(&store);
        let ok = admits(ctx.limits, &store, &ahead, run);
        if ok {
            ahead.admit(key(run));
        }
        ok
    };
    if !admitted {
        // A run joining the queue is measured against it once, here.
        if condition(run, conditions::ADMITTED).is_none() {
            let ahead = waiting_ahead(&ctx.runs.state(), run);
            if ahead >= ctx.limits.pending_per_repository {
                let message = format!(
                    "{ahead} requests in {} are already waiting for a sandbox (at most {}); ask again later",
                    run.spec.github.repository, ctx.limits.pending_per_repository
                );
                return fail(run, ctx, "QueueFull", message).await;
            }
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
    let mut transition = Transition::new(
        conditions::ADMITTED,
        "Admitted",
        "a sandbox slot is free; creating the sandbox",
    )
    .to(Phase::Provisioning);
    if let Some(name) = sandbox.planned_name(run) {
        transition = transition.sandbox(SandboxRef {
            backend: run.spec.sandbox.backend,
            name,
        });
    }
    let provisioning = write(ctx, run, transition).await?;
    provision(&provisioning, ctx, Admitted::Now).await
}

/// When the run entered Provisioning: in this same pass, so nothing of its
/// sandbox can exist yet (the Secret and the sandbox are made only once it
/// has), or in an earlier one, which may have made them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admitted {
    Now,
    Before,
}

/// The run's Secret: its credentials, minted once per run. A run that
/// cannot get them ends, and the action says what to do next. A run
/// admitted in this pass has none yet, so it is made without looking.
async fn ensure_secret(
    run: &AgentRun,
    ctx: &Context,
    admitted: Admitted,
) -> Result<Result<Secret, Action>, Error> {
    let api = secrets(run, ctx);
    if admitted == Admitted::Before
        && let Some(existing) = api.get_opt(&secret_name(run)).await?
    {
        return adopt(run, ctx, existing).await;
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
                    return fail(run, ctx, "GitHubTokenFailed", message).await.map(Err);
                }
            }
        }
    };
    let Some(report_token) = ctx.key.credential(run) else {
        return Err(Error::NoUid);
    };
    let credentials = RunCredentials {
        github_token,
        report_token,
    };
    match api
        .create(&PostParams::default(), &secret(run, &credentials))
        .await
    {
        Ok(created) => Ok(Ok(created)),
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            // Not this token's: it was never handed out, and is worthless
            // from now on.
            if let Some(token) = &credentials.github_token {
                revoke(ctx, token).await;
            }
            adopt(run, ctx, api.get(&secret_name(run)).await?).await
        }
        Err(error) => Err(error.into()),
    }
}

/// The Secret found under the run's name, if the run owns it. One made by
/// someone else would hand the sandbox credentials they know: the run
/// fails instead.
async fn adopt(
    run: &AgentRun,
    ctx: &Context,
    found: Secret,
) -> Result<Result<Secret, Action>, Error> {
    if is_owned_by(&found.metadata, run) {
        return Ok(Ok(found));
    }
    let message = format!(
        "a Secret named {} exists and does not belong to this run; delete it, or ask again",
        secret_name(run)
    );
    fail(run, ctx, "SecretConflict", message).await.map(Err)
}

async fn provision(run: &AgentRun, ctx: &Context, admitted: Admitted) -> Result<Action, Error> {
    let sandbox = match ctx.sandboxes.for_run(run) {
        Ok(sandbox) => sandbox,
        Err(missing) => return fail(run, ctx, "BackendUnavailable", missing.into()).await,
    };
    let secret = match ensure_secret(run, ctx, admitted).await? {
        Ok(secret) => secret,
        Err(action) => return Ok(action),
    };
    let author = commit_author(run, ctx).await?;
    let launch = Launch {
        run,
        secret: &secret,
        timeout: timeout(run, ctx),
        author: author.as_ref(),
        fresh: admitted == Admitted::Now,
    };
    let provisioned = sandbox.provision(launch).await?;
    if provisioned.created() {
        ctx.metrics.sandbox_created(age(run).as_secs_f64());
    }
    match provisioned {
        Provisioned::Waiting { reason, .. } => pending(run, ctx, sandbox, reason).await,
        Provisioned::Started { at, name, .. } => {
            let named = name.map(|name| SandboxRef {
                backend: run.spec.sandbox.backend,
                name,
            });
            started(run, ctx, at, named).await
        }
        Provisioned::Failed { reason, message } => fail(run, ctx, reason, message).await,
    }
}

/// Who the agent's commits are by: the App's bot, when GitHub is
/// configured. A lookup GitHub refuses for good leaves the agent's own
/// default, with a note: a commit's author is not worth failing a run.
async fn commit_author(run: &AgentRun, ctx: &Context) -> Result<Option<CommitAuthor>, Error> {
    let Some(github) = &ctx.github else {
        return Ok(None);
    };
    // Read once per process: a run waiting for its sandbox asks here at
    // every look, and one made by hand would look its installation up each
    // time.
    if let Some(known) = github.known_identity() {
        return Ok(Some(known));
    }
    match github.bot_identity(installation(run, ctx).await?).await {
        Ok(author) => Ok(Some(author)),
        Err(error) if error.is_transient() => Err(error.into()),
        Err(error) => {
            warn!(%error, "could not read the App's bot identity; the agent's commits carry its default");
            Ok(None)
        }
    }
}

/// A sandbox still starting: wait, up to the pending timeout.
async fn pending(
    run: &AgentRun,
    ctx: &Context,
    sandbox: &dyn Sandbox,
    reason: Option<String>,
) -> Result<Action, Error> {
    let admitted = condition(run, conditions::ADMITTED)
        .map(|c| c.last_transition_time.0)
        .unwrap_or_else(Timestamp::now);
    let poll = sandbox.polls().starting;
    if let Some(wait) = next_look(since(admitted), ctx.pending_timeout, poll) {
        return Ok(Action::requeue(wait));
    }
    sandbox.stop(run).await?;
    let message = format!(
        "the sandbox did not start within {}: {}",
        human(ctx.pending_timeout),
        reason.as_deref().unwrap_or("Kubernetes gave no reason")
    );
    fail(run, ctx, PENDING_TIMEOUT, message).await
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
    .started_at(at);
    if let Some(sandbox) = sandbox {
        transition = transition.sandbox(sandbox);
    }
    write(ctx, run, transition).await?;
    Ok(Action::await_change())
}

fn timeout(run: &AgentRun, ctx: &Context) -> Duration {
    run.spec
        .sandbox
        .timeout_seconds
        .map_or(ctx.run_timeout, |s| Duration::from_secs(s.unsigned_abs()))
}

async fn supervise(run: &AgentRun, ctx: &Context) -> Result<Action, Error> {
    if run.status.as_ref().is_some_and(|s| s.result.is_some()) {
        return reported(run, ctx).await;
    }
    let sandbox = match ctx.sandboxes.for_run(run) {
        Ok(sandbox) => sandbox,
        Err(missing) => return fail(run, ctx, "BackendUnavailable", missing.into()).await,
    };
    let name = run.name_any();
    let state = sandbox.state(run).await?;
    if let Some(SandboxState::Exited { code: 0, .. }) = state
        && let Some(report) = sandbox.collect_report(run).await?
    {
        super::report::store(&runs(run, ctx), run, report).await?;
        return Ok(Action::await_change());
    }
    if let None | Some(SandboxState::Exited { .. }) = state {
        // The result may have landed after this reconcile's view was taken:
        // the agent reports before it exits.
        let fresh = runs(run, ctx).get(&name).await?;
        if fresh.status.as_ref().is_some_and(|s| s.result.is_some()) {
            return reported(&fresh, ctx).await;
        }
    }
    match state {
        None => {
            let message = format!("the sandbox of {name} disappeared before the agent reported");
            fail(run, ctx, "SandboxLost", message).await
        }
        Some(SandboxState::Exited { code, reason }) => {
            let logs = format!(
                "smolpaws logs -n {} {name}",
                run.namespace().unwrap_or_default()
            );
            let outcome = exit_outcome(code, reason.as_deref(), timeout(run, ctx), &logs);
            fail(run, ctx, outcome.reason, outcome.message).await
        }
        Some(SandboxState::Running | SandboxState::Waiting { .. }) => {
            let started = run
                .status
                .as_ref()
                .and_then(|s| s.started_at.as_ref())
                .map_or_else(Timestamp::now, |t| t.0);
            let limit = timeout(run, ctx);
            if let Some(wait) = next_look(since(started), limit, sandbox.polls().running) {
                return Ok(Action::requeue(wait));
            }
            sandbox.stop(run).await?;
            let message = format!("the agent did not finish within {}", human(limit));
            fail(run, ctx, RUN_TIMEOUT, message).await
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
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(error) => Err(error),
    }
}

/// Whether the run's thread hears from it: GitHub is configured and the run
/// did not ask to keep its reply off GitHub.
fn posts_reply(run: &AgentRun, ctx: &Context) -> bool {
    ctx.github.is_some() && run.spec.github.post_reply
}

/// Whether the run's reply was posted, or posting it was given up.
pub(super) fn reply_settled(run: &AgentRun) -> bool {
    run.status.as_ref().is_some_and(|s| s.reply.is_some())
        || condition(run, conditions::REPLIED).is_some()
}

/// The `Finished` transition, with the end time and duration.
fn finished_condition(run: &AgentRun, reason: &'static str, message: String) -> Transition {
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
    Transition::new(conditions::FINISHED, reason, message).finished(Time(finished), took)
}

/// Moves the run to its terminal `phase`, then deletes its Secret: the
/// agent is done with its tokens. Deleting is best effort; the owner
/// reference removes the Secret with the run anyway.
async fn conclude(
    run: &AgentRun,
    ctx: &Context,
    phase: Phase,
    reason: &'static str,
    message: String,
) -> Result<Action, Error> {
    if let Ok(sandbox) = ctx.sandboxes.for_run(run) {
        // Before the run is final: a later reconcile of an ended run does
        // not come back here.
        sandbox.release(run).await?;
    }
    // Read once: its GitHub token is revoked, then it is deleted.
    let secret = owned_secret(run, ctx).await;
    if let Some(secret) = &secret {
        revoke_github_token(ctx, secret).await;
    }
    let mut transition = finished_condition(run, reason, message).to(phase);
    if let Some(started) = run.status.as_ref().and_then(|s| s.started_at.as_ref()) {
        let held = since(started.0);
        ctx.metrics
            .held(run.spec.sandbox.backend, held.as_secs_f64());
        transition = transition.sandbox_seconds(i64::try_from(held.as_secs()).unwrap_or(i64::MAX));
    }
    write(ctx, run, transition).await?;
    if let Some(secret) = secret {
        // Only the Secret read above: never one made since under its name.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: secret.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(error) = delete_if_present(&secrets(run, ctx), &secret_name(run), &params).await
        {
            warn!(%error, "could not delete the run's Secret; its owner reference will");
        }
    }
    Ok(Action::await_change())
}

/// The run's Secret, when it exists and the run owns it; a failed read is
/// logged (the owner reference removes the Secret with the run anyway).
async fn owned_secret(run: &AgentRun, ctx: &Context) -> Option<Secret> {
    match secrets(run, ctx).get_opt(&secret_name(run)).await {
        Ok(secret) => secret.filter(|s| is_owned_by(&s.metadata, run)),
        Err(error) => {
            warn!(%error, "could not read the run's Secret to retire it");
            None
        }
    }
}

/// Revokes the run's installation token, so a copy that left the sandbox
/// is worthless from now on.
async fn revoke_github_token(ctx: &Context, secret: &Secret) {
    let Some(token) = value(secret, env::GITHUB_TOKEN)
        .and_then(|token| std::str::from_utf8(token).ok())
        .map(|token| SecretString::from(token.to_owned()))
    else {
        return;
    };
    revoke(ctx, &token).await;
}

/// Revokes an installation token minted for a run (it would expire within
/// the hour anyway: a failure is logged, not retried).
async fn revoke(ctx: &Context, token: &SecretString) {
    let Some(github) = &ctx.github else {
        return;
    };
    match github.revoke(token).await {
        Ok(()) => info!("revoked the run's GitHub token"),
        Err(error) => {
            warn!(%error, "could not revoke the run's GitHub token; it expires within the hour")
        }
    }
}

/// The agent reported: its sandbox stops at once (whatever it does after
/// its report is not trusted), then the run ends as the report's outcome
/// says, its reply posted either way.
async fn reported(run: &AgentRun, ctx: &Context) -> Result<Action, Error> {
    if let Ok(sandbox) = ctx.sandboxes.for_run(run) {
        sandbox.stop(run).await?;
    }
    if let Some(change) = undelivered_change(run, ctx) {
        return deliver_change(run, ctx, change).await;
    }
    let outcome = run
        .status
        .as_ref()
        .and_then(|s| s.result.as_ref())
        .map_or_else(Outcome::default, |r| r.outcome);
    let phase = if outcome.failed() {
        Phase::Failed
    } else {
        Phase::Succeeded
    };
    conclude(run, ctx, phase, outcome.reason(), outcome.message().into()).await
}

/// The agent's change, when it has one the run still has to deliver: GitHub
/// is configured, the run lets changes out of the reply, and no delivery
/// was recorded yet.
fn undelivered_change<'a>(run: &'a AgentRun, ctx: &Context) -> Option<&'a ChangeRef> {
    let status = run.status.as_ref()?;
    let wanted = ctx.github.is_some() && change::deliver::mode(run, ctx) != ChangesMode::Reply;
    (wanted && status.change.is_none())
        .then(|| status.result.as_ref()?.change.as_ref())
        .flatten()
}

/// Pushes the agent's change and records what became of it; the run ends
/// on the next reconcile, which sees it recorded.
async fn deliver_change(
    run: &AgentRun,
    ctx: &Context,
    change: &ChangeRef,
) -> Result<Action, Error> {
    let github = ctx.github.as_ref().ok_or(Error::GitHubDisabled)?;
    let installation = installation(run, ctx).await?;
    let delivery = change::deliver::deliver(run, ctx, github, installation, change).await?;
    let (reason, holds) = match delivery.outcome {
        DeliveryOutcome::Pushed => ("Pushed", true),
        DeliveryOutcome::Refused => ("Refused", false),
        DeliveryOutcome::Rejected => ("Rejected", false),
    };
    if !holds {
        warn!(summary = %delivery.summary, "the agent's change was not pushed");
    }
    let mut transition =
        Transition::new(conditions::DELIVERED, reason, delivery.summary.clone()).change(delivery);
    if !holds {
        transition = transition.failing();
    }
    write(ctx, run, transition).await?;
    Ok(Action::await_change())
}

async fn fail(
    run: &AgentRun,
    ctx: &Context,
    reason: &'static str,
    message: String,
) -> Result<Action, Error> {
    warn!(%reason, %message, "the run failed");
    conclude(run, ctx, Phase::Failed, reason, message).await
}

/// What to say in the thread about how the run ended.
fn closing_text(run: &AgentRun) -> String {
    let text = reply_text(
        run.phase(),
        run.status.as_ref().and_then(|s| s.result.as_ref()),
        condition(run, conditions::FINISHED),
    );
    match run.status.as_ref().and_then(|s| s.change.as_ref()) {
        Some(change) => format!("{text}\n\n{}", change.summary),
        None => text,
    }
}

/// Where in its thread's comments a run's own begin (RFC 3339): a minute
/// before the run was made, for clock skew.
pub(super) fn thread_since(run: &AgentRun) -> String {
    run.metadata
        .creation_timestamp
        .as_ref()
        .map_or_else(Timestamp::now, |t| t.0)
        .checked_sub(SignedDuration::from_secs(60))
        .unwrap_or_else(|_| Timestamp::now())
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
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
    let since = thread_since(run);
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

/// An ended run: its reply goes out once, then after the TTL the run is
/// deleted.
async fn reply_then_expire(run: &AgentRun, ctx: &Context) -> Result<Action, Error> {
    if posts_reply(run, ctx) && !reply_settled(run) {
        let transition = match post_once(run, ctx, &closing_text(run)).await? {
            Ok(posted) => {
                ctx.metrics.replied(age(run).as_secs_f64());
                Transition::new(
                    conditions::REPLIED,
                    "Replied",
                    format!("replied at {}", posted.html_url),
                )
                .reply(posted)
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
    ctx.ahead
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .forget(&key(run));
    if run.phase().is_terminal() {
        // A run deleted before its reply went out still answers its thread.
        if posts_reply(run, ctx)
            && !reply_settled(run)
            && let Err(error) = post_once(run, ctx, &closing_text(run)).await?
        {
            warn!(%error, "could not post the reply of a deleted run");
        }
        check::close(run, ctx).await;
        return Ok(Action::await_change());
    }
    if let Ok(sandbox) = ctx.sandboxes.for_run(run) {
        sandbox.stop(run).await?;
    }
    // Told before the status changes: a retry of this cleanup sees the run
    // still unfinished and looks for the same marked comment.
    if posts_reply(run, ctx) {
        let text =
            "This request was cancelled before smolpaws finished it: the AgentRun was deleted.";
        if let Err(error) = post_once(run, ctx, text).await? {
            warn!(%error, "could not say in the thread that the run was cancelled");
        }
    }
    check::close(run, ctx).await;
    let message = "the AgentRun was deleted before the agent finished".into();
    conclude(run, ctx, Phase::Cancelled, "Cancelled", message).await
}

#[cfg(test)]
mod tests;
