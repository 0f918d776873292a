//! Factored (per-layer, Kronecker) projection: features from layer inputs and output
//! gradients, without forming the p-dimensional gradient.
//!
//! For a linear layer y = W a (W: out × in) applied at positions t = 1..T, the per-example
//! gradient is ∇_W f = Σ_t δ_t a_tᵀ. With two small random matrices P_out (out × k_out) and
//! P_in (in × k_in), the layer's features are
//!
//! ```text
//! φ_layer = Σ_t (P_outᵀ δ_t) ⊗ (P_inᵀ a_t)        (k_out · k_in values)
//! ```
//!
//! which is (P_out ⊗ P_in)ᵀ vec(∇_W f): a random projection of the layer's gradient whose
//! matrix is a Kronecker product. Its entries are ±1/√(k_out k_in) (Rademacher factors from
//! [`DenseProjector`](super::DenseProjector) scaled 1/√k_out and 1/√k_in), so E\[φ_aᵀφ_b\] is
//! the gradients' inner product, as for the dense projector; the variance is somewhat higher.
//! A factor whose k equals its dimension is the identity (exact).
//!
//! The cost per example is O(Σ_layers T·(out·k_out + in·k_in + k_out·k_in)) instead of
//! O(p·k), and the memory traffic is that of the factors, not of p floats.
//!
//! # How k is split
//! [`FactoredProjector::new`] turns the requested k into one block per layer, in layer order
//! (layer l's features are columns `offset_l .. offset_l + k_out·k_in` of φ, row-major in
//! (r, c) with r < k_out, c < k_in):
//!
//! 1. **Shares.** k is divided equally among the layers. A layer with no more parameters than
//!    its share is kept whole (k_out = out, k_in = in: exact), and what it leaves is shared
//!    equally among the others, until no share changes.
//! 2. **Factors.** A share k_l is written k_out · k_in with k_out ≤ out and k_in ≤ in,
//!    choosing among the divisor pairs the one that compresses both sides most evenly
//!    (k_out/out closest to k_in/in on a log scale). If no divisor pair fits, k_l is lowered by
//!    one until one does.
//!
//! So the output dimension is at most k, and equal to k whenever every share has a fitting
//! divisor pair — always the case for powers of two that are not larger than the layers. The
//! MNIST MLP (784-128-10, bias columns included: 128 × 785 and 10 × 129) at k = 2048 gets
//! 16 × 64 for the first layer and 8 × 128 for the second. [`FactoredProjector::plan`] tells.
//!
//! # Determinism
//! Each feature is a fixed sum in a fixed order for its example alone (factor products
//! accumulated over the layer's inputs in index order, then over positions in order), so
//! features are bit-identical for any batch size and thread count.

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::dense::{Arith, Portable};
use super::philox::splitmix64;
use super::{DenseProjector, Distribution};
use crate::error::{Error, Result, shape_err};
use crate::model::{LayerFactors, LinearLayer};

/// Examples per parallel task (any value gives the same features).
const EXAMPLES_PER_TASK: usize = 8;

/// How one layer is projected: its shape, the factor dimensions and where its block of
/// features starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerPlan {
    /// The layer.
    pub layer: LinearLayer,
    /// Dimension of the projected output gradient (≤ `layer.out_dim`).
    pub k_out: usize,
    /// Dimension of the projected input (≤ `layer.in_dim`).
    pub k_in: usize,
    /// First feature column of the layer's block (its width is `k_out · k_in`).
    pub offset: usize,
}

impl LayerPlan {
    /// Features of this layer, `k_out · k_in`.
    pub fn width(&self) -> usize {
        self.k_out * self.k_in
    }
}

/// The factored projector for a list of linear layers. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct FactoredProjector {
    plan: Vec<LayerPlan>,
    k: usize,
    seed: u64,
}

