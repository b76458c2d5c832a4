//! Retrieval quality on a corpus with relevance judgments (47 chapters of
//! the Rust Book, one question per chapter; see tests/corpus/README.md),
//! embedded by the real all-MiniLM-L6-v2: recall@5 and MRR@10 at the level
//! of documents, for BM25 alone, vectors alone and the hybrid fusion.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use serde::Deserialize;
use switchyard_retrieval::{Embedder, Filter, JobStatus, SearchMode, SearchQuery};

#[derive(Deserialize)]
struct Judgment {
    question: String,
    relevant: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Scores {
    recall_at_5: f64,
    mrr_at_10: f64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_retrieval_is_at_least_as_good_as_either_ranking_alone() {
    let dir = tempfile::tempdir().unwrap();
    let embedder = common::minilm().await;
    let ingestor = common::ingestor(embedder.clone());
    let collections = common::collections(dir.path());
    collections.create("acme", "book", None).await.unwrap();
    let collection = collections.get("acme", "book").await.unwrap();

    let started = std::time::Instant::now();
    let job = ingestor
        .ingest(collection.clone(), common::book_pages(&[]))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert!(job.failures.is_empty(), "{:?}", job.failures);
    assert_eq!(job.documents_done, 47);
    assert_eq!(job.chunks_indexed, job.chunks_total);
    assert!(
        job.chunks_indexed > 47 * 10,
        "pages are cut into many chunks"
    );
    eprintln!(
        "ingested 47 pages: {} chunks in {:.1} s ({:.1} chunks/s)",
        job.chunks_indexed,
        elapsed.as_secs_f64(),
        job.chunks_indexed as f64 / elapsed.as_secs_f64()
    );

    let judgments: Vec<Judgment> = serde_json::from_str(
        &std::fs::read_to_string(common::corpus_dir().join("../rust-book-questions.json")).unwrap(),
    )
    .unwrap();
    let mut totals = [Scores::default(); 3];
    let modes = [SearchMode::Keyword, SearchMode::Vector, SearchMode::Hybrid];
    for judgment in &judgments {
        let vector = embedder
            .embed(vec![judgment.question.clone()])
            .await
            .unwrap()
            .remove(0);
        for (mode, total) in modes.iter().zip(totals.iter_mut()) {
            let hits = collection
                .search(SearchQuery {
                    text: judgment.question.clone(),
                    vector: Some(vector.clone()),
                    top_k: 50,
                    mode: *mode,
                    filter: Filter::default(),
                })
                .await
                .unwrap();
            // Documents in the order of their best chunk.
            let mut documents: Vec<&str> = Vec::new();
            for hit in &hits {
                if !documents.contains(&hit.document_id.as_str()) {
                    documents.push(&hit.document_id);
                }
            }
            let rank = documents
                .iter()
                .position(|d| judgment.relevant.iter().any(|r| r == d))
                .map(|i| i + 1);
            if rank.is_some_and(|r| r <= 5) {
                total.recall_at_5 += 1.0;
            }
            if let Some(r) = rank.filter(|r| *r <= 10) {
                total.mrr_at_10 += 1.0 / r as f64;
            }
        }
    }
    let n = judgments.len() as f64;
    let [keyword, vector, hybrid] = totals.map(|t| Scores {
        recall_at_5: t.recall_at_5 / n,
        mrr_at_10: t.mrr_at_10 / n,
    });
    eprintln!("{} questions      recall@5  MRR@10", judgments.len());
    for (name, s) in [("BM25", keyword), ("vectors", vector), ("hybrid", hybrid)] {
        eprintln!("{name:<18} {:.3}     {:.3}", s.recall_at_5, s.mrr_at_10);
    }
    let best_recall = keyword.recall_at_5.max(vector.recall_at_5);
    let best_mrr = keyword.mrr_at_10.max(vector.mrr_at_10);
    assert!(
        hybrid.recall_at_5 >= best_recall,
        "{hybrid:?} vs {keyword:?} / {vector:?}"
    );
    assert!(
        hybrid.mrr_at_10 >= best_mrr,
        "{hybrid:?} vs {keyword:?} / {vector:?}"
    );
    assert!(hybrid.recall_at_5 >= 0.8, "{hybrid:?}");
}
