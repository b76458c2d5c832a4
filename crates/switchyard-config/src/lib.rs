//! Switchyard's configuration file: a TOML document with `${ENV_VAR}`
//! interpolation, parsed into typed settings and validated up front, so that
//! a mistake stops start-up with a message naming the file, the field and
//! the problem instead of failing on the first request.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//!
//! [models.smollm2-135m-instruct]
//! backend = "local"
//!
//! [models.gpt-4o-mini]
//! backend = "openai"
//! base_url = "https://api.openai.com/v1"
//! api_key = "${OPENAI_API_KEY}"
//! ```

mod anomalies;
mod code_assistants;
mod context;
mod engine;
mod guardrails;
mod interpolate;
mod listener;
mod retrieval;
mod routing;
mod tls;
mod tools;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use anomalies::AnomaliesConfig;
pub use code_assistants::{CodeAssistantConfig, CodeCheck, MAX_REPAIRS};
pub use context::{ContextConfig, ConversationsConfig, FitMode};
pub use engine::{EngineSettings, KeepAlive};
pub use guardrails::{
    CheckAction, CheckConfig, CheckKind, CheckSide, GuardrailsConfig, PolicyConfig,
};
pub use interpolate::{InterpolationError, interpolate};
pub use listener::ListenerConfig;
pub use retrieval::{AssistantConfig, RetrievalConfig};
pub use routing::{
    CacheConfig, CascadeConfig, DEFAULT_SEMANTIC_CACHE_THRESHOLD, DEFAULT_SIMILARITY_THRESHOLD,
    DeploymentRef, EnsembleConfig, FailureKind, ResilienceConfig, RouteConfig, RuleConfig,
    SemanticCacheConfig, Strategy,
};
pub use tls::{ClientAuth, TlsConfig};
pub use tools::{
    BUILTIN_TOOLS, HttpFetchConfig, McpServerConfig, RunCodeConfig, SandboxLanguage, ToolsConfig,
};

/// The chat model served when no configuration file is given.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// The embedding model served when no configuration file is given.
pub const DEFAULT_EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Threads that run the async runtime (HTTP, routing, upstream I/O).
    /// `None` picks one fewer than the machine's cores, leaving a core for
    /// the kernel's network work and the model threads.
    pub worker_threads: Option<usize>,
    /// Public model name → how to serve it.
    pub models: BTreeMap<String, ModelConfig>,
    /// Public names served by groups of models.
    pub routes: BTreeMap<String, RouteConfig>,
    /// Circuit breakers and the retry budget.
    pub resilience: ResilienceConfig,
    /// The response cache.
    pub cache: CacheConfig,
    /// Where tenants, keys, the ledger and the audit trail live:
    /// `sqlite://PATH` or `postgres://…`. `None`: a SQLite file in the
    /// data folder.
    pub database_url: Option<String>,
    /// Redis for the counters several instances share (rate limits,
    /// concurrency, spend). `None`: counted in this process.
    pub redis_url: Option<String>,
    /// Keys, limits, budgets, ledger and audit.
    pub governance: GovernanceConfig,
    /// Logs, metrics and trace export.
    pub telemetry: TelemetryConfig,
    /// Collections, chunking and grounded assistants.
    pub retrieval: RetrievalConfig,
    /// Policies on what goes in to models and what comes out.
    pub guardrails: GuardrailsConfig,
    /// What local chat models share (their memory budget).
    pub engine: EngineSettings,
    /// How conversations longer than a model's context window are fitted.
    pub context: ContextConfig,
    /// What is kept of stored responses and conversations.
    pub conversations: ConversationsConfig,
    /// Drift and anomaly alarms per tenant × model.
    pub anomalies: AnomaliesConfig,
    /// HTTPS on the listener (`None`: plain HTTP).
    pub tls: Option<TlsConfig>,
    /// Connection limits and timeouts on the listener.
    pub listener: ListenerConfig,
    /// Tools Switchyard runs itself, and the tool loop's limits.
    pub tools: ToolsConfig,
    /// Model names that write code, check it in the sandbox and repair it.
    pub code_assistants: BTreeMap<String, CodeAssistantConfig>,
}

/// The `[telemetry]` table.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` (readable, the default) or `json` (one object per line); the
    /// `--log-format` flag and `SWITCHYARD_LOG_FORMAT` take precedence.
    #[serde(default)]
    pub log_format: Option<LogFormat>,
    /// Where spans are exported over OTLP, e.g. `http://127.0.0.1:4317`
    /// (gRPC) or `http://127.0.0.1:4318` (HTTP). `None`: the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, else no export at all.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `grpc`, `http/protobuf` or `http/json`.
    #[serde(default)]
    pub otlp_protocol: OtlpProtocol,
    /// Headers sent with every export (a collector's API key).
    #[serde(default)]
    pub otlp_headers: BTreeMap<String, String>,
    /// `service.name` of the exported spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of new traces sampled, 0 to 1; a client's sampling decision in
    /// its `traceparent` is followed.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Milliseconds between span batch exports.
    #[serde(default = "default_export_interval_ms")]
    pub export_interval_ms: u64,
    /// `GET /metrics` answers without a key even when keys are required.
    #[serde(default)]
    pub public_metrics: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317 by convention).
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies.
    #[serde(rename = "http/json")]
    HttpJson,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: None,
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::default(),
            otlp_headers: BTreeMap::new(),
            service_name: default_service_name(),
            sample_ratio: default_sample_ratio(),
            export_interval_ms: default_export_interval_ms(),
            public_metrics: false,
        }
    }
}

impl std::fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryConfig")
            .field("log_format", &self.log_format)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("otlp_protocol", &self.otlp_protocol)
            // Collector headers usually carry credentials.
            .field(
                "otlp_headers",
                &self.otlp_headers.keys().collect::<Vec<_>>(),
            )
            .field("service_name", &self.service_name)
            .field("sample_ratio", &self.sample_ratio)
            .field("export_interval_ms", &self.export_interval_ms)
            .field("public_metrics", &self.public_metrics)
            .finish()
    }
}

fn default_service_name() -> String {
    "switchyard".to_owned()
}
fn default_sample_ratio() -> f64 {
    1.0
}
fn default_export_interval_ms() -> u64 {
    1_000
}

/// The `[governance]` table.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernanceConfig {
    /// Whether model calls need an API key. Off by default, for the
    /// single-user local setup; the admin API always needs one.
    #[serde(default)]
    pub auth: bool,
    /// The operator's master key (usually `${SWITCHYARD_MASTER_KEY}`).
    #[serde(default)]
    pub master_key: Option<String>,
    /// How long a looked-up key is trusted before it is read again; a
    /// revocation reaches other instances within this time.
    #[serde(default = "default_key_cache_ms")]
    pub key_cache_ms: u64,
    /// How often the usage ledger is written; a crash loses at most the
    /// requests completed in the last interval.
    #[serde(default = "default_ledger_flush_ms")]
    pub ledger_flush_ms: u64,
    /// Keep prompts in the audit trail, masked.
    #[serde(default)]
    pub store_prompts: bool,
    /// Keep answers in the audit trail, masked.
    #[serde(default)]
    pub store_answers: bool,
    /// Accept bearer JWTs from an OpenID Connect issuer.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
}

