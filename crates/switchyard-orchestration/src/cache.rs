//! The response cache: exact-match on the normalised request, per caller.
//!
//! An answer is stored with the text pieces it was streamed in, so a cached
//! stream replays as a stream, piece for piece, and a cached whole answer
//! replays as one. In memory (moka) by default; in Redis when configured, so
//! that every gateway instance shares it. A cache failure never fails a
//! request: it is logged and treated as a miss.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use switchyard_core::{
    ChatRequest, ChatResponse, ChatStream, FinishReason, StreamEvent, ToolCall, ToolCallDelta,
    Usage,
};
use tracing::warn;

/// A stored answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// The deployment that produced it.
    pub deployment: String,
    /// The model as the backend named it.
    pub model: String,
    /// The text, in the pieces it arrived in.
    pub chunks: Vec<String>,
    /// Tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Token counts of the original request.
    pub usage: Usage,
}

impl CachedAnswer {
    /// Stores a whole answer.
    pub fn from_response(deployment: &str, response: &ChatResponse) -> Self {
        Self {
            deployment: deployment.to_owned(),
            model: response.model.clone(),
            chunks: vec![response.content.clone()],
            tool_calls: response.tool_calls.clone(),
            finish_reason: response.finish_reason,
            usage: response.usage,
        }
    }

    /// The whole answer.
    pub fn to_response(&self) -> ChatResponse {
        ChatResponse {
            model: self.model.clone(),
            content: self.chunks.concat(),
            tool_calls: self.tool_calls.clone(),
            finish_reason: self.finish_reason,
            usage: self.usage,
            logprobs: None,
            tool_runs: Vec::new(),
        }
    }

    /// The answer as a stream of the pieces it was stored with.
    pub fn to_stream(&self) -> ChatStream {
        let mut events: Vec<StreamEvent> = self
            .chunks
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| StreamEvent::Delta(c.clone()))
            .collect();
        events.extend(self.tool_calls.iter().enumerate().map(|(index, call)| {
            StreamEvent::ToolCall(ToolCallDelta {
                index: u32::try_from(index).unwrap_or(0),
                id: Some(call.id.clone()),
                name: Some(call.name.clone()),
                arguments: call.arguments.clone(),
            })
        }));
        events.push(StreamEvent::Finish(self.finish_reason));
        events.push(StreamEvent::Usage(self.usage));
        stream::iter(events.into_iter().map(Ok)).boxed()
    }
}

/// Where answers are kept.
pub trait ResponseCache: Send + Sync + 'static {
    /// The answer stored under `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<CachedAnswer>>;
    /// Stores `answer` under `key`.
    fn put(&self, key: String, answer: CachedAnswer) -> BoxFuture<'_, ()>;
}

/// The in-process cache.
pub struct MemoryCache {
    entries: moka::future::Cache<String, Arc<CachedAnswer>>,
}

impl MemoryCache {
    /// At most `max_entries` answers, each kept for `ttl`.
    pub fn new(max_entries: u64, ttl: Duration) -> Self {
        Self {
            entries: moka::future::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .build(),
        }
    }
}

impl ResponseCache for MemoryCache {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<CachedAnswer>> {
        Box::pin(async move { self.entries.get(key).await.map(|a| (*a).clone()) })
    }

    fn put(&self, key: String, answer: CachedAnswer) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.entries.insert(key, Arc::new(answer)).await })
    }
}

/// The cache in Redis, shared by gateway instances.
pub struct RedisCache {
    connection: redis::aio::ConnectionManager,
    ttl: Duration,
}

const REDIS_PREFIX: &str = "switchyard:cache:";

impl RedisCache {
    /// Connects to `url`; fails if Redis cannot be reached now.
    pub async fn connect(url: &str, ttl: Duration) -> Result<Self, redis::RedisError> {
        Ok(Self {
            connection: redis_connection(url).await?,
            ttl,
        })
    }
}

/// A connection to the shared cache at `url` that gives up at once while
/// Redis is gone (a cache that cannot answer is a miss, and a miss must
/// not cost seconds: the client's defaults retry a lost connection six
/// times with growing pauses). The manager reconnects on the next call.
pub(crate) async fn redis_connection(
    url: &str,
) -> Result<redis::aio::ConnectionManager, redis::RedisError> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(200))
        .set_connection_timeout(Some(Duration::from_millis(250)))
        .set_response_timeout(Some(Duration::from_millis(500)));
    redis::aio::ConnectionManager::new_with_config(redis::Client::open(url)?, config).await
}

impl ResponseCache for RedisCache {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<CachedAnswer>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let stored: Option<Vec<u8>> = match redis::cmd("GET")
                .arg(format!("{REDIS_PREFIX}{key}"))
                .query_async(&mut connection)
                .await
            {
                Ok(stored) => stored,
                Err(error) => {
                    warn!(%error, "response cache read failed; treating as a miss");
                    return None;
                }
            };
            stored.and_then(|bytes| serde_json::from_slice(&bytes).ok())
        })
    }

    fn put(&self, key: String, answer: CachedAnswer) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Ok(bytes) = serde_json::to_vec(&answer) else {
                return;
            };
            let mut connection = self.connection.clone();
            let result: Result<(), redis::RedisError> = redis::cmd("SET")
                .arg(format!("{REDIS_PREFIX}{key}"))
                .arg(bytes)
                .arg("EX")
                .arg(self.ttl.as_secs().max(1))
                .query_async(&mut connection)
                .await;
            if let Err(error) = result {
                warn!(%error, "response cache write failed");
            }
        })
    }
}

