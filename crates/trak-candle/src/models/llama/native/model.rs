//! [`NativeLlama`]: the native pass as a [`trak::Model`] and [`FactoredModel`].

use ndarray::{Array1, ArrayViewMut1, ArrayViewMut2, Axis, s};
use rayon::prelude::*;
use trak::model::{FactoredModel, LayerFactors, LinearLayer};
use trak::{Error, Model, Unattributable};

use super::super::layout::{self, EMBED, LM_HEAD};
use super::super::{Llama, LlamaConfig};
use super::attention::Heads;
use super::pass::{self, Dims, Selection, Slot};
use super::weights;
use crate::TokenSeq;

/// A Llama-family model made attributable by the native pass (see the module docs of
/// [`super`]): the layers named (Hugging Face names without `.weight`, block linears only),
/// f = log p of each sequence's counted tokens, Q = 1.
#[derive(Debug)]
pub struct NativeLlama<'a> {
    lm: &'a Llama,
    /// Per block, each linear's index among the attributed layers.
    selection: Vec<Selection>,
    /// The attributed layers, in the network's call order.
    layers: Vec<LinearLayer>,
    /// Whether each has a bias (its inputs' last column, the constant 1).
    bias: Vec<bool>,
    /// The longest sequence the model was made for (its working memory).
    longest: usize,
    fingerprint: u64,
}

impl<'a> NativeLlama<'a> {
    /// `lm` attributed at the block linears `layers` (an unknown name, or the output head,
    /// is [`Error::InvalidParameter`]; a tied head is [`Unattributable::SharedWeights`] as in
    /// the candle route), for sequences like `seqs` (each checked as every batch is: tokens
    /// in the vocabulary, inputs within the model's context, something to predict).
    pub fn new(lm: &'a Llama, layers: &[String], seqs: &[TokenSeq]) -> trak::Result<Self> {
        if seqs.is_empty() {
            return Err(Error::Empty("sequences to attribute"));
        }
        if layers.is_empty() {
            return Err(Error::Empty("selected layers"));
        }
        let cfg = &lm.cfg;
        let linears = layout::block_linears(cfg);
        let mut selection = vec![[None; 7]; cfg.num_hidden_layers];
        let mut picked = Vec::new();
        for name in layers {
            let (b, i) = locate(lm, name)?;
            picked.push((b, i));
        }
        picked.sort_unstable();
        picked.dedup();
        let (mut out, mut bias) = (Vec::new(), Vec::new());
        for (slot, &(b, i)) in picked.iter().enumerate() {
            selection[b][i] = Some(slot);
            let (n, [o, inp]) = linears[i];
            bias.push(layout::has_bias(cfg, n));
            out.push(LinearLayer {
                out_dim: o,
                in_dim: inp + layout::has_bias(cfg, n) as usize,
            });
        }
        let model = Self {
            lm,
            selection,
            layers: out,
            bias,
            longest: 0,
            fingerprint: 0,
        };
        let longest = seqs
            .iter()
            .enumerate()
            .map(|(i, s)| check(&lm.cfg, i, s).map(|()| s.tokens.len() - 1))
            .collect::<trak::Result<Vec<_>>>()?
            .into_iter()
            .max()
            .unwrap_or(1);
        let weights = weights::fingerprint(lm)
            .map_err(|e| crate::error::framework("fingerprint of the weights", e))?;
        let mut bytes = weights.to_le_bytes().to_vec();
        bytes.extend(
            picked
                .iter()
                .flat_map(|&(b, i)| [b as u64, i as u64])
                .flat_map(u64::to_le_bytes),
        );
        let fingerprint = xxhash_rust::xxh3::xxh3_64(&bytes);
        Ok(Self {
            longest,
            fingerprint,
            ..model
        })
    }

