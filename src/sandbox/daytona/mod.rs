//! The Daytona backend: a run's agent in a Daytona sandbox instead of a pod.
//!
//! A sandbox made for a run is named after it and labelled with its uid
//! while the run holds it, so every step finds what an earlier (or crashed)
//! reconcile made instead of making it again: by name, which Daytona answers
//! consistently, and by label for a warm sandbox taken over. The agent
//! binary and the run's environment are uploaded (the environment as a file
//! the command sources and deletes: no secret is ever on a command line),
//! the agent runs in a process session named after the run, its output is
//! followed into the controller's log, and its report is the last line of
//! that output. With reuse on, a finished run hands its sandbox back (label
//! removed, stopped) and the next run on the same repository takes it.
//!
//! A reused sandbox must not let one run reach the next (the model runs any
//! bash it likes: a `.gitconfig` with a hook in HOME, a process waiting for
//! the next run's tokens). So each agent gets a new, empty HOME and TMPDIR
//! in its own run directory, and runs in a Unix session of its own whose id
//! it records there. Before a sandbox is handed back, one command kills
//! every process of the recorded sessions and removes everything smolpaws
//! keeps in the sandbox; a sandbox that cannot be cleaned is deleted
//! instead. A process that leaves its session on purpose (`setsid`), or a
//! run that deletes its session record, is out of reach of that: the
//! sandbox is the boundary, and reuse is opt-in.

pub mod client;
mod follow;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use kube::ResourceExt;
use secrecy::SecretString;
use tracing::{info, warn};

use super::env::AgentEnvironment;
use super::{Launch, Polls, Provisioned, Sandbox, SandboxError, SandboxState};
use crate::api::AgentRun;
use crate::api::contract::{Report, env};
use client::{DaytonaClient, DaytonaError, NewSandbox, Readiness, SessionCommand, Source};

/// The label holding the uid of the run that holds a sandbox.
pub const RUN_LABEL: &str = "smolpaws.dev/run-uid";
/// The label naming a sandbox's repository (`owner.name`), for reuse.
pub const REPOSITORY_LABEL: &str = "smolpaws.dev/repository";
const MANAGED_LABEL: &str = "app.kubernetes.io/managed-by";

/// Where smolpaws keeps its files in a sandbox, relative to its working
/// directory.
const HOME: &str = ".smolpaws";

/// How long the cleanup of a sandbox handed back may take before the
/// sandbox is deleted instead.
const CLEANUP_DEADLINE: Duration = Duration::from_secs(60);

