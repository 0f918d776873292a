//! The tiny Llama of the tests: its config, seeded checkpoints, and a GGUF writer that does
//! what llama.cpp's converter does.

use std::collections::HashMap;
use std::path::Path;

use candle::{Device, Tensor};
use trak_candle::models::llama::{LlamaCheckpoint, LlamaConfig};

/// Tokens in the tiny vocabulary.
pub const VOCAB: usize = 40;

/// A tiny config: 2 blocks, 4 query heads in 2 key/value groups (GQA), head width 6.
pub fn json(tied: bool) -> String {
    format!(
        r#"{{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": {VOCAB},
        "hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 16,
        "rms_norm_eps": 1e-5, "rope_theta": 500.0, "hidden_act": "silu",
        "tie_word_embeddings": {tied}}}"#
    )
}

pub fn checkpoint(tied: bool, seed: u64) -> LlamaCheckpoint {
    let cfg = LlamaConfig::from_json(&json(tied)).unwrap();
    LlamaCheckpoint::random(cfg, seed, &Device::Cpu).unwrap()
}

pub fn tensors(ckpt: &LlamaCheckpoint) -> HashMap<String, Tensor> {
    let vars = ckpt.vars().iter();
    vars.map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect()
}

/// llama.cpp's permutation of q/k rows (what its converter applies; the inverse of
/// `gguf::unpermute`).
pub fn permute(w: &Tensor, heads: usize) -> Tensor {
    let (rows, cols) = w.dims2().unwrap();
    w.reshape((heads, 2, rows / heads / 2, cols))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((rows, cols))
        .unwrap()
}

/// Writes `ckpt` as llama.cpp would (names, permuted q/k, metadata), f32 tensors.
pub fn write_gguf(ckpt: &LlamaCheckpoint, arch: &str, path: &Path) {
    write_gguf_with(ckpt, arch, path, &[]);
}

/// [`write_gguf`] with some of the integer metadata (`<arch>.<key>`) replaced.
pub fn write_gguf_with(ckpt: &LlamaCheckpoint, arch: &str, path: &Path, ints: &[(&str, u32)]) {
    let overrides = ints;
    use candle::quantized::gguf_file::{self, Value};
    use candle::quantized::{GgmlDType, QTensor};
    let c = ckpt.config();
    let ints = [
        ("embedding_length", c.hidden_size),
        ("feed_forward_length", c.intermediate_size),
        ("block_count", c.num_hidden_layers),
        ("attention.head_count", c.num_attention_heads),
        ("attention.head_count_kv", c.num_key_value_heads),
        ("context_length", c.max_position_embeddings),
    ];
    let floats = [
        ("attention.layer_norm_rms_epsilon", c.rms_norm_eps),
        ("rope.freq_base", c.rope_theta),
    ];
    let mut meta = vec![(
        "general.architecture".to_string(),
        Value::String(arch.into()),
    )];
    meta.extend(ints.map(|(k, v)| {
        let v = overrides
            .iter()
            .find(|o| o.0 == k)
            .map_or(v as u32, |o| o.1);
        (format!("{arch}.{k}"), Value::U32(v))
    }));
    meta.extend(floats.map(|(k, v)| (format!("{arch}.{k}"), Value::F32(v as f32))));
    let mut tensors = Vec::new();
    for (hf, v) in ckpt.vars() {
        let mut t = v.as_tensor().clone();
        if hf.ends_with("q_proj.weight") {
            t = permute(&t, c.num_attention_heads);
        } else if hf.ends_with("k_proj.weight") {
            t = permute(&t, c.num_key_value_heads);
        }
        let q = QTensor::quantize(&t, GgmlDType::F32).unwrap();
        tensors.push((trak_candle::models::llama::gguf::gguf_name(hf), q));
    }
    let meta: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &meta, &tensors).unwrap();
}
