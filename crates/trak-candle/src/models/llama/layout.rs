//! The tensors of a Llama-family checkpoint, by Hugging Face state-dict name, with the shapes
//! the configuration implies: the one description that loading, checking and the network use.

use super::LlamaConfig;

/// The token embedding (also the output head when tied).
pub const EMBED: &str = "model.embed_tokens.weight";
/// The final norm's scale.
pub const FINAL_NORM: &str = "model.norm.weight";
/// The output head's weight (absent when tied).
pub const LM_HEAD: &str = "lm_head.weight";

/// The prefix of block `i`'s tensors (`model.layers.3`).
pub fn block(i: usize) -> String {
    format!("model.layers.{i}")
}

/// The block a tensor belongs to (`model.layers.3.mlp.up_proj.weight` → 3), if any.
pub fn block_index(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("model.layers.")?;
    rest.split('.').next()?.parse().ok()
}

/// The seven linear layers of a block: (name under the block, out × in).
pub fn block_linears(cfg: &LlamaConfig) -> [(&'static str, [usize; 2]); 7] {
    let (d, q, kv, m) = (
        cfg.hidden_size,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.intermediate_size,
    );
    [
        ("self_attn.q_proj", [q, d]),
        ("self_attn.k_proj", [kv, d]),
        ("self_attn.v_proj", [kv, d]),
        ("self_attn.o_proj", [d, q]),
        ("mlp.gate_proj", [m, d]),
        ("mlp.up_proj", [m, d]),
        ("mlp.down_proj", [d, m]),
    ]
}

/// Whether the linear layer `name` (under a block) has a bias under `cfg`.
pub fn has_bias(cfg: &LlamaConfig, name: &str) -> bool {
    cfg.qkv_bias
        && matches!(
            name,
            "self_attn.q_proj" | "self_attn.k_proj" | "self_attn.v_proj"
        )
}

/// Every tensor of the checkpoint with its shape, in a fixed order (embedding, blocks, final
/// norm, head).
pub fn tensors(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let d = cfg.hidden_size;
    let mut out = vec![(EMBED.to_string(), vec![cfg.vocab_size, d])];
    for i in 0..cfg.num_hidden_layers {
        let b = block(i);
        out.push((format!("{b}.input_layernorm.weight"), vec![d]));
        out.push((format!("{b}.post_attention_layernorm.weight"), vec![d]));
        for (name, [o, n]) in block_linears(cfg) {
            out.push((format!("{b}.{name}.weight"), vec![o, n]));
            if has_bias(cfg, name) {
                out.push((format!("{b}.{name}.bias"), vec![o]));
            }
        }
    }
    out.push((FINAL_NORM.to_string(), vec![d]));
    if !cfg.tie_word_embeddings {
        out.push((LM_HEAD.to_string(), vec![cfg.vocab_size, d]));
    }
    out
}
