//! Approximate nearest neighbours over chunk embeddings: an HNSW graph
//! (hnsw_rs) keyed by each chunk's vector id.
//!
//! The graph cannot remove points, so replaced and deleted chunks stay in
//! it as tombstones that searches filter out; once they outnumber a quarter
//! of the live points the owner rebuilds the graph from the index on disk.

use std::collections::HashSet;

use hnsw_rs::prelude::{Distance, Hnsw};

/// Neighbours kept per node and layer (the paper's M).
const MAX_CONNECTIONS: usize = 16;
/// Candidates examined while inserting.
const EF_CONSTRUCTION: usize = 200;
/// Layers of the graph.
const MAX_LAYERS: usize = 16;
/// Candidates examined while searching, at least.
const EF_SEARCH: usize = 96;

/// 1 − cosine similarity of unit vectors: their dot product. Written here
/// because hnsw_rs's own dot distance asserts on rounding error (a panic on
/// a dot product of 1.0000001) and its cosine recomputes norms in f64.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Scales a vector to unit length (a zero vector stays zero).
pub(crate) fn normalise(vector: &mut [f32]) {
    let norm = dot(vector, vector).sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
}

/// The graph and which of its points are live.
pub(crate) struct VectorIndex {
    graph: Hnsw<'static, f32, UnitCosine>,
    live: HashSet<u64>,
    tombstones: usize,
    dimensions: Option<usize>,
}

impl VectorIndex {
    /// An empty graph sized for about `expected` points.
    pub fn new(expected: usize) -> Self {
        Self {
            graph: Hnsw::new(
                MAX_CONNECTIONS,
                expected.max(10_000),
                MAX_LAYERS,
                EF_CONSTRUCTION,
                UnitCosine,
            ),
            live: HashSet::new(),
            tombstones: 0,
            dimensions: None,
        }
    }

    /// A graph of `points` (unit vectors of one length), built on all cores.
    pub fn build(points: &[(u64, Vec<f32>)]) -> Self {
        let mut index = Self::new(points.len());
        index.insert(points);
        index
    }

    /// The vectors' length, once one is stored.
    pub fn dimensions(&self) -> Option<usize> {
        self.dimensions
    }

    /// Adds points; callers check their lengths against [`Self::dimensions`].
    pub fn insert(&mut self, points: &[(u64, Vec<f32>)]) {
        let Some((_, first)) = points.first() else {
            return;
        };
        self.dimensions.get_or_insert(first.len());
        let batch: Vec<(&[f32], usize)> = points
            .iter()
            .filter_map(|(id, v)| usize::try_from(*id).ok().map(|id| (v.as_slice(), id)))
            .collect();
        if batch.len() > 64 {
            self.graph.parallel_insert_slice(&batch);
        } else {
            for point in &batch {
                self.graph.insert_slice(*point);
            }
        }
        self.live.extend(points.iter().map(|(id, _)| *id));
    }

    /// Marks points as gone.
    pub fn remove(&mut self, ids: &[u64]) {
        for id in ids {
            if self.live.remove(id) {
                self.tombstones += 1;
            }
        }
    }

    /// Whether tombstones have grown enough to be worth a rebuild.
    pub fn needs_rebuild(&self) -> bool {
        self.tombstones > 1_000 && self.tombstones * 4 > self.live.len()
    }

    /// The `k` live points nearest `query` that `allowed` accepts, nearest
    /// first, with their cosine similarity.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        allowed: Option<&HashSet<u64>>,
    ) -> Vec<(u64, f32)> {
        if k == 0 || self.live.is_empty() || self.dimensions != Some(query.len()) {
            return Vec::new();
        }
        let accept = |id: &usize| {
            let id = *id as u64;
            self.live.contains(&id) && allowed.is_none_or(|a| a.contains(&id))
        };
        let ef = EF_SEARCH.max(k * 2);
        self.graph
            .search_filter(query, k, ef, Some(&accept))
            .into_iter()
            .map(|n| (n.d_id as u64, 1.0 - n.distance))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dims: usize) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut v: Vec<f32> = (0..dims)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        normalise(&mut v);
        v
    }

    #[test]
    fn finds_itself_and_skips_removed_and_filtered_points() {
        let points: Vec<(u64, Vec<f32>)> = (0..500).map(|i| (i, unit(i, 32))).collect();
        let mut index = VectorIndex::build(&points);
        let hits = index.search(&points[42].1, 3, None);
        assert_eq!(hits[0].0, 42);
        assert!((hits[0].1 - 1.0).abs() < 1e-4);

        index.remove(&[42]);
        let hits = index.search(&points[42].1, 3, None);
        assert!(hits.iter().all(|(id, _)| *id != 42));
        assert_eq!(index.live.len(), 499);

        let allowed: HashSet<u64> = [7, 8, 9].into();
        let hits = index.search(&points[42].1, 10, Some(&allowed));
        assert_eq!(hits.len(), 3);
        assert!(hits.iter().all(|(id, _)| allowed.contains(id)));

        assert!(
            index.search(&[1.0, 0.0], 3, None).is_empty(),
            "wrong length"
        );
    }
}
