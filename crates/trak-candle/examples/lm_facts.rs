//! Which training documents made a language model say this? A tiny character-level
//! transformer is trained in candle on a corpus the example generates (planted facts about
//! made-up entities, paraphrases, distractors, fillers: no external data), and the
//! completions of fact queries ("<entity> lives in" → " <city>.") are attributed to the
//! training documents through `trak-candle` (factored projector, sequence log-probability).
//!
//! Prints, per method, how well it finds the documents that state the fact, and the
//! counterfactual check:
//!
//! ```text
//! FACTS method=<trak|grad-dot|grad-cos|random|lexical> recall@1=<v> recall@10=<v> mrr=<v>
//! REMOVAL kind=<top|random> k=<k> queries=<q> mean_delta_logp=<v>
//! ```
//!
//! ```text
//! cargo run --release -p trak-candle --example lm_facts [-- --quick]
//! ```

#[path = "support/fact_metrics.rs"]
mod fact_metrics;
#[path = "support/facts.rs"]
mod facts;
#[path = "support/lm_facts.rs"]
mod lm_facts;
#[path = "support/tiny_lm.rs"]
mod tiny_lm;

use trak_demo::cli::Args;

fn main() -> trak::Result<()> {
    let args = Args::from_env();
    let mut cfg = if args.flag("--quick") {
        lm_facts::FactsConfig::quick()
    } else {
        lm_facts::FactsConfig::full()
    };
    cfg.checkpoints = args.usize_or("--checkpoints", cfg.checkpoints)?;
    cfg.training.epochs = args.usize_or("--epochs", cfg.training.epochs)?;
    let t0 = std::time::Instant::now();
    let out = lm_facts::run(&cfg)?;
    for r in &out.facts {
        println!("{}", r.line());
    }
    for r in &out.removal {
        println!("{}", r.line());
    }
    eprintln!(
        "[lm_facts] {} documents, {} attributed parameters, mean log p(completion) {:.3}, total {:.1} s",
        out.docs,
        out.params,
        out.mean_logp,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
