//! Factored (per-layer, Kronecker) projection: features from layer inputs and output
//! gradients, without forming the p-dimensional gradient.
//!
//! For a linear layer y = W a (W: out × in) applied at positions t = 1..T, the per-example
//! gradient is ∇_W f = Σ_t δ_t a_tᵀ. With two random matrices P_out (out × k_out) and P_in
//! (in × k_in), the layer's intermediate is
//!
//! ```text
//! X = Σ_t (P_outᵀ δ_t) ⊗ (P_inᵀ a_t) = P_outᵀ ∇_W f P_in        (k_out × k_in)
//! ```
//!
//! a random projection of the layer's gradient whose matrix is a Kronecker product. Its
//! entries are ±1/√(k_out k_in) (Rademacher factors from [`DenseProjector`] scaled 1/√k_out
//! and 1/√k_in), so E\[X_aᵀX_b\] is the gradients' inner product; a factor whose k equals its
//! dimension is the identity (exact). Two plans turn X into the layer's features:
//!
//! - **Sketched** ([`FactoredProjector::sketched`], [`ProjectorKind::Factored`](super::ProjectorKind::Factored), the default
//!   [`ProjectorKind::FACTORED`](super::ProjectorKind::FACTORED)): X is made large, about `expansion` × the layer's share of
//!   k, and a sparse sign-and-place sketch maps it onto the share: column c of X (k_out
//!   values) is added, with random signs where a factor is the identity, at a random place
//!   of the layer's block, wrapping around (see `Sketch`). Every entry of X lands on one
//!   feature, two entries of X share a feature with probability ≈ 1/width and independent
//!   signs, so E\[φ_aᵀφ_b\] = E\[X_aᵀX_b\] = g_aᵀg_b (tests/projection.rs checks it
//!   statistically, with positions and identity factors). The sketch is linear, so summing
//!   over positions before or after it is the same map; the code adds each position's
//!   u_t ⊗ v_t in order. The loss of the small plan came from the variance of its small
//!   factors (12 × 153 for the MNIST MLP's first layer); here that layer's input side is
//!   exact and its output side has 75 of 128 dimensions.
//! - **Small** ([`FactoredProjector::new`], [`ProjectorKind::FactoredSmall`](super::ProjectorKind::FactoredSmall), the plan of
//!   trak 0.1): X itself is the layer's features, k_out · k_in ≤ its share.
//!
//! The cost per example is O(Σ_layers T·(out·k_out + in·k_in + nnz(a)·k_out)) instead of
//! O(p·k): no p-dimensional gradient, and a zero input (ReLU, padding, an MNIST background
//! pixel) adds nothing. With the input side exact (P_in = I), the sketched plan skips the
//! input projection, which is the small plan's largest cost.
//!
//! # How k is split
//! Both plans give each layer a block of consecutive feature columns, in layer order:
//!
//! 1. **Shares.** k is divided among the layers in proportion to √p_l (p_l = out·in). A layer
//!    with no more parameters than its share is kept whole (k_out = out, k_in = in: exact, no
//!    sketch), and the rest is shared again among the others.
//! 2. **Factors.** For a size m, `factor_pair` gives k_out · k_in ≤ m with k_out =
//!    round(m^⅓) (the whole output side instead when out ≤ 2·round(m^⅓)) and k_in = min(in,
//!    ⌊m/k_out⌋), so the input side gets about k_out² dimensions; if the input side is then
//!    whole, k_out grows to min(out, ⌊m/in⌋). The small plan uses m = the share (what a
//!    layer leaves goes to the next layer's share, so its output dimension is at most k);
//!    the sketched plan uses m = `expansion` × the share and a block width of exactly the
//!    share (its output dimension is k).
//!
//! The factor rule and the shares were chosen by the LDS of the MNIST MLP at k = 2048
//! (docs/VALIDATION.md): with equal shares, first-layer factors 64 × 16, 32 × 32, 16 × 64,
//! 10 × 102, 8 × 128, 4 × 256, 2 × 512 gave LDS 0.471, 0.497, 0.511, 0.515, 0.516, 0.508,
//! 0.489 (the output gradients of a hidden layer live near a subspace of the network's output
//! dimension, the inputs do not), and shares ∝ √p_l lifted it to 0.526 (dense projection:
//! 0.535). The expansion was chosen the same way ([`DEFAULT_EXPANSION`] = 32; the table is in
//! docs/VALIDATION.md): 4 and 8 recover part of the gap to dense, 16–64 nearly all of it,
//! and 32 is the fastest of those on the MNIST MLP because its first layer's input side is
//! whole.
//!
//! The MNIST MLP (784-128-10, bias columns included: 128 × 785 and 10 × 129) at k = 2048:
//! sketched, 75 × 785 onto 1840 features and 10 × 129 (its exact gradient) onto 208; small,
//! 12 × 153 and 10 × 21 (2046 features). Multinomial logistic regression (10 × 785):
//! sketched, its exact gradient onto 2048; small, 10 × 204. [`FactoredProjector::plan`]
//! tells.
//!
//! # Determinism
//! Each feature is a fixed sum in a fixed order for its example alone (factor products
//! accumulated over the layer's inputs in index order, then over positions in order; the
//! sketch's places and signs are a pure function of the seed, the checkpoint and the layer),
//! so features are bit-identical for any batch size and thread count. A position whose
//! projected output gradient or input is all zero (padding: its δ is 0) is skipped, so
//! padding an example with such positions changes neither its features nor their bits.
//! The projections P_outᵀδ and P_inᵀa run as faer GEMMs of a fixed shape (blocks of 64
//! positions, zero-padded), so a position's projection depends on it alone; a block of
//! padding costs nothing.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::dense::{Arith, Portable};
use super::philox::splitmix64;
use super::{DenseProjector, Distribution};
use crate::error::{Error, Result, invalid, shape_err};
use crate::model::{LayerFactors, LinearLayer};

