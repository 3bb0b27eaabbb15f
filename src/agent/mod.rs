//! The agent entry: what runs inside a sandbox. It checks the repository
//! out, works on the request with an LLM and its tools, and reports the
//! reply through the result contract (`docs/result-contract.md`).

pub mod checkout;
pub mod commit;
pub mod context;
pub mod handover;
pub mod hardening;
pub mod llm;
pub mod progress;
pub mod redact;
pub mod session;
pub mod toolbox;
pub mod tools;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use tracing::{info, warn};

use crate::api::AgentRunSpec;
use crate::api::contract::{self, Report, env};
use crate::github::reply::{MAX_COMMENT_CHARS, fit};
use checkout::Target;
use llm::{Llm, LlmArgs, LlmSettings, Provider};
use redact::Redactor;
use tools::workspace::Workspace;

/// How the agent works, wherever it runs: in a sandbox (`smolpaws agent`)
/// or in the runner (`smolpaws agent serve`).
#[derive(Args, Clone, Debug)]
pub struct WorkArgs {
    /// The GitHub REST API.
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    pub github_api_url: String,

    /// Where repositories are cloned from.
    #[arg(long, env = "GITHUB_SERVER_URL", default_value = "https://github.com")]
    pub github_server_url: String,

    /// The LLM.
    #[command(flatten)]
    pub llm: LlmArgs,

    /// The most LLM round trips (the run's spec may lower it).
    #[arg(long, env = "SMOLPAWS_AGENT_MAX_ITERATIONS", default_value_t = 40)]
    pub max_iterations: u32,

    /// The most tokens, prompt and completion together.
    #[arg(long, env = "SMOLPAWS_AGENT_MAX_TOKENS", default_value_t = 1_000_000)]
    pub max_tokens: u64,

    /// The longest the agent works.
    #[arg(long, env = "SMOLPAWS_AGENT_TIMEOUT", default_value = "25m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// A bash command's timeout unless the model asks for another.
    #[arg(long, env = "SMOLPAWS_BASH_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub bash_timeout: Duration,

    /// The name the change's commits are by (the controller gives the
    /// App's bot login); `smolpaws[bot]` unless both it and the email are
    /// set.
    #[arg(long, env = env::COMMIT_NAME, requires = "commit_email")]
    pub commit_name: Option<String>,

    /// The email the change's commits are by (the App's bot's noreply
    /// address).
    #[arg(long, env = env::COMMIT_EMAIL, requires = "commit_name")]
    pub commit_email: Option<String>,
}

impl WorkArgs {
    /// Who the change's commits are by.
    pub fn commit_author(&self) -> contract::CommitAuthor {
        match (&self.commit_name, &self.commit_email) {
            (Some(name), Some(email)) => contract::CommitAuthor {
                name: name.clone(),
                email: email.clone(),
            },
            _ => contract::CommitAuthor::default(),
        }
    }

    /// The LLM, `model` (when given) instead of `LLM_MODEL`'s.
    pub fn llm(&self, model: Option<&str>) -> Result<Llm, AgentError> {
        let model = model
            .map(str::to_owned)
            .or_else(|| self.llm.model.clone())
            .ok_or_else(|| {
                AgentError::Config(
                    "set LLM_MODEL (or spec.agent.model) to the model the agent uses".into(),
                )
            })?;
        Ok(Llm::new(LlmSettings {
            provider: Provider::choose(self.llm.provider.as_deref(), &model)?,
            model,
            base_url: self.llm.base_url.clone(),
            api_key: self.llm.api_key.clone(),
            attempts: 5,
            request_timeout: Duration::from_secs(300),
            max_answer_tokens: self
                .llm
                .max_answer_tokens
                .unwrap_or(llm::DEFAULT_MAX_TOKENS),
            tool_choice: self.llm.tool_choice.unwrap_or_default(),
            temperature: self.llm.temperature,
            seed: self.llm.seed,
        })?)
    }

    /// The limits of a session, which a run's `options` may lower.
    pub fn limits(&self, options: Option<&crate::api::AgentOptions>) -> session::Limits {
        session::Limits {
            iterations: options
                .and_then(|a| a.max_iterations)
                .map_or(self.max_iterations, |n| {
                    n.unsigned_abs().min(self.max_iterations)
                }),
            tokens: options
                .and_then(|a| a.max_tokens)
                .map_or(self.max_tokens, |n| n.unsigned_abs().min(self.max_tokens)),
            wall_clock: self.timeout,
            bash_timeout: self.bash_timeout,
        }
    }

