//! Ingestion: documents in, chunks with embeddings out, as background jobs
//! with progress.
//!
//! A job takes its collection's write lock, so writes to one collection
//! apply in submission order. Extraction and chunking run on blocking
//! threads; embedding goes to the embedder one batch at a time, so a long
//! ingestion never fills the embedder's queue ahead of interactive
//! requests. Finished documents are committed in groups: a crash loses at
//! most the group being written, and never leaves a document half-replaced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::{Instrument, info, warn};

use crate::RetrievalError;
use crate::chunk::{ChunkSettings, TokenCount, chunk_text};
use crate::collections::{Collection, blocking};
use crate::extract::{Format, extract};
use crate::index::{ChunkRecord, DocumentRecord, WriteBatch};

/// Texts embedded per call.
const EMBED_BATCH: usize = 32;
/// Chunks gathered before a commit.
const COMMIT_CHUNKS: usize = 1_024;
/// Finished jobs remembered for status queries.
const KEPT_JOBS: usize = 1_000;
/// Longest document id accepted, in bytes.
const MAX_ID_BYTES: usize = 512;

/// Turns texts into vectors: the configured embeddings model, whatever
/// backend serves it.
pub trait Embedder: Send + Sync {
    /// One vector per text, in order.
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'_, Result<Vec<Vec<f32>>, RetrievalError>>;
}

/// A document to ingest.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentInput {
    /// The caller's id; ingesting the same id again replaces the document.
    pub id: String,
    /// Its title; the first heading or line when absent.
    pub title: Option<String>,
    /// How to read `content`.
    pub format: Format,
    /// The raw bytes.
    pub content: Vec<u8>,
    /// Where it came from (a path, a URL).
    pub source: Option<String>,
    /// Fields for search filters.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for an earlier write to the collection.
    Queued,
    /// Reading, embedding and indexing.
    Running,
    /// Done; some documents may have failed (see `failures`).
    Succeeded,
    /// Stopped early; documents committed before the failure stay.
    Failed,
}

/// A document that could not be ingested, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentFailure {
    /// The document's id.
    pub document_id: String,
    /// Why.
    pub error: String,
}

/// A job's progress, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSnapshot {
    /// `ingest_…`.
    pub id: String,
    /// Always `ingestion.job`.
    pub object: &'static str,
    /// The collection written to.
    pub collection: String,
    /// Where the job stands.
    pub status: JobStatus,
    /// Documents submitted.
    pub documents_total: usize,
    /// Documents finished (indexed, skipped or failed).
    pub documents_done: usize,
    /// Documents left as they were because their content had not changed.
    pub documents_unchanged: usize,
    /// Documents that could not be read.
    pub failures: Vec<DocumentFailure>,
    /// Chunks cut so far.
    pub chunks_total: usize,
    /// Chunks embedded so far.
    pub chunks_embedded: usize,
    /// Chunks committed to the index (searchable).
    pub chunks_indexed: usize,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds, once finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// Why the job failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Job {
    tenant: String,
    progress: Mutex<JobSnapshot>,
}