    /// The batch's factors at its longest sequence, and each sequence's Q.
    fn factors(&self, batch: &[TokenSeq]) -> trak::Result<(Vec<LayerFactors>, Vec<f32>)> {
        for (i, s) in batch.iter().enumerate() {
            check(&self.lm.cfg, i, s)?;
        }
        let t = batch.iter().map(|s| s.tokens.len() - 1).max().unwrap_or(1);
        let mut factors: Vec<LayerFactors> = self
            .layers
            .iter()
            .map(|&l| LayerFactors::zeros(l, batch.len(), t))
            .collect();
        let mut per_seq: Vec<Vec<Slot<'_>>> = batch.iter().map(|_| Vec::new()).collect();
        for f in factors.iter_mut() {
            let (in_dim, out) = (f.acts.ncols(), f.deltas.ncols());
            let acts = f.acts.as_slice_mut().expect("a new standard-layout array");
            let deltas = f
                .deltas
                .as_slice_mut()
                .expect("a new standard-layout array");
            let rows = acts.chunks_mut(t * in_dim).zip(deltas.chunks_mut(t * out));
            for (slots, (acts, deltas)) in per_seq.iter_mut().zip(rows) {
                slots.push(Slot {
                    acts,
                    deltas,
                    in_dim,
                });
            }
        }
        let dims = dims(&self.lm.cfg);
        let q = weights::with_weights(self.lm, |w| {
            per_seq
                .into_par_iter()
                .zip(batch.par_iter())
                .enumerate()
                .map(|(i, (mut slots, s))| {
                    pass::run(w, &dims, s, (&self.selection, &mut slots, None))
                        .map(|_| 1.0) // Q of the log-probability objective: 1
                        .map_err(|reason| Error::InvalidExample { example: i, reason })
                })
                .collect::<trak::Result<Vec<f32>>>()
        })??;
        Ok((factors, q))
    }
}

/// [`Error::InvalidExample`] (`i`, the example's index) unless every token is in the
/// vocabulary, the inputs fit the model's context and something is predicted.
pub(super) fn check(cfg: &LlamaConfig, i: usize, s: &TokenSeq) -> trak::Result<()> {
    let bad = |reason: String| Error::InvalidExample { example: i, reason };
    if let Some(p) = s.tokens.iter().position(|&t| t as usize >= cfg.vocab_size) {
        return Err(bad(format!(
            "token {} at position {p} is outside the vocabulary of {} tokens",
            s.tokens[p], cfg.vocab_size
        )));
    }
    let limit = cfg
        .sliding_window
        .unwrap_or(usize::MAX)
        .min(cfg.max_position_embeddings);
    let inputs = s.tokens.len().saturating_sub(1);
    if inputs > limit {
        return Err(bad(format!(
            "its {inputs} input positions exceed the model's context of {limit}"
        )));
    }
    s.next_tokens(inputs).map(|_| ()).map_err(bad)
}

/// The sizes the pass needs under `cfg`.
pub(super) fn dims(cfg: &LlamaConfig) -> Dims {
    Dims {
        d: cfg.hidden_size,
        inter: cfg.intermediate_size,
        vocab: cfg.vocab_size,
        heads: Heads {
            n: cfg.num_attention_heads,
            kv: cfg.num_key_value_heads,
            hd: cfg.head_dim,
        },
        eps: cfg.rms_norm_eps as f32,
    }
}

/// The block and linear index of a block linear's name.
fn locate(lm: &Llama, name: &str) -> trak::Result<(usize, usize)> {
    let cfg = &lm.cfg;
    if name == "lm_head" && cfg.tie_word_embeddings {
        let with = EMBED.trim_end_matches(".weight").to_string();
        let layer = name.to_string();
        return Err(Error::Unattributable {
            layer,
            reason: Unattributable::SharedWeights { with },
        });
    }
    let found = (0..cfg.num_hidden_layers).find_map(|b| {
        let p = format!("{}.", layout::block(b));
        let rest = name.strip_prefix(&p)?;
        let i = layout::block_linears(cfg)
            .iter()
            .position(|(n, _)| *n == rest)?;
        Some((b, i))
    });
    found.ok_or_else(|| Error::InvalidParameter {
        parameter: "layer name",
        value: name.to_string(),
        expected: format!(
            "a block linear of the model (model.layers.N.self_attn.q_proj … mlp.down_proj, \
             N < {}); the native pass does not attribute {}",
            cfg.num_hidden_layers,
            LM_HEAD.trim_end_matches(".weight")
        ),
    })
}

