//! A tiny causal transformer in candle (pre-norm blocks: multi-head attention and a ReLU MLP),
//! with every linear layer routed through the recorder, seeded initialisation and AdamW
//! training on token sequences.

// Shared by several examples and tests; not each uses every item.
#![allow(dead_code)]

use candle::{D, DType, Device, Tensor};
use candle_nn::{Embedding, Linear, Module, Optimizer, VarBuilder, VarMap};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use trak_candle::{Collate, Network, Recorder, TokenCollate, TokenSeq};

// Each support file that seeds a network includes this one; a program may include several.
#[allow(clippy::duplicate_mod)]
#[path = "seeded.rs"]
mod seeded;
use seeded::Fill;

/// Sizes of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LmConfig {
    /// Tokens in the vocabulary.
    pub vocab: usize,
    /// Positions (input tokens per sequence).
    pub context: usize,
    /// Model width.
    pub d: usize,
    /// Attention heads (d must be a multiple).
    pub heads: usize,
    /// Transformer blocks.
    pub layers: usize,
}

/// LayerNorm written with elementwise ops (their backward is plain candle autodiff).
struct Norm {
    w: Tensor,
    b: Tensor,
}

impl Norm {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let c = x.broadcast_sub(&mean)?;
        let var = c.sqr()?.mean_keepdim(D::Minus1)?;
        let n = c.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
        n.broadcast_mul(&self.w)?.broadcast_add(&self.b)
    }
}

struct Block {
    ln1: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln2: Norm,
    up: Linear,
    down: Linear,
}

/// The transformer; inputs are `B × T` token ids with T ≤ the context.
pub struct TinyLm {
    cfg: LmConfig,
    tok: Embedding,
    pos: Tensor,
    blocks: Vec<Block>,
    ln_f: Norm,
    head: Linear,
    mask: Tensor,
}

fn norm(d: usize, vb: VarBuilder) -> candle::Result<Norm> {
    Ok(Norm {
        w: vb.get_with_hints(d, "weight", candle_nn::Init::Const(1.0))?,
        b: vb.get_with_hints(d, "bias", candle_nn::Init::Const(0.0))?,
    })
}

impl TinyLm {
    /// A model on the variables of `map`, initialised from `seed` (ChaCha8): linear weights
    /// and biases U(±1/√fan_in), embeddings U(±0.1), norms 1 and 0.
    pub fn init(cfg: LmConfig, map: &VarMap, seed: u64) -> candle::Result<Self> {
        let vb = VarBuilder::from_varmap(map, DType::F32, &Device::Cpu);
        let d = cfg.d;
        let lin = |i, o, name: String| candle_nn::linear(i, o, vb.pp(name));
        let mut blocks = Vec::new();
        for l in 0..cfg.layers {
            let p = |s: &str| format!("b{l}.{s}");
            blocks.push(Block {
                ln1: norm(d, vb.pp(p("ln1")))?,
                q: lin(d, d, p("q"))?,
                k: lin(d, d, p("k"))?,
                v: lin(d, d, p("v"))?,
                o: lin(d, d, p("o"))?,
                ln2: norm(d, vb.pp(p("ln2")))?,
                up: lin(d, 4 * d, p("up"))?,
                down: lin(4 * d, d, p("down"))?,
            });
        }
        let t = cfg.context;
        let mask: Vec<f32> = (0..t * t)
            .map(|i| if i % t > i / t { -1e9 } else { 0.0 })
            .collect();
        let lm = Self {
            cfg,
            tok: Embedding::new(vb.get((cfg.vocab, d), "tok")?, d),
            pos: vb.get((t, d), "pos")?,
            blocks,
            ln_f: norm(d, vb.pp("ln_f"))?,
            head: lin(d, cfg.vocab, "head".into())?,
            mask: Tensor::from_vec(mask, (t, t), &Device::Cpu)?,
        };
        seeded(map, seed)?;
        Ok(lm)
    }

    /// Causal multi-head attention of `x` (B × T × d) given its projections.
    fn attention(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> candle::Result<Tensor> {
        let (b, t, d) = q.dims3()?;
        let h = self.cfg.heads;
        let split = |x: &Tensor| x.reshape((b, t, h, d / h))?.transpose(1, 2)?.contiguous();
        let (q, k, v) = (split(q)?, split(k)?, split(v)?);
        let scores = (q.matmul(&k.t()?)? / ((d / h) as f64).sqrt())?;
        let mask = self.mask.narrow(0, 0, t)?.narrow(1, 0, t)?;
        let p = candle_nn::ops::softmax(&scores.broadcast_add(&mask)?, D::Minus1)?;
        p.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))
    }
}

