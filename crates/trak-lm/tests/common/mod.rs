//! The tiny model of the command's tests: a random Llama saved as a Hugging Face directory
//! with a word-level `tokenizer.json` built here, a generated corpus and queries, and a way
//! to run the command.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use trak_candle::candle::Device;
use trak_candle::models::llama::{LlamaCheckpoint, LlamaConfig};
use trak_candle::tokenizers::models::wordlevel::WordLevel;
use trak_candle::tokenizers::pre_tokenizers::whitespace::Whitespace;
use trak_candle::tokenizers::{AddedToken, Tokenizer};

const NAMES: [&str; 6] = ["ana", "bo", "cai", "dee", "eli", "fay"];
const PETS: [&str; 4] = ["cat", "dog", "owl", "fox"];
const FILL: [&str; 6] = ["the", "sun", "was", "warm", "and", "still"];

/// The corpus: each name keeps one pet (stated once or twice), and filler sentences.
pub fn documents(n_fill: usize) -> Vec<String> {
    let mut docs = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        docs.push(format!("{name} keeps a {} .", PETS[i % PETS.len()]));
        if i % 2 == 0 {
            docs.push(format!(
                "at home {name} feeds the {} .",
                PETS[i % PETS.len()]
            ));
        }
    }
    for i in 0..n_fill {
        let w: Vec<&str> = (0..4)
            .map(|j| FILL[(i * 7 + j * 3 + i / 5) % FILL.len()])
            .collect();
        docs.push(format!("{} .", w.join(" ")));
    }
    docs
}

/// The vocabulary: `<|endoftext|>` (0, the start token), `[UNK]`, then every word.
fn vocab() -> HashMap<String, u32> {
    let words = [
        "<|endoftext|>",
        "[UNK]",
        ".",
        "keeps",
        "a",
        "at",
        "home",
        "feeds",
        "pet",
        "is",
    ];
    let all = words.iter().chain(&NAMES).chain(&PETS).chain(&FILL);
    let mut v = HashMap::new();
    for w in all {
        let id = v.len() as u32;
        v.entry(w.to_string()).or_insert(id);
    }
    v
}

/// Writes a random tiny Llama and its tokenizer as a Hugging Face directory.
pub fn base_model(dir: &Path) {
    let vocab = vocab();
    let n = vocab.len();
    let model = WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tok = Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(Whitespace {}));
    tok.add_special_tokens([AddedToken::from("<|endoftext|>", true)])
        .unwrap();
    let cfg = LlamaConfig::from_json(&format!(
        r#"{{"architectures": ["LlamaForCausalLM"], "vocab_size": {n}, "hidden_size": 16,
        "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "max_position_embeddings": 32, "tie_word_embeddings": true}}"#
    ))
    .unwrap();
    let ckpt = LlamaCheckpoint::random(cfg, 7, &Device::Cpu).unwrap();
    ckpt.save_hf_dir(dir).unwrap();
    tok.save(dir.join("tokenizer.json"), false).unwrap();
}

/// A directory with `base/`, `train.jsonl` (`n_fill` fillers) and `queries.jsonl`.
pub fn workspace(root: &Path, n_fill: usize) -> (PathBuf, PathBuf, PathBuf) {
    let base = root.join("base");
    base_model(&base);
    let train = root.join("train.jsonl");
    let lines: Vec<String> = documents(n_fill)
        .iter()
        .map(|d| serde_json::json!({ "text": d }).to_string())
        .collect();
    std::fs::write(&train, lines.join("\n") + "\n").unwrap();
    let queries = root.join("queries.jsonl");
    let q: Vec<String> = NAMES[..3]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let c = format!(" {}", PETS[i % PETS.len()]);
            serde_json::json!({ "prompt": format!("the pet {n} is a"), "completion": c })
                .to_string()
        })
        .collect();
    std::fs::write(&queries, q.join("\n") + "\n").unwrap();
    (base, train, queries)
}

/// The command.
pub fn trak_lm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trak-lm"))
}

/// Runs the command with `args`; panics with its stderr if it fails.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "trak-lm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the command with `args`.
pub fn run(args: &[&str]) -> Output {
    trak_lm().args(args).output().unwrap()
}

/// The one-line error of a failing run.
pub fn error(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "trak-lm {args:?} should fail");
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("[trak-lm]"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    lines[0].to_string()
}

/// A path as the argument string.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
