//! Attribution without padding every sequence to the longest: one adapter per context
//! bucket, each sequence run at the smallest bucket that holds it.
//!
//! Buckets are powers of two from [`MIN_BUCKET`] (16, 32, 64, …; the last one capped at the
//! model's `max_position_embeddings`), so a sequence is padded to less than twice its length
//! and the forward and backward passes, most of the cost, run at that length. A batch's layer
//! factors are handed to the projector at its longest bucket, shorter sequences' extra
//! positions filled with zeros; the factored projector skips positions without an output
//! gradient, so those zeros change neither a feature nor its bits (a test checks that the
//! features are the single-context adapter's and bit-identical for every batch size).
//!
//! Each bucket's adapter is built (and checked) on the sequences that fall into it.

use std::collections::BTreeMap;

use ndarray::{Array2, ArrayViewMut1, ArrayViewMut2, s};
use trak::model::{FactoredModel, LayerFactors, LinearLayer};
use trak::{Error, Model};

use super::{LayerSet, LmModel, adapter};
use crate::models::llama::Llama;
use crate::sequence::TokenSeq;

/// The smallest bucket (positions).
pub const MIN_BUCKET: usize = 16;

/// The bucket of a sequence with `inputs` input positions under a model of `max` positions.
pub fn bucket(inputs: usize, max: usize) -> usize {
    inputs.max(1).next_power_of_two().max(MIN_BUCKET).min(max)
}

/// An LM made attributable at several context lengths (see the module docs).
pub struct Bucketed<'a> {
    contexts: Vec<usize>,
    models: Vec<LmModel<'a>>,
}

impl std::fmt::Debug for Bucketed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucketed")
            .field("contexts", &self.contexts)
            .finish()
    }
}

impl<'a> Bucketed<'a> {
    /// Adapters for the buckets `seqs` need, `chunk` sequences per pass, with `layers`. A
    /// sequence longer than the model's context is [`Error::InvalidExample`].
    pub fn new(
        lm: &'a Llama,
        seqs: &[TokenSeq],
        (layers, chunk): (LayerSet, usize),
        gradient_check: bool,
    ) -> trak::Result<Self> {
        let max = lm.config().max_position_embeddings;
        let mut groups: BTreeMap<usize, Vec<TokenSeq>> = BTreeMap::new();
        for (i, s) in seqs.iter().enumerate() {
            let inputs = s.tokens.len().saturating_sub(1);
            if inputs > max {
                return Err(too_long(i, inputs, max));
            }
            groups
                .entry(bucket(inputs, max))
                .or_default()
                .push(s.clone());
        }
        if groups.is_empty() {
            return Err(Error::Empty("sequences to attribute"));
        }
        let mut out = Self {
            contexts: Vec::new(),
            models: Vec::new(),
        };
        for (context, probe) in groups {
            out.models.push(adapter(
                lm,
                (context, chunk),
                layers,
                &probe,
                gradient_check,
            )?);
            out.contexts.push(context);
        }
        Ok(out)
    }

    /// The buckets' context lengths, ascending.
    pub fn contexts(&self) -> &[usize] {
        &self.contexts
    }

    /// The adapter of each example of `batch` (the smallest bucket that holds it).
    fn assign(&self, batch: &[TokenSeq]) -> trak::Result<Vec<usize>> {
        let last = *self.contexts.last().expect("at least one bucket");
        batch
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let inputs = e.tokens.len().saturating_sub(1);
                self.contexts
                    .iter()
                    .position(|&c| c >= inputs)
                    .ok_or_else(|| too_long(i, inputs, last))
            })
            .collect()
    }

    /// `batch` split by bucket.
    fn groups(&self, batch: &[TokenSeq]) -> trak::Result<Vec<Group>> {
        let assigned = self.assign(batch)?;
        let mut out = Vec::new();
        for b in 0..self.models.len() {
            let idx: Vec<usize> = (0..batch.len()).filter(|&i| assigned[i] == b).collect();
            if !idx.is_empty() {
                let ex = idx.iter().map(|&i| batch[i].clone()).collect();
                out.push((b, idx, ex));
            }
        }
        Ok(out)
    }

    /// Per-example values (Q or r) computed bucket by bucket into `out`.
    fn per_example(
        &self,
        batch: &[TokenSeq],
        mut out: ArrayViewMut1<'_, f32>,
        f: impl Fn(&LmModel<'a>, &[TokenSeq], ArrayViewMut1<'_, f32>) -> trak::Result<()>,
    ) -> trak::Result<()> {
        for (b, idx, ex) in self.groups(batch)? {
            let mut v = ndarray::Array1::zeros(ex.len());
            f(&self.models[b], &ex, v.view_mut())?;
            for (&i, x) in idx.iter().zip(v) {
                out[i] = x;
            }
        }
        Ok(())
    }
}