impl FactoredProjector {
    /// Plans the projection of `layers` onto (at most) `k` features, keyed by `seed`.
    pub fn new(layers: &[LinearLayer], k: usize, seed: u64) -> Result<Self> {
        if layers.is_empty() {
            return Err(Error::InvalidConfig(
                "factored projection: the model has no linear layers".into(),
            ));
        }
        if let Some(l) = layers.iter().position(|l| l.out_dim == 0 || l.in_dim == 0) {
            return Err(Error::InvalidConfig(format!(
                "factored projection: layer {l} has a zero dimension ({:?})",
                layers[l]
            )));
        }
        if k == 0 {
            return Err(Error::InvalidConfig(
                "projection dimension k must be positive".into(),
            ));
        }
        let shares = shares(layers, k);
        let mut plan = Vec::with_capacity(layers.len());
        let mut offset = 0;
        for (layer, share) in layers.iter().zip(shares) {
            let (k_out, k_in) = factor_pair(share, layer.out_dim, layer.in_dim);
            plan.push(LayerPlan {
                layer: *layer,
                k_out,
                k_in,
                offset,
            });
            offset += k_out * k_in;
        }
        Ok(Self {
            plan,
            k: offset,
            seed,
        })
    }

    /// The per-layer plan.
    pub fn plan(&self) -> &[LayerPlan] {
        &self.plan
    }

    /// Output dimension: Σ k_out · k_in (≤ the requested k).
    pub fn output_dim(&self) -> usize {
        self.k
    }

    /// Parameters covered: Σ out · in.
    pub fn input_dim(&self) -> usize {
        self.plan.iter().map(|p| p.layer.num_params()).sum()
    }

    fn factor(
        &self,
        layer: usize,
        side: u64,
        dim: usize,
        kf: usize,
        ckpt: u64,
    ) -> Option<Array2<f32>> {
        (kf < dim).then(|| {
            let seed =
                splitmix64(self.seed ^ splitmix64(((layer as u64) << 1 | side) ^ 0x4641_4354));
            DenseProjector::new(dim, kf, Distribution::Rademacher, seed)
                .expect("dimensions checked")
                .matrix(ckpt)
        })
    }

    /// The factor matrices of `checkpoint`, materialised (they are small: Σ out·k_out + in·k_in
    /// floats), ready to project batches.
    pub fn at_checkpoint(&self, checkpoint: u64) -> FactoredMatrices {
        let mats = self
            .plan
            .iter()
            .enumerate()
            .map(|(l, p)| {
                (
                    self.factor(l, 0, p.layer.out_dim, p.k_out, checkpoint),
                    self.factor(l, 1, p.layer.in_dim, p.k_in, checkpoint),
                )
            })
            .collect();
        FactoredMatrices {
            plan: self.plan.clone(),
            k: self.k,
            mats,
        }
    }
}

/// Equal shares of k, layers with fewer parameters than their share kept whole.
fn shares(layers: &[LinearLayer], k: usize) -> Vec<usize> {
    let mut share = vec![0usize; layers.len()];
    let mut open: Vec<usize> = (0..layers.len()).collect();
    let mut budget = k;
    while !open.is_empty() {
        let n = open.len();
        let want = |j: usize| budget / n + usize::from(j < budget % n);
        let whole: Vec<usize> = open
            .iter()
            .enumerate()
            .filter(|&(j, &l)| layers[l].num_params() <= want(j))
            .map(|(_, &l)| l)
            .collect();
        if whole.is_empty() {
            for (j, &l) in open.iter().enumerate() {
                share[l] = want(j);
            }
            break;
        }
        for &l in &whole {
            share[l] = layers[l].num_params();
            budget -= share[l];
        }
        open.retain(|l| !whole.contains(l));
    }
    share
}

