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
use tokio::sync::OnceCell;
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
    /// Collections opened or being opened, by folder.
    open: tokio::sync::Mutex<HashMap<PathBuf, Arc<OnceCell<Arc<Collection>>>>>,
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

    /// Opens a tenant's collection, or returns it if it is open. Opening
    /// one collection never holds up lookups of the others.
    pub async fn get(&self, tenant: &str, name: &str) -> Result<Arc<Collection>, RetrievalError> {
        let dir = self.dir(tenant, name)?;
        let cell = self
            .open
            .lock()
            .await
            .entry(dir.clone())
            .or_default()
            .clone();
        let opened = cell
            .get_or_try_init(|| async {
                let opening = dir.clone();
                let missing = not_found(name);
                let (info, index) = blocking(move || {
                    let Some(info) = read_info(&opening) else {
                        return Err(missing);
                    };
                    Ok((info, LocalIndex::open(&opening.join(INDEX_DIR))?))
                })
                .await?;
                Ok::<_, RetrievalError>(Arc::new(Collection {
                    tenant: tenant.to_owned(),
                    info,
                    index: Arc::new(index),
                    writing: tokio::sync::Mutex::new(()),
                }))
            })
            .await
            .cloned();
        if opened.is_err() {
            // Unknown names must not pile up in the map.
            let mut open = self.open.lock().await;
            if open.get(&dir).is_some_and(|c| !c.initialized()) {
                open.remove(&dir);
            }
        }
        opened
    }

    /// Deletes a collection and everything in it.
    pub async fn delete(&self, tenant: &str, name: &str) -> Result<(), RetrievalError> {
        let dir = self.dir(tenant, name)?;
        let trash = self
            .root
            .join(TRASH_DIR)
            .join(uuid::Uuid::new_v4().simple().to_string());
        let was_open = {
            let mut open = self.open.lock().await;
            let (from, to) = (dir.clone(), trash.clone());
            let missing = not_found(name);
            blocking(move || {
                if read_info(&from).is_none() {
                    return Err(missing);
                }
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                // One rename makes the collection vanish at once, for
                // lookups that come after; the files go below.
                std::fs::rename(&from, &to)?;
                Ok(())
            })
            .await?;
            open.remove(&dir)
        };
        if let Some(collection) = was_open.and_then(|cell| cell.get().cloned()) {
            // A running ingestion fails at its next commit; let it stop
            // before its files go.
            let _writing = collection.writing.lock().await;
        }
        blocking(move || {
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

fn not_found(name: &str) -> RetrievalError {
    RetrievalError::NotFound(format!("no collection named `{name}`"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{ChunkRecord, DocumentRecord};

    fn one_chunk(id: &str) -> WriteBatch {
        WriteBatch {
            upserts: vec![DocumentRecord {
                id: id.into(),
                title: id.into(),
                source: None,
                format: "text".into(),
                content_hash: String::new(),
                metadata: serde_json::Map::new(),
                chunks: vec![ChunkRecord {
                    position: 0,
                    text: "Refunds take fourteen days.".into(),
                    start: 0,
                    end: 27,
                    heading_path: Vec::new(),
                    tokens: 6,
                    vector: vec![1.0, 0.0, 0.0],
                }],
            }],
            deletes: Vec::new(),
        }
    }

    #[tokio::test]
    async fn collections_belong_to_their_tenant_and_deleting_one_frees_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let collections = Collections::new(dir.path(), "test-embedder");
        collections.create("acme", "docs", None).await.unwrap();
        assert!(matches!(
            collections.create("acme", "docs", None).await,
            Err(RetrievalError::Conflict(_))
        ));
        assert!(matches!(
            collections.get("acme", "nope").await,
            Err(RetrievalError::NotFound(_))
        ));
        assert!(
            collections.open.lock().await.is_empty(),
            "unknown names leave nothing behind"
        );
        assert!(matches!(
            collections.get("globex", "docs").await,
            Err(RetrievalError::NotFound(_))
        ));

        let docs = collections.get("acme", "docs").await.unwrap();
        docs.index().write(one_chunk("refunds")).unwrap();
        assert_eq!(docs.stats().await.chunks, 1);
        let again = collections.get("acme", "docs").await.unwrap();
        assert!(Arc::ptr_eq(&docs, &again), "opened once");

        collections.delete("acme", "docs").await.unwrap();
        assert!(matches!(
            collections.get("acme", "docs").await,
            Err(RetrievalError::NotFound(_))
        ));
        assert!(matches!(
            collections.delete("acme", "docs").await,
            Err(RetrievalError::NotFound(_))
        ));
        collections.create("acme", "docs", None).await.unwrap();
        let fresh = collections.get("acme", "docs").await.unwrap();
        assert_eq!(fresh.stats().await.chunks, 0);
        let trash: Vec<_> = std::fs::read_dir(dir.path().join(TRASH_DIR))
            .unwrap()
            .collect();
        assert!(trash.is_empty(), "a deleted collection's files are removed");
    }
}
