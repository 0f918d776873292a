//! The protocol of `smollm_facts`: fine-tune a Llama-family model (SmolLM2-135M from its
//! GGUF file, or a tiny random configuration for `--quick`) on the English planted-facts
//! corpus, attribute each query's completion to the training documents with every method and
//! layer set, check counterfactually by fine-tuning again without the top proponents, and
//! split the top document's score over its tokens.

// Shared by the example and its test.
#![allow(dead_code)]

use std::path::PathBuf;

use candle::Device;
use ndarray::{Array2, ArrayView2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use trak::{ProjectorKind, Result, Ridge, TrainFeatures, Trak, TrakIndex};
use trak_candle::TokenSeq;
use trak_candle::lm::{self, FineTune, LayerSet};
use trak_candle::models::llama::{
    Architecture, Llama, LlamaCheckpoint, LlamaConfig, NativeLlama, layout,
};
use trak_demo::protocol::baseline_scores;

use super::english_facts;
use super::fact_metrics::{
    Corpus, FactsRow, RemovalRow, bm25_matrix, removal_sets, top_docs, tracing, without,
};
use super::tokens::Tokens;

/// Where the pretrained model comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A llama.cpp GGUF file (SmolLM2-135M-Instruct: `scripts/fetch-smollm2.sh`).
    Gguf(PathBuf),
    /// A tiny random Llama (width 64, 2 blocks) over a word vocabulary of the corpus.
    Tiny,
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The model.
    pub source: Source,
    /// Planted facts (relations in turn).
    pub facts: usize,
    /// Filler documents.
    pub fillers: usize,
    /// Corpus, data order and projection seed.
    pub seed: u64,
    /// Fine-tuning epochs (every fine-tuning: the attributed model and the removals).
    pub epochs: usize,
    /// Documents per fine-tuning step.
    pub batch: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// Whether the token embedding (tied to the head) is fine-tuned too.
    pub train_embedding: bool,
    /// Checkpoints attributed (M, TRAK's ensemble): the weights after M epochs spaced evenly
    /// along the one fine-tuning run, ending with the fine-tuned model ([`checkpoint_epochs`]).
    pub checkpoints: usize,
    /// Projection dimension (factored projector).
    pub k: usize,
    /// Documents per featurisation batch (and per padded forward + backward pass of the
    /// candle route's throughput comparison and gradient check).
    pub chunk: usize,
    /// Top proponents of each query removed in the counterfactual.
    pub removal_k: usize,
    /// Queries whose top document's score is split over its tokens.
    pub influence: usize,
    /// Whether to measure featurisation throughput against forward + backward.
    pub throughput: bool,
    /// Whether the adapter checks its gradients against finite differences when built.
    pub gradient_check: bool,
    /// Progress on stderr.
    pub verbose: bool,
}

impl Config {
    /// SmolLM2-135M from `gguf`: 18 facts, 100 fillers, 5 epochs of batches of 8 at lr 3e-4
    /// (embedding frozen), the checkpoint after every epoch attributed (M = 5), k = 2,048,
    /// top 3 removed per query, 3 token splits, throughput.
    pub fn full(gguf: PathBuf) -> Self {
        Self {
            source: Source::Gguf(gguf),
            facts: 18,
            fillers: 100,
            seed: 0,
            epochs: 5,
            batch: 8,
            lr: 3e-4,
            train_embedding: false,
            checkpoints: 5,
            k: 2048,
            chunk: 8,
            removal_k: 3,
            influence: 3,
            throughput: true,
            gradient_check: false,
            verbose: true,
        }
    }

    /// The tiny random model trained from scratch: 12 facts, 40 fillers, 40 epochs (M = 4
    /// checkpoints: epochs 10, 20, 30, 40), k = 512, gradient check on: seconds.
    pub fn quick() -> Self {
        Self {
            source: Source::Tiny,
            facts: 12,
            fillers: 40,
            epochs: 40,
            lr: 3e-3,
            train_embedding: true,
            checkpoints: 4,
            k: 512,
            removal_k: 2,
            influence: 2,
            gradient_check: true,
            ..Self::full(PathBuf::new())
        }
    }

