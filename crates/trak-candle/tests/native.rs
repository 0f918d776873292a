//! The native Llama pass (`models::llama::NativeLlama`) against the candle route on random
//! configurations: the same layer factors and Q to rounding, features within 1e-4 relative,
//! the same bits for every batch size and thread count, and refusals of bad input by name.

use candle::Device;
use trak::model::FactoredModel;
use trak::ndarray::{Array1, Array2};
use trak::{Model, ProjectorKind, Trak};
use trak_candle::TokenSeq;
use trak_candle::lm::{self, LayerSet};
use trak_candle::models::llama::{LlamaCheckpoint, LlamaConfig, NativeLlama};

/// Grouped-query attention and a tied head; q/k/v biases and an untied head (Qwen2).
fn configs() -> Vec<LlamaConfig> {
    let llama = r#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 30, "hidden_size": 16,
        "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 160, "tie_word_embeddings": true}"#;
    let qwen = r#"{"architectures": ["Qwen2ForCausalLM"], "vocab_size": 37, "hidden_size": 24,
        "intermediate_size": 20, "num_hidden_layers": 3, "num_attention_heads": 3,
        "num_key_value_heads": 1, "max_position_embeddings": 160, "rope_theta": 500.0,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": false}"#;
    [llama, qwen]
        .iter()
        .map(|j| LlamaConfig::from_json(j).unwrap())
        .collect()
}

/// Documents and completions of 2 to 150 tokens (several blocks of the pass's 64 and 32
/// positions).
fn seqs(vocab: u32) -> Vec<TokenSeq> {
    (0..14)
        .map(|i| {
            let n = if i % 5 == 4 {
                70 + i * 6
            } else {
                2 + (i * 11) % 39
            };
            let tokens: Vec<u32> = (0..n)
                .map(|t| ((i * 7 + t * 3) as u32) % (vocab - 1) + 1)
                .collect();
            match i % 3 {
                0 if n > 2 => TokenSeq::completion(&tokens[..n / 2], &tokens[n / 2..]),
                _ => TokenSeq::document(tokens),
            }
        })
        .collect()
}

fn trak(batch: usize) -> Trak {
    Trak::builder()
        .proj_dim(96)
        .projector(ProjectorKind::FACTORED)
        .batch_size(batch)
        .build()
        .unwrap()
}

fn relative(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    (a - b).mapv(|v| v * v).sum().sqrt() / b.mapv(|v| v * v).sum().sqrt().max(1e-30)
}

