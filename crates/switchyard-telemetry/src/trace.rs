//! W3C trace context: every request belongs to a trace (the client's, from
//! its `traceparent`, or a new one), its id is in the request's log line,
//! and upstream calls carry it on.
//!
//! With OpenTelemetry export on (the binary installs the layer and calls
//! [`set_export_enabled`]) the trace is the span tree itself: the server
//! span continues the client's trace and each upstream attempt sends its
//! own span as the parent. With export off no span is built for
//! OpenTelemetry at all; the request's trace context is kept in a
//! task-local and forwarded unchanged, so upstreams still join the
//! client's trace at no cost.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderMap, HeaderValue};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanId, TraceContextExt, TraceFlags, TraceId};
use opentelemetry::{Key, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Marks OpenTelemetry export as on; the binary calls this once, after it
/// installed the layer.
pub fn set_export_enabled() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Whether spans are exported.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// A request's trace context when spans are not exported.
#[derive(Debug, Clone)]
pub struct RequestTrace {
    trace_id: String,
    traceparent: HeaderValue,
    tracestate: Option<HeaderValue>,
}

tokio::task_local! {
    static REQUEST_TRACE: Arc<RequestTrace>;
    /// Whether the request being handled is sampled (spans exported).
    static SAMPLED: bool;
}

/// Whether the request being handled is sampled for export; `true` outside
/// a request. The span layer consults it so that a request whose trace is
/// not sampled builds no spans beyond its server span.
pub fn request_sampled() -> bool {
    SAMPLED.try_with(|sampled| *sampled).unwrap_or(true)
}

/// W3C's two headers as a map, for the propagator.
fn carrier(headers: &HeaderMap) -> HashMap<String, String> {
    ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// A `traceparent` value (version 00).
fn traceparent(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> HeaderValue {
    let value = format!("00-{trace_id}-{span_id}-{:02x}", flags.to_u8());
    // Hex digits and dashes only: always a valid header value.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl RequestTrace {
    /// The client's trace when it sent a valid `traceparent`, else a new
    /// one (not sampled: nothing here records it).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        if let Some(sent) = headers.get("traceparent") {
            let parent = TraceContextPropagator::new().extract(&carrier(headers));
            let span = parent.span();
            let context = span.span_context();
            if context.is_valid() {
                return Self {
                    trace_id: context.trace_id().to_string(),
                    traceparent: sent.clone(),
                    tracestate: headers.get("tracestate").cloned(),
                };
            }
        }
        let trace_id = TraceId::from(fastrand::u128(1..));
        Self {
            trace_id: trace_id.to_string(),
            traceparent: traceparent(
                trace_id,
                SpanId::from(fastrand::u64(1..)),
                TraceFlags::default(),
            ),
            tracestate: None,
        }
    }

    /// The trace id, 32 hex digits.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }
}

/// Continues the client's trace on `span`, the server span of a request,
/// before it is first entered. Does nothing unless spans are exported.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    if !exporting() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&carrier(headers));
    if let Err(error) = span.set_parent(parent) {
        tracing::debug!(%error, "cannot continue the client's trace");
    }
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
}

/// The request's trace context to keep at hand for upstream calls; `None`
/// when spans are exported (the span tree carries it then).
pub fn request_trace(headers: &HeaderMap) -> Option<RequestTrace> {
    (!exporting()).then(|| RequestTrace::from_headers(headers))
}

/// Runs a request's handling with `trace` (from [`request_trace`]) at hand
/// for upstream calls, and its trace id recorded on the current span.
pub async fn in_request_trace<F: Future>(trace: Option<RequestTrace>, handling: F) -> F::Output {
    let Some(trace) = trace else {
        // Exporting: the server span holds the sampling decision. An
        // unsampled request builds no child spans, so its upstream calls
        // find no span context and carry the server span's instead.
        let context = tracing::Span::current().context();
        let span = context.span();
        let span_context = span.span_context();
        if !span_context.is_valid() || span_context.is_sampled() {
            return handling.await;
        }
        let trace = RequestTrace {
            trace_id: span_context.trace_id().to_string(),
            traceparent: traceparent(
                span_context.trace_id(),
                span_context.span_id(),
                span_context.trace_flags(),
            ),
            tracestate: HeaderValue::from_str(&span_context.trace_state().header())
                .ok()
                .filter(|v| !v.is_empty()),
        };
        let handling = REQUEST_TRACE.scope(Arc::new(trace), handling);
        return SAMPLED.scope(false, handling).await;
    };
    tracing::Span::current().record("trace_id", trace.trace_id());
    REQUEST_TRACE.scope(Arc::new(trace), handling).await
}