    fn log(&self, msg: impl AsRef<str>) {
        if self.verbose {
            eprintln!("[smollm_facts] {}", msg.as_ref());
        }
    }
}

/// One query's top document with its score split over its tokens.
#[derive(Debug, Clone)]
pub struct Influence {
    /// The query (index of the fact).
    pub query: usize,
    /// Its prompt and completion.
    pub text: String,
    /// The top TRAK document (index) and whether it states the fact.
    pub doc: usize,
    /// Whether the top document states the query's fact.
    pub states: bool,
    /// Each predicted token of the document and its share of the document's score.
    pub tokens: Vec<(String, f64)>,
    /// |Σ token scores − document score| / |document score| (the split is exact up to it).
    pub split_error: f64,
}

impl Influence {
    /// `INFLUENCE query=… states=… doc=… text="…"`: tokens with ≥ 10 % of the score are
    /// marked `[token|+23%]`.
    pub fn line(&self) -> String {
        let text: String = self
            .tokens
            .iter()
            .map(|(t, s)| match s.abs() >= 0.1 {
                true => format!("[{t}|{:+.0}%]", 100.0 * s),
                false => t.clone(),
            })
            .collect();
        format!(
            "INFLUENCE query={:?} doc={} states={} split_error={:.1e} text={text:?}",
            self.text, self.doc, self.states, self.split_error
        )
    }
}

/// Featurisation throughput of one projector against the model's forward + backward.
#[derive(Debug, Clone)]
pub struct Throughput {
    /// The projector.
    pub projector: String,
    /// Feature dimension.
    pub k: usize,
    /// Featurised predicted tokens per second.
    pub tokens_per_s: f64,
    /// The model's own batched forward + backward, same documents, same run.
    pub fwd_bwd_tokens_per_s: f64,
}

impl Throughput {
    /// `THROUGHPUT projector=… k=… tokens_per_s=… fwd_bwd_tokens_per_s=… ratio=…`.
    pub fn line(&self) -> String {
        format!(
            "THROUGHPUT projector={} k={} tokens_per_s={:.1} fwd_bwd_tokens_per_s={:.1} ratio={:.3}",
            self.projector,
            self.k,
            self.tokens_per_s,
            self.fwd_bwd_tokens_per_s,
            self.tokens_per_s / self.fwd_bwd_tokens_per_s
        )
    }
}

/// What a run measured.
pub struct Output {
    /// Fact tracing per method and layer set.
    pub facts: Vec<FactsRow>,
    /// TRAK's fact tracing under other ridge rules (all block linears).
    pub ridge: Vec<RidgeRow>,
    /// The epochs after which the attributed checkpoints were taken.
    pub checkpoints: Vec<usize>,
    /// `top`, `random` and `top-unstated` removals.
    pub removal: Vec<RemovalRow>,
    /// Token splits of top documents.
    pub influence: Vec<Influence>,
    /// Throughput rows (empty unless asked for).
    pub throughput: Vec<Throughput>,
    /// Documents, predicted tokens of the corpus, model parameters.
    pub docs: usize,
    /// Predicted tokens of the corpus.
    pub tokens: usize,
    /// Parameters of the model.
    pub params: usize,
    /// Mean log p(completion | prompt) before and after fine-tuning.
    pub logp: (f64, f64),
}

/// The tiny random configuration of `--quick`.
pub fn tiny_config(vocab: usize) -> LlamaConfig {
    LlamaConfig {
        architecture: Architecture::Llama,
        vocab_size: vocab,
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 64,
        tie_word_embeddings: true,
        qkv_bias: false,
        sliding_window: None,
    }
}

/// The pretrained weights (never trained themselves: fine-tuning trains a copy) and the
/// tokenizer (shared with `smollm_lds`).
pub struct Pretrained {
    /// The weights.
    pub ckpt: LlamaCheckpoint,
    /// The tokenizer.
    pub tokens: Tokens,
}