    /// What must never leave the agent: these settings' key and `others`.
    pub fn redactor(&self, others: &[Option<&SecretString>]) -> Redactor {
        Redactor::new(
            others
                .iter()
                .copied()
                .chain([self.llm.api_key.as_ref()])
                .flatten()
                .map(|s| s.expose_secret()),
        )
    }
}

/// Settings of `smolpaws agent`, from the sandbox's environment.
#[derive(Args, Clone, Debug)]
pub struct AgentArgs {
    /// The AgentRun's spec, as JSON, for a run started by hand.
    #[arg(long, env = env::RUN_SPEC, hide_env_values = true)]
    pub run_spec: Option<String>,

    /// Where to fetch the AgentRun's spec, with the run credential (what a
    /// sandbox is given; `--run-spec` wins when both are set).
    #[arg(long, env = env::SPEC_URL)]
    pub spec_url: Option<String>,

    /// The AgentRun's name.
    #[arg(long, env = env::RUN_NAME, default_value = "local")]
    pub run_name: String,

    /// The AgentRun's namespace.
    #[arg(long, env = env::RUN_NAMESPACE, default_value = "default")]
    pub run_namespace: String,

    /// The operator's LLM gateway for this run; when set, the agent calls
    /// the LLM there with its run credential instead of a key of its own.
    #[arg(long, env = env::LLM_GATEWAY)]
    pub llm_gateway: Option<String>,

    /// Where to report the result; without it the result is printed.
    #[arg(long, env = env::RESULT_URL)]
    pub result_url: Option<String>,

    /// The token that authenticates the report.
    #[arg(long, env = env::REPORT_TOKEN, hide_env_values = true)]
    pub report_token: Option<SecretString>,

    /// The repository-scoped GitHub token.
    #[arg(long, env = env::GITHUB_TOKEN, hide_env_values = true)]
    pub github_token: Option<SecretString>,

    /// The directory the repository is checked out into; the working
    /// directory when unset (a sandbox pod's is its workspace volume).
    #[arg(long, env = env::WORKSPACE)]
    pub workspace: Option<PathBuf>,

    /// The workspace already is the repository's checkout (a local
    /// repository in `smolpaws dev`): work in it as it is, without cloning.
    #[arg(long, env = env::EXISTING_CHECKOUT)]
    pub existing_checkout: bool,

    /// How the agent works.
    #[command(flatten)]
    pub settings: WorkArgs,
}

/// What the agent answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The reply, secrets redacted, cut to fit a comment.
    pub reply: String,
    /// Tokens spent.
    pub usage: crate::api::TokenUsage,
    /// The model that answered.
    pub model: String,
    /// How the session ended.
    pub outcome: crate::api::Outcome,
    /// The change it made, committed and bundled for the controller.
    pub change: Option<contract::Change>,
}

