//! TrackStar's gradients (Chang et al. 2024, as Bergson defines the baseline): each
//! example's gradient preconditioned by the fine-tuning optimiser's second moments, then
//! projected and unit-normalised (cosine scores).
//!
//! The second moment V of a linear layer (`out × in`, the bias as a last input column) is
//! factored as Adafactor does, V̂_ij = R_i C_j / S with R its row sums, C its column sums and
//! S its total (the factored form TrackStar uses), so the preconditioned gradient
//! G ⊘ √V̂ = Σ_t (r ⊙ δ_t)(c ⊙ a_t)ᵀ with r_i = S^¼/√R_i and c_j = S^¼/√C_j stays an outer
//! product per position: [`Preconditioned`] scales a model's layer factors and the factored
//! projector works unchanged. Adam's ε and bias correction are left out (a constant factor
//! per layer, or one overall; the cosine ignores the latter).

// Shared by the example and its test.
#![allow(dead_code)]

use ndarray::{ArrayViewMut1, ArrayViewMut2, Axis, s};
use trak::model::{FactoredModel, LayerFactors, LinearLayer};
use trak::{Error, Model, Result};
use trak_candle::TokenSeq;
use trak_candle::lm::AdamW;
use trak_candle::models::llama::LlamaCheckpoint;

/// One layer's row (output) and column (input) scales.
#[derive(Debug, Clone)]
pub struct Scales {
    rows: Vec<f32>,
    cols: Vec<f32>,
}

impl Scales {
    /// The Adafactor factorisation of second moments `v` (`out × in`, row-major, the bias
    /// column last if any). Sums are in f64; a row or column whose moments are all zero (no
    /// gradient ever reached it) gets the smallest nonzero sum of its kind, so the scale
    /// stays finite.
    pub fn adafactor(v: &[f32], out: usize, in_dim: usize) -> Result<Self> {
        if v.len() != out * in_dim || out == 0 || in_dim == 0 {
            return Err(Error::ShapeMismatch {
                what: "second moments of a layer",
                expected: format!("{out} × {in_dim}"),
                got: v.len().to_string(),
            });
        }
        let (mut r, mut c) = (vec![0f64; out], vec![0f64; in_dim]);
        for (i, row) in v.chunks(in_dim).enumerate() {
            for (j, &x) in row.iter().enumerate() {
                r[i] += x as f64;
                c[j] += x as f64;
            }
        }
        let total: f64 = r.iter().sum();
        let quarter = total.max(f64::MIN_POSITIVE).powf(0.25);
        let scale = |sums: Vec<f64>| -> Vec<f32> {
            let floor = sums
                .iter()
                .copied()
                .filter(|&x| x > 0.0)
                .fold(f64::INFINITY, f64::min);
            let floor = if floor.is_finite() { floor } else { 1.0 };
            sums.iter()
                .map(|&x| (quarter / x.max(floor).sqrt()) as f32)
                .collect()
        };
        Ok(Self {
            rows: scale(r),
            cols: scale(c),
        })
    }
}

/// The Adafactor-factored second moments of the block linears `names` of `ckpt` from `opt`
/// (each `name.weight`, and `name.bias` where the checkpoint has one), in order.
pub fn scales_of(opt: &AdamW, ckpt: &LlamaCheckpoint, names: &[String]) -> Result<Vec<Scales>> {
    let find = |t: String| -> Result<(&[f32], Vec<usize>)> {
        let v = opt.second_moment(&t);
        let var = ckpt.vars().iter().find(|(n, _)| *n == t);
        match (v, var) {
            (Some(v), Some((_, var))) => Ok((v, var.dims().to_vec())),
            _ => Err(Error::InvalidParameter {
                parameter: "preconditioned layer",
                value: t,
                expected: "a tensor the optimiser trained".into(),
            }),
        }
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let (w, dims) = find(format!("{name}.weight"))?;
        let (rows, w_in) = (dims[0], w.len() / dims[0].max(1));
        let has_bias = ckpt
            .vars()
            .iter()
            .any(|(n, _)| *n == format!("{name}.bias"));
        let bias = match has_bias {
            true => Some(find(format!("{name}.bias"))?.0),
            false => None,
        };
        let mut v = Vec::with_capacity(rows * (w_in + 1));
        for i in 0..rows {
            v.extend_from_slice(&w[i * w_in..(i + 1) * w_in]);
            v.extend(bias.map(|b| b[i]));
        }
        out.push(Scales::adafactor(&v, rows, w_in + has_bias as usize)?);
    }
    Ok(out)
}