impl Pretrained {
    fn load(cfg: &Config, corpus: &Corpus) -> Result<Self> {
        Self::open(&cfg.source, cfg.seed, (&corpus.docs, &corpus.query_texts()))
    }

    /// The model of `source`; the tiny one (initialised with `seed`) gets a word vocabulary
    /// of `texts` (documents, then any other text it must encode).
    pub fn open(source: &Source, seed: u64, texts: (&[String], &[String])) -> Result<Self> {
        let (ckpt, tokens) = match source {
            Source::Gguf(path) => {
                let (ckpt, tok) = lm::open(path, &Device::Cpu)?;
                (ckpt, Tokens::Gguf(Box::new(tok)))
            }
            Source::Tiny => {
                let tokens = Tokens::words(texts.0, texts.1);
                let config = tiny_config(tokens.vocab());
                (LlamaCheckpoint::random(config, seed, &Device::Cpu)?, tokens)
            }
        };
        Ok(Self { ckpt, tokens })
    }
}

/// log p(completion | prompt) of each query.
fn log_probs(lm: &Llama, queries: &[TokenSeq]) -> Result<Vec<f32>> {
    lm::log_probs(lm, queries, 64)
}

/// The fine-tuning settings of a run.
fn settings(cfg: &Config) -> FineTune {
    recipe(
        (cfg.epochs, cfg.batch),
        cfg.lr,
        cfg.seed,
        cfg.train_embedding,
    )
}

/// AdamW fine-tuning for `epochs` epochs of `batch` documents at `lr`, data order `seed`,
/// the token embedding frozen unless `train_embedding` (shared with `smollm_lds`).
pub fn recipe(
    (epochs, batch): (usize, usize),
    lr: f64,
    seed: u64,
    train_embedding: bool,
) -> FineTune {
    FineTune {
        epochs,
        lr,
        batch,
        seed,
        frozen: match train_embedding {
            true => Vec::new(),
            false => vec![layout::EMBED.to_string()],
        },
        ..FineTune::default()
    }
}

/// Fine-tunes a copy of the pretrained weights on `docs` ([`lm::FineTune`]).
fn fine_tune(
    cfg: &Config,
    pre: &Pretrained,
    docs: &[TokenSeq],
    queries: &[TokenSeq],
) -> Result<LlamaCheckpoint> {
    let mut kept = fine_tune_keeping(cfg, pre, docs, queries, &[])?;
    Ok(kept.pop().expect("the fine-tuned checkpoint comes last"))
}

/// [`fine_tune`], keeping snapshots of the weights after each epoch in `keep` (1-based)
/// before the last: returns them in order, then the fine-tuned checkpoint itself. `queries`'
/// mean log p(completion) is logged after every epoch.
fn fine_tune_keeping(
    cfg: &Config,
    pre: &Pretrained,
    docs: &[TokenSeq],
    queries: &[TokenSeq],
    keep: &[usize],
) -> Result<Vec<LlamaCheckpoint>> {
    let mut kept = Vec::new();
    let last = settings(cfg).run(&pre.ckpt, docs, None, |e| {
        let logp = log_probs(&e.checkpoint.model()?, queries)?;
        cfg.log(format!(
            "epoch {}: mean loss {:.3}, queries' mean log p {:.3} ({:.0} s)",
            e.index,
            e.mean_loss,
            logp.iter().map(|&v| v as f64).sum::<f64>() / logp.len() as f64,
            e.elapsed
        ));
        if e.index < cfg.epochs && keep.contains(&e.index) {
            kept.push(e.checkpoint.snapshot()?);
        }
        Ok(())
    })?;
    kept.push(last);
    Ok(kept)
}

/// The epochs (1-based) after which the attributed checkpoints are taken: `cfg.checkpoints`
/// of them (at least 1, at most one per epoch) spaced evenly, ending with the last epoch.
pub fn checkpoint_epochs(cfg: &Config) -> Vec<usize> {
    let m = cfg.checkpoints.clamp(1, cfg.epochs.max(1));
    (1..=m).map(|i| i * cfg.epochs / m).collect()
}

