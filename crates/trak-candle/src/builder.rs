//! [`CandleModelBuilder`]: validates the settings, discovers the layers from one forward pass
//! and checks what the adapter cannot attribute.

use std::marker::PhantomData;

use candle::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use trak::{Error, Unattributable};

use crate::collate::Collate;
use crate::error::{CandleContext, refuse};
use crate::layers::{LayerInfo, check_distinct, fingerprint, hash_tensor, select};
use crate::model::{CandleModel, Params};
use crate::network::Network;
use crate::objective::Objective;
use crate::pass::{forward, padded_inputs, to_vec};
use crate::recorder::{Call, Mode};

/// Default rows per chunk: every chunk is padded to this many examples.
pub const DEFAULT_CHUNK_ROWS: usize = 64;

/// Builds a [`CandleModel`]; see [`CandleModel::builder`].
pub struct CandleModelBuilder<E, N, C, O> {
    net: N,
    collate: C,
    output: O,
    device: Device,
    layers: Option<Vec<String>>,
    all: Option<Vec<(String, Var)>>,
    chunk_rows: usize,
    gradient_check: bool,
    _example: PhantomData<fn(&E)>,
}

impl<E, N, C, O> CandleModel<E, N, C, O>
where
    E: Sync,
    N: Network,
    C: Collate<E>,
    O: Objective<E>,
{
    /// Starts a builder for `net`, whose examples `collate` turns into tensors, attributing
    /// the objective `output` of its raw outputs (any [`trak::output::OutputFn`] for
    /// [`trak::data::Sample`]s; see [`crate::objective`]). Defaults: every linear/conv layer,
    /// chunks of [`DEFAULT_CHUNK_ROWS`] examples, the CPU.
    pub fn builder(net: N, collate: C, output: O) -> CandleModelBuilder<E, N, C, O> {
        CandleModelBuilder {
            net,
            collate,
            output,
            device: Device::Cpu,
            layers: None,
            all: None,
            chunk_rows: DEFAULT_CHUNK_ROWS,
            gradient_check: true,
            _example: PhantomData,
        }
    }
}

