//! Finalised training features, ready to score target sets: [`TrakIndex`].

use std::collections::BTreeMap;

use ndarray::{Array2, ArrayView2};

use super::features::CkptFeatures;
use super::featurize::ExampleSlice;
use super::memory::{self, bytes};
use super::{Scores, Trak};
use crate::error::{Error, Result, shape_err};
use crate::kernel::Factor;
use crate::kernel::scoring::{accumulate, check_targets, combine};
use crate::model::Model;

/// One finalised checkpoint: its features and the Cholesky factor of K + λI.
#[derive(Debug, Clone)]
pub(super) struct IndexedCkpt {
    pub(super) feats: CkptFeatures,
    pub(super) factor: Factor,
}

/// Finalised training features, ready to score any number of target sets.
#[derive(Debug, Clone)]
pub struct TrakIndex {
    cfg: Trak,
    n: usize,
    ckpts: BTreeMap<u64, IndexedCkpt>,
}

impl TrakIndex {
    pub(super) fn new(cfg: Trak, n: usize, ckpts: BTreeMap<u64, IndexedCkpt>) -> Self {
        Self { cfg, n, ckpts }
    }

    /// Number of training examples n.
    pub fn n_train(&self) -> usize {
        self.n
    }

    /// Ids of the finalised checkpoints, ascending.
    pub fn checkpoints(&self) -> Vec<u64> {
        self.ckpts.keys().copied().collect()
    }

    /// The ridge λ used for a checkpoint.
    pub fn lambda(&self, checkpoint: u64) -> Result<f64> {
        Ok(self.get(checkpoint)?.factor.lambda())
    }

    /// The configuration.
    pub fn config(&self) -> &Trak {
        &self.cfg
    }

    fn get(&self, checkpoint: u64) -> Result<&IndexedCkpt> {
        self.ckpts
            .get(&checkpoint)
            .ok_or(Error::UnknownCheckpoint(checkpoint))
    }

    /// Projected output gradients of `targets` under the model at `checkpoint`, checked
    /// against what was featurised (same parameter count). Feed them to
    /// [`TrakIndex::score_features`] to score the same targets under several indices.
    pub fn target_features<M: Model>(
        &self,
        checkpoint: u64,
        model: &M,
        targets: &[M::Example],
    ) -> Result<Array2<f32>> {
        if targets.is_empty() {
            return Err(Error::Empty("target set"));
        }
        let ck = self.get(checkpoint)?;
        if model.num_params() != ck.feats.p {
            return Err(shape_err(
                "model parameters (scoring a checkpoint with a different model from the featurised one)",
                ck.feats.p,
                model.num_params(),
            ));
        }
        let slice = ExampleSlice::targets(targets);
        Ok(self
            .cfg
            .project_set(checkpoint, model, slice, &mut |_| {})?
            .0)
    }

    /// Un-weighted scores of one checkpoint, S_m = Φ_m (Φ_mᵀΦ_m + λI)⁻¹ Ψ_mᵀ (n × m, f64).
    pub fn checkpoint_scores<M: Model>(
        &self,
        checkpoint: u64,
        model: &M,
        targets: &[M::Example],
    ) -> Result<Array2<f64>> {
        let psi = self.target_features(checkpoint, model, targets)?;
        let mut acc = memory::zeros2((self.n, targets.len()), "score accumulator")?;
        self.add_checkpoint(checkpoint, psi.view(), &mut acc, &mut vec![0.0; self.n])?;
        Ok(acc)
    }

    /// The solved targets of one checkpoint, Y_m = (Φ_mᵀ W Φ_m + λI)⁻¹ Ψ_mᵀ (k × targets, f64;
    /// W is the weighting's diagonal), for target features Ψ_m (targets × k). The
    /// checkpoint's un-weighted scores are Φ_m Y_m ([`TrakIndex::checkpoint_scores`]), so a
    /// training example's score is linear in its feature row: split the row into parts (the
    /// features of each token of a document, which sum to the document's) and each part's
    /// dot product with Y_m is its share of the score.
    pub fn solve_targets(&self, checkpoint: u64, psi: ArrayView2<'_, f32>) -> Result<Array2<f64>> {
        let y = self.get(checkpoint)?.factor.solve_targets(psi)?;
        Ok(Array2::from_shape_fn((y.nrows(), y.ncols()), |(i, j)| {
            y[(i, j)]
        }))
    }

    /// TRAK scores of `targets` from the ensemble `checkpoints` (each an id given to
    /// [`crate::TrainFeatures::featurize`] and the model at that checkpoint):
    ///
    /// τ = (1/M Σ_m S_m) ⊙ Q̄,  Q̄_i = 1/M Σ_m Q_{m,i},
    ///
    /// with S_m from [`TrakIndex::checkpoint_scores`] and Q̄ broadcast over targets. Any
    /// non-empty subset of the featurised checkpoints may be used; Q̄ is averaged over the
    /// same subset. Returns an n_train × n_targets matrix.
    pub fn score<M: Model>(
        &self,
        checkpoints: &[(u64, &M)],
        targets: &[M::Example],
    ) -> Result<Scores> {
        if checkpoints.is_empty() {
            return Err(Error::Empty("checkpoint list"));
        }
        if targets.is_empty() {
            return Err(Error::Empty("target set"));
        }
        let psis = checkpoints
            .iter()
            .map(|&(id, m)| Ok((id, self.target_features(id, m, targets)?)))
            .collect::<Result<Vec<_>>>()?;
        let views: Vec<(u64, ArrayView2<'_, f32>)> =
            psis.iter().map(|(id, p)| (*id, p.view())).collect();
        self.score_features(&views)
    }

    /// [`TrakIndex::score`] from precomputed target features Ψ_m (targets × k), one matrix per
    /// listed checkpoint (e.g. from [`TrakIndex::target_features`] or [`Trak::features`]).
    pub fn score_features(&self, targets: &[(u64, ArrayView2<'_, f32>)]) -> Result<Scores> {
        let m = check_targets(targets, |id| Ok(self.get(id)?.feats.phi.ncols()))?;
        memory::check(
            self.cfg.memory_limit,
            &[
                ("score accumulator (f64)", bytes(self.n, bytes(m, 8))),
                ("scores (f32)", bytes(self.n, bytes(m, 4))),
            ],
            "score fewer targets at a time, or score out of core with store::Run",
        )?;
        let mut acc = memory::zeros2::<f64>((self.n, m), "score accumulator")?;
        let mut qsum = vec![0.0f64; self.n];
        for (id, psi) in targets {
            self.add_checkpoint(*id, psi.view(), &mut acc, &mut qsum)?;
        }
        let acc = acc.as_slice().expect("a fresh array is in standard layout");
        let values: Vec<f32> = combine(acc, &qsum, targets.len()).collect();
        let values = Array2::from_shape_vec((self.n, m), values).expect("n × m scores");
        Ok(Scores::new(values))
    }

    /// One checkpoint's share of the scores: Y = A⁻¹Ψᵀ, then `acc += Φ Y`, `qsum += Q`.
    fn add_checkpoint(
        &self,
        checkpoint: u64,
        psi: ArrayView2<'_, f32>,
        acc: &mut Array2<f64>,
        qsum: &mut [f64],
    ) -> Result<()> {
        let ck = self.get(checkpoint)?;
        let y = ck.factor.solve_targets(psi)?;
        accumulate(
            ck.feats.phi.view(),
            ck.feats.q.view(),
            &y,
            acc.view_mut(),
            qsum,
        )
    }
}
