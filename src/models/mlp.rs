//! Fully connected ReLU network (zero or more hidden layers) with analytic per-example gradients.

use std::borrow::Borrow;

use ndarray::{Array1, Array2, ArrayView1, ArrayViewMut1, ArrayViewMut2, Axis, Zip, s};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{Sample, Target};
use crate::error::{Error, Result, invalid, shape_err};
use crate::model::{FactoredModel, LayerFactors, LinearLayer, Model};
use crate::models::Trainable;
use crate::output::{Logistic, Margin, OutputFn, OutputValue, Regression};

mod hvp;
mod trainable;

pub use hvp::MlpHvp;

/// One affine layer: z = W a + b, with W of shape (out × in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// Weights, `out × in`.
    pub w: Array2<f32>,
    /// Biases, length `out`.
    pub b: Array1<f32>,
}

/// A ReLU multilayer perceptron: `sizes = [d, h_1, …, h_L, c]`, ReLU after every hidden layer,
/// raw outputs z ∈ R^c fed to the output function `O`.
///
/// With `sizes = [d, c]` (no hidden layer) this is a linear model: multinomial logistic
/// regression under [`Margin`], binary logistic regression under [`Logistic`] (c = 1), linear
/// regression under [`Regression`] (c = 1).
///
/// **Parameter layout** (the order of gradient coordinates): for each layer in turn, W
/// row-major (`out × in`), then b. [`Mlp::params_flat`] and [`Mlp::set_params_flat`] use it.
///
/// **Initialisation** (seeded ChaCha8): hidden layers He-uniform, W ~ U(±√(6/in)); the output
/// layer U(±1/√in); biases zero. A model with no hidden layer starts at zero (its loss is
/// convex, and zero is the usual start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mlp<O> {
    layers: Vec<Layer>,
    output: O,
}

/// Activations of a forward pass: `acts[0]` is the input, `acts[l]` the post-ReLU output of
/// hidden layer l, and the last entry the raw outputs z.
struct Forward {
    acts: Vec<Array2<f32>>,
}

impl Mlp<Margin> {
    /// Multinomial logistic regression (`d` inputs, `classes` logits), under the margin.
    pub fn multinomial_logistic(d: usize, classes: usize) -> Result<Self> {
        Self::new(&[d, classes], Margin, 0)
    }
}

impl Mlp<Logistic> {
    /// Binary logistic regression (`d` inputs, one logit).
    pub fn binary_logistic(d: usize) -> Result<Self> {
        Self::new(&[d, 1], Logistic, 0)
    }
}

impl Mlp<Regression> {
    /// Linear least-squares regression (`d` inputs, one prediction).
    pub fn linear_regression(d: usize) -> Result<Self> {
        Self::new(&[d, 1], Regression, 0)
    }
}