/// Kills every process left from the runs of a sandbox and removes all
/// smolpaws keeps there, from the sandbox's working directory; exits 0 only
/// once all of it is gone.
///
/// A run directory's `sid` file names its agent's session, but it is
/// writable by the run, so a session is only trusted once one of its
/// processes is seen working inside the runs directory (the agent's keeper
/// always is): a forged id never gets this shell, Daytona's daemon or a
/// developer's machine killed. Ids 0 and 1, and this shell's own session,
/// are never taken; without `/proc` nothing can be checked, and it fails.
/// The scan reads `/proc` with shell builtins (forking `readlink` only for
/// members of a recorded session), and is repeated while it finds
/// processes, as a dying process's children may still be forking. Stat
/// fields after `pid (comm) `: state, ppid, pgrp, session.
const CLEANUP: &str = r#"(
r="$(pwd -P)/.smolpaws/runs"
read -r l </proc/$$/stat || exit 1; set -- ${l##*) }; own=$4
for f in "$r"/*/sid; do
  read -r sid 2>/dev/null <"$f" || continue
  case $sid in ''|*[!0-9]*|0|1|"$own") continue;; esac
  ours=
  for s in /proc/[0-9]*/stat; do
    read -r l 2>/dev/null <"$s" || continue
    set -- ${l##*) }
    [ "$4" = "$sid" ] || continue
    case $(readlink "${s%/stat}/cwd" 2>/dev/null) in "$r"/*) ours=1; break;; esac
  done
  [ -n "$ours" ] || continue
  n=0
  while [ $n -lt 50 ]; do
    n=$((n+1)); hit=
    for s in /proc/[0-9]*/stat; do
      read -r l 2>/dev/null <"$s" || continue
      set -- ${l##*) }
      [ "$4" = "$sid" ] && [ "$1" != Z ] || continue
      p=${s#/proc/}; kill -KILL "${p%/stat}" 2>/dev/null && hit=1
    done
    [ -n "$hit" ] || break
  done
done
rm -rf .smolpaws
)"#;

/// The controller's Daytona settings.
#[derive(Args, Clone, Debug)]
pub struct DaytonaArgs {
    /// Daytona's API key; the Daytona backend is off without it.
    #[arg(
        long = "daytona-api-key",
        env = "DAYTONA_API_KEY",
        hide_env_values = true
    )]
    pub daytona_api_key: Option<SecretString>,

    /// A file holding Daytona's API key, instead of DAYTONA_API_KEY.
    #[arg(
        long = "daytona-api-key-file",
        env = "DAYTONA_API_KEY_FILE",
        value_parser = crate::secret_file::read,
        conflicts_with = "daytona_api_key"
    )]
    pub daytona_api_key_file: Option<SecretString>,

    /// Daytona's API.
    #[arg(
        long = "daytona-api-url",
        env = "DAYTONA_API_URL",
        default_value = "https://app.daytona.io/api"
    )]
    pub daytona_api_url: String,

    /// The Daytona region sandboxes are created in.
    #[arg(long = "daytona-target", env = "DAYTONA_TARGET")]
    pub daytona_target: Option<String>,

    /// The snapshot sandboxes start from when a run names no image.
    #[arg(long = "daytona-snapshot", env = "SMOLPAWS_DAYTONA_SNAPSHOT")]
    pub daytona_snapshot: Option<String>,

    /// Minutes without activity before Daytona stops a sandbox.
    #[arg(
        long = "daytona-auto-stop-minutes",
        env = "SMOLPAWS_DAYTONA_AUTO_STOP_MINUTES",
        default_value_t = 15
    )]
    pub daytona_auto_stop_minutes: u32,

    /// Keep a sandbox per repository between runs instead of deleting it.
    #[arg(
        long = "daytona-reuse-sandboxes",
        env = "SMOLPAWS_DAYTONA_REUSE_SANDBOXES"
    )]
    pub daytona_reuse_sandboxes: bool,

    /// How long one Daytona call may take.
    #[arg(long = "daytona-timeout", env = "SMOLPAWS_DAYTONA_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub daytona_timeout: Duration,

    /// The Linux agent binary uploaded into sandboxes; this executable when
    /// unset (the image's static binary).
    #[arg(long = "daytona-agent-binary", env = "SMOLPAWS_DAYTONA_AGENT_BINARY")]
    pub daytona_agent_binary: Option<PathBuf>,
}

/// How far one provisioning step got.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Not started yet, in this Daytona state.
    Waiting(String),
    /// The agent runs in this sandbox.
    Started(String),
    /// Daytona cannot run it, for this reason.
    Failed(String),
}

