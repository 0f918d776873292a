//! Model → projected features: one function, [`Trak::project_set`], used by the in-memory
//! pipeline and by the store alike.

use ndarray::{Array1, Array2, ArrayViewMut1, ArrayViewMut2, s};

use super::Trak;
use super::memory::{self, bytes};
use crate::error::{Error, ExampleSet, Result};
use crate::model::{FactoredModel, Model};
use crate::project::{self, FactoredMatrices, FactoredProjector, Projector, ProjectorKind};

/// How a batch becomes features: flat gradients through a [`Projector`], or layer factors
/// through a factored projector's matrices.
enum Engine<'a, E> {
    Flat(Box<dyn Projector>),
    Factored(&'a dyn FactoredModel<E>, FactoredMatrices),
}

impl<E> Engine<'_, E> {
    fn output_dim(&self) -> usize {
        match self {
            Engine::Flat(proj) => proj.output_dim(),
            Engine::Factored(_, m) => m.output_dim(),
        }
    }
}

/// A run of consecutive examples of one set: the training set (features and Q) or a target
/// set (features only). `offset` is the position of `examples[0]` in the whole set, so that
/// errors name the example's index in the caller's set.
pub(crate) struct ExampleSlice<'e, E> {
    pub(crate) set: ExampleSet,
    pub(crate) examples: &'e [E],
    pub(crate) offset: usize,
}

impl<'e, E> ExampleSlice<'e, E> {
    /// Training examples starting at position `offset` of the training set.
    pub(crate) fn training(examples: &'e [E], offset: usize) -> Self {
        Self {
            set: ExampleSet::Training,
            examples,
            offset,
        }
    }

    /// A whole target set.
    pub(crate) fn targets(examples: &'e [E]) -> Self {
        Self {
            set: ExampleSet::Target,
            examples,
            offset: 0,
        }
    }
}

impl Trak {
    /// The engine that featurises `model` at `checkpoint` under this configuration.
    fn engine<'a, M: Model>(
        &self,
        checkpoint: u64,
        model: &'a M,
    ) -> Result<Engine<'a, M::Example>> {
        let p = model.num_params();
        if p == 0 {
            return Err(Error::Empty("model parameters"));
        }
        if self.projector != ProjectorKind::Factored {
            return Ok(Engine::Flat(project::build(
                self.projector,
                p,
                self.proj_dim,
                self.seed,
            )?));
        }
        let fm = model.factored().ok_or(Error::NoFactoredView)?;
        let layers = fm.linear_layers();
        let covered: usize = layers.iter().map(|l| l.num_params()).sum();
        if covered != p {
            return Err(Error::LayerCoverage { covered, params: p });
        }
        let fp = FactoredProjector::new(&layers, self.proj_dim, self.seed)?;
        Ok(Engine::Factored(fm, fp.at_checkpoint(checkpoint)))
    }

    /// Feature dimension for `model` (k, p for the identity, or the factored split's total).
    pub(crate) fn feature_dim<M: Model>(&self, model: &M) -> Result<usize> {
        Ok(self.engine(0, model)?.output_dim())
    }

    /// Projected output gradients of `slice` under `model` at `checkpoint` (rows × dim), and,
    /// for the training set, Q (otherwise an empty vector). `progress` is called after each
    /// batch with the number of examples of the slice done. The buffers are planned against
    /// the memory limit and allocated fallibly before any model call.
    pub(crate) fn project_set<M: Model>(
        &self,
        checkpoint: u64,
        model: &M,
        slice: ExampleSlice<'_, M::Example>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<(Array2<f32>, Array1<f32>)> {
        let p = model.num_params();
        let engine = self.engine(checkpoint, model)?;
        let (n, dim) = (slice.examples.len(), engine.output_dim());
        let bs = self.batch_size.min(n.max(1));
        let with_q = slice.set == ExampleSet::Training;
        let batch_rows = if matches!(engine, Engine::Flat(_)) {
            bs
        } else {
            0
        };
        let hint = "lower k or the batch size, or featurise into a store::Run block by block";
        memory::check(
            self.memory_limit,
            &[
                ("features", bytes(n, bytes(dim, 4))),
                ("Q", bytes(if with_q { n } else { 0 }, 4)),
                ("gradient batch", bytes(batch_rows, bytes(p, 4))),
            ],
            hint,
        )?;
        let mut feats = memory::zeros2::<f32>((n, dim), "features")?;
        let mut q = memory::zeros1::<f32>(if with_q { n } else { 0 }, "Q")?;
        let mut grads = memory::zeros2::<f32>((batch_rows, p), "gradient batch")?;
        for (bi, batch) in slice.examples.chunks(bs).enumerate() {
            let start = bi * bs;
            let at = Batch {
                set: slice.set,
                checkpoint,
                first: slice.offset + start,
            };
            let out = feats.slice_mut(s![start..start + batch.len(), ..]);
            match &engine {
                Engine::Flat(proj) => {
                    let g = grads.slice_mut(s![..batch.len(), ..]);
                    at.project_flat(model, proj.as_ref(), batch, g, out)?
                }
                Engine::Factored(fm, mats) => at.project_factored(*fm, mats, batch, out)?,
            }
            if with_q {
                at.q(model, batch, q.slice_mut(s![start..start + batch.len()]))?;
            }
            progress(start + batch.len());
        }
        Ok((feats, q))
    }

    /// The curvature r = ∂²L/∂f² of every training example under `model`, batch by batch
    /// (its values are checked when a weighted Gram matrix uses them).
    pub(crate) fn curvature<M: Model>(
        &self,
        model: &M,
        train: &[M::Example],
    ) -> Result<ndarray::Array1<f32>> {
        let mut r = ndarray::Array1::zeros(train.len());
        for (i, batch) in train.chunks(self.batch_size).enumerate() {
            let start = i * self.batch_size;
            model.output_curvature(batch, r.slice_mut(s![start..start + batch.len()]))?;
        }
        Ok(r)
    }

    /// Projected output gradients of `examples` (n × k) under `model` at `checkpoint`: the same
    /// features the pipeline uses for targets. Useful for baselines (e.g. gradient similarity).
    pub fn features<M: Model>(
        &self,
        checkpoint: u64,
        model: &M,
        examples: &[M::Example],
    ) -> Result<Array2<f32>> {
        if examples.is_empty() {
            return Err(Error::Empty("example set"));
        }
        let slice = ExampleSlice::targets(examples);
        Ok(self.project_set(checkpoint, model, slice, &mut |_| {})?.0)
    }
}

