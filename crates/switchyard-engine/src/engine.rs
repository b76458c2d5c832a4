//! [`LocalEngine`]: the [`ChatBackend`] in front of the engine thread.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use switchyard_core::{
    BackendError, BackendInfo, BackendLoad, ChatBackend, ChatMessage, ChatRequest, ChatStream,
    ErrorKind, LocalModelControl, ModelStatus, Residence, ResponseFormat, Role, SamplingParams,
    StreamEvent, ToolChoice, ToolDefinition,
};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::grammar::{grammar_for, grammar_sampler, lazy_grammar_sampler};
use crate::residency::{Evictable, MemoryBudget, Reservation, ReserveError, UnloadReason};
use crate::scheduler::{EngineLoad, Job, Scheduler, SchedulerLimits};
use crate::template::{ChatTemplate, TemplateError};
use crate::tool_prompt::{CALL_OPEN, CallGrammar, call_grammar, describe_tools};
use crate::tools::ToolCallParser;

/// llama.cpp's `LLAMA_FLASH_ATTN_TYPE_DISABLED` and `_AUTO`.
const FLASH_ATTENTION_OFF: i32 = 0;
const FLASH_ATTENTION_AUTO: i32 = -1;

/// How long a request for a model that is not loaded waits for it (for
/// room under the memory budget, then for the load) before it is answered
/// 503: a model loads in seconds, and a request that arrives just after
/// start-up, or for a model that was unloaded, should be served, not
/// refused.
const LOAD_WAIT: Duration = Duration::from_secs(30);

/// How long a client should wait before retrying when the engine is busy.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long a local model stays loaded once nothing uses it (Ollama's
/// `keep_alive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeepAlive {
    /// Until another model needs its memory, or an operator unloads it.
    #[default]
    Forever,
    /// This long after its last request ends; zero unloads it at once.
    For(Duration),
}

/// How to run one local model.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// The name it is served under, for logs.
    pub name: String,
    /// The GGUF file.
    pub model_path: PathBuf,
    /// Context window per sequence, in tokens (prompt plus completion).
    pub context_length: u32,
    /// Sequences decoded together in one batch.
    pub parallel: u32,
    /// CPU threads for llama.cpp; `None` uses every core.
    pub threads: Option<u32>,
    /// Requests that may wait for a free sequence before new ones get 503.
    pub queue_capacity: usize,
    /// Most tokens evaluated in one forward pass (prompt chunks included).
    pub batch_size: u32,
    /// Layers offloaded to a GPU (when built with a GPU backend).
    pub gpu_layers: u32,
    /// Sampling for parameters a request leaves unset (a model's
    /// recommended temperature, say); what stays unset follows OpenAI's
    /// defaults.
    pub default_sampling: SamplingParams,
    /// A system message for requests that bring none (a small model's own
    /// template default can be worse than none); `None` leaves such
    /// requests as they are.
    pub default_system_prompt: Option<String>,
    /// The answer budget of requests without `max_tokens`; `None` lets them
    /// run to the end of the context window.
    pub default_max_tokens: Option<u32>,
    /// Stop a generation that falls into a loop (finish reason `length`).
    pub repetition_guard: bool,
    /// Keep each finished sequence's KV state so that a prompt starting
    /// with the same tokens prefills only the rest.
    pub prompt_cache: bool,
    /// Let llama.cpp use flash attention where the backend has it. Off by
    /// default: on the CPU its results depend on how many tokens are
    /// evaluated together, so a prompt prefilled in two parts (a reused
    /// prefix, then the rest) drifts from one prefilled whole, enough to
    /// change a greedy answer a few turns into a conversation. Off, both
    /// give the same answers, at about a tenth less prefill speed (256
    /// against 282 tokens/s for a 512-token prompt, SmolLM2 on 2 cores).
    pub flash_attention: bool,
    /// How long the model stays loaded when idle.
    pub keep_alive: KeepAlive,
    /// Loaded before the server reports ready (else on first use).
    pub preload: bool,
}

impl EngineConfig {
    /// Defaults for `model_path`: a 2,048-token window, 4 parallel sequences.
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        let model_path = model_path.into();
        Self {
            name: file_stem(&model_path),
            model_path,
            context_length: 2048,
            parallel: 4,
            threads: None,
            queue_capacity: 64,
            batch_size: 512,
            gpu_layers: 0,
            default_sampling: SamplingParams::default(),
            default_system_prompt: None,
            default_max_tokens: None,
            repetition_guard: true,
            prompt_cache: true,
            flash_attention: false,
            keep_alive: KeepAlive::Forever,
            preload: false,
        }
    }
}

