//! The Llama-family forward pass, every linear layer through the [`Recorder`] under its
//! Hugging Face name.
//!
//! Only ops with a backward pass are used: candle_nn's fused `rms_norm`, `rope` and
//! `softmax_last_dim` (which candle-transformers' own models call) have none, so gradients
//! would silently stop at them; this port uses `rms_norm_slow`, `rope_slow` and `softmax`,
//! which compute the same values with differentiable ops.

use std::collections::HashMap;

use candle::{D, DType, Device, Tensor};
use candle_nn::{Embedding, Linear, Module};

use super::LlamaConfig;
use super::layout::{self, EMBED, FINAL_NORM, LM_HEAD};
use crate::network::Network;
use crate::recorder::Recorder;

/// One transformer block's weights.
#[derive(Debug, Clone)]
pub(super) struct Block {
    pub(super) input_norm: Tensor,
    pub(super) post_norm: Tensor,
    /// q, k, v, o, gate, up, down (the order of [`layout::block_linears`]).
    pub(super) linears: Vec<Linear>,
}

/// A Llama-family causal language model (see the module docs of [`super`]).
///
/// [`Network::forward`] takes `B × T` token ids (u32) and returns `B × T × vocab` logits:
/// position t's logits predict token t + 1.
#[derive(Debug, Clone)]
pub struct Llama {
    pub(super) cfg: LlamaConfig,
    pub(super) embed: Embedding,
    pub(super) blocks: Vec<Block>,
    pub(super) final_norm: Tensor,
    pub(super) head: Linear,
    pub(super) cos: Tensor,
    pub(super) sin: Tensor,
}

