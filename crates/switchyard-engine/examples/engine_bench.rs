//! Prompt and decode throughput of the embedded engine, beside the same
//! llama.cpp build driven directly (llama-bench style), on one GGUF file.
//!
//! ```text
//! cargo run --release -p switchyard-engine --example engine_bench -- \
//!     --mode raw|engine|prefix [--threads 2] [--runs 3] [MODEL.gguf]
//! ```
//!
//! `raw` rows call llama.cpp through `llama-cpp-2` with nothing around it:
//! one `decode` of the whole prompt, then one `decode` per generated token.
//! `engine` rows go through `LocalEngine`'s public API (template, tokenizer
//! on the blocking pool, queue, scheduler thread, streamed deltas), timing
//! the first delta and the last. `prefix` times the first token with
//! prompt-prefix reuse on and off: the 6th turn of a conversation (each
//! turn resends the earlier ones) and a grounded request with a
//! ~1,500-token source block asked twice.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use switchyard_core::{
    ChatBackend, ChatMessage, ChatRequest, JsonSchemaFormat, ResponseFormat, Role, StreamEvent,
};
use switchyard_engine::template::ChatTemplate;
use switchyard_engine::{EngineConfig, LocalEngine};

const DECODE_TOKENS: u32 = 128;

struct Args {
    mode: String,
    model: PathBuf,
    threads: u32,
    runs: usize,
}

fn args() -> Args {
    let mut threads = 2;
    let mut runs = 3;
    let mut model = None;
    let mut mode = String::from("engine");
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--threads" => threads = iter.next().unwrap().parse().unwrap(),
            "--runs" => runs = iter.next().unwrap().parse().unwrap(),
            "--mode" => mode = iter.next().unwrap(),
            path => model = Some(PathBuf::from(path)),
        }
    }
    let model = model.unwrap_or_else(|| {
        let home = std::env::var("HOME").unwrap();
        PathBuf::from(home)
            .join(".cache/switchyard/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    Args {
        mode,
        model,
        threads,
        runs,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A user message that the template turns into roughly `tokens` tokens.
fn filler(words: usize) -> String {
    let vocabulary = [
        "river", "stone", "garden", "lantern", "harbor", "meadow", "copper", "violin",
    ];
    let body: Vec<&str> = (0..words)
        .map(|i| vocabulary[i % vocabulary.len()])
        .collect();
    format!(
        "Read these words and then tell a long story: {}",
        body.join(" ")
    )
}

/// llama.cpp alone: pp = one decode of the prompt, tg = one decode per token.
fn raw(args: &Args, prompts: &[String]) -> Vec<(String, f64)> {
    let backend = LlamaBackend::init().unwrap();
    let model =
        LlamaModel::load_from_file(&backend, &args.model, &LlamaModelParams::default()).unwrap();
    // The same tokens the engine feeds: the model's template, its tokenizer.
    let template = ChatTemplate::new(
        model.meta_val_str("tokenizer.chat_template").unwrap(),
        "",
        "",
    )
    .unwrap();
    let prompt_tokens: Vec<Vec<LlamaToken>> = prompts
        .iter()
        .map(|p| {
            let text = template
                .render(&[ChatMessage::new(Role::User, p.as_str())], &[])
                .unwrap();
            model.vocab().tokenize(text.as_bytes(), false, true)
        })
        .collect();
    let threads = args.threads as i32;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(1024))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(&backend, params).unwrap();
    let mut rows = Vec::new();
    for tokens in &prompt_tokens {
        let mut rates = Vec::new();
        for _ in 0..args.runs {
            ctx.clear_kv_cache();
            let mut batch = LlamaBatch::new(1024, 1);
            batch.add_sequence(tokens, 0, false).unwrap();
            let started = Instant::now();
            ctx.decode(&mut batch).unwrap();
            rates.push(tokens.len() as f64 / started.elapsed().as_secs_f64());
        }
        rows.push((format!("raw    pp{}", tokens.len()), median(rates)));
    }
    let mut rates = Vec::new();
    let prompt = &prompt_tokens[0];
    for _ in 0..args.runs {
        ctx.clear_kv_cache();
        let mut batch = LlamaBatch::new(1024, 1);
        batch.add_sequence(prompt, 0, false).unwrap();
        ctx.decode(&mut batch).unwrap();
        let mut sampler = LlamaSampler::greedy();
        let mut last = batch.n_tokens() - 1;
        let first_pos = prompt.len() as i32;
        let started = Instant::now();
        for pos in first_pos..first_pos + DECODE_TOKENS as i32 {
            let token = sampler.sample(&ctx, last);
            batch.clear();
            batch.add(token, pos, &[0], true).unwrap();
            ctx.decode(&mut batch).unwrap();
            last = 0;
        }
        rates.push(f64::from(DECODE_TOKENS) / started.elapsed().as_secs_f64());
    }
    rows.push((format!("raw    tg{DECODE_TOKENS}"), median(rates)));
    rows
}

/// One streamed answer: prompt and decode rates, prompt and answer tokens.
async fn timed(engine: &LocalEngine, request: ChatRequest) -> (f64, f64, u32, u32) {
    let started = Instant::now();
    let mut stream = engine.chat_stream(request).await.unwrap();
    let mut first = None;
    let mut last = started;
    let (mut prompt_len, mut generated) = (0, 0);
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            StreamEvent::Delta(_) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
            }
            StreamEvent::Usage(usage) => {
                prompt_len = usage.prompt_tokens;
                generated = usage.completion_tokens;
            }
            StreamEvent::Finish(_) | StreamEvent::ToolCall(_) | StreamEvent::ToolRun(_) => {}
        }
    }
    let first = first.unwrap();
    (
        f64::from(prompt_len) / (first - started).as_secs_f64(),
        f64::from(generated - 1) / (last - first).as_secs_f64(),
        prompt_len,
        generated,
    )
}