/// Why a local model could not be started.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The GGUF file is not there.
    #[error("model file {0} does not exist")]
    ModelMissing(PathBuf),
    /// llama.cpp could not initialise.
    #[error("llama.cpp backend: {0}")]
    Backend(String),
    /// llama.cpp could not load the file.
    #[error("could not load model {path}: {reason}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What llama.cpp said.
        reason: String,
    },
    /// The inference context could not be created (often: not enough memory).
    #[error("could not create an inference context: {0}")]
    Context(String),
    /// The model's chat template does not compile.
    #[error(transparent)]
    Template(#[from] Arc<TemplateError>),
    /// The configuration is inconsistent.
    #[error("{0}")]
    Config(String),
    /// The engine thread is gone.
    #[error("the engine thread stopped")]
    Stopped,
    /// The memory budget of local models has no room for it.
    #[error(transparent)]
    NoRoom(ReserveError),
}

/// Renders and tokenizes prompts; shared between the engine thread and the
/// callers, which tokenize on the blocking pool while the engine decodes.
struct Prompter {
    model: Arc<LlamaModel>,
    template: ChatTemplate,
    model_name: String,
}

impl Prompter {
    /// Checks what a local GGUF model can serve: text only, tools only when
    /// its template renders them.
    fn check(&self, request: &ChatRequest) -> Result<(), BackendError> {
        if let Some(index) = request.messages.iter().position(ChatMessage::has_images) {
            return Err(BackendError::invalid_request(format!(
                "this local model reads text only; messages[{index}] contains an image"
            ))
            .with_param(format!("messages[{index}].content")));
        }
        let wants_tools =
            !request.tools.is_empty() && request.tool_choice != Some(ToolChoice::None);
        let wants_json = !matches!(request.response_format, None | Some(ResponseFormat::Text));
        if wants_tools && wants_json && !self.template.supports_tools() {
            return Err(BackendError::invalid_request(
                "this local model keeps tool calls to a grammar, so one request cannot also ask for a JSON `response_format`; send one or the other",
            )
            .with_param("response_format"));
        }
        Ok(())
    }

    /// The grammar that shapes the answer: a call of one of `tools` when
    /// the template cannot render them (they go into the prompt instead),
    /// else `format`'s.
    fn answer_grammar(
        &self,
        tools: &[ToolDefinition],
        choice: Option<&ToolChoice>,
        format: Option<&ResponseFormat>,
    ) -> Result<Option<LlamaSampler>, BackendError> {
        if self.describes_tools(tools) {
            return match call_grammar(tools, choice)? {
                Some(CallGrammar::Required(grammar)) => {
                    grammar_sampler(&self.model, &grammar).map(Some)
                }
                Some(CallGrammar::OnOpen(grammar)) => {
                    lazy_grammar_sampler(&self.model, &grammar, CALL_OPEN).map(Some)
                }
                None => Ok(None),
            };
        }
        grammar_for(format)?
            .map(|grammar| grammar_sampler(&self.model, &grammar))
            .transpose()
    }

    /// Whether `tools` go into the prompt as text, because the template
    /// cannot render them.
    fn describes_tools(&self, tools: &[ToolDefinition]) -> bool {
        !tools.is_empty() && !self.template.supports_tools()
    }

    /// The prompt's tokens: `tools` rendered by the template, or described
    /// in the system message when the template has no place for them.
    fn prompt(
        &self,
        mut messages: Vec<ChatMessage>,
        tools: &[ToolDefinition],
    ) -> Result<Vec<LlamaToken>, BackendError> {
        if self.describes_tools(tools) {
            describe_tools(&mut messages, tools);
            self.tokenize(&messages, &[])
        } else {
            self.tokenize(&messages, tools)
        }
    }

    fn tokenize(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolDefinition],
    ) -> Result<Vec<LlamaToken>, BackendError> {
        let prompt = self.template.render(messages, tools).map_err(|error| {
            BackendError::invalid_request(format!(
                "the model's chat template rejected the conversation: {error}"
            ))
            .with_param("messages")
        })?;
        let vocab = self.model.vocab();
        let bos = self.template.bos_token();
        // Templates that write the BOS token themselves must not get a second.
        let template_has_bos = !bos.is_empty() && prompt.starts_with(bos);
        let add_bos = vocab.should_add_bos() && !template_has_bos;
        Ok(vocab.tokenize(prompt.as_bytes(), add_bos, true))
    }
}

