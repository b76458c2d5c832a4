//! What each upstream attempt reports: its span (an OpenTelemetry client
//! span with the GenAI attributes), its metrics, and the time the request
//! spent waiting on it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::{Stream, StreamExt};
use opentelemetry::Value;
use switchyard_core::{
    BackendError, ChatRequest, ChatResponse, ChatStream, EmbeddingResponse, FinishReason,
    StreamEvent, Usage,
};
use switchyard_telemetry::clock::Waiting;
use switchyard_telemetry::metrics::provider_name;
use switchyard_telemetry::trace::{annotate, annotate_strings};
use switchyard_telemetry::{AttemptRecord, Operation, UpstreamClock, metrics};

/// What an attempt's answer tells its metrics.
pub(crate) trait Answer {
    /// A stream reports when it ends, not when it starts.
    const ENDS_LATER: bool = false;

    /// Input and output tokens, when known now.
    fn tokens(&self) -> Option<(u64, u64)>;
}

impl Answer for ChatResponse {
    fn tokens(&self) -> Option<(u64, u64)> {
        Some(usage_pair(&self.usage))
    }
}

impl Answer for EmbeddingResponse {
    fn tokens(&self) -> Option<(u64, u64)> {
        Some((u64::from(self.prompt_tokens), 0))
    }
}

impl Answer for ChatStream {
    const ENDS_LATER: bool = true;

    fn tokens(&self) -> Option<(u64, u64)> {
        None
    }
}

fn usage_pair(usage: &Usage) -> (u64, u64) {
    (
        u64::from(usage.prompt_tokens),
        u64::from(usage.completion_tokens),
    )
}

/// Who an attempt goes to.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub operation: Operation,
    pub backend_kind: &'static str,
    pub deployment: String,
    pub upstream_model: String,
}

impl Target {
    /// The attempt's client span, a child of the current (route) span.
    pub fn span(&self, number: u32) -> tracing::Span {
        let span = tracing::debug_span!(
            "upstream attempt",
            otel.name = %format_args!("{} {}", self.operation.as_str(), self.upstream_model),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
        );
        annotate(&span, || {
            [
                ("gen_ai.operation.name", self.operation.as_str().into()),
                (
                    "gen_ai.provider.name",
                    provider_name(self.backend_kind).into(),
                ),
                ("gen_ai.request.model", self.upstream_model.clone().into()),
                ("switchyard.deployment", self.deployment.clone().into()),
                ("switchyard.attempt", i64::from(number).into()),
            ]
        });
        span
    }

    /// Records the attempt's metrics.
    pub fn record(
        &self,
        started: Instant,
        error: Option<&'static str>,
        tokens: Option<(u64, u64)>,
    ) {
        metrics().attempt_done(&AttemptRecord {
            operation: self.operation,
            backend_kind: self.backend_kind,
            deployment: &self.deployment,
            upstream_model: &self.upstream_model,
            error,
            duration: started.elapsed(),
            tokens,
        });
    }
}

/// Marks an attempt's span failed.
pub(crate) fn span_failed(span: &tracing::Span, error: &BackendError) {
    span.record("otel.status_code", "ERROR");
    annotate(span, || [("error.type", error.kind.as_str().into())]);
}

/// The request's parameters, on its attempt span.
pub(crate) fn annotate_request(span: &tracing::Span, request: &ChatRequest) {
    annotate(span, || {
        let sampling = &request.sampling;
        let mut attributes: Vec<(&'static str, Value)> = Vec::with_capacity(5);
        if let Some(max) = request.max_tokens {
            attributes.push(("gen_ai.request.max_tokens", i64::from(max).into()));
        }
        if let Some(t) = sampling.temperature {
            attributes.push(("gen_ai.request.temperature", f64::from(t).into()));
        }
        if let Some(p) = sampling.top_p {
            attributes.push(("gen_ai.request.top_p", f64::from(p).into()));
        }
        if let Some(k) = sampling.top_k {
            attributes.push(("gen_ai.request.top_k", f64::from(k).into()));
        }
        if let Some(seed) = sampling.seed {
            attributes.push((
                "gen_ai.request.seed",
                i64::try_from(seed).unwrap_or(i64::MAX).into(),
            ));
        }
        attributes
    });
}

/// What the upstream answered, on the attempt span.
pub(crate) fn annotate_answer(
    span: &tracing::Span,
    model: Option<&str>,
    usage: Option<&Usage>,
    finish: Option<FinishReason>,
) {
    annotate(span, || {
        let mut attributes: Vec<(&'static str, Value)> = Vec::with_capacity(3);
        if let Some(model) = model.filter(|m| !m.is_empty()) {
            attributes.push(("gen_ai.response.model", model.to_owned().into()));
        }
        if let Some(usage) = usage {
            attributes.push((
                "gen_ai.usage.input_tokens",
                i64::from(usage.prompt_tokens).into(),
            ));
            attributes.push((
                "gen_ai.usage.output_tokens",
                i64::from(usage.completion_tokens).into(),
            ));
        }
        attributes
    });
    if let Some(reason) = finish {
        annotate_strings(
            span,
            "gen_ai.response.finish_reasons",
            vec![reason.as_str().to_owned()],
        );
    }
}

/// A stream from an upstream, observed: each wait for its next event runs
/// the request's upstream clock, and when it ends (or is dropped) its
/// attempt's metrics are recorded and its span, kept open until then, ends.
pub(crate) struct ObservedStream {
    inner: ChatStream,
    clock: UpstreamClock,
    waiting: Option<Waiting>,
    attempt: Option<(Target, tracing::Span, Instant)>,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
    error: Option<&'static str>,
}

impl ObservedStream {
    pub fn new(
        inner: ChatStream,
        clock: UpstreamClock,
        target: Target,
        span: tracing::Span,
        started: Instant,
    ) -> Self {
        Self {
            inner,
            clock,
            waiting: None,
            attempt: Some((target, span, started)),
            usage: None,
            finish: None,
            error: None,
        }
    }

    fn end(&mut self) {
        let Some((target, span, started)) = self.attempt.take() else {
            return;
        };
        // Canonical stream events carry no model name: the model that
        // answered a stream is the one the attempt asked for.
        annotate_answer(
            &span,
            Some(&target.upstream_model),
            self.usage.as_ref(),
            self.finish,
        );
        if let Some(error) = self.error {
            span.record("otel.status_code", "ERROR");
            annotate(&span, || [("error.type", error.into())]);
        }
        target.record(started, self.error, self.usage.as_ref().map(usage_pair));
    }
}

impl Stream for ObservedStream {
    type Item = Result<StreamEvent, BackendError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.waiting.is_none() {
            this.waiting = Some(this.clock.waiting());
        }
        let poll = this.inner.poll_next_unpin(cx);
        if let Poll::Ready(item) = &poll {
            this.waiting = None;
            match item {
                Some(Ok(StreamEvent::Usage(usage))) => this.usage = Some(*usage),
                Some(Ok(StreamEvent::Finish(reason))) => this.finish = Some(*reason),
                Some(Ok(_)) => {}
                Some(Err(error)) => this.error = Some(error.kind.as_str()),
                None => this.end(),
            }
        }
        poll
    }
}

impl Drop for ObservedStream {
    fn drop(&mut self) {
        if self.attempt.is_some() && self.error.is_none() && self.finish.is_none() {
            // Dropped before it ended: the client left.
            self.error = Some("cancelled");
        }
        self.end();
    }
}