/// Part of a batch in one bucket: (bucket, positions in the batch, the examples).
type Group = (usize, Vec<usize>, Vec<TokenSeq>);

fn too_long(i: usize, inputs: usize, max: usize) -> Error {
    Error::InvalidExample {
        example: i,
        reason: format!("its {inputs} input positions exceed the model's context of {max}"),
    }
}

impl Model for Bucketed<'_> {
    type Example = TokenSeq;

    fn num_params(&self) -> usize {
        self.models[0].num_params()
    }

    fn output_grads(
        &self,
        batch: &[TokenSeq],
        mut grads: ArrayViewMut2<'_, f32>,
    ) -> trak::Result<()> {
        for (b, idx, ex) in self.groups(batch)? {
            let mut g = Array2::zeros((ex.len(), self.num_params()));
            self.models[b].output_grads(&ex, g.view_mut())?;
            for (&i, row) in idx.iter().zip(g.rows()) {
                grads.row_mut(i).assign(&row);
            }
        }
        Ok(())
    }

    fn output_q(&self, batch: &[TokenSeq], q: ArrayViewMut1<'_, f32>) -> trak::Result<()> {
        self.per_example(batch, q, |m, ex, v| m.output_q(ex, v))
    }

    fn output_curvature(&self, batch: &[TokenSeq], r: ArrayViewMut1<'_, f32>) -> trak::Result<()> {
        self.per_example(batch, r, |m, ex, v| m.output_curvature(ex, v))
    }

    fn factored(&self) -> Option<&dyn FactoredModel<TokenSeq>> {
        Some(self)
    }

    /// The longest bucket's: a batch runs at most at its context.
    fn working_memory(&self, batch_len: usize) -> usize {
        self.models
            .iter()
            .map(|m| m.working_memory(batch_len))
            .max()
            .unwrap_or(0)
    }

    /// The weights' fingerprint (the same in every bucket) with the bucket contexts.
    fn fingerprint(&self) -> Option<u64> {
        let mut bytes: Vec<u8> = self.models[0].fingerprint()?.to_le_bytes().to_vec();
        bytes.extend(self.contexts.iter().flat_map(|c| (*c as u64).to_le_bytes()));
        Some(xxhash_rust::xxh3::xxh3_64(&bytes))
    }
}

impl FactoredModel<TokenSeq> for Bucketed<'_> {
    fn linear_layers(&self) -> Vec<LinearLayer> {
        self.models[0].linear_layers()
    }

    fn layer_factors(&self, batch: &[TokenSeq]) -> trak::Result<Vec<LayerFactors>> {
        let mut q = ndarray::Array1::zeros(batch.len());
        Ok(self.layer_factors_and_q(batch, q.view_mut())?.0)
    }

    /// Each bucket's factors, placed at the batch's longest bucket (zeros after a shorter
    /// sequence's positions), and Q from the same passes.
    fn layer_factors_and_q(
        &self,
        batch: &[TokenSeq],
        mut q: ArrayViewMut1<'_, f32>,
    ) -> trak::Result<(Vec<LayerFactors>, bool)> {
        let groups = self.groups(batch)?;
        let t = groups
            .iter()
            .map(|g| self.contexts[g.0])
            .max()
            .unwrap_or(MIN_BUCKET);
        let mut out: Vec<LayerFactors> = self
            .linear_layers()
            .into_iter()
            .map(|l| LayerFactors::zeros(l, batch.len(), t))
            .collect();
        for (b, idx, ex) in groups {
            let mut qb = ndarray::Array1::zeros(ex.len());
            let (factors, _) = self.models[b].layer_factors_and_q(&ex, qb.view_mut())?;
            for (dst, src) in out.iter_mut().zip(&factors) {
                place(dst, src, &idx);
            }
            for (&i, v) in idx.iter().zip(qb) {
                q[i] = v;
            }
        }
        Ok((out, true))
    }
}

/// Copies each example's rows of `src` (its bucket's positions) to its place in `dst`.
fn place(dst: &mut LayerFactors, src: &LayerFactors, idx: &[usize]) {
    let (t, c) = (dst.positions, src.positions);
    for (j, &i) in idx.iter().enumerate() {
        let from = s![j * c..(j + 1) * c, ..];
        let to = s![i * t..i * t + c, ..];
        dst.acts.slice_mut(to).assign(&src.acts.slice(from));
        dst.deltas.slice_mut(to).assign(&src.deltas.slice(from));
    }
}