impl Job {
    fn update(&self, change: impl FnOnce(&mut JobSnapshot)) {
        change(&mut self.progress.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn snapshot(&self) -> JobSnapshot {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs ingestion jobs and remembers their progress.
pub struct Ingestor {
    embedder: Arc<dyn Embedder>,
    counter: Arc<dyn TokenCount>,
    settings: ChunkSettings,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
}

impl Ingestor {
    /// An ingestor that embeds with `embedder` and chunks by `counter`'s tokens.
    pub fn new(
        embedder: Arc<dyn Embedder>,
        counter: Arc<dyn TokenCount>,
        settings: ChunkSettings,
    ) -> Self {
        Self {
            embedder,
            counter,
            settings,
            jobs: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a job in the background and returns its first snapshot.
    pub fn submit(
        self: &Arc<Self>,
        collection: Arc<Collection>,
        documents: Vec<DocumentInput>,
    ) -> Result<JobSnapshot, RetrievalError> {
        let job = self.register(&collection, &documents)?;
        let snapshot = job.snapshot();
        let ingestor = self.clone();
        let span =
            tracing::info_span!("ingest", job = %snapshot.id, collection = %collection.info().name);
        tokio::spawn(
            async move { ingestor.run(&job, &collection, documents).await }.instrument(span),
        );
        Ok(snapshot)
    }

    /// Runs a job to its end (what [`Self::submit`] does in the background).
    pub async fn ingest(
        self: &Arc<Self>,
        collection: Arc<Collection>,
        documents: Vec<DocumentInput>,
    ) -> Result<JobSnapshot, RetrievalError> {
        let job = self.register(&collection, &documents)?;
        self.run(&job, &collection, documents).await;
        Ok(job.snapshot())
    }

    /// A job of `tenant`'s; another tenant's jobs are not found.
    pub fn job(&self, tenant: &str, id: &str) -> Option<JobSnapshot> {
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        jobs.get(id)
            .filter(|job| job.tenant == tenant)
            .map(|job| job.snapshot())
    }

    fn register(
        &self,
        collection: &Collection,
        documents: &[DocumentInput],
    ) -> Result<Arc<Job>, RetrievalError> {
        if documents.is_empty() {
            return Err(RetrievalError::Invalid("no documents to ingest".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for document in documents {
            if document.id.trim().is_empty() || document.id.len() > MAX_ID_BYTES {
                return Err(RetrievalError::Invalid(format!(
                    "document ids must be 1 to {MAX_ID_BYTES} bytes"
                )));
            }
            if !seen.insert(document.id.as_str()) {
                return Err(RetrievalError::Invalid(format!(
                    "document `{}` appears twice in one request",
                    document.id
                )));
            }
        }
        let snapshot = JobSnapshot {
            id: format!("ingest_{}", uuid::Uuid::now_v7().simple()),
            object: "ingestion.job",
            collection: collection.info().name.clone(),
            status: JobStatus::Queued,
            documents_total: documents.len(),
            documents_done: 0,
            documents_unchanged: 0,
            failures: Vec::new(),
            chunks_total: 0,
            chunks_embedded: 0,
            chunks_indexed: 0,
            created_at: now(),
            finished_at: None,
            error: None,
        };
        let job = Arc::new(Job {
            tenant: collection.tenant().to_owned(),
            progress: Mutex::new(snapshot.clone()),
        });
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        if jobs.len() >= KEPT_JOBS {
            let finished: Vec<String> = jobs
                .iter()
                .filter(|(_, job)| job.snapshot().finished_at.is_some())
                .map(|(id, _)| id.clone())
                .collect();
            // Ids are time-ordered (UUIDv7): the oldest go first.
            let mut finished = finished;
            finished.sort();
            for id in finished.iter().take(jobs.len() + 1 - KEPT_JOBS) {
                jobs.remove(id);
            }
        }
        jobs.insert(snapshot.id.clone(), job.clone());
        Ok(job)
    }

    async fn run(&self, job: &Job, collection: &Collection, documents: Vec<DocumentInput>) {
        let _writing = collection.writing.lock().await;
        job.update(|p| p.status = JobStatus::Running);
        let started = std::time::Instant::now();
        let outcome = self.run_locked(job, collection, documents).await;
        job.update(|p| {
            p.finished_at = Some(now());
            match outcome {
                Ok(()) => p.status = JobStatus::Succeeded,
                Err(error) => {
                    p.status = JobStatus::Failed;
                    p.error = Some(error.to_string());
                }
            }
        });
        let done = job.snapshot();
        info!(
            status = ?done.status,
            documents = done.documents_done,
            unchanged = done.documents_unchanged,
            failed = done.failures.len(),
            chunks = done.chunks_indexed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "ingestion finished"
        );
    }

    async fn run_locked(
        &self,
        job: &Job,
        collection: &Collection,
        documents: Vec<DocumentInput>,
    ) -> Result<(), RetrievalError> {
        let index = collection.index();
        let mut pending = WriteBatch::default();
        let mut pending_chunks = 0;
        for document in documents {
            let hash = content_hash(&document, self.settings);
            let id = document.id.clone();
            let lookup_index = index.clone();
            let lookup_id = id.clone();
            let stored = blocking(move || lookup_index.content_hash(&lookup_id)).await?;
            if stored.as_deref() == Some(hash.as_str()) {
                job.update(|p| {
                    p.documents_done += 1;
                    p.documents_unchanged += 1;
                });
                continue;
            }
            let record = match self.prepare(document, hash).await {
                Ok(record) => record,
                Err(error) => {
                    warn!(document = %id, %error, "document not ingested");
                    job.update(|p| {
                        p.documents_done += 1;
                        p.failures.push(DocumentFailure {
                            document_id: id,
                            error: error.to_string(),
                        });
                    });
                    continue;
                }
            };
            let chunk_count = record.chunks.len();
            job.update(|p| p.chunks_total += chunk_count);
            let record = match self.embed(job, record).await {
                Ok(record) => record,
                Err(error) => {
                    // Documents embedded before this one are complete:
                    // keep them.
                    self.commit(job, &index, std::mem::take(&mut pending))
                        .await?;
                    return Err(error);
                }
            };
            pending.upserts.push(record);
            pending_chunks += chunk_count;
            job.update(|p| p.documents_done += 1);
            if pending_chunks >= COMMIT_CHUNKS {
                self.commit(job, &index, std::mem::take(&mut pending))
                    .await?;
                pending_chunks = 0;
            }
        }
        self.commit(job, &index, pending).await
    }

    /// Extracts and chunks a document on a blocking thread.
    async fn prepare(
        &self,
        document: DocumentInput,
        content_hash: String,
    ) -> Result<DocumentRecord, RetrievalError> {
        let counter = self.counter.clone();
        let settings = self.settings;
        blocking(move || {
            let extracted = extract(document.format, &document.content)?;
            let chunks = chunk_text(
                &extracted.text,
                document.format.is_structured(),
                settings,
                counter.as_ref(),
            )?;
            let title = document
                .title
                .filter(|t| !t.trim().is_empty())
                .or(extracted.title)
                .unwrap_or_else(|| document.id.clone());
            Ok(DocumentRecord {
                id: document.id,
                title,
                source: document.source,
                format: document.format.as_str().to_owned(),
                content_hash,
                metadata: document.metadata,
                chunks: chunks
                    .into_iter()
                    .map(|c| ChunkRecord::new(c, Vec::new()))
                    .collect(),
            })
        })
        .await
    }

    /// Embeds a document's chunks, a batch at a time. Each chunk is
    /// embedded with its document's title and section above it, so that a
    /// chunk deep in a page still matches questions about the page's topic.
    async fn embed(
        &self,
        job: &Job,
        mut record: DocumentRecord,
    ) -> Result<DocumentRecord, RetrievalError> {
        let texts: Vec<String> = record
            .chunks
            .iter()
            .map(|c| embedding_text(&record.title, &c.heading_path, &c.text))
            .collect();
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(EMBED_BATCH) {
            let embedded = self.embedder.embed(batch.to_vec()).await?;
            if embedded.len() != batch.len() {
                return Err(RetrievalError::Index(format!(
                    "the embedder returned {} vectors for {} texts",
                    embedded.len(),
                    batch.len()
                )));
            }
            job.update(|p| p.chunks_embedded += batch.len());
            vectors.extend(embedded);
        }
        for (chunk, vector) in record.chunks.iter_mut().zip(vectors) {
            chunk.vector = vector;
        }
        Ok(record)
    }

    async fn commit(
        &self,
        job: &Job,
        index: &Arc<dyn crate::ChunkIndex>,
        batch: WriteBatch,
    ) -> Result<(), RetrievalError> {
        if batch.upserts.is_empty() && batch.deletes.is_empty() {
            return Ok(());
        }
        let chunks: usize = batch.upserts.iter().map(|d| d.chunks.len()).sum();
        let index = index.clone();
        blocking(move || index.write(batch)).await?;
        job.update(|p| p.chunks_indexed += chunks);
        Ok(())
    }
}

/// The text embedded for a chunk: its document's title and its section,
/// then the chunk itself.
pub(crate) fn embedding_text(title: &str, heading_path: &[String], text: &str) -> String {
    let section = heading_path
        .iter()
        .filter(|h| h.as_str() != title)
        .cloned()
        .collect::<Vec<_>>()
        .join(" > ");
    if section.is_empty() {
        format!("{title}\n\n{text}")
    } else {
        format!("{title} > {section}\n\n{text}")
    }
}

/// Same content, format, metadata and chunk settings → same hash: the
/// document would be indexed exactly as it is.
fn content_hash(document: &DocumentInput, settings: ChunkSettings) -> String {
    let mut hash = Sha256::new();
    hash.update(document.format.as_str());
    hash.update([0]);
    hash.update(document.title.as_deref().unwrap_or(""));
    hash.update([0]);
    hash.update(document.source.as_deref().unwrap_or(""));
    hash.update([0]);
    hash.update(serde_json::Value::Object(document.metadata.clone()).to_string());
    hash.update([0]);
    hash.update(settings.max_tokens.to_le_bytes());
    hash.update(settings.overlap_tokens.to_le_bytes());
    hash.update(&document.content);
    hex::encode(hash.finalize())
}
