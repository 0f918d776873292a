//! The all-parameter fallback: one forward and one backward pass per example, with the
//! weights attached, reading the gradient of every listed variable.
//!
//! This covers what the per-layer view cannot: norms, embeddings, any parameter a candle op
//! touches. It costs a full backward pass per example (∂/∂W of every layer included), so it
//! is much slower than the factored view. Examples run in parallel, one per rayon worker; a
//! batch of one is computed the same way whatever the pipeline's batch size, so features
//! stay bit-identical. **Layout:** the variables in the order given, each flattened
//! row-major; a variable the output does not depend on gets zeros.

use candle::Var;
use ndarray::{ArrayViewMut1, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::collate::Collate;
use crate::error::CandleContext;
use crate::model::CandleModel;
use crate::network::Network;
use crate::objective::Objective;
use crate::pass::{eval_outputs, forward, padded_inputs, to_vec};
use crate::recorder::Mode;

/// Per-example gradients of `batch` with respect to `vars`, into the rows of `grads`.
pub(crate) fn gradients<E, N, C, O>(
    m: &CandleModel<E, N, C, O>,
    vars: &[(String, Var)],
    batch: &[E],
    mut grads: ArrayViewMut2<'_, f32>,
) -> trak::Result<()>
where
    E: Sync,
    N: Network,
    C: Collate<E>,
    O: Objective<E>,
{
    grads
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(batch.par_iter())
        .enumerate()
        .try_for_each(|(b, (row, e))| example(m, vars, e, b, row).map(|_| ()))
}

/// The gradient of one example, written into `row`. Returns which variables received a
/// gradient (the builder uses it to check that every variable is used).
pub(crate) fn example<E, N, C, O>(
    m: &CandleModel<E, N, C, O>,
    vars: &[(String, Var)],
    e: &E,
    b: usize,
    mut row: ArrayViewMut1<'_, f32>,
) -> trak::Result<Vec<bool>>
where
    E: Sync,
    N: Network,
    C: Collate<E>,
    O: Objective<E>,
{
    let x = padded_inputs(
        (&m.collate, &m.output),
        std::slice::from_ref(e),
        (1, b),
        &m.device,
    )?;
    let (z, _) = forward(&m.net, &x, Mode::Attached, "the per-example forward pass")?;
    let (g, _) = eval_outputs(&m.output, &z, std::slice::from_ref(e), b)?;
    let seed = z.mul(&g).and_then(|p| p.sum_all());
    let grads = seed
        .and_then(|s| s.backward())
        .ctx("the per-example backward pass")?;
    let mut off = 0;
    let mut used = Vec::with_capacity(vars.len());
    for (_, v) in vars {
        let n = v.elem_count();
        let mut dst = row.slice_mut(ndarray::s![off..off + n]);
        match grads.get(v.as_tensor()) {
            Some(g) => {
                let g = to_vec(g).ctx("reading a parameter gradient")?;
                dst.assign(&ndarray::ArrayView1::from(&g[..]));
                used.push(true);
            }
            None => {
                dst.fill(0.0);
                used.push(false);
            }
        }
        off += n;
    }
    Ok(used)
}