impl<O: OutputFn> Mlp<O> {
    /// A network with layer widths `sizes = [d, h_1, …, c]`, initialised from `seed`.
    pub fn new(sizes: &[usize], output: O, seed: u64) -> Result<Self> {
        if sizes.len() < 2 {
            return Err(invalid(
                "MLP layer sizes",
                format!("{sizes:?}"),
                "at least an input and an output size",
            ));
        }
        if sizes.contains(&0) {
            return Err(invalid(
                "MLP layer sizes",
                format!("{sizes:?}"),
                "positive sizes",
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n_layers = sizes.len() - 1;
        let layers = (0..n_layers)
            .map(|l| {
                let (fan_in, fan_out) = (sizes[l], sizes[l + 1]);
                let bound = if n_layers == 1 {
                    0.0
                } else if l + 1 < n_layers {
                    (6.0 / fan_in as f32).sqrt()
                } else {
                    1.0 / (fan_in as f32).sqrt()
                };
                let w = Array2::from_shape_simple_fn((fan_out, fan_in), || {
                    if bound == 0.0 {
                        0.0
                    } else {
                        rng.random_range(-bound..bound)
                    }
                });
                Layer {
                    w,
                    b: Array1::zeros(fan_out),
                }
            })
            .collect();
        Ok(Self { layers, output })
    }

    /// Builds a network from explicit layers (checked for consistent shapes and finite values).
    pub fn from_layers(layers: Vec<Layer>, output: O) -> Result<Self> {
        let m = Self { layers, output };
        m.check_shapes()?;
        m.check_finite()?;
        Ok(m)
    }

    /// Checks that consecutive layers fit together (a deserialised model is not validated
    /// otherwise).
    pub(crate) fn check_shapes(&self) -> Result<()> {
        if self.layers.is_empty() {
            return Err(Error::Empty("MLP layers"));
        }
        for (l, layer) in self.layers.iter().enumerate() {
            if layer.b.len() != layer.w.nrows() {
                return Err(shape_err("layer bias", layer.w.nrows(), layer.b.len()));
            }
            if layer.w.is_empty() {
                return Err(shape_err(
                    "layer weights",
                    "a non-empty matrix",
                    format!("layer {l}: 0 × 0"),
                ));
            }
            if l > 0 && layer.w.ncols() != self.layers[l - 1].w.nrows() {
                return Err(shape_err(
                    "layer input width",
                    self.layers[l - 1].w.nrows(),
                    layer.w.ncols(),
                ));
            }
        }
        Ok(())
    }

    fn check_finite(&self) -> Result<()> {
        if let Some(index) = self.params_flat().iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFiniteInput {
                what: "model parameters",
                index,
            });
        }
        Ok(())
    }

    /// Layer widths `[d, h_1, …, c]`.
    pub fn sizes(&self) -> Vec<usize> {
        let mut s = vec![self.input_dim()];
        s.extend(self.layers.iter().map(|l| l.w.nrows()));
        s
    }

    /// Input dimension d.
    pub fn input_dim(&self) -> usize {
        self.layers.first().map_or(0, |l| l.w.ncols())
    }

    /// Number of raw outputs c.
    pub fn output_dim(&self) -> usize {
        self.layers.last().map_or(0, |l| l.w.nrows())
    }

    /// The layers, input first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The output function.
    pub fn output_fn(&self) -> &O {
        &self.output
    }

    /// All parameters in the documented layout.
    pub fn params_flat(&self) -> Vec<f32> {
        let mut v = vec![0.0; self.param_count()];
        Trainable::read_params(self, &mut v);
        v
    }

    /// Overwrites all parameters from the documented layout.
    pub fn set_params_flat(&mut self, params: &[f32]) -> Result<()> {
        if params.len() != self.param_count() {
            return Err(shape_err(
                "flat parameters",
                self.param_count(),
                params.len(),
            ));
        }
        if let Some(index) = params.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFiniteInput {
                what: "flat parameters",
                index,
            });
        }
        Trainable::write_params(self, params);
        Ok(())
    }

    fn param_count(&self) -> usize {
        self.layers.iter().map(|l| l.w.len() + l.b.len()).sum()
    }

    /// Stacks the inputs of `batch` into a `B × d` matrix, checking lengths, finiteness and
    /// targets against the output function. `first` is the index of `batch[0]` in the caller's
    /// set, used in error messages.
    fn gather<S: Borrow<Sample>>(&self, batch: &[S], first: usize) -> Result<Array2<f32>> {
        self.check_shapes()?;
        let mut x = Array2::zeros((batch.len(), self.input_dim()));
        for (b, (mut row, s)) in x.rows_mut().into_iter().zip(batch).enumerate() {
            let s = s.borrow();
            self.check_sample(s, first + b)?;
            row.assign(&ArrayView1::from(&s.x[..]));
        }
        Ok(x)
    }

    /// Checks one example (example `index` of the caller's set) against the network: input
    /// length, finite inputs, and its target against the output function (a class below the
    /// output count for the margin, 0 or 1 for binary logistic).
    pub(crate) fn check_sample(&self, s: &Sample, index: usize) -> Result<()> {
        let d = self.input_dim();
        if s.x.len() != d {
            return Err(shape_err("example input length", d, s.x.len()));
        }
        if let Some(i) = s.x.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFiniteInput {
                what: "example input",
                index: index * d + i,
            });
        }
        self.output
            .validate(self.output_dim(), &s.target)
            .map_err(|reason| Error::InvalidTarget {
                example: index,
                reason,
            })
    }

    fn forward(&self, x: Array2<f32>) -> Forward {
        let n_layers = self.layers.len();
        let mut acts = Vec::with_capacity(n_layers + 1);
        acts.push(x);
        for (l, layer) in self.layers.iter().enumerate() {
            let mut z = acts[l].dot(&layer.w.t());
            z += &layer.b;
            if l + 1 < n_layers {
                z.mapv_inplace(|v| v.max(0.0));
            }
            acts.push(z);
        }
        Forward { acts }
    }

    /// Back-propagates `delta` (∂·/∂z of the last layer, B × c) to every layer's output,
    /// returning δ_l for l = 0..L (δ_l is ∂·/∂(pre-activation of layer l), B × out_l).
    fn backward(&self, fwd: &Forward, delta: Array2<f32>) -> Vec<Array2<f32>> {
        let n_layers = self.layers.len();
        let mut deltas = vec![Array2::zeros((0, 0)); n_layers];
        deltas[n_layers - 1] = delta;
        for l in (1..n_layers).rev() {
            let mut d = deltas[l].dot(&self.layers[l].w);
            Zip::from(&mut d).and(&fwd.acts[l]).for_each(|d, &a| {
                if a <= 0.0 {
                    *d = 0.0
                }
            });
            deltas[l - 1] = d;
        }
        deltas
    }

    /// Raw outputs z (`n × c`) for a set of samples.
    pub fn logits(&self, samples: &[Sample]) -> Result<Array2<f32>> {
        let x = self.gather(samples, 0)?;
        Ok(self.forward(x).acts.pop().expect("at least one layer"))
    }

    /// The output function's f and Q at each sample.
    pub fn outputs(&self, samples: &[Sample]) -> Result<Vec<OutputValue>> {
        let z = self.logits(samples)?;
        let mut g = vec![0.0; self.output_dim()];
        Ok(z.rows()
            .into_iter()
            .zip(samples)
            .map(|(z, s)| {
                self.output
                    .eval(z.as_slice().expect("standard layout"), &s.target, &mut g)
            })
            .collect())
    }

    /// Fraction of samples whose arg-max output equals their class label (for c ≥ 2), or
    /// whose sign matches the label (c = 1, class 1 ⇔ z > 0).
    pub fn accuracy(&self, samples: &[Sample]) -> Result<f64> {
        if samples.is_empty() {
            return Err(Error::Empty("samples"));
        }
        let z = self.logits(samples)?;
        let correct = z
            .rows()
            .into_iter()
            .zip(samples)
            .filter(|(z, s)| {
                let pred = if z.len() == 1 {
                    usize::from(z[0] > 0.0)
                } else {
                    z.iter()
                        .enumerate()
                        .fold((0, f32::NEG_INFINITY), |best, (j, &v)| {
                            if v > best.1 { (j, v) } else { best }
                        })
                        .0
                };
                s.target == Target::Class(pred)
            })
            .count();
        Ok(correct as f64 / samples.len() as f64)
    }

    /// Mean training loss over `batch` and its gradient w.r.t. all parameters (documented
    /// layout), written into `grad`. Used by [`crate::models::Sgd`].
    pub fn loss_and_grad<S: Borrow<Sample>>(&self, batch: &[S], grad: &mut [f32]) -> Result<f32> {
        self.weighted_loss_and_grad(batch, |_| 1.0, grad)
    }

    /// (1/|B|) Σ_b w_b ℓ_b over `batch` (w_b = `weight(b)`) and its gradient, written into
    /// `grad`. A weight of 1 multiplies exactly, so all-ones weights give
    /// [`Mlp::loss_and_grad`]'s bits.
    pub(crate) fn weighted_loss_and_grad<S: Borrow<Sample>>(
        &self,
        batch: &[S],
        weight: impl Fn(usize) -> f32,
        grad: &mut [f32],
    ) -> Result<f32> {
        if batch.is_empty() {
            return Err(Error::Empty("training batch"));
        }
        if grad.len() != self.param_count() {
            return Err(shape_err("gradient buffer", self.param_count(), grad.len()));
        }
        let fwd = self.forward(self.gather(batch, 0)?);
        let (mut delta, losses) = self.loss_gradients(&fwd, batch);
        let inv_b = 1.0 / batch.len() as f32;
        let mut total = 0.0f64;
        for (b, (mut d, loss)) in delta.rows_mut().into_iter().zip(losses).enumerate() {
            let w = weight(b);
            total += w as f64 * loss as f64;
            let scale = w * inv_b;
            d.iter_mut().for_each(|v| *v *= scale);
        }
        let deltas = self.backward(&fwd, delta);
        let mut off = 0;
        for (l, layer) in self.layers.iter().enumerate() {
            let (o, i) = layer.w.dim();
            let gw = deltas[l].t().dot(&fwd.acts[l]);
            grad[off..off + o * i].copy_from_slice(gw.as_slice().expect("standard layout"));
            off += o * i;
            let gb = deltas[l].sum_axis(Axis(0));
            grad[off..off + o].copy_from_slice(gb.as_slice().expect("standard layout"));
            off += o;
        }
        Ok((total / batch.len() as f64) as f32)
    }

    /// Each example's training loss and its gradient ∂ℓ/∂z at the logits of `fwd` (one row
    /// per example of `batch`).
    fn loss_gradients<S: Borrow<Sample>>(
        &self,
        fwd: &Forward,
        batch: &[S],
    ) -> (Array2<f32>, Vec<f32>) {
        let z = fwd.acts.last().expect("at least one layer");
        let mut dl = Array2::zeros(z.raw_dim());
        let mut losses = Vec::with_capacity(batch.len());
        for ((z, mut d), s) in z.rows().into_iter().zip(dl.rows_mut()).zip(batch) {
            let z = z.as_slice().expect("standard layout");
            let d = d.as_slice_mut().expect("standard layout");
            losses.push(self.output.loss(z, &s.borrow().target, d));
        }
        (dl, losses)
    }
}