/// Why the agent could not work at all.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A setting is missing or wrong.
    #[error("{0}")]
    Config(String),
    /// The repository could not be checked out.
    #[error(transparent)]
    Checkout(#[from] checkout::CheckoutError),
    /// The LLM failed for good.
    #[error(transparent)]
    Llm(#[from] llm::LlmError),
    /// The report could not be delivered.
    #[error("the result could not be reported: {0}")]
    Report(String),
}

/// Runs the agent to its end and reports the result.
pub async fn run(mut args: AgentArgs) -> Result<(), AgentError> {
    // First, before any text from the thread is read: no environment this
    // process exposes holds a credential, and a tool running as this uid
    // cannot read its memory.
    let credentials = handover::isolate(handover::Credentials {
        github_token: args.github_token.take(),
        report_token: args.report_token.take(),
        llm_api_key: args.settings.llm.take_api_key(),
        runner_token: None,
    })
    .map_err(|e| {
        AgentError::Config(format!(
            "could not put the agent's credentials out of its tools' reach: {e}"
        ))
    })?;
    args.github_token = credentials.github_token;
    args.report_token = credentials.report_token;
    args.settings.llm.api_key = credentials.llm_api_key;
    let spec = match (&args.run_spec, &args.spec_url) {
        (Some(json), _) => json.clone(),
        (None, Some(url)) => fetch_spec(&args, url).await?,
        (None, None) => {
            return Err(AgentError::Config(
                "set SMOLPAWS_RUN_SPEC to the AgentRun's spec (or run `smolpaws agent serve`)"
                    .into(),
            ));
        }
    };
    let spec: AgentRunSpec = serde_json::from_str(&spec)
        .map_err(|e| AgentError::Config(format!("the run's spec is not an AgentRun spec: {e}")))?;
    let directory = match &args.workspace {
        Some(directory) => directory.clone(),
        None => std::env::current_dir()
            .map_err(|e| AgentError::Config(format!("the working directory is unusable: {e}")))?,
    };
    let checkout = if args.existing_checkout {
        Checkout::Existing
    } else {
        Checkout::Clone
    };
    if let Some(gateway) = args.llm_gateway.clone() {
        // The operator's gateway holds the provider's key; the run's own
        // credential opens it.
        let credential = run_credential(&args, env::LLM_GATEWAY)?.clone();
        args.settings.llm.base_url = Some(gateway);
        args.settings.llm.api_key = Some(credential);
    }
    let redactor = args
        .settings
        .redactor(&[args.github_token.as_ref(), args.report_token.as_ref()]);
    let llm = args
        .settings
        .llm(spec.agent.as_ref().and_then(|a| a.model.as_deref()))?;
    // Spent on the checkout and the thread, then gone: see `work`.
    let github_token = args.github_token.take();
    // The steps go where the report goes; a printed report has no route.
    let reporter = match (&args.result_url, &args.report_token) {
        (Some(base), Some(token)) => Some(progress::reporter(
            progress::Destination {
                url: contract::progress_url(base, &args.run_namespace, &args.run_name),
                token: token.clone(),
            },
            operator_client()?,
        )),
        _ => None,
    };
    let observe = |step: session::Step<'_>| {
        if let Some(reporter) = &reporter {
            reporter(step);
        }
    };
    let answer = work(
        &args.settings,
        &llm,
        &spec,
        github_token,
        &directory,
        checkout,
        &redactor,
        &observe,
    )
    .await?;
    let report = Report {
        reply: answer.reply,
        usage: answer.usage,
        model: Some(answer.model),
        outcome: answer.outcome,
        change: answer.change,
    };
    report_result(&args, &report).await
}

/// How the workspace gets the repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkout {
    /// Clone it (shallow, at the commit the request is about).
    Clone,
    /// The workspace already is a checkout; use it as it is.
    Existing,
    /// No repository: an empty workspace.
    None,
}

