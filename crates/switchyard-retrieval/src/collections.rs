//! Collections: named sets of documents, each owned by one tenant, each
//! with its own index in its own folder.
//!
//! A tenant's collections live under a folder named after the tenant, so
//! that no lookup by name can reach another tenant's: a collection is only
//! ever found through the caller's own tenant.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::RetrievalError;
use crate::index::{ChunkIndex, DocumentSummary, Hit, IndexStats, SearchQuery, WriteBatch};
use crate::local::LocalIndex;

const INFO_FILE: &str = "collection.json";
const INDEX_DIR: &str = "index";
const TRASH_DIR: &str = ".trash";

/// What a collection is, as stored beside its index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionInfo {
    /// Its name, unique within its tenant.
    pub name: String,
    /// What it holds, in the owner's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// The embedding model its vectors come from.
    pub embedding_model: String,
}

/// Collection names: what URLs and folders can carry unescaped.
pub fn validate_name(name: &str) -> Result<(), RetrievalError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(RetrievalError::Invalid(format!(
            "invalid collection name `{name}`: use 1 to 64 letters, digits, `-`, `_` or `.`, not starting with `.`"
        )))
    }
}

/// An open collection.
pub struct Collection {
    tenant: String,
    info: CollectionInfo,
    index: Arc<dyn ChunkIndex>,
    /// Held by whatever writes (an ingestion job, a deletion), so that
    /// writes to one collection happen one at a time and in order.
    pub(crate) writing: tokio::sync::Mutex<()>,
}

impl Collection {
    /// Its description.
    pub fn info(&self) -> &CollectionInfo {
        &self.info
    }

    /// The tenant that owns it.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Its index.
    pub fn index(&self) -> Arc<dyn ChunkIndex> {
        self.index.clone()
    }

    /// Searches it on a blocking thread.
    pub async fn search(&self, query: SearchQuery) -> Result<Vec<Hit>, RetrievalError> {
        let index = self.index.clone();
        blocking(move || index.search(&query)).await
    }

    /// Its documents.
    pub async fn documents(&self) -> Result<Vec<DocumentSummary>, RetrievalError> {
        let index = self.index.clone();
        blocking(move || index.documents()).await
    }

    /// Documents and chunks held.
    pub async fn stats(&self) -> IndexStats {
        let index = self.index.clone();
        blocking(move || Ok(index.stats()))
            .await
            .unwrap_or_default()
    }

    /// Removes a document and its chunks.
    pub async fn delete_document(&self, document_id: &str) -> Result<(), RetrievalError> {
        let _writing = self.writing.lock().await;
        let index = self.index.clone();
        let id = document_id.to_owned();
        blocking(move || {
            if index.content_hash(&id)?.is_none() {
                return Err(RetrievalError::NotFound(format!(
                    "no document `{id}` in this collection"
                )));
            }
            index.write(WriteBatch {
                upserts: Vec::new(),
                deletes: vec![id],
            })
        })
        .await
    }
}

/// Runs index work on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RetrievalError> + Send + 'static,
) -> Result<T, RetrievalError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RetrievalError::Index(format!("index task failed: {e}")))?
}

/// Every tenant's collections under one folder.
pub struct Collections {
    root: PathBuf,
    embedding_model: String,
    open: tokio::sync::Mutex<HashMap<PathBuf, Arc<Collection>>>,
}

