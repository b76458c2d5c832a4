//! Switchyard's embedded embedder: BERT sentence-embedding models (such as
//! all-MiniLM-L6-v2) run in-process on candle.
//!
//! One thread per model owns the weights; requests wait in a bounded queue
//! (full → 503). The thread takes every waiting request at once, sorts their
//! inputs by length so that padding stays small, and runs them as batched
//! forward passes, so many inputs (from one request or several) share each
//! pass. Vectors are mean-pooled over real tokens and L2-normalised, as
//! sentence-transformers does for these models.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use futures::future::BoxFuture;
use switchyard_core::{
    BackendError, BackendInfo, EmbeddingBackend, EmbeddingRequest, EmbeddingResponse, ErrorKind,
};
use tokenizers::Tokenizer;
use tokio::sync::{oneshot, watch};
use tracing::{debug, error, info};

/// How long a client should wait before retrying when the queue is full.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How to run one embedding model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedderConfig {
    /// Folder with `model.safetensors`, `tokenizer.json` and `config.json`.
    pub model_dir: PathBuf,
    /// Inputs per forward pass.
    pub max_batch: usize,
    /// Tokens per input; longer inputs are truncated (as sentence-transformers does).
    pub max_tokens: usize,
    /// Requests that may wait before new ones get 503.
    pub queue_capacity: usize,
}

impl EmbedderConfig {
    /// Defaults for `model_dir`: batches of 32, 256 tokens per input.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        Self {
            model_dir: model_dir.into(),
            max_batch: 32,
            max_tokens: 256,
            queue_capacity: 256,
        }
    }
}

/// Why an embedding model could not be started.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedderError {
    /// A model file is missing.
    #[error("{0} does not exist")]
    Missing(PathBuf),
    /// A model file could not be read or used.
    #[error("could not load the embedding model from {path}: {reason}")]
    Load {
        /// The folder.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The thread could not start or stopped.
    #[error("the embedder thread stopped")]
    Stopped,
}

#[derive(Clone)]
enum LoadState {
    Loading,
    Ready { dimensions: usize, name: String },
    Failed(EmbedderError),
}

struct Job {
    inputs: Vec<String>,
    reply: oneshot::Sender<Result<Embedded, BackendError>>,
    span: tracing::Span,
}

struct Embedded {
    vectors: Vec<Vec<f32>>,
    tokens: u32,
}

/// An in-process sentence-embedding model.
pub struct LocalEmbedder {
    config: EmbedderConfig,
    state: watch::Receiver<LoadState>,
    jobs: SyncSender<Job>,
}

impl LocalEmbedder {
    /// Starts the model's thread, which loads the weights in the background.
    pub fn start(config: EmbedderConfig) -> Result<Self, EmbedderError> {
        for file in ["model.safetensors", "tokenizer.json", "config.json"] {
            let path = config.model_dir.join(file);
            if !path.is_file() {
                return Err(EmbedderError::Missing(path));
            }
        }
        let (state_tx, state_rx) = watch::channel(LoadState::Loading);
        let (jobs_tx, jobs_rx) = sync_channel(config.queue_capacity);
        let thread_config = config.clone();
        std::thread::Builder::new()
            .name("switchyard-embedder".into())
            .spawn(move || run(thread_config, state_tx, jobs_rx))
            .map_err(|_| EmbedderError::Stopped)?;
        Ok(Self {
            config,
            state: state_rx,
            jobs: jobs_tx,
        })
    }

    /// Waits until the model is loaded, or reports why it failed.
    pub async fn wait_ready(&self) -> Result<(), EmbedderError> {
        let mut state = self.state.clone();
        let settled = state
            .wait_for(|s| !matches!(s, LoadState::Loading))
            .await
            .map_err(|_| EmbedderError::Stopped)?;
        match &*settled {
            LoadState::Failed(error) => Err(error.clone()),
            _ => Ok(()),
        }
    }

    /// The vectors' size once loaded.
    pub fn dimensions(&self) -> Option<usize> {
        match &*self.state.borrow() {
            LoadState::Ready { dimensions, .. } => Some(*dimensions),
            _ => None,
        }
    }

