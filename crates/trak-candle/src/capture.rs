//! The exact route for candle models nobody instrumented: [`VarCapture`], a `VarBuilder`
//! backend that hands out a model's weights, records every one the model asks for, and hands
//! out the chosen ones as fresh [`Var`]s; [`crate::network::from_fn`] wraps the model's
//! unmodified forward pass; [`crate::CandleModelBuilder::all_parameters`] then takes
//! [`VarCapture::vars`] and computes each example's exact gradient of those weights with one
//! backward pass per example ([`crate::fallback`]).
//!
//! ```
//! use candle::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap, linear};
//! use trak::data::Dataset;
//! use trak::output::Margin;
//! use trak_candle::capture::VarCapture;
//! use trak_candle::network::from_fn;
//! use trak_candle::{CandleModel, SampleCollate};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Weights from anywhere a VarBuilder reads (safetensors, a VarMap, …).
//! let map = VarMap::new();
//! let init = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
//! let _ = (linear(8, 16, init.pp("fc1"))?, linear(16, 3, init.pp("fc2"))?);
//!
//! // The model's own loading code, unchanged, through the capturing builder.
//! let capture = VarCapture::new(map, |name| name.starts_with("fc2"));
//! let vb = capture.var_builder(DType::F32, &Device::Cpu);
//! let (fc1, fc2) = (linear(8, 16, vb.pp("fc1"))?, linear(16, 3, vb.pp("fc2"))?);
//! let net = from_fn(move |x: &Tensor| fc2.forward(&fc1.forward(x)?.relu()?));
//!
//! let data = Dataset::blobs(20, 8, 3, 0)?;
//! let samples = data.samples();
//! let model = CandleModel::builder(net, SampleCollate::new(&[8]), Margin)
//!     .all_parameters(capture.vars())
//!     .build(&samples[..4])?;
//! assert_eq!(trak::Model::num_params(&model), 16 * 3 + 3); // fc2's weight and bias
//! assert_eq!(capture.requests().len(), 4);
//! # Ok(())
//! # }
//! ```
//!
//! **Cost and when to prefer an instrumented network.** One forward and one backward pass per
//! example, with every weight's gradient formed, against one batched pass per chunk for a
//! network that routes its layers through a [`crate::Recorder`] (whose factored projector
//! never forms a gradient). On the Llama port the per-example route is tens of times slower
//! (see the crate's PERFORMANCE notes): use it for models nobody instrumented, for
//! parameters the per-layer view cannot reach (norms, embeddings), and to check an
//! instrumented port against the model it ports.
//!
//! **Ops without a backward pass.** candle-nn 0.11's fused `rms_norm`, `layer_norm`,
//! `softmax_last_dim`, `rope`, `rope_i` and `rope_thd` have no backward pass: gradients stop
//! at them without an error, and every language model of candle-transformers 0.11 calls some
//! of them. The builder therefore refuses a captured weight that gets no gradient
//! ([`trak::Unattributable::NoGradient`]), and checks every captured weight's gradient
//! against finite differences ([`crate::gradcheck`]), so that a weight whose gradient is cut
//! on some paths only is refused too ([`trak::Unattributable::GradientCheck`]) instead of
//! being attributed with a partial gradient.

use std::sync::{Arc, Mutex, MutexGuard};

use candle::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

/// One weight the model asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its full name (`model.layers.0.mlp.down_proj.weight`).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Whether it was handed out as a variable.
    pub selected: bool,
}

type Select = dyn Fn(&str) -> bool + Send + Sync;

struct State {
    source: Box<dyn SimpleBackend>,
    select: Box<Select>,
    requests: Vec<Request>,
    vars: Vec<(String, Var)>,
}

/// Records the weights a model loads from a `VarBuilder` and hands the selected ones out as
/// variables (see the [module docs](self)). Clones share the record.
#[derive(Clone)]
pub struct VarCapture {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for VarCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VarCapture")
            .field("requests", &self.lock().requests)
            .finish_non_exhaustive()
    }
}

impl VarCapture {
    /// Hands out the weights of `source` (any candle `SimpleBackend`: a `VarMap`, a
    /// `HashMap<String, Tensor>`, mmapped safetensors, …); those whose full name `select`
    /// accepts become fresh variables (copies of the source's values).
    pub fn new(
        source: impl SimpleBackend + 'static,
        select: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        let state = State {
            source: Box::new(source),
            select: Box::new(select),
            requests: Vec::new(),
            vars: Vec::new(),
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// A `VarBuilder` over this capture, to give the model's loading code.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(Capturing(self.clone())), dtype, device.clone())
    }

    /// Every weight asked for so far, in order (a name asked for again is listed once).
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// The selected weights as variables, in the order the model asked for them: the
    /// parameters for [`crate::CandleModelBuilder::all_parameters`].
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.lock().vars.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic inside a backend call leaves the record as it was: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fetches `name` from the source (by `fetch`), records it, and wraps it as a variable
    /// when selected. A name asked for again gets the same tensor (the same variable).
    fn hand_out(
        &self,
        name: &str,
        fetch: impl FnOnce(&dyn SimpleBackend) -> candle::Result<Tensor>,
    ) -> candle::Result<Tensor> {
        let mut st = self.lock();
        if let Some((_, v)) = st.vars.iter().find(|(n, _)| n == name) {
            return Ok(v.as_tensor().clone());
        }
        let t = fetch(st.source.as_ref())?;
        let selected = (st.select)(name);
        if !st.requests.iter().any(|r| r.name == name) {
            st.requests.push(Request {
                name: name.to_string(),
                shape: t.dims().to_vec(),
                selected,
            });
        }
        if !selected {
            return Ok(t);
        }
        let v = Var::from_tensor(&t.detach())?;
        st.vars.push((name.to_string(), v.clone()));
        Ok(v.as_tensor().clone())
    }
}

/// The backend handed to the `VarBuilder`.
struct Capturing(VarCapture);

impl SimpleBackend for Capturing {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle::Result<Tensor> {
        self.0.hand_out(name, |b| b.get(s, name, h, dtype, dev))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle::Result<Tensor> {
        self.0.hand_out(name, |b| b.get_unchecked(name, dtype, dev))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.lock().source.contains_tensor(name)
    }
}