#[derive(Clone)]
enum LoadState {
    /// Not in memory; the next request loads it.
    Unloaded,
    Loading,
    Ready(Arc<Instance>),
    /// The last load found no room under the memory budget; the next
    /// request tries again.
    NoRoom(ReserveError),
    Failed(EngineError),
}

/// One load of the model: what requests need to reach its engine thread.
/// The thread ends (and the memory is given back) once the last of these
/// is dropped and its sequences have finished.
struct Instance {
    prompter: Arc<Prompter>,
    jobs: SyncSender<Job>,
    reservation: Arc<Reservation>,
}

/// Loads, unloads and what requests the model is serving.
#[derive(Default)]
struct Activity {
    /// Requests between their arrival and the end of their answer.
    in_flight: usize,
    /// Bumped each time the model becomes idle, so that an idle timer
    /// knows whether the model has been used since it was set.
    idle_generation: u64,
}

#[derive(Default)]
struct LifecycleCounters {
    loads: AtomicU64,
    unloads_idle: AtomicU64,
    unloads_memory: AtomicU64,
    unloads_admin: AtomicU64,
    /// The estimated footprint, once estimated (0 before).
    footprint: AtomicU64,
}

/// The model and everything shared between its handles, its requests and
/// the memory budget.
struct Core {
    config: EngineConfig,
    budget: MemoryBudget,
    state: watch::Sender<LoadState>,
    activity: Mutex<Activity>,
    load: Arc<EngineLoad>,
    counters: LifecycleCounters,
    this: Weak<Core>,
}

/// An in-process GGUF chat model. Cheap to share behind an `Arc`; dropping
/// the last handle lets the engine thread finish its sequences and exit.
///
/// The model is loaded when first needed (or by [`LocalEngine::load`]),
/// within a [`MemoryBudget`] shared with the process's other local models,
/// and unloaded after its `keep_alive`, when another model needs its room,
/// or on [`LocalEngine::unload`].
pub struct LocalEngine {
    core: Arc<Core>,
}

impl LocalEngine {
    /// Starts loading the model at once, with no memory budget. Use
    /// [`LocalEngine::wait_ready`] to know when it can serve; requests sent
    /// before then wait for the load (up to 30 s). Needs a tokio runtime.
    pub fn start(config: EngineConfig) -> Result<Self, EngineError> {
        let engine = Self::new(config, MemoryBudget::default())?;
        engine.core.begin_load();
        Ok(engine)
    }

    /// The model, not loaded yet: the first request (or
    /// [`LocalEngine::load`]) loads it within `budget`.
    pub fn new(config: EngineConfig, budget: MemoryBudget) -> Result<Self, EngineError> {
        if config.parallel == 0 || config.context_length < 16 || config.batch_size < config.parallel
        {
            return Err(EngineError::Config(format!(
                "need parallel >= 1, context_length >= 16 and batch_size >= parallel (got {}, {}, {})",
                config.parallel, config.context_length, config.batch_size
            )));
        }
        if !config.model_path.is_file() {
            return Err(EngineError::ModelMissing(config.model_path.clone()));
        }
        let (state, _) = watch::channel(LoadState::Unloaded);
        let core = Arc::new_cyclic(|this| Core {
            config,
            budget,
            state,
            activity: Mutex::new(Activity::default()),
            load: Arc::new(EngineLoad::default()),
            counters: LifecycleCounters::default(),
            this: this.clone(),
        });
        Ok(Self { core })
    }

    /// Loads the model if it is not (waiting for room under the budget),
    /// or reports why it failed.
    pub async fn wait_ready(&self) -> Result<(), EngineError> {
        self.core.begin_load();
        let mut state = self.core.state.subscribe();
        let settled = state
            .wait_for(|s| !matches!(s, LoadState::Loading))
            .await
            .map_err(|_| EngineError::Stopped)?;
        match &*settled {
            LoadState::Failed(error) => Err(error.clone()),
            LoadState::NoRoom(error) => Err(EngineError::NoRoom(error.clone())),
            _ => Ok(()),
        }
    }

