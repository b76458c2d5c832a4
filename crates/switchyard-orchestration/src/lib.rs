//! Switchyard's orchestration layer. Today it maps each public model name to
//! one backend; routing across deployments, fallbacks, retries and caching
//! grow here, behind the same two calls the API layer makes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use switchyard_core::{
    BackendError, ChatBackend, ChatRequest, ChatResponse, ChatStream, ErrorKind,
};

/// One model clients can ask for.
#[derive(Clone)]
pub struct ModelEntry {
    /// The public name.
    pub name: String,
    /// What serves it.
    pub backend: Arc<dyn ChatBackend>,
    /// When it was registered (Unix seconds), for `/v1/models`.
    pub created: u64,
}

/// The models this gateway serves, by public name.
#[derive(Clone, Default)]
pub struct Gateway {
    models: BTreeMap<String, ModelEntry>,
}

impl Gateway {
    /// A gateway with no models.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `backend` under `name`, replacing any model of that name.
    pub fn add_model(&mut self, name: impl Into<String>, backend: Arc<dyn ChatBackend>) {
        let name = name.into();
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.models.insert(
            name.clone(),
            ModelEntry {
                name,
                backend,
                created,
            },
        );
    }

    /// Every model, ordered by name.
    pub fn models(&self) -> impl Iterator<Item = &ModelEntry> {
        self.models.values()
    }

    /// Whether every backend can serve (e.g. local models have loaded).
    pub fn is_ready(&self) -> bool {
        self.models.values().all(|m| m.backend.is_ready())
    }

    /// The backend for a public name, or a not-found error that lists what
    /// exists.
    pub fn resolve(&self, name: &str) -> Result<&ModelEntry, BackendError> {
        self.models.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.models.keys().map(String::as_str).collect();
            BackendError::new(
                ErrorKind::NotFound,
                format!(
                    "the model `{name}` does not exist; available models: {}",
                    known.join(", ")
                ),
            )
            .with_param("model")
            .with_code("model_not_found")
        })
    }

    /// A whole completion from the model the request names.
    pub async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, BackendError> {
        let entry = self.resolve(&request.model)?;
        tracing::debug!(model = %entry.name, backend = entry.backend.info().kind, "routing");
        entry.backend.chat(request).await
    }

    /// A streamed completion from the model the request names.
    pub async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, BackendError> {
        let entry = self.resolve(&request.model)?;
        tracing::debug!(model = %entry.name, backend = entry.backend.info().kind, "routing");
        entry.backend.chat_stream(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;
    use futures::{StreamExt, stream};
    use switchyard_core::{BackendInfo, FinishReason, StreamEvent};

    /// A backend that answers with its own name.
    struct Named(&'static str);

    impl ChatBackend for Named {
        fn info(&self) -> BackendInfo {
            BackendInfo {
                kind: "test",
                upstream_model: self.0.into(),
                owned_by: "test".into(),
            }
        }

        fn chat_stream(
            &self,
            _request: ChatRequest,
        ) -> BoxFuture<'_, Result<ChatStream, BackendError>> {
            let events = vec![
                Ok(StreamEvent::Delta(self.0.to_string())),
                Ok(StreamEvent::Finish(FinishReason::Stop)),
            ];
            Box::pin(async move { Ok(stream::iter(events).boxed()) })
        }
    }

    #[tokio::test]
    async fn requests_reach_the_named_model() {
        let mut gateway = Gateway::new();
        gateway.add_model("a", Arc::new(Named("alpha")));
        gateway.add_model("b", Arc::new(Named("beta")));
        let answer = gateway
            .chat(ChatRequest::new("b", Vec::new()))
            .await
            .unwrap();
        assert_eq!(answer.content, "beta");
        assert!(gateway.is_ready());
    }

    #[tokio::test]
    async fn unknown_model_is_not_found_and_lists_the_known_ones() {
        let mut gateway = Gateway::new();
        gateway.add_model("a", Arc::new(Named("alpha")));
        let error = gateway
            .chat(ChatRequest::new("zzz", Vec::new()))
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::NotFound);
        assert_eq!(error.code.as_deref(), Some("model_not_found"));
        assert!(error.message.contains("available models: a"));
    }
}
