//! The protocol of `smollm_lds`: fine-tune a Llama-family model (SmolLM2-135M from its GGUF
//! file, or a tiny random configuration for `--quick`) on the English planted-facts corpus,
//! attribute two kinds of target with every method on the same features, and score each
//! method by the LDS against two counterfactual truths (leave-1 %-out retrainings with the
//! same seed, half-subset retrainings with other data orders).

// Shared by the example and its test.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Instant;

use ndarray::{Array2, ArrayView2, Axis, s};
use trak::eval::{DropSets, Lds, grad_dot, lds, random_scores, subset_masks};
use trak::{Error, Model, ProjectorKind, Result, Ridge, TrainFeatures, Trak};
use trak_candle::TokenSeq;
use trak_candle::lm::{self, FineTune, LayerSet};
use trak_candle::models::llama::{Llama, LlamaCheckpoint, NativeLlama};

use super::english_facts;
use super::fact_metrics::bm25_matrix;
use super::smollm_facts::{Pretrained, Source};
use super::trackstar::{Preconditioned, Scales, scales_of};

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The model.
    pub source: Source,
    /// Planted facts: the query targets, and one held-out restatement each.
    pub facts: usize,
    /// Filler documents.
    pub fillers: usize,
    /// Corpus, data order (of the attributed run and the leave-out truth), subsets and
    /// projection seed.
    pub seed: u64,
    /// Fine-tuning epochs: the checkpoints of TRAK's ensemble are the weights after each.
    pub epochs: usize,
    /// Documents per fine-tuning step.
    pub batch: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// Whether the token embedding (tied to the head) is fine-tuned too.
    pub train_embedding: bool,
    /// Projection dimension (factored projector, every block linear).
    pub k: usize,
    /// Documents per featurisation batch.
    pub chunk: usize,
    /// Retrainings per truth (J).
    pub subsets: usize,
    /// Fraction of the documents each leave-out retraining drops.
    pub leave_out: f64,
    /// Where retrained outputs are kept, to rerun the attribution without retraining (each
    /// file records the settings it belongs to and is ignored under others).
    pub cache: Option<PathBuf>,
    /// Progress on stderr.
    pub verbose: bool,
}

impl Config {
    /// SmolLM2-135M from `gguf`: 32 facts and 88 fillers (200 documents), 2 epochs of
    /// batches of 8 at lr 3e-4 (embedding frozen), k = 2,048, J = 32 per truth.
    pub fn full(gguf: PathBuf) -> Self {
        Self {
            source: Source::Gguf(gguf),
            facts: 32,
            fillers: 88,
            seed: 0,
            epochs: 2,
            batch: 8,
            lr: 3e-4,
            train_embedding: false,
            k: 2048,
            chunk: 8,
            subsets: 32,
            leave_out: 0.01,
            cache: None,
            verbose: true,
        }
    }

    /// The tiny random model trained from scratch on 6 facts and 14 fillers (35
    /// documents): 12 epochs, k = 256, J = 8, leaving out 5 %: seconds.
    pub fn quick() -> Self {
        Self {
            source: Source::Tiny,
            facts: 6,
            fillers: 14,
            epochs: 12,
            lr: 3e-3,
            train_embedding: true,
            k: 256,
            subsets: 8,
            leave_out: 0.05,
            ..Self::full(PathBuf::new())
        }
    }

    fn log(&self, msg: impl AsRef<str>) {
        if self.verbose {
            eprintln!("[smollm_lds] {}", msg.as_ref());
        }
    }

    /// The fine-tuning of every run, with data-order seed `seed`.
    fn fine_tune(&self, seed: u64) -> FineTune {
        let sizes = (self.epochs, self.batch);
        super::smollm_facts::recipe(sizes, self.lr, seed, self.train_embedding)
    }