/// The layer sets: every block linear, the MLPs only, the attention projections only.
const LAYER_SETS: [LayerSet; 3] = [LayerSet::All, LayerSet::Mlp, LayerSet::Attention];

/// Checkpoint `lm` attributed at `set` through the native pass. With `gradient_check`, the
/// candle route is built first at `context` with its finite-difference check of the
/// network's backward pass (the native pass equals that route: `tests/native.rs`).
fn adapter<'a>(
    cfg: &Config,
    lm: &'a Llama,
    context: usize,
    set: LayerSet,
    probe: &[TokenSeq],
) -> Result<NativeLlama<'a>> {
    if cfg.gradient_check {
        lm::adapter(lm, (context, cfg.chunk), set, probe, true)?;
    }
    NativeLlama::new(lm, &set.names(lm.config()), probe)
}

/// One layer set's attribution over the checkpoints: the features (documents), the index,
/// the queries' features per checkpoint, and the scores (documents × queries) of TRAK (the
/// ensemble, and the last checkpoint alone), grad-dot and grad-cos (on the ensemble's
/// features), plus random scores.
struct Attribution {
    feats: TrainFeatures,
    index: TrakIndex,
    psis: Vec<Array2<f32>>,
    scores: Vec<(&'static str, Array2<f32>)>,
}

impl Attribution {
    /// The query features of every checkpoint, as `score_features` takes them.
    fn targets(&self) -> Vec<(u64, ArrayView2<'_, f32>)> {
        (0u64..).zip(self.psis.iter().map(|p| p.view())).collect()
    }
}

fn attribute(
    cfg: &Config,
    models: &[NativeLlama<'_>],
    docs: &[TokenSeq],
    queries: &[TokenSeq],
) -> Result<(Trak, Attribution)> {
    let trak = Trak::builder()
        .proj_dim(cfg.k)
        .projector(ProjectorKind::FACTORED)
        .batch_size(cfg.chunk)
        .seed(cfg.seed)
        .build()?;
    let mut feats = trak.featurizer();
    let mut psis = Vec::new();
    for (m, model) in (0u64..).zip(models) {
        feats.featurize(m, model, docs)?;
        psis.push(trak.features(m, model, queries)?);
    }
    let index = feats.finalize()?;
    let mut att = Attribution {
        feats,
        index,
        psis,
        scores: Vec::new(),
    };
    let ensemble = att.index.score_features(&att.targets())?.into_inner();
    let last = att.targets().pop().expect("at least one checkpoint");
    let last = att.index.score_features(&[last])?.into_inner();
    att.scores = vec![("trak", ensemble), ("trak-last", last)];
    let m = models.len();
    for (method, s) in baseline_scores(&att.feats, &att.psis, m, cfg.seed)? {
        att.scores.push((method, s.into_inner()));
    }
    Ok((trak, att))
}

/// TRAK's fact-tracing rows under other ridge rules λ = c · mean ‖φ‖² (the default is
/// c = 2), on the same features: how much the default rule leaves on the table here.
fn ridge_sweep(
    att: &Attribution,
    relevant: &[Vec<usize>],
    set: &'static str,
) -> Result<Vec<RidgeRow>> {
    let mut rows = Vec::new();
    for c in RIDGE_SWEEP {
        let index = att
            .feats
            .with_ridge(Ridge::MeanSquaredNorm(c))?
            .finalize()?;
        let s = index.score_features(&att.targets())?.into_inner();
        let row = tracing(relevant, "trak", Some(set), &s);
        rows.push(RidgeRow { c, row });
    }
    Ok(rows)
}

/// The ridge constants of [`ridge_sweep`].
const RIDGE_SWEEP: [f64; 5] = [0.1, 0.5, 2.0, 8.0, 32.0];

/// One row of the ridge sweep.
#[derive(Debug, Clone)]
pub struct RidgeRow {
    /// λ = c · mean ‖φ‖².
    pub c: f64,
    /// TRAK's fact tracing under it.
    pub row: FactsRow,
}

impl RidgeRow {
    /// `RIDGE layers=… c=… recall@1=… recall@10=… mrr=…`.
    pub fn line(&self) -> String {
        let r = &self.row;
        format!(
            "RIDGE layers={} c={} recall@1={:.3} recall@10={:.3} mrr={:.3}",
            r.layers.unwrap_or("-"),
            self.c,
            r.recall1,
            r.recall10,
            r.mrr
        )
    }
}

/// Splits the TRAK score of query `q`'s top document over the document's predicted tokens:
/// each token's features (its log-probability's projected gradient) at every checkpoint,
/// dotted with that checkpoint's solved targets (`solved[m]`, [`TrakIndex::solve_targets`]
/// of every query), averaged over the checkpoints as the scores are; the features of the
/// tokens sum to the document's.
fn influence(
    ctx: (&Trak, &[NativeLlama<'_>], &Attribution, &[Array2<f64>]),
    tokens: &Tokens,
    (docs, corpus): (&[TokenSeq], &Corpus),
    q: usize,
) -> Result<Influence> {
    let (trak, models, att, solved) = ctx;
    let doc = top_docs(&att.scores[0].1, q, 1)[0];
    let seq = &docs[doc].tokens;
    let parts: Vec<TokenSeq> = (1..seq.len())
        .map(|p| TokenSeq::completion(&seq[..p], &seq[p..=p]))
        .collect();
    let mut shares = vec![0f64; parts.len()];
    let mut whole = 0f64;
    for ((m, model), solved) in (0u64..).zip(models).zip(solved) {
        let y = solved.column(q);
        let dot = |row: ndarray::ArrayView1<'_, f32>| -> f64 {
            row.iter().zip(y.iter()).map(|(&a, &b)| a as f64 * b).sum()
        };
        let per_token = trak.features(m, model, &parts)?;
        for (share, row) in shares.iter_mut().zip(per_token.rows()) {
            *share += dot(row);
        }
        let phi = att.feats.features(m).expect("checkpoint m was featurised");
        whole += dot(phi.row(doc));
    }
    let total: f64 = shares.iter().sum();
    let fact = &corpus.facts[q];
    Ok(Influence {
        query: q,
        text: format!("{}{}", fact.prompt, fact.completion),
        doc,
        states: fact.docs.contains(&doc),
        tokens: seq[1..]
            .iter()
            .zip(&shares)
            .map(|(&t, s)| (tokens.piece(t), s / total))
            .collect(),
        split_error: (total - whole).abs() / whole.abs().max(f64::MIN_POSITIVE),
    })
}

/// Fine-tunes again without `removed` and returns the mean change of the queries' log p.
fn removal_delta(
    cfg: &Config,
    pre: &Pretrained,
    docs: &[TokenSeq],
    removed: &[usize],
    (queries, before): (&[TokenSeq], &[f32]),
) -> Result<f64> {
    let kept = without(docs, removed);
    let lm = fine_tune(cfg, pre, &kept, queries)?.model()?;
    let after = log_probs(&lm, queries)?;
    let sum: f64 = after.iter().zip(before).map(|(a, b)| (a - b) as f64).sum();
    Ok(sum / queries.len() as f64)
}

/// The counterfactual: the union of every query's top `removal_k` TRAK documents, as many
/// random documents, and the union of every query's top `removal_k` among the documents that
/// state no fact at all (`top-unstated`: are the non-stating documents TRAK ranks high real
/// proponents?), each removed before fine-tuning again (same seed, same settings).
fn removal(
    cfg: &Config,
    pre: &Pretrained,
    (docs, corpus): (&[TokenSeq], &Corpus),
    (queries, before): (&[TokenSeq], &[f32]),
    trak_scores: &Array2<f32>,
) -> Result<Vec<RemovalRow>> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x7e57);
    let all: Vec<usize> = (0..queries.len()).collect();
    let (top, random) = removal_sets(trak_scores, &all, cfg.removal_k, &mut rng);
    let mut unstated_scores = trak_scores.clone();
    for d in corpus.relevant().into_iter().flatten() {
        unstated_scores.row_mut(d).fill(f32::NEG_INFINITY);
    }
    let (unstated, _) = removal_sets(&unstated_scores, &all, cfg.removal_k, &mut rng);
    let mut rows = Vec::new();
    let kinds = [
        ("top", &top),
        ("random", &random),
        ("top-unstated", &unstated),
    ];
    for (kind, removed) in kinds {
        cfg.log(format!(
            "removal: fine-tuning without {} {kind} documents",
            removed.len()
        ));
        let d = removal_delta(cfg, pre, docs, removed, (queries, before))?;
        rows.push(RemovalRow {
            kind,
            k: cfg.removal_k,
            queries: queries.len(),
            removed: removed.len(),
            mean_delta_logp: d,
        });
    }
    Ok(rows)
}

/// Factored, sparse and dense featurisation of `docs` against the model's forward +
/// backward on the same documents.
fn throughput(
    cfg: &Config,
    lm: &Llama,
    docs: &[TokenSeq],
    context: usize,
) -> Result<Vec<Throughput>> {
    let limit = super::llama_throughput::fwd_bwd_tokens_per_s(lm, docs, cfg.chunk, context)?;
    let runs = [
        ("factored", ProjectorKind::FACTORED, cfg.k, docs.len()),
        (
            "sparse",
            ProjectorKind::Sparse { s: 1 },
            cfg.k,
            docs.len().min(2 * cfg.chunk),
        ),
        ("dense", ProjectorKind::Rademacher, 512, docs.len().min(2)),
    ];
    let mut rows = Vec::new();
    for (name, kind, k, n) in runs {
        let r = super::llama_throughput::featurize_tokens_per_s(
            lm,
            &docs[..n],
            (kind, k),
            (cfg.chunk, cfg.chunk.min(n), context),
        )?;
        cfg.log(format!(
            "throughput {}: {:.1} tokens/s",
            r.projector, r.tokens_per_s
        ));
        rows.push(Throughput {
            projector: name.into(),
            k,
            tokens_per_s: r.tokens_per_s,
            fwd_bwd_tokens_per_s: limit,
        });
    }
    Ok(rows)
}

/// The documents and queries as token sequences (a start token first).
fn sequences(tokens: &Tokens, corpus: &Corpus) -> (Vec<TokenSeq>, Vec<TokenSeq>) {
    let docs = corpus
        .docs
        .iter()
        .map(|d| TokenSeq::document(tokens.with_bos(d)))
        .collect();
    let queries = corpus
        .facts
        .iter()
        .map(|f| TokenSeq::completion(&tokens.with_bos(&f.prompt), &tokens.encode(&f.completion)))
        .collect();
    (docs, queries)
}

/// What the attribution of every layer set gives: fact-tracing rows, the ridge sweep and the
/// token splits (of the "all" set), and the TRAK scores of the "all" set.
struct Traced {
    rows: Vec<FactsRow>,
    ridge: Vec<RidgeRow>,
    influence: Vec<Influence>,
    trak_all: Array2<f32>,
}

/// Fact tracing rows of every method and layer set over the checkpoints `lms`, and, for the
/// "all" set, the ridge sweep and the token splits of the first `cfg.influence` queries.
fn trace(
    cfg: &Config,
    lms: &[Llama],
    tokens: &Tokens,
    (docs, queries, context): (&[TokenSeq], &[TokenSeq], usize),
    corpus: &Corpus,
) -> Result<Traced> {
    let relevant = corpus.relevant();
    let mut out = Traced {
        rows: Vec::new(),
        ridge: Vec::new(),
        influence: Vec::new(),
        trak_all: Array2::zeros((0, 0)),
    };
    for layers in LAYER_SETS {
        let (set, names) = (layers.as_str(), layers.names(lms[0].config()));
        let t0 = std::time::Instant::now();
        let models = lms
            .iter()
            .map(|lm| adapter(cfg, lm, context, layers, docs))
            .collect::<Result<Vec<_>>>()?;
        let (trak, att) = attribute(cfg, &models, docs, queries)?;
        cfg.log(format!(
            "layers={set}: {} linears, p = {}, {} checkpoints featurised in {:.1} s",
            names.len(),
            trak::Model::num_params(&models[0]),
            models.len(),
            t0.elapsed().as_secs_f64()
        ));
        for (method, s) in &att.scores {
            match *method {
                "random" if set == "all" => out.rows.push(tracing(&relevant, method, None, s)),
                "random" => {}
                _ => out.rows.push(tracing(&relevant, method, Some(set), s)),
            }
        }
        if set == "all" {
            out.ridge = ridge_sweep(&att, &relevant, set)?;
            let solved = att
                .targets()
                .into_iter()
                .map(|(m, psi)| att.index.solve_targets(m, psi))
                .collect::<Result<Vec<_>>>()?;
            for q in 0..cfg.influence.min(queries.len()) {
                let ctx = (&trak, models.as_slice(), &att, solved.as_slice());
                out.influence
                    .push(influence(ctx, tokens, (docs, corpus), q)?);
            }
            out.trak_all = att.scores[0].1.clone();
        }
    }
    Ok(out)
}

/// Runs the protocol.
pub fn run(cfg: &Config) -> Result<Output> {
    let corpus = english_facts::generate(cfg.facts, cfg.fillers, cfg.seed);
    let t0 = std::time::Instant::now();
    let pre = Pretrained::load(cfg, &corpus)?;
    let (docs, queries) = sequences(&pre.tokens, &corpus);
    let context = docs
        .iter()
        .chain(&queries)
        .map(|s| s.tokens.len() - 1)
        .max()
        .unwrap_or(1);
    let tokens: usize = docs.iter().map(|d| d.tokens.len() - 1).sum();
    cfg.log(format!(
        "{} documents ({} predicted tokens, context {context}), {} queries; loaded in {:.1} s",
        docs.len(),
        tokens,
        queries.len(),
        t0.elapsed().as_secs_f64()
    ));
    let before = log_probs(&pre.ckpt.model()?, &queries)?;
    let epochs = checkpoint_epochs(cfg);
    // `checkpoint_epochs` ends with the last epoch: the fine-tuned model is the last of them.
    let kept = fine_tune_keeping(cfg, &pre, &docs, &queries, &epochs)?;
    let lms = kept.iter().map(|c| c.model()).collect::<Result<Vec<_>>>()?;
    let lm = lms.last().expect("the fine-tuned checkpoint");
    let after = log_probs(lm, &queries)?;
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    cfg.log(format!(
        "mean log p(completion): {:.3} pretrained, {:.3} fine-tuned",
        mean(&before),
        mean(&after)
    ));
    let traced = trace(cfg, &lms, &pre.tokens, (&docs, &queries, context), &corpus)?;
    let mut facts = traced.rows;
    let lex = bm25_matrix(&corpus.docs, &corpus.query_texts());
    facts.push(tracing(&corpus.relevant(), "bm25", None, &lex));
    let throughput = match cfg.throughput {
        true => throughput(cfg, lm, &docs[..docs.len().min(32)], context)?,
        false => Vec::new(),
    };
    let removal = removal(
        cfg,
        &pre,
        (&docs, &corpus),
        (&queries, &after),
        &traced.trak_all,
    )?;
    Ok(Output {
        facts,
        ridge: traced.ridge,
        checkpoints: epochs,
        removal,
        influence: traced.influence,
        throughput,
        docs: docs.len(),
        tokens,
        params: kept[kept.len() - 1]
            .vars()
            .iter()
            .map(|(_, v)| v.elem_count())
            .sum(),
        logp: (mean(&before), mean(&after)),
    })
}
