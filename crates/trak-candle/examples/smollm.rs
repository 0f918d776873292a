//! A sanity check that a real pretrained model goes through the port: SmolLM2-135M-Instruct
//! from its GGUF file (`scripts/fetch-smollm2.sh` prints the path), its perplexity on a short
//! held-out text and a greedy completion of a prompt.
//!
//! `cargo run --release -p trak-candle --example smollm -- --gguf PATH`
//!
//! Prints `SMOLLM params=… layers=… perplexity=… tokens=…` and `SMOLLM prompt=… completion=…`.

use std::path::PathBuf;
use std::time::Instant;

use candle::{D, Device, IndexOp, Tensor};
use trak_candle::models::llama::{LlamaCheckpoint, gguf_tokenizer};
use trak_candle::{Network, Recorder};

/// Held-out text (written for this check, so in no training set).
const TEXT: &str = "The little harbour town wakes early. Before the sun is up, the fishing \
    boats come back with the night's catch, and the market on the quay fills with people \
    buying bread, fish and coffee. By noon the streets are quiet again.";
const PROMPT: &str = "The capital of France is";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .windows(2)
        .find(|w| w[0] == "--gguf")
        .map(|w| PathBuf::from(&w[1]))
        .ok_or("usage: smollm --gguf PATH (scripts/fetch-smollm2.sh prints one)")?;
    let t = Instant::now();
    let ckpt = LlamaCheckpoint::from_gguf(&path, &Device::Cpu)?;
    let tok = gguf_tokenizer(&path)?;
    let lm = ckpt.model()?;
    let params: usize = ckpt.vars().iter().map(|(_, v)| v.elem_count()).sum();
    eprintln!(
        "loaded in {:.1} s: {:?}",
        t.elapsed().as_secs_f64(),
        ckpt.config()
    );

    let ids = tok
        .encode(TEXT, false)
        .map_err(|e| e.to_string())?
        .get_ids()
        .to_vec();
    let x = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let logp = candle_nn::ops::log_softmax(&lm.forward(&x, &mut Recorder::training())?, D::Minus1)?;
    let mut nll = 0f64;
    for (t, &next) in ids.iter().enumerate().skip(1) {
        nll -= logp.i((0, t - 1, next as usize))?.to_scalar::<f32>()? as f64;
    }
    let ppl = (nll / (ids.len() - 1) as f64).exp();
    println!(
        "SMOLLM params={params} layers={} perplexity={ppl:.2} tokens={}",
        ckpt.config().num_hidden_layers,
        ids.len()
    );

    let mut ids = tok
        .encode(PROMPT, false)
        .map_err(|e| e.to_string())?
        .get_ids()
        .to_vec();
    let n = ids.len();
    for _ in 0..12 {
        let x = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let logits = lm.forward(&x, &mut Recorder::training())?;
        let last = logits.i((0, ids.len() - 1))?;
        ids.push(last.argmax(D::Minus1)?.to_scalar::<u32>()?);
    }
    let completion = tok.decode(&ids[n..], true).map_err(|e| e.to_string())?;
    println!("SMOLLM prompt={PROMPT:?} completion={completion:?}");
    Ok(())
}
