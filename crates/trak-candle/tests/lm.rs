//! The LM workflow's library (`trak_candle::lm`): one objective for training, evaluation and
//! attribution; the bucketed adapter's features (no padding to the longest) equal the
//! single-context adapter's and are bit-identical for every batch size; fine-tuning's weights
//! (0 is a leave-out), snapshots, and saved Hugging Face directories.

use std::path::Path;

use candle::{Device, Tensor};
use trak::{ProjectorKind, Trak};
use trak_candle::lm::{self, Bucketed, FineTune, LayerSet};
use trak_candle::models::llama::{LlamaCheckpoint, LlamaConfig};
use trak_candle::{Network, Objective, Recorder, SequenceObjective, TokenSeq};

fn checkpoint(seed: u64) -> LlamaCheckpoint {
    let cfg = LlamaConfig::from_json(
        r#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 30, "hidden_size": 16,
        "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "max_position_embeddings": 64, "tie_word_embeddings": true}"#,
    )
    .unwrap();
    LlamaCheckpoint::random(cfg, seed, &Device::Cpu).unwrap()
}

/// Sequences of 3 to 40 tokens (buckets 16, 32 and 64), documents and completions.
fn seqs() -> Vec<TokenSeq> {
    (0..14)
        .map(|i| {
            let n = 3 + (i * 11) % 38;
            let tokens: Vec<u32> = (0..n).map(|t| ((i * 7 + t * 3) % 29 + 1) as u32).collect();
            match i % 3 {
                0 => TokenSeq::completion(&tokens[..n / 2], &tokens[n / 2..]),
                _ => TokenSeq::document(tokens),
            }
        })
        .collect()
}

fn trak(batch: usize) -> Trak {
    let b = Trak::builder()
        .proj_dim(64)
        .projector(ProjectorKind::FACTORED);
    b.batch_size(batch).build().unwrap()
}

#[test]
fn bucketed_features_equal_one_context_and_do_not_depend_on_the_batch() {
    let ckpt = checkpoint(1);
    let net = ckpt.model().unwrap();
    let seqs = seqs();
    let bucketed = Bucketed::new(&net, &seqs, (LayerSet::All, 4), true).unwrap();
    assert_eq!(bucketed.contexts(), &[16, 32, 64]);
    let single = lm::adapter(&net, (40, 4), LayerSet::All, &seqs, false).unwrap();
    let reference = trak(4).features(0, &single, &seqs).unwrap();
    let first = trak(1).features(0, &bucketed, &seqs).unwrap();
    let bits = |a: &trak::ndarray::Array2<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for batch in [2, 3, 5, 14] {
        let f = trak(batch).features(0, &bucketed, &seqs).unwrap();
        assert_eq!(bits(&f), bits(&first), "batch size {batch}");
    }
    let err =
        (&first - &reference).mapv(|v| v * v).sum().sqrt() / reference.mapv(|v| v * v).sum().sqrt();
    assert!(
        err < 1e-5,
        "bucketed against one context: relative error {err}"
    );
}

#[test]
fn a_sequence_longer_than_the_model_is_named() {
    let ckpt = checkpoint(1);
    let net = ckpt.model().unwrap();
    let long = vec![TokenSeq::document(vec![1; 70])];
    let e = Bucketed::new(&net, &long, (LayerSet::All, 4), false).unwrap_err();
    assert!(
        matches!(e, trak::Error::InvalidExample { example: 0, .. }),
        "{e}"
    );
}

