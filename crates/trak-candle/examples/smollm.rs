//! A sanity check that a real pretrained model goes through the port: SmolLM2-135M-Instruct
//! from its GGUF file (`scripts/fetch-smollm2.sh` prints the path), its perplexity on a short
//! held-out text and a greedy completion of a prompt.
//!
//! `cargo run --release -p trak-candle --example smollm -- --gguf PATH`
//!
//! Prints `SMOLLM params=… layers=… perplexity=… tokens=…` and `SMOLLM prompt=… completion=…`.
//!
//! With `--throughput`, also featurises 32-token documents cut from a generated text with the
//! factored, sparse and dense projectors and prints `THROUGHPUT projector=… k=… docs=…
//! tokens_per_s=… fwd_bwd_tokens_per_s=… ratio=…` (the model's own batched forward + backward
//! on the same documents, measured in the same run, is the limit) and `PEAK_RSS_MB=…`;
//! `--only factored|sparse|dense` runs one projector (for a profile, or its own peak RSS).

#[path = "support/llama_throughput.rs"]
mod llama_throughput;

use std::path::PathBuf;
use std::time::Instant;

use candle::{D, Device, IndexOp, Tensor};
use trak::ProjectorKind;
use trak_candle::models::llama::{LlamaCheckpoint, gguf_tokenizer};
use trak_candle::{Network, Recorder, TokenSeq};

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

    let ids = tok
        .encode(PROMPT, false)
        .map_err(|e| e.to_string())?
        .get_ids()
        .to_vec();
    let out = trak_candle::lm::greedy(&lm, &ids, 12, None)?;
    let completion = tok.decode(&out, true).map_err(|e| e.to_string())?;
    println!("SMOLLM prompt={PROMPT:?} completion={completion:?}");
    if args.iter().any(|a| a == "--throughput") {
        throughput(&lm, &tok)?;
    }
    Ok(())
}

/// 32-token documents cut from the text repeated with numbered sentences.
fn documents(
    tok: &tokenizers::Tokenizer,
    n: usize,
) -> Result<Vec<TokenSeq>, Box<dyn std::error::Error>> {
    let text: String = (0..n * 4).map(|i| format!("Note {i}: {TEXT} ")).collect();
    let ids = tok
        .encode(text, false)
        .map_err(|e| e.to_string())?
        .get_ids()
        .to_vec();
    Ok(ids
        .chunks_exact(32)
        .take(n)
        .map(|c| TokenSeq::document(c.to_vec()))
        .collect())
}

fn throughput(
    lm: &trak_candle::models::llama::Llama,
    tok: &tokenizers::Tokenizer,
) -> Result<(), Box<dyn std::error::Error>> {
    let docs = documents(tok, 32)?;
    let limit = llama_throughput::fwd_bwd_tokens_per_s(lm, &docs, 8, 31)?;
    eprintln!(
        "peak RSS after the forward + backward passes: {:.0} MB",
        trak_demo::metagrad::peak_rss_mb()
    );
    let runs = [
        (ProjectorKind::FACTORED, 2048, 32),
        (ProjectorKind::Sparse { s: 1 }, 2048, 8),
        (ProjectorKind::Rademacher, 512, 2),
    ];
    let only = std::env::args().skip_while(|a| a != "--only").nth(1);
    let wanted = |kind: &ProjectorKind| match only.as_deref() {
        None => true,
        Some("factored") => matches!(kind, ProjectorKind::Factored { .. }),
        Some("sparse") => matches!(kind, ProjectorKind::Sparse { .. }),
        Some(_) => matches!(kind, ProjectorKind::Rademacher),
    };
    for (kind, k, n) in runs.into_iter().filter(|r| wanted(&r.0)) {
        let r =
            llama_throughput::featurize_tokens_per_s(lm, &docs[..n], (kind, k), (8, 8.min(n), 31))?;
        println!(
            "THROUGHPUT projector={} k={} docs={} tokens_per_s={:.1} fwd_bwd_tokens_per_s={limit:.1} ratio={:.3}",
            r.projector.replace(' ', ""),
            r.k,
            r.docs,
            r.tokens_per_s,
            r.tokens_per_s / limit
        );
    }
    println!("PEAK_RSS_MB={:.0}", trak_demo::metagrad::peak_rss_mb());
    Ok(())
}
