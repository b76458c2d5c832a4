//! Topic checks: a user message is on a topic when an embeddings model
//! puts it close in meaning to one of the topic's example phrases (cosine
//! similarity at or above the check's threshold), so "which painkiller for
//! a migraine?" matches a medical-advice topic that never lists the word.

use std::time::Duration;

use switchyard_core::{BackendError, Completer};
use tokio::sync::OnceCell;

/// A topic check's settings, and its examples' vectors once computed.
#[derive(Debug)]
pub(crate) struct TopicSpec {
    pub model: String,
    pub examples: Vec<String>,
    pub threshold: f32,
    pub timeout: Duration,
    pub fail_open: bool,
    /// Embedded on first use and kept for the policy's lifetime (a
    /// configuration reload compiles the policies, and so embeds, again).
    example_vectors: OnceCell<Vec<Vec<f32>>>,
}

/// The closest example to any of the texts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Closest {
    pub similarity: f32,
    pub example: usize,
}

impl TopicSpec {
    pub(crate) fn new(
        model: String,
        examples: Vec<String>,
        threshold: f32,
        timeout: Duration,
        fail_open: bool,
    ) -> Self {
        Self {
            model,
            examples,
            threshold,
            timeout,
            fail_open,
            example_vectors: OnceCell::new(),
        }
    }

    /// The example closest in meaning to any of `texts`, within the
    /// check's timeout.
    pub(crate) async fn closest(
        &self,
        texts: &[String],
        models: &dyn Completer,
    ) -> Result<Option<Closest>, String> {
        let work = async {
            let examples = self
                .example_vectors
                .get_or_try_init(|| models.embed(&self.model, self.examples.clone()))
                .await?;
            let vectors = models.embed(&self.model, texts.to_vec()).await?;
            Ok::<_, BackendError>(closest(&vectors, examples))
        };
        match tokio::time::timeout(self.timeout, work).await {
            Err(_) => Err(format!("timed out after {} ms", self.timeout.as_millis())),
            Ok(Err(error)) => Err(error.message),
            Ok(Ok(found)) => Ok(found),
        }
    }
}

fn closest(texts: &[Vec<f32>], examples: &[Vec<f32>]) -> Option<Closest> {
    texts
        .iter()
        .flat_map(|text| {
            examples
                .iter()
                .enumerate()
                .map(move |(example, vector)| Closest {
                    similarity: cosine(text, vector),
                    example,
                })
        })
        .max_by(|a, b| a.similarity.total_cmp(&b.similarity))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let denominator = norm(a) * norm(b);
    if denominator == 0.0 {
        0.0
    } else {
        dot / denominator
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_example_over_all_texts_wins() {
        let examples = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        let texts = vec![vec![0.9, 0.1], vec![0.1, 3.0]];
        let found = closest(&texts, &examples).unwrap();
        assert_eq!(found.example, 1);
        assert!((found.similarity - 0.9994).abs() < 1e-3, "{found:?}");
        assert_eq!(closest(&[], &examples), None);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
