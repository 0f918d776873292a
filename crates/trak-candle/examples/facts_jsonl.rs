//! Exports the English planted-facts corpus of `smollm_facts` as JSONL, the input of the
//! `trak-lm` command: `train.jsonl` (one `{"text": …}` per document) and `queries.jsonl`
//! (`{"prompt": …, "completion": …, "stated_by": [lines]}` per fact, `stated_by` the
//! 0-based lines of `train.jsonl` that state it).
//!
//! `cargo run --release -p trak-candle --example facts_jsonl -- --facts 150 --fillers 480
//! --queries 40 --seed 0 --out crates/trak-lm/data/facts` wrote the corpus the repository
//! ships (1,005 documents, 40 queries).

#[path = "support/english_facts.rs"]
mod english_facts;
#[path = "support/fact_metrics.rs"]
mod fact_metrics;

use std::io::Write;
use std::path::PathBuf;

fn value(args: &[String], name: &str, default: &str) -> String {
    args.windows(2)
        .find(|w| w[0] == name)
        .map_or(default.to_string(), |w| w[1].clone())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let facts: usize = value(&args, "--facts", "150").parse()?;
    let fillers: usize = value(&args, "--fillers", "480").parse()?;
    let queries: usize = value(&args, "--queries", "40").parse()?;
    let seed: u64 = value(&args, "--seed", "0").parse()?;
    let out = PathBuf::from(value(&args, "--out", "facts"));
    std::fs::create_dir_all(&out)?;
    let corpus = english_facts::generate(facts, fillers, seed);
    let mut train = std::fs::File::create(out.join("train.jsonl"))?;
    for d in &corpus.docs {
        writeln!(train, "{}", serde_json::json!({ "text": d }))?;
    }
    let mut q = std::fs::File::create(out.join("queries.jsonl"))?;
    for f in corpus.facts.iter().take(queries) {
        let line = serde_json::json!({
            "prompt": f.prompt, "completion": f.completion, "stated_by": f.docs,
        });
        writeln!(q, "{line}")?;
    }
    println!(
        "wrote {} documents and {} queries to {}",
        corpus.docs.len(),
        queries.min(corpus.facts.len()),
        out.display()
    );
    Ok(())
}
