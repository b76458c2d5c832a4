//! [`LocalEngine`]: the [`ChatBackend`] in front of the engine thread.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};
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
    ErrorKind, ResponseFormat, Role, SamplingParams, StreamEvent, ToolChoice, ToolDefinition,
};
use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use crate::grammar::{grammar_for, grammar_sampler, lazy_grammar_sampler};
use crate::scheduler::{EngineLoad, Job, Scheduler, SchedulerLimits};
use crate::template::{ChatTemplate, TemplateError};
use crate::tool_prompt::{CALL_OPEN, CallGrammar, call_grammar, describe_tools};
use crate::tools::ToolCallParser;

/// llama.cpp's `LLAMA_FLASH_ATTN_TYPE_DISABLED` and `_AUTO`.
const FLASH_ATTENTION_OFF: i32 = 0;
const FLASH_ATTENTION_AUTO: i32 = -1;

/// How long a request for a model that is still loading waits for it
/// before it is answered 503: a model loads in seconds, and a request that
/// arrives just after start-up should be served, not refused.
const LOAD_WAIT: Duration = Duration::from_secs(30);

/// How long a client should wait before retrying when the engine is busy.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How to run one local model.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
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
}

impl EngineConfig {
    /// Defaults for `model_path`: a 2,048-token window, 4 parallel sequences.
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: model_path.into(),
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
    Loading,
    Ready(Arc<Prompter>),
    Failed(EngineError),
}

/// An in-process GGUF chat model. Cheap to share behind an `Arc`; dropping
/// the last handle lets the engine thread finish its sequences and exit.
pub struct LocalEngine {
    config: EngineConfig,
    state: watch::Receiver<LoadState>,
    jobs: SyncSender<Job>,
    load: Arc<EngineLoad>,
}

impl LocalEngine {
    /// Starts the engine thread, which loads the model in the background.
    /// Use [`LocalEngine::wait_ready`] to know when it can serve; requests
    /// sent before then wait for the load (up to 30 s).
    pub fn start(config: EngineConfig) -> Result<Self, EngineError> {
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
        let (state_tx, state_rx) = watch::channel(LoadState::Loading);
        let (jobs_tx, jobs_rx) = sync_channel(config.queue_capacity);
        let thread_config = config.clone();
        let load = Arc::new(EngineLoad::default());
        let thread_load = load.clone();
        std::thread::Builder::new()
            .name("switchyard-engine".into())
            .spawn(move || run_engine_thread(thread_config, state_tx, jobs_rx, thread_load))
            .map_err(|e| EngineError::Backend(format!("cannot spawn the engine thread: {e}")))?;
        Ok(Self {
            config,
            state: state_rx,
            jobs: jobs_tx,
            load,
        })
    }

    /// Waits until the model is loaded, or reports why it failed.
    pub async fn wait_ready(&self) -> Result<(), EngineError> {
        let mut state = self.state.clone();
        let settled = state
            .wait_for(|s| !matches!(s, LoadState::Loading))
            .await
            .map_err(|_| EngineError::Stopped)?;
        match &*settled {
            LoadState::Failed(error) => Err(error.clone()),
            _ => Ok(()),
        }
    }

    fn prompter(&self) -> Result<Arc<Prompter>, BackendError> {
        match &*self.state.borrow() {
            LoadState::Ready(prompter) => Ok(prompter.clone()),
            LoadState::Loading => Err(BackendError::new(
                ErrorKind::Overloaded,
                "the model is still loading; retry shortly",
            )
            .with_retry_after(Some(BUSY_RETRY_AFTER))),
            LoadState::Failed(error) => Err(BackendError::internal(format!(
                "the model failed to load: {error}"
            ))),
        }
    }

    /// The prompter once the model is loaded, waiting up to [`LOAD_WAIT`].
    async fn ready_prompter(&self) -> Result<Arc<Prompter>, BackendError> {
        let mut state = self.state.clone();
        // Timing out or a stopped thread leave the state as it is, and
        // `prompter` says which it is.
        let _ = tokio::time::timeout(
            LOAD_WAIT,
            state.wait_for(|s| !matches!(s, LoadState::Loading)),
        )
        .await;
        self.prompter()
    }

