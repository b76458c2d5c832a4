//! Bedrock's ConverseStream bodies: AWS event-stream frames decoded from
//! bytes split where the input says, then translated. Nothing panics, and
//! a body that ends inside a frame is an error, never a silent end.

#![no_main]

use bytes::Bytes;
use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use switchyard_adapters::bedrock::{EventTranslator, decode_frames};
use switchyard_adapters::stream::Translate;

fuzz_target!(|data: &[u8]| {
    let Some((&size, body)) = data.split_first() else {
        return;
    };
    let size = usize::from(size % 64) + 1;
    let chunks: Vec<_> = body
        .chunks(size)
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    let frames: Vec<_> =
        futures::executor::block_on(decode_frames(futures::stream::iter(chunks)).collect());
    let mut translator = EventTranslator::default();
    for frame in frames {
        let Ok(frame) = frame else { return };
        match translator.event(frame) {
            Ok(step) if step.done => return,
            Ok(_) => {}
            Err(_) => return,
        }
    }
    let _ = translator.end();
});
