//! Conversations: a workspace, an event history, and agent runs on it.
//!
//! Each conversation lives in `<persistence>/<id>/` (`meta.json`, rewritten
//! whole; `events.jsonl`, appended) and works in `<workspaces>/<id>/`. A run
//! rebuilds the model's history from the events, so a conversation goes on
//! the same way after a restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use genai::chat::ChatMessage;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::events::{Event, EventBody, EventLog, LlmMessage, Observation, Source, TextContent};
use super::models::Models;
use super::now;
use crate::agent::WorkArgs;
use crate::agent::redact::Redactor;
use crate::agent::session::{Session, Step};
use crate::agent::tools::workspace::Workspace;
use crate::api::TokenUsage;

/// How many events a slow websocket client may fall behind before it is
/// dropped.
pub const EVENT_BUFFER: usize = 1024;

/// Where a conversation's agent is.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    /// Waiting for a message or a run.
    Idle,
    /// The agent works.
    Running,
    /// Stopped by a pause or a shutdown; can run again.
    Paused,
    /// The agent replied.
    Finished,
    /// The agent failed.
    Error,
}

/// A conversation's workspace.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkspaceInfo {
    /// Its directory.
    pub working_dir: String,
}

/// What clients see of a conversation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConversationInfo {
    /// Its id.
    pub id: String,
    /// The first words of its first message.
    pub title: Option<String>,
    /// Where its agent is.
    pub execution_status: ExecutionStatus,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// Its workspace.
    pub workspace: WorkspaceInfo,
    /// Tokens spent.
    pub usage: TokenUsage,
    /// The model, when the conversation chose one.
    pub model: Option<String>,
    /// The most LLM round trips per run, when the conversation set it.
    pub max_iterations: Option<u32>,
}

/// A message sent to a conversation.
#[derive(Clone, Debug, Deserialize)]
pub struct SendMessage {
    /// `user` (the default).
    #[serde(default = "user_role")]
    pub role: String,
    /// The text parts.
    pub content: Vec<TextContent>,
    /// Whether to run the agent on it now.
    #[serde(default)]
    pub run: bool,
}

fn user_role() -> String {
    "user".to_owned()
}

/// The LLM part of a start request's agent.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AgentLlm {
    /// The model.
    pub model: Option<String>,
}

/// The agent part of a start request.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AgentSpec {
    /// Its LLM.
    #[serde(default)]
    pub llm: AgentLlm,
}

/// A request to start a conversation.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StartConversation {
    /// The first message.
    pub initial_message: Option<SendMessage>,
    /// The agent (its model).
    #[serde(default)]
    pub agent: AgentSpec,
    /// The most LLM round trips per run.
    pub max_iterations: Option<u32>,
}

/// Why a conversation call failed.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    /// No such conversation.
    #[error("there is no conversation {0}")]
    NotFound(String),
    /// Its agent already runs.
    #[error("conversation {0} is already running")]
    Running(String),
    /// Every run slot is taken.
    #[error("{0} runs are already in progress; try again later")]
    Busy(usize),
    /// A message without text.
    #[error("content: the message has no text")]
    Empty,
    /// The disk refused.
    #[error("the conversation could not be stored: {0}")]
    Io(#[from] std::io::Error),
}

struct State {
    info: ConversationInfo,
    log: EventLog,
    events: Vec<Arc<Event>>,
    stop: Option<CancellationToken>,
}

/// One conversation.
pub struct Conversation {
    dir: PathBuf,
    workspace: PathBuf,
    state: Mutex<State>,
    live: broadcast::Sender<Arc<Event>>,
}

impl Conversation {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What clients see of it.
    pub fn info(&self) -> ConversationInfo {
        self.lock().info.clone()
    }

