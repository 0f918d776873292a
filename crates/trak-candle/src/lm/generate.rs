//! Greedy decoding, for sanity checks (a README's completion, a fine-tuned model's answer).

use candle::{IndexOp, Tensor};

use crate::error::CandleContext;
use crate::models::llama::Llama;
use crate::network::Network;
use crate::recorder::Recorder;

/// The `max_new` most likely next tokens after `prompt`, one at a time (each step runs the
/// whole sequence again: no cache), stopping after `stop` if it comes. The context is
/// limited by the model's `max_position_embeddings`.
pub fn greedy(
    lm: &Llama,
    prompt: &[u32],
    max_new: usize,
    stop: Option<u32>,
) -> trak::Result<Vec<u32>> {
    let mut ids = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..max_new {
        let next = next_token(lm, &ids).ctx("a greedy decoding step")?;
        out.push(next);
        ids.push(next);
        if Some(next) == stop {
            break;
        }
    }
    Ok(out)
}

fn next_token(lm: &Llama, ids: &[u32]) -> candle::Result<u32> {
    let x = Tensor::new(ids, lm.device())?.unsqueeze(0)?;
    let logits = lm.forward(&x, &mut Recorder::training())?;
    logits.i((0, ids.len() - 1))?.argmax(0)?.to_scalar::<u32>()
}