/// A schema whose answers run long enough to time the decode: twelve
/// bounded strings.
fn list_schema() -> ResponseFormat {
    ResponseFormat::JsonSchema(JsonSchemaFormat {
        name: "list".into(),
        description: None,
        schema: serde_json::json!({"type": "object", "properties": {"items": {
            "type": "array", "items": {"type": "string", "maxLength": 24},
            "minItems": 12, "maxItems": 12}}, "required": ["items"]}),
        strict: Some(true),
    })
}

/// The same work through the engine's public API, and the decode rate of
/// a grammar-constrained answer.
async fn engine(args: &Args, prompts: &[String]) -> Vec<(String, f64)> {
    let mut config = EngineConfig::new(&args.model);
    config.threads = Some(args.threads);
    config.context_length = 1024;
    // Each prompt runs several times: every run must prefill it.
    config.prompt_cache = false;
    let engine = LocalEngine::start(config).unwrap();
    engine.wait_ready().await.unwrap();
    let mut rows = Vec::new();
    for (index, prompt) in prompts.iter().enumerate() {
        let mut prompt_rates = Vec::new();
        let mut decode_rates = Vec::new();
        let (mut prompt_len, mut generated) = (0, 0);
        for _ in 0..args.runs {
            let mut request = ChatRequest::new("bench", vec![ChatMessage::new(Role::User, prompt)]);
            request.sampling.temperature = Some(0.0);
            request.max_tokens = Some(DECODE_TOKENS);
            let (prompt_rate, decode_rate, p, g) = timed(&engine, request).await;
            prompt_rates.push(prompt_rate);
            decode_rates.push(decode_rate);
            (prompt_len, generated) = (p, g);
        }
        rows.push((format!("engine pp{prompt_len}"), median(prompt_rates)));
        if index == 0 {
            rows.push((
                format!("engine tg{generated} (after pp{prompt_len})"),
                median(decode_rates),
            ));
        }
    }
    let mut decode_rates = Vec::new();
    let mut generated = 0;
    for _ in 0..args.runs {
        let mut request = ChatRequest::new(
            "bench",
            vec![ChatMessage::new(Role::User, "List twelve animals.")],
        );
        request.sampling.temperature = Some(0.0);
        request.max_tokens = Some(DECODE_TOKENS * 2);
        request.response_format = Some(list_schema());
        let (_, decode_rate, _, g) = timed(&engine, request).await;
        decode_rates.push(decode_rate);
        generated = g;
    }
    rows.push((
        format!("engine tg{generated} json_schema grammar"),
        median(decode_rates),
    ));
    rows
}

#[tokio::main]
async fn main() {
    let args = args();
    if args.mode == "prefix" {
        prefix(&args).await;
        return;
    }
    // User messages that the chat template turns into about 40 and about
    // 512 tokens.
    let prompts = vec![filler(14), filler(472)];
    let rows = match args.mode.as_str() {
        "raw" => raw(&args, &prompts),
        "engine" => engine(&args, &prompts).await,
        other => panic!("unknown --mode {other}; use raw, engine or prefix"),
    };
    println!(
        "# {} threads={} runs={} (median)",
        args.model.display(),
        args.threads,
        args.runs
    );
    for (name, rate) in rows {
        println!("{name:<32} {rate:>8.1} tok/s");
    }
}