/// Why preparing a sandbox failed.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// A Daytona call failed.
    #[error(transparent)]
    Daytona(#[from] DaytonaError),
    /// The agent binary could not be read.
    #[error("the agent binary {path} could not be read: {reason}")]
    AgentBinary {
        /// Its path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The Daytona backend of one controller.
#[derive(Debug)]
pub struct DaytonaSandboxes {
    client: DaytonaClient,
    settings: DaytonaArgs,
    environment: Arc<AgentEnvironment>,
    agent: tokio::sync::OnceCell<Bytes>,
    /// Held while a warm sandbox is picked, so two runs never take one.
    claims: tokio::sync::Mutex<()>,
    /// The runs whose output is forwarded to the log.
    followers: follow::Followers,
}

impl DaytonaSandboxes {
    /// The backend, when `settings` has an API key; its agents are told
    /// `environment` (less what only the result endpoint needs).
    pub fn new(settings: &DaytonaArgs, environment: Arc<AgentEnvironment>) -> Option<Self> {
        let key = settings
            .daytona_api_key
            .clone()
            .or_else(|| settings.daytona_api_key_file.clone())?;
        Some(Self {
            client: DaytonaClient::new(&settings.daytona_api_url, key, settings.daytona_timeout, 4),
            settings: settings.clone(),
            environment,
            agent: tokio::sync::OnceCell::new(),
            claims: tokio::sync::Mutex::new(()),
            followers: follow::Followers::default(),
        })
    }

    /// Finds or makes `run`'s sandbox and starts its agent there with `env`,
    /// one step at a time: call again until it says Started or Failed.
    async fn step(
        &self,
        run: &AgentRun,
        resources: (Option<u32>, Option<u32>),
        env: &[(String, String)],
    ) -> Result<Step, PrepareError> {
        let sandbox = self.claim(run, resources).await?;
        let id = sandbox.id.clone();
        match sandbox.state.readiness() {
            Readiness::Ready => {}
            Readiness::Startable => {
                self.client.start(&id).await?;
                return Ok(Step::Waiting("starting".into()));
            }
            Readiness::Transitioning => return Ok(Step::Waiting(sandbox.state.to_string())),
            Readiness::Failed | Readiness::Gone => {
                return Ok(Step::Failed(format!(
                    "Daytona sandbox {id} is in state {}: {}",
                    sandbox.state,
                    sandbox
                        .error_reason
                        .as_deref()
                        .unwrap_or("Daytona gave no reason")
                )));
            }
        }
        let session = session_id(run);
        let existing = self.client.session(&sandbox, &session).await?;
        if existing.as_ref().is_some_and(|s| !s.commands.is_empty()) {
            return Ok(Step::Started(id));
        }
        let dir = run_dir(run);
        self.client
            .upload(
                &sandbox,
                &[
                    (format!("{HOME}/bin/smolpaws"), self.agent_binary().await?),
                    (format!("{dir}/run.env"), Bytes::from(env_file(env))),
                ],
            )
            .await?;
        if existing.is_none() {
            self.client.create_session(&sandbox, &session).await?;
        }
        self.client
            .execute(&sandbox, &session, &start_command(&dir))
            .await?;
        info!(sandbox = %id, "started the agent in its Daytona sandbox");
        Ok(Step::Started(id))
    }

    /// The sandbox `run` holds, or a warm one of its repository, or a new one.
    ///
    /// A sandbox made for the run is named after it, so a later step (or a
    /// restarted controller) finds it by name, which Daytona answers
    /// consistently, unlike its list; and a create whose answer was lost is
    /// refused as a duplicate rather than made twice. A warm sandbox taken
    /// over keeps its name and is found by its run label.
    async fn claim(
        &self,
        run: &AgentRun,
        (cpu, memory): (Option<u32>, Option<u32>),
    ) -> Result<client::Sandbox, DaytonaError> {
        let uid = run.uid().unwrap_or_default();
        let name = sandbox_name(run);
        if let Some(made) = self.client.get(&name).await?
            && holds(&made, &uid)
        {
            return Ok(made);
        }
        let _claiming = self.claims.lock().await;
        if self.settings.daytona_reuse_sandboxes {
            let mine = BTreeMap::from([(RUN_LABEL.to_owned(), uid.clone())]);
            if let Some(held) = self.client.find(&mine).await?.into_iter().next() {
                return Ok(held);
            }
            let warm = self
                .client
                .find(&repository_labels(run))
                .await?
                .into_iter()
                .find(|s| {
                    !s.labels.contains_key(RUN_LABEL)
                        && !matches!(s.state.readiness(), Readiness::Failed | Readiness::Gone)
                });
            if let Some(mut warm) = warm {
                warm.labels.insert(RUN_LABEL.to_owned(), uid);
                self.client.set_labels(&warm.id, &warm.labels).await?;
                info!(sandbox = %warm.id, "reusing a warm Daytona sandbox");
                return Ok(warm);
            }
        }
        let mut labels = repository_labels(run);
        labels.insert(RUN_LABEL.to_owned(), uid.clone());
        let source = match &run.spec.sandbox.image {
            Some(image) => Source::Image {
                image: image.clone(),
                cpu,
                memory,
            },
            None => Source::Snapshot(self.settings.daytona_snapshot.clone()),
        };
        let new = NewSandbox {
            name: name.clone(),
            source,
            target: self.settings.daytona_target.clone(),
            auto_stop_interval: self.settings.daytona_auto_stop_minutes,
            labels,
        };
        match self.client.create(&new).await {
            Ok(created) => {
                info!(sandbox = %created.id, %name, "created a Daytona sandbox");
                Ok(created)
            }
            // Made by an attempt whose answer was lost.
            Err(error) if error.is_conflict() => match self.client.get(&name).await? {
                Some(made) if holds(&made, &uid) => Ok(made),
                _ => Err(error),
            },
            Err(error) => Err(error),
        }
    }

    async fn agent_binary(&self) -> Result<Bytes, PrepareError> {
        let path = match &self.settings.daytona_agent_binary {
            Some(path) => path.clone(),
            None => std::env::current_exe().map_err(|e| PrepareError::AgentBinary {
                path: PathBuf::from("/proc/self/exe"),
                reason: e.to_string(),
            })?,
        };
        self.agent
            .get_or_try_init(|| async {
                tokio::fs::read(&path).await.map(Bytes::from).map_err(|e| {
                    PrepareError::AgentBinary {
                        path: path.clone(),
                        reason: e.to_string(),
                    }
                })
            })
            .await
            .cloned()
    }

    /// What `run`'s agent in sandbox `id` is doing (its output is followed
    /// into the log from the first look); `None` when the sandbox is gone.
    async fn sandbox_state(
        &self,
        run: &AgentRun,
        id: &str,
    ) -> Result<Option<SandboxState>, DaytonaError> {
        let Some(sandbox) = self.client.get(id).await? else {
            return Ok(None);
        };
        match sandbox.state.readiness() {
            Readiness::Gone => return Ok(None),
            Readiness::Failed => {
                return Ok(Some(SandboxState::Exited {
                    code: -1,
                    reason: Some(format!(
                        "Daytona reports the sandbox failed: {}",
                        sandbox.error_reason.as_deref().unwrap_or("no reason given")
                    )),
                }));
            }
            // Stopped, paused or archived under the run (auto-stop, say):
            // nothing of the agent runs any more.
            Readiness::Startable => {
                return Ok(Some(SandboxState::Exited {
                    code: -1,
                    reason: Some(format!(
                        "the Daytona sandbox was {} while the agent ran",
                        sandbox.state
                    )),
                }));
            }
            // Its toolbox answers only once it settles.
            Readiness::Transitioning => {
                return Ok(Some(SandboxState::Waiting {
                    reason: Some(format!("the Daytona sandbox is {}", sandbox.state)),
                }));
            }
            Readiness::Ready => {}
        }
        let session = session_id(run);
        let Some(command) = self.agent_command(&sandbox, &session).await? else {
            return Ok(Some(SandboxState::Exited {
                code: -1,
                reason: Some("the agent's Daytona session is gone".to_owned()),
            }));
        };
        self.followers.follow(
            &self.client,
            &run.uid().unwrap_or_default(),
            &sandbox,
            &session,
            &command.id,
        );
        Ok(Some(match command.exit_code {
            None => SandboxState::Running,
            Some(code) => SandboxState::Exited { code, reason: None },
        }))
    }

    /// The agent's command in `session` of `sandbox`, if it was started.
    async fn agent_command(
        &self,
        sandbox: &client::Sandbox,
        session: &str,
    ) -> Result<Option<SessionCommand>, DaytonaError> {
        Ok(self
            .client
            .session(sandbox, session)
            .await?
            .and_then(|s| s.commands.into_iter().last()))
    }

    /// The report the agent printed last, once it exited.
    async fn printed_report(
        &self,
        run: &AgentRun,
        id: &str,
    ) -> Result<Option<Report>, DaytonaError> {
        let Some(sandbox) = self
            .client
            .get(id)
            .await?
            .filter(|s| s.state.readiness() == Readiness::Ready)
        else {
            return Ok(None);
        };
        let session = session_id(run);
        let Some(command) = self.agent_command(&sandbox, &session).await? else {
            return Ok(None);
        };
        let output = self.client.logs(&sandbox, &session, &command.id).await?;
        self.followers
            .finish(&run.uid().unwrap_or_default(), &sandbox.id, &output);
        Ok(output
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str::<Report>(line.trim()).ok()))
    }

    /// The sandboxes `run` holds: the one named after it, the one its status
    /// names, and any its label is on (the list may lag; the first two do
    /// not), each still carrying its label and not yet destroyed.
    async fn held(&self, run: &AgentRun) -> Result<Vec<client::Sandbox>, DaytonaError> {
        let uid = run.uid().unwrap_or_default();
        let mut held: Vec<client::Sandbox> = Vec::new();
        for key in std::iter::once(sandbox_name(run)).chain(sandbox_id(run).map(str::to_owned)) {
            if let Some(sandbox) = self.client.get(&key).await? {
                held.push(sandbox);
            }
        }
        let mine = BTreeMap::from([(RUN_LABEL.to_owned(), uid.clone())]);
        held.extend(self.client.find(&mine).await?);
        let mut seen = HashSet::new();
        // Daytona shows a destroyed sandbox for a while; it needs nothing.
        held.retain(|s| {
            holds(s, &uid) && s.state.readiness() != Readiness::Gone && seen.insert(s.id.clone())
        });
        Ok(held)
    }

    /// Hands back every sandbox `run` holds: deleted, or with reuse on,
    /// cleaned, unlabelled and left warm for Daytona to stop (deleted after
    /// all when it cannot be cleaned). Safe to repeat.
    async fn hand_back(&self, run: &AgentRun) -> Result<(), DaytonaError> {
        let uid = run.uid().unwrap_or_default();
        for sandbox in self.held(run).await? {
            if self.settings.daytona_reuse_sandboxes
                && sandbox.state.readiness() == Readiness::Ready
            {
                self.client
                    .delete_session(&sandbox, &session_id(run))
                    .await?;
                let cleaned = match self.clean(&sandbox, run).await {
                    Ok(cleaned) => cleaned,
                    Err(error) if error.is_transient() => return Err(error),
                    Err(error) => Err(error.to_string()),
                };
                match cleaned {
                    Ok(()) => {
                        // A process the run moved out of its session would
                        // outlive the cleanup and wait for the next run's
                        // credentials: stopping the sandbox ends every
                        // process, and the next run starts it again.
                        self.client.stop(&sandbox.id).await?;
                        let mut labels = sandbox.labels.clone();
                        labels.remove(RUN_LABEL);
                        self.client.set_labels(&sandbox.id, &labels).await?;
                        info!(sandbox = %sandbox.id, "released the Daytona sandbox, stopped and kept for reuse");
                    }
                    Err(reason) => {
                        warn!(sandbox = %sandbox.id, %reason, "could not clean the Daytona sandbox for the next run; deleting it");
                        self.client.delete(&sandbox.id).await?;
                        info!(sandbox = %sandbox.id, "deleted the Daytona sandbox");
                    }
                }
            } else {
                self.client.delete(&sandbox.id).await?;
                info!(sandbox = %sandbox.id, "deleted the Daytona sandbox");
            }
        }
        self.followers.forget(&uid);
        Ok(())
    }

    /// Runs [`CLEANUP`] in `sandbox` in a session of its own and waits for
    /// it: `Err` with the reason when it failed or did not finish.
    async fn clean(
        &self,
        sandbox: &client::Sandbox,
        run: &AgentRun,
    ) -> Result<Result<(), String>, DaytonaError> {
        let session = format!("smolpaws-clean-{}", run.uid().unwrap_or_default());
        match self.client.create_session(sandbox, &session).await {
            // Left by an earlier attempt that failed after making it.
            Err(error) if error.is_conflict() => {}
            other => other?,
        }
        let command = self.client.execute(sandbox, &session, CLEANUP).await?;
        let deadline = Instant::now() + CLEANUP_DEADLINE;
        let mut pause = Duration::from_millis(100);
        let outcome = loop {
            let Some(state) = self.client.session(sandbox, &session).await? else {
                break Err("the cleanup's session vanished".to_owned());
            };
            match state.commands.iter().find(|c| c.id == command) {
                None => break Err("the cleanup's command vanished".to_owned()),
                Some(SessionCommand {
                    exit_code: Some(0), ..
                }) => break Ok(()),
                Some(SessionCommand {
                    exit_code: Some(code),
                    ..
                }) => {
                    let output = self.client.logs(sandbox, &session, &command).await;
                    let output = output.unwrap_or_default();
                    let skip = output.chars().count().saturating_sub(500);
                    let tail: String = output.chars().skip(skip).collect();
                    break Err(format!("the cleanup exited with {code}: {}", tail.trim()));
                }
                Some(_) if Instant::now() >= deadline => {
                    break Err(format!(
                        "the cleanup did not finish in {}s",
                        CLEANUP_DEADLINE.as_secs()
                    ));
                }
                Some(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        };
        self.client.delete_session(sandbox, &session).await?;
        Ok(outcome)
    }
}

/// The command that starts the agent in `dir`, `run.env` uploaded there.
///
/// It runs in a Unix session of its own (recorded in `dir/sid` for
/// [`CLEANUP`]) with a keeper process that stays in the run directory, so
/// the session stays recognisable after the agent exits and its id cannot
/// be reused while anything of it lives. The keeper starts before the
/// environment is sourced, so it never holds a secret. HOME and TMPDIR are
/// new and empty: nothing an earlier run left in the sandbox user's HOME is
/// read. The agent is a child, not an `exec` of the session's shell, so
/// that shell lives on to record its exit code; `&` makes sure `setsid`
/// is not a process group leader, which would make it fork and return.
fn start_command(dir: &str) -> String {
    format!(
        "setsid sh -c 'set -e; cd {dir}; echo \"$$\" > sid; \
         while [ -e sid ]; do sleep 60; done </dev/null >/dev/null 2>&1 & \
         chmod 700 ../../bin/smolpaws; . ./run.env; rm -f run.env; \
         rm -rf home tmp; mkdir home tmp; mkdir -p workspace; \
         HOME=\"$PWD/home\" TMPDIR=\"$PWD/tmp\" SMOLPAWS_WORKSPACE=\"$PWD/workspace\" \
         exec ../../bin/smolpaws agent' & wait $!"
    )
}

/// The id Daytona gave `run`'s sandbox, once recorded in its status.
fn sandbox_id(run: &AgentRun) -> Option<&str> {
    run.status
        .as_ref()
        .and_then(|s| s.sandbox.as_ref())
        .map(|s| s.name.as_str())
}

#[async_trait::async_trait]
impl Sandbox for DaytonaSandboxes {
    /// The status records Daytona's id, known once the sandbox is made
    /// (or a warm one taken).
    fn planned_name(&self, _run: &AgentRun) -> Option<String> {
        None
    }

    async fn provision(&self, launch: Launch<'_>) -> Result<Provisioned, SandboxError> {
        let run = launch.run;
        let mut vars = self.environment.for_process(&launch);
        // The agent prints its report, which the controller reads from the
        // sandbox; it still calls the LLM through the gateway with its run
        // credential.
        vars.retain(|(name, _)| name != env::RESULT_URL);
        let defaults = &self.environment.settings;
        let limits = run
            .spec
            .sandbox
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref());
        let amount = |key: &str, default: &str| {
            limits
                .and_then(|l| l.get(key))
                .map_or(default.to_owned(), |q| q.0.clone())
        };
        let resources = cores_and_gib(
            &amount("cpu", &defaults.cpu),
            &amount("memory", &defaults.memory),
        );
        Ok(match self.step(run, resources, &vars).await {
            Ok(Step::Started(id)) => Provisioned::Started {
                at: crate::api::now(),
                name: Some(id),
                created: true,
            },
            Ok(Step::Waiting(state)) => Provisioned::Waiting {
                reason: Some(format!("the Daytona sandbox is {state}")),
                created: false,
            },
            Ok(Step::Failed(message)) => Provisioned::Failed {
                reason: "SandboxFailed",
                message,
            },
            Err(PrepareError::Daytona(error)) if error.is_transient() => return Err(error.into()),
            Err(error) => Provisioned::Failed {
                reason: "SandboxFailed",
                message: format!("the Daytona sandbox could not be prepared: {error}"),
            },
        })
    }

    async fn state(&self, run: &AgentRun) -> Result<Option<SandboxState>, SandboxError> {
        match sandbox_id(run) {
            Some(id) => Ok(self.sandbox_state(run, id).await?),
            None => Ok(None),
        }
    }

    async fn collect_report(&self, run: &AgentRun) -> Result<Option<Report>, SandboxError> {
        match sandbox_id(run) {
            Some(id) => Ok(self.printed_report(run, id).await?),
            None => Ok(None),
        }
    }

    async fn stop(&self, run: &AgentRun) -> Result<(), SandboxError> {
        match self.hand_back(run).await {
            Ok(()) => Ok(()),
            Err(error) if error.is_transient() => Err(error.into()),
            // Retrying cannot help (a revoked key, say): the run still ends.
            Err(error) => {
                warn!(%error, "could not release the Daytona sandbox; it may be left in Daytona");
                Ok(())
            }
        }
    }

    /// A sandbox is billed while held: the run hands it back before it ends.
    async fn release(&self, run: &AgentRun) -> Result<(), SandboxError> {
        self.stop(run).await
    }

    /// Daytona sends no events: its sandboxes are looked at often.
    fn polls(&self) -> Polls {
        Polls {
            starting: Duration::from_secs(2),
            running: Duration::from_secs(2),
        }
    }
}

/// The labels every sandbox of `run`'s repository carries.
fn repository_labels(run: &AgentRun) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_LABEL.to_owned(), "smolpaws".to_owned()),
        (
            REPOSITORY_LABEL.to_owned(),
            run.spec.github.repository.replace('/', "."),
        ),
    ])
}

