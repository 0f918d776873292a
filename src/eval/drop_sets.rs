//! The same-seed (leave-out) protocol: sets of training examples to drop, the weights that
//! retrain without them, and the LDS of the predicted change against the retrained outputs.

use ndarray::{Array2, ArrayView1, ArrayView2};

use super::{Lds, masked_lds, masked_sums, subset_masks};
use crate::error::{Error, Result, invalid};

/// J random sets D_j of training examples to leave out, each of round(d·n) examples.
///
/// This is the "same seed" truth of leave-out validation (Bergson's leave-1 %-out, and the
/// same-seed truth of [`crate::metagrad`]): retrain the **same** run (the same
/// initialisation, seed and minibatch order) with weight 0 on D_j, with
/// [`DropSets::weights`] and [`crate::models::Sgd::fit_weighted`], and record each target's
/// output. The scores predict that the output changes by −Σ_{i∈D_j} τ_i
/// ([`DropSets::predicted_change`]: a score is the effect of *including* an example), and
/// [`DropSets::lds`] is the Spearman correlation of that prediction with the retrained
/// outputs, averaged over the targets.
///
/// D_j is the complement of row j of [`subset_masks`]`(n, 1 − d, J, seed)`, so the same seed
/// splits the examples into kept and dropped ones the same way for both protocols.
///
/// ```
/// use trak::data::Dataset;
/// use trak::eval::DropSets;
/// use trak::metagrad::{metagradients, MetagradOptions};
/// use trak::models::{Mlp, Sgd};
/// use trak::output::Margin;
///
/// let data = Dataset::blobs(90, 4, 3, 7)?.samples();
/// let (train, targets) = (&data[..80], &data[80..]);
/// let init = Mlp::new(&[4, 3], Margin, 0)?;
/// let sgd = Sgd { epochs: 3, batch_size: 16, ..Sgd::smooth() };
/// let scores = metagradients(&sgd, &init, train, targets, &MetagradOptions::default())?.scores;
///
/// // The same run, retrained without each drop set.
/// let drops = DropSets::new(train.len(), 0.05, 8, 0)?;
/// let mut outputs = ndarray::Array2::zeros((drops.len(), targets.len()));
/// for j in 0..drops.len() {
///     let mut model = init.clone();
///     sgd.fit_weighted(&mut model, train, &drops.weights(j))?;
///     for (t, out) in model.outputs(targets)?.iter().enumerate() {
///         outputs[(j, t)] = out.f;
///     }
/// }
/// let lds = drops.lds(scores.values(), outputs.view())?;
/// assert!(lds.mean > 0.9, "{lds:?}");
/// # Ok::<(), trak::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropSets {
    /// J × n, true where example i is dropped from set j.
    dropped: Array2<bool>,
}

