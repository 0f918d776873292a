//! AdamW over f32 CPU tensors, for [`super::FineTune`]: candle's `candle_nn::AdamW`
//! arithmetic, operation for operation in f32 (so the same weights, bit for bit: a test), in
//! one pass over each tensor instead of fifteen tensor operations that each allocate a tensor
//! of the weight's size, and with its moments readable.
//!
//! The second moments are what TrackStar (Chang et al. 2024) preconditions gradients with;
//! [`AdamW::second_moment`] gives them by tensor name.
//!
//! Per element, with step t, β₁, β₂, ε, learning rate η and weight decay λ (each constant
//! rounded to f32 as candle's affine operations do):
//! m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², θ ← (1−ηλ)θ − η · (m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε).

use std::collections::HashMap;

use candle::backend::BackendStorage;
use candle::backprop::GradStore;
use candle::{CpuStorage, Storage, Tensor, Var};
use candle_nn::ParamsAdamW;
use rayon::prelude::*;
use trak::Error;

use crate::error::CandleContext;

/// One trained tensor and its moments.
#[derive(Debug)]
struct Slot {
    name: String,
    var: Var,
    m: Vec<f32>,
    v: Vec<f32>,
}

/// AdamW over named f32 CPU tensors (see the module docs).
#[derive(Debug)]
pub struct AdamW {
    params: ParamsAdamW,
    steps: usize,
    slots: Vec<Slot>,
}

/// The f32 constants of one step, rounded as candle rounds them.
#[derive(Debug, Clone, Copy)]
struct Consts {
    b1: f32,
    c1: f32,
    b2: f32,
    c2: f32,
    scale_m: f32,
    scale_v: f32,
    decay: f32,
    eps: f32,
    lr: f32,
}

/// Elements per parallel task (the result does not depend on it: every element is updated
/// on its own).
const CHUNK: usize = 1 << 16;

impl AdamW {
    /// AdamW over `vars` (name and tensor), moments at zero. Every tensor must be a
    /// contiguous f32 tensor on the CPU ([`Error::InvalidParameter`] naming it otherwise).
    pub fn new(vars: Vec<(String, Var)>, params: ParamsAdamW) -> trak::Result<Self> {
        let mut slots = Vec::with_capacity(vars.len());
        for (name, var) in vars {
            values(&name, var.as_tensor(), |_| ())?;
            let n = var.elem_count();
            slots.push(Slot {
                name,
                var,
                m: vec![0.0; n],
                v: vec![0.0; n],
            });
        }
        Ok(Self {
            params,
            steps: 0,
            slots,
        })
    }

    /// Steps taken.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The settings.
    pub fn params(&self) -> &ParamsAdamW {
        &self.params
    }

    /// The names of the trained tensors, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    /// Tensor `name`'s second moment v (the exponential average of g², not bias-corrected;
    /// [`AdamW::steps`] gives t), in the tensor's row-major order.
    pub fn second_moment(&self, name: &str) -> Option<&[f32]> {
        self.slots
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.v.as_slice())
    }

    /// Tensor `name`'s first moment m.
    pub fn first_moment(&self, name: &str) -> Option<&[f32]> {
        self.slots
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.m.as_slice())
    }

    /// One step with candle's gradients; a tensor without a gradient keeps its value and
    /// moments (as candle's optimiser does).
    pub fn step(&mut self, grads: &GradStore) -> trak::Result<()> {
        let c = self.begin();
        for s in &mut self.slots {
            if let Some(g) = grads.get(s.var.as_tensor()) {
                let g = g.contiguous().ctx("a gradient")?;
                let name = s.name.clone();
                values(&name, &g, |g| update(s, g, c))??;
            }
        }
        Ok(())
    }

    /// One step with gradients given as f32 vectors by tensor name (each of its tensor's
    /// size: [`Error::ShapeMismatch`] otherwise).
    pub fn step_slices(&mut self, grads: &HashMap<String, Vec<f32>>) -> trak::Result<()> {
        let c = self.begin();
        for s in &mut self.slots {
            if let Some(g) = grads.get(&s.name) {
                if g.len() != s.m.len() {
                    return Err(Error::ShapeMismatch {
                        what: "an optimiser gradient",
                        expected: s.m.len().to_string(),
                        got: g.len().to_string(),
                    });
                }
                update(s, g, c)?;
            }
        }
        Ok(())
    }

    /// Counts a step and returns its constants.
    fn begin(&mut self) -> Consts {
        self.steps += 1;
        let p = &self.params;
        let t = self.steps as i32;
        Consts {
            b1: p.beta1 as f32,
            c1: (1.0 - p.beta1) as f32,
            b2: p.beta2 as f32,
            c2: (1.0 - p.beta2) as f32,
            scale_m: (1.0 / (1.0 - p.beta1.powi(t))) as f32,
            scale_v: (1.0 / (1.0 - p.beta2.powi(t))) as f32,
            decay: (1.0 - p.lr * p.weight_decay) as f32,
            eps: p.eps as f32,
            lr: p.lr as f32,
        }
    }
}

/// Updates one tensor and its moments with gradient `g`.
fn update(s: &mut Slot, g: &[f32], c: Consts) -> trak::Result<()> {
    let next = values(&s.name, s.var.as_tensor(), |theta| {
        let mut next = vec![0f32; theta.len()];
        next.par_chunks_mut(CHUNK)
            .zip(s.m.par_chunks_mut(CHUNK))
            .zip(s.v.par_chunks_mut(CHUNK))
            .zip(theta.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
            .for_each(|(((out, m), v), (theta, g))| {
                for i in 0..out.len() {
                    out[i] = element(&mut m[i], &mut v[i], theta[i], g[i], c);
                }
            });
        next
    })?;
    let t = Tensor::from_vec(next, s.var.shape(), s.var.device()).ctx("an optimiser step")?;
    s.var.set(&t).ctx("an optimiser step")
}

/// One element, in candle's order of f32 operations (an affine map is `x * mul + add`).
#[inline(always)]
fn element(m: &mut f32, v: &mut f32, theta: f32, g: f32, c: Consts) -> f32 {
    *m = (*m * c.b1 + 0.0) + (g * c.c1 + 0.0);
    *v = (*v * c.b2 + 0.0) + ((g * g) * c.c2 + 0.0);
    let m_hat = *m * c.scale_m + 0.0;
    let v_hat = *v * c.scale_v + 0.0;
    let decayed = theta * c.decay + 0.0;
    let adjusted = m_hat / (v_hat.sqrt() * 1.0 + c.eps);
    decayed - (adjusted * c.lr + 0.0)
}

/// Calls `f` with the values of a contiguous f32 CPU tensor (under its read lock).
fn values<R>(name: &str, t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> trak::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let refuse = |found: String| Error::InvalidParameter {
        parameter: "optimised tensor",
        value: format!("{name}: {found}"),
        expected: "a contiguous f32 tensor on the CPU".into(),
    };
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => Ok(f(&v[a..b])),
        (Storage::Cpu(CpuStorage::F32(_)), None) => Err(refuse("not contiguous".into())),
        (Storage::Cpu(other), _) => Err(refuse(format!("{:?}", other.dtype()))),
        _ => Err(refuse("not on the CPU".into())),
    }
}