fn bits(a: &Array2<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn factors_and_q_equal_the_candle_routes() {
    for cfg in configs() {
        let ckpt = LlamaCheckpoint::random(cfg.clone(), 3, &Device::Cpu).unwrap();
        let net = ckpt.model().unwrap();
        let seqs = seqs(cfg.vocab_size as u32);
        let names = LayerSet::All.names(&cfg);
        let native = NativeLlama::new(&net, &names, &seqs).unwrap();
        let candle = lm::adapter(&net, (150, 3), LayerSet::All, &seqs, true).unwrap();
        assert_eq!(native.linear_layers(), candle.linear_layers());
        assert_eq!(native.num_params(), candle.num_params());
        for batch in seqs.chunks(5) {
            let (mut qn, mut qc) = (Array1::zeros(batch.len()), Array1::zeros(batch.len()));
            let (fnat, _) = native.layer_factors_and_q(batch, qn.view_mut()).unwrap();
            let (fcan, _) = candle.layer_factors_and_q(batch, qc.view_mut()).unwrap();
            assert_eq!(qn, qc);
            for (l, (n, c)) in fnat.iter().zip(&fcan).enumerate() {
                for (b, s) in batch.iter().enumerate() {
                    let t = s.tokens.len() - 1;
                    let rows = |f: &Array2<f32>, p: usize| {
                        f.slice(trak::ndarray::s![b * p..b * p + t, ..]).to_owned()
                    };
                    for (what, x, y) in
                        [("acts", &n.acts, &c.acts), ("deltas", &n.deltas, &c.deltas)]
                    {
                        let err = relative(&rows(x, n.positions), &rows(y, c.positions));
                        assert!(err < 1e-5, "{what} of layer {l}, sequence {b}: {err}");
                    }
                }
            }
        }
    }
}

#[test]
fn features_equal_the_bucketed_adapters_and_keep_their_bits() {
    for cfg in configs() {
        let ckpt = LlamaCheckpoint::random(cfg.clone(), 5, &Device::Cpu).unwrap();
        let net = ckpt.model().unwrap();
        let seqs = seqs(cfg.vocab_size as u32);
        let native = NativeLlama::new(&net, &LayerSet::All.names(&cfg), &seqs).unwrap();
        let bucketed = lm::Bucketed::new(&net, &seqs, (LayerSet::All, 4), false).unwrap();
        let reference = trak(4).features(0, &bucketed, &seqs).unwrap();
        let first = trak(1).features(0, &native, &seqs).unwrap();
        let err = relative(&first, &reference);
        assert!(err < 1e-4, "native against bucketed: relative error {err}");
        for batch in [2, 3, 5, 14] {
            let f = trak(batch).features(0, &native, &seqs).unwrap();
            assert_eq!(bits(&f), bits(&first), "batch size {batch}");
        }
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let f = pool.install(|| trak(4).features(0, &native, &seqs).unwrap());
            assert_eq!(bits(&f), bits(&first), "{threads} threads");
        }
    }
}

#[test]
fn flat_gradients_equal_the_candle_routes() {
    let cfg = configs().remove(1);
    let ckpt = LlamaCheckpoint::random(cfg.clone(), 7, &Device::Cpu).unwrap();
    let net = ckpt.model().unwrap();
    let seqs = seqs(cfg.vocab_size as u32)[..4].to_vec();
    let names = LayerSet::Attention.names(&cfg);
    let native = NativeLlama::new(&net, &names, &seqs).unwrap();
    let candle = lm::adapter(&net, (40, 2), LayerSet::Attention, &seqs, false).unwrap();
    let p = native.num_params();
    let (mut gn, mut gc) = (Array2::zeros((4, p)), Array2::zeros((4, p)));
    native.output_grads(&seqs, gn.view_mut()).unwrap();
    candle.output_grads(&seqs, gc.view_mut()).unwrap();
    let err = relative(&gn, &gc);
    assert!(err < 1e-5, "flat gradients: relative error {err}");
}

#[test]
fn bad_input_is_named() {
    let cfg = configs().remove(0);
    let ckpt = LlamaCheckpoint::random(cfg.clone(), 1, &Device::Cpu).unwrap();
    let net = ckpt.model().unwrap();
    let names = LayerSet::Mlp.names(&cfg);
    let good = TokenSeq::document(vec![1, 2, 3]);
    let cases = [
        TokenSeq::document(vec![1, 30, 2]),
        TokenSeq::document(vec![1; 162]),
        TokenSeq::document(vec![1]),
        TokenSeq::completion(&[1, 2], &[]),
    ];
    for bad in cases {
        let e = NativeLlama::new(&net, &names, &[good.clone(), bad.clone()]).unwrap_err();
        assert!(
            matches!(e, trak::Error::InvalidExample { example: 1, .. }),
            "{e}"
        );
        let model = NativeLlama::new(&net, &names, std::slice::from_ref(&good)).unwrap();
        let e = trak(2)
            .features(0, &model, &[good.clone(), good.clone(), bad])
            .unwrap_err();
        assert!(
            matches!(e, trak::Error::InvalidExample { example: 2, .. }),
            "{e}"
        );
    }
    let e = NativeLlama::new(
        &net,
        &["model.layers.2.mlp.up_proj".into()],
        std::slice::from_ref(&good),
    );
    assert!(matches!(e, Err(trak::Error::InvalidParameter { .. })));
    let e = NativeLlama::new(&net, &["lm_head".into()], std::slice::from_ref(&good));
    assert!(matches!(
        e,
        Err(trak::Error::Unattributable {
            reason: trak::Unattributable::SharedWeights { .. },
            ..
        })
    ));
    let e = NativeLlama::new(&net, &names, &[]);
    assert!(matches!(e, Err(trak::Error::Empty(_))));
}

