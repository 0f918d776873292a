//! The `smollm_lds --quick` path (a tiny random Llama trained on the English planted-facts
//! corpus, J = 8 retrainings per truth): every method has a cell under both truths and both
//! kinds of target; a second run with the cache retrains nothing and gives the same table;
//! and TrackStar's preconditioner is the elementwise G ⊘ √V̂ it claims to be.

#[path = "../examples/support/english_facts.rs"]
mod english_facts;
#[path = "../examples/support/fact_metrics.rs"]
mod fact_metrics;
#[path = "../examples/support/llama_throughput.rs"]
mod llama_throughput;
#[path = "../examples/support/smollm_facts.rs"]
mod smollm_facts;
#[path = "../examples/support/smollm_lds.rs"]
mod smollm_lds;
#[path = "../examples/support/tokens.rs"]
mod tokens;
#[path = "../examples/support/trackstar.rs"]
mod trackstar;

use candle::Device;
use trak::Model;
use trak_candle::TokenSeq;
use trak_candle::models::llama::{LlamaCheckpoint, LlamaConfig, NativeLlama};

const METHODS: [&str; 12] = [
    "trak-ensemble",
    "trak-last",
    "trak-ensemble:c=0.5",
    "grad-dot",
    "grad-cos",
    "trak-adam-ensemble",
    "trak-adam-last",
    "trackstar",
    "trackstar-dot",
    "trak-ensemble:sparse=2",
    "bm25",
    "random",
];

#[test]
fn quick_smollm_lds_scores_every_method_and_caches_its_retrainings() {
    let dir = std::env::temp_dir().join(format!("smollm_lds_quick_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = smollm_lds::Config::quick();
    cfg.verbose = false;
    cfg.cache = Some(dir.clone());
    let out = smollm_lds::run(&cfg).unwrap();
    for c in &out.cells {
        eprintln!("{}", c.line());
    }
    for truth in ["leave-5%", "half"] {
        for target in smollm_lds::TARGETS {
            for method in METHODS {
                let cell = out
                    .cells
                    .iter()
                    .find(|c| c.truth == truth && c.target == target && c.method == method)
                    .unwrap_or_else(|| panic!("no cell {truth} {target} {method}"));
                assert!((-1.0..=1.0).contains(&cell.lds), "{}", cell.line());
                assert!(cell.se.is_finite() && cell.se >= 0.0, "{}", cell.line());
                assert!(cell.targets == 6 && cell.defined <= 6, "{}", cell.line());
            }
        }
    }
    // Retrainings moved the outputs (else every LDS would be undefined).
    assert!(
        out.spread.iter().flatten().all(|&s| s > 0.0),
        "{:?}",
        out.spread
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2 * cfg.subsets);
    let again = smollm_lds::run(&cfg).unwrap();
    assert!(again.seconds[2] < out.seconds[2] && again.seconds[3] < out.seconds[3]);
    let lines = |o: &smollm_lds::Output| o.cells.iter().map(|c| c.line()).collect::<Vec<_>>();
    assert_eq!(lines(&out), lines(&again), "the cached run differs");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn trackstars_preconditioner_divides_each_gradient_entry_by_the_factored_moment() {
    let cfg = LlamaConfig::from_json(
        r#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 30, "hidden_size": 16,
        "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2,
        "max_position_embeddings": 32, "tie_word_embeddings": true}"#,
    )
    .unwrap();
    let lm = LlamaCheckpoint::random(cfg, 1, &Device::Cpu)
        .unwrap()
        .model()
        .unwrap();
    let names = vec!["model.layers.0.mlp.up_proj".to_string()];
    let docs = vec![
        TokenSeq::document(vec![1, 5, 7, 2, 9]),
        TokenSeq::document(vec![1, 3, 3]),
    ];
    let inner = NativeLlama::new(&lm, &names, &docs).unwrap();
    let (out, in_dim) = (24, 16);
    // A rank-one second moment: the factorisation is exact, so r_i c_j = 1/√v_ij.
    let (r, c): (Vec<f32>, Vec<f32>) = (
        (0..out).map(|i| 0.5 + i as f32 * 0.1).collect(),
        (0..in_dim).map(|j| 1e-3 * (1.0 + j as f32)).collect(),
    );
    let v: Vec<f32> = r
        .iter()
        .flat_map(|a| c.iter().map(move |b| a * b))
        .collect();
    let scales = trackstar::Scales::adafactor(&v, out, in_dim).unwrap();
    let pre = trackstar::Preconditioned::new(&inner, vec![scales]).unwrap();
    let p = inner.num_params();
    let (mut g, mut h) = (
        ndarray::Array2::zeros((2, p)),
        ndarray::Array2::zeros((2, p)),
    );
    inner.output_grads(&docs, g.view_mut()).unwrap();
    pre.output_grads(&docs, h.view_mut()).unwrap();
    for b in 0..2 {
        for (idx, &vij) in v.iter().enumerate() {
            let want = g[(b, idx)] as f64 / (vij as f64).sqrt();
            let got = h[(b, idx)] as f64;
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1e-3),
                "{b} {idx}: {got} {want}"
            );
        }
    }
    let wrong = trackstar::Scales::adafactor(&v[1..], out, in_dim);
    assert!(matches!(wrong, Err(trak::Error::ShapeMismatch { .. })));
}
