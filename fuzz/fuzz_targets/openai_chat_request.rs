//! `POST /v1/chat/completions` bodies: decoding never panics, a decoded
//! request encodes and decodes back to itself (less `metadata` and
//! `retrieval`, which are the gateway's and never sent upstream), and
//! turning it into the canonical request and then into each upstream's
//! request never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_protocol::anthropic::MessagesRequest;
use switchyard_protocol::openai::ChatCompletionRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<ChatCompletionRequest>(data) else {
        return;
    };
    let encoded = serde_json::to_vec(&request).expect("a decoded request encodes");
    let again: ChatCompletionRequest =
        serde_json::from_slice(&encoded).expect("an encoded request decodes");
    let mut expected = request.clone();
    expected.metadata = None;
    expected.retrieval = None;
    assert_eq!(
        again, expected,
        "decode → encode → decode changed the request"
    );
    if let Ok(canonical) = request.into_canonical() {
        let openai = ChatCompletionRequest::from_canonical(&canonical, "upstream", true);
        serde_json::to_vec(&openai).expect("the upstream request encodes");
        let anthropic = MessagesRequest::from_canonical(&canonical, "upstream", 1024, true);
        serde_json::to_vec(&anthropic).expect("the upstream request encodes");
    }
});
