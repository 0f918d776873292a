//! [`CandleModel`]: a candle network as a [`trak::Model`] and [`trak::FactoredModel`].

use std::marker::PhantomData;

use candle::{Device, Var};
use ndarray::{Array2, ArrayViewMut1, ArrayViewMut2, Axis};
use rayon::prelude::*;
use trak::model::{FactoredModel, LayerFactors, LinearLayer};
use trak::{Error, Model};

use crate::collate::Collate;
use crate::error::CandleContext;
use crate::factors::{ChunkLayer, assemble, chunk_layer, example_gradient};
use crate::layers::LayerInfo;
use crate::network::Network;
use crate::objective::Objective;
use crate::pass::{eval_outputs, forward, padded_inputs};
use crate::recorder::Mode;

/// Which parameters are attributed.
#[derive(Debug, Clone)]
pub(crate) enum Params {
    /// The selected linear/conv layers, through their factors.
    Layers,
    /// The given variables, through batch-size-1 backward passes.
    All(Vec<(String, Var)>),
}

/// A candle network made attributable; build it with [`crate::CandleModel::builder`].
///
/// With the default (per-layer) parameters it implements [`FactoredModel`], so
/// [`trak::ProjectorKind::FACTORED`] never forms a p-dimensional gradient; the other
/// projectors get gradients assembled from the same factors in the layout of
/// [`crate::layers`]. With [`crate::CandleModelBuilder::all_parameters`] every listed
/// variable is attributed through one backward pass per example, and there is no factored
/// view.
pub struct CandleModel<E, N, C, O> {
    pub(crate) net: N,
    pub(crate) collate: C,
    pub(crate) output: O,
    pub(crate) device: Device,
    pub(crate) layers: Vec<LayerInfo>,
    pub(crate) mask: Vec<bool>,
    pub(crate) params: Params,
    pub(crate) chunk_rows: usize,
    pub(crate) fingerprint: u64,
    /// The bytes of one pass, measured at build ([`crate::working`]).
    pub(crate) pass_bytes: usize,
    pub(crate) _example: PhantomData<fn(&E)>,
}

