//! Upstream server-sent event streams: the bytes, split into chunks where
//! the input says, go through the SSE decoder and each provider's
//! translator (OpenAI, Anthropic, Gemini). Nothing panics, and once a
//! translator reports an error or the end, the stream is over.

#![no_main]

use std::convert::Infallible;

use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use switchyard_adapters::stream::{SseEvent, Translate, decode_sse};
use switchyard_adapters::{anthropic, gemini, openai};

/// The body as it might arrive: the first byte sets the chunk size.
fn chunks(data: &[u8]) -> Vec<Result<Vec<u8>, Infallible>> {
    let Some((&size, body)) = data.split_first() else {
        return Vec::new();
    };
    let size = usize::from(size % 64) + 1;
    body.chunks(size).map(|chunk| Ok(chunk.to_vec())).collect()
}

fn translate(events: &[SseEvent], mut translator: impl Translate<SseEvent>) {
    for event in events {
        match translator.event(event.clone()) {
            Ok(step) if step.done => return,
            Ok(_) => {}
            Err(_) => return,
        }
    }
    let _ = translator.end();
}

fuzz_target!(|data: &[u8]| {
    let decoded: Vec<_> =
        futures::executor::block_on(decode_sse(futures::stream::iter(chunks(data))).collect());
    let events: Vec<SseEvent> = decoded.into_iter().map_while(Result::ok).collect();
    translate(&events, openai::ChunkTranslator::default());
    translate(&events, anthropic::EventTranslator::default());
    translate(&events, gemini::ChunkTranslator::default());
});
