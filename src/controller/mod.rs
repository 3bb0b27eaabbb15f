//! The controller: AgentRun → sandbox → reply.
//!
//! A kube-runtime [`Controller`] watches AgentRuns and the sandbox pods they
//! own, and [`reconcile::reconcile`] moves each run one step at a time.
//! Sandboxes report their result to [`report`], which writes it into the
//! run's status; the reconcile then posts the reply.

pub mod admission;
pub mod change;
pub mod check;
pub mod config;
pub mod credential;
pub mod decide;
pub mod gateway;
pub mod leader;
pub mod metrics;
pub mod owner;
pub mod progress;
pub mod reconcile;
pub mod report;
pub mod retry;
pub mod run_key;
pub mod status;
pub mod superseded;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};

use crate::api::AgentRun;
use crate::github::GitHub;
use crate::sandbox::owned::MANAGED_BY;
use crate::sandbox::{SandboxError, Sandboxes};
use admission::Limits;
pub use config::{ControllerArgs, ControllerConfig, LeaseConfig, ResultArgs};
use metrics::ControllerMetrics;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// A GitHub call failed.
    #[error(transparent)]
    GitHub(#[from] crate::github::Error),
    /// The finalizer machinery failed, or a step inside it did.
    #[error(transparent)]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
    /// An AgentRun without a namespace (the CRD is namespaced).
    #[error("the AgentRun has no namespace")]
    NoNamespace,
    /// An AgentRun without a uid: not one the apiserver stored.
    #[error("the AgentRun has no uid")]
    NoUid,
    /// A sandbox backend call failed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// git failed while delivering a change (the server unreachable, a
    /// timeout).
    #[error(transparent)]
    Git(#[from] change::git::GitError),
    /// A GitHub step was reached without GitHub configured.
    #[error("GitHub is not configured: set GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY_FILE")]
    GitHubDisabled,
}

impl Error {
    /// Whether retrying the same step can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::GitHub(error) => error.is_transient(),
            Self::Sandbox(error) => error.is_transient(),
            Self::Kube(_) | Self::Git(_) => true,
            Self::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(error)
                | kube::runtime::finalizer::Error::CleanupFailed(error) => error.is_transient(),
                _ => true,
            },
            Self::NoNamespace | Self::NoUid | Self::GitHubDisabled => false,
        }
    }

    /// When to try again: GitHub's word for rate limits, soon for server
    /// errors and conflicts, later for the rest.
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::GitHub(error) => error.retry_after().unwrap_or(if error.is_transient() {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(60)
            }),
            Self::Sandbox(error) => error.retry_after().unwrap_or(Duration::from_secs(5)),
            Self::Kube(kube::Error::Api(status)) if status.is_conflict() => {
                Duration::from_millis(200)
            }
            Self::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(error)
                | kube::runtime::finalizer::Error::CleanupFailed(error) => error.retry_after(),
                _ => Duration::from_secs(1),
            },
            _ => Duration::from_secs(5),
        }
    }
}

impl Error {
    /// A bounded name for the kind of failure, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::GitHub(_) => "github",
            Self::Sandbox(_) => "sandbox",
            Self::Git(_) => "git",
            Self::NoNamespace => "no_namespace",
            Self::NoUid => "no_uid",
            Self::GitHubDisabled => "github_disabled",
            Self::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(error)
                | kube::runtime::finalizer::Error::CleanupFailed(error) => error.kind(),
                _ => "finalizer",
            },
        }
    }
}

