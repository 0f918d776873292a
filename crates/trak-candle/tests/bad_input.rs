//! The language-model path under bad input (issue 33): every case refused by a typed error
//! that names what is wrong, none panics, and every error's `Display` is one line, with
//! `RUST_BACKTRACE=1` too (the last test runs the others' errors again in a child process
//! with it set).

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle::{DType, Device, Tensor};
use common::llama::{VOCAB, checkpoint, json, tensors, write_gguf_with};
use trak::{CheckpointProblem, Error, ProjectorKind, Trak, Unattributable};
use trak_candle::models::llama::{LlamaCheckpoint, LlamaConfig};
use trak_candle::{CandleModel, SequenceObjective, TokenCollate, TokenSeq};

fn collate() -> TokenCollate {
    TokenCollate {
        context: 12,
        pad: 0,
    }
}

/// Six documents, each in the vocabulary and the context.
fn docs() -> Vec<TokenSeq> {
    (0..6u32)
        .map(|i| TokenSeq::document(vec![1, 5 + i, 9, 3, 22, 7]))
        .collect()
}

/// The problem of a checkpoint error, or a panic saying what came instead.
fn problem<T>(r: trak::Result<T>) -> CheckpointProblem {
    match r {
        Err(Error::Checkpoint { problem, .. }) => problem,
        Err(other) => panic!("expected Error::Checkpoint, got {other}"),
        Ok(_) => panic!("expected Error::Checkpoint, got a checkpoint"),
    }
}

/// A config field's name and reason.
fn config_field(p: CheckpointProblem) -> (String, String) {
    match p {
        CheckpointProblem::ConfigField { field, reason } => (field, reason),
        other => panic!("expected ConfigField, got {other:?}"),
    }
}

/// Every error of the cases below, for the one-line check.
fn all_errors() -> Vec<Error> {
    let dir = tempfile::tempdir().unwrap();
    let mut errs = vec![
        gguf_with(dir.path(), &[("attention.head_count", 0)]).unwrap_err(),
        factored_features(3).unwrap_err(),
        nan_q_proj(true).unwrap_err(),
        featurize_docs(bad_target_at(5)).unwrap_err(),
        featurize_docs(input_token_at(4, 40)).unwrap_err(),
        featurize_docs(input_token_at(4, u32::MAX)).unwrap_err(),
        build_with_pad(40).unwrap_err(),
        build_with_vocab(20).unwrap_err(),
        hf_dir_with(
            dir.path(),
            &json(false),
            |_| {},
            |b| b.truncate(b.len() - 7),
        )
        .unwrap_err(),
        nan_q_proj(false).unwrap_err(),
        featurize_docs(too_long_at(5)).unwrap_err(),
        gguf_with(dir.path(), &[("block_count", 0)]).unwrap_err(),
        gguf_with(dir.path(), &[("block_count", 1)]).unwrap_err(),
        gguf_with(dir.path(), &[("block_count", u32::MAX)]).unwrap_err(),
        bool_tensor(dir.path()).unwrap_err(),
        nan_tensor(dir.path()).unwrap_err(),
    ];
    for cfg in [small_heads(), act_five()] {
        let problem = LlamaConfig::from_json(&cfg).unwrap_err();
        let path = "config.json".into();
        errs.push(Error::Checkpoint { path, problem });
    }
    // A candle error from a real failure (carries a backtrace when RUST_BACKTRACE is set).
    let a = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
    let e = trak_candle::CandleContext::ctx(a.matmul(&a), "a matmul of mismatched shapes");
    errs.push(e.unwrap_err());
    errs
}

fn gguf_with(dir: &Path, ints: &[(&str, u32)]) -> trak::Result<LlamaCheckpoint> {
    let path = dir.join("model.gguf");
    write_gguf_with(&checkpoint(false, 2), "llama", &path, ints);
    LlamaCheckpoint::from_gguf(&path, &Device::Cpu)
}