impl<E, N, C, O> CandleModel<E, N, C, O>
where
    E: Sync,
    N: Network,
    C: Collate<E>,
    O: Objective<E>,
{
    /// Every linear/conv layer the forward pass routes through the recorder, in call order.
    pub fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }

    /// The attributed layers (all of [`CandleModel::layers`] unless a subset was named).
    pub fn selected_layers(&self) -> impl Iterator<Item = &LayerInfo> {
        self.layers
            .iter()
            .zip(&self.mask)
            .filter(|(_, m)| **m)
            .map(|(l, _)| l)
    }

    /// Runs `f` on chunks of `chunk_rows` examples in parallel, in order.
    fn per_chunk<T: Send>(
        &self,
        batch: &[E],
        f: impl Fn(&[E], usize) -> trak::Result<T> + Sync,
    ) -> trak::Result<Vec<T>> {
        let rows = self.chunk_rows;
        batch
            .par_chunks(rows)
            .enumerate()
            .map(|(i, c)| f(c, i * rows))
            .collect()
    }

    /// Tapped forward + backward of one chunk: its factors at every selected layer, and each
    /// example's Q from the same outputs (the taps add zeros, so the outputs are the plain
    /// forward pass's, bit for bit).
    fn chunk_factors(
        &self,
        chunk: &[E],
        first: usize,
    ) -> trak::Result<(Vec<ChunkLayer>, Vec<f32>)> {
        let pair = (&self.collate, &self.output);
        let x = padded_inputs(pair, chunk, (self.chunk_rows, first), &self.device)?;
        let mode = Mode::detached(Some(self.mask.clone()));
        let (z, calls) = forward(&self.net, &x, mode, "the tapped forward pass")?;
        self.check_calls(&calls)?;
        let (g, values) = eval_outputs(&self.output, &z, chunk, first)?;
        let seed = z.mul(&g).and_then(|p| p.sum_all());
        let grads = seed.and_then(|s| s.backward()).ctx("the backward pass")?;
        let mut out = Vec::new();
        for (call, info) in calls.iter().zip(&self.layers) {
            if let Some(tap) = &call.tap {
                let grad = grads.get(tap.as_tensor());
                let layer = chunk_layer(call, info, grad, chunk.len());
                out.push(layer.ctx("reading layer factors")?);
            }
        }
        Ok((out, values.iter().map(|v| v.q).collect()))
    }

    /// The forward pass must call the discovered layers, in the same order.
    fn check_calls(&self, calls: &[crate::recorder::Call]) -> trak::Result<()> {
        let names = calls.iter().map(|c| c.name.as_str());
        if names.ne(self.layers.iter().map(|l| l.name.as_str())) {
            let got: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
            let want: Vec<&str> = self.layers.iter().map(|l| l.name.as_str()).collect();
            return Err(Error::ShapeMismatch {
                what: "layer calls of the forward pass (they must not depend on the batch)",
                expected: format!("{want:?}"),
                got: format!("{got:?}"),
            });
        }
        Ok(())
    }

    /// Factors of every selected layer for `batch`, and each example's Q.
    fn factors(&self, batch: &[E]) -> trak::Result<(Vec<LayerFactors>, Vec<f32>)> {
        let chunks = self.per_chunk(batch, |c, first| self.chunk_factors(c, first))?;
        let factors = self
            .selected_layers()
            .enumerate()
            .map(|(j, info)| {
                let per: Vec<&ChunkLayer> = chunks.iter().map(|c| &c.0[j]).collect();
                assemble(info, &per, batch.len())
            })
            .collect();
        Ok((factors, chunks.into_iter().flat_map(|c| c.1).collect()))
    }

    /// Per-example gradients assembled from the factors.
    fn gradients_from_factors(
        &self,
        batch: &[E],
        mut grads: ArrayViewMut2<'_, f32>,
    ) -> trak::Result<()> {
        let (factors, _) = self.factors(batch)?;
        let layers: Vec<&LayerInfo> = self.selected_layers().collect();
        grads
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(b, mut row)| {
                let mut off = 0;
                for (info, f) in layers.iter().zip(&factors) {
                    let p = info.num_params();
                    let dst: ArrayViewMut1<'_, f32> = row.slice_mut(ndarray::s![off..off + p]);
                    example_gradient(info, f, b, dst);
                    off += p;
                }
            });
        Ok(())
    }

    /// Raw outputs of one padded chunk (no taps, weights detached).
    fn raw_outputs(&self, chunk: &[E], first: usize) -> trak::Result<candle::Tensor> {
        let pair = (&self.collate, &self.output);
        let x = padded_inputs(pair, chunk, (self.chunk_rows, first), &self.device)?;
        let (z, _) = forward(&self.net, &x, Mode::detached(None), "the forward pass")?;
        Ok(z)
    }

    /// Q of one chunk.
    fn chunk_q(&self, chunk: &[E], first: usize) -> trak::Result<Vec<f32>> {
        let z = self.raw_outputs(chunk, first)?;
        let (_, values) = eval_outputs(&self.output, &z, chunk, first)?;
        Ok(values.iter().map(|v| v.q).collect())
    }

    /// The curvature r of each example of one chunk.
    fn chunk_r(&self, chunk: &[E], first: usize) -> trak::Result<Vec<f32>> {
        let z = self.raw_outputs(chunk, first)?;
        let width = z.elem_count() / z.dims()[0].max(1);
        let zv = z.flatten_all().and_then(|t| t.to_vec1::<f32>());
        let zv = zv.ctx("reading the network output")?;
        chunk
            .iter()
            .zip(zv.chunks(width))
            .map(|(e, z)| self.output.curvature(e, z).ok_or(Error::NoCurvature))
            .collect()
    }
}

impl<E, N, C, O> std::fmt::Debug for CandleModel<E, N, C, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let params = match &self.params {
            Params::Layers => "layers".to_string(),
            Params::All(v) => format!("all parameters ({} variables)", v.len()),
        };
        f.debug_struct("CandleModel")
            .field("layers", &self.layers)
            .field("selected", &self.mask)
            .field("params", &params)
            .field("chunk_rows", &self.chunk_rows)
            .field("fingerprint", &format_args!("{:016x}", self.fingerprint))
            .finish_non_exhaustive()
    }
}

