//! Llama-family checkpoints in llama.cpp's GGUF format: the configuration from the file's
//! metadata, tensors renamed from llama.cpp's names to Hugging Face's, dequantised to f32,
//! and llama.cpp's row permutation of the q and k projections undone; the tokenizer from the
//! metadata.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use candle::quantized::gguf_file::{Content, Value};
use candle::{Device, Tensor};
use trak::{CheckpointProblem, Error};

use super::load::problem;
use super::{Architecture, LlamaCheckpoint, LlamaConfig, layout};
use crate::error::CandleContext;

/// Opens and parses a GGUF file's header ([`Error::Io`] if unreadable, [`Error::Checkpoint`]
/// for a tensor type candle cannot read).
pub(crate) fn read(path: &Path) -> trak::Result<(File, Content)> {
    let mut file = File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let content = Content::read(&mut file).map_err(|e| match e.to_string() {
        m if m.contains("unknown dtype for tensor") => problem(
            path,
            CheckpointProblem::TensorType {
                name: "(a tensor of the file)".into(),
                found: m.replace("unknown dtype for tensor", "ggml type"),
                supported: "f32, f16, bf16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2K–Q8K".into(),
            },
        ),
        m => Error::WrongFormat {
            path: path.to_path_buf(),
            format: "GGUF file",
            reason: m,
        },
    })?;
    Ok((file, content))
}

/// The GGUF architecture names this reader implements, and what they are.
fn architecture(name: &str) -> Option<Architecture> {
    match name {
        "llama" => Some(Architecture::Llama),
        "qwen2" => Some(Architecture::Qwen2),
        _ => None,
    }
}