#[test]
fn a_gguf_with_zero_heads_is_refused_like_a_hugging_face_config() {
    let dir = tempfile::tempdir().unwrap();
    let (field, reason) = config_field(problem(gguf_with(
        dir.path(),
        &[("attention.head_count", 0)],
    )));
    assert_eq!(field, "llama.attention.head_count (num_attention_heads)");
    assert!(reason.contains("0 is not a positive integer"), "{reason}");
    let hf = json(false).replace(r#""num_attention_heads": 4"#, r#""num_attention_heads": 0"#);
    let (field, _) = config_field(LlamaConfig::from_json(&hf).unwrap_err());
    assert_eq!(field, "num_attention_heads");
}

/// Factored features of the tiny Llama (15 attributed linears) at projection dimension k.
fn factored_features(k: usize) -> trak::Result<ndarray::Array2<f32>> {
    let lm = checkpoint(false, 3).model()?;
    let model = CandleModel::builder(&lm, collate(), SequenceObjective::new(VOCAB))
        .chunk_rows(2)
        .build(&docs())?;
    let trak = Trak::builder()
        .proj_dim(k)
        .projector(ProjectorKind::FACTORED)
        .build()?;
    trak.features(0, &model, &docs())
}

#[test]
fn a_factored_k_below_the_layer_count_is_refused_naming_both() {
    for k in 1..15 {
        match factored_features(k) {
            Err(Error::InvalidParameter {
                parameter,
                value,
                expected,
            }) => {
                assert_eq!(parameter, "projection dimension k");
                assert_eq!(value, k.to_string());
                assert!(expected.contains("k ≥ 15"), "{expected}");
            }
            other => panic!("k = {k}: {:?}", other.map(|f| f.dim())),
        }
    }
    // From 15 on every layer gets a feature, or a split that leaves one out is refused.
    for k in 15..=20 {
        match factored_features(k) {
            Ok(f) => assert_eq!(f.nrows(), 6),
            Err(Error::InvalidParameter { expected, .. }) => {
                assert!(expected.contains("gets none"), "k = {k}: {expected}")
            }
            Err(e) => panic!("k = {k}: {e}"),
        }
    }
    // The built-in MLP's factored path: 2 layers, k = 1.
    let data = trak::data::Dataset::blobs(20, 4, 3, 0).unwrap().samples();
    let mlp = trak::models::Mlp::new(&[4, 8, 3], trak::output::Margin, 0).unwrap();
    let trak = Trak::builder()
        .proj_dim(1)
        .projector(ProjectorKind::FACTORED)
        .build()
        .unwrap();
    let r = trak.features(0, &mlp, &data);
    assert!(matches!(r, Err(Error::InvalidParameter { .. })), "{r:?}");
}

/// The tiny Llama with a NaN in block 0's q_proj, built with or without the gradient check.
fn nan_q_proj(gradient_check: bool) -> trak::Result<()> {
    let ckpt = checkpoint(false, 4);
    let (_, var) = ckpt
        .vars()
        .iter()
        .find(|(n, _)| n == "model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    let mut w = var
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    w[5] = f32::NAN;
    var.set(&Tensor::from_vec(w, var.dims(), &Device::Cpu).unwrap())
        .unwrap();
    let lm = ckpt.model()?;
    CandleModel::builder(&lm, collate(), SequenceObjective::new(VOCAB))
        .gradient_check(gradient_check)
        .build(&docs())
        .map(|_| ())
}

#[test]
fn a_nan_weight_is_reported_as_non_finite_at_its_layer() {
    for check in [true, false] {
        match nan_q_proj(check) {
            Err(Error::Unattributable { layer, reason }) => {
                assert_eq!(layer, "model.layers.0.self_attn.q_proj");
                assert!(matches!(
                    reason,
                    Unattributable::NonFinite { example: 0, .. }
                ));
            }
            other => panic!("gradient_check({check}): {other:?}"),
        }
    }
}

/// Featurises `docs` (pipeline batches of 2, chunks of 2) with the tiny Llama.
fn featurize_docs(docs: Vec<TokenSeq>) -> trak::Result<()> {
    let lm = checkpoint(false, 5).model()?;
    let model = CandleModel::builder(&lm, collate(), SequenceObjective::new(VOCAB))
        .chunk_rows(2)
        .build(&docs[..2])?;
    let trak = Trak::builder()
        .proj_dim(32)
        .projector(ProjectorKind::FACTORED)
        .batch_size(2)
        .build()?;
    trak.featurizer().featurize(0, &model, &docs)
}

/// [`docs`] with example `i`'s last token (a target) outside the vocabulary.
fn bad_target_at(i: usize) -> Vec<TokenSeq> {
    let mut d = docs();
    *d[i].tokens.last_mut().unwrap() = VOCAB as u32 + 3;
    d
}

/// [`docs`] with example `i`'s second token (an input position) replaced by `token`; the
/// example becomes a completion whose prompt holds it (input only).
fn input_token_at(i: usize, token: u32) -> Vec<TokenSeq> {
    let mut d = docs();
    d[i].tokens[1] = token;
    d[i].prompt_len = 3;
    d
}

/// [`docs`] with example `i` longer than the context (20 tokens for 12 + 1).
fn too_long_at(i: usize) -> Vec<TokenSeq> {
    let mut d = docs();
    d[i].tokens = vec![1; 20];
    d
}

/// The error's example index and reason, for [`Error::InvalidExample`].
fn invalid_example(r: trak::Result<()>) -> (usize, String) {
    match r {
        Err(Error::InvalidExample { example, reason }) => (example, reason),
        other => panic!("expected InvalidExample, got {other:?}"),
    }
}

#[test]
fn a_bad_token_names_the_example_in_the_callers_set_its_position_and_the_token() {
    let (example, reason) = invalid_example(featurize_docs(bad_target_at(5)));
    assert_eq!(example, 5, "{reason}");
    assert!(reason.contains("token 43 at position 5"), "{reason}");
    for token in [40, u32::MAX] {
        let (example, reason) = invalid_example(featurize_docs(input_token_at(4, token)));
        assert_eq!(example, 4, "{reason}");
        let want = format!("token {token} at position 1 is outside the vocabulary of 40");
        assert!(reason.contains(&want), "{reason}");
    }
    // A sequence longer than the context, in pipeline batch 2 at chunk row 1.
    let (example, reason) = invalid_example(featurize_docs(too_long_at(5)));
    assert_eq!(example, 5, "{reason}");
    assert!(
        reason.contains("20 tokens, more than the context of 12"),
        "{reason}"
    );
}

fn build_with_pad(pad: u32) -> trak::Result<()> {
    let lm = checkpoint(false, 6).model()?;
    let collate = TokenCollate { context: 12, pad };
    CandleModel::builder(&lm, collate, SequenceObjective::new(VOCAB))
        .build(&docs())
        .map(|_| ())
}

fn build_with_vocab(vocab: usize) -> trak::Result<()> {
    let lm = checkpoint(false, 6).model()?;
    let docs: Vec<TokenSeq> = (0..4u32)
        .map(|i| TokenSeq::document(vec![1, 2 + i, 3]))
        .collect();
    CandleModel::builder(&lm, collate(), SequenceObjective::new(vocab))
        .build(&docs)
        .map(|_| ())
}

#[test]
fn a_pad_token_or_objective_outside_the_networks_vocabulary_is_refused_at_build() {
    match build_with_pad(40) {
        Err(Error::InvalidParameter {
            parameter, value, ..
        }) => {
            assert_eq!(parameter, "padding of the collation");
            assert!(value.contains("token 40"), "{value}");
        }
        other => panic!("{other:?}"),
    }
    match build_with_vocab(20) {
        Err(Error::ShapeMismatch { expected, got, .. }) => {
            assert!(expected.contains("vocabulary of 20"), "{expected}");
            assert!(got.ends_with("40]"), "{got}");
        }
        other => panic!("{other:?}"),
    }
}

/// hidden_size 3 with 4 heads and no head_dim.
fn small_heads() -> String {
    json(false)
        .replace(r#""hidden_size": 24"#, r#""hidden_size": 3"#)
        .replace(r#""num_key_value_heads": 2, "#, "")
}

/// `"hidden_act": 5`.
fn act_five() -> String {
    json(false).replace(r#""hidden_act": "silu""#, r#""hidden_act": 5"#)
}

#[test]
fn config_fields_name_what_was_given() {
    let (field, reason) = config_field(LlamaConfig::from_json(&small_heads()).unwrap_err());
    assert_eq!(field, "hidden_size");
    assert!(
        reason.contains("3 is not a multiple of num_attention_heads = 4"),
        "{reason}"
    );
    let (field, reason) = config_field(LlamaConfig::from_json(&act_five()).unwrap_err());
    assert_eq!(field, "hidden_act");
    assert!(reason.contains("5 is not a string"), "{reason}");
}

/// A Hugging Face directory of the tiny Llama: `config` as config.json, `edit` applied to
/// the tensors, `bytes` to the written model.safetensors.
fn hf_dir_with(
    dir: &Path,
    config: &str,
    edit: impl FnOnce(&mut HashMap<String, Tensor>),
    bytes: impl FnOnce(&mut Vec<u8>),
) -> trak::Result<LlamaCheckpoint> {
    let d = dir.join("hf");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("config.json"), config).unwrap();
    let mut t = tensors(&checkpoint(false, 7));
    edit(&mut t);
    let file = d.join("model.safetensors");
    candle::safetensors::save(&t, &file).unwrap();
    let mut b = std::fs::read(&file).unwrap();
    bytes(&mut b);
    std::fs::write(&file, b).unwrap();
    LlamaCheckpoint::from_hf_dir(&d, &Device::Cpu)
}

/// Replaces `name`'s dtype in a safetensors file's header (the data stays; e.g. U8 → BOOL,
/// one byte per entry both), so that a file of a dtype candle does not write can be made.
fn retype(bytes: &mut Vec<u8>, name: &str, from: &str, to: &str) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let at = header.find(&format!("\"{name}\"")).unwrap();
    let dtype = at + header[at..].find(&format!("\"{from}\"")).unwrap();
    let mut h = header.clone();
    h.replace_range(dtype..dtype + from.len() + 2, &format!("\"{to}\""));
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    *bytes = out;
}

const Q: &str = "model.layers.1.self_attn.q_proj.weight";

/// Block 1's q_proj stored as bool (U8 bytes, the header says BOOL).
fn bool_tensor(dir: &Path) -> trak::Result<LlamaCheckpoint> {
    let z = Tensor::zeros((24, 24), DType::U8, &Device::Cpu).unwrap();
    let edit = |t: &mut HashMap<String, Tensor>| {
        t.insert(Q.into(), z);
    };
    hf_dir_with(dir, &json(false), edit, |b| retype(b, Q, "U8", "BOOL"))
}

/// Block 1's q_proj with a NaN at flat index 7.
fn nan_tensor(dir: &Path) -> trak::Result<LlamaCheckpoint> {
    let edit = |t: &mut HashMap<String, Tensor>| {
        let mut w = t[Q].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        w[7] = f32::NAN;
        t.insert(
            Q.into(),
            Tensor::from_vec(w, (24, 24), &Device::Cpu).unwrap(),
        );
    };
    hf_dir_with(dir, &json(false), edit, |_| {})
}

#[test]
fn bad_safetensors_files_are_refused_naming_the_tensor_or_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = json(false);
    let q = Q;
    let r = bool_tensor(dir.path());
    match problem(r) {
        CheckpointProblem::TensorType { name, found, .. } => {
            assert_eq!((name.as_str(), found.as_str()), (q, "BOOL"))
        }
        other => panic!("{other:?}"),
    }
    match problem(hf_dir_with(
        dir.path(),
        &cfg,
        |_| {},
        |b| b.truncate(b.len() - 7),
    )) {
        CheckpointProblem::FileSize { found, expected } => assert_eq!(found + 7, expected),
        other => panic!("{other:?}"),
    }
    let r = nan_tensor(dir.path());
    let nan = CheckpointProblem::NonFiniteTensor {
        name: q.into(),
        index: 7,
    };
    assert_eq!(problem(r), nan);
    // A block the config does not count.
    let one = cfg.replace(r#""num_hidden_layers": 2"#, r#""num_hidden_layers": 1"#);
    match problem(hf_dir_with(dir.path(), &one, |_| {}, |_| {})) {
        CheckpointProblem::UnexpectedTensor { name, .. } => {
            assert!(name.starts_with("model.layers.1."), "{name}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_gguf_block_count_must_match_the_files_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (field, _) = config_field(problem(gguf_with(dir.path(), &[("block_count", 0)])));
    assert_eq!(field, "llama.block_count (num_hidden_layers)");
    match problem(gguf_with(dir.path(), &[("block_count", 1)])) {
        CheckpointProblem::UnexpectedTensor { name, reason } => {
            assert!(name.starts_with("blk.1."), "{name}");
            assert!(reason.contains("block_count is 1"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Far more blocks than the file holds: refused at once, before any name is built.
    let t = std::time::Instant::now();
    let (field, reason) =
        config_field(problem(gguf_with(dir.path(), &[("block_count", u32::MAX)])));
    assert_eq!(field, "llama.block_count");
    assert!(
        reason.contains("the file holds tensors of 2 blocks"),
        "{reason}"
    );
    assert!(t.elapsed().as_secs() < 5);
}

#[test]
fn every_error_displays_on_one_line_with_rust_backtrace_set() {
    if std::env::var_os("TRAK_BAD_INPUT_CHILD").is_some() {
        for e in all_errors() {
            let text = e.to_string();
            eprintln!("BAD_INPUT error: {text}");
            assert!(
                !text.contains('\n'),
                "{} lines: {text}",
                text.lines().count()
            );
            assert!(!text.is_empty());
        }
        // The candle error's backtrace is still reachable as the source.
        let last = all_errors().pop().unwrap();
        let source = std::error::Error::source(&last).unwrap().to_string();
        assert!(
            source.lines().count() > 3,
            "no backtrace in the source: {source}"
        );
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "every_error_displays_on_one_line_with_rust_backtrace_set",
        ])
        .env("RUST_BACKTRACE", "1")
        .env("TRAK_BAD_INPUT_CHILD", "1")
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("1 passed"), "{log}");
}