    /// Its events so far, and a receiver of the ones to come (subscribed
    /// before the snapshot, so nothing falls between the two).
    pub fn follow(&self) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let state = self.lock();
        let live = self.live.subscribe();
        (state.events.clone(), live)
    }

    /// Its events so far.
    pub fn events(&self) -> Vec<Arc<Event>> {
        self.lock().events.clone()
    }

    /// Appends and publishes an event. A failed write is logged: the event
    /// is still published, and the conversation goes on.
    fn record(&self, source: Source, body: EventBody) {
        let mut state = self.lock();
        let event = Arc::new(Event {
            id: crate::random::uuid(),
            seq: state.events.len() as u64,
            timestamp: now(),
            source,
            body,
        });
        if let Err(error) = state.log.append(&event) {
            warn!(%error, "could not persist a conversation event");
        }
        state.events.push(event.clone());
        state.info.updated_at = event.timestamp.clone();
        // No receiver is fine: nobody follows the conversation.
        let _ = self.live.send(event);
    }

    fn set_status(&self, status: ExecutionStatus) {
        let changed = {
            let mut state = self.lock();
            let changed = state.info.execution_status != status;
            state.info.execution_status = status;
            changed
        };
        if changed {
            self.record(
                Source::Environment,
                EventBody::ConversationStateUpdateEvent {
                    key: "execution_status".into(),
                    value: json!(status),
                },
            );
        }
        if let Err(error) = self.save() {
            warn!(%error, "could not persist a conversation's state");
        }
    }

    fn save(&self) -> std::io::Result<()> {
        let info = self.info();
        let temporary = self.dir.join("meta.json.tmp");
        std::fs::write(&temporary, serde_json::to_vec_pretty(&info)?)?;
        std::fs::rename(temporary, self.dir.join("meta.json"))
    }

    /// The model's history, from the events: messages as they were, tool
    /// activity as the model's own account of it.
    fn history(&self) -> Vec<ChatMessage> {
        let mut history = Vec::new();
        let mut actions: BTreeMap<String, (String, String)> = BTreeMap::new();
        for event in self.events() {
            match &event.body {
                EventBody::MessageEvent { llm_message } => {
                    let text = llm_message.text();
                    history.push(if event.source == Source::Agent {
                        ChatMessage::assistant(text)
                    } else {
                        ChatMessage::user(text)
                    });
                }
                EventBody::ActionEvent {
                    tool_name,
                    tool_call_id,
                    action,
                } => {
                    actions.insert(
                        tool_call_id.clone(),
                        (tool_name.clone(), action.to_string()),
                    );
                }
                EventBody::ObservationEvent {
                    tool_call_id,
                    observation,
                    ..
                } => {
                    if let Some((tool, arguments)) = actions.remove(tool_call_id) {
                        let seen: String = observation.content.chars().take(4000).collect();
                        history.push(ChatMessage::assistant(format!(
                            "I called {tool} with {arguments}; it answered:\n{seen}"
                        )));
                    }
                }
                EventBody::ConversationStateUpdateEvent { .. }
                | EventBody::AgentErrorEvent { .. } => {}
            }
        }
        history
    }
}

/// Every conversation of a runner.
pub struct Conversations {
    persistence: PathBuf,
    workspaces: PathBuf,
    settings: WorkArgs,
    /// What must never leave the runner: its token and the LLM key.
    redactor: Redactor,
    models: Arc<Models>,
    slots: Arc<Semaphore>,
    capacity: usize,
    all: RwLock<BTreeMap<String, Arc<Conversation>>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Conversations {
    /// The conversations stored under `persistence`, working under
    /// `workspaces`; runs take one of `slots` (of `capacity`); `redactor`
    /// cleans what they send out. Conversations a killed runner left
    /// running are marked paused.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        persistence: &Path,
        workspaces: &Path,
        settings: WorkArgs,
        redactor: Redactor,
        models: Arc<Models>,
        slots: Arc<Semaphore>,
        capacity: usize,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(persistence)?;
        std::fs::create_dir_all(workspaces)?;
        let mut all = BTreeMap::new();
        for entry in std::fs::read_dir(persistence)? {
            let dir = entry?.path();
            let Ok(meta) = std::fs::read(dir.join("meta.json")) else {
                continue;
            };
            let Ok(mut info) = serde_json::from_slice::<ConversationInfo>(&meta) else {
                warn!(dir = %dir.display(), "skipping a conversation whose meta.json is unreadable");
                continue;
            };
            let (log, events) = EventLog::open(&dir.join("events.jsonl"))?;
            let interrupted = info.execution_status == ExecutionStatus::Running;
            if interrupted {
                info.execution_status = ExecutionStatus::Idle;
            }
            let conversation = Arc::new(Conversation {
                workspace: PathBuf::from(&info.workspace.working_dir),
                dir,
                state: Mutex::new(State {
                    info: info.clone(),
                    log,
                    events: events.into_iter().map(Arc::new).collect(),
                    stop: None,
                }),
                live: broadcast::channel(EVENT_BUFFER).0,
            });
            if interrupted {
                conversation.set_status(ExecutionStatus::Paused);
            }
            all.insert(info.id.clone(), conversation);
        }
        info!(conversations = all.len(), dir = %persistence.display(), "conversations loaded");
        Ok(Self {
            persistence: persistence.to_owned(),
            workspaces: workspaces.to_owned(),
            settings,
            redactor,
            models,
            slots,
            capacity,
            all: RwLock::new(all),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        })
    }