impl DropSets {
    /// `count` random drop sets of round(`fraction` · n) of the examples `0..n` (at least 1,
    /// at most n − 1), set j depending only on (`seed`, j). Errors: [`Error::Empty`] for n or
    /// count 0, [`Error::InvalidParameter`] unless 0 < fraction < 1.
    pub fn new(n: usize, fraction: f64, count: usize, seed: u64) -> Result<Self> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(invalid("drop fraction", fraction, "0 < fraction < 1"));
        }
        let kept = subset_masks(n, 1.0 - fraction, count, seed)?;
        Ok(Self {
            dropped: kept.mapv(|k| !k),
        })
    }

    /// Drop sets given as a J × n mask (true = dropped). Errors: [`Error::Empty`] for no set,
    /// no example, or a set that drops nothing.
    pub fn from_mask(dropped: Array2<bool>) -> Result<Self> {
        if dropped.is_empty() {
            return Err(Error::Empty("drop sets (no set or no example)"));
        }
        if dropped.rows().into_iter().any(|r| !r.iter().any(|&d| d)) {
            return Err(Error::Empty("a drop set (it drops no example)"));
        }
        Ok(Self { dropped })
    }

    /// Number of sets J.
    pub fn len(&self) -> usize {
        self.dropped.nrows()
    }

    /// Always false: a `DropSets` holds at least one set.
    pub fn is_empty(&self) -> bool {
        self.dropped.nrows() == 0
    }

    /// Number of training examples n.
    pub fn n_train(&self) -> usize {
        self.dropped.ncols()
    }

    /// The J × n mask, true where an example is dropped.
    pub fn mask(&self) -> ArrayView2<'_, bool> {
        self.dropped.view()
    }

    /// Set j's row of the mask (true = dropped). Panics if j ≥ [`DropSets::len`].
    pub fn dropped(&self, j: usize) -> ArrayView1<'_, bool> {
        self.dropped.row(j)
    }

    /// The loss weights that retrain without set j: 0 on its examples, 1 elsewhere (for
    /// [`crate::models::Sgd::fit_weighted`], or any trainer with per-example weights). Panics
    /// if j ≥ [`DropSets::len`].
    pub fn weights(&self, j: usize) -> Vec<f32> {
        self.dropped
            .row(j)
            .iter()
            .map(|&d| if d { 0.0 } else { 1.0 })
            .collect()
    }

    /// The predicted change of every target's output when set j is dropped: −Σ_{i∈D_j} τ_i,
    /// J × m (f64), for `scores` n × m. Errors: [`Error::ShapeMismatch`] unless `scores` has
    /// n rows, [`Error::NonFiniteInput`] for a non-finite score.
    pub fn predicted_change(&self, scores: ArrayView2<'_, f32>) -> Result<Array2<f64>> {
        Ok(masked_sums(self.dropped.view(), scores, -1.0)?.reversed_axes())
    }

    /// The LDS of `scores` (n × m) against `outputs` (J × m): the output f of each target
    /// after retraining without each set, or its change from the full run (the same ranks).
    /// For each target, the Spearman correlation over the sets between
    /// [`DropSets::predicted_change`] and the outputs, averaged over the targets where it is
    /// defined. Errors as [`super::lds`].
    pub fn lds(&self, scores: ArrayView2<'_, f32>, outputs: ArrayView2<'_, f32>) -> Result<Lds> {
        masked_lds(self.dropped.view(), scores, outputs, -1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{lds, random_scores};

    #[test]
    fn drop_sets_complement_the_subsets_of_the_same_seed() {
        let d = DropSets::new(200, 0.05, 6, 3).unwrap();
        let kept = subset_masks(200, 0.95, 6, 3).unwrap();
        assert_eq!(d.mask(), kept.mapv(|k| !k));
        assert!(
            d.mask()
                .rows()
                .into_iter()
                .all(|r| r.iter().filter(|&&x| x).count() == 10)
        );
        let w = d.weights(2);
        assert_eq!(w.iter().filter(|&&x| x == 0.0).count(), 10);
        assert!(
            d.dropped(2)
                .iter()
                .zip(&w)
                .all(|(&dr, &x)| (x == 0.0) == dr)
        );
        assert!(DropSets::new(200, 0.0, 6, 3).is_err());
        assert!(DropSets::new(200, 1.0, 6, 3).is_err());
        assert!(DropSets::new(0, 0.5, 6, 3).is_err());
        assert!(DropSets::from_mask(Array2::from_elem((2, 5), false)).is_err());
    }

    #[test]
    fn the_predicted_change_is_minus_the_dropped_scores() {
        // Outputs exactly linear in what is kept: LDS 1 with the true scores, −1 with the
        // sign of a removal forgotten; the kept-subset LDS on the complement agrees.
        let d = DropSets::new(60, 0.1, 30, 1).unwrap();
        let tau = random_scores(60, 4, 5).into_inner();
        let kept = d.mask().mapv(|x| f32::from(u8::from(!x)));
        let outputs = kept.dot(&tau);
        let change = d.predicted_change(tau.view()).unwrap();
        let direct = d
            .mask()
            .mapv(|x| -f64::from(u8::from(x)))
            .dot(&tau.mapv(f64::from));
        assert!(
            change
                .iter()
                .zip(&direct)
                .all(|(a, b)| (a - b).abs() < 1e-12)
        );
        assert!((d.lds(tau.view(), outputs.view()).unwrap().mean - 1.0).abs() < 1e-9);
        let forgot = tau.mapv(|v| -v);
        assert!((d.lds(forgot.view(), outputs.view()).unwrap().mean + 1.0).abs() < 1e-9);
        let subsets = d.mask().mapv(|x| !x);
        let same = lds(subsets.view(), tau.view(), outputs.view()).unwrap();
        assert!((same.mean - 1.0).abs() < 1e-9);
        let short = tau.slice(ndarray::s![..59, ..]);
        assert!(matches!(
            d.lds(short, outputs.view()),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}
