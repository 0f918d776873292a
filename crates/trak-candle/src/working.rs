//! How much memory candle works in: measured once at build on a probe chunk, and given to
//! trak's memory plan as [`trak::Model::working_memory`].
//!
//! A chunk's tapped pass keeps its autograd graph alive until the backward pass is done: every
//! tensor on a path from a tap (or a variable) to the output, which candle lists
//! ([`candle::Tensor::sorted_nodes`]), plus each recorded layer's input and output. The
//! backward pass adds a gradient of about the same size for every node of the graph. The
//! measure is therefore the graph's bytes twice, the recorded inputs and outputs, the inputs
//! and the outputs: an upper bound for candle's share (views count as whole tensors), exact
//! in what it lists, and the same on every machine. Chunks run in parallel (at most one per
//! thread at once in the plan), and a batch's factors are held once per chunk and once
//! assembled.

use candle::Tensor;

use crate::collate::Collate;
use crate::error::CandleContext;
use crate::model::{CandleModel, Params};
use crate::network::Network;
use crate::objective::Objective;
use crate::pass::{eval_outputs, forward, padded_inputs};
use crate::recorder::Mode;

fn tensor_bytes(t: &Tensor) -> usize {
    t.elem_count().saturating_mul(t.dtype().size_in_bytes())
}

impl<E, N, C, O> CandleModel<E, N, C, O>
where
    E: Sync,
    N: Network,
    C: Collate<E>,
    O: Objective<E>,
{
    /// The bytes of one pass over `probe` (the first chunk of the probe; one example with
    /// [`crate::CandleModelBuilder::all_parameters`], whose passes are per example), as
    /// described in the [module docs](self).
    pub(crate) fn measure_pass(&self, probe: &[E]) -> trak::Result<usize> {
        let (rows, mode) = match self.params {
            Params::Layers => (self.chunk_rows, Mode::detached(Some(self.mask.clone()))),
            Params::All(_) => (1, Mode::Attached),
        };
        let chunk = &probe[..probe.len().min(rows)];
        let pair = (&self.collate, &self.output);
        let x = padded_inputs(pair, chunk, (rows, 0), &self.device)?;
        let (z, calls) = forward(&self.net, &x, mode, "measuring the working memory")?;
        let (g, _) = eval_outputs(&self.output, &z, chunk, 0)?;
        let seed = z.mul(&g).and_then(|p| p.sum_all());
        let seed = seed.ctx("measuring the working memory")?;
        let graph: usize = seed.sorted_nodes().into_iter().map(tensor_bytes).sum();
        let recorded: usize = calls
            .iter()
            .map(|c| tensor_bytes(&c.input) + tensor_bytes(&c.output))
            .sum();
        Ok(2 * graph + recorded + tensor_bytes(&x) + 2 * tensor_bytes(&z))
    }

    /// The working memory of one call on `batch_len` examples: the passes that run at once
    /// (one per thread at most) and, for the layer route, the batch's factors twice (per chunk,
    /// then assembled).
    pub(crate) fn working_bytes(&self, batch_len: usize) -> usize {
        let per_pass = match self.params {
            Params::Layers => self.chunk_rows,
            Params::All(_) => 1,
        };
        let passes = batch_len.div_ceil(per_pass.max(1));
        let at_once = passes.min(rayon::current_num_threads()).max(1);
        let factors = match self.params {
            Params::Layers => {
                let per_example: usize = self
                    .selected_layers()
                    .map(|l| l.positions * (l.linear_layer().in_dim + l.out_dim))
                    .sum();
                let padded = passes * per_pass;
                2 * padded.saturating_mul(per_example).saturating_mul(4)
            }
            Params::All(_) => 0,
        };
        at_once
            .saturating_mul(self.pass_bytes)
            .saturating_add(factors)
    }
}
