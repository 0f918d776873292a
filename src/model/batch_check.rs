//! The batch-independence check: a model's results for an example, computed alone and inside
//! a batch, must agree.
//!
//! [`Model`] requires that an example's gradient and Q do not depend on the other examples of
//! its batch. A model that breaks it (a normalisation over the batch, padding that leaks into
//! the result, a cache keyed by the batch) gives scores that silently change with the batch
//! size. Full detection would compute every example alone; this check probes the first and
//! the last example of one batch instead, which catches any dependence that shows on them.
//! Run it on your own model with [`check_batch_independence`], or switch it on for every
//! featurisation with [`crate::TrakBuilder::check_batch_independence`].

use std::cmp::Ordering;

use ndarray::{Array1, Array2, ArrayViewMut1, ArrayViewMut2, s};

use crate::error::{Error, Result};
use crate::model::{FactoredModel, LayerFactors, Model};

/// The first entry at which `alone` and `in_batch` differ by more than `tolerance` × the
/// largest magnitude of either slice (`tolerance = 0`: bit for bit, up to the sign of zero);
/// NaN never agrees, and slices of different lengths disagree at the shorter length. `None`
/// when they agree. The comparison every batch-independence check uses (trak-candle's too).
pub fn first_disagreement(alone: &[f32], in_batch: &[f32], tolerance: f32) -> Option<usize> {
    let scale = alone
        .iter()
        .chain(in_batch)
        .fold(0f32, |m, v| m.max(v.abs()));
    let bound = tolerance * scale;
    let differs = alone.iter().zip(in_batch).position(|(a, b)| {
        let gap = (a - b).abs().partial_cmp(&bound);
        matches!(gap, None | Some(Ordering::Greater))
    });
    differs.or((alone.len() != in_batch.len()).then(|| alone.len().min(in_batch.len())))
}

/// Checks that `model` gives the first and the last example of `batch` the same output
/// gradient and Q alone as inside `batch` (to `tolerance` relative to the row's largest
/// magnitude; 0 asks for the same bits), and, when the model has a
/// [`FactoredModel`] view, the same layer factors. Fails with [`Error::BatchDependent`]
/// naming the example (its index in `batch`), what differs and both values.
///
/// Cost: the batch once and two single-example calls, each through the gradients and, for a
/// factored model, the factors; memory: `batch.len()` gradient rows. A batch of fewer than
/// two examples has nothing to compare and passes.
pub fn check_batch_independence<M: Model>(
    model: &M,
    batch: &[M::Example],
    tolerance: f32,
) -> Result<()> {
    let mut grads = Array2::zeros((batch.len(), model.num_params()));
    check(
        model,
        batch,
        tolerance,
        0,
        Through::Gradients(grads.view_mut()),
    )?;
    match (model.factored(), Diff::of(batch, tolerance, 0)) {
        (Some(fm), Some(diff)) => factors(fm, batch, &diff),
        _ => Ok(()),
    }
}

/// What the check compares besides Q: the flat gradients (computed into a buffer of at least
/// the batch's rows) or the layer factors.
pub(crate) enum Through<'a, E> {
    Gradients(ArrayViewMut2<'a, f32>),
    Factors(&'a dyn FactoredModel<E>),
}

/// The check on `batch`, whose first example is example `first` of the caller's set.
pub(crate) fn check<M: Model>(
    model: &M,
    batch: &[M::Example],
    tolerance: f32,
    first: usize,
    through: Through<'_, M::Example>,
) -> Result<()> {
    let Some(diff) = Diff::of(batch, tolerance, first) else {
        return Ok(());
    };
    let mut q = Array1::zeros(batch.len());
    model.output_q(batch, q.view_mut())?;
    for b in diff.probes() {
        let mut q1 = [0f32];
        model.output_q(&batch[b..=b], ArrayViewMut1::from(&mut q1[..]))?;
        diff.compare(b, "Q".into(), &q1, &[q[b]])?;
    }
    match through {
        Through::Gradients(buf) => gradients(model, batch, buf, &diff),
        Through::Factors(fm) => factors(fm, batch, &diff),
    }
}

/// The output gradients of the probes, alone and inside the batch.
fn gradients<M: Model>(
    model: &M,
    batch: &[M::Example],
    mut buf: ArrayViewMut2<'_, f32>,
    diff: &Diff,
) -> Result<()> {
    let mut grads = buf.slice_mut(s![..batch.len(), ..]);
    model.output_grads(batch, grads.view_mut())?;
    let mut one = vec![0f32; model.num_params()];
    for b in diff.probes() {
        let view = ArrayViewMut2::from_shape((1, one.len()), &mut one[..]).expect("1 × p");
        model.output_grads(&batch[b..=b], view)?;
        let row = grads.row(b);
        let row = row
            .as_slice()
            .expect("rows of a row-major buffer are contiguous");
        diff.compare(b, "output gradient".into(), &one, row)?;
    }
    Ok(())
}

/// The layer factors of the probes, alone and inside the batch.
fn factors<E>(fm: &dyn FactoredModel<E>, batch: &[E], diff: &Diff) -> Result<()> {
    let all = fm.layer_factors(batch)?;
    for b in diff.probes() {
        let alone = fm.layer_factors(&batch[b..=b])?;
        for (layer, (f1, fb)) in alone.iter().zip(&all).enumerate() {
            for (what, one, many) in [
                ("activations", &f1.acts, &fb.acts),
                ("output gradients", &f1.deltas, &fb.deltas),
            ] {
                let name = format!("layer {layer} {what}");
                diff.compare(b, name, &rows(one, f1, 0), &rows(many, fb, b))?;
            }
        }
    }
    Ok(())
}

/// Example `b`'s rows of one factor matrix (empty when the matrix is too short: the shapes
/// then disagree, and the comparison says so).
fn rows(m: &Array2<f32>, f: &LayerFactors, b: usize) -> Vec<f32> {
    let (t, r) = (f.positions, m.nrows());
    let (lo, hi) = ((b * t).min(r), ((b + 1) * t).min(r));
    m.slice(s![lo..hi, ..]).iter().copied().collect()
}

/// Where the check runs, for the error.
struct Diff {
    tolerance: f32,
    first: usize,
    batch: usize,
}

impl Diff {
    /// The check's setting for `batch` (example `first` of the caller's set); `None` for a
    /// batch of fewer than two examples, which has nothing to compare.
    fn of<E>(batch: &[E], tolerance: f32, first: usize) -> Option<Diff> {
        (batch.len() >= 2).then_some(Diff {
            tolerance,
            first,
            batch: batch.len(),
        })
    }

    /// The probed examples: the batch's first and last.
    fn probes(&self) -> [usize; 2] {
        [0, self.batch - 1]
    }

    fn compare(&self, b: usize, what: String, alone: &[f32], in_batch: &[f32]) -> Result<()> {
        match first_disagreement(alone, in_batch, self.tolerance) {
            None => Ok(()),
            Some(index) => Err(Error::BatchDependent {
                what,
                example: self.first + b,
                index,
                alone: alone.get(index).copied().unwrap_or(f32::NAN),
                in_batch: in_batch.get(index).copied().unwrap_or(f32::NAN),
                batch: self.batch,
                tolerance: self.tolerance,
            }),
        }
    }
}
