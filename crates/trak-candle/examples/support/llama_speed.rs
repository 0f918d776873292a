//! The speed of the Llama path against the machine's GEMM bound, all measured in one run
//! (`llama_speed`; the machine is shared and noisy, so only ratios within a run mean much).
//!
//! - **G**: f32 GEMM GFLOP/s at the model's shapes (every block linear and the head, forward
//!   `x·Wᵀ` and backward `δ·W`, 256 rows), weighted by how often a token needs each shape;
//!   with candle's GEMM (the one the passes run on) and with faer's (the crate's own). The
//!   bound uses the faster of the two.
//! - **F**: flops per predicted token, from the configuration and the documents' real
//!   lengths (padding is waste, not work): 2 per linear weight for the forward pass, 2 more
//!   for the backward pass to the activations, 2 more where a weight gradient is computed,
//!   and causal attention's 4·t·q_dim per layer forward (twice that backward) at position t.
//! - `featurize`: the library's route for Llama models (`NativeLlama`, the factored projector
//!   at k over every block linear, trak-lm's default chunk and memory budget); F = 4 per
//!   weight + attention. With `--candle`, `featurize_candle`: the candle route
//!   (`lm::Bucketed`, one pass per batch), and the features' agreement.
//! - `forward_backward`: candle's own pass on the same batches, every weight a variable as in
//!   training (it computes the weight gradients too); F = 6 per weight + attention.
//! - `finetune`: one epoch of `FineTune::default()` (the token embedding, so the tied head,
//!   frozen) in batches of the chunk, its gradients by the native pass (`finetune_candle`
//!   with `--candle`: by candle's autograd); F = 6 per trained weight, 4 per frozen one, +
//!   attention.

// Shared by the example and its test; not each reads every field.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Instant;

use candle::{DType, Device, Tensor};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trak::ndarray::Array2;
use trak::{ProjectorKind, Trak};
use trak_candle::TokenSeq;
use trak_candle::lm::{self, Bucketed, FineTune, LayerSet};
use trak_candle::models::llama::{Llama, LlamaCheckpoint, LlamaConfig, NativeLlama, layout};

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// What to measure on.
#[derive(Debug, Clone)]
pub struct Config {
    /// The model (`None`: a tiny random Llama, for `--quick`).
    pub gguf: Option<PathBuf>,
    /// Documents.
    pub docs: usize,
    /// Shortest and longest document, in tokens (lengths log-uniform between them).
    pub lengths: (usize, usize),
    /// Feature dimension of the factored projector.
    pub k: usize,
    /// Sequences per forward + backward pass (trak-lm's default, 2).
    pub chunk: usize,
    /// Seed of the lengths and texts.
    pub seed: u64,
    /// GEMM repetitions per shape (best of).
    pub reps: usize,
    /// The featurisation plan's memory budget in bytes (trak-lm's 2 GiB by default).
    pub memory_limit: usize,
    /// Also featurise through candle (`lm::Bucketed`, the route before the native pass) and
    /// compare the features.
    pub candle: bool,
    /// Featurisation alone (no candle pass or fine-tuning): for profiles.
    pub featurize_only: bool,
}

impl Config {
    /// SmolLM2 (or any Llama GGUF) at `path`: 24 documents of 16 to 512 tokens.
    pub fn full(path: PathBuf) -> Self {
        Self {
            gguf: Some(path),
            docs: 24,
            lengths: (16, 512),
            k: 2048,
            chunk: 2,
            seed: 0,
            reps: 3,
            memory_limit: 2 << 30,
            candle: false,
            featurize_only: false,
        }
    }

    /// A tiny random Llama, 12 documents of 4 to 60 tokens.
    pub fn quick() -> Self {
        Self {
            gguf: None,
            docs: 12,
            lengths: (4, 60),
            k: 64,
            chunk: 2,
            seed: 0,
            reps: 1,
            memory_limit: 2 << 30,
            candle: true,
            featurize_only: false,
        }
    }
}

/// One measured path against its bound.
#[derive(Debug, Clone)]
pub struct Speed {
    /// `featurize`, `forward_backward` or `finetune`.
    pub what: &'static str,
    /// Predicted (real, unpadded) tokens processed.
    pub tokens: usize,
    /// Wall seconds.
    pub secs: f64,
    /// G, GFLOP/s.
    pub gemm_gflops: f64,
    /// F, flops per predicted token.
    pub flops_per_token: f64,
}

