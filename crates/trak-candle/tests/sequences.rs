//! Language models through the adapter: attention layers against batch-size-1 backward
//! passes, the sequence log-probability against finite differences in the parameters, and
//! padding invariance.

mod common;
#[path = "../examples/support/tiny_lm.rs"]
mod tiny_lm;

use candle::Var;
use candle_nn::VarMap;
use common::{grads, rel_err};
use ndarray::Array1;
use tiny_lm::{LmConfig, TinyLm};
use trak::{FactoredModel, Model, ProjectorKind, Trak};
use trak_candle::{CandleModel, SequenceObjective, TokenCollate, TokenSeq};

const CFG: LmConfig = LmConfig {
    vocab: 7,
    context: 12,
    d: 8,
    heads: 2,
    layers: 1,
};

fn seqs() -> Vec<TokenSeq> {
    let docs = [
        [0u32, 3, 4, 5, 2, 6, 3].as_slice(),
        &[0, 6, 6, 2],
        &[0, 2, 3, 4, 5, 6, 2, 3, 4],
        &[0, 5, 4],
    ];
    let mut v: Vec<TokenSeq> = docs
        .iter()
        .map(|d| TokenSeq::document(d.to_vec()))
        .collect();
    v.push(TokenSeq::completion(&[0, 3, 4], &[5, 2]));
    v
}

/// The linear layers' variables in the adapter's gradient layout.
fn linear_vars(map: &VarMap) -> Vec<(String, Var)> {
    let d = map.data().lock().unwrap();
    ["b0.q", "b0.k", "b0.v", "b0.o", "b0.up", "b0.down", "head"]
        .iter()
        .flat_map(|l| ["weight", "bias"].map(|p| format!("{l}.{p}")))
        .map(|n| (n.clone(), d[&n].clone()))
        .collect()
}

fn model(
    lm: &TinyLm,
    context: usize,
) -> CandleModel<TokenSeq, &TinyLm, TokenCollate, SequenceObjective> {
    let collate = TokenCollate { context, pad: 1 };
    CandleModel::builder(lm, collate, SequenceObjective::new(CFG.vocab))
        .chunk_rows(4)
        .build(&seqs())
        .unwrap()
}

#[test]
fn attention_layers_match_batch_size_one_backward() {
    let map = VarMap::new();
    let lm = TinyLm::init(CFG, &map, 3).unwrap();
    let factored = model(&lm, CFG.context);
    let positions: Vec<usize> = factored.layers().iter().map(|l| l.positions).collect();
    assert_eq!(positions, vec![12; 7]);
    let fallback = CandleModel::builder(
        &lm,
        TokenCollate {
            context: 12,
            pad: 1,
        },
        SequenceObjective::new(CFG.vocab),
    )
    .all_parameters(linear_vars(&map))
    .build(&seqs())
    .unwrap();
    let (g0, g1) = (grads(&fallback, &seqs()), grads(&factored, &seqs()));
    assert!(rel_err(&g0, &g1) < 1e-5, "{}", rel_err(&g0, &g1));
    // Documents have Q = 1 (f is minus their loss).
    let mut q = Array1::zeros(5);
    factored.output_q(&seqs(), q.view_mut()).unwrap();
    assert!(q.iter().all(|&v| v == 1.0));
    // L = −f has no curvature in f: Gauss-Newton weighting is refused, not silently 0.
    let r = factored.output_curvature(&seqs(), q.view_mut());
    assert!(matches!(r, Err(trak::Error::NoCurvature)), "{r:?}");
}

#[test]
fn completion_log_prob_gradient_matches_finite_differences() {
    let map = VarMap::new();
    let lm = TinyLm::init(CFG, &map, 4).unwrap();
    let query = vec![seqs()[4].clone()];
    let g = grads(&model(&lm, CFG.context), &query);
    let vars = linear_vars(&map);
    // f along a direction v over all linear-layer parameters, by central differences.
    let dir: Vec<Vec<f32>> = vars
        .iter()
        .enumerate()
        .map(|(i, (_, v))| {
            (0..v.elem_count())
                .map(|j| (((i * 31 + j * 17) % 13) as f32 - 6.0) / 6.0)
                .collect()
        })
        .collect();
    let shift = |s: f32| {
        for ((_, v), d) in vars.iter().zip(&dir) {
            let t = candle::Tensor::from_vec(d.clone(), v.shape(), v.device()).unwrap();
            v.set(&(v.as_tensor() + (t * s as f64).unwrap()).unwrap())
                .unwrap();
        }
    };
    let h = 1e-3f32;
    shift(h);
    let fp = tiny_lm::log_probs(&lm, &query).unwrap()[0] as f64;
    shift(-2.0 * h);
    let fm = tiny_lm::log_probs(&lm, &query).unwrap()[0] as f64;
    shift(h);
    let fd = (fp - fm) / (2.0 * h as f64);
    let flat: Vec<f32> = dir.concat();
    let analytic: f64 = g
        .row(0)
        .iter()
        .zip(&flat)
        .map(|(a, b)| (*a * *b) as f64)
        .sum();
    assert!(
        (fd - analytic).abs() < 1e-2 * analytic.abs().max(1.0),
        "{fd} vs {analytic}"
    );
}

#[test]
fn padding_does_not_change_a_documents_features() {
    let map = VarMap::new();
    let lm = TinyLm::init(CFG, &map, 5).unwrap();
    let (short, long) = (model(&lm, 8), model(&lm, 12));
    let trak = Trak::builder()
        .proj_dim(32)
        .projector(ProjectorKind::FACTORED)
        .build()
        .unwrap();
    let f8 = trak.features(0, &short, &seqs()).unwrap();
    let f12 = trak.features(0, &long, &seqs()).unwrap();
    assert!(rel_err(&f12, &f8) < 1e-5, "{}", rel_err(&f12, &f8));
    // Padded positions carry no output gradient.
    let factors = long.layer_factors(&seqs()).unwrap();
    for f in &factors {
        for (b, s) in seqs().iter().enumerate() {
            for t in s.tokens.len() - 1..12 {
                assert!(
                    f.deltas.row(b * 12 + t).iter().all(|&v| v == 0.0),
                    "example {b} position {t}"
                );
            }
        }
    }
}
