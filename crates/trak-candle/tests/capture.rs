//! The exact route for unmodified models (`capture::VarCapture` + `network::from_fn` + the
//! per-example fallback): a model written against a plain `VarBuilder` gives the same
//! gradients and features as its instrumented twin; candle-transformers' unmodified Llama
//! gives the port's gradients and features where gradients reach (its output head), and a
//! typed refusal naming the weight everywhere else (its fused ops have no backward pass); a
//! weight whose gradient is cut on some paths only fails the finite-difference check.

mod common;

use std::collections::HashMap;

use candle::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder, VarMap};
use candle_transformers::models::llama as reference;
use common::{Fill, grads, rel_err, seed_vars_with};
use trak::output::OutputValue;
use trak::{Error, ProjectorKind, Trak, Unattributable};
use trak_candle::capture::VarCapture;
use trak_candle::models::llama::{Llama, LlamaCheckpoint, LlamaConfig};
use trak_candle::network::from_fn;
use trak_candle::{CandleModel, Network, Objective, Recorder, TokenCollate, TokenSeq};

const VOCAB: usize = 40;
const LEN: usize = 8;

/// f = log p(last token | the others) from the last position's logits (`vocab` wide).
struct LastToken;

impl Objective<TokenSeq> for LastToken {
    fn eval(&self, e: &TokenSeq, z: &[f32], g: &mut [f32]) -> Result<OutputValue, String> {
        let z = &z[z.len() - VOCAB..];
        let y = *e.tokens.last().ok_or("empty sequence")? as usize;
        let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let sum: f32 = z.iter().map(|&v| (v - max).exp()).sum();
        let off = g.len() - VOCAB;
        for (i, &v) in z.iter().enumerate() {
            g[off + i] = (i == y) as u8 as f32 - (v - max).exp() / sum;
        }
        let f = z[y] - max - sum.ln();
        Ok(OutputValue { f, q: 1.0 })
    }
}

/// Sequences of exactly LEN tokens (no padding: candle-transformers' Llama returns the last
/// position's logits, whatever it holds).
fn seqs() -> Vec<TokenSeq> {
    (0..5u32)
        .map(|s| TokenSeq::document((0..LEN as u32).map(|t| (7 * s + 3 * t + 1) % 40).collect()))
        .collect()
}

fn collate() -> TokenCollate {
    TokenCollate {
        context: LEN - 1,
        pad: 0,
    }
}

fn json() -> String {
    format!(
        r#"{{"architectures": ["LlamaForCausalLM"], "vocab_size": {VOCAB}, "hidden_size": 24,
        "intermediate_size": 40, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 16, "rms_norm_eps": 1e-5,
        "rope_theta": 500.0, "hidden_act": "silu", "tie_word_embeddings": false}}"#
    )
}

/// The port, returning the last position's logits like candle-transformers' Llama.
struct LastPosition(Llama);

impl Network for LastPosition {
    fn forward(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
        let z = self.0.forward(x, rec)?;
        z.narrow(1, z.dim(1)? - 1, 1)?.squeeze(1)
    }
}

/// Dense features of one model (same seed and k for every call).
fn features<M: trak::Model<Example = TokenSeq>>(m: &M) -> ndarray::Array2<f32> {
    let trak = Trak::builder()
        .proj_dim(64)
        .projector(ProjectorKind::Rademacher)
        .seed(3)
        .build()
        .unwrap();
    trak.features(0, m, &seqs()).unwrap()
}

/// candle-transformers' unmodified Llama over the port's random weights, through a capture
/// that hands out the weights `select` accepts.
fn captured_reference(
    ckpt: &LlamaCheckpoint,
    select: impl Fn(&str) -> bool + Send + Sync + 'static,
) -> (VarCapture, impl Network) {
    let weights: HashMap<String, Tensor> = ckpt
        .vars()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().copy().unwrap()))
        .collect();
    let capture = VarCapture::new(weights, select);
    let cfg: reference::LlamaConfig = serde_json::from_str(&json()).unwrap();
    let cfg = cfg.into_config(false);
    let model =
        reference::Llama::load(capture.var_builder(DType::F32, &Device::Cpu), &cfg).unwrap();
    let net = from_fn(move |x: &Tensor| {
        let mut cache = reference::Cache::new(false, DType::F32, &cfg, &Device::Cpu)?;
        model.forward(x, 0, &mut cache)
    });
    (capture, net)
}

#[test]
fn candle_transformers_llama_head_equals_the_port_and_the_rest_is_refused_by_name() {
    let ckpt =
        LlamaCheckpoint::random(LlamaConfig::from_json(&json()).unwrap(), 5, &Device::Cpu).unwrap();
    let (capture, net) = captured_reference(&ckpt, |n| n == "lm_head.weight");
    assert_eq!(capture.requests().len(), ckpt.vars().len());
    let route = CandleModel::builder(net, collate(), LastToken)
        .all_parameters(capture.vars())
        .build(&seqs())
        .unwrap();
    let port = CandleModel::builder(LastPosition(ckpt.model().unwrap()), collate(), LastToken)
        .layers(["lm_head"])
        .build(&seqs())
        .unwrap();
    let (g_route, g_port) = (grads(&route, &seqs()), grads(&port, &seqs()));
    let (f_route, f_port) = (features(&route), features(&port));
    let (eg, ef) = (rel_err(&g_port, &g_route), rel_err(&f_port, &f_route));
    eprintln!(
        "CAPTURE_PARITY candle-transformers llama lm_head: gradients {eg:.1e}, features {ef:.1e}"
    );
    assert!(eg < 1e-4 && ef < 1e-4, "gradients {eg}, features {ef}");

    // Every weight below the final norm: gradients stop at candle-nn's fused rms_norm.
    let (capture, net) = captured_reference(&ckpt, |_| true);
    let err = CandleModel::builder(net, collate(), LastToken)
        .all_parameters(capture.vars())
        .build(&seqs())
        .unwrap_err();
    match err {
        Error::Unattributable { layer, reason } => {
            assert_eq!(layer, "model.embed_tokens.weight");
            assert_eq!(reason, Unattributable::NoGradient);
        }
        other => panic!("{other:?}"),
    }
}

