//! Featurisation throughput of a Llama-family model through the adapter, per projector,
//! against the model's own batched forward + backward pass on the same documents, in the same
//! run (the limit featurisation cannot beat: it needs that pass, then the factors and the
//! projection).

// Shared by `smollm` and `smollm_facts`; not each reads every field.
#![allow(dead_code)]

use std::time::Instant;

use candle::{D, Device, IndexOp, Tensor};
use trak::{ProjectorKind, Trak};
use trak_candle::models::llama::Llama;
use trak_candle::{
    CandleContext, CandleModel, Network, Recorder, SequenceObjective, TokenCollate, TokenSeq,
};

/// One projector's figures.
pub struct Row {
    /// The projector, as printed.
    pub projector: String,
    /// Feature dimension.
    pub k: usize,
    /// Documents featurised.
    pub docs: usize,
    /// Real (unpadded) predicted tokens per second of featurisation.
    pub tokens_per_s: f64,
}

/// Predicted tokens of a set of documents (every position but the last of each).
fn tokens(docs: &[TokenSeq]) -> usize {
    docs.iter().map(|d| d.tokens.len() - 1).sum()
}

/// The model's own forward + backward (loss = Σ log p of the documents, every weight a
/// variable), in batches of `batch`: predicted tokens per second, best of 2.
pub fn fwd_bwd_tokens_per_s(
    lm: &Llama,
    docs: &[TokenSeq],
    batch: usize,
    context: usize,
) -> trak::Result<f64> {
    let collate = TokenCollate { context, pad: 0 };
    let mut best = f64::INFINITY;
    for _ in 0..2 {
        let t = Instant::now();
        for chunk in docs.chunks(batch) {
            let x = trak_candle::Collate::inputs(&collate, chunk, &Device::Cpu).ctx("collating")?;
            let logp = candle_nn::ops::log_softmax(
                &lm.forward(&x, &mut Recorder::training()).ctx("forward")?,
                D::Minus1,
            )
            .ctx("log-softmax")?;
            let mut loss = Tensor::zeros((), candle::DType::F32, &Device::Cpu).ctx("loss")?;
            for (b, d) in chunk.iter().enumerate() {
                let next: Vec<u32> = d.tokens[1..].to_vec();
                let idx = Tensor::new(next.as_slice(), &Device::Cpu)
                    .ctx("targets")?
                    .unsqueeze(1)
                    .ctx("targets")?;
                let rows = logp.i((b, 0..next.len())).ctx("rows")?;
                loss = (loss + rows.gather(&idx, 1).ctx("gather")?.sum_all().ctx("sum")?)
                    .ctx("add")?;
            }
            loss.backward().ctx("backward")?;
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(tokens(docs) as f64 / best)
}

/// Featurises `docs` with `kind` at `k` (adapter chunks of `chunk` documents, pipeline batch
/// `batch`): predicted tokens per second.
pub fn featurize_tokens_per_s(
    lm: &Llama,
    docs: &[TokenSeq],
    (kind, k): (ProjectorKind, usize),
    (chunk, batch, context): (usize, usize, usize),
) -> trak::Result<Row> {
    let vocab = lm.config().vocab_size;
    let model = CandleModel::builder(
        lm,
        TokenCollate { context, pad: 0 },
        SequenceObjective::new(vocab),
    )
    .chunk_rows(chunk)
    .gradient_check(false)
    .build(&docs[..1])?;
    let trak = Trak::builder()
        .proj_dim(k)
        .projector(kind)
        .batch_size(batch)
        .build()?;
    let t = Instant::now();
    let mut f = trak.featurizer();
    f.featurize(0, &model, docs)?;
    let secs = t.elapsed().as_secs_f64();
    Ok(Row {
        projector: format!("{kind:?}"),
        k,
        docs: docs.len(),
        tokens_per_s: tokens(docs) as f64 / secs,
    })
}