/// Works on `spec` in `directory` with `llm` to the end: the checkout, the
/// thread, the session. `github_token` is spent on the checkout and the
/// thread and dropped before the model sees anything. An LLM that fails for
/// good still gives an answer, saying so. `observe` hears each step.
#[allow(clippy::too_many_arguments)] // Each is one of the run's inputs.
pub async fn work(
    settings: &WorkArgs,
    llm: &Llm,
    spec: &AgentRunSpec,
    github_token: Option<SecretString>,
    directory: &std::path::Path,
    checkout: Checkout,
    redactor: &Redactor,
    observe: &(dyn Fn(session::Step<'_>) + Send + Sync),
) -> Result<Answer, AgentError> {
    let options = spec.agent.as_ref();
    let github = &spec.github;
    let target = if github.pull_request {
        Target::PullRequest {
            number: github.number,
            sha: github.head.as_ref().map(|h| h.sha.clone()),
        }
    } else {
        Target::DefaultBranch
    };
    let cloning = std::time::Instant::now();
    let checked_out = match checkout {
        Checkout::Existing => Some(checkout::existing(directory).await?),
        Checkout::Clone => Some(
            checkout::checkout(
                &settings.github_server_url,
                &github.repository,
                github_token.as_ref(),
                &target,
                directory,
            )
            .await?,
        ),
        Checkout::None => None,
    };
    let base = checked_out.as_ref().map(|c| c.sha.clone());
    if let Some(checked_out) = checked_out {
        info!(
            repository = %github.repository,
            sha = %checked_out.sha,
            took_ms = cloning.elapsed().as_millis() as u64,
            "checked out"
        );
    }
    // A local repository is worked on in a worktree of its own, so the
    // person's working tree stays as it is and the change lands on a branch.
    let local = match checkout {
        Checkout::Existing => Some(
            commit::LocalWork::add(directory, settings.bash_timeout)
                .await
                .map_err(|e| AgentError::Config(format!("cannot add a worktree: {e}")))?,
        ),
        Checkout::Clone | Checkout::None => None,
    };
    let worked_in = local.as_ref().map(commit::LocalWork::path);
    let directory = worked_in.as_deref().unwrap_or(directory);
    let workspace = Workspace::new(directory).map_err(|e| {
        AgentError::Config(format!(
            "the workspace {} is unusable: {e}",
            directory.display()
        ))
    })?;
    // A local repository, or none, has no GitHub thread to read.
    let api_url = (checkout == Checkout::Clone).then_some(settings.github_api_url.as_str());
    let request = context::request(spec, api_url, github_token.as_ref()).await;
    // Nothing after this point needs GitHub: the token leaves memory (it
    // zeroizes on drop) before the model's first turn.
    drop(github_token);
    let limits = settings.limits(options);
    let ending = session::run(llm, &workspace, request, limits, redactor, observe).await;
    // The workspace's real state, whatever the model claims: a fix with no
    // change behind it shows.
    // The state line is kept whole: the model's part is cut to leave it
    // room (and the reply marker's), so padding cannot push it out. Paths
    // are the model's words too: redacted like the rest.
    let changed = toolbox::changed_files(&workspace, settings.bash_timeout).await;
    // A clone's edits become commits the controller can push; a local
    // repository's, a branch of it.
    let author = settings.commit_author();
    let packed = match (checkout, &base, local) {
        (Checkout::Clone, Some(base), _) => {
            commit::pack(directory, base, spec, &author, settings.bash_timeout)
                .await
                .unwrap_or_else(|error| {
                    warn!(%error, "could not commit the change; it is described only");
                    commit::Packed::Unchanged
                })
        }
        (_, Some(base), Some(local)) => {
            match local
                .finish(base, spec, &author, settings.bash_timeout)
                .await
            {
                Ok(Some(branch)) => commit::Packed::Branch(branch),
                Ok(None) => commit::Packed::Unchanged,
                Err(error) => {
                    warn!(%error, "could not keep the change on a branch");
                    commit::Packed::Unchanged
                }
            }
        }
        _ => commit::Packed::Unchanged,
    };
    let (change, note) = match packed {
        commit::Packed::Branch(branch) => (
            None,
            Some(format!(
                "*The change is on the local branch `{branch}`: `git log -p HEAD..{branch}` shows it, `git merge {branch}` takes it.*"
            )),
        ),
        commit::Packed::Change(change) => (Some(change), None),
        commit::Packed::TooLarge(bytes) => (
            None,
            Some(format!(
                "*The change is {} KiB, more than the {} KiB smolpaws hands over: it was not pushed.*",
                bytes / 1024,
                contract::MAX_BUNDLE_BYTES / 1024
            )),
        ),
        commit::Packed::Unchanged => (None, None),
    };
    let reply = match changed {
        Some(changed) => {
            let mut state = redactor.redact(&workspace_state(&changed));
            if let Some(note) = note {
                state = format!("{state}\n\n{note}");
            }
            let room = (MAX_COMMENT_CHARS - MARKER_ROOM).saturating_sub(state.chars().count() + 2);
            format!("{}\n\n{state}", fit(&ending.reply, room))
        }
        None => fit(&ending.reply, MAX_COMMENT_CHARS - MARKER_ROOM),
    };
    Ok(Answer {
        reply,
        usage: ending.usage,
        model: ending.answered_by.unwrap_or_else(|| llm.model().to_owned()),
        outcome: ending.outcome,
        change,
    })
}

/// What the controller adds to a reply when it posts it (its marker).
const MARKER_ROOM: usize = 200;

/// The last line of every reply: the files the run changed.
fn workspace_state(changed: &[String]) -> String {
    const LISTED: usize = 20;
    if changed.is_empty() {
        return "*No files were changed.*".to_owned();
    }
    let mut listed: Vec<String> = changed
        .iter()
        .take(LISTED)
        .map(|path| format!("`{}`", path.replace('`', "'")))
        .collect();
    if changed.len() > LISTED {
        listed.push(format!("and {} more", changed.len() - LISTED));
    }
    format!("*Files changed: {}.*", listed.join(", "))
}

/// A client for the operator's endpoints, with timeouts: a sandbox must not
/// hang on a connection the network dropped.
fn operator_client() -> Result<reqwest::Client, AgentError> {
    crate::tls::install_default_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| AgentError::Config(format!("cannot build an HTTP client: {e}")))
}

/// Why a call to the operator got no useful answer.
enum OperatorError {
    /// It answered, and refused: `status: body`.
    Refused(String),
    /// It stayed unreachable or unavailable until the run's time was up;
    /// the last failure.
    Unavailable(String),
}

/// Sends what `request` builds, with the run credential, until the operator
/// answers other than 503: the contract's rule for every call a sandbox
/// makes to it. While it is unreachable or answers 503 (it restarts, or the
/// apiserver is busy) the call is retried with backoff until the run's time
/// is up (the sandbox is stopped then anyway).
async fn call_operator(
    config: &AgentArgs,
    token: &SecretString,
    what: &str,
    request: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
) -> Result<Result<reqwest::Response, OperatorError>, AgentError> {
    let http = operator_client()?;
    let deadline = std::time::Instant::now() + config.settings.timeout;
    let mut wait = Duration::from_secs(1);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let failure = match request(&http)
            .bearer_auth(token.expose_secret())
            .send()
            .await
        {
            Ok(answer) if answer.status().is_success() => return Ok(Ok(answer)),
            Ok(answer)
                if !matches!(
                    answer.status(),
                    reqwest::StatusCode::SERVICE_UNAVAILABLE
                        | reqwest::StatusCode::TOO_MANY_REQUESTS
                ) =>
            {
                let status = answer.status();
                let body = answer.text().await.unwrap_or_default();
                return Ok(Err(OperatorError::Refused(format!("{status}: {body}"))));
            }
            Ok(answer) => answer.status().to_string(),
            Err(error) => error.to_string(),
        };
        if std::time::Instant::now() + wait >= deadline {
            return Ok(Err(OperatorError::Unavailable(failure)));
        }
        warn!(attempt, %failure, "{what} is unavailable; retrying");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// The run credential, which `setting` needs.
fn run_credential<'a>(
    config: &'a AgentArgs,
    setting: &str,
) -> Result<&'a SecretString, AgentError> {
    config.report_token.as_ref().ok_or_else(|| {
        AgentError::Config(format!("{} is required with {setting}", env::REPORT_TOKEN))
    })
}