/// A small language model written against a plain `VarBuilder`, its forward pass once
/// unmodified and once through the recorder (the instrumented twin).
struct Own {
    emb: Embedding,
    fc1: Linear,
    fc2: Linear,
    head: Linear,
    /// Whether the residual branch goes through candle-nn's fused rms_norm (no backward).
    fused_branch: bool,
}

impl Own {
    fn load(vb: VarBuilder, fused_branch: bool) -> candle::Result<Self> {
        Ok(Self {
            emb: candle_nn::embedding(VOCAB, 16, vb.pp("emb"))?,
            fc1: candle_nn::linear(16, 32, vb.pp("fc1"))?,
            fc2: candle_nn::linear(32, 16, vb.pp("fc2"))?,
            head: candle_nn::linear(16, VOCAB, vb.pp("head"))?,
            fused_branch,
        })
    }

    fn run(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
        let h = self.emb.forward(x)?;
        let a = match self.fused_branch {
            true => candle_nn::ops::rms_norm(&h, &Tensor::ones(16, DType::F32, h.device())?, 1e-5)?,
            false => h.clone(),
        };
        let m = rec.linear("fc1", &self.fc1, &a)?.gelu()?;
        let r = ((h * 0.1)? + rec.linear("fc2", &self.fc2, &m)?)?;
        let z = rec.linear("head", &self.head, &r)?;
        z.narrow(1, z.dim(1)? - 1, 1)?.squeeze(1)?.contiguous()
    }
}

impl Network for Own {
    fn forward(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
        self.run(x, rec)
    }
}

fn own_weights() -> VarMap {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    Own::load(vb, false).unwrap();
    // PyTorch's linear init, the embedding U(±1) (candle's is N(0, 1), unseeded).
    let rule = |name: &str, _: &[usize]| name.starts_with("emb").then_some(Fill::Uniform(1.0));
    seed_vars_with(&map, 0, rule).unwrap();
    map
}

#[test]
fn an_unmodified_model_gives_its_instrumented_twins_gradients_and_features() {
    let map = own_weights();
    let capture = VarCapture::new(map.clone(), |n| !n.starts_with("emb"));
    let own = Own::load(capture.var_builder(DType::F32, &Device::Cpu), false).unwrap();
    let net = from_fn(move |x: &Tensor| own.run(x, &mut Recorder::training()));
    let names: Vec<String> = capture.vars().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "fc1.weight",
            "fc1.bias",
            "fc2.weight",
            "fc2.bias",
            "head.weight",
            "head.bias"
        ]
    );
    let route = CandleModel::builder(net, collate(), LastToken)
        .all_parameters(capture.vars())
        .build(&seqs())
        .unwrap();
    let twin = Own::load(
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
        false,
    )
    .unwrap();
    let twin = CandleModel::builder(twin, collate(), LastToken)
        .build(&seqs())
        .unwrap();
    let eg = rel_err(&grads(&twin, &seqs()), &grads(&route, &seqs()));
    let ef = rel_err(&features(&twin), &features(&route));
    eprintln!("CAPTURE_PARITY own model: gradients {eg:.1e}, features {ef:.1e}");
    assert!(eg < 1e-4 && ef < 1e-4, "gradients {eg}, features {ef}");
}

#[test]
fn a_gradient_cut_on_some_paths_fails_the_finite_difference_check() {
    let map = own_weights();
    let capture = VarCapture::new(map, |_| true);
    let own = Own::load(capture.var_builder(DType::F32, &Device::Cpu), true).unwrap();
    let net = from_fn(move |x: &Tensor| own.run(x, &mut Recorder::training()));
    let vars = capture.vars();
    // The embedding gets a gradient (through the residual), but not the fused branch's part.
    let err = CandleModel::builder(&net, collate(), LastToken)
        .all_parameters(vars.clone())
        .build(&seqs())
        .unwrap_err();
    match &err {
        Error::Unattributable { layer, reason } => {
            assert_eq!(layer, "emb.weight", "{err}");
            assert!(
                matches!(reason, Unattributable::ParameterGradientCheck { .. }),
                "{err}"
            );
        }
        other => panic!("{other:?}"),
    }
    eprintln!("{err}");
    // Without the check the partial gradient would be used: the check is what catches it.
    CandleModel::builder(&net, collate(), LastToken)
        .all_parameters(vars)
        .gradient_check(false)
        .build(&seqs())
        .unwrap();
}
