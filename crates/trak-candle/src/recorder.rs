//! The recorder: the argument through which a network's forward pass routes its attributable
//! layers.
//!
//! A network written for this crate takes a `&mut Recorder` next to its input and calls
//! [`Recorder::linear`] / [`Recorder::conv2d`] instead of `Module::forward` for every linear
//! and convolutional layer. The same forward function then serves three purposes:
//!
//! - **training** ([`Recorder::training`]): layers run exactly as `candle_nn` runs them, with
//!   their weights attached, so an optimizer sees their gradients;
//! - **attribution, per-layer view**: the adapter runs it with the weights *detached* and a
//!   zero-valued [`Var`] (a "tap") added to the output of every selected layer. One backward
//!   pass of Σ_b f_b then gives, for every example b and position t, the tap's gradient
//!   δ_{b,t} = ∂f_b/∂y_{b,t}, while the recorder keeps the layer's input a_{b,t}. Detaching
//!   the weights spares candle the ∂/∂W products that the factors make unnecessary;
//! - **attribution, all parameters**: weights attached, one example per pass (the fallback).
//!
//! Layer names must be unique: each name is one layer with its own weights. A layer called
//! twice, or two layers sharing one weight tensor, is refused
//! ([`trak::Unattributable::SharedWeights`]).

use candle::{DType, Module, Tensor, TensorId, Var};
use candle_nn::{BatchNorm, Conv2d, Linear, ModuleT};

use crate::error::refuse;
use crate::layers::LayerKind;

/// How the forward pass runs (see the module docs).
#[derive(Debug, Clone)]
pub(crate) enum Mode {
    /// Training: layers as candle_nn runs them.
    Training,
    /// Attribution with attached weights (the all-parameter fallback).
    Attached,
    /// Attribution with detached weights; `taps[i]` adds a tap to the i-th layer call
    /// (`None`: no taps, e.g. discovery or Q).
    Detached {
        /// Per layer call, whether to tap it.
        taps: Option<Vec<bool>>,
        /// A constant added to the output of one layer call (the gradient check's step).
        offset: Option<(usize, Tensor)>,
    },
}

impl Mode {
    /// Detached weights, taps where `taps` says, no offset.
    pub(crate) fn detached(taps: Option<Vec<bool>>) -> Self {
        Mode::Detached { taps, offset: None }
    }
}

/// One layer call seen by a detached recorder.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// The layer's name.
    pub name: String,
    /// Linear or conv, with the conv geometry.
    pub kind: LayerKind,
    /// The weight, detached (for shapes and the fingerprint).
    pub weight: Tensor,
    /// The bias, detached.
    pub bias: Option<Tensor>,
    /// Identity of the user's weight tensor (shared-weight check).
    pub weight_id: TensorId,
    /// The layer's input, detached.
    pub input: Tensor,
    /// The layer's output (before the tap), detached.
    pub output: Tensor,
    /// The tap added to the output, if this call is tapped.
    pub tap: Option<Var>,
    /// The other use of the weight, for a layer declared tied ([`Recorder::tied_linear`]).
    pub tied_to: Option<String>,
}

/// Routes a network's layers; see the module docs.
#[derive(Debug)]
pub struct Recorder {
    mode: Mode,
    calls: Vec<Call>,
    refusal: Option<trak::Error>,
}

impl Recorder {
    /// A recorder for training and plain inference: every method is the `candle_nn` layer's
    /// own forward, nothing is recorded.
    pub fn training() -> Self {
        Self::new(Mode::Training)
    }

    pub(crate) fn new(mode: Mode) -> Self {
        Self {
            mode,
            calls: Vec::new(),
            refusal: None,
        }
    }

    /// Whether this pass trains the network (true only for [`Recorder::training`]). Pass it to
    /// layers that behave differently in training, e.g. dropout or [`Recorder::batch_norm`].
    pub fn is_training(&self) -> bool {
        matches!(self.mode, Mode::Training)
    }

    /// The layer calls and the refusal, if any, of a finished pass.
    pub(crate) fn finish(self) -> (Vec<Call>, Option<trak::Error>) {
        (self.calls, self.refusal)
    }

    /// `y = x Wᵀ + b` through `layer`. `x` is `B × d`, or `B × T × d` (or any `B × … × d`):
    /// the middle dimensions are positions sharing the weights.
    pub fn linear(&mut self, name: &str, layer: &Linear, x: &Tensor) -> candle::Result<Tensor> {
        if !self.detached() {
            // A weight that tracks no gradient (a frozen one) gets none computed either.
            let fixed = !layer.weight().track_op() && !layer.bias().is_some_and(Tensor::track_op);
            return match fixed {
                true => crate::frozen::linear(x, layer.weight(), layer.bias()),
                false => layer.forward(x),
            };
        }
        let (w, b) = (layer.weight(), layer.bias());
        self.check_dtype(name, w, x)?;
        // The weights get no gradient: the backward pass computes the input's alone.
        let y = crate::frozen::linear(x, w, b)?;
        self.record(name, LayerKind::Linear, layer.weight(), b, x, y)
    }