/// The `[governance.jwt]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` tokens must carry.
    pub issuer: String,
    /// The issuer's key set (JWKS) URL.
    pub jwks_url: String,
    /// The `aud` tokens must carry, if any.
    #[serde(default)]
    pub audience: Option<String>,
    /// The claim naming the tenant id.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// The claim naming the team id, if teams are used.
    #[serde(default)]
    pub team_claim: Option<String>,
    /// The claim naming the role (`admin`, `member`, `read_only`).
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
}

fn default_tenant_claim() -> String {
    "tenant".to_owned()
}
fn default_role_claim() -> String {
    "role".to_owned()
}

impl Default for GovernanceConfig {
    fn default() -> Self {
        Self {
            auth: false,
            master_key: None,
            key_cache_ms: default_key_cache_ms(),
            ledger_flush_ms: default_ledger_flush_ms(),
            store_prompts: false,
            store_answers: false,
            jwt: None,
        }
    }
}

impl std::fmt::Debug for GovernanceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GovernanceConfig")
            .field("auth", &self.auth)
            .field(
                "master_key",
                &self.master_key.as_ref().map(|_| "<redacted>"),
            )
            .field("key_cache_ms", &self.key_cache_ms)
            .field("ledger_flush_ms", &self.ledger_flush_ms)
            .field("store_prompts", &self.store_prompts)
            .field("store_answers", &self.store_answers)
            .field("jwt", &self.jwt)
            .finish()
    }
}

fn default_key_cache_ms() -> u64 {
    5_000
}
fn default_ledger_flush_ms() -> u64 {
    200
}

/// The file's top level, before each model's `backend` picks its schema.
///
/// Models are decoded in a second step rather than as an internally tagged
/// enum: serde buffers tagged content and loses the path of a bad field
/// inside it, and the error must name that field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: usize,
    #[serde(default = "default_shutdown_grace_secs")]
    shutdown_grace_secs: u64,
    #[serde(default)]
    worker_threads: Option<usize>,
    models: Option<BTreeMap<String, toml::Table>>,
    #[serde(default)]
    routes: BTreeMap<String, RouteConfig>,
    #[serde(default)]
    resilience: ResilienceConfig,
    #[serde(default)]
    cache: CacheConfig,
    #[serde(default)]
    database_url: Option<String>,
    #[serde(default)]
    redis_url: Option<String>,
    #[serde(default)]
    governance: GovernanceConfig,
    #[serde(default)]
    telemetry: TelemetryConfig,
    #[serde(default)]
    retrieval: RetrievalConfig,
    #[serde(default)]
    guardrails: GuardrailsConfig,
    #[serde(default)]
    engine: EngineSettings,
    #[serde(default)]
    context: ContextConfig,
    #[serde(default)]
    conversations: ConversationsConfig,
    #[serde(default)]
    anomalies: AnomaliesConfig,
    #[serde(default)]
    tls: Option<TlsConfig>,
    #[serde(default)]
    listener: ListenerConfig,
    #[serde(default)]
    tools: ToolsConfig,
    #[serde(default)]
    code_assistants: BTreeMap<String, CodeAssistantConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            shutdown_grace_secs: default_shutdown_grace_secs(),
            worker_threads: None,
            models: default_models(),
            routes: BTreeMap::new(),
            resilience: ResilienceConfig::default(),
            cache: CacheConfig::default(),
            database_url: None,
            redis_url: None,
            governance: GovernanceConfig::default(),
            telemetry: TelemetryConfig::default(),
            retrieval: RetrievalConfig::default(),
            guardrails: GuardrailsConfig::default(),
            engine: EngineSettings::default(),
            context: ContextConfig::default(),
            conversations: ConversationsConfig::default(),
            anomalies: AnomaliesConfig::default(),
            tls: None,
            listener: ListenerConfig::default(),
            tools: ToolsConfig::default(),
            code_assistants: BTreeMap::new(),
        }
    }
}

/// One model as clients name it, and the backend that serves it (the
/// `backend` key of its table).
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    /// A GGUF chat model run in-process (`backend = "local"`).
    Local(LocalModelConfig),
    /// A sentence-embedding model run in-process (`backend = "local-embedding"`).
    LocalEmbedding(LocalEmbeddingConfig),
    /// A remote provider (`backend = "openai"`, `"azure"`, `"anthropic"`,
    /// `"gemini"` or `"bedrock"`).
    Remote(Provider, Box<RemoteModelConfig>),
}

impl ModelConfig {
    /// Tokens of prompt and answer the model takes, where known: a local
    /// model's `context_length`, a remote model's `context_window`.
    pub fn context_window(&self) -> Option<u32> {
        match self {
            ModelConfig::Local(local) => Some(local.context_length),
            ModelConfig::LocalEmbedding(_) => None,
            ModelConfig::Remote(_, remote) => remote.context_window,
        }
    }

    /// The model's price, when configured.
    pub fn pricing(&self) -> Option<Pricing> {
        match self {
            ModelConfig::Local(local) => local.pricing,
            ModelConfig::LocalEmbedding(_) => None,
            ModelConfig::Remote(_, remote) => remote.pricing,
        }
    }
}

/// The remote providers Switchyard speaks to natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI and every OpenAI-compatible server (see `preset`).
    Openai,
    /// Azure OpenAI: deployment URLs, `api-version`, `api-key` header.
    Azure,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API.
    Gemini,
    /// AWS Bedrock's Converse API.
    Bedrock,
}

impl Provider {
    const ALL: [(&'static str, Provider); 5] = [
        ("openai", Provider::Openai),
        ("azure", Provider::Azure),
        ("anthropic", Provider::Anthropic),
        ("gemini", Provider::Gemini),
        ("bedrock", Provider::Bedrock),
    ];

    /// The `backend` value.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("", |(name, _)| name)
    }
}

/// What a model costs, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    /// Per million prompt tokens.
    pub input: f64,
    /// Per million generated tokens.
    pub output: f64,
    /// Per million prompt tokens read from a prompt cache (default: `input`).
    pub cached_input: Option<f64>,
}

/// Settings of a local GGUF model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalModelConfig {
    /// A GGUF file on disk. Without it, the model comes from the catalogue
    /// (`switchyard models pull`).
    pub path: Option<PathBuf>,
    /// Catalogue name; defaults to the model's own name.
    pub catalog: Option<String>,
    /// Context window per request, in tokens.
    #[serde(default = "default_context_length")]
    pub context_length: u32,
    /// Requests decoded together.
    #[serde(default = "default_parallel")]
    pub parallel: u32,
    /// CPU threads; defaults to every core.
    pub threads: Option<u32>,
    /// Requests that may wait for a free slot before new ones get 503.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Most tokens per forward pass.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Layers offloaded to a GPU (GPU builds only).
    #[serde(default)]
    pub gpu_layers: u32,
    /// Temperature for requests that set none (default: the catalogue's
    /// recommendation, else 1).
    pub temperature: Option<f32>,
    /// Nucleus mass for requests that set none.
    pub top_p: Option<f32>,
    /// System message for requests that bring none (default: the
    /// catalogue's recommendation; `""` sends such requests as they are).
    pub default_system_prompt: Option<String>,
    /// Answer budget of requests without `max_tokens` (default: the
    /// catalogue's recommendation, else 1,024; 0 lets them run to the end
    /// of the context window).
    pub default_max_tokens: Option<u32>,
    /// Stop a generation that falls into a loop, with finish reason
    /// `length`.
    #[serde(default = "default_true")]
    pub repetition_guard: bool,
    /// Reuse the KV state of a finished request's prompt and answer for a
    /// new prompt that starts with the same tokens.
    #[serde(default = "default_true")]
    pub prompt_cache: bool,
    /// Let llama.cpp use flash attention (faster prefill; with
    /// `prompt_cache`, greedy answers may then differ slightly from a full
    /// prefill's).
    #[serde(default)]
    pub flash_attention: bool,
    /// How long the model stays loaded after its last request; by default
    /// until another model needs its memory.
    #[serde(default)]
    pub keep_alive: KeepAlive,
    /// Load the model at start, before the server reports ready (default:
    /// only the catalogue's default model); others load on first use.
    pub preload: Option<bool>,
    /// Price (local models are free unless priced here).
    pub pricing: Option<Pricing>,
}

