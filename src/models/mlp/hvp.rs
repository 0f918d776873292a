//! Hessian-vector products of the MLP's weighted batch loss: Pearlmutter's R-operator through
//! the ReLU layers, one direction per target, the batch's forward and backward pass shared.
//!
//! With layer l mapping a_l (B × in) to z_l = a_l W_lᵀ + b_l and a_{l+1} = relu(z_l), and a
//! direction v = (V_l, c_l) per layer, the R-operator R(·) = d/dr (·)(θ + r v) at r = 0 gives
//! - forward: R(a_0) = 0, R(z_l) = a_l V_lᵀ + c_l + R(a_l) W_lᵀ, R(a_{l+1}) = 1[a_{l+1} > 0] ⊙ R(z_l)
//!   (ReLU's second derivative is zero almost everywhere);
//! - output: R(δ_L) = s ⊙ ∇²_z ℓ · R(z_L), with s_b = w_b/|B| and δ = s ⊙ ∂ℓ/∂z the
//!   backward pass's seed;
//! - backward: R(δ_{l−1}) = (R(δ_l) W_l + δ_l V_l) ⊙ 1[a_l > 0];
//! - the product: (H v) for W_l is R(δ_l)ᵀ a_l + δ_lᵀ R(a_l), for b_l the column sums of R(δ_l).
//!
//! Each example's gradient against the direction comes for free from the forward pass:
//! ∇ℓ_b · v = Σ_l δ̃_l[b] · (a_l V_lᵀ + c_l)[b], with δ̃ the unweighted deltas.

use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, Axis, Zip, s};

use super::{Forward, Mlp};
use crate::data::Sample;
use crate::error::{Error, Result, shape_err};
use crate::models::BatchHvp;
use crate::output::OutputFn;

/// The Hessian-vector products of one batch of an [`Mlp`]
/// ([`crate::models::Trainable::weighted_hvp`]): the batch's forward pass, its unweighted
/// deltas δ̃ and weighted ones δ, and the per-example weights s_b = w_b/|B|, shared by every
/// direction.
pub struct MlpHvp<'a, O> {
    model: &'a Mlp<O>,
    batch: Vec<&'a Sample>,
    fwd: Forward,
    unweighted: Vec<Array2<f32>>,
    weighted: Vec<Array2<f32>>,
    scale: Vec<f32>,
}

impl<O: OutputFn> BatchHvp for MlpHvp<'_, O> {
    fn apply(&self, v: &[f32], hv: &mut [f32], dots: &mut [f32]) {
        let p = self.model.param_count();
        assert_eq!(
            (v.len(), hv.len(), dots.len()),
            (p, p, self.batch.len()),
            "HVP buffer lengths"
        );
        self.model
            .one_direction(self, v, ArrayViewMut1::from(hv), ArrayViewMut1::from(dots));
    }
}