impl<E, N, C, O> CandleModelBuilder<E, N, C, O>
where
    E: Sync,
    N: Network,
    C: Collate<E>,
    O: Objective<E>,
{
    /// Attributes only the named layers (recorder names). The other layers still run and
    /// carry gradients through, but get no tap and no parameters.
    pub fn layers<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.layers = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Attributes every listed variable (norms and embeddings included) through one
    /// backward pass per example; see [`crate::fallback`]. The network must compute with
    /// these very variables (e.g. built by `VarBuilder::from_varmap`).
    pub fn all_parameters(mut self, vars: Vec<(String, Var)>) -> Self {
        self.all = Some(vars);
        self
    }

    /// [`CandleModelBuilder::all_parameters`] with every variable of `map`, sorted by name.
    pub fn all_parameters_of(self, map: &VarMap) -> Self {
        let data = map.data().lock().expect("VarMap lock poisoned");
        let mut vars: Vec<(String, Var)> =
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        drop(data);
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        self.all_parameters(vars)
    }

    /// Examples per chunk (≥ 1). Each chunk is one padded forward/backward pass; results do
    /// not depend on it being a divisor of anything, only features computed with the same
    /// value are bit-identical.
    pub fn chunk_rows(mut self, rows: usize) -> Self {
        self.chunk_rows = rows;
        self
    }

    /// Whether `build` checks candle's backward pass against finite differences at every
    /// attributed layer (default: yes; see [`crate::gradcheck`]), and, with
    /// [`CandleModelBuilder::all_parameters`], every variable's gradient on the first probe
    /// example. The check costs two forward passes of one chunk per layer, and up to six
    /// forward passes of one example per variable.
    pub fn gradient_check(mut self, on: bool) -> Self {
        self.gradient_check = on;
        self
    }

    /// The device the passes run on (default: CPU).
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// Discovers the layers on `probe` (a few examples; with two or more distinct ones the
    /// builder also checks that outputs do not depend on the rest of the batch), checks the
    /// backward pass at every attributed layer ([`crate::gradcheck`]) and everything else it
    /// can before any featurisation.
    pub fn build(self, probe: &[E]) -> trak::Result<CandleModel<E, N, C, O>> {
        self.check_settings(probe)?;
        let rows = self.chunk_rows;
        let chunk = &probe[..probe.len().min(rows)];
        let x = padded_inputs(
            (&self.collate, &self.output),
            chunk,
            (rows, 0),
            &self.device,
        )?;
        let mode = Mode::detached(None);
        let (z, calls) = forward(&self.net, &x, mode, "the discovery forward pass")?;
        check_finite(&calls, &z, chunk.len())?;
        if let Err(expected) = self.output.check_outputs(z.dims()) {
            let got = format!("{:?}", z.dims());
            let what = "network output (for the objective)";
            return Err(Error::ShapeMismatch {
                what,
                expected,
                got,
            });
        }
        check_distinct(&calls)?;
        if chunk.len() >= 2 {
            self.check_batch_independent(&calls, &z, chunk)?;
        }
        let layers = calls
            .iter()
            .map(|c| LayerInfo::from_call(c, rows))
            .collect::<candle::Result<Vec<_>>>()
            .ctx("describing the layers")?;
        if layers.is_empty() && self.all.is_none() {
            return Err(Error::Empty(
                "attributable layers (the forward pass routed no layer through the Recorder)",
            ));
        }
        let mask = select(&layers, self.layers.as_deref())?;
        if self.gradient_check {
            let (net, output) = (&self.net, &self.output);
            let x = crate::gradcheck::jitter(&x)?;
            let check = crate::gradcheck::Check {
                net,
                output,
                chunk,
                x: &x,
            };
            check.run(&mask)?;
        }
        let fp = fingerprint(&calls, &mask).ctx("fingerprinting the weights")?;
        self.finish(layers, mask, fp, probe)
    }

    fn check_settings(&self, probe: &[E]) -> trak::Result<()> {
        if probe.is_empty() {
            return Err(Error::Empty("probe examples"));
        }
        if self.chunk_rows == 0 {
            return Err(Error::InvalidParameter {
                parameter: "chunk_rows",
                value: "0".into(),
                expected: "≥ 1".into(),
            });
        }
        if let Some(pad) = self.collate.padding()
            && let Err(reason) = self.output.check(&pad)
        {
            return Err(Error::InvalidParameter {
                parameter: "padding of the collation",
                value: reason,
                expected: "padding the objective accepts (e.g. a pad token in the vocabulary)"
                    .into(),
            });
        }
        if self.layers.is_some() && self.all.is_some() {
            return Err(Error::InvalidParameter {
                parameter: "parameters",
                value: "both a layer subset and all parameters".into(),
                expected: "one of layers(…) or all_parameters(…)".into(),
            });
        }
        Ok(())
    }

    /// The first example's outputs of every layer, computed inside `chunk` and alone, agree
    /// (up to rounding): otherwise some op between two recorded layers mixes examples.
    fn check_batch_independent(&self, calls: &[Call], z: &Tensor, chunk: &[E]) -> trak::Result<()> {
        let pair = (&self.collate, &self.output);
        let x1 = padded_inputs(pair, &chunk[..1], (self.chunk_rows, 0), &self.device)?;
        let mode = Mode::detached(None);
        let (z1, calls1) = forward(&self.net, &x1, mode, "the batch-independence check")?;
        let mut prev = "the network input".to_string();
        let pairs = calls.iter().zip(&calls1);
        for (a, b) in pairs {
            if !same_first_row(&a.input, &b.input)? {
                return Err(refuse(
                    &format!("between {prev} and {}", a.name),
                    Unattributable::BatchDependent,
                ));
            }
            prev = a.name.clone();
        }
        if !same_first_row(z, &z1)? {
            return Err(refuse(
                &format!("after {prev}"),
                Unattributable::BatchDependent,
            ));
        }
        Ok(())
    }

    fn finish(
        self,
        layers: Vec<LayerInfo>,
        mask: Vec<bool>,
        fp: u64,
        probe: &[E],
    ) -> trak::Result<CandleModel<E, N, C, O>> {
        let (params, fp) = match self.all {
            None => (Params::Layers, fp),
            Some(vars) => {
                let fp = check_vars(&vars)?;
                (Params::All(vars), fp)
            }
        };
        let mut model = CandleModel {
            net: self.net,
            collate: self.collate,
            output: self.output,
            device: self.device,
            layers,
            mask,
            params,
            chunk_rows: self.chunk_rows,
            fingerprint: fp,
            pass_bytes: 0,
            _example: PhantomData,
        };
        if let Params::All(vars) = &model.params {
            check_vars_used(&model, vars, &probe[0], self.gradient_check)?;
        }
        model.pass_bytes = model.measure_pass(probe)?;
        Ok(model)
    }
}

