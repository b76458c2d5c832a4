//! The answer stream: passed through unchanged while its first token, its
//! usage and how it ended are noted. The admission finishes when the
//! stream ends, and records itself as abandoned (499) if the client drops
//! the stream first.

use futures::StreamExt;
use switchyard_core::{ChatStream, StreamEvent};
use switchyard_governance::{Admission, Outcome};
use switchyard_orchestration::Trail;
use switchyard_telemetry::trace;

use super::finish::{annotate_usage, answer_shape, tokens};

/// Bytes of a streamed answer kept for the refusal check (enough for its
/// first few hundred characters).
const HEAD_BYTES: usize = 1200;

/// Meters `events`; `outcome` is what is known of the call so far (its
/// route, prompt, retrieval time). The stream has a span of its own, a
/// child of the request's. `trail` is read again at the end, for the
/// steps taken while the answer streamed (output guardrails).
pub fn metered(
    mut events: ChatStream,
    mut admission: Admission,
    mut outcome: Outcome,
    keep_answer: bool,
    trail: Trail,
) -> ChatStream {
    let request_span = tracing::Span::current();
    let stream_span = tracing::debug_span!(
        "stream",
        otel.name = "stream",
        otel.status_code = tracing::field::Empty,
    );
    Box::pin(async_stream::stream! {
        let mut answer = String::new();
        // What drift alarms watch, kept whether or not the answer is.
        let mut head = String::new();
        let mut chars: u64 = 0;
        let mut called_tools = false;
        let mut chunks: i64 = 0;
        while let Some(event) = events.next().await {
            match &event {
                Ok(StreamEvent::Delta(text)) => {
                    if chunks == 0 {
                        stream_span.in_scope(|| tracing::debug!("first token"));
                    }
                    chunks += 1;
                    admission.first_token();
                    if keep_answer {
                        answer.push_str(text);
                    }
                    chars += text.chars().count() as u64;
                    if head.len() < HEAD_BYTES {
                        head.push_str(text);
                    }
                }
                Ok(StreamEvent::ToolCall(_)) => {
                    called_tools = true;
                    admission.first_token();
                }
                Ok(StreamEvent::ToolRun(_)) => {}
                Ok(StreamEvent::Usage(usage)) => {
                    outcome.tokens = Some(tokens(usage));
                    annotate_usage(&request_span, usage);
                    annotate_usage(&stream_span, usage);
                }
                Ok(StreamEvent::Finish(reason)) => {
                    trace::annotate_strings(
                        &request_span,
                        "gen_ai.response.finish_reasons",
                        vec![reason.as_str().to_owned()],
                    );
                }
                Err(error) => {
                    outcome.status = error.kind.status();
                    outcome.error = Some(error.message.clone());
                    stream_span.record("otel.status_code", "ERROR");
                }
            }
            let failed = event.is_err();
            yield event;
            if failed {
                break;
            }
        }
        trace::annotate(&stream_span, || [("switchyard.stream.chunks", chunks.into())]);
        if keep_answer {
            outcome.answer = Some(answer);
        }
        if outcome.error.is_none() {
            outcome.answer_shape = answer_shape(&head, called_tools).map(|mut shape| {
                shape.chars = chars;
                shape
            });
        }
        outcome.decisions = trail.steps();
        admission.finish(outcome);
        drop(stream_span);
    })
}
