//! Reciprocal rank fusion (Cormack, Clarke and Büttcher, 2009): each
//! ranking contributes 1 / (k + rank) for every item it holds. It needs no
//! score calibration between BM25 and cosine similarity, whose scales have
//! nothing in common.

use std::collections::HashMap;

/// The constant of the original paper; larger values flatten the curve.
pub const RRF_K: f64 = 60.0;

/// An item's fused score and its rank in each input ranking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fused {
    pub id: u64,
    pub score: f64,
    pub keyword_rank: Option<usize>,
    pub vector_rank: Option<usize>,
}

/// Fuses two rankings (ids best first) into one, best first; ties keep the
/// keyword ranking's order, then the vector ranking's.
pub(crate) fn fuse(keyword: &[u64], vector: &[u64]) -> Vec<Fused> {
    let mut fused: HashMap<u64, Fused> = HashMap::new();
    let mut order = Vec::new();
    for (list, is_keyword) in [(keyword, true), (vector, false)] {
        for (index, id) in list.iter().enumerate() {
            let rank = index + 1;
            let entry = fused.entry(*id).or_insert_with(|| {
                order.push(*id);
                Fused {
                    id: *id,
                    score: 0.0,
                    keyword_rank: None,
                    vector_rank: None,
                }
            });
            entry.score += 1.0 / (RRF_K + rank as f64);
            if is_keyword {
                entry.keyword_rank.get_or_insert(rank);
            } else {
                entry.vector_rank.get_or_insert(rank);
            }
        }
    }
    let mut ranked: Vec<Fused> = order.iter().filter_map(|id| fused.remove(id)).collect();
    // A stable sort keeps first-seen order among equal scores.
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_found_by_both_rankings_rise() {
        let fused = fuse(&[1, 2, 3], &[3, 4, 1]);
        let ids: Vec<u64> = fused.iter().map(|f| f.id).collect();
        assert_eq!(ids, [1, 3, 2, 4]);
        assert_eq!(fused[0].keyword_rank, Some(1));
        assert_eq!(fused[0].vector_rank, Some(3));
        let expected = 1.0 / 61.0 + 1.0 / 63.0;
        assert!((fused[0].score - expected).abs() < 1e-12);
    }

    #[test]
    fn one_ranking_alone_keeps_its_order() {
        let ids: Vec<u64> = fuse(&[], &[9, 7, 8]).iter().map(|f| f.id).collect();
        assert_eq!(ids, [9, 7, 8]);
    }
}