    /// [`Recorder::linear`] for a layer whose weight is also used outside the recorder, e.g.
    /// a language model's output head tied to its token embedding (`tied_to` names the other
    /// use). It runs like any layer, but is not attributed by default, and selecting it
    /// ([`crate::CandleModelBuilder::layers`]) is refused with
    /// [`trak::Unattributable::SharedWeights`]: its per-layer factors would give only the
    /// head's part of the tied weight's gradient. The all-parameter fallback
    /// ([`crate::CandleModelBuilder::all_parameters`]) gives the tied weight's whole
    /// gradient (both uses summed).
    pub fn tied_linear(
        &mut self,
        name: &str,
        layer: &Linear,
        x: &Tensor,
        tied_to: &str,
    ) -> candle::Result<Tensor> {
        let y = self.linear(name, layer, x)?;
        if let Some(call) = self.calls.last_mut().filter(|c| c.name == name) {
            call.tied_to = Some(tied_to.to_string());
        }
        Ok(y)
    }

    /// A 2-D convolution through `layer` (`x` is `B × C × H × W`). Grouped and dilated
    /// convolutions are refused ([`trak::Unattributable::Configuration`]).
    pub fn conv2d(&mut self, name: &str, layer: &Conv2d, x: &Tensor) -> candle::Result<Tensor> {
        if !self.detached() {
            return layer.forward(x);
        }
        let cfg = *layer.config();
        if cfg.groups != 1 || cfg.dilation != 1 {
            let what = format!(
                "convolution with groups = {} and dilation = {} (only 1 and 1 are supported)",
                cfg.groups, cfg.dilation
            );
            return self.refuse(name, trak::Unattributable::Configuration { what });
        }
        let (w, b) = (layer.weight(), layer.bias());
        self.check_dtype(name, w, x)?;
        let (_, _, kh, kw) = w.dims4()?;
        let detached = Conv2d::new(w.detach(), b.map(Tensor::detach), cfg);
        let y = detached.forward(x)?;
        let kind = LayerKind::Conv2d {
            kernel: (kh, kw),
            padding: cfg.padding,
            stride: cfg.stride,
        };
        self.record(name, kind, w, b, x, y)
    }

    /// Batch normalisation through `layer`, in training mode iff `train`. Attribution refuses
    /// `train = true` ([`trak::Unattributable::BatchDependent`]): a layer whose output
    /// depends on the rest of the batch has no per-example gradient. Pass
    /// [`Recorder::is_training`] to train and attribute with the same code. Its scale and
    /// shift are not linear-layer weights: only the all-parameter fallback attributes them.
    pub fn batch_norm(
        &mut self,
        name: &str,
        layer: &BatchNorm,
        x: &Tensor,
        train: bool,
    ) -> candle::Result<Tensor> {
        if train && !self.is_training() {
            return self.refuse(name, trak::Unattributable::BatchDependent);
        }
        layer.forward_t(x, train)
    }

    /// A weight the network uses outside the recorded layers (an embedding, a norm's
    /// scale): detached in an attribution pass, whose gradients come from the layer taps
    /// alone, so that the backward pass computes no gradient for it (for a language model's
    /// token embedding, a vocabulary × hidden scatter every pass); `w` itself otherwise.
    pub fn param(&self, w: &Tensor) -> Tensor {
        match self.detached() {
            true => w.detach(),
            false => w.clone(),
        }
    }

    fn detached(&self) -> bool {
        matches!(self.mode, Mode::Detached { .. })
    }

    /// Stops the pass with a refusal the adapter reports as a typed error.
    fn refuse<T>(&mut self, name: &str, reason: trak::Unattributable) -> candle::Result<T> {
        let msg = format!("trak-candle refused layer {name}: {reason}");
        self.refusal.get_or_insert_with(|| refuse(name, reason));
        Err(candle::Error::Msg(msg))
    }

    fn check_dtype(&mut self, name: &str, w: &Tensor, x: &Tensor) -> candle::Result<()> {
        for dtype in [w.dtype(), x.dtype()] {
            if dtype != DType::F32 {
                let found = dtype.as_str().to_string();
                return self.refuse(name, trak::Unattributable::DType { found });
            }
        }
        Ok(())
    }

    /// Records the call and adds its tap, if any.
    fn record(
        &mut self,
        name: &str,
        kind: LayerKind,
        weight: &Tensor,
        bias: Option<&Tensor>,
        x: &Tensor,
        y: Tensor,
    ) -> candle::Result<Tensor> {
        let index = self.calls.len();
        let (tapped, offset) = match &self.mode {
            Mode::Detached { taps, offset } => (
                taps.as_ref()
                    .is_some_and(|t| t.get(index).copied().unwrap_or(false)),
                offset.as_ref().filter(|(i, _)| *i == index).map(|(_, o)| o),
            ),
            _ => (false, None),
        };
        let y = match offset {
            Some(o) => y.add(o)?,
            None => y,
        };
        let tap = if tapped {
            Some(Var::zeros(y.shape(), DType::F32, y.device())?)
        } else {
            None
        };
        let out = match &tap {
            Some(t) => y.add(t.as_tensor())?,
            None => y.clone(),
        };
        self.calls.push(Call {
            name: name.to_string(),
            kind,
            weight: weight.detach(),
            bias: bias.map(Tensor::detach),
            weight_id: weight.id(),
            input: x.detach(),
            output: y.detach(),
            tap,
            tied_to: None,
        });
        Ok(out)
    }
}
