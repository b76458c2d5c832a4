//! Drives a provider's event stream into canonical events, with deadlines.
//!
//! Every streaming adapter decodes its wire framing (SSE, AWS event-stream)
//! into provider events and hands them, one at a time, to a translator. The
//! driver reads ahead to the first canonical event before handing the stream
//! back, so that a failure right after the response headers still surfaces
//! as an error the caller can act on.

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use switchyard_core::{BackendError, ChatStream, ErrorKind, StreamEvent};
use tokio::time::{Instant, timeout_at};

/// What one provider event produced.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    /// Canonical events, in order.
    pub events: Vec<StreamEvent>,
    /// The provider said the answer is complete.
    pub done: bool,
}

impl Step {
    /// Events, the answer not yet complete.
    pub fn events(events: Vec<StreamEvent>) -> Self {
        Self {
            events,
            done: false,
        }
    }

    /// The answer is complete, nothing more to emit.
    pub fn done() -> Self {
        Self {
            events: Vec::new(),
            done: true,
        }
    }
}

/// Turns one provider's events into canonical ones.
pub trait Translate<E>: Send + 'static {
    /// One decoded provider event.
    fn event(&mut self, event: E) -> Result<Step, BackendError>;

    /// The upstream closed the stream. Fine if the answer was complete
    /// (some servers close without a final marker), an error otherwise.
    fn end(&mut self) -> Result<Step, BackendError>;
}

/// The error for a stream that stopped before its answer was complete.
pub(crate) fn cut_short() -> BackendError {
    BackendError::new(
        ErrorKind::Upstream,
        "the upstream closed the stream before the answer was complete",
    )
}

/// Feeds `events` through `translator` until it says done. The first
/// canonical event must come before `first_deadline`, everything before
/// `deadline`; `on_timeout` builds the errors for those two cases.
pub(crate) async fn drive<E, S, T>(
    mut events: S,
    mut translator: T,
    first_deadline: Instant,
    deadline: Instant,
    first_byte_timeout: BackendError,
    total_timeout: BackendError,
) -> Result<ChatStream, BackendError>
where
    E: Send + 'static,
    S: Stream<Item = Result<E, BackendError>> + Send + Unpin + 'static,
    T: Translate<E>,
{
    let first = loop {
        let waiting = switchyard_telemetry::clock::network_wait();
        let next = timeout_at(first_deadline.min(deadline), events.next())
            .await
            .map_err(|_| first_byte_timeout.clone())?;
        drop(waiting);
        let step = match next {
            None => translator.end()?,
            Some(event) => translator.event(event?)?,
        };
        if !step.events.is_empty() || step.done {
            break step;
        }
    };
    let stream = async_stream::stream! {
        for event in first.events {
            yield Ok(event);
        }
        if first.done {
            return;
        }
        loop {
            let next = match timeout_at(deadline, events.next()).await {
                Ok(next) => next,
                Err(_) => {
                    yield Err(total_timeout.clone());
                    return;
                }
            };
            let step = match next {
                None => translator.end(),
                Some(Ok(event)) => translator.event(event),
                Some(Err(error)) => Err(error),
            };
            match step {
                Ok(step) => {
                    for event in step.events {
                        yield Ok(event);
                    }
                    if step.done {
                        return;
                    }
                }
                Err(error) => {
                    yield Err(error);
                    return;
                }
            }
        }
    };
    Ok(stream.boxed())
}

/// Server-sent events of a response, as `(event name, data)` pairs.
pub(crate) fn sse_events(
    response: reqwest::Response,
) -> BoxStream<'static, Result<SseEvent, BackendError>> {
    decode_sse(response.bytes_stream())
}

/// Server-sent events of a body arriving as `chunks` (split anywhere).
/// The adapters decode responses with it; the fuzz targets feed it
/// hostile bytes.
pub fn decode_sse<S, B, E>(chunks: S) -> BoxStream<'static, Result<SseEvent, BackendError>>
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]>,
    E: std::fmt::Display + Send + 'static,
{
    use eventsource_stream::Eventsource;
    chunks
        .eventsource()
        .map(|item| {
            item.map(|event| SseEvent {
                name: event.event,
                data: event.data,
            })
            .map_err(|error| {
                BackendError::new(
                    ErrorKind::Upstream,
                    format!("the upstream stream broke: {error}"),
                )
            })
        })
        .boxed()
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (`message` when absent).
    pub name: String,
    /// The `data:` lines, joined.
    pub data: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use switchyard_core::FinishReason;

    /// Echoes numbers as deltas; 0 means finish.
    struct Numbers {
        finished: bool,
    }

    impl Translate<u32> for Numbers {
        fn event(&mut self, event: u32) -> Result<Step, BackendError> {
            if event == 0 {
                self.finished = true;
                return Ok(Step::events(vec![StreamEvent::Finish(FinishReason::Stop)]));
            }
            Ok(Step::events(vec![StreamEvent::Delta(event.to_string())]))
        }

        fn end(&mut self) -> Result<Step, BackendError> {
            if self.finished {
                Ok(Step::done())
            } else {
                Err(cut_short())
            }
        }
    }

    fn timeouts() -> (BackendError, BackendError) {
        (
            BackendError::new(ErrorKind::Timeout, "first"),
            BackendError::new(ErrorKind::Timeout, "total"),
        )
    }

    async fn run(
        items: Vec<Result<u32, BackendError>>,
    ) -> Result<Vec<Result<StreamEvent, BackendError>>, BackendError> {
        let (first, total) = timeouts();
        let far = Instant::now() + Duration::from_secs(5);
        let stream = drive(
            futures::stream::iter(items),
            Numbers { finished: false },
            far,
            far,
            first,
            total,
        )
        .await?;
        Ok(stream.collect().await)
    }

    #[tokio::test]
    async fn a_complete_stream_passes_through() {
        let events = run(vec![Ok(1), Ok(2), Ok(0)]).await.unwrap();
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn an_error_before_the_first_event_is_returned_not_streamed() {
        let error = run(vec![Err(BackendError::new(ErrorKind::Overloaded, "busy"))])
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Overloaded);
    }

    #[tokio::test]
    async fn a_stream_cut_after_it_started_ends_with_an_error() {
        let events = run(vec![Ok(1)]).await.unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].as_ref().unwrap_err().kind, ErrorKind::Upstream);
    }

    #[tokio::test]
    async fn a_silent_upstream_hits_the_first_byte_deadline() {
        let (first, total) = timeouts();
        let soon = Instant::now() + Duration::from_millis(20);
        let error = drive(
            futures::stream::pending::<Result<u32, BackendError>>(),
            Numbers { finished: false },
            soon,
            soon + Duration::from_secs(5),
            first,
            total,
        )
        .await
        .err()
        .unwrap();
        assert_eq!(error.message, "first");
    }
}
