//! One pass of a chunk through the network: padded inputs, the forward pass, the output
//! function and its backward seed.
//!
//! **Fixed chunks.** candle's CPU matmul picks its kernel by shape, so a row computed inside
//! a batch of 128 can differ in the last bits from the same row in a batch of 16. The
//! adapter therefore always runs chunks of exactly `chunk_rows` examples, padding the last
//! chunk with copies of its last example (their outputs get a zero seed and their factors
//! are dropped). Every example is then computed by the same kernels whatever the pipeline's
//! batch size, and chunks run in parallel, each on one rayon worker, so the thread count does
//! not change a bit either. gemm chooses kernels by the CPU's SIMD features and cache sizes:
//! the bit-identity holds on one machine, not across machines.

use candle::{Device, Tensor};
use trak::Error;
use trak::output::OutputValue;

use crate::collate::Collate;
use crate::error::CandleContext;
use crate::network::Network;
use crate::objective::Objective;
use crate::recorder::{Call, Mode, Recorder};

/// The collation's and the objective's checks of every example of `chunk`
/// ([`Error::InvalidExample`] naming the first that fails, `first` being the index of
/// `chunk[0]` in the caller's batch), before anything is collated.
pub(crate) fn check_examples<E, C: Collate<E>, O: Objective<E>>(
    collate: &C,
    objective: &O,
    chunk: &[E],
    first: usize,
) -> trak::Result<()> {
    for (b, e) in chunk.iter().enumerate() {
        if let Err(reason) = collate.check(e).and_then(|()| objective.check(e)) {
            return Err(Error::InvalidExample {
                example: first + b,
                reason,
            });
        }
    }
    Ok(())
}

/// Collated inputs of `chunk`, padded to `rows` examples by repeating the last one, after
/// [`check_examples`].
pub(crate) fn padded_inputs<E, C: Collate<E>, O: Objective<E>>(
    (collate, objective): (&C, &O),
    chunk: &[E],
    (rows, first): (usize, usize),
    device: &Device,
) -> trak::Result<Tensor> {
    check_examples(collate, objective, chunk, first)?;
    let x = collate.inputs(chunk, device).ctx("collating a batch")?;
    let got = x.dims().first().copied().unwrap_or(0);
    if got != chunk.len() {
        return Err(Error::ShapeMismatch {
            what: "collated inputs (first dimension)",
            expected: chunk.len().to_string(),
            got: format!("{:?}", x.dims()),
        });
    }
    if chunk.len() >= rows {
        return Ok(x);
    }
    let pad = || -> candle::Result<Tensor> {
        let last = x.narrow(0, chunk.len() - 1, 1)?;
        let mut dims = x.dims().to_vec();
        dims[0] = rows - chunk.len();
        let pad = last.broadcast_as(dims)?.contiguous()?;
        Tensor::cat(&[&x, &pad], 0)
    };
    pad().ctx("padding a chunk")
}

/// One forward pass in `mode`: raw outputs and the recorded layer calls. A refusal recorded
/// during the pass is returned as its typed error.
pub(crate) fn forward<N: Network>(
    net: &N,
    x: &Tensor,
    mode: Mode,
    context: &str,
) -> trak::Result<(Tensor, Vec<Call>)> {
    let mut rec = Recorder::new(mode);
    let z = net.forward(x, &mut rec);
    let (calls, refusal) = rec.finish();
    if let Some(e) = refusal {
        return Err(e);
    }
    Ok((z.ctx(context)?, calls))
}

/// Evaluates `objective` on the first `chunk.len()` rows of `z` (rows × …, each row
/// flattened). Returns the backward seed G = ∂f/∂z (zero on padded rows) and f, Q per real
/// row. `first` is the index of `chunk[0]` in the caller's batch, for errors.
pub(crate) fn eval_outputs<E, O: Objective<E>>(
    objective: &O,
    z: &Tensor,
    chunk: &[E],
    first: usize,
) -> trak::Result<(Tensor, Vec<OutputValue>)> {
    let rows = z.dims().first().copied().unwrap_or(0);
    if let Err(expected) = objective.check_outputs(z.dims()) {
        return Err(Error::ShapeMismatch {
            what: "network output",
            expected,
            got: format!("{:?}", z.dims()),
        });
    }
    if z.rank() < 2 || rows < chunk.len() {
        return Err(Error::ShapeMismatch {
            what: "network output",
            expected: format!("at least {} rows of raw outputs (rank ≥ 2)", chunk.len()),
            got: format!("{:?}", z.dims()),
        });
    }
    let width = z.elem_count() / rows;
    let zv = z.flatten_all().and_then(|t| t.to_vec1::<f32>());
    let zv = zv.ctx("reading the network output")?;
    let mut g = vec![0f32; rows * width];
    let mut values = Vec::with_capacity(chunk.len());
    for (b, e) in chunk.iter().enumerate() {
        let row = b * width..(b + 1) * width;
        let v = objective
            .eval(e, &zv[row.clone()], &mut g[row])
            .map_err(|reason| Error::InvalidTarget {
                example: first + b,
                reason,
            })?;
        values.push(v);
    }
    let g = Tensor::from_vec(g, z.shape(), z.device()).ctx("building the backward seed")?;
    Ok((g, values))
}

/// Row-major f32 contents of a tensor.
pub(crate) fn to_vec(t: &Tensor) -> candle::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}
