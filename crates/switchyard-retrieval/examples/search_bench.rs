//! Ingestion throughput and search latency on a large collection.
//!
//! 1. Ingests the 47 Rust Book pages of the test corpus as an ingestion
//!    job (HTML extraction, chunking, all-MiniLM-L6-v2 embeddings on this
//!    machine's CPU, tantivy + HNSW commits): chunks per second.
//! 2. Grows the index past 50,000 chunks by writing copies of those chunks
//!    whose vectors blend each real vector with another, picked at random
//!    (embedding 50,000 distinct chunks takes over an hour on two cores):
//!    index writes per second.
//! 3. Runs the corpus's 47 questions (embedded for real) many times per
//!    mode: search latency percentiles, and the HNSW's recall@10 against an
//!    exact scan of every vector.
//! 4. Reopens the collection as a restart would: the time to open it,
//!    search latency while its graph is rebuilt in the background, and the
//!    time until the graph is ready.
//!
//! `cargo run --release -p switchyard-retrieval --example search_bench [COPIES]`
//! (COPIES defaults to 34: about 51,000 chunks). Needs `switchyard models pull`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    missing_docs
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use switchyard_retrieval::{
    ChunkRecord, ChunkSettings, DocumentRecord, Embedder, Filter, Ingestor, JobStatus,
    RetrievalError, SearchMode, SearchQuery, TokenizerCount, WriteBatch, chunk_text, extract,
};

/// The real embedder, keeping every vector it returns in order, and the
/// time spent waiting on it.
struct Recorder {
    inner: Arc<common::MiniLm>,
    vectors: Mutex<Vec<Vec<f32>>>,
    waited: Mutex<Duration>,
}

impl Embedder for Recorder {
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'_, Result<Vec<Vec<f32>>, RetrievalError>> {
        Box::pin(async move {
            let started = Instant::now();
            let vectors = self.inner.embed(texts).await?;
            *self.waited.lock().unwrap() += started.elapsed();
            self.vectors.lock().unwrap().extend(vectors.iter().cloned());
            Ok(vectors)
        })
    }
}