    /// The conversation `id`.
    pub fn get(&self, id: &str) -> Result<Arc<Conversation>, ConversationError> {
        self.all
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| ConversationError::NotFound(id.to_owned()))
    }

    /// Every conversation, newest first, optionally only those in `status`.
    pub fn list(&self, status: Option<ExecutionStatus>) -> Vec<ConversationInfo> {
        let mut infos: Vec<ConversationInfo> = self
            .all
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|c| c.info())
            .filter(|info| status.is_none_or(|s| info.execution_status == s))
            .collect();
        infos.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        infos
    }

    /// Starts a conversation.
    pub fn create(
        self: &Arc<Self>,
        request: StartConversation,
    ) -> Result<ConversationInfo, ConversationError> {
        let id = crate::random::uuid();
        let dir = self.persistence.join(&id);
        let workspace = self.workspaces.join(&id);
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(&workspace)?;
        let (log, _) = EventLog::open(&dir.join("events.jsonl"))?;
        let created = now();
        let title = request.initial_message.as_ref().map(|m| {
            let text: String = m.content.iter().map(|c| c.text.as_str()).collect();
            text.chars().take(60).collect()
        });
        let info = ConversationInfo {
            id: id.clone(),
            title,
            execution_status: ExecutionStatus::Idle,
            created_at: created.clone(),
            updated_at: created,
            workspace: WorkspaceInfo {
                working_dir: workspace.display().to_string(),
            },
            usage: TokenUsage::default(),
            model: request.agent.llm.model.clone(),
            max_iterations: request.max_iterations,
        };
        let conversation = Arc::new(Conversation {
            dir,
            workspace,
            state: Mutex::new(State {
                info,
                log,
                events: Vec::new(),
                stop: None,
            }),
            live: broadcast::channel(EVENT_BUFFER).0,
        });
        conversation.save()?;
        self.all
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), conversation);
        if let Some(message) = request.initial_message {
            self.send(&id, message)?;
        }
        Ok(self.get(&id)?.info())
    }

    /// Adds a message; runs the agent when it asks to.
    pub fn send(self: &Arc<Self>, id: &str, message: SendMessage) -> Result<(), ConversationError> {
        let conversation = self.get(id)?;
        if message.content.iter().all(|c| c.text.trim().is_empty()) {
            return Err(ConversationError::Empty);
        }
        conversation.record(
            Source::User,
            EventBody::MessageEvent {
                llm_message: LlmMessage {
                    role: message.role,
                    content: message.content,
                },
            },
        );
        if message.run {
            match self.run(id) {
                // A message to a running agent waits for its next run.
                Ok(()) | Err(ConversationError::Running(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Runs the agent on the conversation as it stands.
    pub fn run(self: &Arc<Self>, id: &str) -> Result<(), ConversationError> {
        let conversation = self.get(id)?;
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ConversationError::Busy(self.capacity))?;
        let stop = self.shutdown.child_token();
        {
            let mut state = conversation.lock();
            if state.stop.is_some() {
                return Err(ConversationError::Running(id.to_owned()));
            }
            state.stop = Some(stop.clone());
        }
        conversation.set_status(ExecutionStatus::Running);
        let this = self.clone();
        self.tasks.spawn(async move {
            this.work(&conversation, stop, permit).await;
        });
        Ok(())
    }

    async fn work(
        &self,
        conversation: &Arc<Conversation>,
        stop: CancellationToken,
        _slot: OwnedSemaphorePermit,
    ) {
        let info = conversation.info();
        let ended = async {
            let llm = self
                .models
                .get(info.model.as_deref())
                .map_err(|e| e.to_string())?;
            let workspace = Workspace::new(&conversation.workspace).map_err(|e| e.to_string())?;
            let mut limits = self.settings.limits(None);
            if let Some(most) = info.max_iterations {
                limits.iterations = limits.iterations.min(most);
            }
            let redactor = &self.redactor;
            let mut session = Session::with_history(conversation.history());
            let observe = |step: Step<'_>| observe(conversation, step);
            let ending = session
                .run(&llm, &workspace, limits, redactor, &observe, &stop)
                .await;
            Ok::<_, String>((ending, session.usage()))
        }
        .await;
        let status = match ended {
            Ok((Some(ending), usage)) => {
                conversation.record(
                    Source::Agent,
                    EventBody::MessageEvent {
                        llm_message: LlmMessage {
                            role: "assistant".into(),
                            content: vec![TextContent::new(ending.reply)],
                        },
                    },
                );
                add_usage(conversation, usage);
                if ending.outcome.failed() {
                    ExecutionStatus::Error
                } else {
                    ExecutionStatus::Finished
                }
            }
            Ok((None, usage)) => {
                add_usage(conversation, usage);
                ExecutionStatus::Paused
            }
            Err(error) => {
                conversation.record(Source::Environment, EventBody::AgentErrorEvent { error });
                ExecutionStatus::Error
            }
        };
        conversation.lock().stop = None;
        conversation.set_status(status);
    }

    /// Pauses the conversation's agent, if it runs.
    pub fn pause(&self, id: &str) -> Result<(), ConversationError> {
        if let Some(stop) = self.get(id)?.lock().stop.clone() {
            stop.cancel();
        }
        Ok(())
    }

    /// Deletes the conversation, its events and its workspace.
    pub fn delete(&self, id: &str) -> Result<(), ConversationError> {
        let conversation = self
            .all
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
            .ok_or_else(|| ConversationError::NotFound(id.to_owned()))?;
        if let Some(stop) = conversation.lock().stop.clone() {
            stop.cancel();
        }
        std::fs::remove_dir_all(&conversation.dir)?;
        match std::fs::remove_dir_all(&conversation.workspace) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.into()),
            _ => Ok(()),
        }
    }

    /// Stops every run (each records that it paused) and waits for them.
    pub async fn shut_down(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

fn add_usage(conversation: &Conversation, usage: TokenUsage) {
    let mut state = conversation.lock();
    state.info.usage.prompt_tokens += usage.prompt_tokens;
    state.info.usage.completion_tokens += usage.completion_tokens;
}

/// Records a session step as its event.
fn observe(conversation: &Conversation, step: Step<'_>) {
    let (source, body) = match step {
        Step::Said(text) => (
            Source::Agent,
            EventBody::MessageEvent {
                llm_message: LlmMessage {
                    role: "assistant".into(),
                    content: vec![TextContent::new(text)],
                },
            },
        ),
        Step::Called {
            id,
            tool,
            arguments,
        } => (
            Source::Agent,
            EventBody::ActionEvent {
                tool_name: tool.to_owned(),
                tool_call_id: id.to_owned(),
                action: serde_json::from_str(arguments).unwrap_or_else(|_| json!(arguments)),
            },
        ),
        Step::Answered {
            id,
            tool,
            exit_code,
            output,
        } => (
            Source::Environment,
            EventBody::ObservationEvent {
                tool_name: tool.to_owned(),
                tool_call_id: id.to_owned(),
                observation: Observation {
                    exit_code,
                    content: output.to_owned(),
                },
            },
        ),
    };
    conversation.record(source, body);
}