    /// Loads the model now (an operator's request), within the budget.
    pub async fn load(&self) -> Result<ModelStatus, BackendError> {
        self.core.instance().await?;
        self.core.schedule_idle_unload();
        Ok(self.core.status())
    }

    /// Unloads the model now; requests already running finish first, and
    /// its memory is given back when they have.
    pub fn unload(&self) -> ModelStatus {
        self.core.unload(UnloadReason::Admin, true);
        self.core.status()
    }

    /// Where the model is: loaded, loading or not, and its footprint.
    pub fn status(&self) -> ModelStatus {
        self.core.status()
    }

    async fn start_stream(&self, request: ChatRequest) -> Result<ChatStream, BackendError> {
        let serving = Serving::begin(self.core.clone());
        let instance = self.core.instance().await?;
        instance.reservation.touch();
        let prompter = instance.prompter.clone();
        prompter.check(&request)?;
        let config = &self.core.config;
        let enqueued_at = Instant::now();
        let tools = if request.tool_choice == Some(ToolChoice::None) {
            Vec::new()
        } else {
            request.tools
        };
        let parse_tool_calls = !tools.is_empty();
        let messages = with_default_system(config, request.messages);
        let format = request.response_format;
        let choice = request.tool_choice;
        // The grammar is compiled here too, off the engine thread: a large
        // schema's grammar takes a while to build.
        let (prompt, grammar) = tokio::task::spawn_blocking(move || {
            let grammar = prompter.answer_grammar(&tools, choice.as_ref(), format.as_ref())?;
            let prompt = prompter.prompt(messages, &tools)?;
            Ok::<_, BackendError>((prompt, grammar))
        })
        .await
        .map_err(|e| BackendError::internal(format!("tokenizer task failed: {e}")))??;

        let context_length = config.context_length as usize;
        if prompt.len() >= context_length {
            return Err(BackendError::invalid_request(format!(
                "the prompt is {} tokens after the chat template, but this model's context window is {} tokens and must leave room for at least one generated token; shorten the messages",
                prompt.len(),
                context_length
            ))
            .with_param("messages")
            .with_code("context_length_exceeded"));
        }
        let room = u32::try_from(context_length - prompt.len()).unwrap_or(u32::MAX);
        let max_tokens = request
            .max_tokens
            .or(config.default_max_tokens)
            .map_or(room, |m| m.clamp(1, room));

        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let job = Job {
            prompt,
            max_tokens,
            sampling: request.sampling.or_defaults(&config.default_sampling),
            stop: request.stop,
            grammar,
            repetition_guard: config.repetition_guard,
            events: events_tx,
            enqueued_at,
            span: tracing::Span::current(),
        };
        let load = &self.core.load;
        // Counted before it is sent: the engine thread may take it at once.
        load.queued.fetch_add(1, Ordering::Relaxed);
        let sent = instance.jobs.try_send(job);
        if sent.is_err() {
            load.queued.fetch_sub(1, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(BackendError::new(
                    ErrorKind::Overloaded,
                    format!(
                        "the local engine is at capacity ({} running, {} waiting); retry shortly",
                        config.parallel, config.queue_capacity
                    ),
                )
                .with_retry_after(Some(BUSY_RETRY_AFTER)));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(BackendError::internal("the local engine has stopped"));
            }
        }
        // The request counts as served until its answer stream is dropped.
        let stream = futures::stream::poll_fn(move |cx| {
            let _serving = &serving;
            events_rx.poll_recv(cx)
        });
        if !parse_tool_calls {
            return Ok(stream.boxed());
        }
        let mut parser = ToolCallParser::default();
        let parsed = stream.flat_map(move |event| {
            let events = match event {
                Ok(StreamEvent::Delta(text)) => parser.push(&text),
                Ok(StreamEvent::Finish(reason)) => parser.finish(reason),
                other => return futures::stream::iter(vec![other]),
            };
            futures::stream::iter(events.into_iter().map(Ok).collect::<Vec<_>>())
        });
        Ok(parsed.boxed())
    }
}

/// `messages` with the model's default system prompt in front when they
/// bring none.
fn with_default_system(config: &EngineConfig, mut messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
    if let Some(system) = &config.default_system_prompt
        && !messages.iter().any(|m| m.role == Role::System)
    {
        messages.insert(0, ChatMessage::new(Role::System, system.clone()));
    }
    messages
}