/// k_out · k_in ≤ share with k_out ≤ out, k_in ≤ inp, the largest product ≤ share that has a
/// fitting divisor pair, most even compression among those.
fn factor_pair(share: usize, out: usize, inp: usize) -> (usize, usize) {
    let mut s = share.min(out * inp);
    while s > 0 {
        let best = (1..=out.min(s))
            .filter(|d| s % d == 0 && s / d <= inp)
            .map(|d| {
                let skew =
                    ((d as f64 / out as f64).ln() - ((s / d) as f64 / inp as f64).ln()).abs();
                (d, skew)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((d, _)) = best {
            return (d, s / d);
        }
        s -= 1;
    }
    (0, 0)
}

/// (P_out, P_in) of one layer; `None` is an identity factor.
type FactorPair = (Option<Array2<f32>>, Option<Array2<f32>>);

/// A [`FactoredProjector`]'s matrices for one checkpoint. `None` marks an identity factor.
#[derive(Debug, Clone)]
pub struct FactoredMatrices {
    plan: Vec<LayerPlan>,
    k: usize,
    mats: Vec<FactorPair>,
}

impl FactoredMatrices {
    /// Output dimension.
    pub fn output_dim(&self) -> usize {
        self.k
    }

    /// The factor matrices (P_out: out × k_out, P_in: in × k_in) of layer `l`; `None` stands
    /// for an identity factor. Panics if `l` is out of range.
    pub fn factors(&self, l: usize) -> (Option<ArrayView2<'_, f32>>, Option<ArrayView2<'_, f32>>) {
        let (o, i) = &self.mats[l];
        (o.as_ref().map(|m| m.view()), i.as_ref().map(|m| m.view()))
    }

    /// The per-layer plan.
    pub fn plan(&self) -> &[LayerPlan] {
        &self.plan
    }

    /// Checks that `factors` match the plan for a batch of `b` examples.
    pub fn check(&self, factors: &[LayerFactors], b: usize) -> Result<()> {
        if factors.len() != self.plan.len() {
            return Err(shape_err(
                "layer factors (layers)",
                self.plan.len(),
                factors.len(),
            ));
        }
        for (p, f) in self.plan.iter().zip(factors) {
            if f.positions == 0 {
                return Err(Error::InvalidConfig(
                    "layer factors: positions per example must be ≥ 1".into(),
                ));
            }
            let rows = b * f.positions;
            if f.acts.dim() != (rows, p.layer.in_dim) {
                return Err(shape_err(
                    "layer activations",
                    format!("{rows} × {}", p.layer.in_dim),
                    format!("{} × {}", f.acts.nrows(), f.acts.ncols()),
                ));
            }
            if f.deltas.dim() != (rows, p.layer.out_dim) {
                return Err(shape_err(
                    "layer output gradients",
                    format!("{rows} × {}", p.layer.out_dim),
                    format!("{} × {}", f.deltas.nrows(), f.deltas.ncols()),
                ));
            }
        }
        Ok(())
    }

    /// Writes the features of a batch (`out`: B × k) from its layer factors.
    pub fn project(&self, factors: &[LayerFactors], mut out: ArrayViewMut2<'_, f32>) -> Result<()> {
        let b = out.nrows();
        if out.ncols() != self.k {
            return Err(shape_err("projection output columns", self.k, out.ncols()));
        }
        self.check(factors, b)?;
        out.axis_chunks_iter_mut(Axis(0), EXAMPLES_PER_TASK)
            .into_par_iter()
            .enumerate()
            .for_each(|(ci, chunk)| self.task(factors, ci * EXAMPLES_PER_TASK, chunk));
        Ok(())
    }

    fn task(&self, factors: &[LayerFactors], first: usize, out: ArrayViewMut2<'_, f32>) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features `task_avx2` is compiled for.
            return unsafe { self.task_avx2(factors, first, out) };
        }
        self.task_impl::<Portable>(factors, first, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn task_avx2(&self, factors: &[LayerFactors], first: usize, out: ArrayViewMut2<'_, f32>) {
        self.task_impl::<super::dense::Fused>(factors, first, out)
    }

    #[inline(always)]
    fn task_impl<A: Arith>(
        &self,
        factors: &[LayerFactors],
        first: usize,
        mut out: ArrayViewMut2<'_, f32>,
    ) {
        let nb = out.nrows();
        out.fill(0.0);
        for ((p, (m_out, m_in)), f) in self.plan.iter().zip(&self.mats).zip(factors) {
            let t = f.positions;
            let rows = first * t..(first + nb) * t;
            let u = project_rows::<A>(
                f.deltas.slice(ndarray::s![rows.clone(), ..]),
                m_out.as_ref(),
            );
            let v = project_rows::<A>(f.acts.slice(ndarray::s![rows, ..]), m_in.as_ref());
            let (ko, ki) = (p.k_out, p.k_in);
            for (e, mut row) in out.rows_mut().into_iter().enumerate() {
                let dst =
                    &mut row.as_slice_mut().expect("standard layout")[p.offset..p.offset + ko * ki];
                for tt in 0..t {
                    let ur = &u[(e * t + tt) * ko..][..ko];
                    let vr = &v[(e * t + tt) * ki..][..ki];
                    for (r, &ux) in ur.iter().enumerate() {
                        for (d, &vx) in dst[r * ki..(r + 1) * ki].iter_mut().zip(vr) {
                            *d = A::madd(ux, vx, *d);
                        }
                    }
                }
            }
        }
    }
}

/// X · P (rows × kf, row-major) for X (rows × d) and P (d × kf); P = `None` is the identity.
/// Each output is accumulated over i = 0..d in order; zero inputs are skipped.
#[inline(always)]
fn project_rows<A: Arith>(x: ArrayView2<'_, f32>, p: Option<&Array2<f32>>) -> Vec<f32> {
    let Some(p) = p else {
        return x.iter().copied().collect();
    };
    let kf = p.ncols();
    let ps = p.as_slice().expect("standard layout");
    let mut out = vec![0.0f32; x.nrows() * kf];
    for (xr, o) in x.rows().into_iter().zip(out.chunks_exact_mut(kf)) {
        for (i, &xi) in xr.iter().enumerate() {
            if xi != 0.0 {
                for (oc, &pc) in o.iter_mut().zip(&ps[i * kf..(i + 1) * kf]) {
                    *oc = A::madd(xi, pc, *oc);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ll(out_dim: usize, in_dim: usize) -> LinearLayer {
        LinearLayer { out_dim, in_dim }
    }

    #[test]
    fn split_follows_the_documented_rule() {
        let p = FactoredProjector::new(&[ll(128, 785), ll(10, 129)], 2048, 0).unwrap();
        let dims: Vec<_> = p
            .plan()
            .iter()
            .map(|l| (l.k_out, l.k_in, l.offset))
            .collect();
        assert_eq!(dims, vec![(16, 64, 0), (8, 128, 1024)]);
        assert_eq!(p.output_dim(), 2048);
        // a small layer is kept whole and the rest goes to the other
        let p = FactoredProjector::new(&[ll(64, 65), ll(2, 5)], 512, 0).unwrap();
        let dims: Vec<_> = p.plan().iter().map(|l| (l.k_out, l.k_in)).collect();
        // 502 = 2 · 251 has no fitting pair, nor 501 = 3 · 167: 500 = 20 · 25 is the most even
        assert_eq!(dims, vec![(20, 25), (2, 5)]);
        assert_eq!(p.output_dim(), 510);
        // k larger than p: every layer exact
        let p = FactoredProjector::new(&[ll(3, 4)], 100, 0).unwrap();
        assert_eq!((p.plan()[0].k_out, p.plan()[0].k_in), (3, 4));
        // a prime share falls back to the largest fitting product
        assert_eq!(factor_pair(509, 10, 20), (10, 20));
        assert_eq!(factor_pair(101, 10, 20), (5, 20));
    }
}
