//! The `smollm_facts --quick` path (a tiny random Llama trained on the English planted-facts
//! corpus, four checkpoints along its training): every method and layer set gives a row, the
//! ridge sweep's default row is the TRAK row, the token split of a document's score is exact
//! over the ensemble, and the three removals and the throughput rows are measured.

#[path = "../examples/support/english_facts.rs"]
mod english_facts;
#[path = "../examples/support/fact_metrics.rs"]
mod fact_metrics;
#[path = "../examples/support/llama_throughput.rs"]
mod llama_throughput;
#[path = "../examples/support/smollm_facts.rs"]
mod smollm_facts;
#[path = "../examples/support/tokens.rs"]
mod tokens;

#[test]
fn quick_smollm_facts_runs_every_method_and_layer_set() {
    let mut cfg = smollm_facts::Config::quick();
    cfg.verbose = false;
    let out = smollm_facts::run(&cfg).unwrap();
    let lines = out.facts.iter().map(|r| r.line());
    let lines = lines.chain(out.removal.iter().map(|r| r.line()));
    let lines = lines.chain(out.influence.iter().map(|r| r.line()));
    for l in lines.chain(out.throughput.iter().map(|r| r.line())) {
        eprintln!("{l}");
    }
    for method in ["trak", "grad-dot", "grad-cos"] {
        for layers in ["all", "mlp", "attention"] {
            let found = out
                .facts
                .iter()
                .any(|r| r.method == method && r.layers == Some(layers));
            assert!(found, "no row for {method} on {layers}");
        }
    }
    // No recall threshold here: the tiny random model, trained from scratch on 82 documents,
    // never learns the paraphrased queries (their log p falls during training), so its
    // rankings are noise; the real model's figures are the full run's (docs/VALIDATION.md).
    assert_eq!(out.checkpoints, [10, 20, 30, 40]);
    for method in ["trak-last", "random", "bm25"] {
        assert!(
            out.facts.iter().any(|r| r.method == method),
            "no {method} row"
        );
    }
    let cs: Vec<f64> = out.ridge.iter().map(|r| r.c).collect();
    assert_eq!(cs, [0.1, 0.5, 2.0, 8.0, 32.0]);
    let trak = out.facts.iter().find(|r| r.method == "trak").unwrap();
    let default = &out.ridge[2].row;
    assert_eq!(
        (default.recall1, default.recall10, default.mrr),
        (trak.recall1, trak.recall10, trak.mrr),
        "the sweep's c = 2 is the default rule"
    );
    assert_eq!(out.influence.len(), cfg.influence);
    for i in &out.influence {
        // The tokens' features, at each of the four checkpoints, sum to the document's.
        assert!(i.split_error < 1e-4, "token split error {}", i.split_error);
    }
    let kinds: Vec<&str> = out.removal.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, ["top", "random", "top-unstated"]);
    assert!(
        out.removal
            .iter()
            .all(|r| r.mean_delta_logp.is_finite() && r.removed > 0)
    );
    assert_eq!(out.throughput.len(), 3);
    assert!(out.throughput.iter().all(|t| t.tokens_per_s > 0.0));
}