/// The current request's trace id, if it has one.
pub fn current_trace_id() -> Option<String> {
    if exporting() {
        let context = tracing::Span::current().context();
        let span = context.span();
        let span_context = span.span_context();
        if span_context.is_valid() {
            return Some(span_context.trace_id().to_string());
        }
    }
    REQUEST_TRACE.try_with(|trace| trace.trace_id.clone()).ok()
}

/// Adds `traceparent` (and `tracestate`) for an upstream call made now:
/// the current span as the parent when spans are exported, else the
/// request's trace context as it came.
pub fn inject(headers: &mut HeaderMap) {
    let context = exporting().then(|| tracing::Span::current().context());
    if let Some(context) = context.filter(|cx| cx.span().span_context().is_valid()) {
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
        for (name, value) in carrier {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        }
        return;
    }
    let _ = REQUEST_TRACE.try_with(|trace| {
        headers.insert("traceparent", trace.traceparent.clone());
        if let Some(state) = &trace.tracestate {
            headers.insert("tracestate", state.clone());
        }
    });
}

/// Sets OpenTelemetry attributes on `span` (names from the GenAI semantic
/// conventions and Switchyard's `switchyard.*`). The attributes are only
/// built when spans are exported, and never reach the log lines.
pub fn annotate<I>(span: &tracing::Span, attributes: impl FnOnce() -> I)
where
    I: IntoIterator<Item = (&'static str, Value)>,
{
    if !exporting() {
        return;
    }
    for (key, value) in attributes() {
        span.set_attribute(Key::from_static_str(key), value);
    }
}

/// Sets an attribute whose value is a list of strings (finish reasons).
pub fn annotate_strings(span: &tracing::Span, key: &'static str, values: Vec<String>) {
    if !exporting() {
        return;
    }
    let values = values.into_iter().map(Into::into).collect();
    span.set_attribute(
        Key::from_static_str(key),
        Value::Array(opentelemetry::Array::String(values)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_continued_as_sent() {
        let mut headers = HeaderMap::new();
        let sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert("traceparent", HeaderValue::from_static(sent));
        headers.insert("tracestate", HeaderValue::from_static("vendor=1"));
        let trace = RequestTrace::from_headers(&headers);
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace.traceparent, sent);
        assert_eq!(
            trace.tracestate.as_ref().map(|v| v.as_bytes()),
            Some(&b"vendor=1"[..])
        );
    }

    #[test]
    fn an_invalid_traceparent_starts_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "garbage",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", HeaderValue::from_static(bad));
            let trace = RequestTrace::from_headers(&headers);
            assert_ne!(trace.traceparent, bad);
            assert_eq!(trace.trace_id().len(), 32);
            let sent = trace.traceparent.to_str().unwrap_or("");
            assert!(
                sent.starts_with(&format!("00-{}-", trace.trace_id())),
                "{sent}"
            );
            assert!(sent.ends_with("-00"), "{sent}");
        }
    }

    #[tokio::test]
    async fn upstream_calls_inside_a_request_carry_its_trace() {
        let mut incoming = HeaderMap::new();
        let sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        incoming.insert("traceparent", HeaderValue::from_static(sent));
        let outgoing = in_request_trace(request_trace(&incoming), async {
            let mut headers = HeaderMap::new();
            inject(&mut headers);
            (headers, current_trace_id())
        })
        .await;
        assert_eq!(
            outgoing.0.get("traceparent").map(|v| v.as_bytes()),
            Some(sent.as_bytes())
        );
        assert_eq!(
            outgoing.1.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let mut outside = HeaderMap::new();
        inject(&mut outside);
        assert!(outside.is_empty(), "no request, no trace");
    }
}