#[derive(serde::Deserialize)]
struct Judgment {
    question: String,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

fn top_10(text: &str, vector: &[f32], mode: SearchMode) -> SearchQuery {
    SearchQuery {
        text: text.to_owned(),
        vector: Some(vector.to_vec()),
        top_k: 10,
        mode,
        filter: Filter::default(),
    }
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let copies: usize = std::env::args().nth(1).map_or(34, |a| a.parse().unwrap());
    let embedder = common::minilm().await;
    let counter =
        Arc::new(TokenizerCount::load(&common::model_dir().join("tokenizer.json")).unwrap());
    let recorder = Arc::new(Recorder {
        inner: embedder.clone(),
        vectors: Mutex::new(Vec::new()),
        waited: Mutex::new(Duration::ZERO),
    });
    let ingestor = Arc::new(Ingestor::new(
        recorder.clone(),
        counter.clone(),
        ChunkSettings::default(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let collections = common::collections(dir.path());
    collections.create("bench", "book", None).await.unwrap();
    let collection = collections.get("bench", "book").await.unwrap();
    let index = collection.index();

    // 1. The real pipeline (the ingestion job the API runs), timed end to end.
    let pages = common::book_pages(&[]);
    let started = Instant::now();
    let job = ingestor
        .ingest(collection.clone(), pages.clone())
        .await
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let real_chunks = job.chunks_indexed;
    println!(
        "ingestion (extract, chunk, embed, index): {} pages, {real_chunks} chunks in {elapsed:.1} s = {:.1} chunks/s, {:.1} s of it waiting on the embedder",
        pages.len(),
        real_chunks as f64 / elapsed,
        recorder.waited.lock().unwrap().as_secs_f64()
    );

    // The same documents as records, with the vectors the job computed (it
    // embeds documents and their chunks in order), for the copies below.
    let mut recorded = std::mem::take(&mut *recorder.vectors.lock().unwrap()).into_iter();
    let originals: Vec<DocumentRecord> = pages
        .iter()
        .map(|page| {
            let extracted = extract(page.format, &page.content).unwrap();
            let chunks = chunk_text(
                &extracted.text,
                true,
                ChunkSettings::default(),
                counter.as_ref(),
            )
            .unwrap();
            DocumentRecord {
                id: page.id.clone(),
                title: extracted.title.unwrap_or_default(),
                source: page.source.clone(),
                format: "html".into(),
                content_hash: String::new(),
                metadata: serde_json::Map::new(),
                chunks: chunks
                    .into_iter()
                    .map(|c| ChunkRecord::new(c, recorded.next().unwrap()))
                    .collect(),
            }
        })
        .collect();
    assert!(recorded.next().is_none(), "one vector per chunk");

    // 2. Copies of the real chunks with vectors blended from real ones.
    let started = Instant::now();
    let mut all_vectors: Vec<Vec<f32>> = originals
        .iter()
        .flat_map(|d| d.chunks.iter().map(|c| c.vector.clone()))
        .collect();
    let real = all_vectors.clone();
    let mut rng = fastrand::Rng::with_seed(7);
    for copy in 1..copies {
        let upserts: Vec<DocumentRecord> = originals
            .iter()
            .map(|d| {
                let mut d = d.clone();
                d.id = format!("{}~{copy}", d.id);
                for c in &mut d.chunks {
                    // Each copy leans towards another chunk, picked at
                    // random, so that copies spread over the space the real
                    // vectors span instead of forming tight clusters (which
                    // no real corpus has and which starve a graph of links
                    // between clusters).
                    let partner = &real[rng.usize(..real.len())];
                    let weight = 0.3 + rng.f32() * 0.5;
                    c.vector = unit(
                        c.vector
                            .iter()
                            .zip(partner)
                            .map(|(x, p)| x + weight * p + (rng.f32() - 0.5) * 0.02)
                            .collect(),
                    );
                    all_vectors.push(c.vector.clone());
                }
                d
            })
            .collect();
        index
            .write(WriteBatch {
                upserts,
                deletes: Vec::new(),
            })
            .unwrap();
    }
    let total = index.stats().chunks;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "index writes of the copies: {} chunks in {elapsed:.1} s = {:.0} chunks/s; collection: {total} chunks",
        total as usize - real_chunks,
        (total as usize - real_chunks) as f64 / elapsed
    );

    // 3. Queries.
    let judgments: Vec<Judgment> = serde_json::from_str(
        &std::fs::read_to_string(common::corpus_dir().join("../rust-book-questions.json")).unwrap(),
    )
    .unwrap();
    let mut embed_times = Vec::new();
    let mut queries = Vec::new();
    for j in &judgments {
        let started = Instant::now();
        let vector = embedder
            .embed(vec![j.question.clone()])
            .await
            .unwrap()
            .remove(0);
        embed_times.push(started.elapsed());
        queries.push((j.question.clone(), vector));
    }
    embed_times.sort();
    println!(
        "query embedding: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&embed_times, 0.5),
        percentile(&embed_times, 0.99)
    );
    for mode in [SearchMode::Keyword, SearchMode::Vector, SearchMode::Hybrid] {
        let mut times = Vec::new();
        for _ in 0..10 {
            for (text, vector) in &queries {
                let query = top_10(text, vector, mode);
                let started = Instant::now();
                let hits = index.search(&query).unwrap();
                times.push(started.elapsed());
                assert_eq!(hits.len(), 10);
            }
        }
        times.sort();
        println!(
            "search {mode:?} top 10 over {total} chunks: p50 {:.2} ms, p99 {:.2} ms ({} searches)",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times.len()
        );
    }

    // The graph against an exact scan: recall@10 of the vector ranking.
    // The scan's time is the baseline the graph has to beat.
    let mut found = 0;
    let mut scan_times = Vec::new();
    for (text, vector) in &queries {
        let started = Instant::now();
        let q = unit(vector.clone());
        let mut exact: Vec<(f32, usize)> = all_vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (v.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>(), i))
            .collect();
        exact.select_nth_unstable_by(9, |a, b| b.0.total_cmp(&a.0));
        scan_times.push(started.elapsed());
        let exact_top: HashSet<String> = exact[..10]
            .iter()
            .map(|(_, i)| {
                format!(
                    "{:.5}",
                    all_vectors[*i]
                        .iter()
                        .zip(&q)
                        .map(|(a, b)| a * b)
                        .sum::<f32>()
                )
            })
            .collect();
        let query = top_10(text, vector, SearchMode::Vector);
        // Compare by similarity value: ids of copies differ between the scan
        // and the index, similarities of the same vector do not.
        let hits = index.search(&query).unwrap();
        let approx: HashSet<String> = hits
            .iter()
            .map(|h| {
                let v = &all_vectors[vector_position(&originals, &h.document_id, h.position)];
                format!("{:.5}", v.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>())
            })
            .collect();
        found += exact_top.intersection(&approx).count();
    }
    scan_times.sort();
    println!(
        "HNSW recall@10 against an exact scan: {:.3}; exact scan of {} vectors: p50 {:.2} ms",
        found as f64 / (queries.len() * 10) as f64,
        all_vectors.len(),
        percentile(&scan_times, 0.5)
    );

    // What a restart costs: the collection opens with its vectors searched
    // by exact scan while the graph is rebuilt in the background.
    let started = Instant::now();
    let reopened = common::collections(dir.path())
        .get("bench", "book")
        .await
        .unwrap();
    let opened = started.elapsed();
    let mut times = Vec::new();
    for (text, vector) in &queries {
        let query = top_10(text, vector, SearchMode::Vector);
        let started = Instant::now();
        let hits = reopened.index().search(&query).unwrap();
        times.push(started.elapsed());
        assert_eq!(hits.len(), 10);
    }
    times.sort();
    let stats = reopened.stats().await;
    assert!(
        stats.vectors_awaiting_graph > 0,
        "the searches above were meant to run before the graph was ready"
    );
    println!(
        "reopening the collection ({} chunks): {:.2} s; vector searches while its graph is rebuilt: p50 {:.2} ms, p99 {:.2} ms",
        stats.chunks,
        opened.as_secs_f64(),
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
    while reopened.stats().await.vectors_awaiting_graph > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "graph ready {:.1} s after the collection was opened",
        started.elapsed().as_secs_f64()
    );
}

/// Where a chunk's vector sits in the order the vectors were written.
fn vector_position(originals: &[DocumentRecord], document_id: &str, position: u32) -> usize {
    let (base, copy) = match document_id.split_once('~') {
        Some((base, copy)) => (base, copy.parse::<usize>().unwrap()),
        None => (document_id, 0),
    };
    let per_copy: usize = originals.iter().map(|d| d.chunks.len()).sum();
    let mut offset = 0;
    for d in originals {
        if d.id == base {
            return copy * per_copy + offset + position as usize;
        }
        offset += d.chunks.len();
    }
    panic!("unknown document {document_id}")
}