    async fn embed_inner(
        &self,
        request: EmbeddingRequest,
    ) -> Result<EmbeddingResponse, BackendError> {
        let (dimensions, name) = match &*self.state.borrow() {
            LoadState::Ready { dimensions, name } => (*dimensions, name.clone()),
            LoadState::Loading => {
                return Err(BackendError::new(
                    ErrorKind::Overloaded,
                    "the embedding model is still loading; retry shortly",
                )
                .with_retry_after(Some(BUSY_RETRY_AFTER)));
            }
            LoadState::Failed(error) => {
                return Err(BackendError::internal(format!(
                    "the embedding model failed to load: {error}"
                )));
            }
        };
        if let Some(asked) = request.dimensions
            && asked as usize != dimensions
        {
            return Err(BackendError::invalid_request(format!(
                "this model produces {dimensions}-dimensional vectors and cannot shorten them; omit `dimensions` or set it to {dimensions}"
            ))
            .with_param("dimensions"));
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            inputs: request.inputs,
            reply,
            span: tracing::Span::current(),
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(BackendError::new(
                    ErrorKind::Overloaded,
                    format!(
                        "the embedder is at capacity ({} requests waiting); retry shortly",
                        self.config.queue_capacity
                    ),
                )
                .with_retry_after(Some(BUSY_RETRY_AFTER)));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(BackendError::internal("the embedder has stopped"));
            }
        }
        let embedded = answer
            .await
            .map_err(|_| BackendError::internal("the embedder dropped the request"))??;
        Ok(EmbeddingResponse {
            model: name,
            embeddings: embedded.vectors,
            prompt_tokens: embedded.tokens,
        })
    }
}

impl EmbeddingBackend for LocalEmbedder {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "local-embedding",
            upstream_model: self
                .config
                .model_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            owned_by: "switchyard".into(),
        }
    }

    fn is_ready(&self) -> bool {
        matches!(&*self.state.borrow(), LoadState::Ready { .. })
    }

    fn embed(
        &self,
        request: EmbeddingRequest,
    ) -> BoxFuture<'_, Result<EmbeddingResponse, BackendError>> {
        Box::pin(self.embed_inner(request))
    }
}

/// The loaded model, owned by its thread.
struct Model {
    bert: BertModel,
    tokenizer: Tokenizer,
    pad_id: u32,
    max_tokens: usize,
    max_batch: usize,
}

fn load(config: &EmbedderConfig) -> Result<(Model, usize), EmbedderError> {
    let dir = &config.model_dir;
    let fail = |reason: String| EmbedderError::Load {
        path: dir.clone(),
        reason,
    };
    let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| fail(format!("{name}: {e}")));
    let bert_config: BertConfig = serde_json::from_slice(&read("config.json")?)
        .map_err(|e| fail(format!("config.json: {e}")))?;
    let dimensions = serde_json::from_slice::<serde_json::Value>(&read("config.json")?)
        .ok()
        .and_then(|c| c.get("hidden_size").and_then(serde_json::Value::as_u64))
        .map_or(0, |d| d as usize);
    let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
        .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
    // Padding is done here, per batch; truncation keeps inputs within the
    // model's trained length.
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams {
            max_length: config.max_tokens,
            ..Default::default()
        }))
        .map_err(|e| fail(format!("tokenizer truncation: {e}")))?;
    let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
    let weights = read("model.safetensors")?;
    let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
        .map_err(|e| fail(format!("model.safetensors: {e}")))?;
    let bert = BertModel::load(vb, &bert_config).map_err(|e| fail(format!("weights: {e}")))?;
    Ok((
        Model {
            bert,
            tokenizer,
            pad_id,
            max_tokens: config.max_tokens,
            max_batch: config.max_batch.max(1),
        },
        dimensions,
    ))
}