impl Collections {
    /// Collections under `root`, embedded with `embedding_model`.
    pub fn new(root: impl Into<PathBuf>, embedding_model: impl Into<String>) -> Self {
        Self {
            root: root.into(),
            embedding_model: embedding_model.into(),
            open: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The embedding model new collections are built with.
    pub fn embedding_model(&self) -> &str {
        &self.embedding_model
    }

    fn tenant_dir(&self, tenant: &str) -> PathBuf {
        // Hex keeps any tenant id a safe, distinct folder name.
        self.root
            .join(format!("t-{}", hex::encode(tenant.as_bytes())))
    }

    fn dir(&self, tenant: &str, name: &str) -> Result<PathBuf, RetrievalError> {
        validate_name(name)?;
        Ok(self.tenant_dir(tenant).join(name))
    }

    /// Creates a collection; 409 if the tenant has one of that name.
    pub async fn create(
        &self,
        tenant: &str,
        name: &str,
        description: Option<String>,
    ) -> Result<CollectionInfo, RetrievalError> {
        let dir = self.dir(tenant, name)?;
        let info = CollectionInfo {
            name: name.to_owned(),
            description,
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            embedding_model: self.embedding_model.clone(),
        };
        let stored = info.clone();
        blocking(move || {
            if dir.join(INFO_FILE).exists() {
                return Err(RetrievalError::Conflict(format!(
                    "a collection named `{}` exists already",
                    stored.name
                )));
            }
            std::fs::create_dir_all(dir.join(INDEX_DIR))?;
            write_atomically(
                &dir.join(INFO_FILE),
                &serde_json::to_vec_pretty(&stored).unwrap_or_default(),
            )
        })
        .await?;
        Ok(info)
    }

    /// A tenant's collections, by name.
    pub async fn list(&self, tenant: &str) -> Result<Vec<CollectionInfo>, RetrievalError> {
        let dir = self.tenant_dir(tenant);
        blocking(move || {
            let mut found = Vec::new();
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
                Err(e) => return Err(e.into()),
            };
            for entry in entries.flatten() {
                if let Some(info) = read_info(&entry.path()) {
                    found.push(info);
                }
            }
            found.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(found)
        })
        .await
    }

    /// Opens a tenant's collection (its vector graph is built on first use).
    pub async fn get(&self, tenant: &str, name: &str) -> Result<Arc<Collection>, RetrievalError> {
        let dir = self.dir(tenant, name)?;
        let mut open = self.open.lock().await;
        if let Some(collection) = open.get(&dir) {
            return Ok(collection.clone());
        }
        let Some(info) = read_info(&dir) else {
            return Err(RetrievalError::NotFound(format!(
                "no collection named `{name}`"
            )));
        };
        let index_dir = dir.join(INDEX_DIR);
        let index = blocking(move || LocalIndex::open(&index_dir)).await?;
        let collection = Arc::new(Collection {
            tenant: tenant.to_owned(),
            info,
            index: Arc::new(index),
            writing: tokio::sync::Mutex::new(()),
        });
        open.insert(dir, collection.clone());
        Ok(collection)
    }

    /// Deletes a collection and everything in it.
    pub async fn delete(&self, tenant: &str, name: &str) -> Result<(), RetrievalError> {
        let dir = self.dir(tenant, name)?;
        let mut open = self.open.lock().await;
        if read_info(&dir).is_none() {
            return Err(RetrievalError::NotFound(format!(
                "no collection named `{name}`"
            )));
        }
        if let Some(collection) = open.remove(&dir) {
            // Let a running ingestion finish before its folder goes.
            let _writing = collection.writing.lock().await;
        }
        let trash = self
            .root
            .join(TRASH_DIR)
            .join(uuid::Uuid::new_v4().simple().to_string());
        blocking(move || {
            if let Some(parent) = trash.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // One rename makes the collection vanish at once; the files go after.
            std::fs::rename(&dir, &trash)?;
            if let Err(error) = std::fs::remove_dir_all(&trash) {
                warn!(path = %trash.display(), %error, "could not remove a deleted collection's files");
            }
            Ok(())
        })
        .await
    }

    /// Every tenant's collections, for opening them all at start-up.
    pub async fn all(&self) -> Vec<(String, String)> {
        let root = self.root.clone();
        blocking(move || {
            let mut found = Vec::new();
            for tenant in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                let folder = tenant.file_name().to_string_lossy().into_owned();
                let Some(tenant_id) = folder
                    .strip_prefix("t-")
                    .and_then(|h| hex::decode(h).ok())
                    .and_then(|b| String::from_utf8(b).ok())
                else {
                    continue;
                };
                for entry in std::fs::read_dir(tenant.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    if let Some(info) = read_info(&entry.path()) {
                        found.push((tenant_id.clone(), info.name));
                    }
                }
            }
            Ok(found)
        })
        .await
        .unwrap_or_default()
    }
}

fn read_info(dir: &Path) -> Option<CollectionInfo> {
    let bytes = std::fs::read(dir.join(INFO_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes a file so that a crash leaves the old one or the new one, never
/// a torn mix: write beside it, sync, rename over it.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), RetrievalError> {
    use std::io::Write;
    let partial = path.with_extension("partial");
    let mut file = std::fs::File::create(&partial)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    Ok(())
}
