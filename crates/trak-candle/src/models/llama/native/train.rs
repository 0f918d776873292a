//! Fine-tuning's gradients through the native pass: the same forward and backward pass as
//! attribution, every block linear's inputs and output gradients kept, each weight's
//! gradient `Σ_t δ_t a_tᵀ` and each norm scale's gradient accumulated over a weighted batch.
//! The token embedding (and the head, tied to it or not) gets none: [`trainable`] says when
//! a set of trained tensors fits.

use std::collections::HashMap;

use trak::model::LinearLayer;

use super::super::layout::{self, EMBED, FINAL_NORM, LM_HEAD};
use super::super::{Llama, LlamaConfig};
use super::model::{check, dims};
use super::ops::weight_grad;
use super::pass::{self, NormGrads, Selection, Slot};
use super::weights;
use crate::TokenSeq;

/// Whether every tensor that `trained` accepts (by Hugging Face name) is a block linear's
/// weight or bias or a norm scale: the tensors the native pass has gradients for.
pub fn trainable(cfg: &LlamaConfig, trained: impl Fn(&str) -> bool) -> bool {
    !trained(EMBED) && (cfg.tie_word_embeddings || !trained(LM_HEAD))
}

/// The gradient of the batch's loss `−Σ_i w_i f_i / denom` with respect to every block
/// linear's weight and bias and every norm scale, by Hugging Face name, and the loss. The
/// sequences run one after the other (each on every thread), their gradients added in
/// batch order: the same bits whatever the thread count.
pub fn loss_gradients(
    lm: &Llama,
    batch: &[TokenSeq],
    (w, denom): (&[f32], f64),
) -> trak::Result<(f64, HashMap<String, Vec<f32>>)> {
    let cfg = &lm.cfg;
    for (i, s) in batch.iter().enumerate() {
        check(cfg, i, s)?;
    }
    let layers = all_linears(cfg);
    let mut grads: Vec<Vec<f32>> = layers.iter().map(|l| vec![0.0; l.num_params()]).collect();
    let mut norms = NormGrads::zeros(cfg.num_hidden_layers, cfg.hidden_size);
    let selection: Vec<Selection> = (0..cfg.num_hidden_layers)
        .map(|b| std::array::from_fn(|i| Some(7 * b + i)))
        .collect();
    let dims = dims(cfg);
    let mut loss = 0.0;
    for (i, (s, &wi)) in batch.iter().zip(w).enumerate() {
        let t = s.tokens.len() - 1;
        let mut bufs: Vec<(Vec<f32>, Vec<f32>)> = layers
            .iter()
            .map(|l| (vec![0.0; t * l.in_dim], vec![0.0; t * l.out_dim]))
            .collect();
        let mut slots: Vec<Slot<'_>> = bufs
            .iter_mut()
            .zip(&layers)
            .map(|((a, d), l)| Slot {
                acts: a,
                deltas: d,
                in_dim: l.in_dim,
            })
            .collect();
        let mut seq_norms = NormGrads::zeros(cfg.num_hidden_layers, cfg.hidden_size);
        let f = weights::with_weights(lm, |w| {
            pass::run(w, &dims, s, (&selection, &mut slots, Some(&mut seq_norms)))
        })?
        .map_err(|reason| trak::Error::InvalidExample { example: i, reason })?;
        drop(slots);
        let c = (-(wi as f64) / denom) as f32;
        for (g, (a, d)) in grads.iter_mut().zip(&bufs) {
            weight_grad(g, (d, a), t, c);
        }
        add_scaled(&mut norms, &seq_norms, c);
        loss -= wi as f64 * f / denom;
    }
    Ok((loss, named(cfg, &layers, grads, norms)))
}

/// Every block linear as the factored view sees it (a bias as an extra input), in the
/// network's order.
fn all_linears(cfg: &LlamaConfig) -> Vec<LinearLayer> {
    let per_block = layout::block_linears(cfg).map(|(n, [o, i])| LinearLayer {
        out_dim: o,
        in_dim: i + layout::has_bias(cfg, n) as usize,
    });
    (0..cfg.num_hidden_layers).flat_map(|_| per_block).collect()
}

/// `acc += c · x`, every norm.
fn add_scaled(acc: &mut NormGrads, x: &NormGrads, c: f32) {
    let pairs = acc
        .blocks
        .iter_mut()
        .zip(&x.blocks)
        .flat_map(|(a, b)| a.iter_mut().zip(b));
    for (a, b) in pairs.chain(std::iter::once((&mut acc.last, &x.last))) {
        a.iter_mut().zip(b).for_each(|(a, b)| *a += c * b);
    }
}

/// The gradients by tensor name: each linear's `out × in_dim` split into its weight and,
/// when it has one, its bias (the last column).
fn named(
    cfg: &LlamaConfig,
    layers: &[LinearLayer],
    grads: Vec<Vec<f32>>,
    norms: NormGrads,
) -> HashMap<String, Vec<f32>> {
    let mut out = HashMap::new();
    let names = layout::block_linears(cfg);
    for (k, (g, l)) in grads.into_iter().zip(layers).enumerate() {
        let (b, (name, [o, inp])) = (k / 7, names[k % 7]);
        let p = format!("{}.{name}", layout::block(b));
        if l.in_dim == inp {
            out.insert(format!("{p}.weight"), g);
            continue;
        }
        let rows = g.chunks(l.in_dim);
        let weight = rows.clone().flat_map(|r| &r[..inp]).copied().collect();
        let bias = rows.map(|r| r[inp]).collect::<Vec<f32>>();
        debug_assert_eq!(bias.len(), o);
        out.insert(format!("{p}.weight"), weight);
        out.insert(format!("{p}.bias"), bias);
    }
    for (b, [input, post]) in norms.blocks.into_iter().enumerate() {
        let p = layout::block(b);
        out.insert(format!("{p}.input_layernorm.weight"), input);
        out.insert(format!("{p}.post_attention_layernorm.weight"), post);
    }
    out.insert(FINAL_NORM.to_string(), norms.last);
    out
}