fn shape_check(what: &'static str, expected: String, got: String) -> trak::Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what,
            expected,
            got,
        })
    }
}

impl<E, N, C, O> Model for CandleModel<E, N, C, O>
where
    E: Sync,
    N: Network,
    C: Collate<E>,
    O: Objective<E>,
{
    type Example = E;

    fn num_params(&self) -> usize {
        match &self.params {
            Params::Layers => self.selected_layers().map(LayerInfo::num_params).sum(),
            Params::All(vars) => vars.iter().map(|(_, v)| v.elem_count()).sum(),
        }
    }

    fn output_grads(&self, batch: &[E], grads: ArrayViewMut2<'_, f32>) -> trak::Result<()> {
        let want = format!("{} × {}", batch.len(), self.num_params());
        let got = format!("{} × {}", grads.nrows(), grads.ncols());
        shape_check("gradient buffer", want, got)?;
        if batch.is_empty() {
            return Ok(());
        }
        match &self.params {
            Params::Layers => self.gradients_from_factors(batch, grads),
            Params::All(vars) => crate::fallback::gradients(self, vars, batch, grads),
        }
    }

    fn output_q(&self, batch: &[E], mut q: ArrayViewMut1<'_, f32>) -> trak::Result<()> {
        shape_check("Q buffer", batch.len().to_string(), q.len().to_string())?;
        let chunks = self.per_chunk(batch, |c, first| self.chunk_q(c, first))?;
        for (dst, v) in q.iter_mut().zip(chunks.into_iter().flatten()) {
            *dst = v;
        }
        Ok(())
    }

    fn output_curvature(&self, batch: &[E], mut r: ArrayViewMut1<'_, f32>) -> trak::Result<()> {
        shape_check(
            "curvature buffer",
            batch.len().to_string(),
            r.len().to_string(),
        )?;
        let chunks = self.per_chunk(batch, |c, first| self.chunk_r(c, first))?;
        for (dst, v) in r.iter_mut().zip(chunks.into_iter().flatten()) {
            *dst = v;
        }
        Ok(())
    }

    fn factored(&self) -> Option<&dyn FactoredModel<E>> {
        match self.params {
            Params::Layers => Some(self),
            Params::All(_) => None,
        }
    }

    fn fingerprint(&self) -> Option<u64> {
        Some(self.fingerprint)
    }

    /// candle's working memory: one pass's autograd graph and gradients, measured at build on
    /// the probe, times the passes that run at once, and the batch's layer factors.
    fn working_memory(&self, batch_len: usize) -> usize {
        self.working_bytes(batch_len)
    }
}

impl<E, N, C, O> FactoredModel<E> for CandleModel<E, N, C, O>
where
    E: Sync,
    N: Network,
    C: Collate<E>,
    O: Objective<E>,
{
    fn linear_layers(&self) -> Vec<LinearLayer> {
        self.selected_layers()
            .map(LayerInfo::linear_layer)
            .collect()
    }

    fn layer_factors(&self, batch: &[E]) -> trak::Result<Vec<LayerFactors>> {
        if batch.is_empty() {
            return Ok(self
                .selected_layers()
                .map(|l| LayerFactors {
                    positions: l.positions,
                    acts: Array2::zeros((0, l.linear_layer().in_dim)),
                    deltas: Array2::zeros((0, l.out_dim)),
                })
                .collect());
        }
        Ok(self.factors(batch)?.0)
    }

    /// The factors and Q from the same tapped pass (no second forward pass for Q).
    fn layer_factors_and_q(
        &self,
        batch: &[E],
        mut q: ArrayViewMut1<'_, f32>,
    ) -> trak::Result<(Vec<LayerFactors>, bool)> {
        shape_check("Q buffer", batch.len().to_string(), q.len().to_string())?;
        if batch.is_empty() {
            return Ok((self.layer_factors(batch)?, true));
        }
        let (factors, values) = self.factors(batch)?;
        q.iter_mut().zip(values).for_each(|(d, v)| *d = v);
        Ok((factors, true))
    }
}
