//! Meaning, for routing: example utterances embedded once, the request's
//! last user turn embedded once per request (shared by every rule and the
//! semantic cache that ask), and the cosine similarity between them.

use std::sync::{Arc, Mutex, PoisonError};

use switchyard_core::{BackendError, ChatRequest, Role};
use tokio::sync::OnceCell;

/// Example utterances of a meaning, and their vectors once computed.
#[derive(Debug)]
pub struct Examples {
    /// The embeddings model (or route) that compares.
    pub model: String,
    /// The utterances.
    pub texts: Vec<String>,
    vectors: OnceCell<Vec<Vec<f32>>>,
}

impl PartialEq for Examples {
    fn eq(&self, other: &Self) -> bool {
        self.model == other.model && self.texts == other.texts
    }
}

impl Examples {
    /// Examples to be embedded with `model` on first use.
    pub fn new(model: String, texts: Vec<String>) -> Self {
        Self {
            model,
            texts,
            vectors: OnceCell::new(),
        }
    }

    /// Their vectors, embedded by `embed` the first time they are needed
    /// (a failure is tried again next time).
    pub async fn vectors<F, Fut>(&self, embed: F) -> Result<&[Vec<f32>], BackendError>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Vec<f32>>, BackendError>>,
    {
        self.vectors
            .get_or_try_init(|| embed(self.texts.clone()))
            .await
            .map(Vec::as_slice)
    }
}

/// A rule's `similar_to`: its examples and the similarity it needs.
#[derive(Debug, PartialEq)]
pub struct Similar {
    /// The examples.
    pub examples: Examples,
    /// The cosine similarity that counts as close.
    pub threshold: f32,
}

/// A vector one request computed: its model, its text, the vector.
type Memoized = (String, String, Arc<Vec<f32>>);

/// Embeddings one request has already paid for, by model and text.
#[derive(Debug, Clone, Default)]
pub struct EmbeddingMemo(Arc<Mutex<Vec<Memoized>>>);

impl EmbeddingMemo {
    /// The vector of `text` by `model`, if this request computed it.
    pub fn get(&self, model: &str, text: &str) -> Option<Arc<Vec<f32>>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(m, t, _)| m == model && t == text)
            .map(|(_, _, v)| v.clone())
    }

    /// Keeps a vector for the rest of the request.
    pub fn put(&self, model: &str, text: &str, vector: Arc<Vec<f32>>) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push((
            model.to_owned(),
            text.to_owned(),
            vector,
        ));
    }
}

/// The text routing by meaning reads: the last user turn.
pub fn last_user_text(request: &ChatRequest) -> Option<String> {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.text())
        .filter(|text| !text.trim().is_empty())
}

/// Cosine similarity (0 for vectors of different lengths or no length).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    dot / (aa.sqrt() * bb.sqrt())
}

/// The highest similarity of `vector` to any of `examples`, with which.
pub fn closest(vector: &[f32], examples: &[Vec<f32>]) -> Option<(usize, f32)> {
    examples
        .iter()
        .map(|example| cosine(vector, example))
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_parallel_orthogonal_and_mismatched_vectors() {
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-6);
        assert_eq!(cosine(&[1.0], &[1.0, 0.0]), 0.0);
        assert_eq!(
            closest(&[1.0, 0.0], &[vec![0.0, 1.0], vec![1.0, 0.1]]).map(|c| c.0),
            Some(1)
        );
    }

    #[tokio::test]
    async fn examples_are_embedded_once_and_a_failure_is_tried_again() {
        let examples = Examples::new("m".into(), vec!["a".into(), "b".into()]);
        let failed = examples
            .vectors(|_| async { Err(BackendError::internal("down")) })
            .await;
        assert!(failed.is_err());
        let calls = std::sync::atomic::AtomicUsize::new(0);
        for _ in 0..2 {
            let vectors = examples
                .vectors(|texts| {
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async move { Ok(texts.iter().map(|_| vec![1.0]).collect()) }
                })
                .await
                .unwrap_or_default();
            assert_eq!(vectors.len(), 2);
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
