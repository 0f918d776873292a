//! The native pass's kernels on row-major slices: GEMM through faer (sequential, so a
//! sequence's bits never depend on the thread count), RMSNorm, rotary embeddings and SiLU,
//! each with its backward.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// A row-major `rows × cols` matrix view of `s` whose rows start `stride` apart.
pub(super) fn view(s: &[f32], rows: usize, cols: usize, stride: usize) -> MatRef<'_, f32> {
    MatRef::from_row_major_slice_with_stride(s, rows, cols, stride)
}

/// The mutable counterpart of [`view`]: the transpose of a column-major view, because
/// faer 0.24.4's `MatMut::from_row_major_slice_with_stride_mut` swaps the two strides (it
/// builds a column-major view with columns `stride` apart, so a product written through it
/// lands outside the rows: wrong values and a corrupted heap; the unit test below guards it).
pub(super) fn view_mut(s: &mut [f32], rows: usize, cols: usize, stride: usize) -> MatMut<'_, f32> {
    MatMut::from_column_major_slice_with_stride_mut(s, cols, rows, stride).transpose_mut()
}

/// `dst = a · b` (or `dst += a · b` when `add`), sequential.
pub(super) fn gemm(dst: MatMut<'_, f32>, a: MatRef<'_, f32>, b: MatRef<'_, f32>, add: bool) {
    let accum = if add { Accum::Add } else { Accum::Replace };
    matmul(dst, accum, a, b, 1.0, Par::Seq);
}

/// Output columns per GEMM of a linear layer: a sequence's linear runs as parallel GEMMs
/// over blocks of its output columns (each packs its slice of the weight once for all the
/// sequence's positions). The blocks are fixed, so the bits do not depend on the thread
/// count.
const COLS: usize = 128;

/// `dst (+)= a · b` by blocks of [`COLS`] columns of `dst` and `b`, in parallel.
fn gemm_cols(dst: MatMut<'_, f32>, a: MatRef<'_, f32>, b: MatRef<'_, f32>, add: bool) {
    gemm_cols_scaled(dst, a, b, (add, 1.0));
}

/// `dst = α a · b` (or `dst += α a · b` when `add`) by blocks of [`COLS`] columns.
fn gemm_cols_scaled(
    dst: MatMut<'_, f32>,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    (add, alpha): (bool, f32),
) {
    let mut blocks = Vec::with_capacity(dst.ncols().div_ceil(COLS));
    let mut rest = dst;
    while rest.ncols() > 0 {
        let n = COLS.min(rest.ncols());
        let (block, tail) = rest.split_at_col_mut(n);
        blocks.push(block);
        rest = tail;
    }
    let accum = if add { Accum::Add } else { Accum::Replace };
    blocks.into_par_iter().enumerate().for_each(|(j, block)| {
        let n = block.ncols();
        matmul(block, accum, a, b.subcols(j * COLS, n), alpha, Par::Seq);
    });
}

/// A linear layer's weight gradient from one sequence's `t` rows, scaled:
/// `g += c · δᵀ a` (`g`: `out × in_dim`, the bias's column last when `a` has its 1s).
pub(super) fn weight_grad(g: &mut [f32], (delta, acts): (&[f32], &[f32]), t: usize, c: f32) {
    let (out, in_dim) = (delta.len() / t, acts.len() / t);
    let d = view(delta, t, out, out).transpose();
    gemm_cols_scaled(
        view_mut(g, out, in_dim, in_dim),
        d,
        view(acts, t, in_dim, in_dim),
        (true, c),
    );
}

/// A linear layer's forward pass on `t` rows: `y = x · Wᵀ (+ b)`, `W` being `out × inp`.
pub(super) fn linear(y: &mut [f32], x: &[f32], (w, b): (&[f32], Option<&[f32]>), t: usize) {
    let out = y.len() / t;
    let inp = x.len() / t;
    let wt = view(w, out, inp, inp).transpose();
    gemm_cols(view_mut(y, t, out, out), view(x, t, inp, inp), wt, false);
    if let Some(b) = b {
        for row in y.chunks_mut(out) {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
    }
}

/// The backward pass of a linear layer to its input on `t` rows: `dx (+)= δ · W`.
pub(super) fn linear_back(dx: &mut [f32], delta: &[f32], w: &[f32], t: usize, add: bool) {
    let inp = dx.len() / t;
    let out = delta.len() / t;
    let wm = view(w, out, inp, inp);
    gemm_cols(view_mut(dx, t, inp, inp), view(delta, t, out, out), wm, add);
}

/// RMSNorm of each row of `x` (width `g.len()`): `a = x / √(mean(x²) + ε) ⊙ g`, with
/// `1/√(mean(x²) + ε)` of each row into `inv` (what the backward pass needs). The same
/// operations, in the same order, as candle's `rms_norm_slow`.
pub(super) fn rms_norm(a: &mut [f32], inv: &mut [f32], x: &[f32], g: &[f32], eps: f32) {
    let d = g.len();
    for ((a, x), inv) in a.chunks_mut(d).zip(x.chunks(d)).zip(inv.iter_mut()) {
        let ms = x.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let s = (ms + eps).sqrt();
        *inv = 1.0 / s;
        for ((a, &x), &g) in a.iter_mut().zip(x).zip(g) {
            *a = (x / s) * g;
        }
    }
}

/// The backward pass of [`rms_norm`]: with `u = da ⊙ g`,
/// `dx += inv · u − x · inv³ · (u · x) / d` for each row.
pub(super) fn rms_norm_back(dx: &mut [f32], da: &[f32], x: &[f32], inv: &[f32], g: &[f32]) {
    let d = g.len();
    for (((dx, da), x), &r) in dx.chunks_mut(d).zip(da.chunks(d)).zip(x.chunks(d)).zip(inv) {
        let ux: f32 = da.iter().zip(g).zip(x).map(|((a, g), x)| a * g * x).sum();
        let c = r * r * r * ux / d as f32;
        for (((dx, &da), &g), &x) in dx.iter_mut().zip(da).zip(g).zip(x) {
            *dx += r * da * g - c * x;
        }
    }
}

/// The rotary tables' rows for the first positions: `cos` and `sin`, `half` values per
/// position (Hugging Face's non-interleaved layout, heads of width `2·half`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Rotary<'a> {
    pub cos: &'a [f32],
    pub sin: &'a [f32],
    pub half: usize,
}

