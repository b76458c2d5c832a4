//! Approximate nearest neighbours over chunk embeddings: an HNSW graph
//! (hnsw_rs) keyed by each chunk's vector id.
//!
//! The graph cannot remove points, so replaced and deleted chunks stay in
//! it as tombstones that searches filter out; once they outnumber a quarter
//! of the live points the owner rebuilds the graph from the index on disk.
//! Until a graph is ready, points are searched by exact scan (13 to 22 ms
//! p50 across runs of `search_bench`, over 54,000 vectors of 384
//! dimensions on two cores busy building the graph), so an index that has
//! just opened answers at once.

use std::collections::{HashMap, HashSet};

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

/// Eight independent sums, so that the compiler can keep them in one SIMD
/// register: a single running sum must add in order and stays scalar. This
/// is the graph's distance, the hot loop of every insert and search.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let (a_blocks, b_blocks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_blocks
        .remainder()
        .iter()
        .zip(b_blocks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut sums = [0.0f32; LANES];
    for (x, y) in a_blocks.zip(b_blocks) {
        for lane in 0..LANES {
            sums[lane] += x[lane] * y[lane];
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// Scales a vector to unit length (a zero vector stays zero).
pub(crate) fn normalise(vector: &mut [f32]) {
    let norm = dot(vector, vector).sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
}

/// A chunk's vector id and its unit embedding.
pub(crate) type Point = (u64, Vec<f32>);

/// An HNSW graph over chunk vectors.
pub(crate) struct Graph(Hnsw<'static, f32, UnitCosine>);

impl Graph {
    /// A graph of `points`, built on all cores: seconds for tens of
    /// thousands of points, so callers run it off the request path.
    pub fn build(points: &[Point]) -> Self {
        let mut graph = Self(Hnsw::new(
            MAX_CONNECTIONS,
            points.len().max(10_000),
            MAX_LAYERS,
            EF_CONSTRUCTION,
            UnitCosine,
        ));
        graph.insert(points);
        graph
    }

    fn insert(&mut self, points: &[Point]) {
        let batch: Vec<(&[f32], usize)> = points
            .iter()
            .filter_map(|(id, v)| usize::try_from(*id).ok().map(|id| (v.as_slice(), id)))
            .collect();
        if batch.len() > 64 {
            self.0.parallel_insert_slice(&batch);
        } else {
            for point in &batch {
                self.0.insert_slice(*point);
            }
        }
    }
}

/// The vectors of one index: a graph, and beside it the points the graph
/// does not hold yet, searched by exact scan. An index opens with every
/// point unindexed and searchable at once; its graph is built in the
/// background and installed when ready ([`Self::install`]).
pub(crate) struct VectorIndex {
    graph: Option<Graph>,
    unindexed: HashMap<u64, Vec<f32>>,
    live: HashSet<u64>,
    tombstones: usize,
    dimensions: Option<usize>,
}

impl VectorIndex {
    /// A graph of `points` (unit vectors of one length), built now.
    pub fn build(points: &[Point]) -> Self {
        Self::holding(points, Some(Graph::build(points)), HashMap::new())
    }

    /// `points` searchable by exact scan until a graph is installed.
    pub fn awaiting_graph(points: &[Point]) -> Self {
        Self::holding(points, None, points.iter().cloned().collect())
    }

    fn holding(points: &[Point], graph: Option<Graph>, unindexed: HashMap<u64, Vec<f32>>) -> Self {
        Self {
            graph,
            unindexed,
            live: points.iter().map(|(id, _)| *id).collect(),
            tombstones: 0,
            dimensions: points.first().map(|(_, v)| v.len()),
        }
    }

    /// Installs a graph built from `points` (what [`Self::awaiting_graph`]
    /// was given), adding the points inserted since. Ignored if a graph is
    /// in place already.
    pub fn install(&mut self, mut graph: Graph, points: &[Point]) {
        if self.graph.is_some() {
            return;
        }
        for (id, _) in points {
            self.unindexed.remove(id);
            if !self.live.contains(id) {
                self.tombstones += 1;
            }
        }
        let newer: Vec<Point> = self.unindexed.drain().collect();
        graph.insert(&newer);
        self.graph = Some(graph);
    }

    /// Points searched by exact scan: all of them until a graph is
    /// installed, none after.
    pub fn awaiting(&self) -> usize {
        self.unindexed.len()
    }

    /// The vectors' length, once one is stored.
    pub fn dimensions(&self) -> Option<usize> {
        self.dimensions
    }

    /// Adds points; callers check their lengths against [`Self::dimensions`].
    pub fn insert(&mut self, points: &[Point]) {
        let Some((_, first)) = points.first() else {
            return;
        };
        self.dimensions.get_or_insert(first.len());
        match &mut self.graph {
            Some(graph) => graph.insert(points),
            None => self.unindexed.extend(points.iter().cloned()),
        }
        self.live.extend(points.iter().map(|(id, _)| *id));
    }

    /// Marks points as gone.
    pub fn remove(&mut self, ids: &[u64]) {
        for id in ids {
            if self.live.remove(id) && self.unindexed.remove(id).is_none() {
                self.tombstones += 1;
            }
        }
    }

    /// Whether tombstones have grown enough to be worth a rebuild.
    pub fn needs_rebuild(&self) -> bool {
        self.graph.is_some() && self.tombstones > 1_000 && self.tombstones * 4 > self.live.len()
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
        let accepted = |id: u64| allowed.is_none_or(|a| a.contains(&id));
        let mut found: Vec<(u64, f32)> = Vec::new();
        if let Some(graph) = &self.graph {
            let accept = |id: &usize| {
                let id = *id as u64;
                self.live.contains(&id) && accepted(id)
            };
            let ef = EF_SEARCH.max(k * 2);
            found.extend(
                graph
                    .0
                    .search_filter(query, k, ef, Some(&accept))
                    .into_iter()
                    .map(|n| (n.d_id as u64, 1.0 - n.distance)),
            );
        }
        let mut scanned: Vec<(u64, f32)> = self
            .unindexed
            .iter()
            .filter(|(id, _)| accepted(**id))
            .map(|(id, v)| (*id, dot(query, v)))
            .collect();
        if scanned.len() > k {
            // The k best without sorting the rest.
            scanned.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
            scanned.truncate(k);
        }
        found.extend(scanned);
        found.sort_by(|a, b| b.1.total_cmp(&a.1));
        found.truncate(k);
        found
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
    fn dot_products_of_any_length() {
        let a: Vec<f32> = (0..13).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..13).map(|i| (i % 3) as f32 - 1.0).collect();
        let expected: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert_eq!(dot(&a, &b), expected);
        assert_eq!(dot(&a[..5], &b[..5]), -1.0, "0 + 0 + 2 - 3 + 0");
        assert_eq!(dot(&[], &[]), 0.0);
    }

    #[test]
    fn an_index_awaiting_its_graph_answers_exactly_and_keeps_changes_made_meanwhile() {
        let points: Vec<Point> = (0..300).map(|i| (i, unit(i, 16))).collect();
        let mut index = VectorIndex::awaiting_graph(&points);
        assert_eq!(index.awaiting(), 300);
        let exact = index.search(&points[7].1, 5, None);
        assert_eq!(exact[0].0, 7);
        assert!(exact.windows(2).all(|w| w[0].1 >= w[1].1), "nearest first");

        // Changes while the graph is built elsewhere from the snapshot.
        let graph = Graph::build(&points);
        index.remove(&[7, 8]);
        index.insert(&[(1_000, points[7].1.clone())]);
        index.install(graph, &points);
        assert!(index.graph.is_some());
        assert_eq!(index.awaiting(), 0);
        assert_eq!(index.tombstones, 2);
        let hits = index.search(&points[7].1, 5, None);
        assert_eq!(
            hits[0].0, 1_000,
            "the point added meanwhile is in the graph"
        );
        assert!(hits.iter().all(|(id, _)| *id != 7 && *id != 8));
        let ids: Vec<u64> = hits.iter().map(|(id, _)| *id).collect();
        let expected: Vec<u64> = exact
            .iter()
            .map(|(id, _)| if *id == 7 { 1_000 } else { *id })
            .filter(|id| *id != 8)
            .collect();
        assert_eq!(
            &ids[..expected.len()],
            expected,
            "the graph agrees with the scan"
        );
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