impl<O: OutputFn> Model for Mlp<O> {
    type Example = Sample;

    fn num_params(&self) -> usize {
        self.param_count()
    }

    fn factored(&self) -> Option<&dyn FactoredModel<Sample>> {
        Some(self)
    }

    /// xxh3-64 of the layer sizes and the exact bits of every parameter.
    fn fingerprint(&self) -> Option<u64> {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for s in self.sizes() {
            h.update(&(s as u64).to_le_bytes());
        }
        for v in self.params_flat() {
            h.update(&v.to_bits().to_le_bytes());
        }
        Some(h.digest())
    }

    fn output_grads(&self, batch: &[Sample], mut grads: ArrayViewMut2<'_, f32>) -> Result<()> {
        let p = self.param_count();
        if grads.dim() != (batch.len(), p) {
            return Err(shape_err(
                "gradient buffer",
                format!("{} × {p}", batch.len()),
                format!("{:?}", grads.dim()),
            ));
        }
        if batch.is_empty() {
            return Ok(());
        }
        let (fwd, deltas) = self.output_backward(batch)?;
        // Per-example outer products δ_l aᵀ_{l-1}, one row of `grads` per example.
        grads
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(b, mut row)| {
                let mut off = 0;
                for (l, layer) in self.layers.iter().enumerate() {
                    let (o, i) = layer.w.dim();
                    let a = fwd.acts[l].row(b);
                    let d = deltas[l].row(b);
                    for (j, &dj) in d.iter().enumerate() {
                        let mut dst = row.slice_mut(s![off + j * i..off + (j + 1) * i]);
                        Zip::from(&mut dst).and(&a).for_each(|g, &a| *g = dj * a);
                    }
                    off += o * i;
                    row.slice_mut(s![off..off + o]).assign(&d);
                    off += o;
                }
            });
        Ok(())
    }

    fn output_q(&self, batch: &[Sample], mut q: ArrayViewMut1<'_, f32>) -> Result<()> {
        if q.len() != batch.len() {
            return Err(shape_err("Q buffer", batch.len(), q.len()));
        }
        for (q, v) in q.iter_mut().zip(self.outputs(batch)?) {
            *q = v.q;
        }
        Ok(())
    }

    /// r from the output function's [`OutputFn::curvature`] at each example's logits.
    fn output_curvature(&self, batch: &[Sample], mut r: ArrayViewMut1<'_, f32>) -> Result<()> {
        if r.len() != batch.len() {
            return Err(shape_err("curvature buffer", batch.len(), r.len()));
        }
        let z = self.logits(batch)?;
        for ((r, z), s) in r.iter_mut().zip(z.rows()).zip(batch) {
            let z = z.as_slice().expect("standard layout");
            *r = self
                .output
                .curvature(z, &s.target)
                .ok_or(Error::NoCurvature)?;
        }
        Ok(())
    }
}

