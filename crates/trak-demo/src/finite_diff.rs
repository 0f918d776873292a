//! Why finite differences in the example weights cannot check an MLP's metagradients
//! (`metagrad_lds --fd`): for a few training examples, the central difference
//! (f(w_i = 1 + ε) − f(w_i = 1 − ε)) / 2ε of one target's margin, each run retrained with
//! [`trak::models::Sgd::fit_weighted`] (the same seed and order), against the metagradient
//! τ_i, over ε from 1 down to 1e-5; and, for the MLP, how many ReLUs of the trained model
//! switched on the training set between the runs at w_i = 1 and 1 + ε.

use ndarray::Array2;
use trak::Result;
use trak::data::Sample;
use trak::models::Mlp;
use trak::output::Margin;

use crate::family::Family;
use crate::metagrad::{Training, run_of};

/// One finite difference.
#[derive(Debug, Clone, PartialEq)]
pub struct FdRow {
    /// The family.
    pub family: Family,
    /// Training example i.
    pub example: usize,
    /// Step ε of the weight w_i.
    pub eps: f32,
    /// The metagradient τ_i.
    pub metagrad: f64,
    /// (f(1 + ε) − f(1 − ε)) / 2ε, f in f32 as the trainer computes it.
    pub fd: f64,
    /// Hidden units × training examples whose pre-activation sign differs between the
    /// models trained at w_i = 1 and w_i = 1 + ε (0 without a hidden layer): a lower bound on
    /// the ReLUs that switched along the run.
    pub relu_flips: usize,
}

impl FdRow {
    /// `METAGRAD_FD family=… example=… eps=… metagrad=… fd=… ratio=… relu_flips=…`.
    pub fn line(&self) -> String {
        format!(
            "METAGRAD_FD family={} example={} eps={:e} metagrad={:.4e} fd={:.4e} ratio={:.4} relu_flips={}",
            self.family.name(),
            self.example,
            self.eps,
            self.metagrad,
            self.fd,
            self.fd / self.metagrad,
            self.relu_flips
        )
    }
}

/// The finite differences of `target`'s margin at the `examples` training examples with the
/// largest |τ_i|, for each step in `eps`, on run 0 of `family` under `training`.
pub fn finite_differences(
    family: Family,
    training: Training,
    train: &[Sample],
    target: &Sample,
    examples: usize,
    eps: &[f32],
) -> Result<Vec<FdRow>> {
    let target = std::slice::from_ref(target);
    let out = run_of(family, training, 0, train, target, Default::default())?;
    let tau: Vec<f32> = out.scores.values().column(0).to_vec();
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.sort_by(|&a, &b| tau[b].abs().total_cmp(&tau[a].abs()));
    let base = hidden_signs(&out.model, train);
    let mut rows = Vec::new();
    for &i in &order[..examples.min(order.len())] {
        for &e in eps {
            let at = |w_i: f32| -> Result<Mlp<Margin>> {
                let mut w = vec![1.0f32; train.len()];
                w[i] = w_i;
                let mut model = Mlp::new(&family.sizes(), Margin, 0)?;
                training.sgd(0).fit_weighted(&mut model, train, &w)?;
                Ok(model)
            };
            let (up, down) = (at(1.0 + e)?, at(1.0 - e)?);
            let f = |m: &Mlp<Margin>| -> Result<f64> { Ok(f64::from(m.outputs(target)?[0].f)) };
            let relu_flips = match (&base, hidden_signs(&up, train)) {
                (Some(a), Some(b)) => a.iter().zip(&b).filter(|(x, y)| x != y).count(),
                _ => 0,
            };
            rows.push(FdRow {
                family,
                example: i,
                eps: e,
                metagrad: f64::from(tau[i]),
                fd: (f(&up)? - f(&down)?) / (2.0 * f64::from(e)),
                relu_flips,
            });
        }
    }
    Ok(rows)
}

/// The signs of the first layer's pre-activations on `data` (examples × hidden units), or
/// `None` for a model without a hidden layer.
fn hidden_signs(model: &Mlp<Margin>, data: &[Sample]) -> Option<Array2<bool>> {
    let layers = model.layers();
    if layers.len() < 2 {
        return None;
    }
    let l = &layers[0];
    let x = Array2::from_shape_fn((data.len(), l.w.ncols()), |(r, c)| data[r].x[c]);
    let z = x.dot(&l.w.t()) + &l.b;
    Some(z.mapv(|v| v > 0.0))
}