/// A request the model is serving, from its arrival until its answer is
/// dropped: a model serving one is never unloaded to make room.
struct Serving {
    core: Arc<Core>,
}

impl Serving {
    fn begin(core: Arc<Core>) -> Self {
        core.activity().in_flight += 1;
        Self { core }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let idle = {
            let mut activity = self.core.activity();
            activity.in_flight -= 1;
            activity.in_flight == 0
        };
        if let LoadState::Ready(instance) = &*self.core.state.borrow() {
            instance.reservation.touch();
        }
        if idle {
            self.core.budget.idle_now();
            self.core.schedule_idle_unload();
        }
    }
}

impl Core {
    fn activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        // Counters updated in single statements: never left half written.
        self.activity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a load unless the model is loaded, loading or failed.
    fn begin_load(&self) {
        let started = self.state.send_if_modified(|state| {
            if matches!(state, LoadState::Unloaded | LoadState::NoRoom(_)) {
                *state = LoadState::Loading;
                true
            } else {
                false
            }
        });
        if !started {
            return;
        }
        let (Some(core), Ok(runtime)) =
            (self.this.upgrade(), tokio::runtime::Handle::try_current())
        else {
            // Outside a runtime (or while being dropped): the next request
            // loads the model.
            self.state.send_replace(LoadState::Unloaded);
            return;
        };
        // A task of its own: a request that gives up waiting must not
        // abandon a load half done.
        runtime.spawn(async move {
            let settled = core.load_instance().await;
            core.state.send_replace(settled);
        });
    }

