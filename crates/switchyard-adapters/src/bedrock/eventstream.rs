//! ConverseStream's framing: AWS event-stream messages, decoded as they
//! arrive by `aws-smithy-eventstream`.

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{HeaderValue as FrameHeaderValue, Message};
use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use switchyard_core::{BackendError, ErrorKind};

use crate::http::transport_error;

/// One decoded event-stream frame.
#[derive(Debug)]
pub struct Frame {
    /// `event` or `exception`.
    pub message_type: String,
    /// `:event-type` or `:exception-type`.
    pub name: String,
    /// The JSON payload, read by the translator for the events it knows.
    pub payload: Bytes,
}

fn header_string(message: &Message, name: &str) -> String {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| match h.value() {
            FrameHeaderValue::String(s) => Some(s.as_str().to_owned()),
            _ => None,
        })
        .unwrap_or_default()
}

fn frame_of(message: &Message) -> Frame {
    let message_type = header_string(message, ":message-type");
    let name = if message_type == "exception" {
        header_string(message, ":exception-type")
    } else {
        header_string(message, ":event-type")
    };
    Frame {
        message_type,
        name,
        payload: message.payload().clone(),
    }
}

/// Decodes the body's AWS event-stream frames as they arrive.
pub(super) fn frames(
    response: reqwest::Response,
) -> BoxStream<'static, Result<Frame, BackendError>> {
    decode_frames(
        response
            .bytes_stream()
            .map(|chunk| chunk.map_err(|error| transport_error(&error))),
    )
}

/// AWS event-stream frames of a body arriving as `chunks` (split
/// anywhere). [`frames`] decodes responses with it; the fuzz targets feed
/// it hostile bytes.
pub fn decode_frames<S>(chunks: S) -> BoxStream<'static, Result<Frame, BackendError>>
where
    S: futures::Stream<Item = Result<Bytes, BackendError>> + Send + 'static,
{
    let stream = async_stream::stream! {
        let mut body = std::pin::pin!(chunks);
        let mut buffer = BytesMut::new();
        let mut decoder = MessageFrameDecoder::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => buffer.extend_from_slice(&bytes),
                Err(error) => {
                    yield Err(error);
                    return;
                }
            }
            loop {
                match decoder.decode_frame(&mut buffer) {
                    Ok(DecodedFrame::Complete(message)) => yield Ok(frame_of(&message)),
                    Ok(DecodedFrame::Incomplete) => break,
                    Err(error) => {
                        yield Err(BackendError::new(
                            ErrorKind::Upstream,
                            format!("the upstream sent a malformed event-stream frame: {error}"),
                        ));
                        return;
                    }
                }
            }
        }
        if buffer.has_remaining() {
            yield Err(BackendError::new(
                ErrorKind::Upstream,
                "the upstream stream ended inside a frame",
            ));
        }
    };
    stream.boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::event_stream::Header;

    #[test]
    fn frames_decode_from_wire_bytes() {
        let message = Message::new(Bytes::from_static(b"{\"role\":\"assistant\"}"))
            .add_header(Header::new(
                ":message-type",
                FrameHeaderValue::String("event".into()),
            ))
            .add_header(Header::new(
                ":event-type",
                FrameHeaderValue::String("messageStart".into()),
            ));
        let mut wire = Vec::new();
        aws_smithy_eventstream::frame::write_message_to(&message, &mut wire).unwrap();
        let mut decoder = MessageFrameDecoder::new();
        let mut buffer = BytesMut::from(&wire[..wire.len() - 3]);
        assert!(matches!(
            decoder.decode_frame(&mut buffer).unwrap(),
            DecodedFrame::Incomplete
        ));
        buffer.extend_from_slice(&wire[wire.len() - 3..]);
        let DecodedFrame::Complete(decoded) = decoder.decode_frame(&mut buffer).unwrap() else {
            panic!("incomplete");
        };
        let frame = frame_of(&decoded);
        assert_eq!(frame.message_type, "event");
        assert_eq!(frame.name, "messageStart");
        assert_eq!(&frame.payload[..], b"{\"role\":\"assistant\"}");
    }
}
