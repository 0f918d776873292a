//! The fact-tracing protocol of `lm_facts`: train a tiny transformer on the planted-facts
//! corpus, attribute each fact query's completion to the training documents, score how well
//! each method finds the documents that state the fact, and check counterfactually by
//! retraining without the top proponents.

// Shared by the example and its test.
#![allow(dead_code)]

use ndarray::{Array2, ArrayView2};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use trak::{ProjectorKind, Result, Trak};
use trak_candle::{CandleContext, CandleModel, SequenceObjective, TokenCollate, TokenSeq};
use trak_demo::protocol::{baseline_scores, featurize_all};

use super::fact_metrics::{
    Corpus, FactsRow, RemovalRow, bm25_matrix, removal_sets, tracing, without,
};
use super::facts::{self, PAD, VOCAB};
use super::tiny_lm::{self, LmConfig, LmTraining, TinyLm};

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct FactsConfig {
    /// Planted facts (each stated by two documents, with two distractors).
    pub facts: usize,
    /// Filler documents.
    pub fillers: usize,
    /// Width, heads, blocks (vocabulary and context come from the corpus).
    pub d: usize,
    /// Attention heads.
    pub heads: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Training of every model (checkpoints and retrained ones).
    pub training: LmTraining,
    /// Projection dimension (factored projector).
    pub k: usize,
    /// Checkpoints (seeds 0, 1, …).
    pub checkpoints: usize,
    /// Queries of the removal check.
    pub removal_queries: usize,
    /// Top proponents removed per query.
    pub removal_k: usize,
    /// Corpus and sampling seed.
    pub seed: u64,
    /// Print progress to stderr.
    pub verbose: bool,
}

impl FactsConfig {
    /// 150 facts, 1,500 fillers (2,100 documents), d = 64, 4 heads, 2 blocks, 40 epochs,
    /// 3 checkpoints, k = 2,048; 20 removal queries, top 5 each.
    pub fn full() -> Self {
        Self {
            facts: 150,
            fillers: 1500,
            d: 64,
            heads: 4,
            layers: 2,
            training: LmTraining {
                epochs: 40,
                batch: 32,
                lr: 3e-3,
            },
            k: 2048,
            checkpoints: 3,
            removal_queries: 20,
            removal_k: 5,
            seed: 0,
            verbose: true,
        }
    }

    /// 24 facts, 150 fillers, d = 32, 1 block, 1 checkpoint, k = 512: under a minute.
    pub fn quick() -> Self {
        Self {
            facts: 24,
            fillers: 150,
            d: 32,
            heads: 2,
            layers: 1,
            training: LmTraining {
                epochs: 30,
                batch: 16,
                lr: 5e-3,
            },
            k: 512,
            checkpoints: 1,
            removal_queries: 6,
            removal_k: 3,
            ..Self::full()
        }
    }

    fn log(&self, msg: impl AsRef<str>) {
        if self.verbose {
            eprintln!("[lm_facts] {}", msg.as_ref());
        }
    }
}

/// What a run measured.
pub struct FactsOutput {
    /// One row per method.
    pub facts: Vec<FactsRow>,
    /// `top` and `random`.
    pub removal: Vec<RemovalRow>,
    /// Documents, parameters of the model, mean log p of the queries' completions.
    pub docs: usize,
    /// Parameters of the transformer.
    pub params: usize,
    /// Mean log p(completion | prompt) under checkpoint 0.
    pub mean_logp: f64,
}

type LmModel<'a> = CandleModel<TokenSeq, &'a TinyLm, TokenCollate, SequenceObjective>;

fn adapter<'a>(lm: &'a TinyLm, cfg: &LmConfig, docs: &[TokenSeq]) -> Result<LmModel<'a>> {
    let collate = TokenCollate {
        context: cfg.context,
        pad: PAD,
    };
    CandleModel::builder(lm, collate, SequenceObjective::new(VOCAB))
        .chunk_rows(32)
        .build(&docs[..8])
}

/// Scores (n_docs × n_queries) of each method.
fn method_scores(
    cfg: &FactsConfig,
    corpus: &Corpus,
    models: &[LmModel<'_>],
    docs: &[TokenSeq],
    queries: &[TokenSeq],
) -> Result<Vec<(&'static str, Array2<f32>)>> {
    let trak = Trak::builder()
        .proj_dim(cfg.k)
        .projector(ProjectorKind::FACTORED)
        .seed(cfg.seed)
        .build()?;
    let t0 = std::time::Instant::now();
    let (feats, psis) = featurize_all(&trak, models, docs, queries)?;
    cfg.log(format!(
        "featurised {} documents × {} checkpoints in {:.1} s",
        docs.len(),
        models.len(),
        t0.elapsed().as_secs_f64()
    ));
    let t: Vec<(u64, ArrayView2<'_, f32>)> = psis
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64, p.view()))
        .collect();
    let tr = feats.finalize()?.score_features(&t)?.values().to_owned();
    let mut out = vec![("trak", tr)];
    for (method, s) in baseline_scores(&feats, &psis, models.len(), cfg.seed)? {
        out.push((method, s.values().to_owned()));
    }
    let lex = bm25_matrix(&corpus.docs, &corpus.query_texts());
    out.push(("lexical", lex));
    Ok(out)
}

