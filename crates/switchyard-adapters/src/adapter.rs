//! The one HTTP adapter every remote provider runs through.
//!
//! A provider is its wire translation only: how to encode a request, decode
//! an answer, frame and translate its stream, classify its errors and
//! describe itself ([`Wire`]). [`HttpAdapter`] turns any such translation into
//! a [`ChatBackend`] (and, with [`EmbeddingWire`], an [`EmbeddingBackend`]):
//! it owns the pooled client and its deadlines, the credential headers, the
//! per-request signature hook, Retry-After and the first-event peek of
//! streams, so that none of that is written once per provider.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use reqwest::Url;
use reqwest::header::HeaderMap;
use switchyard_core::{
    BackendError, BackendInfo, ChatBackend, ChatRequest, ChatResponse, ChatStream,
    EmbeddingBackend, EmbeddingRequest, EmbeddingResponse, ErrorKind,
};
use tokio::time::Instant;

use crate::AdapterBuildError;
use crate::http::{HttpUpstream, Timeouts, UpstreamTls};
use crate::stream::{Translate, drive};

/// One provider's wire translation: everything that differs between
/// providers, and nothing that does not.
pub trait Wire: Send + Sync + fmt::Debug + 'static {
    /// One decoded item of the provider's stream framing (a server-sent
    /// event, an AWS event-stream frame).
    type Event: Send + 'static;
    /// Turns stream items into canonical events.
    type Translator: Translate<Self::Event>;

    /// What the backend is, for listings and records.
    fn info(&self) -> BackendInfo;

    /// Where a chat request goes, whole or streamed.
    fn chat_url(&self, stream: bool) -> &Url;

    /// The request body of a chat call.
    fn encode_chat(&self, request: &ChatRequest, stream: bool) -> Result<Vec<u8>, BackendError>;

    /// A whole answer from its body.
    fn decode_chat(&self, body: &[u8]) -> Result<ChatResponse, BackendError>;

    /// Decodes the stream framing of a successful streamed response.
    fn frames(response: reqwest::Response)
    -> BoxStream<'static, Result<Self::Event, BackendError>>;

    /// A fresh translator for one streamed answer.
    fn translator(&self) -> Self::Translator;

    /// Turns an unsuccessful answer (status, headers, body text) into an
    /// error of the right kind, with the upstream's Retry-After.
    fn classify(status: u16, headers: &HeaderMap, body: &str) -> BackendError;

    /// Per-request headers (request signatures); none by default, since
    /// static credentials travel in the client's default headers.
    fn sign(&self, _url: &Url, _body: &[u8]) -> Result<HeaderMap, BackendError> {
        Ok(HeaderMap::new())
    }
}

/// A provider that also serves embeddings.
pub trait EmbeddingWire: Wire {
    /// Where an embedding request goes.
    fn embeddings_url(&self) -> &Url;

    /// The request body of an embedding call.
    fn encode_embed(&self, request: &EmbeddingRequest) -> Result<Vec<u8>, BackendError>;

    /// The vectors from the answer's body.
    fn decode_embed(&self, body: &[u8]) -> Result<EmbeddingResponse, BackendError>;
}

/// Any [`Wire`] as a chat (and embedding) backend over pooled HTTP.
pub struct HttpAdapter<W> {
    shared: Arc<Shared<W>>,
}

struct Shared<W> {
    http: HttpUpstream,
    wire: W,
}

impl<W> Clone for HttpAdapter<W> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<W: fmt::Debug> fmt::Debug for HttpAdapter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpAdapter")
            .field("http", &self.shared.http)
            .field("wire", &self.shared.wire)
            .finish()
    }
}

impl<W: Wire> HttpAdapter<W> {
    /// An adapter for `wire`, whose every request carries `headers` (marked
    /// sensitive) under `timeouts`, over `tls`.
    pub fn with_wire(
        wire: W,
        timeouts: Timeouts,
        headers: HeaderMap,
        tls: &UpstreamTls,
    ) -> Result<Self, AdapterBuildError> {
        Ok(Self {
            shared: Arc::new(Shared {
                http: HttpUpstream::new(timeouts, headers, tls)?,
                wire,
            }),
        })
    }

    /// The provider's translation.
    pub fn wire(&self) -> &W {
        &self.shared.wire
    }

    /// POSTs `body` to `url` (signed where the provider signs) and waits for
    /// a successful status.
    async fn post(
        &self,
        url: &Url,
        body: Vec<u8>,
        deadline: Instant,
    ) -> Result<reqwest::Response, BackendError> {
        let Shared { http, wire } = &*self.shared;
        let signed = wire.sign(url, &body)?;
        http.post(url, body, signed, deadline, W::classify).await
    }