    /// What a cached retraining must have been run with (not J: retraining j's set depends
    /// only on the seed and j, so a run with more retrainings reuses a smaller one's).
    fn cache_key(&self, docs: &[TokenSeq]) -> String {
        let tokens: usize = docs.iter().map(|d| d.tokens.len()).sum();
        format!(
            "{:?} facts={} fillers={} seed={} epochs={} batch={} lr={} embedding={} leave={} docs={} tokens={tokens}",
            self.source,
            self.facts,
            self.fillers,
            self.seed,
            self.epochs,
            self.batch,
            self.lr,
            self.train_embedding,
            self.leave_out,
            docs.len()
        )
    }
}

/// The two kinds of target.
pub const TARGETS: [&str; 2] = ["queries", "held-out"];

/// One cell of the table: a method's LDS under one truth on one kind of target.
#[derive(Debug, Clone)]
pub struct Cell {
    /// `leave-1%` (or the fraction run) or `half`.
    pub truth: String,
    /// `queries` or `held-out`.
    pub target: &'static str,
    /// The method.
    pub method: String,
    /// Mean Spearman correlation over the targets (an undefined one, where the method's
    /// prediction is constant over the retrainings, counted as 0).
    pub lds: f64,
    /// Its standard error over the targets (sample standard deviation / √count).
    pub se: f64,
    /// Targets.
    pub targets: usize,
    /// Targets where the correlation is defined.
    pub defined: usize,
}

impl Cell {
    /// `LDS truth=… target=… method=… lds=… se=… targets=… defined=…`.
    pub fn line(&self) -> String {
        format!(
            "LDS truth={} target={} method={} lds={:.3} se={:.3} targets={} defined={}",
            self.truth, self.target, self.method, self.lds, self.se, self.targets, self.defined
        )
    }
}

/// What a run measured.
pub struct Output {
    /// Every cell.
    pub cells: Vec<Cell>,
    /// Documents, their predicted tokens, and the targets of each kind.
    pub docs: usize,
    /// Predicted tokens of the corpus.
    pub tokens: usize,
    /// Query and held-out targets.
    pub targets: (usize, usize),
    /// Mean target outputs (query log p, held-out mean token log p) before and after the
    /// attributed fine-tuning.
    pub outputs: ([f64; 2], [f64; 2]),
    /// Spread of each kind's outputs over each truth's retrainings (mean over targets of the
    /// standard deviation over retrainings): `[truth][kind]`.
    pub spread: [[f64; 2]; 2],
    /// Seconds per phase: base fine-tuning, attribution, leave-out truth, half truth.
    pub seconds: [f64; 4],
}

/// The targets: queries (prompt → completion) then held-out restatements (documents).
struct Targets {
    seqs: Vec<TokenSeq>,
    texts: Vec<String>,
    queries: usize,
}

impl Targets {
    /// Each target's output under `lm`: log p(completion | prompt) for a query, mean log p
    /// per predicted token for a held-out document.
    fn outputs(&self, lm: &Llama) -> Result<Vec<f32>> {
        let logp = lm::log_probs(lm, &self.seqs, 64)?;
        Ok(logp
            .iter()
            .zip(&self.seqs)
            .enumerate()
            .map(|(i, (&l, s))| match i < self.queries {
                true => l,
                false => l / (s.tokens.len() - 1) as f32,
            })
            .collect())
    }

    /// The column range of kind `k` (0 queries, 1 held-out).
    fn columns(&self, k: usize) -> std::ops::Range<usize> {
        match k {
            0 => 0..self.queries,
            _ => self.queries..self.seqs.len(),
        }
    }
}

/// The corpus' documents and the targets as token sequences.
fn sequences(cfg: &Config) -> Result<(Pretrained, Vec<String>, Vec<TokenSeq>, Targets)> {
    let corpus = english_facts::generate(cfg.facts, cfg.fillers, cfg.seed);
    let held_out = english_facts::restatements(&corpus);
    let mut others = corpus.query_texts();
    others.extend(held_out.iter().cloned());
    let pre = Pretrained::open(&cfg.source, cfg.seed, (&corpus.docs, &others))?;
    let docs = corpus
        .docs
        .iter()
        .map(|d| TokenSeq::document(pre.tokens.with_bos(d)))
        .collect();
    let mut seqs: Vec<TokenSeq> = corpus
        .facts
        .iter()
        .map(|f| {
            TokenSeq::completion(
                &pre.tokens.with_bos(&f.prompt),
                &pre.tokens.encode(&f.completion),
            )
        })
        .collect();
    seqs.extend(
        held_out
            .iter()
            .map(|h| TokenSeq::document(pre.tokens.with_bos(h))),
    );
    let targets = Targets {
        seqs,
        texts: others,
        queries: corpus.facts.len(),
    };
    Ok((pre, corpus.docs, docs, targets))
}