impl Default for LocalModelConfig {
    fn default() -> Self {
        Self {
            path: None,
            catalog: None,
            context_length: default_context_length(),
            parallel: default_parallel(),
            threads: None,
            queue: default_queue(),
            batch_size: default_batch_size(),
            gpu_layers: 0,
            temperature: None,
            top_p: None,
            default_system_prompt: None,
            default_max_tokens: None,
            repetition_guard: true,
            prompt_cache: true,
            flash_attention: false,
            keep_alive: KeepAlive::Forever,
            preload: None,
            pricing: None,
        }
    }
}

/// Settings of a local sentence-embedding model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalEmbeddingConfig {
    /// A folder with `model.safetensors`, `tokenizer.json`, `config.json`.
    /// Without it, the model comes from the catalogue.
    pub path: Option<PathBuf>,
    /// Catalogue name; defaults to the model's own name.
    pub catalog: Option<String>,
    /// Inputs per forward pass.
    #[serde(default = "default_embedding_batch")]
    pub max_batch: usize,
    /// Tokens per input; longer inputs are truncated.
    #[serde(default = "default_embedding_tokens")]
    pub max_tokens: usize,
    /// Requests that may wait before new ones get 503.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

impl Default for LocalEmbeddingConfig {
    fn default() -> Self {
        Self {
            path: None,
            catalog: None,
            max_batch: default_embedding_batch(),
            max_tokens: default_embedding_tokens(),
            queue: default_queue(),
        }
    }
}

/// Settings of a remote model. Fields that only one provider understands
/// are refused for the others. `Debug` leaves secrets out.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteModelConfig {
    /// The API's base URL. Required for `openai` without a `preset` and for
    /// `azure` (the resource endpoint, `https://NAME.openai.azure.com`);
    /// defaults to the provider's public API otherwise.
    pub base_url: Option<String>,
    /// The API key; usually `${SOME_ENV_VAR}`.
    pub api_key: Option<String>,
    /// The model id sent upstream; defaults to the public name.
    pub upstream_model: Option<String>,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TCP (and TLS) connect deadline.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Deadline for the upstream's first byte (headers, then first event).
    #[serde(default = "default_first_byte_timeout_ms")]
    pub first_byte_timeout_ms: u64,
    /// Deadline for the whole answer.
    #[serde(default = "default_total_timeout_ms")]
    pub total_timeout_ms: u64,
    /// Tokens of prompt and answer the upstream model takes, for fitting
    /// long conversations (`[context]`) and grounding; default: 8,192 is
    /// assumed.
    #[serde(default)]
    pub context_window: Option<u32>,
    /// `openai`: a member of the OpenAI-compatible family (`mistral`,
    /// `deepseek`, `groq`, `vllm`, ...), which supplies its base URL and quirks.
    pub preset: Option<String>,
    /// `azure`: the deployment name.
    pub deployment: Option<String>,
    /// `azure`: the `api-version` query parameter.
    pub api_version: Option<String>,
    /// `anthropic`: the `anthropic-version` header.
    pub anthropic_version: Option<String>,
    /// `anthropic`: `max_tokens` for requests that set none (the API requires one).
    pub default_max_tokens: Option<u32>,
    /// `bedrock`: the AWS region.
    pub region: Option<String>,
    /// `bedrock`: access key id (default: `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// `bedrock`: secret access key (default: `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
    /// `bedrock`: session token (default: `AWS_SESSION_TOKEN`).
    pub session_token: Option<String>,
    /// Price, for cost-based routing and spend.
    pub pricing: Option<Pricing>,
    /// CA certificates (PEM) the upstream's certificate must chain to,
    /// instead of the public roots: an internal model server's own CA.
    pub tls_ca: Option<std::path::PathBuf>,
    /// A client certificate (PEM) shown to an upstream that asks for one
    /// (mutual TLS); with `tls_client_key`.
    pub tls_client_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    pub tls_client_key: Option<std::path::PathBuf>,
    /// The name the upstream's certificate is checked against and sent as
    /// SNI (and `Host`) when `base_url` reaches it by IP address.
    pub tls_server_name: Option<String>,
}

impl RemoteModelConfig {
    /// The fields set that belong to one provider only, with that provider.
    fn provider_fields(&self) -> Vec<(&'static str, Provider)> {
        let mut set = Vec::new();
        let mut check = |present: bool, field: &'static str, provider: Provider| {
            if present {
                set.push((field, provider));
            }
        };
        check(self.preset.is_some(), "preset", Provider::Openai);
        check(self.deployment.is_some(), "deployment", Provider::Azure);
        check(self.api_version.is_some(), "api_version", Provider::Azure);
        check(
            self.anthropic_version.is_some(),
            "anthropic_version",
            Provider::Anthropic,
        );
        check(
            self.default_max_tokens.is_some(),
            "default_max_tokens",
            Provider::Anthropic,
        );
        check(self.region.is_some(), "region", Provider::Bedrock);
        check(
            self.access_key_id.is_some(),
            "access_key_id",
            Provider::Bedrock,
        );
        check(
            self.secret_access_key.is_some(),
            "secret_access_key",
            Provider::Bedrock,
        );
        check(
            self.session_token.is_some(),
            "session_token",
            Provider::Bedrock,
        );
        set
    }
}

/// A field's dotted path and what is wrong with it.
type FieldProblem = (String, String);