impl Speed {
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.secs
    }

    /// G / F: tokens per second if every flop ran at the GEMM rate.
    pub fn bound(&self) -> f64 {
        self.gemm_gflops * 1e9 / self.flops_per_token
    }

    pub fn ratio(&self) -> f64 {
        self.tokens_per_s() / self.bound()
    }

    pub fn line(&self) -> String {
        format!(
            "SPEED what={} tokens_per_s={:.1} gemm_gflops={:.1} flops_per_token={:.4e} \
             bound_tokens_per_s={:.1} ratio={:.3}",
            self.what,
            self.tokens_per_s(),
            self.gemm_gflops,
            self.flops_per_token,
            self.bound(),
            self.ratio()
        )
    }
}

/// Everything one run measured.
#[derive(Debug)]
pub struct Output {
    /// GEMM GFLOP/s at the model's shapes: candle's, faer's.
    pub gemm: (f64, f64),
    pub speeds: Vec<Speed>,
    /// Document lengths (tokens, the start token included).
    pub lengths: Vec<usize>,
    /// Peak resident set after featurisation (the first step), and at the end.
    pub peak_rss_mb: (f64, f64),
    /// With `candle`: ‖Φ_native − Φ_candle‖ / ‖Φ_candle‖.
    pub agreement: Option<f32>,
    /// xxh3-64 of the native features' bits (the same for every thread count).
    pub features_hash: u64,
}

impl Output {
    pub fn lines(&self) -> Vec<String> {
        let n: usize = self.lengths.iter().sum();
        let mut out = vec![format!(
            "DOCS count={} tokens={n} shortest={} longest={}",
            self.lengths.len(),
            self.lengths.iter().min().unwrap_or(&0),
            self.lengths.iter().max().unwrap_or(&0)
        )];
        out.push(format!(
            "GEMM candle_gflops={:.1} faer_gflops={:.1}",
            self.gemm.0, self.gemm.1
        ));
        out.extend(self.speeds.iter().map(Speed::line));
        out.push(format!("FEATURES xxh3={:016x}", self.features_hash));
        if let Some(e) = self.agreement {
            out.push(format!("AGREEMENT features_relative_error={e:.3e}"));
        }
        out.push(format!(
            "MEMORY peak_rss_mb={:.0} after_featurize_mb={:.0}",
            self.peak_rss_mb.1, self.peak_rss_mb.0
        ));
        out
    }
}

/// The tiny random configuration of `--quick` (grouped-query attention, tied head).
fn tiny_config() -> LlamaConfig {
    LlamaConfig::from_json(
        r#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 97, "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "max_position_embeddings": 64,
            "tie_word_embeddings": true}"#,
    )
    .expect("a valid configuration")
}

/// Document lengths, log-uniform in `lengths` (seeded).
fn draw_lengths(cfg: &Config, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let (lo, hi) = (cfg.lengths.0 as f64, cfg.lengths.1 as f64);
    (0..cfg.docs)
        .map(|_| {
            let u: f64 = rng.random();
            (lo * (hi / lo).powf(u)).round() as usize
        })
        .collect()
}

