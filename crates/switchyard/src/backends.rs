//! Turns each configured model into its backends.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::future::BoxFuture;
use switchyard_adapters::{
    AnthropicAdapter, AnthropicConfig, Auth, AwsCredentials, BedrockAdapter, BedrockConfig,
    Credential, GeminiAdapter, GeminiConfig, OpenAiAdapter, OpenAiConfig, Quirks, Timeouts,
    UpstreamTls,
};
use switchyard_config::{
    LocalEmbeddingConfig, LocalModelConfig, ModelConfig, Provider, RemoteModelConfig,
};
use switchyard_core::{ChatBackend, EmbeddingBackend, SamplingParams};
use switchyard_embedder::{EmbedderConfig, LocalEmbedder};
use switchyard_engine::{EngineConfig, KeepAlive, LocalEngine, MemoryBudget};
use switchyard_models::{CatalogEntry, ModelKind, ModelStore};

/// A model's backends, and how to wait until they can serve.
pub struct Built {
    pub chat: Option<Arc<dyn ChatBackend>>,
    pub embeddings: Option<Arc<dyn EmbeddingBackend>>,
    /// Resolves once local weights are loaded (at once for remote models).
    pub ready: BoxFuture<'static, Result<(), String>>,
}

/// Builds the backends of model `name`; local chat models share `budget`.
pub fn build(name: &str, model: &ModelConfig, budget: &MemoryBudget) -> anyhow::Result<Built> {
    match model {
        ModelConfig::Local(local) => {
            let engine = Arc::new(local_engine(name, local, budget)?);
            let ready: BoxFuture<'static, Result<(), String>> = if engine_preloads(name, local) {
                let waiter = engine.clone();
                Box::pin(async move { waiter.wait_ready().await.map_err(|e| e.to_string()) })
            } else {
                Box::pin(async { Ok(()) })
            };
            Ok(Built {
                chat: Some(engine),
                embeddings: None,
                ready,
            })
        }
        ModelConfig::LocalEmbedding(local) => {
            let embedder = Arc::new(start_embedder(name, local)?);
            let waiter = embedder.clone();
            Ok(Built {
                chat: None,
                embeddings: Some(embedder),
                ready: Box::pin(
                    async move { waiter.wait_ready().await.map_err(|e| e.to_string()) },
                ),
            })
        }
        ModelConfig::Remote(provider, remote) => build_remote(name, *provider, remote),
    }
}

fn timeouts(remote: &RemoteModelConfig) -> Timeouts {
    Timeouts {
        connect: Duration::from_millis(remote.connect_timeout_ms),
        first_byte: Duration::from_millis(remote.first_byte_timeout_ms),
        total: Duration::from_millis(remote.total_timeout_ms),
    }
}

