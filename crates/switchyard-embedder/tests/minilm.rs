//! The embedder on the real all-MiniLM-L6-v2 weights (pulled with
//! `switchyard models pull`; `make test` does that first).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use switchyard_core::{EmbeddingBackend, EmbeddingRequest, ErrorKind};
use switchyard_embedder::{EmbedderConfig, LocalEmbedder};

fn model_dir() -> std::path::PathBuf {
    let store = switchyard_models::ModelStore::default_location().unwrap();
    let (entry, path) = store.resolve("all-minilm-l6-v2").unwrap();
    assert!(
        store.is_present(entry),
        "all-minilm-l6-v2 is not pulled: run `make models` (or `switchyard models pull`) first"
    );
    path
}

async fn embedder() -> LocalEmbedder {
    let embedder = LocalEmbedder::start(EmbedderConfig::new(model_dir())).unwrap();
    embedder.wait_ready().await.unwrap();
    embedder
}

async fn embed(embedder: &LocalEmbedder, inputs: &[&str]) -> Vec<Vec<f32>> {
    embedder
        .embed(EmbeddingRequest {
            model: "all-minilm-l6-v2".into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            dimensions: None,
            user: None,
        })
        .await
        .unwrap()
        .embeddings
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn similar_sentences_score_higher_and_match_the_reference() {
    let embedder = embedder().await;
    let vectors = embed(
        &embedder,
        &[
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The new movie is awesome.",
        ],
    )
    .await;
    assert_eq!(vectors.len(), 3);
    assert!(vectors.iter().all(|v| v.len() == 384));
    for vector in &vectors {
        let norm = cosine(vector, vector).sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
    }
    let similar = cosine(&vectors[0], &vectors[1]);
    let unrelated = cosine(&vectors[0], &vectors[2]);
    assert!(similar > unrelated + 0.5, "{similar} vs {unrelated}");
    // sentence-transformers gives 0.7553 for this pair.
    assert!((similar - 0.7553).abs() < 0.01, "cosine {similar}");
}

#[tokio::test]
async fn same_input_same_vector_and_a_batch_equals_single_calls() {
    let embedder = embedder().await;
    let sentences: Vec<String> = (0..32)
        .map(|i| match i % 4 {
            0 => format!("Sentence number {i} is short."),
            1 => format!("A somewhat longer sentence, number {i}, with more words in it to pad."),
            2 => format!("{i}"),
            _ => format!("The cat sat on mat number {i} while the dog slept nearby in the sun."),
        })
        .collect();
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let batched = embed(&embedder, &refs).await;
    assert_eq!(batched.len(), 32);
    for (i, sentence) in refs.iter().enumerate() {
        let single = embed(&embedder, &[sentence]).await;
        let again = embed(&embedder, &[sentence]).await;
        assert_eq!(single, again, "not deterministic for {sentence:?}");
        let worst = single[0]
            .iter()
            .zip(&batched[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst < 1e-5,
            "input {i}: batch differs from single call by {worst}"
        );
    }
}

#[tokio::test]
async fn concurrent_requests_are_answered_in_their_own_order() {
    let embedder = embedder().await;
    let requests = (0..8).map(|i| {
        let text = format!("request {i} says hello");
        let embedder = &embedder;
        async move { (text.clone(), embed(embedder, &[&text, "shared"]).await) }
    });
    let answers = futures::future::join_all(requests).await;
    let shared = &answers[0].1[1];
    for (text, vectors) in &answers {
        let alone = embed(&embedder, &[text]).await;
        assert!(cosine(&alone[0], &vectors[0]) > 0.99999, "{text}");
        assert!(cosine(shared, &vectors[1]) > 0.99999);
    }
}

#[tokio::test]
async fn dimensions_other_than_384_are_refused() {
    let embedder = embedder().await;
    let error = embedder
        .embed(EmbeddingRequest {
            model: "all-minilm-l6-v2".into(),
            inputs: vec!["x".into()],
            dimensions: Some(128),
            user: None,
        })
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!(error.param.as_deref(), Some("dimensions"));
}
