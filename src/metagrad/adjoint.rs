//! The reverse pass through one SGD step, for a block of targets at once.
//!
//! The step θ_{t+1} = θ_t − η v_{t+1}, v_{t+1} = μ v_t + ∇L_w(θ_t) + λ θ_t has, with
//! u_t = v̄_{t+1} − η θ̄_{t+1}, the adjoint
//! - θ̄_t = θ̄_{t+1} + (∇²L_w(θ_t) + λ I) u_t,
//! - v̄_t = μ u_t, so that the next direction is u_{t−1} = μ u_t − η θ̄_t,
//! - w̄_i += ∂(∇L_w · u_t)/∂w_i = (1/|B|) ∇ℓ_i(θ_t) · u_t for the batch's examples,
//!
//! starting from θ̄_T = ∇f(θ_T), v̄_T = 0, i.e. u_{T−1} = −η θ̄_T; one row per target.
//! θ̄ and w̄, which sum over every step, are held in f64. The direction u is held in f32:
//! the HVP consumes it in f32 anyway, and its own recursion forgets a rounding error
//! geometrically (by μ per step), so f32 adds nothing a measurement can see
//! (docs/VALIDATION.md) and halves the memory traffic of the update, which is what bounds
//! it next to the HVP's GEMMs.

use ndarray::{Array2, ArrayView2, ArrayViewMut1, Axis, Zip};
use rayon::prelude::*;

use super::Precision;
use crate::attribute::memory::zeros2;
use crate::error::Result;
use crate::models::{BatchHvp, Sgd, Trainable};

/// The adjoint state of a block of m targets, one row per target (the rows are independent:
/// each target's reverse pass runs on one thread, its update fused with its HVP).
pub(crate) struct Adjoint {
    /// θ̄, m × p.
    theta: Array2<f64>,
    /// The next step's direction u, m × p.
    dirs: Array2<f32>,
    /// w̄, m × n_train: the metagradients (transposed) once every step is done.
    pub(crate) weights: Array2<f64>,
    precision: Precision,
}

/// One thread's buffers: H u and the batch's dots.
struct Scratch {
    hv: Vec<f32>,
    dots: Vec<f32>,
}

impl Adjoint {
    /// θ̄_T = ∇f_j(θ_T) (rows of `target_grads`), u_{T−1} = −η θ̄_T, w̄ = 0.
    pub(crate) fn new(
        sgd: &Sgd,
        target_grads: ArrayView2<'_, f32>,
        n_train: usize,
        precision: Precision,
    ) -> Result<Self> {
        let (m, p) = target_grads.dim();
        let mut theta = zeros2((m, p), "adjoint of θ")?;
        let mut dirs = zeros2((m, p), "adjoint directions")?;
        let lr = sgd.lr as f64;
        Zip::from(&mut theta)
            .and(&mut dirs)
            .and(target_grads)
            .for_each(|a, d, &g| {
                *a = g as f64;
                *d = (-lr * g as f64) as f32;
            });
        Ok(Self {
            theta,
            dirs,
            weights: zeros2((m, n_train), "metagradients")?,
            precision,
        })
    }

    /// One step back through the step that trained on `batch` (indices into `data`) from
    /// θ_t, which `model` holds.
    pub(crate) fn step_back<M: Trainable>(
        &mut self,
        sgd: &Sgd,
        model: &M,
        data: &[M::Example],
        batch: &[usize],
    ) -> Result<()> {
        let examples: Vec<&M::Example> = batch.iter().map(|&i| &data[i]).collect();
        let hvp = model.weighted_hvp(&examples, &vec![1.0f32; batch.len()])?;
        let p = self.theta.ncols();
        let scratch = || Scratch {
            hv: vec![0.0; p],
            dots: vec![0.0; batch.len()],
        };
        let coef = Coefficients::of(sgd, self.precision);
        self.theta
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(self.dirs.axis_iter_mut(Axis(0)))
            .zip(self.weights.axis_iter_mut(Axis(0)))
            .for_each_init(scratch, |buf, ((theta, dir), weights)| {
                let theta = theta.into_slice().expect("standard layout");
                let dir = dir.into_slice().expect("standard layout");
                coef.row_back(&hvp, batch, buf, theta, dir, weights)
            });
        Ok(())
    }
}

/// The step's constants, in f64.
struct Coefficients {
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    f32_only: bool,
}

impl Coefficients {
    fn of(sgd: &Sgd, precision: Precision) -> Self {
        Self {
            lr: sgd.lr as f64,
            momentum: sgd.momentum as f64,
            weight_decay: sgd.weight_decay as f64,
            f32_only: precision == Precision::F32,
        }
    }

    /// One target's step back: H u; w̄_batch += dots; θ̄ += H u + λ u; u ← μ u − η θ̄.
    fn row_back(
        &self,
        hvp: &impl BatchHvp,
        batch: &[usize],
        buf: &mut Scratch,
        theta: &mut [f64],
        dir: &mut [f32],
        mut weights: ArrayViewMut1<'_, f64>,
    ) {
        hvp.apply(dir, &mut buf.hv, &mut buf.dots);
        let round = |x: f64| if self.f32_only { x as f32 as f64 } else { x };
        for (&i, &d) in batch.iter().zip(&buf.dots) {
            weights[i] = round(weights[i] + d as f64);
        }
        let (lr, mu, wd) = (self.lr, self.momentum, self.weight_decay);
        for ((th, u), &hv) in theta.iter_mut().zip(dir.iter_mut()).zip(&buf.hv) {
            let uf = *u as f64;
            let t = round(*th + (hv as f64 + wd * uf));
            *th = t;
            *u = (mu * uf - lr * t) as f32;
        }
    }
}