/// The cache key: the caller, the route, and everything in the request that
/// shapes the answer (not the end-user id, not the stream flag).
pub(crate) fn cache_key(caller: &str, route: &str, request: &ChatRequest) -> String {
    #[derive(Serialize)]
    struct Normalised<'a> {
        caller: &'a str,
        route: &'a str,
        messages: &'a [switchyard_core::ChatMessage],
        sampling: &'a switchyard_core::SamplingParams,
        max_tokens: Option<u32>,
        stop: &'a [String],
        tools: &'a [switchyard_core::ToolDefinition],
        tool_choice: &'a Option<switchyard_core::ToolChoice>,
        parallel_tool_calls: Option<bool>,
        response_format: &'a Option<switchyard_core::ResponseFormat>,
    }
    let normalised = Normalised {
        caller,
        route,
        messages: &request.messages,
        sampling: &request.sampling,
        max_tokens: request.max_tokens,
        stop: &request.stop,
        tools: &request.tools,
        tool_choice: &request.tool_choice,
        parallel_tool_calls: request.parallel_tool_calls,
        response_format: &request.response_format,
    };
    let bytes = serde_json::to_vec(&normalised).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

/// Passes a stream through, and hands it to `keep` once it has finished
/// whole (a stream that failed is not kept).
pub(crate) fn fill_from_stream(
    mut inner: ChatStream,
    deployment: String,
    model: String,
    keep: impl FnOnce(CachedAnswer) + Send + 'static,
) -> ChatStream {
    async_stream::stream! {
        let mut chunks = Vec::new();
        let mut calls: Vec<ToolCall> = Vec::new();
        let mut finish = None;
        let mut usage = Usage::default();
        let mut failed = false;
        while let Some(event) = inner.next().await {
            match &event {
                Ok(StreamEvent::Delta(text)) => chunks.push(text.clone()),
                Ok(StreamEvent::ToolCall(piece)) => {
                    let index = piece.index as usize;
                    while calls.len() <= index {
                        calls.push(ToolCall { id: String::new(), name: String::new(), arguments: String::new() });
                    }
                    if let Some(id) = &piece.id {
                        calls[index].id = id.clone();
                    }
                    if let Some(name) = &piece.name {
                        calls[index].name.push_str(name);
                    }
                    calls[index].arguments.push_str(&piece.arguments);
                }
                Ok(StreamEvent::Finish(reason)) => finish = Some(*reason),
                Ok(StreamEvent::Usage(counts)) => usage = *counts,
                // The tool loop runs above the cache: none reach it.
                Ok(StreamEvent::ToolRun(_)) => {}
                Err(_) => failed = true,
            }
            yield event;
        }
        if let (false, Some(finish_reason)) = (failed, finish) {
            let answer = CachedAnswer {
                deployment,
                model,
                chunks,
                tool_calls: calls,
                finish_reason,
                usage,
            };
            keep(answer);
        }
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::{ChatMessage, Role};

    fn answer() -> CachedAnswer {
        CachedAnswer {
            deployment: "d".into(),
            model: "m".into(),
            chunks: vec!["Hel".into(), "lo".into()],
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage: Usage::new(3, 2),
        }
    }

    #[tokio::test]
    async fn memory_cache_round_trips_and_replays_pieces() {
        let cache = MemoryCache::new(10, Duration::from_secs(60));
        assert!(cache.get("k").await.is_none());
        cache.put("k".into(), answer()).await;
        let hit = cache.get("k").await.unwrap();
        assert_eq!(hit.to_response().content, "Hello");
        let events: Vec<StreamEvent> = hit.to_stream().map(|e| e.unwrap()).collect().await;
        assert_eq!(events[0], StreamEvent::Delta("Hel".into()));
        assert_eq!(events[1], StreamEvent::Delta("lo".into()));
        assert_eq!(events[2], StreamEvent::Finish(FinishReason::Stop));
    }

    #[test]
    fn keys_separate_callers_and_ignore_the_end_user_id() {
        let mut request = ChatRequest::new("m", vec![ChatMessage::new(Role::User, "hi")]);
        let a = cache_key("alice", "chat", &request);
        assert_ne!(a, cache_key("bob", "chat", &request));
        assert_ne!(a, cache_key("alice", "other", &request));
        request.user = Some("end-user-7".into());
        assert_eq!(a, cache_key("alice", "chat", &request));
        request.sampling.temperature = Some(0.5);
        let sampled = cache_key("alice", "chat", &request);
        assert_ne!(a, sampled);
        // A JSON answer is not a text answer.
        request.response_format = Some(switchyard_core::ResponseFormat::JsonObject);
        assert_ne!(sampled, cache_key("alice", "chat", &request));
    }

    #[tokio::test]
    async fn a_finished_stream_is_stored_and_a_broken_one_is_not() {
        let cache: Arc<dyn ResponseCache> = Arc::new(MemoryCache::new(10, Duration::from_secs(60)));
        let whole = answer().to_stream();
        let sink = cache.clone();
        let passed: Vec<_> = fill_from_stream(whole, "d".into(), "m".into(), move |answer| {
            tokio::spawn(async move { sink.put("ok".into(), answer).await });
        })
        .collect()
        .await;
        assert_eq!(passed.len(), 4);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(cache.get("ok").await.unwrap().chunks, vec!["Hel", "lo"]);

        let broken = stream::iter(vec![
            Ok(StreamEvent::Delta("x".into())),
            Err(switchyard_core::BackendError::internal("cut")),
        ])
        .boxed();
        let sink = cache.clone();
        let _: Vec<_> = fill_from_stream(broken, "d".into(), "m".into(), move |answer| {
            tokio::spawn(async move { sink.put("bad".into(), answer).await });
        })
        .collect()
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(cache.get("bad").await.is_none());
    }
}
