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
//! [`DenseProjector`] scaled 1/√k_out and 1/√k_in), so E\[φ_aᵀφ_b\] is
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
//! 1. **Shares.** k is divided among the layers in proportion to √p_l (p_l = out·in). A layer
//!    with no more parameters than its share is kept whole (k_out = out, k_in = in: exact), and
//!    the rest is shared again among the others.
//! 2. **Factors.** A share k_l becomes k_out · k_in ≤ k_l with k_out = round(k_l^⅓) (the
//!    whole output side instead when out ≤ 2·round(k_l^⅓)) and k_in = min(in, ⌊k_l/k_out⌋),
//!    so the input side gets about k_out² dimensions. What a layer leaves of its share
//!    (k_l − k_out·k_in) is added to the next layer's share.
//!
//! Both rules were chosen by the LDS of the MNIST MLP at k = 2048 (docs/VALIDATION.md): with
//! equal shares, first-layer factors 64 × 16, 32 × 32, 16 × 64, 10 × 102, 8 × 128, 4 × 256,
//! 2 × 512 gave LDS 0.471, 0.497, 0.511, 0.515, 0.516, 0.508, 0.489 (the output gradients of a
//! hidden layer live near a subspace of the network's output dimension, the inputs do not), and
//! shares ∝ √p_l lifted it to 0.526 (dense projection: 0.535).
//!
//! So the output dimension is at most k, usually a little below it. The MNIST MLP
//! (784-128-10, bias columns included: 128 × 785 and 10 × 129) at k = 2048 gets 12 × 153 for
//! the first layer and 10 × 21 (the 10 outputs kept whole) for the second: 2046 features;
//! multinomial logistic regression (10 × 785) gets 10 × 204. [`FactoredProjector::plan`]
//! tells.
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
use crate::error::{Error, Result, invalid, shape_err};
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
            return Err(Error::Empty("linear layers of the factored model"));
        }
        if let Some(l) = layers.iter().position(|l| l.out_dim == 0 || l.in_dim == 0) {
            return Err(invalid(
                "factored layer shape",
                format!("layer {l}: {:?}", layers[l]),
                "non-zero input and output dimensions",
            ));
        }
        if k == 0 {
            return Err(invalid("projection dimension k", 0, "k ≥ 1"));
        }
        let shares = shares(layers, k);
        let mut plan = Vec::with_capacity(layers.len());
        let mut offset = 0;
        let mut carry = 0;
        for (layer, share) in layers.iter().zip(shares) {
            let share = share + carry;
            let (k_out, k_in) = factor_pair(share, layer.out_dim, layer.in_dim);
            carry = share - k_out * k_in;
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

/// Exponent of the layer weights in the split of k: share_l ∝ p_l^SHARE_EXPONENT.
const SHARE_EXPONENT: f64 = 0.5;

/// Shares of k proportional to p_l^[`SHARE_EXPONENT`] (rounded down, the remainder to the
/// first layers), layers with no more parameters than their share kept whole.
fn shares(layers: &[LinearLayer], k: usize) -> Vec<usize> {
    let mut share = vec![0usize; layers.len()];
    let mut open: Vec<usize> = (0..layers.len()).collect();
    let mut budget = k;
    while !open.is_empty() {
        let w: Vec<f64> = open
            .iter()
            .map(|&l| (layers[l].num_params() as f64).powf(SHARE_EXPONENT))
            .collect();
        let total: f64 = w.iter().sum();
        let mut want: Vec<usize> = w
            .iter()
            .map(|wl| (budget as f64 * wl / total).floor() as usize)
            .collect();
        let mut rest = budget - want.iter().sum::<usize>();
        for v in want.iter_mut() {
            if rest == 0 {
                break;
            }
            *v += 1;
            rest -= 1;
        }
        let whole: Vec<usize> = open
            .iter()
            .zip(&want)
            .filter(|&(&l, &w)| layers[l].num_params() <= w)
            .map(|(&l, _)| l)
            .collect();
        if whole.is_empty() {
            for (&l, &w) in open.iter().zip(&want) {
                share[l] = w;
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

/// (k_out, k_in) for a share: k_out = round(share^⅓), or the whole output side if
/// out ≤ 2·round(share^⅓); k_in = min(in, ⌊share / k_out⌋) (so k_in ≈ k_out²); if the input
/// side is then whole, k_out grows to min(out, ⌊share / in⌋).
fn factor_pair(share: usize, out: usize, inp: usize) -> (usize, usize) {
    if share == 0 {
        return (0, 0);
    }
    let root = ((share as f64).cbrt().round() as usize).max(1);
    let mut ko = if out <= 2 * root { out } else { root };
    ko = ko.min(share);
    let ki = (share / ko).min(inp);
    if ki == inp {
        ko = ko.max((share / inp).min(out));
    }
    (ko, ki)
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
                return Err(invalid("layer factor positions per example", 0, "≥ 1"));
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
        let dims = |layers: &[LinearLayer], k| {
            let p = FactoredProjector::new(layers, k, 0).unwrap();
            let d: Vec<_> = p
                .plan()
                .iter()
                .map(|l| (l.k_out, l.k_in, l.offset))
                .collect();
            (d, p.output_dim())
        };
        // the MNIST MLP: shares 1840 and 208 (∝ √p), the 10 outputs kept whole; the first
        // layer leaves 4, so the second gets 212 → 10 × 21
        assert_eq!(
            dims(&[ll(128, 785), ll(10, 129)], 2048),
            (vec![(12, 153, 0), (10, 21, 1836)], 2046)
        );
        // logistic regression
        assert_eq!(dims(&[ll(10, 785)], 2048), (vec![(10, 204, 0)], 2040));
        // a small layer is kept whole and the rest goes to the other
        assert_eq!(
            dims(&[ll(64, 65), ll(2, 5)], 512),
            (vec![(8, 62, 0), (2, 5, 496)], 506)
        );
        // k larger than p: every layer exact
        assert_eq!(dims(&[ll(3, 4)], 100), (vec![(3, 4, 0)], 12));
        // the input side whole: the output side takes what is left
        assert_eq!(factor_pair(400, 50, 20), (20, 20));
        assert_eq!(factor_pair(1000, 100, 1000), (10, 100));
    }
}