/// The configuration from the metadata (`<arch>.block_count`, …) and the tensors present.
fn config(path: &Path, c: &Content) -> trak::Result<LlamaConfig> {
    let field = |f: &str, reason: &str| {
        let p = CheckpointProblem::ConfigField {
            field: f.into(),
            reason: reason.into(),
        };
        problem(path, p)
    };
    let key = "general.architecture";
    let arch_name = c
        .metadata
        .get(key)
        .and_then(|v| v.to_string().ok())
        .ok_or_else(|| field(key, "missing"))?;
    let arch = architecture(arch_name).ok_or_else(|| {
        let p = CheckpointProblem::UnknownArchitecture {
            found: arch_name.clone(),
            supported: "llama, qwen2".into(),
        };
        problem(path, p)
    })?;
    let num = |k: &str| -> trak::Result<Option<f64>> {
        let k = format!("{arch_name}.{k}");
        match c.metadata.get(&k) {
            None => Ok(None),
            Some(v) => number(v).map(Some).ok_or_else(|| field(&k, "not a number")),
        }
    };
    let count = |k: &str| -> trak::Result<Option<usize>> {
        match num(k)? {
            None => Ok(None),
            Some(v) if v >= 0.0 && v.fract() == 0.0 && v < 1e15 => Ok(Some(v as usize)),
            Some(v) => Err(field(
                &format!("{arch_name}.{k}"),
                &format!("{v} is not a non-negative integer"),
            )),
        }
    };
    let need = |k: &str| -> trak::Result<usize> {
        count(k)?.ok_or_else(|| field(&format!("{arch_name}.{k}"), "missing"))
    };
    let embed = c.tensor_infos.get("token_embd.weight").ok_or_else(|| {
        problem(
            path,
            CheckpointProblem::MissingTensor {
                name: "token_embd.weight".into(),
            },
        )
    })?;
    let (heads, hidden) = (need("attention.head_count")?, need("embedding_length")?);
    let head_dim = count("rope.dimension_count")?;
    if head_dim.is_none() && heads > 0 && !hidden.is_multiple_of(heads) {
        let reason = format!(
            "{hidden} is not a multiple of {arch_name}.attention.head_count = {heads}, and \
             {arch_name}.rope.dimension_count (the head width) is not given"
        );
        return Err(field(&format!("{arch_name}.embedding_length"), &reason));
    }
    let cfg = LlamaConfig {
        architecture: arch,
        vocab_size: embed.shape.dims()[0],
        hidden_size: hidden,
        intermediate_size: need("feed_forward_length")?,
        num_hidden_layers: need("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: count("attention.head_count_kv")?.unwrap_or(heads),
        head_dim: head_dim.unwrap_or(hidden / heads.max(1)),
        rms_norm_eps: num("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-6),
        rope_theta: num("rope.freq_base")?.unwrap_or(10_000.0),
        max_position_embeddings: need("context_length")?,
        tie_word_embeddings: !c.tensor_infos.contains_key("output.weight"),
        qkv_bias: c.tensor_infos.contains_key("blk.0.attn_q.bias"),
        sliding_window: None,
    };
    cfg.validate()
        .map_err(|p| problem(path, gguf_field(p, arch_name)))?;
    check_block_count(path, c, &cfg, arch_name)?;
    Ok(cfg)
}

/// A validation problem named by the GGUF key that holds the field.
fn gguf_field(p: CheckpointProblem, arch: &str) -> CheckpointProblem {
    let CheckpointProblem::ConfigField { field, reason } = p else {
        return p;
    };
    let key = match field.as_str() {
        "vocab_size" => "the rows of token_embd.weight".to_string(),
        "hidden_size" => format!("{arch}.embedding_length"),
        "intermediate_size" => format!("{arch}.feed_forward_length"),
        "num_hidden_layers" => format!("{arch}.block_count"),
        "num_attention_heads" => format!("{arch}.attention.head_count"),
        "num_key_value_heads" => format!("{arch}.attention.head_count_kv"),
        "head_dim" => format!("{arch}.rope.dimension_count"),
        "max_position_embeddings" => format!("{arch}.context_length"),
        _ => return CheckpointProblem::ConfigField { field, reason },
    };
    let field = format!("{key} ({field})");
    CheckpointProblem::ConfigField { field, reason }
}

/// The blocks the file holds (`blk.<i>.…` tensors) must be exactly the metadata's
/// `block_count`, checked before any block's tensor names are built.
fn check_block_count(path: &Path, c: &Content, cfg: &LlamaConfig, arch: &str) -> trak::Result<()> {
    let index = |name: &str| {
        name.strip_prefix("blk.")?
            .split('.')
            .next()?
            .parse::<usize>()
            .ok()
    };
    let held = c
        .tensor_infos
        .keys()
        .filter_map(|n| index(n))
        .max()
        .map_or(0, |m| m + 1);
    let n = cfg.num_hidden_layers;
    if n > held {
        let p = CheckpointProblem::ConfigField {
            field: format!("{arch}.block_count"),
            reason: format!("{n}, but the file holds tensors of {held} blocks"),
        };
        return Err(problem(path, p));
    }
    if n < held {
        let mut extra: Vec<&String> = c
            .tensor_infos
            .keys()
            .filter(|k| index(k) >= Some(n))
            .collect();
        extra.sort();
        let p = CheckpointProblem::UnexpectedTensor {
            name: extra[0].clone(),
            reason: format!("the file holds {held} blocks, but {arch}.block_count is {n}"),
        };
        return Err(problem(path, p));
    }
    Ok(())
}

fn number(v: &Value) -> Option<f64> {
    use Value::*;
    Some(match v {
        U8(x) => *x as f64,
        I8(x) => *x as f64,
        U16(x) => *x as f64,
        I16(x) => *x as f64,
        U32(x) => *x as f64,
        I32(x) => *x as f64,
        U64(x) => *x as f64,
        I64(x) => *x as f64,
        F32(x) => *x as f64,
        F64(x) => *x,
        _ => return None,
    })
}

/// llama.cpp's name of the Hugging Face tensor `hf`.
pub fn gguf_name(hf: &str) -> String {
    let blocks = [
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ];
    match hf {
        layout::EMBED => return "token_embd.weight".into(),
        layout::FINAL_NORM => return "output_norm.weight".into(),
        layout::LM_HEAD => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap_or(hf);
    let (i, rest) = rest.split_once('.').unwrap_or(("", rest));
    let (layer, suffix) = rest.rsplit_once('.').unwrap_or((rest, ""));
    let short = blocks
        .iter()
        .find(|(h, _)| *h == layer)
        .map_or(layer, |(_, g)| g);
    format!("blk.{i}.{short}.{suffix}")
}

/// Undoes llama.cpp's permutation of a q or k projection's rows (`heads` heads of width
/// `hd`): llama.cpp stores each head's rows as (pairs × 2) where Hugging Face has (2 ×
/// halves), so that its interleaved rotary embedding sees Hugging Face's halves.
pub fn unpermute(w: &Tensor, heads: usize) -> candle::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let hd = rows / heads;
    w.reshape((heads, hd / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

impl LlamaCheckpoint {
    /// Reads a llama.cpp GGUF file (architectures `llama`, which covers SmolLM2 and Mistral,
    /// and `qwen2`): every tensor dequantised to f32, renamed to Hugging Face's names, the q/k
    /// rows of `llama` files unpermuted. A missing tensor, a shape that disagrees with the
    /// metadata, an unknown architecture or an unreadable quantisation is
    /// [`Error::Checkpoint`] naming it (under llama.cpp's name for missing tensors).
    pub fn from_gguf(path: &Path, device: &Device) -> trak::Result<Self> {
        let (mut file, content) = read(path)?;
        let cfg = config(path, &content)?;
        let mut tensors = HashMap::new();
        for (hf, _) in layout::tensors(&cfg) {
            let name = gguf_name(&hf);
            if !content.tensor_infos.contains_key(&name) {
                return Err(problem(path, CheckpointProblem::MissingTensor { name }));
            }
            let q = content
                .tensor(&mut file, &name, device)
                .ctx(&format!("reading {name}"))?;
            let mut t = q.dequantize(device).ctx(&format!("dequantising {name}"))?;
            let heads = match hf.rsplit('.').nth(1) {
                Some("q_proj") => Some(cfg.num_attention_heads),
                Some("k_proj") => Some(cfg.num_key_value_heads),
                _ => None,
            };
            if let (Some(h), Architecture::Llama, true) =
                (heads, cfg.architecture, hf.ends_with("weight"))
            {
                t = unpermute(&t, h).ctx(&format!("unpermuting {name}"))?;
            }
            tensors.insert(hf, t);
        }
        if let Some(name) = unused(&content, &tensors) {
            let reason = "the configuration (from the metadata) has no such tensor".into();
            return Err(problem(
                path,
                CheckpointProblem::UnexpectedTensor { name, reason },
            ));
        }
        Self::from_tensors(cfg, tensors, path)
    }
}

/// The first tensor of the file (by name) that the configuration did not read, if any.
fn unused(content: &Content, read: &HashMap<String, Tensor>) -> Option<String> {
    let used: std::collections::HashSet<String> = read.keys().map(|hf| gguf_name(hf)).collect();
    let mut extra: Vec<&String> = content
        .tensor_infos
        .keys()
        .filter(|n| !used.contains(*n))
        .collect();
    extra.sort();
    extra.first().map(|n| n.to_string())
}

/// The tokenizer stored in a GGUF file's metadata, rebuilt to give Hugging Face's ids
/// ([`crate::lm::LmTokenizer::from_gguf`], which also knows the start token; this is its
/// Hugging Face tokenizer). An unknown pre-tokenizer type is [`Error::Checkpoint`] naming it.
pub fn gguf_tokenizer(path: &Path) -> trak::Result<tokenizers::Tokenizer> {
    Ok(crate::lm::LmTokenizer::from_gguf(path)?.tokenizer().clone())
}