/// The attributed fine-tuning: the checkpoint after every epoch, and the Adafactor-factored
/// second moments of the optimiser at each (TrackStar's preconditioner).
fn base_run(
    cfg: &Config,
    pre: &Pretrained,
    docs: &[TokenSeq],
    names: &[String],
) -> Result<(Vec<LlamaCheckpoint>, Vec<Vec<Scales>>)> {
    let (mut kept, mut scales) = (Vec::new(), Vec::new());
    let last = cfg.fine_tune(cfg.seed).run(&pre.ckpt, docs, None, |e| {
        cfg.log(format!(
            "epoch {}: mean loss {:.3} ({:.0} s)",
            e.index, e.mean_loss, e.elapsed
        ));
        scales.push(scales_of(e.optimizer, e.checkpoint, names)?);
        if e.index < cfg.epochs {
            kept.push(e.checkpoint.snapshot()?);
        }
        Ok(())
    })?;
    kept.push(last);
    Ok((kept, scales))
}

/// Every method's scores (documents × targets), by name.
type Methods = Vec<(String, Array2<f32>)>;

/// The ridge constants c of λ = c · mean ‖φ‖² scored besides the default (c = 2).
const RIDGES: [f64; 4] = [0.1, 0.5, 8.0, 32.0];

/// Features of the documents and the targets at every checkpoint (`models[m]` is
/// checkpoint m).
fn featurise<M: Model<Example = TokenSeq>>(
    cfg: &Config,
    trak: &Trak,
    models: &[M],
    docs: &[TokenSeq],
    targets: &Targets,
) -> Result<(TrainFeatures, Vec<Array2<f32>>)> {
    let mut feats = trak.featurizer();
    let mut psis = Vec::new();
    for (m, model) in (0u64..).zip(models) {
        let t0 = Instant::now();
        feats.featurize(m, model, docs)?;
        psis.push(trak.features(m, model, &targets.seqs)?);
        cfg.log(format!(
            "checkpoint {m} featurised in {:.1} s",
            t0.elapsed().as_secs_f64()
        ));
    }
    Ok((feats, psis))
}

/// TRAK on `feats`: `{name}-ensemble` (every checkpoint), `{name}-last` (the last alone),
/// and the ensemble under the other ridge constants (`{name}-ensemble:c=…`).
fn trak_rows(name: &str, feats: &TrainFeatures, psis: &[Array2<f32>]) -> Result<Methods> {
    let all: Vec<(u64, ArrayView2<'_, f32>)> =
        (0u64..).zip(psis.iter().map(|p| p.view())).collect();
    let index = feats.finalize()?;
    let mut out = vec![
        (
            format!("{name}-ensemble"),
            index.score_features(&all)?.into_inner(),
        ),
        (
            format!("{name}-last"),
            index.score_features(&all[all.len() - 1..])?.into_inner(),
        ),
    ];
    for c in RIDGES {
        let index = feats.with_ridge(Ridge::MeanSquaredNorm(c))?.finalize()?;
        let s = index.score_features(&all)?.into_inner();
        out.push((format!("{name}-ensemble:c={c}"), s));
    }
    for c in SPARSE {
        let s = soft_threshold(&out[0].1, c);
        out.push((format!("{name}-ensemble:sparse={c}"), s));
    }
    Ok(out)
}

/// The thresholds of [`soft_threshold`] scored, in robust standard deviations.
const SPARSE: [f64; 3] = [1.0, 2.0, 4.0];

/// TRAK's sparsification step (Park et al. 2023, §3: soft-thresholding), per target with a
/// threshold set from the target's own scores: τ ↦ sign(τ)·max(|τ| − t, 0) with
/// t = `c` · 1.4826 · MAD (the median absolute deviation from the median, a robust standard
/// deviation), so that only scores standing out from the bulk survive.
fn soft_threshold(scores: &Array2<f32>, c: f64) -> Array2<f32> {
    let mut out = scores.clone();
    for mut col in out.axis_iter_mut(Axis(1)) {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            let n = v.len();
            (v[(n - 1) / 2] + v[n / 2]) / 2.0
        };
        let m = median(col.iter().map(|&x| x as f64).collect());
        let mad = median(col.iter().map(|&x| (x as f64 - m).abs()).collect());
        let t = c * 1.4826 * mad;
        col.mapv_inplace(|x| (x.signum() as f64 * (x.abs() as f64 - t).max(0.0)) as f32);
    }
    out
}

