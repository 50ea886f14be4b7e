//! Reciprocal rank fusion: one ranking from the lexical and the vector rankings.

use std::collections::HashMap;

/// The constant of reciprocal rank fusion (Cormack et al., 2009): a chunk's fused score is
/// the sum over the rankings that hold it of `1 / (RRF_K + rank)`, rank counted from 1.
pub(crate) const RRF_K: f32 = 60.0;

/// The ids of both rankings (each best first), best first by fused score, with that score.
/// Ties keep the lexical ranking's order, then the vector ranking's.
pub(crate) fn fuse(lexical: &[u64], vector: &[u64]) -> Vec<(u64, f32)> {
    let mut scores: HashMap<u64, (f32, usize)> = HashMap::new();
    let mut order = 0;
    for ranking in [lexical, vector] {
        for (rank, id) in ranking.iter().enumerate() {
            let entry = scores.entry(*id).or_insert_with(|| {
                order += 1;
                (0.0, order)
            });
            entry.0 += 1.0 / (RRF_K + rank as f32 + 1.0);
        }
    }
    let mut fused: Vec<(u64, f32, usize)> =
        scores.into_iter().map(|(id, (s, o))| (id, s, o)).collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    fused
        .into_iter()
        .map(|(id, score, _)| (id, score))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_both_rankings_hold_beats_the_head_of_one_and_ties_keep_the_lexical_order() {
        let fused = fuse(&[1, 2, 3], &[3, 4]);
        let ids: Vec<u64> = fused.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [3, 1, 2, 4]);
        assert!((fused[0].1 - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-6);
    }
}