/// A factored model whose gradients are preconditioned by per-layer [`Scales`].
pub struct Preconditioned<'a, M> {
    inner: &'a M,
    scales: Vec<Scales>,
}

impl<'a, M: Model<Example = TokenSeq>> Preconditioned<'a, M> {
    /// `inner` with `scales` (one per layer of its factored view, matching its shapes).
    pub fn new(inner: &'a M, scales: Vec<Scales>) -> Result<Self> {
        let layers = inner
            .factored()
            .ok_or(Error::InvalidParameter {
                parameter: "preconditioned model",
                value: "a model without layer factors".into(),
                expected: "a factored model".into(),
            })?
            .linear_layers();
        let fits = layers.len() == scales.len()
            && layers
                .iter()
                .zip(&scales)
                .all(|(l, s)| s.rows.len() == l.out_dim && s.cols.len() == l.in_dim);
        if !fits {
            return Err(Error::ShapeMismatch {
                what: "preconditioner scales (one per layer)",
                expected: layers.len().to_string(),
                got: scales.len().to_string(),
            });
        }
        Ok(Self { inner, scales })
    }

    fn factored_inner(&self) -> &dyn FactoredModel<TokenSeq> {
        self.inner.factored().expect("checked in new")
    }

    /// Scales each layer's output gradients by its row scales and inputs by its columns'.
    fn precondition(&self, mut f: Vec<LayerFactors>) -> Vec<LayerFactors> {
        for (f, s) in f.iter_mut().zip(&self.scales) {
            scale_columns(&mut f.deltas, &s.rows);
            scale_columns(&mut f.acts, &s.cols);
        }
        f
    }
}

/// Scales every row of `a` column-wise by `s`.
fn scale_columns(a: &mut ndarray::Array2<f32>, s: &[f32]) {
    for mut row in a.rows_mut() {
        for (x, &k) in row.iter_mut().zip(s) {
            *x *= k;
        }
    }
}

impl<M: Model<Example = TokenSeq>> FactoredModel<TokenSeq> for Preconditioned<'_, M> {
    fn linear_layers(&self) -> Vec<LinearLayer> {
        self.factored_inner().linear_layers()
    }

    fn layer_factors(&self, batch: &[TokenSeq]) -> Result<Vec<LayerFactors>> {
        let f = self.factored_inner().layer_factors(batch)?;
        Ok(self.precondition(f))
    }

    fn layer_factors_and_q(
        &self,
        batch: &[TokenSeq],
        q: ArrayViewMut1<'_, f32>,
    ) -> Result<(Vec<LayerFactors>, bool)> {
        let (f, wrote) = self.factored_inner().layer_factors_and_q(batch, q)?;
        Ok((self.precondition(f), wrote))
    }
}

impl<M: Model<Example = TokenSeq>> Model for Preconditioned<'_, M> {
    type Example = TokenSeq;

    fn num_params(&self) -> usize {
        self.inner.num_params()
    }

    /// Each layer's preconditioned Σ_t δ_t a_tᵀ, `out × in` row-major (the bias column
    /// last), layer after layer.
    fn output_grads(&self, batch: &[TokenSeq], mut grads: ArrayViewMut2<'_, f32>) -> Result<()> {
        let mut at = 0;
        for f in self.layer_factors(batch)? {
            let (t, size) = (f.positions, f.deltas.ncols() * f.acts.ncols());
            for (b, mut row) in grads.axis_iter_mut(Axis(0)).enumerate() {
                let rows = s![b * t..(b + 1) * t, ..];
                let g = f.deltas.slice(rows).t().dot(&f.acts.slice(rows));
                let dst = row.slice_mut(s![at..at + size]);
                dst.into_shape_with_order(g.dim())
                    .expect("contiguous")
                    .assign(&g);
            }
            at += size;
        }
        Ok(())
    }

    fn output_q(&self, batch: &[TokenSeq], q: ArrayViewMut1<'_, f32>) -> Result<()> {
        self.inner.output_q(batch, q)
    }

    fn factored(&self) -> Option<&dyn FactoredModel<TokenSeq>> {
        Some(self)
    }

    fn working_memory(&self, batch_len: usize) -> usize {
        self.inner.working_memory(batch_len)
    }

    fn fingerprint(&self) -> Option<u64> {
        None
    }
}
