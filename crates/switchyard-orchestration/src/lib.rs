//! Switchyard's orchestration layer. Today it maps each public model name to
//! its backends (chat, embeddings, or both); routing across deployments,
//! fallbacks, retries and caching grow here, behind the same calls the API
//! layer makes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use switchyard_core::{
    BackendError, BackendInfo, ChatBackend, ChatRequest, ChatResponse, ChatStream,
    EmbeddingBackend, EmbeddingRequest, EmbeddingResponse, ErrorKind,
};

/// One model clients can ask for.
#[derive(Clone)]
pub struct ModelEntry {
    /// The public name.
    pub name: String,
    /// What serves chat completions, if it chats.
    pub chat: Option<Arc<dyn ChatBackend>>,
    /// What serves embeddings, if it embeds.
    pub embeddings: Option<Arc<dyn EmbeddingBackend>>,
    /// When it was registered (Unix seconds), for `/v1/models`.
    pub created: u64,
}

impl ModelEntry {
    /// Describes the model's backend.
    pub fn info(&self) -> Option<BackendInfo> {
        match (&self.chat, &self.embeddings) {
            (Some(chat), _) => Some(chat.info()),
            (None, Some(embeddings)) => Some(embeddings.info()),
            (None, None) => None,
        }
    }

    fn is_ready(&self) -> bool {
        self.chat.as_ref().is_none_or(|b| b.is_ready())
            && self.embeddings.as_ref().is_none_or(|b| b.is_ready())
    }
}

/// The models this gateway serves, by public name.
#[derive(Clone, Default)]
pub struct Gateway {
    models: BTreeMap<String, ModelEntry>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Gateway {
    /// A gateway with no models.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, name: String) -> &mut ModelEntry {
        self.models
            .entry(name.clone())
            .or_insert_with(|| ModelEntry {
                name,
                chat: None,
                embeddings: None,
                created: now(),
            })
    }

    /// Serves chat completions of `name` with `backend`.
    pub fn add_chat_model(&mut self, name: impl Into<String>, backend: Arc<dyn ChatBackend>) {
        self.entry(name.into()).chat = Some(backend);
    }

    /// Serves embeddings of `name` with `backend`.
    pub fn add_embedding_model(
        &mut self,
        name: impl Into<String>,
        backend: Arc<dyn EmbeddingBackend>,
    ) {
        self.entry(name.into()).embeddings = Some(backend);
    }

    /// Every model, ordered by name.
    pub fn models(&self) -> impl Iterator<Item = &ModelEntry> {
        self.models.values()
    }

    /// Whether every backend can serve (e.g. local models have loaded).
    pub fn is_ready(&self) -> bool {
        self.models.values().all(ModelEntry::is_ready)
    }

    /// The model of a public name, or a not-found error that lists what
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

    fn chat_backend(&self, name: &str) -> Result<&Arc<dyn ChatBackend>, BackendError> {
        self.resolve(name)?.chat.as_ref().ok_or_else(|| {
            BackendError::invalid_request(format!(
                "the model `{name}` is an embedding model; send it to /v1/embeddings"
            ))
            .with_param("model")
            .with_code("model_not_supported")
        })
    }

    /// A whole completion from the model the request names.
    pub async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, BackendError> {
        let backend = self.chat_backend(&request.model)?;
        tracing::debug!(model = %request.model, backend = backend.info().kind, "routing");
        backend.chat(request).await
    }

    /// A streamed completion from the model the request names.
    pub async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, BackendError> {
        let backend = self.chat_backend(&request.model)?;
        tracing::debug!(model = %request.model, backend = backend.info().kind, "routing");
        backend.chat_stream(request).await
    }

    /// Embeddings from the model the request names.
    pub async fn embed(
        &self,
        request: EmbeddingRequest,
    ) -> Result<EmbeddingResponse, BackendError> {
        let name = request.model.clone();
        let backend = self.resolve(&name)?.embeddings.as_ref().ok_or_else(|| {
            BackendError::invalid_request(format!(
                "the model `{name}` does not produce embeddings; send it to /v1/chat/completions"
            ))
            .with_param("model")
            .with_code("model_not_supported")
        })?;
        tracing::debug!(model = %name, backend = backend.info().kind, "routing");
        backend.embed(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;
    use futures::{StreamExt, stream};
    use switchyard_core::{FinishReason, StreamEvent};

    /// A backend that answers with its own name.
    struct Named(&'static str);

    fn info(name: &str) -> BackendInfo {
        BackendInfo {
            kind: "test",
            upstream_model: name.into(),
            owned_by: "test".into(),
        }
    }

    impl ChatBackend for Named {
        fn info(&self) -> BackendInfo {
            info(self.0)
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

    impl EmbeddingBackend for Named {
        fn info(&self) -> BackendInfo {
            info(self.0)
        }

        fn embed(
            &self,
            request: EmbeddingRequest,
        ) -> BoxFuture<'_, Result<EmbeddingResponse, BackendError>> {
            Box::pin(async move {
                Ok(EmbeddingResponse {
                    model: self.0.into(),
                    embeddings: vec![vec![1.0]; request.inputs.len()],
                    prompt_tokens: 1,
                })
            })
        }
    }

    fn embedding_request(model: &str) -> EmbeddingRequest {
        EmbeddingRequest {
            model: model.into(),
            inputs: vec!["x".into()],
            dimensions: None,
            user: None,
        }
    }

    #[tokio::test]
    async fn requests_reach_the_named_model() {
        let mut gateway = Gateway::new();
        gateway.add_chat_model("a", Arc::new(Named("alpha")));
        gateway.add_chat_model("b", Arc::new(Named("beta")));
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
        gateway.add_chat_model("a", Arc::new(Named("alpha")));
        let error = gateway
            .chat(ChatRequest::new("zzz", Vec::new()))
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::NotFound);
        assert_eq!(error.code.as_deref(), Some("model_not_found"));
        assert!(error.message.contains("available models: a"));
    }

    #[tokio::test]
    async fn chat_and_embedding_models_refuse_the_other_endpoint() {
        let mut gateway = Gateway::new();
        gateway.add_chat_model("chat", Arc::new(Named("c")));
        gateway.add_embedding_model("embed", Arc::new(Named("e")));
        gateway.add_chat_model("both", Arc::new(Named("b")));
        gateway.add_embedding_model("both", Arc::new(Named("b")));
        assert!(gateway.embed(embedding_request("embed")).await.is_ok());
        assert!(gateway.embed(embedding_request("both")).await.is_ok());
        let error = gateway.embed(embedding_request("chat")).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
        let error = gateway
            .chat(ChatRequest::new("embed", Vec::new()))
            .await
            .unwrap_err();
        assert_eq!(error.code.as_deref(), Some("model_not_supported"));
        assert_eq!(gateway.models().count(), 3);
    }
}