fn headers(remote: &RemoteModelConfig) -> Vec<(String, String)> {
    remote
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The TLS settings of `remote` toward its upstream, read from their
/// files, and its settings with `base_url` naming the server by
/// `tls_server_name` (the address it gave is where connections go).
fn upstream_tls(remote: &RemoteModelConfig) -> anyhow::Result<(RemoteModelConfig, UpstreamTls)> {
    let read = |path: &std::path::Path, field: &str| {
        std::fs::read(path)
            .with_context(|| format!("field `{field}`: cannot read {}", path.display()))
    };
    let mut remote = remote.clone();
    let mut tls = UpstreamTls::default();
    if let Some(path) = &remote.tls_ca {
        tls.ca_pem = Some(read(path, "tls_ca")?);
    }
    if let (Some(cert), Some(key)) = (&remote.tls_client_cert, &remote.tls_client_key) {
        let mut pem = read(cert, "tls_client_cert")?;
        pem.push(b'\n');
        pem.extend(read(key, "tls_client_key")?);
        tls.identity_pem = Some(pem);
    }
    if let (Some(name), Some(base)) = (&remote.tls_server_name, &remote.base_url) {
        // Checked when the configuration loaded: https, an IP address.
        let mut url = reqwest::Url::parse(base).context("field `base_url`")?;
        let address = url
            .socket_addrs(|| Some(443))
            .context("field `base_url`")?
            .into_iter()
            .next()
            .context("field `base_url`: no address")?;
        url.set_host(Some(name))
            .context("field `tls_server_name`")?;
        tls.resolve = Some((name.clone(), address));
        remote.base_url = Some(url.to_string().trim_end_matches('/').to_owned());
    }
    Ok((remote, tls))
}

fn build_remote(
    name: &str,
    provider: Provider,
    remote: &RemoteModelConfig,
) -> anyhow::Result<Built> {
    let (remote, tls) = upstream_tls(remote)?;
    let remote = &remote;
    let upstream_model = remote
        .upstream_model
        .clone()
        .unwrap_or_else(|| name.to_owned());
    match provider {
        Provider::Openai | Provider::Azure => {
            let mut config = openai_config(provider, remote, upstream_model)?;
            config.tls = tls;
            let adapter = Arc::new(OpenAiAdapter::new(config)?);
            Ok(Built {
                chat: Some(adapter.clone()),
                embeddings: Some(adapter),
                ready: Box::pin(async { Ok(()) }),
            })
        }
        Provider::Anthropic => {
            let mut config =
                AnthropicConfig::new(remote.api_key.clone().unwrap_or_default(), upstream_model);
            if let Some(base_url) = &remote.base_url {
                config.base_url = base_url.clone();
            }
            if let Some(version) = &remote.anthropic_version {
                config.version = version.clone();
            }
            if let Some(max_tokens) = remote.default_max_tokens {
                config.default_max_tokens = max_tokens;
            }
            config.headers = headers(remote);
            config.timeouts = timeouts(remote);
            config.tls = tls.clone();
            Ok(chat_only(Arc::new(AnthropicAdapter::new(config)?)))
        }
        Provider::Gemini => {
            let mut config =
                GeminiConfig::new(remote.api_key.clone().unwrap_or_default(), upstream_model);
            if let Some(base_url) = &remote.base_url {
                config.base_url = base_url.clone();
            }
            config.headers = headers(remote);
            config.timeouts = timeouts(remote);
            config.tls = tls.clone();
            let adapter = Arc::new(GeminiAdapter::new(config)?);
            Ok(Built {
                chat: Some(adapter.clone()),
                embeddings: Some(adapter),
                ready: Box::pin(async { Ok(()) }),
            })
        }
        Provider::Bedrock => {
            let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
            let access_key_id = remote
                .access_key_id
                .clone()
                .or_else(|| from_env("AWS_ACCESS_KEY_ID"))
                .context("field `access_key_id`: required (or set AWS_ACCESS_KEY_ID)")?;
            let secret_access_key = remote
                .secret_access_key
                .clone()
                .or_else(|| from_env("AWS_SECRET_ACCESS_KEY"))
                .context("field `secret_access_key`: required (or set AWS_SECRET_ACCESS_KEY)")?;
            let credentials = AwsCredentials {
                access_key_id,
                secret_access_key: Credential::new(secret_access_key),
                session_token: remote
                    .session_token
                    .clone()
                    .or_else(|| from_env("AWS_SESSION_TOKEN"))
                    .map(Credential::new),
            };
            let region = remote.region.clone().unwrap_or_default();
            let mut config = BedrockConfig::new(region, credentials, upstream_model);
            if let Some(base_url) = &remote.base_url {
                config.base_url = base_url.clone();
            }
            config.headers = headers(remote);
            config.timeouts = timeouts(remote);
            config.tls = tls.clone();
            Ok(chat_only(Arc::new(BedrockAdapter::new(config)?)))
        }
    }
}

/// A remote backend that only chats.
fn chat_only(chat: Arc<dyn ChatBackend>) -> Built {
    Built {
        chat: Some(chat),
        embeddings: None,
        ready: Box::pin(async { Ok(()) }),
    }
}

fn openai_config(
    provider: Provider,
    remote: &RemoteModelConfig,
    upstream_model: String,
) -> anyhow::Result<OpenAiConfig> {
    let (base_url, query, auth, quirks) = match provider {
        Provider::Azure => {
            let endpoint = remote.base_url.clone().unwrap_or_default();
            let deployment = remote.deployment.clone().unwrap_or_default();
            let version = remote
                .api_version
                .clone()
                .unwrap_or_else(|| "2024-10-21".to_owned());
            (
                format!(
                    "{}/openai/deployments/{deployment}",
                    endpoint.trim_end_matches('/')
                ),
                Some(format!("api-version={version}")),
                Auth::Header {
                    name: "api-key".into(),
                    key: Credential::new(remote.api_key.clone().unwrap_or_default()),
                },
                Quirks::OPENAI,
            )
        }
        _ => {
            let preset = match remote.preset.as_deref() {
                None => None,
                Some(name) => Some(switchyard_adapters::preset(name).with_context(|| {
                    let known: Vec<&str> = switchyard_adapters::PRESETS
                        .iter()
                        .map(|p| p.name)
                        .collect();
                    format!(
                        "field `preset`: unknown preset {name:?}; known presets: {}",
                        known.join(", ")
                    )
                })?),
            };
            let base_url = match (&remote.base_url, preset.and_then(|p| p.base_url)) {
                (Some(url), _) => url.clone(),
                (None, Some(url)) => url.to_owned(),
                (None, None) => bail!(
                    "field `base_url`: required, the preset {:?} is self-hosted",
                    remote.preset.as_deref().unwrap_or_default()
                ),
            };
            let auth = remote
                .api_key
                .clone()
                .map_or(Auth::None, |key| Auth::Bearer(Credential::new(key)));
            let quirks = preset.map_or(Quirks::OPENAI, |p| p.quirks);
            (base_url, None, auth, quirks)
        }
    };
    Ok(OpenAiConfig {
        base_url,
        query,
        auth,
        upstream_model,
        headers: headers(remote),
        timeouts: timeouts(remote),
        tls: UpstreamTls::default(),
        quirks,
    })
}

/// Resolves a local model's files: an explicit path, or the catalogue.
pub fn local_path(
    name: &str,
    path: &Option<PathBuf>,
    catalog: &Option<String>,
    kind: ModelKind,
) -> anyhow::Result<(PathBuf, Option<&'static switchyard_models::CatalogEntry>)> {
    if let Some(path) = path {
        return Ok((path.clone(), None));
    }
    let catalog_name = catalog.as_deref().unwrap_or(name);
    let store = ModelStore::default_location()?;
    let (entry, path) = store.resolve(catalog_name).with_context(|| {
        "not in the model catalogue; set `path` to the model's files or `catalog` to a catalogue name"
    })?;
    if entry.kind != kind {
        bail!(
            "the catalogue model `{catalog_name}` is a {:?} model, which this backend does not serve",
            entry.kind
        );
    }
    if !store.is_present(entry) {
        bail!(
            "the model `{catalog_name}` is not downloaded yet; run `switchyard models pull {catalog_name}`"
        );
    }
    Ok((path, Some(entry)))
}

/// Whether a local model loads at start: as configured, else only the
/// catalogue's default model (the one a newcomer's first request asks for).
fn engine_preloads(name: &str, local: &LocalModelConfig) -> bool {
    local.preload.unwrap_or_else(|| {
        local.catalog.as_deref().unwrap_or(name) == switchyard_config::DEFAULT_MODEL
    })
}

fn local_engine(
    name: &str,
    local: &LocalModelConfig,
    budget: &MemoryBudget,
) -> anyhow::Result<LocalEngine> {
    let (path, entry) = local_path(name, &local.path, &local.catalog, ModelKind::Chat)?;
    let default_sampling = SamplingParams {
        temperature: local.temperature.or(entry.and_then(|e| e.temperature)),
        top_p: local.top_p.or(entry.and_then(|e| e.top_p)),
        ..SamplingParams::default()
    };
    let config = EngineConfig {
        name: name.to_owned(),
        model_path: path,
        context_length: local.context_length,
        parallel: local.parallel,
        threads: local.threads,
        queue_capacity: local.queue,
        batch_size: local.batch_size,
        gpu_layers: local.gpu_layers,
        default_sampling,
        default_system_prompt: default_system_prompt(local, entry),
        default_max_tokens: default_max_tokens(local, entry),
        repetition_guard: local.repetition_guard,
        prompt_cache: local.prompt_cache,
        flash_attention: local.flash_attention,
        keep_alive: match local.keep_alive {
            switchyard_config::KeepAlive::Forever => KeepAlive::Forever,
            switchyard_config::KeepAlive::After(idle) => KeepAlive::For(idle),
        },
        preload: engine_preloads(name, local),
    };
    Ok(LocalEngine::new(config, budget.clone())?)
}

/// Answer budget of a local model's requests without `max_tokens` when
/// neither its configuration nor the catalogue says: long enough for any
/// ordinary answer, short enough that a runaway one ends.
const FALLBACK_MAX_TOKENS: u32 = 1024;

/// The configured default system prompt, else the catalogue's; `""` is none.
fn default_system_prompt(local: &LocalModelConfig, entry: Option<&CatalogEntry>) -> Option<String> {
    let prompt = match &local.default_system_prompt {
        Some(configured) => configured.clone(),
        None => entry.and_then(|e| e.system_prompt)?.to_owned(),
    };
    (!prompt.is_empty()).then_some(prompt)
}

/// The configured answer budget, else the catalogue's, else
/// [`FALLBACK_MAX_TOKENS`]; 0 is none.
fn default_max_tokens(local: &LocalModelConfig, entry: Option<&CatalogEntry>) -> Option<u32> {
    let budget = local
        .default_max_tokens
        .or(entry.and_then(|e| e.max_tokens))
        .unwrap_or(FALLBACK_MAX_TOKENS);
    (budget > 0).then_some(budget)
}

fn start_embedder(name: &str, local: &LocalEmbeddingConfig) -> anyhow::Result<LocalEmbedder> {
    let (path, _) = local_path(name, &local.path, &local.catalog, ModelKind::Embedding)?;
    Ok(LocalEmbedder::start(EmbedderConfig {
        model_dir: path,
        max_batch: local.max_batch,
        max_tokens: local.max_tokens,
        queue_capacity: local.queue,
    })?)
}
