//! The engine on the real default model, SmolLM2-135M-Instruct (pulled with
//! `switchyard models pull`; `make test` does that first).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures::StreamExt;
use switchyard_core::{
    ChatBackend, ChatMessage, ChatRequest, ErrorKind, FinishReason, Residence, Role, StreamEvent,
};
use switchyard_engine::{EngineConfig, KeepAlive, LocalEngine, MemoryBudget};

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
    let StreamEvent::Usage(usage) = &events[events.len() - 1] else {
        panic!("the stream ends with {:?}", events[events.len() - 1]);
    };
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (whole.usage.prompt_tokens, whole.usage.completion_tokens)
    );
    // Asked again, the prompt comes from the first answer's KV state, all
    // but the token whose logits start the answer.
    assert_eq!(whole.usage.cache_read_tokens, 0);
    assert_eq!(usage.cache_read_tokens, usage.prompt_tokens - 1);
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

fn weather_tools() -> Vec<switchyard_core::ToolDefinition> {
    vec![
        switchyard_core::ToolDefinition {
            name: "get_weather".into(),
            description: Some("The current weather of a city".into()),
            parameters: serde_json::json!({"type": "object",
                "properties": {"city": {"type": "string", "maxLength": 30},
                               "unit": {"enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "unit"], "additionalProperties": false}),
        },
        switchyard_core::ToolDefinition {
            name: "get_time".into(),
            description: Some("The local time in a time zone".into()),
            parameters: serde_json::json!({"type": "object",
                "properties": {"zone": {"type": "string", "maxLength": 30}},
                "required": ["zone"], "additionalProperties": false}),
        },
    ]
}

fn weather_question() -> ChatRequest {
    let mut request = capital_question();
    request.messages[0] = ChatMessage::new(Role::User, "What is the weather in Oslo?");
    request.tools = weather_tools();
    request.max_tokens = Some(80);
    request
}

#[tokio::test]
async fn a_template_without_tools_still_makes_valid_calls_when_one_is_required() {
    let engine = engine(|_| {}).await;
    // SmolLM2's template renders no tools: the definitions go into the
    // prompt and a grammar keeps the answer to a call.
    let mut required = weather_question();
    required.tool_choice = Some(switchyard_core::ToolChoice::Required);
    required.sampling.temperature = Some(0.8);
    for _ in 0..8 {
        let answer = engine.chat(required.clone()).await.unwrap();
        assert_eq!(answer.finish_reason, FinishReason::ToolCalls, "{answer:?}");
        assert_eq!(answer.tool_calls.len(), 1, "{answer:?}");
        let call = &answer.tool_calls[0];
        let arguments: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
        match call.name.as_str() {
            "get_weather" => {
                assert!(arguments["city"].is_string(), "{arguments}");
                assert!(["celsius", "fahrenheit"].contains(&arguments["unit"].as_str().unwrap()));
            }
            "get_time" => assert!(arguments["zone"].is_string(), "{arguments}"),
            other => panic!("called {other}"),
        }
    }

    let mut named = weather_question();
    named.tool_choice = Some(switchyard_core::ToolChoice::Tool("get_time".into()));
    let answer = engine.chat(named).await.unwrap();
    assert_eq!(answer.tool_calls[0].name, "get_time");

    // `auto` leaves the model free to answer in words or to call.
    let answer = engine.chat(weather_question()).await.unwrap();
    assert!(
        answer.tool_calls.is_empty() != (answer.finish_reason == FinishReason::ToolCalls),
        "{answer:?}"
    );

    // tool_choice "none": the tools are only context.
    let mut none = weather_question();
    none.tool_choice = Some(switchyard_core::ToolChoice::None);
    let answer = engine.chat(none).await.unwrap();
    assert!(answer.tool_calls.is_empty());

    // A call grammar and a JSON response format cannot both shape one answer.
    let mut both = weather_question();
    both.response_format = Some(switchyard_core::ResponseFormat::JsonObject);
    let error = engine.chat_stream(both).await.err().unwrap();
    assert_eq!(error.param.as_deref(), Some("response_format"));
}

#[tokio::test]
async fn json_modes_always_parse_and_images_are_refused() {
    let engine = engine(|_| {}).await;
    let mut object = capital_question();
    object.response_format = Some(switchyard_core::ResponseFormat::JsonObject);
    object.sampling.temperature = Some(0.8);
    object.max_tokens = Some(400);
    // Seeded: an object without bounds may run past any budget, and a
    // sampled one differs from run to run.
    for seed in 1..=4 {
        object.sampling.seed = Some(seed);
        let answer = engine.chat(object.clone()).await.unwrap();
        assert_eq!(answer.finish_reason, FinishReason::Stop, "{answer:?}");
        let parsed: serde_json::Value = serde_json::from_str(&answer.content).unwrap();
        assert!(parsed.is_object(), "{parsed}");
    }

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

/// Plays a conversation of `questions`, each turn sending every earlier
/// question and answer again, as a chat client does; returns each turn's
/// answer and the prompt tokens it reused.
async fn converse(engine: &LocalEngine, questions: &[&str]) -> Vec<(String, u32, u32)> {
    let mut messages = vec![ChatMessage::new(
        Role::System,
        "You are a helpful assistant who answers briefly.",
    )];
    let mut turns = Vec::new();
    for question in questions {
        messages.push(ChatMessage::new(Role::User, *question));
        let mut request = ChatRequest::new("smollm2-135m-instruct", messages.clone());
        request.sampling.temperature = Some(0.0);
        request.max_tokens = Some(24);
        let answer = engine.chat(request).await.unwrap();
        messages.push(ChatMessage::new(Role::Assistant, answer.content.clone()));
        turns.push((
            answer.content,
            answer.usage.prompt_tokens,
            answer.usage.cache_read_tokens,
        ));
    }
    turns
}

#[tokio::test]
async fn prompt_prefix_reuse_answers_as_a_full_prefill_does() {
    let questions = [
        "What is the capital of France?",
        "And of Germany?",
        "Name a river in that country.",
        "Thank you. What is two plus two?",
    ];
    let fresh = converse(&engine(|c| c.prompt_cache = false).await, &questions).await;
    let reused = converse(&engine(|c| c.prompt_cache = true).await, &questions).await;
    for (turn, (without, with)) in fresh.iter().zip(&reused).enumerate() {
        assert_eq!(without.0, with.0, "turn {turn} answered differently");
        assert_eq!(without.1, with.1, "turn {turn}'s prompt differs");
        assert_eq!(without.2, 0, "nothing is reused with the cache off");
    }
    assert_eq!(reused[0].2, 0, "the first turn has nothing to reuse");
    for (turn, (_, prompt, cached)) in reused.iter().enumerate().skip(1) {
        // At least the system prompt and the first question come from the
        // cache; each turn evaluates little more than its own question.
        let previous_prompt = reused[turn - 1].1;
        assert!(
            *cached >= previous_prompt - 1 && cached < prompt,
            "turn {turn}: {cached} of {prompt} prompt tokens reused (the previous prompt was {previous_prompt})"
        );
    }
}

#[tokio::test]
async fn an_unrelated_prompt_takes_the_least_recently_used_slot() {
    let engine = engine(|c| c.parallel = 2).await;
    let first = engine.chat(capital_question()).await.unwrap();
    let mut other = capital_question();
    other.messages[0] = ChatMessage::new(Role::User, "Name three fruits.");
    other
        .messages
        .insert(0, ChatMessage::new(Role::System, "Be brief."));
    assert_eq!(engine.chat(other).await.unwrap().usage.cache_read_tokens, 0);
    // The capital question's slot was not overwritten by the unrelated one.
    let again = engine.chat(capital_question()).await.unwrap();
    assert_eq!(again.usage.cache_read_tokens, first.usage.prompt_tokens - 1);
    assert_eq!(again.content, first.content);
}

#[tokio::test]
async fn a_request_sent_while_the_model_loads_waits_and_is_served() {
    let mut settings = EngineConfig::new(model_path());
    settings.context_length = 512;
    settings.parallel = 1;
    let engine = LocalEngine::start(settings).unwrap();
    // No `wait_ready`: the request arrives while the model is loading.
    let answer = engine.chat(capital_question()).await.unwrap();
    assert!(answer.content.contains("Paris"), "{:?}", answer.content);
}

fn small_settings() -> EngineConfig {
    let mut settings = EngineConfig::new(model_path());
    settings.context_length = 512;
    settings.parallel = 1;
    settings
}

/// Polls `check` for up to ten seconds; the model's state changes on
/// engine threads and timers, not on the caller's schedule.
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if check() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    check()
}

#[tokio::test]
async fn two_models_under_a_budget_for_one_take_turns_and_both_always_answer() {
    // The same GGUF under two names; the budget is learnt from the first
    // load so that it holds one model and not two.
    let unlimited = MemoryBudget::new(None);
    let probe = LocalEngine::new(small_settings(), unlimited.clone()).unwrap();
    probe.wait_ready().await.unwrap();
    let footprint = probe.status().memory_bytes;
    assert!(
        footprint > 90_000_000,
        "weights alone are ~94 MB: {footprint}"
    );
    drop(probe);

    let budget = MemoryBudget::new(Some(footprint * 3 / 2));
    let a = LocalEngine::new(small_settings(), budget.clone()).unwrap();
    let b = LocalEngine::new(small_settings(), budget.clone()).unwrap();
    assert_eq!(a.status().state, Residence::Unloaded);
    for turn in 0..4 {
        let (serving, other) = if turn % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let answer = serving.chat(capital_question()).await.unwrap();
        assert!(
            answer.content.contains("Paris"),
            "turn {turn}: {:?}",
            answer.content
        );
        assert_eq!(serving.status().state, Residence::Loaded);
        assert_ne!(other.status().state, Residence::Loaded, "turn {turn}");
        assert!(budget.used() <= footprint * 3 / 2);
    }
    let (a, b) = (a.status(), b.status());
    assert_eq!((a.loads, b.loads), (2, 2));
    // Each load after the first made room by unloading the other model.
    assert_eq!(a.unloads_memory + b.unloads_memory, 3);
}

#[tokio::test]
async fn a_busy_model_is_not_unloaded_and_the_newcomer_waits_for_it() {
    let unlimited = LocalEngine::new(small_settings(), MemoryBudget::new(None)).unwrap();
    unlimited.wait_ready().await.unwrap();
    let footprint = unlimited.status().memory_bytes;
    drop(unlimited);

    let budget = MemoryBudget::new(Some(footprint * 3 / 2));
    let a = std::sync::Arc::new(LocalEngine::new(small_settings(), budget.clone()).unwrap());
    let b = LocalEngine::new(small_settings(), budget.clone()).unwrap();
    let mut long = capital_question();
    long.messages[0] = ChatMessage::new(Role::User, "Count from one to forty in words.");
    long.max_tokens = Some(120);
    let mut stream = a.chat_stream(long).await.unwrap();
    // `a` is generating: `b` must wait for it rather than evict it.
    let first = stream.next().await.unwrap().unwrap();
    assert!(matches!(first, StreamEvent::Delta(_)));
    let waiting = tokio::spawn(async move {
        let answer = b.chat(capital_question()).await;
        (answer, b)
    });
    let mut text = String::new();
    while let Some(event) = stream.next().await {
        if let StreamEvent::Delta(piece) = event.unwrap() {
            text.push_str(&piece);
        }
    }
    assert!(text.len() > 20, "a finished its answer whole: {text:?}");
    drop(stream);
    let (answer, b) = waiting.await.unwrap();
    assert!(answer.unwrap().content.contains("Paris"));
    assert_eq!(a.status().unloads_memory, 1);
    assert_eq!(b.status().state, Residence::Loaded);
}

#[tokio::test]
async fn keep_alive_zero_unloads_when_idle_and_the_next_request_loads_again() {
    let mut settings = small_settings();
    settings.keep_alive = KeepAlive::For(std::time::Duration::ZERO);
    let engine = LocalEngine::new(settings, MemoryBudget::new(None)).unwrap();
    let answer = engine.chat(capital_question()).await.unwrap();
    assert!(answer.content.contains("Paris"));
    assert!(
        eventually(|| engine.status().state == Residence::Unloaded).await,
        "{:?}",
        engine.status()
    );
    assert_eq!(engine.status().unloads_idle, 1);
    let again = engine.chat(capital_question()).await.unwrap();
    assert_eq!(again.content, answer.content);
    assert_eq!(engine.status().loads, 2);
}

#[tokio::test]
async fn an_operator_unload_lets_the_running_answer_finish() {
    let engine = LocalEngine::new(small_settings(), MemoryBudget::new(None)).unwrap();
    engine.load().await.unwrap();
    let mut stream = engine.chat_stream(capital_question()).await.unwrap();
    assert_eq!(engine.unload().state, Residence::Unloaded);
    let mut text = String::new();
    let mut finished = false;
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            StreamEvent::Delta(piece) => text.push_str(&piece),
            StreamEvent::Finish(_) => finished = true,
            _ => {}
        }
    }
    assert!(finished && text.contains("Paris"), "{text:?}");
    assert_eq!(engine.status().unloads_admin, 1);
}

#[tokio::test]
async fn a_model_larger_than_the_whole_budget_is_refused_with_the_reason() {
    let engine = LocalEngine::new(small_settings(), MemoryBudget::new(Some(1_000_000))).unwrap();
    let error = engine.chat(capital_question()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Internal);
    assert!(error.message.contains("max_memory"), "{}", error.message);
}