    /// Estimates, reserves memory, and starts the engine thread; the state
    /// the model is in afterwards.
    async fn load_instance(&self) -> LoadState {
        let footprint = match self.footprint().await {
            Ok(bytes) => bytes,
            Err(error) => {
                error!(%error, path = %self.config.model_path.display(), "local model failed to load");
                return LoadState::Failed(error);
            }
        };
        let evictable: Weak<dyn Evictable> = self.this.clone();
        let reservation = match self.budget.reserve(evictable, footprint, LOAD_WAIT).await {
            Ok(reservation) => Arc::new(reservation),
            Err(error) => {
                warn!(model = %self.config.name, %error, "no room to load the model");
                return LoadState::NoRoom(error);
            }
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let config = self.config.clone();
        let load = self.load.clone();
        let thread_reservation = reservation.clone();
        let spawned = std::thread::Builder::new()
            .name("switchyard-engine".into())
            .spawn(move || run_engine_thread(config, ready_tx, load, thread_reservation));
        if let Err(error) = spawned {
            return LoadState::Failed(EngineError::Backend(format!(
                "cannot spawn the engine thread: {error}"
            )));
        }
        match ready_rx.await {
            Ok(Ok((prompter, jobs))) => {
                self.counters.loads.fetch_add(1, Ordering::Relaxed);
                reservation.evictable();
                LoadState::Ready(Arc::new(Instance {
                    prompter,
                    jobs,
                    reservation,
                }))
            }
            Ok(Err(error)) => LoadState::Failed(error),
            Err(_) => LoadState::Failed(EngineError::Stopped),
        }
    }

    /// The model's estimated footprint, read from its file once.
    async fn footprint(&self) -> Result<u64, EngineError> {
        let known = self.counters.footprint.load(Ordering::Relaxed);
        if known > 0 {
            return Ok(known);
        }
        let config = self.config.clone();
        let bytes = tokio::task::spawn_blocking(move || estimate_footprint(&config))
            .await
            .map_err(|e| EngineError::Backend(format!("footprint estimate failed: {e}")))??;
        self.counters.footprint.store(bytes, Ordering::Relaxed);
        Ok(bytes)
    }

    /// The loaded model, loading it (or waiting for its load) for up to
    /// [`LOAD_WAIT`].
    async fn instance(&self) -> Result<Arc<Instance>, BackendError> {
        let deadline = tokio::time::Instant::now() + LOAD_WAIT;
        let mut state = self.state.subscribe();
        // A load that settles as "no room" is the answer to requests that
        // waited for it; one that was already there is retried.
        let mut tried = false;
        loop {
            let current = state.borrow_and_update().clone();
            match current {
                LoadState::Ready(instance) => return Ok(instance),
                LoadState::Failed(error) => {
                    return Err(BackendError::internal(format!(
                        "the model failed to load: {error}"
                    )));
                }
                LoadState::NoRoom(error) if tried => return Err(no_room(&error)),
                LoadState::Unloaded | LoadState::NoRoom(_) => {
                    tried = true;
                    self.begin_load();
                }
                LoadState::Loading => tried = true,
            }
            match tokio::time::timeout_at(deadline, state.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(BackendError::internal("the local engine has stopped")),
                Err(_) => {
                    return Err(BackendError::new(
                        ErrorKind::Overloaded,
                        "the model is still loading; retry shortly",
                    )
                    .with_retry_after(Some(BUSY_RETRY_AFTER)));
                }
            }
        }
    }

    /// Unloads the model if it is loaded and (unless `force`) idle; says
    /// whether it did.
    fn unload(&self, reason: UnloadReason, force: bool) -> bool {
        // Decided under the activity lock: a request that arrives now
        // either counted itself first (and the model stays) or finds the
        // model unloaded (and loads it again).
        let activity = self.activity();
        if !force && activity.in_flight > 0 {
            return false;
        }
        let unloaded = self.state.send_if_modified(|state| {
            if let LoadState::Ready(instance) = state {
                instance.reservation.unloading();
                *state = LoadState::Unloaded;
                true
            } else {
                false
            }
        });
        drop(activity);
        if unloaded {
            let counter = match reason {
                UnloadReason::Idle => &self.counters.unloads_idle,
                UnloadReason::Memory => &self.counters.unloads_memory,
                UnloadReason::Admin => &self.counters.unloads_admin,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            info!(model = %self.config.name, reason = reason.as_str(), "local model unloaded");
        }
        unloaded
    }

    /// Unloads the model once it has been idle for its `keep_alive`.
    fn schedule_idle_unload(&self) {
        let KeepAlive::For(idle_for) = self.config.keep_alive else {
            return;
        };
        let generation = {
            let mut activity = self.activity();
            if activity.in_flight > 0 {
                return;
            }
            activity.idle_generation += 1;
            activity.idle_generation
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let core = self.this.clone();
        runtime.spawn(async move {
            tokio::time::sleep(idle_for).await;
            let Some(core) = core.upgrade() else {
                return;
            };
            // Used since: a later timer decides.
            if core.activity().idle_generation == generation {
                core.unload(UnloadReason::Idle, false);
            }
        });
    }

    fn status(&self) -> ModelStatus {
        let (state, memory_bytes) = match &*self.state.borrow() {
            LoadState::Unloaded | LoadState::NoRoom(_) => (Residence::Unloaded, 0),
            LoadState::Loading => (Residence::Loading, 0),
            LoadState::Ready(instance) => (Residence::Loaded, instance.reservation.bytes()),
            LoadState::Failed(_) => (Residence::Failed, 0),
        };
        ModelStatus {
            state,
            memory_bytes,
            loads: self.counters.loads.load(Ordering::Relaxed),
            unloads_idle: self.counters.unloads_idle.load(Ordering::Relaxed),
            unloads_memory: self.counters.unloads_memory.load(Ordering::Relaxed),
            unloads_admin: self.counters.unloads_admin.load(Ordering::Relaxed),
        }
    }
}

impl Evictable for Core {
    fn unload_if_idle(&self, reason: UnloadReason) -> bool {
        self.unload(reason, false)
    }

    fn name(&self) -> &str {
        &self.config.name
    }
}

fn no_room(error: &ReserveError) -> BackendError {
    match error {
        ReserveError::TooLarge { .. } => BackendError::internal(format!(
            "the model cannot be loaded: {error}; raise `max_memory` in [engine]"
        )),
        ReserveError::Busy { .. } => BackendError::new(
            ErrorKind::Overloaded,
            format!("the model cannot be loaded now: {error}; retry shortly"),
        )
        .with_retry_after(Some(BUSY_RETRY_AFTER)),
    }
}

impl ChatBackend for LocalEngine {
    fn info(&self) -> BackendInfo {
        let upstream_model = match &*self.core.state.borrow() {
            LoadState::Ready(instance) => instance.prompter.model_name.clone(),
            _ => file_stem(&self.core.config.model_path),
        };
        BackendInfo {
            kind: "local",
            upstream_model,
            owned_by: "switchyard".into(),
        }
    }

    /// A model that failed to load cannot serve, nor can a preloaded one
    /// before its first load; any other loads on its first request.
    fn is_ready(&self) -> bool {
        match &*self.core.state.borrow() {
            LoadState::Failed(_) => false,
            LoadState::Ready(_) => true,
            _ => !self.core.config.preload || self.core.counters.loads.load(Ordering::Relaxed) > 0,
        }
    }

    fn load(&self) -> Option<BackendLoad> {
        let load = &self.core.load;
        Some(BackendLoad {
            queued: load.queued.load(Ordering::Relaxed),
            running: load.running.load(Ordering::Relaxed),
            prompt_tokens: load.prompt_tokens.load(Ordering::Relaxed),
            cached_prompt_tokens: load.cached_prompt_tokens.load(Ordering::Relaxed),
            constrained_requests: load.constrained.load(Ordering::Relaxed),
            generated_tokens: load.generated_tokens.load(Ordering::Relaxed),
            residency: Some(self.core.status()),
        })
    }

    fn residency(&self) -> Option<&dyn LocalModelControl> {
        Some(self)
    }

    /// Counted with the model's own template and tokenizer, when it is
    /// loaded (a model is not loaded only to count).
    fn count_prompt_tokens(&self, request: &ChatRequest) -> BoxFuture<'_, Option<u64>> {
        let prompter = match &*self.core.state.borrow() {
            LoadState::Ready(instance) => Some(instance.prompter.clone()),
            _ => None,
        };
        let messages = with_default_system(&self.core.config, request.messages.clone());
        let tools = if request.tool_choice == Some(ToolChoice::None) {
            Vec::new()
        } else {
            request.tools.clone()
        };
        Box::pin(async move {
            let prompter = prompter?;
            tokio::task::spawn_blocking(move || prompter.prompt(messages, &tools).ok())
                .await
                .ok()
                .flatten()
                .map(|tokens| tokens.len() as u64)
        })
    }

    fn chat_stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<ChatStream, BackendError>> {
        Box::pin(self.start_stream(request))
    }
}

impl LocalModelControl for LocalEngine {
    fn status(&self) -> ModelStatus {
        self.core.status()
    }

    fn load_now(&self) -> BoxFuture<'_, Result<ModelStatus, BackendError>> {
        Box::pin(self.load())
    }

    fn unload_now(&self) -> ModelStatus {
        self.unload()
    }
}

fn file_stem(path: &std::path::Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// llama.cpp's global state may be initialised once per process.
fn llama_backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Backend(e.clone()))
}

