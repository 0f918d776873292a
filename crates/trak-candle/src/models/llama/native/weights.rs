//! The network's weights as f32 slices, borrowed from candle's storage (no copy): read locks
//! on every tensor, held for one call of the native pass.

use candle::backend::BackendStorage;
use candle::{CpuStorage, Layout, Storage, Tensor};
use trak::{Error, Unattributable};

use super::super::Llama;
use super::super::layout::{self, EMBED, FINAL_NORM, LM_HEAD};

/// A linear layer's weight (`out × in`, row-major) and bias.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lin<'a> {
    pub w: &'a [f32],
    pub b: Option<&'a [f32]>,
}

/// One block's norm scales and its seven linears (q, k, v, o, gate, up, down).
#[derive(Debug, Clone)]
pub(super) struct BlockWeights<'a> {
    pub input_norm: &'a [f32],
    pub post_norm: &'a [f32],
    pub lin: Vec<Lin<'a>>,
}

/// Every weight of the network, and the rotary tables (`max_positions × head_dim/2`).
#[derive(Debug, Clone)]
pub(super) struct Weights<'a> {
    pub embed: &'a [f32],
    pub blocks: Vec<BlockWeights<'a>>,
    pub final_norm: &'a [f32],
    pub head: &'a [f32],
    pub cos: &'a [f32],
    pub sin: &'a [f32],
}

/// Every tensor the pass reads, with its name: embedding, rotary cos and sin, final norm,
/// head, then per block its two norms and each linear's weight and bias.
fn tensors(lm: &Llama) -> Vec<(String, &Tensor)> {
    let head_name = match lm.cfg.tie_word_embeddings {
        true => EMBED,
        false => LM_HEAD,
    };
    let mut out = vec![
        (EMBED.to_string(), lm.embed.embeddings()),
        ("rotary cos".to_string(), &lm.cos),
        ("rotary sin".to_string(), &lm.sin),
        (FINAL_NORM.to_string(), &lm.final_norm),
        (head_name.to_string(), lm.head.weight()),
    ];
    let names = layout::block_linears(&lm.cfg);
    for (i, b) in lm.blocks.iter().enumerate() {
        let p = layout::block(i);
        out.push((format!("{p}.input_layernorm.weight"), &b.input_norm));
        out.push((format!("{p}.post_attention_layernorm.weight"), &b.post_norm));
        for ((n, _), l) in names.iter().zip(&b.linears) {
            out.push((format!("{p}.{n}.weight"), l.weight()));
            if let Some(bias) = l.bias() {
                out.push((format!("{p}.{n}.bias"), bias));
            }
        }
    }
    out
}

/// The values of a contiguous f32 CPU tensor, or the refusal naming it.
fn cpu_f32<'a>(name: &str, storage: &'a Storage, layout: &Layout) -> trak::Result<&'a [f32]> {
    let refuse = |reason| Error::Unattributable {
        layer: name.to_string(),
        reason,
    };
    let values = match storage {
        Storage::Cpu(CpuStorage::F32(v)) => v,
        Storage::Cpu(other) => {
            let found = format!("{:?}", other.dtype()).to_lowercase();
            return Err(refuse(Unattributable::DType { found }));
        }
        _ => {
            let what = "a tensor off the CPU: the native pass computes on the CPU".to_string();
            return Err(refuse(Unattributable::Configuration { what }));
        }
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&values[start..end]),
        None => {
            let what = "a strided tensor: the native pass reads contiguous weights".to_string();
            Err(refuse(Unattributable::Configuration { what }))
        }
    }
}

/// `f` with the weights of `lm` borrowed.
pub(super) fn with_weights<R>(lm: &Llama, f: impl FnOnce(&Weights<'_>) -> R) -> trak::Result<R> {
    let named = tensors(lm);
    let guards: Vec<_> = named.iter().map(|(_, t)| t.storage_and_layout()).collect();
    let slices = named
        .iter()
        .zip(&guards)
        .map(|((name, _), (s, l))| cpu_f32(name, s, l))
        .collect::<trak::Result<Vec<&[f32]>>>()?;
    let mut it = slices.into_iter();
    let mut next = || it.next().expect("one slice per tensor");
    let (embed, cos, sin, final_norm, head) = (next(), next(), next(), next(), next());
    let blocks = lm
        .blocks
        .iter()
        .map(|b| BlockWeights {
            input_norm: next(),
            post_norm: next(),
            lin: b
                .linears
                .iter()
                .map(|l| Lin {
                    w: next(),
                    b: l.bias().map(|_| next()),
                })
                .collect(),
        })
        .collect();
    Ok(f(&Weights {
        embed,
        blocks,
        final_norm,
        head,
        cos,
        sin,
    }))
}

/// A hash of every weight's exact values (the tensors in [`tensors`]' order, each named).
pub(super) fn fingerprint(lm: &Llama) -> candle::Result<u64> {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(b"trak-candle native llama pass");
    for (name, t) in tensors(lm) {
        h.update(name.as_bytes());
        crate::layers::hash_tensor(&mut h, t)?;
    }
    Ok(h.digest())
}
