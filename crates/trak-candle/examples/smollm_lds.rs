//! How well does attribution predict what retraining does to a real language model?
//! SmolLM2-135M (from its GGUF file; `scripts/fetch-smollm2.sh` fetches it) is fine-tuned
//! on the generated English planted-facts corpus of `smollm_facts` (a few hundred short
//! documents: facts about made-up people, distractors and filler; generated, so there is no
//! licence to ship and every target's causes are known), and two kinds of target are
//! attributed to the training documents:
//! - **queries**: log p(completion | prompt) of each fact's query, phrased unlike any
//!   document ("The hometown of Velmor Orimund is" → " Brinmoor");
//! - **held-out**: the mean token log p (the negative mean token loss) of a held-out
//!   document restating each fact in words no training document uses.
//!
//! Every method is scored by the linear datamodeling score (LDS) against two truths, each
//! from J retrainings of the same fine-tuning:
//! - `leave-1%`: the same seed and data order, 1 % of the documents weighted 0 (Bergson's
//!   protocol); the prediction is −Σ over the dropped documents of their scores;
//! - `half`: a random half of the documents, retrained with another data-order seed
//!   (TRAK's protocol); the prediction is Σ over the kept documents.
//!
//! Methods, on the same per-example gradients (the native pass, every block linear, the
//! factored projector at k = 2,048) where they share them:
//! - `trak-ensemble`: TRAK over the checkpoints after every epoch (the crate's default
//!   ridge, c = 2), `trak-ensemble:c=…` under other ridge constants, and
//!   `trak-ensemble:sparse=…` with TRAK's soft-thresholding step (each target's scores
//!   shrunk towards 0 by that many robust standard deviations, 1.4826 · MAD);
//! - `trak-last`: TRAK on the fine-tuned model alone (M = 1);
//! - `grad-dot`, `grad-cos`: inner products and cosines of the fine-tuned model's features;
//! - `trackstar`: the fine-tuned model's gradients preconditioned by the optimiser's
//!   second moments (Adafactor-factored), projected, unit-normalised; `trackstar-dot` the
//!   same without the normalisation;
//! - `trak-adam-ensemble`, `trak-adam-last` (and their ridge rows): TRAK on those
//!   preconditioned gradients, each checkpoint with the optimiser's moments at that epoch;
//! - `bm25`: the lexical score of the target's text against each document;
//! - `random`.
//!
//! ```text
//! LDS truth=<leave-1%|half> target=<queries|held-out> method=… lds=… se=… targets=… defined=…
//! SPREAD truth=… target=… sd=…      (outputs' standard deviation over the retrainings)
//! OUTPUTS target=… pretrained=… fine_tuned=…
//! TIME base_s=… attribution_s=… leave_s=… half_s=… total_s=…
//! ```
//! lds is the mean over targets of the Spearman correlation, a target where the method's
//! prediction is constant over the retrainings (a sparse method) counted as 0; `defined`
//! counts the others; se is the standard error over targets.
//!
//! ```text
//! cargo run --release -p trak-candle --example smollm_lds -- --gguf PATH [--cache DIR]
//! cargo run --release -p trak-candle --example smollm_lds -- --quick   # tiny random model
//! ```
//! Options: `--subsets J` (per truth), `--epochs N`, `--facts F`, `--fillers N`, `--seed S`,
//! `--cache DIR` (keeps every retraining's outputs: a second run with the same settings
//! retrains nothing).

#[path = "support/english_facts.rs"]
mod english_facts;
#[path = "support/fact_metrics.rs"]
mod fact_metrics;
#[path = "support/llama_throughput.rs"]
mod llama_throughput;
#[path = "support/smollm_facts.rs"]
mod smollm_facts;
#[path = "support/smollm_lds.rs"]
mod smollm_lds;
#[path = "support/tokens.rs"]
mod tokens;
#[path = "support/trackstar.rs"]
mod trackstar;

use std::path::PathBuf;

use trak_demo::cli::Args;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::from_env();
    let mut cfg = if args.flag("--quick") {
        smollm_lds::Config::quick()
    } else {
        let path = args.value("--gguf").ok_or(
            "usage: smollm_lds --gguf PATH | --quick (scripts/fetch-smollm2.sh prints a PATH)",
        )?;
        smollm_lds::Config::full(PathBuf::from(path))
    };
    cfg.subsets = args.usize_or("--subsets", cfg.subsets)?;
    cfg.epochs = args.usize_or("--epochs", cfg.epochs)?;
    cfg.facts = args.usize_or("--facts", cfg.facts)?;
    cfg.fillers = args.usize_or("--fillers", cfg.fillers)?;
    cfg.seed = args.usize_or("--seed", cfg.seed as usize)? as u64;
    cfg.cache = args.value("--cache").map(PathBuf::from);
    if cfg.subsets < 2 || cfg.epochs == 0 || cfg.facts == 0 {
        return Err("--subsets must be at least 2, --epochs and --facts at least 1".into());
    }
    let t0 = std::time::Instant::now();
    let out = smollm_lds::run(&cfg)?;
    for c in &out.cells {
        println!("{}", c.line());
    }
    for (t, truth) in ["leave", "half"].iter().enumerate() {
        for (k, target) in smollm_lds::TARGETS.iter().enumerate() {
            println!(
                "SPREAD truth={truth} target={target} sd={:.4}",
                out.spread[t][k]
            );
        }
    }
    for (k, target) in smollm_lds::TARGETS.iter().enumerate() {
        println!(
            "OUTPUTS target={target} pretrained={:.3} fine_tuned={:.3}",
            out.outputs.0[k], out.outputs.1[k]
        );
    }
    let [b, a, l, h] = out.seconds;
    println!(
        "TIME base_s={b:.0} attribution_s={a:.0} leave_s={l:.0} half_s={h:.0} total_s={:.0}",
        t0.elapsed().as_secs_f64()
    );
    println!("PEAK_RSS_MB={:.0}", trak_demo::metagrad::peak_rss_mb());
    eprintln!(
        "[smollm_lds] {} documents, {} predicted tokens, {} + {} targets, {} retrainings per truth",
        out.docs, out.tokens, out.targets.0, out.targets.1, cfg.subsets
    );
    Ok(())
}
