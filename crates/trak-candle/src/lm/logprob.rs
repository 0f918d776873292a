//! The objective of every LM step, in one place: Σ log p of a sequence's counted tokens.
//!
//! For a prompt and completion it is log p(completion | prompt); for a document, its
//! log-probability, and the fine-tuning loss is the mean token loss, −Σ log p / counted
//! tokens. Which tokens count and what each position predicts is
//! [`TokenSeq::next_tokens`], which attribution's [`crate::SequenceObjective`] reads too, so
//! fine-tuning ([`super::FineTune`]), evaluation ([`log_probs`]) and attribution share one
//! definition (a test checks that [`sequence_log_probs`] equals the objective's f).
//!
//! A batch is padded only to its longest sequence (with token 0, which is never counted: the
//! mask is causal, so padding cannot change a real position).

use candle::{D, DType, Tensor};

use crate::collate::Collate;
use crate::error::CandleContext;
use crate::models::llama::Llama;
use crate::network::Network;
use crate::recorder::Recorder;
use crate::sequence::{TokenCollate, TokenSeq};

/// Σ log p of each sequence's counted tokens (`B` values), attached to the autograd graph of
/// the network's variables (differentiate it to train).
pub fn sequence_log_probs(lm: &Llama, batch: &[TokenSeq]) -> candle::Result<Tensor> {
    let context = batch
        .iter()
        .map(|s| s.tokens.len().saturating_sub(1))
        .max()
        .unwrap_or(1)
        .max(1);
    let device = lm.device();
    let collate = TokenCollate { context, pad: 0 };
    let x = collate.inputs(batch, device)?;
    let logits = lm.forward(&x, &mut Recorder::training())?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let (mut next, mut weight) = (Vec::new(), Vec::new());
    for s in batch {
        let (n, counted) = s.next_tokens(context).map_err(candle::Error::Msg)?;
        next.extend(n);
        weight.extend(counted.into_iter().map(|c| c as u8 as f32));
    }
    let next = Tensor::from_vec(next, (batch.len(), context, 1), device)?;
    let weight = Tensor::from_vec(weight, (batch.len(), context), device)?;
    (logp.gather(&next, 2)?.squeeze(2)? * weight)?.sum(1)
}

/// log p of each sequence's counted tokens (f of attribution, the negative of a document's
/// summed loss), `batch` sequences per forward pass, in order.
pub fn log_probs(lm: &Llama, seqs: &[TokenSeq], batch: usize) -> trak::Result<Vec<f32>> {
    let mut out = Vec::with_capacity(seqs.len());
    for chunk in seqs.chunks(batch.max(1)) {
        let v = sequence_log_probs(lm, chunk)
            .and_then(|t| t.detach().to_dtype(DType::F32)?.to_vec1::<f32>())
            .ctx("the log-probabilities of a batch")?;
        out.extend(v);
    }
    Ok(out)
}

/// The tokens of each sequence that count (its completion, or all but the start token).
pub fn counted(seq: &TokenSeq) -> usize {
    seq.tokens.len().saturating_sub(seq.prompt_len.max(1))
}
