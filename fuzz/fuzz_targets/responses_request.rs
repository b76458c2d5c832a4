//! `POST /v1/responses` bodies: decoding and turning them into a canonical
//! request never panic, and what comes out encodes for an upstream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_protocol::openai::ChatCompletionRequest;
use switchyard_protocol::openai_responses::ResponsesRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<ResponsesRequest>(data) else {
        return;
    };
    if let Ok((canonical, _turn)) = request.into_canonical() {
        let openai = ChatCompletionRequest::from_canonical(&canonical, "upstream", true);
        serde_json::to_vec(&openai).expect("the upstream request encodes");
    }
});