/// What the controller is given rather than configured with: the parts a
/// composition root chooses (real GitHub or none, which sandboxes).
pub struct ControllerParts {
    /// GitHub, when an App is configured.
    pub github: Option<GitHub>,
    /// The sandbox backends runs may name.
    pub sandboxes: Sandboxes,
    /// Where the LLM gateway forwards sandboxes' requests, with what key.
    pub gateway: gateway::GatewayConfig,
}

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// GitHub, when an App is configured.
    pub github: Option<GitHub>,
    /// The sandbox backends.
    pub sandboxes: Sandboxes,
    /// What run credentials are made with.
    pub key: Arc<run_key::RunKey>,
    /// The namespaces whose runs are served; any when empty.
    pub allowed_namespaces: Vec<String>,
    /// Concurrency limits.
    pub limits: Limits,
    /// How long a sandbox may take to start.
    pub pending_timeout: Duration,
    /// How long an agent may run by default.
    pub run_timeout: Duration,
    /// How long finished runs are kept.
    pub ttl: Duration,
    /// How changes are delivered.
    pub changes: change::ChangeSettings,
    /// How the progress comment behaves.
    pub progress: progress::ProgressSettings,
    /// Records Kubernetes Events.
    pub recorder: Recorder,
    /// The controller's view of all AgentRuns.
    pub runs: Store<AgentRun>,
    /// Runs this controller admitted or ended that its view may not show
    /// so yet.
    pub ahead: Mutex<admission::Ahead>,
    /// Failed reconciles in a row, per run, for their backoff.
    pub failures: retry::Failures,
    /// Versions of runs this controller wrote past, which its view may
    /// still show.
    pub superseded: superseded::Superseded,
    /// Metrics.
    pub metrics: ControllerMetrics,
    /// Asks the controller to reconcile a run now.
    pub wake: futures::channel::mpsc::UnboundedSender<ObjectRef<AgentRun>>,
}

impl Context {
    /// Whether runs in `namespace` are served.
    pub fn serves(&self, namespace: &str) -> bool {
        self.allowed_namespaces.is_empty() || self.allowed_namespaces.iter().any(|n| n == namespace)
    }

    /// `run` ended and freed its sandbox slot: the queued runs that may
    /// take it look at once rather than at their next poll.
    pub fn slot_freed(&self, run: &AgentRun) {
        let store = self.runs.state();
        let woken = {
            let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
            ahead.end(admission::key(run));
            ahead.settle(&store);
            admission::next_up(self.limits, &store, &ahead)
                .into_iter()
                .map(ObjectRef::from_obj)
                .collect::<Vec<_>>()
        };
        for run in woken {
            // Fails only when the controller is shutting down.
            let _ = self.wake.unbounded_send(run);
        }
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: &ControllerConfig,
    parts: ControllerParts,
    key: Arc<run_key::RunKey>,
    metrics: ControllerMetrics,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (runs, pods): (Api<AgentRun>, Api<Pod>) = match &config.watch_namespace {
        Some(namespace) => (
            Api::namespaced(client.clone(), namespace),
            Api::namespaced(client.clone(), namespace),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let (wake, woken) = futures::channel::mpsc::unbounded();
    // Bounded: every run is reconciled at start-up, and each reconcile in
    // flight holds its own state; thousands at once would only queue at the
    // apiserver anyway.
    let limits =
        kube::runtime::controller::Config::default().concurrency(config.reconcile_concurrency);
    // The store holds every run for the controller's life, finished ones
    // included. Their managedFields (the apiserver's record of who wrote
    // which field) are a large share of each object and nothing here reads
    // them, so they are dropped before the store keeps the run.
    let (store, writer) = reflector::store();
    let watched = watcher(runs, watcher::Config::default())
        .modify(|run: &mut AgentRun| run.metadata.managed_fields = None)
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(watched, store)
        .with_config(limits)
        .owns(
            pods,
            watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)),
        )
        .reconcile_on(woken);
    let identity = config
        .lease
        .as_ref()
        .and_then(|lease| lease.identity.clone());
    let reporter = Reporter {
        controller: "smolpaws-controller".into(),
        instance: identity,
    };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        github: parts.github,
        sandboxes: parts.sandboxes,
        key,
        allowed_namespaces: config.allowed_namespaces.clone(),
        limits: config.limits,
        pending_timeout: config.pending_timeout,
        run_timeout: config.run_timeout,
        ttl: config.ttl,
        changes: config.changes.clone(),
        progress: config.progress,
        runs: controller.store(),
        ahead: Mutex::new(admission::Ahead::default()),
        failures: retry::Failures::default(),
        superseded: superseded::Superseded::default(),
        metrics,
        wake,
    });
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|outcome| async move {
            match outcome {
                // error_policy has logged it.
                Ok(_) | Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(error) => tracing::warn!(%error, "the controller's watch failed; retrying"),
            }
        })
        .await;
}