#[test]
fn the_training_objective_is_attributions_f() {
    let ckpt = checkpoint(2);
    let net = ckpt.model().unwrap();
    let seqs = seqs();
    let logp = lm::log_probs(&net, &seqs, 5).unwrap();
    let obj = SequenceObjective::new(30);
    for (s, &want) in seqs.iter().zip(&logp) {
        let x = Tensor::new(&s.tokens[..s.tokens.len() - 1], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let z = net.forward(&x, &mut Recorder::training()).unwrap();
        let z: Vec<f32> = z.flatten_all().unwrap().to_vec1().unwrap();
        let mut g = vec![0f32; z.len()];
        let f = obj.eval(s, &z, &mut g).unwrap().f;
        assert!(
            (f - want).abs() <= 1e-4 * want.abs().max(1.0),
            "{f} vs {want}"
        );
    }
}

fn weights_of(ckpt: &LlamaCheckpoint) -> Vec<Vec<f32>> {
    ckpt.vars()
        .iter()
        .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
        .collect()
}

#[test]
fn a_zero_weight_leaves_the_example_out() {
    let base = checkpoint(3);
    let docs = seqs();
    let settings = FineTune {
        epochs: 2,
        lr: 1e-2,
        batch: 4,
        frozen: vec![],
        ..FineTune::default()
    };
    let mut w = vec![1f32; docs.len()];
    w[5] = 0.0;
    let a = settings.run(&base, &docs, Some(&w), |_| Ok(())).unwrap();
    let mut other = docs.clone();
    other[5] = TokenSeq::document(vec![9, 9, 9, 9, 9, 9]);
    let b = settings.run(&base, &other, Some(&w), |_| Ok(())).unwrap();
    assert!(
        weights_of(&a) == weights_of(&b),
        "a zero-weighted example changed the weights"
    );
    let full = settings.run(&base, &docs, None, |_| Ok(())).unwrap();
    assert!(weights_of(&a) != weights_of(&full));
    let again = settings.run(&base, &docs, None, |_| Ok(())).unwrap();
    assert!(
        weights_of(&full) == weights_of(&again),
        "same settings, other weights"
    );
    assert!(
        weights_of(&base) == weights_of(&checkpoint(3)),
        "the base checkpoint was trained"
    );
}

#[test]
fn bad_settings_are_refused_by_name() {
    let base = checkpoint(3);
    let docs = seqs();
    let run = |s: FineTune, w: Option<&[f32]>| {
        s.run(&base, &docs, w, |_| Ok(())).unwrap_err().to_string()
    };
    let d = FineTune::default;
    assert!(run(FineTune { epochs: 0, ..d() }, None).contains("epochs"));
    assert!(
        run(
            FineTune {
                lr: f64::NAN,
                ..d()
            },
            None
        )
        .contains("learning rate")
    );
    assert!(
        run(
            FineTune {
                frozen: vec!["model.nope".into()],
                ..d()
            },
            None
        )
        .contains("model.nope")
    );
    assert!(run(d(), Some(&[1.0])).contains("example weights"));
    let mut w = vec![1f32; docs.len()];
    w[2] = -1.0;
    assert!(run(d(), Some(&w)).contains("example 2"));
    let long = vec![TokenSeq::document(vec![1; 80])];
    let e = d().run(&base, &long, None, |_| Ok(())).unwrap_err();
    assert!(
        matches!(e, trak::Error::InvalidExample { example: 0, .. }),
        "{e}"
    );
}

#[test]
fn epochs_are_reported_and_snapshots_keep_their_weights() {
    let base = checkpoint(4);
    let docs = seqs();
    let mut kept = Vec::new();
    let settings = FineTune {
        epochs: 3,
        lr: 1e-2,
        frozen: vec![],
        ..FineTune::default()
    };
    let last = settings
        .run(&base, &docs, None, |e| {
            kept.push((e.index, e.checkpoint.snapshot()?));
            Ok(())
        })
        .unwrap();
    assert_eq!(kept.iter().map(|k| k.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(weights_of(&kept[0].1) != weights_of(&kept[2].1));
    assert!(weights_of(&kept[2].1) == weights_of(&last));
}

#[test]
fn a_saved_directory_loads_to_the_same_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(5);
    ckpt.save_hf_dir(tmp.path()).unwrap();
    let back = LlamaCheckpoint::from_hf_dir(tmp.path(), &Device::Cpu).unwrap();
    assert_eq!(back.config(), ckpt.config());
    assert!(weights_of(&back) == weights_of(&ckpt));
    assert_eq!(
        LlamaConfig::from_json(&ckpt.config().to_json()).unwrap(),
        *ckpt.config()
    );
    assert!(!Path::new(&tmp.path().join(".model.safetensors.partial")).exists());
}

#[test]
fn greedy_decoding_extends_the_prompt() {
    let ckpt = checkpoint(6);
    let net = ckpt.model().unwrap();
    let out = lm::greedy(&net, &[1, 2, 3], 5, None).unwrap();
    assert_eq!(out.len(), 5);
    assert!(out.iter().all(|&t| t < 30));
    let again = lm::greedy(&net, &[1, 2, 3], 5, None).unwrap();
    assert_eq!(out, again);
}

/// The same random gradients through candle's AdamW and the crate's, three steps: the same
/// bits (weight decay on, so every term of the update is exercised); the second moment is
/// the average of g² candle keeps.
#[test]
fn the_optimiser_is_candles_adamw_bit_for_bit() {
    use candle_nn::{Optimizer, ParamsAdamW};
    let (a, b) = (checkpoint(5), checkpoint(5));
    let params = ParamsAdamW {
        lr: 3e-3,
        weight_decay: 0.1,
        ..Default::default()
    };
    let mut theirs = candle_nn::AdamW::new(
        a.vars().iter().map(|(_, v)| v.clone()).collect(),
        params.clone(),
    )
    .unwrap();
    let mut ours = lm::AdamW::new(b.vars().to_vec(), params).unwrap();
    let mut sq = vec![0f32; b.vars()[1].1.elem_count()];
    for step in 0..3u64 {
        let (mut ga, mut gb) = Default::default();
        let (ga, gb): (
            &mut candle::backprop::GradStore,
            &mut candle::backprop::GradStore,
        ) = (&mut ga, &mut gb);
        for (i, ((_, va), (_, vb))) in a.vars().iter().zip(b.vars()).enumerate() {
            let g = Tensor::randn(0f32, 1.0, va.shape(), &Device::Cpu).unwrap();
            let g = (g * (1.0 + step as f64 + i as f64 * 0.01)).unwrap();
            if i == 1 {
                let v: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
                for (s, x) in sq.iter_mut().zip(v) {
                    *s = *s * 0.999 + 0.001 * x * x;
                }
            }
            ga.insert(va.as_tensor(), g.clone());
            gb.insert(vb.as_tensor(), g);
        }
        theirs.step(ga).unwrap();
        ours.step(gb).unwrap();
        assert!(weights_of(&a) == weights_of(&b), "step {step}");
    }
    assert_eq!(ours.steps(), 3);
    let v = ours.second_moment(&b.vars()[1].0).unwrap();
    let err = v
        .iter()
        .zip(&sq)
        .map(|(x, y)| (x - y).abs() / y.max(1e-6))
        .fold(0f32, f32::max);
    assert!(err < 1e-4, "{err}");
    assert!(ours.second_moment("no such tensor").is_none());
}
