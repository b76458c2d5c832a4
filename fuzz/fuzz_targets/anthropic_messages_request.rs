//! `POST /v1/messages` bodies (Anthropic's shape): decoding never panics,
//! a decoded request encodes and decodes back to itself, and the canonical
//! request it becomes encodes for each upstream without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_protocol::anthropic::MessagesRequest;
use switchyard_protocol::openai::ChatCompletionRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<MessagesRequest>(data) else {
        return;
    };
    let encoded = serde_json::to_vec(&request).expect("a decoded request encodes");
    let again: MessagesRequest =
        serde_json::from_slice(&encoded).expect("an encoded request decodes");
    assert_eq!(
        again, request,
        "decode → encode → decode changed the request"
    );
    if let Ok(canonical) = request.into_canonical() {
        let anthropic = MessagesRequest::from_canonical(&canonical, "upstream", 1024, false);
        serde_json::to_vec(&anthropic).expect("the upstream request encodes");
        let openai = ChatCompletionRequest::from_canonical(&canonical, "upstream", false);
        serde_json::to_vec(&openai).expect("the upstream request encodes");
    }
});
