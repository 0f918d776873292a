//! Tokenizer parity: a byte-level BPE trained here for each pre-tokenizer family, written once
//! as a Hugging Face `tokenizer.json` (the family's pre-tokenizer as Hugging Face's own files
//! spell it) and once as GGUF metadata (`tokenizer.ggml.*`); the tokenizer the crate rebuilds
//! from the GGUF gives Hugging Face's ids on strings with leading spaces, digits, code,
//! newlines and non-ASCII text. An unknown pre-tokenizer type is refused by name.

use std::path::Path;

use candle::quantized::gguf_file::{self, Value};
use serde_json::json;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};
use trak_candle::lm::LmTokenizer;

const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const TRAIN: &[&str] = &[
    "The capital of France is Paris. The capital of Italy is Rome.",
    "In 2024, 12.5% of 1,000,000 people lived in 3 cities; 42 of them were born in 1999.",
    "def f(x):\n    return x ** 2\n\nfor i in range(10):\n    print(f(i))\n",
    "fn main() { let v = vec![1, 2, 3]; println!(\"{:?}\", v); }",
    "Café naïve résumé façade Ångström — déjà vu. 你好，世界！Россия и Україна.",
    "I'm sure they'll say it's fine, don't you think? We've seen it, haven't we?",
    "  leading spaces\tand tabs\r\nand windows newlines\n\n\nand blank lines   ",
];

const PROBES: &[&str] = &[
    "The capital of France is",
    " The capital of France is",
    "   three leading spaces",
    "in 2024, 12.5% of 1,000,000",
    "Room 101 and 3.14159 and 12345678",
    "def g(y):\n    return y**3\n",
    "if (a && b) { return -1; }",
    "line one\nline two\n\n\nline five",
    "tabs\tand\r\nnewlines  \n",
    "Café résumé Ångström ÅNGSTRÖM",
    "你好世界 Україна",
    "emoji 😀👍🏽 ❤️",
    "<|endoftext|>after the start token",
    "They'LL SAY it's FINE",
    " ",
    "x",
];

/// The family's pre-tokenizer (and normalizer) as Hugging Face's `tokenizer.json` files have it.
fn family(pre: &str) -> (serde_json::Value, Option<serde_json::Value>) {
    let byte_level = |trim, regex| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": trim, "use_regex": regex});
    let split = |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
    match pre {
        "gpt2" => (byte_level(true, true), None),
        "smollm" => (
            json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true, true)]}),
            None,
        ),
        "llama-bpe" => (
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3), byte_level(true, false)]}),
            None,
        ),
        "qwen2" => (
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2), byte_level(false, false)]}),
            Some(json!({"type": "NFC"})),
        ),
        other => panic!("no family {other}"),
    }
}

/// A BPE trained on `TRAIN` under the family's pre-tokenizer, with `<|endoftext|>` special:
/// Hugging Face's tokenizer, as loaded from its `tokenizer.json` text.
fn reference(pre: &str) -> Tokenizer {
    let (pt, norm) = family(pre);
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(
        serde_json::from_value::<PreTokenizerWrapper>(pt).unwrap(),
    ));
    if let Some(n) = norm {
        tok.with_normalizer(Some(
            serde_json::from_value::<NormalizerWrapper>(n).unwrap(),
        ))
        .unwrap();
    }
    tok.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    let trainer = BpeTrainer::builder()
        .vocab_size(420)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from("<|endoftext|>", true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut trainer: TrainerWrapper = trainer.into();
    tok.train(&mut trainer, TRAIN.iter()).unwrap();
    let text = tok.to_string(false).unwrap();
    text.parse::<Tokenizer>().unwrap()
}

/// The same tokenizer as llama.cpp's GGUF metadata.
fn write_gguf(tok: &Tokenizer, pre: &str, path: &Path) {
    let json: serde_json::Value = serde_json::from_str(&tok.to_string(false).unwrap()).unwrap();
    let vocab = json["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (t, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = t.clone();
    }
    let merges: Vec<Value> = json["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => Value::String(s.clone()),
            pair => Value::String(format!(
                "{} {}",
                pair[0].as_str().unwrap(),
                pair[1].as_str().unwrap()
            )),
        })
        .collect();
    let types: Vec<Value> = tokens
        .iter()
        .map(|t| Value::I32(if t == "<|endoftext|>" { 3 } else { 1 }))
        .collect();
    let strings = |v: &[String]| Value::Array(v.iter().map(|t| Value::String(t.clone())).collect());
    let eot = tokens.iter().position(|t| t == "<|endoftext|>").unwrap() as u32;
    let meta = [
        ("general.architecture", Value::String("llama".into())),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.merges", Value::Array(merges)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.bos_token_id", Value::U32(eot)),
        ("tokenizer.ggml.eos_token_id", Value::U32(eot)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
    ];
    let meta: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut std::fs::File::create(path).unwrap(), &meta, &[]).unwrap();
}

#[test]
fn gguf_tokenizers_give_hugging_faces_ids_for_every_family() {
    let tmp = tempfile::tempdir().unwrap();
    for pre in ["gpt2", "smollm", "llama-bpe", "qwen2"] {
        let hf = reference(pre);
        let path = tmp.path().join(format!("{pre}.gguf"));
        write_gguf(&hf, pre, &path);
        let ours = LmTokenizer::from_gguf(&path).unwrap();
        let mut differs = Vec::new();
        for text in PROBES {
            let want = hf.encode(*text, true).unwrap().get_ids().to_vec();
            let got = ours.encode(text).unwrap();
            if got != want {
                differs.push(format!("{text:?}: {got:?} vs Hugging Face's {want:?}"));
            }
        }
        assert!(differs.is_empty(), "{pre}: {}", differs.join("; "));
        // SmolLM2's and Qwen2's families put every digit on its own, whatever the merges.
        if matches!(pre, "smollm" | "qwen2") {
            assert_eq!(ours.encode("12345678").unwrap().len(), 8, "{pre}");
        }
    }
}

#[test]
fn a_tokenizer_json_is_used_as_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = reference("smollm");
    hf.save(tmp.path().join("tokenizer.json"), false).unwrap();
    let ours = LmTokenizer::from_json(tmp.path()).unwrap();
    for text in PROBES {
        assert_eq!(
            ours.encode(text).unwrap(),
            hf.encode(*text, true).unwrap().get_ids()
        );
    }
    // No BOS is added; sequences start with <|endoftext|>.
    let eot = hf.token_to_id("<|endoftext|>").unwrap();
    assert_eq!(ours.start_token(), eot);
    assert_eq!(ours.sequence("x").unwrap()[0], eot);
}

#[test]
fn an_unknown_pre_tokenizer_or_model_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = reference("gpt2");
    let path = tmp.path().join("odd.gguf");
    write_gguf(&hf, "klingon", &path);
    let e = LmTokenizer::from_gguf(&path).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer.ggml.pre") && e.contains("\"klingon\""),
        "{e}"
    );
    assert!(e.contains("smollm") && e.contains("llama-bpe"), "{e}");
}
