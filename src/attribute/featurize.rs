//! Model → projected features: one function, [`Trak::project_set`], used by the in-memory
//! pipeline and by the store alike.

use ndarray::{Array1, Array2, ArrayViewMut1, ArrayViewMut2, Axis, s};
use rayon::prelude::*;

use super::Trak;
use super::memory::{self, bytes};
use crate::error::{Error, ExampleSet, Result};
use crate::model::batch_check::{self, Through};
use crate::model::{FactoredModel, LayerFactors, Model};
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
        if !self.projector.is_factored() {
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
        let fp = match self.projector {
            ProjectorKind::Factored { expansion } => {
                FactoredProjector::sketched(&layers, self.proj_dim, expansion, self.seed)?
            }
            _ => FactoredProjector::new(&layers, self.proj_dim, self.seed)?,
        };
        Ok(Engine::Factored(fm, fp.at_checkpoint(checkpoint)))
    }

    /// Feature dimension for `model` (k, p for the identity, or the factored split's total).
    pub(crate) fn feature_dim<M: Model>(&self, model: &M) -> Result<usize> {
        Ok(self.engine(0, model)?.output_dim())
    }

    /// Projected output gradients of `slice` under `model` at `checkpoint` (rows × dim), and,
    /// for the training set, Q (otherwise an empty vector). `progress` is called after each
    /// batch (each group of batches for the factored engine) with the number of examples of
    /// the slice done. The buffers are planned against
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
                ("batch check", bytes(self.batch_check.map_or(0, |_| p), 4)),
                (
                    "the model's working memory (one batch)",
                    model.working_memory(bs),
                ),
            ],
            hint,
        )?;
        let mut feats = memory::zeros2::<f32>((n, dim), "features")?;
        let mut q = memory::zeros1::<f32>(if with_q { n } else { 0 }, "Q")?;
        let mut grads = memory::zeros2::<f32>((batch_rows, p), "gradient batch")?;
        self.check_batches(model, &engine, &slice, grads.view_mut())?;
        let proj = match &engine {
            Engine::Flat(proj) => proj.as_ref(),
            Engine::Factored(fm, mats) => {
                let qv = with_q.then(|| q.view_mut());
                let out = (feats.view_mut(), qv);
                self.factored_batches(checkpoint, (model, *fm, mats), slice, out, progress)?;
                return Ok((feats, q));
            }
        };
        for (bi, batch) in slice.examples.chunks(bs).enumerate() {
            let start = bi * bs;
            let at = Batch {
                set: slice.set,
                checkpoint,
                first: slice.offset + start,
            };
            let out = feats.slice_mut(s![start..start + batch.len(), ..]);
            let g = grads.slice_mut(s![..batch.len(), ..]);
            at.project_flat(model, proj, batch, g, out)?;
            if with_q {
                at.q(model, batch, q.slice_mut(s![start..start + batch.len()]))?;
            }
            progress(start + batch.len());
        }
        Ok((feats, q))
    }

    /// The opt-in batch-independence check on the slice's first batch (the flat engine's
    /// gradient buffer holds the batch).
    fn check_batches<M: Model>(
        &self,
        model: &M,
        engine: &Engine<'_, M::Example>,
        slice: &ExampleSlice<'_, M::Example>,
        grads: ArrayViewMut2<'_, f32>,
    ) -> Result<()> {
        let Some(tolerance) = self.batch_check else {
            return Ok(());
        };
        let first = &slice.examples[..self.batch_size.min(slice.examples.len())];
        let through = match engine {
            Engine::Flat(_) => Through::Gradients(grads),
            Engine::Factored(fm, _) => Through::Factors(*fm),
        };
        batch_check::check(model, first, tolerance, slice.offset, through)
    }

    /// The factored engine's batches, several at once (each batch's layer factors, projection
    /// and Q are independent of the others, so the features do not depend on the grouping).
    /// The first batch runs alone and measures its layer factors; then groups of up to eight
    /// batches per thread run in parallel, as many as a quarter of the spare memory holds
    /// ([`memory::in_flight`]), each batch counted as its factors plus the model's working
    /// memory ([`Model::working_memory`]). Progress is reported after each group, and the first failing
    /// batch in order gives the error.
    fn factored_batches<M: Model>(
        &self,
        checkpoint: u64,
        (model, fm, mats): (&M, &dyn FactoredModel<M::Example>, &FactoredMatrices),
        slice: ExampleSlice<'_, M::Example>,
        (mut feats, mut q): (ArrayViewMut2<'_, f32>, Option<ArrayViewMut1<'_, f32>>),
        progress: &mut dyn FnMut(usize),
    ) -> Result<()> {
        let planned = bytes(feats.len() + q.as_ref().map_or(0, |q| q.len()), 4);
        let bs = self.batch_size.min(slice.examples.len().max(1));
        let batches: Vec<&[M::Example]> = slice.examples.chunks(bs).collect();
        let mut outs: Vec<_> = feats.axis_chunks_iter_mut(Axis(0), bs).collect();
        let mut qs: Vec<Option<ArrayViewMut1<'_, f32>>> = match q.as_mut() {
            Some(q) => q.axis_chunks_iter_mut(Axis(0), bs).map(Some).collect(),
            None => batches.iter().map(|_| None).collect(),
        };
        let (mut g0, mut group) = (0, 1);
        while g0 < batches.len() {
            let g1 = (g0 + group).min(batches.len());
            let results: Vec<Result<usize>> = (g0..g1)
                .into_par_iter()
                .zip(outs[g0..g1].par_iter_mut())
                .zip(qs[g0..g1].par_iter_mut())
                .map(|((bi, out), q)| {
                    let at = Batch {
                        set: slice.set,
                        checkpoint,
                        first: slice.offset + bi * bs,
                    };
                    let q = q.as_mut().map(|q| q.view_mut());
                    at.project_factored(model, (fm, mats), batches[bi], out.view_mut(), q)
                })
                .collect();
            let factor_bytes = results.into_iter().collect::<Result<Vec<usize>>>()?;
            if g0 == 0 {
                let most = 8 * rayon::current_num_threads();
                let item = factor_bytes[0].saturating_add(model.working_memory(bs));
                group = memory::in_flight(self.memory_limit, planned, item, most);
            }
            progress((g1 * bs).min(slice.examples.len()));
            g0 = g1;
        }
        Ok(())
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
    /// A model's error with the example it names counted in the set, not in the batch.
    fn locate(&self, e: Error) -> Error {
        match e {
            Error::InvalidTarget { example, reason } => Error::InvalidTarget {
                example: self.first + example,
                reason,
            },
            Error::InvalidExample { example, reason } => Error::InvalidExample {
                example: self.first + example,
                reason,
            },
            other => other,
        }
    }

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
        model
            .output_grads(batch, g.view_mut())
            .map_err(|e| self.locate(e))?;
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

    /// Layer factors, checked (shapes, finite values), projected into `out`; and Q into `q`
    /// when asked (from the same pass when the model gives it, else [`Model::output_q`]).
    /// Returns the bytes the layer factors took.
    fn project_factored<M: Model>(
        &self,
        model: &M,
        (fm, mats): (&dyn FactoredModel<M::Example>, &FactoredMatrices),
        batch: &[M::Example],
        out: ArrayViewMut2<'_, f32>,
        mut q: Option<ArrayViewMut1<'_, f32>>,
    ) -> Result<usize> {
        let (factors, with_q) = match q.as_mut() {
            None => (fm.layer_factors(batch).map_err(|e| self.locate(e))?, false),
            Some(q) => fm
                .layer_factors_and_q(batch, q.view_mut())
                .map_err(|e| self.locate(e))?,
        };
        mats.check(&factors, batch.len())?;
        self.check_factors(&factors)?;
        mats.project(&factors, out)?;
        match (q, with_q) {
            (None, _) => {}
            (Some(q), true) => self.check_q(q.view())?,
            (Some(q), false) => self.q(model, batch, q)?,
        }
        let values = factors.iter().map(|f| f.acts.len() + f.deltas.len()).sum();
        Ok(bytes(values, 4))
    }

    /// [`Error::NonFiniteFactor`] for the first non-finite layer input or output gradient.
    fn check_factors(&self, factors: &[LayerFactors]) -> Result<()> {
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
        Ok(())
    }

    /// Q of the batch into `q`, checked finite.
    fn q<M: Model>(
        &self,
        model: &M,
        batch: &[M::Example],
        mut q: ArrayViewMut1<'_, f32>,
    ) -> Result<()> {
        model
            .output_q(batch, q.view_mut())
            .map_err(|e| self.locate(e))?;
        self.check_q(q.view())
    }

    /// [`Error::NonFiniteQ`] for the first non-finite Q of the batch.
    fn check_q(&self, q: ndarray::ArrayView1<'_, f32>) -> Result<()> {
        if let Some(i) = q.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFiniteQ {
                example: self.first + i,
                checkpoint: self.checkpoint,
            });
        }
        Ok(())
    }
}
