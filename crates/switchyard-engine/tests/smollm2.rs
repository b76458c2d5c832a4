//! The engine on the real default model, SmolLM2-135M-Instruct (pulled with
//! `switchyard models pull`; `make test` does that first).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures::StreamExt;
use switchyard_core::{
    ChatBackend, ChatMessage, ChatRequest, ErrorKind, FinishReason, Role, StreamEvent,
};
use switchyard_engine::{EngineConfig, LocalEngine};

fn model_path() -> std::path::PathBuf {
    let store = switchyard_models::ModelStore::default_location().unwrap();
    let (entry, path) = store.resolve("smollm2-135m-instruct").unwrap();
    assert!(
        store.is_present(entry),
        "the default model is not pulled: run `make models` (or `switchyard models pull`) first"
    );
    path
}

async fn engine(config: impl FnOnce(&mut EngineConfig)) -> LocalEngine {
    let mut settings = EngineConfig::new(model_path());
    settings.context_length = 512;
    settings.parallel = 2;
    config(&mut settings);
    let engine = LocalEngine::start(settings).unwrap();
    engine.wait_ready().await.unwrap();
    engine
}

fn capital_question() -> ChatRequest {
    let mut request = ChatRequest::new(
        "smollm2-135m-instruct",
        vec![ChatMessage::new(
            Role::User,
            "What is the capital of France? Answer in one word.",
        )],
    );
    request.sampling.temperature = Some(0.0);
    request.max_tokens = Some(32);
    request
}

#[tokio::test]
async fn greedy_answer_names_paris_and_stream_matches_whole() {
    let engine = engine(|_| {}).await;
    let whole = engine.chat(capital_question()).await.unwrap();
    assert!(
        whole.content.contains("Paris"),
        "answer: {:?}",
        whole.content
    );
    assert_eq!(whole.finish_reason, FinishReason::Stop);
    assert!(whole.usage.prompt_tokens > 10);
    assert!(whole.usage.completion_tokens > 0);

    let mut stream = engine.chat_stream(capital_question()).await.unwrap();
    let mut text = String::new();
    let mut deltas = 0;
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        if let StreamEvent::Delta(piece) = &event {
            text.push_str(piece);
            deltas += 1;
        }
        events.push(event);
    }
    assert_eq!(text, whole.content);
    assert!(deltas >= 2, "expected token-by-token deltas, got {deltas}");
    assert_eq!(
        events[events.len() - 2],
        StreamEvent::Finish(FinishReason::Stop)
    );
    assert_eq!(events[events.len() - 1], StreamEvent::Usage(whole.usage));
}

#[tokio::test]
async fn max_tokens_ends_with_length_and_exact_count() {
    let engine = engine(|_| {}).await;
    let mut request = capital_question();
    request.messages[0] = ChatMessage::new(Role::User, "Write a long story about a dragon.");
    request.max_tokens = Some(5);
    let response = engine.chat(request).await.unwrap();
    assert_eq!(response.finish_reason, FinishReason::Length);
    assert_eq!(response.usage.completion_tokens, 5);
}

#[tokio::test]
async fn stop_sequence_cuts_the_answer() {
    let engine = engine(|_| {}).await;
    let free = engine.chat(capital_question()).await.unwrap();
    let cut_at = free.content.find("Paris").unwrap();
    let mut request = capital_question();
    request.stop = vec!["aris".into()];
    let response = engine.chat(request).await.unwrap();
    assert_eq!(response.finish_reason, FinishReason::Stop);
    assert_eq!(response.content, free.content[..cut_at + 1]);
}

#[tokio::test]
async fn prompt_longer_than_context_is_refused() {
    let engine = engine(|c| c.context_length = 64).await;
    let mut request = capital_question();
    request.messages[0] = ChatMessage::new(Role::User, "word ".repeat(200));
    let error = match engine.chat_stream(request).await {
        Err(error) => error,
        Ok(_) => panic!("an over-long prompt was accepted"),
    };
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!(error.code.as_deref(), Some("context_length_exceeded"));
}

#[tokio::test]
async fn same_seed_same_sample_and_concurrent_requests_all_finish() {
    let engine = engine(|c| c.parallel = 2).await;
    let sampled = || {
        let mut request = capital_question();
        request.messages[0] = ChatMessage::new(Role::User, "Name three fruits.");
        request.sampling.temperature = Some(0.9);
        request.sampling.seed = Some(42);
        request.max_tokens = Some(24);
        request
    };
    let first = engine.chat(sampled()).await.unwrap();
    let second = engine.chat(sampled()).await.unwrap();
    assert_eq!(first.content, second.content);

    // Five requests on two slots: all are served, none is lost.
    let results = futures::future::join_all((0..5).map(|_| engine.chat(capital_question()))).await;
    for result in results {
        assert!(result.unwrap().content.contains("Paris"));
    }
}

#[tokio::test]
async fn dropping_the_stream_frees_the_slot() {
    let engine = engine(|c| c.parallel = 1).await;
    let mut long = capital_question();
    long.messages[0] = ChatMessage::new(Role::User, "Write a very long story about a dragon.");
    long.max_tokens = Some(400);
    let mut stream = engine.chat_stream(long).await.unwrap();
    let _ = stream.next().await;
    drop(stream);
    // With one slot, this only finishes once the abandoned sequence is gone.
    let answer = engine.chat(capital_question()).await.unwrap();
    assert!(answer.content.contains("Paris"));
}

#[tokio::test]
async fn full_queue_is_refused_as_overloaded() {
    let engine = engine(|c| {
        c.parallel = 1;
        c.queue_capacity = 1;
    })
    .await;
    let mut long = capital_question();
    long.max_tokens = Some(200);
    long.messages[0] = ChatMessage::new(Role::User, "Write a very long story about a dragon.");
    let mut streams = Vec::new();
    let mut refused = None;
    for _ in 0..4 {
        match engine.chat_stream(long.clone()).await {
            Ok(stream) => streams.push(stream),
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    let error = refused.expect("a one-slot, one-place queue took four requests");
    assert_eq!(error.kind, ErrorKind::Overloaded);
    assert!(error.retry_after.is_some());
}

#[tokio::test]
async fn tools_and_images_are_refused_by_a_template_without_tools() {
    let engine = engine(|_| {}).await;
    let mut with_tools = capital_question();
    with_tools.tools = vec![switchyard_core::ToolDefinition {
        name: "lookup".into(),
        description: None,
        parameters: serde_json::json!({"type": "object"}),
    }];
    let error = engine.chat_stream(with_tools.clone()).await.err().unwrap();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!(error.param.as_deref(), Some("tools"));
    assert!(error.message.contains("tool calling is not supported"));

    // tool_choice "none" means the tools are only context: served.
    with_tools.tool_choice = Some(switchyard_core::ToolChoice::None);
    assert!(engine.chat(with_tools).await.is_ok());

    let mut with_image = capital_question();
    with_image.messages[0]
        .content
        .push(switchyard_core::ContentPart::Image {
            source: switchyard_core::ImageSource::Url("https://example.com/a.png".into()),
            detail: None,
        });
    let error = engine.chat_stream(with_image).await.err().unwrap();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!(error.param.as_deref(), Some("messages[0].content"));
}