/// The gradient of [`rms_norm`]'s scale, `dg += Σ_rows da ⊙ x · inv`, rows in order.
pub(super) fn rms_norm_scale_grad(dg: &mut [f32], da: &[f32], x: &[f32], inv: &[f32]) {
    let d = dg.len();
    for ((da, x), &r) in da.chunks(d).zip(x.chunks(d)).zip(inv) {
        for ((g, &a), &x) in dg.iter_mut().zip(da).zip(x) {
            *g += a * x * r;
        }
    }
}

/// Rotary embedding in place on the rows of `x` (`row` values each, row t at position t):
/// each head `(x₁, x₂) → (x₁c − x₂s, x₂c + x₁s)` with position t's `c`, `s`, as candle's
/// `rope_slow` computes it. `inverse` rotates back by the same angle, the backward pass:
/// `(d₁, d₂) → (d₁c + d₂s, d₂c − d₁s)`.
pub(super) fn rope(x: &mut [f32], row: usize, rot: Rotary<'_>, inverse: bool) {
    let h = rot.half;
    let tables = rot.cos.chunks(h).zip(rot.sin.chunks(h));
    for (r, (c, s)) in x.chunks_mut(row).zip(tables) {
        for head in r.chunks_mut(2 * h) {
            let (x1, x2) = head.split_at_mut(h);
            for i in 0..h {
                let (a, b) = (x1[i], x2[i]);
                if inverse {
                    x1[i] = a * c[i] + b * s[i];
                    x2[i] = b * c[i] - a * s[i];
                } else {
                    x1[i] = a * c[i] - b * s[i];
                    x2[i] = b * c[i] + a * s[i];
                }
            }
        }
    }
}

/// SiLU's product in the MLP: `m = g σ(g) u`, with `σ(g)` of the gate's values in `sig`.
pub(super) fn silu_product(m: &mut [f32], sig: &[f32], (g, u): (&[f32], &[f32])) {
    for (((m, &s), &g), &u) in m.iter_mut().zip(sig).zip(g).zip(u) {
        *m = g * s * u;
    }
}

/// The backward pass of [`silu_product`]: from `dm` (in `dm`) and `σ(g)`, `g` becomes
/// `dg = dm u σ(g) (1 + g (1 − σ(g)))` and `u` becomes `du = dm g σ(g)`.
pub(super) fn silu_product_back(dm: &[f32], sig: &[f32], (g, u): (&mut [f32], &mut [f32])) {
    for (((&dm, &s), g), u) in dm.iter().zip(sig).zip(g.iter_mut()).zip(u.iter_mut()) {
        let (gv, uv) = (*g, *u);
        *g = dm * uv * s * (1.0 + gv * (1.0 - s));
        *u = dm * gv * s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize), bt: bool) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|l| a[i * k + l] * if bt { b[j * k + l] } else { b[l * n + j] })
                    .sum();
            }
        }
        c
    }

    #[test]
    fn mutable_views_are_row_major() {
        let mut s = [0.0f32; 8];
        let v = view_mut(&mut s, 2, 3, 4);
        assert_eq!((v.row_stride(), v.col_stride()), (4, 1));
        assert_eq!((v.nrows(), v.ncols()), (2, 3));
    }

    #[test]
    fn linears_match_a_naive_product() {
        for (m, k, n) in [
            (1, 3, 2),
            (2, 16, 16),
            (5, 24, 16),
            (33, 40, 7),
            (150, 9, 11),
        ] {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 - 2.0).collect();
            let mut y = vec![0.0; m * n];
            linear(&mut y, &a, (&w, None), m);
            assert_eq!(y, naive(&a, &w, (m, k, n), true), "{m} {k} {n}");
            let d: Vec<f32> = (0..m * n).map(|i| (i % 3) as f32 - 1.0).collect();
            let mut dx = vec![0.0; m * k];
            linear_back(&mut dx, &d, &w, m, false);
            assert_eq!(dx, naive(&d, &w, (m, n, k), false), "{m} {n} {k} back");
        }
    }
}