/// Retrains (seed 0) without `removed` and returns the change of each query's log-prob.
fn retrained_delta(
    cfg: &FactsConfig,
    lm: LmConfig,
    docs: &[TokenSeq],
    removed: &[usize],
    queries: &[TokenSeq],
    base: &[f32],
) -> Result<f64> {
    let kept = without(docs, removed);
    let m = tiny_lm::train(lm, &kept, 0, cfg.training).ctx("the tiny transformer")?;
    let after = tiny_lm::log_probs(&m, queries).ctx("the tiny transformer")?;
    Ok(after
        .iter()
        .zip(base)
        .map(|(a, b)| (a - b) as f64)
        .sum::<f64>()
        / queries.len() as f64)
}

/// The removal check on the first `removal_queries` facts (in a seeded order).
fn removal(
    cfg: &FactsConfig,
    lm: LmConfig,
    docs: &[TokenSeq],
    queries: &[TokenSeq],
    trak_scores: &Array2<f32>,
    base: &TinyLm,
) -> Result<Vec<RemovalRow>> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x7e57);
    let mut picked: Vec<usize> = (0..queries.len()).collect();
    picked.shuffle(&mut rng);
    picked.truncate(cfg.removal_queries.min(queries.len()));
    let qs: Vec<TokenSeq> = picked.iter().map(|&q| queries[q].clone()).collect();
    let (top, random) = removal_sets(trak_scores, &picked, cfg.removal_k, &mut rng);
    let base_logp = tiny_lm::log_probs(base, &qs).ctx("the tiny transformer")?;
    let mut rows = Vec::new();
    for (kind, removed) in [("top", &top), ("random", &random)] {
        cfg.log(format!(
            "removal: retraining without {} {kind} documents",
            removed.len()
        ));
        let d = retrained_delta(cfg, lm, docs, removed, &qs, &base_logp)?;
        rows.push(RemovalRow {
            kind,
            k: cfg.removal_k,
            queries: qs.len(),
            removed: removed.len(),
            mean_delta_logp: d,
        });
    }
    Ok(rows)
}

/// Runs the protocol.
pub fn run(cfg: &FactsConfig) -> Result<FactsOutput> {
    let corpus = facts::generate(cfg.facts, cfg.fillers, cfg.seed);
    let docs = corpus.sequences();
    let lm = LmConfig {
        vocab: VOCAB,
        context: corpus.max_len() - 1,
        d: cfg.d,
        heads: cfg.heads,
        layers: cfg.layers,
    };
    cfg.log(format!(
        "{} documents, context {}, training {} checkpoint(s)",
        docs.len(),
        lm.context,
        cfg.checkpoints
    ));
    let t0 = std::time::Instant::now();
    let nets: Vec<TinyLm> = (0..cfg.checkpoints as u64)
        .map(|seed| tiny_lm::train(lm, &docs, seed, cfg.training).ctx("the tiny transformer"))
        .collect::<Result<_>>()?;
    cfg.log(format!("trained in {:.1} s", t0.elapsed().as_secs_f64()));
    let queries: Vec<TokenSeq> = corpus.facts.iter().map(|f| f.query()).collect();
    let logp = tiny_lm::log_probs(&nets[0], &queries).ctx("the tiny transformer")?;
    let mean_logp = logp.iter().map(|&v| v as f64).sum::<f64>() / logp.len() as f64;
    let models = nets
        .iter()
        .map(|n| adapter(n, &lm, &docs))
        .collect::<Result<Vec<_>>>()?;
    let params = trak::Model::num_params(&models[0]);
    let scores = method_scores(cfg, &corpus, &models, &docs, &queries)?;
    let relevant = corpus.relevant();
    let facts = scores
        .iter()
        .map(|(m, s)| tracing(&relevant, m, None, s))
        .collect();
    let removal = removal(cfg, lm, &docs, &queries, &scores[0].1, &nets[0])?;
    Ok(FactsOutput {
        facts,
        removal,
        docs: docs.len(),
        params,
        mean_logp,
    })
}
