//! Time to first token with prompt-prefix reuse on and off, on the two
//! cases it is for: the 6th turn of a conversation (each turn resends the
//! earlier ones) and a grounded request with a ~1,500-token source block
//! asked twice.
//!
//! ```text
//! cargo run --release -p switchyard-engine --example prefix_bench -- \
//!     [--threads 2] [--runs 3] [MODEL.gguf]
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchyard_core::{ChatBackend, ChatMessage, ChatRequest, Role, StreamEvent};
use switchyard_engine::{EngineConfig, LocalEngine};

const TURNS: &[&str] = &[
    "What is the capital of France?",
    "And of Germany?",
    "Name a river in that country.",
    "How long is it, roughly?",
    "Which sea does it flow into?",
    "Thank you. Summarise what we talked about in one sentence.",
];

struct Args {
    model: PathBuf,
    threads: u32,
    runs: usize,
}

fn args() -> Args {
    let mut threads = 2;
    let mut runs = 3;
    let mut model = None;
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--threads" => threads = iter.next().unwrap().parse().unwrap(),
            "--runs" => runs = iter.next().unwrap().parse().unwrap(),
            path => model = Some(PathBuf::from(path)),
        }
    }
    let model = model.unwrap_or_else(|| {
        let store = switchyard_models::ModelStore::default_location().unwrap();
        store.resolve("smollm2-135m-instruct").unwrap().1
    });
    Args {
        model,
        threads,
        runs,
    }
}

/// One streamed answer: time to its first delta, its text, its usage.
async fn ask(engine: &LocalEngine, messages: Vec<ChatMessage>) -> (Duration, String, u32, u32) {
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
            StreamEvent::Finish(_) | StreamEvent::ToolCall(_) => {}
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
            let (ttft, answer, prompt, cached) = ask(&engine, messages.clone()).await;
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
        let _ = ask(&engine, question.clone()).await;
        let (ttft, _, prompt, cached) = ask(&engine, question).await;
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

#[tokio::main]
async fn main() {
    let args = args();
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
    let off = measure(&args, false).await;
    let on = measure(&args, true).await;
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