/// Whether `pattern` compiles as a regular expression, and why not.
fn regex_is_valid(pattern: &str) -> Result<(), String> {
    regex::Regex::new(pattern)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Deserialises `value`, reporting the failing field's path under `prefix`.
fn decode<T: serde::de::DeserializeOwned>(
    value: impl Into<toml::Value>,
    prefix: &str,
) -> Result<T, FieldProblem> {
    serde_path_to_error::deserialize(value.into()).map_err(|e| {
        let inner = e.path().to_string();
        let field = match (prefix.is_empty(), inner == ".") {
            (true, _) => inner,
            (false, true) => prefix.to_owned(),
            (false, false) => format!("{prefix}.{inner}"),
        };
        (field, e.into_inner().to_string())
    })
}

fn decode_model(name: &str, mut table: toml::Table) -> Result<ModelConfig, FieldProblem> {
    let prefix = format!("models.{name}");
    let backend = match table.remove("backend") {
        Some(toml::Value::String(backend)) => backend,
        Some(_) => return Err((format!("{prefix}.backend"), "must be a string".into())),
        None => {
            return Err((
                format!("{prefix}.backend"),
                "missing; set backend = \"local\", \"openai\", \"anthropic\", ...".into(),
            ));
        }
    };
    match backend.as_str() {
        "local" => decode(table, &prefix).map(ModelConfig::Local),
        "local-embedding" => decode(table, &prefix).map(ModelConfig::LocalEmbedding),
        other => match Provider::ALL.iter().find(|(name, _)| *name == other) {
            Some((_, provider)) => decode(table, &prefix)
                .map(|remote| ModelConfig::Remote(*provider, Box::new(remote))),
            None => Err((
                format!("{prefix}.backend"),
                format!(
                    "unknown backend {other:?}; expected local, local-embedding, openai, azure, anthropic, gemini or bedrock"
                ),
            )),
        },
    }
}

impl std::fmt::Debug for RemoteModelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |value: &Option<String>| value.as_ref().map(|_| "<redacted>");
        f.debug_struct("RemoteModelConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &secret(&self.api_key))
            .field("upstream_model", &self.upstream_model)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("first_byte_timeout_ms", &self.first_byte_timeout_ms)
            .field("total_timeout_ms", &self.total_timeout_ms)
            .field("context_window", &self.context_window)
            .field("preset", &self.preset)
            .field("deployment", &self.deployment)
            .field("api_version", &self.api_version)
            .field("anthropic_version", &self.anthropic_version)
            .field("default_max_tokens", &self.default_max_tokens)
            .field("region", &self.region)
            .field("access_key_id", &secret(&self.access_key_id))
            .field("secret_access_key", &secret(&self.secret_access_key))
            .field("session_token", &secret(&self.session_token))
            .field("pricing", &self.pricing)
            .field("tls_ca", &self.tls_ca)
            .field("tls_client_cert", &self.tls_client_cert)
            .field("tls_client_key", &self.tls_client_key)
            .field("tls_server_name", &self.tls_server_name)
            .finish()
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_body_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_shutdown_grace_secs() -> u64 {
    30
}
fn default_models() -> BTreeMap<String, ModelConfig> {
    BTreeMap::from([
        (
            DEFAULT_MODEL.to_owned(),
            ModelConfig::Local(LocalModelConfig::default()),
        ),
        (
            DEFAULT_EMBEDDING_MODEL.to_owned(),
            ModelConfig::LocalEmbedding(LocalEmbeddingConfig::default()),
        ),
    ])
}
fn default_embedding_batch() -> usize {
    32
}
fn default_embedding_tokens() -> usize {
    256
}
fn default_context_length() -> u32 {
    2048
}
fn default_true() -> bool {
    true
}
fn default_parallel() -> u32 {
    4
}
fn default_queue() -> usize {
    64
}
fn default_batch_size() -> u32 {
    512
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_first_byte_timeout_ms() -> u64 {
    60_000
}
fn default_total_timeout_ms() -> u64 {
    600_000
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A field is missing, mistyped, unknown or out of range.
    #[error("config file {path}: field `{field}`: {message}")]
    Field {
        /// The file.
        path: PathBuf,
        /// Dotted path of the field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    fn validate_retrieval(&self) -> Result<(), FieldProblem> {
        let retrieval = &self.retrieval;
        let exists = |name: &str| self.models.contains_key(name) || self.routes.contains_key(name);
        if retrieval.chunk_tokens < 16 {
            return Err((
                "retrieval.chunk_tokens".into(),
                "must be at least 16".into(),
            ));
        }
        if retrieval.chunk_overlap * 2 > retrieval.chunk_tokens {
            return Err((
                "retrieval.chunk_overlap".into(),
                "must be at most half of chunk_tokens".into(),
            ));
        }
        if retrieval.top_k == 0 {
            return Err(("retrieval.top_k".into(), "must be at least 1".into()));
        }
        if let Some(model) = &retrieval.rewrite_model
            && !exists(model)
        {
            return Err((
                "retrieval.rewrite_model".into(),
                format!("`{model}` is not a configured model or route"),
            ));
        }
        for (name, assistant) in &retrieval.assistants {
            let field = |f: &str| format!("retrieval.assistants.{name}.{f}");
            if exists(name) {
                return Err((
                    format!("retrieval.assistants.{name}"),
                    "an assistant cannot share its name with a model or route".into(),
                ));
            }
            if !exists(&assistant.model) {
                return Err((
                    field("model"),
                    format!("`{}` is not a configured model or route", assistant.model),
                ));
            }
            if let Some(model) = &assistant.rewrite_model
                && !exists(model)
            {
                return Err((
                    field("rewrite_model"),
                    format!("`{model}` is not a configured model or route"),
                ));
            }
            if let Some(mode) = &assistant.mode
                && !matches!(mode.as_str(), "hybrid" | "keyword" | "vector")
            {
                return Err((field("mode"), "must be hybrid, keyword or vector".into()));
            }
            if assistant.top_k == Some(0) {
                return Err((field("top_k"), "must be at least 1".into()));
            }
        }
        Ok(())
    }

    fn validate_routes(&self) -> Result<(), FieldProblem> {
        let exists = |name: &str| self.models.contains_key(name) || self.routes.contains_key(name);
        for (name, route) in &self.routes {
            let field = |f: &str| format!("routes.{name}.{f}");
            if self.models.contains_key(name) {
                return Err((
                    format!("routes.{name}"),
                    "a model of the same name exists; routes and models share one namespace".into(),
                ));
            }
            if route.deployments.is_empty() && route.rules.is_empty() {
                return Err((
                    field("deployments"),
                    "a route needs deployments, rules, or both".into(),
                ));
            }
            for (index, deployment) in route.deployments.iter().enumerate() {
                if !self.models.contains_key(&deployment.model) {
                    return Err((
                        format!("routes.{name}.deployments.{index}.model"),
                        format!("no model named {:?} in [models]", deployment.model),
                    ));
                }
            }
            if route.strategy == Strategy::Weighted
                && !route.deployments.is_empty()
                && route.deployments.iter().all(|d| d.weight == 0)
            {
                return Err((
                    field("deployments"),
                    "every weight is 0; give at least one deployment a weight".into(),
                ));
            }
            match route.strategy {
                Strategy::Cascade if route.deployments.len() < 2 => {
                    return Err((
                        field("deployments"),
                        "a cascade needs at least two deployments, cheapest first".into(),
                    ));
                }
                Strategy::BestOf if route.ensemble.judge.is_none() => {
                    return Err((
                        field("ensemble.judge"),
                        "best-of needs a judge model to pick the answer".into(),
                    ));
                }
                Strategy::Mixture if route.ensemble.aggregator.is_none() => {
                    return Err((
                        field("ensemble.aggregator"),
                        "mixture needs an aggregator model to write the answer".into(),
                    ));
                }
                Strategy::BestOf | Strategy::Mixture
                    if route.deployments.len() * (route.ensemble.samples.max(1) as usize) < 2 =>
                {
                    return Err((
                        field("deployments"),
                        "an ensemble needs two answers at least: two deployments, or `ensemble.samples` of one".into(),
                    ));
                }
                _ => {}
            }
            for (what, target) in [
                ("cascade.judge", &route.cascade.judge),
                ("ensemble.judge", &route.ensemble.judge),
                ("ensemble.aggregator", &route.ensemble.aggregator),
            ] {
                if let Some(target) = target.as_deref().filter(|t| !exists(t) || *t == name) {
                    return Err((
                        field(what),
                        format!("{target:?} is not another route or model"),
                    ));
                }
            }
            if let Some(pattern) = &route.cascade.accept_if
                && let Err(error) = regex_is_valid(pattern)
            {
                return Err((field("cascade.accept_if"), error));
            }
            if let Some(semantic) = &route.semantic_cache {
                let model = semantic
                    .embedding_model
                    .as_deref()
                    .unwrap_or(DEFAULT_EMBEDDING_MODEL);
                if !exists(model) {
                    return Err((
                        field("semantic_cache.embedding_model"),
                        format!("no model or route named {model:?} to embed with"),
                    ));
                }
                if let Some(threshold) = semantic.threshold
                    && !(threshold > 0.0 && threshold <= 1.0)
                {
                    return Err((
                        field("semantic_cache.threshold"),
                        "a similarity in (0, 1]".into(),
                    ));
                }
            }
            for (index, target) in route.fallbacks.iter().enumerate() {
                if !exists(target) || target == name {
                    return Err((
                        format!("routes.{name}.fallbacks.{index}"),
                        format!("{target:?} is not another route or model"),
                    ));
                }
            }
            for (index, rule) in route.rules.iter().enumerate() {
                if !exists(&rule.route) || rule.route == *name {
                    return Err((
                        format!("routes.{name}.rules.{index}.route"),
                        format!("{:?} is not another route or model", rule.route),
                    ));
                }
                if rule.header_value.is_some() && rule.header.is_none() {
                    return Err((
                        format!("routes.{name}.rules.{index}.header_value"),
                        "needs `header`".into(),
                    ));
                }
                if rule.metadata_value.is_some() && rule.metadata_key.is_none() {
                    return Err((
                        format!("routes.{name}.rules.{index}.metadata_value"),
                        "needs `metadata_key`".into(),
                    ));
                }
                if !rule.similar_to.is_empty() {
                    let model = rule
                        .embedding_model
                        .as_deref()
                        .unwrap_or(DEFAULT_EMBEDDING_MODEL);
                    if !exists(model) {
                        return Err((
                            format!("routes.{name}.rules.{index}.embedding_model"),
                            format!("no model or route named {model:?} to embed with"),
                        ));
                    }
                }
                if let Some(threshold) = rule.threshold
                    && !(threshold > 0.0 && threshold <= 1.0)
                {
                    return Err((
                        format!("routes.{name}.rules.{index}.threshold"),
                        "a similarity in (0, 1]".into(),
                    ));
                }
                if rule.similar_to.is_empty()
                    && (rule.threshold.is_some() || rule.embedding_model.is_some())
                {
                    return Err((
                        format!("routes.{name}.rules.{index}.similar_to"),
                        "`threshold` and `embedding_model` need `similar_to` examples".into(),
                    ));
                }
            }
        }
        // Rules may point at routes with rules of their own; a cycle would
        // never settle on a deployment.
        for name in self.routes.keys() {
            let mut seen = vec![name.as_str()];
            self.check_rule_cycle(name, &mut seen)?;
        }
        let resilience = &self.resilience;
        if resilience.breaker_failures == 0 || resilience.breaker_window == 0 {
            return Err((
                "resilience".into(),
                "breaker_failures and breaker_window must be at least 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&resilience.breaker_error_rate)
            || !(0.0..=10.0).contains(&resilience.retry_budget_ratio)
        {
            return Err((
                "resilience".into(),
                "breaker_error_rate must be within 0..1 and retry_budget_ratio within 0..10".into(),
            ));
        }
        if let Some(redis) = &self.cache.redis_url {
            url::Url::parse(redis)
                .map_err(|e| ("cache.redis_url".to_owned(), format!("not a URL: {e}")))?;
        }
        Ok(())
    }

    fn check_rule_cycle<'a>(
        &'a self,
        name: &str,
        seen: &mut Vec<&'a str>,
    ) -> Result<(), FieldProblem> {
        let Some(route) = self.routes.get(name) else {
            return Ok(());
        };
        for rule in &route.rules {
            if seen.contains(&rule.route.as_str()) {
                return Err((
                    format!("routes.{name}.rules"),
                    format!("rules loop back to {:?}", rule.route),
                ));
            }
            seen.push(&rule.route);
            self.check_rule_cycle(&rule.route, seen)?;
            seen.pop();
        }
        Ok(())
    }
}

/// The TLS settings toward an upstream hang together: a client key with
/// its certificate, a server name only for an https `base_url` that
/// names an IP address (the name then stands in for it).
fn validate_upstream_tls(
    remote: &RemoteModelConfig,
    field: &dyn Fn(&str) -> String,
) -> Result<(), FieldProblem> {
    match (&remote.tls_client_cert, &remote.tls_client_key) {
        (Some(_), None) => {
            return Err((
                field("tls_client_key"),
                "required with tls_client_cert".into(),
            ));
        }
        (None, Some(_)) => {
            return Err((
                field("tls_client_cert"),
                "required with tls_client_key".into(),
            ));
        }
        _ => {}
    }
    if let Some(name) = &remote.tls_server_name {
        let url = remote
            .base_url
            .as_deref()
            .and_then(|base| url::Url::parse(base).ok());
        let by_address = url.as_ref().is_some_and(|url| {
            url.scheme() == "https"
                && matches!(url.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)))
        });
        if !by_address {
            return Err((
                field("tls_server_name"),
                "needs an https base_url that names the upstream by IP address".into(),
            ));
        }
        if url::Host::parse(name).map_or(true, |host| !matches!(host, url::Host::Domain(_))) {
            return Err((field("tls_server_name"), "must be a DNS name".into()));
        }
    }
    Ok(())
}

fn validate_remote(
    provider: Provider,
    remote: &RemoteModelConfig,
    field: &dyn Fn(&str) -> String,
) -> Result<(), FieldProblem> {
    for (name, owner) in remote.provider_fields() {
        if owner != provider {
            return Err((
                field(name),
                format!(
                    "applies to backend \"{}\" only, not \"{}\"",
                    owner.name(),
                    provider.name()
                ),
            ));
        }
    }
    if let Some(base_url) = &remote.base_url {
        let url = url::Url::parse(base_url)
            .map_err(|e| (field("base_url"), format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err((field("base_url"), "must be an http or https URL".into()));
        }
    }
    validate_upstream_tls(remote, field)?;
    let required = |present: bool, name: &str, why: &str| {
        if present {
            Ok(())
        } else {
            Err((field(name), format!("required: {why}")))
        }
    };
    match provider {
        Provider::Openai => required(
            remote.base_url.is_some() || remote.preset.is_some(),
            "base_url",
            "the upstream's URL (or a `preset` that knows it)",
        )?,
        Provider::Azure => {
            required(
                remote.base_url.is_some(),
                "base_url",
                "the resource endpoint, e.g. https://NAME.openai.azure.com",
            )?;
            required(
                remote.deployment.is_some(),
                "deployment",
                "the deployment name",
            )?;
            required(remote.api_key.is_some(), "api_key", "Azure's `api-key`")?;
        }
        Provider::Anthropic | Provider::Gemini => {
            required(
                remote.api_key.is_some(),
                "api_key",
                "the provider's API key",
            )?;
        }
        Provider::Bedrock => {
            required(
                remote.region.is_some(),
                "region",
                "the AWS region, e.g. us-east-1",
            )?;
            required(
                remote.upstream_model.is_some(),
                "upstream_model",
                "the Bedrock model id, e.g. anthropic.claude-3-haiku-20240307-v1:0",
            )?;
        }
    }
    if remote.default_max_tokens == Some(0) {
        return Err((field("default_max_tokens"), "must be at least 1".into()));
    }
    for (key, value) in [
        ("connect_timeout_ms", remote.connect_timeout_ms),
        ("first_byte_timeout_ms", remote.first_byte_timeout_ms),
        ("total_timeout_ms", remote.total_timeout_ms),
    ] {
        if value == 0 {
            return Err((field(key), "must be at least 1".into()));
        }
    }
    Ok(())
}

impl Config {
    /// Reads and validates a configuration file, taking `${VAR}` values from
    /// the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text, &|name| std::env::var(name).ok())
    }

    /// Parses and validates configuration text; `path` is only for messages.
    pub fn parse(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        interpolate(&mut value, env).map_err(|e| ConfigError::Field {
            path: path.to_owned(),
            field: e.field,
            message: e.message,
        })?;
        let field_error = |field: String, message: String| ConfigError::Field {
            path: path.to_owned(),
            field,
            message,
        };
        let raw: RawConfig = decode(value, "").map_err(|(f, m)| field_error(f, m))?;
        let models = match raw.models {
            None => default_models(),
            Some(tables) => tables
                .into_iter()
                .map(|(name, table)| {
                    let model = decode_model(&name, table).map_err(|(f, m)| field_error(f, m))?;
                    Ok((name, model))
                })
                .collect::<Result<_, ConfigError>>()?,
        };
        let config = Config {
            listen: raw.listen,
            max_body_bytes: raw.max_body_bytes,
            shutdown_grace_secs: raw.shutdown_grace_secs,
            worker_threads: raw.worker_threads,
            models,
            routes: raw.routes,
            resilience: raw.resilience,
            cache: raw.cache,
            database_url: raw.database_url,
            redis_url: raw.redis_url,
            governance: raw.governance,
            telemetry: raw.telemetry,
            retrieval: raw.retrieval,
            guardrails: raw.guardrails,
            engine: raw.engine,
            context: raw.context,
            conversations: raw.conversations,
            anomalies: raw.anomalies,
            tls: raw.tls,
            listener: raw.listener,
            tools: raw.tools,
            code_assistants: raw.code_assistants,
        };
        config
            .validate()
            .map_err(|(field, message)| ConfigError::Field {
                path: path.to_owned(),
                field,
                message,
            })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), FieldProblem> {
        if self.models.is_empty() {
            return Err((
                "models".into(),
                "at least one model must be configured".into(),
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(("max_body_bytes".into(), "must be at least 1".into()));
        }
        if self.worker_threads == Some(0) {
            return Err(("worker_threads".into(), "must be at least 1".into()));
        }
        self.validate_retrieval()?;
        self.guardrails.validate()?;
        self.anomalies.validate()?;
        self.listener.validate()?;
        self.tools.validate()?;
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        let known = |name: &str| self.models.contains_key(name) || self.routes.contains_key(name);
        self.context.validate(known)?;
        self.tools.validate_attach(known)?;
        for (name, assistant) in &self.code_assistants {
            let taken = known(name) || self.retrieval.assistants.contains_key(name);
            assistant.validate(name, taken, known)?;
        }
        if let Some(target) = self.guardrails.attach.keys().find(|t| !known(t)) {
            return Err((
                format!("guardrails.attach.{target}"),
                "no model or route by this name".into(),
            ));
        }
        for (name, policy) in &self.guardrails.policies {
            for (i, check) in policy.checks.iter().enumerate() {
                for (field, target) in [("route_to", &check.route_to), ("model", &check.model)] {
                    if let Some(target) = target.as_deref().filter(|t| !known(t)) {
                        return Err((
                            format!("guardrails.policies.{name}.checks[{i}].{field}"),
                            format!("no model or route named {target:?}"),
                        ));
                    }
                }
            }
        }
        let telemetry = &self.telemetry;
        if !(0.0..=1.0).contains(&telemetry.sample_ratio) {
            return Err((
                "telemetry.sample_ratio".into(),
                "must be between 0 and 1".into(),
            ));
        }
        if telemetry.export_interval_ms == 0 {
            return Err((
                "telemetry.export_interval_ms".into(),
                "must be at least 1".into(),
            ));
        }
        if let Some(endpoint) = &telemetry.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err((
                "telemetry.otlp_endpoint".into(),
                "must be an http:// or https:// URL".into(),
            ));
        }
        if let Some(url) = &self.database_url
            && !["sqlite:", "postgres:", "postgresql:"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
        {
            return Err((
                "database_url".into(),
                "must start with sqlite:// or postgres://".into(),
            ));
        }
        if self
            .governance
            .master_key
            .as_deref()
            .is_some_and(|k| k.len() < 16)
        {
            return Err((
                "governance.master_key".into(),
                "must be at least 16 characters".into(),
            ));
        }
        if let Some(jwt) = &self.governance.jwt
            && !(jwt.jwks_url.starts_with("https://") || jwt.jwks_url.starts_with("http://"))
        {
            return Err((
                "governance.jwt.jwks_url".into(),
                "must be an http(s) URL".into(),
            ));
        }
        if self.governance.ledger_flush_ms == 0 {
            return Err((
                "governance.ledger_flush_ms".into(),
                "must be at least 1".into(),
            ));
        }
        for (name, model) in &self.models {
            let field = |f: &str| format!("models.{name}.{f}");
            if name.trim().is_empty() || name.chars().any(char::is_whitespace) {
                return Err((
                    format!("models.{name:?}"),
                    "model names must be non-empty and contain no whitespace".into(),
                ));
            }
            match model {
                ModelConfig::Local(local) => {
                    if local.path.is_some() && local.catalog.is_some() {
                        return Err((
                            field("path"),
                            "give either `path` or `catalog`, not both".into(),
                        ));
                    }
                    if local.context_length < 16 {
                        return Err((field("context_length"), "must be at least 16".into()));
                    }
                    if local.parallel == 0 || local.parallel > 256 {
                        return Err((field("parallel"), "must be between 1 and 256".into()));
                    }
                    if local.batch_size < local.parallel {
                        return Err((
                            field("batch_size"),
                            "must be at least `parallel` so every sequence advances each step"
                                .into(),
                        ));
                    }
                    if local.threads == Some(0) {
                        return Err((field("threads"), "must be at least 1".into()));
                    }
                    if local.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
                        return Err((field("temperature"), "must be between 0 and 2".into()));
                    }
                    if local.top_p.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
                        return Err((field("top_p"), "must be between 0 and 1".into()));
                    }
                }
                ModelConfig::LocalEmbedding(local) => {
                    if local.path.is_some() && local.catalog.is_some() {
                        return Err((
                            field("path"),
                            "give either `path` or `catalog`, not both".into(),
                        ));
                    }
                    if local.max_batch == 0 {
                        return Err((field("max_batch"), "must be at least 1".into()));
                    }
                    if local.max_tokens < 2 || local.max_tokens > 512 {
                        return Err((field("max_tokens"), "must be between 2 and 512".into()));
                    }
                }
                ModelConfig::Remote(provider, remote) => {
                    validate_remote(*provider, remote, &field)?;
                }
            }
        }
        self.validate_routes()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_tls_settings_hang_together() {
        let model = |extra: &str| {
            parse(&format!(
                "[models.inner]\nbackend = \"openai\"\nbase_url = \"https://10.0.0.5:8443/v1\"\n{extra}\n"
            ))
        };
        let error = model("tls_client_cert = \"c.pem\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("tls_client_key"), "{error}");
        assert!(model("tls_server_name = \"models.internal\"").is_ok());
        let error = model("tls_server_name = \"10.0.0.6\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("must be a DNS name"), "{error}");
        let by_name = parse(
            "[models.inner]\nbackend = \"openai\"\nbase_url = \"https://models.internal/v1\"\ntls_server_name = \"other.internal\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(by_name.contains("by IP address"), "{by_name}");
    }

    #[test]
    fn tls_client_auth_needs_a_client_ca() {
        let error = parse("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_auth = \"optional\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("tls.client_auth"), "{error}");
        let config =
            parse("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_ca = \"ca.pem\"\n").unwrap();
        let tls = config.tls.unwrap();
        assert!(tls.client_certificate_required());
        assert_eq!(tls.handshake_timeout_secs, 10);
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let env = |name: &str| (name == "OPENAI_KEY").then(|| "sk-test".to_string());
        Config::parse(Path::new("/etc/switchyard.toml"), text, &env)
    }

    #[test]
    fn empty_file_serves_the_default_local_model() {
        let config = parse("").unwrap();
        assert_eq!(config, Config::default());
        assert!(matches!(
            config.models.get(DEFAULT_MODEL),
            Some(ModelConfig::Local(_))
        ));
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn full_config_parses_with_interpolated_secret() {
        let config = parse(
            r#"
            listen = "0.0.0.0:9000"
            max_body_bytes = 1024

            [models.local]
            backend = "local"
            path = "/models/x.gguf"
            parallel = 2

            [models.gpt]
            backend = "openai"
            base_url = "https://api.openai.com/v1"
            api_key = "${OPENAI_KEY}"
            upstream_model = "gpt-4o-mini"
            headers = { "OpenAI-Organization" = "org-1" }
            "#,
        )
        .unwrap();
        assert_eq!(config.max_body_bytes, 1024);
        let Some(ModelConfig::Remote(Provider::Openai, gpt)) = config.models.get("gpt") else {
            panic!("gpt is not an openai model");
        };
        assert_eq!(gpt.api_key.as_deref(), Some("sk-test"));
        assert_eq!(gpt.first_byte_timeout_ms, 60_000);
        let Some(ModelConfig::Local(local)) = config.models.get("local") else {
            panic!("local is not a local model");
        };
        assert_eq!(local.parallel, 2);
        assert_eq!(local.context_length, 2048);
    }

    fn field_error(text: &str) -> (String, String) {
        match parse(text) {
            Err(ConfigError::Field { field, message, .. }) => (field, message),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_field_is_named() {
        let (field, message) =
            field_error("[models.m]\nbackend = \"local\"\ncontext_lenght = 10\n");
        assert_eq!(field, "models.m.context_lenght");
        assert!(message.contains("context_lenght"), "{message}");
    }

    #[test]
    fn wrong_type_is_named() {
        let (field, message) =
            field_error("[models.m]\nbackend = \"local\"\nparallel = \"four\"\n");
        assert_eq!(field, "models.m.parallel");
        assert!(message.contains("invalid type"), "{message}");
    }

    #[test]
    fn unknown_backend_is_named() {
        let (field, message) = field_error("[models.m]\nbackend = \"nope\"\n");
        assert_eq!(field, "models.m.backend");
        assert!(message.contains("nope"), "{message}");
    }

    #[test]
    fn missing_env_var_is_named() {
        let (field, message) = field_error(
            "[models.m]\nbackend = \"openai\"\nbase_url = \"http://x\"\napi_key = \"${UNSET_KEY}\"\n",
        );
        assert_eq!(field, "models.m.api_key");
        assert!(message.contains("UNSET_KEY"), "{message}");
    }

    #[test]
    fn bad_values_are_caught_before_start() {
        let (field, _) =
            field_error("[models.m]\nbackend = \"openai\"\nbase_url = \"not a url\"\n");
        assert_eq!(field, "models.m.base_url");
        let (field, _) = field_error("[models.m]\nbackend = \"local\"\nparallel = 0\n");
        assert_eq!(field, "models.m.parallel");
        let (field, _) = field_error("listen = \"localhost\"\n");
        assert_eq!(field, "listen");
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let config = parse(
            "[models.m]\nbackend = \"openai\"\nbase_url = \"http://x\"\napi_key = \"${OPENAI_KEY}\"\n",
        )
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("sk-test"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn provider_fields_belong_to_their_provider() {
        let (field, message) = field_error(
            "[models.m]\nbackend = \"openai\"\nbase_url = \"http://x\"\ndeployment = \"d\"\n",
        );
        assert_eq!(field, "models.m.deployment");
        assert!(message.contains("\"azure\" only"), "{message}");
        let (field, _) = field_error(
            "[models.m]\nbackend = \"azure\"\nbase_url = \"https://r\"\napi_key = \"k\"\n",
        );
        assert_eq!(field, "models.m.deployment");
        let (field, _) = field_error("[models.m]\nbackend = \"bedrock\"\nupstream_model = \"x\"\n");
        assert_eq!(field, "models.m.region");
        let (field, _) = field_error("[models.m]\nbackend = \"anthropic\"\n");
        assert_eq!(field, "models.m.api_key");
        let (field, _) = field_error("[models.m]\nbackend = \"openai\"\n");
        assert_eq!(field, "models.m.base_url");
    }

    #[test]
    fn every_backend_parses() {
        let config = parse(
            r#"
            [models.mistral]
            backend = "openai"
            preset = "mistral"
            api_key = "k"
            [models.claude]
            backend = "anthropic"
            api_key = "k"
            default_max_tokens = 1024
            [models.gem]
            backend = "gemini"
            api_key = "k"
            [models.az]
            backend = "azure"
            base_url = "https://r.openai.azure.com"
            deployment = "gpt4o"
            api_key = "k"
            [models.br]
            backend = "bedrock"
            region = "us-east-1"
            upstream_model = "anthropic.claude-3-haiku-20240307-v1:0"
            [models.embed]
            backend = "local-embedding"
            max_batch = 16
            "#,
        )
        .unwrap();
        assert_eq!(config.models.len(), 6);
        assert!(matches!(
            config.models.get("claude"),
            Some(ModelConfig::Remote(Provider::Anthropic, _))
        ));
        assert!(matches!(
            config.models.get("embed"),
            Some(ModelConfig::LocalEmbedding(LocalEmbeddingConfig {
                max_batch: 16,
                ..
            }))
        ));
    }

    const TWO_MODELS: &str = "[models.a]\nbackend = \"openai\"\nbase_url = \"http://x\"\n[models.b]\nbackend = \"openai\"\nbase_url = \"http://y\"\n";

    #[test]
    fn routes_rules_and_cache_parse() {
        let config = parse(&format!(
            "{TWO_MODELS}\n[routes.chat]\nstrategy = \"least-latency\"\ndeployments = [{{ model = \"a\", weight = 95 }}, {{ model = \"b\", weight = 5 }}]\nfallbacks = [\"b\"]\nretries = 2\nhedge_after_ms = 300\nfallback_on = [\"rate-limited\", \"context-length\"]\n\n[routes.auto]\nrules = [{{ route = \"chat\", has_code = true }}, {{ route = \"b\", header = \"x-tier\", header_value = \"cheap\" }}]\ndeployments = [{{ model = \"a\" }}]\n\n[cache]\nenabled = true\nttl_secs = 5\n[resilience]\nbreaker_failures = 3\n"
        ))
        .unwrap();
        let chat = &config.routes["chat"];
        assert_eq!(chat.strategy, Strategy::LeastLatency);
        assert_eq!(chat.deployments[0].weight, 95);
        assert_eq!(
            chat.fallback_on,
            vec![FailureKind::RateLimited, FailureKind::ContextLength]
        );
        assert_eq!(config.routes["auto"].rules[0].has_code, Some(true));
        assert!(config.cache.enabled);
        assert_eq!(config.resilience.breaker_failures, 3);
        assert_eq!(config.resilience.breaker_open_ms, 30_000);
    }

    #[test]
    fn broken_routes_are_named() {
        let (field, _) = field_error(&format!(
            "{TWO_MODELS}\n[routes.r]\ndeployments = [{{ model = \"zzz\" }}]\n"
        ));
        assert_eq!(field, "routes.r.deployments.0.model");
        let (field, _) = field_error(&format!(
            "{TWO_MODELS}\n[routes.a]\ndeployments = [{{ model = \"b\" }}]\n"
        ));
        assert_eq!(field, "routes.a");
        let (field, message) = field_error(&format!(
            "{TWO_MODELS}\n[routes.x]\nrules = [{{ route = \"y\", has_code = true }}]\n[routes.y]\nrules = [{{ route = \"x\", has_tools = true }}]\n"
        ));
        assert!(field.ends_with(".rules"), "{field}");
        assert!(message.contains("loop"), "{message}");
        let (field, _) = field_error(&format!(
            "{TWO_MODELS}\n[routes.r]\nstrategy = \"fastest\"\ndeployments = [{{ model = \"a\" }}]\n"
        ));
        assert_eq!(field, "routes.r.strategy");
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let error = parse("listen = \n").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("/etc/switchyard.toml"), "{text}");
        assert!(text.contains("line 1"), "{text}");
    }

    #[test]
    fn field_error_message_names_file() {
        let error = parse("max_body_bytes = 0").unwrap_err();
        assert_eq!(
            error.to_string(),
            "config file /etc/switchyard.toml: field `max_body_bytes`: must be at least 1"
        );
    }

    #[test]
    fn worker_threads_is_optional_and_positive() {
        assert_eq!(parse("").unwrap().worker_threads, None);
        assert_eq!(parse("worker_threads = 3").unwrap().worker_threads, Some(3));
        let error = parse("worker_threads = 0").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`worker_threads`: must be at least 1")
        );
    }

    #[test]
    fn tools_are_checked_against_the_models_and_the_tools_there_are() {
        let config = parse(&format!(
            "{TWO_MODELS}[tools]\nmax_steps = 4\n[tools.attach]\na = [\"calculator\"]\n[tools.run_code]\nlanguages = [\"python\", \"shell\"]\n"
        ))
        .unwrap();
        assert_eq!(config.tools.max_steps, 4);
        assert_eq!(config.tools.attach["a"], ["calculator"]);
        assert_eq!(config.tools.run_code.languages.len(), 2);
        let (field, _) = field_error(&format!("{TWO_MODELS}[tools.attach]\nnope = [\"clock\"]\n"));
        assert_eq!(field, "tools.attach.nope");
        let (field, message) =
            field_error(&format!("{TWO_MODELS}[tools.attach]\na = [\"teleport\"]\n"));
        assert_eq!(field, "tools.attach.a");
        assert!(
            message.contains("calculator, clock, http_fetch, run_code, search"),
            "{message}"
        );
        let (field, _) = field_error(&format!(
            "{TWO_MODELS}[tools.mcp.files]\ncommand = [\"srv\"]\nurl = \"http://x\"\n"
        ));
        assert_eq!(field, "tools.mcp.files");
        let (field, _) = field_error(&format!(
            "{TWO_MODELS}[tools.mcp.a__b]\nurl = \"http://x\"\n"
        ));
        assert_eq!(field, "tools.mcp.a__b");
        let config = parse(&format!(
            "{TWO_MODELS}[tools.mcp.files]\ncommand = [\"srv\", \"--stdio\"]\n[tools.attach]\na = [\"files__read\"]\n"
        ))
        .unwrap();
        assert_eq!(config.tools.mcp["files"].command, ["srv", "--stdio"]);
        let (field, _) = field_error(&format!("{TWO_MODELS}[tools.run_code]\nwall_secs = 0\n"));
        assert_eq!(field, "tools.run_code.wall_secs");
        let (field, _) = field_error(&format!(
            "{TWO_MODELS}[tools.mcp.files]\nurl = \"http://x\"\nallow_keys = [\"ci-bot\"]\n"
        ));
        assert_eq!(field, "tools.mcp.files.allow_keys");
    }

    #[test]
    fn code_assistants_name_configured_models_and_known_checks() {
        let config = parse(&format!(
            "{TWO_MODELS}[code_assistants.coder]\nmodel = \"a\"\nexplain_model = \"b\"\nchecks = [\"syntax\", \"tests\"]\n"
        ))
        .unwrap();
        let coder = &config.code_assistants["coder"];
        assert_eq!(coder.checks, [CodeCheck::Syntax, CodeCheck::Tests]);
        assert_eq!(coder.max_repairs, 2);
        assert_eq!(coder.explain_model.as_deref(), Some("b"));
        let defaults = parse(&format!(
            "{TWO_MODELS}[code_assistants.coder]\nmodel = \"a\"\n"
        ))
        .unwrap();
        assert_eq!(defaults.code_assistants["coder"].checks.len(), 3);
        for (body, expected) in [
            ("[code_assistants.a]\nmodel = \"b\"\n", "code_assistants.a"),
            (
                "[code_assistants.c]\nmodel = \"nope\"\n",
                "code_assistants.c.model",
            ),
            (
                "[code_assistants.c]\nmodel = \"a\"\nexplain_model = \"nope\"\n",
                "code_assistants.c.explain_model",
            ),
            (
                "[code_assistants.c]\nmodel = \"a\"\nmax_repairs = 11\n",
                "code_assistants.c.max_repairs",
            ),
            (
                "[code_assistants.c]\nmodel = \"a\"\nchecks = [\"tests\", \"tests\"]\n",
                "code_assistants.c.checks",
            ),
        ] {
            let (field, _) = field_error(&format!("{TWO_MODELS}{body}"));
            assert_eq!(field, expected, "{body}");
        }
        let error = parse(&format!(
            "{TWO_MODELS}[code_assistants.c]\nmodel = \"a\"\nchecks = [\"fuzz\"]\n"
        ))
        .unwrap_err();
        assert!(error.to_string().contains("fuzz"), "{error}");
    }
}