    async fn whole(&self, request: ChatRequest) -> Result<ChatResponse, BackendError> {
        let Shared { http, wire } = &*self.shared;
        let deadline = http.deadline();
        let body = wire.encode_chat(&request, false)?;
        let response = self.post(wire.chat_url(false), body, deadline).await?;
        wire.decode_chat(&http.body(response, deadline).await?)
    }

    async fn streamed(&self, request: ChatRequest) -> Result<ChatStream, BackendError> {
        let Shared { http, wire } = &*self.shared;
        let started = Instant::now();
        let timeouts = http.timeouts();
        let deadline = started + timeouts.total;
        let body = wire.encode_chat(&request, true)?;
        let response = self.post(wire.chat_url(true), body, deadline).await?;
        drive(
            W::frames(response),
            wire.translator(),
            started + timeouts.first_byte,
            deadline,
            http.first_byte_timeout(),
            http.total_timeout(),
        )
        .await
    }
}

impl<W: EmbeddingWire> HttpAdapter<W> {
    async fn embedded(&self, request: EmbeddingRequest) -> Result<EmbeddingResponse, BackendError> {
        let Shared { http, wire } = &*self.shared;
        let deadline = http.deadline();
        let body = wire.encode_embed(&request)?;
        let response = self.post(wire.embeddings_url(), body, deadline).await?;
        let answer = wire.decode_embed(&http.body(response, deadline).await?)?;
        if answer.embeddings.len() != request.inputs.len() {
            return Err(BackendError::new(
                ErrorKind::Upstream,
                format!(
                    "the upstream returned {} vectors for {} inputs",
                    answer.embeddings.len(),
                    request.inputs.len()
                ),
            ));
        }
        Ok(answer)
    }
}

impl<W: Wire> ChatBackend for HttpAdapter<W> {
    fn times_network_waits(&self) -> bool {
        true
    }

    fn info(&self) -> BackendInfo {
        self.shared.wire.info()
    }

    fn chat(&self, request: ChatRequest) -> BoxFuture<'_, Result<ChatResponse, BackendError>> {
        Box::pin(self.whole(request))
    }

    fn chat_stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<ChatStream, BackendError>> {
        Box::pin(self.streamed(request))
    }
}

impl<W: EmbeddingWire> EmbeddingBackend for HttpAdapter<W> {
    fn times_network_waits(&self) -> bool {
        true
    }

    fn info(&self) -> BackendInfo {
        self.shared.wire.info()
    }

    fn embed(
        &self,
        request: EmbeddingRequest,
    ) -> BoxFuture<'_, Result<EmbeddingResponse, BackendError>> {
        Box::pin(self.embedded(request))
    }
}

/// Serialises a request body; failing is a bug of ours, not the caller's.
pub(crate) fn encode(body: &impl serde::Serialize) -> Result<Vec<u8>, BackendError> {
    serde_json::to_vec(body)
        .map_err(|e| BackendError::internal(format!("cannot encode the request: {e}")))
}

/// Refuses a JSON `response_format` for a provider whose API has no such
/// control, rather than sending the request without it: a client asking
/// for JSON breaks on free text.
pub(crate) fn refuse_json_format(
    request: &ChatRequest,
    provider: &str,
) -> Result<(), BackendError> {
    match request.response_format {
        None | Some(switchyard_core::ResponseFormat::Text) => Ok(()),
        Some(_) => Err(BackendError::invalid_request(format!(
            "`response_format` JSON modes are not available for {provider} models; ask for a tool call with the schema as its parameters instead"
        ))
        .with_param("response_format")),
    }
}

/// A tool call's arguments as the JSON object providers other than OpenAI
/// send. The front doors refuse client calls whose arguments are not an
/// object; this refuses any that reach an adapter some other way, rather
/// than sending `{}` in their place.
pub(crate) fn call_arguments(
    call: &switchyard_core::ToolCall,
) -> Result<serde_json::Map<String, serde_json::Value>, BackendError> {
    match serde_json::from_str(&call.arguments) {
        Ok(serde_json::Value::Object(arguments)) => Ok(arguments),
        _ => Err(BackendError::new(
            ErrorKind::InvalidRequest,
            format!(
                "the arguments of tool call {:?} ({}) are not a JSON object",
                call.id, call.name
            ),
        )),
    }
}