impl<O: OutputFn> Mlp<O> {
    /// Forward pass and back-propagation of ∂f/∂z for a batch: activations and, per layer, the
    /// gradient of the output function with respect to the layer's pre-activations.
    fn output_backward(&self, batch: &[Sample]) -> Result<(Forward, Vec<Array2<f32>>)> {
        let (fwd, deltas, _) = self.output_backward_q(batch)?;
        Ok((fwd, deltas))
    }
}

impl<O: OutputFn> Mlp<O> {
    /// The forward pass, every layer's δ and each example's Q (from the same logits as
    /// [`Model::output_q`], so bit-identical to it).
    fn output_backward_q(&self, batch: &[Sample]) -> Result<(Forward, Vec<Array2<f32>>, Vec<f32>)> {
        let fwd = self.forward(self.gather(batch, 0)?);
        let z = fwd.acts.last().expect("at least one layer");
        let mut delta = Array2::zeros(z.raw_dim());
        let mut q = Vec::with_capacity(batch.len());
        for ((z, mut d), s) in z.rows().into_iter().zip(delta.rows_mut()).zip(batch) {
            let v = self.output.eval(
                z.as_slice().expect("standard layout"),
                &s.target,
                d.as_slice_mut().expect("standard layout"),
            );
            q.push(v.q);
        }
        let deltas = self.backward(&fwd, delta);
        Ok((fwd, deltas, q))
    }
}