impl Llama {
    /// The network over `weights` (every tensor of [`layout::tensors`], f32, checked by the
    /// caller: [`super::LlamaCheckpoint`] does). Tensors of `Var`s keep their identity, so
    /// the network computes with the variables (training, the all-parameter fallback).
    pub(crate) fn new(
        cfg: &LlamaConfig,
        weights: &HashMap<String, Tensor>,
    ) -> candle::Result<Self> {
        let get = |name: &str| {
            weights
                .get(name)
                .cloned()
                .ok_or_else(|| candle::Error::Msg(format!("tensor {name} is missing")))
        };
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| {
                let b = layout::block(i);
                let linears = layout::block_linears(cfg)
                    .iter()
                    .map(|(name, _)| {
                        let bias = layout::has_bias(cfg, name);
                        let bias = bias.then(|| get(&format!("{b}.{name}.bias"))).transpose()?;
                        Ok(Linear::new(get(&format!("{b}.{name}.weight"))?, bias))
                    })
                    .collect::<candle::Result<_>>()?;
                Ok(Block {
                    input_norm: get(&format!("{b}.input_layernorm.weight"))?,
                    post_norm: get(&format!("{b}.post_attention_layernorm.weight"))?,
                    linears,
                })
            })
            .collect::<candle::Result<_>>()?;
        let embed = get(EMBED)?;
        let head = match cfg.tie_word_embeddings {
            true => embed.clone(),
            false => get(LM_HEAD)?,
        };
        let (cos, sin) = rotary_tables(cfg, embed.device())?;
        Ok(Self {
            cfg: cfg.clone(),
            embed: Embedding::new(embed, cfg.hidden_size),
            blocks,
            final_norm: get(FINAL_NORM)?,
            head: Linear::new(head, None),
            cos,
            sin,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// The device the weights are on.
    pub fn device(&self) -> &Device {
        self.embed.embeddings().device()
    }

    /// Causal self-attention of block `l` on the normed input `a` (B × T × d), with the
    /// additive causal `mask` (T × T, built once per forward pass).
    fn attention(
        &self,
        (l, mask): (usize, &Tensor),
        a: &Tensor,
        rec: &mut Recorder,
    ) -> candle::Result<Tensor> {
        let (b, t, _) = a.dims3()?;
        let (cfg, blk, name) = (&self.cfg, &self.blocks[l], layout::block(l));
        let lin = |rec: &mut Recorder, i: usize, x: &Tensor| {
            let n = layout::block_linears(cfg)[i].0;
            rec.linear(&format!("{name}.{n}"), &blk.linears[i], x)
        };
        let heads = |x: Tensor, h: usize| {
            x.reshape((b, t, h, cfg.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(lin(rec, 0, a)?, cfg.num_attention_heads)?;
        let k = heads(lin(rec, 1, a)?, cfg.num_key_value_heads)?;
        let v = heads(lin(rec, 2, a)?, cfg.num_key_value_heads)?;
        let (cos, sin) = (self.cos.narrow(0, 0, t)?, self.sin.narrow(0, 0, t)?);
        let q = candle_nn::rotary_emb::rope_slow(&q, &cos, &sin)?;
        let k = candle_nn::rotary_emb::rope_slow(&k, &cos, &sin)?;
        let groups = cfg.num_attention_heads / cfg.num_key_value_heads;
        let (k, v) = (repeat_kv(k, groups)?, repeat_kv(v, groups)?);
        let scores = (q.matmul(&k.t()?)? / (cfg.head_dim as f64).sqrt())?;
        let p = candle_nn::ops::softmax(&scores.broadcast_add(mask)?, D::Minus1)?;
        let y = p
            .matmul(&v.contiguous()?)?
            .transpose(1, 2)?
            .reshape((b, t, cfg.q_dim()))?;
        lin(rec, 3, &y)
    }

    /// The SwiGLU MLP of block `l` on the normed input `a`.
    fn mlp(&self, l: usize, a: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
        let (blk, name) = (&self.blocks[l], layout::block(l));
        let gate = rec.linear(&format!("{name}.mlp.gate_proj"), &blk.linears[4], a)?;
        let up = rec.linear(&format!("{name}.mlp.up_proj"), &blk.linears[5], a)?;
        let m = (candle_nn::ops::silu(&gate)? * up)?;
        rec.linear(&format!("{name}.mlp.down_proj"), &blk.linears[6], &m)
    }

    fn norm(&self, x: &Tensor, scale: &Tensor) -> candle::Result<Tensor> {
        candle_nn::ops::rms_norm_slow(x, scale, self.cfg.rms_norm_eps as f32)
    }
}

impl Network for Llama {
    fn forward(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
        let t = x.dim(1)?;
        let limit = self
            .cfg
            .sliding_window
            .unwrap_or(usize::MAX)
            .min(self.cfg.max_position_embeddings);
        if t > limit {
            candle::bail!("a context of {t} positions is longer than the model's {limit}");
        }
        // Outside the recorded linears, weights are `rec.param`s: no gradient of their own
        // in an attribution pass.
        let embed = Embedding::new(rec.param(self.embed.embeddings()), self.cfg.hidden_size);
        let mut h = embed.forward(x)?;
        let mask = causal_mask(t, x.device())?;
        for l in 0..self.blocks.len() {
            let a = self.norm(&h, &rec.param(&self.blocks[l].input_norm))?;
            h = (h + self.attention((l, &mask), &a, rec)?)?;
            let a = self.norm(&h, &rec.param(&self.blocks[l].post_norm))?;
            h = (h + self.mlp(l, &a, rec)?)?;
        }
        let h = self.norm(&h, &rec.param(&self.final_norm))?;
        match self.cfg.tie_word_embeddings {
            true => rec.tied_linear("lm_head", &self.head, &h, "model.embed_tokens"),
            false => rec.linear("lm_head", &self.head, &h),
        }
    }
}

/// cos and sin of position × inverse frequency, `max_position_embeddings × head_dim/2`
/// (Hugging Face's non-interleaved layout; frequencies computed in f32 as
/// candle-transformers does).
fn rotary_tables(cfg: &LlamaConfig, device: &Device) -> candle::Result<(Tensor, Tensor)> {
    let hd = cfg.head_dim;
    let inv: Vec<f32> = (0..hd)
        .step_by(2)
        .map(|i| 1.0 / (cfg.rope_theta as f32).powf(i as f32 / hd as f32))
        .collect();
    let n = cfg.max_position_embeddings;
    let pos = Tensor::arange(0u32, n as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((n, 1))?;
    let angles = pos.matmul(&Tensor::from_vec(inv, (1, hd / 2), device)?)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// 0 on and below the diagonal, −∞ above (T × T).
fn causal_mask(t: usize, device: &Device) -> candle::Result<Tensor> {
    let m: Vec<f32> = (0..t * t)
        .map(|i| {
            if i % t > i / t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(m, (t, t), device)
}

/// Each key/value head repeated for its `groups` query heads (B × KV × T × hd →
/// B × KV·groups × T × hd, head j serving query heads j·groups ..).
fn repeat_kv(x: Tensor, groups: usize) -> candle::Result<Tensor> {
    if groups == 1 {
        return Ok(x);
    }
    let (b, kv, t, hd) = x.dims4()?;
    Tensor::cat(&vec![&x; groups], 2)?.reshape((b, kv * groups, t, hd))
}