/// The default expansion of [`ProjectorKind::FACTORED`](super::ProjectorKind::FACTORED).
pub const DEFAULT_EXPANSION: usize = 32;

/// [`Error::InvalidParameter`] naming the expansion unless it
/// is ≥ 2: an intermediate no larger than the layer's share has nothing to sketch.
pub fn check_expansion(expansion: usize) -> Result<()> {
    if expansion < 2 {
        return Err(invalid(
            "factored expansion",
            expansion,
            "≥ 2 (ProjectorKind::FactoredSmall has no sketch)",
        ));
    }
    Ok(())
}

/// How one layer is projected: its shape, the factor dimensions, the width of its block of
/// features and where the block starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerPlan {
    /// The layer.
    pub layer: LinearLayer,
    /// Dimension of the projected output gradient (≤ `layer.out_dim`).
    pub k_out: usize,
    /// Dimension of the projected input (≤ `layer.in_dim`).
    pub k_in: usize,
    /// Features of this layer: `k_out · k_in` without a sketch, the layer's share of k with
    /// one (then `k_out · k_in` > `width`).
    pub width: usize,
    /// First feature column of the layer's block.
    pub offset: usize,
}

impl LayerPlan {
    /// Whether the `k_out × k_in` intermediate is sketched down to `width` columns.
    pub fn sketched(&self) -> bool {
        self.k_out * self.k_in > self.width
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
    /// Plans the sketched projection of `layers` onto `k` features, keyed by `seed`: per
    /// layer an intermediate of about `expansion` × its share of k, sketched down to the
    /// share ([`ProjectorKind::Factored`](super::ProjectorKind::Factored), `expansion` ≥ 2).
    pub fn sketched(layers: &[LinearLayer], k: usize, expansion: usize, seed: u64) -> Result<Self> {
        check_expansion(expansion)?;
        check_layers(layers, k)?;
        let shares = shares(layers, k);
        check_shares(layers, k, &shares)?;
        let mut plan = Vec::with_capacity(layers.len());
        let mut offset = 0;
        for (layer, share) in layers.iter().zip(shares) {
            let whole = layer.num_params() <= share;
            let inter = share.saturating_mul(expansion);
            let (k_out, k_in) = match whole {
                true => (layer.out_dim, layer.in_dim),
                false => factor_pair(inter, layer.out_dim, layer.in_dim),
            };
            let width = share.min(k_out * k_in);
            plan.push(LayerPlan {
                layer: *layer,
                k_out,
                k_in,
                width,
                offset,
            });
            offset += width;
        }
        Ok(Self {
            plan,
            k: offset,
            seed,
        })
    }

    /// Plans the small-factor projection of `layers` onto (at most) `k` features, keyed by
    /// `seed` ([`ProjectorKind::FactoredSmall`](super::ProjectorKind::FactoredSmall)).
    pub fn new(layers: &[LinearLayer], k: usize, seed: u64) -> Result<Self> {
        check_layers(layers, k)?;
        let shares = shares(layers, k);
        let mut plan = Vec::with_capacity(layers.len());
        let mut offset = 0;
        let mut carry = 0;
        for (l, (layer, share)) in layers.iter().zip(shares).enumerate() {
            let share = share + carry;
            if share == 0 {
                return Err(no_feature(layers, k, l));
            }
            let (k_out, k_in) = factor_pair(share, layer.out_dim, layer.in_dim);
            carry = share - k_out * k_in;
            plan.push(LayerPlan {
                layer: *layer,
                k_out,
                k_in,
                width: k_out * k_in,
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

    /// Output dimension: Σ widths (≤ the requested k).
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

    /// The factor matrices and sketches of `checkpoint`, materialised (they are small:
    /// Σ out·k_out + in·k_in floats and k_out + k_in sketch entries), ready to project batches.
    pub fn at_checkpoint(&self, checkpoint: u64) -> FactoredMatrices {
        // Each factor depends on (seed, layer, side, checkpoint) alone: generated in
        // parallel, the same bits in the same order.
        let mats = self
            .plan
            .par_iter()
            .enumerate()
            .map(|(l, p)| {
                (
                    self.factor(l, 0, p.layer.out_dim, p.k_out, checkpoint),
                    self.factor(l, 1, p.layer.in_dim, p.k_in, checkpoint),
                )
            })
            .collect::<Vec<FactorPair>>();
        let sketches = self
            .plan
            .iter()
            .zip(&mats)
            .enumerate()
            .map(|(l, (p, (o, i)))| {
                let key = splitmix64(self.seed ^ splitmix64((l as u64) ^ 0x534B_4554));
                Sketch::new(p, key ^ splitmix64(checkpoint), (o.is_none(), i.is_none()))
            })
            .collect();
        FactoredMatrices {
            plan: self.plan.clone(),
            k: self.k,
            mats,
            sketches,
        }
    }
}

/// The layers must be non-empty with non-zero dimensions, and k ≥ 1.
fn check_layers(layers: &[LinearLayer], k: usize) -> Result<()> {
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
    if k < layers.len() {
        let expected = format!(
            "at least one feature per attributed layer: k ≥ {} (the number of layers), or \
             fewer layers",
            layers.len()
        );
        return Err(invalid("projection dimension k", k, expected));
    }
    Ok(())
}

/// [`Error::InvalidParameter`] when the split of k left a layer without a feature (k is at
/// least the layer count, but the layers differ so much in size that a small one's share
/// rounds to 0).
fn check_shares(layers: &[LinearLayer], k: usize, shares: &[usize]) -> Result<()> {
    match shares.iter().position(|&s| s == 0) {
        None => Ok(()),
        Some(l) => Err(no_feature(layers, k, l)),
    }
}

/// The error of a split of k that gives layer `l` no feature.
fn no_feature(layers: &[LinearLayer], k: usize, l: usize) -> Error {
    let expected = format!(
        "a k whose split over the {} layers gives each at least one feature (layer {l}, {} × \
         {}, gets none: raise k, or attribute fewer layers)",
        layers.len(),
        layers[l].out_dim,
        layers[l].in_dim
    );
    invalid("projection dimension k", k, expected)
}

/// Where the intermediate X = Σ_t u_t ⊗ v_t (k_out × k_in) lands in a layer's block of
/// features. Without a sketch, `starts[r] = r · k_in`: row r of X fills columns
/// `starts[r] .. starts[r] + k_in` (the Kronecker layout). With one (`by_column`), column c
/// of X (k_out values) is added at columns `starts[c], starts[c] + 1, …` wrapping at the
/// block's width, the starts uniform in `0..width`; a factor that is the identity gets random
/// signs (a random factor's columns already have independent signs). Two entries of X then
/// share a feature with probability ≈ 1/width unless they are in the same column (never),
/// with independent signs, so E[φ_aᵀφ_b] is the intermediates' inner product, as for a
/// count sketch. Columns go whole so that a zero input (ReLU, padding, MNIST background)
/// costs nothing.
#[derive(Debug, Clone)]
struct Sketch {
    by_column: bool,
    starts: Vec<usize>,
    out_signs: Option<Vec<f32>>,
    in_signs: Option<Vec<f32>>,
}

impl Sketch {
    /// The sketch of layer `p` under `key`; `identity` says which factors are the identity.
    fn new(p: &LayerPlan, key: u64, identity: (bool, bool)) -> Self {
        if !p.sketched() {
            return Self {
                by_column: false,
                starts: (0..p.k_out).map(|r| r * p.k_in).collect(),
                out_signs: None,
                in_signs: None,
            };
        }
        let draw =
            |stream: u64, i: usize| splitmix64(key ^ splitmix64(stream) ^ splitmix64(i as u64));
        let width = p.width as u128;
        let starts = (0..p.k_in)
            .map(|c| ((draw(1, c) as u128 * width) >> 64) as usize)
            .collect();
        let signs = |stream, n: usize| {
            (0..n)
                .map(|i| {
                    if draw(stream, i) >> 63 == 0 {
                        1.0
                    } else {
                        -1.0
                    }
                })
                .collect()
        };
        Self {
            by_column: true,
            starts,
            out_signs: identity.0.then(|| signs(2, p.k_out)),
            in_signs: identity.1.then(|| signs(3, p.k_in)),
        }
    }

    /// Adds u ⊗ v (one position of one example) into the layer's block `dst`.
    #[inline(always)]
    fn add<A: Arith>(&self, dst: &mut [f32], u: &[f32], v: &[f32]) {
        if self.by_column {
            for (&vx, &start) in v.iter().zip(&self.starts) {
                if vx != 0.0 {
                    add_wrapped::<A>(dst, start, vx, u);
                }
            }
        } else {
            for (&ux, &start) in u.iter().zip(&self.starts) {
                add_wrapped::<A>(dst, start, ux, v);
            }
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
    sketches: Vec<Sketch>,
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

    /// Writes the features of a batch (`out`: B × k) from its layer factors: one parallel
    /// task per layer, each writing its own block of columns (so a batch of one example
    /// uses every thread, and the features do not depend on the thread count).
    pub fn project(&self, factors: &[LayerFactors], mut out: ArrayViewMut2<'_, f32>) -> Result<()> {
        let b = out.nrows();
        if out.ncols() != self.k {
            return Err(shape_err("projection output columns", self.k, out.ncols()));
        }
        self.check(factors, b)?;
        out.fill(0.0);
        let mut blocks = Vec::with_capacity(self.plan.len());
        let (mut rest, mut at) = (out.view_mut(), 0);
        for p in &self.plan {
            let (_, tail) = rest.split_at(Axis(1), p.offset - at);
            let (block, tail) = tail.split_at(Axis(1), p.width);
            blocks.push(block);
            (rest, at) = (tail, p.offset + p.width);
        }
        blocks
            .into_par_iter()
            .enumerate()
            .for_each(|(l, block)| self.layer(l, &factors[l], block));
        Ok(())
    }

    /// Layer `l`'s block of features (`block`: B × its width) from its factors.
    fn layer(&self, l: usize, f: &LayerFactors, block: ArrayViewMut2<'_, f32>) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features `layer_avx2` is compiled for.
            return unsafe { self.layer_avx2(l, f, block) };
        }
        self.layer_impl::<Portable>(l, f, block)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn layer_avx2(&self, l: usize, f: &LayerFactors, block: ArrayViewMut2<'_, f32>) {
        self.layer_impl::<super::dense::Fused>(l, f, block)
    }

    #[inline(always)]
    fn layer_impl<A: Arith>(&self, l: usize, f: &LayerFactors, mut block: ArrayViewMut2<'_, f32>) {
        let (p, (m_out, m_in), sk) = (&self.plan[l], &self.mats[l], &self.sketches[l]);
        let t = f.positions;
        let mut u = project_rows(f.deltas.view(), m_out.as_ref());
        let mut v = project_rows(f.acts.view(), m_in.as_ref());
        apply_signs(&mut u, sk.out_signs.as_deref());
        apply_signs(&mut v, sk.in_signs.as_deref());
        let (ko, ki) = (p.k_out, p.k_in);
        for (e, mut row) in block.rows_mut().into_iter().enumerate() {
            let dst = row.as_slice_mut().expect("a row of a row-major block");
            for tt in 0..t {
                let ur = &u[(e * t + tt) * ko..][..ko];
                let vr = &v[(e * t + tt) * ki..][..ki];
                // A position with no output gradient (padding) or no input adds nothing.
                if ur.iter().all(|&x| x == 0.0) || vr.iter().all(|&x| x == 0.0) {
                    continue;
                }
                sk.add::<A>(dst, ur, vr);
            }
        }
    }
}

/// dst[(start + i) mod width] += x · v[i] for i in order (a row or column of the intermediate
/// into its place in the layer's block).
#[inline(always)]
fn add_wrapped<A: Arith>(dst: &mut [f32], start: usize, x: f32, v: &[f32]) {
    let mut pos = start;
    let mut rest = v;
    while !rest.is_empty() {
        let len = (dst.len() - pos).min(rest.len());
        for (d, &vx) in dst[pos..pos + len].iter_mut().zip(&rest[..len]) {
            *d = A::madd(x, vx, *d);
        }
        rest = &rest[len..];
        pos = 0;
    }
}

/// Multiplies each row's columns by `signs` (none: unchanged).
#[inline(always)]
fn apply_signs(x: &mut [f32], signs: Option<&[f32]>) {
    let Some(signs) = signs else { return };
    for row in x.chunks_exact_mut(signs.len()) {
        for (v, s) in row.iter_mut().zip(signs) {
            *v *= s;
        }
    }
}

/// X · P (rows × kf, row-major) for X (rows × d) and P (d × kf); P = `None` is the identity.
/// faer's GEMM on blocks of [`ROW_BLOCK`] rows, the last one padded with zero rows, so
/// every product has the same shape and a row's result depends on that row alone (not on
/// the batch it came in, nor on the thread count); a block of zero rows (padding) is
/// skipped.
fn project_rows(x: ArrayView2<'_, f32>, p: Option<&Array2<f32>>) -> Vec<f32> {
    let Some(p) = p else {
        return x.iter().copied().collect();
    };
    let (d, kf) = (x.ncols(), p.ncols());
    let ps = p.as_slice().expect("standard layout");
    let pm = MatRef::from_row_major_slice(ps, d, kf);
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let mut out = vec![0.0f32; x.nrows() * kf];
    let mut xpad = vec![0.0f32; ROW_BLOCK * d];
    let mut opad = vec![0.0f32; ROW_BLOCK * kf];
    for (xb, ob) in xs.chunks(ROW_BLOCK * d).zip(out.chunks_mut(ROW_BLOCK * kf)) {
        if xb.iter().all(|&v| v == 0.0) {
            continue;
        }
        xpad[..xb.len()].copy_from_slice(xb);
        xpad[xb.len()..].fill(0.0);
        let xm = MatRef::from_row_major_slice(&xpad, ROW_BLOCK, d);
        let om = MatMut::from_row_major_slice_mut(&mut opad, ROW_BLOCK, kf);
        matmul(om, Accum::Replace, xm, pm, 1.0, Par::Seq);
        ob.copy_from_slice(&opad[..ob.len()]);
    }
    out
}

/// Rows per GEMM of [`project_rows`].
const ROW_BLOCK: usize = 64;

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
        // the sketched plan: intermediates of about 32 × the share, blocks of the share
        let sk = |layers: &[LinearLayer], k| {
            let p = FactoredProjector::sketched(layers, k, DEFAULT_EXPANSION, 0).unwrap();
            let d: Vec<_> = p
                .plan()
                .iter()
                .map(|l| (l.k_out, l.k_in, l.width, l.offset))
                .collect();
            (d, p.output_dim())
        };
        assert_eq!(
            sk(&[ll(128, 785), ll(10, 129)], 2048),
            (vec![(75, 785, 1840, 0), (10, 129, 208, 1840)], 2048)
        );
        assert_eq!(sk(&[ll(10, 785)], 2048), (vec![(10, 785, 2048, 0)], 2048));
        // a layer within its share is kept whole, unsketched
        let p = FactoredProjector::sketched(&[ll(64, 65), ll(2, 5)], 512, 32, 0).unwrap();
        assert!(!p.plan()[1].sketched() && p.plan()[1].width == 10);
        assert!(FactoredProjector::sketched(&[ll(3, 4)], 8, 1, 0).is_err());
        // the input side whole: the output side takes what is left
        assert_eq!(factor_pair(400, 50, 20), (20, 20));
        assert_eq!(factor_pair(1000, 100, 1000), (10, 100));
    }
}
