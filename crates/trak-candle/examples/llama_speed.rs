//! How fast a Llama-family model featurises, against the machine's own GEMM bound measured in
//! the same run: `cargo run --release -p trak-candle --example llama_speed -- --gguf PATH`
//! (`scripts/fetch-smollm2.sh` prints SmolLM2-135M's path), or `-- --quick` on a tiny random
//! Llama (a test runs it).
//!
//! Documents of mixed lengths (log-uniform, 16 to 512 tokens by default; `--docs N`,
//! `--min L`, `--max L`, `--seed S`; `--chunk C` sequences per batch, default 2, and
//! `--memory-limit-mb M` for the featurisation plan, default 2048, as `trak-lm`) go through
//! featurisation (the native pass, `NativeLlama`, and the factored projector at k = 2048
//! over every block linear), candle's own forward + backward pass, and one epoch of
//! fine-tuning (its gradients by the native pass). `--candle` also runs both through candle
//! (`featurize_candle`, `finetune_candle`) and prints the features' `AGREEMENT`;
//! `--featurize-only` skips everything after featurisation. Prints
//!
//! ```text
//! DOCS count=… tokens=… shortest=… longest=…
//! GEMM candle_gflops=… faer_gflops=…
//! SPEED what=featurize tokens_per_s=T gemm_gflops=G flops_per_token=F bound_tokens_per_s=B ratio=T/B
//! SPEED what=forward_backward …
//! SPEED what=finetune …
//! FEATURES xxh3=…            (the native features' bits: the same for any thread count or --chunk)
//! MEMORY peak_rss_mb=… after_featurize_mb=…
//! ```
//!
//! G is f32 GEMM at the model's shapes (the faster of candle's and faer's), F the flops a
//! predicted token needs (the module docs of `support/llama_speed.rs` give the formula).

#[path = "support/llama_speed.rs"]
mod llama_speed;

use std::path::PathBuf;

fn value(args: &[String], name: &str) -> Option<String> {
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mut cfg = match (args.iter().any(|a| a == "--quick"), value(&args, "--gguf")) {
        (true, _) => llama_speed::Config::quick(),
        (false, Some(p)) => llama_speed::Config::full(PathBuf::from(p)),
        (false, None) => {
            return Err(
                "usage: llama_speed --gguf PATH | --quick (scripts/fetch-smollm2.sh)".into(),
            );
        }
    };
    let num = |name: &str| value(&args, name).map(|v| v.parse::<usize>());
    if let Some(v) = num("--docs") {
        cfg.docs = v?;
    }
    if let Some(v) = num("--min") {
        cfg.lengths.0 = v?;
    }
    if let Some(v) = num("--max") {
        cfg.lengths.1 = v?;
    }
    if let Some(v) = value(&args, "--seed") {
        cfg.seed = v.parse()?;
    }
    if let Some(v) = num("--chunk") {
        cfg.chunk = v?;
    }
    if let Some(v) = num("--memory-limit-mb") {
        cfg.memory_limit = v? << 20;
    }
    if args.iter().any(|a| a == "--candle") {
        cfg.candle = true;
    }
    cfg.featurize_only = args.iter().any(|a| a == "--featurize-only");
    if cfg.docs == 0 || cfg.lengths.0 < 2 || cfg.lengths.1 < cfg.lengths.0 {
        return Err("need --docs ≥ 1 and 2 ≤ --min ≤ --max".into());
    }
    for line in llama_speed::run(&cfg)?.lines() {
        println!("{line}");
    }
    Ok(())
}
