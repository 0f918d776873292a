//! Which training documents taught a real pretrained language model a fact? SmolLM2-135M
//! (from its GGUF file; `scripts/fetch-smollm2.sh` fetches it) is fine-tuned on a generated
//! English corpus with planted fictional facts, and each query's completion ("The hometown
//! of Velmor Orimund is" → " Brinmoor", phrased unlike the documents that state it) is
//! attributed to the training documents through `trak-candle` (factored projector,
//! sequence log-probability, the checkpoints after every epoch of the fine-tuning as TRAK's
//! ensemble), for every block linear, the MLPs only and the attention projections only.
//!
//! Prints, per method and layer set, how well it finds the documents that state the fact; the
//! counterfactual (fine-tuning again without the queries' top proponents, or as many random
//! documents); the top documents' scores split over their tokens; and featurisation
//! throughput against the model's own forward + backward:
//!
//! ```text
//! FACTS method=<trak|trak-last|grad-dot|grad-cos> layers=<all|mlp|attention> recall@1=… recall@10=… mrr=…
//! FACTS method=<random|bm25> recall@1=… recall@10=… mrr=…
//! RIDGE layers=all c=… recall@1=… recall@10=… mrr=…
//! REMOVAL kind=<top|random|top-unstated> k=… queries=… removed=… mean_delta_logp=…
//! INFLUENCE query="…" doc=… states=… split_error=… text="…[token|+23%]…"
//! THROUGHPUT projector=<factored|sparse|dense> k=… tokens_per_s=… fwd_bwd_tokens_per_s=… ratio=…
//! CHECKPOINTS epochs=[…]
//! ```
//!
//! `trak` is the ensemble of every checkpoint with the default ridge; `trak-last` the
//! fine-tuned model alone; `RIDGE` lines are TRAK on the same features under λ = c · mean
//! ‖φ‖² (c = 2 is the default); `top-unstated` removes each query's top proponents among the
//! documents that state no fact.
//!
//! ```text
//! cargo run --release -p trak-candle --example smollm_facts -- --gguf PATH
//! cargo run --release -p trak-candle --example smollm_facts -- --quick   # tiny random model
//! ```
//! Options: `--epochs N`, `--checkpoints M` (spaced evenly along the fine-tuning), `--lr X`,
//! `--seed S` (corpus, data order and projection; default 0), `--no-throughput`.

#[path = "support/english_facts.rs"]
mod english_facts;
#[path = "support/fact_metrics.rs"]
mod fact_metrics;
#[path = "support/llama_throughput.rs"]
mod llama_throughput;
#[path = "support/smollm_facts.rs"]
mod smollm_facts;
#[path = "support/tokens.rs"]
mod tokens;

use std::path::PathBuf;

use trak_demo::cli::Args;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::from_env();
    let mut cfg = if args.flag("--quick") {
        smollm_facts::Config::quick()
    } else {
        let path = args.value("--gguf").ok_or(
            "usage: smollm_facts --gguf PATH | --quick (scripts/fetch-smollm2.sh prints a PATH)",
        )?;
        smollm_facts::Config::full(PathBuf::from(path))
    };
    cfg.epochs = args.usize_or("--epochs", cfg.epochs)?;
    cfg.checkpoints = args.usize_or("--checkpoints", cfg.checkpoints)?;
    if cfg.epochs == 0 || cfg.checkpoints == 0 {
        return Err("--epochs and --checkpoints must be at least 1".into());
    }
    cfg.seed = args.usize_or("--seed", cfg.seed as usize)? as u64;
    if let Some(lr) = args.value("--lr") {
        cfg.lr = lr
            .parse()
            .map_err(|_| format!("--lr {lr:?} is not a number"))?;
    }
    cfg.throughput &= !args.flag("--no-throughput");
    let t0 = std::time::Instant::now();
    let out = smollm_facts::run(&cfg)?;
    let lines = out.facts.iter().map(|r| r.line());
    let lines = lines.chain(out.ridge.iter().map(|r| r.line()));
    let lines = lines.chain(out.removal.iter().map(|r| r.line()));
    let lines = lines.chain(out.influence.iter().map(|r| r.line()));
    for l in lines.chain(out.throughput.iter().map(|r| r.line())) {
        println!("{l}");
    }
    println!("CHECKPOINTS epochs={:?}", out.checkpoints);
    println!("PEAK_RSS_MB={:.0}", trak_demo::metagrad::peak_rss_mb());
    eprintln!(
        "[smollm_facts] {} documents, {} predicted tokens, {} parameters, mean log p(completion) {:.3} → {:.3}, total {:.1} s",
        out.docs,
        out.tokens,
        out.params,
        out.logp.0,
        out.logp.1,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