impl Model for NativeLlama<'_> {
    type Example = TokenSeq;

    fn num_params(&self) -> usize {
        self.layers.iter().map(LinearLayer::num_params).sum()
    }

    /// Each layer's Σ_t δ_t a_tᵀ from the factors: for every layer in order, W row-major and
    /// then the bias (the candle route's layout, a PyTorch state dict's order).
    fn output_grads(
        &self,
        batch: &[TokenSeq],
        mut grads: ArrayViewMut2<'_, f32>,
    ) -> trak::Result<()> {
        let (factors, _) = self.factors(batch)?;
        let mut at = 0;
        for (f, &bias) in factors.iter().zip(&self.bias) {
            let (t, out, in_dim) = (f.positions, f.deltas.ncols(), f.acts.ncols());
            let w_in = in_dim - bias as usize;
            for (b, mut row) in grads.rows_mut().into_iter().enumerate() {
                let rows = s![b * t..(b + 1) * t, ..];
                let g = f.deltas.slice(rows).t().dot(&f.acts.slice(rows));
                let dst = row.slice_mut(s![at..at + out * in_dim]);
                let (w, mut b) = dst.split_at(Axis(0), out * w_in);
                let mut w = w.into_shape_with_order((out, w_in)).expect("contiguous");
                w.assign(&g.slice(s![.., ..w_in]));
                if bias {
                    b.assign(&g.column(w_in));
                }
            }
            at += out * in_dim;
        }
        Ok(())
    }

    fn output_q(&self, batch: &[TokenSeq], mut q: ArrayViewMut1<'_, f32>) -> trak::Result<()> {
        let (_, values) = self.factors(batch)?;
        q.assign(&Array1::from(values));
        Ok(())
    }

    fn factored(&self) -> Option<&dyn FactoredModel<TokenSeq>> {
        Some(self)
    }

    /// The pass's own buffers for `batch_len` sequences of the longest length it was made
    /// for (what each block keeps for its backward pass, the scratch, the head's logits).
    fn working_memory(&self, batch_len: usize) -> usize {
        let d = dims(&self.lm.cfg);
        let (t, qd, kvd) = (
            self.longest,
            d.heads.n * d.heads.hd,
            d.heads.kv * d.heads.hd,
        );
        let kept = self.lm.blocks.len() * t * (2 * d.d + qd + 2 * kvd + 2 * d.inter + 2);
        let scratch = t * (2 * d.d + 2 * qd + 2 * kvd + d.inter) + 2 * t * t;
        let stream = t * (4 * d.d + 1) + 2 * super::head::ROWS * d.vocab;
        batch_len.saturating_mul(4 * (kept + scratch + stream))
    }

    /// Every weight of the network (with the pass's name) and the attributed layers.
    fn fingerprint(&self) -> Option<u64> {
        Some(self.fingerprint)
    }
}

impl FactoredModel<TokenSeq> for NativeLlama<'_> {
    fn linear_layers(&self) -> Vec<LinearLayer> {
        self.layers.clone()
    }

    fn layer_factors(&self, batch: &[TokenSeq]) -> trak::Result<Vec<LayerFactors>> {
        Ok(self.factors(batch)?.0)
    }

    fn layer_factors_and_q(
        &self,
        batch: &[TokenSeq],
        mut q: ArrayViewMut1<'_, f32>,
    ) -> trak::Result<(Vec<LayerFactors>, bool)> {
        let (factors, values) = self.factors(batch)?;
        q.assign(&Array1::from(values));
        Ok((factors, true))
    }
}
