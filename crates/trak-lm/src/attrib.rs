//! What `index`, `query` and `verify` share: the run's settings, its checkpoints as
//! attributable models, and the scores of a query set.

use std::path::Path;

use trak_candle::TokenSeq;
use trak_candle::candle::Device;
use trak_candle::lm::{self, LayerSet, LmTokenizer};
use trak_candle::models::llama::{Llama, LlamaCheckpoint, NativeLlama};
use trak_candle::trak::ndarray::{Array2, ArrayView2};
use trak_candle::trak::store::{Run, ScoreOptions};
use trak_candle::trak::{self, ProjectorKind, Trak};

use crate::progress::Eta;
use crate::record::IndexRecord;

/// The featurisation plan's budget without `--memory-limit`: trak's buffers, the layer
/// factors and the native pass's working memory of the batches in flight (the weights come
/// on top). Without a budget of its own the plan takes a quarter of the machine's spare
/// memory, and fills it with batches in flight that two cores cannot run at once.
pub const DEFAULT_PLAN_BYTES: usize = 2 << 30;

/// Sequences per batch for query features (index's default).
pub const QUERY_CHUNK: usize = 2;

/// The run's TRAK settings: factored projector, k, seed, `chunk` sequences per
/// featurisation batch, and the plan's memory budget (`memory`, or [`DEFAULT_PLAN_BYTES`]).
pub fn trak_config(rec: &IndexRecord, memory: Option<usize>) -> trak::Result<Trak> {
    Trak::builder()
        .proj_dim(rec.k)
        .projector(ProjectorKind::FACTORED)
        .seed(rec.seed)
        .batch_size(rec.chunk)
        .memory_limit(memory.unwrap_or(DEFAULT_PLAN_BYTES))
        .build()
}

/// A checkpoint: a Hugging Face directory or a GGUF file.
pub fn load(path: &Path) -> trak::Result<LlamaCheckpoint> {
    lm::open_checkpoint(path, &Device::Cpu)
}

/// The tokenizer of the run (its first checkpoint's).
pub fn tokenizer(rec: &IndexRecord) -> trak::Result<LmTokenizer> {
    LmTokenizer::open(&rec.checkpoints[0])
}

/// Checkpoint `lm` made attributable on `seqs` under the run's settings, through the native
/// pass ([`NativeLlama`]): each sequence at its own length, so a long document costs no
/// short one anything, and a sequence's features do not depend on the others in its batch.
pub fn adapter<'a>(
    rec: &IndexRecord,
    lm: &'a Llama,
    seqs: &[TokenSeq],
) -> trak::Result<NativeLlama<'a>> {
    let layers: LayerSet = rec.layers.parse()?;
    NativeLlama::new(lm, &layers.names(lm.config()), seqs)
}

/// Features of `queries` at every checkpoint of the run.
pub fn query_features(
    rec: &IndexRecord,
    trak: &Trak,
    queries: &[TokenSeq],
    quiet: bool,
) -> trak::Result<Vec<Array2<f32>>> {
    let mut eta = Eta::new("query features", quiet);
    // No more sequences per batch than the default index's, whose working memory fits the
    // default budget whatever chunk the run was indexed with.
    let rec = IndexRecord {
        chunk: rec.chunk.min(QUERY_CHUNK).min(queries.len()).max(1),
        ..rec.clone()
    };
    let mut psis = Vec::new();
    for (m, path) in rec.checkpoints.iter().enumerate() {
        let t0 = std::time::Instant::now();
        let ckpt = load(path)?;
        let net = ckpt.model()?;
        let t1 = t0.elapsed().as_secs_f64();
        let model = adapter(&rec, &net, queries)?;
        let t2 = t0.elapsed().as_secs_f64();
        psis.push(trak.features(m as u64, &model, queries)?);
        let t3 = t0.elapsed().as_secs_f64();
        eta.note(format!(
            "checkpoint {}: loaded in {t1:.2} s, adapter built in {:.2} s, features in {:.2} s",
            m + 1,
            t2 - t1,
            t3 - t2
        ));
        eta.report(m + 1, rec.checkpoints.len(), "checkpoints");
    }
    Ok(psis)
}

/// Scores (documents × queries) of the query features, stored in the run as target set
/// `name` (scored again only where blocks are missing).
pub fn scores(run: &Run, name: &str, psis: &[Array2<f32>]) -> trak::Result<Array2<f32>> {
    let targets: Vec<(u64, ArrayView2<'_, f32>)> =
        (0u64..).zip(psis.iter().map(|p| p.view())).collect();
    run.score_features(name, &targets, ScoreOptions::default())?;
    Ok(run.load_scores(name)?.into_inner())
}

/// The target-set name of a query set: its tokens' hash.
pub fn target_name(queries: &[TokenSeq]) -> String {
    let mut bytes = Vec::new();
    for q in queries {
        bytes.extend((q.tokens.len() as u64).to_le_bytes());
        bytes.extend((q.prompt_len as u64).to_le_bytes());
        bytes.extend(q.tokens.iter().flat_map(|t| t.to_le_bytes()));
    }
    format!("q-{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes))
}

/// The `top` highest-scoring documents of query `q` (ties by document order).
pub fn top_docs(scores: &Array2<f32>, q: usize, top: usize) -> Vec<(usize, f32)> {
    let mut v: Vec<(usize, f32)> = scores.column(q).iter().copied().enumerate().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(top);
    v
}
