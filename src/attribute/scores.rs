//! Attribution scores: the n_train × n_targets matrix and its top-k queries.

use ndarray::{Array2, ArrayView1, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

/// Attribution scores: an n_train × n_targets matrix (row i = training example i,
/// column j = target j).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    values: Array2<f32>,
}

impl Scores {
    /// Wraps a score matrix (n_train × n_targets).
    pub fn new(values: Array2<f32>) -> Self {
        Self { values }
    }

    /// The n_train × n_targets matrix.
    pub fn values(&self) -> ArrayView2<'_, f32> {
        self.values.view()
    }

    /// The matrix, by value.
    pub fn into_inner(self) -> Array2<f32> {
        self.values
    }

    /// Number of training examples (rows).
    pub fn n_train(&self) -> usize {
        self.values.nrows()
    }

    /// Number of targets (columns).
    pub fn n_targets(&self) -> usize {
        self.values.ncols()
    }

    /// Scores of every training example for target `j` (`None` if j ≥ n_targets).
    pub fn target(&self, j: usize) -> Option<ArrayView1<'_, f32>> {
        (j < self.n_targets()).then(|| self.values.column(j))
    }

    /// For each target, its `k` highest-scoring training examples as (index, score), best
    /// first (ties broken by the lower index). Returns fewer than `k` if n_train < k.
    pub fn top_k(&self, k: usize) -> Vec<Vec<(usize, f32)>> {
        self.values
            .axis_iter(Axis(1))
            .map(|col| {
                let mut idx: Vec<usize> = (0..col.len()).collect();
                let cmp = |a: &usize, b: &usize| col[*b].total_cmp(&col[*a]).then(a.cmp(b));
                let kk = k.min(idx.len());
                if kk == 0 {
                    return Vec::new();
                }
                idx.select_nth_unstable_by(kk - 1, cmp);
                idx.truncate(kk);
                idx.sort_by(cmp);
                idx.into_iter().map(|i| (i, col[i])).collect()
            })
            .collect()
    }
}
