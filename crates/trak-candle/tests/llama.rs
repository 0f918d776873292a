//! The Llama-family port: logits against candle-transformers' own `models::llama` on the same
//! weights, factored gradients against batch-size-1 backward passes, the tied head (refused
//! when asked for; the fallback's gradient is both uses summed), loading from Hugging Face
//! directories (single and sharded safetensors), and the typed refusals of bad checkpoints.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle::{DType, Device, IndexOp, Tensor, Var};
use candle_nn::VarBuilder;
use candle_transformers::models::llama as reference;
use common::llama::{VOCAB, checkpoint, json, tensors, write_gguf};
use common::{grads, rel_err};
use trak::{CheckpointProblem, Error, Unattributable};
use trak_candle::models::llama::{LlamaCheckpoint, LlamaConfig, layout};
use trak_candle::{CandleModel, Network, Recorder, SequenceObjective, TokenCollate, TokenSeq};

fn tokens() -> Tensor {
    let rows = [
        [1u32, 5, 9, 3, 22, 7, 0, 39, 12, 4],
        [2, 2, 31, 8, 17, 25, 6, 1, 33, 10],
    ];
    Tensor::new(&rows, &Device::Cpu).unwrap()
}

/// max |a − b| / max |a| over two tensors.
fn rel(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

#[test]
fn logits_equal_candle_transformers_llama_at_every_position() {
    let mut worst = 0f32;
    for tied in [false, true] {
        let ckpt = checkpoint(tied, 7);
        let ours = ckpt
            .model()
            .unwrap()
            .forward(&tokens(), &mut Recorder::training())
            .unwrap();
        assert_eq!(ours.dims(), &[2, 10, VOCAB]);
        let cfg: reference::LlamaConfig = serde_json::from_str(&json(tied)).unwrap();
        let cfg = cfg.into_config(false);
        let vb = VarBuilder::from_tensors(tensors(&ckpt), DType::F32, &Device::Cpu);
        let theirs = reference::Llama::load(vb, &cfg).unwrap();
        // candle's Llama returns the last position's logits: run it on every prefix.
        for t in 1..=10 {
            let mut cache = reference::Cache::new(false, DType::F32, &cfg, &Device::Cpu).unwrap();
            let want = theirs
                .forward(&tokens().narrow(1, 0, t).unwrap(), 0, &mut cache)
                .unwrap();
            let got = ours.i((.., t - 1, ..)).unwrap();
            let err = rel(&want, &got);
            assert!(
                err < 1e-4,
                "tied={tied}, position {}: relative error {err}",
                t - 1
            );
            worst = worst.max(err);
        }
    }
    eprintln!("LLAMA_PARITY worst relative error of the logits: {worst:.2e}");
}

fn seqs() -> Vec<TokenSeq> {
    vec![
        TokenSeq::document(vec![1, 5, 9, 3, 22, 7, 0]),
        TokenSeq::document(vec![1, 30, 2]),
        TokenSeq::completion(&[1, 8, 8, 14], &[20, 21, 22]),
        TokenSeq::document(vec![1, 11, 12, 13, 14, 15, 16, 17, 18, 19]),
        TokenSeq::completion(&[1, 3], &[39]),
    ]
}

fn collate() -> TokenCollate {
    TokenCollate {
        context: 12,
        pad: 0,
    }
}

/// The attributed layers' variables in the adapter's layout (call order; W then b).
fn linear_vars(ckpt: &LlamaCheckpoint) -> Vec<(String, Var)> {
    let by_name: HashMap<&str, &Var> = ckpt.vars().iter().map(|(n, v)| (n.as_str(), v)).collect();
    let mut names = Vec::new();
    for i in 0..ckpt.config().num_hidden_layers {
        for (l, _) in layout::block_linears(ckpt.config()) {
            names.push(format!("{}.{l}.weight", layout::block(i)));
        }
    }
    if !ckpt.config().tie_word_embeddings {
        names.push(layout::LM_HEAD.to_string());
    }
    names
        .into_iter()
        .map(|n| (n.clone(), by_name[n.as_str()].clone()))
        .collect()
}

#[test]
fn factored_gradients_equal_batch_size_one_backward_passes() {
    for tied in [false, true] {
        let ckpt = checkpoint(tied, 3);
        let lm = ckpt.model().unwrap();
        let objective = SequenceObjective::new(VOCAB);
        let factored = CandleModel::builder(&lm, collate(), objective)
            .chunk_rows(2)
            .build(&seqs())
            .unwrap();
        let names: Vec<&str> = factored
            .selected_layers()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(
            names.len(),
            14 + usize::from(!tied),
            "tied={tied}: {names:?}"
        );
        assert_eq!(names[0], "model.layers.0.self_attn.q_proj");
        assert_eq!(names[13], "model.layers.1.mlp.down_proj");
        let fallback = CandleModel::builder(&lm, collate(), objective)
            .all_parameters(linear_vars(&ckpt))
            .build(&seqs())
            .unwrap();
        let (g0, g1) = (grads(&fallback, &seqs()), grads(&factored, &seqs()));
        let err = rel_err(&g0, &g1);
        eprintln!("LLAMA_GRADIENTS tied={tied} factored vs batch-size-1: {err:.2e}");
        assert!(err < 1e-4, "tied={tied}: relative error {err}");
    }
}

#[test]
fn a_tied_head_is_refused_when_asked_for_and_summed_by_the_fallback() {
    let tied = checkpoint(true, 5);
    let lm = tied.model().unwrap();
    let objective = SequenceObjective::new(VOCAB);
    let asked = CandleModel::builder(&lm, collate(), objective)
        .layers(["lm_head"])
        .build(&seqs());
    match asked {
        Err(Error::Unattributable {
            layer,
            reason: Unattributable::SharedWeights { with },
        }) => {
            assert_eq!(
                (layer.as_str(), with.as_str()),
                ("lm_head", "model.embed_tokens")
            );
        }
        other => panic!("expected SharedWeights, got {:?}", other.map(|_| ())),
    }
    // The same weights untied (the head a copy of the embedding): the tied embedding's
    // gradient is the untied embedding's plus the untied head's.
    let mut untied_cfg = tied.config().clone();
    untied_cfg.tie_word_embeddings = false;
    let mut t = tensors(&tied);
    t.insert(layout::LM_HEAD.into(), t[layout::EMBED].copy().unwrap());
    let untied = LlamaCheckpoint::from_tensors(untied_cfg, t, Path::new("<test>")).unwrap();
    let var = |c: &LlamaCheckpoint, n: &str| c.vars().iter().find(|(m, _)| m == n).unwrap().clone();
    let one = |c: &LlamaCheckpoint, lm, names: &[&str]| {
        let vars = names.iter().map(|n| var(c, n)).collect();
        let m = CandleModel::builder(lm, collate(), objective)
            .all_parameters(vars)
            .build(&seqs());
        grads(&m.unwrap(), &seqs())
    };
    let summed = one(&tied, &lm, &[layout::EMBED]);
    let untied_lm = untied.model().unwrap();
    let parts = one(&untied, &untied_lm, &[layout::EMBED, layout::LM_HEAD]);
    let half = parts.ncols() / 2;
    let expected = &parts.slice(ndarray::s![.., ..half]) + &parts.slice(ndarray::s![.., half..]);
    let err = rel_err(&expected, &summed);
    eprintln!("LLAMA_TIED embedding gradient vs embedding + head parts: {err:.2e}");
    assert!(
        err < 1e-5,
        "tied embedding gradient vs embedding + head: {err}"
    );
}

#[test]
fn hugging_face_directories_load_single_and_sharded() {
    let ckpt = checkpoint(false, 11);
    let want = ckpt
        .model()
        .unwrap()
        .forward(&tokens(), &mut Recorder::training())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single");
    std::fs::create_dir_all(&single).unwrap();
    std::fs::write(single.join("config.json"), json(false)).unwrap();
    // bf16 on disk, as many checkpoints are: loaded as f32 (so compared loosely).
    let bf16: HashMap<String, Tensor> = tensors(&ckpt)
        .into_iter()
        .map(|(n, t)| (n, t.to_dtype(DType::BF16).unwrap()))
        .collect();
    candle::safetensors::save(&bf16, single.join("model.safetensors")).unwrap();
    let got = LlamaCheckpoint::from_hf_dir(&single, &Device::Cpu)
        .unwrap()
        .model()
        .unwrap();
    let got = got.forward(&tokens(), &mut Recorder::training()).unwrap();
    assert!(
        rel(&want, &got) < 0.05,
        "bf16 round trip: {}",
        rel(&want, &got)
    );

    let sharded = dir.path().join("sharded");
    std::fs::create_dir_all(&sharded).unwrap();
    std::fs::write(sharded.join("config.json"), json(false)).unwrap();
    let (mut a, mut b, mut map) = (HashMap::new(), HashMap::new(), serde_json::Map::new());
    for (i, (n, t)) in tensors(&ckpt).into_iter().enumerate() {
        let file = if i % 2 == 0 {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        map.insert(n.clone(), file.into());
        if i % 2 == 0 {
            a.insert(n, t)
        } else {
            b.insert(n, t)
        };
    }
    candle::safetensors::save(&a, sharded.join("model-00001-of-00002.safetensors")).unwrap();
    candle::safetensors::save(&b, sharded.join("model-00002-of-00002.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let got = LlamaCheckpoint::from_hf_dir(&sharded, &Device::Cpu)
        .unwrap()
        .model()
        .unwrap();
    let got = got.forward(&tokens(), &mut Recorder::training()).unwrap();
    assert_eq!(rel(&want, &got), 0.0, "sharded f32 checkpoint");
}

fn refusal(cfg: &str, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> CheckpointProblem {
    let mut t = tensors(&checkpoint(false, 1));
    edit(&mut t);
    let result = LlamaConfig::from_json(cfg)
        .map_err(|p| Error::Checkpoint {
            path: "<json>".into(),
            problem: p,
        })
        .and_then(|c| LlamaCheckpoint::from_tensors(c, t, Path::new("<test>")));
    match result {
        Err(Error::Checkpoint { problem, .. }) => problem,
        other => panic!("expected Error::Checkpoint, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn bad_checkpoints_are_refused_naming_the_tensor_or_field() {
    let k = "model.layers.1.self_attn.k_proj.weight";
    let p = refusal(&json(false), |t| {
        t.insert(
            k.into(),
            Tensor::zeros((24, 24), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert_eq!(
        p,
        CheckpointProblem::TensorShape {
            name: k.into(),
            expected: vec![12, 24],
            found: vec![24, 24]
        }
    );
    let p = refusal(&json(false), |t| {
        t.remove(layout::LM_HEAD);
    });
    assert_eq!(
        p,
        CheckpointProblem::MissingTensor {
            name: "lm_head.weight".into()
        }
    );
    let p = refusal(&json(false), |t| {
        t.insert(
            k.into(),
            Tensor::zeros((12, 24), DType::U8, &Device::Cpu).unwrap(),
        );
    });
    assert!(
        matches!(p, CheckpointProblem::TensorType { ref name, ref found, .. } if name == k && found == "u8"),
        "{p:?}"
    );
    let gpt2 = json(false).replace("LlamaForCausalLM", "GPT2LMHeadModel");
    assert!(
        matches!(refusal(&gpt2, |_| {}), CheckpointProblem::UnknownArchitecture { ref found, .. } if found == "GPT2LMHeadModel")
    );
    let scaled = json(false).replace(
        r#""hidden_act""#,
        r#""rope_scaling": {"rope_type": "llama3", "factor": 8.0}, "hidden_act""#,
    );
    assert!(
        matches!(refusal(&scaled, |_| {}), CheckpointProblem::ConfigField { ref field, .. } if field == "rope_scaling.rope_type")
    );
    let groups = json(false).replace(r#""num_key_value_heads": 2"#, r#""num_key_value_heads": 3"#);
    assert!(
        matches!(refusal(&groups, |_| {}), CheckpointProblem::ConfigField { ref field, .. } if field == "num_key_value_heads")
    );
    let no_vocab = json(false).replace(&format!(r#""vocab_size": {VOCAB},"#), "");
    assert!(
        matches!(refusal(&no_vocab, |_| {}), CheckpointProblem::ConfigField { ref field, .. } if field == "vocab_size")
    );
}

#[test]
fn gguf_files_load_with_llama_cpp_names_and_q_k_rows_unpermuted() {
    let dir = tempfile::tempdir().unwrap();
    for tied in [false, true] {
        let ckpt = checkpoint(tied, 13);
        let path = dir.path().join(format!("tied-{tied}.gguf"));
        write_gguf(&ckpt, "llama", &path);
        let loaded = LlamaCheckpoint::from_gguf(&path, &Device::Cpu).unwrap();
        assert_eq!(loaded.config().tie_word_embeddings, tied);
        let want = ckpt
            .model()
            .unwrap()
            .forward(&tokens(), &mut Recorder::training());
        let got = loaded
            .model()
            .unwrap()
            .forward(&tokens(), &mut Recorder::training());
        assert_eq!(rel(&want.unwrap(), &got.unwrap()), 0.0, "tied={tied}");
    }
    let path = dir.path().join("gpt2.gguf");
    write_gguf(&checkpoint(false, 13), "gpt2", &path);
    match LlamaCheckpoint::from_gguf(&path, &Device::Cpu) {
        Err(Error::Checkpoint {
            problem: CheckpointProblem::UnknownArchitecture { found, .. },
            ..
        }) => assert_eq!(found, "gpt2"),
        other => panic!("expected UnknownArchitecture, got {:?}", other.map(|_| ())),
    }
}
