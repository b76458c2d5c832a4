//! Sentences per second of the local embedder, for batches of 1 and 32.
//!
//! ```text
//! cargo run --release -p switchyard-embedder --example embed_bench -- [--seconds 10] [MODEL_DIR]
//! ```
//!
//! Each figure runs for the given time through the public API (queue,
//! tokenizer, forward pass, pooling): batch 1 sends one sentence per
//! request, one request at a time; batch 32 sends 32 sentences per request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use switchyard_core::{EmbeddingBackend, EmbeddingRequest};
use switchyard_embedder::{EmbedderConfig, LocalEmbedder};

const SENTENCES: [&str; 8] = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
];

async fn run(embedder: &LocalEmbedder, batch: usize, seconds: u64) -> f64 {
    let inputs: Vec<String> = (0..batch)
        .map(|i| SENTENCES[i % SENTENCES.len()].to_owned())
        .collect();
    let request = || EmbeddingRequest {
        model: "bench".into(),
        inputs: inputs.clone(),
        dimensions: None,
        user: None,
    };
    // Warm up caches and thread pools.
    embedder.embed(request()).await.unwrap();
    let started = Instant::now();
    let mut embedded = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        embedded += embedder.embed(request()).await.unwrap().embeddings.len();
    }
    embedded as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let mut seconds = 10;
    let mut dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = args.next().unwrap().parse().unwrap(),
            path => dir = Some(PathBuf::from(path)),
        }
    }
    let dir = dir.unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap())
            .join(".cache/switchyard/models/all-minilm-l6-v2")
    });
    let embedder = LocalEmbedder::start(EmbedderConfig::new(&dir)).unwrap();
    embedder.wait_ready().await.unwrap();
    println!("# {} ({seconds} s per figure)", dir.display());
    for batch in [1, 32] {
        let rate = run(&embedder, batch, seconds).await;
        println!("batch {batch:>2}: {rate:>7.1} sentences/s");
    }
}
