//! The `lm_facts --quick` path: TRAK finds the documents that state a fact far more often
//! than random scores, and removing the top proponents lowers the completions' log-probability
//! more than removing as many random documents.

#[path = "../examples/support/fact_metrics.rs"]
mod fact_metrics;
#[path = "../examples/support/facts.rs"]
mod facts;
#[path = "../examples/support/lm_facts.rs"]
mod lm_facts;
#[path = "../examples/support/tiny_lm.rs"]
mod tiny_lm;

#[test]
fn quick_fact_tracing_beats_random() {
    let mut cfg = lm_facts::FactsConfig::quick();
    cfg.verbose = false;
    let out = lm_facts::run(&cfg).unwrap();
    for r in &out.facts {
        eprintln!("{}", r.line());
    }
    for r in &out.removal {
        eprintln!("{}", r.line());
    }
    let get = |m: &str| out.facts.iter().find(|r| r.method == m).unwrap().recall10;
    assert!(
        get("trak") > get("random") + 0.3,
        "TRAK {} vs random {}",
        get("trak"),
        get("random")
    );
    let delta = |k: &str| {
        out.removal
            .iter()
            .find(|r| r.kind == k)
            .unwrap()
            .mean_delta_logp
    };
    assert!(
        delta("top") < delta("random"),
        "top {} vs random {}",
        delta("top"),
        delta("random")
    );
}