/// The name of the sandbox made for `run`, unique per run.
fn sandbox_name(run: &AgentRun) -> String {
    format!("smolpaws-{}", run.uid().unwrap_or_default())
}

/// Whether `sandbox` carries the label of the run with `uid`.
fn holds(sandbox: &client::Sandbox, uid: &str) -> bool {
    sandbox.labels.get(RUN_LABEL).map(String::as_str) == Some(uid)
}

/// The process session of `run`'s agent.
fn session_id(run: &AgentRun) -> String {
    format!("smolpaws-{}", run.uid().unwrap_or_default())
}

/// `run`'s directory in a sandbox, relative to its working directory.
fn run_dir(run: &AgentRun) -> String {
    format!("{HOME}/runs/{}", run.uid().unwrap_or_default())
}

/// `env` as a POSIX shell file of `export NAME='value'` lines.
fn env_file(env: &[(String, String)]) -> String {
    env.iter()
        .filter(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(name, value)| format!("export {name}='{}'\n", value.replace('\'', r"'\''")))
        .collect()
}

/// CPU cores and GiB of memory from Kubernetes quantities, rounded up.
fn cores_and_gib(cpu: &str, memory: &str) -> (Option<u32>, Option<u32>) {
    let cores = match cpu.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok().map(|m| m / 1000.0),
        None => cpu.parse::<f64>().ok(),
    };
    let (number, unit): (String, String) = memory
        .chars()
        .partition(|c| c.is_ascii_digit() || *c == '.');
    let gib = number.parse::<f64>().ok().and_then(|n| {
        let bytes = match unit.as_str() {
            "Ki" => 1024.0,
            "Mi" => 1024.0 * 1024.0,
            "Gi" => 1024.0 * 1024.0 * 1024.0,
            "Ti" => 1024.0f64.powi(4),
            "K" | "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "" => 1.0,
            _ => return None,
        };
        Some(n * bytes / 1024.0f64.powi(3))
    });
    let up = |n: f64| Some(n.ceil().max(1.0) as u32);
    (cores.and_then(up), gib.and_then(up))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_become_whole_cores_and_gib() {
        assert_eq!(cores_and_gib("1", "2Gi"), (Some(1), Some(2)));
        assert_eq!(cores_and_gib("500m", "512Mi"), (Some(1), Some(1)));
        assert_eq!(cores_and_gib("2.5", "3G"), (Some(3), Some(3)));
        assert_eq!(cores_and_gib("lots", "2 bushels"), (None, None));
    }

    #[test]
    fn the_env_file_quotes_every_value() {
        let env = [
            ("A".to_owned(), "it's $HOME `x`".to_owned()),
            ("BAD NAME".to_owned(), "dropped".to_owned()),
        ];
        assert_eq!(env_file(&env), "export A='it'\\''s $HOME `x`'\n");
    }

    #[test]
    fn the_agent_gets_a_new_home_tmpdir_and_session() {
        let command = start_command(".smolpaws/runs/u-1");
        assert!(
            command.starts_with("setsid sh -c 'set -e; cd .smolpaws/runs/u-1; echo \"$$\" > sid;")
        );
        assert!(command.contains("rm -rf home tmp; mkdir home tmp;"));
        assert!(command.contains("HOME=\"$PWD/home\" TMPDIR=\"$PWD/tmp\""));
        assert!(command.ends_with("exec ../../bin/smolpaws agent' & wait $!"));
        let keeper = command.find("while [ -e sid ]").expect("a keeper");
        assert!(
            keeper < command.find(". ./run.env").expect("the environment"),
            "the keeper starts before the secrets are sourced"
        );
    }

    #[test]
    fn the_cleanup_kills_only_recorded_sessions_never_a_user() {
        for wide in [
            "pkill",
            "killall",
            "kill -1",
            "-KILL -1",
            "kill -9 -1",
            " -u ",
        ] {
            assert!(!CLEANUP.contains(wide), "{wide} in the cleanup");
        }
        assert!(CLEANUP.contains(r#"kill -KILL "${p%/stat}""#));
        assert!(CLEANUP.contains(r#""$r"/*/sid"#));
        assert!(CLEANUP.ends_with("rm -rf .smolpaws\n)"));
    }

    /// Whether the process `pid` (as the sandbox wrote it) lives.
    fn alive(pid: &str) -> bool {
        pid.trim().parse().is_ok_and(crate::process::running)
    }

    /// The scripts for real, with `sh` and a stand-in agent in a directory
    /// laid out like a sandbox's.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_cleanup_kills_what_a_run_left_and_spares_the_rest() {
        use std::os::unix::process::CommandExt;
        use std::process::Command;

        let sandbox = tempfile::tempdir().expect("a sandbox directory");
        let root = sandbox.path();
        let dir = ".smolpaws/runs/u-1";
        std::fs::create_dir_all(root.join(dir)).expect("the run directory");
        std::fs::create_dir_all(root.join(".smolpaws/bin")).expect("the bin directory");
        // Leaves a process behind, outside the run directory.
        std::fs::write(
            root.join(".smolpaws/bin/smolpaws"),
            "#!/bin/sh\necho \"home=$HOME tmp=$TMPDIR secret=$SECRET\"\nls -A \"$HOME\"\n\
             cd / && sleep 300 </dev/null >/dev/null 2>&1 &\necho \"leftover=$!\"\n",
        )
        .expect("the stand-in agent");
        let env = [("SECRET".to_owned(), "s3cret".to_owned())];
        std::fs::write(root.join(dir).join("run.env"), env_file(&env)).expect("run.env");
        // Not the run's: a session a forged record names.
        let mut bystander = Command::new("setsid")
            .args(["sleep", "300"])
            .spawn()
            .expect("a bystander");
        let forged = root.join(".smolpaws/runs/forged");
        std::fs::create_dir_all(&forged).expect("a forged run directory");
        std::fs::write(forged.join("sid"), bystander.id().to_string()).expect("a forged record");

        let started = Command::new("sh")
            .args(["-c", &start_command(dir)])
            .current_dir(root)
            .process_group(0)
            .output()
            .expect("the agent runs");
        let output = String::from_utf8_lossy(&started.stdout).into_owned();
        assert!(
            started.status.success(),
            "{output}{}",
            String::from_utf8_lossy(&started.stderr)
        );
        let run = root.canonicalize().expect("a path").join(dir);
        assert!(
            output.starts_with(&format!(
                "home={0}/home tmp={0}/tmp secret=s3cret\nleftover=",
                run.display()
            )),
            "a new, empty HOME: {output}"
        );
        assert!(!run.join("run.env").exists());
        let leftover = output
            .trim()
            .rsplit_once("leftover=")
            .map(|(_, pid)| pid.to_owned())
            .expect("the leftover's pid");
        assert!(alive(&leftover));

        let cleaned = Command::new("sh")
            .args(["-c", CLEANUP])
            .current_dir(root)
            .output()
            .expect("the cleanup runs");
        assert!(cleaned.status.success(), "{cleaned:?}");
        for _ in 0..50 {
            if !alive(&leftover) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!alive(&leftover), "the run's leftover process was killed");
        assert!(
            !root.join(".smolpaws").exists(),
            "every run directory is gone"
        );
        assert!(
            bystander.try_wait().expect("the bystander").is_none(),
            "a session the run only named is spared"
        );
        bystander.kill().expect("the bystander ends");
        bystander.wait().expect("the bystander is reaped");
    }
}