/// The batch-independence check's tolerance, relative to the row's largest magnitude
/// (candle's batched kernels round differently from its small-batch ones, so bit equality is
/// not expected).
const BATCH_TOLERANCE: f32 = 1e-4;

/// Whether row 0 of two tensors agrees to [`BATCH_TOLERANCE`] (the comparison of
/// [`trak::model::batch_check`]).
fn same_first_row(a: &Tensor, b: &Tensor) -> trak::Result<bool> {
    let row = |t: &Tensor| t.narrow(0, 0, 1).and_then(|r| to_vec(&r));
    let (a, b) = (
        row(a).ctx("reading the check")?,
        row(b).ctx("reading the check")?,
    );
    Ok(trak::model::batch_check::first_disagreement(&a, &b, BATCH_TOLERANCE).is_none())
}

/// Every layer's output and the network's on the probe's `n` real examples are finite:
/// otherwise [`Unattributable::NonFinite`] names the first layer whose output is not (a NaN
/// weight, or a NaN input), before any batch-independence or gradient check can misread it.
fn check_finite(calls: &[Call], z: &Tensor, n: usize) -> trak::Result<()> {
    let outputs = calls.iter().map(|c| (c.name.clone(), &c.output));
    let last = calls
        .last()
        .map_or("the network input".into(), |c| c.name.clone());
    let net = std::iter::once((format!("the network output (after {last})"), z));
    for (name, t) in outputs.chain(net) {
        let v = t.narrow(0, 0, n).and_then(|r| to_vec(&r));
        let v = v.ctx("reading a layer output")?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            let per = (v.len() / n).max(1);
            let reason = Unattributable::NonFinite {
                example: i / per,
                entry: i % per,
            };
            return Err(refuse(&name, reason));
        }
    }
    Ok(())
}

/// Variables of the fallback: f32, non-empty, distinct; their fingerprint.
fn check_vars(vars: &[(String, Var)]) -> trak::Result<u64> {
    if vars.is_empty() {
        return Err(Error::Empty("parameters of all_parameters"));
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (i, (name, v)) in vars.iter().enumerate() {
        if v.dtype() != DType::F32 {
            let found = v.dtype().as_str().to_string();
            return Err(refuse(name, Unattributable::DType { found }));
        }
        if let Some((other, _)) = vars[..i].iter().find(|(_, w)| w.id() == v.id()) {
            let with = other.clone();
            return Err(refuse(name, Unattributable::SharedWeights { with }));
        }
        h.update(name.as_bytes());
        hash_tensor(&mut h, v.as_tensor()).ctx("fingerprinting the parameters")?;
    }
    Ok(h.digest())
}

/// Every listed variable must receive a gradient on the probe example: one that does not is
/// not a variable the network computes with (e.g. weights loaded as plain tensors), or sits
/// behind ops without a backward pass. With `gradient_check`, each gradient is then checked
/// against finite differences ([`crate::gradcheck::check_params`]).
fn check_vars_used<E, N, C, O>(
    m: &CandleModel<E, N, C, O>,
    vars: &[(String, Var)],
    e: &E,
    gradient_check: bool,
) -> trak::Result<()>
where
    E: Sync,
    N: Network,
    C: Collate<E>,
    O: Objective<E>,
{
    let p: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let mut row = ndarray::Array1::zeros(p);
    let used = crate::fallback::example(m, vars, e, 0, row.view_mut())?;
    if let Some(((name, _), _)) = vars.iter().zip(used).find(|(_, u)| !u) {
        return Err(refuse(name, Unattributable::NoGradient));
    }
    if !gradient_check {
        return Ok(());
    }
    let f = || -> trak::Result<f64> {
        let pair = (&m.collate, &m.output);
        let x = padded_inputs(pair, std::slice::from_ref(e), (1, 0), &m.device)?;
        let (z, _) = forward(&m.net, &x, Mode::Attached, "the parameter gradient check")?;
        let (_, values) = crate::pass::eval_outputs(&m.output, &z, std::slice::from_ref(e), 0)?;
        Ok(values[0].f as f64)
    };
    let row = row.as_slice().expect("a fresh array is contiguous");
    crate::gradcheck::check_params(&f, vars, row)
}