impl<O: OutputFn> Mlp<O> {
    /// [`crate::models::Trainable::weighted_hvp`] for the MLP.
    pub(super) fn hvp_batch<'a>(
        &'a self,
        batch: &[&'a Sample],
        weights: &[f32],
    ) -> Result<MlpHvp<'a, O>> {
        if batch.is_empty() {
            return Err(Error::Empty("training batch"));
        }
        if weights.len() != batch.len() {
            return Err(shape_err("batch weights", batch.len(), weights.len()));
        }
        let fwd = self.forward(self.gather(batch, 0)?);
        let (dl, _) = self.loss_gradients(&fwd, batch);
        let z = fwd.acts.last().expect("at least one layer");
        let (probe, mut out) = (vec![0.0; z.ncols()], vec![0.0; z.ncols()]);
        for (z, s) in z.rows().into_iter().zip(batch) {
            let z = z.as_slice().expect("standard layout");
            if !self.output.loss_hvp(z, &s.target, &probe, &mut out) {
                return Err(Error::NoLossHessian);
            }
        }
        let unweighted = self.backward(&fwd, dl);
        let inv_b = 1.0 / batch.len() as f32;
        let scale: Vec<f32> = weights.iter().map(|&w| w * inv_b).collect();
        let weighted = unweighted
            .iter()
            .map(|d| {
                let mut d = d.clone();
                scale_rows(&mut d, &scale);
                d
            })
            .collect();
        Ok(MlpHvp {
            model: self,
            batch: batch.to_vec(),
            fwd,
            unweighted,
            weighted,
            scale,
        })
    }

    /// One direction `v`: its row of H v and its column of the per-example dots.
    fn one_direction(
        &self,
        sh: &MlpHvp<'_, O>,
        v: &[f32],
        mut hv: ArrayViewMut1<'_, f32>,
        mut dots: ArrayViewMut1<'_, f32>,
    ) {
        let batch = &sh.batch;
        let n_layers = self.layers.len();
        let blocks = self.blocks(v);
        // R-forward, keeping R(a_l) of each layer's input (None for the network's input).
        let mut r_in: Vec<Option<Array2<f32>>> = vec![None];
        let mut rz = Array2::zeros((0, 0));
        dots.fill(0.0);
        for (l, layer) in self.layers.iter().enumerate() {
            let (vw, vb) = blocks[l];
            let mut direct = sh.fwd.acts[l].dot(&vw.t());
            direct += &vb;
            add_row_dots(&mut dots, &sh.unweighted[l], &direct);
            rz = direct;
            if let Some(ra) = &r_in[l] {
                rz += &ra.dot(&layer.w.t());
            }
            if l + 1 < n_layers {
                let mut ra = rz.clone();
                mask(&mut ra, &sh.fwd.acts[l + 1]);
                r_in.push(Some(ra));
            }
        }
        let inv_b = 1.0 / batch.len() as f32;
        dots.mapv_inplace(|d| d * inv_b);
        let mut r_delta = self.output_r_delta(batch, sh, &rz);
        let mut off = self.param_count();
        for l in (0..n_layers).rev() {
            let (o, i) = self.layers[l].w.dim();
            off -= o * i + o;
            let mut hw = r_delta.t().dot(&sh.fwd.acts[l]);
            if let Some(ra) = &r_in[l] {
                hw += &sh.weighted[l].t().dot(ra);
            }
            let hw = hw.as_slice().expect("standard layout");
            hv.slice_mut(s![off..off + o * i])
                .assign(&ArrayView1::from(hw));
            hv.slice_mut(s![off + o * i..off + o * i + o])
                .assign(&r_delta.sum_axis(Axis(0)));
            if l > 0 {
                let mut next = r_delta.dot(&self.layers[l].w);
                next += &sh.weighted[l].dot(&blocks[l].0);
                mask(&mut next, &sh.fwd.acts[l]);
                r_delta = next;
            }
        }
    }

    /// R(δ_L) = s ⊙ ∇²_z ℓ · R(z_L), row by row.
    fn output_r_delta(
        &self,
        batch: &[&Sample],
        sh: &MlpHvp<'_, O>,
        rz: &Array2<f32>,
    ) -> Array2<f32> {
        let z = sh.fwd.acts.last().expect("at least one layer");
        let mut out = Array2::zeros(rz.raw_dim());
        let rows = z.rows().into_iter().zip(rz.rows()).zip(out.rows_mut());
        for (b, ((z, rz), mut o)) in rows.enumerate() {
            let o = o.as_slice_mut().expect("standard layout");
            let known = self.output.loss_hvp(
                z.as_slice().expect("standard layout"),
                &batch[b].target,
                rz.as_slice().expect("standard layout"),
                o,
            );
            debug_assert!(known, "checked before the directions");
            o.iter_mut().for_each(|x| *x *= sh.scale[b]);
        }
        out
    }

    /// The direction's (V_l, c_l) views, layer by layer, in the documented layout.
    fn blocks<'a>(&self, v: &'a [f32]) -> Vec<(ArrayView2<'a, f32>, ArrayView1<'a, f32>)> {
        let mut off = 0;
        self.layers
            .iter()
            .map(|layer| {
                let (o, i) = layer.w.dim();
                let w = ArrayView2::from_shape((o, i), &v[off..off + o * i]).expect("block");
                let b = ArrayView1::from(&v[off + o * i..off + o * i + o]);
                off += o * i + o;
                (w, b)
            })
            .collect()
    }
}

/// Multiplies row b of `m` by `scale[b]`.
fn scale_rows(m: &mut Array2<f32>, scale: &[f32]) {
    for (mut row, &s) in m.rows_mut().into_iter().zip(scale) {
        row.mapv_inplace(|x| x * s);
    }
}

/// Zeroes the entries whose activation is not positive (ReLU's derivative, 0 at 0).
fn mask(m: &mut Array2<f32>, acts: &Array2<f32>) {
    Zip::from(m).and(acts).for_each(|x, &a| {
        if a <= 0.0 {
            *x = 0.0
        }
    });
}

/// dots[b] += Σ_o deltas[b, o] · direct[b, o].
fn add_row_dots(dots: &mut ArrayViewMut1<'_, f32>, deltas: &Array2<f32>, direct: &Array2<f32>) {
    for ((d, dl), dr) in dots.iter_mut().zip(deltas.rows()).zip(direct.rows()) {
        *d += dl.dot(&dr);
    }
}