/// Where a batch sits, for the errors that name its examples.
struct Batch {
    set: ExampleSet,
    checkpoint: u64,
    /// Index of the batch's first example in its set.
    first: usize,
}

impl Batch {
    /// Gradients into `g`, checked finite, projected into `out`.
    fn project_flat<M: Model>(
        &self,
        model: &M,
        proj: &dyn Projector,
        batch: &[M::Example],
        mut g: ArrayViewMut2<'_, f32>,
        out: ArrayViewMut2<'_, f32>,
    ) -> Result<()> {
        let p = g.ncols();
        model.output_grads(batch, g.view_mut())?;
        if let Some(flat) = g.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFiniteGradient {
                set: self.set,
                example: self.first + flat / p,
                checkpoint: self.checkpoint,
                param: flat % p,
            });
        }
        proj.project(self.checkpoint, g.view(), out)
    }

    /// Layer factors, checked (shapes, finite values), projected into `out`.
    fn project_factored<E>(
        &self,
        fm: &dyn FactoredModel<E>,
        mats: &FactoredMatrices,
        batch: &[E],
        out: ArrayViewMut2<'_, f32>,
    ) -> Result<()> {
        let factors = fm.layer_factors(batch)?;
        mats.check(&factors, batch.len())?;
        for (layer, f) in factors.iter().enumerate() {
            for (what, m) in [("activation", &f.acts), ("output gradient", &f.deltas)] {
                if let Some(flat) = m.iter().position(|v| !v.is_finite()) {
                    let per_example = f.positions * m.ncols();
                    return Err(Error::NonFiniteFactor {
                        set: self.set,
                        example: self.first + flat / per_example,
                        checkpoint: self.checkpoint,
                        layer,
                        what,
                        index: flat % per_example,
                    });
                }
            }
        }
        mats.project(&factors, out)
    }

    /// Q of the batch into `q`, checked finite.
    fn q<M: Model>(
        &self,
        model: &M,
        batch: &[M::Example],
        mut q: ArrayViewMut1<'_, f32>,
    ) -> Result<()> {
        model.output_q(batch, q.view_mut())?;
        if let Some(i) = q.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFiniteQ {
                example: self.first + i,
                checkpoint: self.checkpoint,
            });
        }
        Ok(())
    }
}
