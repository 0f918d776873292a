//! The `smollm_facts --quick` path (a tiny random Llama trained on the English planted-facts
//! corpus): every method and layer set gives a row, TRAK finds stating documents more often
//! than random scores, the token split of a document's score is exact, and both removals and
//! throughput rows are measured.

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
    let recall = |m: &str| out.facts.iter().find(|r| r.method == m).unwrap().recall10;
    assert!(
        recall("trak") > recall("random") + 0.2,
        "TRAK {} vs random {}",
        recall("trak"),
        recall("random")
    );
    assert_eq!(out.influence.len(), cfg.influence);
    for i in &out.influence {
        assert!(i.split_error < 1e-4, "token split error {}", i.split_error);
        let total: f64 = i.tokens.iter().map(|t| t.1).sum();
        assert!((total - 1.0).abs() < 1e-9, "shares sum to {total}");
    }
    assert_eq!(out.removal.len(), 2);
    assert!(
        out.removal
            .iter()
            .all(|r| r.mean_delta_logp.is_finite() && r.removed > 0)
    );
    assert_eq!(out.throughput.len(), 3);
    assert!(out.throughput.iter().all(|t| t.tokens_per_s > 0.0));
}
