//! The semantic cache (opt-in per route): a request whose last user turn
//! means what an earlier one meant (their vectors' cosine similarity
//! reaches the route's threshold), with everything else the same (the
//! caller, the route, the rest of the conversation, the sampling and
//! tools), gets the earlier answer.
//!
//! Entries are grouped under a key of everything but the last user turn;
//! a lookup compares the turn's vector with each entry of its group (at
//! most [`PER_KEY`], newest first). In memory by default; in Redis when
//! the cache is, so that replicas share hits. A store that fails is a
//! miss, never a failed request.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use switchyard_core::{ChatRequest, Role};
use tracing::warn;

use crate::cache::{CachedAnswer, cache_key};
use crate::semantic::cosine;

/// Entries kept per group (the same conversation but its last turn).
pub const PER_KEY: usize = 64;

/// A route's semantic cache settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticCacheSpec {
    /// The embeddings model (or route) that compares.
    pub model: String,
    /// The similarity that counts as the same question.
    pub threshold: f32,
}

/// An answer, with the vector of the turn it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SemanticEntry {
    /// The last user turn's vector.
    pub vector: Vec<f32>,
    /// The answer.
    pub answer: CachedAnswer,
}

/// Where semantic entries are kept.
pub trait SemanticStore: Send + Sync + 'static {
    /// The entries under `key`, newest first.
    fn entries<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Vec<SemanticEntry>>;
    /// Adds an entry under `key` (the oldest beyond [`PER_KEY`] go).
    fn add(&self, key: String, entry: SemanticEntry) -> BoxFuture<'_, ()>;
}

/// The closest entry to `vector` at or above `threshold`, with its
/// similarity.
pub fn best_match(
    entries: Vec<SemanticEntry>,
    vector: &[f32],
    threshold: f32,
) -> Option<(CachedAnswer, f32)> {
    entries
        .into_iter()
        .map(|entry| {
            let similarity = cosine(vector, &entry.vector);
            (entry.answer, similarity)
        })
        .filter(|(_, similarity)| *similarity >= threshold)
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// The group key: the cache key of the request without its last user
/// turn's text.
pub(crate) fn semantic_key(caller: &str, route: &str, request: &ChatRequest) -> String {
    let mut without_turn = request.clone();
    if let Some(last) = without_turn
        .messages
        .iter_mut()
        .rev()
        .find(|m| m.role == Role::User)
    {
        last.content.clear();
    }
    format!("sem:{}", cache_key(caller, route, &without_turn))
}

type Group = Arc<Mutex<VecDeque<SemanticEntry>>>;

/// The in-process store.
pub struct MemorySemanticStore {
    groups: moka::future::Cache<String, Group>,
}

impl MemorySemanticStore {
    /// At most `max_groups` groups, each kept for `ttl` after it was made.
    pub fn new(max_groups: u64, ttl: Duration) -> Self {
        Self {
            groups: moka::future::Cache::builder()
                .max_capacity(max_groups)
                .time_to_live(ttl)
                .build(),
        }
    }
}

impl SemanticStore for MemorySemanticStore {
    fn entries<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Vec<SemanticEntry>> {
        Box::pin(async move {
            match self.groups.get(key).await {
                Some(group) => group
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .cloned()
                    .collect(),
                None => Vec::new(),
            }
        })
    }

    fn add(&self, key: String, entry: SemanticEntry) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let group = self.groups.get_with(key, async { Group::default() }).await;
            let mut entries = group.lock().unwrap_or_else(PoisonError::into_inner);
            entries.push_front(entry);
            entries.truncate(PER_KEY);
        })
    }
}

/// The store in Redis: one list per group, newest first.
pub struct RedisSemanticStore {
    connection: redis::aio::ConnectionManager,
    ttl: Duration,
}

const REDIS_PREFIX: &str = "switchyard:semantic:";

impl RedisSemanticStore {
    /// Connects to `url`; fails if Redis cannot be reached now.
    pub async fn connect(url: &str, ttl: Duration) -> Result<Self, redis::RedisError> {
        Ok(Self {
            connection: crate::cache::redis_connection(url).await?,
            ttl,
        })
    }
}

impl SemanticStore for RedisSemanticStore {
    fn entries<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Vec<SemanticEntry>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let stored: Vec<Vec<u8>> = match redis::cmd("LRANGE")
                .arg(format!("{REDIS_PREFIX}{key}"))
                .arg(0)
                .arg(PER_KEY as i64 - 1)
                .query_async(&mut connection)
                .await
            {
                Ok(stored) => stored,
                Err(error) => {
                    warn!(%error, "semantic cache read failed; treating as a miss");
                    return Vec::new();
                }
            };
            stored
                .iter()
                .filter_map(|bytes| serde_json::from_slice(bytes).ok())
                .collect()
        })
    }

    fn add(&self, key: String, entry: SemanticEntry) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Ok(bytes) = serde_json::to_vec(&entry) else {
                return;
            };
            let list = format!("{REDIS_PREFIX}{key}");
            let mut connection = self.connection.clone();
            let result: Result<(), redis::RedisError> = redis::pipe()
                .atomic()
                .cmd("LPUSH")
                .arg(&list)
                .arg(bytes)
                .ignore()
                .cmd("LTRIM")
                .arg(&list)
                .arg(0)
                .arg(PER_KEY as i64 - 1)
                .ignore()
                .cmd("EXPIRE")
                .arg(&list)
                .arg(self.ttl.as_secs().max(1))
                .ignore()
                .query_async(&mut connection)
                .await;
            if let Err(error) = result {
                warn!(%error, "semantic cache write failed");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::{ChatMessage, FinishReason, Usage};

    fn answer(text: &str) -> CachedAnswer {
        CachedAnswer {
            deployment: "d".into(),
            model: "m".into(),
            chunks: vec![text.into()],
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage: Usage::new(1, 1),
        }
    }

    #[test]
    fn the_group_key_ignores_the_last_turn_and_nothing_else() {
        let ask = |system: &str, turn: &str| {
            ChatRequest::new(
                "m",
                vec![
                    ChatMessage::new(Role::System, system),
                    ChatMessage::new(Role::User, turn),
                ],
            )
        };
        let a = semantic_key("t", "r", &ask("be brief", "capital of France?"));
        assert_eq!(
            a,
            semantic_key("t", "r", &ask("be brief", "France's capital?"))
        );
        assert_ne!(
            a,
            semantic_key("t", "r", &ask("be verbose", "capital of France?"))
        );
        assert_ne!(
            a,
            semantic_key("u", "r", &ask("be brief", "capital of France?"))
        );
    }

    #[tokio::test]
    async fn the_closest_entry_above_the_threshold_answers() {
        let store = MemorySemanticStore::new(10, Duration::from_secs(60));
        store
            .add(
                "k".into(),
                SemanticEntry {
                    vector: vec![1.0, 0.0],
                    answer: answer("east"),
                },
            )
            .await;
        store
            .add(
                "k".into(),
                SemanticEntry {
                    vector: vec![0.0, 1.0],
                    answer: answer("north"),
                },
            )
            .await;
        let entries = store.entries("k").await;
        assert_eq!(entries.len(), 2);
        let (hit, similarity) = best_match(entries.clone(), &[0.1, 0.99], 0.9).unwrap();
        assert_eq!(hit.chunks, vec!["north"]);
        assert!(similarity > 0.99);
        assert!(best_match(entries, &[0.7, 0.7], 0.9).is_none());
        assert!(store.entries("other").await.is_empty());
    }
}