/// Inner products (`{dot}`) and cosines (`{cos}`) of the last checkpoint's features.
fn similarities(
    (dot, cos): (&str, &str),
    feats: &TrainFeatures,
    psis: &[Array2<f32>],
) -> Result<Methods> {
    let m = psis.len() as u64 - 1;
    let phi = feats.features(m).ok_or(Error::UnknownCheckpoint(m))?;
    let psi = psis[m as usize].view();
    Ok(vec![
        (dot.into(), grad_dot(&[phi], &[psi], false)?.into_inner()),
        (cos.into(), grad_dot(&[phi], &[psi], true)?.into_inner()),
    ])
}

/// The attribution, on the gradients of every block linear at every epoch's checkpoint:
/// TRAK (ensemble, last, other ridges), grad-dot and grad-cos (last checkpoint); the same on
/// the gradients preconditioned by the optimiser's second moments at each checkpoint
/// (`trak-adam-…`; `trackstar` is their cosine at the last checkpoint, `trackstar-dot` their
/// inner product); BM25 and random.
fn attribute(
    cfg: &Config,
    lms: &[Llama],
    (docs, texts): (&[TokenSeq], &[String]),
    targets: &Targets,
    (names, scales): (&[String], Vec<Vec<Scales>>),
) -> Result<Methods> {
    let trak = Trak::builder()
        .proj_dim(cfg.k)
        .projector(ProjectorKind::FACTORED)
        .batch_size(cfg.chunk)
        .seed(cfg.seed)
        .build()?;
    let probe: Vec<TokenSeq> = docs.iter().chain(&targets.seqs).cloned().collect();
    let models = lms
        .iter()
        .map(|lm| NativeLlama::new(lm, names, &probe))
        .collect::<Result<Vec<_>>>()?;
    let (feats, psis) = featurise(cfg, &trak, &models, docs, targets)?;
    let mut out = trak_rows("trak", &feats, &psis)?;
    out.extend(similarities(("grad-dot", "grad-cos"), &feats, &psis)?);
    let adam = models
        .iter()
        .zip(scales)
        .map(|(m, s)| Preconditioned::new(m, s))
        .collect::<Result<Vec<_>>>()?;
    let (feats, psis) = featurise(cfg, &trak, &adam, docs, targets)?;
    out.extend(trak_rows("trak-adam", &feats, &psis)?);
    out.extend(similarities(("trackstar-dot", "trackstar"), &feats, &psis)?);
    out.push(("bm25".into(), bm25_matrix(texts, &targets.texts)));
    let random = random_scores(docs.len(), targets.seqs.len(), cfg.seed);
    out.push(("random".into(), random.into_inner()));
    Ok(out)
}

/// One truth: J retrainings' target outputs (J × targets).
struct Truth {
    name: String,
    outputs: Array2<f32>,
    /// Leave-out sets, or `None` for subsets (then `masks` holds them).
    drops: Option<DropSets>,
    masks: Array2<bool>,
}