    async fn start_stream(&self, request: ChatRequest) -> Result<ChatStream, BackendError> {
        let prompter = self.ready_prompter().await?;
        prompter.check(&request)?;
        let enqueued_at = Instant::now();
        let tools = if request.tool_choice == Some(ToolChoice::None) {
            Vec::new()
        } else {
            request.tools
        };
        let parse_tool_calls = !tools.is_empty();
        let mut messages = request.messages;
        if let Some(system) = &self.config.default_system_prompt
            && !messages.iter().any(|m| m.role == Role::System)
        {
            messages.insert(0, ChatMessage::new(Role::System, system.clone()));
        }
        let format = request.response_format;
        let choice = request.tool_choice;
        // The grammar is compiled here too, off the engine thread: a large
        // schema's grammar takes a while to build.
        let (prompt, grammar) = tokio::task::spawn_blocking(move || {
            let grammar = prompter.answer_grammar(&tools, choice.as_ref(), format.as_ref())?;
            let prompt = if prompter.describes_tools(&tools) {
                describe_tools(&mut messages, &tools);
                prompter.tokenize(&messages, &[])?
            } else {
                prompter.tokenize(&messages, &tools)?
            };
            Ok::<_, BackendError>((prompt, grammar))
        })
        .await
        .map_err(|e| BackendError::internal(format!("tokenizer task failed: {e}")))??;

        let context_length = self.config.context_length as usize;
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
            .or(self.config.default_max_tokens)
            .map_or(room, |m| m.clamp(1, room));

        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let job = Job {
            prompt,
            max_tokens,
            sampling: request.sampling.or_defaults(&self.config.default_sampling),
            stop: request.stop,
            grammar,
            repetition_guard: self.config.repetition_guard,
            events: events_tx,
            enqueued_at,
            span: tracing::Span::current(),
        };
        // Counted before it is sent: the engine thread may take it at once.
        self.load.queued.fetch_add(1, Ordering::Relaxed);
        let sent = self.jobs.try_send(job);
        if sent.is_err() {
            self.load.queued.fetch_sub(1, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(BackendError::new(
                    ErrorKind::Overloaded,
                    format!(
                        "the local engine is at capacity ({} running, {} waiting); retry shortly",
                        self.config.parallel, self.config.queue_capacity
                    ),
                )
                .with_retry_after(Some(BUSY_RETRY_AFTER)));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(BackendError::internal("the local engine has stopped"));
            }
        }
        let stream = futures::stream::poll_fn(move |cx| events_rx.poll_recv(cx));
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

impl ChatBackend for LocalEngine {
    fn info(&self) -> BackendInfo {
        let upstream_model = match &*self.state.borrow() {
            LoadState::Ready(prompter) => prompter.model_name.clone(),
            _ => file_stem(&self.config.model_path),
        };
        BackendInfo {
            kind: "local",
            upstream_model,
            owned_by: "switchyard".into(),
        }
    }

    fn is_ready(&self) -> bool {
        matches!(&*self.state.borrow(), LoadState::Ready(_))
    }

    fn load(&self) -> Option<BackendLoad> {
        Some(BackendLoad {
            queued: self.load.queued.load(Ordering::Relaxed),
            running: self.load.running.load(Ordering::Relaxed),
            prompt_tokens: self.load.prompt_tokens.load(Ordering::Relaxed),
            cached_prompt_tokens: self.load.cached_prompt_tokens.load(Ordering::Relaxed),
            constrained_requests: self.load.constrained.load(Ordering::Relaxed),
            generated_tokens: self.load.generated_tokens.load(Ordering::Relaxed),
        })
    }

    fn chat_stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<ChatStream, BackendError>> {
        Box::pin(self.start_stream(request))
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

fn run_engine_thread(
    config: EngineConfig,
    state: watch::Sender<LoadState>,
    jobs: std::sync::mpsc::Receiver<Job>,
    load: Arc<EngineLoad>,
) {
    let started = Instant::now();
    let fail = |error: EngineError| {
        error!(%error, path = %config.model_path.display(), "local model failed to load");
        state.send_replace(LoadState::Failed(error));
    };
    let backend = match llama_backend() {
        Ok(backend) => backend,
        Err(error) => return fail(error),
    };
    let model_params = LlamaModelParams::default().with_n_gpu_layers(config.gpu_layers);
    let model = match LlamaModel::load_from_file(backend, &config.model_path, &model_params) {
        Ok(model) => Arc::new(model),
        Err(error) => {
            return fail(EngineError::Load {
                path: config.model_path.clone(),
                reason: error.to_string(),
            });
        }
    };
    let template = match load_template(&model) {
        Ok(template) => template,
        Err(error) => return fail(error),
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
        Err(error) => return fail(EngineError::Context(error.to_string())),
    };
    let model_name = model
        .meta_val_str("general.name")
        .unwrap_or_else(|_| file_stem(&config.model_path));
    info!(
        model = %model_name,
        path = %config.model_path.display(),
        parameters = model.n_params(),
        context_length = config.context_length,
        parallel = config.parallel,
        threads,
        load_ms = started.elapsed().as_millis() as u64,
        "local model loaded"
    );
    state.send_replace(LoadState::Ready(Arc::new(Prompter {
        model: model.clone(),
        template,
        model_name,
    })));
    let limits = SchedulerLimits {
        context_length: config.context_length,
        batch_size: config.batch_size,
        prompt_cache: config.prompt_cache,
    };
    Scheduler::new(&model, ctx, config.parallel, limits, load).run(jobs);
    info!(path = %config.model_path.display(), "engine thread stopped");
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