/// Each layer z = W a + b is a linear layer of shape `out × (in + 1)`: the bias is the weight
/// of a constant-1 input appended after the layer's inputs.
impl<O: OutputFn> FactoredModel<Sample> for Mlp<O> {
    fn linear_layers(&self) -> Vec<LinearLayer> {
        self.layers
            .iter()
            .map(|l| LinearLayer {
                out_dim: l.w.nrows(),
                in_dim: l.w.ncols() + 1,
            })
            .collect()
    }

    fn layer_factors(&self, batch: &[Sample]) -> Result<Vec<LayerFactors>> {
        let mut q = vec![0.0; batch.len()];
        Ok(self
            .layer_factors_and_q(batch, ArrayViewMut1::from(&mut q[..]))?
            .0)
    }

    fn layer_factors_and_q(
        &self,
        batch: &[Sample],
        mut q: ArrayViewMut1<'_, f32>,
    ) -> Result<(Vec<LayerFactors>, bool)> {
        if q.len() != batch.len() {
            return Err(shape_err("Q buffer", batch.len(), q.len()));
        }
        if batch.is_empty() {
            let empty = |l: &LinearLayer| LayerFactors {
                positions: 1,
                acts: Array2::zeros((0, l.in_dim)),
                deltas: Array2::zeros((0, l.out_dim)),
            };
            return Ok((self.linear_layers().iter().map(empty).collect(), true));
        }
        let (fwd, deltas, qs) = self.output_backward_q(batch)?;
        q.iter_mut().zip(qs).for_each(|(d, v)| *d = v);
        let factors = deltas
            .into_iter()
            .enumerate()
            .map(|(l, deltas)| {
                let a = &fwd.acts[l];
                let mut acts = Array2::ones((a.nrows(), a.ncols() + 1));
                acts.slice_mut(s![.., ..a.ncols()]).assign(a);
                LayerFactors {
                    positions: 1,
                    acts,
                    deltas,
                }
            })
            .collect();
        Ok((factors, true))
    }
}