impl Truth {
    fn lds(&self, scores: ArrayView2<'_, f32>, outputs: ArrayView2<'_, f32>) -> Result<Lds> {
        match &self.drops {
            Some(d) => d.lds(scores, outputs),
            None => lds(self.masks.view(), scores, outputs),
        }
    }
}

/// A retraining's outputs from the cache, if it holds them under the same key.
fn cached(cfg: &Config, key: &str, file: &str) -> Option<Vec<f32>> {
    let text = std::fs::read_to_string(cfg.cache.as_ref()?.join(file)).ok()?;
    let (k, values) = text.split_once('\n')?;
    (k == key).then(|| values.split_whitespace().map(|v| v.parse().ok()).collect())?
}

/// Stores a retraining's outputs in the cache (if any).
fn store(cfg: &Config, key: &str, file: &str, values: &[f32]) -> Result<()> {
    let Some(dir) = &cfg.cache else { return Ok(()) };
    let io = |source| Error::Io {
        path: dir.join(file),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let values: Vec<String> = values.iter().map(|v| format!("{v:e}")).collect();
    std::fs::write(dir.join(file), format!("{key}\n{}\n", values.join(" "))).map_err(io)
}

/// Retrains J times (`run(j)` gives run j's final checkpoint) and records the targets'
/// outputs, through the cache.
fn retrain(
    cfg: &Config,
    (name, key): (&str, &str),
    targets: &Targets,
    run: impl Fn(usize) -> Result<LlamaCheckpoint>,
) -> Result<Array2<f32>> {
    let mut out = Array2::zeros((cfg.subsets, targets.seqs.len()));
    for j in 0..cfg.subsets {
        let file = format!("{name}-{j}.txt");
        let t0 = Instant::now();
        let values = match cached(cfg, key, &file) {
            Some(v) if v.len() == targets.seqs.len() => v,
            _ => {
                let v = targets.outputs(&run(j)?.model()?)?;
                store(cfg, key, &file, &v)?;
                v
            }
        };
        out.row_mut(j).assign(&ndarray::Array1::from(values));
        cfg.log(format!(
            "{name} {}/{}: {:.0} s",
            j + 1,
            cfg.subsets,
            t0.elapsed().as_secs_f64()
        ));
    }
    Ok(out)
}

/// The two truths: leave-out (same seed, the dropped documents weighted 0) and half subsets
/// (each retrained on its documents alone, with data-order seed `seed + 1 + j`).
fn truths(
    cfg: &Config,
    pre: &Pretrained,
    docs: &[TokenSeq],
    targets: &Targets,
) -> Result<(Truth, Truth, [f64; 2])> {
    let key = cfg.cache_key(docs);
    let n = docs.len();
    let t0 = Instant::now();
    let drops = DropSets::new(n, cfg.leave_out, cfg.subsets, cfg.seed ^ 0x1ea7e)?;
    let leave = retrain(cfg, ("leave", &key), targets, |j| {
        cfg.fine_tune(cfg.seed)
            .run(&pre.ckpt, docs, Some(&drops.weights(j)), |_| Ok(()))
    })?;
    let leave_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let masks = subset_masks(n, 0.5, cfg.subsets, cfg.seed ^ 0x4a1f)?;
    let half = retrain(cfg, ("half", &key), targets, |j| {
        let kept: Vec<TokenSeq> = (0..n)
            .filter(|&i| masks[(j, i)])
            .map(|i| docs[i].clone())
            .collect();
        cfg.fine_tune(cfg.seed + 1 + j as u64)
            .run(&pre.ckpt, &kept, None, |_| Ok(()))
    })?;
    let pct = (cfg.leave_out * 1000.0).round() / 10.0;
    let leave = Truth {
        name: format!("leave-{pct}%"),
        outputs: leave,
        masks: drops.mask().mapv(|d| !d),
        drops: Some(drops),
    };
    let half = Truth {
        name: "half".into(),
        outputs: half,
        drops: None,
        masks,
    };
    Ok((leave, half, [leave_s, t0.elapsed().as_secs_f64()]))
}

/// Mean over targets of the standard deviation of their outputs over the retrainings.
fn spread(outputs: ArrayView2<'_, f32>) -> f64 {
    let sd = |c: ndarray::ArrayView1<'_, f32>| {
        let n = c.len() as f64;
        let m = c.iter().map(|&v| v as f64).sum::<f64>() / n;
        (c.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    };
    let cols = outputs.axis_iter(Axis(1)).map(sd).collect::<Vec<_>>();
    cols.iter().sum::<f64>() / cols.len().max(1) as f64
}

/// The cells of one truth.
fn cells(truth: &Truth, targets: &Targets, methods: &Methods) -> Result<Vec<Cell>> {
    let mut out = Vec::new();
    for (k, kind) in TARGETS.iter().enumerate() {
        let cols = targets.columns(k);
        let outputs = truth.outputs.slice(s![.., cols.clone()]);
        for (method, scores) in methods {
            let per_target = match truth.lds(scores.slice(s![.., cols.clone()]), outputs) {
                Ok(l) => l.per_target,
                Err(Error::LdsUndefined) => vec![None; cols.len()],
                Err(e) => return Err(e),
            };
            let (lds, se) = mean_and_se(&per_target);
            out.push(Cell {
                truth: truth.name.clone(),
                target: kind,
                method: method.clone(),
                lds,
                se,
                targets: per_target.len(),
                defined: per_target.iter().flatten().count(),
            });
        }
    }
    Ok(out)
}

/// Mean and standard error over every target, a target whose correlation is undefined (a
/// constant prediction: a sparse method that gives it no score) counted as 0.
fn mean_and_se(per_target: &[Option<f64>]) -> (f64, f64) {
    let v: Vec<f64> = per_target.iter().map(|x| x.unwrap_or(0.0)).collect();
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, (var / n).sqrt())
}