#[test]
fn fine_tuning_gradients_equal_candles() {
    use trak_candle::models::llama::native::train;
    for cfg in configs() {
        let ckpt = LlamaCheckpoint::random(cfg.clone(), 11, &Device::Cpu).unwrap();
        let net = ckpt.model().unwrap();
        let batch: Vec<TokenSeq> = seqs(cfg.vocab_size as u32)
            .into_iter()
            .skip(2)
            .take(4)
            .collect();
        let w = [1.0f32, 0.5, 2.0, 1.0];
        let denom: f64 = batch
            .iter()
            .zip(&w)
            .map(|(s, &w)| w as f64 * lm::logprob::counted(s) as f64)
            .sum();
        let logp = lm::sequence_log_probs(&net, &batch).unwrap();
        let wt = candle::Tensor::from_slice(&w, 4, &Device::Cpu).unwrap();
        let loss = ((logp * wt).unwrap().sum_all().unwrap().neg().unwrap() / denom).unwrap();
        let grads = loss.backward().unwrap();
        let (native_loss, native) = train::loss_gradients(&net, &batch, (&w, denom)).unwrap();
        let want = loss.to_scalar::<f32>().unwrap() as f64;
        assert!(
            (native_loss - want).abs() < 1e-5 * want.abs(),
            "{native_loss} vs {want}"
        );
        let mut compared = 0;
        for (name, var) in ckpt.vars() {
            let Some(g) = native.get(name) else {
                assert!(
                    name.contains("embed_tokens") || name.starts_with("lm_head"),
                    "{name}"
                );
                continue;
            };
            let c: Vec<f32> = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let (d, n) = g.iter().zip(&c).fold((0.0, 0.0), |(d, n), (a, b)| {
                (d + ((a - b) as f64).powi(2), n + (*b as f64).powi(2))
            });
            let err = (d / n.max(1e-30)).sqrt();
            assert!(err < 1e-5, "{name}: relative error {err}");
            compared += 1;
        }
        assert_eq!(compared, native.len());
    }
}

#[test]
fn fine_tuning_by_either_route_ends_close() {
    let cfg = configs().remove(0);
    let base = LlamaCheckpoint::random(cfg.clone(), 13, &Device::Cpu).unwrap();
    let docs = seqs(cfg.vocab_size as u32);
    let run = |native| {
        let ft = lm::FineTune {
            epochs: 2,
            batch: 4,
            lr: 1e-3,
            native,
            ..lm::FineTune::default()
        };
        let mut losses = Vec::new();
        let out = ft
            .run(
                &base,
                &docs,
                Some(&[
                    1.0, 0.0, 2.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 3.0, 1.0, 1.0, 1.0,
                ]),
                |e| {
                    losses.push(e.mean_loss);
                    Ok(())
                },
            )
            .unwrap();
        let w: Vec<f32> = out
            .vars()
            .iter()
            .flat_map(|(_, v)| {
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect();
        (losses, w)
    };
    let ((ln, wn), (lc, wc)) = (run(true), run(false));
    for (a, b) in ln.iter().zip(&lc) {
        assert!((a - b).abs() < 1e-5 * b.abs(), "losses {ln:?} vs {lc:?}");
    }
    let d: f64 = wn
        .iter()
        .zip(&wc)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let n: f64 = wc.iter().map(|b| (*b as f64).powi(2)).sum();
    assert!(
        (d / n).sqrt() < 1e-5,
        "weights differ by {}",
        (d / n).sqrt()
    );
}