/// The run's spec from `url`, fetched with the run credential.
async fn fetch_spec(config: &AgentArgs, url: &str) -> Result<String, AgentError> {
    let token = run_credential(config, env::SPEC_URL)?;
    match call_operator(config, token, "the run's spec", |http| http.get(url)).await? {
        Ok(answer) => answer
            .text()
            .await
            .map_err(|e| AgentError::Config(format!("reading the run's spec failed: {e}"))),
        Err(OperatorError::Refused(refusal)) => Err(AgentError::Config(format!(
            "the operator refused the run's spec: {refusal}"
        ))),
        Err(OperatorError::Unavailable(failure)) => Err(AgentError::Config(format!(
            "the run's spec stayed unavailable at {url}: {failure}"
        ))),
    }
}

/// Delivers `report` to the result endpoint, or prints it when there is
/// none.
async fn report_result(config: &AgentArgs, report: &Report) -> Result<(), AgentError> {
    let body = serde_json::to_string(report).expect("a report serializes");
    let Some(base) = &config.result_url else {
        println!("{body}");
        return Ok(());
    };
    let token = run_credential(config, env::RESULT_URL)?;
    let url = contract::result_url(base, &config.run_namespace, &config.run_name);
    let sent = call_operator(config, token, "the result endpoint", |http| {
        http.post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
    })
    .await?;
    match sent {
        Ok(_) => {
            info!("reported the result");
            Ok(())
        }
        Err(OperatorError::Refused(refusal)) => Err(AgentError::Report(refusal)),
        Err(OperatorError::Unavailable(failure)) => Err(AgentError::Report(format!(
            "{url} stayed unavailable: {failure}"
        ))),
    }
}