/// Mean of each kind's outputs.
fn means(targets: &Targets, v: &[f32]) -> [f64; 2] {
    [0, 1].map(|k| {
        let c = &v[targets.columns(k)];
        c.iter().map(|&x| x as f64).sum::<f64>() / c.len().max(1) as f64
    })
}

/// Runs the protocol.
pub fn run(cfg: &Config) -> Result<Output> {
    let (pre, texts, docs, targets) = sequences(cfg)?;
    let tokens: usize = docs.iter().map(|d| d.tokens.len() - 1).sum();
    cfg.log(format!(
        "{} documents ({tokens} predicted tokens), {} query and {} held-out targets",
        docs.len(),
        targets.queries,
        targets.seqs.len() - targets.queries
    ));
    let names = LayerSet::All.names(pre.ckpt.config());
    let before = targets.outputs(&pre.ckpt.model()?)?;
    let t0 = Instant::now();
    let (kept, scales) = base_run(cfg, &pre, &docs, &names)?;
    let base_s = t0.elapsed().as_secs_f64();
    let lms = kept.iter().map(|c| c.model()).collect::<Result<Vec<_>>>()?;
    let after = targets.outputs(lms.last().expect("a checkpoint"))?;
    let t0 = Instant::now();
    let methods = attribute(cfg, &lms, (&docs, &texts), &targets, (&names, scales))?;
    let attribution_s = t0.elapsed().as_secs_f64();
    drop(lms);
    drop(kept);
    let (leave, half, [leave_s, half_s]) = truths(cfg, &pre, &docs, &targets)?;
    let mut out = cells(&leave, &targets, &methods)?;
    out.extend(cells(&half, &targets, &methods)?);
    let sp = |t: &Truth| [0, 1].map(|k| spread(t.outputs.slice(s![.., targets.columns(k)])));
    Ok(Output {
        cells: out,
        docs: docs.len(),
        tokens,
        targets: (targets.queries, targets.seqs.len() - targets.queries),
        outputs: (means(&targets, &before), means(&targets, &after)),
        spread: [sp(&leave), sp(&half)],
        seconds: [base_s, attribution_s, leave_s, half_s],
    })
}