/// What the engine thread hands back once the model is loaded: the
/// prompter and the queue its scheduler reads.
type Loaded = Result<(Arc<Prompter>, SyncSender<Job>), EngineError>;

/// Loads the model, reports it, and runs the scheduler until every handle
/// to its queue is gone; the model, its context and its memory reservation
/// are dropped when this returns.
fn run_engine_thread(
    config: EngineConfig,
    ready: tokio::sync::oneshot::Sender<Loaded>,
    load: Arc<EngineLoad>,
    reservation: Arc<Reservation>,
) {
    let started = Instant::now();
    let path = config.model_path.clone();
    let fail = move |ready: tokio::sync::oneshot::Sender<Loaded>, error: EngineError| {
        error!(%error, path = %path.display(), "local model failed to load");
        let _ = ready.send(Err(error));
    };
    let backend = match llama_backend() {
        Ok(backend) => backend,
        Err(error) => return fail(ready, error),
    };
    let model_params = LlamaModelParams::default().with_n_gpu_layers(config.gpu_layers);
    let model = match LlamaModel::load_from_file(backend, &config.model_path, &model_params) {
        Ok(model) => Arc::new(model),
        Err(error) => {
            return fail(
                ready,
                EngineError::Load {
                    path: config.model_path.clone(),
                    reason: error.to_string(),
                },
            );
        }
    };
    let template = match load_template(&model) {
        Ok(template) => template,
        Err(error) => return fail(ready, error),
    };
    let threads = config.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get() as i32),
        |t| i32::try_from(t).unwrap_or(1),
    );
    // Each sequence gets its own `context_length` slice of the KV cache, so a
    // long conversation never evicts another request's context.
    let total_context = config.context_length.saturating_mul(config.parallel);
    let ctx_params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(total_context))
        .with_n_seq_max(config.parallel)
        .with_kv_unified(false)
        .with_n_batch(config.batch_size)
        .with_n_ubatch(config.batch_size)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        .with_flash_attention_policy(if config.flash_attention {
            FLASH_ATTENTION_AUTO
        } else {
            FLASH_ATTENTION_OFF
        });
    let ctx = match model.new_context(backend, ctx_params) {
        Ok(ctx) => ctx,
        Err(error) => return fail(ready, EngineError::Context(error.to_string())),
    };
    let model_name = model
        .meta_val_str("general.name")
        .unwrap_or_else(|_| file_stem(&config.model_path));
    info!(
        model = %config.name,
        gguf_name = %model_name,
        path = %config.model_path.display(),
        parameters = model.n_params(),
        context_length = config.context_length,
        parallel = config.parallel,
        threads,
        reserved_bytes = reservation.bytes(),
        load_ms = started.elapsed().as_millis() as u64,
        "local model loaded"
    );
    let (jobs_tx, jobs_rx) = sync_channel(config.queue_capacity);
    let prompter = Arc::new(Prompter {
        model: model.clone(),
        template,
        model_name,
    });
    if ready.send(Ok((prompter, jobs_tx))).is_err() {
        // Nobody is waiting for this load any more (the engine was dropped).
        return;
    }
    let limits = SchedulerLimits {
        context_length: config.context_length,
        batch_size: config.batch_size,
        prompt_cache: config.prompt_cache,
    };
    Scheduler::new(&model, ctx, config.parallel, limits, load).run(jobs_rx);
    info!(model = %config.name, "engine thread stopped");
}