const TURNS: &[&str] = &[
    "What is the capital of France?",
    "And of Germany?",
    "Name a river in that country.",
    "How long is it, roughly?",
    "Which sea does it flow into?",
    "Thank you. Summarise what we talked about in one sentence.",
];

/// One streamed answer: time to its first delta, its text, its usage.
async fn first_token(
    engine: &LocalEngine,
    messages: Vec<ChatMessage>,
) -> (Duration, String, u32, u32) {
    let mut request = ChatRequest::new("bench", messages);
    request.sampling.temperature = Some(0.0);
    request.max_tokens = Some(32);
    let started = Instant::now();
    let mut stream = engine.chat_stream(request).await.unwrap();
    let mut first = None;
    let mut text = String::new();
    let (mut prompt, mut cached) = (0, 0);
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            StreamEvent::Delta(piece) => {
                first.get_or_insert_with(|| started.elapsed());
                text.push_str(&piece);
            }
            StreamEvent::Usage(usage) => {
                prompt = usage.prompt_tokens;
                cached = usage.cache_read_tokens;
            }
            StreamEvent::Finish(_) | StreamEvent::ToolCall(_) | StreamEvent::ToolRun(_) => {}
        }
    }
    (
        first.unwrap_or_else(|| started.elapsed()),
        text,
        prompt,
        cached,
    )
}

/// A source block of about 1,500 tokens: made-up facts, so that the model
/// cannot answer from memory.
fn sources() -> String {
    let mut block = String::from("Answer only from these sources.\n");
    for i in 0..60 {
        block.push_str(&format!(
            "[{i}] The harbour of Vell{i} ships {} crates of copper a week; its lighthouse keeper is called Mara {i}.\n",
            100 + 7 * i
        ));
    }
    block
}

struct Row {
    case: &'static str,
    prompt: u32,
    cached: u32,
    ttft: Vec<Duration>,
}

async fn measure(args: &Args, prompt_cache: bool) -> Vec<Row> {
    let mut config = EngineConfig::new(&args.model);
    config.threads = Some(args.threads);
    config.context_length = 4096;
    config.parallel = 2;
    config.prompt_cache = prompt_cache;
    let engine = LocalEngine::start(config).unwrap();
    engine.wait_ready().await.unwrap();
    let mut conversation = Row {
        case: "6th turn of a conversation",
        prompt: 0,
        cached: 0,
        ttft: Vec::new(),
    };
    let mut grounded = Row {
        case: "1,500-token sources, asked again",
        prompt: 0,
        cached: 0,
        ttft: Vec::new(),
    };
    for _ in 0..args.runs {
        let mut messages = vec![ChatMessage::new(Role::System, "You answer briefly.")];
        for (turn, question) in TURNS.iter().enumerate() {
            messages.push(ChatMessage::new(Role::User, *question));
            let (ttft, answer, prompt, cached) = first_token(&engine, messages.clone()).await;
            messages.push(ChatMessage::new(Role::Assistant, answer));
            if turn + 1 == TURNS.len() {
                conversation.ttft.push(ttft);
                conversation.prompt = prompt;
                conversation.cached = cached;
            }
        }
        let question = vec![
            ChatMessage::new(Role::System, sources()),
            ChatMessage::new(Role::User, "Who keeps the lighthouse of Vell17?"),
        ];
        let _ = first_token(&engine, question.clone()).await;
        let (ttft, _, prompt, cached) = first_token(&engine, question).await;
        grounded.ttft.push(ttft);
        grounded.prompt = prompt;
        grounded.cached = cached;
    }
    vec![conversation, grounded]
}

fn median_ms(values: &[Duration]) -> f64 {
    let mut ms: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

/// `--mode prefix`: prompt-prefix reuse on and off.
async fn prefix(args: &Args) {
    println!(
        "# {} threads={} runs={} (median time to first token)",
        args.model.display(),
        args.threads,
        args.runs
    );
    println!(
        "{:<34} {:>7} {:>7} {:>10} {:>10}",
        "case", "prompt", "cached", "reuse off", "reuse on"
    );
    let off = measure(args, false).await;
    let on = measure(args, true).await;
    for (off, on) in off.iter().zip(&on) {
        println!(
            "{:<34} {:>7} {:>7} {:>8.1}ms {:>8.1}ms",
            off.case,
            on.prompt,
            on.cached,
            median_ms(&off.ttft),
            median_ms(&on.ttft)
        );
    }
}
