//! Optimal one-to-one matching of tracks to detections.

use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;

/// Similarities become integers for the solver; this keeps 6 decimals.
const SCALE: f32 = 1e6;

/// Pairs rows with columns so that the summed similarity is as large as it
/// can be, using only pairs whose similarity is at least `min_similarity`
/// (and above 0). `similarity[r][c]` scores row `r` against column `c`.
/// Returns `(row, column)` pairs in row order.
pub fn match_pairs(similarity: &[Vec<f32>], min_similarity: f32) -> Vec<(usize, usize)> {
    let rows = similarity.len();
    let cols = similarity.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return Vec::new();
    }
    let weight = |r: usize, c: usize| {
        let s = similarity[r][c];
        // A pair below the bar weighs nothing: the solver gains nothing by
        // choosing it, and it is discarded afterwards if chosen anyway.
        if s >= min_similarity && s > 0.0 {
            (s * SCALE).round() as i64
        } else {
            0
        }
    };
    // The solver wants no more rows than columns: transpose if needed.
    let transposed = rows > cols;
    let matrix = if transposed {
        Matrix::from_fn(cols, rows, |(c, r)| weight(r, c))
    } else {
        Matrix::from_fn(rows, cols, |(r, c)| weight(r, c))
    };
    let (_, assignment) = kuhn_munkres(&matrix);
    let mut pairs: Vec<(usize, usize)> = assignment
        .into_iter()
        .enumerate()
        .map(|(i, j)| if transposed { (j, i) } else { (i, j) })
        .filter(|&(r, c)| weight(r, c) > 0)
        .collect();
    pairs.sort_unstable();
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_best_total_not_the_greedy_first() {
        // Greedy would take (0,0)=0.9 and leave row 1 with 0.1 (below the
        // bar); the best total is (0,1)+(1,0) = 0.8 + 0.85.
        let s = vec![vec![0.9, 0.8], vec![0.85, 0.1]];
        assert_eq!(match_pairs(&s, 0.2), vec![(0, 1), (1, 0)]);
    }

    #[test]
    fn pairs_below_the_bar_are_never_made() {
        let s = vec![vec![0.1, 0.0], vec![0.0, 0.5]];
        assert_eq!(match_pairs(&s, 0.2), vec![(1, 1)]);
    }

    #[test]
    fn more_rows_than_columns_and_empty_inputs() {
        let s = vec![vec![0.3], vec![0.9], vec![0.5]];
        assert_eq!(match_pairs(&s, 0.2), vec![(1, 0)]);
        assert!(match_pairs(&[], 0.2).is_empty());
        assert!(match_pairs(&[vec![], vec![]], 0.2).is_empty());
    }
}