/// Bytes the model will hold once loaded, from its file and its
/// hyperparameters (read from the GGUF's metadata with llama.cpp's
/// vocabulary-only load, which skips the weights): the weights as stored,
/// the KV cache of every sequence (f16 keys and values), and llama.cpp's
/// compute buffer, dominated without flash attention by one batch's
/// attention scores against a full window and its logits.
fn estimate_footprint(config: &EngineConfig) -> Result<u64, EngineError> {
    let weights = std::fs::metadata(&config.model_path)
        .map_err(|_| EngineError::ModelMissing(config.model_path.clone()))?
        .len();
    let backend = llama_backend()?;
    let params = LlamaModelParams::default().with_vocab_only(true);
    let model =
        LlamaModel::load_from_file(backend, &config.model_path, &params).map_err(|error| {
            EngineError::Load {
                path: config.model_path.clone(),
                reason: error.to_string(),
            }
        })?;
    // A vocabulary-only load fills the metadata, not the hyperparameters.
    let arch = model
        .meta_val_str("general.architecture")
        .unwrap_or_default();
    let number = |key: &str| {
        model
            .meta_val_str(&format!("{arch}.{key}"))
            .ok()
            .and_then(|value| value.trim().parse::<u64>().ok())
    };
    let embedding = number("embedding_length").unwrap_or(4096);
    let layers = number("block_count").unwrap_or(32);
    let heads = number("attention.head_count").unwrap_or(32).max(1);
    // Without grouped-query attention every head has its own keys and
    // values (also the safe guess when the count is per layer).
    let kv_heads = number("attention.head_count_kv").unwrap_or(heads);
    let head_dim = number("attention.key_length").unwrap_or(embedding / heads);
    let tokens = u64::from(config.context_length) * u64::from(config.parallel);
    let kv_cache = layers * 2 * head_dim * kv_heads * 2 * tokens;
    let vocabulary = u64::try_from(model.n_vocab()).unwrap_or(0);
    let batch = u64::from(config.batch_size);
    let compute = batch * u64::from(config.context_length) * heads * 4
        + batch * (vocabulary + 8 * embedding) * 4;
    Ok(weights + kv_cache + compute)
}

fn load_template(model: &LlamaModel) -> Result<ChatTemplate, EngineError> {
    let vocab = model.vocab();
    let token_text = |token| {
        vocab
            .text(token)
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let bos = token_text(vocab.bos());
    let eos = token_text(vocab.eos());
    let template = match model.meta_val_str("tokenizer.chat_template") {
        Ok(source) => ChatTemplate::new(source, bos, eos),
        Err(_) => {
            tracing::warn!("the GGUF has no chat template; using ChatML");
            ChatTemplate::chatml(&bos, &eos)
        }
    };
    template.map_err(|e| EngineError::Template(Arc::new(e)))
}