fn run(config: EmbedderConfig, state: watch::Sender<LoadState>, jobs: Receiver<Job>) {
    let started = Instant::now();
    let (model, dimensions) = match load(&config) {
        Ok(loaded) => loaded,
        Err(e) => {
            error!(error = %e, "embedding model failed to load");
            state.send_replace(LoadState::Failed(e));
            return;
        }
    };
    let name = config
        .model_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    info!(
        model = %name,
        dimensions,
        load_ms = started.elapsed().as_millis() as u64,
        "embedding model loaded"
    );
    state.send_replace(LoadState::Ready { dimensions, name });
    while let Ok(first) = jobs.recv() {
        // Everything waiting now shares the forward passes.
        let mut batch = vec![first];
        while let Ok(job) = jobs.try_recv() {
            batch.push(job);
        }
        batch.retain(|job| !job.reply.is_closed());
        if !batch.is_empty() {
            serve(&model, batch);
        }
    }
    info!("embedder thread stopped");
}

/// Embeds every input of `jobs` and answers each job.
fn serve(model: &Model, jobs: Vec<Job>) {
    let started = Instant::now();
    let texts: Vec<&str> = jobs
        .iter()
        .flat_map(|job| job.inputs.iter().map(String::as_str))
        .collect();
    let total = texts.len();
    let result = model.embed(&texts);
    drop(texts);
    let elapsed = started.elapsed();
    match result {
        Ok((mut vectors, mut token_counts)) => {
            // Hand each job its own slice, in order.
            for job in jobs.into_iter().rev() {
                let n = job.inputs.len();
                let mine = vectors.split_off(vectors.len() - n);
                let counts = token_counts.split_off(token_counts.len() - n);
                let tokens = counts.iter().sum::<usize>();
                let _entered = job.span.enter();
                debug!(inputs = n, tokens, "embedded");
                let _ = job.reply.send(Ok(Embedded {
                    vectors: mine,
                    tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
                }));
            }
            debug!(
                inputs = total,
                ms = elapsed.as_millis() as u64,
                "embedding batch done"
            );
        }
        Err(message) => {
            error!(%message, "embedding failed");
            for job in jobs {
                let _ = job.reply.send(Err(BackendError::internal(format!(
                    "the embedder failed: {message}"
                ))));
            }
        }
    }
}

impl Model {
    /// Vectors and token counts for `texts`, in their order.
    fn embed(&self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, Vec<usize>), String> {
        let encodings = texts
            .iter()
            .map(|text| {
                self.tokenizer
                    .encode(*text, true)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| format!("tokenizer: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Similar lengths in one pass keep padding (wasted compute) small.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encodings[i].len());
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(self.max_batch) {
            let ids: Vec<&[u32]> = chunk.iter().map(|&i| encodings[i].as_slice()).collect();
            let pooled = self
                .forward(&ids)
                .map_err(|e| format!("forward pass: {e}"))?;
            for (&index, vector) in chunk.iter().zip(pooled) {
                vectors[index] = vector;
            }
        }
        let counts = encodings.iter().map(Vec::len).collect();
        Ok((vectors, counts))
    }

    /// One forward pass over a batch of token sequences.
    fn forward(&self, batch: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let width = batch
            .iter()
            .map(|ids| ids.len())
            .max()
            .unwrap_or(0)
            .clamp(1, self.max_tokens);
        let mut ids = Vec::with_capacity(batch.len() * width);
        let mut mask = Vec::with_capacity(batch.len() * width);
        for sequence in batch {
            let len = sequence.len().min(width);
            ids.extend_from_slice(&sequence[..len]);
            ids.extend(std::iter::repeat_n(self.pad_id, width - len));
            mask.extend(std::iter::repeat_n(1u32, len));
            mask.extend(std::iter::repeat_n(0u32, width - len));
        }
        let shape = (batch.len(), width);
        let device = &self.bert.device;
        let ids = Tensor::from_vec(ids, shape, device)?;
        let mask = Tensor::from_vec(mask, shape, device)?;
        let types = ids.zeros_like()?;
        let hidden = self.bert.forward(&ids, &types, Some(&mask))?;
        // Mean over real tokens only, then unit length.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        let unit = mean.broadcast_div(&norms)?;
        unit.to_vec2::<f32>()
    }
}