/// Generated English-like text (seeded): a stream to cut documents from.
fn text(rng: &mut ChaCha8Rng, sentences: usize) -> String {
    const WHO: [&str; 6] = [
        "The miller",
        "Anna",
        "A stranger",
        "The baker",
        "Tomas",
        "Our aunt",
    ];
    const DID: [&str; 5] = [
        "walked to",
        "painted",
        "remembered",
        "sold bread near",
        "left",
    ];
    const WHERE: [&str; 6] = [
        "the harbour",
        "the old mill",
        "the station",
        "the market",
        "the quay",
        "the square",
    ];
    const WHEN: [&str; 5] = [
        "at dawn",
        "in 1907",
        "after the rain",
        "on Sunday",
        "before the storm",
    ];
    let pick = |r: &mut ChaCha8Rng, v: &[&'static str]| v[r.random_range(0..v.len())];
    (0..sentences)
        .map(|i| {
            format!(
                "{} {} {} {}, and {} more people came.\n",
                pick(rng, &WHO),
                pick(rng, &DID),
                pick(rng, &WHERE),
                pick(rng, &WHEN),
                i % 97
            )
        })
        .collect()
}

/// The model and the documents (the start token, then a window of the text's tokens).
fn setup(cfg: &Config) -> Result<(LlamaCheckpoint, Vec<TokenSeq>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let lengths = draw_lengths(cfg, &mut rng);
    let need: usize = lengths.iter().sum();
    let (ckpt, start, stream) = match &cfg.gguf {
        Some(path) => {
            let (ckpt, tok) = lm::open(path, &Device::Cpu)?;
            let mut ids = Vec::new();
            while ids.len() < need {
                ids.extend(tok.encode_plain(&text(&mut rng, 64))?);
            }
            (ckpt, tok.start_token(), ids)
        }
        None => {
            let c = tiny_config();
            let v = c.vocab_size as u32;
            let ids = (0..need).map(|_| rng.random_range(1..v)).collect();
            (LlamaCheckpoint::random(c, cfg.seed, &Device::Cpu)?, 0, ids)
        }
    };
    let mut at = 0;
    let docs = lengths
        .iter()
        .map(|&n| {
            let mut t = vec![start];
            t.extend(&stream[at..at + n - 1]);
            at += n - 1;
            TokenSeq::document(t)
        })
        .collect();
    Ok((ckpt, docs))
}

/// Weights of the block linears (all layers) and of the head.
fn linear_weights(c: &LlamaConfig) -> (f64, f64) {
    let block: usize = layout::block_linears(c)
        .iter()
        .map(|(_, [o, i])| o * i)
        .sum();
    let blocks = (block * c.num_hidden_layers) as f64;
    (blocks, (c.vocab_size * c.hidden_size) as f64)
}

/// Causal attention's flops, forward and backward, over the documents, per predicted token.
fn attention_per_token(c: &LlamaConfig, docs: &[TokenSeq]) -> f64 {
    let per_pos = 12.0 * (c.q_dim() * c.num_hidden_layers) as f64;
    let (mut flops, mut tokens) = (0.0, 0.0);
    for d in docs {
        let n = (d.tokens.len() - 1) as f64;
        flops += per_pos * n * (n + 1.0) / 2.0;
        tokens += n;
    }
    flops / tokens
}

/// The GEMM shapes a token needs, (rows of 256) × in × out, with how often.
fn shapes(c: &LlamaConfig) -> Vec<(usize, usize, f64)> {
    let l = c.num_hidden_layers as f64;
    let mut out: Vec<(usize, usize, f64)> = layout::block_linears(c)
        .iter()
        .map(|(_, [o, i])| (*i, *o, l))
        .collect();
    out.push((c.hidden_size, c.vocab_size, 1.0));
    out
}

/// candle's and faer's GEMM rates at `shapes` (forward x·Wᵀ and backward δ·W of each).
fn gemm_rates(c: &LlamaConfig, reps: usize) -> Result<(f64, f64)> {
    const ROWS: usize = 256;
    let (mut flops, mut t_candle, mut t_faer) = (0.0, 0.0, 0.0);
    for (i, o, count) in shapes(c) {
        let f = 2.0 * (ROWS * i * o) as f64;
        let x = Tensor::ones((ROWS, i), DType::F32, &Device::Cpu)?;
        let w = Tensor::ones((o, i), DType::F32, &Device::Cpu)?;
        let d = Tensor::ones((ROWS, o), DType::F32, &Device::Cpu)?;
        let wt = w.t()?;
        let fwd = trak_demo::yardstick::best_of(reps, || x.matmul(&wt).map(|_| ()));
        let bwd = trak_demo::yardstick::best_of(reps, || d.matmul(&w).map(|_| ()));
        t_candle += count * (fwd + bwd);
        let rate = |m, k, n| trak_demo::yardstick::gemm_gflops::<f32>(m, k, n, reps);
        t_faer += count * (f / rate(ROWS, i, o) + f / rate(ROWS, o, i)) / 1e9;
        flops += count * 2.0 * f;
    }
    Ok((flops / t_candle / 1e9, flops / t_faer / 1e9))
}

fn predicted(docs: &[TokenSeq]) -> usize {
    docs.iter().map(|d| d.tokens.len() - 1).sum()
}

/// The featurisation settings: the factored projector at k, `chunk` sequences per batch.
fn trak_settings(cfg: &Config) -> Result<Trak> {
    Ok(Trak::builder()
        .proj_dim(cfg.k)
        .projector(ProjectorKind::FACTORED)
        .batch_size(cfg.chunk)
        .memory_limit(cfg.memory_limit)
        .build()?)
}

/// Featurisation through the native pass (`NativeLlama`, the library's route for Llama
/// models): the features and the wall seconds.
fn featurize(cfg: &Config, net: &Llama, docs: &[TokenSeq]) -> Result<(Array2<f32>, f64)> {
    let trak = trak_settings(cfg)?;
    let t = Instant::now();
    let model = NativeLlama::new(net, &LayerSet::All.names(net.config()), docs)?;
    let phi = trak.features(0, &model, docs)?;
    Ok((phi, t.elapsed().as_secs_f64()))
}

/// Featurisation through candle (`lm::Bucketed`), one pass per featurisation batch: the
/// features and the wall seconds.
fn featurize_candle(cfg: &Config, net: &Llama, docs: &[TokenSeq]) -> Result<(Array2<f32>, f64)> {
    let trak = trak_settings(cfg)?;
    let t = Instant::now();
    let model = Bucketed::new(net, docs, (LayerSet::All, cfg.chunk), false)?;
    let phi = trak.features(0, &model, docs)?;
    Ok((phi, t.elapsed().as_secs_f64()))
}

/// candle's own forward + backward (weights as variables), `chunk` sequences per batch,
/// grouped by bucket, each batch padded to its own longest sequence only.
fn forward_backward(cfg: &Config, net: &Llama, docs: &[TokenSeq]) -> Result<f64> {
    let max = net.config().max_position_embeddings;
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.sort_by_key(|&i| lm::buckets::bucket(docs[i].tokens.len() - 1, max));
    let t = Instant::now();
    for idx in order.chunks(cfg.chunk) {
        let batch: Vec<TokenSeq> = idx.iter().map(|&i| docs[i].clone()).collect();
        lm::sequence_log_probs(net, &batch)?.sum_all()?.backward()?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// One epoch of `FineTune::default()` in batches of `batch`: through the native pass, or
/// (`native` false) candle's autograd (a batch padded to its longest sequence, its graph
/// growing with the square of that length).
fn finetune(base: &LlamaCheckpoint, docs: &[TokenSeq], batch: usize, native: bool) -> Result<f64> {
    let ft = FineTune {
        epochs: 1,
        batch,
        native,
        ..FineTune::default()
    };
    let t = Instant::now();
    ft.run(base, docs, None, |_| Ok(()))?;
    Ok(t.elapsed().as_secs_f64())
}

/// Measures everything (see the module docs).
pub fn run(cfg: &Config) -> Result<Output> {
    let (ckpt, docs) = setup(cfg)?;
    let c = ckpt.config().clone();
    let (blocks, head) = linear_weights(&c);
    let featurize_flops = 4.0 * (blocks + head) + attention_per_token(&c, &docs);
    // G before and after featurisation, the faster of each (the machine is shared: a slow
    // measurement would flatter every ratio).
    let before = gemm_rates(&c, cfg.reps)?;
    let net = ckpt.model()?;
    let (phi, secs) = featurize(cfg, &net, &docs)?;
    let featurize_peak = trak_demo::metagrad::peak_rss_mb();
    let after = gemm_rates(&c, cfg.reps)?;
    let gemm = (before.0.max(after.0), before.1.max(after.1));
    let mut runs = vec![("featurize", secs, featurize_flops)];
    let mut agreement = None;
    if cfg.candle {
        let (reference, secs) = featurize_candle(cfg, &net, &docs)?;
        runs.push(("featurize_candle", secs, featurize_flops));
        let diff = (&phi - &reference).mapv(|v| v * v).sum().sqrt();
        agreement = Some(diff / reference.mapv(|v| v * v).sum().sqrt());
    }
    if !cfg.featurize_only {
        let attn = attention_per_token(&c, &docs);
        let secs = forward_backward(cfg, &net, &docs)?;
        runs.push(("forward_backward", secs, 6.0 * (blocks + head) + attn));
        let frozen = if c.tie_word_embeddings { 4.0 } else { 6.0 };
        let ft_flops = 6.0 * blocks + frozen * head + attn;
        runs.push((
            "finetune",
            finetune(&ckpt, &docs, cfg.chunk, true)?,
            ft_flops,
        ));
        if cfg.candle {
            let secs = finetune(&ckpt, &docs, cfg.chunk, false)?;
            runs.push(("finetune_candle", secs, ft_flops));
        }
    }
    let tokens = predicted(&docs);
    let speeds = runs
        .into_iter()
        .map(|(what, secs, flops_per_token)| Speed {
            what,
            tokens,
            secs,
            gemm_gflops: gemm.0.max(gemm.1),
            flops_per_token,
        })
        .collect();
    Ok(Output {
        gemm,
        speeds,
        lengths: docs.iter().map(|d| d.tokens.len()).collect(),
        peak_rss_mb: (featurize_peak, trak_demo::metagrad::peak_rss_mb()),
        agreement,
        features_hash: xxhash_rust::xxh3::xxh3_64(
            &phi.iter()
                .flat_map(|v| v.to_bits().to_le_bytes())
                .collect::<Vec<u8>>(),
        ),
    })
}
