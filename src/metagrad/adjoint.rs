//! The reverse pass through one SGD step, for a block of targets at once.
//!
//! The step θ_{t+1} = θ_t − η v_{t+1}, v_{t+1} = μ v_t + ∇L_w(θ_t) + λ θ_t has, with
//! u = v̄_{t+1} − η θ̄_{t+1}, the adjoint
//! - θ̄_t = θ̄_{t+1} + (∇²L_w(θ_t) + λ I) u,
//! - v̄_t = μ u,
//! - w̄_i += ∂(∇L_w · u)/∂w_i = (1/|B|) ∇ℓ_i(θ_t) · u for the batch's examples,
//!
//! one row per target. θ̄, v̄ and w̄ are held in f64; the HVP runs in f32 on u rounded to f32.

use ndarray::{Array2, ArrayView2, Axis, Zip};
use rayon::prelude::*;

use super::Precision;
use crate::attribute::memory::zeros2;
use crate::error::Result;
use crate::models::{Sgd, Trainable};

/// The adjoint state of a block of m targets.
pub(crate) struct Adjoint {
    /// θ̄, m × p.
    theta: Array2<f64>,
    /// v̄, m × p.
    velocity: Array2<f64>,
    /// u rounded to f32, m × p (the HVP's directions).
    dirs: Array2<f32>,
    /// H u, m × p.
    hv: Array2<f32>,
    /// w̄, n_train × m: the metagradients once every step is done.
    pub(crate) weights: Array2<f64>,
    precision: Precision,
}

impl Adjoint {
    /// θ̄_T = ∇f_j(θ_T) (rows of `target_grads`), v̄_T = 0, w̄ = 0.
    pub(crate) fn new(
        target_grads: ArrayView2<'_, f32>,
        n_train: usize,
        precision: Precision,
    ) -> Result<Self> {
        let (m, p) = target_grads.dim();
        let mut theta = zeros2((m, p), "adjoint of θ")?;
        Zip::from(&mut theta)
            .and(target_grads)
            .for_each(|a, &g| *a = g as f64);
        Ok(Self {
            theta,
            velocity: zeros2((m, p), "adjoint of v")?,
            dirs: zeros2((m, p), "HVP directions")?,
            hv: zeros2((m, p), "HVP products")?,
            weights: zeros2((n_train, m), "metagradients")?,
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
        let (lr, mu, wd) = (sgd.lr as f64, sgd.momentum as f64, sgd.weight_decay as f64);
        // u = v̄ − η θ̄, kept in `velocity` until v̄_t = μ u is formed below.
        let rows = self.velocity.axis_iter_mut(Axis(0)).into_par_iter();
        rows.zip(self.theta.axis_iter(Axis(0)))
            .zip(self.dirs.axis_iter_mut(Axis(0)))
            .for_each(|((mut u, th), mut d)| {
                Zip::from(&mut u)
                    .and(&th)
                    .and(&mut d)
                    .for_each(|u, &th, d| {
                        *u -= lr * th;
                        *d = *u as f32;
                    });
            });
        let examples: Vec<&M::Example> = batch.iter().map(|&i| &data[i]).collect();
        let ones = vec![1.0f32; batch.len()];
        let mut dots = Array2::zeros((batch.len(), self.dirs.nrows()));
        model.weighted_hvp(
            &examples,
            &ones,
            self.dirs.view(),
            self.hv.view_mut(),
            dots.view_mut(),
        )?;
        for (&i, d) in batch.iter().zip(dots.rows()) {
            let mut w = self.weights.row_mut(i);
            Zip::from(&mut w).and(&d).for_each(|w, &d| *w += d as f64);
        }
        let f32_only = self.precision == Precision::F32;
        let rows = self.theta.axis_iter_mut(Axis(0)).into_par_iter();
        rows.zip(self.velocity.axis_iter_mut(Axis(0)))
            .zip(self.hv.axis_iter(Axis(0)))
            .for_each(|((mut th, mut u), hv)| {
                Zip::from(&mut th)
                    .and(&mut u)
                    .and(&hv)
                    .for_each(|th, u, &hv| {
                        *th += hv as f64 + wd * *u;
                        *u *= mu;
                        if f32_only {
                            *th = *th as f32 as f64;
                            *u = *u as f32 as f64;
                        }
                    });
            });
        if f32_only {
            for &i in batch {
                self.weights.row_mut(i).mapv_inplace(|w| w as f32 as f64);
            }
        }
        Ok(())
    }
}