/// Overwrites every variable of `map` (sorted by name) from a ChaCha8 stream: norms 1 and 0,
/// embeddings U(±0.1), linear layers PyTorch's U(±1/√fan_in).
fn seeded(map: &VarMap, seed: u64) -> candle::Result<()> {
    seeded::seed_vars_with(map, seed, |name, _| {
        if name.contains("ln") {
            Some(Fill::Const(if name.ends_with("weight") {
                1.0
            } else {
                0.0
            }))
        } else if name == "tok" || name == "pos" {
            Some(Fill::Uniform(0.1))
        } else {
            None
        }
    })
}

impl Network for TinyLm {
    fn forward(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
        let t = x.dim(1)?;
        let mut h = self
            .tok
            .forward(x)?
            .broadcast_add(&self.pos.narrow(0, 0, t)?)?;
        for (l, blk) in self.blocks.iter().enumerate() {
            let name = |s: &str| format!("b{l}.{s}");
            let a = blk.ln1.forward(&h)?;
            let q = rec.linear(&name("q"), &blk.q, &a)?;
            let k = rec.linear(&name("k"), &blk.k, &a)?;
            let v = rec.linear(&name("v"), &blk.v, &a)?;
            let att = self.attention(&q, &k, &v)?;
            h = (h + rec.linear(&name("o"), &blk.o, &att)?)?;
            let a = blk.ln2.forward(&h)?;
            let u = rec.linear(&name("up"), &blk.up, &a)?.relu()?;
            h = (h + rec.linear(&name("down"), &blk.down, &u)?)?;
        }
        rec.linear("head", &self.head, &self.ln_f.forward(&h)?)
    }
}

/// Training settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LmTraining {
    /// Passes over the documents.
    pub epochs: usize,
    /// Documents per step.
    pub batch: usize,
    /// AdamW learning rate.
    pub lr: f64,
}

/// Mean next-token cross-entropy of the counted positions of `batch` (the training loss).
pub fn loss(lm: &TinyLm, batch: &[TokenSeq], rec: &mut Recorder) -> candle::Result<Tensor> {
    let collate = TokenCollate {
        context: lm.cfg.context,
        pad: 0,
    };
    let x = collate.inputs(batch, &Device::Cpu)?;
    let logits = lm.forward(&x, rec)?;
    let t = lm.cfg.context;
    let (mut next, mut weight) = (Vec::new(), Vec::new());
    for s in batch {
        let (n, counted) = s.next_tokens(t).map_err(candle::Error::Msg)?;
        next.extend(n);
        weight.extend(counted.into_iter().map(|c| c as u8 as f32));
    }
    let next = Tensor::from_vec(next, (batch.len(), t, 1), &Device::Cpu)?;
    let weight = Tensor::from_vec(weight, (batch.len(), t), &Device::Cpu)?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?
        .gather(&next, 2)?
        .squeeze(2)?;
    let total = weight.sum_all()?;
    (logp * &weight)?.sum_all()?.neg()?.broadcast_div(&total)
}

/// Trains a fresh model (seed `seed`) on `docs`.
pub fn train(cfg: LmConfig, docs: &[TokenSeq], seed: u64, t: LmTraining) -> candle::Result<TinyLm> {
    let map = VarMap::new();
    let lm = TinyLm::init(cfg, &map, seed)?;
    let params = candle_nn::ParamsAdamW {
        lr: t.lr,
        weight_decay: 0.0,
        ..Default::default()
    };
    let mut opt = candle_nn::AdamW::new(map.all_vars(), params)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut order: Vec<usize> = (0..docs.len()).collect();
    for _ in 0..t.epochs {
        order.shuffle(&mut rng);
        for idx in order.chunks(t.batch) {
            let batch: Vec<TokenSeq> = idx.iter().map(|&i| docs[i].clone()).collect();
            let l = loss(&lm, &batch, &mut Recorder::training())?;
            opt.backward_step(&l)?;
        }
    }
    Ok(lm)
}

/// log p(completion | prompt) of each query (f of the sequence objective).
pub fn log_probs(lm: &TinyLm, queries: &[TokenSeq]) -> candle::Result<Vec<f32>> {
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        let l = loss(lm, std::slice::from_ref(q), &mut Recorder::training())?;
        let counted = (q.tokens.len() - q.prompt_len) as f32;
        out.push(-l.to_scalar::<f32>()? * counted);
    }
    Ok(out)
}
